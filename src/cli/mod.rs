//! Argument parsing and dispatch. Each subcommand lives in its own file and only converts
//! arguments into library calls and results into output.

mod encode;
mod eval;
mod kernel;
mod mine;
mod repl;
mod run;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ragtune",
    version,
    about = "Fine-tune every stage of a RAG pipeline on your own data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate a model.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Encode texts into embeddings (.npy or .parquet).
    Encode(encode::EncodeArgs),
    /// Run a Rhai script (a recipe).
    Run(run::RunArgs),
    /// Fine-tune a model.
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Mine hard negatives for (query, positive) pairs with an embedding model.
    Mine(mine::MineArgs),
    /// An interactive session (the same language and bindings as recipes).
    Repl(repl::ReplArgs),
    /// The Jupyter kernel, or `kernel install` to register it with Jupyter.
    Kernel(kernel::KernelArgs),
}

pub fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Eval(cmd) => eval::run(cmd),
        Command::Encode(args) => encode::run(args),
        Command::Run(args) => run::run(args),
        Command::Train(cmd) => train::run(cmd),
        Command::Mine(args) => mine::run(args),
        Command::Repl(args) => repl::run(args),
        Command::Kernel(args) => kernel::run(args),
    }
}

/// Where training pairs come from: `--data FILE` (a table, text columns by position), or
/// `--data DIR --beir-split S` (a BEIR folder's (query, relevant document) pairs).
#[derive(clap::Args)]
struct DataArgs {
    /// A table (.jsonl/.csv/.tsv/.parquet: text columns by position, optional label/score
    /// column), or a BEIR folder with --beir-split.
    #[arg(long)]
    data: std::path::PathBuf,
    /// Use the (query, relevant document) pairs of this qrels split of the BEIR folder.
    #[arg(long)]
    beir_split: Option<String>,
}

impl DataArgs {
    fn load(&self) -> Result<ragtune::TrainingSet> {
        ragtune::TrainingSet::load(&self.data, self.beir_split.as_deref())
    }
}

/// Parses `1,3,10` into cut-offs.
fn parse_ks(text: &str) -> Result<Vec<usize>> {
    let ks: Vec<usize> = text
        .split(',')
        .map(|k| {
            k.trim()
                .parse::<usize>()
                .map_err(|_| anyhow::anyhow!("--k: `{k}` is not a positive integer"))
        })
        .collect::<Result<_>>()?;
    if ks.contains(&0) || ks.is_empty() {
        anyhow::bail!("--k: cut-offs must be positive integers, e.g. 1,3,5,10,100");
    }
    Ok(ks)
}

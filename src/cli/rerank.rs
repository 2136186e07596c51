//! `ragtune rerank`: scores of (query, document) pairs or lists from a cross-encoder.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use ragtune::data::{read_table, write_table};
use ragtune::models::{
    CrossEncoder, CrossEncoderOptions, LoadOptions, PredictOptions, ScoreActivation,
};

#[derive(Args)]
pub struct RerankArgs {
    /// A cross-encoder folder or hub id (a BERT / sentence-transformers model gets a fresh head).
    #[arg(long)]
    model: String,
    /// Rows `{query, document}` or `{query, documents: […]}` (.jsonl/.csv/.tsv/.parquet).
    #[arg(long)]
    input: PathBuf,
    /// Where the rows go with a `score` (pairs) or `scores` (lists) column.
    #[arg(long)]
    output: PathBuf,
    /// Applied to the logits: sigmoid, identity (none) or tanh (default: the model's own, as
    /// `CrossEncoder.predict`).
    #[arg(long)]
    activation: Option<ScoreActivation>,
    /// Truncate pairs to this many tokens (default: the model's).
    #[arg(long)]
    max_length: Option<usize>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Seed of a fresh head (when --model has none).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also write the model as loaded (a fresh head included) to this folder, in
    /// sentence-transformers' cross-encoder layout.
    #[arg(long)]
    save_model: Option<PathBuf>,
}

pub fn run(args: RerankArgs) -> Result<()> {
    let model = CrossEncoder::load(
        &args.model,
        &LoadOptions::default(),
        &CrossEncoderOptions {
            max_length: args.max_length,
            seed: args.seed,
            ..Default::default()
        },
    )?;
    if let Some(dir) = &args.save_model {
        model.save(dir)?;
    }
    let frame = read_table(&args.input)?;
    let options = PredictOptions {
        batch_size: args.batch_size,
        activation: args.activation,
        progress: true,
    };
    let start = std::time::Instant::now();
    let scored = model.score_frame(&frame, &args.input.display().to_string(), &options)?;
    let seconds = start.elapsed().as_secs_f64();
    write_table(&scored, &args.output)?;
    eprintln!(
        "scored {} rows with {} in {seconds:.2} s -> {}",
        scored.height(),
        model.name(),
        args.output.display()
    );
    Ok(())
}

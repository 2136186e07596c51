//! `ragtune encode`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ragtune::data::{embeddings::write_embeddings, read_table, require_columns, table::str_column};
use ragtune::models::{EncodeOptions, LoadOptions, SentenceEncoder};

#[derive(Args)]
pub struct EncodeArgs {
    /// Local folder or hub id (owner/name[@revision]).
    #[arg(long)]
    model: String,
    /// Texts: .txt (one per line), or .jsonl/.csv/.tsv/.parquet with a text column.
    #[arg(long)]
    input: PathBuf,
    /// Where to write: .npy, or .parquet/.jsonl (an `embedding` column).
    #[arg(long)]
    output: PathBuf,
    /// The column holding the texts in a table input.
    #[arg(long, default_value = "text")]
    column: String,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// The weights' and activations' type: f32, or bf16 / f16 (half precision, for CUDA; on the
    /// CPU they are slower than f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
}

pub fn run(args: EncodeArgs) -> Result<()> {
    let texts = read_texts(&args)?;
    let dtype = ragtune::models::precision::Precision::parse(&args.dtype)?.dtype();
    let encoder = SentenceEncoder::load(
        &args.model,
        &LoadOptions {
            dtype,
            ..Default::default()
        },
    )?;
    let options = EncodeOptions {
        batch_size: args.batch_size,
        progress: true,
    };
    let (embeddings, stats) = encoder.encode_with_stats(&texts, &options)?;
    write_embeddings(&embeddings, &args.output)?;
    eprintln!(
        "encoded {} texts ({} tokens, {:.1} % padding) in {:.2} s: {:.1} docs/s, {:.0} tokens/s -> {}",
        stats.texts,
        stats.tokens,
        100.0 * (stats.padded_tokens - stats.tokens) as f64 / stats.padded_tokens.max(1) as f64,
        stats.seconds,
        stats.texts as f64 / stats.seconds,
        stats.tokens as f64 / stats.seconds,
        args.output.display()
    );
    Ok(())
}

fn read_texts(args: &EncodeArgs) -> Result<Vec<String>> {
    let texts = if args.input.extension().is_some_and(|e| e == "txt") {
        std::fs::read_to_string(&args.input)
            .with_context(|| format!("cannot read {}", args.input.display()))?
            .lines()
            .map(str::to_string)
            .collect()
    } else {
        let df = read_table(&args.input)?;
        require_columns(&df, &[&args.column], &args.input.display().to_string())?;
        str_column(&df, &args.column)?
    };
    if texts.is_empty() {
        anyhow::bail!("{}: no texts to encode", args.input.display());
    }
    Ok(texts)
}

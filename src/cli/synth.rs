//! `ragtune synth queries`: synthetic (query, positive) pairs from chunks or documents, with an
//! LLM (local or OpenAI-compatible) or LLM-free (ICT, cropping); resumable.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use ragtune::data::{read_table, write_llamaindex, write_table};
use ragtune::synth::{chunks_from_frame, synthesize, Generator, SynthOptions};

#[derive(Subcommand)]
pub enum SynthCommand {
    /// Queries for each chunk of a corpus.
    Queries(QueriesArgs),
}

#[derive(Args)]
pub struct QueriesArgs {
    /// Chunks (a table with chunk_id and text, as `ragtune chunk` writes) or documents to chunk
    /// first (a folder or a .txt/.md/.html/.json/.jsonl/.pdf file).
    #[arg(long)]
    corpus: PathBuf,
    /// local:<model>, openai:<model>, ict (inverse cloze) or crop (independent cropping).
    #[command(flatten)]
    llm: super::LlmArgs,
    #[arg(long, default_value_t = 3)]
    per_chunk: usize,
    /// Where to write the pairs: .json (LlamaIndex EmbeddingQAFinetuneDataset) or a table
    /// (.jsonl/.csv/.tsv/.parquet with query, positive, chunk_id, generator).
    #[arg(long)]
    output: PathBuf,
    // Placeholders described without braces: clap's help renders the braced `n` as a line break.
    /// A file holding the prompt; its placeholders `passage` (the chunk) and `n` (queries wanted)
    /// are written in braces.
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    #[arg(long, default_value_t = 160)]
    max_tokens: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Chunks sent to the model together.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Only the first N chunks.
    #[arg(long)]
    limit: Option<usize>,
    /// Keep a pair only if this encoder ranks its chunk in the top --round-trip-k.
    #[arg(long)]
    round_trip_model: Option<String>,
    #[arg(long, default_value_t = 3)]
    round_trip_k: usize,
    /// Chunking, when --corpus holds documents.
    #[arg(long, default_value_t = 256)]
    chunk_size: usize,
    #[arg(long, default_value_t = 32)]
    chunk_overlap: usize,
    #[arg(long, default_value = "sentence-transformers/all-MiniLM-L6-v2")]
    tokenizer: String,
}

pub fn run(cmd: SynthCommand) -> Result<()> {
    let SynthCommand::Queries(args) = cmd;
    let frame = if is_chunk_table(&args.corpus) {
        read_table(&args.corpus)?
    } else {
        super::chunk::DocumentArgs {
            input: args.corpus.clone(),
            chunk_size: args.chunk_size,
            chunk_overlap: args.chunk_overlap,
            tokenizer: args.tokenizer.clone(),
            text_field: "text".into(),
        }
        .chunks()?
    };
    let mut chunks = chunks_from_frame(&frame)?;
    if let Some(n) = args.limit {
        chunks.truncate(n);
    }
    // The journal and the answer cache sit beside the output, so rerunning the same command
    // continues the run and sends no request twice.
    let journal = sibling(&args.output, "journal.jsonl");
    let generator = match args.llm.llm.as_str() {
        "ict" => Generator::InverseCloze,
        "crop" => Generator::Crop,
        _ => {
            let mut llm = args.llm.clone();
            llm.client
                .llm_cache
                .get_or_insert_with(|| sibling(&args.output, "llm-cache"));
            Generator::Llm(llm.open()?)
        }
    };
    let mut options = SynthOptions {
        per_chunk: args.per_chunk,
        temperature: args.temperature,
        max_tokens: args.max_tokens,
        seed: args.seed,
        batch_size: args.batch_size,
        ..Default::default()
    };
    if let Some(p) = &args.prompt_file {
        options.prompt = std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
    }
    let mut outcome = synthesize(&chunks, &generator, &options, Some(&journal))?;
    eprintln!("{}", outcome.summary());
    if let Some(model) = &args.round_trip_model {
        let encoder = ragtune::SentenceEncoder::load(model, &Default::default())?;
        let (filtered, stats) =
            outcome.round_trip(&chunks, &encoder, args.round_trip_k, &Default::default())?;
        eprintln!(
            "round-trip filter (top {}): kept {}, dropped {}",
            stats.top_k, stats.kept, stats.dropped
        );
        outcome = filtered;
    }
    if outcome.pairs.is_empty() {
        bail!("no pairs were produced; nothing written");
    }
    if args.output.extension().is_some_and(|e| e == "json") {
        write_llamaindex(&outcome.dataset(&chunks)?, &args.output)?;
    } else {
        write_table(&outcome.frame()?, &args.output)?;
    }
    eprintln!(
        "wrote {} pairs to {}",
        outcome.pairs.len(),
        args.output.display()
    );
    if !outcome.failed.is_empty() {
        let (id, why) = &outcome.failed[0];
        bail!(
            "{} chunk(s) failed and are missing from the output (first: {id}: {why}); rerun the same command to retry them",
            outcome.failed.len()
        );
    }
    Ok(())
}

/// A table file whose header has `chunk_id` (rather than documents to chunk).
fn is_chunk_table(path: &Path) -> bool {
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
    match ext.as_deref() {
        Some("parquet" | "csv" | "tsv") => true,
        Some("jsonl") => std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.lines().next().map(|l| l.contains("\"chunk_id\"")))
            .unwrap_or(false),
        _ => false,
    }
}

pub(super) fn sibling(output: &Path, suffix: &str) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    output.with_file_name(name)
}

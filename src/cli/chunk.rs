//! `ragtune chunk`: documents → token-bounded chunks (a table), optionally split by document.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use ragtune::chunk::{chunk_documents, load_documents, split_by_document, SentenceSplitter};
use ragtune::data::write_table;

#[derive(Args)]
pub struct ChunkArgs {
    #[command(flatten)]
    docs: DocumentArgs,
    /// Where to write the chunks (.jsonl, .csv, .tsv or .parquet).
    #[arg(long)]
    output: PathBuf,
    /// Also hold out this share of the documents: their chunks go to --val-output.
    #[arg(long, requires = "val_output")]
    val_fraction: Option<f64>,
    #[arg(long)]
    val_output: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Which documents and how to cut them (shared with `synth queries`).
#[derive(Args)]
pub struct DocumentArgs {
    /// A folder (read recursively) or file of .txt, .md, .html, .json, .jsonl or .pdf documents.
    #[arg(long)]
    pub input: PathBuf,
    /// Most tokens per chunk.
    #[arg(long, default_value_t = 256)]
    pub chunk_size: usize,
    /// Tokens of the previous chunk repeated at the start of the next.
    #[arg(long, default_value_t = 32)]
    pub chunk_overlap: usize,
    /// The model whose tokenizer counts tokens (use the encoder you will train).
    #[arg(long, default_value = "sentence-transformers/all-MiniLM-L6-v2")]
    pub tokenizer: String,
    /// The field holding the text of JSON / JSONL records.
    #[arg(long, default_value = "text")]
    pub text_field: String,
}

impl DocumentArgs {
    pub fn chunks(&self) -> Result<polars::prelude::DataFrame> {
        let docs = load_documents(
            &self.input,
            &ragtune::chunk::LoadDocumentsOptions {
                text_field: self.text_field.clone(),
                ..Default::default()
            },
        )?;
        let splitter = SentenceSplitter::new(&ragtune::chunk::ChunkOptions {
            chunk_size: self.chunk_size,
            chunk_overlap: self.chunk_overlap,
            tokenizer: self.tokenizer.clone(),
        })?;
        let chunks = chunk_documents(&docs, &splitter)?;
        eprintln!("{} documents → {} chunks", docs.len(), chunks.height());
        Ok(chunks)
    }
}

pub fn run(args: ChunkArgs) -> Result<()> {
    let chunks = args.docs.chunks()?;
    match (args.val_fraction, &args.val_output) {
        (Some(fraction), Some(val_path)) => {
            let (train, val) = split_by_document(&chunks, fraction, args.seed)?;
            write_table(&train, &args.output)?;
            write_table(&val, val_path)?;
            eprintln!(
                "{} chunks → {}, {} → {}",
                train.height(),
                args.output.display(),
                val.height(),
                val_path.display()
            );
        }
        _ => {
            write_table(&chunks, &args.output)?;
            eprintln!("wrote {}", args.output.display());
        }
    }
    Ok(())
}

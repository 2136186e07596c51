//! `ragtune mine`: hard negatives for (query, positive) pairs.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use ragtune::data::{load_corpus_texts, write_table};
use ragtune::mine::source::MinedFrom;
use ragtune::mine::{mine_hard_negatives, MineOptions, OutputFormat, Sampling};
use ragtune::models::{LoadOptions, SentenceEncoder};

#[derive(Args)]
pub struct MineArgs {
    /// The embedding model that ranks candidates: local folder or hub id.
    #[arg(long)]
    model: String,
    /// (query, positive) pairs: the first two text columns are used.
    #[command(flatten)]
    data: super::DataArgs,
    /// Candidate documents: a BEIR folder or a table with a `text` column. Default: the positives.
    #[arg(long)]
    corpus: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    num_negatives: usize,
    #[arg(long, default_value_t = 0)]
    range_min: usize,
    #[arg(long)]
    range_max: Option<usize>,
    #[arg(long)]
    max_score: Option<f64>,
    #[arg(long)]
    min_score: Option<f64>,
    #[arg(long)]
    absolute_margin: Option<f64>,
    #[arg(long)]
    relative_margin: Option<f64>,
    /// top or random.
    #[arg(long, default_value = "top", value_parser = parse_sampling)]
    sampling: Sampling,
    /// triplet, n-tuple, n-tuple-scores, labeled-pair or labeled-list.
    #[arg(long, default_value = "triplet")]
    output_format: OutputFormat,
    /// Where to write the mined data (.jsonl, .csv, .tsv or .parquet).
    #[arg(long)]
    output: PathBuf,
    /// Keep embeddings here so a second run with the same model and texts does not re-encode.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Also write the positive/negative score histogram to this HTML file.
    #[arg(long)]
    chart: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Rescore candidates and positives with this cross-encoder before filtering (used when
    /// --max-score or a margin is set, as sentence-transformers' `cross_encoder=`).
    #[arg(long)]
    cross_encoder: Option<String>,
}

fn parse_sampling(s: &str) -> Result<Sampling> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| anyhow::anyhow!("`{s}`: choose top or random"))
}

pub fn run(a: MineArgs) -> Result<()> {
    let start = std::time::Instant::now();
    let pairs = a.data.load()?.to_frame()?;
    let corpus = a.corpus.as_deref().map(load_corpus_texts).transpose()?;
    let encoder = SentenceEncoder::load(&a.model, &LoadOptions::default())?;
    let options = MineOptions {
        num_negatives: a.num_negatives,
        range_min: a.range_min,
        range_max: a.range_max,
        max_score: a.max_score,
        min_score: a.min_score,
        absolute_margin: a.absolute_margin,
        relative_margin: a.relative_margin,
        sampling: a.sampling,
        output_format: a.output_format,
        seed: a.seed,
        batch_size: a.batch_size,
        cache_dir: a.cache_dir,
        progress: true,
    };
    let cross_encoder = a
        .cross_encoder
        .as_deref()
        .map(|m| {
            ragtune::models::CrossEncoder::load(m, &LoadOptions::default(), &Default::default())
        })
        .transpose()?;
    let rescorer = cross_encoder
        .as_ref()
        .map(|c| c as &dyn ragtune::mine::Rescorer);
    let mined = mine_hard_negatives(&encoder, &pairs, corpus.as_deref(), &options, rescorer)?;
    write_table(&mined.frame, &a.output)?;
    // Beside the data: what `train rerank` reads to hold out queries and fuse by default.
    MinedFrom::new(
        &a.model,
        &a.data.data,
        a.data.beir_split.as_deref(),
        a.corpus.as_deref(),
        mined.frame.height(),
        &options,
    )
    .write(&a.output)?;
    if let Some(chart) = &a.chart {
        mined.chart().write_html(chart)?;
    }
    eprintln!("{}", mined.summary);
    eprintln!(
        "mined {} rows for {} queries in {:.1} s{}; {} queries got fewer than {} negatives -> {}",
        mined.frame.height(),
        mined.queries,
        start.elapsed().as_secs_f64(),
        if mined.cache_hit {
            " (corpus embeddings from the cache)"
        } else {
            ""
        },
        mined.short_queries,
        a.num_negatives,
        a.output.display()
    );
    Ok(())
}

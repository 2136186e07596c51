//! `ragtune eval retrieval`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use ragtune::eval::{compare_models, comparison_frame, evaluate_encoder, RetrievalEvalOptions};
use ragtune::models::{LoadOptions, SentenceEncoder};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Retrieval metrics of a sentence encoder on a BEIR folder.
    Retrieval(RetrievalArgs),
}

#[derive(Args)]
pub struct RetrievalArgs {
    /// Local folder or hub id (owner/name[@revision]); repeat to compare models side by side.
    #[arg(long, required = true)]
    model: Vec<String>,
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
    /// Score with only the first N embedding components (Matryoshka-trained models).
    #[arg(long)]
    truncate_dim: Option<usize>,
    /// Print one JSON object (`{"ndcg@10": …}`) on stdout instead of a table; with several
    /// models, one such object per model, keyed by model.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: EvalCommand) -> Result<()> {
    let EvalCommand::Retrieval(args) = cmd;
    let options = RetrievalEvalOptions {
        ks: super::parse_ks(&args.k)?,
        batch_size: args.batch_size,
        truncate_dim: args.truncate_dim,
        ..Default::default()
    };
    let dataset = ragtune::data::load_beir(&args.beir, &args.split)?;
    if let [model] = args.model.as_slice() {
        let encoder = SentenceEncoder::load(model, &LoadOptions::default())?;
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
        return Ok(());
    }
    let models: Vec<&str> = args.model.iter().map(String::as_str).collect();
    let reports = compare_models(&models, &dataset, &LoadOptions::default(), &options)?;
    if args.json {
        let by_model: serde_json::Map<String, serde_json::Value> = reports
            .iter()
            .map(|r| (r.model.clone(), r.metrics_json()))
            .collect();
        println!("{}", serde_json::Value::Object(by_model));
    } else {
        println!(
            "{} split {}: {} models side by side",
            dataset.name,
            args.split,
            reports.len()
        );
        println!("{}", comparison_frame(&reports)?);
    }
    Ok(())
}

//! `ragtune eval retrieval` (optionally with a reranking second stage) and `ragtune eval rerank`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ragtune::eval::{
    compare_models, comparison_frame, evaluate_encoder, evaluate_reranker, Candidates,
    RerankEvalOptions, RerankReport, RetrievalEvalOptions,
};
use ragtune::models::{CrossEncoder, CrossEncoderOptions, LoadOptions, SentenceEncoder};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Retrieval metrics of a sentence encoder on a BEIR folder.
    Retrieval(RetrievalArgs),
    /// A retriever's top-k reranked by a cross-encoder: retriever vs reranked, side by side.
    Rerank(RerankArgs),
    /// A generator's answers to RAFT examples, base vs tuned: accuracy, macro-F1, forced choice,
    /// format, quote faithfulness, citations.
    Grounded(GroundedArgs),
}

#[derive(Args)]
pub struct GroundedArgs {
    /// RAFT examples as `raft build --examples-output` writes them (JSONL).
    #[arg(long)]
    examples: PathBuf,
    /// Only examples of this split (train, dev; default all).
    #[arg(long)]
    split: Option<String>,
    /// At most this many examples (the first ones).
    #[arg(long)]
    limit: Option<usize>,
    /// The base model (`local:…`; the prefix is optional).
    #[arg(long)]
    model: String,
    /// The tuned side: a PEFT adapter on the base …
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// … or another model.
    #[arg(long)]
    tuned: Option<String>,
    /// Label answers, comma-separated (default SUPPORT,CONTRADICT when the examples carry labels).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Tokens per answer.
    #[arg(long, default_value_t = 160)]
    max_tokens: usize,
    /// Skip the forced-choice scoring.
    #[arg(long)]
    no_forced_choice: bool,
    /// Constrained quoting for both models: quotes may only copy the example's context.
    #[arg(long)]
    constrain_quotes: bool,
    /// Per-example outputs of both models (JSONL).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Take the base model's answers from an earlier run's --output instead of answering again
    /// (greedy answers repeat): it must hold every example, answered on the same prompt by the
    /// same --model with the same --max-tokens and quoting.
    #[arg(long)]
    base_answers: Option<PathBuf>,
    /// Chart (HTML).
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Print only the summary JSON line.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RerankArgs {
    /// First stage: a sentence encoder (folder or hub id).
    #[arg(long, default_value = "sentence-transformers/all-MiniLM-L6-v2")]
    retriever: String,
    /// Second stage: a cross-encoder folder or hub id.
    #[arg(long)]
    reranker: String,
    /// BEIR folder (corpus.jsonl, queries.jsonl, qrels/).
    #[arg(long, conflicts_with = "candidates")]
    beir: Option<PathBuf>,
    /// qrels split: reads qrels/<split>.tsv.
    #[arg(long, default_value = "test")]
    split: String,
    /// Instead of a retriever: a table of `{query, positive: […], negative: […]}` or `{query,
    /// documents: […], positive: […] | labels: […]}` rows (the given order is the first stage).
    #[arg(long)]
    candidates: Option<PathBuf>,
    /// Candidates per query.
    #[arg(long, default_value_t = 100)]
    top_k: usize,
    /// Truncate (query, document) pairs to this many tokens.
    #[arg(long)]
    max_length: Option<usize>,
    /// Add relevant documents the retriever missed to the candidates (sentence-transformers'
    /// evaluator does by default; it overstates what the pipeline achieves).
    #[arg(long)]
    include_positives: bool,
    /// Cut-offs, comma separated.
    #[arg(long, default_value = "1,3,5,10,100")]
    k: String,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Write a bar chart of retriever vs reranked here (.html).
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Keep the retriever's embeddings here (a second evaluation behind the same retriever
    /// does not encode the corpus again).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Write every (query, candidate) with its relevance, retriever and reranker scores and ranks
    /// here (.jsonl/.csv/.tsv/.parquet).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Fuse the reranker with the retriever, this weight on the retriever's standardised score
    /// (0 = the reranker alone, 1 = the retriever); choose it on held-out queries (the report's
    /// fusion curve on a validation split), not on the split you report.
    #[arg(long)]
    fusion: Option<f64>,
    /// Print `{"retriever": {…}, "reranked": {…}, "fusion_curve": […]}` on stdout instead of a
    /// table.
    #[arg(long)]
    json: bool,
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
    /// Rerank each query's top --rerank-top-k with this cross-encoder and report retriever vs
    /// reranked (one --model only).
    #[arg(long)]
    rerank: Option<String>,
    #[arg(long, default_value_t = 100)]
    rerank_top_k: usize,
    /// Print one JSON object (`{"ndcg@10": …}`) on stdout instead of a table; with several
    /// models, one such object per model, keyed by model.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: EvalCommand) -> Result<()> {
    let args = match cmd {
        EvalCommand::Retrieval(args) => args,
        EvalCommand::Rerank(args) => return rerank(args),
        EvalCommand::Grounded(args) => return grounded(args),
    };
    if let Some(reranker) = &args.rerank {
        let [model] = args.model.as_slice() else {
            anyhow::bail!("--rerank takes one --model (the retriever)");
        };
        return rerank(RerankArgs {
            retriever: model.clone(),
            reranker: reranker.clone(),
            beir: Some(args.beir),
            split: args.split,
            candidates: None,
            top_k: args.rerank_top_k,
            max_length: None,
            include_positives: false,
            k: args.k,
            batch_size: args.batch_size,
            chart: None,
            cache_dir: None,
            output: None,
            fusion: None,
            json: args.json,
        });
    }
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

fn rerank(args: RerankArgs) -> Result<()> {
    let options = RerankEvalOptions {
        top_k: args.top_k,
        ks: super::parse_ks(&args.k)?,
        include_positives: args.include_positives,
        batch_size: args.batch_size,
        progress: true,
        cache_dir: args.cache_dir.clone(),
        fusion: args.fusion,
    };
    let candidates = match (&args.beir, &args.candidates) {
        (Some(dir), None) => {
            let dataset = ragtune::data::load_beir(dir, &args.split)?;
            let retriever = SentenceEncoder::load(&args.retriever, &LoadOptions::default())?;
            Candidates::retrieve(&retriever, &dataset, &options)?
        }
        (None, Some(file)) => Candidates::from_frame(
            &ragtune::data::read_table(file)?,
            &file.display().to_string(),
        )?,
        _ => anyhow::bail!("give --beir DIR (and --split) or --candidates FILE"),
    };
    let reranker = CrossEncoder::load(
        &args.reranker,
        &LoadOptions::default(),
        &CrossEncoderOptions {
            max_length: args.max_length,
            ..Default::default()
        },
    )?;
    if let (None, Some(choice)) = (args.fusion, &reranker.fusion) {
        eprintln!(
            "fusing with the retriever at weight {}, chosen on {} held-out queries ({}; the \
             reranker's fusion.json; --fusion 0 for the reranker alone)",
            choice.retriever_weight, choice.queries, choice.chosen_on
        );
    }
    let report = evaluate_reranker(&reranker, &candidates, &options)?;
    if let Some(path) = &args.chart {
        report.chart().write_html(path)?;
    }
    if let Some(path) = &args.output {
        ragtune::data::write_table(&report.rows, path)?;
    }
    print_rerank(&report, args.json)
}

fn print_rerank(report: &RerankReport, json: bool) -> Result<()> {
    if json {
        println!("{}", report.metrics_json());
        return Ok(());
    }
    println!(
        "{} reranked by {} on {} ({} queries, top {} = {} pairs, {:.1} s, {:.0} pairs/s)",
        report.retriever,
        report.reranker,
        report.dataset,
        report.queries,
        report.top_k,
        report.pairs,
        report.rerank_seconds,
        report.pairs as f64 / report.rerank_seconds.max(1e-9)
    );
    if let Some(w) = report.fusion {
        println!("reranked = fused with the retriever, retriever weight {w}");
    }
    println!("{}", report.headline_frame()?);
    let curve: Vec<String> = report
        .fusion_curve
        .iter()
        .map(|(w, v)| format!("{w:.1}: {v:.4}"))
        .collect();
    println!(
        "NDCG@10 by fusion weight on this split (0 = reranker, 1 = retriever): {}",
        curve.join(", ")
    );
    eprintln!("(every metric at every cut-off: --json)");
    Ok(())
}

/// A short fingerprint of the prompt an example's answers came from.
fn prompt_fingerprint(e: &ragtune::raft::RaftExample) -> String {
    ragtune::fingerprint::Fingerprint::default()
        .text(&e.prompt)
        .hex()
}

/// The base side of an earlier `eval grounded --output`, one item per example in the order of
/// `examples`; rows answered with other settings, or a missing example, are errors.
fn earlier_base_answers(
    path: &std::path::Path,
    examples: &[ragtune::raft::RaftExample],
    a: &GroundedArgs,
) -> Result<Vec<ragtune::eval::grounded::GroundedItem>> {
    use serde_json::{json, Value};
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let forced = !a.no_forced_choice;
    let mut rows = HashMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = || format!("{}:{}", path.display(), i + 1);
        let row: Value =
            serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        for (field, want) in [
            ("base_model", json!(a.model)),
            ("max_tokens", json!(a.max_tokens)),
            ("constrain_quotes", json!(a.constrain_quotes)),
        ] {
            // Files written before these fields existed cannot be checked.
            if let Some(was) = row.get(field).filter(|v| **v != want) {
                anyhow::bail!(
                    "{}: answered with {field} {was}, this run asks for {want}",
                    at()
                );
            }
        }
        let (Some(id), Some(output)) = (row["id"].as_str(), row["base"].as_str()) else {
            anyhow::bail!(
                "{}: a row needs `id` and `base` (an eval grounded --output row)",
                at()
            );
        };
        let choice = row["base_forced_choice"].as_str().map(str::to_string);
        let prompt = row["prompt_fingerprint"].as_str().map(str::to_string);
        rows.insert(id.to_string(), (output.to_string(), choice, prompt));
    }
    examples
        .iter()
        .map(|e| {
            let Some((output, choice, prompt)) = rows.get(&e.id) else {
                anyhow::bail!("{}: no answer for example {}", path.display(), e.id);
            };
            if prompt.as_ref().is_some_and(|p| *p != prompt_fingerprint(e)) {
                anyhow::bail!(
                    "{}: example {} was answered on another prompt (other documents or template)",
                    path.display(),
                    e.id
                );
            }
            if forced && choice.is_none() && e.label.is_some() {
                anyhow::bail!(
                    "{}: example {} has no base_forced_choice (pass --no-forced-choice, or answer again)",
                    path.display(),
                    e.id
                );
            }
            Ok(ragtune::eval::grounded::GroundedItem::new(
                e,
                output.clone(),
                choice.clone().filter(|_| forced),
            ))
        })
        .collect()
}

fn grounded(a: GroundedArgs) -> Result<()> {
    use ragtune::eval::grounded::{answer, GroundedOptions, GroundedReport};
    use ragtune::llm::{LocalLlm, LocalOptions};
    use ragtune::raft::RaftExample;
    let text = std::fs::read_to_string(&a.examples)
        .with_context(|| format!("reading {}", a.examples.display()))?;
    let mut examples = vec![];
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let e: RaftExample = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a RAFT example", a.examples.display(), i + 1))?;
        if a.split.as_ref().is_none_or(|s| *s == e.split) {
            examples.push(e);
        }
    }
    examples.truncate(a.limit.unwrap_or(usize::MAX));
    if examples.is_empty() {
        anyhow::bail!("{}: no example to evaluate", a.examples.display());
    }
    let labels = if !a.labels.is_empty() {
        a.labels.clone()
    } else if examples.iter().any(|e| e.label.is_some()) {
        vec!["SUPPORT".into(), "CONTRADICT".into()]
    } else {
        vec![]
    };
    let options = GroundedOptions {
        max_tokens: a.max_tokens,
        labels: labels.clone(),
        forced_choice: !a.no_forced_choice,
        constrain_quotes: a.constrain_quotes,
        ..Default::default()
    };
    let load = |spec: &str, adapter: Option<PathBuf>| {
        LocalLlm::load(
            spec.strip_prefix("local:").unwrap_or(spec),
            &LocalOptions {
                adapter,
                ..Default::default()
            },
        )
    };
    let run = |llm: &LocalLlm| answer(llm, Some(llm), &examples, &options);
    let base_items = match &a.base_answers {
        Some(path) => {
            eprintln!("base: {}'s answers from {}", a.model, path.display());
            earlier_base_answers(path, &examples, &a)?
        }
        None => {
            eprintln!("base: {} on {} examples", a.model, examples.len());
            run(&load(&a.model, None)?)?
        }
    };
    let tuned = match (&a.adapter, &a.tuned) {
        (Some(dir), None) => load(&a.model, Some(dir.clone()))?,
        (None, Some(spec)) => load(spec, None)?,
        _ => anyhow::bail!("give the tuned side as --adapter DIR or --tuned MODEL"),
    };
    eprintln!("tuned: {}", tuned.name());
    let report = GroundedReport::new(base_items, run(&tuned)?, &labels);
    if let Some(p) = &a.output {
        let rows: String = report
            .base_items
            .iter()
            .zip(&report.tuned_items)
            .zip(&examples)
            .map(|((b, t), e)| {
                serde_json::json!({"id": b.id, "gold_label": b.gold_label, "oracle_present": b.oracle_present,
                    "base_model": a.model, "max_tokens": a.max_tokens, "constrain_quotes": a.constrain_quotes,
                    "prompt_fingerprint": prompt_fingerprint(e),
                    "base": b.output, "base_forced_choice": b.forced_choice,
                    "tuned": t.output, "tuned_forced_choice": t.forced_choice})
                .to_string()
                    + "\n"
            })
            .collect();
        std::fs::write(p, rows).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(c) = &a.chart {
        report.chart().write_html(c)?;
    }
    if !a.json {
        // Every metric row (a frame's display would elide the middle ones).
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        println!(
            "{:<26} {:>8} {:>8} {:>8}",
            "metric", "base", "tuned", "delta"
        );
        for (name, b, t) in report.rows() {
            let delta = b.zip(t).map(|(b, t)| t - b);
            println!("{name:<26} {:>8} {:>8} {:>8}", fmt(b), fmt(t), fmt(delta));
        }
        println!("n = {}", report.base.n);
    }
    println!("{}", report.summary_json());
    Ok(())
}

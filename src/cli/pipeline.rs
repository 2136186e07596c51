//! `ragtune pipeline`, `ragtune ask` and `ragtune diagnose`: the stages end to end, the tuned
//! query engine, and which stage to tune.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

use ragtune::pipeline::diagnose::{diagnose, diagnose_run, DiagnoseThresholds, Diagnosis};
use ragtune::pipeline::evaluate::read_questions;
use ragtune::pipeline::rag::{Rag, RagOptions};
use ragtune::pipeline::{run_pipeline, PipelineConfig};

/// Documents → tuned embedder, reranker and generator → base vs tuned, stage by stage.
#[derive(Args)]
pub struct PipelineArgs {
    /// A folder or file of documents (.txt .md .html .pdf .json .jsonl; a BEIR corpus.jsonl).
    #[arg(long)]
    docs: Option<PathBuf>,
    /// The run's folder: one sub-folder per stage, `rag.json`, `eval/`.
    #[arg(long)]
    output: PathBuf,
    /// Settings as JSON (the fields of `pipeline.json`); flags override them.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The language model: question writer and the generator tuned (local:<model> or openai:<model>).
    #[arg(long)]
    llm: Option<String>,
    /// API root of an openai: model.
    #[arg(long)]
    base_url: Option<String>,
    /// Training questions: llm, ict, crop, or beir:<split> of the BEIR folder holding --docs.
    #[arg(long)]
    questions: Option<String>,
    /// Evaluation questions: JSONL (question, doc_ids, optional answer) or a BEIR folder.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// The BEIR split of --eval (default test).
    #[arg(long)]
    eval_split: Option<String>,
    /// Evaluate at most this many questions.
    #[arg(long)]
    eval_limit: Option<usize>,
    /// Judge retrieval and reranking only (no answers generated in the evaluation).
    #[arg(long)]
    no_answers: bool,
    /// The embedding stage: train, off, or a model to use as the tuned embedder.
    #[arg(long)]
    embed: Option<String>,
    /// The reranker stage: train, off (no reranker), or a reranker to use.
    #[arg(long)]
    rerank: Option<String>,
    /// The generator stage: train, off (the base LLM), or a LoRA adapter folder to use.
    #[arg(long)]
    generate: Option<String>,
    /// Any setting by its path in pipeline.json, e.g. `--set raft.k=2 --set embed_train.epochs=2`
    /// (values are JSON; bare words are strings).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    sets: Vec<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// `key.sub=value` laid onto a JSON object (values parsed as JSON, else taken as strings).
fn apply_set(config: &mut Value, assignment: &str) -> Result<()> {
    let Some((path, raw)) = assignment.split_once('=') else {
        bail!("--set `{assignment}`: expected PATH=VALUE, e.g. raft.k=2");
    };
    let value: Value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    let mut at = config;
    let keys: Vec<&str> = path.split('.').collect();
    for (i, key) in keys.iter().enumerate() {
        let Value::Object(map) = at else {
            bail!(
                "--set `{path}`: `{}` is not a group of settings",
                keys[..i].join(".")
            );
        };
        if i + 1 == keys.len() {
            map.insert(key.to_string(), value);
            return Ok(());
        }
        at = map
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    Ok(())
}

/// Defaults, then `--config`, then `--set`s, then the flags.
fn config(args: &PipelineArgs) -> Result<PipelineConfig> {
    let mut value = serde_json::to_value(PipelineConfig::default())?;
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let given: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let Value::Object(given) = given else {
            bail!("{}: expected a JSON object of settings", path.display());
        };
        for (k, v) in given {
            value[k] = v;
        }
    }
    for s in &args.sets {
        apply_set(&mut value, s)?;
    }
    let mut put = |key: &str, v: Option<Value>| {
        if let Some(v) = v {
            value[key] = v;
        }
    };
    put(
        "docs",
        args.docs
            .as_ref()
            .map(|p| Value::String(p.display().to_string())),
    );
    put("llm", args.llm.clone().map(Value::String));
    put("base_url", args.base_url.clone().map(Value::String));
    put("questions", args.questions.clone().map(Value::String));
    put(
        "eval",
        args.eval
            .as_ref()
            .map(|p| Value::String(p.display().to_string())),
    );
    put("eval_split", args.eval_split.clone().map(Value::String));
    put("eval_limit", args.eval_limit.map(Value::from));
    put("embed", args.embed.clone().map(Value::String));
    put("rerank", args.rerank.clone().map(Value::String));
    put("generate", args.generate.clone().map(Value::String));
    if args.no_answers {
        value["eval_answers"] = Value::Bool(false);
    }
    let config: PipelineConfig =
        serde_json::from_value(value).context("invalid pipeline settings")?;
    if config.docs.as_os_str().is_empty() {
        bail!("--docs is required (or `docs` in --config)");
    }
    Ok(config)
}

pub fn run(args: PipelineArgs) -> Result<()> {
    let config = config(&args)?;
    let outcome = run_pipeline(&config, &args.output)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        println!("{}", outcome.to_text());
        println!(
            "results in {0}/ (eval/comparison.html, eval/answers-*.jsonl); ask it: ragtune ask --pipeline {0} \"…\"",
            args.output.display()
        );
    }
    Ok(())
}

/// Ask a pipeline's tuned query engine a question.
#[derive(Args)]
pub struct AskArgs {
    /// The pipeline's folder (from `ragtune pipeline`).
    #[arg(long)]
    pipeline: PathBuf,
    /// The question(s).
    #[arg(required = true)]
    questions: Vec<String>,
    /// Retrieve and rerank only.
    #[arg(long)]
    no_generate: bool,
    /// Questions answered together (1: each alone, as a user asking one at a time).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Constrained quoting: quotes may only copy the documents shown (local generators).
    #[arg(long)]
    constrain_quotes: bool,
    /// Print the answers as JSON (answer, quotes with `verified` and `doc_ids`, passages, timings).
    #[arg(long)]
    json: bool,
}

pub fn ask(args: AskArgs) -> Result<()> {
    let mut rag = Rag::open(&args.pipeline, None, !args.no_generate, true)?;
    if let Some(b) = args.batch_size {
        rag.options.batch_size = b.max(1);
    }
    rag.options.constrain_quotes |= args.constrain_quotes;
    let answers = rag.ask_many(&args.questions)?;
    for a in &answers {
        if args.json {
            println!("{}", serde_json::to_string(a)?);
        } else {
            if answers.len() > 1 {
                println!("Q: {}", a.question);
            }
            println!("{}", a.to_text());
            let t = &a.timings;
            eprintln!(
                "embed {:.3}s, search {:.3}s, rerank {:.3}s, generate {:.3}s",
                t.embed, t.search, t.rerank, t.generate
            );
        }
    }
    Ok(())
}

/// Measure a pipeline on your questions and say which stage to tune, with the figures behind it.
#[derive(Args)]
pub struct DiagnoseArgs {
    /// A pipeline folder: its tuned parts measured on `--eval`, or without it, the scores its
    /// evaluation stage saved …
    #[arg(long, conflicts_with = "docs")]
    pipeline: Option<PathBuf>,
    /// … or documents, chunked as the pipeline chunks them, with the parts below.
    #[arg(long)]
    docs: Option<PathBuf>,
    #[arg(long, default_value = "sentence-transformers/all-MiniLM-L6-v2")]
    embedder: String,
    /// A reranker (none: the retriever's order).
    #[arg(long)]
    reranker: Option<String>,
    /// The generator (local:<model> or openai:<model>); without it, answers are not checked.
    #[arg(long, requires = "eval")]
    llm: Option<String>,
    /// API root of an openai: model.
    #[arg(long)]
    base_url: Option<String>,
    /// Evaluation questions: JSONL (question, doc_ids, optional answer) or a BEIR folder.
    /// Without it, `--pipeline`'s run is diagnosed from the scores its evaluation stage saved.
    #[arg(long, required_unless_present = "pipeline")]
    eval: Option<PathBuf>,
    #[arg(long, requires = "eval")]
    eval_split: Option<String>,
    #[arg(long, requires = "eval")]
    eval_limit: Option<usize>,
    /// Labelled (question, document) pairs you have for training.
    #[arg(long, default_value_t = 0)]
    labelled_pairs: usize,
    /// Measure retrieval only, even if the pipeline has a generator.
    #[arg(long, requires = "eval")]
    no_answers: bool,
    /// A threshold, e.g. `--set min_recall=0.9` (see `diagnose --json` for all).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    sets: Vec<String>,
    #[arg(long)]
    json: bool,
}

pub fn run_diagnose(args: DiagnoseArgs) -> Result<()> {
    let mut thresholds = serde_json::to_value(DiagnoseThresholds::default())?;
    for s in &args.sets {
        apply_set(&mut thresholds, s)?;
    }
    let thresholds: DiagnoseThresholds =
        serde_json::from_value(thresholds).context("invalid thresholds")?;
    let print = |diagnosis: Diagnosis| -> Result<()> {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&diagnosis)?);
        } else {
            print!("{}", diagnosis.to_text());
        }
        Ok(())
    };
    let Some(eval) = &args.eval else {
        let dir = args
            .pipeline
            .as_deref()
            .context("--eval is needed with --docs")?;
        return print(diagnose_run(dir, args.labelled_pairs, &thresholds)?.0);
    };
    let rag = match (&args.pipeline, &args.docs) {
        (Some(dir), _) => {
            let generator = match &args.llm {
                Some(spec) => Some(open_llm(spec, args.base_url.as_deref())?),
                None => None,
            };
            Rag::open(dir, generator, !args.no_answers, true)?
        }
        (None, Some(docs)) => {
            let defaults = PipelineConfig::default();
            let documents = ragtune::chunk::load_documents(docs, &Default::default())?;
            let splitter = ragtune::chunk::SentenceSplitter::new(&defaults.chunk)?;
            let chunks = ragtune::chunk::chunk_documents(&documents, &splitter)?;
            let generator = match (&args.llm, args.no_answers) {
                (Some(spec), false) => Some(open_llm(spec, args.base_url.as_deref())?),
                _ => None,
            };
            Rag::from_parts(
                &chunks,
                &args.embedder,
                args.reranker.as_deref(),
                generator,
                RagOptions::default(),
                None,
                true,
            )?
        }
        (None, None) => bail!("give --pipeline DIR, or --docs with the parts to measure"),
    };
    let mut questions = read_questions(eval, args.eval_split.as_deref())?;
    if let Some(n) = args.eval_limit {
        questions.truncate(n);
    }
    print(diagnose(&rag, &questions, args.labelled_pairs, &thresholds)?.0)
}

fn open_llm(
    spec: &str,
    base_url: Option<&str>,
) -> Result<std::sync::Arc<dyn ragtune::llm::ChatModel>> {
    let mut openai = ragtune::llm::OpenAiOptions::default();
    if let Some(url) = base_url {
        openai.base_url = url.to_string();
    }
    ragtune::llm::open_chat_model(spec, &Default::default(), &openai, None)
}

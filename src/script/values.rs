//! The values scripts hold: thin, cheaply clonable handles on Rust API objects. How each looks is
//! decided once, in [`rich`]: `print` and the REPL use its text, notebooks its HTML or plotly.

use std::sync::Arc;

use candle_core::Tensor;
use polars::prelude::DataFrame;
use rhai::Dynamic;

use crate::charts;
use crate::data::RetrievalDataset;
use crate::eval::{RerankReport, RetrievalReport};
use crate::mine::Mined;
use crate::models::{CrossEncoder, SentenceEncoder};
use crate::render::{Render, Rich};
use crate::train::TrainOutcome;

/// A Polars DataFrame.
#[derive(Clone)]
pub struct Frame(pub DataFrame);

/// A loaded sentence encoder.
#[derive(Clone)]
pub struct Encoder(pub Arc<SentenceEncoder>);

/// An `[n, dim]` embedding matrix.
#[derive(Clone)]
pub struct Embeddings(pub Tensor);

/// A retrieval dataset (corpus, queries, qrels).
#[derive(Clone)]
pub struct Dataset(pub Arc<RetrievalDataset>);

/// A retrieval evaluation report.
#[derive(Clone)]
pub struct Report(pub Arc<RetrievalReport>);

/// A plotly chart.
#[derive(Clone)]
pub struct Chart(pub charts::Chart);

/// A loaded cross-encoder (reranker).
#[derive(Clone)]
pub struct Reranker(pub Arc<CrossEncoder>);

/// A reranking evaluation: retriever vs reranked.
#[derive(Clone)]
pub struct RerankEval(pub Arc<RerankReport>);

/// What a training run trained.
#[derive(Clone)]
pub enum Trained {
    Encoder(Encoder),
    Reranker(Reranker),
    Generator(Llm),
}

impl Trained {
    /// What was trained, for messages.
    pub fn what(&self) -> &'static str {
        match self {
            Trained::Encoder(_) => "an encoder",
            Trained::Reranker(_) => "a reranker",
            Trained::Generator(_) => "a generator",
        }
    }

    /// The message for a script that asks a run for another kind of model.
    pub fn elsewhere(&self) -> String {
        format!(
            "this run trained {}: use run.{}",
            self.what(),
            self.getter()
        )
    }

    /// The TrainRun property that holds it.
    pub fn getter(&self) -> &'static str {
        match self {
            Trained::Encoder(_) => "encoder",
            Trained::Reranker(_) => "reranker",
            Trained::Generator(_) => "llm",
        }
    }
}

/// A finished training run: what it reports, and the trained model.
#[derive(Clone)]
pub struct TrainRun {
    pub outcome: Arc<TrainOutcome>,
    pub trained: Trained,
}

/// The result of hard-negative mining.
#[derive(Clone)]
pub struct MinedNegatives(pub Arc<Mined>);

/// RAFT examples.
#[derive(Clone)]
pub struct Raft(pub Arc<crate::raft::RaftSet>);

/// A grounded-generation evaluation: base vs tuned.
#[derive(Clone)]
pub struct GroundedEval(pub Arc<crate::eval::grounded::GroundedReport>);

/// A finished pipeline run: its stages and the base vs tuned comparison.
#[derive(Clone)]
pub struct PipelineRun(pub Arc<crate::pipeline::PipelineOutcome>);

/// A query engine: retriever, reranker, generator over a chunk index.
#[derive(Clone)]
pub struct RagEngine(pub Arc<crate::pipeline::rag::Rag>);

/// A question answered by a query engine, with its quotes checked.
#[derive(Clone)]
pub struct RagAnswer(pub Arc<crate::pipeline::rag::RagAnswer>);

/// Two pipelines, stage by stage.
#[derive(Clone)]
pub struct PipelineCompare(pub Arc<crate::pipeline::evaluate::PipelineComparison>);

/// Which stage to tune, with the figures behind it.
#[derive(Clone)]
pub struct Diagnosis(pub Arc<crate::pipeline::diagnose::Diagnosis>);

/// A language model (local or behind an OpenAI-compatible server).
#[derive(Clone)]
pub struct Llm(pub Arc<dyn crate::llm::ChatModel>);

/// Synthetic pairs, with the chunks they were made from (for datasets and filtering).
#[derive(Clone)]
pub struct Synthetic {
    pub outcome: Arc<crate::synth::SynthOutcome>,
    pub chunks: Arc<Vec<crate::synth::ChunkText>>,
}

/// How a script value is shown: rich for the API's tables, reports and charts, text otherwise.
pub fn rich(value: &Dynamic) -> Rich {
    if let Some(v) = value.read_lock::<Frame>() {
        return v.0.render();
    }
    if let Some(v) = value.read_lock::<Report>() {
        return v.0.render();
    }
    if let Some(v) = value.read_lock::<Chart>() {
        return v.0.render();
    }
    if let Some(v) = value.read_lock::<RerankEval>() {
        return v.0.render();
    }
    if let Some(v) = value.read_lock::<Raft>() {
        return v.0.render();
    }
    if let Some(v) = value.read_lock::<GroundedEval>() {
        return v.0.render();
    }
    if let Some(v) = value.read_lock::<PipelineRun>() {
        return v.0.render();
    }
    if let Some(v) = value.read_lock::<RagAnswer>() {
        return v.0.render();
    }
    if let Some(v) = value.read_lock::<PipelineCompare>() {
        return v.0.render();
    }
    if let Some(v) = value.read_lock::<Diagnosis>() {
        return v.0.render();
    }
    if let Some(v) = value.read_lock::<RagEngine>() {
        return Rich::text(v.to_string());
    }
    if let Some(v) = value.read_lock::<Reranker>() {
        return Rich::text(v.to_string());
    }
    if let Some(v) = value.read_lock::<TrainRun>() {
        return v.outcome.render();
    }
    if let Some(v) = value.read_lock::<MinedNegatives>() {
        return v.0.render();
    }
    if let Some(v) = value.read_lock::<Synthetic>() {
        return v.outcome.render();
    }
    if let Some(v) = value.read_lock::<Encoder>() {
        return Rich::text(v.to_string());
    }
    if let Some(v) = value.read_lock::<Dataset>() {
        return Rich::text(v.to_string());
    }
    if let Some(v) = value.read_lock::<Llm>() {
        return Rich::text(v.to_string());
    }
    if let Some(v) = value.read_lock::<Embeddings>() {
        return Rich::text(v.to_string());
    }
    if value.is_string() {
        return Rich::text(value.clone().into_string().unwrap_or_default());
    }
    Rich::text(value.to_string())
}

/// Display through [`rich`]'s text, so `print(x)` and `to_string(x)` agree with the REPL.
macro_rules! display_as_rendered {
    ($($t:ty => $inner:expr),* $(,)?) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let inner: &dyn Fn(&$t) -> Rich = &$inner;
                write!(f, "{}", inner(self).text)
            }
        }
    )*};
}

display_as_rendered!(
    Frame => |v| v.0.render(),
    Report => |v| v.0.render(),
    Chart => |v| v.0.render(),
    RerankEval => |v| v.0.render(),
    Raft => |v| v.0.render(),
    GroundedEval => |v| v.0.render(),
    TrainRun => |v| v.outcome.render(),
    MinedNegatives => |v| v.0.render(),
    Synthetic => |v| v.outcome.render(),
    PipelineRun => |v| v.0.render(),
    RagAnswer => |v| v.0.render(),
    PipelineCompare => |v| v.0.render(),
    Diagnosis => |v| v.0.render(),
);

impl std::fmt::Display for RagEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.0;
        write!(
            f,
            "Rag({} chunks of {} documents; embedder {}; reranker {}; generator {}; top {} -> {})",
            r.index.texts.len(),
            r.documents(),
            r.encoder.name(),
            r.reranker
                .as_ref()
                .map_or("none".to_string(), |x| x.name().to_string()),
            r.generator
                .as_ref()
                .map_or("none".to_string(), |g| g.name().to_string()),
            r.options.retrieve_k,
            r.options.rerank_k
        )
    }
}

impl std::fmt::Display for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Llm({})", self.0.name())
    }
}

impl std::fmt::Display for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = &self.0;
        write!(
            f,
            "Encoder({}: {} layers, dim {}, max_seq_length {}, {:?} pooling{})",
            e.name(),
            e.bert.config.num_hidden_layers,
            e.dim(),
            e.max_seq_length,
            e.pooling,
            if e.normalize { ", normalized" } else { "" }
        )
    }
}

impl std::fmt::Display for Reranker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.0;
        write!(
            f,
            "Reranker({}: {} layers, {} label(s), max_length {}, {:?} activation)",
            r.name(),
            r.bert.config.num_hidden_layers,
            r.num_labels,
            r.max_length,
            r.activation
        )
    }
}

impl std::fmt::Display for Embeddings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Embeddings{:?}", self.0.dims())
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.0;
        write!(
            f,
            "Dataset({}: {} documents, {} queries, {} judgements)",
            d.name,
            d.corpus.height(),
            d.queries.height(),
            d.qrels.height()
        )
    }
}

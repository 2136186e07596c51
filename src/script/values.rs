//! The values scripts hold: thin, cheaply clonable handles on Rust API objects, each with one
//! plain-text display (what `print` and the REPL show).

use std::sync::Arc;

use candle_core::Tensor;
use polars::prelude::DataFrame;

use crate::charts;
use crate::data::RetrievalDataset;
use crate::eval::RetrievalReport;
use crate::mine::Mined;
use crate::models::SentenceEncoder;
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

/// A finished training run: what it reports, and the trained encoder.
#[derive(Clone)]
pub struct TrainRun {
    pub outcome: Arc<TrainOutcome>,
    pub encoder: Encoder,
    pub metric: String,
}

/// The result of hard-negative mining.
#[derive(Clone)]
pub struct MinedNegatives(pub Arc<Mined>);

impl std::fmt::Display for Chart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chart(plotly; write_html(path) to save it)")
    }
}

impl std::fmt::Display for TrainRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.outcome;
        write!(
            f,
            "TrainRun({} on {} examples: {} steps, {:.2} s/step, final loss {:.4}",
            o.loss, o.examples, o.steps, o.seconds_per_step, o.final_loss
        )?;
        let dev = |m: &Option<crate::eval::metrics::MetricValues>| {
            m.as_ref().and_then(|m| m.get(&self.metric).copied())
        };
        if let (Some(b), Some(a)) = (dev(&o.dev_before), dev(&o.dev_after)) {
            write!(f, "; dev {} {b:.4} -> {a:.4}", self.metric)?;
        }
        write!(f, "; saved in {})", o.output.display())
    }
}

impl std::fmt::Display for MinedNegatives {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.0;
        writeln!(
            f,
            "Mined {} rows for {} queries ({} with fewer negatives than asked)",
            m.frame.height(),
            m.queries,
            m.short_queries
        )?;
        write!(f, "{}", m.summary)
    }
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
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

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.0;
        writeln!(
            f,
            "{} on {} ({} queries, {} documents)",
            r.model, r.dataset, r.queries, r.documents
        )?;
        match r.to_frame() {
            Ok(df) => write!(f, "{df}"),
            Err(e) => write!(f, "(cannot tabulate: {e})"),
        }
    }
}

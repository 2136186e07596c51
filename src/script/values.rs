//! The values scripts hold: thin, cheaply clonable handles on Rust API objects, each with one
//! plain-text display (what `print` and the REPL show).

use std::sync::Arc;

use candle_core::Tensor;
use polars::prelude::DataFrame;

use crate::data::RetrievalDataset;
use crate::eval::RetrievalReport;
use crate::models::SentenceEncoder;

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

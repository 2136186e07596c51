//! Retrieval evaluation of an encoder on a [`RetrievalDataset`]: encode, search, score, report.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::metrics::{evaluate_run, MetricValues, Run, METRICS};
use super::search::{top_k, SearchOptions};
use crate::data::RetrievalDataset;
use crate::models::pooling::l2_normalize;
use crate::models::{EncodeOptions, LoadOptions, SentenceEncoder};

/// What to compute. Scripts pass a map with these keys (`#{ks: [1, 10], batch_size: 64}`);
/// an unknown key is an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrievalEvalOptions {
    /// Cut-offs; every metric is reported at each.
    pub ks: Vec<usize>,
    /// Texts per forward pass when encoding.
    pub batch_size: usize,
    /// Show progress bars.
    pub progress: bool,
    /// Score with only the first `truncate_dim` embedding components (Matryoshka models).
    pub truncate_dim: Option<usize>,
    #[serde(skip)]
    pub search: SearchOptions,
}

impl Default for RetrievalEvalOptions {
    fn default() -> Self {
        let encode = EncodeOptions::default();
        Self {
            ks: vec![1, 3, 5, 10, 100],
            batch_size: encode.batch_size,
            progress: encode.progress,
            truncate_dim: None,
            search: SearchOptions::default(),
        }
    }
}

impl RetrievalEvalOptions {
    pub fn encode_options(&self) -> EncodeOptions {
        EncodeOptions {
            batch_size: self.batch_size,
            progress: self.progress,
        }
    }
}

/// The result of evaluating one model on one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalReport {
    pub model: String,
    pub dataset: String,
    pub queries: usize,
    pub documents: usize,
    /// `<metric>@<k>` (lower case) → mean over queries.
    pub metrics: MetricValues,
    /// Query id → its own metrics.
    #[serde(skip)]
    pub per_query: BTreeMap<String, MetricValues>,
    pub encode_seconds: f64,
}

impl RetrievalReport {
    /// One row per metric family, one column per cut-off.
    pub fn to_frame(&self) -> Result<DataFrame> {
        let ks = self.cutoffs();
        let mut columns = vec![Column::new("metric".into(), METRICS.to_vec())];
        for k in ks {
            let values: Vec<Option<f64>> = METRICS
                .iter()
                .map(|m| self.metrics.get(&format!("{m}@{k}")).copied())
                .collect();
            columns.push(Column::new(format!("@{k}").into(), values));
        }
        Ok(DataFrame::new(METRICS.len(), columns)?)
    }

    /// One row per query, one column per metric.
    pub fn per_query_frame(&self) -> Result<DataFrame> {
        let names: Vec<String> = self.metrics.keys().cloned().collect();
        let mut columns = vec![Column::new(
            "query_id".into(),
            self.per_query.keys().cloned().collect::<Vec<_>>(),
        )];
        for name in &names {
            let values: Vec<f64> = self
                .per_query
                .values()
                .map(|m| m.get(name).copied().unwrap_or(0.0))
                .collect();
            columns.push(Column::new(name.as_str().into(), values));
        }
        Ok(DataFrame::new(self.per_query.len(), columns)?)
    }

    /// The metrics as one flat JSON object (`{"ndcg@10": …, …}`).
    pub fn metrics_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.metrics).expect("metrics serialise")
    }

    fn cutoffs(&self) -> Vec<usize> {
        let mut ks: Vec<usize> = self
            .metrics
            .keys()
            .filter_map(|k| k.split('@').nth(1)?.parse().ok())
            .collect();
        ks.sort_unstable();
        ks.dedup();
        ks
    }
}

/// Encodes the dataset's judged queries and its corpus, retrieves the top `max(ks)` documents
/// per query by cosine similarity and scores the ranking.
pub fn evaluate_encoder(
    encoder: &SentenceEncoder,
    dataset: &RetrievalDataset,
    options: &RetrievalEvalOptions,
) -> Result<RetrievalReport> {
    let start = std::time::Instant::now();
    let query_ids = dataset.query_ids()?;
    let doc_ids = dataset.doc_ids()?;
    let queries = encoder
        .encode(&dataset.query_texts()?, &options.encode_options())
        .context("encoding queries")?;
    let docs = encoder
        .encode(&dataset.doc_texts()?, &options.encode_options())
        .context("encoding the corpus")?;
    let encode_seconds = start.elapsed().as_secs_f64();
    let (queries, docs) = match options.truncate_dim {
        Some(d) if d == 0 || d > encoder.dim() => {
            anyhow::bail!(
                "truncate_dim {d} must be between 1 and the embedding width {}",
                encoder.dim()
            )
        }
        Some(d) => (queries.narrow(1, 0, d)?, docs.narrow(1, 0, d)?),
        None => (queries, docs),
    };
    // Cosine similarity whatever the model's own Normalize module says (after truncation, too).
    let (queries, docs) = (l2_normalize(&queries)?, l2_normalize(&docs)?);
    let depth = options.ks.iter().copied().max().unwrap_or(10);
    let hits = top_k(&queries, &docs, depth, options.search)?;
    let run: Run = query_ids
        .iter()
        .zip(hits)
        .map(|(q, hits)| {
            (
                q.clone(),
                hits.into_iter()
                    .map(|h| (doc_ids[h.doc].clone(), h.score))
                    .collect(),
            )
        })
        .collect();
    let scored = evaluate_run(&run, &dataset.qrels_map()?, &options.ks);
    Ok(RetrievalReport {
        model: encoder.name().to_string(),
        dataset: dataset.name.clone(),
        queries: scored.per_query.len(),
        documents: doc_ids.len(),
        metrics: scored.mean,
        per_query: scored.per_query,
        encode_seconds,
    })
}

/// Evaluates several models on one dataset; see [`comparison_frame`] for the side-by-side table.
pub fn compare_models(
    models: &[&str],
    dataset: &RetrievalDataset,
    load: &LoadOptions,
    options: &RetrievalEvalOptions,
) -> Result<Vec<RetrievalReport>> {
    models
        .iter()
        .map(|m| {
            let encoder = SentenceEncoder::load(m, load)?;
            evaluate_encoder(&encoder, dataset, options)
        })
        .collect()
}

/// The rows a comparison leads with.
pub const HEADLINE: [&str; 5] = ["ndcg@10", "mrr@10", "map@100", "recall@100", "accuracy@1"];

/// Side by side: one row per `<metric>@<k>` (headline metrics first, then the rest in name order),
/// one column per report (named by its model), and, for two reports, a `delta` column (second
/// minus first).
pub fn comparison_frame(reports: &[RetrievalReport]) -> Result<DataFrame> {
    let mut names: Vec<String> = reports
        .first()
        .map(|r| r.metrics.keys().cloned().collect())
        .unwrap_or_default();
    // The headline metrics first, so a shortened print of the table still shows them.
    let rank = |n: &str| {
        HEADLINE
            .iter()
            .position(|h| *h == n)
            .unwrap_or(HEADLINE.len())
    };
    names.sort_by_key(|n| rank(n));
    let mut columns = vec![Column::new("metric".into(), names.clone())];
    let mut seen = std::collections::HashSet::new();
    for r in reports {
        let mut title = r.model.clone();
        while !seen.insert(title.clone()) {
            title.push('\'');
        }
        let values: Vec<Option<f64>> = names.iter().map(|n| r.metrics.get(n).copied()).collect();
        columns.push(Column::new(title.into(), values));
    }
    if let [a, b] = reports {
        let delta: Vec<Option<f64>> = names
            .iter()
            .map(|n| Some(b.metrics.get(n)? - a.metrics.get(n)?))
            .collect();
        columns.push(Column::new("delta".into(), delta));
    }
    Ok(DataFrame::new(names.len(), columns)?)
}

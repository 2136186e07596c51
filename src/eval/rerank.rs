//! Reranking evaluation: a retriever's top-k per query, reranked by a cross-encoder, scored side
//! by side with the retriever's own ranking of the same candidates.
//!
//! A relevant document the retriever missed stays missed: the reranker can only reorder what it is
//! given, so "retriever vs reranked" measures the second stage in the pipeline as it would run.
//! (sentence-transformers' `CrossEncoderRerankingEvaluator` adds the positives to the candidates
//! by default, which inflates the figure; [`RerankEvalOptions::include_positives`] does the same
//! when asked.) Candidates can also come from a file of lists.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::metrics::{evaluate_run, MetricValues, Run, METRICS};
use super::search::{top_k, SearchOptions};
use crate::data::{Qrels, RetrievalDataset};
use crate::models::embedding_cache::EmbeddingCache;
use crate::models::pooling::l2_normalize;
use crate::models::{CrossEncoder, EncodeOptions, PredictOptions, SentenceEncoder};

/// What to compute. Scripts pass a map with these keys; an unknown key is an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RerankEvalOptions {
    /// Candidates per query from the retriever.
    pub top_k: usize,
    /// Cut-offs of the reported metrics.
    pub ks: Vec<usize>,
    /// Add each query's relevant documents to its candidates when the retriever missed them
    /// (sentence-transformers' default; off here, since it overstates the pipeline).
    pub include_positives: bool,
    /// Pairs (or texts) per forward pass.
    pub batch_size: usize,
    pub progress: bool,
    /// Keep the retriever's embeddings here: evaluating several rerankers behind the same
    /// retriever encodes the corpus once.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Fuse the reranker's scores with the retriever's, this weight on the retriever's
    /// (`models::fusion`; chosen on held-out queries). Unset: the weight saved with the reranker
    /// (`fusion.json`, from `train rerank`), else the reranker's order alone; 0 is always the
    /// reranker alone.
    pub fusion: Option<f64>,
}

impl Default for RerankEvalOptions {
    fn default() -> Self {
        Self {
            top_k: 100,
            ks: vec![1, 3, 5, 10, 100],
            include_positives: false,
            batch_size: 32,
            progress: true,
            cache_dir: None,
            fusion: None,
        }
    }
}

/// Per query, the documents to rerank.
#[derive(Debug, Clone)]
pub struct Candidates {
    /// Where they came from (dataset and retriever), for reports.
    pub name: String,
    pub retriever: String,
    pub query_ids: Vec<String>,
    pub queries: Vec<String>,
    /// Per query: (doc id, text, first-stage score), best first.
    pub docs: Vec<Vec<(String, String, f32)>>,
    pub qrels: Qrels,
}

impl Candidates {
    /// The retriever's top `options.top_k` documents for every judged query of `dataset`.
    pub fn retrieve(
        retriever: &SentenceEncoder,
        dataset: &RetrievalDataset,
        options: &RerankEvalOptions,
    ) -> Result<Self> {
        let qrels = dataset.qrels_map()?;
        let (all_ids, all_texts) = (dataset.query_ids()?, dataset.query_texts()?);
        let judged: Vec<usize> = (0..all_ids.len())
            .filter(|&i| {
                qrels
                    .get(&all_ids[i])
                    .is_some_and(|j| j.values().any(|&g| g >= 1))
            })
            .collect();
        let query_ids: Vec<String> = judged.iter().map(|&i| all_ids[i].clone()).collect();
        let queries: Vec<String> = judged.iter().map(|&i| all_texts[i].clone()).collect();
        let (doc_ids, doc_texts) = (dataset.doc_ids()?, dataset.doc_texts()?);
        let encode = EncodeOptions {
            batch_size: options.batch_size,
            progress: options.progress,
        };
        let embed = |texts: &[String]| -> Result<candle_core::Tensor> {
            let e = match &options.cache_dir {
                Some(dir) => {
                    EmbeddingCache::new(dir, retriever)?
                        .encode(retriever, texts, &encode)?
                        .0
                }
                None => retriever.encode(texts, &encode)?,
            };
            Ok(l2_normalize(&e)?)
        };
        let q = embed(&queries).context("encoding queries")?;
        let d = embed(&doc_texts).context("encoding the corpus")?;
        let hits = top_k(&q, &d, options.top_k.max(1), SearchOptions::default())?;
        let index: HashMap<&str, usize> = doc_ids
            .iter()
            .enumerate()
            .map(|(i, d)| (d.as_str(), i))
            .collect();
        let docs = hits
            .into_iter()
            .zip(&query_ids)
            .map(|(hits, qid)| {
                let mut list: Vec<(String, String, f32)> = hits
                    .into_iter()
                    .map(|h| (doc_ids[h.doc].clone(), doc_texts[h.doc].clone(), h.score))
                    .collect();
                if options.include_positives {
                    let have: HashSet<String> = list.iter().map(|d| d.0.clone()).collect();
                    for (doc, &grade) in &qrels[qid] {
                        if grade >= 1 && !have.contains(doc) {
                            if let Some(&i) = index.get(doc.as_str()) {
                                list.push((doc.clone(), doc_texts[i].clone(), f32::NEG_INFINITY));
                            }
                        }
                    }
                }
                list
            })
            .collect();
        Ok(Self {
            name: dataset.name.clone(),
            retriever: retriever.name().to_string(),
            query_ids,
            queries,
            docs,
            qrels,
        })
    }

    /// Candidates from a table: rows `{query, positive: […], negative: […]}` (candidates in that
    /// order, relevance from the lists) or `{query, documents: […]}` with `positive` ids or a
    /// `labels` list. Documents are their own ids.
    pub fn from_frame(df: &DataFrame, origin: &str) -> Result<Self> {
        let queries = crate::data::table::str_column(df, "query")
            .with_context(|| format!("{origin}: needs a `query` column"))?;
        let list = |name: &str| -> Result<Option<Vec<Vec<String>>>> {
            let Ok(col) = df.column(name) else {
                return Ok(None);
            };
            let l = col.as_materialized_series().list().map_err(|_| {
                anyhow::anyhow!("{origin}: column `{name}` must be a list of strings")
            })?;
            Ok(Some(
                (0..l.len())
                    .map(|r| {
                        l.get_as_series(r)
                            .map(|s| {
                                s.str().map(|c| {
                                    c.iter()
                                        .map(|x| x.unwrap_or_default().to_string())
                                        .collect()
                                })
                            })
                            .transpose()
                            .map(Option::unwrap_or_default)
                    })
                    .collect::<PolarsResult<_>>()?,
            ))
        };
        let (docs, relevant): (Vec<Vec<String>>, Vec<Vec<bool>>) =
            match (list("positive")?, list("negative")?, list("documents")?) {
                (Some(p), Some(n), None) => p
                    .into_iter()
                    .zip(n)
                    .map(|(p, n)| {
                        let rel = std::iter::repeat_n(true, p.len())
                            .chain(std::iter::repeat_n(false, n.len()))
                            .collect();
                        (p.into_iter().chain(n).collect(), rel)
                    })
                    .unzip(),
                (positives, None, Some(d)) => {
                    let labels = df
                        .column("labels")
                        .ok()
                        .map(|c| c.cast(&DataType::List(Box::new(DataType::Float32))))
                        .transpose()?;
                    d.into_iter()
                        .enumerate()
                        .map(|(r, docs)| {
                            let rel = match (&positives, &labels) {
                                (Some(p), _) => docs.iter().map(|x| p[r].contains(x)).collect(),
                                (None, Some(l)) => {
                                    let row = l.as_materialized_series().list()?.get_as_series(r);
                                    let vals: Vec<f32> = row
                                        .map(|s| s.f32().map(|c| c.iter().map(|v| v.unwrap_or(0.0)).collect()))
                                        .transpose()?
                                        .unwrap_or_default();
                                    if vals.len() != docs.len() {
                                        bail!("{origin}: row {}: {} documents but {} labels", r + 1, docs.len(), vals.len());
                                    }
                                    vals.iter().map(|&v| v > 0.0).collect()
                                }
                                (None, None) => bail!(
                                    "{origin}: with `documents`, give `positive` (the relevant ones) or `labels`"
                                ),
                            };
                            Ok((docs, rel))
                        })
                        .collect::<Result<Vec<_>>>()?
                        .into_iter()
                        .unzip()
                }
                _ => bail!(
                    "{origin}: expected columns query + positive + negative (lists), or query + documents (+ positive or labels)"
                ),
            };
        let query_ids: Vec<String> = (0..queries.len()).map(|i| i.to_string()).collect();
        let mut qrels = Qrels::new();
        let mut lists = Vec::new();
        for (i, (docs, rel)) in docs.into_iter().zip(relevant).enumerate() {
            let judged: HashMap<String, i64> = docs
                .iter()
                .zip(&rel)
                .map(|(d, &r)| (d.clone(), r as i64))
                .collect();
            qrels.insert(query_ids[i].clone(), judged);
            // Given order is the first-stage ranking.
            let n = docs.len();
            lists.push(
                docs.into_iter()
                    .enumerate()
                    .map(|(rank, d)| (d.clone(), d, (n - rank) as f32))
                    .collect(),
            );
        }
        Ok(Self {
            name: origin.to_string(),
            retriever: "given order".into(),
            query_ids,
            queries,
            docs: lists,
            qrels,
        })
    }

    pub fn pair_count(&self) -> usize {
        self.docs.iter().map(Vec::len).sum()
    }

    /// Only the queries that [`crate::models::fusion::held_out`] holds out (one in `every`, by
    /// a hash of the query id), with their judgements.
    pub fn held_out(&self, every: usize) -> Self {
        let keep: Vec<usize> = (0..self.query_ids.len())
            .filter(|&i| crate::models::fusion::held_out(&self.query_ids[i], every))
            .collect();
        let query_ids: Vec<String> = keep.iter().map(|&i| self.query_ids[i].clone()).collect();
        Self {
            name: format!("{}, 1 query in {every}", self.name),
            retriever: self.retriever.clone(),
            queries: keep.iter().map(|&i| self.queries[i].clone()).collect(),
            docs: keep.iter().map(|&i| self.docs[i].clone()).collect(),
            qrels: self
                .qrels
                .iter()
                .filter(|(q, _)| query_ids.contains(q))
                .map(|(q, j)| (q.clone(), j.clone()))
                .collect(),
            query_ids,
        }
    }

    /// The first-stage ranking as a run.
    pub fn run(&self) -> Run {
        self.query_ids
            .iter()
            .zip(&self.docs)
            .map(|(q, docs)| (q.clone(), docs.iter().map(|d| (d.0.clone(), d.2)).collect()))
            .collect()
    }

    /// Every candidate with its relevance grade, first-stage score and rank, and the reranker's
    /// score and rank from `reranked` (a run over these candidates).
    pub fn rows(&self, reranked: &Run) -> Result<DataFrame> {
        let mut cols: [Vec<String>; 4] = Default::default();
        let (mut grades, mut first, mut second) = (vec![], vec![], vec![]);
        let (mut first_rank, mut second_rank) = (vec![], vec![]);
        for (q, (qid, docs)) in self
            .queries
            .iter()
            .zip(self.query_ids.iter().zip(&self.docs))
        {
            let mut order: Vec<(String, f32)> = reranked.get(qid).cloned().unwrap_or_default();
            super::metrics::trec_order(&mut order);
            let rank_of: HashMap<&str, usize> = order
                .iter()
                .enumerate()
                .map(|(i, (d, _))| (d.as_str(), i + 1))
                .collect();
            let score_of: HashMap<&str, f32> =
                order.iter().map(|(d, s)| (d.as_str(), *s)).collect();
            for (i, (doc_id, text, score)) in docs.iter().enumerate() {
                cols[0].push(qid.clone());
                cols[1].push(q.clone());
                cols[2].push(doc_id.clone());
                cols[3].push(text.clone());
                grades.push(
                    self.qrels
                        .get(qid)
                        .and_then(|j| j.get(doc_id))
                        .copied()
                        .unwrap_or(0),
                );
                first.push(*score);
                first_rank.push(i as u32 + 1);
                second.push(score_of.get(doc_id.as_str()).copied().unwrap_or(f32::NAN));
                second_rank.push(rank_of.get(doc_id.as_str()).map_or(0, |&r| r as u32));
            }
        }
        let [query_id, query, doc_id, document] = cols;
        Ok(df!(
            "query_id" => query_id, "query" => query, "doc_id" => doc_id, "document" => document,
            "relevance" => grades, "retriever_score" => first, "retriever_rank" => first_rank,
            "reranker_score" => second, "reranker_rank" => second_rank,
        )?)
    }

    /// Each query's candidate ids, best first: the retriever's order, or with `reranker` the
    /// cross-encoder's (what RAFT's `retrieved` distractors are drawn from).
    pub fn ranking(
        &self,
        reranker: Option<&CrossEncoder>,
        options: &RerankEvalOptions,
    ) -> Result<std::collections::HashMap<String, Vec<String>>> {
        let Some(reranker) = reranker else {
            return Ok(self
                .query_ids
                .iter()
                .zip(&self.docs)
                .map(|(q, docs)| (q.clone(), docs.iter().map(|d| d.0.clone()).collect()))
                .collect());
        };
        Ok(self
            .rerank(reranker, options)?
            .into_iter()
            .map(|(q, mut scored)| {
                scored.sort_by(|a, b| b.1.total_cmp(&a.1));
                (q, scored.into_iter().map(|(d, _)| d).collect())
            })
            .collect())
    }

    /// `reranked` (a run over these candidates) fused with the first-stage scores, `retriever_weight`
    /// on the latter (`models::fusion`).
    pub fn fused(&self, reranked: &Run, retriever_weight: f64) -> Run {
        self.query_ids
            .iter()
            .zip(&self.docs)
            .map(|(q, docs)| {
                let second: HashMap<&str, f32> = reranked
                    .get(q)
                    .map(|r| r.iter().map(|(d, s)| (d.as_str(), *s)).collect())
                    .unwrap_or_default();
                let first: Vec<f32> = docs.iter().map(|d| d.2).collect();
                let other: Vec<f32> = docs
                    .iter()
                    .map(|d| {
                        second
                            .get(d.0.as_str())
                            .copied()
                            .unwrap_or(f32::NEG_INFINITY)
                    })
                    .collect();
                let fused = crate::models::fusion::fuse(&first, &other, retriever_weight);
                (
                    q.clone(),
                    docs.iter().map(|d| d.0.clone()).zip(fused).collect(),
                )
            })
            .collect()
    }

    /// NDCG@10 of `reranked` fused with the first stage at each of `fusion::WEIGHTS`.
    pub fn fusion_curve(&self, reranked: &Run) -> Vec<(f64, f64)> {
        crate::models::fusion::WEIGHTS
            .iter()
            .map(|&w| {
                let m = evaluate_run(&self.fused(reranked, w), &self.qrels, &[10]);
                (w, m.mean.get("ndcg@10").copied().unwrap_or(0.0))
            })
            .collect()
    }

    /// The cross-encoder's ranking of the same candidates as a run.
    pub fn rerank(&self, reranker: &CrossEncoder, options: &RerankEvalOptions) -> Result<Run> {
        let pairs: Vec<(&str, &str)> = self
            .queries
            .iter()
            .zip(&self.docs)
            .flat_map(|(q, docs)| docs.iter().map(move |d| (q.as_str(), d.1.as_str())))
            .collect();
        let scores = reranker.score(
            &pairs,
            &PredictOptions {
                batch_size: options.batch_size,
                activation: Some(crate::models::ScoreActivation::Identity),
                progress: options.progress,
            },
        )?;
        let mut at = 0;
        Ok(self
            .query_ids
            .iter()
            .zip(&self.docs)
            .map(|(q, docs)| {
                let ranked = docs
                    .iter()
                    .map(|d| {
                        at += 1;
                        (d.0.clone(), scores[at - 1])
                    })
                    .collect();
                (q.clone(), ranked)
            })
            .collect())
    }
}

/// Retriever vs reranked, on the same candidates.
#[derive(Debug, Clone, Serialize)]
pub struct RerankReport {
    pub dataset: String,
    pub retriever: String,
    pub reranker: String,
    pub queries: usize,
    pub top_k: usize,
    pub pairs: usize,
    pub retriever_metrics: MetricValues,
    pub reranked_metrics: MetricValues,
    pub rerank_seconds: f64,
    /// The retriever weight the reranked figures fuse with (`None`: the reranker alone).
    pub fusion: Option<f64>,
    /// NDCG@10 at each fusion weight (0 = the reranker alone, 1 = the retriever): how much the
    /// two agree and disagree usefully. Measured on this split: choose a weight on held-out
    /// queries, not here.
    pub fusion_curve: Vec<(f64, f64)>,
    /// One row per (query, candidate): ids, texts, both scores and both ranks, for inspection.
    #[serde(skip)]
    pub rows: DataFrame,
}

/// Reranks `candidates` with `reranker` and scores both rankings.
pub fn evaluate_reranker(
    reranker: &CrossEncoder,
    candidates: &Candidates,
    options: &RerankEvalOptions,
) -> Result<RerankReport> {
    if candidates.query_ids.is_empty() {
        bail!("{}: no judged query to rerank for", candidates.name);
    }
    let start = std::time::Instant::now();
    let reranked = candidates.rerank(reranker, options)?;
    let rerank_seconds = start.elapsed().as_secs_f64();
    let retriever = evaluate_run(&candidates.run(), &candidates.qrels, &options.ks);
    let fusion = reranker.fusion_weight(options.fusion);
    if let Some(w) = fusion.filter(|w| !(0.0..=1.0).contains(w)) {
        bail!("fusion weight {w}: must be between 0 (the reranker alone) and 1 (the retriever)");
    }
    let reranked_scores = match fusion {
        Some(w) => evaluate_run(
            &candidates.fused(&reranked, w),
            &candidates.qrels,
            &options.ks,
        ),
        None => evaluate_run(&reranked, &candidates.qrels, &options.ks),
    };
    let rows = candidates.rows(&reranked)?;
    Ok(RerankReport {
        dataset: candidates.name.clone(),
        retriever: candidates.retriever.clone(),
        reranker: reranker.name().to_string(),
        queries: candidates.query_ids.len(),
        top_k: candidates.docs.iter().map(Vec::len).max().unwrap_or(0),
        pairs: candidates.pair_count(),
        retriever_metrics: retriever.mean,
        reranked_metrics: reranked_scores.mean,
        rerank_seconds,
        fusion,
        fusion_curve: candidates.fusion_curve(&reranked),
        rows,
    })
}

impl RerankReport {
    /// One row per `<metric>@<k>`: retriever, reranked and their difference.
    pub fn to_frame(&self) -> Result<DataFrame> {
        self.frame_of(order_metrics(self.retriever_metrics.keys()))
    }

    /// The headline rows of [`Self::to_frame`] (NDCG@10, MRR@10, MAP@100, recall@10 and @100,
    /// precision@5, accuracy@1, where computed): what fits on a screen without elision.
    pub fn headline_frame(&self) -> Result<DataFrame> {
        self.frame_of(
            HEADLINE
                .iter()
                .map(|m| m.to_string())
                .filter(|m| self.retriever_metrics.contains_key(m))
                .collect(),
        )
    }

    fn frame_of(&self, names: Vec<String>) -> Result<DataFrame> {
        let get = |m: &MetricValues| -> Vec<f64> {
            names
                .iter()
                .map(|n| m.get(n).copied().unwrap_or(0.0))
                .collect()
        };
        let (a, b) = (get(&self.retriever_metrics), get(&self.reranked_metrics));
        let delta: Vec<f64> = a.iter().zip(&b).map(|(a, b)| b - a).collect();
        Ok(DataFrame::new(
            names.len(),
            vec![
                Column::new("metric".into(), names),
                Column::new("retriever".into(), a),
                Column::new("reranked".into(), b),
                Column::new("delta".into(), delta),
            ],
        )?)
    }

    /// `{"retriever": {"ndcg@10": …}, "reranked": {…}}`.
    pub fn metrics_json(&self) -> serde_json::Value {
        serde_json::json!({"retriever": self.retriever_metrics, "reranked": self.reranked_metrics,
                           "fusion": self.fusion, "fusion_curve": self.fusion_curve})
    }

    /// Retriever and reranked as grouped bars of the headline metrics.
    pub fn chart(&self) -> crate::charts::Chart {
        let names: Vec<String> = HEADLINE
            .iter()
            .map(|s| s.to_string())
            .filter(|n| self.retriever_metrics.contains_key(n))
            .collect();
        let values = |m: &MetricValues| names.iter().map(|n| m[n]).collect::<Vec<f64>>();
        crate::charts::Chart::bars(
            &format!("Reranking on {} (top {})", self.dataset, self.top_k),
            &names,
            vec![
                (
                    format!("retriever ({})", self.retriever),
                    values(&self.retriever_metrics),
                ),
                (
                    format!("reranked ({})", self.reranker),
                    values(&self.reranked_metrics),
                ),
            ],
        )
    }
}

/// The metrics a reranking report leads with.
const HEADLINE: [&str; 7] = [
    "ndcg@10",
    "mrr@10",
    "map@100",
    "recall@10",
    "recall@100",
    "precision@5",
    "accuracy@1",
];

/// Metric names in family order (`accuracy`, `precision`, …), cut-offs ascending.
fn order_metrics<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<(usize, usize, String)> = names
        .map(|n| {
            let (family, k) = n.split_once('@').unwrap_or((n, "0"));
            let f = METRICS
                .iter()
                .position(|m| *m == family)
                .unwrap_or(usize::MAX);
            (f, k.parse().unwrap_or(0), n.clone())
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, _, n)| n).collect()
}

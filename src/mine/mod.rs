//! Hard-negative mining: for every (query, positive) pair, documents that a base encoder ranks
//! close to the query but that are not its positives — the hard negatives that make contrastive
//! training informative. Mirrors sentence-transformers' `util.mine_hard_negatives`: the same
//! knobs, the same output formats. This stage reads pairs and a corpus and writes a DataFrame; it
//! never trains.
//!
//! Scores stream block by block through [`crate::eval::search::top_k`], so memory is bounded by
//! `queries × (range_max + positives)` plus the embeddings, whatever the corpus size.

pub mod output;
pub mod select;
pub mod source;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::charts::Chart;
use crate::data::table::str_column;
use crate::eval::search::{top_k, SearchOptions};
use crate::models::embedding_cache::EmbeddingCache;
use crate::models::pooling::l2_normalize;
use crate::models::{EncodeOptions, SentenceEncoder};
use crate::rng::Rng;
pub use output::OutputFormat;
pub use select::{Filters, Sampling};

/// Scores (query, documents) pairs more precisely than the embedding model, e.g. a cross-encoder.
/// As sentence-transformers' `cross_encoder=`: when given and a margin or `max_score` is set (the
/// filters that compare scores), the `range_max` candidates and the positives are rescored before
/// filtering; otherwise it would change nothing and is not run.
pub trait Rescorer: Send + Sync {
    fn score(&self, query: &str, documents: &[&str]) -> Result<Vec<f32>>;
}

/// A cross-encoder rescores with its own activation, as `CrossEncoder.predict` does.
impl Rescorer for crate::models::CrossEncoder {
    fn score(&self, query: &str, documents: &[&str]) -> Result<Vec<f32>> {
        let pairs: Vec<(&str, &str)> = documents.iter().map(|d| (query, *d)).collect();
        crate::models::CrossEncoder::score(
            self,
            &pairs,
            &crate::models::PredictOptions {
                progress: false,
                ..Default::default()
            },
        )
    }
}

/// The knobs of [`mine_hard_negatives`]. Scripts pass a map with these keys; unknown keys are
/// errors. Defaults follow sentence-transformers. (Scores are f64 here because script numbers
/// are; the scores themselves are f32.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MineOptions {
    pub num_negatives: usize,
    pub range_min: usize,
    pub range_max: Option<usize>,
    pub max_score: Option<f64>,
    pub min_score: Option<f64>,
    pub absolute_margin: Option<f64>,
    pub relative_margin: Option<f64>,
    pub sampling: Sampling,
    pub output_format: OutputFormat,
    pub seed: u64,
    pub batch_size: usize,
    /// Folder of the embedding cache (none: always encode).
    pub cache_dir: Option<PathBuf>,
    pub progress: bool,
}

impl Default for MineOptions {
    fn default() -> Self {
        Self {
            num_negatives: 3,
            range_min: 0,
            range_max: None,
            max_score: None,
            min_score: None,
            absolute_margin: None,
            relative_margin: None,
            sampling: Sampling::Top,
            output_format: OutputFormat::Triplet,
            seed: 42,
            batch_size: 32,
            cache_dir: None,
            progress: true,
        }
    }
}

impl MineOptions {
    /// The filters, with sentence-transformers' default `range_max` when unset: deep enough for
    /// `num_negatives` after `range_min`, ten times deeper when score filters may reject some.
    fn filters(&self, max_positives: usize) -> Result<Filters> {
        let filtering = self.absolute_margin.is_some()
            || self.relative_margin.is_some()
            || self.max_score.is_some();
        let depth = if filtering {
            10 * self.num_negatives
        } else {
            self.num_negatives
        };
        let range_max = self
            .range_max
            .unwrap_or(self.range_min + depth + max_positives);
        if self.range_min >= range_max {
            bail!(
                "range_min ({}) must be smaller than range_max ({range_max})",
                self.range_min
            );
        }
        if self.num_negatives > range_max - self.range_min {
            bail!(
                "cannot mine {} negatives per query from ranks {}..{range_max}; lower num_negatives or range_min, or raise range_max",
                self.num_negatives,
                self.range_min
            );
        }
        Ok(Filters {
            range_min: self.range_min,
            range_max,
            max_score: self.max_score.map(|v| v as f32),
            min_score: self.min_score.map(|v| v as f32),
            absolute_margin: self.absolute_margin.map(|v| v as f32),
            relative_margin: self.relative_margin.map(|v| v as f32),
            num_negatives: self.num_negatives,
            sampling: self.sampling,
        })
    }
}

/// What mining produced.
pub struct Mined {
    /// The training data, in the chosen output format.
    pub frame: DataFrame,
    /// Positive / negative / difference score statistics (rows: count, mean, std, min, 25%, 50%, 75%, max).
    pub summary: DataFrame,
    pub positive_scores: Vec<f32>,
    pub negative_scores: Vec<f32>,
    pub queries: usize,
    /// Queries that got fewer than `num_negatives` negatives.
    pub short_queries: usize,
    /// Whether the corpus embeddings came from the cache.
    pub cache_hit: bool,
}

impl Mined {
    /// Histogram of positive vs negative scores.
    pub fn chart(&self) -> Chart {
        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect();
        Chart::histograms(
            "Hard-negative mining: similarity to the query",
            "cosine similarity",
            vec![
                ("positives".into(), f(&self.positive_scores)),
                ("negatives".into(), f(&self.negative_scores)),
            ],
        )
    }
}

/// Mines hard negatives for the (query, positive) pairs in the first two columns of `pairs`. The
/// candidates are `corpus` (deduplicated, with the positives added) or, when `None`, the
/// positives themselves. A query appearing on several rows has all those positives; none of them
/// (by exact text) is ever returned as its negative.
pub fn mine_hard_negatives(
    encoder: &SentenceEncoder,
    pairs: &DataFrame,
    corpus: Option<&[String]>,
    options: &MineOptions,
    rescorer: Option<&dyn Rescorer>,
) -> Result<Mined> {
    let names: Vec<String> = pairs
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    if names.len() < 2 {
        bail!(
            "mining needs (query, positive) columns; the data has {}",
            names.join(", ")
        );
    }
    let (query_col, positive_col) = (&names[0], &names[1]);
    let queries_per_row = str_column(pairs, query_col)?;
    let positives_per_row = str_column(pairs, positive_col)?;
    if queries_per_row.is_empty() {
        bail!("no (query, positive) pairs to mine for");
    }
    if options.num_negatives == 0 {
        bail!("num_negatives must be at least 1");
    }

    // Unique documents (corpus then positives) and unique queries, first occurrence order.
    let mut doc_index: HashMap<&str, usize> = HashMap::new();
    let mut docs: Vec<String> = vec![];
    for text in corpus.unwrap_or(&[]).iter().chain(&positives_per_row) {
        if !doc_index.contains_key(text.as_str()) {
            doc_index.insert(text, docs.len());
            docs.push(text.clone());
        }
    }
    let mut query_index: HashMap<&str, usize> = HashMap::new();
    let mut queries: Vec<String> = vec![];
    let mut positives_of: Vec<Vec<usize>> = vec![];
    for (q, p) in queries_per_row.iter().zip(&positives_per_row) {
        let qi = *query_index.entry(q).or_insert_with(|| {
            queries.push(q.clone());
            positives_of.push(vec![]);
            queries.len() - 1
        });
        let di = doc_index[p.as_str()];
        if !positives_of[qi].contains(&di) {
            positives_of[qi].push(di);
        }
    }

    let encode = EncodeOptions {
        batch_size: options.batch_size,
        progress: options.progress,
    };
    let (query_emb, doc_emb, cache_hit) = match &options.cache_dir {
        Some(dir) => {
            let cache = EmbeddingCache::new(dir, encoder)?;
            let (q, _) = cache
                .encode(encoder, &queries, &encode)
                .context("encoding the queries")?;
            let (d, hit) = cache
                .encode(encoder, &docs, &encode)
                .context("encoding the corpus")?;
            (q, d, hit)
        }
        None => (
            encoder
                .encode(&queries, &encode)
                .context("encoding the queries")?,
            encoder
                .encode(&docs, &encode)
                .context("encoding the corpus")?,
            false,
        ),
    };
    let (query_emb, doc_emb) = (l2_normalize(&query_emb)?, l2_normalize(&doc_emb)?);

    let most_positives = positives_of.iter().map(Vec::len).max().unwrap_or(0);
    let filters = options.filters(most_positives)?;
    let hits = top_k(
        &query_emb,
        &doc_emb,
        filters.range_max + most_positives,
        SearchOptions::default(),
    )?;
    let positive_scores = pair_scores(&query_emb, &doc_emb, &positives_of)?;

    let compares_scores = options.max_score.is_some()
        || options.absolute_margin.is_some()
        || options.relative_margin.is_some();
    if rescorer.is_some() && !compares_scores {
        eprintln!(
            "note: the cross-encoder is not used: it rescores only when max_score or a margin is set \
             (as sentence-transformers)"
        );
    }
    let rescorer = rescorer.filter(|_| compares_scores);
    let progress = crate::progress::Progress::new(
        if rescorer.is_some() {
            queries.len() as u64
        } else {
            0
        },
        "rescoring",
        options.progress && rescorer.is_some(),
    );
    let mut rng = Rng::new(options.seed);
    let mut negatives_of: Vec<Vec<(usize, f32)>> = Vec::with_capacity(queries.len());
    let mut pos_scores_of = positive_scores;
    for (qi, hits) in hits.into_iter().enumerate() {
        let mut candidates: Vec<(usize, f32)> = hits
            .into_iter()
            .filter(|h| !positives_of[qi].contains(&h.doc))
            .map(|h| (h.doc, h.score))
            .collect();
        if let Some(r) = rescorer {
            let texts: Vec<&str> = candidates.iter().map(|c| docs[c.0].as_str()).collect();
            let scores = r.score(&queries[qi], &texts)?;
            for (c, s) in candidates.iter_mut().zip(scores) {
                c.1 = s;
            }
            candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let pos_texts: Vec<&str> = positives_of[qi].iter().map(|&d| docs[d].as_str()).collect();
            pos_scores_of[qi] = r.score(&queries[qi], &pos_texts)?;
            progress.inc(1);
            crate::interrupt::check()?;
        }
        let lowest_positive = pos_scores_of[qi]
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min);
        negatives_of.push(select::choose(
            &candidates,
            lowest_positive,
            &filters,
            &mut rng,
        ));
    }

    progress.finish();
    let short_queries = negatives_of
        .iter()
        .filter(|n| n.len() < options.num_negatives)
        .count();
    let rows = output::Rows {
        query_col,
        positive_col,
        queries: &queries,
        docs: &docs,
        positives_of: &positives_of,
        positive_scores: &pos_scores_of,
        negatives_of: &negatives_of,
        num_negatives: options.num_negatives,
    };
    let (frame, pairs) = rows.frame(options.output_format)?;
    let positive_scores: Vec<f32> = pos_scores_of.iter().flatten().copied().collect();
    let negative_scores: Vec<f32> = pairs.iter().map(|p| p.1).collect();
    let differences: Vec<f32> = pairs.iter().map(|p| p.0 - p.1).collect();
    Ok(Mined {
        frame,
        summary: summary(&positive_scores, &negative_scores, &differences)?,
        positive_scores,
        negative_scores,
        queries: queries.len(),
        short_queries,
        cache_hit,
    })
}

/// Cosine score of each query with each of its positives.
fn pair_scores(
    queries: &candle_core::Tensor,
    docs: &candle_core::Tensor,
    positives_of: &[Vec<usize>],
) -> Result<Vec<Vec<f32>>> {
    let q: Vec<Vec<f32>> = queries.to_vec2()?;
    let mut out = Vec::with_capacity(positives_of.len());
    for (qi, positives) in positives_of.iter().enumerate() {
        let mut scores = vec![];
        for &d in positives {
            let row: Vec<f32> = docs.get(d)?.to_vec1()?;
            scores.push(q[qi].iter().zip(&row).map(|(a, b)| a * b).sum());
        }
        out.push(scores);
    }
    Ok(out)
}

/// count / mean / std / min / quartiles / max of the positive scores, of the negative scores
/// written out, and of each written (positive − negative) difference, as sentence-transformers
/// prints after mining.
fn summary(positive: &[f32], negative: &[f32], difference: &[f32]) -> Result<DataFrame> {
    let stats = ["count", "mean", "std", "min", "25%", "50%", "75%", "max"];
    let describe = |v: &[f32]| -> Vec<f64> {
        let mut s: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        s.sort_by(f64::total_cmp);
        let n = s.len() as f64;
        if s.is_empty() {
            return vec![
                0.0,
                f64::NAN,
                f64::NAN,
                f64::NAN,
                f64::NAN,
                f64::NAN,
                f64::NAN,
                f64::NAN,
            ];
        }
        let mean = s.iter().sum::<f64>() / n;
        let std = if s.len() > 1 {
            (s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        // Linear interpolation between closest ranks, as numpy/pandas.
        let q = |p: f64| {
            let pos = p * (n - 1.0);
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
        };
        vec![n, mean, std, s[0], q(0.25), q(0.5), q(0.75), s[s.len() - 1]]
    };
    Ok(df!(
        "statistic" => stats.to_vec(),
        "positive" => describe(positive),
        "negative" => describe(negative),
        "difference" => describe(difference),
    )?)
}

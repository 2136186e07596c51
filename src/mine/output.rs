//! The shapes mined data is written in, as sentence-transformers names them. Rows come query by
//! query (first-appearance order), each query's positives in order; column names follow the
//! input's (query, positive) names.
//!
//! | format | one row per | columns |
//! |---|---|---|
//! | `triplet` | (positive, negative) | query, positive, `negative` |
//! | `n_tuple` | positive whose query got all `num_negatives` negatives | query, positive, `negative_1` … `negative_n` |
//! | `n_tuple_scores` | as `n_tuple` | … plus `scores`: [positive score, negative scores…] |
//! | `labeled_pair` | each positive (label 1), then each negative (label 0) | query, passage, `label` |
//! | `labeled_list` | positive | query, list [positive, negatives…], `labels` [1, 0, …] |

use anyhow::Result;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    #[default]
    Triplet,
    NTuple,
    NTupleScores,
    LabeledPair,
    LabeledList,
}

impl std::str::FromStr for OutputFormat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(s.replace('-', "_"))).map_err(|_| {
            anyhow::anyhow!("unknown output format `{s}`; choose triplet, n-tuple, n-tuple-scores, labeled-pair or labeled-list")
        })
    }
}

/// Everything mining decided, per unique query.
pub(super) struct Rows<'a> {
    pub query_col: &'a str,
    pub positive_col: &'a str,
    pub queries: &'a [String],
    pub docs: &'a [String],
    pub positives_of: &'a [Vec<usize>],
    pub positive_scores: &'a [Vec<f32>],
    pub negatives_of: &'a [Vec<(usize, f32)>],
    pub num_negatives: usize,
}

impl Rows<'_> {
    /// The frame, and the (positive score, negative score) of every negative it contains.
    pub fn frame(&self, format: OutputFormat) -> Result<(DataFrame, Vec<(f32, f32)>)> {
        let mut queries: Vec<&str> = vec![];
        let mut passages: Vec<&str> = vec![];
        let mut negatives: Vec<Vec<&str>> = vec![vec![]; self.num_negatives];
        let mut scores: Vec<Series> = vec![];
        let mut labels: Vec<i32> = vec![];
        let mut lists: Vec<Series> = vec![];
        let mut list_labels: Vec<Series> = vec![];
        let mut pairs: Vec<(f32, f32)> = vec![];
        for (qi, q) in self.queries.iter().enumerate() {
            let negs = &self.negatives_of[qi];
            let neg_texts: Vec<&str> = negs.iter().map(|&(d, _)| self.docs[d].as_str()).collect();
            let positives = self.positives_of[qi].iter().zip(&self.positive_scores[qi]);
            if format == OutputFormat::LabeledPair {
                for (&d, _) in positives.clone() {
                    queries.push(q);
                    passages.push(&self.docs[d]);
                    labels.push(1);
                }
                for n in &neg_texts {
                    queries.push(q);
                    passages.push(n);
                    labels.push(0);
                }
            }
            for (&d, &pos_score) in positives {
                let p = self.docs[d].as_str();
                match format {
                    OutputFormat::LabeledPair => {}
                    OutputFormat::Triplet => {
                        for n in &neg_texts {
                            queries.push(q);
                            passages.push(p);
                            negatives[0].push(n);
                        }
                    }
                    OutputFormat::NTuple | OutputFormat::NTupleScores => {
                        if negs.len() < self.num_negatives {
                            continue;
                        }
                        queries.push(q);
                        passages.push(p);
                        for (slot, n) in negatives.iter_mut().zip(&neg_texts) {
                            slot.push(n);
                        }
                        let mut row = vec![pos_score];
                        row.extend(negs.iter().map(|n| n.1));
                        scores.push(Series::new("".into(), row));
                    }
                    OutputFormat::LabeledList => {
                        if negs.is_empty() {
                            continue;
                        }
                        queries.push(q);
                        let mut texts = vec![p];
                        texts.extend(&neg_texts);
                        let mut l = vec![1i32];
                        l.extend(std::iter::repeat_n(0, neg_texts.len()));
                        lists.push(Series::new("".into(), texts));
                        list_labels.push(Series::new("".into(), l));
                    }
                }
                let written = !matches!(format, OutputFormat::NTuple | OutputFormat::NTupleScores)
                    || negs.len() >= self.num_negatives;
                if written {
                    pairs.extend(negs.iter().map(|n| (pos_score, n.1)));
                }
            }
        }
        let n = queries.len();
        let mut columns = vec![Column::new(self.query_col.into(), queries)];
        match format {
            OutputFormat::Triplet => {
                columns.push(Column::new(self.positive_col.into(), passages));
                columns.push(Column::new(
                    "negative".into(),
                    std::mem::take(&mut negatives[0]),
                ));
            }
            OutputFormat::NTuple | OutputFormat::NTupleScores => {
                columns.push(Column::new(self.positive_col.into(), passages));
                for (i, slot) in negatives.into_iter().enumerate() {
                    columns.push(Column::new(format!("negative_{}", i + 1).into(), slot));
                }
                if format == OutputFormat::NTupleScores {
                    columns.push(Column::new("scores".into(), scores));
                }
            }
            OutputFormat::LabeledPair => {
                columns.push(Column::new(self.positive_col.into(), passages));
                columns.push(Column::new("label".into(), labels));
            }
            OutputFormat::LabeledList => {
                columns.push(Column::new(self.positive_col.into(), lists));
                columns.push(Column::new("labels".into(), list_labels));
            }
        }
        Ok((DataFrame::new(n, columns)?, pairs))
    }
}

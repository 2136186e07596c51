//! Reranker training data: every row is a query with one or more documents and a label per
//! document. The three shapes `mine` writes (and sentence-transformers' cross-encoder losses take)
//! all become rows of this one form:
//!
//! - labeled pairs `(query, document, label)` → one document, its label;
//! - n-tuples `(query, positive, negative_1..n)` → the positive labelled 1, the negatives 0; with a
//!   list column `scores`/`labels` of n + 1 (or n) numbers, those are teacher scores (or margins)
//!   for distillation;
//! - labeled lists `(query, [documents], [labels])` → as they are.

use anyhow::{bail, Result};
use polars::prelude::*;

use crate::data::table::str_column;
use crate::train::dataset::{TrainingSet, METADATA_COLUMNS};
use crate::train::sampler::SampleRows;

/// Which of the shapes the data came in (some losses need a particular one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RerankFormat {
    LabeledPair,
    NTuple,
    LabeledList,
}

/// Reranker training rows in memory.
#[derive(Debug, Clone)]
pub struct RerankSet {
    pub format: RerankFormat,
    /// The columns read, in order (for messages and the model card).
    pub columns: Vec<String>,
    pub queries: Vec<String>,
    pub documents: Vec<Vec<String>>,
    /// One label per document (1/0 relevance, a graded label, or a teacher score).
    pub labels: Vec<Vec<f32>>,
    /// For n-tuples with a score list: the scores as given (teacher scores or margins).
    pub teacher: Option<Vec<Vec<f32>>>,
}

/// The rows of one batch.
#[derive(Debug, Clone)]
pub struct RerankBatch {
    pub queries: Vec<String>,
    pub documents: Vec<Vec<String>>,
    pub labels: Vec<Vec<f32>>,
    pub teacher: Option<Vec<Vec<f32>>>,
}

impl RerankSet {
    /// Reads a file (.jsonl, .csv, .tsv, .parquet) or a frame; see the module doc for the shapes.
    pub fn load(path: &std::path::Path, columns: &[String]) -> Result<Self> {
        let frame = crate::data::read_table(path)?;
        Self::from_frame_columns(&frame, &path.display().to_string(), columns)
    }

    pub fn from_frame(df: &DataFrame, origin: &str) -> Result<Self> {
        Self::from_frame_columns(df, origin, &[])
    }

    /// As [`Self::from_frame`], reading only `columns` when any are named.
    pub fn from_frame_columns(df: &DataFrame, origin: &str, columns: &[String]) -> Result<Self> {
        let df = if columns.is_empty() {
            let keep: Vec<&str> = df
                .get_column_names()
                .into_iter()
                .map(|n| n.as_str())
                .filter(|n| !METADATA_COLUMNS.contains(n))
                .collect();
            df.select(keep)?
        } else {
            let names: Vec<&str> = columns.iter().map(String::as_str).collect();
            crate::data::require_columns(df, &names, origin)?;
            df.select(names)?
        };
        let list_text = df.columns().iter().position(
            |c| matches!(c.dtype(), DataType::List(inner) if inner.as_ref() == &DataType::String),
        );
        match list_text {
            Some(at) => Self::from_lists(&df, at, origin),
            None => Self::from_training_set(TrainingSet::from_frame_columns(
                &df,
                origin,
                &df.get_column_names()
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>(),
            )?),
        }
    }

    /// Text columns by position (and an optional label column), as the embedding stage reads them.
    pub fn from_training_set(set: TrainingSet) -> Result<Self> {
        let n = set.len();
        let docs_per_row = set.columns.len().saturating_sub(1);
        if docs_per_row == 0 {
            bail!(
                "reranker training data needs a query and at least one document column; found {}",
                set.columns.join(", ")
            );
        }
        let queries = set.texts[0].clone();
        let documents: Vec<Vec<String>> = (0..n)
            .map(|r| set.texts[1..].iter().map(|c| c[r].clone()).collect())
            .collect();
        let mut columns = set.columns.clone();
        let (format, labels, teacher) = match &set.labels {
            Some((name, values)) if docs_per_row == 1 => {
                columns.push(name.clone());
                let labels = values
                    .iter()
                    .enumerate()
                    .map(|(r, v)| match v.as_slice() {
                        [x] => Ok(vec![*x]),
                        _ => bail!("column `{name}`: row {} has {} numbers; a (query, document) pair takes one label", r + 1, v.len()),
                    })
                    .collect::<Result<_>>()?;
                (RerankFormat::LabeledPair, labels, None)
            }
            Some((name, values)) => {
                columns.push(name.clone());
                for (r, v) in values.iter().enumerate() {
                    if v.len() != docs_per_row && v.len() != docs_per_row - 1 {
                        bail!(
                            "column `{name}`: row {} has {} numbers; with {docs_per_row} documents per row give \
                             {docs_per_row} teacher scores or {} margins",
                            r + 1,
                            v.len(),
                            docs_per_row - 1
                        );
                    }
                }
                (
                    RerankFormat::NTuple,
                    one_hot(n, docs_per_row),
                    Some(values.clone()),
                )
            }
            None if docs_per_row == 1 => bail!(
                "({}) pairs without a label column: add `label` (1 relevant, 0 not), or give \
                 (query, positive, negative…) rows",
                set.columns.join(", ")
            ),
            None => (RerankFormat::NTuple, one_hot(n, docs_per_row), None),
        };
        Ok(Self {
            format,
            columns,
            queries,
            documents,
            labels,
            teacher,
        })
    }

    /// `(query, [documents], [labels])`: the query is the first text column, the documents the
    /// list column at `at`, the labels the list column named label(s)/score(s).
    fn from_lists(df: &DataFrame, at: usize, origin: &str) -> Result<Self> {
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        let Some(query_col) = df
            .columns()
            .iter()
            .find(|c| c.dtype() == &DataType::String)
            .map(|c| c.name().to_string())
        else {
            bail!(
                "{origin}: a labeled list needs a query column of strings; found {}",
                names.join(", ")
            );
        };
        let doc_col = names[at].clone();
        let Some(label_col) = names
            .iter()
            .find(|n| crate::train::dataset::LABEL_COLUMNS.contains(&n.as_str()))
            .cloned()
        else {
            bail!("{origin}: the document list `{doc_col}` needs a list column `labels` (one number per document)");
        };
        let queries = str_column(df, &query_col)?;
        let docs = df
            .column(&doc_col)?
            .as_materialized_series()
            .list()?
            .clone();
        let labels_col = df
            .column(&label_col)?
            .cast(&DataType::List(Box::new(DataType::Float32)))?;
        let labels_list = labels_col.as_materialized_series().list()?.clone();
        let (mut documents, mut labels) = (Vec::new(), Vec::new());
        for row in 0..df.height() {
            let d: Vec<String> = docs
                .get_as_series(row)
                .map(|s| {
                    s.str().map(|c| {
                        c.iter()
                            .map(|x| x.unwrap_or_default().to_string())
                            .collect()
                    })
                })
                .transpose()?
                .unwrap_or_default();
            let l: Vec<f32> = labels_list
                .get_as_series(row)
                .map(|s| {
                    s.f32()
                        .map(|c| c.iter().map(|x| x.unwrap_or(f32::NAN)).collect())
                })
                .transpose()?
                .unwrap_or_default();
            if d.is_empty() {
                bail!("{origin}: row {}: the document list is empty", row + 1);
            }
            if d.len() != l.len() || l.iter().any(|x| !x.is_finite()) {
                bail!(
                    "{origin}: row {}: {} documents but {} labels (one number per document)",
                    row + 1,
                    d.len(),
                    l.len()
                );
            }
            documents.push(d);
            labels.push(l);
        }
        Ok(Self {
            format: RerankFormat::LabeledList,
            columns: vec![query_col, doc_col, label_col],
            queries,
            documents,
            labels,
            teacher: None,
        })
    }

    /// The rows whose query is not one of `queries` (texts), and how many were left out.
    pub fn without_queries(&self, queries: &std::collections::HashSet<&str>) -> (Self, usize) {
        let keep: Vec<usize> = (0..self.len())
            .filter(|&i| !queries.contains(self.queries[i].as_str()))
            .collect();
        let pick = |v: &Vec<Vec<f32>>| keep.iter().map(|&i| v[i].clone()).collect();
        let kept = Self {
            format: self.format,
            columns: self.columns.clone(),
            queries: keep.iter().map(|&i| self.queries[i].clone()).collect(),
            documents: keep.iter().map(|&i| self.documents[i].clone()).collect(),
            labels: pick(&self.labels),
            teacher: self.teacher.as_ref().map(pick),
        };
        (kept, self.len() - keep.len())
    }

    pub fn len(&self) -> usize {
        self.queries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }

    /// All (query, document) pairs of the set.
    pub fn pair_count(&self) -> usize {
        self.documents.iter().map(Vec::len).sum()
    }

    pub fn batch(&self, rows: &[usize]) -> RerankBatch {
        RerankBatch {
            queries: rows.iter().map(|&r| self.queries[r].clone()).collect(),
            documents: rows.iter().map(|&r| self.documents[r].clone()).collect(),
            labels: rows.iter().map(|&r| self.labels[r].clone()).collect(),
            teacher: self
                .teacher
                .as_ref()
                .map(|t| rows.iter().map(|&r| t[r].clone()).collect()),
        }
    }
}

impl SampleRows for RerankSet {
    fn rows(&self) -> usize {
        self.len()
    }

    fn row_texts(&self, row: usize) -> Vec<&str> {
        std::iter::once(self.queries[row].as_str())
            .chain(self.documents[row].iter().map(String::as_str))
            .collect()
    }
}

fn one_hot(rows: usize, docs: usize) -> Vec<Vec<f32>> {
    (0..rows)
        .map(|_| (0..docs).map(|d| if d == 0 { 1.0 } else { 0.0 }).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_shapes_become_rows_with_labels() {
        let pairs = df!(
            "query" => ["q1", "q1", "q2"],
            "document" => ["a", "b", "c"],
            "label" => [1i64, 0, 1],
            "chunk_id" => ["x", "y", "z"],
        )
        .unwrap();
        let set = RerankSet::from_frame(&pairs, "pairs").unwrap();
        assert_eq!(set.format, RerankFormat::LabeledPair);
        assert_eq!(set.documents, vec![vec!["a"], vec!["b"], vec!["c"]]);
        assert_eq!(set.labels, vec![vec![1.0], vec![0.0], vec![1.0]]);
        assert_eq!(set.columns, vec!["query", "document", "label"]);

        let tuples = df!(
            "query" => ["q1", "q2"],
            "positive" => ["p1", "p2"],
            "negative_1" => ["n1", "n2"],
            "negative_2" => ["m1", "m2"],
        )
        .unwrap();
        let set = RerankSet::from_frame(&tuples, "tuples").unwrap();
        assert_eq!(set.format, RerankFormat::NTuple);
        assert_eq!(set.documents[1], vec!["p2", "n2", "m2"]);
        assert_eq!(set.labels[0], vec![1.0, 0.0, 0.0]);
        assert!(set.teacher.is_none());

        let docs = Series::new(
            "documents".into(),
            [
                Series::new("".into(), ["a", "b", "c"]),
                Series::new("".into(), ["d", "e", "f"]),
            ],
        );
        let labels = Series::new(
            "labels".into(),
            [
                Series::new("".into(), [1i64, 0, 0]),
                Series::new("".into(), [0i64, 2, 1]),
            ],
        );
        let lists = DataFrame::new(
            2,
            vec![
                Column::new("query".into(), ["q1", "q2"]),
                docs.into(),
                labels.into(),
            ],
        )
        .unwrap();
        let set = RerankSet::from_frame(&lists, "lists").unwrap();
        assert_eq!(set.format, RerankFormat::LabeledList);
        assert_eq!(set.documents[1], vec!["d", "e", "f"]);
        assert_eq!(set.labels[1], vec![0.0, 2.0, 1.0]);
    }

    #[test]
    fn unlabeled_pairs_and_mismatched_lists_are_refused() {
        let pairs = df!("query" => ["q"], "document" => ["d"]).unwrap();
        let err = RerankSet::from_frame(&pairs, "f.jsonl")
            .unwrap_err()
            .to_string();
        assert!(err.contains("without a label column"), "{err}");
        let tuples = df!(
            "query" => ["q"], "positive" => ["p"], "negative_1" => ["n"],
        )
        .unwrap()
        .hstack(&[Column::new(
            "scores".into(),
            [Series::new("".into(), [1.0f32, 2.0, 3.0, 4.0])],
        )])
        .unwrap();
        let err = RerankSet::from_frame(&tuples, "f.jsonl")
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 1 has 4 numbers"), "{err}");
    }
}

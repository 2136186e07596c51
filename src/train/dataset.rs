//! Training data as the trainer reads it: text columns matched **by position** (anchor,
//! positive, negative_1..n, or sentence pairs), as sentence-transformers does, plus an optional
//! label column (`label`, `score`, `labels` or `scores`) holding one number or a list per row.

use anyhow::{bail, Result};
use polars::prelude::*;

use crate::data::table::str_column;
use crate::data::RetrievalDataset;

/// Column names that hold targets rather than texts.
pub const LABEL_COLUMNS: [&str; 4] = ["label", "score", "labels", "scores"];

/// Column names that describe a row rather than hold a text to train on (ragtune's own outputs
/// carry them: `synth queries` writes `chunk_id` and `generator`). They are never read as texts
/// unless named explicitly, since an id or the word "ict" read as a hard negative would train
/// silently on garbage.
pub const METADATA_COLUMNS: [&str; 9] = [
    "chunk_id",
    "doc_id",
    "query_id",
    "corpus_id",
    "generator",
    "id",
    "_id",
    "source",
    "split",
];

/// A training set in memory: `texts[column][row]`, and per row its label values.
#[derive(Debug, Clone)]
pub struct TrainingSet {
    /// Names of the text columns, in the order the loss reads them.
    pub columns: Vec<String>,
    pub texts: Vec<Vec<String>>,
    /// The label column's name and, per row, its value(s).
    pub labels: Option<(String, Vec<Vec<f32>>)>,
}

/// The rows of one batch, column by column.
#[derive(Debug, Clone)]
pub struct Batch {
    pub texts: Vec<Vec<String>>,
    pub labels: Option<Vec<Vec<f32>>>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.texts.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The labels as one number per row; an error names the loss that needed them.
    pub fn scalar_labels(&self, loss: &str) -> Result<Vec<f32>> {
        let Some(labels) = &self.labels else {
            bail!("{loss} needs a label column (`label` or `score`)");
        };
        labels
            .iter()
            .map(|l| match l.as_slice() {
                [x] => Ok(*x),
                _ => bail!("{loss} needs one label per row, found {}", l.len()),
            })
            .collect()
    }
}

impl TrainingSet {
    /// Training data from a file or folder: with `beir_split`, the (query, relevant document)
    /// pairs of a BEIR folder's `qrels/<split>.tsv`; otherwise a table file (.jsonl, .csv, .tsv,
    /// .parquet) read by [`Self::from_frame`].
    pub fn load(path: &std::path::Path, beir_split: Option<&str>) -> Result<Self> {
        match beir_split {
            Some(split) => Self::from_retrieval(&crate::data::load_beir(path, split)?),
            None if path.is_dir() => bail!(
                "{} is a folder: give --beir-split (the qrels split whose pairs to train on) or a table file",
                path.display()
            ),
            None => Self::from_frame(&crate::data::read_table(path)?, &path.display().to_string()),
        }
    }

    /// Reads a DataFrame: every String column is a text column in frame order, a column named as
    /// in [`LABEL_COLUMNS`] (numeric, or a list of numbers) is the label. `origin` names the file
    /// in errors.
    pub fn from_frame(df: &DataFrame, origin: &str) -> Result<Self> {
        Self::from_frame_columns(df, origin, &[])
    }

    /// As [`Self::from_frame`], reading only `columns` (in that order) when any are named; then a
    /// metadata column is read as text too. Without a selection, [`METADATA_COLUMNS`] are skipped
    /// and a note on stderr names them.
    pub fn from_frame_columns(df: &DataFrame, origin: &str, columns: &[String]) -> Result<Self> {
        if !columns.is_empty() {
            let names: Vec<&str> = columns.iter().map(String::as_str).collect();
            crate::data::require_columns(df, &names, origin)?;
            return Self::read_columns(&df.select(names)?, origin, false);
        }
        Self::read_columns(df, origin, true)
    }

    fn read_columns(df: &DataFrame, origin: &str, skip_metadata: bool) -> Result<Self> {
        if df.height() == 0 {
            bail!("{origin}: the training data has no rows");
        }
        let mut columns = Vec::new();
        let mut texts = Vec::new();
        let mut labels = None;
        let mut skipped = Vec::new();
        for col in df.columns() {
            let name = col.name().to_string();
            if skip_metadata && METADATA_COLUMNS.contains(&name.as_str()) {
                skipped.push(name);
                continue;
            }
            if LABEL_COLUMNS.contains(&name.as_str()) {
                if labels.is_some() {
                    bail!("{origin}: more than one label column (`{name}` and another)");
                }
                labels = Some((name.clone(), label_values(col, origin)?));
                continue;
            }
            if col.dtype() != &DataType::String {
                bail!(
                    "{origin}: column `{name}` is {} but text columns must be strings \
                     (targets go in a column named label or score)",
                    col.dtype()
                );
            }
            let values = str_column(df, &name)?;
            if let Some(row) = col
                .as_materialized_series()
                .str()?
                .iter()
                .position(|v| v.is_none())
            {
                bail!("{origin}: column `{name}` is empty on row {}", row + 1);
            }
            columns.push(name);
            texts.push(values);
        }
        if columns.is_empty() {
            bail!("{origin}: no text columns (expected e.g. anchor, positive[, negative_1 …])");
        }
        if !skipped.is_empty() {
            eprintln!(
                "note: {origin}: training on columns {}; metadata column(s) {} not read \
                 (name columns explicitly to use them)",
                columns.join(", "),
                skipped.join(", ")
            );
        }
        Ok(Self {
            columns,
            texts,
            labels,
        })
    }

    /// (query, relevant document) pairs from a BEIR dataset's judgements with a positive grade,
    /// in qrels file order, as columns `anchor` and `positive`.
    pub fn from_retrieval(dataset: &RetrievalDataset) -> Result<Self> {
        let query_text: std::collections::HashMap<String, String> = dataset
            .query_ids()?
            .into_iter()
            .zip(dataset.query_texts()?)
            .collect();
        let doc_text: std::collections::HashMap<String, String> = dataset
            .doc_ids()?
            .into_iter()
            .zip(dataset.doc_texts()?)
            .collect();
        let q = str_column(&dataset.qrels, "query_id")?;
        let d = str_column(&dataset.qrels, "doc_id")?;
        let s = dataset.qrels.column("score")?.cast(&DataType::Int64)?;
        let (mut anchors, mut positives) = (Vec::new(), Vec::new());
        for ((q, d), s) in q.iter().zip(&d).zip(s.i64()?.iter()) {
            if s.unwrap_or(0) > 0 {
                anchors.push(query_text[q].clone());
                positives.push(doc_text[d].clone());
            }
        }
        if anchors.is_empty() {
            bail!(
                "{}: no relevant (score > 0) judgements to train on",
                dataset.name
            );
        }
        Ok(Self {
            columns: vec!["anchor".into(), "positive".into()],
            texts: vec![anchors, positives],
            labels: None,
        })
    }

    pub fn len(&self) -> usize {
        self.texts[0].len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows at `indices`, in that order.
    pub fn batch(&self, indices: &[usize]) -> Batch {
        Batch {
            texts: self
                .texts
                .iter()
                .map(|col| indices.iter().map(|&i| col[i].clone()).collect())
                .collect(),
            labels: self
                .labels
                .as_ref()
                .map(|(_, l)| indices.iter().map(|&i| l[i].clone()).collect()),
        }
    }

    /// The set as a DataFrame again (texts, then the label as a list column when present).
    pub fn to_frame(&self) -> Result<DataFrame> {
        let mut cols: Vec<Column> = self
            .columns
            .iter()
            .zip(&self.texts)
            .map(|(n, t)| Column::new(n.as_str().into(), t))
            .collect();
        if let Some((name, values)) = &self.labels {
            if values.iter().all(|v| v.len() == 1) {
                let flat: Vec<f32> = values.iter().map(|v| v[0]).collect();
                cols.push(Column::new(name.as_str().into(), flat));
            } else {
                let series: Vec<Series> = values
                    .iter()
                    .map(|v| Series::new("".into(), v.as_slice()))
                    .collect();
                cols.push(Column::new(name.as_str().into(), series));
            }
        }
        Ok(DataFrame::new(self.len(), cols)?)
    }
}

impl crate::train::sampler::SampleRows for TrainingSet {
    fn rows(&self) -> usize {
        self.len()
    }

    fn row_texts(&self, row: usize) -> Vec<&str> {
        self.texts.iter().map(|c| c[row].as_str()).collect()
    }
}

fn label_values(col: &Column, origin: &str) -> Result<Vec<Vec<f32>>> {
    let name = col.name().to_string();
    let bad =
        |row: usize| anyhow::anyhow!("{origin}: column `{name}` has no number on row {}", row + 1);
    match col.dtype() {
        DataType::List(_) => {
            let list = col.as_materialized_series().list()?;
            (0..list.len())
                .map(|row| {
                    let v = list
                        .get_as_series(row)
                        .ok_or_else(|| bad(row))?
                        .cast(&DataType::Float32)?;
                    v.f32()?.iter().map(|x| x.ok_or_else(|| bad(row))).collect()
                })
                .collect()
        }
        dt if dt.is_primitive_numeric() || dt == &DataType::Boolean => {
            let values = col
                .cast(&DataType::Float32)
                .map_err(|e| anyhow::anyhow!("{origin}: column `{name}`: {e}"))?;
            values
                .f32()?
                .iter()
                .enumerate()
                .map(|(row, v)| v.map(|x| vec![x]).ok_or_else(|| bad(row)))
                .collect()
        }
        other => bail!("{origin}: label column `{name}` is {other}; it must hold numbers"),
    }
}

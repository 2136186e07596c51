//! The retrieval dataset every stage shares: a corpus, queries and relevance judgements (qrels),
//! each a Polars DataFrame with fixed column names.
//!
//! | frame     | columns                                                        |
//! |-----------|----------------------------------------------------------------|
//! | `corpus`  | `doc_id`, `title`, `body`, `text` (= BEIR's `title + " " + body`, trimmed; what is encoded) |
//! | `queries` | `query_id`, `text`                                             |
//! | `qrels`   | `query_id`, `doc_id`, `score` (Int64; > 0 means relevant)      |

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{bail, Result};
use polars::prelude::*;

use super::table::str_column;

/// Relevance judgements: query id → (doc id → grade).
pub type Qrels = BTreeMap<String, HashMap<String, i64>>;

#[derive(Debug, Clone)]
pub struct RetrievalDataset {
    /// A short name for reports (the folder name, usually).
    pub name: String,
    pub corpus: DataFrame,
    pub queries: DataFrame,
    pub qrels: DataFrame,
}

/// One document as the loaders see it.
pub struct Document {
    pub id: String,
    pub title: String,
    pub body: String,
}

/// The text a document is encoded as: BEIR's `title + " " + text`, trimmed.
pub fn document_text(title: &str, body: &str) -> String {
    format!("{title} {body}").trim().to_string()
}

impl RetrievalDataset {
    /// Builds the frames from plain rows, checking that ids are unique and that every judgement
    /// names a known query and document (the loaders pass `origin` strings naming file and line).
    pub fn from_rows(
        name: &str,
        docs: Vec<Document>,
        queries: Vec<(String, String)>,
        judgements: Vec<(String, String, i64, String)>,
    ) -> Result<Self> {
        if docs.is_empty() {
            bail!("{name}: the corpus is empty");
        }
        let mut doc_ids = HashSet::with_capacity(docs.len());
        for d in &docs {
            if !doc_ids.insert(d.id.as_str()) {
                bail!("{name}: document id `{}` appears twice in the corpus", d.id);
            }
        }
        let mut query_ids = HashSet::with_capacity(queries.len());
        for (id, _) in &queries {
            if !query_ids.insert(id.as_str()) {
                bail!("{name}: query id `{id}` appears twice");
            }
        }
        for (q, d, _, origin) in &judgements {
            if !query_ids.contains(q.as_str()) {
                bail!("{origin}: query `{q}` is not among the queries");
            }
            if !doc_ids.contains(d.as_str()) {
                bail!("{origin}: document `{d}` is not in the corpus");
            }
        }
        let corpus = df!(
            "doc_id" => docs.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            "title" => docs.iter().map(|d| d.title.as_str()).collect::<Vec<_>>(),
            "body" => docs.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(),
            "text" => docs.iter().map(|d| document_text(&d.title, &d.body)).collect::<Vec<_>>(),
        )?;
        let queries = df!(
            "query_id" => queries.iter().map(|q| q.0.as_str()).collect::<Vec<_>>(),
            "text" => queries.iter().map(|q| q.1.as_str()).collect::<Vec<_>>(),
        )?;
        let qrels = df!(
            "query_id" => judgements.iter().map(|j| j.0.as_str()).collect::<Vec<_>>(),
            "doc_id" => judgements.iter().map(|j| j.1.as_str()).collect::<Vec<_>>(),
            "score" => judgements.iter().map(|j| j.2).collect::<Vec<_>>(),
        )?;
        Ok(Self {
            name: name.to_string(),
            corpus,
            queries,
            qrels,
        })
    }

    pub fn doc_ids(&self) -> Result<Vec<String>> {
        str_column(&self.corpus, "doc_id")
    }

    pub fn doc_texts(&self) -> Result<Vec<String>> {
        str_column(&self.corpus, "text")
    }

    pub fn query_ids(&self) -> Result<Vec<String>> {
        str_column(&self.queries, "query_id")
    }

    pub fn query_texts(&self) -> Result<Vec<String>> {
        str_column(&self.queries, "text")
    }

    /// The judgements as a map, for metric computation.
    pub fn qrels_map(&self) -> Result<Qrels> {
        let q = str_column(&self.qrels, "query_id")?;
        let d = str_column(&self.qrels, "doc_id")?;
        let s = self.qrels.column("score")?.cast(&DataType::Int64)?;
        let mut out = Qrels::new();
        for ((q, d), s) in q.into_iter().zip(d).zip(s.i64()?.iter()) {
            out.entry(q).or_default().insert(d, s.unwrap_or(0));
        }
        Ok(out)
    }
}

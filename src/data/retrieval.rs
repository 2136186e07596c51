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

    /// Splits the judged queries in two, at random (seeded): a training part and a dev part with
    /// about `dev_fraction` of them. Both keep the whole corpus; a query and its judgements go to
    /// one side only, so nothing a dev query is judged on is trained on through that query.
    pub fn split_queries(&self, dev_fraction: f64, seed: u64) -> Result<(Self, Self)> {
        if !(0.0..1.0).contains(&dev_fraction) || dev_fraction == 0.0 {
            bail!("dev_fraction must be between 0 and 1 (exclusive), got {dev_fraction}");
        }
        let mut judged: Vec<String> = self.qrels_map()?.into_keys().collect();
        if judged.len() < 2 {
            bail!(
                "{}: {} judged quer(ies): too few to split",
                self.name,
                judged.len()
            );
        }
        crate::rng::Rng::new(seed).shuffle(&mut judged);
        let dev_count =
            ((judged.len() as f64 * dev_fraction).round() as usize).clamp(1, judged.len() - 1);
        let dev: HashSet<&str> = judged[..dev_count].iter().map(String::as_str).collect();
        let part = |keep_dev: bool, suffix: &str| -> Result<Self> {
            let pick = |df: &DataFrame| -> Result<DataFrame> {
                let ids = str_column(df, "query_id")?;
                let mask: BooleanChunked = ids
                    .iter()
                    .map(|q| dev.contains(q.as_str()) == keep_dev)
                    .collect();
                Ok(df.filter(&mask)?)
            };
            Ok(Self {
                name: format!("{}-{suffix}", self.name),
                corpus: self.corpus.clone(),
                queries: pick(&self.queries)?,
                qrels: pick(&self.qrels)?,
            })
        };
        Ok((part(false, "train")?, part(true, "dev")?))
    }

    /// A smaller dataset for quick runs (notebooks, CI): `queries` judged queries drawn at random
    /// with their judgements, and a corpus of every document they judge plus random others up to
    /// `documents` (more when the judged ones alone exceed it). A function of the seed.
    pub fn sample(&self, queries: usize, documents: usize, seed: u64) -> Result<Self> {
        if queries == 0 {
            bail!("sample: `queries` must be at least 1");
        }
        let mut rng = crate::rng::Rng::new(seed);
        let qrels = self.qrels_map()?;
        let mut judged: Vec<&String> = qrels.keys().collect();
        rng.shuffle(&mut judged);
        judged.truncate(queries);
        let kept_queries: HashSet<&str> = judged.iter().map(|q| q.as_str()).collect();
        let mut kept_docs: HashSet<String> = judged
            .iter()
            .flat_map(|q| qrels[*q].keys().cloned())
            .collect();
        let mut others: Vec<String> = self
            .doc_ids()?
            .into_iter()
            .filter(|d| !kept_docs.contains(d))
            .collect();
        rng.shuffle(&mut others);
        let room = documents.saturating_sub(kept_docs.len());
        kept_docs.extend(others.into_iter().take(room));
        let by = |df: &DataFrame, column: &str, keep: &dyn Fn(&str) -> bool| -> Result<DataFrame> {
            let mask: BooleanChunked = str_column(df, column)?.iter().map(|v| keep(v)).collect();
            Ok(df.filter(&mask)?)
        };
        let query_kept = |q: &str| kept_queries.contains(q);
        Ok(Self {
            name: format!("{}-sample", self.name),
            corpus: by(&self.corpus, "doc_id", &|d| kept_docs.contains(d))?,
            queries: by(&self.queries, "query_id", &query_kept)?,
            qrels: by(&self.qrels, "query_id", &query_kept)?,
        })
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

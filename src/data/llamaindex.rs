//! LlamaIndex's `EmbeddingQAFinetuneDataset` JSON: `{"queries": {id: text}, "corpus": {id: text},
//! "relevant_docs": {query id: [doc id, …]}, "mode": "text"}`. Every listed pair is relevant
//! (score 1). Corpus texts carry no title.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

use super::retrieval::{Document, RetrievalDataset};

#[derive(Deserialize, Serialize)]
struct QaDataset {
    queries: serde_json::Map<String, Value>,
    corpus: serde_json::Map<String, Value>,
    relevant_docs: serde_json::Map<String, Value>,
    #[serde(default = "text_mode")]
    mode: String,
}

fn text_mode() -> String {
    "text".into()
}

/// Reads an `EmbeddingQAFinetuneDataset` JSON file.
pub fn load_llamaindex(path: &Path) -> Result<RetrievalDataset> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let raw: QaDataset = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}:{}:{}: not an EmbeddingQAFinetuneDataset (needs `queries`, `corpus`, `relevant_docs`): {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    let as_text = |section: &str, id: &str, v: &Value| -> Result<String> {
        v.as_str()
            .map(str::to_string)
            .with_context(|| format!("{}: `{section}.{id}` must be a string", path.display()))
    };
    let docs = raw
        .corpus
        .iter()
        .map(|(id, v)| {
            Ok(Document {
                id: id.clone(),
                title: String::new(),
                body: as_text("corpus", id, v)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let queries = raw
        .queries
        .iter()
        .map(|(id, v)| Ok((id.clone(), as_text("queries", id, v)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut judgements = Vec::new();
    for (qid, docs) in &raw.relevant_docs {
        let Some(list) = docs.as_array() else {
            bail!(
                "{}: `relevant_docs.{qid}` must be a list of document ids",
                path.display()
            );
        };
        for d in list {
            let d = as_text("relevant_docs", qid, d)?;
            judgements.push((
                qid.clone(),
                d,
                1,
                format!("{}: relevant_docs.{qid}", path.display()),
            ));
        }
    }
    let name = path
        .file_stem()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    RetrievalDataset::from_rows(&name, docs, queries, judgements)
}

/// Writes a dataset as `EmbeddingQAFinetuneDataset` JSON (relevant = score > 0).
pub fn write_llamaindex(ds: &RetrievalDataset, path: &Path) -> Result<()> {
    let corpus: BTreeMap<String, String> = ds.doc_ids()?.into_iter().zip(ds.doc_texts()?).collect();
    let queries: BTreeMap<String, String> =
        ds.query_ids()?.into_iter().zip(ds.query_texts()?).collect();
    let relevant: BTreeMap<String, Vec<String>> = ds
        .qrels_map()?
        .into_iter()
        .map(|(q, docs)| {
            let mut ids: Vec<String> = docs
                .into_iter()
                .filter(|(_, s)| *s > 0)
                .map(|(d, _)| d)
                .collect();
            ids.sort();
            (q, ids)
        })
        .collect();
    let json = serde_json::json!({
        "queries": queries, "corpus": corpus, "relevant_docs": relevant, "mode": "text"
    });
    std::fs::write(path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qa.json");
        std::fs::write(
            &path,
            r#"{"queries": {"q1": "who makes honey"}, "corpus": {"n1": "Bees make honey.", "n2": "Wasps."},
                "relevant_docs": {"q1": ["n1"]}, "mode": "text"}"#,
        )
        .unwrap();
        let ds = load_llamaindex(&path).unwrap();
        assert_eq!(ds.doc_texts().unwrap(), vec!["Bees make honey.", "Wasps."]);
        assert_eq!(ds.qrels_map().unwrap()["q1"]["n1"], 1);
        let out = dir.path().join("out.json");
        write_llamaindex(&ds, &out).unwrap();
        let back = load_llamaindex(&out).unwrap();
        assert!(back.corpus.equals(&ds.corpus) && back.qrels.equals(&ds.qrels));

        std::fs::write(
            &path,
            r#"{"queries": {"q1": "x"}, "corpus": {"n1": "y"}, "relevant_docs": {"q1": ["n9"]}}"#,
        )
        .unwrap();
        let err = format!("{:#}", load_llamaindex(&path).unwrap_err());
        assert!(
            err.contains("relevant_docs.q1") && err.contains("n9"),
            "{err}"
        );

        std::fs::write(&path, r#"{"queries": {}, "corpus": {"n1": "y"}}"#).unwrap();
        let err = format!("{:#}", load_llamaindex(&path).unwrap_err());
        assert!(err.contains("relevant_docs"), "{err}");
    }
}

//! BEIR directories: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`) and
//! `qrels/<split>.tsv` (`query-id`, `corpus-id`, `score`, with a header row).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::jsonl::{optional_string_field, read_objects, string_field};
use super::retrieval::{Document, RetrievalDataset};
use super::table::str_column;

/// The documents of a BEIR directory's `corpus.jsonl`.
pub fn load_beir_corpus(dir: &Path) -> Result<Vec<Document>> {
    if !dir.is_dir() {
        bail!(
            "{}: not a directory (expected a BEIR folder with corpus.jsonl)",
            dir.display()
        );
    }
    let corpus_path = dir.join("corpus.jsonl");
    let docs = read_objects(&corpus_path)?
        .into_iter()
        .map(|(line, obj)| {
            Ok(Document {
                id: string_field(&obj, "_id", &corpus_path, line)?,
                title: optional_string_field(&obj, "title", &corpus_path, line)?,
                body: optional_string_field(&obj, "text", &corpus_path, line)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if docs.is_empty() {
        bail!("{}: no documents", corpus_path.display());
    }
    Ok(docs)
}

/// Loads a BEIR directory for one qrels split. Only the queries judged in that split are kept,
/// as BEIR's own loader does.
pub fn load_beir(dir: &Path, split: &str) -> Result<RetrievalDataset> {
    let docs = load_beir_corpus(dir)?;

    let queries_path = dir.join("queries.jsonl");
    let all_queries = read_objects(&queries_path)?
        .into_iter()
        .map(|(line, obj)| {
            Ok((
                string_field(&obj, "_id", &queries_path, line)?,
                string_field(&obj, "text", &queries_path, line)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;

    let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
    let judgements = read_qrels(&qrels_path)?;
    if judgements.is_empty() {
        bail!("{}: no relevance judgements", qrels_path.display());
    }
    let judged: std::collections::HashSet<&str> = judgements.iter().map(|j| j.0.as_str()).collect();
    let known: std::collections::HashSet<&str> = all_queries.iter().map(|q| q.0.as_str()).collect();
    if let Some(j) = judgements.iter().find(|j| !known.contains(j.0.as_str())) {
        bail!(
            "{}: query `{}` is not in {}",
            j.3,
            j.0,
            queries_path.display()
        );
    }
    let queries = all_queries
        .iter()
        .filter(|q| judged.contains(q.0.as_str()))
        .cloned()
        .collect();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    RetrievalDataset::from_rows(&name, docs, queries, judgements)
        .with_context(|| format!("BEIR folder {} (split {split})", dir.display()))
}

/// Reads a qrels TSV into (query id, doc id, score, "file:line").
fn read_qrels(path: &Path) -> Result<Vec<(String, String, i64, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} (is the split name right?)", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        if lineno == 1
            && fields
                .first()
                .is_some_and(|f| f.eq_ignore_ascii_case("query-id"))
        {
            continue;
        }
        if fields.len() != 3 {
            bail!(
                "{}:{lineno}: expected 3 tab-separated fields (query-id, corpus-id, score), found {}",
                path.display(),
                fields.len()
            );
        }
        let score: i64 = fields[2].parse().map_err(|_| {
            anyhow::anyhow!(
                "{}:{lineno}: score `{}` is not an integer",
                path.display(),
                fields[2]
            )
        })?;
        out.push((
            fields[0].to_string(),
            fields[1].to_string(),
            score,
            format!("{}:{lineno}", path.display()),
        ));
    }
    Ok(out)
}

/// Writes a dataset as a BEIR directory with one qrels split.
pub fn write_beir(ds: &RetrievalDataset, dir: &Path, split: &str) -> Result<()> {
    std::fs::create_dir_all(dir.join("qrels"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut corpus = String::new();
    let (ids, titles, bodies) = (
        str_column(&ds.corpus, "doc_id")?,
        str_column(&ds.corpus, "title")?,
        str_column(&ds.corpus, "body")?,
    );
    for ((id, title), body) in ids.iter().zip(&titles).zip(&bodies) {
        let row = serde_json::json!({"_id": id, "title": title, "text": body});
        writeln!(corpus, "{row}")?;
    }
    write_file(&dir.join("corpus.jsonl"), &corpus)?;
    let mut queries = String::new();
    for (id, text) in ds.query_ids()?.iter().zip(ds.query_texts()?) {
        writeln!(queries, "{}", serde_json::json!({"_id": id, "text": text}))?;
    }
    write_file(&dir.join("queries.jsonl"), &queries)?;
    // Row order is kept, so a dataset round-trips unchanged.
    let mut qrels = String::from("query-id\tcorpus-id\tscore\n");
    let scores = ds
        .qrels
        .column("score")?
        .cast(&polars::prelude::DataType::Int64)?;
    for ((q, d), s) in str_column(&ds.qrels, "query_id")?
        .iter()
        .zip(str_column(&ds.qrels, "doc_id")?)
        .zip(scores.i64()?.iter())
    {
        writeln!(qrels, "{q}\t{d}\t{}", s.unwrap_or(0))?;
    }
    write_file(&dir.join("qrels").join(format!("{split}.tsv")), &qrels)
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, corpus: &str, queries: &str, qrels: &str) {
        std::fs::create_dir_all(dir.join("qrels")).unwrap();
        std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
        std::fs::write(dir.join("queries.jsonl"), queries).unwrap();
        std::fs::write(dir.join("qrels/test.tsv"), qrels).unwrap();
    }

    const CORPUS: &str = "{\"_id\": \"d1\", \"title\": \"Bees\", \"text\": \"make honey.\"}\n{\"_id\": 2, \"text\": \"Wasps do not.\"}\n";
    const QUERIES: &str = "{\"_id\": \"q1\", \"text\": \"who makes honey\"}\n{\"_id\": \"q2\", \"text\": \"unjudged\"}\n";

    #[test]
    fn loads_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            CORPUS,
            QUERIES,
            "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\t2\t0\n",
        );
        let ds = load_beir(dir.path(), "test").unwrap();
        assert_eq!(
            ds.doc_texts().unwrap(),
            vec!["Bees make honey.", "Wasps do not."]
        );
        assert_eq!(ds.doc_ids().unwrap(), vec!["d1", "2"]);
        assert_eq!(
            ds.query_ids().unwrap(),
            vec!["q1"],
            "unjudged queries are dropped"
        );
        assert_eq!(ds.qrels_map().unwrap()["q1"]["2"], 0);

        let out = tempfile::tempdir().unwrap();
        write_beir(&ds, out.path(), "test").unwrap();
        let back = load_beir(out.path(), "test").unwrap();
        assert!(back.corpus.equals(&ds.corpus));
        assert!(back.qrels.equals(&ds.qrels));
    }

    #[test]
    fn bad_input_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            CORPUS,
            QUERIES,
            "query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\n",
        );
        let err = format!("{:#}", load_beir(dir.path(), "test").unwrap_err());
        assert!(err.contains("test.tsv:3") && err.contains("q9"), "{err}");

        write(dir.path(), CORPUS, QUERIES, "q1\td7\t1\n");
        let err = format!("{:#}", load_beir(dir.path(), "test").unwrap_err());
        assert!(err.contains("test.tsv:1") && err.contains("d7"), "{err}");

        write(
            dir.path(),
            "{\"_id\": \"d1\", \"text\": \"ok\"}\n{\"_id\": \"d2\", \"text\": }\n",
            QUERIES,
            "q1\td1\t1\n",
        );
        let err = format!("{:#}", load_beir(dir.path(), "test").unwrap_err());
        assert!(err.contains("corpus.jsonl:2: malformed JSON"), "{err}");

        write(dir.path(), "\n", QUERIES, "q1\td1\t1\n");
        let err = format!("{:#}", load_beir(dir.path(), "test").unwrap_err());
        assert!(err.contains("no documents"), "{err}");

        write(dir.path(), CORPUS, "{\"_id\": \"q1\"}\n", "q1\td1\t1\n");
        let err = format!("{:#}", load_beir(dir.path(), "test").unwrap_err());
        assert!(
            err.contains("queries.jsonl:1: missing field `text`"),
            "{err}"
        );
    }
}

//! The pipeline judged as a whole: questions with gold documents (and gold answers where there
//! are some) run through a [`Rag`], scored per question at each stage, and two pipelines (base and
//! tuned) compared question by question with confidence intervals.
//!
//! Relevance is judged per document: a chunk counts for the document it came from, and a
//! document's rank is that of its first chunk.
//!
//! Evaluation sets are a BEIR folder (its queries and qrels of a split; no answers) or JSONL, one
//! question per line: `{"id": "q1", "question": "…", "doc_ids": ["d3", …], "answer": "…"}`
//! (`id` and `answer` optional; `query` is accepted for `question`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rag::{Rag, RagAnswer};
use crate::data::jsonl::{json_kind, read_objects, string_field};
use crate::eval::grounded::token_f1;
use crate::eval::metrics::query_metrics;
use crate::eval::paired::{paired_difference, PairedDifference};
use crate::raft::quotes::{word_count, MIN_QUOTE_WORDS};

/// A question with its gold documents.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalQuestion {
    pub id: String,
    pub question: String,
    pub doc_ids: Vec<String>,
    pub answer: Option<String>,
}

/// Questions from a JSONL file, or a BEIR folder's `split` (every query with a relevant document).
pub fn read_questions(path: &Path, split: Option<&str>) -> Result<Vec<EvalQuestion>> {
    if path.is_dir() {
        let split = split.unwrap_or("test");
        let ds = crate::data::load_beir(path, split)?;
        let qrels = ds.qrels_map()?;
        let mut out = vec![];
        for (id, text) in ds.query_ids()?.into_iter().zip(ds.query_texts()?) {
            let Some(judged) = qrels.get(&id) else {
                continue;
            };
            let mut docs: Vec<String> = judged
                .iter()
                .filter(|(_, &g)| g >= 1)
                .map(|(d, _)| d.clone())
                .collect();
            docs.sort();
            if !docs.is_empty() {
                out.push(EvalQuestion {
                    id,
                    question: text,
                    doc_ids: docs,
                    answer: None,
                });
            }
        }
        if out.is_empty() {
            bail!(
                "{}: no query of split `{split}` has a relevant document",
                path.display()
            );
        }
        return Ok(out);
    }
    let mut out = vec![];
    for (line, obj) in read_objects(path)? {
        let field = if obj.contains_key("question") {
            "question"
        } else {
            "query"
        };
        let question = string_field(&obj, field, path, line)?;
        let doc_ids = match obj.get("doc_ids") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    other => bail!(
                        "{}:{line}: `doc_ids` must hold strings, found {}",
                        path.display(),
                        json_kind(other)
                    ),
                })
                .collect::<Result<Vec<_>>>()?,
            Some(other) => bail!(
                "{}:{line}: `doc_ids` must be a list of document ids, found {}",
                path.display(),
                json_kind(other)
            ),
            None => bail!(
                "{}:{line}: missing field `doc_ids` (the gold documents)",
                path.display()
            ),
        };
        if doc_ids.is_empty() {
            bail!("{}:{line}: `doc_ids` is empty", path.display());
        }
        let id = match obj.get("id") {
            None | Some(Value::Null) => format!("q{line}"),
            Some(_) => string_field(&obj, "id", path, line)?,
        };
        let answer = match obj.get("answer") {
            None | Some(Value::Null) => None,
            Some(_) => Some(string_field(&obj, "answer", path, line)?),
        };
        out.push(EvalQuestion {
            id,
            question,
            doc_ids,
            answer,
        });
    }
    if out.is_empty() {
        bail!("{}: no questions", path.display());
    }
    Ok(out)
}

/// One question's figures at each stage (`None`: not measured, e.g. no generator or no gold
/// answer).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QuestionScores {
    pub retrieval_ndcg10: f64,
    pub retrieval_recall5: f64,
    pub retrieval_recall20: f64,
    pub reranked_ndcg10: f64,
    pub reranked_precision5: f64,
    pub reranked_recall5: f64,
    /// Token F1 of the final answer against the gold answer.
    pub answer_f1: Option<f64>,
    /// Verified counted quotes over counted quotes (0 without any quote).
    pub faithfulness: Option<f64>,
    /// Gold documents cited by a verified quote, over gold documents.
    pub citation_recall: Option<f64>,
    /// Counted quotes and how many are not in the documents read.
    pub quotes: usize,
    pub invented_quotes: usize,
}

/// Scores `answer` against `gold`.
pub fn score_answer(answer: &RagAnswer, gold: &EvalQuestion) -> QuestionScores {
    let judged: HashMap<String, i64> = gold.doc_ids.iter().map(|d| (d.clone(), 1)).collect();
    let ks = [5, 10, 20];
    let retrieval = query_metrics(&answer.retrieved_docs(), &judged, &ks);
    let reranked = query_metrics(&answer.reranked_docs(), &judged, &ks);
    let mut s = QuestionScores {
        retrieval_ndcg10: retrieval["ndcg@10"],
        retrieval_recall5: retrieval["recall@5"],
        retrieval_recall20: retrieval["recall@20"],
        reranked_ndcg10: reranked["ndcg@10"],
        reranked_precision5: reranked["precision@5"],
        reranked_recall5: reranked["recall@5"],
        ..Default::default()
    };
    if let Some(text) = &answer.answer {
        let counted: Vec<_> = answer
            .quotes
            .iter()
            .filter(|q| word_count(&q.text) >= MIN_QUOTE_WORDS)
            .collect();
        let real = counted.iter().filter(|q| q.verified).count();
        s.quotes = counted.len();
        s.invented_quotes = counted.len() - real;
        s.faithfulness = Some(crate::eval::grounded::faithfulness(counted.len(), real));
        let cited = answer.cited_docs();
        let hit = gold
            .doc_ids
            .iter()
            .filter(|d| cited.contains(&d.as_str()))
            .count();
        s.citation_recall = Some(hit as f64 / gold.doc_ids.len() as f64);
        if let Some(g) = &gold.answer {
            let said = answer.final_answer.clone().unwrap_or_else(|| text.clone());
            s.answer_f1 = Some(token_f1(&said, g));
        }
    }
    s
}

/// Runs `rag` over `questions` and scores each answer.
pub fn run(rag: &Rag, questions: &[EvalQuestion]) -> Result<(Vec<RagAnswer>, Vec<QuestionScores>)> {
    let texts: Vec<String> = questions.iter().map(|q| q.question.clone()).collect();
    let answers = rag.ask_many(&texts)?;
    let scores = answers
        .iter()
        .zip(questions)
        .map(|(a, q)| score_answer(a, q))
        .collect();
    Ok((answers, scores))
}

/// The rows of the comparison: (stage, metric, the figure of a question).
type Extract = fn(&QuestionScores) -> Option<f64>;
const ROWS: [(&str, &str, Extract); 7] = [
    ("retrieval", "ndcg@10", |s| Some(s.retrieval_ndcg10)),
    ("retrieval", "recall@20", |s| Some(s.retrieval_recall20)),
    ("reranking", "ndcg@10", |s| Some(s.reranked_ndcg10)),
    ("reranking", "precision@5", |s| Some(s.reranked_precision5)),
    ("generation", "answer token F1", |s| s.answer_f1),
    ("generation", "quote faithfulness", |s| s.faithfulness),
    ("generation", "citation recall", |s| s.citation_recall),
];

/// One metric, base vs tuned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComparisonRow {
    pub stage: String,
    pub metric: String,
    #[serde(flatten)]
    pub figures: PairedDifference,
}

/// Base and tuned pipelines, stage by stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineComparison {
    pub base: String,
    pub tuned: String,
    pub rows: Vec<ComparisonRow>,
}

/// Compares per-question scores of two pipelines on the same questions; metrics neither measured
/// (e.g. answers without gold) are left out, and each row's `n` counts the questions both have.
pub fn compare(
    base_name: &str,
    tuned_name: &str,
    base: &[QuestionScores],
    tuned: &[QuestionScores],
) -> Result<PipelineComparison> {
    if base.len() != tuned.len() {
        bail!("the two pipelines answered different numbers of questions");
    }
    let mut rows = vec![];
    for (stage, metric, f) in ROWS {
        let (b, t): (Vec<f64>, Vec<f64>) = base
            .iter()
            .zip(tuned)
            .filter_map(|(b, t)| Some((f(b)?, f(t)?)))
            .unzip();
        if b.is_empty() {
            continue;
        }
        rows.push(ComparisonRow {
            stage: stage.into(),
            metric: metric.into(),
            figures: paired_difference(&b, &t, 42)?,
        });
    }
    Ok(PipelineComparison {
        base: base_name.into(),
        tuned: tuned_name.into(),
        rows,
    })
}

impl PipelineComparison {
    /// `stage, metric, base, tuned, difference, ci_low, ci_high, n`.
    pub fn to_frame(&self) -> Result<DataFrame> {
        let f = |g: fn(&PairedDifference) -> f64| -> Vec<f64> {
            self.rows.iter().map(|r| g(&r.figures)).collect()
        };
        Ok(DataFrame::new(
            self.rows.len(),
            vec![
                Column::new(
                    "stage".into(),
                    self.rows
                        .iter()
                        .map(|r| r.stage.as_str())
                        .collect::<Vec<_>>(),
                ),
                Column::new(
                    "metric".into(),
                    self.rows
                        .iter()
                        .map(|r| r.metric.as_str())
                        .collect::<Vec<_>>(),
                ),
                Column::new("base".into(), f(|d| d.base)),
                Column::new("tuned".into(), f(|d| d.tuned)),
                Column::new("difference".into(), f(|d| d.difference)),
                Column::new("ci_low".into(), f(|d| d.ci_low)),
                Column::new("ci_high".into(), f(|d| d.ci_high)),
                Column::new(
                    "n".into(),
                    self.rows
                        .iter()
                        .map(|r| r.figures.n as u32)
                        .collect::<Vec<_>>(),
                ),
            ],
        )?)
    }

    /// A fixed-width table with every row (no truncation).
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "base: {}\ntuned: {}\n{:<11} {:<19} {:>7} {:>7} {:>8}  {:<18} {:>4}\n",
            self.base, self.tuned, "stage", "metric", "base", "tuned", "diff", "95% CI", "n"
        );
        for r in &self.rows {
            let d = &r.figures;
            out.push_str(&format!(
                "{:<11} {:<19} {:>7.4} {:>7.4} {:>+8.4}  [{:+.3}, {:+.3}]{} {:>4}\n",
                r.stage,
                r.metric,
                d.base,
                d.tuned,
                d.difference,
                d.ci_low,
                d.ci_high,
                if d.significant() { "*" } else { " " },
                d.n
            ));
        }
        out.push_str("* the 95% interval of the paired difference excludes 0\n");
        out
    }

    /// Grouped bars, base vs tuned, one group per (stage, metric).
    pub fn chart(&self) -> crate::charts::Chart {
        let names: Vec<String> = self
            .rows
            .iter()
            .map(|r| format!("{}: {}", r.stage, r.metric))
            .collect();
        crate::charts::Chart::bars(
            "Pipeline, stage by stage: base vs tuned",
            &names,
            vec![
                (
                    "base".into(),
                    self.rows.iter().map(|r| r.figures.base).collect(),
                ),
                (
                    "tuned".into(),
                    self.rows.iter().map(|r| r.figures.tuned).collect(),
                ),
            ],
        )
    }
}

//! Which stage to tune: a pipeline measured on the user's questions, then the decision practice
//! follows, each branch taken on a measured figure and printed with it.
//!
//! 1. Fewer than `min_documents` documents: fine-tuning is unlikely to pay (the retriever ranks a
//!    handful of documents; put them all in the prompt, or tune nothing until the corpus grows).
//! 2. Retrieval recall@20 below `min_recall`: the right documents are not found at all —
//!    tune the embedder (on synthetic questions when there are fewer than `synthetic_below`
//!    labelled pairs).
//! 3. Found but low: of the relevant documents in the top 20, the share that make the top 5
//!    (recall@5 over recall@20, after the current reranker if any) is
//!    below `min_top_share` — tune the reranker. Raw precision is not used: with one relevant
//!    document per question, precision@5 cannot exceed 0.2.
//! 4. Retrieval fine but answers quote text that is not in their documents, or quote nothing:
//!    quote faithfulness below `min_faithfulness` — RAFT-tune the generator.
//! 5. Otherwise every check passes.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::evaluate::QuestionScores;

/// The cut-offs of the decision: the engine's defaults (`retrieve_k` 20, `rerank_k` 5). With a
/// smaller `retrieve_k`, recall@20 is recall at that depth.
pub const RECALL_K: usize = 20;
pub const TOP_K: usize = 5;

/// The thresholds of the decision; each is settable from every door.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiagnoseThresholds {
    pub min_documents: usize,
    /// Least retrieval recall@20.
    pub min_recall: f64,
    /// Least recall@5 / recall@20 (after the reranker, if any).
    pub min_top_share: f64,
    /// Least quote faithfulness of the answers.
    pub min_faithfulness: f64,
    pub synthetic_below: usize,
}

impl Default for DiagnoseThresholds {
    fn default() -> Self {
        Self {
            min_documents: 50,
            min_recall: 0.8,
            min_top_share: 0.75,
            min_faithfulness: 0.8,
            synthetic_below: 1000,
        }
    }
}

/// What the decision reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub documents: usize,
    pub questions: usize,
    /// Labelled (question, document) pairs available for training.
    pub labelled_pairs: usize,
    pub recall_at_k: f64,
    pub recall_at_top: f64,
    pub ndcg10: f64,
    /// Quote faithfulness of the answers; `None` when no generator answered.
    pub faithfulness: Option<f64>,
    pub invented_quote_rate: Option<f64>,
}

impl Figures {
    /// Means over scored questions: recall@20 of the retriever, recall@5 and NDCG@10 after the
    /// reranker (what the generator reads).
    pub fn from_scores(scores: &[QuestionScores], documents: usize, labelled_pairs: usize) -> Self {
        let n = scores.len().max(1) as f64;
        let mean = |f: fn(&QuestionScores) -> f64| scores.iter().map(f).sum::<f64>() / n;
        let faith: Vec<f64> = scores.iter().filter_map(|s| s.faithfulness).collect();
        let quotes: usize = scores.iter().map(|s| s.quotes).sum();
        let invented: usize = scores.iter().map(|s| s.invented_quotes).sum();
        Self {
            documents,
            questions: scores.len(),
            labelled_pairs,
            recall_at_k: mean(|s| s.retrieval_recall20),
            recall_at_top: mean(|s| s.reranked_recall5),
            ndcg10: mean(|s| s.reranked_ndcg10),
            faithfulness: (!faith.is_empty())
                .then(|| faith.iter().sum::<f64>() / faith.len() as f64),
            invented_quote_rate: (!faith.is_empty() && quotes > 0)
                .then(|| invented as f64 / quotes as f64),
        }
    }
}

/// The stage the decision points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recommendation {
    TooFewDocuments,
    TuneEmbeddings,
    TuneReranker,
    Raft,
    /// Every measured check passes.
    NoStage,
}

/// One step of the walk: what was measured against what.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    pub measured: String,
    pub threshold: String,
    pub passed: bool,
}

/// The decision with the figures behind it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnosis {
    pub figures: Figures,
    pub thresholds: DiagnoseThresholds,
    pub checks: Vec<Check>,
    pub recommendation: Recommendation,
    pub advice: String,
}

/// Walks the decision on measured `figures`.
pub fn decide(figures: &Figures, t: &DiagnoseThresholds) -> Diagnosis {
    let mut checks = vec![];
    let mut check = |name: &str, measured: String, threshold: String, passed: bool| {
        checks.push(Check {
            name: name.into(),
            measured,
            threshold,
            passed,
        });
        passed
    };
    let f = figures;
    let (rec, advice) = if !check(
        "corpus size",
        format!("{} documents", f.documents),
        format!("≥ {}", t.min_documents),
        f.documents >= t.min_documents,
    ) {
        (
            Recommendation::TooFewDocuments,
            format!(
                "With {} documents, fine-tuning is unlikely to pay: any retriever ranks so few \
                 documents well enough, and they may fit the generator's prompt whole. Tune \
                 nothing yet; grow the corpus past {} documents first.",
                f.documents, t.min_documents
            ),
        )
    } else if !check(
        &format!("retrieval recall@{}", RECALL_K),
        format!("{:.3}", f.recall_at_k),
        format!("≥ {:.2}", t.min_recall),
        f.recall_at_k >= t.min_recall,
    ) {
        let data = if f.labelled_pairs < t.synthetic_below {
            format!(
                "with synthetic questions (`synth queries`: there are {} labelled pairs, fewer \
                 than {})",
                f.labelled_pairs, t.synthetic_below
            )
        } else {
            format!("on your {} labelled pairs", f.labelled_pairs)
        };
        (
            Recommendation::TuneEmbeddings,
            format!(
                "The retriever misses relevant documents: only {:.0}% of them are in its top {}. \
                 Nothing downstream can use a document that was never retrieved. Fine-tune the \
                 embedder {data}, mining hard negatives with the current one.",
                100.0 * f.recall_at_k,
                RECALL_K
            ),
        )
    } else if !{
        let share = if f.recall_at_k > 0.0 {
            f.recall_at_top / f.recall_at_k
        } else {
            0.0
        };
        check(
            &format!("share of found documents in the top {}", TOP_K),
            format!(
                "{share:.3} (recall@{} {:.3} / recall@{} {:.3})",
                TOP_K, f.recall_at_top, RECALL_K, f.recall_at_k
            ),
            format!("≥ {:.2}", t.min_top_share),
            share >= t.min_top_share,
        )
    } {
        (
            Recommendation::TuneReranker,
            format!(
                "The relevant documents are found but sit low: recall@{} is {:.3} against {:.3} \
                 at {}, and the generator reads only the top {}. Train a reranker on negatives \
                 mined with the current embedder.",
                TOP_K, f.recall_at_top, f.recall_at_k, RECALL_K, TOP_K
            ),
        )
    } else {
        match f.faithfulness {
            None => {
                check(
                    "quote faithfulness",
                    "not measured (no generator)".into(),
                    format!("≥ {:.2}", t.min_faithfulness),
                    true,
                );
                (
                    Recommendation::NoStage,
                    "Retrieval and reranking pass their checks; answers were not measured (run \
                     with a generator to check them)."
                        .to_string(),
                )
            }
            Some(faith) => {
                let invented = f.invented_quote_rate.map_or("no quotes".to_string(), |r| {
                    format!("{:.0}% of quotes invented", 100.0 * r)
                });
                if !check(
                    "quote faithfulness",
                    format!("{faith:.3} ({invented})"),
                    format!("≥ {:.2}", t.min_faithfulness),
                    faith >= t.min_faithfulness,
                ) {
                    (
                        Recommendation::Raft,
                        format!(
                            "Retrieval is fine but the answers do not rest on their documents \
                             (faithfulness {faith:.3}; {invented}). RAFT-tune the generator: \
                             examples with hard distractors and answers that quote their evidence."
                        ),
                    )
                } else {
                    (
                        Recommendation::NoStage,
                        "Every measured check passes; no stage stands out.".to_string(),
                    )
                }
            }
        }
    };
    Diagnosis {
        figures: figures.clone(),
        thresholds: t.clone(),
        checks,
        recommendation: rec,
        advice,
    }
}

impl Diagnosis {
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "measured on {} questions over {} documents:\n",
            self.figures.questions, self.figures.documents
        );
        for c in &self.checks {
            out.push_str(&format!(
                "  {} {:<40} {:<45} (threshold {})\n",
                if c.passed { "✓" } else { "✗" },
                c.name,
                c.measured,
                c.threshold
            ));
        }
        out.push_str(&format!(
            "\nrecommendation: {}\n{}\n",
            serde_json::to_value(self.recommendation)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            self.advice
        ));
        out
    }
}

/// Measures `rag` on `questions` and walks the decision. `labelled_pairs`: how many labelled
/// (question, document) pairs the user has for training.
pub fn diagnose(
    rag: &super::rag::Rag,
    questions: &[super::evaluate::EvalQuestion],
    labelled_pairs: usize,
    thresholds: &DiagnoseThresholds,
) -> Result<(Diagnosis, Vec<QuestionScores>)> {
    let (_, scores) = super::evaluate::run(rag, questions)?;
    let figures = Figures::from_scores(&scores, rag.documents(), labelled_pairs);
    Ok((decide(&figures, thresholds), scores))
}

/// The tuned pipeline's answers that a run's evaluation stage saved.
pub const TUNED_ANSWERS: &str = "eval/answers-tuned.jsonl";

/// The diagnosis of the pipeline folder `output` from the scores its evaluation stage saved for
/// the tuned pipeline ([`TUNED_ANSWERS`]): the questions are not answered a second time. Fails
/// when the run has no finished evaluation stage.
pub fn diagnose_run(
    output: &Path,
    labelled_pairs: usize,
    thresholds: &DiagnoseThresholds,
) -> Result<(Diagnosis, Vec<QuestionScores>)> {
    let manifest = output.join("eval/manifest.json");
    let finished = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|t| serde_json::from_str::<super::StageManifest>(&t).ok())
        .is_some_and(|m| m.finished);
    if !finished {
        bail!(
            "{} has no finished evaluation stage (run the pipeline with an evaluation set, or \
             measure the query engine on questions: `ragtune diagnose --pipeline {} --eval …`)",
            output.display(),
            output.display()
        );
    }
    let path = output.join(TUNED_ANSWERS);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    #[derive(Deserialize)]
    struct Row {
        scores: QuestionScores,
    }
    let scores = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<Row>(l)
                .map(|r| r.scores)
                .with_context(|| format!("{}:{}: not a scored answer", path.display(), i + 1))
        })
        .collect::<Result<Vec<_>>>()?;
    if scores.is_empty() {
        bail!("{}: no scored answers", path.display());
    }
    let documents = super::rag::RagConfig::read(output)?.documents(output)?;
    let figures = Figures::from_scores(&scores, documents, labelled_pairs);
    Ok((decide(&figures, thresholds), scores))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Figures {
        Figures {
            documents: 500,
            questions: 40,
            labelled_pairs: 0,
            recall_at_k: 0.9,
            recall_at_top: 0.8,
            ndcg10: 0.7,
            faithfulness: Some(0.9),
            invented_quote_rate: Some(0.05),
        }
    }

    #[test]
    fn each_branch_on_a_constructed_case() {
        let t = DiagnoseThresholds::default();
        let d = decide(&good(), &t);
        assert_eq!(d.recommendation, Recommendation::NoStage);
        assert_eq!(d.checks.len(), 4);
        assert!(d.checks.iter().all(|c| c.passed));

        let small = Figures {
            documents: 30,
            ..good()
        };
        let d = decide(&small, &t);
        assert_eq!(d.recommendation, Recommendation::TooFewDocuments);
        assert!(d.advice.contains("30 documents"), "{}", d.advice);
        assert_eq!(d.checks.len(), 1);

        let missed = Figures {
            recall_at_k: 0.6,
            recall_at_top: 0.5,
            ..good()
        };
        let d = decide(&missed, &t);
        assert_eq!(d.recommendation, Recommendation::TuneEmbeddings);
        assert!(
            d.advice.contains("60%") && d.advice.contains("synthetic"),
            "{}",
            d.advice
        );
        assert!(d.checks[1].measured.contains("0.600"));
        let labelled = Figures {
            labelled_pairs: 5000,
            ..missed
        };
        assert!(decide(&labelled, &t).advice.contains("5000 labelled pairs"));

        // Found (recall@20 0.9) but low: only half of them in the top 5.
        let low = Figures {
            recall_at_top: 0.45,
            ..good()
        };
        let d = decide(&low, &t);
        assert_eq!(d.recommendation, Recommendation::TuneReranker);
        assert!(
            d.checks[2].measured.starts_with("0.500"),
            "{}",
            d.checks[2].measured
        );

        let unfaithful = Figures {
            faithfulness: Some(0.3),
            invented_quote_rate: Some(0.6),
            ..good()
        };
        let d = decide(&unfaithful, &t);
        assert_eq!(d.recommendation, Recommendation::Raft);
        assert!(d.checks[3].measured.contains("60% of quotes invented"));

        let silent = Figures {
            faithfulness: None,
            invented_quote_rate: None,
            ..good()
        };
        assert_eq!(decide(&silent, &t).recommendation, Recommendation::NoStage);
        assert!(decide(&silent, &t).checks[3]
            .measured
            .contains("not measured"));

        // Thresholds are settings: a stricter recall threshold changes the branch.
        let strict = DiagnoseThresholds {
            min_recall: 0.95,
            ..t
        };
        assert_eq!(
            decide(&good(), &strict).recommendation,
            Recommendation::TuneEmbeddings
        );
    }

    #[test]
    fn a_run_is_diagnosed_from_its_saved_scores() {
        use crate::pipeline::rag::{RagConfig, RagOptions};
        use polars::prelude::*;

        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        std::fs::create_dir_all(out.join("data")).unwrap();
        std::fs::create_dir_all(out.join("eval")).unwrap();
        let chunks = df!(
            "chunk_id" => ["c1", "c2", "c3", "c4"],
            "doc_id" => ["d1", "d1", "d2", "d3"],
            "text" => ["a", "b", "c", "d"],
        )
        .unwrap();
        crate::data::table::write_table(&chunks, &out.join("data/chunks.parquet")).unwrap();
        RagConfig {
            chunks: "data/chunks.parquet".into(),
            embedder: "e".into(),
            reranker: None,
            llm: "local:m".into(),
            base_url: None,
            adapter: None,
            options: RagOptions::default(),
        }
        .write(out)
        .unwrap();
        let manifest = |finished: bool| {
            let m = crate::pipeline::StageManifest {
                stage: "eval".into(),
                key: "k".into(),
                settings: serde_json::json!({}),
                inputs: vec![],
                version: "v".into(),
                finished,
                seconds: 1.0,
                figures: serde_json::json!({}),
            };
            std::fs::write(
                out.join("eval/manifest.json"),
                serde_json::to_string(&m).unwrap(),
            )
            .unwrap();
        };
        let row = |r20: f64, r5: f64, faith: f64| {
            let s = QuestionScores {
                retrieval_recall20: r20,
                reranked_recall5: r5,
                faithfulness: Some(faith),
                quotes: 1,
                invented_quotes: (faith < 1.0) as usize,
                ..Default::default()
            };
            serde_json::json!({"id": "q", "answer": "…", "scores": s}).to_string()
        };
        let answers = out.join(TUNED_ANSWERS);
        std::fs::write(
            &answers,
            format!("{}\n{}\n", row(1.0, 1.0, 1.0), row(1.0, 0.0, 0.0)),
        )
        .unwrap();
        let t = DiagnoseThresholds::default();

        // An interrupted evaluation is not read.
        manifest(false);
        let err = diagnose_run(out, 0, &t).unwrap_err().to_string();
        assert!(err.contains("no finished evaluation stage"), "{err}");

        manifest(true);
        let (d, scores) = diagnose_run(out, 0, &t).unwrap();
        assert_eq!(scores.len(), 2);
        assert_eq!(d.figures.documents, 3);
        assert_eq!(d.figures.recall_at_k, 1.0);
        assert_eq!(d.figures.recall_at_top, 0.5);
        assert_eq!(d.figures.faithfulness, Some(0.5));
        assert_eq!(d.recommendation, Recommendation::TooFewDocuments);
        let small = DiagnoseThresholds {
            min_documents: 3,
            ..t.clone()
        };
        assert_eq!(
            diagnose_run(out, 0, &small).unwrap().0.recommendation,
            Recommendation::TuneReranker
        );

        // A damaged line is named.
        std::fs::write(
            &answers,
            format!("{}\n{{\"scores\": 3}}\n", row(1.0, 1.0, 1.0)),
        )
        .unwrap();
        let err = format!("{:#}", diagnose_run(out, 0, &t).unwrap_err());
        assert!(err.contains("answers-tuned.jsonl:2"), "{err}");
    }

    #[test]
    fn figures_are_means_over_questions() {
        let q = |r20: f64, r5: f64, faith: Option<f64>, quotes: usize, invented: usize| {
            QuestionScores {
                retrieval_recall20: r20,
                reranked_recall5: r5,
                faithfulness: faith,
                quotes,
                invented_quotes: invented,
                ..Default::default()
            }
        };
        let f = Figures::from_scores(
            &[q(1.0, 1.0, Some(1.0), 2, 0), q(0.5, 0.0, Some(0.0), 2, 2)],
            100,
            7,
        );
        assert_eq!(f.questions, 2);
        assert_eq!(f.recall_at_k, 0.75);
        assert_eq!(f.recall_at_top, 0.5);
        assert_eq!(f.faithfulness, Some(0.5));
        assert_eq!(f.invented_quote_rate, Some(0.5));
        let f = Figures::from_scores(&[q(1.0, 1.0, None, 0, 0)], 100, 7);
        assert_eq!(f.faithfulness, None);
    }
}

//! The pipeline end to end on real models: a run killed inside a stage continues from that stage;
//! a changed setting reruns only its stage and those after it; `ask` traces quotes to the
//! documents it read; `diagnose` refuses to recommend tuning on a tiny corpus.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use ragtune::llm::{ChatModel, ChatRequest, Completion, FinishReason, OnAnswer};
use ragtune::pipeline::rag::{Rag, RagOptions};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ragtune");

/// The first `n` passages of the bundled sample, as a corpus file.
fn sample_corpus(dir: &Path, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/data/apiary/corpus.jsonl"),
    )
    .unwrap();
    let path = dir.join("corpus.jsonl");
    let lines: Vec<&str> = text.lines().take(n).collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn pipeline_args(docs: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "pipeline",
        "--docs",
        docs.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--questions",
        "ict",
        "--generate",
        "off",
        "--no-answers",
        "--json",
        "--set",
        "embed_train.max_steps=6",
        "--set",
        "embed_train.save_steps=2",
        "--set",
        "embed_train.batch_size=8",
        "--set",
        "rerank_train.max_steps=3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn statuses(outcome: &Value) -> Vec<(String, String)> {
    outcome["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Runs `ragtune` with `args`, which must succeed, and parses its JSON output.
fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Value {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn killed_run_resumes_its_stage_and_a_changed_setting_reruns_only_what_follows() {
    if common::skip_without_minilm() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let docs = sample_corpus(tmp.path(), 60);
    let out = tmp.path().join("run");

    // Killed once the embedding stage has checkpointed step 2.
    let mut child = Command::new(BIN)
        .args(pipeline_args(&docs, &out, &[]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !out.join("embed/model/checkpoints/step-2").is_dir() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("embed/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["finished"], false,
        "killed inside the embedding stage"
    );

    // The rerun skips the data stage, resumes the embedding stage, runs the rest.
    let outcome = run(&pipeline_args(&docs, &out, &[]));
    assert_eq!(
        statuses(&outcome),
        pairs(&[
            ("data", "skipped"),
            ("embed", "resumed"),
            ("rerank", "ran"),
            ("index", "ran"),
            ("eval", "ran")
        ])
    );
    let embed = &outcome["stages"][1]["figures"];
    assert_eq!(embed["steps"], 6);
    // The reranker's fusion weight is saved beside it, as `train rerank` saves its own.
    let rerank = &outcome["stages"][2]["figures"];
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("rerank/model/fusion.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["retriever_weight"], rerank["fusion"]);
    assert_eq!(saved["fused_ndcg10"], rerank["val_ndcg10_fused"]);
    let rows = outcome["comparison"]["rows"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        4,
        "retrieval and reranking rows without answers"
    );
    assert!(rows.iter().all(|r| r["n"].as_u64().unwrap() > 0));
    assert!(out.join("rag.json").is_file() && out.join("eval/comparison.html").is_file());

    // Unchanged: everything is skipped, and the comparison is read back.
    let again = run(&pipeline_args(&docs, &out, &[]));
    assert!(
        statuses(&again).iter().all(|(_, s)| s == "skipped"),
        "{:?}",
        statuses(&again)
    );
    assert_eq!(again["comparison"], outcome["comparison"]);

    // A reranker setting changed: data and embeddings stay, the reranker and evaluation rerun.
    let changed = run(&pipeline_args(
        &docs,
        &out,
        &["--set", "rerank_train.lr=3e-5"],
    ));
    assert_eq!(
        statuses(&changed),
        pairs(&[
            ("data", "skipped"),
            ("embed", "skipped"),
            ("rerank", "ran"),
            ("index", "skipped"),
            ("eval", "ran")
        ])
    );

    // The diagnosis reads the evaluation stage's scores of the tuned pipeline: its recall@20 is
    // the comparison's tuned figure, over the run's 60 documents.
    let d = run(&["diagnose", "--pipeline", out.to_str().unwrap(), "--json"]);
    let tuned = |metric: &str| {
        changed["comparison"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["stage"] == "retrieval" && r["metric"] == metric)
            .unwrap()["tuned"]
            .as_f64()
            .unwrap()
    };
    let recall = d["figures"]["recall_at_k"].as_f64().unwrap();
    assert!((recall - tuned("recall@20")).abs() < 1e-12, "{recall}");
    assert_eq!(d["figures"]["documents"], 60);
    assert_eq!(d["figures"]["faithfulness"], Value::Null, "no answers");

    // The query engine answers from the pipeline's index (retrieval only here).
    let answer = run(&[
        "ask",
        "--pipeline",
        out.to_str().unwrap(),
        "--no-generate",
        "--json",
        "What do worker bees do?",
    ]);
    assert_eq!(answer["passages"].as_array().unwrap().len(), 5);
    assert_eq!(answer["retrieved"].as_array().unwrap().len(), 20);
    assert!(
        out.join("index/index.json").is_file(),
        "the index is kept beside the pipeline"
    );
}

/// A generator that quotes the first sentence of "Document 2" of its prompt, and one sentence
/// that is in no document, then repeats itself after its answer (as small tuned models do).
struct Quoting;

impl ChatModel for Quoting {
    fn name(&self) -> &str {
        "quoting"
    }

    fn chat_each(&self, requests: &[ChatRequest], _: &OnAnswer<'_>) -> Vec<Result<Completion>> {
        requests
            .iter()
            .map(|r| {
                let prompt = &r.messages.last().unwrap().content;
                let doc = prompt.split("Document 2: ").nth(1).unwrap();
                let first = doc.split(". ").next().unwrap().to_string() + ".";
                Ok(Completion {
                    text: format!(
                        "##Reason: ##begin_quote##{first}##end_quote## and ##begin_quote##Bees \
                         are made of cheese and moonlight.##end_quote## ##Answer: yes\n##Answer: yes"
                    ),
                    finish_reason: FinishReason::Stop,
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    rag: None,
                })
            })
            .collect()
    }
}

fn apiary_chunks() -> polars::prelude::DataFrame {
    let docs = ragtune::chunk::load_documents(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/data/apiary/corpus.jsonl"),
        &Default::default(),
    )
    .unwrap();
    let splitter = ragtune::chunk::SentenceSplitter::new(&Default::default()).unwrap();
    ragtune::chunk::chunk_documents(&docs, &splitter).unwrap()
}

/// The bundled sample's chunks, the real MiniLM retriever, no reranker, the [`Quoting`] generator.
fn quoting_rag() -> Rag {
    Rag::from_parts(
        &apiary_chunks(),
        common::MINILM,
        None,
        Some(Arc::new(Quoting)),
        RagOptions::default(),
        None,
        false,
    )
    .unwrap()
}

#[test]
fn ask_marks_quotes_from_the_documents_read_and_traces_them() {
    if common::skip_without_minilm() {
        return;
    }
    let rag = quoting_rag();
    let a = rag.ask("How does varroa harm a colony?").unwrap();
    assert_eq!(a.passages.len(), 5);
    assert_eq!(a.quotes.len(), 2);
    let (real, invented) = (&a.quotes[0], &a.quotes[1]);
    assert!(real.verified, "{real:?}");
    assert!(a.passages[1].text.contains(real.text.trim_end_matches('.')));
    assert!(real.doc_ids.contains(&a.passages[1].doc_id));
    assert!(!invented.verified && invented.doc_ids.is_empty());
    assert_eq!(a.final_answer.as_deref(), Some("yes"));
    assert!(
        a.answer.as_deref().unwrap().ends_with("##Answer: yes"),
        "the answer stops after its final-answer line"
    );
    assert_eq!(a.cited_docs(), vec![a.passages[1].doc_id.as_str()]);
    // The passages are the retriever's best, in its order (no reranker).
    assert_eq!(a.passages[..], a.retrieved[..5]);
}

/// Unless told a weight, the query engine fuses at the one saved with its reranker.
#[test]
fn the_query_engine_fuses_at_the_rerankers_saved_weight() {
    if common::skip_without_minilm() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reranker = common::write_tiny_model(&tmp.path().join("ce"), 24);
    let ask = |fusion: Option<f64>| {
        Rag::from_parts(
            &apiary_chunks(),
            common::MINILM,
            Some(reranker.to_str().unwrap()),
            None,
            RagOptions {
                fusion,
                ..Default::default()
            },
            None,
            false,
        )
        .unwrap()
        .ask("How does varroa harm a colony?")
        .unwrap()
    };
    let alone = ask(None);
    let scores: Vec<f32> = alone
        .passages
        .iter()
        .map(|p| p.rerank_score.unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "no saved weight: the reranker's order"
    );
    assert_ne!(alone.passages[..], alone.retrieved[..5]);
    ragtune::models::fusion::FusionChoice::at(
        1.0,
        vec![(0.0, 0.2), (1.0, 0.6)],
        3,
        "a test".into(),
    )
    .save(&reranker)
    .unwrap();
    let saved = ask(None);
    assert_eq!(
        saved.passages[..],
        saved.retrieved[..5],
        "weight 1: the retriever's order"
    );
    assert_eq!(
        ask(Some(0.0)).passages,
        alone.passages,
        "a given weight wins"
    );
}

#[test]
fn diagnose_says_a_tiny_corpus_will_not_pay_and_shows_its_figures() {
    if common::skip_without_minilm() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let docs = sample_corpus(tmp.path(), 30);
    let questions = tmp.path().join("questions.jsonl");
    std::fs::write(
        &questions,
        "{\"question\": \"What does a queen bee do?\", \"doc_ids\": [\"ap001\"]}\n\
         {\"question\": \"How do workers divide their labour?\", \"doc_ids\": [\"ap002\"]}\n",
    )
    .unwrap();
    let diagnose = [
        "diagnose",
        "--docs",
        docs.to_str().unwrap(),
        "--eval",
        questions.to_str().unwrap(),
    ];
    let d = run(&[&diagnose[..], &["--json"]].concat());
    assert_eq!(d["recommendation"], "too_few_documents");
    assert_eq!(d["figures"]["documents"], 30);
    assert_eq!(d["figures"]["questions"], 2);
    assert!(d["checks"][0]["measured"]
        .as_str()
        .unwrap()
        .contains("30 documents"));

    // With the threshold lowered the walk goes on to retrieval, on measured recall.
    let d = run(&[&diagnose[..], &["--set", "min_documents=10", "--json"]].concat());
    assert_ne!(d["recommendation"], "too_few_documents");
    let recall = d["figures"]["recall_at_k"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&recall));
    assert!(d["checks"][1]["measured"]
        .as_str()
        .unwrap()
        .contains(&format!("{recall:.3}")));

    // Bad input names the file and line.
    std::fs::write(&questions, "{\"question\": \"x\"}\n").unwrap();
    let out = Command::new(BIN).args(diagnose).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("questions.jsonl:1") && err.contains("doc_ids"),
        "{err}"
    );
}

#[test]
fn serve_pipeline_returns_quotes_and_documents_in_the_rag_field() {
    if common::skip_without_minilm() {
        return;
    }
    let rag = quoting_rag();
    let engine = ragtune::pipeline::rag::RagChat {
        rag,
        name: "rag:test".into(),
    };
    let server = ragtune::llm::serve::Server::start(
        Arc::new(engine),
        &ragtune::llm::serve::ServeOptions {
            port: 0,
            ..Default::default()
        },
    )
    .unwrap();
    let client = ragtune::llm::OpenAiClient::new(
        "rag:test",
        &ragtune::llm::OpenAiOptions {
            base_url: server.base_url(),
            ..Default::default()
        },
    )
    .unwrap();
    let answer = client
        .chat(&ChatRequest::new(
            vec![ragtune::llm::Message::user(
                "How does varroa harm a colony?",
            )],
            Default::default(),
        ))
        .unwrap();
    assert!(answer.text.ends_with("##Answer: yes"), "{}", answer.text);
    let rag = answer.rag.expect("the response's rag field");
    assert_eq!(rag["final_answer"], "yes");
    let quotes = rag["quotes"].as_array().unwrap();
    assert_eq!(quotes.len(), 2);
    assert_eq!(quotes[0]["verified"], true);
    assert_eq!(quotes[1]["verified"], false);
    let documents = rag["documents"].as_array().unwrap();
    assert_eq!(documents.len(), 5);
    assert_eq!(quotes[0]["doc_ids"][0], documents[1]["doc_id"]);
}

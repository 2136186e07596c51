//! The synthetic-data doors end to end: `ragtune serve` (SmolLM2, failing 30 % of requests)
//! answering `ragtune synth queries` over HTTP; the synth job is killed mid-run and rerun, and
//! no request is answered twice and no chunk is lost. Also `ragtune chunk` and `generate`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ragtune() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ragtune"));
    c.env("HF_HUB_OFFLINE", "1");
    c
}

/// Runs a command that must succeed; returns its stderr.
fn succeed(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    stderr
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `ragtune serve` with SmolLM2 on a free port, failing `fail_rate` of requests and logging
/// each answered one (its cache key) to `log`; the child and its base URL.
fn serve_smollm2(fail_rate: &str, log: &Path) -> (std::process::Child, String) {
    let mut server = ragtune()
        .args([
            "serve",
            "--model",
            common::SMOLLM2,
            "--port",
            "0",
            "--fail-rate",
            fail_rate,
            "--request-log",
        ])
        .arg(log)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let base_url = banner.trim().rsplit(' ').next().unwrap().to_string();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{banner}");
    (server, base_url)
}

/// Starts `cmd` and kills it once `ready` holds (within 5 minutes, and before it finishes).
fn kill_once_ready(cmd: &mut Command, ready: impl Fn() -> bool) {
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < Duration::from_secs(300), "no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The cache keys of the requests `log` (a server's `--request-log`) answered, in order.
fn logged_keys(log: &Path) -> Vec<String> {
    lines(log)
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The keys of the answers in an `--llm-cache` folder.
fn cached_keys(cache: &Path) -> std::collections::HashSet<String> {
    lines(&cache.join("responses.jsonl"))
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn synth_over_a_failing_server_survives_a_kill_without_repeating_requests() {
    if common::skip_unless(
        common::smollm2_seeded() && common::minilm_seeded(),
        "SmolLM2 GGUF and all-MiniLM-L6-v2 (scripts/seed-models.sh)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chunks = d.join("chunks.jsonl");
    let stderr = succeed(
        ragtune()
            .args(["chunk", "--input"])
            .arg(root.join("recipes/data/apiary/corpus.jsonl"))
            .arg("--output")
            .arg(&chunks)
            .args(["--chunk-size", "96", "--chunk-overlap", "0"]),
    );
    assert!(stderr.contains("200 documents →"), "{stderr}");

    let log = d.join("requests.jsonl");
    let (mut server, base_url) = serve_smollm2("0.3", &log);

    let output = d.join("pairs.jsonl");
    let synth = || {
        let mut c = ragtune();
        c.args(["synth", "queries", "--corpus"])
            .arg(&chunks)
            .args([
                "--llm",
                "openai:smollm2",
                "--base-url",
                &base_url,
                "--per-chunk",
                "2",
                "--max-tokens",
                "48",
            ])
            .args([
                "--limit",
                "10",
                "--batch-size",
                "2",
                "--concurrency",
                "2",
                "--output",
            ])
            .arg(&output)
            .stderr(Stdio::piped());
        c
    };
    // First run: killed once a few chunks are recorded.
    let journal = d.join("pairs.jsonl.journal.jsonl");
    kill_once_ready(&mut synth(), || lines(&journal).len() >= 4);
    let recorded_before = lines(&journal).len() - 1;
    assert!(recorded_before < 10);
    // Answers the killed client had received are in its response cache.
    let cache_keys = cached_keys(&d.join("pairs.jsonl.llm-cache"));

    let second = synth().output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(
        stderr.contains("from 10 chunks") && stderr.contains(&format!("{recorded_before} resumed")),
        "{stderr}"
    );
    server.kill().unwrap();
    server.wait().unwrap();

    // Every chunk's request was answered although 30 % of all attempts failed, and no answer the
    // client had received was asked for again. Only requests in flight at the kill (at most the
    // 2 concurrent ones) can have been answered twice: the server answered, the client was gone.
    let keys = logged_keys(&log);
    let mut counts = std::collections::HashMap::new();
    for k in &keys {
        *counts.entry(k.as_str()).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 10, "{keys:?}");
    let twice: Vec<&&str> = counts
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(
        twice.iter().all(|k| !cache_keys.contains(**k)),
        "a received answer was asked for again"
    );
    assert!(
        twice.len() <= 2 && counts.values().all(|&n| n <= 2),
        "{counts:?}"
    );
    let orphaned = twice.len();
    let cached = cache_keys.len();
    // No pair lost: the output holds exactly the journal's pairs.
    let journal_pairs: usize = lines(&journal)[1..]
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["pairs"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(lines(&journal).len() - 1, 10);
    assert_eq!(lines(&output).len(), journal_pairs);
    assert!(journal_pairs >= 10, "{journal_pairs} pairs from 10 chunks");
    eprintln!(
        "reliability: killed after {recorded_before} of 10 chunks ({cached} answers received); {} requests answered \
         in all, {orphaned} of them (in flight at the kill) twice; {journal_pairs} pairs",
        keys.len()
    );
}

#[test]
fn generate_answers_from_the_command_line() {
    let stderr = succeed(
        ragtune()
            .args(["generate", "--llm"])
            .arg(format!("local:{}", common::tiny_llama_dir().display()))
            .args([
                "--raw",
                "--prompt",
                "The queen lays eggs",
                "--max-tokens",
                "4",
            ])
            .args(["--stats", "--f32-decode"]),
    );
    assert!(stderr.contains("generation: 4 tokens"), "{stderr}");
    let bad = ragtune()
        .args(["generate", "--llm", "mystery:x", "--prompt", "hi"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr)
        .contains("expected `local:<model>` or `openai:<model>`"));
}

/// `raft build --teacher openai:…` against `ragtune serve` (SmolLM2, failing 20 % of requests):
/// a run killed while the teacher answers resumes from its answer cache (beside `--output` by
/// default) without asking again for any answer it had received, and a third run asks for
/// nothing and writes the same rows.
#[test]
fn raft_build_with_a_served_teacher_survives_a_kill_without_repeating_requests() {
    if common::skip_unless(
        common::smollm2_seeded(),
        "the SmolLM2 GGUF (scripts/seed-models.sh)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let beir = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/data/apiary");
    // Five judged questions.
    let questions: Vec<String> = (1..=5).map(|i| format!("q{i:02}")).collect();
    let qrels = std::fs::read_to_string(beir.join("qrels/test.tsv")).unwrap();
    let only = d.join("only.tsv");
    let kept: Vec<&str> = qrels
        .lines()
        .filter(|l| {
            l.starts_with("query-id") || questions.iter().any(|q| l.starts_with(&format!("{q}\t")))
        })
        .collect();
    std::fs::write(&only, kept.join("\n") + "\n").unwrap();

    let log = d.join("requests.jsonl");
    let (mut server, base_url) = serve_smollm2("0.2", &log);
    let output = d.join("raft.jsonl");
    let examples = d.join("examples.jsonl");
    let build = || {
        let mut c = ragtune();
        c.args(["raft", "build", "--beir"])
            .arg(&beir)
            .args(["--split", "test", "--only-qrels"])
            .arg(&only)
            .args(["--distractors", "random", "--k", "2", "--seed", "3"])
            .args(["--teacher", "openai:smollm2", "--base-url", &base_url])
            .args([
                "--concurrency",
                "2",
                "--teacher-max-tokens",
                "40",
                "--retries",
                "1",
            ])
            .arg("--output")
            .arg(&output)
            .arg("--examples-output")
            .arg(&examples)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let cache = d.join("raft.jsonl.llm-cache");
    kill_once_ready(&mut build(), || cached_keys(&cache).len() >= 2);
    assert!(!output.exists(), "the killed run wrote its rows");
    let received = cached_keys(&cache);
    let asked_before = logged_keys(&log).len();

    let second = build().output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(stderr.contains("teacher answered"), "{stderr}");
    let asked = logged_keys(&log);
    let asked_again: Vec<&String> = asked[asked_before..]
        .iter()
        .filter(|k| received.contains(*k))
        .collect();
    assert!(
        asked_again.is_empty(),
        "answers received before the kill were asked for again: {asked_again:?}"
    );
    assert!(asked.len() > asked_before, "the rerun asked for nothing");
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&second.stdout).trim()).unwrap();
    let rows = lines(&output);
    assert_eq!(
        rows.len() as u64,
        summary["train"].as_u64().unwrap(),
        "{summary}"
    );
    assert!(
        summary["examples"].as_u64().unwrap() + summary["dropped"].as_u64().unwrap() >= 5,
        "{summary}"
    );
    // Every kept answer has a final answer, and quotes only its own context where the oracle is
    // in it (the `keep` policy lets the others quote the removed oracle). SmolLM2 at 40 tokens
    // seldom writes one, so this may check no row: the test is about resuming.
    for row in lines(&examples) {
        let ex: ragtune::raft::RaftExample = serde_json::from_str(&row).unwrap();
        let answer = ex.answer.as_deref().unwrap();
        let check = ragtune::raft::quotes::QuoteCheck::of(answer, &ex.context());
        assert!(check.has_answer, "{answer}");
        assert!(!ex.oracle_present || check.invented.is_empty(), "{answer}");
    }

    // A third run is answered from the cache alone and writes the same rows.
    let third = build().output().unwrap();
    assert!(
        third.status.success(),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
    assert_eq!(
        logged_keys(&log).len(),
        asked.len(),
        "the third run asked the server"
    );
    assert_eq!(lines(&output), rows);
    server.kill().unwrap();
    server.wait().unwrap();
    eprintln!(
        "raft teacher: killed with {} answers received; the rerun asked {} more; {} examples kept, {} dropped, {} regenerated",
        received.len(),
        asked.len() - asked_before,
        summary["examples"],
        summary["dropped"],
        summary["regenerated"]
    );
}

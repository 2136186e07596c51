//! The command line as a user drives it: `eval retrieval`, `encode`, `run`, and their errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn ragtune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ragtune"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run ragtune")
}

fn encode(model: &Path, input: &Path, output: &Path) -> Output {
    ragtune(&[
        "encode",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// Fails, showing the whole stderr, unless the command's stderr contains `needle`.
fn assert_stderr_says(out: &std::process::Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(needle),
        "stderr lacks {needle:?}:\n{stderr}"
    );
}

/// A tiny BEIR set whose query q1 is word for word the text of document d2.
fn tiny_beir(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    std::fs::write(
        dir.join("corpus.jsonl"),
        [
            r#"{"_id": "d1", "title": "", "text": "the queen and the brood"}"#,
            r#"{"_id": "d2", "title": "", "text": "how do bees make honey"}"#,
            r#"{"_id": "d3", "title": "wax", "text": "comb of wax"}"#,
            r#"{"_id": "d4", "title": "", "text": "mites in the hive"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("queries.jsonl"),
        "{\"_id\": \"q1\", \"text\": \"how do bees make honey\"}\n{\"_id\": \"q2\", \"text\": \"wax comb\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td3\t1\n",
    )
    .unwrap();
    dir.to_path_buf()
}

#[test]
fn eval_retrieval_matches_sentence_transformers_on_the_bundled_sample() {
    if common::skip_unless(
        common::minilm_seeded(),
        "the seeded all-MiniLM-L6-v2 (run scripts/seed-models.sh)",
    ) {
        return;
    }
    let out = ragtune(&[
        "eval",
        "retrieval",
        "--model",
        common::MINILM,
        "--beir",
        "recipes/data/apiary",
        "--split",
        "test",
        "--k",
        "1,3,5,10,100",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ours: Value =
        serde_json::from_str(text(&out.stdout).trim()).expect("stdout is one JSON object");
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apiary_minilm_st.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let reference = fixture["metrics"].as_object().unwrap();
    assert_eq!(
        ours.as_object().unwrap().len(),
        30,
        "6 metrics × 5 cut-offs"
    );
    for (name, want) in reference {
        // sentence-transformers divides AP@k by min(k, R), trec_eval (and ragtune) by R; they agree
        // once k ≥ R, and the sample has at most 4 relevant passages per query.
        if name == "map@1" || name == "map@3" {
            continue;
        }
        let got = ours[name]
            .as_f64()
            .unwrap_or_else(|| panic!("missing {name}"));
        let want = want.as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-4,
            "{name}: ragtune {got}, sentence-transformers {want}"
        );
    }
}

#[test]
fn eval_retrieval_ranks_an_identical_document_first() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(&tmp.path().join("model"), 16);
    let beir = tiny_beir(&tmp.path().join("beir"));
    let out = ragtune(&[
        "eval",
        "retrieval",
        "--model",
        model.to_str().unwrap(),
        "--beir",
        beir.to_str().unwrap(),
        "--split",
        "test",
        "--k",
        "1,4",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 12, "{keys:?}");
    // q1 is identical to d2, so even a random model retrieves it first; recall@4 covers the corpus.
    assert!(m["accuracy@1"].as_f64().unwrap() >= 0.5);
    assert_eq!(m["recall@4"].as_f64().unwrap(), 1.0);
    assert_eq!(m["precision@4"].as_f64().unwrap(), 0.25);

    let table = ragtune(&[
        "eval",
        "retrieval",
        "--model",
        model.to_str().unwrap(),
        "--beir",
        beir.to_str().unwrap(),
        "--split",
        "test",
    ]);
    assert!(table.status.success());
    let shown = text(&table.stdout);
    assert!(
        shown.contains("ndcg")
            && shown.contains("@100")
            && shown.contains("2 queries, 4 documents"),
        "{shown}"
    );

    // Two models side by side: the same model twice gives identical columns and a zero delta.
    let other = common::write_tiny_model(&tmp.path().join("model2"), 16);
    let out = ragtune(&[
        "eval",
        "retrieval",
        "--model",
        model.to_str().unwrap(),
        "--model",
        other.to_str().unwrap(),
        "--beir",
        beir.to_str().unwrap(),
        "--split",
        "test",
        "--k",
        "1,4",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let both: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(both.as_object().unwrap().len(), 2);
    assert_eq!(
        both[model.to_str().unwrap()],
        m,
        "the first model's metrics are unchanged"
    );
    let out = ragtune(&[
        "eval",
        "retrieval",
        "--model",
        model.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--beir",
        beir.to_str().unwrap(),
        "--split",
        "test",
    ]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("2 models side by side") && shown.contains("delta"),
        "{shown}"
    );
}

#[test]
fn encode_writes_the_library_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(&tmp.path().join("model"), 16);
    let input = tmp.path().join("texts.txt");
    std::fs::write(
        &input,
        "how do bees make honey\nwax\nthe queen and the brood of the hive\n",
    )
    .unwrap();
    let output = tmp.path().join("emb.npy");
    let out = encode(&model, &input, &output);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stderr);
    assert!(
        report.contains("encoded 3 texts")
            && report.contains("docs/s")
            && report.contains("tokens/s"),
        "{report}"
    );

    let written = ragtune::data::embeddings::read_npy(&output).unwrap();
    let encoder =
        ragtune::SentenceEncoder::load(model.to_str().unwrap(), &Default::default()).unwrap();
    let texts = [
        "how do bees make honey",
        "wax",
        "the queen and the brood of the hive",
    ];
    let direct = encoder
        .encode(
            &texts,
            &ragtune::EncodeOptions {
                batch_size: 2,
                progress: false,
            },
        )
        .unwrap();
    let a: Vec<Vec<f32>> = written.to_vec2().unwrap();
    let b: Vec<Vec<f32>> = direct.to_vec2().unwrap();
    for (x, y) in a.iter().zip(&b) {
        for (p, q) in x.iter().zip(y) {
            assert!((p - q).abs() < 1e-5);
        }
        let norm: f32 = x.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "the Normalize module applies");
    }

    let parquet = tmp.path().join("emb.parquet");
    let out = encode(&model, &input, &parquet);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let df = ragtune::data::read_table(&parquet).unwrap();
    assert_eq!(df.shape(), (3, 1));
}

#[test]
fn run_recipe_with_set_values() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(&tmp.path().join("model"), 16);
    let beir = tiny_beir(&tmp.path().join("beir"));
    let per_query = tmp.path().join("per_query.csv");
    let out = ragtune(&[
        "run",
        "recipes/eval_beir.rhai",
        "--set",
        &format!("model={}", model.display()),
        "--set",
        &format!("beir={}", beir.display()),
        "--set",
        "split=test",
        "--set",
        &format!("output={}", per_query.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("Dataset(beir: 4 documents, 2 queries, 2 judgements)"),
        "{shown}"
    );
    let df = ragtune::data::read_table(&per_query).unwrap();
    assert_eq!(df.height(), 2);
    assert!(df
        .get_column_names()
        .iter()
        .any(|c| c.as_str() == "ndcg@10"));
}

#[test]
fn script_errors_name_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("bad.rhai");
    std::fs::write(
        &script,
        "let a = 1;\nlet b = 2;\nlet data = load_beir(\"/nowhere\", \"test\");\n",
    )
    .unwrap();
    let out = ragtune(&["run", script.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.rhai:3:12:") && err.contains("/nowhere"),
        "{err}"
    );

    std::fs::write(&script, "let a = [1, 2;\n").unwrap();
    let err = text(&ragtune(&["run", script.to_str().unwrap()]).stderr);
    assert!(err.contains("bad.rhai:1:"), "{err}");

    let err = text(&ragtune(&["run", script.to_str().unwrap(), "--set", "no-equals"]).stderr);
    assert!(err.contains("KEY=VALUE"), "{err}");
}

#[test]
fn bad_inputs_are_reported_with_their_location() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(&tmp.path().join("model"), 16);
    let beir = tiny_beir(&tmp.path().join("beir"));

    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    let out = ragtune(&[
        "eval",
        "retrieval",
        "--model",
        model.to_str().unwrap(),
        "--beir",
        beir.to_str().unwrap(),
        "--split",
        "test",
    ]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("tokenizer.json"),
        "{err}"
    );

    std::fs::write(
        beir.join("corpus.jsonl"),
        "{\"_id\": \"d1\", \"text\": \"ok\"}\nnot json\n",
    )
    .unwrap();
    let out = ragtune(&[
        "eval",
        "retrieval",
        "--model",
        "x/y",
        "--beir",
        beir.to_str().unwrap(),
        "--split",
        "test",
    ]);
    let err = text(&out.stderr);
    assert!(err.contains("corpus.jsonl:2: malformed JSON"), "{err}");

    let beir = tiny_beir(&tmp.path().join("beir"));
    let out = ragtune(&[
        "eval",
        "retrieval",
        "--model",
        "x/y",
        "--beir",
        beir.to_str().unwrap(),
        "--split",
        "dev",
    ]);
    assert_stderr_says(&out, "dev.tsv");

    let out = ragtune(&[
        "eval",
        "retrieval",
        "--model",
        "m",
        "--beir",
        ".",
        "--k",
        "0,10",
    ]);
    assert_stderr_says(&out, "--k");

    let out = ragtune(&[
        "encode",
        "--model",
        "not/cached-anywhere",
        "--input",
        "Cargo.toml",
        "--output",
        "x.npy",
    ]);
    assert_stderr_says(&out, "unknown table format");
}

#[test]
fn missing_hub_model_offline_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let texts = tmp.path().join("t.txt");
    std::fs::write(&texts, "hello\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ragtune"))
        .args([
            "encode",
            "--model",
            "nobody/no-such-model",
            "--input",
            texts.to_str().unwrap(),
            "--output",
            "x.npy",
        ])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", tmp.path())
        .env_remove("HF_HUB_CACHE")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("nobody/no-such-model")
            && err.contains("HF_HUB_OFFLINE")
            && err.contains("seed-models"),
        "{err}"
    );
}

#[test]
fn mine_writes_triplets_and_refuses_impossible_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(&tmp.path().join("m"), 16);
    let beir = tiny_beir(&tmp.path().join("b"));
    let out = tmp.path().join("mined.jsonl");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "mine",
            "--model",
            model.to_str().unwrap(),
            "--data",
            beir.to_str().unwrap(),
            "--beir-split",
            "test",
            "--corpus",
            beir.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| ragtune(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let ok = run(args(&[
        "--num-negatives",
        "2",
        "--range-max",
        "3",
        "--chart",
        tmp.path().join("h.html").to_str().unwrap(),
    ]));
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let df = ragtune::data::read_table(&out).unwrap();
    assert_eq!(df.get_column_names(), ["anchor", "positive", "negative"]);
    assert_eq!(df.height(), 4, "2 queries × 2 negatives");
    assert!(text(&ok.stderr).contains("mined 4 rows for 2 queries"));
    assert!(std::fs::read_to_string(tmp.path().join("h.html"))
        .unwrap()
        .contains("plotly"));

    let bad = run(args(&[
        "--num-negatives",
        "5",
        "--range-min",
        "2",
        "--range-max",
        "4",
    ]));
    assert!(!bad.status.success());
    assert_stderr_says(&bad, "cannot mine 5 negatives");
    let bad = run(args(&["--sampling", "best"]));
    assert_stderr_says(&bad, "choose top or random");
}

#[test]
fn eval_retrieval_at_a_truncated_dimension() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(&tmp.path().join("model"), 16);
    let beir = tiny_beir(&tmp.path().join("beir"));
    let eval = |extra: &[&str]| {
        let mut a = vec![
            "eval",
            "retrieval",
            "--model",
            model.to_str().unwrap(),
            "--beir",
            beir.to_str().unwrap(),
            "--split",
            "test",
            "--k",
            "1,4",
            "--json",
        ];
        a.extend_from_slice(extra);
        ragtune(&a)
    };
    let json = |o: &Output| -> Value { serde_json::from_str(text(&o.stdout).trim()).unwrap() };
    let (full, same, cut) = (
        eval(&[]),
        eval(&["--truncate-dim", "8"]),
        eval(&["--truncate-dim", "3"]),
    );
    assert_eq!(
        json(&full),
        json(&same),
        "truncating to the full width changes nothing"
    );
    // q1 is word for word d2: its first 3 components are identical too, so it stays first.
    let m = json(&cut);
    assert!(m["mrr@4"].as_f64().unwrap() >= 0.5 && m["recall@4"].as_f64().unwrap() == 1.0);
    let bad = eval(&["--truncate-dim", "9"]);
    assert_stderr_says(
        &bad,
        "truncate_dim 9 must be between 1 and the embedding width 8",
    );
}

#[test]
fn reranker_commands_train_score_and_evaluate() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(&tmp.path().join("m"), 16);
    let beir = tiny_beir(&tmp.path().join("b"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let run = |a: &[String]| ragtune(&a.iter().map(String::as_str).collect::<Vec<_>>());
    // `mine` writes the training data in the format asked for.
    let mine_as = |format: &str, output: &Path| {
        let out = run(&[
            "mine",
            "--model",
            &s(&model),
            "--data",
            &s(&beir),
            "--beir-split",
            "test",
            "--corpus",
            &s(&beir),
            "--num-negatives",
            "2",
            "--output-format",
            format,
            "--output",
            &s(output),
        ]
        .map(String::from));
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    let pairs = tmp.path().join("pairs.jsonl");
    mine_as("labeled-pair", &pairs);

    let reranker = tmp.path().join("reranker");
    let train = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "train",
            "rerank",
            "--model",
            &s(&model),
            "--data",
            &s(&pairs),
            "--output",
            &s(&reranker),
            "--epochs",
            "2",
            "--batch-size",
            "2",
            "--lr",
            "0.001",
            "--dev-beir",
            &s(&beir),
            "--dev-split",
            "test",
            "--retriever",
            &s(&model),
            "--dev-top-k",
            "3",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|x| x.to_string()));
        run(&a)
    };
    let out = train(&["--loss-setting", "pos_weight=2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The data's record names split `test`, whose 2 queries are too few to hold out.
    assert!(tmp.path().join("pairs.jsonl.source.json").is_file());
    assert_stderr_says(
        &out,
        "too few to choose a fusion weight: training on every row",
    );
    assert_stderr_says(
        &out,
        "(labeled-pair: columns anchor, positive, label) with BinaryCrossEntropyLoss at lr 1e-3",
    );
    let outcome: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["loss"], "BinaryCrossEntropyLoss");
    assert_eq!(outcome["steps"], 6, "6 rows in batches of 2, 2 epochs");
    assert!(outcome["dev_after"]["ndcg@10"].is_number());
    let card = std::fs::read_to_string(reranker.join("README.md")).unwrap();
    assert!(
        card.contains("pipeline_tag: text-ranking") && card.contains("\"pos_weight\":2.0"),
        "{card}"
    );
    // The card lists what differs from the reranker stage's defaults, not the embedding stage's.
    assert!(
        card.contains("`lr`") && !card.contains("`batch_sampler`"),
        "{card}"
    );

    // Refusals name the setting at fault.
    let bad = train(&["--loss", "lambda", "--loss-setting", "pos_weight=2"]);
    assert!(!bad.status.success());
    assert_stderr_says(&bad, "pos_weight");
    let bad = train(&["--sampler", "shuffled"]);
    assert_stderr_says(&bad, "shuffled");

    // A labeled-list file from `mine` trains a listwise loss as it is: LambdaLoss at its own
    // learning rate when no loss is named.
    let lists = tmp.path().join("lists.jsonl");
    mine_as("labeled-list", &lists);
    let out = run(&[
        "train",
        "rerank",
        "--model",
        &s(&model),
        "--data",
        &s(&lists),
        "--output",
        &s(&tmp.path().join("listwise")),
        "--max-steps",
        "1",
        "--loss-setting",
        "mini_batch_size=2",
    ]
    .map(String::from));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_stderr_says(&out, "labeled-list");
    assert_stderr_says(&out, "with LambdaLoss at lr 1e-4");
    let outcome: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["loss"], "LambdaLoss");

    // Scores of pairs and of lists.
    let input = tmp.path().join("input.jsonl");
    std::fs::write(
        &input,
        "{\"query\": \"wax comb\", \"document\": \"comb of wax\"}\n{\"query\": \"honey\", \"document\": \"the queen\"}\n",
    )
    .unwrap();
    let scores = tmp.path().join("scores.jsonl");
    let out = run(&[
        "rerank",
        "--model",
        &s(&reranker),
        "--input",
        &s(&input),
        "--output",
        &s(&scores),
    ]
    .map(String::from));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let df = ragtune::data::read_table(&scores).unwrap();
    let col = df.column("score").unwrap().f64().unwrap().clone();
    assert!(
        col.into_no_null_iter().all(|x| (0.0..=1.0).contains(&x)),
        "sigmoid scores by default"
    );
    std::fs::write(
        &input,
        "{\"query\": \"wax comb\", \"documents\": [\"comb of wax\", \"the queen\", \"mites\"]}\n",
    )
    .unwrap();
    let out = run(&[
        "rerank",
        "--model",
        &s(&reranker),
        "--input",
        &s(&input),
        "--output",
        &s(&scores),
        "--activation",
        "identity",
    ]
    .map(String::from));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let df = ragtune::data::read_table(&scores).unwrap();
    assert_eq!(
        df.column("scores")
            .unwrap()
            .list()
            .unwrap()
            .get_as_series(0)
            .unwrap()
            .len(),
        3
    );

    // Retriever vs reranked, as a table and as JSON; and the same through eval retrieval --rerank.
    let eval_with = |reranker: &Path, extra: &[&str]| {
        let mut a: Vec<String> = [
            "eval",
            "rerank",
            "--retriever",
            &s(&model),
            "--reranker",
            &s(reranker),
            "--beir",
            &s(&beir),
            "--split",
            "test",
            "--top-k",
            "3",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|x| x.to_string()));
        run(&a)
    };
    let eval = |extra: &[&str]| eval_with(&reranker, extra);
    let out = eval(&["--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["retriever"]["ndcg@10"].is_number() && json["reranked"]["ndcg@10"].is_number());
    let chart = tmp.path().join("c.html");
    let rows = tmp.path().join("rows.jsonl");
    let out = eval(&["--chart", &s(&chart), "--output", &s(&rows)]);
    assert!(text(&out.stdout).contains("reranked") && chart.is_file());
    let rows = ragtune::data::read_table(&rows).unwrap();
    assert_eq!(rows.height(), 6, "2 queries × top 3");
    // The tiny retriever is random: relevant candidates are those its recall@3 counted.
    let relevant: i64 = rows
        .column("relevance")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .sum();
    assert_eq!(
        relevant as f64,
        json["retriever"]["recall@3"].as_f64().unwrap() * 2.0
    );
    let out = run(&[
        "eval",
        "retrieval",
        "--model",
        &s(&model),
        "--beir",
        &s(&beir),
        "--split",
        "test",
        "--rerank",
        &s(&reranker),
        "--rerank-top-k",
        "3",
        "--json",
    ]
    .map(String::from));
    let same: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(same, json);

    // A fusion weight chosen on held-out queries (here every query of the split: --fusion-every
    // 1), saved beside the model, and used by eval rerank unless told otherwise.
    let fusion_args = [
        "--fusion-beir",
        &s(&beir),
        "--fusion-split",
        "test",
        "--fusion-every",
        "1",
        "--fusion-top-k",
        "3",
    ];
    let refused = train(&fusion_args);
    assert!(!refused.status.success());
    assert_stderr_says(&refused, "leaves no training rows");
    let other = tmp.path().join("other.jsonl");
    std::fs::write(
        &other,
        [
            r#"{"anchor": "mites", "positive": "mites in the hive", "label": 1}"#,
            r#"{"anchor": "mites", "positive": "comb of wax", "label": 0}"#,
            r#"{"anchor": "the brood", "positive": "the queen and the brood", "label": 1}"#,
            r#"{"anchor": "how do bees make honey", "positive": "comb of wax", "label": 0}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let fused = tmp.path().join("fused");
    let mut args: Vec<String> = [
        "train",
        "rerank",
        "--model",
        &s(&model),
        "--data",
        &s(&other),
        "--output",
        &s(&fused),
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--retriever",
        &s(&model),
    ]
    .map(String::from)
    .to_vec();
    args.extend(fusion_args.map(String::from));
    let out = run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_stderr_says(&out, "2 of 2 queries held out to choose the fusion weight; training rows left out as they ask one: 1");
    let outcome: Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = outcome["fusion"]["retriever_weight"].as_f64().unwrap();
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(fused.join("fusion.json")).unwrap()).unwrap();
    assert_eq!(saved, outcome["fusion"]);
    let eval_fused = |extra: &[&str]| {
        let out = eval_with(&fused, &[&["--json"], extra].concat());
        assert!(out.status.success(), "{}", text(&out.stderr));
        out
    };
    let out = eval_fused(&[]);
    assert_stderr_says(&out, "fusing with the retriever at weight");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["fusion"].as_f64(), Some(w));
    assert_eq!(json["reranked"]["ndcg@10"], saved["fused_ndcg10"]);
    let alone: Value = serde_json::from_slice(&eval_fused(&["--fusion", "0"]).stdout).unwrap();
    assert_eq!(alone["reranked"]["ndcg@10"], saved["reranker_ndcg10"]);
}

#[test]
fn synthetic_pairs_train_on_their_text_columns_only() {
    // `synth queries` writes query, positive, chunk_id, generator: ids and the generator's name
    // must never become hard negatives.
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(&tmp.path().join("m"), 16);
    let data = tmp.path().join("synth.jsonl");
    let rows: Vec<String> = (0..6)
        .map(|i| {
            format!(
                "{{\"query\": \"what is {w} {i}\", \"positive\": \"{w} in the hive {i}\", \"chunk_id\": \"doc{i}#0-ab\", \"generator\": \"ict\"}}",
                w = common::WORDS[i]
            )
        })
        .collect();
    std::fs::write(&data, rows.join("\n")).unwrap();
    let out = ragtune(&[
        "train",
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--output",
        tmp.path().join("out").to_str().unwrap(),
        "--max-steps",
        "1",
        "--batch-size",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_stderr_says(&out, "metadata column(s) chunk_id, generator not read");
    assert_stderr_says(&out, "(columns query, positive)");
}

#[test]
fn eval_grounded_takes_the_base_side_from_an_earlier_run_with_the_same_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let example = |id: &str, label: &str| {
        let doc = format!("Document 1: The claim {id} is {label}ED by this trial.");
        serde_json::json!({
            "id": id, "source": "test", "question": format!("claim {id}"),
            "doc_ids": ["d1"], "docs": [doc], "is_oracle": [true], "oracle_present": true,
            "prompt": format!("{doc}\n\nQuestion: claim {id}"), "answer": null,
            "label": label, "gold_answer": null, "evidence": [], "split": "dev", "random_fill": 0,
        })
        .to_string()
    };
    let examples = dir.join("examples.jsonl");
    let rows = [("a", "SUPPORT"), ("b", "SUPPORT"), ("c", "CONTRADICT")];
    let lines: Vec<String> = rows.iter().map(|(i, l)| example(i, l)).collect();
    std::fs::write(&examples, lines.join("\n") + "\n").unwrap();
    let model = common::tiny_llama_dir().display().to_string();
    let grounded = |answers: &Path, extra: &[&str]| {
        let mut args = vec![
            "eval",
            "grounded",
            "--examples",
            examples.to_str().unwrap(),
            "--model",
            &model,
            "--tuned",
            &model,
            "--max-tokens",
            "4",
            "--json",
            "--output",
            answers.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ragtune(&args)
    };
    let first = dir.join("first.jsonl");
    let out = grounded(&first, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Hand-written base answers: right on a, wrong on b, no verdict on c; forced choices all
    // SUPPORT. Reused, they must be what the report scores.
    let written: Vec<Value> = std::fs::read_to_string(&first)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(written.len(), 3);
    assert_eq!(written[0]["max_tokens"], 4);
    let hand = ["##Answer: SUPPORT", "##Answer: CONTRADICT", "no idea"];
    let edited: Vec<String> = written
        .iter()
        .zip(hand)
        .map(|(row, answer)| {
            let mut row = row.clone();
            row["base"] = answer.into();
            row["base_forced_choice"] = "SUPPORT".into();
            row.to_string()
        })
        .collect();
    let base_answers = dir.join("base.jsonl");
    std::fs::write(&base_answers, edited.join("\n")).unwrap();
    let second = dir.join("second.jsonl");
    let out = grounded(&second, &["--base-answers", base_answers.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_stderr_says(&out, "answers from");
    let summary = |out: &Output| -> Value {
        serde_json::from_str(text(&out.stdout).lines().last().unwrap()).unwrap()
    };
    let s = summary(&out);
    assert!((s["base"]["verdict_accuracy"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert!((s["base"]["format_adherence"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    assert!((s["base"]["forced_choice_accuracy"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    let again: Vec<Value> = std::fs::read_to_string(&second)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for ((row, before), answer) in again.iter().zip(&written).zip(hand) {
        assert_eq!(row["base"], answer);
        assert_eq!(
            row["tuned"], before["tuned"],
            "the tuned side still answers"
        );
    }
    // Other settings, or an example the file lacks, are refused with the file named.
    let out = grounded(
        &dir.join("x.jsonl"),
        &[
            "--base-answers",
            base_answers.to_str().unwrap(),
            "--constrain-quotes",
        ],
    );
    assert!(!out.status.success());
    assert_stderr_says(&out, "base.jsonl:1: answered with constrain_quotes false");
    let moved = lines[0].replace("Question: claim a", "Question: claim a, reworded");
    std::fs::write(
        &examples,
        [moved, lines[1].clone(), lines[2].clone()].join("\n"),
    )
    .unwrap();
    let out = grounded(
        &dir.join("x.jsonl"),
        &["--base-answers", base_answers.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert_stderr_says(&out, "base.jsonl: example a was answered on another prompt");
    std::fs::write(&examples, lines.join("\n")).unwrap();
    std::fs::write(&base_answers, edited[..2].join("\n")).unwrap();
    let out = grounded(
        &dir.join("x.jsonl"),
        &["--base-answers", base_answers.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert_stderr_says(&out, "base.jsonl: no answer for example c");
}

#[test]
fn train_rerank_fuses_on_the_queries_its_data_was_mined_from() {
    use ragtune::models::fusion::held_out;
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(&tmp.path().join("m"), 16);
    // 120 queries, each with one document of its own: 1 in 10 of them is held out by id.
    let beir = tmp.path().join("b");
    std::fs::create_dir_all(beir.join("qrels")).unwrap();
    let words = [
        "queen", "brood", "honey", "wax", "comb", "mites", "hive", "bees",
    ];
    let (mut corpus, mut queries, mut qrels) = (
        vec![],
        vec![],
        vec!["query-id\tcorpus-id\tscore".to_string()],
    );
    for i in 0..120 {
        let (a, b) = (words[i % 8], words[(i / 8) % 8]);
        corpus.push(format!(
            r#"{{"_id": "d{i}", "text": "the {a} and the {b} of hive {i}"}}"#
        ));
        queries.push(format!(r#"{{"_id": "q{i}", "text": "{a} {b} {i}"}}"#));
        qrels.push(format!("q{i}\td{i}\t1"));
    }
    std::fs::write(beir.join("corpus.jsonl"), corpus.join("\n")).unwrap();
    std::fs::write(beir.join("queries.jsonl"), queries.join("\n")).unwrap();
    std::fs::write(beir.join("qrels/train.tsv"), qrels.join("\n")).unwrap();
    let held = (0..120).filter(|i| held_out(&format!("q{i}"), 10)).count();
    assert!(held >= 10, "{held} held out");

    let s = |p: &Path| p.to_str().unwrap().to_string();
    let tuples = tmp.path().join("tuples.jsonl");
    let out = ragtune(&[
        "mine",
        "--model",
        &s(&model),
        "--data",
        &s(&beir),
        "--beir-split",
        "train",
        "--num-negatives",
        "2",
        "--output-format",
        "n-tuple",
        "--output",
        &s(&tuples),
        "--cache-dir",
        &s(&tmp.path().join("cache")),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("tuples.jsonl.source.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["beir_split"], "train");
    assert_eq!(record["rows"], 120);
    let cache = std::fs::canonicalize(tmp.path().join("cache")).unwrap();
    assert_eq!(record["options"]["cache_dir"], s(&cache));
    let cached = || {
        let mut names: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let mined = cached();
    assert_eq!(
        mined.len(),
        2,
        "the queries' and the corpus's embeddings: {mined:?}"
    );
    // Emptied here, so that training shows it keeps the same files (the same keys: a second run
    // reads what the first kept).
    for name in &mined {
        std::fs::remove_file(cache.join(name)).unwrap();
    }

    // Only a model, the data and an output folder: the weight is chosen on the held-out queries,
    // retrieved with the model the data was mined with.
    let train = |output: &Path, extra: &[&str]| {
        let (model, tuples, output) = (s(&model), s(&tuples), s(output));
        let mut args = vec![
            "train",
            "rerank",
            "--model",
            &model,
            "--data",
            &tuples,
            "--output",
            &output,
            "--max-steps",
            "1",
            "--batch-size",
            "4",
            "--fusion-top-k",
            "5",
        ];
        args.extend_from_slice(extra);
        let out = ragtune(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        out
    };
    let fused = tmp.path().join("fused");
    let out = train(&fused, &[]);
    assert_stderr_says(&out, "was mined from split `train`");
    assert_stderr_says(
        &out,
        &format!("{held} of 120 queries held out to choose the fusion weight; training rows left out as they ask one: {held}"),
    );
    let outcome: Value = serde_json::from_slice(&out.stdout).unwrap();
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(fused.join("fusion.json")).unwrap()).unwrap();
    assert_eq!(saved, outcome["fusion"]);
    assert!(saved["retriever_weight"].is_number());
    // The held-out retrieval kept its embeddings in the cache `mine` used, under mine's keys.
    assert_eq!(cached(), mined);

    // --no-fusion trains on every row and chooses nothing.
    let plain = tmp.path().join("plain");
    let out = train(&plain, &["--no-fusion"]);
    let outcome: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["fusion"], Value::Null);
    assert!(!plain.join("fusion.json").exists());
    assert_stderr_says(&out, "on 120 rows");
}

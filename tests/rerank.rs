//! Cross-encoders and reranker training through the public API and the CLI: scores equal
//! sentence-transformers' on the real MiniLM (pair tokens and logits from Python), a saved model
//! reloads with the same scores, every weight gets its finite-difference gradient, the shared loop
//! trains with every loss and resumes bit-identically after SIGKILL, gradient caching gives the
//! direct gradients, and reranking evaluation leaves missed documents missed.

mod common;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use polars::prelude::*;
use ragtune::eval::{evaluate_reranker, Candidates, RerankEvalOptions};
use ragtune::models::bert::Mode;
use ragtune::models::dropout::DropoutRates;
use ragtune::models::{
    CrossEncoder, CrossEncoderOptions, LoadOptions, PredictOptions, ScoreActivation,
};
use ragtune::train::optim::Params;
use ragtune::train::rerank::{hold_out_for_fusion, RerankLossConfig, RerankSet, RerankTrainer};
use ragtune::train::TrainConfig;

fn load(model: &Path, dtype: DType) -> CrossEncoder {
    CrossEncoder::load(
        model.to_str().unwrap(),
        &LoadOptions {
            dtype,
            device: Device::Cpu,
        },
        &CrossEncoderOptions::default(),
    )
    .unwrap()
}

fn raw(batch_size: usize) -> PredictOptions {
    PredictOptions {
        batch_size,
        activation: Some(ScoreActivation::Identity),
        progress: false,
    }
}

fn tiny_pairs() -> Vec<(String, String)> {
    vec![
        (
            "what do bees make".into(),
            "bees make honey and wax in the hive".into(),
        ),
        ("why do mites swarm".into(), "the queen of the brood".into()),
        ("honey".into(), "a comb of wax".into()),
        (
            "how do the bees in my hive make honey".into(),
            "the swarm and the queen and the brood and the mites of the hive".into(),
        ),
    ]
}

#[test]
fn minilm_cross_encoder_matches_sentence_transformers() {
    if common::skip_unless(common::minilm_seeded(), "all-MiniLM-L6-v2 in the HF cache") {
        return;
    }
    // Made by scripts/check-rerank-parity.py: sentence-transformers 6.2 `CrossEncoder` on the
    // folder ragtune writes for all-MiniLM-L6-v2 with a fresh head (seed 42), max_length 512.
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cross-encoder-parity.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let model = CrossEncoder::load(
        common::MINILM,
        &LoadOptions::default(),
        &CrossEncoderOptions::default(),
    )
    .unwrap();
    assert_eq!(model.max_length, 512);
    assert_eq!(model.activation, ScoreActivation::Sigmoid);
    let pairs: Vec<(String, String)> = fixture["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
        .collect();
    let encodings = model.tokenize_pairs(&pairs).unwrap();
    for (i, e) in encodings.iter().enumerate() {
        let ids: Vec<u32> = serde_json::from_value(fixture["input_ids"][i].clone()).unwrap();
        let types: Vec<u32> = serde_json::from_value(fixture["token_type_ids"][i].clone()).unwrap();
        assert_eq!(e.get_ids(), ids.as_slice(), "pair {i}: token ids");
        assert_eq!(e.get_type_ids(), types.as_slice(), "pair {i}: segment ids");
    }
    assert!(
        encodings.iter().any(|e| e.get_ids().len() == 512),
        "a pair is truncated"
    );
    let expected: Vec<f32> = serde_json::from_value(fixture["logits"].clone()).unwrap();
    let logits = model.score(&pairs, &raw(3)).unwrap();
    let sigmoid = model
        .score(
            &pairs,
            &PredictOptions {
                progress: false,
                ..Default::default()
            },
        )
        .unwrap();
    let expected_sigmoid: Vec<f32> = serde_json::from_value(fixture["sigmoid"].clone()).unwrap();
    for i in 0..pairs.len() {
        assert!(
            (logits[i] - expected[i]).abs() <= 1e-4,
            "pair {i}: {} vs {}",
            logits[i],
            expected[i]
        );
        assert!((sigmoid[i] - expected_sigmoid[i]).abs() <= 1e-4);
    }
    // The padded (training) forward computes the same function as the packed inference path.
    let refs: Vec<&tokenizers::Encoding> = encodings.iter().collect();
    let padded: Vec<f32> = model
        .logits(&refs, Mode::Infer)
        .unwrap()
        .squeeze(1)
        .unwrap()
        .to_vec1()
        .unwrap();
    for i in 0..pairs.len() {
        assert!(
            (padded[i] - logits[i]).abs() <= 1e-5,
            "pair {i}: padded {} vs packed {}",
            padded[i],
            logits[i]
        );
    }
}

#[test]
fn a_saved_cross_encoder_reloads_with_the_same_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let base = common::write_tiny_model(&tmp.path().join("base"), 24);
    let mut model = load(&base, DType::F32);
    assert_eq!(model.num_labels, 1);
    let pairs = tiny_pairs();
    let before = model.score(&pairs, &raw(2)).unwrap();
    // A fresh head is seeded: loading again gives the same head.
    assert_eq!(
        load(&base, DType::F32).score(&pairs, &raw(2)).unwrap(),
        before
    );
    model.activation = ScoreActivation::Tanh;
    model.save(&tmp.path().join("saved")).unwrap();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("saved/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["id2label"]["0"], "LABEL_0");
    let tensors =
        candle_core::safetensors::load(tmp.path().join("saved/model.safetensors"), &Device::Cpu)
            .unwrap();
    assert!(
        tensors.contains_key("classifier.weight")
            && tensors.contains_key("bert.pooler.dense.weight")
    );
    assert!(tensors
        .keys()
        .all(|k| k.starts_with("bert.") || k.starts_with("classifier.")));

    let reloaded = load(&tmp.path().join("saved"), DType::F32);
    assert_eq!(reloaded.activation, ScoreActivation::Tanh);
    assert_eq!(reloaded.score(&pairs, &raw(2)).unwrap(), before);
    let ranked = reloaded
        .rank(
            "what do bees make",
            &["a comb of wax", "bees make honey", "the queen"],
            Some(2),
            &raw(8),
        )
        .unwrap();
    assert_eq!(ranked.len(), 2);
    assert!(ranked[0].1 >= ranked[1].1);
}

#[test]
fn unsupported_architectures_and_multi_label_training_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::write_tiny_model(&tmp.path().join("m"), 24);
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["model_type"] = "xlm-roberta".into();
    std::fs::write(&path, config.to_string()).unwrap();
    let err = CrossEncoder::load(
        dir.to_str().unwrap(),
        &LoadOptions::default(),
        &CrossEncoderOptions::default(),
    )
    .err()
    .unwrap();
    assert!(
        format!("{err:#}").contains("model_type `xlm-roberta` is not supported"),
        "{err:#}"
    );

    let dir = common::write_tiny_model(&tmp.path().join("three"), 24);
    let model = CrossEncoder::load(
        dir.to_str().unwrap(),
        &LoadOptions::default(),
        &CrossEncoderOptions {
            num_labels: 3,
            ..Default::default()
        },
    )
    .unwrap();
    // Three labels load and predict (identity activation) ...
    let scores = model
        .predict(
            &tiny_pairs(),
            &PredictOptions {
                progress: false,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(scores.iter().all(|r| r.len() == 3));
    assert_eq!(model.activation, ScoreActivation::Identity);
    // ... but training them says it is not supported yet.
    let data = labeled_pairs(4);
    let err = RerankTrainer {
        model: &model,
        data: &data,
        loss: RerankLossConfig::default(),
        config: quick(1),
        dev: None,
        dev_options: Default::default(),
        fusion: None,
    }
    .run(&tmp.path().join("out"), false)
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("more than one label is not supported"),
        "{err}"
    );
}

#[test]
fn every_cross_encoder_weight_gets_the_finite_difference_gradient() {
    cross_encoder_gradients_match_finite_differences(Mode::Train(None));
}

/// Dropout at a high rate at every site (embeddings, attention probabilities, both output
/// projections, the classifier's input): the masks are a function of the seed, so the loss is a
/// fixed function of the weights and finite differences check the masked backward pass.
fn heavy_dropout(seed: u64) -> Mode {
    Mode::Train(DropoutRates::uniform(0.3).draw(seed, 0))
}

#[test]
fn every_cross_encoder_weight_gets_the_finite_difference_gradient_under_dropout() {
    cross_encoder_gradients_match_finite_differences(heavy_dropout(11));
}

fn cross_encoder_gradients_match_finite_differences(mode: Mode) {
    let tmp = tempfile::tempdir().unwrap();
    let model = load(
        &common::write_tiny_model(&tmp.path().join("m"), 24),
        DType::F64,
    );
    let pairs = tiny_pairs();
    let encodings = model.tokenize_pairs(&pairs).unwrap();
    let refs: Vec<&tokenizers::Encoding> = encodings.iter().collect();
    let probe = Tensor::new(&[0.7f64, -1.3, 0.4, 1.1], &Device::Cpu).unwrap();
    let loss = || {
        (model.logits(&refs, mode).unwrap().squeeze(1).unwrap() * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let grads = loss().backward().unwrap();
    let params = Params::from_varmap(&model.varmap, |_| false);
    assert_eq!(
        params.len(),
        5 + 16 * 2 + 4,
        "encoder, pooler and classifier"
    );
    let mut checked = 0;
    for (name, var) in params.names.iter().zip(&params.vars) {
        let g: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        if name.ends_with("attention.self.key.bias") {
            assert!(
                g.iter().all(|x| x.abs() < 1e-9),
                "softmax is shift-invariant"
            );
            continue;
        }
        assert!(
            g.iter().any(|x| x.abs() > 1e-12),
            "zero gradient for {name}"
        );
        let i = (0..g.len())
            .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
            .unwrap();
        let original = var.as_tensor().copy().unwrap();
        let mut flat: Vec<f64> = original.flatten_all().unwrap().to_vec1().unwrap();
        let at = |flat: &Vec<f64>| {
            var.set(&Tensor::from_vec(flat.clone(), original.shape(), &Device::Cpu).unwrap())
                .unwrap();
            loss().to_scalar::<f64>().unwrap()
        };
        let eps = 1e-6;
        flat[i] += eps;
        let up = at(&flat);
        flat[i] -= 2.0 * eps;
        let down = at(&flat);
        var.set(&original).unwrap();
        let fd = (up - down) / (2.0 * eps);
        assert!(
            (fd - g[i]).abs() <= 1e-6 + 1e-4 * fd.abs().max(g[i].abs()),
            "{name}[{i}]: autograd {:e} vs finite difference {fd:e}",
            g[i]
        );
        checked += 1;
    }
    assert!(checked >= 36);
}

fn quick(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 4,
        lr: 1e-3,
        save_steps: 10_000,
        progress: false,
        // The tiny model's own rates (0.1), not the stage's 0: the loop, resume and loss tests
        // run with dropout on.
        dropout: None,
        ..TrainConfig::rerank()
    }
}

/// `n` (query, document, label) rows: each query has a matching and an unrelated document.
fn labeled_pairs(n: usize) -> RerankSet {
    let words = common::WORDS;
    let (mut q, mut d, mut l) = (vec![], vec![], vec![]);
    for i in 0..n {
        let topic = words[i % words.len()];
        q.push(format!(
            "what is {topic} {}",
            "abcdefgh".chars().nth(i % 8).unwrap()
        ));
        d.push(format!("{topic} {topic} is in the hive"));
        l.push(1i64);
        q.push(q[q.len() - 1].clone());
        d.push(format!("{} of the swarm", words[(i + 5) % words.len()]));
        l.push(0);
    }
    RerankSet::from_frame(
        &df!("query" => q, "document" => d, "label" => l).unwrap(),
        "pairs",
    )
    .unwrap()
}

fn tuples(n: usize) -> RerankSet {
    let words = common::WORDS;
    let q: Vec<String> = (0..n)
        .map(|i| format!("what is {} {i}", words[i % words.len()]))
        .collect();
    let p: Vec<String> = (0..n)
        .map(|i| format!("{} is in the hive", words[i % words.len()]))
        .collect();
    let n1: Vec<String> = (0..n)
        .map(|i| format!("{} of the swarm", words[(i + 3) % words.len()]))
        .collect();
    let n2: Vec<String> = (0..n)
        .map(|i| format!("my {} comb", words[(i + 7) % words.len()]))
        .collect();
    RerankSet::from_frame(
        &df!("query" => q, "positive" => p, "negative_1" => n1, "negative_2" => n2).unwrap(),
        "tuples",
    )
    .unwrap()
}

fn flat_weights(model: &CrossEncoder) -> Vec<f64> {
    let params = Params::from_varmap(&model.varmap, |_| false);
    params
        .vars
        .iter()
        .flat_map(|v| {
            v.flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        })
        .collect()
}

#[test]
fn every_loss_trains_through_the_shared_loop() {
    let tmp = tempfile::tempdir().unwrap();
    let base = common::write_tiny_model(&tmp.path().join("base"), 24);
    let with_teacher = {
        let t = tuples(8);
        let mut frame = df!(
            "query" => &t.queries,
            "positive" => t.documents.iter().map(|d| d[0].clone()).collect::<Vec<_>>(),
            "negative_1" => t.documents.iter().map(|d| d[1].clone()).collect::<Vec<_>>(),
            "negative_2" => t.documents.iter().map(|d| d[2].clone()).collect::<Vec<_>>(),
        )
        .unwrap();
        let scores: Vec<Series> = (0..8)
            .map(|i| Series::new("".into(), [3.0f32, 1.0 + i as f32 / 8.0, 0.5]))
            .collect();
        frame
            .with_column(Column::new("scores".into(), scores))
            .unwrap();
        RerankSet::from_frame(&frame, "teacher").unwrap()
    };
    let cases: Vec<(serde_json::Value, RerankSet)> = vec![
        (
            serde_json::json!({"name": "bce", "pos_weight": 2.0}),
            labeled_pairs(4),
        ),
        (
            serde_json::json!({"name": "mnrl", "num_negatives": 2}),
            tuples(8),
        ),
        (serde_json::json!({"name": "list_net"}), tuples(8)),
        (
            serde_json::json!({"name": "lambda", "mini_batch_size": 5}),
            tuples(8),
        ),
        (serde_json::json!({"name": "rank_net"}), tuples(8)),
        (serde_json::json!({"name": "margin_mse"}), with_teacher),
    ];
    for (i, (loss, data)) in cases.into_iter().enumerate() {
        let model = load(&base, DType::F32);
        let before = flat_weights(&model);
        let name = loss["name"].as_str().unwrap().to_string();
        let out = tmp.path().join(format!("run{i}"));
        let outcome = RerankTrainer {
            model: &model,
            data: &data,
            loss: RerankLossConfig::from_json(loss).unwrap(),
            config: quick(2),
            dev: None,
            dev_options: Default::default(),
            fusion: None,
        }
        .run(&out, false)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(outcome.final_loss.is_finite(), "{name}");
        assert_eq!(outcome.steps, 4, "{name}: 8 rows in batches of 4, 2 epochs");
        let moved = before
            .iter()
            .zip(flat_weights(&model))
            .any(|(a, b)| (a - b).abs() > 1e-6);
        assert!(moved, "{name}: training changed nothing");
        for f in [
            "model.safetensors",
            "config.json",
            "modules.json",
            "README.md",
            "train_log.jsonl",
            "training.html",
        ] {
            assert!(out.join(f).is_file(), "{name}: {f} missing");
        }
    }
    // A loss given data of the wrong shape says what it wants.
    let model = load(&base, DType::F32);
    let err = RerankTrainer {
        model: &model,
        data: &labeled_pairs(4),
        loss: RerankLossConfig::named("list_net").unwrap(),
        config: quick(1),
        dev: None,
        dev_options: Default::default(),
        fusion: None,
    }
    .run(&tmp.path().join("bad"), false)
    .unwrap_err();
    assert!(err.to_string().contains("ListNetLoss wants"), "{err}");
    let err = RerankLossConfig::from_json(serde_json::json!({"name": "mnrl", "pos_weight": 2}))
        .unwrap_err();
    assert!(err.to_string().contains("pos_weight"), "{err}");
}

#[test]
fn gradient_caching_gives_the_direct_loss_and_gradients() {
    let tmp = tempfile::tempdir().unwrap();
    let model = load(
        &common::write_tiny_model(&tmp.path().join("m"), 24),
        DType::F64,
    );
    let data = tuples(5);
    let params = Params::from_varmap(&model.varmap, |_| false);
    let run = |loss: serde_json::Value| {
        let trainer = RerankTrainer {
            model: &model,
            data: &data,
            loss: RerankLossConfig::from_json(loss).unwrap(),
            config: quick(1),
            dev: None,
            dev_options: Default::default(),
            fusion: None,
        };
        trainer
            .task()
            .unwrap()
            .loss_and_grads(&params, &[0, 1, 2, 3, 4], 0)
            .unwrap()
    };
    let (direct_loss, direct) = run(serde_json::json!({"name": "lambda"}));
    // 15 pairs in mini-batches of 4: uneven on purpose.
    let (cached_loss, cached) = run(serde_json::json!({"name": "lambda", "mini_batch_size": 4}));
    assert!(
        (direct_loss - cached_loss).abs() < 1e-10,
        "{direct_loss} vs {cached_loss}"
    );
    for (name, (a, b)) in params.names.iter().zip(direct.0.iter().zip(&cached.0)) {
        let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
        assert!(
            common::max_abs_diff(a, b) < 1e-9,
            "{name}: gradients differ"
        );
    }
}

#[test]
fn sigkill_then_resume_reaches_the_uninterrupted_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Start from a saved cross-encoder, so the base weights carry the trained names.
    let base = common::write_tiny_model(&dir.join("bi"), 24);
    load(&base, DType::F32).save(&dir.join("model")).unwrap();
    let data = labeled_pairs(20);
    let frame = df!(
        "query" => &data.queries,
        "document" => data.documents.iter().map(|d| d[0].clone()).collect::<Vec<_>>(),
        "label" => data.labels.iter().map(|l| l[0]).collect::<Vec<_>>(),
    )
    .unwrap();
    ragtune::data::write_table(&frame, &dir.join("pairs.jsonl")).unwrap();
    let args = |output: &Path| -> Vec<String> {
        let s = |p: &Path| p.to_str().unwrap().to_string();
        [
            "train",
            "rerank",
            "--model",
            &s(&dir.join("model")),
            "--data",
            &s(&dir.join("pairs.jsonl")),
            "--loss",
            "bce",
            "--loss-setting",
            "pos_weight=2",
            "--epochs",
            "40",
            "--batch-size",
            "8",
            "--lr",
            "0.001",
            "--save-steps",
            "3",
            "--output",
            &s(output),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    common::kill_resume_matches_whole_run(dir, &args, &dir.join("model/model.safetensors"), 9);
}

/// A tiny random bi-encoder and a tiny random cross-encoder (fresh head), written under `dir`.
fn retriever_and_reranker(dir: &Path) -> (ragtune::SentenceEncoder, CrossEncoder) {
    let retriever = ragtune::SentenceEncoder::load(
        common::write_tiny_model(&dir.join("bi"), 24)
            .to_str()
            .unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let reranker = load(&common::write_tiny_model(&dir.join("ce"), 24), DType::F32);
    (retriever, reranker)
}

fn tiny_dataset() -> ragtune::data::RetrievalDataset {
    tiny_dataset_with_ids(["q1", "q2"])
}

/// Twelve documents, and two queries with these ids: "what is wax" (relevant: d3) and "the
/// queen" (d9).
fn tiny_dataset_with_ids(ids: [&str; 2]) -> ragtune::data::RetrievalDataset {
    let docs: Vec<ragtune::data::retrieval::Document> = (0..12)
        .map(|i| ragtune::data::retrieval::Document {
            id: format!("d{i}"),
            title: String::new(),
            body: format!("{} {} hive", common::WORDS[i], common::WORDS[i + 1]),
        })
        .collect();
    let queries = vec![
        (ids[0].to_string(), "what is wax".to_string()),
        (ids[1].to_string(), "the queen".into()),
    ];
    let qrels = vec![
        (
            ids[0].to_string(),
            "d3".to_string(),
            1i64,
            "test".to_string(),
        ),
        (ids[1].to_string(), "d9".into(), 1, "test".into()),
    ];
    ragtune::data::RetrievalDataset::from_rows("tiny", docs, queries, qrels).unwrap()
}

#[test]
fn reranking_keeps_missed_documents_missed_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let (retriever, reranker) = retriever_and_reranker(tmp.path());
    let dataset = tiny_dataset();
    let options = RerankEvalOptions {
        top_k: 3,
        ks: vec![1, 3],
        progress: false,
        ..Default::default()
    };
    let candidates = Candidates::retrieve(&retriever, &dataset, &options).unwrap();
    assert!(candidates.docs.iter().all(|d| d.len() == 3));
    // Through the embedding cache: the same candidates, and the corpus is kept for next time.
    let cached = RerankEvalOptions {
        cache_dir: Some(tmp.path().join("cache")),
        ..options.clone()
    };
    for _ in 0..2 {
        let again = Candidates::retrieve(&retriever, &dataset, &cached).unwrap();
        assert_eq!(again.docs, candidates.docs);
    }
    assert_eq!(
        std::fs::read_dir(tmp.path().join("cache")).unwrap().count(),
        2,
        "queries and corpus"
    );
    let report = evaluate_reranker(&reranker, &candidates, &options).unwrap();
    // Whatever the reranker does, it cannot find what the retriever did not return.
    let recall_cap = candidates
        .docs
        .iter()
        .zip(&candidates.query_ids)
        .filter(|(d, q)| {
            d.iter()
                .any(|x| candidates.qrels[*q].get(&x.0).is_some_and(|&g| g > 0))
        })
        .count() as f64
        / 2.0;
    assert!((report.reranked_metrics["recall@3"] - recall_cap).abs() < 1e-12);
    assert!((report.retriever_metrics["recall@3"] - recall_cap).abs() < 1e-12);
    // include_positives adds them (sentence-transformers' default), so recall@top_k+1 is 1.
    let with = RerankEvalOptions {
        include_positives: true,
        ks: vec![1, 4],
        ..options.clone()
    };
    let added = Candidates::retrieve(&retriever, &dataset, &with).unwrap();
    let report = evaluate_reranker(&reranker, &added, &with).unwrap();
    assert_eq!(report.reranked_metrics["recall@4"], 1.0);
    assert_eq!(report.to_frame().unwrap().height(), 12);
    assert!(report.metrics_json()["reranked"]["ndcg@1"].is_number());
}

/// Fusion with the retriever runs from the reranker's own order (weight 0) to the retriever's
/// (weight 1), and the curve's ends are those two evaluations.
#[test]
fn fusion_runs_from_the_reranker_to_the_retriever() {
    let tmp = tempfile::tempdir().unwrap();
    let (retriever, reranker) = retriever_and_reranker(tmp.path());
    let options = RerankEvalOptions {
        top_k: 6,
        ks: vec![1, 3, 10],
        progress: false,
        ..Default::default()
    };
    let candidates = Candidates::retrieve(&retriever, &tiny_dataset(), &options).unwrap();
    let plain = evaluate_reranker(&reranker, &candidates, &options).unwrap();
    let at = |w: f64| {
        let o = RerankEvalOptions {
            fusion: Some(w),
            ..options.clone()
        };
        evaluate_reranker(&reranker, &candidates, &o).unwrap()
    };
    assert_eq!(at(0.0).reranked_metrics, plain.reranked_metrics);
    assert_eq!(at(1.0).reranked_metrics, plain.retriever_metrics);
    let curve = &plain.fusion_curve;
    assert_eq!(curve.len(), 11);
    assert_eq!(curve[0], (0.0, plain.reranked_metrics["ndcg@10"]));
    assert_eq!(curve[10], (1.0, plain.retriever_metrics["ndcg@10"]));
    assert_eq!(curve[4].1, at(0.4).reranked_metrics["ndcg@10"]);
    let bad = RerankEvalOptions {
        fusion: Some(1.5),
        ..options.clone()
    };
    let err = evaluate_reranker(&reranker, &candidates, &bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("between 0"), "{err}");
    assert!(plain.metrics_json()["fusion_curve"].is_array());
}

/// Training with a fusion hold-out: one query in ten (by a hash of its id) leaves the training
/// rows, the trained model reranks its candidates, and the weight that fuses best there is saved
/// beside the model, which evaluations then use unless told otherwise.
#[test]
fn training_holds_out_queries_and_saves_the_fusion_weight_they_choose() {
    let tmp = tempfile::tempdir().unwrap();
    let (retriever, _) = retriever_and_reranker(tmp.path());
    // sha256("18") is divisible by 10, sha256("3") is not (nor either by 13).
    let dataset = tiny_dataset_with_ids(["18", "3"]);
    let options = RerankEvalOptions {
        top_k: 6,
        ks: vec![1, 3, 10],
        progress: false,
        ..Default::default()
    };
    let mut data = labeled_pairs(6);
    data.queries.push("what is wax".into());
    data.documents.push(vec!["wax of the comb".into()]);
    data.labels.push(vec![1.0]);
    let split = hold_out_for_fusion(&data, &retriever, &dataset, &options, 10).unwrap();
    let (kept, held) = (split.training, split.held_out);
    assert_eq!(held.query_ids, ["18"]);
    assert_eq!(held.qrels.keys().collect::<Vec<_>>(), ["18"]);
    assert_eq!(held.docs[0].len(), 6, "the retriever's top 6");
    assert_eq!((split.rows_left_out, split.queries), (1, 2));
    assert_eq!(kept.len(), data.len() - 1);
    assert!(!kept.queries.contains(&"what is wax".to_string()));
    let err = hold_out_for_fusion(&data, &retriever, &dataset, &options, 13)
        .err()
        .expect("neither id is held out by 13")
        .to_string();
    assert!(err.contains("no query is held out"), "{err}");

    let model = load(&tmp.path().join("ce"), DType::F32);
    let out = tmp.path().join("out");
    let outcome = RerankTrainer {
        model: &model,
        data: &kept,
        loss: RerankLossConfig::default(),
        config: quick(1),
        dev: None,
        dev_options: options.clone(),
        fusion: Some(&held),
    }
    .run(&out, false)
    .unwrap();
    let choice = outcome.fusion.clone().expect("a fusion choice");
    assert_eq!(choice.queries, 1);
    let trained = load(&out, DType::F32);
    // serde_json's default float parsing may differ from the written value in the last place.
    let reloaded = trained.fusion.clone().expect("fusion.json reloads");
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(
        reloaded.retriever_weight == choice.retriever_weight
            && close(reloaded.fused_ndcg10, choice.fused_ndcg10)
            && reloaded.queries == choice.queries
            && reloaded.chosen_on == choice.chosen_on
            && reloaded.curve.len() == choice.curve.len()
            && reloaded
                .curve
                .iter()
                .zip(&choice.curve)
                .all(|(a, b)| a.0 == b.0 && close(a.1, b.1)),
        "{reloaded:?} vs {choice:?}"
    );
    // The choice is the held-out evaluation's curve and its best point.
    let alone = RerankEvalOptions {
        fusion: Some(0.0),
        ..options.clone()
    };
    let report = evaluate_reranker(&trained, &held, &alone).unwrap();
    assert_eq!(choice.curve, report.fusion_curve);
    assert_eq!(choice.reranker_ndcg10, report.reranked_metrics["ndcg@10"]);
    assert_eq!(choice.retriever_ndcg10, report.retriever_metrics["ndcg@10"]);
    assert_eq!(
        (choice.retriever_weight, choice.fused_ndcg10),
        ragtune::models::fusion::best(&report.fusion_curve)
    );
    // Unasked, an evaluation fuses at the saved weight.
    let default = evaluate_reranker(&trained, &held, &options).unwrap();
    assert_eq!(default.fusion, Some(choice.retriever_weight));
    assert_eq!(default.reranked_metrics["ndcg@10"], choice.fused_ndcg10);
}

#[test]
fn mining_rescores_with_a_cross_encoder_when_scores_are_compared() {
    use ragtune::mine::{mine_hard_negatives, MineOptions, OutputFormat, Rescorer};
    let tmp = tempfile::tempdir().unwrap();
    let (encoder, reranker) = retriever_and_reranker(tmp.path());
    let corpus: Vec<String> = (0..10)
        .map(|i| format!("{} {} comb", common::WORDS[i], common::WORDS[i + 2]))
        .collect();
    let pairs = df!("query" => ["what is wax", "the queen"], "answer" => ["wax in the hive", "a queen bee"]).unwrap();
    let options = MineOptions {
        num_negatives: 2,
        output_format: OutputFormat::LabeledPair,
        progress: false,
        ..Default::default()
    };
    let expected: Vec<f32> = ["wax in the hive", "a queen bee"]
        .iter()
        .zip(["what is wax", "the queen"])
        .map(|(d, q)| Rescorer::score(&reranker, q, &[*d]).unwrap()[0])
        .collect();
    // No margin and no max_score: the cross-encoder would change nothing and is not run.
    let plain =
        mine_hard_negatives(&encoder, &pairs, Some(&corpus), &options, Some(&reranker)).unwrap();
    assert_ne!(plain.positive_scores, expected);
    // With max_score, positives and candidates are scored by the cross-encoder (sigmoid scores).
    let options = MineOptions {
        max_score: Some(0.99),
        ..options
    };
    let rescored =
        mine_hard_negatives(&encoder, &pairs, Some(&corpus), &options, Some(&reranker)).unwrap();
    assert_eq!(rescored.positive_scores, expected);
    assert!(rescored
        .negative_scores
        .iter()
        .all(|s| (0.0..=0.99).contains(s)));
}

// The same checks through candle's composed ops: the path CUDA takes (see `common::through_composed_ops`).

#[test]
fn minilm_cross_encoder_matches_sentence_transformers_through_composed_ops() {
    common::through_composed_ops(minilm_cross_encoder_matches_sentence_transformers);
}

#[test]
fn every_cross_encoder_weight_gets_the_finite_difference_gradient_through_composed_ops() {
    common::through_composed_ops(every_cross_encoder_weight_gets_the_finite_difference_gradient);
}

#[test]
fn every_cross_encoder_weight_gets_the_finite_difference_gradient_under_dropout_through_composed_ops(
) {
    common::through_composed_ops(
        every_cross_encoder_weight_gets_the_finite_difference_gradient_under_dropout,
    );
}

/// The fused kernel redraws its attention masks in the backward pass; the composed path (CUDA's)
/// builds them as a tensor. Both must drop the same units: same logits, same gradients.
#[test]
fn dropout_masks_are_the_same_through_kernels_and_composed_ops() {
    let tmp = tempfile::tempdir().unwrap();
    let model = load(
        &common::write_tiny_model(&tmp.path().join("m"), 24),
        DType::F32,
    );
    let pairs = tiny_pairs();
    let encodings = model.tokenize_pairs(&pairs).unwrap();
    let refs: Vec<&tokenizers::Encoding> = encodings.iter().collect();
    let params = Params::from_varmap(&model.varmap, |_| false);
    let run = |kernels: ragtune::models::kernels::Kernels, mode: Mode| {
        ragtune::models::kernels::with(kernels, || {
            let logits = model.logits(&refs, mode).unwrap().squeeze(1).unwrap();
            let grads = logits.sum_all().unwrap().backward().unwrap();
            let grads: Vec<Tensor> = params
                .vars
                .iter()
                .map(|v| grads.get(v.as_tensor()).unwrap().clone())
                .collect();
            (logits, grads)
        })
    };
    use ragtune::models::kernels::Kernels::{Native, Portable};
    let (native, native_grads) = run(Native, heavy_dropout(5));
    let (portable, portable_grads) = run(Portable, heavy_dropout(5));
    assert!(common::max_abs_diff(&native, &portable) < 1e-5);
    for (name, (a, b)) in params
        .names
        .iter()
        .zip(native_grads.iter().zip(&portable_grads))
    {
        let scale = common::max_abs(a).max(1e-3);
        assert!(
            common::max_abs_diff(a, b) < 1e-4 * scale,
            "{name}: gradients differ between the paths"
        );
    }
    // And dropout changes the function: another seed, or none, scores differently.
    let (other, _) = run(Native, heavy_dropout(6));
    let (plain, _) = run(Native, Mode::Train(None));
    assert!(common::max_abs_diff(&native, &other) > 1e-3);
    assert!(common::max_abs_diff(&native, &plain) > 1e-3);
}

#[test]
fn gradient_caching_gives_the_direct_loss_and_gradients_through_composed_ops() {
    common::through_composed_ops(gradient_caching_gives_the_direct_loss_and_gradients);
}

#[test]
fn sigkill_then_resume_reaches_the_uninterrupted_weights_through_composed_ops() {
    common::through_composed_ops(sigkill_then_resume_reaches_the_uninterrupted_weights);
}

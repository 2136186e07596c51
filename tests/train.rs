//! Fine-tuning through the public API and the CLI: GradCache gives plain MNRL's gradients, a run
//! killed with SIGKILL and resumed ends on the same weights as an uninterrupted one, every loss
//! trains, and bad settings are refused with a clear message.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::DType;
use polars::prelude::*;
use ragtune::models::dropout::DropoutRates;
use ragtune::models::LoadOptions;
use ragtune::train::embed::step::loss_and_grads;
use ragtune::train::optim::Params;
use ragtune::train::task::BatchDropout;
use ragtune::train::{EmbedTrainer, LossConfig, LossName, TrainConfig, TrainingSet};
use ragtune::SentenceEncoder;

const WORDS: &[&str] = &[
    "bee", "honey", "queen", "hive", "wax", "mite", "swarm", "comb", "brood", "the", "of", "in",
];

/// A short phrase of vocabulary words; the letter run at the end makes every row's text unique.
fn phrase(i: usize, salt: usize) -> String {
    let words: Vec<&str> = (0..3 + (i + salt) % 4)
        .map(|k| WORDS[(i * 7 + k * 3 + salt) % WORDS.len()])
        .collect();
    let tail = ["a", "b", "c", "d", "e", "f", "g", "h"][i % 8].repeat(1 + i / 8);
    format!("{} {tail}", words.join(" "))
}

/// `n` rows of (anchor, positive, negative) made of vocabulary words, all texts distinct.
fn triplets(n: usize) -> TrainingSet {
    TrainingSet {
        columns: vec!["anchor".into(), "positive".into(), "negative".into()],
        texts: vec![
            (0..n).map(|i| format!("what {}", phrase(i, 0))).collect(),
            (0..n).map(|i| phrase(i, 1)).collect(),
            (0..n).map(|i| format!("my {}", phrase(i, 2))).collect(),
        ],
        labels: None,
    }
}

fn tiny_encoder(dir: &Path, dtype: DType) -> SentenceEncoder {
    let model = common::write_tiny_model(dir, 24);
    SentenceEncoder::load(
        model.to_str().unwrap(),
        &LoadOptions {
            dtype,
            ..Default::default()
        },
    )
    .unwrap()
}

fn weights(encoder: &SentenceEncoder) -> HashMap<String, Vec<f64>> {
    encoder
        .varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
            )
        })
        .collect()
}

const NO_DROPOUT: BatchDropout = BatchDropout {
    rates: DropoutRates {
        hidden: 0.0,
        attention: 0.0,
        classifier: 0.0,
    },
    seed: 0,
};

#[test]
fn gradcache_gives_plain_mnrl_loss_and_gradients() {
    let tmp = tempfile::tempdir().unwrap();
    let encoder = tiny_encoder(tmp.path(), DType::F64);
    let params = Params::from_varmap(&encoder.varmap, |_| false);
    let data = triplets(7);
    let batch = data.batch(&(0..7).collect::<Vec<_>>());
    let (loss, _) = LossConfig::named(LossName::Mnrl)
        .build(&LoadOptions::default())
        .unwrap();
    // Under dropout: the cached way's two passes must draw the direct pass's masks.
    let dropout = BatchDropout {
        rates: DropoutRates::uniform(0.2),
        seed: 5,
    };
    let (plain_loss, plain) =
        loss_and_grads(&encoder, &params, loss.as_ref(), &batch, None, dropout).unwrap();
    // Mini-batches of 3 over 7 rows: uneven chunks on purpose.
    let (cached_loss, cached) =
        loss_and_grads(&encoder, &params, loss.as_ref(), &batch, Some(3), dropout).unwrap();
    let (undropped, _) =
        loss_and_grads(&encoder, &params, loss.as_ref(), &batch, None, NO_DROPOUT).unwrap();
    assert!(
        (plain_loss - undropped).abs() > 1e-6,
        "dropout changes the loss"
    );
    assert!(
        (plain_loss - cached_loss).abs() < 1e-10,
        "{plain_loss} vs {cached_loss}"
    );
    let mut compared = 0;
    for (name, (a, b)) in params.names.iter().zip(plain.0.iter().zip(&cached.0)) {
        match (a, b) {
            (Some(a), Some(b)) => {
                let scale = a
                    .abs()
                    .unwrap()
                    .max_keepdim(0)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                let diff = common::max_abs_diff(a, b) as f64;
                assert!(
                    diff <= 1e-9 * scale.max(1.0),
                    "{name}: gradients differ by {diff}"
                );
                compared += 1;
            }
            (None, None) => {}
            _ => panic!("{name}: one path has a gradient and the other not"),
        }
    }
    assert_eq!(
        params.len(),
        5 + 2 * 16,
        "3 embedding tables + LayerNorm, 16 tensors per layer"
    );
    assert_eq!(
        compared,
        params.len(),
        "every parameter has a gradient on both paths"
    );
}

#[test]
fn every_loss_trains_and_moves_the_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let base = common::write_tiny_model(&tmp.path().join("base"), 24);
    let pairs_with_score = {
        let t = triplets(12);
        TrainingSet {
            columns: vec!["sentence_a".into(), "sentence_b".into()],
            texts: vec![t.texts[0].clone(), t.texts[1].clone()],
            labels: Some((
                "score".into(),
                (0..12).map(|i| vec![(i % 4) as f32 / 3.0]).collect(),
            )),
        }
    };
    let with_margins = TrainingSet {
        labels: Some((
            "label".into(),
            (0..12).map(|i| vec![0.1 * i as f32]).collect(),
        )),
        ..triplets(12)
    };
    let cases: Vec<(LossConfig, TrainingSet)> = vec![
        (LossConfig::named(LossName::Mnrl), triplets(12)),
        (LossConfig::named(LossName::MnrlSymmetric), triplets(12)),
        (
            LossConfig {
                mini_batch_size: Some(4),
                ..LossConfig::named(LossName::CachedMnrl)
            },
            triplets(12),
        ),
        (
            LossConfig {
                guide_model: Some(base.to_str().unwrap().into()),
                ..LossConfig::named(LossName::Gist)
            },
            triplets(12),
        ),
        (LossConfig::named(LossName::Triplet), triplets(12)),
        (LossConfig::named(LossName::Cosent), pairs_with_score),
        (LossConfig::named(LossName::MarginMse), with_margins),
        (
            LossConfig {
                matryoshka_dims: vec![8, 4],
                ..LossConfig::named(LossName::Mnrl)
            },
            triplets(12),
        ),
    ];
    for (i, (loss, data)) in cases.into_iter().enumerate() {
        let encoder = SentenceEncoder::load(base.to_str().unwrap(), &Default::default()).unwrap();
        let before = weights(&encoder);
        let out = tmp.path().join(format!("run{i}"));
        let outcome = EmbedTrainer {
            encoder: &encoder,
            data: &data,
            loss: loss.clone(),
            config: TrainConfig {
                max_steps: Some(2),
                batch_size: 6,
                lr: 1e-2,
                progress: false,
                ..Default::default()
            },
            dev: None,
        }
        .run(&out, false)
        .unwrap_or_else(|e| panic!("{:?}: {e:#}", loss.name));
        assert_eq!(outcome.steps, 2);
        assert!(outcome.final_loss.is_finite(), "{:?}", loss.name);
        let after = weights(&encoder);
        let moved = before.iter().filter(|(n, w)| after[*n] != **w).count();
        assert!(moved >= 30, "{:?}: only {moved} tensors changed", loss.name);
        // The saved folder is what was trained.
        let saved = SentenceEncoder::load(out.to_str().unwrap(), &Default::default()).unwrap();
        assert_eq!(
            weights(&saved),
            after,
            "{:?}: saved weights differ",
            loss.name
        );
        assert!(out.join("README.md").is_file() && out.join("training.html").is_file());
    }
}

#[test]
fn wrong_data_shapes_and_settings_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let encoder = tiny_encoder(&tmp.path().join("m"), DType::F32);
    let pairs = TrainingSet {
        columns: vec!["a".into(), "b".into()],
        texts: triplets(4).texts[..2].to_vec(),
        labels: None,
    };
    let run = |loss: LossName, data: &TrainingSet, config: TrainConfig, out: &str| {
        EmbedTrainer {
            encoder: &encoder,
            data,
            loss: LossConfig::named(loss),
            config,
            dev: None,
        }
        .run(&tmp.path().join(out), false)
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    let quiet = TrainConfig {
        progress: false,
        max_steps: Some(1),
        ..Default::default()
    };
    assert!(
        run(LossName::Triplet, &pairs, quiet.clone(), "x").contains("(anchor, positive, negative)")
    );
    assert!(run(LossName::Cosent, &pairs, quiet.clone(), "x").contains("score"));
    assert!(run(LossName::MarginMse, &triplets(4), quiet.clone(), "x").contains("label"));
    assert!(run(
        LossName::Mnrl,
        &pairs,
        TrainConfig {
            lr: -1.0,
            ..quiet.clone()
        },
        "x"
    )
    .contains("lr"));
    let bad_dropout = run(
        LossName::Mnrl,
        &pairs,
        TrainConfig {
            dropout: Some(1.0),
            ..quiet.clone()
        },
        "x",
    );
    assert!(
        bad_dropout.contains("dropout must be in [0, 1)"),
        "{bad_dropout}"
    );
    // A rate read from the model's config.json is checked too, and the error says where it is.
    let model = common::write_tiny_model(&tmp.path().join("bad-rate"), 24);
    let config_path = model.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["attention_probs_dropout_prob"] = serde_json::json!(1.5);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let bad_encoder =
        SentenceEncoder::load(model.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let err = EmbedTrainer {
        encoder: &bad_encoder,
        data: &pairs,
        loss: LossConfig::named(LossName::Mnrl),
        config: quiet.clone(),
        dev: None,
    }
    .run(&tmp.path().join("y"), false)
    .map(|_| ())
    .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("attention dropout") && err.contains("config.json"),
        "{err}"
    );

    // A finished run's folder holds a checkpoint: training into it again without resume is refused,
    // and resuming with other settings is refused too.
    let data = triplets(8);
    let train = |config: TrainConfig, resume: bool| {
        EmbedTrainer {
            encoder: &encoder,
            data: &data,
            loss: LossConfig::named(LossName::Mnrl),
            config,
            dev: None,
        }
        .run(&tmp.path().join("done"), resume)
    };
    train(quiet.clone(), false).unwrap();
    assert!(train(quiet.clone(), false)
        .unwrap_err()
        .to_string()
        .contains("--resume"));
    let other = TrainConfig {
        lr: 1e-3,
        ..quiet.clone()
    };
    assert!(train(other, true)
        .unwrap_err()
        .to_string()
        .contains("other training settings"));

    // Training data files: a missing text is reported with its row.
    let df = df!("anchor" => [Some("bee"), None], "positive" => ["hive", "wax"]).unwrap();
    let err = TrainingSet::from_frame(&df, "pairs.jsonl")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pairs.jsonl") && err.contains("row 2"),
        "{err}"
    );
    let df = df!("anchor" => ["bee"], "positive" => [3i64]).unwrap();
    assert!(TrainingSet::from_frame(&df, "p.csv")
        .unwrap_err()
        .to_string()
        .contains("`positive`"));
}

/// Writes the tiny model and the training data once; every run of the test starts from them.
fn prepare(dir: &Path) {
    common::write_tiny_model(&dir.join("model"), 24);
    ragtune::data::write_table(&triplets(40).to_frame().unwrap(), &dir.join("train.jsonl"))
        .unwrap();
}

fn cli_args(dir: &Path, output: &Path) -> Vec<String> {
    [
        "train",
        "embed",
        "--model",
        dir.join("model").to_str().unwrap(),
        "--data",
        dir.join("train.jsonl").to_str().unwrap(),
        "--loss",
        "mnrl",
        "--epochs",
        "60",
        "--batch-size",
        "8",
        "--lr",
        "0.001",
        "--warmup-ratio",
        "0.1",
        "--save-steps",
        "3",
        "--output",
        output.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn sigkill_then_resume_reaches_the_uninterrupted_weights() {
    let tmp = tempfile::tempdir().unwrap();
    prepare(tmp.path());
    // 5 batches × 60 epochs = 300 steps; killed once step 9 is checkpointed.
    common::kill_resume_matches_whole_run(
        tmp.path(),
        &|output| cli_args(tmp.path(), output),
        &tmp.path().join("model/model.safetensors"),
        9,
    );
}

// The same checks through candle's composed ops: the path CUDA takes (see `common::through_composed_ops`).

#[test]
fn gradcache_gives_plain_mnrl_loss_and_gradients_through_composed_ops() {
    common::through_composed_ops(gradcache_gives_plain_mnrl_loss_and_gradients);
}

#[test]
fn sigkill_then_resume_reaches_the_uninterrupted_weights_through_composed_ops() {
    common::through_composed_ops(sigkill_then_resume_reaches_the_uninterrupted_weights);
}

/// Mixed precision: bf16 and f16 products give an MNRL loss and f32 gradients close to f32's
/// (bf16 keeps 8 bits of mantissa, f16 11), through the composed ops CUDA runs.
#[test]
fn mixed_precision_steps_give_f32_gradients_close_to_f32() {
    use ragtune::models::precision::{autocast, Precision};
    common::through_composed_ops(|| {
        let tmp = tempfile::tempdir().unwrap();
        let encoder = tiny_encoder(tmp.path(), DType::F32);
        let params = Params::from_varmap(&encoder.varmap, |_| false);
        let data = triplets(6);
        let batch = data.batch(&(0..6).collect::<Vec<_>>());
        let (loss, _) = LossConfig::named(LossName::Mnrl)
            .build(&LoadOptions::default())
            .unwrap();
        let (exact, reference) =
            loss_and_grads(&encoder, &params, loss.as_ref(), &batch, None, NO_DROPOUT).unwrap();
        let largest = reference
            .0
            .iter()
            .flatten()
            .map(common::max_abs)
            .fold(0f32, f32::max);
        for (precision, scale, tolerance) in
            [(Precision::Bf16, 1.0, 3e-2), (Precision::F16, 1024.0, 5e-3)]
        {
            let (value, mut grads) = autocast(precision, scale, || {
                loss_and_grads(&encoder, &params, loss.as_ref(), &batch, None, NO_DROPOUT).unwrap()
            });
            grads.scale(1.0 / scale).unwrap();
            assert!(
                (value - exact).abs() <= tolerance * exact.abs().max(1.0),
                "{precision:?}: loss {value} vs f32 {exact}"
            );
            for (name, (a, b)) in params.names.iter().zip(reference.0.iter().zip(&grads.0)) {
                let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
                assert_eq!(b.dtype(), DType::F32, "{name}: gradients stay f32");
                // Relative to the tensor's largest gradient, or to 1 % of the largest of all
                // (the key bias's gradient is zero in exact arithmetic, rounding noise here).
                let scale = common::max_abs(a).max(0.01 * largest);
                let diff = common::max_abs_diff(a, b);
                assert!(
                    diff as f64 <= 2.0 * tolerance * scale as f64,
                    "{precision:?} {name}: gradients differ by {diff} (scale {scale})"
                );
            }
        }
    });
}

/// An f16 run (loss scaling, its scale in the checkpoint) resumes after SIGKILL to the same
/// weights as an uninterrupted one.
#[test]
fn an_f16_run_resumes_after_sigkill_to_the_uninterrupted_weights() {
    common::through_composed_ops(|| {
        let tmp = tempfile::tempdir().unwrap();
        prepare(tmp.path());
        common::kill_resume_matches_whole_run(
            tmp.path(),
            &|output| {
                let mut args = cli_args(tmp.path(), output);
                args.extend(["--precision".to_string(), "f16".to_string()]);
                args
            },
            &tmp.path().join("model/model.safetensors"),
            9,
        );
        let state = std::fs::read_to_string(
            std::fs::read_dir(tmp.path().join("killed/checkpoints"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path()
                .join("trainer_state.json"),
        );
        assert!(
            state.is_ok_and(|s| s.contains("loss_scale")),
            "the f16 scale is checkpointed"
        );
    });
}

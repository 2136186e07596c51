//! The generator stage: LoRA on the tiny random Llama of tests/fixtures — gradients against
//! finite differences (adapters get them, the frozen base none), the adapter forward against
//! the merged weights, PEFT's format round trip, label masks of chat data, and training.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use ragtune::llm::{LocalLlm, LocalOptions};
use ragtune::models::lora::{BaseWeight, LoraConfig};
use ragtune::models::peft;
use ragtune::train::generate::{GenerateTask, SftOptions, SftSet};
use serde_json::{json, Map, Value};

/// A local model with f32 decoding (exact logits) and `options`' other settings.
fn load(spec: &str, options: LocalOptions) -> LocalLlm {
    LocalLlm::load(
        spec,
        &LocalOptions {
            q8_decode: false,
            ..options
        },
    )
    .unwrap()
}

fn tiny() -> LocalLlm {
    load(
        common::tiny_llama_dir().to_str().unwrap(),
        LocalOptions::default(),
    )
}

fn all_linear(r: usize, dropout: f64) -> LoraConfig {
    LoraConfig {
        r,
        lora_alpha: 2.0 * r as f64,
        lora_dropout: dropout,
        target_modules: vec!["all-linear".into()],
        init_lora_weights: false,
        ..Default::default()
    }
}

fn records(rows: &[Value]) -> Vec<(usize, Map<String, Value>)> {
    rows.iter()
        .enumerate()
        .map(|(i, v)| (i + 1, v.as_object().unwrap().clone()))
        .collect()
}

fn chat(q: &str, a: &str) -> Value {
    json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
}

fn sft(llm: &LocalLlm) -> SftSet {
    SftSet::from_records(
        records(&[
            chat("Is the sky blue?", "Yes, it is."),
            chat("Name a prime number", "Seven."),
            json!({"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Two plus two?"},
                {"role": "assistant", "content": "Four."},
                {"role": "user", "content": "And three?"},
                {"role": "assistant", "content": "Five."}]}),
        ]),
        llm,
        &SftOptions::default(),
        "test",
    )
    .unwrap()
}

fn logits(llm: &LocalLlm, ids: &[u32]) -> Vec<f32> {
    llm.next_token_logits(ids).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn chat_labels_are_the_assistant_turns_with_their_end_of_turn_token() {
    let llm = tiny();
    let set = sft(&llm);
    let decode = |e: usize| -> Vec<String> {
        let ex = &set.examples[e];
        // Consecutive label tokens, decoded as spans.
        let mut spans = vec![];
        let mut cur: Vec<u32> = vec![];
        for (t, &l) in ex.labels.iter().enumerate() {
            if l {
                cur.push(ex.ids[t]);
            } else if !cur.is_empty() {
                spans.push(llm.tokenizer().decode(&cur, false).unwrap());
                cur.clear();
            }
        }
        if !cur.is_empty() {
            spans.push(llm.tokenizer().decode(&cur, false).unwrap());
        }
        spans
    };
    assert_eq!(decode(0), vec!["Yes, it is.<|im_end|>"]);
    assert_eq!(decode(2), vec!["Four.<|im_end|>", "Five.<|im_end|>"]);
    // Plain prompt/completion: the completion and the end-of-sequence token.
    let pc = SftSet::from_records(
        records(&[json!({"prompt": "Q: hi\nA:", "completion": " hello"})]),
        &llm,
        &SftOptions::default(),
        "pc",
    )
    .unwrap();
    let ex = &pc.examples[0];
    let labelled: Vec<u32> = ex
        .ids
        .iter()
        .zip(&ex.labels)
        .filter(|(_, &l)| l)
        .map(|(&i, _)| i)
        .collect();
    assert_eq!(
        llm.tokenizer().decode(&labelled, false).unwrap(),
        " hello<|im_end|>"
    );
    // Truncation keeps the start; an example left without labels is dropped and counted.
    let whole = &set.examples[0];
    let first_label = whole.labels.iter().position(|&l| l).unwrap();
    let max_length = first_label + 3;
    let cut = SftSet::from_records(
        records(&[
            chat("Is the sky blue?", "Yes, it is."),
            chat("Is the sky blue on a cloudy winter afternoon?", "b"),
        ]),
        &llm,
        &SftOptions {
            max_length,
            ..Default::default()
        },
        "cut",
    )
    .unwrap();
    // The kept one lost its answer's end: counted, so the user hears the final answer is gone.
    assert_eq!(
        (
            cut.examples.len(),
            cut.dropped,
            cut.truncated,
            cut.answers_cut
        ),
        (1, 1, 2, 1)
    );
    assert_eq!(cut.examples[0].ids[..], whole.ids[..max_length]);
    assert_eq!(cut.examples[0].label_count(), 3);
}

#[test]
fn bad_rows_are_errors_naming_the_row_and_field() {
    let llm = tiny();
    let err = SftSet::from_records(
        records(&[chat("q", "a"), json!({"messages": [{"role": "user"}]})]),
        &llm,
        &SftOptions::default(),
        "data.jsonl",
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("data.jsonl:2"), "{err:#}");
    let err = SftSet::from_records(
        records(&[json!({"question": "q"})]),
        &llm,
        &SftOptions::default(),
        "d",
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("messages"), "{err:#}");
}

#[test]
fn every_adapter_matrix_gets_the_finite_difference_gradient_and_the_base_none() {
    let mut llm = tiny();
    llm.model_mut().add_lora(&all_linear(2, 0.0)).unwrap();
    let set = sft(&llm);
    let task = GenerateTask::new(&llm, &set, None, all_linear(2, 0.0), 1).unwrap();
    let params = ragtune::train::TrainTask::params(&task);
    assert_eq!(
        params.len(),
        2 * 7 * 2,
        "A and B of seven layers in two blocks"
    );
    let rows = [0usize, 1, 2];
    let (nll, n) = task.nll(&set, &rows, None).unwrap();
    let loss = (nll / n as f64).unwrap();
    let store = loss.backward().unwrap();
    // The frozen base: no gradient for any base weight, norm or embedding.
    for (_, name, l) in llm.model().linears() {
        if let BaseWeight::Dense(w) = l.base() {
            assert!(
                store.get(w).is_none(),
                "{name}: the frozen base got a gradient"
            );
        }
    }
    let loss_at = || -> f64 {
        let (nll, n) = task.nll(&set, &rows, None).unwrap();
        nll.to_scalar::<f32>().unwrap() as f64 / n as f64
    };
    for (name, var) in params.names.iter().zip(&params.vars) {
        let g: Vec<f32> = store
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(g.iter().any(|x| x.abs() > 1e-7), "zero gradient for {name}");
        let i = (0..g.len())
            .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
            .unwrap();
        let orig = var.as_tensor().flatten_all().unwrap().copy().unwrap();
        let h = 1e-2f32;
        let nudged = |d: f32| {
            let mut v: Vec<f32> = orig.to_vec1().unwrap();
            v[i] += d;
            var.set(&Tensor::from_vec(v, var.as_tensor().shape(), &Device::Cpu).unwrap())
                .unwrap();
            let l = loss_at();
            var.set(&orig.reshape(var.as_tensor().shape()).unwrap())
                .unwrap();
            l
        };
        let fd = (nudged(h) - nudged(-h)) / (2.0 * h as f64);
        let an = g[i] as f64;
        assert!(
            (fd - an).abs() <= 2e-4 + 5e-3 * an.abs().max(fd.abs()),
            "{name}[{i}]: analytic {an}, finite difference {fd}"
        );
    }
}

#[test]
fn the_adapter_forward_equals_the_merged_weights_and_unmerging_restores_the_base() {
    let mut llm = tiny();
    let ids: Vec<u32> = llm.encode("The quick brown fox").unwrap();
    let base = logits(&llm, &ids);
    let mut zero = tiny();
    zero.model_mut()
        .add_lora(&LoraConfig {
            init_lora_weights: true,
            ..all_linear(4, 0.0)
        })
        .unwrap();
    assert!(
        max_diff(&logits(&zero, &ids), &base) == 0.0,
        "B starts at zero"
    );
    llm.model_mut().add_lora(&all_linear(4, 0.0)).unwrap();
    let adapted = logits(&llm, &ids);
    assert!(
        max_diff(&adapted, &base) > 1e-2,
        "the adapter changes the output"
    );
    llm.model_mut().merge_adapters().unwrap();
    let merged = logits(&llm, &ids);
    assert!(
        max_diff(&merged, &adapted) < 1e-4,
        "{}",
        max_diff(&merged, &adapted)
    );
    llm.model_mut().unmerge_adapters().unwrap();
    assert!(max_diff(&logits(&llm, &ids), &adapted) < 1e-4);
}

#[test]
fn adapters_round_trip_through_peft_files() {
    let mut llm = tiny();
    let config = LoraConfig {
        target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        use_rslora: true,
        ..all_linear(4, 0.1)
    };
    llm.model_mut().add_lora(&config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    peft::save_adapter(llm.model(), &config, "tiny-llama", dir.path()).unwrap();
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["use_rslora"], true);
    assert_eq!(
        cfg["target_modules"],
        json!(["q_proj", "v_proj", "down_proj"])
    );
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.path().join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    assert_eq!(tensors.len(), 2 * 3 * 2);
    assert!(tensors.contains_key("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
    assert!(tensors.contains_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));

    let ids: Vec<u32> = llm.encode("hello world").unwrap();
    let want = logits(&llm, &ids);
    let mut fresh = tiny();
    fresh.load_adapter(dir.path(), false).unwrap();
    assert!(max_diff(&logits(&fresh, &ids), &want) < 1e-6);
    // Through LocalOptions, merged, as --adapter does.
    let merged = load(
        common::tiny_llama_dir().to_str().unwrap(),
        LocalOptions {
            adapter: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    );
    assert!(max_diff(&logits(&merged, &ids), &want) < 1e-4);
    assert!(
        merged.name().contains("adapter"),
        "cached answers must not mix with the base's"
    );

    // A missing matrix is an error naming it.
    let mut partial = tensors.clone();
    partial.remove("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight");
    ragtune::models::save::write_safetensors(
        &partial,
        &dir.path().join("adapter_model.safetensors"),
    )
    .unwrap();
    let err = tiny().load_adapter(dir.path(), false).unwrap_err();
    assert!(
        format!("{err:#}").contains("layers.1.mlp.down_proj.lora_B"),
        "{err:#}"
    );
}

/// PEFT loads what ragtune saves and computes the same logits: SmolLM2 (GGUF, so q/k rows are
/// permuted on one side and not the other) with seeded random adapters on all seven layers,
/// against PEFT's logits in tests/fixtures/lora-peft-parity.json (scripts/check-lora-parity.py).
#[test]
fn smollm2_with_a_lora_adapter_gives_peft_logits() {
    if common::skip_without_smollm2() {
        return;
    }
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/lora-peft-parity.json")).unwrap();
    let mut llm = load(common::SMOLLM2, LocalOptions::default());
    let ids: Vec<u32> = serde_json::from_value(fixture["ids"].clone()).unwrap();
    let prompt = llm
        .render(&[ragtune::llm::Message::user(
            "What is the capital of France?",
        )])
        .unwrap();
    assert_eq!(
        llm.encode(&prompt).unwrap(),
        ids,
        "the chat prompt's tokens"
    );
    let stride = fixture["stride"].as_u64().unwrap() as usize;
    let column = |key: &str| -> Vec<f32> { serde_json::from_value(fixture[key].clone()).unwrap() };
    let every = |v: Vec<f32>| -> Vec<f32> { v.into_iter().step_by(stride).collect() };
    let base = every(logits(&llm, &ids));
    assert!(
        max_diff(&base, &column("base_logits")) < 1e-3,
        "base: {}",
        max_diff(&base, &column("base_logits"))
    );
    llm.model_mut()
        .add_lora(&LoraConfig {
            target_modules: vec!["all-linear".into()],
            lora_dropout: 0.0,
            seed: 3,
            init_lora_weights: false,
            ..Default::default()
        })
        .unwrap();
    let ours = every(logits(&llm, &ids));
    let d = max_diff(&ours, &column("peft_logits"));
    assert!(d < 1e-3, "ragtune vs PEFT: {d}");
    assert!(
        max_diff(&ours, &base) > 1e-2,
        "the adapter moves the logits"
    );
}

fn write_jsonl(path: &std::path::Path, rows: &[Value]) {
    let text: String = rows.iter().map(|r| r.to_string() + "\n").collect();
    std::fs::write(path, text).unwrap();
}

/// `train generate` through the shared loop: the loss falls, dev loss picks the best adapter,
/// and a run killed after a checkpoint resumes to bit-identical adapters (dropout on, so its
/// masks must replay too).
#[test]
fn train_generate_learns_and_resumes_after_a_kill_to_identical_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rows: Vec<Value> = (0..36)
        .map(|i| {
            chat(
                &format!("What is {i} plus one?"),
                &format!("It is {}.", i + 1),
            )
        })
        .collect();
    write_jsonl(&dir.join("train.jsonl"), &rows);
    write_jsonl(&dir.join("dev.jsonl"), &rows[..4]);
    let model = common::tiny_llama_dir().display().to_string();
    let args = |out: &std::path::Path| -> Vec<String> {
        [
            "train",
            "generate",
            "--model",
            &model,
            "--data",
            dir.join("train.jsonl").to_str().unwrap(),
            "--dev-data",
            dir.join("dev.jsonl").to_str().unwrap(),
            "--lora-r",
            "4",
            "--lora-dropout",
            "0.1",
            "--target-modules",
            "all-linear",
            "--epochs",
            "3",
            "--batch-size",
            "2",
            "--lr",
            "5e-3",
            "--save-steps",
            "2",
            "--eval-steps",
            "18",
            "--output",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    // The adapter before training: same seed, so the same A and a zero B.
    let mut init = tiny();
    init.model_mut()
        .add_lora(&LoraConfig {
            r: 4,
            lora_dropout: 0.1,
            target_modules: vec!["all-linear".into()],
            ..Default::default()
        })
        .unwrap();
    peft::save_adapter(
        init.model(),
        &LoraConfig::default(),
        "tiny",
        &dir.join("init"),
    )
    .unwrap();
    common::kill_resume_matches_whole_run_of(
        dir,
        &args,
        &dir.join("init/adapter_model.safetensors"),
        4,
        "adapter_model.safetensors",
    );
    let whole = dir.join("whole");
    let log = std::fs::read_to_string(whole.join("train_log.jsonl")).unwrap();
    let losses: Vec<f64> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "loss")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 54, "36 rows, batches of 2, 3 epochs");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&losses[36..]) < mean(&losses[..18]) * 0.9,
        "{losses:?}"
    );
    let evals: Vec<f64> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "eval")
        .map(|v| v["metrics"]["eval_loss"].as_f64().unwrap())
        .collect();
    assert!(
        evals.len() >= 3 && evals.last() < evals.first(),
        "{evals:?}"
    );
    assert!(whole.join("best/adapter_config.json").is_file());
    assert!(whole.join("README.md").is_file() && whole.join("training.html").is_file());
    // The saved adapter loads, and `ragtune merge` folds it into a Hugging Face folder that
    // computes the same.
    let mut llm = tiny();
    llm.load_adapter(&whole, true).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ragtune"))
        .args([
            "merge",
            "--model",
            &model,
            "--adapter",
            whole.to_str().unwrap(),
            "--output",
        ])
        .arg(dir.join("merged"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged = load(
        dir.join("merged").to_str().unwrap(),
        LocalOptions::default(),
    );
    let ids = [5u32, 9, 17, 4];
    assert!(max_diff(&logits(&merged, &ids), &logits(&llm, &ids)) < 1e-4);
}

/// A GGUF model (q/k rows in GGUF's order, tied embeddings) with adapters, saved merged as a
/// Hugging Face folder and loaded back through the safetensors path: the same logits.
#[test]
fn smollm2_merged_into_a_hugging_face_folder_computes_the_adapter_model() {
    if common::skip_without_smollm2() {
        return;
    }
    let mut llm = load(common::SMOLLM2, LocalOptions::default());
    llm.model_mut()
        .add_lora(&LoraConfig {
            target_modules: vec!["all-linear".into()],
            seed: 3,
            init_lora_weights: false,
            ..Default::default()
        })
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    llm.save_merged(tmp.path()).unwrap();
    let back = load(tmp.path().to_str().unwrap(), LocalOptions::default());
    let ids = llm.encode("The capital of France is").unwrap();
    assert_eq!(
        back.encode("The capital of France is").unwrap(),
        ids,
        "the saved tokenizer"
    );
    let d = max_diff(&logits(&back, &ids), &logits(&llm, &ids));
    assert!(d < 1e-3, "{d}");
    let config: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["tie_word_embeddings"], true);
    assert_eq!(config["num_key_value_heads"], 3);
}

/// QLoRA: the base stays in its GGUF blocks (a fraction of the memory) and computes what the
/// dequantized f32 base computes.
#[test]
fn a_quantized_base_keeps_its_blocks_and_the_dense_logits() {
    if common::skip_without_smollm2() {
        return;
    }
    let load = |quantized_base| {
        load(
            common::SMOLLM2,
            LocalOptions {
                quantized_base,
                ..Default::default()
            },
        )
    };
    let (dense, quant) = (load(false), load(true));
    let ids = dense.encode("Name three primary colours.").unwrap();
    let d = max_diff(&logits(&dense, &ids), &logits(&quant, &ids));
    assert!(d < 1e-3, "{d}");
    let (fd, fq) = (
        dense.model().base_linear_bytes(),
        quant.model().base_linear_bytes(),
    );
    // Q4_1 holds 32 weights in 20 bytes (some tensors of this file are Q8_0 or f32).
    assert!(fq * 4 < fd, "quantized {fq} bytes against {fd}");
}

/// Packing puts several examples in a row, each attending only within itself: the summed loss
/// and the label count are those of the unpacked rows.
#[test]
fn packed_rows_give_the_loss_of_separate_rows() {
    let mut llm = tiny();
    llm.model_mut().add_lora(&all_linear(2, 0.0)).unwrap();
    let rows = records(&[chat("a", "bb"), chat("c", "d"), chat("e", "fff")]);
    let plain = SftSet::from_records(rows.clone(), &llm, &SftOptions::default(), "t").unwrap();
    let packed = SftSet::from_records(
        rows,
        &llm,
        &SftOptions {
            packing: true,
            max_length: 120,
            ..Default::default()
        },
        "t",
    )
    .unwrap();
    assert!(packed.len() < plain.len(), "{} packed rows", packed.len());
    let task = GenerateTask::new(&llm, &plain, None, all_linear(2, 0.0), 1).unwrap();
    let total = |set: &SftSet| {
        let rows: Vec<usize> = (0..set.len()).collect();
        let (nll, n) = task.nll(set, &rows, None).unwrap();
        (nll.to_scalar::<f32>().unwrap(), n)
    };
    let ((a, na), (b, nb)) = (total(&plain), total(&packed));
    assert_eq!(na, nb);
    assert!((a - b).abs() < 1e-4 * a.abs(), "{a} vs {b}");
}

/// Under gradient accumulation the loss is the mean over every label token of the accumulated
/// batch (not a mean of per-micro-batch means): one step of batch 2 and one step of two
/// accumulated batches of 1 reach the same adapter, with rows of very different answer lengths.
#[test]
fn accumulated_micro_batches_average_over_all_label_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_jsonl(
        &dir.join("train.jsonl"),
        &[
            chat(
                "Count",
                "One two three four five six seven eight nine ten eleven twelve.",
            ),
            chat("Say hi", "Hi."),
        ],
    );
    let model = common::tiny_llama_dir().display().to_string();
    let run = |name: &str, batch: &str, accum: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ragtune"))
            .args(["train", "generate", "--model", &model, "--data"])
            .arg(dir.join("train.jsonl"))
            .args([
                "--lora-r",
                "4",
                "--lora-dropout",
                "0",
                "--target-modules",
                "all-linear",
            ])
            .args([
                "--batch-size",
                batch,
                "--grad-accum",
                accum,
                "--max-steps",
                "1",
                "--lr",
                "1e-2",
            ])
            .args(["--warmup-ratio", "0", "--output"])
            .arg(dir.join(name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        candle_core::safetensors::load(
            dir.join(name).join("adapter_model.safetensors"),
            &Device::Cpu,
        )
        .unwrap()
    };
    let (whole, accumulated) = (run("whole", "2", "1"), run("accum", "1", "2"));
    // The step's loss and gradient norm (before clipping) are those of the token mean; a mean of
    // the two micro-batches' means would weigh the one-word answer like the long one.
    let logged = |name: &str| -> (f64, f64) {
        let log = std::fs::read_to_string(dir.join(name).join("train_log.jsonl")).unwrap();
        let v: Value = log
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v["kind"] == "loss")
            .unwrap();
        (
            v["loss"].as_f64().unwrap(),
            v["grad_norm"].as_f64().unwrap(),
        )
    };
    let ((l1, g1), (l2, g2)) = (logged("whole"), logged("accum"));
    assert!((l1 - l2).abs() < 1e-5 * l1, "loss {l1} vs {l2}");
    assert!((g1 - g2).abs() < 1e-4 * g1, "gradient norm {g1} vs {g2}");
    for (name, t) in &whole {
        let d = max_diff(
            &t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            &accumulated[name]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
        assert!(d < 1e-4, "{name}: {d}");
    }
}

// The same checks through candle's composed ops: the path CUDA takes (see `common::through_composed_ops`).

#[test]
fn every_adapter_matrix_gets_the_finite_difference_gradient_and_the_base_none_through_composed_ops()
{
    common::through_composed_ops(
        every_adapter_matrix_gets_the_finite_difference_gradient_and_the_base_none,
    );
}

#[test]
fn smollm2_with_a_lora_adapter_gives_peft_logits_through_composed_ops() {
    common::through_composed_ops(smollm2_with_a_lora_adapter_gives_peft_logits);
}

#[test]
fn train_generate_learns_and_resumes_after_a_kill_to_identical_adapters_through_composed_ops() {
    common::through_composed_ops(
        train_generate_learns_and_resumes_after_a_kill_to_identical_adapters,
    );
}

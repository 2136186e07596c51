//! CUDA against the CPU, on the same weights and inputs: encoder embeddings, one embedding
//! training step (MNRL loss and every gradient), one cross-encoder step, one LoRA step. Run for
//! real by `cargo test --features cuda` on a machine with a GPU (scripts/gpu-check.sh carries
//! this test binary to one); elsewhere each test says it is skipped, in the run's summary too.
//! `RAGTUNE_REQUIRE_GPU=1` turns a skip into a failure.

mod common;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use ragtune::models::bert::Mode;
use ragtune::models::{CrossEncoder, CrossEncoderOptions, EncodeOptions, LoadOptions};
use ragtune::train::embed::step::loss_and_grads;
use ragtune::train::optim::{Grads, Params};
use ragtune::train::{LossConfig, LossName, TrainingSet};
use ragtune::SentenceEncoder;

/// Largest difference allowed between the devices (f32, TF32 off: candle's CUDA matmuls are f32).
const TOLERANCE: f32 = 1e-4;

/// The first GPU, or `None` after recording the skip.
fn gpu() -> Option<Device> {
    #[cfg(feature = "cuda")]
    // The first line: candle's driver errors carry a backtrace after it.
    let found =
        Device::new_cuda(0).map_err(|e| e.to_string().lines().next().unwrap_or("").to_string());
    #[cfg(not(feature = "cuda"))]
    let found: Result<Device, String> = Err("this build has no CUDA (--features cuda)".into());
    match found {
        Ok(d) => Some(d),
        Err(why) => {
            if std::env::var("RAGTUNE_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("a CUDA GPU is required (RAGTUNE_REQUIRE_GPU=1): {why}");
            }
            common::record_skip(&format!("no CUDA GPU ({why})"));
            None
        }
    }
}

fn load_encoder(dir: &Path, device: &Device) -> SentenceEncoder {
    SentenceEncoder::load(
        dir.to_str().unwrap(),
        &LoadOptions {
            device: device.clone(),
            dtype: DType::F32,
        },
    )
    .unwrap()
}

const TEXTS: &[&str] = &[
    "what do bees make",
    "bees make honey and wax in the hive",
    "the queen of the brood",
    "how do the bees in my hive make honey from the nectar of flowers",
    "a comb of wax",
    "why do mites swarm",
];

/// Gradients of the same parameters on two devices, compared relative to their scale.
fn assert_grads_match(what: &str, names: &[String], cpu: &Grads, gpu: &Grads) {
    let mut compared = 0;
    for (name, (a, b)) in names.iter().zip(cpu.0.iter().zip(&gpu.0)) {
        match (a, b) {
            (Some(a), Some(b)) => {
                let b = b.to_device(&Device::Cpu).unwrap();
                let scale = common::max_abs(a);
                let diff = common::max_abs_diff(a, &b);
                assert!(
                    diff <= TOLERANCE * scale.max(1.0),
                    "{what} {name}: CPU and CUDA gradients differ by {diff} (scale {scale})"
                );
                compared += 1;
            }
            (None, None) => {}
            _ => panic!("{what} {name}: a gradient on one device only"),
        }
    }
    assert!(compared > 0, "{what}: no gradients compared");
    eprintln!("{what}: {compared} gradients agree within {TOLERANCE} (relative)");
}

/// The folders to compare on: the tiny test model, and `RAGTUNE_GPU_MODEL` (a full-size model,
/// e.g. all-MiniLM-L6-v2's shape with random weights) when set.
fn encoder_folders(tmp: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs = vec![common::write_tiny_model(&tmp.join("tiny"), 24)];
    if let Some(dir) = std::env::var_os("RAGTUNE_GPU_MODEL") {
        dirs.push(dir.into());
    }
    dirs
}

#[test]
fn encoder_embeddings_match_between_cpu_and_cuda() {
    let Some(cuda) = gpu() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for dir in encoder_folders(tmp.path()) {
        let options = EncodeOptions {
            batch_size: 4,
            progress: false,
        };
        let on = |device: &Device| load_encoder(&dir, device).encode(TEXTS, &options).unwrap();
        let (a, b) = (on(&Device::Cpu), on(&cuda));
        let diff = common::max_abs_diff(&a, &b.to_device(&Device::Cpu).unwrap());
        assert!(
            diff <= TOLERANCE,
            "{}: embeddings differ by {diff}",
            dir.display()
        );
        eprintln!("{}: embeddings agree within {diff:e}", dir.display());
    }
}

#[test]
fn an_embedding_training_step_matches_between_cpu_and_cuda() {
    let Some(cuda) = gpu() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let n = TEXTS.len() / 2;
    let data = TrainingSet {
        columns: vec!["anchor".into(), "positive".into()],
        texts: vec![
            TEXTS[..n].iter().map(|s| s.to_string()).collect(),
            TEXTS[n..].iter().map(|s| s.to_string()).collect(),
        ],
        labels: None,
    };
    let batch = data.batch(&(0..n).collect::<Vec<_>>());
    for dir in encoder_folders(tmp.path()) {
        let step = |device: &Device| {
            let encoder = load_encoder(&dir, device);
            let params = Params::from_varmap(&encoder.varmap, |_| false);
            let (loss, _) = LossConfig::named(LossName::Mnrl)
                .build(&LoadOptions::default())
                .unwrap();
            // With dropout: the CPU kernel and CUDA's composed ops must draw the same masks.
            let dropout = ragtune::train::task::BatchDropout {
                rates: ragtune::models::dropout::DropoutRates::uniform(0.1),
                seed: 3,
            };
            let (value, grads) =
                loss_and_grads(&encoder, &params, loss.as_ref(), &batch, None, dropout).unwrap();
            (value, grads, params.names)
        };
        let (cpu_loss, cpu, names) = step(&Device::Cpu);
        let (gpu_loss, gpu, _) = step(&cuda);
        assert!(
            (cpu_loss - gpu_loss).abs() <= TOLERANCE as f64,
            "{}: MNRL loss {cpu_loss} on the CPU, {gpu_loss} on CUDA",
            dir.display()
        );
        assert_grads_match(&format!("{} MNRL", dir.display()), &names, &cpu, &gpu);
    }
}

#[test]
fn a_cross_encoder_step_matches_between_cpu_and_cuda() {
    let Some(cuda) = gpu() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::write_tiny_model(&tmp.path().join("m"), 24);
    let pairs: Vec<(&str, &str)> = vec![
        (TEXTS[0], TEXTS[1]),
        (TEXTS[5], TEXTS[2]),
        (TEXTS[3], TEXTS[4]),
    ];
    let step = |device: &Device| {
        let model = CrossEncoder::load(
            dir.to_str().unwrap(),
            &LoadOptions {
                device: device.clone(),
                dtype: DType::F32,
            },
            &CrossEncoderOptions::default(),
        )
        .unwrap();
        let encodings = model.tokenize_pairs(&pairs).unwrap();
        let refs: Vec<&tokenizers::Encoding> = encodings.iter().collect();
        let dropout = ragtune::models::dropout::DropoutRates::uniform(0.1).draw(3, 0);
        let logits = model
            .logits(&refs, Mode::Train(dropout))
            .unwrap()
            .squeeze(1)
            .unwrap();
        let targets = Tensor::new(&[1f32, 0., 1.], device).unwrap();
        let loss = candle_nn::loss::binary_cross_entropy_with_logit(&logits, &targets).unwrap();
        let params = Params::from_varmap(&model.varmap, |_| false);
        let grads = Grads::from_store(&params, &loss.backward().unwrap());
        (loss.to_scalar::<f32>().unwrap(), grads, params.names)
    };
    let (cpu_loss, cpu, names) = step(&Device::Cpu);
    let (gpu_loss, gpu, _) = step(&cuda);
    assert!(
        (cpu_loss - gpu_loss).abs() <= TOLERANCE,
        "BCE {cpu_loss} vs {gpu_loss}"
    );
    assert_grads_match("cross-encoder BCE", &names, &cpu, &gpu);
}

#[test]
fn a_lora_step_matches_between_cpu_and_cuda() {
    use ragtune::llm::{LocalLlm, LocalOptions};
    use ragtune::models::lora::LoraConfig;
    use ragtune::train::generate::{GenerateTask, SftOptions, SftSet};
    let Some(cuda) = gpu() else { return };
    let lora = LoraConfig {
        r: 2,
        lora_alpha: 4.0,
        lora_dropout: 0.0,
        target_modules: vec!["all-linear".into()],
        init_lora_weights: false,
        ..Default::default()
    };
    let rows: Vec<(usize, serde_json::Map<String, serde_json::Value>)> = TEXTS
        .chunks(2)
        .enumerate()
        .map(|(i, qa)| {
            let row = serde_json::json!({"messages": [
                {"role": "user", "content": qa[0]}, {"role": "assistant", "content": qa[1]}]});
            (i + 1, row.as_object().unwrap().clone())
        })
        .collect();
    // The local LLM loads onto the process's device: this is the only test here that sets it.
    let step = |device: &str| {
        ragtune::models::device::set_default(device).unwrap();
        let options = LocalOptions {
            q8_decode: false,
            ..Default::default()
        };
        let mut llm = LocalLlm::load(common::tiny_llama_dir().to_str().unwrap(), &options).unwrap();
        llm.model_mut().add_lora(&lora).unwrap();
        let set = SftSet::from_records(rows.clone(), &llm, &SftOptions::default(), "test").unwrap();
        let task = GenerateTask::new(&llm, &set, None, lora.clone(), 1).unwrap();
        let params = ragtune::train::TrainTask::params(&task);
        let (nll, n) = task.nll(&set, &[0, 1, 2], None).unwrap();
        let loss = (nll / n as f64).unwrap();
        let grads = Grads::from_store(&params, &loss.backward().unwrap());
        (loss.to_scalar::<f32>().unwrap(), grads, params.names)
    };
    let (cpu_loss, cpu, names) = step("cpu");
    let (gpu_loss, gpu, _) = step(&ragtune::models::device::name(&cuda));
    ragtune::models::device::set_default("cpu").unwrap();
    assert!(
        (cpu_loss - gpu_loss).abs() <= TOLERANCE,
        "LoRA loss {cpu_loss} vs {gpu_loss}"
    );
    assert_grads_match("LoRA", &names, &cpu, &gpu);
}

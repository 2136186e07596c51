//! Script bindings of the training stage: `training_pairs`, `train`, and what a run returns.

use std::path::Path;
use std::sync::Arc;

use rhai::Map;

use super::{fail, options, Fallible, Registry};
use crate::models::{LoadOptions, SentenceEncoder};
use crate::script::values::{Chart, Dataset, Encoder, Frame, TrainRun};
use crate::train::log::TrainLog;
use crate::train::{EmbedTrainer, LossConfig, TrainConfig, TrainingSet};

pub(super) fn register(r: &mut Registry) {
    r.value::<TrainRun>("TrainRun");
    bind!(
        r,
        "training_pairs",
        "training_pairs(data: Dataset) -> Frame",
        "The (anchor, positive) pairs of a dataset's relevance judgements, ready for mine() or train().",
        example: "let pairs = training_pairs(data); pairs.head(3)",
        |d: Dataset| -> Fallible<Frame> {
            TrainingSet::from_retrieval(&d.0).and_then(|s| s.to_frame()).map(Frame).map_err(fail)
        },
    );
    bind!(
        r,
        "train",
        "train(model: String, data: Frame, options: #{output, loss, dev, resume, epochs, lr, batch_size, …}) -> TrainRun",
        "Fine-tunes a sentence encoder (loaded fresh from `model`) on a frame whose text columns are read by \
         position. `output` (required) is where the model, checkpoints, log, chart and card go; `loss` is a loss \
         name (\"mnrl\", \"cached_mnrl\", \"gist\", \"triplet\", \"cosent\", \"margin_mse\", \"mnrl_symmetric\") or a map \
         #{name, scale, mini_batch_size, matryoshka_dims, …}; `dev` a Dataset evaluated before, during and after; \
         every other key is a TrainConfig field (epochs, max_steps, batch_size, lr, warmup_ratio, weight_decay, \
         scheduler, max_grad_norm, gradient_accumulation_steps, seed, batch_sampler, eval_steps, save_steps).",
        example: "let run = train(\"sentence-transformers/all-MiniLM-L6-v2\", pairs, #{output: \"runs/tuned\", loss: \"mnrl\", epochs: 1, batch_size: 32, lr: 2e-5, dev: dev}); print(run)",
        |model: &str, data: Frame, opts: Map| -> Fallible<TrainRun> { train(model, &data, opts) },
    );
    r.engine
        .register_get("encoder", |t: &mut TrainRun| t.encoder.clone());
    r.engine.register_get("output", |t: &mut TrainRun| {
        t.outcome.output.display().to_string()
    });
    bind!(
        r,
        "summary",
        "run.summary() -> Map",
        "steps, seconds, seconds_per_step, final_loss, dev_before, dev_after, best, … of a training run.",
        example: "run.summary()[\"final_loss\"]",
        |t: &mut TrainRun| -> Fallible<Map> {
            let value = serde_json::to_value(&*t.outcome).map_err(|e| e.to_string())?;
            rhai::serde::to_dynamic(value)?.try_cast::<Map>().ok_or_else(|| "summary is not a map".into())
        },
    );
    bind!(
        r,
        "log",
        "run.log() -> Frame",
        "The loss log (train_log.jsonl of the output folder) as a frame.",
        example: "run.log().tail(3)",
        |t: &mut TrainRun| -> Fallible<Frame> {
            crate::data::read_table(&t.outcome.output.join("train_log.jsonl"))
                .map(Frame)
                .map_err(fail)
        },
    );
    bind!(
        r,
        "chart",
        "run.chart() -> Chart",
        "Loss per step and the dev metric, as a plotly chart.",
        |t: &mut TrainRun| -> Fallible<Chart> {
            let log = TrainLog::read(&t.outcome.output.join("train_log.jsonl")).map_err(fail)?;
            Ok(Chart(log.chart(&t.outcome.metric)))
        },
    );
}

/// The keys of train()'s options map that are the run's rather than `TrainConfig` fields.
pub(super) const RUN_KEYS: &[&str] = &["output", "loss", "dev", "resume"];

/// Splits the options map: `output`, `loss`, `dev` and `resume` are the run's; every other key
/// must be a `TrainConfig` field.
fn train(model: &str, data: &Frame, mut opts: Map) -> Fallible<TrainRun> {
    let take = |opts: &mut Map, key: &str| opts.remove(key);
    let output = take(&mut opts, "output")
        .ok_or("train options need `output`: the folder for the model and its checkpoints")?
        .into_string()
        .map_err(|t| format!("train option `output` must be a string, found {t}"))?;
    let loss = match take(&mut opts, "loss") {
        None => LossConfig::default(),
        Some(v) if v.is_string() => LossConfig::named(v.into_string()?.parse().map_err(fail)?),
        Some(v) => match v.try_cast::<Map>() {
            Some(map) => options(map, "loss options")?,
            None => return Err("train option `loss` must be a loss name or a map".into()),
        },
    };
    let dev = match take(&mut opts, "dev") {
        None => None,
        Some(v) => Some(
            v.try_cast::<Dataset>()
                .ok_or("train option `dev` must be a Dataset (load_beir(…))")?,
        ),
    };
    let resume = match take(&mut opts, "resume") {
        None => false,
        Some(v) => v
            .as_bool()
            .map_err(|t| format!("train option `resume` must be true or false, found {t}"))?,
    };
    let config: TrainConfig = options(opts, "train options")?;
    let set = TrainingSet::from_frame(&data.0, "the training frame").map_err(fail)?;
    let mut encoder = SentenceEncoder::load(model, &LoadOptions::default()).map_err(fail)?;
    let outcome = EmbedTrainer {
        encoder: &encoder,
        data: &set,
        loss,
        config,
        dev: dev.as_ref().map(|d| d.0.as_ref()),
    }
    .run(Path::new(&output), resume)
    .map_err(fail)?;
    // From here on the encoder is the tuned model: name it by where it was saved, so reports and
    // side-by-side tables tell base and tuned apart.
    encoder.set_name(output.clone());
    Ok(TrainRun {
        outcome: Arc::new(outcome),
        encoder: Encoder(Arc::new(encoder)),
    })
}

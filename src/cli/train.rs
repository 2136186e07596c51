//! `ragtune train embed` and `ragtune train rerank`. Settings given as flags replace the stage's
//! defaults (`TrainConfig::default()` / `TrainConfig::rerank()`, each loss's settings struct); a
//! flag left out keeps the default, which lives in the library only.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use ragtune::data::load_beir;
use ragtune::mine::source::MinedFrom;
use ragtune::models::{CrossEncoder, CrossEncoderOptions, LoadOptions, SentenceEncoder};
use ragtune::train::rerank::{
    default_config, RerankJob, RerankLossConfig, RerankSet, RerankSides, DEFAULT_RETRIEVER,
};
use ragtune::train::{EmbedTrainer, LossConfig, LossName, TrainConfig, TrainOutcome};
use serde_json::{json, Map, Value};

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Fine-tune a sentence-transformers embedding model (contrastive losses).
    Embed(Box<EmbedArgs>),
    /// Fine-tune a cross-encoder reranker (from a reranker, or any BERT / sentence-transformers
    /// model with a fresh head).
    Rerank(Box<RerankArgs>),
    /// Fine-tune a Llama-family generator with LoRA (or QLoRA) adapters, saved in PEFT's format.
    Generate(Box<GenerateArgs>),
}

/// The settings every stage shares; each unset flag keeps the stage's default.
#[derive(Args)]
pub struct LoopArgs {
    #[arg(long)]
    epochs: Option<usize>,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    max_steps: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    /// Warm-up as a share of all steps.
    #[arg(long)]
    warmup_ratio: Option<f64>,
    /// Warm-up steps (instead of --warmup-ratio).
    #[arg(long)]
    warmup_steps: Option<usize>,
    #[arg(long)]
    weight_decay: Option<f64>,
    /// linear, cosine or constant (after warm-up).
    #[arg(long)]
    scheduler: Option<String>,
    /// Clip the global gradient norm to this (0 disables).
    #[arg(long)]
    max_grad_norm: Option<f64>,
    #[arg(long)]
    gradient_accumulation_steps: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// no_duplicates (no text twice in a batch) or plain.
    #[arg(long)]
    sampler: Option<String>,
    /// Evaluate on the dev data every this many steps (and before and after training).
    #[arg(long)]
    eval_steps: Option<usize>,
    /// Dev metric that picks the best model (e.g. ndcg@10).
    #[arg(long)]
    metric_for_best: Option<String>,
    /// Checkpoint every this many steps.
    #[arg(long)]
    save_steps: Option<usize>,
    /// Matrix products in f32, bf16 or f16 (mixed precision, for CUDA; as bf16=True / fp16=True).
    #[arg(long)]
    precision: Option<String>,
    /// Encoder dropout in training at every site (0 turns it off). Default: `train embed`, the
    /// model's own rates from its config.json (0.1 for BERT and MiniLM), as sentence-transformers
    /// trains; `train rerank`, 0 (rerankers trained better without; 0.1 matches
    /// sentence-transformers).
    #[arg(long)]
    dropout: Option<f64>,
    /// Where the model, checkpoints, log, chart and model card go.
    #[arg(long)]
    output: PathBuf,
    /// Continue from the newest checkpoint in --output.
    #[arg(long)]
    resume: bool,
}

impl LoopArgs {
    /// `base` with the given flags set.
    fn config(&self, base: TrainConfig) -> Result<TrainConfig> {
        let mut set = Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(v) = value {
                set.insert(key.to_string(), v);
            }
        };
        put("epochs", self.epochs.map(|v| json!(v)));
        put("max_steps", self.max_steps.map(|v| json!(v)));
        put("batch_size", self.batch_size.map(|v| json!(v)));
        put("lr", self.lr.map(|v| json!(v)));
        put("warmup_ratio", self.warmup_ratio.map(|v| json!(v)));
        put("warmup_steps", self.warmup_steps.map(|v| json!(v)));
        put("weight_decay", self.weight_decay.map(|v| json!(v)));
        put("scheduler", self.scheduler.as_ref().map(|v| json!(v)));
        put("max_grad_norm", self.max_grad_norm.map(|v| json!(v)));
        put(
            "gradient_accumulation_steps",
            self.gradient_accumulation_steps.map(|v| json!(v)),
        );
        put("seed", self.seed.map(|v| json!(v)));
        put(
            "batch_sampler",
            self.sampler.as_ref().map(|v| json!(v.replace('-', "_"))),
        );
        put("eval_steps", self.eval_steps.map(|v| json!(v)));
        put(
            "metric_for_best",
            self.metric_for_best.as_ref().map(|v| json!(v)),
        );
        put("save_steps", self.save_steps.map(|v| json!(v)));
        put("dropout", self.dropout.map(|v| json!(v)));
        if let Some(p) = &self.precision {
            let p = ragtune::models::precision::Precision::parse(p)?;
            put("precision", Some(json!(p.name())));
        }
        base.overlay(set)
            .map_err(|e| anyhow::anyhow!("training flags: {e}"))
    }
}

#[derive(Args)]
pub struct EmbedArgs {
    /// Base model: local folder or hub id (owner/name[@revision]).
    #[arg(long)]
    model: String,
    #[command(flatten)]
    data: super::DataArgs,
    /// mnrl, mnrl_symmetric, cached_mnrl, gist, triplet, cosent or margin_mse.
    #[arg(long, default_value = "mnrl")]
    loss: LossName,
    /// GradCache mini-batch size (cached_mnrl defaults to 32).
    #[arg(long)]
    mini_batch_size: Option<usize>,
    /// Similarity scale of mnrl / cosent (default 20).
    #[arg(long)]
    scale: Option<f64>,
    /// Triplet margin (default 5).
    #[arg(long)]
    margin: Option<f64>,
    /// Guide model of the gist loss.
    #[arg(long)]
    guide_model: Option<String>,
    /// Temperature of the gist loss (default 0.01).
    #[arg(long)]
    temperature: Option<f64>,
    /// Wrap the loss in MatryoshkaLoss at these dimensions, e.g. 384,256,128,64.
    #[arg(long, value_delimiter = ',')]
    matryoshka_dims: Vec<usize>,
    /// Weight of each Matryoshka dimension (default 1 each).
    #[arg(long, value_delimiter = ',')]
    matryoshka_weights: Vec<f64>,
    #[command(flatten)]
    run: LoopArgs,
    /// BEIR folder to evaluate on before, during (--eval-steps) and after training.
    #[arg(long)]
    dev_beir: Option<PathBuf>,
    #[arg(long, default_value = "dev")]
    dev_split: String,
}

#[derive(Args)]
pub struct RerankArgs {
    /// Base model: a cross-encoder, or a BERT / sentence-transformers folder or hub id (a fresh
    /// one-label head is added).
    #[arg(long)]
    model: String,
    /// (query, document, label) pairs, (query, positive, negative_1..n) rows or (query,
    /// [documents], [labels]) lists, as `mine` writes them (.jsonl/.csv/.tsv/.parquet).
    #[arg(long)]
    data: PathBuf,
    /// Use only these columns, in this order.
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
    /// bce, mnrl, list_net, lambda, rank_net or margin_mse (default: lambda at lr 1e-4 for
    /// n-tuples and labeled lists, bce for labeled pairs).
    #[arg(long)]
    loss: Option<String>,
    /// A loss setting as key=value (repeatable), e.g. pos_weight=5, num_negatives=8,
    /// weighting_scheme=ndcg_loss2pp, k=10, mini_batch_size=64, activation_fn=sigmoid.
    #[arg(long = "loss-setting", value_name = "KEY=VALUE")]
    loss_settings: Vec<String>,
    /// Truncate (query, document) pairs to this many tokens (default: the tokenizer's limit, 512
    /// for MiniLM).
    #[arg(long)]
    max_length: Option<usize>,
    #[command(flatten)]
    run: LoopArgs,
    /// BEIR folder whose queries are reranked on dev before, during and after training.
    #[arg(long)]
    dev_beir: Option<PathBuf>,
    #[arg(long, default_value = "dev")]
    dev_split: String,
    /// Retriever whose top-k is reranked on dev and for the fusion weight (default: the model
    /// the data was mined with, as `mine` records it in DATA.source.json; else
    /// sentence-transformers/all-MiniLM-L6-v2).
    #[arg(long)]
    retriever: Option<String>,
    /// Candidates per dev query during training (a final top-100 is `eval rerank`'s job).
    #[arg(long, default_value_t = RerankSides::default().dev_top_k)]
    dev_top_k: usize,
    /// BEIR folder whose queries choose the weight that fuses the reranker with `--retriever`
    /// (saved as `fusion.json` in the output, which `eval rerank` then uses): one query in
    /// `--fusion-every` of `--fusion-split` is held out, and training rows asking those queries
    /// are left out. Use the split the training data was mined from, never the one you report.
    /// Default: the BEIR folder and split the data was mined from, as `mine` records them in
    /// DATA.source.json.
    #[arg(long)]
    fusion_beir: Option<PathBuf>,
    /// Default: the split the data was mined from, else `train`.
    #[arg(long)]
    fusion_split: Option<String>,
    /// Train on every row and choose no fusion weight, even where the data's record names the
    /// queries it was mined from.
    #[arg(long, conflicts_with = "fusion_beir")]
    no_fusion: bool,
    /// Hold out the queries whose id's SHA-256 is divisible by this (10: about one in ten; 1: the
    /// whole split, for a split kept apart from training already).
    #[arg(long, default_value_t = RerankSides::default().fusion_every)]
    fusion_every: usize,
    /// Retrieved candidates per held-out query.
    #[arg(long, default_value_t = RerankSides::default().fusion_top_k)]
    fusion_top_k: usize,
    /// Keep the retriever's embeddings here, for the dev and held-out retrieval (default: the
    /// `--cache-dir` the data was mined with, as DATA.source.json records it).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Base model: `local:` + a GGUF file, `owner/repo/file.gguf` in the hub cache, or a Hugging
    /// Face Llama folder / id (the `local:` prefix is optional).
    #[arg(long)]
    model: String,
    /// Rows of `messages` (chat), `prompt` + `completion`, or `text` (.jsonl/.parquet/.csv).
    #[arg(long)]
    data: PathBuf,
    /// Dev rows in the same form: loss and perplexity before, during (--eval-steps) and after
    /// training; the best adapter is kept in OUTPUT/best.
    #[arg(long)]
    dev_data: Option<PathBuf>,
    /// LoRA rank (default 16).
    #[arg(long)]
    lora_r: Option<usize>,
    /// LoRA alpha (default 32).
    #[arg(long)]
    lora_alpha: Option<f64>,
    /// Dropout on the adapters' input (default 0.05).
    #[arg(long)]
    lora_dropout: Option<f64>,
    /// Layers to adapt, e.g. q_proj,v_proj or all-linear (default q_proj,k_proj,v_proj,o_proj).
    #[arg(long, value_delimiter = ',')]
    target_modules: Vec<String>,
    /// Scale adapters by alpha/√r (rsLoRA) instead of alpha/r.
    #[arg(long)]
    use_rslora: bool,
    /// QLoRA: keep the frozen base in its GGUF block format, dequantized layer by layer.
    #[arg(long)]
    qlora: bool,
    /// Tokens per example; longer ones keep their start (default 1024).
    #[arg(long)]
    max_length: Option<usize>,
    /// Put several short examples in one row.
    #[arg(long)]
    packing: bool,
    /// Train on every token, not only the answers.
    #[arg(long)]
    all_tokens: bool,
    /// Gradient accumulation steps (same as --gradient-accumulation-steps).
    #[arg(long)]
    grad_accum: Option<usize>,
    #[command(flatten)]
    run: LoopArgs,
}

pub fn run(cmd: TrainCommand) -> Result<()> {
    let outcome = match cmd {
        TrainCommand::Embed(a) => embed(*a)?,
        TrainCommand::Rerank(a) => rerank(*a)?,
        TrainCommand::Generate(a) => generate(*a)?,
    };
    eprintln!(
        "trained {} steps in {:.1} s ({:.2} s/step), final loss {:.4}; model, log, chart and card in {}",
        outcome.steps,
        outcome.seconds,
        outcome.seconds_per_step,
        outcome.final_loss,
        outcome.output.display()
    );
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}

fn embed(a: EmbedArgs) -> Result<TrainOutcome> {
    let data = a.data.load()?;
    let dev = a
        .dev_beir
        .as_ref()
        .map(|d| load_beir(d, &a.dev_split))
        .transpose()?;
    let encoder = SentenceEncoder::load(&a.model, &LoadOptions::default())?;
    let trainer = EmbedTrainer {
        encoder: &encoder,
        data: &data,
        loss: LossConfig {
            name: a.loss,
            scale: a.scale,
            margin: a.margin,
            temperature: a.temperature,
            guide_model: a.guide_model,
            mini_batch_size: a.mini_batch_size,
            matryoshka_dims: a.matryoshka_dims,
            matryoshka_weights: a.matryoshka_weights,
        },
        config: a.run.config(TrainConfig::default())?,
        dev: dev.as_ref(),
    };
    eprintln!(
        "training {} on {} examples (columns {}) -> {}",
        encoder.name(),
        data.len(),
        data.columns.join(", "),
        a.run.output.display()
    );
    trainer.run(&a.run.output, a.run.resume)
}

fn rerank(a: RerankArgs) -> Result<TrainOutcome> {
    let data = RerankSet::load(&a.data, &a.columns)?;
    let mut loss = match &a.loss {
        Some(name) => Map::from_iter([("name".to_string(), json!(name.replace('-', "_")))]),
        None => match serde_json::to_value(RerankLossConfig::default_for(data.format))? {
            Value::Object(map) => map,
            other => anyhow::bail!("a loss's settings serialise to an object, not {other}"),
        },
    };
    for kv in &a.loss_settings {
        let Some((k, v)) = kv.split_once('=') else {
            anyhow::bail!("--loss-setting `{kv}`: expected KEY=VALUE");
        };
        // Numbers and booleans as JSON, anything else as a string.
        let value = serde_json::from_str(v).unwrap_or_else(|_| json!(v));
        loss.insert(k.trim().to_string(), value);
    }
    let loss = RerankLossConfig::from_json(Value::Object(loss))?;
    let model = CrossEncoder::load(
        &a.model,
        &LoadOptions::default(),
        &CrossEncoderOptions {
            max_length: a.max_length,
            ..Default::default()
        },
    )?;
    let config = a.run.config(default_config(&loss))?;
    // What `mine` recorded beside the data: the retriever and the queries it mined for.
    let mined_from = MinedFrom::read(&a.data, data.len())?;
    let retriever_name = a
        .retriever
        .clone()
        .or_else(|| mined_from.as_ref().map(|m| m.model.clone()));
    let fusion_queries = match (&a.fusion_beir, a.no_fusion) {
        (Some(dir), _) => Some((
            dir.clone(),
            a.fusion_split.clone().unwrap_or_else(|| "train".into()),
        )),
        (None, true) => None,
        (None, false) => mined_from
            .as_ref()
            .and_then(|m| m.beir_queries())
            .map(|(dir, split)| {
                eprintln!(
                    "{} was mined from split `{split}` of {} with {} (its .source.json): \
                     its queries choose the fusion weight (--no-fusion: none)",
                    a.data.display(),
                    dir.display(),
                    retriever_name.as_deref().unwrap_or(DEFAULT_RETRIEVER)
                );
                (
                    dir.to_path_buf(),
                    a.fusion_split.clone().unwrap_or_else(|| split.into()),
                )
            }),
    };
    let dev = a
        .dev_beir
        .as_ref()
        .map(|dir| load_beir(dir, &a.dev_split))
        .transpose()?;
    let fusion = fusion_queries
        .map(|(dir, split)| load_beir(&dir, &split))
        .transpose()?;
    let retriever = match retriever_name {
        Some(name) if dev.is_some() || fusion.is_some() => {
            Some(SentenceEncoder::load(&name, &LoadOptions::default())?)
        }
        _ => None,
    };
    RerankJob {
        model: &model,
        data,
        loss,
        config,
        retriever: retriever.as_ref(),
        dev: dev.as_ref(),
        fusion: fusion.as_ref(),
        fusion_by_default: a.fusion_beir.is_none(),
        sides: RerankSides {
            dev_top_k: a.dev_top_k,
            fusion_every: a.fusion_every,
            fusion_top_k: a.fusion_top_k,
            cache_dir: a.cache_dir.or_else(|| mined_from?.options.cache_dir),
        },
    }
    .run(&a.run.output, a.run.resume)
}

fn generate(a: GenerateArgs) -> Result<TrainOutcome> {
    use ragtune::llm::{LocalLlm, LocalOptions};
    use ragtune::models::lora::LoraConfig;
    use ragtune::train::generate::{train_generator, SftOptions, SftSet};
    let spec = a.model.strip_prefix("local:").unwrap_or(&a.model);
    let mut llm = LocalLlm::load(
        spec,
        &LocalOptions {
            q8_decode: false,
            quantized_base: a.qlora,
            ..Default::default()
        },
    )?;
    let defaults = SftOptions::default();
    let options = SftOptions {
        max_length: a.max_length.unwrap_or(defaults.max_length),
        completion_only: !a.all_tokens,
        packing: a.packing,
    };
    let data = SftSet::from_path(&a.data, &llm, &options)?;
    let dev = a
        .dev_data
        .as_ref()
        .map(|p| {
            SftSet::from_path(
                p,
                &llm,
                &SftOptions {
                    packing: false,
                    ..options.clone()
                },
            )
        })
        .transpose()?;
    let base = LoraConfig::default();
    let lora = LoraConfig {
        r: a.lora_r.unwrap_or(base.r),
        lora_alpha: a.lora_alpha.unwrap_or(base.lora_alpha),
        lora_dropout: a.lora_dropout.unwrap_or(base.lora_dropout),
        target_modules: if a.target_modules.is_empty() {
            base.target_modules.clone()
        } else {
            a.target_modules.clone()
        },
        use_rslora: a.use_rslora,
        seed: a.run.seed.unwrap_or(base.seed),
        ..base.clone()
    };
    let mut config = a.run.config(TrainConfig::generate())?;
    if let Some(g) = a.grad_accum {
        config.gradient_accumulation_steps = g;
    }
    eprintln!(
        "training LoRA r {} on {} of {} ({}): {} examples in {} rows, {} label tokens ({} truncated to {}) -> {}",
        lora.r,
        lora.targets()?.join(","),
        llm.name(),
        if a.qlora { "QLoRA, quantized base" } else { "f32 base" },
        data.examples.len(),
        data.len(),
        data.label_tokens(),
        data.truncated,
        options.max_length,
        a.run.output.display()
    );
    train_generator(
        &mut llm,
        &data,
        dev.as_ref(),
        &lora,
        &config,
        &a.run.output,
        a.run.resume,
    )
}

//! `ragtune train embed`: fine-tune a sentence encoder.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use ragtune::data::load_beir;
use ragtune::models::{LoadOptions, SentenceEncoder};
use ragtune::train::schedule::Decay;
use ragtune::train::{BatchSampler, LossConfig, LossName, TrainConfig, Trainer};

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Fine-tune a sentence-transformers embedding model (contrastive losses).
    Embed(EmbedArgs),
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
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    max_steps: Option<usize>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    #[arg(long, default_value_t = 0.0)]
    warmup_ratio: f64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// linear, cosine or constant (after warm-up).
    #[arg(long, default_value = "linear", value_parser = parse_decay)]
    scheduler: Decay,
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    #[arg(long, default_value_t = 1)]
    gradient_accumulation_steps: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// no_duplicates (no text twice in a batch) or plain.
    #[arg(long, default_value = "no_duplicates", value_parser = parse_sampler)]
    sampler: BatchSampler,
    /// GradCache mini-batch size (cached_mnrl defaults to 32).
    #[arg(long)]
    mini_batch_size: Option<usize>,
    /// Similarity scale of mnrl / cosent.
    #[arg(long)]
    scale: Option<f64>,
    /// Triplet margin.
    #[arg(long)]
    margin: Option<f64>,
    /// Guide model of the gist loss.
    #[arg(long)]
    guide_model: Option<String>,
    /// Wrap the loss in MatryoshkaLoss at these dimensions, e.g. 384,256,128,64.
    #[arg(long, value_delimiter = ',')]
    matryoshka_dims: Vec<usize>,
    /// Where the model, checkpoints, log, chart and model card go.
    #[arg(long)]
    output: PathBuf,
    /// BEIR folder to evaluate on before, during (--eval-steps) and after training.
    #[arg(long)]
    dev_beir: Option<PathBuf>,
    #[arg(long, default_value = "dev")]
    dev_split: String,
    #[arg(long)]
    eval_steps: Option<usize>,
    /// Checkpoint every this many steps.
    #[arg(long, default_value_t = 50)]
    save_steps: usize,
    /// Continue from the newest checkpoint in --output.
    #[arg(long)]
    resume: bool,
}

fn parse_decay(s: &str) -> Result<Decay> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| anyhow::anyhow!("`{s}`: choose linear, cosine or constant"))
}

fn parse_sampler(s: &str) -> Result<BatchSampler> {
    serde_json::from_value(serde_json::Value::String(s.replace('-', "_")))
        .map_err(|_| anyhow::anyhow!("`{s}`: choose no_duplicates or plain"))
}

pub fn run(cmd: TrainCommand) -> Result<()> {
    let TrainCommand::Embed(a) = cmd;
    let data = a.data.load()?;
    let dev = a
        .dev_beir
        .as_ref()
        .map(|d| load_beir(d, &a.dev_split))
        .transpose()?;
    let encoder = SentenceEncoder::load(&a.model, &LoadOptions::default())?;
    let trainer = Trainer {
        encoder: &encoder,
        data: &data,
        loss: LossConfig {
            name: a.loss,
            scale: a.scale,
            margin: a.margin,
            guide_model: a.guide_model,
            mini_batch_size: a.mini_batch_size,
            matryoshka_dims: a.matryoshka_dims,
            ..Default::default()
        },
        config: TrainConfig {
            epochs: a.epochs,
            max_steps: a.max_steps,
            batch_size: a.batch_size,
            lr: a.lr,
            weight_decay: a.weight_decay,
            warmup_ratio: a.warmup_ratio,
            scheduler: a.scheduler,
            max_grad_norm: a.max_grad_norm,
            gradient_accumulation_steps: a.gradient_accumulation_steps,
            seed: a.seed,
            batch_sampler: a.sampler,
            eval_steps: a.eval_steps,
            save_steps: a.save_steps,
            ..Default::default()
        },
        dev: dev.as_ref(),
    };
    eprintln!(
        "training {} on {} examples ({}) -> {}",
        encoder.name(),
        data.len(),
        data.columns.join(", "),
        a.output.display()
    );
    let outcome = trainer.run(&a.output, a.resume)?;
    eprintln!(
        "trained {} steps in {:.1} s ({:.2} s/step), final loss {:.4}; model, log, chart and card in {}",
        outcome.steps,
        outcome.seconds,
        outcome.seconds_per_step,
        outcome.final_loss,
        a.output.display()
    );
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}

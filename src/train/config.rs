//! The trainer's settings, shared by Rust, scripts (`#{epochs: 1, lr: 2e-5}`) and the CLI.
//! Defaults are sentence-transformers' / Hugging Face Trainer's, except the batch sampler, which
//! defaults to NO_DUPLICATES because the in-batch-negative losses need it.

use serde::{Deserialize, Serialize};

use super::sampler::BatchSampler;
use super::schedule::Decay;
use crate::models::bert::BertConfig;
use crate::models::dropout::DropoutRates;
use crate::models::precision::Precision;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    /// Stop after this many optimizer steps (overrides `epochs` when smaller).
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Warm-up as a share of all steps (rounded up), unless `warmup_steps` is given.
    pub warmup_ratio: f64,
    pub warmup_steps: Option<usize>,
    /// Decay after warm-up: linear, cosine or constant.
    pub scheduler: Decay,
    /// Clip the global gradient norm to this (0 disables).
    pub max_grad_norm: f64,
    /// Batches whose gradients are summed (averaged) before each optimizer step.
    pub gradient_accumulation_steps: usize,
    pub seed: u64,
    pub batch_sampler: BatchSampler,
    /// Evaluate on the dev set every this many steps (and before and after training).
    pub eval_steps: Option<usize>,
    /// Dev metric that picks the best checkpoint.
    pub metric_for_best: String,
    /// Write a resumable checkpoint every this many steps (and at the end).
    pub save_steps: usize,
    pub progress: bool,
    /// The type matrix products run in: f32, bf16 or f16 (mixed precision; weights, optimizer
    /// and gradients stay f32, f16 adds dynamic loss scaling). Meant for CUDA.
    pub precision: Precision,
    /// Dropout while training an encoder (BERT): unset (the embedding stage's default), the
    /// model's own rates from its `config.json` (`hidden_dropout_prob`,
    /// `attention_probs_dropout_prob`, `classifier_dropout`; 0.1 for BERT and MiniLM), as
    /// sentence-transformers trains in `model.train()` mode; a number sets every site to it (0
    /// turns dropout off, the reranker stage's default: see [`Self::rerank`]). The generator's
    /// adapters have their own `lora_dropout`.
    pub dropout: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            max_steps: None,
            batch_size: 32,
            lr: 5e-5,
            weight_decay: 0.0,
            warmup_ratio: 0.0,
            warmup_steps: None,
            scheduler: Decay::Linear,
            max_grad_norm: 1.0,
            gradient_accumulation_steps: 1,
            seed: 42,
            batch_sampler: BatchSampler::NoDuplicates,
            eval_steps: None,
            metric_for_best: "ndcg@10".into(),
            save_steps: 50,
            progress: true,
            precision: Precision::F32,
            dropout: None,
        }
    }
}

impl TrainConfig {
    /// The reranker stage's defaults: batches of 16 rows drawn plainly (a query repeats across
    /// labeled pairs, so NO_DUPLICATES would starve batches), a learning rate that a freshly
    /// initialised classification head needs, 10 % warm-up, and no dropout: on SciFact,
    /// LambdaLoss rerankers from MiniLM with a fresh head scored 0.15–0.22 NDCG@10 alone with
    /// MiniLM's dropout 0.1 (sentence-transformers' training mode; `dropout: 0.1` restores it)
    /// and 0.50–0.58 without, fused +0.006–0.021 over the retriever against +0.036–0.042.
    pub fn rerank() -> Self {
        Self {
            batch_size: 16,
            lr: 5e-5,
            warmup_ratio: 0.1,
            batch_sampler: BatchSampler::Plain,
            dropout: Some(0.0),
            ..Self::default()
        }
    }

    /// The generator stage's defaults (supervised fine-tuning with LoRA): lr 2e-4 (the common
    /// LoRA recipe; TRL's SFTConfig defaults to 2e-5, which barely moves a fresh adapter),
    /// batches of 4 rows, 3 % warm-up then cosine decay, the best adapter by dev loss.
    pub fn generate() -> Self {
        Self {
            batch_size: 4,
            lr: 2e-4,
            warmup_ratio: 0.03,
            scheduler: Decay::Cosine,
            batch_sampler: BatchSampler::Plain,
            metric_for_best: "eval_loss".into(),
            ..Self::default()
        }
    }

    /// The dropout rates of training `model` (see [`Self::dropout`]); a rate outside [0, 1),
    /// from the setting or from the model's `config.json`, is an error.
    pub fn dropout_rates(&self, model: &BertConfig) -> anyhow::Result<DropoutRates> {
        let rates = match self.dropout {
            Some(p) => DropoutRates::uniform(p),
            None => model.dropout_rates(),
        };
        rates.validate().map_err(|e| {
            anyhow::anyhow!(
                "{e} ({})",
                if self.dropout.is_some() {
                    "the `dropout` setting"
                } else {
                    "the model's config.json dropout rates"
                }
            )
        })?;
        Ok(rates)
    }

    /// Whether a smaller `metric_for_best` is better: losses and perplexity (as Hugging Face
    /// Trainer decides `greater_is_better` from a name ending in `loss`).
    pub fn lower_is_better(&self) -> bool {
        self.metric_for_best.ends_with("loss") || self.metric_for_best == "perplexity"
    }

    /// `self` with the fields named in `overrides` replaced (scripts' option maps and the CLI's
    /// flags arrive this way, so each stage's defaults live in one place); an unknown key or a
    /// value of the wrong type is an error naming it.
    pub fn overlay(
        &self,
        overrides: serde_json::Map<String, serde_json::Value>,
    ) -> anyhow::Result<Self> {
        let serde_json::Value::Object(mut fields) = serde_json::to_value(self)? else {
            unreachable!("structs serialise to objects")
        };
        for (key, value) in overrides {
            if !fields.contains_key(&key) {
                let known: Vec<&str> = fields.keys().map(String::as_str).collect();
                anyhow::bail!(
                    "unknown training setting `{key}`; known: {}",
                    known.join(", ")
                );
            }
            fields.insert(key, value);
        }
        Ok(serde_json::from_value(serde_json::Value::Object(fields))?)
    }

    /// The settings that differ from `base` (a stage's defaults), as JSON (for the model card).
    pub fn non_defaults(&self, base: &Self) -> serde_json::Map<String, serde_json::Value> {
        let mine = serde_json::to_value(self).expect("config serialises");
        let base = serde_json::to_value(base).expect("config serialises");
        let (serde_json::Value::Object(mine), serde_json::Value::Object(base)) = (mine, base)
        else {
            unreachable!("structs serialise to objects")
        };
        mine.into_iter()
            .filter(|(k, v)| base.get(k) != Some(v) && k != "progress")
            .collect()
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.batch_size == 0 || self.gradient_accumulation_steps == 0 || self.save_steps == 0 {
            anyhow::bail!(
                "batch_size, gradient_accumulation_steps and save_steps must be at least 1"
            );
        }
        if self.epochs == 0 && self.max_steps.is_none() {
            anyhow::bail!("epochs is 0 and max_steps is unset: nothing to train");
        }
        if self.lr <= 0.0 || !self.lr.is_finite() {
            anyhow::bail!("lr must be a positive number, got {}", self.lr);
        }
        if let Some(p) = self.dropout {
            if !(0.0..1.0).contains(&p) {
                anyhow::bail!("dropout must be in [0, 1), got {p}");
            }
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            anyhow::bail!("warmup_ratio must be in [0, 1), got {}", self.warmup_ratio);
        }
        Ok(())
    }
}

//! The embedding stage: fine-tuning a sentence encoder with a contrastive loss. [`EmbedTrainer`]
//! is the stage's one entry point (the CLI and the script bindings call it); it hands the shared
//! loop an [`EmbedTask`]: the encoder's weights, a batch's loss through [`step::loss_and_grads`],
//! retrieval metrics on a dev set, and saving in sentence-transformers' layout.

pub mod losses;
pub mod step;

use std::path::Path;

use anyhow::Result;

use super::card::{CardFacts, ModelKind};
use super::config::TrainConfig;
use super::dataset::TrainingSet;
use super::optim::Params;
use super::sampler::SampleRows;
use super::task::{micro_batch_rng, BatchDropout, StepOutput, TrainTask};
use super::trainer::{fit, TrainOutcome};
use crate::data::RetrievalDataset;
use crate::eval::metrics::MetricValues;
use crate::eval::{evaluate_encoder, RetrievalEvalOptions};
use crate::fingerprint::Fingerprint;
use crate::models::{LoadOptions, SentenceEncoder};
use losses::{Loss, LossConfig};

/// Fine-tunes `encoder` in place on `data` and writes the result to an output folder.
pub struct EmbedTrainer<'a> {
    pub encoder: &'a SentenceEncoder,
    pub data: &'a TrainingSet,
    pub loss: LossConfig,
    pub config: TrainConfig,
    /// A dev set evaluated before, every `eval_steps`, and after training.
    pub dev: Option<&'a RetrievalDataset>,
}

impl EmbedTrainer<'_> {
    /// Trains into `output` (see [`fit`]).
    pub fn run(&self, output: &Path, resume: bool) -> Result<TrainOutcome> {
        let load = LoadOptions {
            device: self.encoder.device().clone(),
            dtype: self.encoder.bert.dtype(),
        };
        let (loss, mini_batch) = self.loss.build(&load)?;
        let task = EmbedTask {
            trainer: self,
            loss,
            mini_batch,
        };
        fit(&task, &self.config, output, resume)
    }
}

/// The embedding stage as the training loop sees it.
pub struct EmbedTask<'a> {
    trainer: &'a EmbedTrainer<'a>,
    loss: Box<dyn Loss>,
    mini_batch: Option<usize>,
}

impl TrainTask for EmbedTask<'_> {
    fn loss_name(&self) -> String {
        self.loss.name()
    }

    fn check(&self) -> Result<()> {
        self.loss.check(self.trainer.data)
    }

    fn rows(&self) -> &dyn SampleRows {
        self.trainer.data
    }

    fn params(&self) -> Params {
        Params::from_varmap(&self.trainer.encoder.varmap, |_| false)
    }

    fn step(&self, params: &Params, rows: &[usize], step: usize) -> Result<StepOutput> {
        let batch = self.trainer.data.batch(rows);
        let t = self.trainer;
        let dropout = BatchDropout {
            rates: t.config.dropout_rates(&t.encoder.bert.config)?,
            seed: micro_batch_rng(t.config.seed, step, rows).next_u64(),
        };
        let (loss, grads) = step::loss_and_grads(
            t.encoder,
            params,
            self.loss.as_ref(),
            &batch,
            self.mini_batch,
            dropout,
        )?;
        Ok(StepOutput {
            loss,
            grads,
            weight: 1.0,
            tokens: 0,
        })
    }

    fn evaluate(&self) -> Result<Option<MetricValues>> {
        let Some(dev) = self.trainer.dev else {
            return Ok(None);
        };
        let options = RetrievalEvalOptions {
            progress: false,
            ..Default::default()
        };
        Ok(Some(
            evaluate_encoder(self.trainer.encoder, dev, &options)?.metrics,
        ))
    }

    fn save_model(&self, dir: &Path) -> Result<()> {
        self.trainer.encoder.save(dir)
    }

    fn save_weights(&self, path: &Path) -> Result<()> {
        self.trainer.encoder.save_weights(path)
    }

    fn load_weights(&self, path: &Path) -> Result<()> {
        Ok(self.trainer.encoder.varmap.clone().load(path)?)
    }

    fn fingerprint(&self, h: &mut Fingerprint) -> Result<()> {
        let t = self.trainer;
        h.text(&serde_json::to_string(&t.loss)?)
            .text(t.encoder.name());
        hash_training_set(h, t.data);
        Ok(())
    }

    fn card<'a>(&'a self, outcome: &'a TrainOutcome) -> CardFacts<'a> {
        let t = self.trainer;
        CardFacts {
            kind: ModelKind {
                library: "sentence-transformers",
                pipeline_tag: "sentence-similarity",
                load_hint: "A sentence-transformers model (load it with \
                            `SentenceTransformer(\"<this folder>\")`).",
            },
            base_model: t.encoder.name().to_string(),
            rows: t.data.len(),
            columns: card_columns(t.data),
            sample: card_sample(t.data),
            loss: self.loss.name(),
            loss_settings: self.loss.settings(),
            loss_notes: self
                .mini_batch
                .map(|m| format!("Gradients computed with GradCache in mini-batches of {m}."))
                .into_iter()
                .collect(),
            dev: t.dev.map(|d| d.name.clone()),
            defaults: TrainConfig::default(),
            outcome,
            device: crate::models::device::name(t.encoder.device()),
        }
    }
}

/// Every text and label of a training set, in order, into a fingerprint.
pub(crate) fn hash_training_set(h: &mut Fingerprint, data: &TrainingSet) {
    for text in data.texts.iter().flatten() {
        h.text(text);
    }
    if let Some((_, labels)) = &data.labels {
        for v in labels.iter().flatten() {
            h.write(&v.to_le_bytes());
        }
    }
}

/// The set's columns for a model card, the label column marked.
pub(crate) fn card_columns(data: &TrainingSet) -> Vec<String> {
    let mut cols = data.columns.clone();
    if let Some((name, _)) = &data.labels {
        cols.push(format!("{name} (label)"));
    }
    cols
}

/// The first three rows' texts, for a model card.
pub(crate) fn card_sample(data: &TrainingSet) -> Vec<Vec<String>> {
    (0..data.len().min(3))
        .map(|row| data.texts.iter().map(|c| c[row].clone()).collect())
        .collect()
}

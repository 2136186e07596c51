//! The generator stage: supervised fine-tuning of a Llama-family decoder with LoRA adapters on a
//! frozen base (f32, or kept quantized for QLoRA), as PEFT + TRL's `SFTTrainer` do.
//! [`train_generator`] is the stage's one entry point (the CLI and the script bindings call it);
//! it hands the shared loop a [`GenerateTask`]: the adapters' matrices, a batch's loss (the mean
//! negative log-likelihood of its label tokens, weighted by their count so that accumulated
//! micro-batches average over all label tokens), dev loss and perplexity, and saving in PEFT's
//! format.

pub mod data;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, D};

use super::card::{CardFacts, ModelKind};
use super::config::TrainConfig;
use super::optim::{Grads, Params};
use super::sampler::SampleRows;
use super::task::{micro_batch_rng, StepOutput, TrainTask};
use super::trainer::{fit, TrainOutcome};
use crate::eval::metrics::MetricValues;
use crate::fingerprint::Fingerprint;
use crate::llm::LocalLlm;
use crate::models::llama::Llama;
use crate::models::lora::LoraConfig;
use crate::models::peft;
use crate::rng::Rng;
pub use data::{SftExample, SftFormat, SftOptions, SftSet};

/// Rows of dev data scored together.
const EVAL_BATCH: usize = 4;

/// Fine-tunes LoRA adapters of `llm` on `data` into `output` (see [`fit`]): adds fresh adapters
/// from `lora` unless the model already has some (then those are trained further), trains, and
/// leaves the trained adapters on the model (unmerged), so it can generate right away.
pub fn train_generator(
    llm: &mut LocalLlm,
    data: &SftSet,
    dev: Option<&SftSet>,
    lora: &LoraConfig,
    config: &TrainConfig,
    output: &Path,
    resume: bool,
) -> Result<TrainOutcome> {
    lora.validate()?;
    if config.dropout.is_some() {
        bail!(
            "`dropout` is the encoder's (BERT) dropout; the generator's adapters take `lora_dropout`"
        );
    }
    let has = llm.model().linears().any(|(_, _, l)| l.adapter().is_some());
    if !has {
        llm.model_mut().add_lora(lora)?;
    }
    let task = GenerateTask::new(llm, data, dev, lora.clone(), config.seed)?;
    fit(&task, config, output, resume)
}

/// The generator stage as the training loop sees it.
pub struct GenerateTask<'a> {
    llm: &'a LocalLlm,
    data: &'a SftSet,
    dev: Option<&'a SftSet>,
    lora: LoraConfig,
    seed: u64,
    params: Params,
}

impl<'a> GenerateTask<'a> {
    pub fn new(
        llm: &'a LocalLlm,
        data: &'a SftSet,
        dev: Option<&'a SftSet>,
        lora: LoraConfig,
        seed: u64,
    ) -> Result<Self> {
        let mut pairs = vec![];
        for (layer, name, linear) in llm.model().linears() {
            if let Some(a) = linear.adapter() {
                if linear.is_merged() {
                    bail!("the model's adapters are merged into its weights; load it without merging to train");
                }
                pairs.push((
                    format!("{}.lora_A", peft::module_path(layer, name)),
                    a.a.clone(),
                ));
                pairs.push((
                    format!("{}.lora_B", peft::module_path(layer, name)),
                    a.b.clone(),
                ));
            }
        }
        if pairs.is_empty() {
            bail!("the model has no LoRA adapters to train");
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, vars) = pairs.into_iter().unzip();
        Ok(Self {
            llm,
            data,
            dev,
            lora,
            seed,
            params: Params { names, vars },
        })
    }

    /// Summed negative log-likelihood of the label tokens of `rows` of `set` and their count.
    /// With `rng`, adapter dropout is on.
    pub fn nll(
        &self,
        set: &SftSet,
        rows: &[usize],
        rng: Option<&mut Rng>,
    ) -> Result<(Tensor, usize)> {
        let model: &Llama = self.llm.model();
        let device = model.device();
        let width = rows
            .iter()
            .map(|&r| {
                set.rows[r]
                    .iter()
                    .map(|&e| set.examples[e].ids.len())
                    .sum::<usize>()
            })
            .max()
            .unwrap_or(0);
        let mut ids = vec![0u32; rows.len() * width];
        let mut segments = Vec::with_capacity(rows.len());
        let (mut at, mut targets) = (vec![], vec![]);
        for (b, &r) in rows.iter().enumerate() {
            let mut offset = 0;
            let mut segs = vec![];
            for &e in &set.rows[r] {
                let ex = &set.examples[e];
                let row = b * width + offset;
                ids[row..row + ex.ids.len()].copy_from_slice(&ex.ids);
                for t in 1..ex.ids.len() {
                    if ex.labels[t] {
                        at.push((row + t - 1) as u32);
                        targets.push(ex.ids[t]);
                    }
                }
                offset += ex.ids.len();
                segs.push(ex.ids.len());
            }
            segments.push(segs);
        }
        let n = targets.len();
        if n == 0 {
            bail!("a batch has no label token");
        }
        let tokens = Tensor::from_vec(ids, (rows.len(), width), device)?;
        let hidden = model.forward_train(&tokens, &segments, rng)?;
        let hidden = hidden.reshape((rows.len() * width, hidden.dim(2)?))?;
        let picked = hidden.index_select(&Tensor::new(at, device)?, 0)?;
        let logits = model.logits_train(&picked)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let targets = Tensor::new(targets, device)?.unsqueeze(1)?;
        let nll = logp.gather(&targets, 1)?.sum_all()?.neg()?;
        Ok((nll, n))
    }
}

impl TrainTask for GenerateTask<'_> {
    fn loss_name(&self) -> String {
        "SFT (completion-only cross-entropy)".into()
    }

    fn check(&self) -> Result<()> {
        if self.data.is_empty() {
            bail!("the fine-tuning data has no rows");
        }
        Ok(())
    }

    fn rows(&self) -> &dyn SampleRows {
        self.data
    }

    fn params(&self) -> Params {
        self.params.clone()
    }

    fn step(&self, params: &Params, rows: &[usize], step: usize) -> Result<StepOutput> {
        // Dropout masks from (seed, step, first row): a resumed run draws the same.
        let mut rng = micro_batch_rng(self.seed, step, rows);
        let (nll, n) = self.nll(self.data, rows, Some(&mut rng))?;
        let tokens = rows
            .iter()
            .flat_map(|&r| &self.data.rows[r])
            .map(|&e| self.data.examples[e].ids.len())
            .sum();
        let loss = (nll / n as f64)?;
        let grads = crate::models::precision::scale_loss(&loss)?
            .backward()
            .context("back-propagating the loss")?;
        Ok(StepOutput {
            loss: loss.to_dtype(DType::F64)?.to_scalar::<f64>()?,
            grads: Grads::from_store(params, &grads),
            weight: n as f64,
            tokens,
        })
    }

    fn evaluate(&self) -> Result<Option<MetricValues>> {
        let Some(dev) = self.dev else {
            return Ok(None);
        };
        let (mut total, mut count) = (0.0, 0usize);
        let rows: Vec<usize> = (0..dev.len()).collect();
        for chunk in rows.chunks(EVAL_BATCH) {
            let (nll, n) = self.nll(dev, chunk, None)?;
            total += nll.detach().to_dtype(DType::F64)?.to_scalar::<f64>()?;
            count += n;
        }
        let loss = total / count.max(1) as f64;
        Ok(Some(MetricValues::from([
            ("eval_loss".to_string(), loss),
            ("perplexity".to_string(), loss.exp()),
        ])))
    }

    fn save_model(&self, dir: &Path) -> Result<()> {
        peft::save_adapter(self.llm.model(), &self.lora, self.llm.name(), dir)
    }

    fn save_weights(&self, path: &Path) -> Result<()> {
        let tensors: HashMap<String, Tensor> = self
            .params
            .names
            .iter()
            .zip(&self.params.vars)
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .collect();
        crate::models::save::write_safetensors(&tensors, path)
    }

    fn load_weights(&self, path: &Path) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, self.llm.model().device())?;
        for (name, var) in self.params.names.iter().zip(&self.params.vars) {
            let t = tensors
                .get(name)
                .with_context(|| format!("{}: no tensor `{name}`", path.display()))?;
            var.set(t)?;
        }
        Ok(())
    }

    fn fingerprint(&self, h: &mut Fingerprint) -> Result<()> {
        h.text(&serde_json::to_string(&self.lora)?)
            .text(self.llm.name())
            .text(&serde_json::to_string(&self.data.options)?);
        for rows in &self.data.rows {
            for &e in rows {
                let ex = &self.data.examples[e];
                for (&id, &l) in ex.ids.iter().zip(&ex.labels) {
                    h.write(&id.to_le_bytes()).write(&[l as u8]);
                }
            }
            h.write(b"|");
        }
        Ok(())
    }

    fn card<'b>(&'b self, outcome: &'b TrainOutcome) -> CardFacts<'b> {
        let d = self.data;
        let sample = d
            .examples
            .iter()
            .take(2)
            .map(|e| {
                vec![
                    e.text.clone(),
                    e.ids.len().to_string(),
                    e.label_count().to_string(),
                ]
            })
            .collect();
        let base = self
            .llm
            .model()
            .linears()
            .next()
            .map(|(_, _, l)| l.base().quantization());
        let quant = match base.flatten() {
            Some(q) => {
                format!("QLoRA: the frozen base kept in {q:?} blocks, dequantized layer by layer.")
            }
            None => "LoRA on an f32 base.".to_string(),
        };
        CardFacts {
            kind: ModelKind {
                library: "peft",
                pipeline_tag: "text-generation",
                load_hint: "A LoRA adapter: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), \"<this folder>\")` \
                            in Python, or `--adapter <this folder>` for ragtune's local models.",
            },
            base_model: self.llm.name().to_string(),
            rows: d.len(),
            columns: vec!["text".into(), "tokens".into(), "label tokens".into()],
            sample,
            loss: self.loss_name(),
            loss_settings: serde_json::to_value(&self.lora).unwrap_or_default(),
            loss_notes: vec![
                quant,
                format!(
                    "{} examples ({:?}), {} label tokens; max_length {}, {} truncated, {} dropped{}.",
                    d.examples.len(),
                    d.format,
                    d.label_tokens(),
                    d.options.max_length,
                    d.truncated,
                    d.dropped,
                    if d.options.packing { ", packed" } else { "" }
                ),
            ],
            dev: self.dev.map(|s| format!("{} ({} examples)", s.origin, s.examples.len())),
            defaults: TrainConfig::generate(),
            outcome,
            device: crate::models::device::name(self.llm.model().device()),
        }
    }
}

//! The one training loop every model kind plugs into, through [`TrainTask`].
//!
//! Plan: the batches of every epoch are fixed up front from the seed, end to end; optimizer step
//! `s` consumes batches `s·accum … (s+1)·accum`. Everything a step depends on — its batches, its
//! learning rate — is a function of `s`, so resuming from a checkpoint at step `s` (weights and
//! AdamW moments restored) continues to exactly the weights an uninterrupted run reaches.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::card::write_model_card;
use super::checkpoint::{self, TrainerState};
use super::config::TrainConfig;
use super::log::{LogEntry, TrainLog};
use super::optim::{AdamW, AdamWConfig, Grads};
use super::sampler::epoch_batches;
use super::schedule::Schedule;
use super::task::TrainTask;
use crate::eval::metrics::MetricValues;
use crate::fingerprint::Fingerprint;
use crate::models::precision::{self, LossScaler, Precision};
use crate::progress::Progress;

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    pub output: PathBuf,
    pub loss: String,
    pub steps: usize,
    pub examples: usize,
    /// Wall-clock seconds of training (across resumed runs), excluding dev evaluations.
    pub seconds: f64,
    pub seconds_per_step: f64,
    pub final_loss: f64,
    pub dev_before: Option<MetricValues>,
    pub dev_after: Option<MetricValues>,
    /// Best dev score and its step (the model at `output/best`).
    pub best: Option<(f64, usize)>,
    pub resumed_from: Option<usize>,
    /// The dev metric that chose the best model (`metric_for_best`).
    pub metric: String,
    /// A reranker's fusion weight, chosen on held-out queries after training (`fusion.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fusion: Option<crate::models::fusion::FusionChoice>,
}

/// Trains `task` with `config` into `output`. With `resume`, continues from the newest checkpoint
/// there (settings and data must match); without it, an output folder holding checkpoints is
/// refused rather than overwritten. At the end the task saves its model there, beside
/// `train_log.jsonl`, `training.html`, the model card `README.md` and, with dev data, `best/`.
pub fn fit(
    task: &dyn TrainTask,
    config: &TrainConfig,
    output: &Path,
    resume: bool,
) -> Result<TrainOutcome> {
    crate::runtime::flush_denormals();
    Fit {
        task,
        config,
        output,
    }
    .run(resume)
}

struct Fit<'a> {
    task: &'a dyn TrainTask,
    config: &'a TrainConfig,
    output: &'a Path,
}

impl Fit<'_> {
    fn run(&self, resume: bool) -> Result<TrainOutcome> {
        let (config, output, task) = (self.config, self.output, self.task);
        config.validate()?;
        task.check()?;
        std::fs::create_dir_all(output)
            .with_context(|| format!("creating {}", output.display()))?;

        let plan = self.plan();
        let total = plan.len().div_ceil(config.gradient_accumulation_steps);
        let total = config.max_steps.map_or(total, |m| m.min(total));
        let schedule = Schedule {
            lr: config.lr,
            warmup_steps: Schedule::warmup(total, config.warmup_steps, config.warmup_ratio),
            total_steps: total,
            decay: config.scheduler,
        };
        let params = task.params();
        let mut optimizer = AdamW::new(
            params.clone(),
            AdamWConfig {
                weight_decay: config.weight_decay,
                ..Default::default()
            },
        )?;
        let fingerprint = self.fingerprint()?;
        let log_path = output.join("train_log.jsonl");

        let mut start = 0;
        let mut best = None;
        let mut seconds = 0.0;
        let mut resumed_from = None;
        let mut scaler = LossScaler::new(config.precision);
        let mut log = match checkpoint::latest(output)? {
            Some((dir, state)) if resume => {
                checkpoint::check_fingerprint(&state, &fingerprint, &dir)?;
                task.load_weights(&dir.join("model.safetensors"))
                    .with_context(|| format!("restoring weights from {}", dir.display()))?;
                scaler = state.loss_scale.unwrap_or(scaler);
                // Steps skipped for f16 overflow did not move the optimizer.
                optimizer.load(&dir.join("optimizer.safetensors"), state.step - scaler.skipped)?;
                (start, best, seconds, resumed_from) = (state.step, state.best, state.seconds, Some(state.step));
                eprintln!("resuming from {} (step {} of {total})", dir.display(), state.step);
                TrainLog::resume(&log_path, state.log_lines)?
            }
            Some((dir, _)) => bail!(
                "{} holds a checkpoint of an earlier run ({}): pass --resume (resume: true) to continue it, \
                 or train into another output folder",
                output.display(),
                dir.display()
            ),
            None => {
                if resume {
                    eprintln!("no checkpoint in {}: starting from the beginning", output.display());
                }
                TrainLog::create(&log_path)?
            }
        };

        if start == 0 {
            self.evaluate(0, &mut log, &mut best)?;
        }
        let progress = Progress::steps(total as u64, config.progress);
        progress.set_position(start as u64);
        let save_checkpoint = |done: usize,
                               best: Option<(f64, usize)>,
                               log_lines: usize,
                               seconds: f64,
                               scaler: LossScaler,
                               optimizer: &AdamW|
         -> Result<()> {
            let state = TrainerState {
                step: done,
                total_steps: total,
                best,
                log_lines,
                seconds,
                fingerprint: fingerprint.clone(),
                loss_scale: (config.precision == Precision::F16).then_some(scaler),
            };
            checkpoint::save(output, &state, |dir| {
                task.save_weights(&dir.join("model.safetensors"))?;
                optimizer.save(&dir.join("optimizer.safetensors"))
            })
        };
        for step in start..total {
            if crate::interrupt::requested() {
                // Stop between steps, keeping the work done so far: `resume` continues from here.
                if step > start {
                    save_checkpoint(step, best, log.entries.len(), seconds, scaler, &optimizer)?;
                }
                progress.finish();
                return Err(
                    anyhow::Error::from(crate::interrupt::Interrupted).context(format!(
                        "training stopped after step {step} of {total}; a checkpoint is in {} \
                     (train again with resume to continue)",
                        output.display()
                    )),
                );
            }
            let began = Instant::now();
            let micro = &plan[step * config.gradient_accumulation_steps
                ..((step + 1) * config.gradient_accumulation_steps).min(plan.len())];
            let mut grads = Grads(vec![None; params.len()]);
            let (mut loss_sum, mut weight_sum, mut tokens) = (0.0, 0.0, 0);
            for (_, rows) in micro {
                let out = precision::autocast(config.precision, scaler.scale, || {
                    task.step(&params, rows, step)
                })
                .with_context(|| format!("training step {}", step + 1))?;
                if !out.loss.is_finite() {
                    bail!(
                        "training step {}: the loss is {}; lower the learning rate",
                        step + 1,
                        out.loss
                    );
                }
                let mut g = out.grads;
                if out.weight != 1.0 {
                    g.scale(out.weight)?;
                }
                tokens += out.tokens;
                loss_sum += out.loss * out.weight;
                weight_sum += out.weight;
                grads.accumulate(g)?;
            }
            // Averaged over the micro-batches, and the f16 loss scale taken out.
            let divide = weight_sum.max(f64::MIN_POSITIVE) * scaler.scale;
            if divide != 1.0 && weight_sum > 0.0 {
                grads.scale(1.0 / divide)?;
            }
            let grad_norm = grads.clip(config.max_grad_norm)?;
            let lr = schedule.lr_at(step);
            // Only f16 skips a step (its gradients overflowed); f32 and bf16 always apply it.
            let skipped = config.precision == Precision::F16
                && !scaler.update(config.precision, grad_norm.is_finite());
            if skipped {
                progress.println(format!(
                    "step {}: f16 gradients overflowed; step skipped, loss scale now {}",
                    step + 1,
                    scaler.scale
                ));
            } else {
                optimizer.step(&grads, lr)?;
            }
            let step_loss = loss_sum / weight_sum.max(f64::MIN_POSITIVE);
            let took = began.elapsed().as_secs_f64();
            seconds += took;
            log.push(LogEntry::Loss {
                step: step + 1,
                epoch: micro[0].0,
                loss: step_loss,
                lr,
                grad_norm: if skipped { 0.0 } else { grad_norm },
                seconds,
                skipped,
            })?;
            progress.set_message(if tokens > 0 {
                format!(
                    "loss {step_loss:.4} lr {lr:.2e} {:.0} tokens/s",
                    tokens as f64 / took.max(1e-9)
                )
            } else {
                format!("loss {step_loss:.4} lr {lr:.2e}")
            });
            progress.inc(1);

            let done = step + 1;
            if config.eval_steps.is_some_and(|n| done % n == 0) && done < total {
                self.evaluate(done, &mut log, &mut best)?;
            }
            if done % config.save_steps == 0 || done == total {
                save_checkpoint(done, best, log.entries.len(), seconds, scaler, &optimizer)?;
            }
        }
        progress.finish();
        if !log.evals().any(|(s, _)| s == total) {
            self.evaluate(total, &mut log, &mut best)?;
        }

        task.save_model(output)?;
        log.chart(&config.metric_for_best)
            .write_html(&output.join("training.html"))?;
        let dev_at = |s: usize| {
            log.evals()
                .find(|(step, _)| *step == s)
                .map(|(_, m)| m.clone())
        };
        // From the log rather than this process: a resumed run may have had no step left to take.
        let final_loss = log
            .entries
            .iter()
            .rev()
            .find_map(|e| match e {
                LogEntry::Loss { loss, .. } => Some(*loss),
                _ => None,
            })
            .unwrap_or(f64::NAN);
        let outcome = TrainOutcome {
            output: output.to_path_buf(),
            loss: task.loss_name(),
            steps: total,
            examples: task.rows().rows(),
            seconds,
            seconds_per_step: seconds / total.max(1) as f64,
            final_loss,
            dev_before: dev_at(0),
            dev_after: dev_at(total),
            best,
            resumed_from,
            metric: config.metric_for_best.clone(),
            fusion: None,
        };
        write_model_card(&output.join("README.md"), &task.card(&outcome), config)?;
        Ok(outcome)
    }

    /// (epoch, rows) of every batch the run will see, in order: `epochs` epochs, or with
    /// `max_steps` as many epochs as those steps need (as Transformers, max_steps wins).
    fn plan(&self) -> Vec<(usize, Vec<usize>)> {
        let c = self.config;
        let target = c.max_steps.map(|m| m * c.gradient_accumulation_steps);
        let mut plan = vec![];
        let mut epoch = 0;
        while target.map_or(epoch < c.epochs, |t| plan.len() < t) {
            let batches = epoch_batches(
                self.task.rows(),
                c.batch_size,
                c.batch_sampler,
                c.seed,
                epoch,
            );
            if batches.is_empty() {
                break;
            }
            plan.extend(batches.into_iter().map(|rows| (epoch, rows)));
            epoch += 1;
        }
        plan
    }

    /// Dev metrics now, logged; a new best is saved to `best/`.
    fn evaluate(
        &self,
        step: usize,
        log: &mut TrainLog,
        best: &mut Option<(f64, usize)>,
    ) -> Result<()> {
        let Some(metrics) = self.task.evaluate().context("evaluating on the dev set")? else {
            return Ok(());
        };
        let metric = &self.config.metric_for_best;
        let Some(&score) = metrics.get(metric) else {
            let known: Vec<&str> = metrics.keys().map(String::as_str).collect();
            bail!(
                "metric_for_best `{metric}` is not among the dev metrics ({})",
                known.join(", ")
            );
        };
        let better = |b: f64| {
            if self.config.lower_is_better() {
                score < b
            } else {
                score > b
            }
        };
        if best.is_none_or(|(b, _)| better(b)) {
            *best = Some((score, step));
            self.task.save_model(&self.output.join("best"))?;
        }
        log.push(LogEntry::Eval { step, metrics })
    }

    /// A stable hash of what determines the run: the shared settings and the task's own.
    fn fingerprint(&self) -> Result<String> {
        let mut config = self.config.clone();
        config.progress = false;
        let mut settings = serde_json::to_value(&config)?;
        if config.precision == Precision::F32 {
            // As before precision existed, so that those runs' checkpoints still resume.
            settings.as_object_mut().map(|m| m.remove("precision"));
        }
        let mut h = Fingerprint::default();
        h.text(&serde_json::to_string(&settings)?);
        self.task.fingerprint(&mut h)?;
        Ok(h.hex())
    }
}

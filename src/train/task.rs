//! What the training loop needs from whatever it trains. Each stage (embeddings, rerankers, and
//! later the generator) implements [`TrainTask`] once: its trainable parameters, how a batch of
//! rows becomes a loss and gradients, how it is evaluated on dev data, and how it is saved. The
//! loop in [`super::trainer`] owns everything else — planning, resume, accumulation, clipping,
//! the optimizer, logs, charts, checkpoints, the best model and interrupts — and knows nothing of
//! the model kind.

use std::path::Path;

use anyhow::Result;

use super::card::CardFacts;
use super::optim::{Grads, Params};
use super::sampler::SampleRows;
use super::trainer::TrainOutcome;
use crate::eval::metrics::MetricValues;
use crate::fingerprint::Fingerprint;
use crate::models::bert::Mode;
use crate::models::dropout::DropoutRates;
use crate::rng::Rng;

/// The generator a micro-batch's random draws (in-batch sampling, dropout masks) start from: a
/// function of the run's seed, the optimizer step and the micro-batch's first row, so that a
/// resumed run draws the same.
pub fn micro_batch_rng(seed: u64, step: usize, rows: &[usize]) -> Rng {
    Rng::new(
        seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (rows.first().copied().unwrap_or(0) as u64).wrapping_mul(0xA24B_AED4_963E_E407),
    )
}

/// A micro-batch's dropout: `rates` with masks drawn from `seed`.
#[derive(Debug, Clone, Copy)]
pub struct BatchDropout {
    pub rates: DropoutRates,
    pub seed: u64,
}

impl BatchDropout {
    /// The training mode of a forward pass over rows `first_row..` of the micro-batch's
    /// `stream`-th input (each text column draws masks of its own).
    pub fn mode(&self, stream: usize, first_row: usize) -> Mode {
        let seed =
            Rng::new(self.seed ^ (stream as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64();
        Mode::Train(self.rates.draw(seed, first_row))
    }

    /// The mode of gradient caching's graph-free first pass over the same rows: inference when
    /// nothing drops out, else the training pass with [`Self::mode`]'s masks (to be detached),
    /// so that it computes what the second pass, with a graph, will.
    pub fn graph_free_mode(&self, stream: usize, first_row: usize) -> Mode {
        if self.rates.is_off() {
            Mode::Infer
        } else {
            self.mode(stream, first_row)
        }
    }
}

/// One micro-batch's contribution to an optimizer step.
pub struct StepOutput {
    /// The loss of the micro-batch (what the log shows).
    pub loss: f64,
    /// Gradients of `loss` for every trainable parameter, in [`TrainTask::params`] order.
    pub grads: Grads,
    /// How much this micro-batch counts when several are accumulated into one step (the loop
    /// averages gradients and losses with these weights): 1 for losses that are means over a
    /// batch of rows; a token count for losses that are means over tokens.
    pub weight: f64,
    /// Tokens the micro-batch ran through the model, for the progress bar's tokens/s (0 where
    /// a stage does not count them).
    pub tokens: usize,
}

/// A model kind's side of training.
pub trait TrainTask {
    /// The loss (its library class name), for logs and the card.
    fn loss_name(&self) -> String;
    /// Rejects data that does not fit the loss before any step is taken.
    fn check(&self) -> Result<()>;
    /// The rows the batch sampler draws from.
    fn rows(&self) -> &dyn SampleRows;
    /// The trainable parameters, in a fixed order; frozen ones are not among them.
    fn params(&self) -> Params;
    /// Loss and gradients of the micro-batch made of `rows`. `step` is the optimizer step it
    /// belongs to (for losses that sample, so that a resumed run samples the same).
    fn step(&self, params: &Params, rows: &[usize], step: usize) -> Result<StepOutput>;
    /// Dev metrics of the model as it is now; `None` when there is no dev data.
    fn evaluate(&self) -> Result<Option<MetricValues>>;
    /// The whole model, loadable by the stage's Python library, into `dir`.
    fn save_model(&self, dir: &Path) -> Result<()>;
    /// The trainable weights only (checkpoints), and back.
    fn save_weights(&self, path: &Path) -> Result<()>;
    fn load_weights(&self, path: &Path) -> Result<()>;
    /// Feeds what determines the run besides the shared settings (loss settings, data, base
    /// model) into `h`; a resume with a different fingerprint is refused.
    fn fingerprint(&self, h: &mut Fingerprint) -> Result<()>;
    /// Facts for the model card written at the end.
    fn card<'a>(&'a self, outcome: &'a TrainOutcome) -> CardFacts<'a>;
}

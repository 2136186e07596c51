//! Training: one loop ([`trainer::fit`]) for every model kind, and one folder per stage that
//! plugs into it through [`task::TrainTask`]: [`embed`] (sentence encoders, contrastive losses)
//! and [`rerank`] (cross-encoders). The loop plans batches, steps AdamW over the task's
//! parameters, accumulates, clips, logs, charts, evaluates, keeps the best model and writes
//! checkpoints that resume exactly; the stage supplies the model, a batch's loss, the evaluator
//! and the saver. Training never decides what data to train on (see `mine` and `data`) or how
//! quality is measured (see `eval`).

pub mod card;
pub mod checkpoint;
pub mod config;
pub mod dataset;
pub mod embed;
pub mod generate;
pub mod log;
pub mod optim;
pub mod rerank;
pub mod sampler;
pub mod schedule;
pub mod task;
pub mod trainer;

pub use config::TrainConfig;
pub use dataset::{Batch, TrainingSet};
pub use embed::losses::{LossConfig, LossName};
pub use embed::EmbedTrainer;
pub use sampler::BatchSampler;
pub use task::{StepOutput, TrainTask};
pub use trainer::{fit, TrainOutcome};

//! Training: fine-tuning sentence encoders. A [`trainer::Trainer`] takes an encoder, a
//! [`dataset::TrainingSet`] (text columns by position, optional label), a loss from
//! [`losses`] and a [`config::TrainConfig`]; it writes checkpoints that resume exactly, a loss
//! log and chart, the model in sentence-transformers' layout, and a model card. This stage never
//! decides what data to train on (see `mine` and `data`) or how to report quality (see `eval`).

pub mod card;
pub mod checkpoint;
pub mod config;
pub mod dataset;
pub mod log;
pub mod losses;
pub mod optim;
pub mod sampler;
pub mod schedule;
pub mod step;
pub mod trainer;

pub use config::TrainConfig;
pub use dataset::{Batch, TrainingSet};
pub use losses::{LossConfig, LossName};
pub use sampler::BatchSampler;
pub use trainer::{TrainOutcome, Trainer};

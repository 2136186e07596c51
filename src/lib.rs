//! ragtune: fine-tune every stage of a retrieval-augmented generation pipeline on your own data.
//!
//! The pipeline's stages are folders: [`data`] (read/write datasets) → [`models`] (encoders and
//! where their weights come from) → [`eval`] (retrieval metrics). [`script`] is the Rhai skin over
//! all of it, and the `ragtune` binary a thin command line on top. See `docs/ARCHITECTURE.md`.

pub mod charts;
pub mod chunk;
pub mod data;
pub mod eval;
pub mod fingerprint;
pub mod interrupt;
pub mod kernel;
pub mod llm;
pub mod mine;
pub mod models;
pub mod pipeline;
pub mod progress;
pub mod raft;
pub mod render;
pub mod repl;
pub mod rng;
pub mod runtime;
pub mod script;
pub mod synth;
pub mod train;

pub use data::RetrievalDataset;
pub use eval::{evaluate_encoder, RetrievalEvalOptions, RetrievalReport};
pub use models::{EncodeOptions, LoadOptions, SentenceEncoder};
pub use train::{EmbedTrainer, LossConfig, TrainConfig, TrainingSet};

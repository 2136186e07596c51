//! Models: where their files come from, and the networks themselves.

pub mod attention;
pub mod bert;
pub mod blas;
pub mod cached_attention;
pub mod cross_encoder;
pub mod device;
pub mod dropout;
pub mod embedding_cache;
pub mod encoder;
pub mod fused;
pub mod fusion;
pub mod hub;
pub mod kernels;
pub mod llama;
pub mod lora;
pub mod peft;
pub mod pooling;
pub mod precision;
pub mod save;
pub mod train_attention;
pub mod train_ops;
pub mod weights;

pub use cross_encoder::{CrossEncoder, CrossEncoderOptions, PredictOptions, ScoreActivation};
pub use encoder::{EncodeOptions, EncodeStats, LoadOptions, SentenceEncoder};
pub use hub::ModelSource;

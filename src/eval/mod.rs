//! Evaluation of every stage. Retrieval for now: exact dense search and IR metrics. Evaluators
//! take a model and a dataset and return a report; they never train or mutate either.

pub mod metrics;
pub mod retrieval;
pub mod search;

pub use retrieval::{
    compare_models, comparison_frame, evaluate_encoder, RetrievalEvalOptions, RetrievalReport,
};

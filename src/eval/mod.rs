//! Evaluation of every stage: retrieval (exact dense search and IR metrics) and reranking
//! (a retriever's candidates reordered by a cross-encoder). Evaluators take a model and a dataset
//! and return a report; they never train or mutate either.

pub mod grounded;
pub mod metrics;
pub mod paired;
pub mod rerank;
pub mod retrieval;
pub mod search;

pub use rerank::{evaluate_reranker, Candidates, RerankEvalOptions, RerankReport};
pub use retrieval::{
    compare_models, comparison_frame, evaluate_encoder, RetrievalEvalOptions, RetrievalReport,
};

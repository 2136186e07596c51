//! Reranker losses, one file each, as sentence-transformers' `cross_encoder.losses`. A loss says
//! which (query, document) pairs of a batch to score (every document of every row, unless it
//! samples in-batch negatives), then turns their logits into a scalar. The task computes the
//! logits — directly, or in mini-batches with gradient caching when the loss has a
//! `mini_batch_size` — so every loss works either way.
//!
//! Each loss owns its settings (one struct with its defaults); [`RerankLossConfig`] is the tagged
//! union the CLI, scripts and Rust all deserialise (`#{name: "lambda", k: 10}`). Adding a loss
//! means adding a file and one variant.

pub mod bce;
pub mod lambda;
pub mod list_net;
pub mod margin_mse;
pub mod mnrl;
pub mod rank_net;

use anyhow::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::data::{RerankBatch, RerankFormat, RerankSet};
use crate::models::ScoreActivation;
use crate::rng::Rng;

/// (row of the batch, document text): one pair to score.
pub type Pair = (usize, String);

pub trait RerankLoss: Send + Sync {
    /// The sentence-transformers class this loss reproduces (model cards, logs).
    fn name(&self) -> String;
    /// Rejects training data of the wrong shape before any step is taken.
    fn check(&self, set: &RerankSet) -> Result<()>;
    /// The pairs to score for `batch`, in the order [`Self::compute`] reads their logits.
    fn pairs(&self, batch: &RerankBatch, _rng: &mut Rng) -> Vec<Pair> {
        every_document(batch)
    }
    /// The scalar loss from the logits `[pairs]` of [`Self::pairs`]; differentiable in them.
    fn compute(&self, logits: &Tensor, batch: &RerankBatch, pairs: &[Pair]) -> Result<Tensor>;
    /// Its hyper-parameters, for the model card.
    fn settings(&self) -> serde_json::Value;
    /// Pairs per forward pass (gradient caching); `None`: the whole batch at once.
    fn mini_batch_size(&self) -> Option<usize> {
        None
    }
}

/// Which loss to train a reranker with, and its settings; unset settings take
/// sentence-transformers' defaults of that loss.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum RerankLossConfig {
    /// BinaryCrossEntropyLoss on (query, document, label) pairs.
    Bce(bce::BceSettings),
    /// MultipleNegativesRankingLoss for cross-encoders on (query, positive, negatives…).
    Mnrl(mnrl::MnrlSettings),
    /// ListNetLoss on (query, [documents], [labels]).
    ListNet(list_net::ListNetSettings),
    /// LambdaLoss (NDCGLoss2++ weighting by default).
    Lambda(lambda::LambdaSettings),
    /// RankNetLoss: LambdaLoss without weighting.
    RankNet(rank_net::RankNetSettings),
    /// MarginMSELoss: distillation from teacher scores or margins.
    MarginMse(margin_mse::MarginMseSettings),
}

impl Default for RerankLossConfig {
    fn default() -> Self {
        Self::Bce(bce::BceSettings::default())
    }
}

impl RerankLossConfig {
    /// The loss a run takes when none is named: LambdaLoss for data that gives each query a list
    /// of documents (n-tuples, labeled lists), which ranks them against each other; BCE for
    /// labeled pairs (a label per pair, no list to rank).
    pub fn default_for(format: RerankFormat) -> Self {
        match format {
            RerankFormat::LabeledPair => Self::default(),
            RerankFormat::NTuple | RerankFormat::LabeledList => {
                Self::Lambda(lambda::LambdaSettings::default())
            }
        }
    }

    /// The learning rate this loss trains at unless one is given; `None`: the stage's
    /// ([`crate::train::TrainConfig::rerank`]).
    pub fn learning_rate(&self) -> Option<f64> {
        match self {
            Self::Lambda(_) => Some(lambda::DEFAULT_LR),
            _ => None,
        }
    }

    /// The loss `name` with its default settings.
    pub fn named(name: &str) -> Result<Self> {
        Self::from_json(serde_json::json!({ "name": name.replace('-', "_") }))
    }

    /// From a JSON object `{name, …settings}`; an unknown loss or setting is an error naming it.
    pub fn from_json(value: serde_json::Value) -> Result<Self> {
        let name = value["name"].as_str().unwrap_or("").to_string();
        serde_json::from_value(value).map_err(|e| {
            anyhow::anyhow!(
                "reranker loss `{name}`: {e}; losses: bce, mnrl, list_net, lambda, rank_net, margin_mse"
            )
        })
    }

    pub fn build(&self) -> Result<Box<dyn RerankLoss>> {
        Ok(match self {
            Self::Bce(s) => Box::new(bce::Bce::new(s.clone())),
            Self::Mnrl(s) => Box::new(mnrl::Mnrl::new(s.clone())?),
            Self::ListNet(s) => Box::new(list_net::ListNet::new(s.clone())),
            Self::Lambda(s) => Box::new(lambda::Lambda::new(s.clone())),
            Self::RankNet(s) => Box::new(rank_net::rank_net(s.clone())),
            Self::MarginMse(s) => Box::new(margin_mse::MarginMse::new(s.clone())),
        })
    }
}

/// Every document of every row, row by row.
pub fn every_document(batch: &RerankBatch) -> Vec<Pair> {
    batch
        .documents
        .iter()
        .enumerate()
        .flat_map(|(r, docs)| docs.iter().map(move |d| (r, d.clone())))
        .collect()
}

/// `activation(x)`, composed of differentiable ops.
pub fn activate(x: &Tensor, activation: ScoreActivation) -> Result<Tensor> {
    Ok(match activation {
        ScoreActivation::Identity => x.clone(),
        ScoreActivation::Sigmoid => (x.neg()?.exp()? + 1.0)?.recip()?,
        ScoreActivation::Tanh => x.tanh()?,
    })
}

/// `log σ(x)` without overflow: `min(x, 0) − ln(1 + e^{−|x|})`.
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok((x.minimum(0.0)? - (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}

/// Rejects data that is not a list per query (labeled lists, or n-tuples read as lists).
pub fn require_lists(set: &RerankSet, loss: &str) -> Result<()> {
    require_format(
        set,
        loss,
        &[
            super::data::RerankFormat::LabeledList,
            super::data::RerankFormat::NTuple,
        ],
        "(query, [documents], [labels]) lists or (query, positive, negative_1..n) rows",
    )
}

/// The sum of scalar tensors (one per query of a batch).
pub fn sum_scalars(terms: &[Tensor]) -> Result<Tensor> {
    Ok(Tensor::stack(terms, 0)?.sum_all()?)
}

/// Rejects data whose rows do not come in one of `formats`.
pub fn require_format(
    set: &RerankSet,
    loss: &str,
    formats: &[super::data::RerankFormat],
    wants: &str,
) -> Result<()> {
    if !formats.contains(&set.format) {
        anyhow::bail!(
            "{loss} wants {wants}; the data ({}) is {}",
            set.columns.join(", "),
            serde_json::to_value(set.format)?.as_str().unwrap_or("?")
        );
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_support {
    use candle_core::{DType, Device, Tensor};

    use super::super::data::RerankBatch;

    pub fn logits(values: &[f64]) -> Tensor {
        Tensor::new(values, &Device::Cpu).unwrap()
    }

    pub fn scalar(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    /// A batch of `labels.len()` rows with `labels[r].len()` documents each, texts `q{r}` / `d{r}{i}`.
    pub fn batch(labels: &[&[f32]]) -> RerankBatch {
        RerankBatch {
            queries: (0..labels.len()).map(|r| format!("q{r}")).collect(),
            documents: labels
                .iter()
                .enumerate()
                .map(|(r, l)| (0..l.len()).map(|i| format!("d{r}{i}")).collect())
                .collect(),
            labels: labels.iter().map(|l| l.to_vec()).collect(),
            teacher: None,
        }
    }

    pub fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// Finite-difference check that `f`'s gradient at `x` matches candle's backward.
    pub fn check_gradient(x: &[f64], f: impl Fn(&Tensor) -> Tensor) {
        let var = candle_core::Var::new(x, &Device::Cpu).unwrap();
        let loss = f(var.as_tensor());
        let grads = loss.backward().unwrap();
        let g: Vec<f64> = grads.get(var.as_tensor()).unwrap().to_vec1().unwrap();
        for i in 0..x.len() {
            let h = 1e-6;
            let mut up = x.to_vec();
            up[i] += h;
            let mut down = x.to_vec();
            down[i] -= h;
            let numeric = (scalar(&f(&logits(&up))) - scalar(&f(&logits(&down)))) / (2.0 * h);
            assert!(
                (numeric - g[i]).abs() < 1e-5 * (1.0 + numeric.abs()),
                "d/dx{i}: finite difference {numeric} vs backward {}",
                g[i]
            );
        }
    }
}

//! Training losses for sentence encoders, one file each. A loss is a function of the batch's
//! embeddings — one `[batch, dim]` tensor per text column, in column order — and, for some, the
//! batch's labels. The trainer computes the embeddings (directly, or in mini-batches with
//! GradCache when `mini_batch_size` is set), so every loss works with gradient caching and with
//! [`matryoshka::Matryoshka`].
//!
//! Adding a loss means adding a file with a type that implements [`Loss`] and one arm in
//! [`LossConfig::build`].

pub mod cosent;
pub mod gist;
pub mod margin_mse;
pub mod matryoshka;
pub mod mnrl;
pub mod triplet;

use anyhow::{bail, Result};
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use crate::models::pooling::l2_normalize;
use crate::models::{LoadOptions, SentenceEncoder};
use crate::train::dataset::{Batch, TrainingSet};

pub trait Loss: Send + Sync {
    /// The sentence-transformers class this loss reproduces (model cards, logs).
    fn name(&self) -> String;
    /// Rejects training data of the wrong shape before any step is taken.
    fn check(&self, set: &TrainingSet) -> Result<()>;
    /// The scalar loss of a batch; differentiable in the embeddings.
    fn compute(&self, embeddings: &[Tensor], batch: &Batch) -> Result<Tensor>;
    /// Its hyper-parameters, for the model card.
    fn settings(&self) -> serde_json::Value;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LossName {
    /// MultipleNegativesRankingLoss.
    #[default]
    Mnrl,
    /// MultipleNegativesSymmetricRankingLoss.
    MnrlSymmetric,
    /// CachedMultipleNegativesRankingLoss: MNRL computed with GradCache.
    CachedMnrl,
    /// GISTEmbedLoss.
    Gist,
    /// TripletLoss.
    Triplet,
    /// CoSENTLoss.
    Cosent,
    /// MarginMSELoss.
    MarginMse,
}

impl std::str::FromStr for LossName {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(s.replace('-', "_"))).map_err(|_| {
            anyhow::anyhow!(
                "unknown loss `{s}`; choose one of mnrl, mnrl_symmetric, cached_mnrl, gist, triplet, cosent, margin_mse"
            )
        })
    }
}

/// Which loss to train with and its settings. Unset values take the sentence-transformers
/// defaults of that loss. Scripts pass a map with these keys; an unknown key is an error.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    pub name: LossName,
    /// Similarity scale for MNRL / CoSENT (default 20).
    pub scale: Option<f64>,
    /// Triplet margin (default 5, Euclidean distance).
    pub margin: Option<f64>,
    /// GIST temperature (default 0.01).
    pub temperature: Option<f64>,
    /// GIST guide model (a model id or folder).
    pub guide_model: Option<String>,
    /// Texts per GradCache mini-batch; `cached_mnrl` defaults to 32, any other loss uses
    /// GradCache when this is set.
    pub mini_batch_size: Option<usize>,
    /// Wrap the loss in MatryoshkaLoss at these dimensions (e.g. `[384, 256, 128, 64]`).
    pub matryoshka_dims: Vec<usize>,
    /// Weight of each Matryoshka dimension (default 1 each).
    pub matryoshka_weights: Vec<f64>,
}

impl LossConfig {
    pub fn named(name: LossName) -> Self {
        Self {
            name,
            ..Default::default()
        }
    }

    /// The loss, plus the GradCache mini-batch size if the embeddings should be computed that way.
    pub fn build(&self, load: &LoadOptions) -> Result<(Box<dyn Loss>, Option<usize>)> {
        let scale = self.scale.unwrap_or(20.0);
        let inner: Box<dyn Loss> = match self.name {
            LossName::Mnrl | LossName::CachedMnrl => Box::new(mnrl::Mnrl::new(scale, false)),
            LossName::MnrlSymmetric => Box::new(mnrl::Mnrl::new(scale, true)),
            LossName::Gist => {
                let Some(guide) = &self.guide_model else {
                    bail!("loss gist needs `guide_model` (a model id or folder)");
                };
                Box::new(gist::Gist::new(
                    SentenceEncoder::load(guide, load)?,
                    self.temperature.unwrap_or(0.01),
                ))
            }
            LossName::Triplet => Box::new(triplet::Triplet::new(self.margin.unwrap_or(5.0))),
            LossName::Cosent => Box::new(cosent::CoSent::new(scale)),
            LossName::MarginMse => Box::new(margin_mse::MarginMse),
        };
        let loss = if self.matryoshka_dims.is_empty() {
            inner
        } else {
            Box::new(matryoshka::Matryoshka::new(
                inner,
                self.matryoshka_dims.clone(),
                self.matryoshka_weights.clone(),
            )?)
        };
        let mini_batch = match self.name {
            LossName::CachedMnrl => Some(self.mini_batch_size.unwrap_or(32)),
            _ => self.mini_batch_size,
        };
        if mini_batch == Some(0) {
            bail!("mini_batch_size must be at least 1");
        }
        Ok((loss, mini_batch))
    }
}

/// Cosine similarity of every row of `a` with every row of `b`: `[a_rows, b_rows]`.
pub fn cos_sim(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(l2_normalize(a)?.matmul(&l2_normalize(b)?.t()?)?)
}

/// Row-wise cosine similarity of paired rows: `[rows]`.
pub fn pairwise_cos_sim(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok((l2_normalize(a)? * l2_normalize(b)?)?.sum(D::Minus1)?)
}

/// Mean cross-entropy of `logits` (`[rows, classes]`) where row `i`'s answer is class `i`.
pub fn diagonal_cross_entropy(logits: &Tensor) -> Result<Tensor> {
    let rows = logits.dim(0)?;
    let targets = Tensor::arange(0u32, rows as u32, logits.device())?;
    Ok(candle_nn::loss::cross_entropy(logits, &targets)?)
}

/// Fails unless the set has between `min` and `max` text columns.
pub fn require_text_columns(
    set: &TrainingSet,
    loss: &str,
    min: usize,
    max: usize,
    wants: &str,
) -> Result<()> {
    let n = set.columns.len();
    if n < min || n > max {
        bail!(
            "{loss} wants {wants}; the data has {n} text column(s): {}",
            set.columns.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_support {
    use candle_core::{Device, Tensor};

    use crate::train::dataset::Batch;

    pub fn rows(values: &[&[f64]]) -> Tensor {
        let cols = values[0].len();
        let flat: Vec<f64> = values.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_vec(flat, (values.len(), cols), &Device::Cpu).unwrap()
    }

    pub fn batch(columns: usize, rows: usize, labels: Option<Vec<Vec<f32>>>) -> Batch {
        Batch {
            texts: (0..columns)
                .map(|c| (0..rows).map(|r| format!("c{c}r{r}")).collect())
                .collect(),
            labels,
        }
    }

    pub fn scalar(t: &Tensor) -> f64 {
        t.to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    pub fn cos(a: &[f64], b: &[f64]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
        dot / (na * nb)
    }

    /// `log Σ exp(x)` − `x[target]`.
    pub fn ce(row: &[f64], target: usize) -> f64 {
        let max = row.iter().copied().fold(f64::MIN, f64::max);
        let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        lse - row[target]
    }
}

//! MatryoshkaLoss (Kusupati et al., 2022, "Matryoshka Representation Learning").
//!
//! Wraps any loss: the wrapped loss is computed on the embeddings truncated to each of `dims`
//! (their first d components) and the results are summed with `weights`, so that the leading
//! components alone make a usable smaller embedding. Evaluate at a truncated dimension with
//! `RetrievalEvalOptions::truncate_dim`
//! (`ragtune eval retrieval --truncate-dim 128`, `evaluate(…, #{truncate_dim: 128})`).

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::Loss;
use crate::train::dataset::{Batch, TrainingSet};

pub struct Matryoshka {
    inner: Box<dyn Loss>,
    dims: Vec<usize>,
    weights: Vec<f64>,
}

impl Matryoshka {
    pub fn new(inner: Box<dyn Loss>, dims: Vec<usize>, weights: Vec<f64>) -> Result<Self> {
        if dims.contains(&0) {
            bail!("matryoshka_dims must be positive");
        }
        let weights = if weights.is_empty() {
            vec![1.0; dims.len()]
        } else {
            weights
        };
        if weights.len() != dims.len() {
            bail!(
                "matryoshka_weights has {} values for {} dims",
                weights.len(),
                dims.len()
            );
        }
        Ok(Self {
            inner,
            dims,
            weights,
        })
    }
}

impl Loss for Matryoshka {
    fn name(&self) -> String {
        format!("MatryoshkaLoss({})", self.inner.name())
    }

    fn check(&self, set: &TrainingSet) -> Result<()> {
        self.inner.check(set)
    }

    fn compute(&self, embeddings: &[Tensor], batch: &Batch) -> Result<Tensor> {
        let full = embeddings[0].dim(1)?;
        let mut total: Option<Tensor> = None;
        for (&dim, &w) in self.dims.iter().zip(&self.weights) {
            if dim > full {
                bail!("matryoshka dim {dim} is larger than the embedding ({full})");
            }
            let cut: Vec<Tensor> = embeddings
                .iter()
                .map(|e| e.narrow(1, 0, dim))
                .collect::<candle_core::Result<_>>()?;
            let term = (self.inner.compute(&cut, batch)? * w)?;
            total = Some(match total {
                Some(t) => (t + term)?,
                None => term,
            });
        }
        total.ok_or_else(|| anyhow::anyhow!("matryoshka_dims is empty"))
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({"matryoshka_dims": self.dims, "matryoshka_weights": self.weights, "loss": self.inner.name(), "inner": self.inner.settings()})
    }
}

#[cfg(test)]
mod tests {
    use super::super::mnrl::Mnrl;
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn sums_the_inner_loss_at_each_truncation() {
        let a = rows(&[&[1.0, 0.0, 0.5], &[0.0, 1.0, -0.5], &[1.0, 1.0, 0.0]]);
        let p = rows(&[&[1.0, 0.2, -1.0], &[0.3, 1.0, 2.0], &[-1.0, 1.0, 0.1]]);
        let b = batch(2, 3, None);
        let mnrl = Mnrl::new(20.0, false);
        let at = |d: usize| {
            scalar(
                &mnrl
                    .compute(
                        &[a.narrow(1, 0, d).unwrap(), p.narrow(1, 0, d).unwrap()],
                        &b,
                    )
                    .unwrap(),
            )
        };
        let m =
            Matryoshka::new(Box::new(Mnrl::new(20.0, false)), vec![3, 2], vec![1.0, 0.5]).unwrap();
        let got = scalar(&m.compute(&[a.clone(), p.clone()], &b).unwrap());
        assert!((got - (at(3) + 0.5 * at(2))).abs() < 1e-9);
        assert!(
            at(3) != at(2),
            "the truncation must change the loss for this test to mean anything"
        );
        assert!(
            Matryoshka::new(Box::new(Mnrl::new(20.0, false)), vec![8], vec![])
                .unwrap()
                .compute(&[a, p], &b)
                .is_err()
        );
    }
}

//! MultipleNegativesRankingLoss (Henderson et al., 2017, "Efficient Natural Language Response
//! Suggestion for Smart Reply"; the InfoNCE of van den Oord et al., 2018).
//!
//! Data: `(anchor, positive[, negative_1, …])`. Each anchor must pick its own positive out of
//! every positive and negative in the batch, scored by cosine similarity × `scale`; the other
//! rows' positives are free negatives, so larger batches are harder (use the NO_DUPLICATES
//! sampler). The symmetric variant (MultipleNegativesSymmetricRankingLoss) also asks each
//! positive to pick its anchor and averages the two.

use anyhow::Result;
use candle_core::Tensor;

use super::{cos_sim, diagonal_cross_entropy, require_text_columns, Loss};
use crate::train::dataset::{Batch, TrainingSet};

pub struct Mnrl {
    scale: f64,
    symmetric: bool,
}

impl Mnrl {
    pub fn new(scale: f64, symmetric: bool) -> Self {
        Self { scale, symmetric }
    }
}

impl Loss for Mnrl {
    fn name(&self) -> String {
        if self.symmetric {
            "MultipleNegativesSymmetricRankingLoss".into()
        } else {
            "MultipleNegativesRankingLoss".into()
        }
    }

    fn check(&self, set: &TrainingSet) -> Result<()> {
        require_text_columns(
            set,
            &self.name(),
            2,
            usize::MAX,
            "(anchor, positive[, negative_1, …])",
        )
    }

    fn compute(&self, embeddings: &[Tensor], _batch: &Batch) -> Result<Tensor> {
        let anchors = &embeddings[0];
        let candidates = Tensor::cat(&embeddings[1..], 0)?;
        let scores = (cos_sim(anchors, &candidates)? * self.scale)?;
        let forward = diagonal_cross_entropy(&scores)?;
        if !self.symmetric {
            return Ok(forward);
        }
        let rows = anchors.dim(0)?;
        let backward = diagonal_cross_entropy(&scores.narrow(1, 0, rows)?.t()?)?;
        Ok(((forward + backward)? / 2.0)?)
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({"scale": self.scale, "similarity_fct": "cos_sim"})
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    /// 3 anchors × 3 positives, worked by hand: row i's loss is
    /// `log Σ_j exp(20·cos(a_i, p_j)) − 20·cos(a_i, p_i)`, averaged.
    #[test]
    fn three_by_three_by_hand() {
        let a: [&[f64]; 3] = [&[1.0, 0.0], &[0.0, 1.0], &[1.0, 1.0]];
        let p: [&[f64]; 3] = [&[1.0, 0.2], &[0.3, 1.0], &[-1.0, 1.0]];
        let expected: f64 = (0..3)
            .map(|i| {
                let row: Vec<f64> = (0..3).map(|j| 20.0 * cos(a[i], p[j])).collect();
                ce(&row, i)
            })
            .sum::<f64>()
            / 3.0;
        let loss = Mnrl::new(20.0, false)
            .compute(&[rows(&a), rows(&p)], &batch(2, 3, None))
            .unwrap();
        assert!(
            (scalar(&loss) - expected).abs() < 1e-9,
            "{} vs {expected}",
            scalar(&loss)
        );

        // Symmetric: also each positive picks its anchor (columns of the same matrix).
        let back: f64 = (0..3)
            .map(|j| {
                let col: Vec<f64> = (0..3).map(|i| 20.0 * cos(a[i], p[j])).collect();
                ce(&col, j)
            })
            .sum::<f64>()
            / 3.0;
        let sym = Mnrl::new(20.0, true)
            .compute(&[rows(&a), rows(&p)], &batch(2, 3, None))
            .unwrap();
        assert!((scalar(&sym) - (expected + back) / 2.0).abs() < 1e-9);
    }

    #[test]
    fn hard_negatives_join_the_candidates() {
        let a: [&[f64]; 2] = [&[1.0, 0.0], &[0.0, 1.0]];
        let p: [&[f64]; 2] = [&[1.0, 0.1], &[0.1, 1.0]];
        let n: [&[f64]; 2] = [&[1.0, -0.1], &[0.5, 0.5]];
        let expected: f64 = (0..2)
            .map(|i| {
                let row: Vec<f64> = p
                    .iter()
                    .chain(n.iter())
                    .map(|c| 20.0 * cos(a[i], c))
                    .collect();
                ce(&row, i)
            })
            .sum::<f64>()
            / 2.0;
        let loss = Mnrl::new(20.0, false)
            .compute(&[rows(&a), rows(&p), rows(&n)], &batch(3, 2, None))
            .unwrap();
        assert!((scalar(&loss) - expected).abs() < 1e-9);
    }
}

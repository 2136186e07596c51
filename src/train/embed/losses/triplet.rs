//! TripletLoss (Schroff et al., 2015, "FaceNet"; used for sentences by Reimers & Gurevych, 2019).
//!
//! Data: `(anchor, positive, negative)`. Pushes the anchor closer to its positive than to its
//! negative by at least `margin` in Euclidean distance: `relu(‖a−p‖ − ‖a−n‖ + margin)`, averaged.
//! Distances follow `torch.nn.functional.pairwise_distance` (eps 1e-6 added to the difference).

use anyhow::Result;
use candle_core::{Tensor, D};

use super::{require_text_columns, Loss};
use crate::train::dataset::{Batch, TrainingSet};

pub struct Triplet {
    margin: f64,
}

impl Triplet {
    pub fn new(margin: f64) -> Self {
        Self { margin }
    }
}

fn euclidean(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(((a - b)? + 1e-6)?.sqr()?.sum(D::Minus1)?.sqrt()?)
}

impl Loss for Triplet {
    fn name(&self) -> String {
        "TripletLoss".into()
    }

    fn check(&self, set: &TrainingSet) -> Result<()> {
        require_text_columns(set, &self.name(), 3, 3, "(anchor, positive, negative)")
    }

    fn compute(&self, e: &[Tensor], _batch: &Batch) -> Result<Tensor> {
        let gap = ((euclidean(&e[0], &e[1])? - euclidean(&e[0], &e[2])?)? + self.margin)?;
        Ok(gap.relu()?.mean_all()?)
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({"distance_metric": "euclidean", "triplet_margin": self.margin})
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn three_triplets_by_hand() {
        let a: [&[f64]; 3] = [&[0.0, 0.0], &[1.0, 1.0], &[2.0, 0.0]];
        let p: [&[f64]; 3] = [&[3.0, 4.0], &[1.0, 2.0], &[2.0, 1.0]];
        let n: [&[f64]; 3] = [&[0.0, 1.0], &[7.0, 9.0], &[2.0, 3.0]];
        let d = |x: &[f64], y: &[f64]| -> f64 {
            x.iter()
                .zip(y)
                .map(|(u, v)| (u - v + 1e-6).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        // Row 0: 5 − 1 + 5 = 9; row 1: 1 − 10 + 5 < 0 → 0; row 2: 1 − 3 + 5 = 3.
        let expected: f64 = (0..3)
            .map(|i| (d(a[i], p[i]) - d(a[i], n[i]) + 5.0).max(0.0))
            .sum::<f64>()
            / 3.0;
        assert!((expected - 4.0).abs() < 1e-4);
        let loss = Triplet::new(5.0)
            .compute(&[rows(&a), rows(&p), rows(&n)], &batch(3, 3, None))
            .unwrap();
        assert!((scalar(&loss) - expected).abs() < 1e-9);
    }
}

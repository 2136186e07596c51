//! CoSENTLoss (Su, 2022, "CoSENT: a more efficient sentence vector scheme than Sentence-BERT").
//!
//! Data: `(sentence_a, sentence_b)` with a `score` (a similarity grade, any scale). For every two
//! pairs where pair `i` is graded lower than pair `j`, it penalises `cos_i > cos_j`:
//! `log(1 + Σ_{label_i < label_j} exp(scale·(cos_i − cos_j)))`. Only the order of the grades
//! matters, not their values.

use anyhow::Result;
use candle_core::Tensor;

use super::{pairwise_cos_sim, require_text_columns, Loss};
use crate::train::dataset::{Batch, TrainingSet};

pub struct CoSent {
    scale: f64,
}

impl CoSent {
    pub fn new(scale: f64) -> Self {
        Self { scale }
    }
}

impl Loss for CoSent {
    fn name(&self) -> String {
        "CoSENTLoss".into()
    }

    fn check(&self, set: &TrainingSet) -> Result<()> {
        require_text_columns(
            set,
            &self.name(),
            2,
            2,
            "(sentence_a, sentence_b) and a score column",
        )?;
        if set.labels.is_none() {
            anyhow::bail!("CoSENTLoss needs a `score` (or `label`) column with a grade per pair");
        }
        Ok(())
    }

    fn compute(&self, e: &[Tensor], batch: &Batch) -> Result<Tensor> {
        let labels = batch.scalar_labels(&self.name())?;
        let n = labels.len();
        let scores = (pairwise_cos_sim(&e[0], &e[1])? * self.scale)?;
        // diff[i][j] = s_i − s_j, kept only where label_i < label_j; the rest pushed to −∞.
        let diff = scores.unsqueeze(1)?.broadcast_sub(&scores.unsqueeze(0)?)?;
        let mut bias = vec![-1e12f64; n * n];
        for i in 0..n {
            for j in 0..n {
                if labels[i] < labels[j] {
                    bias[i * n + j] = 0.0;
                }
            }
        }
        let bias = Tensor::from_vec(bias, (n, n), diff.device())?.to_dtype(diff.dtype())?;
        let zero = Tensor::zeros(1, diff.dtype(), diff.device())?;
        let all = Tensor::cat(&[&zero, &(diff + bias)?.flatten_all()?], 0)?;
        // log-sum-exp, shifted by the max for stability.
        let max = all.max_keepdim(0)?.detach();
        let lse = (all.broadcast_sub(&max)?.exp()?.sum_keepdim(0)?.log()? + max)?;
        Ok(lse.squeeze(0)?)
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({"scale": self.scale, "similarity_fct": "pairwise_cos_sim"})
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn three_pairs_by_hand() {
        let a: [&[f64]; 3] = [&[1.0, 0.0], &[0.0, 1.0], &[1.0, 1.0]];
        let b: [&[f64]; 3] = [&[1.0, 0.5], &[1.0, 0.2], &[0.2, 1.0]];
        let labels = [1.0f32, 0.0, 0.5];
        let s: Vec<f64> = (0..3).map(|i| 20.0 * cos(a[i], b[i])).collect();
        let mut terms = vec![0.0];
        for i in 0..3 {
            for j in 0..3 {
                if labels[i] < labels[j] {
                    terms.push(s[i] - s[j]);
                }
            }
        }
        assert_eq!(terms.len(), 4, "three ordered pairs plus the zero");
        let max = terms.iter().copied().fold(f64::MIN, f64::max);
        let expected = max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln();
        let loss = CoSent::new(20.0)
            .compute(
                &[rows(&a), rows(&b)],
                &batch(2, 3, Some(labels.iter().map(|&l| vec![l]).collect())),
            )
            .unwrap();
        assert!(
            (scalar(&loss) - expected).abs() < 1e-9,
            "{} vs {expected}",
            scalar(&loss)
        );
    }
}

//! MarginMSELoss (Hofstätter et al., 2020, "Improving Efficient Neural Ranking Models with
//! Cross-Architecture Knowledge Distillation").
//!
//! Data: `(query, positive, negative_1[, …, negative_n])` with a label per row holding the
//! teacher's margins `teacher(q, p) − teacher(q, n_k)` (one number, or a list of n). The student's
//! margins `q·p − q·n_k` (dot product) are regressed onto them with mean squared error.

use anyhow::{bail, Result};
use candle_core::{Tensor, D};

use super::{require_text_columns, Loss};
use crate::train::dataset::{Batch, TrainingSet};

pub struct MarginMse;

impl Loss for MarginMse {
    fn name(&self) -> String {
        "MarginMSELoss".into()
    }

    fn check(&self, set: &TrainingSet) -> Result<()> {
        require_text_columns(
            set,
            &self.name(),
            3,
            usize::MAX,
            "(query, positive, negative_1, …) and a label column of teacher margins",
        )?;
        let negatives = set.columns.len() - 2;
        let Some((name, labels)) = &set.labels else {
            bail!("MarginMSELoss needs a `label` column with the teacher's margins");
        };
        if let Some(row) = labels.iter().position(|l| l.len() != negatives) {
            bail!("MarginMSELoss: `{name}` row {} has {} margin(s) for {negatives} negative column(s)", row + 1, labels[row].len());
        }
        Ok(())
    }

    fn compute(&self, e: &[Tensor], batch: &Batch) -> Result<Tensor> {
        let Some(labels) = &batch.labels else {
            bail!("MarginMSELoss needs a label column");
        };
        let dot =
            |a: &Tensor, b: &Tensor| -> Result<Tensor> { Ok((a * b)?.sum_keepdim(D::Minus1)?) };
        let positive = dot(&e[0], &e[1])?;
        let negatives: Vec<Tensor> = e[2..]
            .iter()
            .map(|n| dot(&e[0], n))
            .collect::<Result<_>>()?;
        let predicted = positive.broadcast_sub(&Tensor::cat(&negatives, 1)?)?;
        let flat: Vec<f32> = labels.iter().flatten().copied().collect();
        let target = Tensor::from_vec(flat, predicted.dims(), predicted.device())?
            .to_dtype(predicted.dtype())?;
        Ok((predicted - target)?.sqr()?.mean_all()?)
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({"similarity_fct": "pairwise_dot_score"})
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn three_rows_by_hand() {
        let q: [&[f64]; 3] = [&[1.0, 0.0], &[0.0, 2.0], &[1.0, 1.0]];
        let p: [&[f64]; 3] = [&[2.0, 0.0], &[0.0, 1.0], &[1.0, 0.0]];
        let n: [&[f64]; 3] = [&[1.0, 0.0], &[1.0, 0.0], &[0.0, 3.0]];
        // Student margins: 2 − 1 = 1, 2 − 0 = 2, 1 − 3 = −2; teacher: 0.5, 2, 1.
        let labels = vec![vec![0.5f32], vec![2.0], vec![1.0]];
        let expected = (0.25 + 0.0 + 9.0) / 3.0;
        let loss = MarginMse
            .compute(&[rows(&q), rows(&p), rows(&n)], &batch(3, 3, Some(labels)))
            .unwrap();
        assert!((scalar(&loss) - expected).abs() < 1e-9);
    }
}

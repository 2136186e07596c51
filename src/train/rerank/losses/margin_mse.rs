//! MarginMSELoss (Hofstätter et al., 2020, "Improving Efficient Neural Ranking Models with
//! Cross-Architecture Knowledge Distillation"): the student's margin `s(q, pos) − s(q, neg_i)`
//! is fitted to a teacher's margin by mean squared error. Data: `(query, positive, negative_1..n)`
//! with a list column of n margins, or n + 1 teacher scores (margins are then taken from them),
//! as `mine --output-format n-tuple-scores` writes.

use anyhow::{bail, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{activate, Pair, RerankLoss};
use crate::models::ScoreActivation;
use crate::train::rerank::data::{RerankBatch, RerankFormat, RerankSet};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MarginMseSettings {
    pub activation_fn: ScoreActivation,
}

impl Default for MarginMseSettings {
    fn default() -> Self {
        Self {
            activation_fn: ScoreActivation::Identity,
        }
    }
}

pub struct MarginMse {
    settings: MarginMseSettings,
}

impl MarginMse {
    pub fn new(settings: MarginMseSettings) -> Self {
        Self { settings }
    }
}

impl RerankLoss for MarginMse {
    fn name(&self) -> String {
        "MarginMSELoss".into()
    }

    fn check(&self, set: &RerankSet) -> Result<()> {
        if set.format != RerankFormat::NTuple || set.teacher.is_none() {
            bail!(
                "MarginMSELoss wants (query, positive, negative_1..n) rows with a `scores` list of teacher \
                 scores or margins; the data has {}",
                set.columns.join(", ")
            );
        }
        Ok(())
    }

    fn compute(&self, logits: &Tensor, batch: &RerankBatch, _pairs: &[Pair]) -> Result<Tensor> {
        let rows = batch.documents.len();
        let docs = batch.documents[0].len();
        let x = activate(logits, self.settings.activation_fn)?.reshape((rows, docs))?;
        let negatives = docs - 1;
        let teacher = batch.teacher.as_ref().expect("checked");
        let margins: Vec<f64> = teacher
            .iter()
            .flat_map(|t| -> Vec<f64> {
                if t.len() == docs {
                    t[1..].iter().map(|n| (t[0] - n) as f64).collect()
                } else {
                    t.iter().map(|&m| m as f64).collect()
                }
            })
            .collect();
        let target =
            Tensor::from_vec(margins, (rows, negatives), x.device())?.to_dtype(x.dtype())?;
        let predicted = x
            .narrow(1, 0, 1)?
            .broadcast_sub(&x.narrow(1, 1, negatives)?)?;
        Ok((predicted - target)?.sqr()?.mean_all()?)
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({"activation_fn": self.settings.activation_fn.torch_name()})
    }
}

#[cfg(test)]
mod tests {
    use super::super::every_document;
    use super::super::test_support::*;
    use super::*;

    /// Row 0 gives teacher scores (5, 2, 1) → margins (3, 4); row 1 gives margins (1, −1).
    /// Student logits (2, 0, 1) and (0, 0.5, −0.5) → margins (2, 1) and (−0.5, 0.5).
    /// Loss = ((2−3)² + (1−4)² + (−0.5−1)² + (0.5+1)²) / 4.
    #[test]
    fn hand_worked_scores_and_margins() {
        let mut b = batch(&[&[1.0, 0.0, 0.0], &[1.0, 0.0, 0.0]]);
        b.teacher = Some(vec![vec![5.0, 2.0, 1.0], vec![1.0, -1.0]]);
        let pairs = every_document(&b);
        let loss = MarginMse::new(Default::default())
            .compute(&logits(&[2.0, 0.0, 1.0, 0.0, 0.5, -0.5]), &b, &pairs)
            .unwrap();
        let expected = (1.0 + 9.0 + 2.25 + 2.25) / 4.0;
        assert!((scalar(&loss) - expected).abs() < 1e-12);
        check_gradient(&[2.0, 0.0, 1.0, 0.0, 0.5, -0.5], |x| {
            MarginMse::new(Default::default())
                .compute(x, &b, &pairs)
                .unwrap()
        });
    }
}

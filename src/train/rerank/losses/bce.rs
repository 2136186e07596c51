//! BinaryCrossEntropyLoss: each (query, document) pair's logit against its 0/1 (or graded in
//! [0, 1]) label, as `torch.nn.BCEWithLogitsLoss`: `−[p·y·log σ(x) + (1 − y)·log(1 − σ(x))]`,
//! averaged over pairs, `p` the positive weight (the library default is 1). The recipe of
//! sentence-transformers' MS MARCO rerankers; data: labeled pairs, or any rows whose documents
//! carry labels (n-tuples count the positive 1, negatives 0).

use anyhow::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{activate, log_sigmoid, Pair, RerankLoss};
use crate::models::ScoreActivation;
use crate::train::rerank::data::{RerankBatch, RerankSet};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BceSettings {
    /// Weight of positive pairs (`pos_weight`); unset is 1, as the library default. A common
    /// choice with n mined negatives per positive is n.
    pub pos_weight: Option<f64>,
    /// Applied to the logits before the loss (identity by default).
    pub activation_fn: ScoreActivation,
}

impl Default for BceSettings {
    fn default() -> Self {
        Self {
            pos_weight: None,
            activation_fn: ScoreActivation::Identity,
        }
    }
}

pub struct Bce {
    settings: BceSettings,
}

impl Bce {
    pub fn new(settings: BceSettings) -> Self {
        Self { settings }
    }
}

impl RerankLoss for Bce {
    fn name(&self) -> String {
        "BinaryCrossEntropyLoss".into()
    }

    fn check(&self, set: &RerankSet) -> Result<()> {
        if set.teacher.is_some() {
            anyhow::bail!("BinaryCrossEntropyLoss wants 0/1 labels; this data carries teacher scores (use margin_mse)");
        }
        Ok(())
    }

    fn compute(&self, logits: &Tensor, batch: &RerankBatch, pairs: &[Pair]) -> Result<Tensor> {
        let x = activate(logits, self.settings.activation_fn)?;
        let mut seen = vec![0usize; batch.labels.len()];
        let labels: Vec<f64> = pairs
            .iter()
            .map(|(r, _)| {
                let l = batch.labels[*r][seen[*r]];
                seen[*r] += 1;
                l as f64
            })
            .collect();
        let y = Tensor::new(labels, x.device())?.to_dtype(x.dtype())?;
        let pw = self.settings.pos_weight.unwrap_or(1.0);
        let positive = ((&y * pw)? * log_sigmoid(&x)?)?;
        let negative = ((1.0 - &y)? * log_sigmoid(&x.neg()?)?)?;
        Ok((positive + negative)?.mean_all()?.neg()?)
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "activation_fn": self.settings.activation_fn.torch_name(),
            "pos_weight": self.settings.pos_weight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::every_document;
    use super::super::test_support::*;
    use super::*;

    /// Two rows: (2.0 → 1, −1.0 → 0) and (0.5 → 0). With pos_weight 3:
    /// (3·ln(1+e^−2) + ln(1+e^−1) + ln(1+e^0.5)) / 3.
    #[test]
    fn hand_worked_with_and_without_pos_weight() {
        let b = batch(&[&[1.0, 0.0], &[0.0]]);
        let pairs = every_document(&b);
        let x = logits(&[2.0, -1.0, 0.5]);
        let sp = |v: f64| (1.0 + v.exp()).ln(); // softplus
        let plain = Bce::new(BceSettings::default())
            .compute(&x, &b, &pairs)
            .unwrap();
        let expected = (sp(-2.0) + sp(-1.0) + sp(0.5)) / 3.0;
        assert!(
            (scalar(&plain) - expected).abs() < 1e-12,
            "{} vs {expected}",
            scalar(&plain)
        );
        let weighted = Bce::new(BceSettings {
            pos_weight: Some(3.0),
            ..Default::default()
        })
        .compute(&x, &b, &pairs)
        .unwrap();
        let expected = (3.0 * sp(-2.0) + sp(-1.0) + sp(0.5)) / 3.0;
        assert!((scalar(&weighted) - expected).abs() < 1e-12);
        check_gradient(&[2.0, -1.0, 0.5], |x| {
            Bce::new(BceSettings {
                pos_weight: Some(3.0),
                ..Default::default()
            })
            .compute(x, &b, &pairs)
            .unwrap()
        });
    }

    #[test]
    fn stays_finite_on_saturated_logits() {
        let b = batch(&[&[1.0, 0.0]]);
        let pairs = every_document(&b);
        let loss = Bce::new(BceSettings::default())
            .compute(&logits(&[-200.0, 200.0]), &b, &pairs)
            .unwrap();
        assert!((scalar(&loss) - 200.0).abs() < 1e-9);
    }
}

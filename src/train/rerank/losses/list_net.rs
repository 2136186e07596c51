//! ListNetLoss (Cao et al., 2007, "Learning to Rank: From Pairwise Approach to Listwise
//! Approach"): per query, the cross-entropy between the top-one distribution of the labels
//! (`softmax(labels)`) and that of the scores (`softmax(logits)`), averaged over queries. Data:
//! `(query, [documents], [labels])`, or n-tuples (positive 1, negatives 0).

use anyhow::Result;
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use super::{activate, Pair, RerankLoss};
use crate::models::ScoreActivation;
use crate::train::rerank::data::{RerankBatch, RerankSet};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ListNetSettings {
    pub activation_fn: ScoreActivation,
    /// Pairs per forward pass (gradient caching keeps memory to one mini-batch).
    pub mini_batch_size: Option<usize>,
}

impl Default for ListNetSettings {
    fn default() -> Self {
        Self {
            activation_fn: ScoreActivation::Identity,
            mini_batch_size: None,
        }
    }
}

pub struct ListNet {
    settings: ListNetSettings,
}

impl ListNet {
    pub fn new(settings: ListNetSettings) -> Self {
        Self { settings }
    }
}

/// The logits of each row of the batch (pairs are row by row, see `every_document`).
pub(super) fn per_row(x: &Tensor, batch: &RerankBatch) -> Result<Vec<Tensor>> {
    let mut at = 0;
    batch
        .documents
        .iter()
        .map(|docs| {
            let row = x.narrow(0, at, docs.len())?;
            at += docs.len();
            Ok(row)
        })
        .collect()
}

impl RerankLoss for ListNet {
    fn name(&self) -> String {
        "ListNetLoss".into()
    }

    fn check(&self, set: &RerankSet) -> Result<()> {
        super::require_lists(set, &self.name())
    }

    fn compute(&self, logits: &Tensor, batch: &RerankBatch, _pairs: &[Pair]) -> Result<Tensor> {
        let x = activate(logits, self.settings.activation_fn)?;
        let mut terms = Vec::with_capacity(batch.labels.len());
        for (row, labels) in per_row(&x, batch)?.into_iter().zip(&batch.labels) {
            let labels: Vec<f64> = labels.iter().map(|&l| l as f64).collect();
            let target = candle_nn::ops::softmax(
                &Tensor::new(labels, x.device())?.to_dtype(x.dtype())?,
                D::Minus1,
            )?;
            let log_p = candle_nn::ops::log_softmax(&row, D::Minus1)?;
            terms.push((target * log_p)?.sum_all()?.neg()?);
        }
        Ok((super::sum_scalars(&terms)? / batch.documents.len() as f64)?)
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "activation_fn": self.settings.activation_fn.torch_name(),
            "mini_batch_size": self.settings.mini_batch_size,
        })
    }

    fn mini_batch_size(&self) -> Option<usize> {
        self.settings.mini_batch_size
    }
}

#[cfg(test)]
mod tests {
    use super::super::every_document;
    use super::super::test_support::*;
    use super::*;

    /// Row 0: labels (1, 0, 0), logits (2, 1, 0); row 1: labels (2, 1), logits (0, 1).
    #[test]
    fn hand_worked_rows_of_different_lengths() {
        let b = batch(&[&[1.0, 0.0, 0.0], &[2.0, 1.0]]);
        let pairs = every_document(&b);
        let x = [2.0, 1.0, 0.0, 0.0, 1.0];
        let loss = ListNet::new(Default::default())
            .compute(&logits(&x), &b, &pairs)
            .unwrap();
        let softmax = |v: &[f64]| -> Vec<f64> {
            let z: f64 = v.iter().map(|a| a.exp()).sum();
            v.iter().map(|a| a.exp() / z).collect()
        };
        let ce = |labels: &[f64], scores: &[f64]| -> f64 {
            let (t, p) = (softmax(labels), softmax(scores));
            -t.iter().zip(&p).map(|(t, p)| t * p.ln()).sum::<f64>()
        };
        let expected =
            (ce(&[1.0, 0.0, 0.0], &[2.0, 1.0, 0.0]) + ce(&[2.0, 1.0], &[0.0, 1.0])) / 2.0;
        assert!((scalar(&loss) - expected).abs() < 1e-12);
        check_gradient(&x, |x| {
            ListNet::new(Default::default())
                .compute(x, &b, &pairs)
                .unwrap()
        });
    }
}

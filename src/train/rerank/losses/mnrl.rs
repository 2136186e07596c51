//! MultipleNegativesRankingLoss for cross-encoders (Henderson et al., 2017, "Efficient Natural
//! Language Response Suggestion for Smart Reply", §4.4): each query must pick its positive out of
//! its hard negatives and `num_negatives` documents drawn from the other rows of the batch. Scores
//! are `scale · σ(logit)` and the loss is the cross-entropy of the positive, as
//! sentence-transformers computes it. Data: `(query, positive[, negative_1..n])`; use the
//! NO_DUPLICATES sampler so that a drawn document is never the query's own positive.

use anyhow::{bail, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{activate, Pair, RerankLoss};
use crate::models::ScoreActivation;
use crate::rng::Rng;
use crate::train::rerank::data::{RerankBatch, RerankFormat, RerankSet};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MnrlSettings {
    /// In-batch negatives drawn per query (`None`: every other row's documents).
    pub num_negatives: Option<usize>,
    pub scale: f64,
    pub activation_fn: ScoreActivation,
}

impl Default for MnrlSettings {
    fn default() -> Self {
        Self {
            num_negatives: Some(4),
            scale: 10.0,
            activation_fn: ScoreActivation::Sigmoid,
        }
    }
}

pub struct Mnrl {
    settings: MnrlSettings,
}

impl Mnrl {
    pub fn new(settings: MnrlSettings) -> Result<Self> {
        if settings.scale <= 0.0 {
            bail!("mnrl: scale must be positive, got {}", settings.scale);
        }
        Ok(Self { settings })
    }
}

impl RerankLoss for Mnrl {
    fn name(&self) -> String {
        "MultipleNegativesRankingLoss".into()
    }

    fn check(&self, set: &RerankSet) -> Result<()> {
        super::require_format(
            set,
            &self.name(),
            &[RerankFormat::NTuple],
            "(query, positive[, negative_1..n]) rows",
        )
    }

    /// Column by column, as sentence-transformers scores them: every row with its positive; then
    /// for each drawn in-batch negative, every row with its k-th draw; then every row with each of
    /// its own hard negatives.
    fn pairs(&self, batch: &RerankBatch, rng: &mut Rng) -> Vec<Pair> {
        let rows = batch.documents.len();
        let columns = batch.documents[0].len();
        // Candidates in column-major order: all positives, then each negative column.
        let candidate = |j: usize| &batch.documents[j % rows][j / rows];
        let valid = rows * columns - columns;
        let draws: Vec<Vec<usize>> = (0..rows)
            .map(|r| {
                let others: Vec<usize> = (0..rows * columns).filter(|j| j % rows != r).collect();
                match self.settings.num_negatives {
                    Some(n) if n < valid => rng.sample(&others, n),
                    _ => others,
                }
            })
            .collect();
        let mut pairs: Vec<Pair> = (0..rows)
            .map(|r| (r, batch.documents[r][0].clone()))
            .collect();
        let drawn = draws.first().map_or(0, Vec::len);
        pairs.extend(
            (0..drawn)
                .flat_map(|k| draws.iter().enumerate().map(move |(r, d)| (r, d[k])))
                .map(|(r, j)| (r, candidate(j).clone())),
        );
        for c in 1..columns {
            pairs.extend((0..rows).map(|r| (r, batch.documents[r][c].clone())));
        }
        pairs
    }

    fn compute(&self, logits: &Tensor, batch: &RerankBatch, pairs: &[Pair]) -> Result<Tensor> {
        let rows = batch.documents.len();
        let columns = pairs.len() / rows;
        let scores = (activate(logits, self.settings.activation_fn)? * self.settings.scale)?
            .reshape((columns, rows))?
            .t()?;
        let targets = Tensor::zeros(rows, candle_core::DType::U32, scores.device())?;
        Ok(candle_nn::loss::cross_entropy(
            &scores.contiguous()?,
            &targets,
        )?)
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "scale": self.settings.scale,
            "num_negatives": self.settings.num_negatives,
            "activation_fn": self.settings.activation_fn.torch_name(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn draws_come_from_other_rows_and_columns_line_up() {
        let b = batch(&[&[1.0, 0.0], &[1.0, 0.0], &[1.0, 0.0]]);
        let loss = Mnrl::new(MnrlSettings {
            num_negatives: Some(2),
            ..Default::default()
        })
        .unwrap();
        let pairs = loss.pairs(&b, &mut Rng::new(7));
        // positives, 2 drawn columns, 1 hard-negative column: 4 columns of 3 rows.
        assert_eq!(pairs.len(), 12);
        for (i, (r, doc)) in pairs.iter().enumerate() {
            assert_eq!(*r, i % 3);
            let own = doc.starts_with(&format!("d{r}"));
            match i / 3 {
                0 => assert_eq!(doc, &format!("d{r}0")),
                1 | 2 => assert!(!own, "row {r} drew its own document {doc}"),
                _ => assert_eq!(doc, &format!("d{r}1")),
            }
        }
        // Without a limit every other row's documents are used: 3·2 − 2 = 4 each.
        let all = Mnrl::new(MnrlSettings {
            num_negatives: None,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(all.pairs(&b, &mut Rng::new(7)).len(), 3 * (1 + 4 + 1));
    }

    /// Two rows, columns (positive, one draw): logits row 0 (1, −1), row 1 (0, 2).
    /// Row loss = −log softmax(10·σ(x))[0].
    #[test]
    fn hand_worked_loss() {
        let b = batch(&[&[1.0], &[1.0]]);
        let pairs: Vec<Pair> = vec![
            (0, "p0".into()),
            (1, "p1".into()),
            (0, "n".into()),
            (1, "n".into()),
        ];
        let x = [1.0, 0.0, -1.0, 2.0]; // column-major: positives then draws
        let loss = Mnrl::new(Default::default())
            .unwrap()
            .compute(&logits(&x), &b, &pairs)
            .unwrap();
        let row = |p: f64, n: f64| {
            let (p, n) = (10.0 * sigmoid(p), 10.0 * sigmoid(n));
            -(p - (p.exp() + n.exp()).ln())
        };
        let expected = (row(1.0, -1.0) + row(0.0, 2.0)) / 2.0;
        assert!(
            (scalar(&loss) - expected).abs() < 1e-12,
            "{} vs {expected}",
            scalar(&loss)
        );
        check_gradient(&x, |x| {
            Mnrl::new(Default::default())
                .unwrap()
                .compute(x, &b, &pairs)
                .unwrap()
        });
    }
}

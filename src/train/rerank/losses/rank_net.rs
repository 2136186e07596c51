//! RankNetLoss (Burges et al., 2005, "Learning to Rank using Gradient Descent"): for every pair of
//! documents of a query whose labels differ, `−log σ(σ·(s_i − s_j))` with `i` the better one —
//! [`super::lambda::Lambda`] without a weighting scheme, as sentence-transformers defines it.

use serde::{Deserialize, Serialize};

use super::lambda::{Lambda, LambdaSettings, ReductionLog, Weighting};
use crate::models::ScoreActivation;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RankNetSettings {
    /// Only pairs with a document in the top `k` (by score) count; unset: all.
    pub k: Option<usize>,
    pub sigma: f64,
    pub eps: f64,
    pub reduction_log: ReductionLog,
    pub activation_fn: ScoreActivation,
    pub mini_batch_size: Option<usize>,
}

impl Default for RankNetSettings {
    fn default() -> Self {
        let l = LambdaSettings::default();
        Self {
            k: l.k,
            sigma: l.sigma,
            eps: l.eps,
            reduction_log: l.reduction_log,
            activation_fn: l.activation_fn,
            mini_batch_size: l.mini_batch_size,
        }
    }
}

/// The RankNet loss: LambdaLoss with no weighting.
pub fn rank_net(s: RankNetSettings) -> Lambda {
    Lambda::named(
        "RankNetLoss",
        LambdaSettings {
            weighting_scheme: Weighting::None,
            k: s.k,
            sigma: s.sigma,
            eps: s.eps,
            reduction_log: s.reduction_log,
            activation_fn: s.activation_fn,
            mini_batch_size: s.mini_batch_size,
            mu: LambdaSettings::default().mu,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{every_document, RerankLoss};
    use super::*;

    /// Labels (2, 0, 1), logits (0.5, 1, −1): sorted by score the documents are (1, 0, 2) with
    /// labels (0, 2, 1). Pairs with a better label first: (0 over 1), (0 over 2), (2 over 1), i.e.
    /// score differences 0.5 − 1, 0.5 + 1, −1 − 1. Loss = mean of −log₂ σ(difference).
    #[test]
    fn hand_worked_pairs() {
        let b = batch(&[&[2.0, 0.0, 1.0]]);
        let pairs = every_document(&b);
        let x = [0.5, 1.0, -1.0];
        let loss = rank_net(Default::default())
            .compute(&logits(&x), &b, &pairs)
            .unwrap();
        let term = |d: f64| -(sigmoid(d).ln()) / std::f64::consts::LN_2;
        let expected = (term(-0.5) + term(1.5) + term(-2.0)) / 3.0;
        assert!(
            (scalar(&loss) - expected).abs() < 1e-12,
            "{} vs {expected}",
            scalar(&loss)
        );
        check_gradient(&x, |x| {
            rank_net(Default::default()).compute(x, &b, &pairs).unwrap()
        });
    }
}

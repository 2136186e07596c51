//! LambdaLoss (Wang et al., 2018, "The LambdaLoss Framework for Ranking Metric Optimization"):
//! per query, documents are sorted by score; every pair (i, j) whose labels say i is better adds
//! `−w_ij · log₂ σ(σ·(s_i − s_j))`, with `w_ij` from a weighting scheme built on NDCG gains
//! `(2^label − 1) / maxDCG` and discounts `log₂(1 + rank)`. NDCGLoss2++ (the default) bounds NDCG
//! most tightly; NDCGLoss1, NDCGLoss2, LambdaRank and none (RankNet) are selectable. The mean is
//! taken over the counted pairs of the whole batch, as sentence-transformers does. Data:
//! `(query, [documents], [labels])` or n-tuples.

use anyhow::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::list_net::per_row;
use super::{activate, log_sigmoid, Pair, RerankLoss};
use crate::models::ScoreActivation;
use crate::train::rerank::data::{RerankBatch, RerankSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// No weights: RankNet.
    None,
    NdcgLoss1,
    NdcgLoss2,
    LambdaRank,
    /// `mu · NDCGLoss2 + LambdaRank`.
    NdcgLoss2pp,
}

impl Weighting {
    fn torch_name(self) -> &'static str {
        match self {
            Self::None => "NoWeightingScheme",
            Self::NdcgLoss1 => "NDCGLoss1Scheme",
            Self::NdcgLoss2 => "NDCGLoss2Scheme",
            Self::LambdaRank => "LambdaRankScheme",
            Self::NdcgLoss2pp => "NDCGLoss2PPScheme",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReductionLog {
    Natural,
    Binary,
}

/// The learning rate LambdaLoss trains at unless one is given (the stage's 5e-5 otherwise): on
/// SciFact, a fresh head on MiniLM with 658 mined n-tuples learned most at 1e-4 (README, rerankers).
pub const DEFAULT_LR: f64 = 1e-4;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LambdaSettings {
    pub weighting_scheme: Weighting,
    /// Only pairs with a document in the top `k` (by score) count; unset: all.
    pub k: Option<usize>,
    pub sigma: f64,
    /// Floor of maxDCG (queries without a relevant document).
    pub eps: f64,
    pub reduction_log: ReductionLog,
    /// Weight of NDCGLoss2 inside NDCGLoss2++.
    pub mu: f64,
    pub activation_fn: ScoreActivation,
    /// Pairs per forward pass (gradient caching keeps memory to one mini-batch).
    pub mini_batch_size: Option<usize>,
}

impl Default for LambdaSettings {
    fn default() -> Self {
        Self {
            weighting_scheme: Weighting::NdcgLoss2pp,
            k: None,
            sigma: 1.0,
            eps: 1e-10,
            reduction_log: ReductionLog::Binary,
            mu: 10.0,
            activation_fn: ScoreActivation::Identity,
            mini_batch_size: None,
        }
    }
}

pub struct Lambda {
    name: &'static str,
    settings: LambdaSettings,
}

impl Lambda {
    pub fn new(settings: LambdaSettings) -> Self {
        Self::named("LambdaLoss", settings)
    }

    pub fn named(name: &'static str, settings: LambdaSettings) -> Self {
        Self { name, settings }
    }

    /// For one query of `n` documents with `scores` (detached) and `labels`: the order by score,
    /// and the `[n, n]` weights of the pairs that count (0 elsewhere), over sorted positions.
    fn pair_weights(&self, scores: &[f64], labels: &[f32]) -> (Vec<u32>, Vec<f64>, usize) {
        let s = &self.settings;
        let n = scores.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let truth: Vec<f64> = order.iter().map(|&i| labels[i] as f64).collect();
        let mut ideal: Vec<f64> = labels.iter().map(|&l| (l as f64).max(0.0)).collect();
        ideal.sort_by(|a, b| b.total_cmp(a));
        let k = s.k.unwrap_or(n).min(n);
        let discount: Vec<f64> = (1..=n).map(|p| (1.0 + p as f64).log2()).collect();
        let max_dcg = (0..k)
            .map(|i| (2f64.powf(ideal[i]) - 1.0) / discount[i])
            .sum::<f64>()
            .max(s.eps);
        let gain: Vec<f64> = truth
            .iter()
            .map(|t| (2f64.powf(t.max(0.0)) - 1.0) / max_dcg)
            .collect();
        let ndcg2 = |i: usize, j: usize| -> f64 {
            if i == j {
                return 0.0;
            }
            let d = i.abs_diff(j);
            (1.0 / discount[d - 1] - 1.0 / discount[d]).abs() * (gain[i] - gain[j]).abs()
        };
        let lambda_rank = |i: usize, j: usize| -> f64 {
            (1.0 / discount[i] - 1.0 / discount[j]).abs() * (gain[i] - gain[j]).abs()
        };
        let mut weights = vec![0.0; n * n];
        let mut counted = 0;
        for i in 0..n {
            for j in 0..n {
                let better = truth[i] - truth[j] > 0.0;
                let included = match s.weighting_scheme {
                    Weighting::NdcgLoss1 => true,
                    _ => better,
                };
                if !included || (i >= k && j >= k) {
                    continue;
                }
                counted += 1;
                weights[i * n + j] = match s.weighting_scheme {
                    Weighting::None => 1.0,
                    Weighting::NdcgLoss1 => gain[i] / discount[i],
                    Weighting::NdcgLoss2 => ndcg2(i, j),
                    Weighting::LambdaRank => lambda_rank(i, j),
                    Weighting::NdcgLoss2pp => s.mu * ndcg2(i, j) + lambda_rank(i, j),
                };
            }
        }
        (order.iter().map(|&i| i as u32).collect(), weights, counted)
    }
}

impl RerankLoss for Lambda {
    fn name(&self) -> String {
        self.name.into()
    }

    fn check(&self, set: &RerankSet) -> Result<()> {
        super::require_lists(set, &self.name())
    }

    fn compute(&self, logits: &Tensor, batch: &RerankBatch, _pairs: &[Pair]) -> Result<Tensor> {
        let x = activate(logits, self.settings.activation_fn)?;
        let mut terms = Vec::new();
        let mut counted = 0;
        for (row, labels) in per_row(&x, batch)?.into_iter().zip(&batch.labels) {
            let n = labels.len();
            let scores: Vec<f64> = row.to_dtype(candle_core::DType::F64)?.to_vec1()?;
            let (order, weights, c) = self.pair_weights(&scores, labels);
            counted += c;
            if c == 0 {
                continue;
            }
            let sorted = row.index_select(&Tensor::new(order, x.device())?, 0)?;
            let diffs =
                (sorted.unsqueeze(1)?.broadcast_sub(&sorted.unsqueeze(0)?)? * self.settings.sigma)?;
            let w = Tensor::from_vec(weights, (n, n), x.device())?.to_dtype(x.dtype())?;
            terms.push((log_sigmoid(&diffs)? * w)?.sum_all()?);
        }
        if terms.is_empty() {
            // No pair with differing labels: nothing to learn from this batch.
            return Ok((x.sum_all()? * 0.0)?);
        }
        let total = super::sum_scalars(&terms)?;
        let log = match self.settings.reduction_log {
            ReductionLog::Binary => std::f64::consts::LN_2,
            ReductionLog::Natural => 1.0,
        };
        Ok((total.neg()? / (log * counted.max(1) as f64))?)
    }

    fn settings(&self) -> serde_json::Value {
        let s = &self.settings;
        serde_json::json!({
            "weighting_scheme": s.weighting_scheme.torch_name(),
            "k": s.k, "sigma": s.sigma, "eps": s.eps, "reduction_log": s.reduction_log,
            "activation_fn": s.activation_fn.torch_name(),
            "mini_batch_size": s.mini_batch_size,
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

    /// One query, labels (2, 0, 1), logits (0.5, 1, −1). Sorted by score: labels (0, 2, 1) at
    /// positions 1..3, discounts D = log₂(2), log₂(3), log₂(4); maxDCG = 3/D₁ + 1/D₂; gains
    /// g = (0, 3, 1)/maxDCG. Counted pairs (better first, sorted positions): (2,1), (2,3), (3,1).
    /// NDCGLoss2 weight of (i, j): |1/D_{|i−j|} − 1/D_{|i−j|+1}|·|g_i − g_j|;
    /// LambdaRank: |1/D_i − 1/D_j|·|g_i − g_j|; NDCGLoss2++ = 10·NDCGLoss2 + LambdaRank.
    #[test]
    fn ndcg_loss2pp_hand_worked() {
        let b = batch(&[&[2.0, 0.0, 1.0]]);
        let pairs = every_document(&b);
        let x = [0.5, 1.0, -1.0];
        let d = [2f64.log2(), 3f64.log2(), 4f64.log2()];
        let max_dcg = 3.0 / d[0] + 1.0 / d[1];
        let g = [0.0, 3.0 / max_dcg, 1.0 / max_dcg];
        let s = [1.0, 0.5, -1.0]; // scores in sorted order
        let w = |i: usize, j: usize| {
            let delta = i.abs_diff(j);
            let ndcg2 = (1.0 / d[delta - 1] - 1.0 / d[delta]).abs() * (g[i] - g[j]).abs();
            let lr = (1.0 / d[i] - 1.0 / d[j]).abs() * (g[i] - g[j]).abs();
            10.0 * ndcg2 + lr
        };
        let term = |i: usize, j: usize| -w(i, j) * sigmoid(s[i] - s[j]).log2();
        let expected = (term(1, 0) + term(1, 2) + term(2, 0)) / 3.0;
        let loss = Lambda::new(Default::default())
            .compute(&logits(&x), &b, &pairs)
            .unwrap();
        assert!(
            (scalar(&loss) - expected).abs() < 1e-12,
            "{} vs {expected}",
            scalar(&loss)
        );
        check_gradient(&x, |x| {
            Lambda::new(Default::default())
                .compute(x, &b, &pairs)
                .unwrap()
        });
    }

    #[test]
    fn top_k_drops_pairs_below_it() {
        let b = batch(&[&[0.0, 0.0, 1.0, 2.0]]);
        let pairs = every_document(&b);
        // Sorted by score the labels are (0, 0, 1, 2): with k = 1 only pairs touching rank 1
        // count, and rank 1 has the worst label, so (3 over 1) and (4 over 1) remain.
        let lambda = Lambda::new(LambdaSettings {
            k: Some(1),
            weighting_scheme: Weighting::None,
            ..Default::default()
        });
        let (_, weights, counted) =
            lambda.pair_weights(&[4.0, 3.0, 2.0, 1.0], &[0.0, 0.0, 1.0, 2.0]);
        assert_eq!(counted, 2);
        assert_eq!(weights.iter().filter(|&&w| w > 0.0).count(), 2);
        assert_eq!((weights[2 * 4], weights[3 * 4]), (1.0, 1.0));
        let loss = lambda
            .compute(&logits(&[4.0, 3.0, 2.0, 1.0]), &b, &pairs)
            .unwrap();
        let expected = -(sigmoid(-2.0).log2() + sigmoid(-3.0).log2()) / 2.0;
        assert!((scalar(&loss) - expected).abs() < 1e-12);
    }
}

//! Reranking fused with the retrieval it reranks. A cross-encoder trained on a few hundred
//! queries from a fresh head ranks worse than the tuned bi-encoder alone, yet often knows
//! something the bi-encoder does not: mixing the two scores can beat both. Per query, each score
//! is standardised over that query's candidates (a z-score, so the two scales meet) and mixed:
//! `w · z(retriever) + (1 − w) · z(reranker)`. `w = 0` is plain reranking, `w = 1` the
//! retriever's order. The weight is chosen on held-out questions ([`sweep`], [`best`]: the best
//! of the curve smoothed over neighbouring weights), never on the evaluation set.
//! [`FusionChoice`] is such a choice, saved in the reranker's folder (`fusion.json`) by
//! `train rerank`, and used by default wherever that reranker reranks retrieved candidates.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The weights tried when choosing: 0, 0.1, …, 1.
pub const WEIGHTS: [f64; 11] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

fn standardised(x: &[f32]) -> Vec<f64> {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let sd = (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let sd = if sd > 0.0 { sd } else { 1.0 };
    x.iter().map(|&v| (v as f64 - mean) / sd).collect()
}

/// The fused scores of one query's candidates.
pub fn fuse(retriever: &[f32], reranker: &[f32], retriever_weight: f64) -> Vec<f32> {
    assert_eq!(
        retriever.len(),
        reranker.len(),
        "one score of each per candidate"
    );
    if retriever_weight == 0.0 {
        return reranker.to_vec();
    }
    let (a, b) = (standardised(retriever), standardised(reranker));
    a.iter()
        .zip(&b)
        .map(|(a, b)| (retriever_weight * a + (1.0 - retriever_weight) * b) as f32)
        .collect()
}

/// Candidate indices best first by `scores`; equal scores keep their given (retrieval) order.
pub fn order(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// For each of `weights` (usually [`WEIGHTS`]), the mean over queries of `metric(query, fused
/// scores)`; `queries` holds each query's (retriever, reranker) scores.
pub fn sweep(
    weights: &[f64],
    queries: &[(Vec<f32>, Vec<f32>)],
    metric: impl Fn(usize, &[f32]) -> f64,
) -> Vec<(f64, f64)> {
    weights
        .iter()
        .map(|&w| {
            let total: f64 = queries
                .iter()
                .enumerate()
                .map(|(i, (a, b))| metric(i, &fuse(a, b, w)))
                .sum();
            (w, total / queries.len().max(1) as f64)
        })
        .collect()
}

/// The curve's value at weight `w` (0 when the curve does not hold it).
pub fn sweep_point(curve: &[(f64, f64)], w: f64) -> f64 {
    curve
        .iter()
        .find(|p| (p.0 - w).abs() < 1e-9)
        .map_or(0.0, |p| p.1)
}

/// Each point of `curve` (in order of weight) averaged with its neighbours on either side (one
/// at the ends). A held-out curve is measured on a few dozen queries: neighbouring weights
/// rank almost alike, so their mean is a steadier estimate than any single point.
pub fn smoothed(curve: &[(f64, f64)]) -> Vec<(f64, f64)> {
    (0..curve.len())
        .map(|i| {
            let around = &curve[i.saturating_sub(1)..(i + 2).min(curve.len())];
            let mean = around.iter().map(|p| p.1).sum::<f64>() / around.len() as f64;
            (curve[i].0, mean)
        })
        .collect()
}

/// The weight to use, with the curve's own value there: the best of the [`smoothed`] curve, so
/// that one lucky point among flat noisy neighbours does not choose; on a tie the larger
/// retriever weight (the less the reranker is trusted, the better).
pub fn best(curve: &[(f64, f64)]) -> (f64, f64) {
    let (weight, _) =
        smoothed(curve)
            .into_iter()
            .fold((1.0, f64::NEG_INFINITY), |(bw, bv), (w, v)| {
                if v > bv + 1e-12 || ((v - bv).abs() <= 1e-12 && w > bw) {
                    (w, v)
                } else {
                    (bw, bv)
                }
            });
    (weight, sweep_point(curve, weight))
}

/// Whether query `id` is one of the one-in-`every` held out for choosing the weight: those whose
/// id's SHA-256, read as a big-endian number, is divisible by `every` (`every` 1: all of them).
/// Stable across runs, machines and languages (Python: `int(sha256(id).hexdigest(), 16) % every`).
pub fn held_out(id: &str, every: usize) -> bool {
    use sha2::{Digest, Sha256};
    let every = every.max(1) as u64;
    Sha256::digest(id.as_bytes())
        .iter()
        .fold(0u64, |rest, &byte| (rest * 256 + byte as u64) % every)
        == 0
}

/// A retriever weight chosen on held-out queries, with the evidence for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusionChoice {
    /// The retriever's weight in the fused score (0: the reranker alone; 1: the retriever).
    pub retriever_weight: f64,
    /// NDCG@10 on the held-out queries: fused at that weight, the retriever's order, the
    /// reranker's order.
    pub fused_ndcg10: f64,
    pub retriever_ndcg10: f64,
    pub reranker_ndcg10: f64,
    /// How many queries chose it, and which (dataset, split, share held out).
    pub queries: usize,
    pub chosen_on: String,
    /// NDCG@10 at each weight tried.
    pub curve: Vec<(f64, f64)>,
}

impl FusionChoice {
    /// The file in a reranker's folder.
    pub const FILE: &'static str = "fusion.json";

    /// The best weight of `curve` ([`best`]).
    pub fn from_curve(curve: Vec<(f64, f64)>, queries: usize, chosen_on: String) -> Self {
        let (weight, _) = best(&curve);
        Self::at(weight, curve, queries, chosen_on)
    }

    /// Weight `retriever_weight` (given, or chosen elsewhere), with `curve` for evidence.
    pub fn at(
        retriever_weight: f64,
        curve: Vec<(f64, f64)>,
        queries: usize,
        chosen_on: String,
    ) -> Self {
        let fused_ndcg10 = sweep_point(&curve, retriever_weight);
        Self {
            retriever_weight,
            fused_ndcg10,
            retriever_ndcg10: sweep_point(&curve, 1.0),
            reranker_ndcg10: sweep_point(&curve, 0.0),
            queries,
            chosen_on,
            curve,
        }
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(Self::FILE);
        std::fs::write(&path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The choice saved in `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(Self::FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let choice: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a fusion choice", path.display()))?;
        if !(0.0..=1.0).contains(&choice.retriever_weight) {
            anyhow::bail!(
                "{}: retriever_weight {} is not between 0 and 1",
                path.display(),
                choice.retriever_weight
            );
        }
        Ok(Some(choice))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_standardises_each_score_and_mixes_them() {
        // Retriever: 3, 2, 1 (z = 1.2247, 0, −1.2247); reranker: 0, 10, 5 (z = −1.2247, 1.2247, 0).
        let (a, b) = ([3.0f32, 2.0, 1.0], [0.0f32, 10.0, 5.0]);
        assert_eq!(
            fuse(&a, &b, 0.0),
            b.to_vec(),
            "w = 0 is the reranker's own scores"
        );
        let half = fuse(&a, &b, 0.5);
        let want = [0.0f32, 0.612_372_4, -0.612_372_4];
        for (h, w) in half.iter().zip(want) {
            assert!((h - w).abs() < 1e-6, "{half:?}");
        }
        let retriever_only = fuse(&a, &b, 1.0);
        assert!(retriever_only[0] > retriever_only[1] && retriever_only[1] > retriever_only[2]);
        assert_eq!(order(&half), vec![1, 0, 2]);
        assert_eq!(
            order(&[1.0, 2.0, 1.0]),
            vec![1, 0, 2],
            "ties keep their order"
        );
        // Constant scores do not divide by zero.
        assert_eq!(fuse(&[1.0, 1.0], &[2.0, 2.0], 0.3), vec![0.0, 0.0]);
    }

    #[test]
    fn the_best_weight_prefers_the_retriever_on_ties() {
        // A metric that rewards putting candidate 0 first.
        let queries = vec![(vec![3.0f32, 2.0, 1.0], vec![0.0f32, 10.0, 5.0])];
        let top_is_0 = |_: usize, s: &[f32]| f64::from(u8::from(s[0] > s[1] && s[0] > s[2]));
        let curve = sweep(&WEIGHTS, &queries, top_is_0);
        assert_eq!(curve.len(), WEIGHTS.len());
        assert_eq!(curve[0], (0.0, 0.0), "the reranker alone puts 1 first");
        assert_eq!(curve[10], (1.0, 1.0));
        // Above w = 2/3, z(retriever) wins: 0.7 to 1 all score 1; the tie goes to 1.0.
        assert_eq!(best(&curve), (1.0, 1.0));
        // Smoothed: 0 → (0.5 + 0.7) / 2 = 0.6, 0.5 → 1.8 / 3 = 0.6, 1 → (0.7 + 0.6) / 2 = 0.65.
        assert_eq!(best(&[(0.0, 0.5), (0.5, 0.7), (1.0, 0.6)]), (1.0, 0.6));
        // 0.25 → 0.6667, 0.5 → 0.7333, 0.75 → 0.7, 1 → 0.65.
        let peak = [(0.0, 0.5), (0.25, 0.7), (0.5, 0.8), (0.75, 0.7), (1.0, 0.6)];
        assert_eq!(best(&peak), (0.5, 0.8));
    }

    #[test]
    fn one_lucky_point_does_not_choose_the_weight() {
        // A reranker's curve on 57 held-out SciFact queries (seed 7, 2026-12-01), flat and noisy
        // from 0.3 to 0.8: the raw best is 0.5, a peak between two lower points; 0.6 sits among
        // the highest three (0.7295, 0.7185, 0.7261: mean 0.72470 against 0.5's 0.72163).
        let curve: Vec<(f64, f64)> = WEIGHTS
            .iter()
            .copied()
            .zip([
                0.2756, 0.5173, 0.6452, 0.7135, 0.7169, 0.7295, 0.7185, 0.7261, 0.7144, 0.7064,
                0.6846,
            ])
            .collect();
        let smooth = smoothed(&curve);
        assert!((smooth[6].1 - 0.724_70).abs() < 1e-5, "{smooth:?}");
        assert!((smooth[5].1 - 0.721_63).abs() < 1e-5, "{smooth:?}");
        assert!((smooth[10].1 - (0.7064 + 0.6846) / 2.0).abs() < 1e-12);
        assert_eq!(
            best(&curve),
            (0.6, 0.7185),
            "the curve's own value at the weight chosen"
        );
    }

    #[test]
    fn held_out_queries_are_those_whose_sha256_divides() {
        // int(sha256(id).hexdigest(), 16) % 10 in Python: "18" → 0, "74" → 0, "3" → 8, "13" → 2.
        assert!(held_out("18", 10) && held_out("74", 10));
        assert!(!held_out("3", 10) && !held_out("13", 10));
        // % 3: "18" → 0, "74" → 1.
        assert!(held_out("18", 3) && !held_out("74", 3));
        assert!(held_out("3", 1), "every = 1 holds out all");
    }

    #[test]
    fn a_fusion_choice_round_trips_and_a_bad_weight_is_refused() {
        // Smoothed: 0.25 → 0.5867, 0.5 → 0.7333, 0.75 → 0.69, 1 → 0.665.
        let curve = vec![
            (0.0, 0.3),
            (0.25, 0.73),
            (0.5, 0.74),
            (0.75, 0.73),
            (1.0, 0.6),
        ];
        let choice = FusionChoice::from_curve(curve, 57, "heldout".into());
        assert_eq!((choice.retriever_weight, choice.fused_ndcg10), (0.5, 0.74));
        assert_eq!(
            (choice.retriever_ndcg10, choice.reranker_ndcg10),
            (0.6, 0.3)
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(FusionChoice::load(dir.path()).unwrap(), None);
        choice.save(dir.path()).unwrap();
        assert_eq!(
            FusionChoice::load(dir.path()).unwrap(),
            Some(choice.clone())
        );
        let bad = FusionChoice {
            retriever_weight: 1.5,
            ..choice
        };
        bad.save(dir.path()).unwrap();
        let err = FusionChoice::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("fusion.json") && err.contains("1.5"), "{err}");
    }
}

//! Reranking fused with the retrieval it reranks. A cross-encoder trained on a few hundred
//! queries from a fresh head ranks worse than the tuned bi-encoder alone, yet often knows
//! something the bi-encoder does not: mixing the two scores can beat both. Per query, each score
//! is standardised over that query's candidates (a z-score, so the two scales meet) and mixed:
//! `w · z(retriever) + (1 − w) · z(reranker)`. `w = 0` is plain reranking, `w = 1` the
//! retriever's order. The weight is chosen on held-out questions ([`sweep`], [`best`]), never on
//! the evaluation set.

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

/// The weight of the best mean; on a tie the larger retriever weight (the less the reranker
/// is trusted, the better).
pub fn best(curve: &[(f64, f64)]) -> (f64, f64) {
    curve
        .iter()
        .copied()
        .fold((1.0, f64::NEG_INFINITY), |(bw, bv), (w, v)| {
            if v > bv + 1e-12 || ((v - bv).abs() <= 1e-12 && w > bw) {
                (w, v)
            } else {
                (bw, bv)
            }
        })
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
        assert_eq!(best(&[(0.0, 0.5), (0.5, 0.7), (1.0, 0.6)]), (0.5, 0.7));
    }
}

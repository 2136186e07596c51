//! Ranking metrics with trec_eval's definitions (what pytrec_eval and BEIR report), named as
//! sentence-transformers' `InformationRetrievalEvaluator` names them.
//!
//! For a query with `R` relevant documents (qrels grade ≥ 1) and a ranking cut at `k`:
//! - `accuracy@k` (hit rate, trec `success_k`): 1 if any relevant document is in the top k;
//! - `precision@k` (`P_k`): relevant in top k / k;
//! - `recall@k` (`recall_k`): relevant in top k / R;
//! - `mrr@k` (`recip_rank` of the ranking cut at k): 1 / rank of the first relevant;
//! - `ndcg@k` (`ndcg_cut_k`): DCG with gain = grade and discount log2(rank + 1), over the ideal
//!   DCG of the judged grades;
//! - `map@k` (`map_cut_k`): sum of precision at each relevant rank ≤ k, divided by R.
//!   sentence-transformers divides by min(k, R) instead; the two agree whenever R ≤ k.
//!
//! Rankings are ordered by score, ties broken by document id in descending byte order, as
//! trec_eval does. Means are taken over every query with at least one relevant judgement; a
//! query absent from the run scores 0 (trec_eval `-c`).

use std::collections::{BTreeMap, HashMap};

use crate::data::Qrels;

/// The metric families, in report order.
pub const METRICS: [&str; 6] = ["accuracy", "precision", "recall", "mrr", "ndcg", "map"];

/// A run: query id → retrieved (doc id, score), in any order.
pub type Run = BTreeMap<String, Vec<(String, f32)>>;

/// `<metric>@<k>` → value.
pub type MetricValues = BTreeMap<String, f64>;

/// Orders a query's results as trec_eval does: score descending, then doc id descending.
pub fn trec_order(results: &mut [(String, f32)]) {
    results.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then_with(|| b.0.as_bytes().cmp(a.0.as_bytes()))
    });
}

/// Metrics of one query's ranking (already in rank order) against its judgements.
pub fn query_metrics(
    ranking: &[&str],
    judged: &HashMap<String, i64>,
    ks: &[usize],
) -> MetricValues {
    let num_relevant = judged.values().filter(|&&g| g >= 1).count();
    let mut ideal: Vec<i64> = judged.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let grade = |doc: &str| judged.get(doc).copied().unwrap_or(0);

    let mut out = MetricValues::new();
    for &k in ks {
        let top = &ranking[..ranking.len().min(k)];
        let mut hits = 0usize;
        let mut first_hit: Option<usize> = None;
        let mut dcg = 0.0;
        let mut ap = 0.0;
        for (i, doc) in top.iter().enumerate() {
            let g = grade(doc);
            if g > 0 {
                dcg += g as f64 / ((i + 2) as f64).log2();
            }
            if g >= 1 {
                hits += 1;
                first_hit.get_or_insert(i);
                ap += hits as f64 / (i + 1) as f64;
            }
        }
        let idcg: f64 = ideal
            .iter()
            .take(k)
            .enumerate()
            .map(|(i, &g)| g as f64 / ((i + 2) as f64).log2())
            .sum();
        let r = num_relevant.max(1) as f64;
        out.insert(format!("accuracy@{k}"), if hits > 0 { 1.0 } else { 0.0 });
        out.insert(format!("precision@{k}"), hits as f64 / k as f64);
        out.insert(format!("recall@{k}"), hits as f64 / r);
        out.insert(
            format!("mrr@{k}"),
            first_hit.map_or(0.0, |i| 1.0 / (i + 1) as f64),
        );
        out.insert(
            format!("ndcg@{k}"),
            if idcg > 0.0 { dcg / idcg } else { 0.0 },
        );
        out.insert(format!("map@{k}"), ap / r);
    }
    out
}

/// Per-query metrics and their means.
#[derive(Debug, Clone, Default)]
pub struct RunMetrics {
    pub mean: MetricValues,
    pub per_query: BTreeMap<String, MetricValues>,
}

/// Evaluates a whole run against qrels (see the module doc for which queries count).
pub fn evaluate_run(run: &Run, qrels: &Qrels, ks: &[usize]) -> RunMetrics {
    let mut result = RunMetrics::default();
    for (qid, judged) in qrels {
        if !judged.values().any(|&g| g >= 1) {
            continue;
        }
        let mut ranked = run.get(qid).cloned().unwrap_or_default();
        trec_order(&mut ranked);
        let ranking: Vec<&str> = ranked.iter().map(|(d, _)| d.as_str()).collect();
        result
            .per_query
            .insert(qid.clone(), query_metrics(&ranking, judged, ks));
    }
    let n = result.per_query.len().max(1) as f64;
    for values in result.per_query.values() {
        for (name, v) in values {
            *result.mean.entry(name.clone()).or_insert(0.0) += v / n;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, i64)]) -> HashMap<String, i64> {
        pairs.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }

    #[test]
    fn hand_computed_values() {
        // Relevant: a, c (R = 2); ranking b a d c.
        let m = query_metrics(
            &["b", "a", "d", "c"],
            &judged(&[("a", 1), ("c", 1), ("x", 0)]),
            &[1, 3, 4],
        );
        assert_eq!(m["accuracy@1"], 0.0);
        assert_eq!(m["accuracy@3"], 1.0);
        assert_eq!(m["mrr@3"], 0.5);
        assert!((m["precision@3"] - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(m["recall@3"], 0.5);
        assert_eq!(m["recall@4"], 1.0);
        // AP@4 = (1/2 + 2/4) / 2
        assert!((m["map@4"] - 0.5).abs() < 1e-12);
        // DCG@4 = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3)
        let dcg = 1.0 / 3f64.log2() + 1.0 / 5f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2();
        assert!((m["ndcg@4"] - dcg / idcg).abs() < 1e-12);
    }

    #[test]
    fn ties_break_by_doc_id_descending_and_missing_queries_score_zero() {
        let mut r = vec![
            ("a".to_string(), 0.5),
            ("c".to_string(), 0.5),
            ("b".to_string(), 0.9),
        ];
        trec_order(&mut r);
        let ids: Vec<&str> = r.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(ids, ["b", "c", "a"]);

        let mut qrels = Qrels::new();
        qrels.insert("q1".into(), judged(&[("a", 1)]));
        qrels.insert("q2".into(), judged(&[("a", 1)]));
        qrels.insert("q3".into(), judged(&[("a", 0)])); // no relevant document: not counted
        let mut run = Run::new();
        run.insert("q1".into(), vec![("a".into(), 1.0)]);
        let m = evaluate_run(&run, &qrels, &[10]);
        assert_eq!(m.per_query.len(), 2);
        assert_eq!(m.mean["ndcg@10"], 0.5);
    }
}

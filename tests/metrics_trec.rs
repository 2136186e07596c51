//! The retrieval metrics agree with pytrec_eval (trec_eval) to 1e-6 on hand-made rankings with
//! ties, graded and multiple relevant documents, R > k, a query absent from the run and a run
//! query absent from the qrels. Expected values: tests/fixtures/trec_expected.json, made by
//! scripts/make-trec-fixture.py with pytrec_eval.

use std::collections::HashMap;

use ragtune::data::Qrels;
use ragtune::eval::metrics::{evaluate_run, Run};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn agrees_with_pytrec_eval() {
    let cases = load("trec_cases.json");
    let expected = load("trec_expected.json");
    let qrels: Qrels = cases["qrels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(q, docs)| {
            let docs: HashMap<String, i64> = docs
                .as_object()
                .unwrap()
                .iter()
                .map(|(d, g)| (d.clone(), g.as_i64().unwrap()))
                .collect();
            (q.clone(), docs)
        })
        .collect();
    let run: Run = cases["run"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(q, docs)| {
            (
                q.clone(),
                docs.as_object()
                    .unwrap()
                    .iter()
                    .map(|(d, s)| (d.clone(), s.as_f64().unwrap() as f32))
                    .collect(),
            )
        })
        .collect();
    let ks: Vec<usize> = cases["ks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_u64().unwrap() as usize)
        .collect();
    let ours = evaluate_run(&run, &qrels, &ks);

    let per_query = expected["per_query"].as_object().unwrap();
    let mut compared = 0;
    for (qid, values) in per_query {
        let mine = &ours.per_query[qid];
        for (metric, v) in values.as_object().unwrap() {
            let want = v.as_f64().unwrap();
            let got = mine[metric];
            assert!(
                (got - want).abs() < 1e-6,
                "{qid} {metric}: ours {got}, pytrec_eval {want}"
            );
            compared += 1;
        }
    }
    assert_eq!(
        per_query.len(),
        5,
        "pytrec_eval scores the queries present in both run and qrels"
    );
    assert!(compared >= 5 * 6 * 4);
    // trec_eval -c: a judged query missing from the run counts, with zeros; q6 (no qrels) does not.
    assert!(ours.per_query["q4"].values().all(|v| *v == 0.0));
    assert!(!ours.per_query.contains_key("q6"));
    assert_eq!(ours.per_query.len(), 6);
}

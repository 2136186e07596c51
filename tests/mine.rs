//! Hard-negative mining on a small corpus where the right answer is worked out independently:
//! a brute-force ranking of every document by cosine similarity to each query.

mod common;

use polars::prelude::*;
use ragtune::mine::{mine_hard_negatives, MineOptions, OutputFormat, Sampling};
use ragtune::{EncodeOptions, SentenceEncoder};

const CORPUS: &[&str] = &[
    "the queen of the hive",
    "wax comb in the hive",
    "mites in the brood",
    "honey and wax",
    "a swarm of bees",
    "the brood comb",
    "queen bees swarm",
    "honey in the comb",
    "mite and swarm",
    "what is wax",
    "how bees make honey",
    "the hive of bees",
];

/// (query, positive) rows; "why do bees swarm" has two positives, and "how bees make honey" is
/// also in the corpus word for word (it must never come back as a negative of its query).
fn pairs() -> DataFrame {
    df!(
        "query" => ["why do bees swarm", "why do bees swarm", "what is in the brood", "how do bees make honey"],
        "answer" => ["a swarm of bees", "queen bees swarm", "mites in the brood", "how bees make honey"],
    )
    .unwrap()
}

fn encoder(dir: &std::path::Path) -> SentenceEncoder {
    let m = common::write_tiny_model(dir, 16);
    SentenceEncoder::load(m.to_str().unwrap(), &Default::default()).unwrap()
}

fn corpus() -> Vec<String> {
    CORPUS.iter().map(|s| s.to_string()).collect()
}

/// Every unique document (corpus then positives) ranked by cosine for `query`, best first.
fn brute_force(enc: &SentenceEncoder, query: &str) -> Vec<(String, f32)> {
    let mut docs: Vec<String> = corpus();
    for p in [
        "a swarm of bees",
        "queen bees swarm",
        "mites in the brood",
        "how bees make honey",
    ] {
        if !docs.iter().any(|d| d == p) {
            docs.push(p.into());
        }
    }
    let quiet = EncodeOptions {
        progress: false,
        ..Default::default()
    };
    let q: Vec<Vec<f32>> = enc.encode(&[query], &quiet).unwrap().to_vec2().unwrap();
    let d: Vec<Vec<f32>> = enc.encode(&docs, &quiet).unwrap().to_vec2().unwrap();
    let cos = |a: &[f32], b: &[f32]| {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt()
            * b.iter().map(|x| x * x).sum::<f32>().sqrt())
    };
    let mut ranked: Vec<(String, f32)> = docs
        .iter()
        .zip(&d)
        .map(|(t, e)| (t.clone(), cos(&q[0], e)))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked
}

fn strings(df: &DataFrame, col: &str) -> Vec<String> {
    ragtune::data::table::str_column(df, col).unwrap()
}

fn options(format: OutputFormat) -> MineOptions {
    MineOptions {
        num_negatives: 2,
        range_min: 1,
        range_max: Some(6),
        output_format: format,
        progress: false,
        ..Default::default()
    }
}

#[test]
fn top_negatives_are_the_brute_force_ranks_after_range_min_and_never_positives() {
    let tmp = tempfile::tempdir().unwrap();
    let enc = encoder(tmp.path());
    let corpus = corpus();
    let mined = mine_hard_negatives(
        &enc,
        &pairs(),
        Some(&corpus),
        &options(OutputFormat::Triplet),
        None,
    )
    .unwrap();
    let df = &mined.frame;
    assert_eq!(df.get_column_names(), ["query", "answer", "negative"]);
    // 3 unique queries; the swarm query's 2 negatives are written once per positive.
    assert_eq!(mined.queries, 3);
    assert_eq!(df.height(), (2 + 1 + 1) * 2);
    let (q, p, n) = (
        strings(df, "query"),
        strings(df, "answer"),
        strings(df, "negative"),
    );
    for query in [
        "why do bees swarm",
        "what is in the brood",
        "how do bees make honey",
    ] {
        let positives: Vec<String> = p
            .iter()
            .zip(&q)
            .filter(|(_, qq)| *qq == query)
            .map(|(pp, _)| pp.clone())
            .collect();
        let expected: Vec<String> = brute_force(&enc, query)
            .into_iter()
            .filter(|(t, _)| !positives.contains(t))
            .skip(1)
            .take(2)
            .map(|(t, _)| t)
            .collect();
        let got: Vec<String> = n
            .iter()
            .zip(&q)
            .filter(|(_, qq)| *qq == query)
            .map(|(nn, _)| nn.clone())
            .take(2)
            .collect();
        assert_eq!(got, expected, "{query}");
        assert!(
            got.iter().all(|g| !positives.contains(g)),
            "{query}: a positive came back as a negative"
        );
    }
    // Summary: counts of what was written.
    let count = |col: &str| {
        mined
            .summary
            .column(col)
            .unwrap()
            .f64()
            .unwrap()
            .get(0)
            .unwrap()
    };
    assert_eq!(count("positive"), 4.0);
    assert_eq!(count("negative"), 8.0);
}

#[test]
fn score_filters_and_short_queries() {
    let tmp = tempfile::tempdir().unwrap();
    let enc = encoder(tmp.path());
    let corpus = corpus();
    let query = "what is in the brood";
    let ranked: Vec<(String, f32)> = brute_force(&enc, query)
        .into_iter()
        .filter(|(t, _)| t != "mites in the brood")
        .collect();
    // A max_score between the 2nd and 3rd candidate leaves ranks 3.. as the only options.
    let cut = (ranked[1].1 + ranked[2].1) / 2.0;
    let opts = MineOptions {
        num_negatives: 2,
        max_score: Some(cut as f64),
        range_max: Some(12),
        output_format: OutputFormat::NTupleScores,
        progress: false,
        ..Default::default()
    };
    let pairs = df!("query" => [query], "answer" => ["mites in the brood"]).unwrap();
    let mined = mine_hard_negatives(&enc, &pairs, Some(&corpus), &opts, None).unwrap();
    let df = &mined.frame;
    assert_eq!(strings(df, "negative_1")[0], ranked[2].0);
    assert_eq!(strings(df, "negative_2")[0], ranked[3].0);
    let scores = df
        .column("scores")
        .unwrap()
        .list()
        .unwrap()
        .get_as_series(0)
        .unwrap();
    let scores: Vec<f32> = scores.f32().unwrap().into_no_null_iter().collect();
    assert_eq!(scores.len(), 3, "positive score then two negatives");
    assert!((scores[1] - ranked[2].1).abs() < 1e-5 && scores[1] <= cut);

    // min_score above every candidate: no negatives, the query is short, n-tuple drops the row,
    // labeled-pair keeps the positive.
    let opts = MineOptions {
        min_score: Some(1.5),
        output_format: OutputFormat::NTuple,
        ..opts
    };
    let mined = mine_hard_negatives(&enc, &pairs, Some(&corpus), &opts, None).unwrap();
    assert_eq!((mined.frame.height(), mined.short_queries), (0, 1));
    let opts = MineOptions {
        output_format: OutputFormat::LabeledPair,
        ..opts
    };
    let mined = mine_hard_negatives(&enc, &pairs, Some(&corpus), &opts, None).unwrap();
    assert_eq!(
        mined
            .frame
            .column("label")
            .unwrap()
            .i32()
            .unwrap()
            .into_no_null_iter()
            .collect::<Vec<_>>(),
        vec![1]
    );

    // Too few ranks for the negatives asked for.
    let opts = MineOptions {
        num_negatives: 5,
        range_min: 3,
        range_max: Some(6),
        progress: false,
        ..Default::default()
    };
    let err = mine_hard_negatives(&enc, &pairs, Some(&corpus), &opts, None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot mine 5 negatives"), "{err}");
}

#[test]
fn every_output_format_has_its_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let enc = encoder(tmp.path());
    let corpus = corpus();
    let mine = |f: OutputFormat| {
        mine_hard_negatives(&enc, &pairs(), Some(&corpus), &options(f), None)
            .unwrap()
            .frame
    };
    let ntuple = mine(OutputFormat::NTuple);
    assert_eq!(
        ntuple.get_column_names(),
        ["query", "answer", "negative_1", "negative_2"]
    );
    assert_eq!(ntuple.height(), 4, "one row per (query, positive)");
    let pair = mine(OutputFormat::LabeledPair);
    assert_eq!(pair.get_column_names(), ["query", "answer", "label"]);
    assert_eq!(
        pair.height(),
        4 + 3 * 2,
        "each positive, and each query's negatives once"
    );
    let list = mine(OutputFormat::LabeledList);
    assert_eq!(list.get_column_names(), ["query", "answer", "labels"]);
    let labels = list
        .column("labels")
        .unwrap()
        .list()
        .unwrap()
        .get_as_series(0)
        .unwrap();
    assert_eq!(
        labels
            .i32()
            .unwrap()
            .into_no_null_iter()
            .collect::<Vec<_>>(),
        vec![1, 0, 0]
    );
    // Mining without a corpus: candidates are the other pairs' positives.
    let own = mine_hard_negatives(
        &enc,
        &pairs(),
        None,
        &MineOptions {
            num_negatives: 1,
            progress: false,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    let negatives = strings(&own.frame, "negative");
    let positives = [
        "a swarm of bees",
        "queen bees swarm",
        "mites in the brood",
        "how bees make honey",
    ];
    assert!(negatives.iter().all(|n| positives.contains(&n.as_str())));
}

#[test]
fn random_sampling_is_seeded_and_the_cache_skips_encoding() {
    let tmp = tempfile::tempdir().unwrap();
    let enc = encoder(&tmp.path().join("m"));
    let corpus = corpus();
    let opts = MineOptions {
        sampling: Sampling::Random,
        range_max: Some(10),
        cache_dir: Some(tmp.path().join("cache")),
        ..options(OutputFormat::Triplet)
    };
    let first = mine_hard_negatives(&enc, &pairs(), Some(&corpus), &opts, None).unwrap();
    assert!(!first.cache_hit);
    let second = mine_hard_negatives(&enc, &pairs(), Some(&corpus), &opts, None).unwrap();
    assert!(
        second.cache_hit,
        "the second run reads the corpus embeddings from the cache"
    );
    assert!(first.frame.equals(&second.frame), "same seed, same sample");
    let reseeded: Vec<Vec<String>> = (0..8)
        .map(|seed| {
            strings(
                &mine_hard_negatives(
                    &enc,
                    &pairs(),
                    Some(&corpus),
                    &MineOptions {
                        seed,
                        ..opts.clone()
                    },
                    None,
                )
                .unwrap()
                .frame,
                "negative",
            )
        })
        .collect();
    assert!(
        reseeded.iter().any(|r| *r != reseeded[0]),
        "other seeds draw other negatives"
    );
}

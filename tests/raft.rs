//! RAFT data: distractor strategies on a corpus whose ranking is known, the oracle share over
//! many seeds, gold answers whose quotes are real, the removed-oracle policies, the split by
//! question, output layouts, and the teacher loop's regeneration and dropping.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::Result;
use ragtune::llm::{ChatModel, ChatRequest, Completion, FinishReason, GenerationParams, OnAnswer};
use ragtune::raft::quotes::QuoteCheck;
use ragtune::raft::{build, Distractors, RaftFormat, RaftOptions, RaftSource, RemovedOracle};

fn corpus() -> Vec<(String, String)> {
    (0..10)
        .map(|i| {
            (
                format!("d{i}"),
                format!("Passage {i} says fact number {i} about bees and their hives."),
            )
        })
        .collect()
}

fn source(id: &str) -> RaftSource {
    RaftSource {
        id: id.into(),
        question: format!("What does passage zero say? ({id})"),
        oracles: vec!["d0".into()],
        positives: vec!["d1".into()],
        label: Some("SUPPORT".into()),
        answer: None,
        evidence: vec!["Passage 0 says fact number 0 about bees and their hives.".into()],
    }
}

fn ranked(ids: &[&str]) -> HashMap<String, Vec<String>> {
    // The retriever ranks a positive first, then the oracle, then d5, d6, d7, d8, d2.
    ids.iter()
        .map(|id| {
            (
                id.to_string(),
                ["d1", "d0", "d5", "d6", "d7", "d8", "d2"]
                    .map(String::from)
                    .to_vec(),
            )
        })
        .collect()
}

fn distractors(ex: &ragtune::raft::RaftExample) -> Vec<String> {
    let mut d: Vec<String> = ex
        .doc_ids
        .iter()
        .zip(&ex.is_oracle)
        .filter(|(_, o)| !**o)
        .map(|(d, _)| d.clone())
        .collect();
    d.sort();
    d
}

#[test]
fn retrieved_distractors_are_the_top_non_positives_after_skip() {
    let r = ranked(&["q"]);
    let opts = RaftOptions {
        oracle_p: 1.0,
        ..Default::default()
    };
    let set = build(&[source("q")], &corpus(), Some(&r), &opts).unwrap();
    let ex = &set.examples[0];
    assert_eq!(distractors(ex), vec!["d5", "d6", "d7"]);
    assert!(ex.oracle_present && ex.doc_ids.contains(&"d0".to_string()));
    assert_eq!(ex.docs.len(), 4);
    assert!(
        ex.prompt.contains("Document 4: ") && ex.prompt.contains("What does passage zero say?")
    );
    let skipped = build(
        &[source("q")],
        &corpus(),
        Some(&r),
        &RaftOptions {
            skip: 2,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(distractors(&skipped.examples[0]), vec!["d2", "d7", "d8"]);
    // Too few candidates: the rest are drawn at random, and counted.
    let short = build(
        &[source("q")],
        &corpus(),
        Some(&r),
        &RaftOptions {
            skip: 4,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(short.examples[0].random_fill, 2);
    assert_eq!(short.summary.random_filled, 1);
    assert!(!distractors(&short.examples[0])
        .iter()
        .any(|d| d == "d0" || d == "d1"));
}

#[test]
fn random_and_mixed_distractors_never_take_a_positive_and_are_seeded() {
    let sources: Vec<RaftSource> = (0..50).map(|i| source(&format!("q{i}"))).collect();
    let ids: Vec<String> = sources.iter().map(|s| s.id.clone()).collect();
    let r = ranked(&ids.iter().map(String::as_str).collect::<Vec<_>>());
    for strategy in [Distractors::Random, Distractors::Mix] {
        let opts = RaftOptions {
            distractors: strategy,
            mix_retrieved: 0.67,
            ..Default::default()
        };
        let a = build(&sources, &corpus(), Some(&r), &opts).unwrap();
        let b = build(&sources, &corpus(), Some(&r), &opts).unwrap();
        assert_eq!(
            a.examples, b.examples,
            "{strategy:?}: same seed, same examples"
        );
        let mut seen = std::collections::HashSet::new();
        for ex in &a.examples {
            let d = distractors(ex);
            assert_eq!(d.len(), 3);
            assert!(
                !d.iter().any(|x| x == "d0" || x == "d1"),
                "{strategy:?}: a positive as distractor"
            );
            if strategy == Distractors::Mix {
                // Two retrieved (d5, d6), one random.
                assert!(
                    d.contains(&"d5".to_string()) && d.contains(&"d6".to_string()),
                    "{d:?}"
                );
            }
            seen.extend(d);
        }
        assert!(
            seen.len() >= 6,
            "{strategy:?}: random draws cover the corpus, saw {seen:?}"
        );
    }
    // Retrieved distractors without a ranking is an error that says so.
    let err = build(&sources, &corpus(), None, &RaftOptions::default()).unwrap_err();
    assert!(err.to_string().contains("ranking"), "{err}");
}

#[test]
fn the_oracle_is_kept_in_p_of_the_examples() {
    let sources: Vec<RaftSource> = (0..2000).map(|i| source(&format!("q{i}"))).collect();
    for (p, seed) in [(0.8, 1), (0.8, 2), (0.5, 3), (0.0, 4), (1.0, 5)] {
        let opts = RaftOptions {
            distractors: Distractors::Random,
            oracle_p: p,
            seed,
            ..Default::default()
        };
        let set = build(&sources, &corpus(), None, &opts).unwrap();
        let share = set.summary.with_oracle as f64 / 2000.0;
        assert!((share - p).abs() < 0.03, "p {p}, seed {seed}: {share}");
        for ex in &set.examples {
            assert_eq!(ex.doc_ids.contains(&"d0".to_string()), ex.oracle_present);
        }
    }
}

#[test]
fn balanced_labels_keep_the_rarest_label_whole_and_a_seeded_share_of_the_others() {
    // 12 SUPPORT and 4 CONTRADICT questions; a quarter of the questions held out as dev.
    let sources: Vec<RaftSource> = (0..16)
        .map(|i| RaftSource {
            label: Some(if i % 4 == 0 { "CONTRADICT" } else { "SUPPORT" }.into()),
            ..source(&format!("q{i}"))
        })
        .collect();
    let opts = |balance_labels, seed| RaftOptions {
        distractors: Distractors::Random,
        dev_share: 0.25,
        balance_labels,
        seed,
        ..Default::default()
    };
    let count = |set: &ragtune::raft::RaftSet, split: &str, label: &str| {
        set.examples
            .iter()
            .filter(|e| e.split == split && e.label.as_deref() == Some(label))
            .count()
    };
    for seed in [1, 2, 3] {
        let whole = build(&sources, &corpus(), None, &opts(false, seed)).unwrap();
        let set = build(&sources, &corpus(), None, &opts(true, seed)).unwrap();
        let rare = count(&whole, "train", "CONTRADICT");
        assert!(rare > 0 && rare < count(&whole, "train", "SUPPORT"));
        assert_eq!(count(&set, "train", "CONTRADICT"), rare);
        assert_eq!(count(&set, "train", "SUPPORT"), rare);
        for label in ["SUPPORT", "CONTRADICT"] {
            assert_eq!(count(&set, "dev", label), count(&whole, "dev", label));
        }
        assert_eq!(
            set.summary.balanced_out,
            whole.examples.len() - set.examples.len()
        );
        assert_eq!(set.summary.train, 2 * rare);
        // The kept examples are the whole build's, in its order, and the same for the seed.
        let ids = |s: &ragtune::raft::RaftSet| -> Vec<String> {
            s.examples.iter().map(|e| e.id.clone()).collect()
        };
        let whole_ids = ids(&whole);
        let mut at = whole_ids.iter();
        assert!(ids(&set).iter().all(|id| at.any(|w| w == id)));
        let again = build(&sources, &corpus(), None, &opts(true, seed)).unwrap();
        assert_eq!(ids(&again), ids(&set));
    }
    // The kept SUPPORT examples differ from seed to seed.
    let kept = |seed| -> Vec<String> {
        build(&sources, &corpus(), None, &opts(true, seed))
            .unwrap()
            .examples
            .iter()
            .filter(|e| e.split == "train" && e.label.as_deref() == Some("SUPPORT"))
            .map(|e| e.source.clone())
            .collect()
    };
    assert_ne!(kept(1), kept(2));
    // Without labels there is nothing to balance: a clear error, not a silent no-op.
    let unlabelled: Vec<RaftSource> = (0..4)
        .map(|i| RaftSource {
            label: None,
            answer: Some("fact zero".into()),
            ..source(&format!("u{i}"))
        })
        .collect();
    let err = build(&unlabelled, &corpus(), None, &opts(true, 1)).unwrap_err();
    assert!(err.to_string().contains("needs a label"), "{err}");
}

#[test]
fn gold_answers_quote_real_sentences_and_the_removed_oracle_policies_hold() {
    let sources: Vec<RaftSource> = (0..200).map(|i| source(&format!("q{i}"))).collect();
    for policy in [RemovedOracle::Keep, RemovedOracle::Abstain] {
        let opts = RaftOptions {
            distractors: Distractors::Random,
            removed_oracle: policy,
            ..Default::default()
        };
        let mut set = build(&sources, &corpus(), None, &opts).unwrap();
        set.gold_answers().unwrap();
        for ex in &set.examples {
            let answer = ex.answer.as_ref().unwrap();
            let check = QuoteCheck::of(answer, &ex.context());
            if ex.oracle_present {
                assert!(check.is_valid(), "{answer}");
                let n = ex.doc_ids.iter().position(|d| d == "d0").unwrap() + 1;
                assert!(
                    answer.contains(&format!("Document {n} says ##begin_quote##")),
                    "{answer}"
                );
                assert!(answer.ends_with("##Answer: SUPPORT"));
            } else if policy == RemovedOracle::Abstain {
                assert!(check.quotes.is_empty() && answer.ends_with("##Answer: NOT ENOUGH INFO"));
            } else {
                assert_eq!(
                    check.invented.len(),
                    1,
                    "kept answer quotes the absent oracle"
                );
            }
        }
        let outside = set.summary.quotes_outside_context;
        match policy {
            RemovedOracle::Keep => assert_eq!(outside, set.summary.without_oracle),
            RemovedOracle::Abstain => assert_eq!(outside, 0),
        }
    }
}

#[test]
fn the_split_is_by_question_and_layouts_carry_the_target() {
    // Two examples per question: both land in the same split.
    let sources: Vec<RaftSource> = (0..40)
        .flat_map(|i| [source(&format!("q{i}")), source(&format!("q{i}"))])
        .collect();
    let opts = RaftOptions {
        distractors: Distractors::Random,
        dev_share: 0.25,
        system_prompt: Some("You verify claims.".into()),
        ..Default::default()
    };
    let mut set = build(&sources, &corpus(), None, &opts).unwrap();
    set.gold_answers().unwrap();
    assert_eq!(set.summary.dev, 20);
    for pair in set.examples.chunks(2) {
        assert_eq!(pair[0].split, pair[1].split);
        assert_ne!(pair[0].id, pair[1].id);
    }
    let messages = set.records("train", RaftFormat::Messages);
    assert_eq!(messages.len(), 60);
    let m = messages[0]["messages"].as_array().unwrap();
    assert_eq!(
        (m.len(), m[0]["role"].as_str(), m[2]["role"].as_str()),
        (3, Some("system"), Some("assistant"))
    );
    let pc = set.records("dev", RaftFormat::PromptCompletion);
    assert_eq!(pc[0]["completion"][0]["role"], "assistant");
    let reference = set.records("all", RaftFormat::Reference);
    for key in [
        "id",
        "type",
        "question",
        "context",
        "oracle_context",
        "cot_answer",
        "instruction",
    ] {
        assert!(reference[0].get(key).is_some(), "{key}");
    }
    assert_eq!(set.to_frame().unwrap().height(), 80);
}

/// A scripted teacher: the first attempt (seed 0) invents a quote for every other example, the
/// second (seed 1) answers properly except for questions containing "stubborn".
struct Scripted {
    calls: Mutex<usize>,
    /// (seed, temperature) of every request.
    asked: Mutex<Vec<(u64, f64)>>,
}

impl ChatModel for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn chat_each(&self, requests: &[ChatRequest], _: &OnAnswer<'_>) -> Vec<Result<Completion>> {
        requests
            .iter()
            .enumerate()
            .map(|(i, r)| {
                *self.calls.lock().unwrap() += 1;
                self.asked
                    .lock()
                    .unwrap()
                    .push((r.params.seed, r.params.temperature));
                let prompt = &r.messages.last().unwrap().content;
                let good = "##begin_quote##Passage 0 says fact number 0 about bees and their hives.##end_quote## ##Answer: SUPPORT";
                let text = if prompt.contains("stubborn") || (r.params.seed == 0 && i % 2 == 0) {
                    "##begin_quote##Bees are made of cheese.##end_quote## ##Answer: SUPPORT".to_string()
                } else {
                    good.to_string()
                };
                Ok(Completion {
                    text,
                    finish_reason: FinishReason::Stop,
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    rag: None,
                })
            })
            .collect()
    }
}

#[test]
fn teacher_answers_with_invented_quotes_are_regenerated_then_dropped() {
    let mut sources: Vec<RaftSource> = (0..6).map(|i| source(&format!("q{i}"))).collect();
    sources[3].question = "A stubborn question about passage zero".into();
    let opts = RaftOptions {
        distractors: Distractors::Random,
        oracle_p: 1.0,
        ..Default::default()
    };
    let mut set = build(&sources, &corpus(), None, &opts).unwrap();
    let teacher = Scripted {
        calls: Mutex::new(0),
        asked: Mutex::new(vec![]),
    };
    set.teacher_answers(&teacher, &GenerationParams::default(), 2)
        .unwrap();
    // Attempt 1: examples 0, 2, 4 invent (and 3 is stubborn) -> 4 again; attempt 2: only 3
    // fails; attempt 3: 3 fails -> dropped.
    assert_eq!(set.summary.regenerated, 4 + 1);
    assert_eq!(set.summary.dropped, 1);
    assert_eq!(set.examples.len(), 5);
    assert_eq!(
        (
            set.summary.examples,
            set.summary.with_oracle,
            set.summary.train
        ),
        (5, 5, 5)
    );
    assert!(set
        .examples
        .iter()
        .all(|e| !e.question.contains("stubborn")));
    assert!(set
        .examples
        .iter()
        .all(|e| QuoteCheck::of(e.answer.as_ref().unwrap(), &e.context()).is_valid()));
    assert_eq!(*teacher.calls.lock().unwrap(), 6 + 4 + 1);
    // The first attempt is greedy as asked; a greedy answer would repeat itself, so the
    // regenerated ones are sampled, each attempt with its own seed.
    let asked = teacher.asked.lock().unwrap().clone();
    let mut expected = vec![(0, 0.0); 6];
    expected.extend(vec![(1, 0.7); 4]);
    expected.push((2, 0.7));
    assert_eq!(asked, expected);
}

//! Grounded-generation evaluation: a generator's answers to RAFT-style prompts scored for what
//! they conclude and for how they use the context.
//!
//! - Answers: normalised exact match and token F1 against free-text gold answers; for label
//!   answers accuracy, macro-F1 and per-class recall, beside the majority-class baseline (so a
//!   model that always says the commonest label cannot look good), and forced-choice accuracy
//!   (the label the model gives the higher log-probability after its own reasoning, so a model
//!   that breaks the format is still measured).
//! - Format adherence: a parsable final answer (`##Answer:` or `<ANSWER>:`).
//! - Quote faithfulness per answer: the share of its quotes (of at least five words) found in its
//!   context; an answer without such a quote scores 0. The hallucinated-quote rate: invented
//!   quotes over all quotes.
//! - Citations against gold evidence sentences: a quote hits a sentence when it lies inside it and
//!   covers at least half of its words, or contains it; precision = hitting quotes / quotes,
//!   recall = sentences hit / sentences, averaged over examples that have gold evidence.
//! - Label accuracy split by whether the oracle was in the context.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::llm::{ChatModel, ChatRequest, GenerationParams, LocalLlm, Message};
use crate::progress::Progress;
use crate::raft::quotes::{self, normalize_space, word_count, MIN_QUOTE_WORDS};
use crate::raft::RaftExample;

/// One answered example.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GroundedItem {
    pub id: String,
    /// The generator's whole output.
    pub output: String,
    /// The documents it was given.
    pub context: String,
    pub gold_label: Option<String>,
    pub gold_answer: Option<String>,
    pub evidence: Vec<String>,
    pub oracle_present: bool,
    /// The label with the highest log-probability after the model's reasoning, if measured.
    pub forced_choice: Option<String>,
}

impl GroundedItem {
    /// `example` answered with `output` (and, if measured, its forced choice).
    pub fn new(example: &RaftExample, output: String, forced_choice: Option<String>) -> Self {
        Self {
            id: example.id.clone(),
            output,
            context: example.context(),
            gold_label: example.label.clone(),
            gold_answer: example.gold_answer.clone(),
            evidence: example.evidence.clone(),
            oracle_present: example.oracle_present,
            forced_choice,
        }
    }
}

/// Scores of a set of answered examples.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GroundedMetrics {
    pub n: usize,
    pub format_adherence: f64,
    /// Over examples with a gold label.
    pub verdict_accuracy: Option<f64>,
    pub macro_f1: Option<f64>,
    pub per_class_recall: BTreeMap<String, f64>,
    pub majority_label: Option<String>,
    pub majority_accuracy: Option<f64>,
    pub majority_macro_f1: Option<f64>,
    /// The macro-F1 answers with the same label counts score when independent of the gold labels
    /// (expected true positives gold × predicted / n): what guessing at the model's own label
    /// shares earns. A model that says the minority label at random beats the majority's
    /// macro-F1 but not this.
    pub chance_macro_f1: Option<f64>,
    pub forced_choice_accuracy: Option<f64>,
    /// Over examples with a free-text gold answer.
    pub exact_match: Option<f64>,
    pub token_f1: Option<f64>,
    pub quote_faithfulness: f64,
    pub hallucinated_quote_rate: f64,
    pub quotes: usize,
    /// Over examples with gold evidence.
    pub citation_precision: Option<f64>,
    pub citation_recall: Option<f64>,
    pub accuracy_oracle_present: Option<f64>,
    pub accuracy_oracle_removed: Option<f64>,
}

/// The label an answer names: `labels` compared after upper-casing and collapsing non-letters, an
/// answer that starts with a label counting as that label.
pub fn match_label(answer: &str, labels: &[String]) -> Option<String> {
    let norm = |s: &str| -> String {
        s.to_uppercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let a = norm(answer);
    labels
        .iter()
        .find(|l| a == norm(l))
        .or_else(|| {
            labels
                .iter()
                .filter(|l| a.starts_with(&(norm(l) + " ")) || a.starts_with(&norm(l)))
                .max_by_key(|l| l.len())
        })
        .cloned()
}

/// SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces.
fn squad_tokens(s: &str) -> Vec<String> {
    s.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .map(str::to_string)
        .collect()
}

/// Token-level F1 of SQuAD.
pub fn token_f1(prediction: &str, gold: &str) -> f64 {
    let (p, g) = (squad_tokens(prediction), squad_tokens(gold));
    if p.is_empty() || g.is_empty() {
        return (p == g) as u8 as f64;
    }
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for t in &g {
        *counts.entry(t).or_default() += 1;
    }
    let mut common = 0;
    for t in &p {
        if let Some(c) = counts.get_mut(t.as_str()) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let (precision, recall) = (
        common as f64 / p.len() as f64,
        common as f64 / g.len() as f64,
    );
    2.0 * precision * recall / (precision + recall)
}

/// Whether `quote` cites gold sentence `sentence` (inside it covering half its words, or
/// containing it).
pub fn quote_hits(quote: &str, sentence: &str) -> bool {
    let (q, s) = (normalize_space(quote), normalize_space(sentence));
    if q.is_empty() || s.is_empty() {
        return false;
    }
    (s.contains(&q) && 2 * word_count(&q) >= word_count(&s)) || q.contains(&s)
}

/// The quotes of `output` that count as evidence (at least [`MIN_QUOTE_WORDS`] words), and how
/// many of them occur in `context` (whitespace-normalised).
pub fn counted_quotes(output: &str, context: &str) -> (Vec<String>, usize) {
    let context = normalize_space(context);
    let counted: Vec<String> = quotes::quotes(output)
        .into_iter()
        .filter(|q| word_count(q) >= MIN_QUOTE_WORDS)
        .collect();
    let real = counted
        .iter()
        .filter(|q| context.contains(&normalize_space(q)))
        .count();
    (counted, real)
}

/// Quote faithfulness of one answer: real counted quotes over counted quotes; 0 without any.
pub fn faithfulness(counted: usize, real: usize) -> f64 {
    if counted == 0 {
        0.0
    } else {
        real as f64 / counted as f64
    }
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The expected macro-F1 of `pairs`' predictions shuffled against their gold labels (the same
/// classes left out as by [`classification`]).
fn chance_macro_f1(pairs: &[(String, Option<String>)], labels: &[String]) -> f64 {
    let n = pairs.len().max(1) as f64;
    let f1s: Vec<f64> = labels
        .iter()
        .filter_map(|l| {
            let gold = pairs.iter().filter(|(g, _)| g == l).count() as f64;
            let predicted = pairs.iter().filter(|(_, p)| p.as_ref() == Some(l)).count() as f64;
            (gold + predicted > 0.0).then(|| 2.0 * (gold * predicted / n) / (gold + predicted))
        })
        .collect();
    mean(&f1s).unwrap_or(0.0)
}

/// Accuracy and macro-F1 of predictions against gold labels over `labels` (classes that never
/// occur in gold nor prediction are left out of the macro average); per-class recall.
fn classification(
    pairs: &[(String, Option<String>)],
    labels: &[String],
) -> (f64, f64, BTreeMap<String, f64>) {
    let correct = pairs.iter().filter(|(g, p)| p.as_ref() == Some(g)).count();
    let mut f1s = vec![];
    let mut recall = BTreeMap::new();
    for l in labels {
        let tp = pairs
            .iter()
            .filter(|(g, p)| g == l && p.as_ref() == Some(l))
            .count() as f64;
        let gold = pairs.iter().filter(|(g, _)| g == l).count() as f64;
        let predicted = pairs.iter().filter(|(_, p)| p.as_ref() == Some(l)).count() as f64;
        if gold == 0.0 && predicted == 0.0 {
            continue;
        }
        if gold > 0.0 {
            recall.insert(l.clone(), tp / gold);
        }
        let denom = gold + predicted;
        f1s.push(if denom > 0.0 { 2.0 * tp / denom } else { 0.0 });
    }
    (
        correct as f64 / pairs.len().max(1) as f64,
        mean(&f1s).unwrap_or(0.0),
        recall,
    )
}

/// Scores `items`; `labels` are the label answers (empty when answers are free text).
pub fn score(items: &[GroundedItem], labels: &[String]) -> GroundedMetrics {
    let mut m = GroundedMetrics {
        n: items.len(),
        ..Default::default()
    };
    let finals: Vec<Option<String>> = items
        .iter()
        .map(|i| quotes::final_answer(&i.output))
        .collect();
    m.format_adherence =
        finals.iter().filter(|f| f.is_some()).count() as f64 / items.len().max(1) as f64;

    // Labels.
    let labelled: Vec<(usize, String)> = items
        .iter()
        .enumerate()
        .filter_map(|(k, i)| i.gold_label.clone().map(|g| (k, g)))
        .collect();
    if !labelled.is_empty() && !labels.is_empty() {
        let pairs: Vec<(String, Option<String>)> = labelled
            .iter()
            .map(|(k, g)| {
                (
                    g.clone(),
                    finals[*k].as_deref().and_then(|f| match_label(f, labels)),
                )
            })
            .collect();
        let (acc, f1, recall) = classification(&pairs, labels);
        m.verdict_accuracy = Some(acc);
        m.macro_f1 = Some(f1);
        m.per_class_recall = recall;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, g) in &labelled {
            *counts.entry(g).or_default() += 1;
        }
        let majority = counts
            .iter()
            .max_by_key(|(l, c)| (**c, std::cmp::Reverse(**l)))
            .map(|(l, _)| l.to_string())
            .expect("labelled is not empty");
        let always: Vec<(String, Option<String>)> = labelled
            .iter()
            .map(|(_, g)| (g.clone(), Some(majority.clone())))
            .collect();
        let (macc, mf1, _) = classification(&always, labels);
        m.majority_label = Some(majority);
        m.majority_accuracy = Some(macc);
        m.majority_macro_f1 = Some(mf1);
        m.chance_macro_f1 = Some(chance_macro_f1(&pairs, labels));
        let forced: Vec<f64> = labelled
            .iter()
            .filter_map(|(k, g)| {
                items[*k]
                    .forced_choice
                    .as_ref()
                    .map(|f| (f == g) as u8 as f64)
            })
            .collect();
        m.forced_choice_accuracy = mean(&forced);
        let split = |present: bool| {
            let v: Vec<f64> = labelled
                .iter()
                .zip(&pairs)
                .filter(|((k, _), _)| items[*k].oracle_present == present)
                .map(|(_, (g, p))| (p.as_ref() == Some(g)) as u8 as f64)
                .collect();
            mean(&v)
        };
        m.accuracy_oracle_present = split(true);
        m.accuracy_oracle_removed = split(false);
    }

    // Free-text answers.
    let (mut em, mut f1) = (vec![], vec![]);
    for (i, f) in items.iter().zip(&finals) {
        if let Some(g) = &i.gold_answer {
            let p = f.clone().unwrap_or_default();
            em.push((squad_tokens(&p) == squad_tokens(g)) as u8 as f64);
            f1.push(token_f1(&p, g));
        }
    }
    m.exact_match = mean(&em);
    m.token_f1 = mean(&f1);

    // Quotes and citations.
    let (mut faith, mut precision, mut recall) = (vec![], vec![], vec![]);
    let (mut total, mut invented) = (0usize, 0usize);
    for i in items {
        let (counted, real) = counted_quotes(&i.output, &i.context);
        total += counted.len();
        invented += counted.len() - real;
        faith.push(faithfulness(counted.len(), real));
        if !i.evidence.is_empty() {
            let hitting = counted
                .iter()
                .filter(|q| i.evidence.iter().any(|s| quote_hits(q, s)))
                .count();
            precision.push(if counted.is_empty() {
                0.0
            } else {
                hitting as f64 / counted.len() as f64
            });
            let hit = i
                .evidence
                .iter()
                .filter(|s| counted.iter().any(|q| quote_hits(q, s)))
                .count();
            recall.push(hit as f64 / i.evidence.len() as f64);
        }
    }
    m.quotes = total;
    m.quote_faithfulness = mean(&faith).unwrap_or(0.0);
    m.hallucinated_quote_rate = if total == 0 {
        0.0
    } else {
        invented as f64 / total as f64
    };
    m.citation_precision = mean(&precision);
    m.citation_recall = mean(&recall);
    m
}

/// How answers are produced for evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroundedOptions {
    /// Tokens per answer (greedy decoding).
    pub max_tokens: usize,
    /// The label answers (e.g. SUPPORT, CONTRADICT); empty for free-text answers.
    pub labels: Vec<String>,
    /// Also score each label's log-probability after the model's reasoning (local models).
    pub forced_choice: bool,
    /// A system message before each prompt (the one the generator was tuned with, if any).
    pub system_prompt: Option<String>,
    /// Constrained quoting: text between the quote markers may only copy the example's context
    /// ([`crate::llm::constrain`]; local models). Reported apart from free decoding: it makes
    /// every closed quote real, not the model better at choosing evidence.
    pub constrain_quotes: bool,
    /// Prompts decoded together.
    pub batch_size: usize,
    pub progress: bool,
}

impl Default for GroundedOptions {
    fn default() -> Self {
        Self {
            max_tokens: 160,
            labels: Vec::new(),
            forced_choice: true,
            system_prompt: None,
            constrain_quotes: false,
            batch_size: 16,
            progress: true,
        }
    }
}

/// `model`'s answers to `examples` (their prompts, greedy), as items to [`score`]. With `scorer`
/// (the same model, local) and labels, each item also gets the label the model finds likeliest
/// after its own reasoning: the output up to its answer marker, then `##Answer:`, then each label.
pub fn answer(
    model: &dyn ChatModel,
    scorer: Option<&LocalLlm>,
    examples: &[RaftExample],
    options: &GroundedOptions,
) -> Result<Vec<GroundedItem>> {
    let params = GenerationParams {
        max_tokens: options.max_tokens,
        temperature: 0.0,
        ..Default::default()
    };
    let messages = |e: &RaftExample| -> Vec<Message> {
        let mut m = vec![];
        if let Some(s) = &options.system_prompt {
            m.push(Message::system(s.clone()));
        }
        m.push(Message::user(e.prompt.clone()));
        m
    };
    let progress = Progress::new(examples.len() as u64, "answering", options.progress);
    let mut items = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(options.batch_size.max(1)) {
        let requests: Vec<ChatRequest> = chunk
            .iter()
            .map(|e| {
                let params = GenerationParams {
                    copy_spans: options
                        .constrain_quotes
                        .then(|| quotes::copy_constraint(vec![e.context()])),
                    ..params.clone()
                };
                ChatRequest::new(messages(e), params)
            })
            .collect();
        for (e, out) in chunk.iter().zip(model.chat_batch(&requests)) {
            let output = out
                .with_context(|| format!("answering example {}", e.id))?
                .text;
            let forced_choice = match scorer {
                Some(llm) if options.forced_choice && !options.labels.is_empty() => {
                    let cut = quotes::ANSWER_MARKERS
                        .iter()
                        .filter_map(|m| output.find(m))
                        .min()
                        .unwrap_or(output.len());
                    let prefix = format!(
                        "{}{}\n##Answer:",
                        llm.render(&messages(e))?,
                        output[..cut].trim_end()
                    );
                    let ids = llm.encode(&prefix)?;
                    let choices = options
                        .labels
                        .iter()
                        .map(|l| llm.encode(&format!(" {l}")))
                        .collect::<Result<Vec<_>>>()?;
                    let lp = llm.continuation_logprobs(&ids, &choices)?;
                    lp.iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map(|(i, _)| options.labels[i].clone())
                }
                _ => None,
            };
            items.push(GroundedItem::new(e, output, forced_choice));
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish();
    Ok(items)
}

/// Base and tuned side by side.
#[derive(Clone, Debug, Serialize)]
pub struct GroundedReport {
    pub base: GroundedMetrics,
    pub tuned: GroundedMetrics,
    pub base_items: Vec<GroundedItem>,
    pub tuned_items: Vec<GroundedItem>,
}

impl GroundedReport {
    /// Scores both sides' items.
    pub fn new(
        base_items: Vec<GroundedItem>,
        tuned_items: Vec<GroundedItem>,
        labels: &[String],
    ) -> Self {
        Self {
            base: score(&base_items, labels),
            tuned: score(&tuned_items, labels),
            base_items,
            tuned_items,
        }
    }

    /// `{"base": {...}, "tuned": {...}, "majority_macro_f1": …, "n": …}` (the headline figures).
    pub fn summary_json(&self) -> serde_json::Value {
        let pick = |m: &GroundedMetrics| {
            serde_json::json!({
                "verdict_accuracy": m.verdict_accuracy,
                "macro_f1": m.macro_f1,
                "chance_macro_f1": m.chance_macro_f1,
                "forced_choice_accuracy": m.forced_choice_accuracy,
                "quote_faithfulness": m.quote_faithfulness,
                "citation_recall": m.citation_recall,
                "format_adherence": m.format_adherence,
                "hallucinated_quote_rate": m.hallucinated_quote_rate,
                "accuracy_oracle_present": m.accuracy_oracle_present,
                "accuracy_oracle_removed": m.accuracy_oracle_removed,
            })
        };
        serde_json::json!({
            "base": pick(&self.base),
            "tuned": pick(&self.tuned),
            "majority_macro_f1": self.base.majority_macro_f1,
            "n": self.base.n,
        })
    }

    /// (metric, base, tuned) for every metric.
    pub fn rows(&self) -> Vec<(&'static str, Option<f64>, Option<f64>)> {
        metric_rows(&self.base)
            .into_iter()
            .zip(metric_rows(&self.tuned))
            .map(|((n, b), (_, t))| (n, b, t))
            .collect()
    }

    /// One row per metric: base, tuned, delta.
    pub fn to_frame(&self) -> Result<polars::prelude::DataFrame> {
        use polars::prelude::*;
        let rows = metric_rows(&self.base)
            .into_iter()
            .zip(metric_rows(&self.tuned))
            .collect::<Vec<_>>();
        let name: Vec<&str> = rows.iter().map(|((n, _), _)| *n).collect();
        let base: Vec<Option<f64>> = rows.iter().map(|((_, b), _)| *b).collect();
        let tuned: Vec<Option<f64>> = rows.iter().map(|(_, (_, t))| *t).collect();
        let delta: Vec<Option<f64>> = base
            .iter()
            .zip(&tuned)
            .map(|(b, t)| Some(t.as_ref()? - b.as_ref()?))
            .collect();
        Ok(DataFrame::new(
            name.len(),
            vec![
                Column::new("metric".into(), name),
                Column::new("base".into(), base),
                Column::new("tuned".into(), tuned),
                Column::new("delta".into(), delta),
            ],
        )?)
    }

    /// Grouped bars of the headline metrics.
    pub fn chart(&self) -> crate::charts::Chart {
        let pick = |m: &GroundedMetrics| -> Vec<f64> {
            metric_rows(m)
                .into_iter()
                .filter(|(n, _)| HEADLINE.contains(n))
                .map(|(_, v)| v.unwrap_or(0.0))
                .collect()
        };
        crate::charts::Chart::bars(
            "Grounded generation: base vs tuned",
            &HEADLINE.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            vec![
                ("base".into(), pick(&self.base)),
                ("tuned".into(), pick(&self.tuned)),
            ],
        )
    }
}

const HEADLINE: [&str; 6] = [
    "verdict_accuracy",
    "macro_f1",
    "forced_choice_accuracy",
    "format_adherence",
    "quote_faithfulness",
    "citation_recall",
];

fn metric_rows(m: &GroundedMetrics) -> Vec<(&'static str, Option<f64>)> {
    vec![
        ("verdict_accuracy", m.verdict_accuracy),
        ("macro_f1", m.macro_f1),
        ("majority_macro_f1", m.majority_macro_f1),
        ("chance_macro_f1", m.chance_macro_f1),
        ("forced_choice_accuracy", m.forced_choice_accuracy),
        ("format_adherence", Some(m.format_adherence)),
        ("quote_faithfulness", Some(m.quote_faithfulness)),
        ("hallucinated_quote_rate", Some(m.hallucinated_quote_rate)),
        ("citation_precision", m.citation_precision),
        ("citation_recall", m.citation_recall),
        ("exact_match", m.exact_match),
        ("token_f1", m.token_f1),
        ("accuracy_oracle_present", m.accuracy_oracle_present),
        ("accuracy_oracle_removed", m.accuracy_oracle_removed),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(output: &str, gold: &str, present: bool) -> GroundedItem {
        GroundedItem {
            output: output.into(),
            context: "Document 1: Aspirin lowers the risk of stroke in older adults. It was well tolerated.".into(),
            gold_label: Some(gold.into()),
            evidence: vec!["Aspirin lowers the risk of stroke in older adults.".into()],
            oracle_present: present,
            ..Default::default()
        }
    }

    fn labels() -> Vec<String> {
        vec!["SUPPORT".into(), "CONTRADICT".into()]
    }

    #[test]
    fn labels_scores_and_baseline_by_hand() {
        // Gold: S, S, S, C. Predicted: S, C, (none), C.
        let items = vec![
            item("##Answer: SUPPORT", "SUPPORT", true),
            item("##Answer: contradict.", "SUPPORT", true),
            item("I think it supports", "SUPPORT", false),
            item("<ANSWER>: CONTRADICT", "CONTRADICT", false),
        ];
        let m = score(&items, &labels());
        assert_eq!(m.format_adherence, 0.75);
        assert_eq!(m.verdict_accuracy, Some(0.5));
        // SUPPORT: tp 1, gold 3, predicted 1 -> F1 2/4; CONTRADICT: tp 1, gold 1, predicted 2 -> 2/3.
        let f1 = (0.5 + 2.0 / 3.0) / 2.0;
        assert!((m.macro_f1.unwrap() - f1).abs() < 1e-12);
        assert_eq!(m.per_class_recall["SUPPORT"], 1.0 / 3.0);
        assert_eq!(m.per_class_recall["CONTRADICT"], 1.0);
        // Always SUPPORT: accuracy 3/4; F1 SUPPORT 2·3/(3+4) = 6/7, CONTRADICT 0 -> 3/7.
        assert_eq!(m.majority_label.as_deref(), Some("SUPPORT"));
        assert_eq!(m.majority_accuracy, Some(0.75));
        assert!((m.majority_macro_f1.unwrap() - 3.0 / 7.0).abs() < 1e-12);
        // The same label counts at random: SUPPORT 2·(3·1/4)/(3+1) = 3/8, CONTRADICT
        // 2·(1·2/4)/(1+2) = 1/3.
        let chance = (3.0 / 8.0 + 1.0 / 3.0) / 2.0;
        assert!((m.chance_macro_f1.unwrap() - chance).abs() < 1e-12);
        // Always SUPPORT is its own chance level.
        let always: Vec<GroundedItem> = items
            .iter()
            .map(|i| GroundedItem {
                output: "##Answer: SUPPORT".into(),
                ..i.clone()
            })
            .collect();
        let a = score(&always, &labels());
        assert!((a.chance_macro_f1.unwrap() - a.macro_f1.unwrap()).abs() < 1e-12);
        assert_eq!(m.accuracy_oracle_present, Some(0.5));
        assert_eq!(m.accuracy_oracle_removed, Some(0.5));
        assert_eq!(m.forced_choice_accuracy, None);
    }

    #[test]
    fn quotes_and_citations_by_hand() {
        let items = vec![
            // A real quote covering the gold sentence: faithful, cites it.
            item("##begin_quote##Aspirin lowers the risk of stroke##end_quote## ##Answer: SUPPORT", "SUPPORT", true),
            // One invented quote, one short quote (does not count): faithfulness 0.
            item(
                "##begin_quote##Aspirin raises the risk of stroke##end_quote## ##begin_quote##well tolerated##end_quote## ##Answer: CONTRADICT",
                "SUPPORT",
                true,
            ),
            // No quote: 0.
            item("##Answer: SUPPORT", "SUPPORT", true),
        ];
        let m = score(&items, &labels());
        assert_eq!(m.quotes, 2);
        assert!((m.quote_faithfulness - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.hallucinated_quote_rate, 0.5);
        // Precision: 1, 0, 0 (no quote) -> 1/3; recall: 1, 0, 0 -> 1/3.
        assert!((m.citation_precision.unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.citation_recall.unwrap() - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn citation_hits_need_half_the_sentence_or_all_of_it() {
        let s = "Aspirin lowers the risk of stroke in older adults.";
        assert!(quote_hits("lowers the risk of stroke", s)); // 5 of 9 words, inside
        assert!(!quote_hits("risk of stroke", s)); // 3 of 9
        assert!(quote_hits(&format!("In a trial, {s} It helped."), s)); // contains it
        assert!(!quote_hits("lowers the risk of heart attack", s));
    }

    #[test]
    fn free_text_answers_by_squad_rules() {
        assert_eq!(token_f1("The 21 days", "21 days"), 1.0);
        assert!((token_f1("about 21 days", "21 days") - 0.8).abs() < 1e-12);
        assert_eq!(token_f1("honey", "wax"), 0.0);
        let mut i = item("##Answer: the 21 days.", "SUPPORT", true);
        i.gold_label = None;
        i.gold_answer = Some("21 Days".into());
        let m = score(&[i], &[]);
        assert_eq!((m.exact_match, m.token_f1), (Some(1.0), Some(1.0)));
        assert_eq!(
            match_label("Supports the claim", &labels()).as_deref(),
            Some("SUPPORT")
        );
        assert_eq!(match_label("NOT ENOUGH INFO", &labels()), None);
    }
}

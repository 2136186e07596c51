//! RAFT training data (Zhang et al. 2024): each example is a question, its oracle document(s)
//! and `k` distractors — in `oracle_p` of the examples; in the rest the oracle is removed — with
//! a chain-of-thought answer that quotes its evidence between `##begin_quote##` and
//! `##end_quote##` before `##Answer:`.
//!
//! Unlike the reference scripts, distractors can be the hardest ones (`retrieved`: the top-ranked
//! documents of a retriever, optionally reranked, that are not a positive of the question, after
//! skipping the first `skip`), quotes are checked against the example's own context, and where
//! the oracle is removed a stated policy decides the target (`keep` the oracle's answer, as the
//! reference does, or `abstain`). Answers come from gold evidence ([`RaftSet::gold_answers`]) or
//! from a teacher model ([`RaftSet::teacher_answers`]), invented quotes regenerated, then dropped
//! and counted.
//!
//! [`build`] is the stage's one entry point; the CLI and the script bindings call it.

pub mod quotes;

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::llm::{ChatModel, ChatRequest, GenerationParams, Message};
use crate::rng::Rng;
use quotes::{QuoteCheck, BEGIN_QUOTE, END_QUOTE};

/// New tokens a teacher's answer may take, unless the caller says otherwise (`raft build
/// --teacher-max-tokens`, Rhai's `teacher_max_tokens`): room for a few quoted sentences, the
/// reasoning and the final answer.
pub const TEACHER_MAX_TOKENS: usize = 400;

/// The temperature a greedy teacher's regenerated answers are sampled at.
pub const RETRY_TEMPERATURE: f64 = 0.7;

/// A teacher's generation settings by default: greedy, [`TEACHER_MAX_TOKENS`] new tokens.
pub fn teacher_params() -> GenerationParams {
    GenerationParams {
        max_tokens: TEACHER_MAX_TOKENS,
        ..Default::default()
    }
}

/// Where distractors come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Distractors {
    /// Uniformly at random from the corpus (the reference scripts' way).
    Random,
    /// The retriever's top-ranked non-positives (hard distractors).
    #[default]
    Retrieved,
    /// `mix_retrieved` of them retrieved, the rest random.
    Mix,
}

/// The target of an example whose oracle was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RemovedOracle {
    /// The oracle's answer stays (the reference's choice); its quotes are not in the context.
    #[default]
    Keep,
    /// The target says the documents do not settle the question (`abstain_label`).
    Abstain,
}

/// How examples are built.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftOptions {
    /// Distractors per example.
    pub k: usize,
    pub distractors: Distractors,
    /// Retrieved candidates passed over before distractors are taken (likely unlabelled positives).
    pub skip: usize,
    /// Share of retrieved distractors with `distractors: mix`.
    pub mix_retrieved: f64,
    /// Probability that an example keeps its oracle.
    pub oracle_p: f64,
    pub removed_oracle: RemovedOracle,
    /// The final answer of an abstaining target (SciFact's NOT ENOUGH INFO).
    pub abstain_label: String,
    /// The user message: `{documents}` and `{question}` are filled in.
    pub template: String,
    /// Each document in the context: `{n}` (1-based position), `{title}`-less text as `{text}`.
    pub document_template: String,
    /// A system message before the user's, if any.
    pub system_prompt: Option<String>,
    /// Cut each document to its first sentence (the title) and the `max_sentences` sentences that
    /// share the most words with the question, in their order (long contexts cost time; base and
    /// tuned models see the same cut).
    pub max_sentences: Option<usize>,
    /// Share of the questions (not examples) held out as `dev`.
    pub dev_share: f64,
    /// Leave out training examples of the commoner final answers (labels, after the
    /// removed-oracle policy), at random, until each has as many as the rarest: a small model
    /// trained on 2:1 SUPPORT learns to say SUPPORT. Dev examples are all kept.
    pub balance_labels: bool,
    pub seed: u64,
}

impl Default for RaftOptions {
    fn default() -> Self {
        Self {
            k: 3,
            distractors: Distractors::Retrieved,
            skip: 0,
            mix_retrieved: 0.5,
            oracle_p: 0.8,
            removed_oracle: RemovedOracle::Keep,
            abstain_label: "NOT ENOUGH INFO".into(),
            template: "{documents}\n\nQuestion: {question}\n\nAnswer the question from the documents above. \
                       First explain your reasoning, quoting the sentences you rely on between ##begin_quote## \
                       and ##end_quote##; then give the final answer after ##Answer:."
                .into(),
            document_template: "Document {n}: {text}".into(),
            system_prompt: None,
            max_sentences: None,
            dev_share: 0.0,
            balance_labels: false,
            seed: 42,
        }
    }
}

impl RaftOptions {
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.oracle_p) || !(0.0..=1.0).contains(&self.mix_retrieved) {
            bail!("oracle_p and mix_retrieved must be in [0, 1]");
        }
        if !(0.0..1.0).contains(&self.dev_share) {
            bail!("dev_share must be in [0, 1), got {}", self.dev_share);
        }
        for key in ["{documents}", "{question}"] {
            if !self.template.contains(key) {
                bail!("the RAFT template has no {key}");
            }
        }
        if !self.document_template.contains("{text}") {
            bail!("the document template has no {{text}}");
        }
        Ok(())
    }

    /// The documents of a context as shown: each cut by `max_sentences` against `question`, then
    /// numbered through `document_template`.
    pub fn documents<S: AsRef<str>>(&self, question: &str, texts: &[S]) -> Vec<String> {
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let text = text.as_ref();
                let text = match self.max_sentences {
                    Some(m) => trim(text, question, m),
                    None => text.to_string(),
                };
                self.document_template
                    .replace("{n}", &(i + 1).to_string())
                    .replace("{text}", &text)
            })
            .collect()
    }

    /// The user message for `question` over documents already rendered by [`documents`](Self::documents).
    pub fn prompt(&self, question: &str, documents: &[String]) -> String {
        self.template
            .replace("{documents}", &documents.join("\n\n"))
            .replace("{question}", question)
    }

    /// The conversation a generator sees: the system prompt (if any), then `prompt`.
    pub fn messages(&self, prompt: &str) -> Vec<Message> {
        let mut m = vec![];
        if let Some(s) = &self.system_prompt {
            m.push(Message::system(s.clone()));
        }
        m.push(Message::user(prompt.to_string()));
        m
    }
}

/// One question with what is known about its answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RaftSource {
    pub id: String,
    pub question: String,
    /// The oracle documents (corpus ids); all are positives of the question.
    pub oracles: Vec<String>,
    /// Further positives that must never be distractors.
    #[serde(default)]
    pub positives: Vec<String>,
    /// A label answer (SciFact: SUPPORT / CONTRADICT), if any.
    #[serde(default)]
    pub label: Option<String>,
    /// A free-text gold answer, if any.
    #[serde(default)]
    pub answer: Option<String>,
    /// Gold evidence sentences (verbatim from the oracle), if any.
    #[serde(default)]
    pub evidence: Vec<String>,
}

/// One training or evaluation example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RaftExample {
    pub id: String,
    pub source: String,
    pub question: String,
    /// The documents of the context in the order shown, and whether each is an oracle.
    pub doc_ids: Vec<String>,
    pub docs: Vec<String>,
    pub is_oracle: Vec<bool>,
    pub oracle_present: bool,
    /// The rendered user message.
    pub prompt: String,
    /// The target answer (chain of thought, quotes, `##Answer:`), once made.
    pub answer: Option<String>,
    pub label: Option<String>,
    pub gold_answer: Option<String>,
    pub evidence: Vec<String>,
    /// `train` or `dev`.
    pub split: String,
    /// Retrieved distractors wanted but missing (too few candidates), filled at random.
    pub random_fill: usize,
}

impl RaftExample {
    /// The documents as the model sees them, for quote checks.
    pub fn context(&self) -> String {
        self.docs.join("\n")
    }

    /// The label the example's target should end with (`abstain_label` where the oracle is
    /// removed and the policy abstains).
    pub fn target_label(&self, options: &RaftOptions) -> Option<String> {
        if !self.oracle_present && options.removed_oracle == RemovedOracle::Abstain {
            Some(options.abstain_label.clone())
        } else {
            self.label.clone().or_else(|| self.gold_answer.clone())
        }
    }
}

/// What building and answering did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RaftSummary {
    pub examples: usize,
    pub with_oracle: usize,
    pub without_oracle: usize,
    pub train: usize,
    pub dev: usize,
    /// Examples whose retrieved distractors ran short and were filled at random.
    pub random_filled: usize,
    /// Teacher answers regenerated for invented quotes or a missing final answer.
    pub regenerated: usize,
    /// Examples dropped after the last attempt still failed.
    pub dropped: usize,
    /// Targets whose quotes are not in their context (oracle removed under `keep`).
    pub quotes_outside_context: usize,
    /// Gold evidence sentences of examples with their oracle, and how many of them survived
    /// `max_sentences`.
    pub evidence_sentences: usize,
    pub evidence_kept: usize,
    /// Training examples left out by `balance_labels`.
    pub balanced_out: usize,
}

/// Examples, the options that made them, and counts.
#[derive(Clone, Debug)]
pub struct RaftSet {
    pub examples: Vec<RaftExample>,
    pub options: RaftOptions,
    pub summary: RaftSummary,
}

/// The output layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RaftFormat {
    /// `{"messages": [system?, user, assistant]}` (what `train generate` reads).
    #[default]
    Messages,
    /// `{"prompt", "completion"}`.
    PromptCompletion,
    /// The reference scripts' columns: id, type, question, context, oracle_context, cot_answer,
    /// instruction.
    Reference,
}

fn example_rng(seed: u64, id: &str) -> Rng {
    let mut h = crate::fingerprint::Fingerprint::default();
    h.text(id);
    let digest = h.hex();
    Rng::new(seed ^ u64::from_str_radix(&digest[..16], 16).unwrap_or(0))
}

/// `text` cut to its first sentence and the `m` others sharing the most words (of three letters
/// or more) with `question`, kept in their order.
pub fn trim(text: &str, question: &str, m: usize) -> String {
    let spans = crate::chunk::sentences::sentence_spans(text);
    if spans.len() <= m + 1 {
        return text.to_string();
    }
    let words = |s: &str| -> HashSet<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 3)
            .map(str::to_lowercase)
            .collect()
    };
    let q = words(question);
    let mut scored: Vec<(usize, usize)> = spans[1..]
        .iter()
        .enumerate()
        .map(|(i, &(a, b))| (i + 1, words(&text[a..b]).intersection(&q).count()))
        .collect();
    // Most shared words first; the earlier sentence wins a tie.
    scored.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut keep: Vec<usize> = std::iter::once(0)
        .chain(scored.iter().take(m).map(|s| s.0))
        .collect();
    keep.sort_unstable();
    keep.iter()
        .map(|&i| text[spans[i].0..spans[i].1].trim())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sources from SciFact-style evidence: JSONL rows `{query-id, corpus-id, label, sentences:
/// [indices]}` whose sentences index the `sentences` list of that document in `corpus_jsonl`.
/// `questions` maps query ids to text, `positives` every relevant document of each query; rows
/// whose query is not in `questions` are skipped.
pub fn read_evidence(
    path: &std::path::Path,
    corpus_jsonl: &std::path::Path,
    questions: &HashMap<String, String>,
    positives: &HashMap<String, Vec<String>>,
) -> Result<Vec<RaftSource>> {
    use crate::data::jsonl::{read_objects, string_field};
    let rows = read_objects(path)?;
    let wanted: HashSet<String> = rows
        .iter()
        .filter_map(|(_, r)| {
            r.get("corpus-id").map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
        })
        .collect();
    let mut sentences: HashMap<String, Vec<String>> = HashMap::new();
    for (line, doc) in read_objects(corpus_jsonl)? {
        let id = string_field(&doc, "_id", corpus_jsonl, line)?;
        if !wanted.contains(&id) {
            continue;
        }
        let Some(list) = doc.get("sentences").and_then(Value::as_array) else {
            bail!(
                "{}:{line}: document `{id}` has no `sentences` list",
                corpus_jsonl.display()
            );
        };
        sentences.insert(
            id,
            list.iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect(),
        );
    }
    let mut out = vec![];
    for (line, r) in &rows {
        let qid = string_field(r, "query-id", path, *line)?;
        let cid = string_field(r, "corpus-id", path, *line)?;
        let Some(question) = questions.get(&qid) else {
            continue;
        };
        let Some(doc) = sentences.get(&cid) else {
            bail!(
                "{}:{line}: document `{cid}` is not in {}",
                path.display(),
                corpus_jsonl.display()
            );
        };
        let indices = r
            .get("sentences")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}:{line}: `sentences` must be a list of indices",
                    path.display()
                )
            })?;
        let evidence = indices
            .iter()
            .map(|i| {
                i.as_u64()
                    .and_then(|i| doc.get(i as usize))
                    .cloned()
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "{}:{line}: sentence index {i} is not in document `{cid}`",
                            path.display()
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        out.push(RaftSource {
            id: qid.clone(),
            question: question.clone(),
            oracles: vec![cid],
            positives: positives.get(&qid).cloned().unwrap_or_default(),
            label: Some(string_field(r, "label", path, *line)?),
            answer: None,
            evidence,
        });
    }
    Ok(out)
}

/// The questions of a retrieval dataset as sources: with `evidence` (a SciFact-style evidence
/// file and the corpus JSONL holding each document's `sentences`), one per evidence row with its
/// label and rationale sentences; without, one per question with its relevant documents as
/// oracles (answers then come from a teacher). Only questions `keep` accepts are used.
pub fn sources_from_dataset(
    dataset: &crate::data::retrieval::RetrievalDataset,
    evidence: Option<(&std::path::Path, &std::path::Path)>,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Vec<RaftSource>> {
    let qrels = dataset.qrels_map()?;
    let questions: HashMap<String, String> = dataset
        .query_ids()?
        .into_iter()
        .zip(dataset.query_texts()?)
        .filter(|(q, _)| keep(q))
        .collect();
    let positives: HashMap<String, Vec<String>> = qrels
        .iter()
        .map(|(q, j)| {
            let mut docs: Vec<String> = j
                .iter()
                .filter(|(_, &g)| g >= 1)
                .map(|(d, _)| d.clone())
                .collect();
            docs.sort();
            (q.clone(), docs)
        })
        .collect();
    let sources = match evidence {
        Some((file, corpus)) => read_evidence(file, corpus, &questions, &positives)?,
        None => {
            let mut ids: Vec<&String> = questions.keys().collect();
            ids.sort();
            ids.into_iter()
                .filter_map(|q| {
                    let oracles = positives.get(q)?.clone();
                    (!oracles.is_empty()).then(|| RaftSource {
                        id: q.clone(),
                        question: questions[q].clone(),
                        oracles,
                        positives: vec![],
                        label: None,
                        answer: None,
                        evidence: vec![],
                    })
                })
                .collect()
        }
    };
    if sources.is_empty() {
        bail!("no question with an oracle document is left");
    }
    Ok(sources)
}

/// Builds one example per source. `corpus` holds (id, text) of every document that may appear;
/// `ranked[source id]`, the retriever's (or reranker's) ranking for the question, best first, is
/// needed by the `retrieved` and `mix` strategies.
pub fn build(
    sources: &[RaftSource],
    corpus: &[(String, String)],
    ranked: Option<&HashMap<String, Vec<String>>>,
    options: &RaftOptions,
) -> Result<RaftSet> {
    options.validate()?;
    let index: HashMap<&str, usize> = corpus
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.as_str(), i))
        .collect();
    if options.distractors != Distractors::Random && ranked.is_none() {
        bail!(
            "distractors `{:?}` need a retriever's ranking of the corpus for each question",
            options.distractors
        );
    }
    // Questions held out as dev, by question id.
    let mut ids: Vec<&str> = sources.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut rng = Rng::new(options.seed);
    rng.shuffle(&mut ids);
    let dev: HashSet<&str> = ids
        .iter()
        .take((ids.len() as f64 * options.dev_share).round() as usize)
        .copied()
        .collect();

    let mut examples = Vec::with_capacity(sources.len());
    let mut summary = RaftSummary::default();
    for (n, source) in sources.iter().enumerate() {
        if source.oracles.is_empty() {
            bail!("question `{}` has no oracle document", source.id);
        }
        for id in &source.oracles {
            if !index.contains_key(id.as_str()) {
                bail!(
                    "question `{}`: oracle `{id}` is not in the corpus",
                    source.id
                );
            }
        }
        let positives: HashSet<&str> = source
            .oracles
            .iter()
            .chain(&source.positives)
            .map(String::as_str)
            .collect();
        let mut rng = example_rng(options.seed, &format!("{}#{n}", source.id));
        let want_retrieved = match options.distractors {
            Distractors::Random => 0,
            Distractors::Retrieved => options.k,
            Distractors::Mix => (options.k as f64 * options.mix_retrieved).round() as usize,
        };
        let mut chosen: Vec<&str> = vec![];
        if want_retrieved > 0 {
            let list = ranked
                .and_then(|r| r.get(&source.id))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            chosen.extend(
                list.iter()
                    .map(String::as_str)
                    .filter(|d| !positives.contains(d) && index.contains_key(d))
                    .skip(options.skip)
                    .take(want_retrieved),
            );
        }
        let random_fill = want_retrieved - chosen.len();
        let eligible = corpus.len().saturating_sub(positives.len());
        while chosen.len() < options.k && chosen.len() < eligible {
            let d = corpus[rng.below(corpus.len())].0.as_str();
            if !positives.contains(d) && !chosen.contains(&d) {
                chosen.push(d);
            }
        }
        if random_fill > 0 {
            summary.random_filled += 1;
        }
        let oracle_present = rng.unit() < options.oracle_p;
        let mut docs: Vec<(&str, bool)> = chosen.into_iter().map(|d| (d, false)).collect();
        if oracle_present {
            docs.extend(source.oracles.iter().map(|d| (d.as_str(), true)));
        }
        rng.shuffle(&mut docs);
        let texts = {
            let raw: Vec<&str> = docs
                .iter()
                .map(|(d, _)| corpus[index[d]].1.as_str())
                .collect();
            options.documents(&source.question, &raw)
        };
        if oracle_present {
            let context = quotes::normalize_space(&texts.join(" "));
            summary.evidence_sentences += source.evidence.len();
            summary.evidence_kept += source
                .evidence
                .iter()
                .filter(|s| context.contains(&quotes::normalize_space(s)))
                .count();
        }
        let prompt = options.prompt(&source.question, &texts);
        let split = if dev.contains(source.id.as_str()) {
            "dev"
        } else {
            "train"
        };
        examples.push(RaftExample {
            id: format!("{}#{n}", source.id),
            source: source.id.clone(),
            question: source.question.clone(),
            doc_ids: docs.iter().map(|(d, _)| d.to_string()).collect(),
            docs: texts,
            is_oracle: docs.iter().map(|(_, o)| *o).collect(),
            oracle_present,
            prompt,
            answer: None,
            label: source.label.clone(),
            gold_answer: source.answer.clone(),
            evidence: source.evidence.clone(),
            split: split.into(),
            random_fill,
        });
    }
    if options.balance_labels {
        summary.balanced_out = balance_labels(&mut examples, options)?;
    }
    let mut set = RaftSet {
        examples,
        options: options.clone(),
        summary,
    };
    set.recount();
    Ok(set)
}

/// Leaves out training examples of the commoner target labels, a seeded random choice in each,
/// until every label has as many as the rarest; returns how many were left out.
fn balance_labels(examples: &mut Vec<RaftExample>, options: &RaftOptions) -> Result<usize> {
    let mut by_label: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, e) in examples
        .iter()
        .enumerate()
        .filter(|(_, e)| e.split == "train")
    {
        // Free-text gold answers are not classes: only labels count.
        let Some(label) = e.label.as_ref().and_then(|_| e.target_label(options)) else {
            bail!(
                "balance_labels needs a label on every training example; `{}` has none",
                e.id
            );
        };
        by_label.entry(label).or_default().push(i);
    }
    let Some(rarest) = by_label.values().map(Vec::len).min() else {
        return Ok(0);
    };
    let mut rng = Rng::new(options.seed ^ 0xB41A_4CE5_0F1A_BE15);
    let mut out = HashSet::new();
    for members in by_label.values_mut() {
        rng.shuffle(members);
        out.extend(members.drain(rarest..));
    }
    *examples = std::mem::take(examples)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !out.contains(i))
        .map(|(_, e)| e)
        .collect();
    Ok(out.len())
}

impl RaftSet {
    /// Targets composed from the gold evidence and label, no model involved: each evidence
    /// sentence quoted with the number of the document it is in, then `##Answer: label`; where
    /// the oracle is removed and the policy abstains, a reason and the abstain label. Examples
    /// without evidence and label (or answer) are an error.
    pub fn gold_answers(&mut self) -> Result<()> {
        let options = self.options.clone();
        let mut outside = 0;
        for ex in &mut self.examples {
            let Some(label) = ex.target_label(&options) else {
                bail!("example `{}` has neither a label nor a gold answer", ex.id);
            };
            let answer = if !ex.oracle_present && options.removed_oracle == RemovedOracle::Abstain {
                format!("##Reason: none of the documents addresses the question. ##Answer: {label}")
            } else {
                let mut reason = String::from("##Reason:");
                let mut quoted = 0;
                for s in &ex.evidence {
                    let at = ex.docs.iter().position(|d| {
                        quotes::normalize_space(d).contains(&quotes::normalize_space(s))
                    });
                    let source = match at {
                        Some(i) => format!("Document {}", i + 1),
                        // The oracle is absent (`keep`), so the quote cannot be in the context.
                        None if !ex.oracle_present => "The source".to_string(),
                        // Cut by max_sentences: not quoted.
                        None => continue,
                    };
                    reason.push_str(&format!(" {source} says {BEGIN_QUOTE}{s}{END_QUOTE}."));
                    quoted += 1;
                }
                if quoted == 0 {
                    reason.push_str(&match ex.is_oracle.iter().position(|&o| o) {
                        Some(i) => format!(" Document {} addresses the question.", i + 1),
                        None => " the documents answer it directly.".to_string(),
                    });
                }
                format!("{reason} ##Answer: {label}")
            };
            if !QuoteCheck::of(&answer, &ex.context()).invented.is_empty() {
                outside += 1;
            }
            ex.answer = Some(answer);
        }
        self.summary.quotes_outside_context = outside;
        Ok(())
    }

    /// Targets from a teacher model: each example's prompt (the RAFT instruction) answered, its
    /// quotes checked against the example's context; an answer with an invented quote or no
    /// final answer is asked again (another seed; a greedy teacher samples at
    /// [`RETRY_TEMPERATURE`] then, since greedy decoding would repeat itself) up to `retries`
    /// times, then the example is dropped and counted. Where the oracle is removed under
    /// `keep`, quotes need not be in the context (they cannot be) and only the final answer is
    /// required. Wrap the teacher in [`crate::llm::CachedChat`] to make a killed run resume
    /// without repeating a request.
    pub fn teacher_answers(
        &mut self,
        teacher: &dyn ChatModel,
        params: &GenerationParams,
        retries: usize,
    ) -> Result<()> {
        params.validate()?;
        let options = self.options.clone();
        let mut pending: Vec<usize> = (0..self.examples.len()).collect();
        for attempt in 0..=retries {
            if pending.is_empty() {
                break;
            }
            let requests: Vec<ChatRequest> = pending
                .iter()
                .map(|&i| {
                    let mut p = params.clone();
                    p.seed = params.seed.wrapping_add(attempt as u64);
                    if attempt > 0 && p.temperature == 0.0 {
                        p.temperature = RETRY_TEMPERATURE;
                    }
                    ChatRequest::new(self.messages(&self.examples[i], false), p)
                })
                .collect();
            let answers = teacher.chat_batch(&requests);
            let mut again = vec![];
            for (&i, answer) in pending.iter().zip(answers) {
                let ex = &mut self.examples[i];
                let text = match answer {
                    Ok(c) => c.text,
                    Err(e) => {
                        eprintln!("note: example {}: the teacher failed: {e:#}", ex.id);
                        again.push(i);
                        continue;
                    }
                };
                let check = QuoteCheck::of(&text, &ex.context());
                let keep_outside =
                    !ex.oracle_present && options.removed_oracle == RemovedOracle::Keep;
                if check.has_answer && (check.invented.is_empty() || keep_outside) {
                    ex.answer = Some(text);
                } else {
                    again.push(i);
                }
            }
            if attempt < retries {
                self.summary.regenerated += again.len();
            }
            pending = again;
        }
        self.summary.dropped += pending.len();
        let drop: HashSet<usize> = pending.into_iter().collect();
        let mut i = 0;
        self.examples.retain(|_| {
            let keep = !drop.contains(&i);
            i += 1;
            keep
        });
        self.recount();
        Ok(())
    }

    /// The summary's example counts, from the examples as they are now (after their splits or
    /// targets were changed by hand).
    pub fn recount(&mut self) {
        let s = &mut self.summary;
        s.examples = self.examples.len();
        s.with_oracle = self.examples.iter().filter(|e| e.oracle_present).count();
        s.without_oracle = s.examples - s.with_oracle;
        s.dev = self.examples.iter().filter(|e| e.split == "dev").count();
        s.train = s.examples - s.dev;
    }

    /// The conversation of an example: system (if any), user; with `answer`, the target too.
    pub fn messages(&self, ex: &RaftExample, answer: bool) -> Vec<Message> {
        let mut m = self.options.messages(&ex.prompt);
        if answer {
            if let Some(a) = &ex.answer {
                m.push(Message {
                    role: "assistant".into(),
                    content: a.clone(),
                });
            }
        }
        m
    }

    /// The examples of `split` (`train`, `dev`, or `all`) as JSON rows in `format`; examples
    /// without a target are left out.
    pub fn records(&self, split: &str, format: RaftFormat) -> Vec<Value> {
        self.examples
            .iter()
            .filter(|e| split == "all" || e.split == split)
            .filter_map(|e| {
                let answer = e.answer.as_ref()?;
                Some(match format {
                    RaftFormat::Messages => json!({"messages": self.messages(e, true)}),
                    RaftFormat::PromptCompletion => {
                        json!({"prompt": self.messages(e, false), "completion": [{"role": "assistant", "content": answer}]})
                    }
                    RaftFormat::Reference => json!({
                        "id": e.id,
                        "type": "general",
                        "question": e.question,
                        "context": {"title": [e.doc_ids.clone()], "sentences": [e.docs.clone()]},
                        "oracle_context": e.docs.iter().zip(&e.is_oracle).filter(|(_, o)| **o).map(|(d, _)| d.clone()).collect::<Vec<_>>().join("\n"),
                        "cot_answer": answer,
                        "instruction": e.prompt,
                    }),
                })
            })
            .collect()
    }

    /// [`records`](Self::records) as a frame (lists of messages kept as their JSON text, which
    /// `train_generator` reads).
    pub fn records_frame(
        &self,
        split: &str,
        format: RaftFormat,
    ) -> Result<polars::prelude::DataFrame> {
        let rows: Vec<(usize, serde_json::Map<String, Value>)> = self
            .records(split, format)
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                Value::Object(m) => Some((i + 1, m)),
                _ => None,
            })
            .collect();
        crate::data::table::frame_from_objects(&rows, "RAFT rows")
    }

    /// Writes [`records`](Self::records) as JSON lines.
    pub fn write_jsonl(
        &self,
        path: &std::path::Path,
        split: &str,
        format: RaftFormat,
    ) -> Result<usize> {
        use std::io::Write;
        let rows = self.records(split, format);
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?,
        );
        for r in &rows {
            writeln!(f, "{r}")?;
        }
        f.flush()?;
        Ok(rows.len())
    }

    /// One table row per example for inspection: id, split, oracle present, documents, answer,
    /// label, whether its quotes are all in its context.
    pub fn to_frame(&self) -> Result<polars::prelude::DataFrame> {
        use polars::prelude::*;
        let e = &self.examples;
        let col = |f: &dyn Fn(&RaftExample) -> String| -> Vec<String> { e.iter().map(f).collect() };
        Ok(DataFrame::new(
            e.len(),
            vec![
                Column::new("id".into(), col(&|x| x.id.clone())),
                Column::new("split".into(), col(&|x| x.split.clone())),
                Column::new("question".into(), col(&|x| x.question.clone())),
                Column::new(
                    "oracle_present".into(),
                    e.iter().map(|x| x.oracle_present).collect::<Vec<_>>(),
                ),
                Column::new("doc_ids".into(), col(&|x| x.doc_ids.join(","))),
                Column::new(
                    "answer".into(),
                    col(&|x| x.answer.clone().unwrap_or_default()),
                ),
                Column::new(
                    "label".into(),
                    col(&|x| x.label.clone().unwrap_or_default()),
                ),
                Column::new(
                    "quotes_in_context".into(),
                    e.iter()
                        .map(|x| {
                            x.answer.as_ref().is_some_and(|a| {
                                QuoteCheck::of(a, &x.context()).invented.is_empty()
                            })
                        })
                        .collect::<Vec<_>>(),
                ),
            ],
        )?)
    }
}

//! Synthetic training pairs from chunks, for teams that have documents but no labelled queries.
//! A language model writes queries for each chunk ([`Generator::Llm`], any [`ChatModel`]), or an
//! LLM-free method makes pseudo-queries from the chunk itself ([`Generator::InverseCloze`],
//! [`Generator::Crop`]). Runs are resumable through a [`journal`]; [`filter`] drops queries a
//! retriever cannot trace back to their chunk.

mod cloze;
pub mod filter;
pub mod journal;
pub mod parse;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

pub use filter::{round_trip_filter, RoundTripStats};
pub use journal::Journal;

use crate::data::retrieval::Document;
use crate::data::RetrievalDataset;
use crate::fingerprint::Fingerprint;
use crate::llm::{ChatModel, ChatRequest, GenerationParams, Message};
use crate::rng::Rng;

/// What writes the queries.
#[derive(Clone)]
pub enum Generator {
    Llm(Arc<dyn ChatModel>),
    /// A sentence of the chunk as the query, the rest as the positive.
    InverseCloze,
    /// Two random spans of the chunk.
    Crop,
}

impl Generator {
    /// `ict`, `crop`, or `llm:<model>`: the `generator` column's value.
    pub fn name(&self) -> String {
        match self {
            Self::Llm(m) => format!("llm:{}", m.name()),
            Self::InverseCloze => "ict".into(),
            Self::Crop => "crop".into(),
        }
    }
}

/// The default prompt: short, direct, one query per line (small models follow it best).
pub const DEFAULT_PROMPT: &str = "{passage}\n\nWrite {n} short questions that are answered by the text above. Write one question per line.";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthOptions {
    /// Queries asked for (LLM) or made (ICT, crop) per chunk.
    pub per_chunk: usize,
    /// The user message; `{passage}` and `{n}` are filled in.
    pub prompt: String,
    /// A system message before it (none: the model's template default).
    pub system: Option<String>,
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    /// Sampling and ICT/crop draws; each chunk gets its own stream from (seed, chunk id).
    pub seed: u64,
    /// Chunks sent to the model (and recorded in the journal) together.
    pub batch_size: usize,
    pub progress: bool,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            per_chunk: 3,
            prompt: DEFAULT_PROMPT.into(),
            system: None,
            max_tokens: 160,
            temperature: 0.7,
            top_p: 0.95,
            seed: 42,
            batch_size: 16,
            progress: true,
        }
    }
}

/// A chunk to write queries for.
#[derive(Clone, Debug)]
pub struct ChunkText {
    pub chunk_id: String,
    pub text: String,
}

/// Chunks from a frame with `chunk_id` and `text` columns (as [`crate::chunk::chunk_documents`]
/// makes); ids must be unique.
pub fn chunks_from_frame(frame: &DataFrame) -> Result<Vec<ChunkText>> {
    crate::data::require_columns(frame, &["chunk_id", "text"], "chunks")?;
    let ids = crate::data::table::str_column(frame, "chunk_id")?;
    let texts = crate::data::table::str_column(frame, "text")?;
    let mut seen = std::collections::HashSet::new();
    for id in &ids {
        if !seen.insert(id.as_str()) {
            bail!("chunk id `{id}` appears twice");
        }
    }
    if ids.is_empty() {
        bail!("no chunks to generate queries for");
    }
    Ok(ids
        .into_iter()
        .zip(texts)
        .map(|(chunk_id, text)| ChunkText { chunk_id, text })
        .collect())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyntheticPair {
    pub query: String,
    pub positive: String,
    pub chunk_id: String,
    pub generator: String,
}

/// What a run produced and how it went.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SynthOutcome {
    pub pairs: Vec<SyntheticPair>,
    pub generator: String,
    pub chunks: usize,
    /// Chunks taken from the journal of an earlier run.
    pub resumed: usize,
    /// Chunks that yielded no usable query.
    pub empty: usize,
    /// Chunks whose model request failed (after retries), with the error; rerun to retry them.
    pub failed: Vec<(String, String)>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub seconds: f64,
}

impl SynthOutcome {
    /// `query`, `positive`, `chunk_id`, `generator`.
    pub fn frame(&self) -> Result<DataFrame> {
        let col = |name: &str, f: fn(&SyntheticPair) -> &String| {
            Column::new(
                name.into(),
                self.pairs.iter().map(|p| f(p).as_str()).collect::<Vec<_>>(),
            )
        };
        Ok(DataFrame::new(
            self.pairs.len(),
            vec![
                col("query", |p| &p.query),
                col("positive", |p| &p.positive),
                col("chunk_id", |p| &p.chunk_id),
                col("generator", |p| &p.generator),
            ],
        )?)
    }

    /// Only `query` and `positive`: what the trainer and the miner read by position.
    pub fn training_pairs(&self) -> Result<DataFrame> {
        Ok(self.frame()?.select(["query", "positive"])?)
    }

    /// The pairs as a retrieval dataset (LlamaIndex's `EmbeddingQAFinetuneDataset` shape): each
    /// query relevant to its positive. A positive equal to its chunk is the node `chunk_id`;
    /// ICT/crop positives are nodes `<chunk_id>/p<k>`.
    pub fn dataset(&self, chunks: &[ChunkText]) -> Result<RetrievalDataset> {
        if self.pairs.is_empty() {
            bail!("no synthetic pairs to write");
        }
        let texts: std::collections::HashMap<&str, &str> = chunks
            .iter()
            .map(|c| (c.chunk_id.as_str(), c.text.as_str()))
            .collect();
        let mut docs: Vec<Document> = Vec::new();
        let mut doc_seen = std::collections::HashSet::new();
        let (mut queries, mut judgements) = (Vec::new(), Vec::new());
        for (k, p) in self.pairs.iter().enumerate() {
            let node = if texts.get(p.chunk_id.as_str()) == Some(&p.positive.as_str()) {
                p.chunk_id.clone()
            } else {
                format!("{}/p{k}", p.chunk_id)
            };
            if doc_seen.insert(node.clone()) {
                docs.push(Document {
                    id: node.clone(),
                    title: String::new(),
                    body: p.positive.clone(),
                });
            }
            let qid = format!("{}/q{k}", p.chunk_id);
            queries.push((qid.clone(), p.query.clone()));
            judgements.push((qid, node, 1, format!("pair {k}")));
        }
        RetrievalDataset::from_rows("synthetic", docs, queries, judgements)
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} pairs from {} chunks with {} ({} resumed, {} without a usable query, {} failed) in {:.1} s",
            self.pairs.len(),
            self.chunks,
            self.generator,
            self.resumed,
            self.empty,
            self.failed.len(),
            self.seconds
        );
        if self.completion_tokens > 0 {
            s += &format!(
                "; {} prompt + {} generated tokens",
                self.prompt_tokens, self.completion_tokens
            );
            // Answers replayed from a response cache take no time; a rate would mislead.
            if self.seconds >= 1.0 {
                s += &format!(
                    " ({:.1} generated tokens/s)",
                    self.completion_tokens as f64 / self.seconds
                );
            }
        }
        s
    }
}

/// The settings that decide a run's output, for the journal's header.
fn settings_key(generator: &Generator, options: &SynthOptions) -> String {
    let mut f = Fingerprint::default();
    f.text(&generator.name());
    let relevant = serde_json::json!([
        options.per_chunk,
        options.prompt,
        options.system,
        options.max_tokens,
        options.temperature,
        options.top_p,
        options.seed
    ]);
    f.text(&relevant.to_string());
    f.hex()
}

fn chunk_rng(seed: u64, chunk_id: &str) -> Rng {
    let mut f = Fingerprint::default();
    f.text(chunk_id);
    Rng::new(seed ^ u64::from_str_radix(&f.hex(), 16).expect("hex digest"))
}

/// Writes pairs for every chunk. With a `journal`, finished chunks are recorded as they finish
/// and a rerun continues where the last run stopped. Failed model requests do not stop the run:
/// their chunks are listed in [`SynthOutcome::failed`] and retried by the next run.
pub fn synthesize(
    chunks: &[ChunkText],
    generator: &Generator,
    options: &SynthOptions,
    journal: Option<&Path>,
) -> Result<SynthOutcome> {
    if options.per_chunk == 0 || options.batch_size == 0 {
        bail!("per_chunk and batch_size must be at least 1");
    }
    if matches!(generator, Generator::Llm(_)) && !options.prompt.contains("{passage}") {
        bail!("the prompt must contain {{passage}}, where the chunk's text goes");
    }
    let started = Instant::now();
    let mut journal = match journal {
        Some(p) => Some(Journal::open(p, &settings_key(generator, options))?),
        None => None,
    };
    let name = generator.name();
    let mut outcome = SynthOutcome {
        generator: name.clone(),
        chunks: chunks.len(),
        ..Default::default()
    };
    let mut per_chunk: Vec<Option<Vec<(String, String)>>> = chunks
        .iter()
        .map(|c| {
            journal
                .as_ref()
                .and_then(|j| j.done().get(&c.chunk_id).cloned())
        })
        .collect();
    outcome.resumed = per_chunk.iter().filter(|p| p.is_some()).count();
    let todo: Vec<usize> = (0..chunks.len())
        .filter(|&i| per_chunk[i].is_none())
        .collect();
    let progress = crate::progress::Progress::new(todo.len() as u64, "queries", options.progress);
    for batch in todo.chunks(options.batch_size) {
        crate::interrupt::check()?;
        let made: Vec<Result<Vec<(String, String)>>> = match generator {
            Generator::Llm(model) => {
                let requests: Vec<ChatRequest> = batch
                    .iter()
                    .map(|&i| request(&chunks[i], options))
                    .collect();
                let answers = model.chat_batch(&requests);
                batch
                    .iter()
                    .zip(answers)
                    .map(|(&i, a)| {
                        a.map(|c| {
                            outcome.prompt_tokens += c.prompt_tokens;
                            outcome.completion_tokens += c.completion_tokens;
                            parse::parse_queries(&c.text, &chunks[i].text, options.per_chunk)
                                .into_iter()
                                .map(|q| (q, chunks[i].text.clone()))
                                .collect()
                        })
                    })
                    .collect()
            }
            Generator::InverseCloze | Generator::Crop => batch
                .iter()
                .map(|&i| {
                    let mut rng = chunk_rng(options.seed, &chunks[i].chunk_id);
                    Ok(if matches!(generator, Generator::Crop) {
                        cloze::independent_crops(&chunks[i].text, options.per_chunk, &mut rng)
                    } else {
                        cloze::inverse_cloze(&chunks[i].text, options.per_chunk, &mut rng)
                    })
                })
                .collect(),
        };
        for (&i, result) in batch.iter().zip(made) {
            match result {
                Ok(pairs) => {
                    if let Some(j) = journal.as_mut() {
                        j.record(&chunks[i].chunk_id, &pairs)?;
                    }
                    per_chunk[i] = Some(pairs);
                }
                Err(e) => outcome
                    .failed
                    .push((chunks[i].chunk_id.clone(), format!("{e:#}"))),
            }
        }
        progress.inc(batch.len() as u64);
        if outcome.completion_tokens > 0 {
            let secs = started.elapsed().as_secs_f64();
            progress.set_message(format!(
                "{:.0} tok/s",
                outcome.completion_tokens as f64 / secs
            ));
        }
    }
    progress.finish();
    for (chunk, pairs) in chunks.iter().zip(per_chunk) {
        let Some(pairs) = pairs else { continue };
        if pairs.is_empty() {
            outcome.empty += 1;
        }
        outcome
            .pairs
            .extend(pairs.into_iter().map(|(query, positive)| SyntheticPair {
                query,
                positive,
                chunk_id: chunk.chunk_id.clone(),
                generator: name.clone(),
            }));
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}

fn request(chunk: &ChunkText, options: &SynthOptions) -> ChatRequest {
    let prompt = options
        .prompt
        .replace("{n}", &options.per_chunk.to_string())
        .replace("{passage}", &chunk.text);
    let messages = options
        .system
        .iter()
        .map(|s| Message::system(s.clone()))
        .chain([Message::user(prompt)])
        .collect();
    ChatRequest::new(
        messages,
        GenerationParams {
            max_tokens: options.max_tokens,
            temperature: options.temperature,
            top_p: options.top_p,
            seed: chunk_rng(options.seed, &chunk.chunk_id).next_u64(),
            ..Default::default()
        },
    )
}

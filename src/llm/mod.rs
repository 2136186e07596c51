//! One chat interface for every language model ragtune talks to: a local Llama-family decoder on
//! candle ([`LocalLlm`]), any OpenAI-compatible server ([`OpenAiClient`]), and either of them
//! behind an on-disk response cache ([`CachedChat`]). Synthetic data generation (and later RAFT's
//! teacher) only sees [`ChatModel`], so every backend serves every stage.
//!
//! `ragtune serve` ([`serve`]) turns a local model into an OpenAI-compatible server.

mod cache;
pub mod constrain;
mod gguf;
mod hf;
mod local;
mod openai;
mod sample;
pub mod serve;
mod template;

use std::sync::Arc;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

pub use crate::models::llama::LlamaConfig;
pub use cache::CachedChat;
pub use local::{GenerationStats, LocalLlm, LocalOptions, DEFAULT_MAX_BATCH};
pub use openai::{OpenAiClient, OpenAiOptions};
pub use template::ChatTemplate;

/// One turn of a conversation, as OpenAI's API spells it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system".into(),
            content: content.into(),
        }
    }
}

/// How to decode. `temperature: 0` is greedy; `seed` makes sampling reproducible.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationParams {
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    /// Generation ends before the first occurrence of any of these strings.
    pub stop: Vec<String>,
    /// Generation ends with the line that holds the first of these markers ([`marked_line_end`]:
    /// a final answer's line, when nothing after it is read). Local models stop decoding there;
    /// other clients leave the cut to the caller.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub end_line_after: Vec<String>,
    /// Spans between two markers may only copy a passage of a source text ([`constrain`];
    /// local models only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_spans: Option<constrain::CopySpans>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
            end_line_after: Vec::new(),
            copy_spans: None,
        }
    }
}

/// Where the line holding the first of `markers` in `text` ends (the newline's offset), once a
/// non-blank character has followed the marker and the line is complete; blank space right after
/// the marker (the answer on the next line) does not end it.
pub fn marked_line_end<S: AsRef<str>>(text: &str, markers: &[S]) -> Option<usize> {
    let at = markers
        .iter()
        .map(AsRef::as_ref)
        .filter(|m| !m.is_empty())
        .filter_map(|m| text.find(m).map(|i| i + m.len()))
        .min()?;
    let rest = &text[at..];
    let body = rest.len() - rest.trim_start().len();
    rest[body..].find('\n').map(|e| at + body + e)
}

impl GenerationParams {
    pub fn validate(&self) -> Result<()> {
        if self.max_tokens == 0 {
            bail!("max_tokens must be at least 1");
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            bail!("temperature must be ≥ 0, got {}", self.temperature);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("top_p must be in (0, 1], got {}", self.top_p);
        }
        Ok(())
    }
}

/// A conversation to answer and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub params: GenerationParams,
}

impl ChatRequest {
    pub fn new(messages: Vec<Message>, params: GenerationParams) -> Self {
        Self { messages, params }
    }
}

/// Why generation ended: a stop string or end-of-turn token (`stop`), or `max_tokens` (`length`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
}

/// A model's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// What a query engine adds to its answer (`serve --pipeline`): the quotes, whether each is
    /// verified, and the documents read; sent as the response's `rag` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rag: Option<serde_json::Value>,
}

/// Anything that answers conversations. Many requests go in at once (a local model decodes them
/// together, a server client sends them concurrently); each answer succeeds or fails on its own
/// and is handed to `on_answer` as soon as it exists, so a caller can persist it before the rest
/// arrive (the response cache does).
pub trait ChatModel: Send + Sync {
    /// The model's name as servers and caches know it.
    fn name(&self) -> &str;

    fn chat_each(
        &self,
        requests: &[ChatRequest],
        on_answer: &OnAnswer<'_>,
    ) -> Vec<Result<Completion>>;

    fn chat_batch(&self, requests: &[ChatRequest]) -> Vec<Result<Completion>> {
        self.chat_each(requests, &|_, _| {})
    }

    fn chat(&self, request: &ChatRequest) -> Result<Completion> {
        self.chat_batch(std::slice::from_ref(request))
            .pop()
            .expect("one answer per request")
    }
}

/// Called with a request's index and its answer as soon as that answer exists.
pub type OnAnswer<'a> = dyn Fn(usize, &Result<Completion>) + Sync + 'a;

/// Opens a model from a spec: `local:<model>` (see [`LocalLlm::load`]) or `openai:<model>`
/// (served at `openai.base_url`). With a `cache_dir`, answers are kept on disk and a rerun repeats
/// no request already answered.
pub fn open_chat_model(
    spec: &str,
    local: &LocalOptions,
    openai: &OpenAiOptions,
    cache_dir: Option<&std::path::Path>,
) -> Result<Arc<dyn ChatModel>> {
    let model: Arc<dyn ChatModel> = if let Some(id) = spec.strip_prefix("local:") {
        Arc::new(LocalLlm::load(id, local)?)
    } else if let Some(name) = spec.strip_prefix("openai:") {
        Arc::new(OpenAiClient::new(name, openai)?)
    } else {
        bail!("model spec `{spec}`: expected `local:<model>` or `openai:<model>`")
    };
    Ok(match cache_dir {
        Some(dir) => Arc::new(CachedChat::open(model, dir)?),
        None => model,
    })
}

#[cfg(test)]
mod tests {
    use super::marked_line_end;

    #[test]
    fn the_marked_line_ends_at_its_newline() {
        let m = ["##Answer:", "<ANSWER>:"];
        let text = "Reason.\n##Answer: yes\nmore ##Answer: no\n";
        assert_eq!(marked_line_end(text, &m), Some(21));
        assert_eq!(&text[..21], "Reason.\n##Answer: yes");
        // The answer on the next line: blank space after the marker does not end it.
        let next = "##Answer:\n  no\nrest";
        assert_eq!(marked_line_end(next, &m), Some(14));
        // The first marker in the text wins, whichever it is; an open line is not ended.
        assert_eq!(
            marked_line_end("a <ANSWER>: b\n##Answer: c\n", &m),
            Some(13)
        );
        assert_eq!(marked_line_end("##Answer: still going", &m), None);
        assert_eq!(marked_line_end("##Answer:\n\n", &m), None);
        assert_eq!(marked_line_end("no marker\n", &m), None);
        assert_eq!(marked_line_end("empty markers\n", &[""]), None);
    }
}

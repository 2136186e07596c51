//! Supervised fine-tuning data: chat `messages`, `prompt` / `completion`, or plain `text` rows
//! tokenized once, with a label mask that says which tokens the loss trains.
//!
//! - `messages` (a list of `{role, content}`): rendered with the model's own chat template; the
//!   assistant turns are the labels. Templates such as SmolLM2's have no generation markers, so
//!   each assistant turn's span is found by rendering the conversation up to it (with the
//!   generation prompt: where the answer starts) and up to its end (where it stops, end-of-turn
//!   token included, trailing whitespace not).
//! - `prompt` + `completion` strings: tokenized together, then the end-of-sequence token; the
//!   completion's tokens and that token are the labels (TRL's non-conversational
//!   prompt-completion). Message lists in both fields are a conversation whose completion turns
//!   are the labels.
//! - `text`: every token, then end-of-sequence, is a label (language modelling).
//!
//! With `completion_only: false` every token is a label. Rows longer than `max_length` keep
//! their start; rows left with no label are dropped and counted. With `packing`, consecutive
//! examples share a row (each attending only within itself).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::llm::{LocalLlm, Message};
use crate::train::sampler::SampleRows;

/// How examples become token rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftOptions {
    /// Tokens per example (and per packed row); longer examples keep their start.
    pub max_length: usize,
    /// Train on the answer tokens only (assistant turns, completions); false trains on all.
    pub completion_only: bool,
    /// Put several short examples into one row of up to `max_length` tokens.
    pub packing: bool,
}

impl Default for SftOptions {
    fn default() -> Self {
        Self {
            max_length: 1024,
            completion_only: true,
            packing: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SftFormat {
    Messages,
    PromptCompletion,
    Text,
}

/// One tokenized example.
#[derive(Clone, Debug, PartialEq)]
pub struct SftExample {
    pub ids: Vec<u32>,
    /// `labels[t]`: token `t` is trained (predicted from the tokens before it).
    pub labels: Vec<bool>,
    /// The example as text (the rendered conversation), for cards and inspection.
    pub text: String,
}

impl SftExample {
    pub fn label_count(&self) -> usize {
        self.labels.iter().skip(1).filter(|&&l| l).count()
    }
}

/// Tokenized examples and the rows the trainer samples (one example each, or several packed).
#[derive(Clone, Debug)]
pub struct SftSet {
    pub format: SftFormat,
    pub examples: Vec<SftExample>,
    /// Examples of each training row.
    pub rows: Vec<Vec<usize>>,
    pub options: SftOptions,
    /// Examples cut at `max_length`, and examples dropped for having no label left.
    pub truncated: usize,
    pub dropped: usize,
    /// Kept examples whose answer lost its end (where a final answer sits) to `max_length`.
    pub answers_cut: usize,
    /// Where the data came from (file name, or "frame").
    pub origin: String,
}

impl SampleRows for SftSet {
    fn rows(&self) -> usize {
        self.rows.len()
    }

    fn row_texts(&self, row: usize) -> Vec<&str> {
        self.rows[row]
            .iter()
            .map(|&e| self.examples[e].text.as_str())
            .collect()
    }
}

impl SftSet {
    /// Reads a JSONL file (errors name the line), or any table `read_table` knows.
    pub fn from_path(path: &Path, llm: &LocalLlm, options: &SftOptions) -> Result<Self> {
        let records = if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("jsonl") | Some("json")
        ) {
            crate::data::jsonl::read_objects(path)?
        } else {
            let df = crate::data::read_table(path)?;
            frame_records(&df)?
        };
        Self::from_records(records, llm, options, &path.display().to_string())
    }

    /// From a DataFrame whose columns are `messages`, `prompt` + `completion`, or `text`.
    pub fn from_frame(
        df: &polars::prelude::DataFrame,
        llm: &LocalLlm,
        options: &SftOptions,
    ) -> Result<Self> {
        Self::from_records(frame_records(df)?, llm, options, "frame")
    }

    /// From JSON objects with their line numbers (for errors).
    pub fn from_records(
        records: Vec<(usize, Map<String, Value>)>,
        llm: &LocalLlm,
        options: &SftOptions,
        origin: &str,
    ) -> Result<Self> {
        if options.max_length < 2 {
            bail!("max_length must be at least 2 tokens");
        }
        let context = llm.config().max_positions;
        let mut options = options.clone();
        if options.max_length > context {
            eprintln!(
                "note: max_length {} exceeds the model's context of {context} tokens; using {context}",
                options.max_length
            );
            options.max_length = context;
        }
        let options = &options;
        let Some((_, first)) = records.first() else {
            bail!("{origin}: no examples");
        };
        let format = if first.contains_key("messages") {
            SftFormat::Messages
        } else if first.contains_key("prompt") && first.contains_key("completion") {
            SftFormat::PromptCompletion
        } else if first.contains_key("text") {
            SftFormat::Text
        } else {
            let keys: Vec<&str> = first.keys().map(String::as_str).collect();
            bail!(
                "{origin}: expected a `messages` column, `prompt` and `completion`, or `text`; found {}",
                keys.join(", ")
            );
        };
        let tok = Tokenizing { llm };
        let (mut examples, mut truncated, mut dropped, mut answers_cut) = (vec![], 0, 0, 0);
        for (line, rec) in &records {
            let at = || format!("{origin}:{line}");
            let mut ex = match format {
                SftFormat::Messages => tok.conversation(&messages(rec, "messages", &at)?, &[]),
                SftFormat::PromptCompletion => match (rec.get("prompt"), rec.get("completion")) {
                    (Some(Value::Array(_)), _) | (_, Some(Value::Array(_))) => {
                        let prompt = messages(rec, "prompt", &at)?;
                        let completion = messages(rec, "completion", &at)?;
                        tok.conversation(&[prompt.clone(), completion].concat(), &prompt)
                    }
                    _ => tok.plain(
                        &string(rec, "prompt", &at)?,
                        &string(rec, "completion", &at)?,
                    ),
                },
                SftFormat::Text => tok.plain("", &string(rec, "text", &at)?),
            }
            .with_context(at)?;
            if !options.completion_only {
                ex.labels.iter_mut().for_each(|l| *l = true);
            }
            let mut cut = false;
            if ex.ids.len() > options.max_length {
                cut = ex.labels[options.max_length..].iter().any(|&l| l);
                ex.ids.truncate(options.max_length);
                ex.labels.truncate(options.max_length);
                truncated += 1;
            }
            if ex.label_count() == 0 {
                dropped += 1;
                continue;
            }
            answers_cut += cut as usize;
            examples.push(ex);
        }
        if examples.is_empty() {
            bail!("{origin}: no example has a token to train on (all {dropped} were cut to nothing by max_length {})", options.max_length);
        }
        if dropped > 0 {
            eprintln!(
                "note: {origin}: {dropped} of {} examples had no answer token within max_length {} and were left out",
                records.len(),
                options.max_length
            );
        }
        if answers_cut > 0 {
            // A final answer sits at the end: these rows train on the reasoning without it.
            eprintln!(
                "note: {origin}: {} of {} examples lost the end of their answer to max_length {}; raise it to train on their final answers",
                answers_cut,
                records.len(),
                options.max_length
            );
        }
        let rows = if options.packing {
            pack(&examples, options.max_length)
        } else {
            (0..examples.len()).map(|e| vec![e]).collect()
        };
        Ok(Self {
            format,
            examples,
            rows,
            options: options.clone(),
            truncated,
            dropped,
            answers_cut,
            origin: origin.to_string(),
        })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Tokens the loss is computed on, over the whole set.
    pub fn label_tokens(&self) -> usize {
        self.examples.iter().map(SftExample::label_count).sum()
    }

    /// One table row per example: its text, token and label counts.
    pub fn to_frame(&self) -> Result<polars::prelude::DataFrame> {
        use polars::prelude::*;
        let text: Vec<&str> = self.examples.iter().map(|e| e.text.as_str()).collect();
        let tokens: Vec<u32> = self.examples.iter().map(|e| e.ids.len() as u32).collect();
        let labels: Vec<u32> = self
            .examples
            .iter()
            .map(|e| e.label_count() as u32)
            .collect();
        Ok(DataFrame::new(
            self.examples.len(),
            vec![
                Column::new("text".into(), text),
                Column::new("tokens".into(), tokens),
                Column::new("label_tokens".into(), labels),
            ],
        )?)
    }
}

/// First fit in order: each example goes into the first row it fits in.
fn pack(examples: &[SftExample], max_length: usize) -> Vec<Vec<usize>> {
    let mut rows: Vec<(usize, Vec<usize>)> = vec![];
    for (e, ex) in examples.iter().enumerate() {
        let len = ex.ids.len();
        match rows.iter_mut().find(|(used, _)| used + len <= max_length) {
            Some((used, members)) => {
                *used += len;
                members.push(e);
            }
            None => rows.push((len, vec![e])),
        }
    }
    rows.into_iter().map(|(_, m)| m).collect()
}

struct Tokenizing<'a> {
    llm: &'a LocalLlm,
}

impl Tokenizing<'_> {
    fn encode(&self, text: &str) -> Result<tokenizers::Encoding> {
        self.llm
            .tokenizer()
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))
    }

    /// `prompt + completion` tokenized as one text (as TRL does), then end-of-sequence; the
    /// tokens from the completion's first character on, and EOS, are labels.
    fn plain(&self, prompt: &str, completion: &str) -> Result<SftExample> {
        let text = format!("{prompt}{completion}");
        let enc = self.encode(&text)?;
        let mut ids = enc.get_ids().to_vec();
        let mut labels: Vec<bool> = enc
            .get_offsets()
            .iter()
            .map(|&(_, end)| end > prompt.len())
            .collect();
        if let Some(eos) = self.llm.eos_token() {
            ids.push(eos);
            labels.push(true);
        }
        Ok(SftExample { ids, labels, text })
    }

    /// A conversation through the chat template; assistant turns after the first
    /// `prompt.len()` messages are labels.
    fn conversation(&self, messages: &[Message], prompt: &[Message]) -> Result<SftExample> {
        let Some(template) = self.llm.template() else {
            bail!(
                "model `{}` has no chat template, so `messages` cannot be rendered; use prompt/completion or text rows",
                self.llm.name()
            );
        };
        if !messages.iter().any(|m| m.role == "assistant") {
            bail!("the conversation has no assistant turn to train on");
        }
        let full = template.render_with(messages, false)?;
        let mut spans = vec![];
        for (i, m) in messages.iter().enumerate().skip(prompt.len()) {
            if m.role != "assistant" {
                continue;
            }
            let before = template.render_with(&messages[..i], true)?;
            let through = template.render_with(&messages[..=i], false)?;
            if !full.starts_with(&before) || !full.starts_with(&through) {
                bail!(
                    "the chat template renders the conversation up to message {i} differently from the whole; \
                     cannot find the assistant's tokens"
                );
            }
            spans.push((before.len(), through.trim_end().len()));
        }
        let enc = self.encode(&full)?;
        let labels = enc
            .get_offsets()
            .iter()
            .map(|&(start, end)| {
                spans
                    .iter()
                    .any(|&(a, b)| start >= a && start < b || (start < a && end > a))
            })
            .collect();
        Ok(SftExample {
            ids: enc.get_ids().to_vec(),
            labels,
            text: full,
        })
    }
}

fn string(rec: &Map<String, Value>, field: &str, at: &dyn Fn() -> String) -> Result<String> {
    match rec.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => bail!(
            "{}: field `{field}` must be a string, found {}",
            at(),
            crate::data::jsonl::json_kind(other)
        ),
        None => bail!("{}: missing field `{field}`", at()),
    }
}

/// A list of `{role, content}` (or its JSON text, as a table may store it).
fn messages(
    rec: &Map<String, Value>,
    field: &str,
    at: &dyn Fn() -> String,
) -> Result<Vec<Message>> {
    let value = match rec.get(field) {
        Some(Value::String(s)) => serde_json::from_str(s).with_context(|| {
            format!(
                "{}: field `{field}` is text that is not a JSON list of messages",
                at()
            )
        })?,
        Some(v) => v.clone(),
        None => bail!("{}: missing field `{field}`", at()),
    };
    let Value::Array(items) = value else {
        bail!(
            "{}: field `{field}` must be a list of {{role, content}} messages",
            at()
        );
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m.get("role").and_then(Value::as_str);
            let content = m.get("content").and_then(Value::as_str);
            match (role, content) {
                (Some(r), Some(c)) => Ok(Message {
                    role: r.to_string(),
                    content: c.to_string(),
                }),
                _ => bail!("{}: `{field}`[{i}] needs string `role` and `content`", at()),
            }
        })
        .collect()
}

/// A frame's rows as JSON objects (numbered from 1), via Polars' JSON writer so that list and
/// struct columns arrive as JSON lists and objects.
fn frame_records(df: &polars::prelude::DataFrame) -> Result<Vec<(usize, Map<String, Value>)>> {
    use polars::prelude::*;
    let mut buf = Vec::new();
    JsonWriter::new(&mut buf)
        .with_json_format(JsonFormat::JsonLines)
        .finish(&mut df.clone())?;
    String::from_utf8(buf)?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| match serde_json::from_str(l)? {
            Value::Object(m) => Ok((i + 1, m)),
            _ => bail!("row {}: not an object", i + 1),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(n: usize) -> SftExample {
        SftExample {
            ids: vec![1; n],
            labels: vec![true; n],
            text: String::new(),
        }
    }

    #[test]
    fn packing_fills_rows_first_fit_in_order() {
        let rows = pack(&[ex(6), ex(5), ex(3), ex(4), ex(1)], 10);
        assert_eq!(rows, vec![vec![0, 2, 4], vec![1, 3]]);
    }

    #[test]
    fn the_first_token_is_never_a_label() {
        // Nothing precedes it, so it cannot be predicted.
        let e = SftExample {
            ids: vec![1, 2, 3],
            labels: vec![true, false, true],
            text: String::new(),
        };
        assert_eq!(e.label_count(), 1);
    }
}

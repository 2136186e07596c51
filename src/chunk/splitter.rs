//! Token-bounded chunks on sentence boundaries, in the manner of LlamaIndex's SentenceSplitter:
//! sentences are packed into a chunk while its token count stays within `chunk_size`; the next
//! chunk starts with the previous chunk's last sentences, up to `chunk_overlap` tokens. A sentence
//! longer than a chunk is cut between words. Chunks are spans of the original text.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::sentences::sentence_spans;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkOptions {
    /// Most tokens in a chunk (of `tokenizer`).
    pub chunk_size: usize,
    /// Tokens of the previous chunk repeated at the start of the next.
    pub chunk_overlap: usize,
    /// Whose tokens are counted: a model folder or hub id with a `tokenizer.json`. Use the
    /// encoder you will train, so chunks fit its `max_seq_length`.
    pub tokenizer: String,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self {
            chunk_size: 256,
            chunk_overlap: 32,
            tokenizer: "sentence-transformers/all-MiniLM-L6-v2".into(),
        }
    }
}

/// One chunk of a text.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub text: String,
    pub tokens: usize,
}

pub struct SentenceSplitter {
    tokenizer: Tokenizer,
    chunk_size: usize,
    chunk_overlap: usize,
}

/// A piece no longer than a chunk: a sentence or part of one.
#[derive(Clone, Copy)]
struct Piece {
    start: usize,
    end: usize,
    tokens: usize,
}

impl SentenceSplitter {
    /// Loads the tokenizer named in `options`.
    pub fn new(options: &ChunkOptions) -> Result<Self> {
        let path =
            crate::models::hub::ModelSource::parse(&options.tokenizer)?.file("tokenizer.json")?;
        let tokenizer =
            Tokenizer::from_file(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Self::with_tokenizer(tokenizer, options.chunk_size, options.chunk_overlap)
    }

    pub fn with_tokenizer(
        mut tokenizer: Tokenizer,
        chunk_size: usize,
        chunk_overlap: usize,
    ) -> Result<Self> {
        if chunk_size == 0 {
            bail!("chunk_size must be at least 1");
        }
        if chunk_overlap >= chunk_size {
            bail!("chunk_overlap ({chunk_overlap}) must be smaller than chunk_size ({chunk_size})");
        }
        // Count every token of a piece: no truncation, no padding.
        tokenizer
            .with_truncation(None)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        tokenizer.with_padding(None);
        Ok(Self {
            tokenizer,
            chunk_size,
            chunk_overlap,
        })
    }

    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?
            .len())
    }

    pub fn split(&self, text: &str) -> Result<Vec<Chunk>> {
        let mut chunks = Vec::new();
        let mut current: Vec<Piece> = Vec::new();
        // Token counts are of the exact span: with byte-level BPE a sentence's tokens change
        // with the space before it, so summing pieces could overshoot the budget.
        let span_tokens = |pieces: &[Piece], next: &Piece| -> Result<usize> {
            let start = pieces.first().unwrap_or(next).start;
            self.count_tokens(&text[start..next.end])
        };
        for piece in self.pieces(text)? {
            if !current.is_empty() && span_tokens(&current, &piece)? > self.chunk_size {
                chunks.push(self.emit(text, &current)?);
                // Carry the last pieces, up to chunk_overlap tokens, into the next chunk, and
                // drop carried pieces until the new one fits.
                let mut carried = Vec::new();
                let mut carried_tokens = 0;
                for p in current.iter().rev() {
                    if carried_tokens + p.tokens > self.chunk_overlap {
                        break;
                    }
                    carried_tokens += p.tokens;
                    carried.push(*p);
                }
                carried.reverse();
                while !carried.is_empty() && span_tokens(&carried, &piece)? > self.chunk_size {
                    carried.remove(0);
                }
                current = carried;
            }
            current.push(piece);
        }
        if !current.is_empty() {
            chunks.push(self.emit(text, &current)?);
        }
        Ok(chunks)
    }

    fn emit(&self, text: &str, pieces: &[Piece]) -> Result<Chunk> {
        let span = &text[pieces[0].start..pieces[pieces.len() - 1].end];
        Ok(Chunk {
            text: span.to_string(),
            tokens: self.count_tokens(span)?,
        })
    }

    /// Sentences, with those longer than a chunk cut between words.
    fn pieces(&self, text: &str) -> Result<Vec<Piece>> {
        let mut pieces = Vec::new();
        for (start, end) in sentence_spans(text) {
            let tokens = self.count_tokens(&text[start..end])?;
            if tokens <= self.chunk_size {
                pieces.push(Piece { start, end, tokens });
                continue;
            }
            // Greedy on words, each counted once: extend while the piece fits.
            let mut words = word_spans(&text[start..end]).into_iter().peekable();
            while let Some((ws, we)) = words.next() {
                let mut piece = Piece {
                    start: start + ws,
                    end: start + we,
                    tokens: self.count_tokens(&text[start + ws..start + we])?,
                };
                // A single word longer than a chunk stays whole rather than being lost.
                while let Some(&(ns, ne)) = words.peek() {
                    let t = self.count_tokens(&text[start + ns..start + ne])?;
                    if piece.tokens + t > self.chunk_size {
                        break;
                    }
                    piece.end = start + ne;
                    piece.tokens += t;
                    words.next();
                }
                pieces.push(piece);
            }
        }
        Ok(pieces)
    }
}

fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}

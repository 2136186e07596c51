//! Round-trip (consistency) filtering, as in Promptagator (Dai et al., 2022): a synthetic query
//! is kept only if a retriever finds its own chunk among the top k of all chunks. Queries too
//! vague or off-topic for their passage are dropped.

use std::collections::HashMap;

use anyhow::{bail, Result};
use serde::Serialize;

use super::{ChunkText, SynthOutcome, SyntheticPair};
use crate::eval::search::{top_k, SearchOptions};
use crate::models::{EncodeOptions, SentenceEncoder};

#[derive(Clone, Copy, Debug, Serialize)]
pub struct RoundTripStats {
    pub kept: usize,
    pub dropped: usize,
    pub top_k: usize,
}

pub fn round_trip_filter(
    pairs: &[SyntheticPair],
    chunks: &[ChunkText],
    encoder: &SentenceEncoder,
    top_k_cut: usize,
    encode: &EncodeOptions,
) -> Result<(Vec<SyntheticPair>, RoundTripStats)> {
    if top_k_cut == 0 {
        bail!("round-trip top_k must be at least 1");
    }
    if pairs.is_empty() {
        return Ok((
            Vec::new(),
            RoundTripStats {
                kept: 0,
                dropped: 0,
                top_k: top_k_cut,
            },
        ));
    }
    let row: HashMap<&str, usize> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| (c.chunk_id.as_str(), i))
        .collect();
    let docs = encoder.encode(
        &chunks.iter().map(|c| c.text.as_str()).collect::<Vec<_>>(),
        encode,
    )?;
    let queries = encoder.encode(
        &pairs.iter().map(|p| p.query.as_str()).collect::<Vec<_>>(),
        encode,
    )?;
    let hits = top_k(&queries, &docs, top_k_cut, SearchOptions::default())?;
    let mut kept = Vec::new();
    for (pair, hits) in pairs.iter().zip(hits) {
        let Some(&own) = row.get(pair.chunk_id.as_str()) else {
            bail!("pair's chunk `{}` is not among the chunks", pair.chunk_id);
        };
        if hits.iter().any(|h| h.doc == own) {
            kept.push(pair.clone());
        }
    }
    let stats = RoundTripStats {
        kept: kept.len(),
        dropped: pairs.len() - kept.len(),
        top_k: top_k_cut,
    };
    Ok((kept, stats))
}

impl SynthOutcome {
    /// The outcome keeping only the pairs that pass [`round_trip_filter`], its description
    /// saying so: what every door (CLI, scripts) shows after filtering.
    pub fn round_trip(
        &self,
        chunks: &[ChunkText],
        encoder: &SentenceEncoder,
        top_k_cut: usize,
        encode: &EncodeOptions,
    ) -> Result<(SynthOutcome, RoundTripStats)> {
        let (kept, stats) = round_trip_filter(&self.pairs, chunks, encoder, top_k_cut, encode)?;
        let mut outcome = self.clone();
        outcome.pairs = kept;
        outcome.generator = format!(
            "{} (round-trip top {}: {} dropped)",
            outcome.generator, stats.top_k, stats.dropped
        );
        Ok((outcome, stats))
    }
}

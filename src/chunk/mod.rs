//! Documents in, chunks out: a folder of `.txt`, `.md`, `.html`, `.json`/`.jsonl` and `.pdf`
//! files becomes [`Document`]s ([`documents`]), each cut into token-bounded chunks on sentence
//! boundaries ([`splitter`]), gathered in a DataFrame with stable ids, and split into train and
//! validation sets by document.

pub mod documents;
mod html;
mod pdf;
pub mod sentences;
pub mod splitter;

use std::collections::HashSet;

use anyhow::{bail, Result};
use polars::prelude::*;

pub use documents::{
    documents_frame, documents_from_frame, load_documents, Document, LoadDocumentsOptions,
};
pub use splitter::{ChunkOptions, SentenceSplitter};

use crate::fingerprint::Fingerprint;
use crate::rng::Rng;

/// Every document's chunks, in document order: `chunk_id` (`<doc_id>#<index>-<digest of text>`,
/// the same for the same input and settings on every run), `doc_id`, `chunk_index`, `text`,
/// `tokens`, `source`, `title`.
pub fn chunk_documents(docs: &[Document], splitter: &SentenceSplitter) -> Result<DataFrame> {
    if docs.is_empty() {
        bail!("no documents to chunk");
    }
    let mut cols: [Vec<String>; 5] = Default::default();
    let (mut index, mut tokens) = (Vec::new(), Vec::new());
    let progress = crate::progress::Progress::new(docs.len() as u64, "chunking", docs.len() > 200);
    for doc in docs {
        for (i, chunk) in splitter.split(&doc.text)?.into_iter().enumerate() {
            let mut digest = Fingerprint::default();
            digest.text(&chunk.text);
            cols[0].push(format!("{}#{i}-{}", doc.doc_id, &digest.hex()[..8]));
            cols[1].push(doc.doc_id.clone());
            cols[2].push(chunk.text);
            cols[3].push(doc.source.clone());
            cols[4].push(doc.title.clone());
            index.push(i as u32);
            tokens.push(chunk.tokens as u32);
        }
        progress.inc(1);
    }
    progress.finish();
    let [ids, doc_ids, texts, sources, titles] = cols;
    Ok(DataFrame::new(
        ids.len(),
        vec![
            Column::new("chunk_id".into(), ids),
            Column::new("doc_id".into(), doc_ids),
            Column::new("chunk_index".into(), index),
            Column::new("text".into(), texts),
            Column::new("tokens".into(), tokens),
            Column::new("source".into(), sources),
            Column::new("title".into(), titles),
        ],
    )?)
}

/// Splits a frame with a `doc_id` column into (train, validation) so that no document has rows
/// on both sides: `val_fraction` of the documents, chosen with `seed`, go to validation.
pub fn split_by_document(
    frame: &DataFrame,
    val_fraction: f64,
    seed: u64,
) -> Result<(DataFrame, DataFrame)> {
    if !(0.0..1.0).contains(&val_fraction) {
        bail!("val_fraction must be in [0, 1), got {val_fraction}");
    }
    crate::data::require_columns(frame, &["doc_id"], "chunk frame")?;
    let doc_ids = crate::data::table::str_column(frame, "doc_id")?;
    let mut unique: Vec<&String> = doc_ids.iter().collect::<HashSet<_>>().into_iter().collect();
    unique.sort();
    Rng::new(seed).shuffle(&mut unique);
    let n_val = (unique.len() as f64 * val_fraction).round() as usize;
    let val: HashSet<&String> = unique.into_iter().take(n_val).collect();
    let mask: BooleanChunked = doc_ids.iter().map(|d| val.contains(d)).collect();
    Ok((frame.filter(&!&mask)?, frame.filter(&mask)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_documents_whole_and_is_seeded() {
        let doc_id: Vec<String> = (0..40).map(|i| format!("d{}", i / 4)).collect();
        let frame = DataFrame::new(
            40,
            vec![
                Column::new("doc_id".into(), doc_id),
                Column::new("n".into(), (0..40u32).collect::<Vec<_>>()),
            ],
        )
        .unwrap();
        let (train, val) = split_by_document(&frame, 0.2, 7).unwrap();
        assert_eq!(train.height() + val.height(), 40);
        assert_eq!(val.height(), 8, "2 of 10 documents, 4 rows each");
        let t: HashSet<String> = crate::data::table::str_column(&train, "doc_id")
            .unwrap()
            .into_iter()
            .collect();
        let v: HashSet<String> = crate::data::table::str_column(&val, "doc_id")
            .unwrap()
            .into_iter()
            .collect();
        assert!(t.is_disjoint(&v));
        let (_, again) = split_by_document(&frame, 0.2, 7).unwrap();
        assert!(val.equals(&again));
        let (_, other) = split_by_document(&frame, 0.2, 8).unwrap();
        assert!(!val.equals(&other));
    }
}

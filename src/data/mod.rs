//! Data in and out: every dataset a user may inspect is a Polars DataFrame with documented
//! column names. This stage reads and writes; it does not encode, mine or train.

pub mod beir;
pub mod embeddings;
pub mod jsonl;
pub mod llamaindex;
pub mod retrieval;
pub mod table;

pub use beir::{load_beir, load_beir_corpus, write_beir};
pub use llamaindex::{load_llamaindex, write_llamaindex};
pub use retrieval::{document_text, Qrels, RetrievalDataset};
pub use table::{read_table, require_columns, write_table};

use std::path::Path;

use anyhow::{bail, Result};

/// The texts of a document collection: a BEIR folder (`title + " " + text` of `corpus.jsonl`),
/// or a table file with a `text` column (and, if present, a `title` column joined the same way).
pub fn load_corpus_texts(path: &Path) -> Result<Vec<String>> {
    let texts = if path.is_dir() {
        load_beir_corpus(path)?
            .into_iter()
            .map(|d| document_text(&d.title, &d.body))
            .collect()
    } else {
        let df = read_table(path)?;
        require_columns(&df, &["text"], &path.display().to_string())?;
        let body = table::str_column(&df, "text")?;
        match df.column("title") {
            Ok(_) => table::str_column(&df, "title")?
                .iter()
                .zip(&body)
                .map(|(t, b)| document_text(t, b))
                .collect(),
            Err(_) => body,
        }
    };
    if texts.is_empty() {
        bail!("{}: the corpus is empty", path.display());
    }
    Ok(texts)
}

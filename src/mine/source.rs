//! Where mined data came from, written beside it as `<output>.source.json`: the retriever that
//! ranked the candidates and the (query, positive) pairs it mined for. A trainer reading the data
//! later finds there the queries to hold out and the retriever to fuse with, so `train rerank`
//! needs nothing but a model, the data and an output folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::MineOptions;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinedFrom {
    /// The embedding model that ranked the candidates (an absolute path when local).
    pub model: String,
    /// The (query, positive) pairs: a BEIR folder (with `beir_split`) or a table.
    pub data: PathBuf,
    pub beir_split: Option<String>,
    /// The candidate documents, when not the positives or the BEIR folder's own corpus.
    pub corpus: Option<PathBuf>,
    /// Rows written, to tell this record from one left beside data written over since.
    pub rows: usize,
    pub options: MineOptions,
    pub version: String,
}

/// `path` made absolute where it exists (a hub id stays as given).
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

impl MinedFrom {
    pub fn new(
        model: &str,
        data: &Path,
        beir_split: Option<&str>,
        corpus: Option<&Path>,
        rows: usize,
        options: &MineOptions,
    ) -> Self {
        let data = absolute(data);
        // A corpus that is the BEIR folder itself is its own corpus.
        let corpus = corpus.map(absolute).filter(|c| *c != data);
        Self {
            model: absolute(Path::new(model)).display().to_string(),
            data,
            beir_split: beir_split.map(String::from),
            corpus,
            rows,
            options: MineOptions {
                // Where the retriever's embeddings are kept: `train rerank` retrieves its
                // held-out queries from the same corpus with the same model.
                cache_dir: options.cache_dir.as_deref().map(absolute),
                progress: false,
                ..options.clone()
            },
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// The record's path beside `data`.
    pub fn path_for(data: &Path) -> PathBuf {
        let mut name = data.file_name().unwrap_or_default().to_os_string();
        name.push(".source.json");
        data.with_file_name(name)
    }

    pub fn write(&self, data: &Path) -> Result<()> {
        let path = Self::path_for(data);
        std::fs::write(&path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The record beside `data`, if there is one; `rows` is how many rows `data` holds now, and a
    /// record of another count (the data was written over since) is not returned.
    pub fn read(data: &Path, rows: usize) -> Result<Option<Self>> {
        let path = Self::path_for(data);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        let record: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a record of mined data", path.display()))?;
        Ok((record.rows == rows).then_some(record))
    }

    /// The BEIR folder and split whose queries were mined against that folder's own corpus: the
    /// queries a trainer can hold out and retrieve for again.
    pub fn beir_queries(&self) -> Option<(&Path, &str)> {
        match (&self.beir_split, &self.corpus) {
            (Some(split), None) if self.data.is_dir() => Some((&self.data, split)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_sits_beside_the_data_and_knows_its_queries() {
        let dir = tempfile::tempdir().unwrap();
        let beir = dir.path().join("beir");
        std::fs::create_dir(&beir).unwrap();
        let data = dir.path().join("tuples.jsonl");
        assert_eq!(
            MinedFrom::path_for(&data),
            dir.path().join("tuples.jsonl.source.json")
        );
        let options = MineOptions::default();
        let from = MinedFrom::new("org/model", &beir, Some("train"), Some(&beir), 7, &options);
        assert_eq!(from.model, "org/model", "a hub id stays as given");
        assert_eq!(from.corpus, None, "the folder's own corpus");
        from.write(&data).unwrap();
        let back = MinedFrom::read(&data, 7).unwrap().unwrap();
        assert_eq!(back, from);
        let (folder, split) = back.beir_queries().unwrap();
        assert_eq!(
            (folder, split),
            (std::fs::canonicalize(&beir).unwrap().as_path(), "train")
        );

        // Written over since (another row count): not this data's record.
        assert_eq!(MinedFrom::read(&data, 8).unwrap(), None);
        // Pairs from a table, or candidates from another corpus: no queries to retrieve for.
        let table = MinedFrom::new("m", &data, None, None, 7, &options);
        assert!(table.beir_queries().is_none());
        let other = MinedFrom::new("m", &beir, Some("train"), Some(&data), 7, &options);
        assert!(other.beir_queries().is_none());
        // A damaged record is named.
        std::fs::write(MinedFrom::path_for(&data), "{").unwrap();
        let err = format!("{:#}", MinedFrom::read(&data, 7).unwrap_err());
        assert!(err.contains("tuples.jsonl.source.json"), "{err}");
        assert_eq!(
            MinedFrom::read(&dir.path().join("none.jsonl"), 7).unwrap(),
            None
        );
    }
}

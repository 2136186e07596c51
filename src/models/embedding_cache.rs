//! An on-disk cache of embedding matrices, keyed by the model (its name and a digest of its
//! weights, so a folder that was trained again misses) and the exact list of texts. A second
//! mining run or reranking evaluation over the same corpus with the same model reads the matrix
//! instead of encoding.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Tensor};

use super::{EncodeOptions, SentenceEncoder};
use crate::data::embeddings::{read_npy, write_npy};
use crate::fingerprint::Fingerprint;

pub struct EmbeddingCache {
    dir: PathBuf,
    model_key: String,
}

impl EmbeddingCache {
    pub fn new(dir: &Path, encoder: &SentenceEncoder) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            model_key: model_key(encoder)?,
        })
    }

    /// Embeddings of `texts`, from the cache when this model already encoded exactly these texts.
    /// Returns whether it was a hit.
    pub fn encode(
        &self,
        encoder: &SentenceEncoder,
        texts: &[String],
        options: &EncodeOptions,
    ) -> Result<(Tensor, bool)> {
        let mut key = Fingerprint::default();
        key.text(&self.model_key);
        for t in texts {
            key.text(t);
        }
        let path = self.dir.join(format!("{}-{}.npy", key.hex(), texts.len()));
        if path.is_file() {
            if let Ok(t) = read_npy(&path) {
                if t.dims2().is_ok_and(|(n, _)| n == texts.len()) {
                    return Ok((t, true));
                }
            }
        }
        let embeddings = encoder.encode(texts, options)?;
        let tmp = path.with_extension("npy.tmp");
        write_npy(&tmp, &embeddings)?;
        std::fs::rename(&tmp, &path)?;
        Ok((embeddings, false))
    }
}

/// The model's name, max length and a digest of its weights.
pub fn model_key(encoder: &SentenceEncoder) -> Result<String> {
    digest(encoder, Some(encoder.name()))
}

/// Max length and a digest of the weights, whatever the folder is called (a pipeline's index
/// stays valid when the pipeline folder moves).
pub fn weights_key(encoder: &SentenceEncoder) -> Result<String> {
    digest(encoder, None)
}

fn digest(encoder: &SentenceEncoder, name: Option<&str>) -> Result<String> {
    let vars = encoder.varmap.data().lock().expect("varmap lock poisoned");
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut h = Fingerprint::default();
    if let Some(name) = name {
        h.text(name);
    }
    h.write(&encoder.max_seq_length.to_le_bytes());
    for name in names {
        let sum = vars[name]
            .as_tensor()
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_scalar::<f64>()?;
        h.text(name).write(&sum.to_le_bytes());
    }
    Ok(h.hex())
}

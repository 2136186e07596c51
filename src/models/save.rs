//! Writing an encoder back as a sentence-transformers folder that Python's
//! `SentenceTransformer(path)` loads unchanged: `modules.json`, `config_sentence_transformers.json`,
//! `sentence_bert_config.json`, `1_Pooling/config.json`, `2_Normalize/` (when normalising),
//! `config.json`, `model.safetensors` (every tensor under the checkpoint's own name) and the
//! tokenizer files. Model cards are written by the stage that trained the model.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Tensor;
use serde_json::json;

use super::encoder::SentenceEncoder;
use super::pooling::Pooling;

/// Files copied from the source tokenizer folder when present.
const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
];

impl SentenceEncoder {
    /// Writes the encoder to `dir` (created if needed) in sentence-transformers' layout.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir.join("1_Pooling"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let mut modules = vec![
            json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
            json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
        ];
        if self.normalize {
            std::fs::create_dir_all(dir.join("2_Normalize"))?;
            modules.push(json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
        }
        write_json(&dir.join("modules.json"), &json!(modules))?;
        write_json(
            &dir.join("config_sentence_transformers.json"),
            &json!({
                "__version__": {"ragtune": env!("CARGO_PKG_VERSION")},
                "prompts": {}, "default_prompt_name": null,
                "similarity_fn_name": "cosine", "model_type": "SentenceTransformer"
            }),
        )?;
        write_json(
            &dir.join("sentence_bert_config.json"),
            &json!({"max_seq_length": self.max_seq_length, "do_lower_case": self.do_lower_case}),
        )?;
        let mode = |p: Pooling| self.pooling == p;
        write_json(
            &dir.join("1_Pooling/config.json"),
            &json!({
                "word_embedding_dimension": self.dim(),
                "pooling_mode_cls_token": mode(Pooling::Cls),
                "pooling_mode_mean_tokens": mode(Pooling::Mean),
                "pooling_mode_max_tokens": mode(Pooling::Max),
                "pooling_mode_mean_sqrt_len_tokens": mode(Pooling::MeanSqrtLen),
                "pooling_mode_weightedmean_tokens": false,
                "pooling_mode_lasttoken": false,
                "include_prompt": true
            }),
        )?;
        write_json(&dir.join("config.json"), &self.config_json)?;
        self.save_weights(&dir.join("model.safetensors"))?;
        save_tokenizer(self.tokenizer(), self.tokenizer_dir.as_deref(), dir)
    }

    /// Every variable under its checkpoint name, in a safetensors file marked `format: pt` (the
    /// metadata transformers checks before loading).
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        save_varmap(&self.varmap, path)
    }
}

/// Every variable of `varmap` under its own name (see [`write_safetensors`]).
pub fn save_varmap(varmap: &candle_nn::VarMap, path: &Path) -> Result<()> {
    let tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .expect("varmap lock poisoned")
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect();
    write_safetensors(&tensors, path)
}

/// The tokenizer files of `src` (the folder the model came from) copied into `dir`, or
/// `tokenizer.json` written from `tokenizer` when there is none.
pub fn save_tokenizer(
    tokenizer: &tokenizers::Tokenizer,
    src: Option<&Path>,
    dir: &Path,
) -> Result<()> {
    let mut copied_json = false;
    if let Some(src) = src {
        for name in TOKENIZER_FILES {
            let from = src.join(name);
            if from.is_file() {
                std::fs::copy(&from, dir.join(name))
                    .with_context(|| format!("copying {}", from.display()))?;
                copied_json |= name == "tokenizer.json";
            }
        }
    }
    if !copied_json {
        tokenizer
            .save(dir.join("tokenizer.json"), true)
            .map_err(|e| anyhow::anyhow!("writing tokenizer.json: {e}"))?;
    }
    Ok(())
}

/// Writes tensors to a safetensors file with `{"format": "pt"}` metadata, atomically (a kill
/// mid-write leaves the old file, never a torn one).
pub fn write_safetensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let contiguous: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.contiguous()?)))
        .collect::<Result<_>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::tensor::serialize_to_file(contiguous, Some(metadata), &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

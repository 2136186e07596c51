//! A sentence-transformers bi-encoder on candle: reads a sentence-transformers directory (or a
//! plain BERT checkpoint) and reproduces `SentenceTransformer.encode`.
//!
//! What is read, and from where:
//! - `modules.json`: which of Transformer / Pooling / Normalize the model stacks, and their folders;
//! - `sentence_bert_config.json`: `max_seq_length` (truncation) and `do_lower_case`;
//! - `<pooling folder>/config.json`: the pooling mode;
//! - `config.json`, `model.safetensors`, `tokenizer.json`: the transformer itself.
//!
//! The weights live in a [`VarMap`], so the same encoder is what the trainer fine-tunes.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rayon::prelude::*;
use serde::Deserialize;
use tokenizers::{Encoding, PaddingParams, Tokenizer, TruncationParams, TruncationStrategy};

use super::bert::{BertConfig, BertModel, Mode};
use super::hub::ModelSource;
use super::pooling::{l2_normalize, to_f32, Pooling, PoolingConfig};
use super::weights::{ensure_all_loaded, preload_safetensors};
use crate::progress::Progress;

/// How to load an encoder.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    pub dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: crate::models::device::default_device(),
            dtype: DType::F32,
        }
    }
}

/// How to encode a list of texts. Scripts pass a map with these keys; an unknown key is an error.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncodeOptions {
    /// Texts per forward pass. Texts are sorted by token length first, so a batch pads only to
    /// its own longest text.
    pub batch_size: usize,
    /// Show a progress bar on stderr (hidden automatically when stderr is not a terminal).
    pub progress: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            progress: true,
        }
    }
}

/// Figures from the last [`SentenceEncoder::encode_with_stats`] call.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodeStats {
    pub texts: usize,
    /// Real (non-padding) tokens, special tokens included.
    pub tokens: usize,
    /// Token slots computed, padding included.
    pub padded_tokens: usize,
    pub seconds: f64,
}

#[derive(Debug, Deserialize)]
struct ModuleEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

/// A BERT-family sentence encoder.
pub struct SentenceEncoder {
    name: String,
    pub bert: BertModel,
    /// The trainable weights, named as in the checkpoint.
    pub varmap: VarMap,
    tokenizer: Tokenizer,
    pub max_seq_length: usize,
    pub do_lower_case: bool,
    pub pooling: Pooling,
    pub normalize: bool,
    pad_id: u32,
    /// `config.json` as read (or as built), written back unchanged on save.
    pub config_json: serde_json::Value,
    /// The folder the tokenizer came from: its companion files (`tokenizer_config.json`,
    /// `vocab.txt`, …) are copied on save. `None` for encoders assembled in memory.
    pub tokenizer_dir: Option<std::path::PathBuf>,
}

impl SentenceEncoder {
    /// Loads an encoder from a local directory or hub id (see [`ModelSource::parse`]).
    pub fn load(spec: &str, options: &LoadOptions) -> Result<Self> {
        let source = ModelSource::parse(spec)?;
        Self::load_from(&source, options).with_context(|| format!("loading encoder `{spec}`"))
    }

    pub fn load_from(source: &ModelSource, options: &LoadOptions) -> Result<Self> {
        crate::runtime::flush_denormals();
        let layout = StackLayout::read(source)?;
        let prefix = |name: &str| {
            if layout.transformer_dir.is_empty() {
                name.to_string()
            } else {
                format!("{}/{name}", layout.transformer_dir)
            }
        };
        let config_path = source.file(&prefix("config.json"))?;
        let config_json: serde_json::Value = read_json(&config_path)?;
        let config: BertConfig = serde_json::from_value(config_json.clone())
            .with_context(|| format!("parsing {}", config_path.display()))?;
        config
            .validate()
            .with_context(|| config_path.display().to_string())?;

        let sbert: Option<SentenceBertConfig> = source
            .optional_file(&prefix("sentence_bert_config.json"))?
            .map(|p| read_json(&p))
            .transpose()?;
        let max_seq_length = sbert
            .as_ref()
            .and_then(|c| c.max_seq_length)
            .unwrap_or(config.max_position_embeddings.min(512))
            .min(config.max_position_embeddings);
        let do_lower_case = sbert.map(|c| c.do_lower_case).unwrap_or(false);

        let pooling = match &layout.pooling_dir {
            Some(dir) => {
                let path = source.file(&format!("{dir}/config.json"))?;
                let cfg: PoolingConfig = read_json(&path)?;
                cfg.mode().with_context(|| path.display().to_string())?
            }
            None => Pooling::Mean,
        };

        let tokenizer_path = source.file(&prefix("tokenizer.json"))?;
        let tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;

        let weights_path = source.file(&prefix("model.safetensors")).context(
            "only safetensors weights are read; convert pytorch_model.bin with the Python `safetensors` package",
        )?;
        let varmap = VarMap::new();
        let loaded = preload_safetensors(&varmap, &weights_path, options.dtype, &options.device)?;
        let vb = VarBuilder::from_varmap(&varmap, options.dtype, &options.device);
        let root = super::weights::bert_prefix(&weights_path)?;
        let vb = if root.is_empty() {
            vb
        } else {
            vb.pp(root.trim_end_matches('.'))
        };
        let bert = BertModel::new(vb, &config).with_context(|| {
            format!("{}: weights do not fit config.json", weights_path.display())
        })?;
        ensure_all_loaded(&varmap, &loaded, &weights_path)?;

        let mut encoder = Self::from_parts(
            source.display_name(),
            bert,
            varmap,
            tokenizer,
            max_seq_length,
            do_lower_case,
            pooling,
            layout.normalize,
        )?;
        encoder.config_json = config_json;
        encoder.tokenizer_dir = tokenizer_path.parent().map(|p| p.to_path_buf());
        Ok(encoder)
    }

    /// Assembles an encoder from parts (tests build tiny random models this way).
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        name: String,
        bert: BertModel,
        varmap: VarMap,
        mut tokenizer: Tokenizer,
        max_seq_length: usize,
        do_lower_case: bool,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Self> {
        // tokenizer.json files often pad every input to a fixed length (MiniLM's pads to 128) and
        // truncate at the tokenizer's own limit. We pad per batch ourselves and truncate where
        // sentence-transformers does: at max_seq_length.
        let pad_id = unpad_and_truncate(&mut tokenizer, max_seq_length)?;
        let config_json = serde_json::to_value(&bert.config)?;
        Ok(Self {
            name,
            config_json,
            tokenizer_dir: None,
            bert,
            varmap,
            tokenizer,
            max_seq_length,
            do_lower_case,
            pooling,
            normalize,
            pad_id,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.bert.config.hidden_size
    }

    pub fn device(&self) -> &Device {
        self.bert.device()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Tokenizes texts (truncated to `max_seq_length`, unpadded), in parallel.
    pub fn tokenize<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Encoding>> {
        texts
            .par_iter()
            .map(|t| {
                let text = t.as_ref();
                let text = if self.do_lower_case {
                    text.to_lowercase()
                } else {
                    text.to_string()
                };
                self.tokenizer
                    .encode(text, true)
                    .map_err(|e| anyhow::anyhow!("tokenizing {:?}: {e}", preview(t.as_ref())))
            })
            .collect()
    }

    /// Pads a group of encodings into `(input_ids, attention_mask)`, both `[batch, longest]` u32.
    pub fn pad_batch(&self, encodings: &[&Encoding]) -> Result<(Tensor, Tensor)> {
        let longest = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut ids = Vec::with_capacity(encodings.len() * longest);
        let mut mask = Vec::with_capacity(encodings.len() * longest);
        for e in encodings {
            let row = e.get_ids();
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(self.pad_id, longest - row.len()));
            mask.extend(std::iter::repeat_n(1u32, row.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - row.len()));
        }
        let shape = (encodings.len(), longest);
        let device = self.device();
        Ok((
            Tensor::from_vec(ids, shape, device)?,
            Tensor::from_vec(mask, shape, device)?,
        ))
    }

    /// Sentence embeddings `[batch, dim]` of a padded batch; differentiable in [`Mode::Train`].
    pub fn embed_batch(&self, input_ids: &Tensor, mask: &Tensor, mode: Mode) -> Result<Tensor> {
        let pooled = if self.pooling == Pooling::Cls {
            // Only [CLS] is read: the last layer skips the other tokens' rows.
            let cls = self.bert.forward_typed_first(input_ids, None, mask, mode)?;
            cls.to_dtype(DType::F32)?
        } else {
            let mut tokens = self.bert.forward(input_ids, mask, mode)?;
            if matches!(tokens.dtype(), DType::BF16 | DType::F16) {
                // Pooling and normalising sum hundreds of values: in f32, not in half precision.
                tokens = tokens.to_dtype(DType::F32)?;
            }
            self.pooling.apply(&tokens, mask)?
        };
        Ok(if self.normalize {
            l2_normalize(&pooled)?
        } else {
            pooled
        })
    }

    /// Sentence embeddings `[texts, dim]` of `texts` as one padded batch: the training forward
    /// pass (differentiable in [`Mode::Train`]), rows in input order.
    pub fn embed_texts<S: AsRef<str> + Sync>(&self, texts: &[S], mode: Mode) -> Result<Tensor> {
        let encodings = self.tokenize(texts)?;
        let group: Vec<&Encoding> = encodings.iter().collect();
        let (ids, mask) = self.pad_batch(&group)?;
        self.embed_batch(&ids, &mask, mode)
    }

    /// Renames the encoder (reports and model cards show this name).
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// Sentence embeddings `[batch, dim]` computed without padding (CPU f32 inference); the
    /// same values as [`Self::embed_batch`] in [`Mode::Infer`].
    pub fn embed_packed(&self, encodings: &[&Encoding]) -> Result<Tensor> {
        let seq_lens: Vec<usize> = encodings.iter().map(|e| e.get_ids().len()).collect();
        let ids: Vec<u32> = encodings
            .iter()
            .flat_map(|e| e.get_ids().iter().copied())
            .collect();
        let ids = Tensor::from_vec(ids, seq_lens.iter().sum::<usize>(), self.device())?;
        let pooled = if self.pooling == Pooling::Cls {
            // Only [CLS] is read: the last layer skips the other tokens' rows.
            self.bert.forward_packed_first(&ids, None, &seq_lens)?
        } else {
            let tokens = self.bert.forward_packed(&ids, &seq_lens)?;
            self.pooling.apply_packed(&tokens, &seq_lens)?
        };
        Ok(if self.normalize {
            l2_normalize(&pooled)?
        } else {
            pooled
        })
    }

    /// Encodes texts into an f32 tensor `[texts, dim]`, rows in input order.
    pub fn encode<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
    ) -> Result<Tensor> {
        Ok(self.encode_with_stats(texts, options)?.0)
    }

    /// As [`encode`](Self::encode), also returning token counts and time taken.
    pub fn encode_with_stats<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
    ) -> Result<(Tensor, EncodeStats)> {
        let start = Instant::now();
        let encodings = self.tokenize(texts)?;
        let passes = self.plan_passes(&encodings, options.batch_size.max(1));
        let progress = Progress::new(texts.len() as u64, "encoding", options.progress);
        // Decided once, here: the passes may run on other threads.
        let packed = self.bert.supports_packed();
        let run = |pass: &Vec<usize>| -> Result<(Vec<Vec<f32>>, usize)> {
            crate::interrupt::check()?;
            let group: Vec<&Encoding> = pass.iter().map(|&i| &encodings[i]).collect();
            let (emb, computed) = if packed {
                (
                    self.embed_packed(&group)?,
                    group.iter().map(|e| e.get_ids().len()).sum(),
                )
            } else {
                let (ids, mask) = self.pad_batch(&group)?;
                (
                    to_f32(&self.embed_batch(&ids, &mask, Mode::Infer)?)?,
                    ids.elem_count(),
                )
            };
            progress.inc(pass.len() as u64);
            Ok((emb.to_vec2()?, computed))
        };
        // On the CPU, passes run concurrently: each is a chain of ~50 operations, and running two
        // chains side by side keeps both cores busy where splitting every small operation across
        // them would not. A GPU takes them one after another.
        let results: Vec<(Vec<Vec<f32>>, usize)> = if packed {
            passes.par_iter().map(run).collect::<Result<_>>()?
        } else {
            passes.iter().map(run).collect::<Result<_>>()?
        };
        progress.finish();

        let dim = self.dim();
        let mut out = vec![0f32; texts.len() * dim];
        let mut stats = EncodeStats {
            texts: texts.len(),
            ..Default::default()
        };
        stats.tokens = encodings.iter().map(|e| e.get_ids().len()).sum();
        for (pass, (rows, computed)) in passes.iter().zip(results) {
            stats.padded_tokens += computed;
            for (&i, row) in pass.iter().zip(rows) {
                out[i * dim..(i + 1) * dim].copy_from_slice(&row);
            }
        }
        stats.seconds = start.elapsed().as_secs_f64();
        let tensor = Tensor::from_vec(out, (texts.len(), dim), &Device::Cpu)?;
        Ok((tensor, stats))
    }

    fn plan_passes(&self, encodings: &[Encoding], batch_size: usize) -> Vec<Vec<usize>> {
        let lens: Vec<usize> = encodings.iter().map(|e| e.get_ids().len()).collect();
        plan_passes(
            &lens,
            batch_size,
            pass_token_cap(&self.bert, self.max_seq_length),
        )
    }
}

/// Turns off the tokenizer's own padding (we pad per batch) and truncates longest-first at
/// `max_length`, as sentence-transformers does for texts and pairs; returns the padding id.
pub(crate) fn unpad_and_truncate(tokenizer: &mut Tokenizer, max_length: usize) -> Result<u32> {
    let pad_id = tokenizer
        .get_padding()
        .map(|p: &PaddingParams| p.pad_id)
        .unwrap_or(0);
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            ..Default::default()
        }))
        .map_err(|e| anyhow::anyhow!("cannot set truncation: {e}"))?;
    Ok(pad_id)
}

/// Groups sequence indices into forward passes: longest first, so each padded batch pads only to
/// its own longest member, at most `batch_size` sequences and at most `token_cap` tokens each.
pub(crate) fn plan_passes(lens: &[usize], batch_size: usize, token_cap: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    let mut passes: Vec<Vec<usize>> = Vec::new();
    let mut tokens = 0;
    for i in order {
        let len = lens[i];
        match passes.last_mut() {
            Some(pass) if pass.len() < batch_size && tokens + len <= token_cap => {
                pass.push(i);
                tokens += len;
            }
            _ => {
                passes.push(vec![i]);
                tokens = len;
            }
        }
    }
    passes
}

/// Tokens per pass: for the unpadded CPU path, enough to keep the largest activation
/// (`tokens × intermediate_size` floats) within 32 MB, where the allocator reuses buffers instead
/// of mapping fresh pages each time; unbounded for padded batches.
pub(crate) fn pass_token_cap(bert: &BertModel, max_len: usize) -> usize {
    if bert.supports_packed() {
        ((32 << 20) / (4 * bert.config.intermediate_size.max(1))).max(max_len)
    } else {
        usize::MAX
    }
}

/// Which folders the sentence-transformers module stack uses.
struct StackLayout {
    transformer_dir: String,
    pooling_dir: Option<String>,
    normalize: bool,
}

impl StackLayout {
    fn read(source: &ModelSource) -> Result<Self> {
        let Some(path) = source.optional_file("modules.json")? else {
            // A plain transformers checkpoint: sentence-transformers would add mean pooling.
            return Ok(Self {
                transformer_dir: String::new(),
                pooling_dir: None,
                normalize: false,
            });
        };
        let modules: Vec<ModuleEntry> = read_json(&path)?;
        let mut layout = Self {
            transformer_dir: String::new(),
            pooling_dir: None,
            normalize: false,
        };
        let mut saw_transformer = false;
        for m in &modules {
            match m.kind.rsplit('.').next().unwrap_or_default() {
                "Transformer" => {
                    saw_transformer = true;
                    layout.transformer_dir = m.path.trim_end_matches('/').to_string();
                }
                "Pooling" => layout.pooling_dir = Some(m.path.trim_end_matches('/').to_string()),
                "Normalize" => layout.normalize = true,
                other => bail!(
                    "{}: module type `{}` ({other}) is not supported; ragtune reads Transformer, Pooling and Normalize",
                    path.display(),
                    m.kind
                ),
            }
        }
        if !saw_transformer {
            bail!(
                "{}: no sentence_transformers.models.Transformer module",
                path.display()
            );
        }
        Ok(layout)
    }
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

pub(crate) fn preview(text: &str) -> String {
    let mut s: String = text.chars().take(60).collect();
    if text.chars().count() > 60 {
        s.push('…');
    }
    s
}

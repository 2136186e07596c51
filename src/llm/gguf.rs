//! A Llama-family model from one GGUF file: its shape from the metadata, every tensor dequantized
//! to f32, the tokenizer rebuilt from `tokenizer.ggml.*`, and the chat template.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::models::llama::LlamaConfig;

/// Everything a local model needs, read from one file.
pub struct GgufModel {
    pub config: LlamaConfig,
    pub weights: HashMap<String, Tensor>,
    /// Linear weights kept in their GGUF block format (loaded with `quantized`).
    pub quantized: HashMap<String, QTensor>,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<String>,
    pub bos: Option<String>,
    pub eos: Vec<u32>,
}

/// Reads the model in `path`. With `quantized`, the blocks' linear weights (`blk.N.attn_q.weight`,
/// …) stay in their stored block format; everything else is dequantized to f32.
pub fn load(path: &Path, device: &Device, quantized: bool) -> Result<GgufModel> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let content = Content::read(&mut file)
        .with_context(|| format!("{} is not a GGUF file", path.display()))?;
    let meta = Meta {
        content: &content,
        path,
    };
    let arch = meta.string("general.architecture")?;
    if !matches!(arch.as_str(), "llama" | "qwen2" | "mistral") {
        bail!(
            "{}: architecture `{arch}` is not a Llama-family decoder",
            path.display()
        );
    }
    let key = |k: &str| format!("{arch}.{k}");
    let hidden = meta.usize(&key("embedding_length"))?;
    let heads = meta.usize(&key("attention.head_count"))?;
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let config = LlamaConfig {
        vocab_size: tokens.len(),
        hidden,
        intermediate: meta.usize(&key("feed_forward_length"))?,
        layers: meta.usize(&key("block_count"))?,
        heads,
        kv_heads: meta.usize(&key("attention.head_count_kv")).unwrap_or(heads),
        rope_theta: meta.f32(&key("rope.freq_base")).unwrap_or(10_000.0),
        rms_eps: meta.f32(&key("attention.layer_norm_rms_epsilon"))? as f64,
        max_positions: meta.usize(&key("context_length"))?,
        // llama.cpp's converter permutes llama q/k rows for pairwise rotation; qwen2 keeps halves.
        rope_interleaved: arch != "qwen2",
    };

    let mut weights = HashMap::with_capacity(content.tensor_infos.len());
    let mut kept = HashMap::new();
    for name in content.tensor_infos.keys() {
        let q = content
            .tensor(&mut file, name, device)
            .with_context(|| format!("{}: reading tensor `{name}`", path.display()))?;
        let linear = name.starts_with("blk.")
            && name.ends_with(".weight")
            && q.shape().rank() == 2
            && !matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        if quantized && linear {
            kept.insert(name.clone(), q);
        } else {
            weights.insert(name.clone(), q.dequantize(device)?);
        }
    }

    let tokenizer = tokenizer(&meta, &tokens)?;
    let id = |k: &str| meta.usize(k).ok().map(|i| i as u32);
    let bos = id("tokenizer.ggml.bos_token_id").and_then(|i| tokens.get(i as usize).cloned());
    let mut eos: Vec<u32> = id("tokenizer.ggml.eos_token_id").into_iter().collect();
    eos.extend(id("tokenizer.ggml.eot_token_id"));
    Ok(GgufModel {
        config,
        weights,
        quantized: kept,
        tokenizer,
        chat_template: meta.string("tokenizer.chat_template").ok(),
        bos,
        eos,
    })
}

/// Metadata accessors whose errors name the file and key.
struct Meta<'a> {
    content: &'a Content,
    path: &'a Path,
}

impl Meta<'_> {
    fn get(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .with_context(|| format!("{}: no metadata `{key}`", self.path.display()))
    }

    fn usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key)?;
        let n = v
            .to_u32()
            .map(|n| n as u64)
            .or_else(|_| v.to_u64())
            .or_else(|_| v.to_i32().map(|n| n as u64))
            .with_context(|| format!("{}: `{key}` is not an integer", self.path.display()))?;
        Ok(n as usize)
    }

    fn f32(&self, key: &str) -> Result<f32> {
        self.get(key)?
            .to_f32()
            .with_context(|| format!("{}: `{key}` is not a float", self.path.display()))
    }

    fn string(&self, key: &str) -> Result<String> {
        Ok(self
            .get(key)?
            .to_string()
            .with_context(|| format!("{}: `{key}` is not a string", self.path.display()))?
            .clone())
    }

    fn array(&self, key: &str) -> Result<&Vec<Value>> {
        self.get(key)?
            .to_vec()
            .with_context(|| format!("{}: `{key}` is not an array", self.path.display()))
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        self.array(key)?
            .iter()
            .map(|v| Ok(v.to_string()?.clone()))
            .collect::<candle_core::Result<_>>()
            .with_context(|| format!("{}: `{key}` holds non-strings", self.path.display()))
    }
}

/// GPT-2-style byte-level BPE from the vocabulary and merges, with the pre-tokenizer llama.cpp
/// names in `tokenizer.ggml.pre` and control tokens (type 3) as special tokens.
fn tokenizer(meta: &Meta, tokens: &[String]) -> Result<Tokenizer> {
    let model = meta.string("tokenizer.ggml.model")?;
    if model != "gpt2" {
        bail!(
            "{}: tokenizer model `{model}` is not supported (byte-level BPE `gpt2` is); \
             use the model's safetensors folder with its tokenizer.json instead",
            meta.path.display()
        );
    }
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges = meta
        .strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| match m.split_once(' ') {
            Some((a, b)) => Ok((a.to_string(), b.to_string())),
            None => bail!("{}: malformed merge `{m}`", meta.path.display()),
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| anyhow::anyhow!("{}: building the tokenizer: {e}", meta.path.display()))?;
    let mut tok = Tokenizer::new(bpe);
    let pre = meta
        .string("tokenizer.ggml.pre")
        .unwrap_or_else(|_| "default".into());
    let byte_level = ByteLevel::new(false, true, false);
    let split = |regex: &str| -> Result<Split> {
        Split::new(
            SplitPattern::Regex(regex.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| anyhow::anyhow!("pre-tokenizer regex: {e}"))
    };
    let pre_tokenizer = match pre.as_str() {
        // SmolLM: digits one by one, then GPT-2's byte-level split.
        "smollm" | "starcoder" => Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ]),
        "llama-bpe" | "llama3" => Sequence::new(vec![
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")?.into(),
            byte_level.into(),
        ]),
        "qwen2" => Sequence::new(vec![
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")?.into(),
            byte_level.into(),
        ]),
        _ => Sequence::new(vec![ByteLevel::new(false, true, true).into()]),
    };
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    tok.with_decoder(Some(ByteLevel::default()));
    let types = meta.array("tokenizer.ggml.token_type").ok();
    let special: Vec<AddedToken> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| types.and_then(|t| t.get(*i)).and_then(|v| v.to_i32().ok()) == Some(3))
        .map(|(_, t)| AddedToken::from(t.clone(), true))
        .collect();
    tok.add_special_tokens(special)
        .map_err(|e| anyhow::anyhow!("{}: special tokens: {e}", meta.path.display()))?;
    Ok(tok)
}

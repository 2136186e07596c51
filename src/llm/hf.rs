//! A Llama-family model from a Hugging Face folder: `config.json`, `model.safetensors` (or shards
//! listed in `model.safetensors.index.json`), `tokenizer.json`, and the chat template and special
//! tokens of `tokenizer_config.json`. Tensors are renamed to GGUF's names, which [`super::llama`]
//! reads.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use serde::Deserialize;
use tokenizers::Tokenizer;

use super::gguf::GgufModel;
use crate::models::hub::ModelSource;
use crate::models::llama::LlamaConfig;

#[derive(Deserialize)]
struct HfConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    rope_theta: Option<f32>,
    rms_norm_eps: f64,
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    eos_token_id: Option<serde_json::Value>,
    model_type: Option<String>,
}

pub fn load(source: &ModelSource, device: &Device) -> Result<GgufModel> {
    let name = source.display_name();
    let config_path = source.file("config.json")?;
    let cfg: HfConfig = serde_json::from_slice(&std::fs::read(&config_path)?)
        .with_context(|| format!("{}: not a Llama-style config", config_path.display()))?;
    if let Some(t) = &cfg.model_type {
        if !matches!(t.as_str(), "llama" | "qwen2" | "mistral") {
            bail!("model `{name}`: model_type `{t}` is not a Llama-family decoder");
        }
    }
    let config = LlamaConfig {
        vocab_size: cfg.vocab_size,
        hidden: cfg.hidden_size,
        intermediate: cfg.intermediate_size,
        layers: cfg.num_hidden_layers,
        heads: cfg.num_attention_heads,
        kv_heads: cfg.num_key_value_heads.unwrap_or(cfg.num_attention_heads),
        rope_theta: cfg.rope_theta.unwrap_or(10_000.0),
        rms_eps: cfg.rms_norm_eps,
        max_positions: cfg.max_position_embeddings,
        rope_interleaved: false,
    };

    let files = match source.optional_file("model.safetensors.index.json")? {
        Some(index) => {
            let index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index)?)
                .with_context(|| format!("{}: malformed index", index.display()))?;
            let mut shards: Vec<String> = index["weight_map"]
                .as_object()
                .context("model.safetensors.index.json has no weight_map")?
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            shards.sort();
            shards.dedup();
            shards
                .iter()
                .map(|s| source.file(s))
                .collect::<Result<Vec<_>>>()?
        }
        None => vec![source.file("model.safetensors")?],
    };
    let mut weights = HashMap::new();
    for file in files {
        let tensors = candle_core::safetensors::load(&file, device)
            .with_context(|| format!("reading {}", file.display()))?;
        for (hf_name, t) in tensors {
            if let Some(n) = gguf_name(&hf_name) {
                weights.insert(n, t);
            }
        }
    }
    if cfg.tie_word_embeddings {
        weights.remove("output.weight");
    }

    let tok_path = source.file("tokenizer.json")?;
    let tokenizer = Tokenizer::from_file(&tok_path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", tok_path.display()))?;
    let tok_config: serde_json::Value = match source.optional_file("tokenizer_config.json")? {
        Some(p) => serde_json::from_slice(&std::fs::read(&p)?)
            .with_context(|| format!("{}: malformed JSON", p.display()))?,
        None => serde_json::Value::Null,
    };
    let token_text = |key: &str| -> Option<String> {
        match &tok_config[key] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
            _ => None,
        }
    };
    let mut eos: Vec<u32> = match &cfg.eos_token_id {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|n| n as u32).into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_u64().map(|n| n as u32))
            .collect(),
        _ => Vec::new(),
    };
    eos.extend(token_text("eos_token").and_then(|t| tokenizer.token_to_id(&t)));
    Ok(GgufModel {
        config,
        weights,
        quantized: HashMap::new(),
        chat_template: tok_config["chat_template"].as_str().map(str::to_string),
        bos: token_text("bos_token"),
        eos,
        tokenizer,
    })
}

/// GGUF's name for a Hugging Face Llama tensor (`None` for tensors the decoder does not use,
/// such as rotary caches some checkpoints carry).
fn gguf_name(hf: &str) -> Option<String> {
    let plain = |n: &str| Some(n.to_string());
    match hf {
        "model.embed_tokens.weight" => return plain("token_embd.weight"),
        "model.norm.weight" => return plain("output_norm.weight"),
        "lm_head.weight" => return plain("output.weight"),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let short = match module {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        _ => return None,
    };
    Some(format!("blk.{layer}.{short}.{kind}"))
}

#[cfg(test)]
mod tests {
    use super::gguf_name;

    #[test]
    fn names_map_to_gguf() {
        assert_eq!(
            gguf_name("model.layers.12.self_attn.k_proj.bias").as_deref(),
            Some("blk.12.attn_k.bias")
        );
        assert_eq!(
            gguf_name("model.layers.0.post_attention_layernorm.weight").as_deref(),
            Some("blk.0.ffn_norm.weight")
        );
        assert_eq!(
            gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq"),
            None
        );
    }
}

//! LoRA adapters in PEFT's format, so that Python's
//! `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), dir)` loads what ragtune
//! trains, and ragtune loads what PEFT trains: `adapter_config.json` (PEFT's `LoraConfig`) and
//! `adapter_model.safetensors` with PEFT's key names
//! (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`).
//!
//! llama.cpp's converter permutes the rows of Llama's `q_proj` / `k_proj` weights so that rope
//! rotates adjacent pairs, and transformers un-permutes them when it loads a GGUF file. A model
//! loaded from GGUF here keeps GGUF's row order, so the rows of `lora_B` (the output side) of
//! q_proj and k_proj are put back into Hugging Face's order when saved and permuted again when
//! loaded; `lora_A` (the input side) is the same in both.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use serde_json::json;

use super::llama::{rope_rows, Llama};
use super::lora::LoraConfig;
use super::save::{write_json, write_safetensors};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// PEFT's module path of a linear layer (`model.layers.3.mlp.up_proj`).
pub fn module_path(layer: usize, name: &str) -> String {
    let part = if name.ends_with("_proj") && matches!(name, "gate_proj" | "up_proj" | "down_proj") {
        "mlp"
    } else {
        "self_attn"
    };
    format!("model.layers.{layer}.{part}.{name}")
}

fn key(layer: usize, name: &str, matrix: &str) -> String {
    format!(
        "base_model.model.{}.{matrix}.weight",
        module_path(layer, name)
    )
}

/// `b`'s rows reordered for module `name` of `model` (identity unless q/k of a GGUF layout).
fn reorder_b(model: &Llama, name: &str, b: &Tensor, to_hf: bool) -> Result<Tensor> {
    let cfg = model.config();
    if !cfg.rope_interleaved {
        return Ok(b.clone());
    }
    let heads = match name {
        "q_proj" => cfg.heads,
        "k_proj" => cfg.kv_heads,
        _ => return Ok(b.clone()),
    };
    let idx = Tensor::new(rope_rows(heads, cfg.head_dim(), to_hf), b.device())?;
    Ok(b.index_select(&idx, 0)?)
}

/// Every adapter matrix under its PEFT key, in Hugging Face's row order.
pub fn adapter_tensors(model: &Llama) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (layer, name, linear) in model.linears() {
        let Some(a) = linear.adapter() else { continue };
        out.insert(key(layer, name, "lora_A"), a.a.as_tensor().detach());
        let b = reorder_b(model, name, &a.b.as_tensor().detach(), true)?;
        out.insert(key(layer, name, "lora_B"), b);
    }
    if out.is_empty() {
        bail!("the model has no LoRA adapters to save");
    }
    Ok(out)
}

/// Writes the model's adapters into `dir` as PEFT does; `base` names the base model.
pub fn save_adapter(model: &Llama, config: &LoraConfig, base: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_json(
        &dir.join(CONFIG_FILE),
        &json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base,
            "revision": null,
            "inference_mode": true,
            "r": config.r,
            "lora_alpha": config.lora_alpha,
            "lora_dropout": config.lora_dropout,
            "target_modules": config.targets()?,
            "use_rslora": config.use_rslora,
            "use_dora": false,
            "bias": "none",
            "fan_in_fan_out": false,
            "init_lora_weights": config.init_lora_weights,
            "modules_to_save": null,
            "layers_to_transform": null,
            "layers_pattern": null,
            "rank_pattern": {},
            "alpha_pattern": {},
        }),
    )?;
    write_safetensors(&adapter_tensors(model)?, &dir.join(WEIGHTS_FILE))
}

/// Reads `dir`'s `adapter_config.json` as a [`LoraConfig`] and the base model it names.
pub fn read_config(dir: &Path) -> Result<(LoraConfig, String)> {
    let path = dir.join(CONFIG_FILE);
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{}: not JSON", path.display()))?;
    let field = |k: &str| {
        v.get(k)
            .with_context(|| format!("{}: no field `{k}`", path.display()))
    };
    if field("peft_type")?.as_str() != Some("LORA") {
        bail!("{}: peft_type is not LORA", path.display());
    }
    for (k, unsupported) in [("use_dora", true), ("fan_in_fan_out", true)] {
        if v.get(k).and_then(|x| x.as_bool()) == Some(unsupported) {
            bail!("{}: `{k}: true` is not supported", path.display());
        }
    }
    for k in ["rank_pattern", "alpha_pattern"] {
        if v.get(k)
            .and_then(|x| x.as_object())
            .is_some_and(|m| !m.is_empty())
        {
            bail!("{}: per-layer `{k}` is not supported", path.display());
        }
    }
    let targets = match field("target_modules")? {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .with_context(|| format!("{}: target_modules holds non-strings", path.display()))?,
        _ => bail!(
            "{}: target_modules is neither a list nor a string",
            path.display()
        ),
    };
    let config = LoraConfig {
        r: field("r")?
            .as_u64()
            .with_context(|| format!("{}: `r` is not an integer", path.display()))?
            as usize,
        lora_alpha: field("lora_alpha")?
            .as_f64()
            .with_context(|| format!("{}: `lora_alpha` is not a number", path.display()))?,
        lora_dropout: v
            .get("lora_dropout")
            .and_then(|x| x.as_f64())
            .unwrap_or(0.0),
        target_modules: targets,
        use_rslora: v
            .get("use_rslora")
            .and_then(|x| x.as_bool())
            .unwrap_or(false),
        seed: 0,
        init_lora_weights: true,
    };
    config
        .validate()
        .with_context(|| format!("{}", path.display()))?;
    let base = v
        .get("base_model_name_or_path")
        .and_then(|x| x.as_str())
        .unwrap_or_default()
        .to_string();
    Ok((config, base))
}

/// Sets the model's adapters from tensors under PEFT keys (Hugging Face row order). Every
/// target layer must have its pair, and no key may be left over.
pub fn set_adapters(
    model: &mut Llama,
    config: &LoraConfig,
    mut tensors: HashMap<String, Tensor>,
    origin: &str,
) -> Result<()> {
    let targets = config.targets()?;
    let scale = config.scale();
    let mut updates = vec![];
    for (layer, name, _) in model.linears() {
        if !targets.iter().any(|t| t == name) {
            continue;
        }
        let (ka, kb) = (key(layer, name, "lora_A"), key(layer, name, "lora_B"));
        let a = tensors
            .remove(&ka)
            .with_context(|| format!("{origin}: no tensor `{ka}`"))?;
        let b = tensors
            .remove(&kb)
            .with_context(|| format!("{origin}: no tensor `{kb}`"))?;
        updates.push((layer, name, a, b));
    }
    if let Some(k) = tensors.keys().min() {
        bail!("{origin}: unexpected tensor `{k}` (not a LoRA matrix of the target modules)");
    }
    for (layer, name, a, b) in updates {
        let b = reorder_b(model, name, &b.to_device(model.device())?, false)?;
        let a = a.to_device(model.device())?;
        let linear = model
            .linears_mut()
            .find(|(l, n, _)| *l == layer && *n == name)
            .map(|(_, _, l)| l)
            .expect("the layer was just listed");
        linear
            .set_adapter(a, b, scale, config.lora_dropout)
            .with_context(|| format!("{origin}: {}", module_path(layer, name)))?;
    }
    Ok(())
}

/// Loads a PEFT LoRA adapter folder onto `model`; returns its config and named base model.
pub fn load_adapter(model: &mut Llama, dir: &Path) -> Result<(LoraConfig, String)> {
    let (config, base) = read_config(dir)?;
    let path = dir.join(WEIGHTS_FILE);
    let tensors = candle_core::safetensors::load(&path, model.device())
        .with_context(|| format!("reading {}", path.display()))?;
    set_adapters(model, &config, tensors, &path.display().to_string())?;
    Ok((config, base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_are_peft_keys() {
        assert_eq!(
            key(0, "q_proj", "lora_A"),
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        );
        assert_eq!(
            key(3, "down_proj", "lora_B"),
            "base_model.model.model.layers.3.mlp.down_proj.lora_B.weight"
        );
    }
}

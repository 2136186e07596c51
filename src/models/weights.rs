//! Reading checkpoint tensors into trainable variables, with errors that name the file and tensor.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Var};
use candle_nn::VarMap;

/// The prefix under which a checkpoint stores the BERT stack: `""` for sentence-transformers
/// exports, `"bert."` for `BertForXxx` checkpoints.
pub fn bert_prefix(path: &Path) -> Result<String> {
    let st = open(path)?;
    let names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
    for prefix in ["", "bert.", "model."] {
        if names
            .iter()
            .any(|n| n == &format!("{prefix}embeddings.word_embeddings.weight"))
        {
            return Ok(prefix.to_string());
        }
    }
    bail!(
        "{}: no `embeddings.word_embeddings.weight` tensor (with or without a `bert.` prefix); \
         is this a BERT-family checkpoint?",
        path.display()
    )
}

/// Loads every floating-point tensor of the checkpoint into `varmap` as a trainable variable
/// (converted to `dtype`), under its own name. A model built afterwards on
/// `VarBuilder::from_varmap(varmap, …)` picks these up by name, shape-checked, instead of
/// initialising them at random. Tensors the model does not use (a pooler head, say) stay in the
/// map, so saving writes the checkpoint back with every name unchanged. Returns the loaded names.
pub fn preload_safetensors(
    varmap: &VarMap,
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<HashSet<String>> {
    preload_safetensors_as(varmap, path, dtype, device, &|name| name.to_string())
}

/// As [`preload_safetensors`], storing each tensor under `rename(its name)` (a cross-encoder
/// built from a bare encoder checkpoint moves `embeddings.…` under `bert.`).
pub fn preload_safetensors_as(
    varmap: &VarMap,
    path: &Path,
    dtype: DType,
    device: &Device,
    rename: &dyn Fn(&str) -> String,
) -> Result<HashSet<String>> {
    let st = open(path)?;
    let mut vars = varmap.data().lock().expect("varmap lock poisoned");
    let mut loaded = HashSet::new();
    for (name, view) in st.tensors() {
        if !matches!(
            view.dtype(),
            safetensors::Dtype::F16
                | safetensors::Dtype::BF16
                | safetensors::Dtype::F32
                | safetensors::Dtype::F64
        ) {
            continue; // integer buffers such as `embeddings.position_ids`
        }
        let tensor = st
            .load(&name, device)
            .and_then(|t| t.to_dtype(dtype))
            .with_context(|| format!("{}: cannot read tensor `{name}`", path.display()))?;
        let name = rename(&name);
        vars.insert(name.clone(), Var::from_tensor(&tensor)?);
        loaded.insert(name);
    }
    Ok(loaded)
}

/// Fails, naming the first few, if the model created variables the checkpoint did not provide.
pub fn ensure_all_loaded(varmap: &VarMap, loaded: &HashSet<String>, path: &Path) -> Result<()> {
    let vars = varmap.data().lock().expect("varmap lock poisoned");
    let mut missing: Vec<&String> = vars.keys().filter(|k| !loaded.contains(*k)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort();
    bail!(
        "{}: {} tensor(s) the model needs are missing, e.g. {}; the file does not match config.json",
        path.display(),
        missing.len(),
        missing.iter().take(3).map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
    )
}

fn open(path: &Path) -> Result<MmapedSafetensors> {
    // SAFETY: the file is mapped read-only and not modified while the map lives (we copy out).
    unsafe { MmapedSafetensors::new(path) }
        .with_context(|| format!("{}: not a readable safetensors file", path.display()))
}

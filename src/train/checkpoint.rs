//! Resumable checkpoints: `checkpoints/step-<n>/` holding the weights (`model.safetensors`), the
//! AdamW moments (`optimizer.safetensors`) and `trainer_state.json` (step, best dev score, how
//! many log lines belong to the run so far, and a fingerprint of the settings and data).
//!
//! A checkpoint is written to a temporary folder and renamed into place, so a run killed at any
//! moment leaves either the previous checkpoint or the new one, never half of one. The scheduler
//! and sampler need no state of their own: both are functions of the step and the seed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::models::precision::LossScaler;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: usize,
    pub total_steps: usize,
    /// Best dev score so far and the step it was reached at.
    pub best: Option<(f64, usize)>,
    /// Lines of `train_log.jsonl` written by the run up to this step.
    pub log_lines: usize,
    /// Seconds spent training before this checkpoint (for the total on resume).
    pub seconds: f64,
    /// Hash of the settings and data; a resume with other settings is refused.
    pub fingerprint: String,
    /// The f16 loss scale reached (absent in f32 and bf16 runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<LossScaler>,
}

pub fn checkpoints_dir(output: &Path) -> PathBuf {
    output.join("checkpoints")
}

/// Writes a checkpoint through `write` (which fills the folder it is given), then the state,
/// then renames it into place and removes older checkpoints.
pub fn save(
    output: &Path,
    state: &TrainerState,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let root = checkpoints_dir(output);
    let final_dir = root.join(format!("step-{}", state.step));
    let tmp = root.join(format!(".step-{}.partial", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    write(&tmp)?;
    std::fs::write(
        tmp.join("trainer_state.json"),
        serde_json::to_string_pretty(state)?,
    )?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("writing {}", final_dir.display()))?;
    for (step, dir) in list(output)? {
        if step < state.step {
            std::fs::remove_dir_all(&dir).ok();
        }
    }
    Ok(())
}

/// The newest complete checkpoint, if any.
pub fn latest(output: &Path) -> Result<Option<(PathBuf, TrainerState)>> {
    let Some((_, dir)) = list(output)?.into_iter().max_by_key(|(s, _)| *s) else {
        return Ok(None);
    };
    let path = dir.join("trainer_state.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let state: TrainerState =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Some((dir, state)))
}

/// Refuses to resume a run whose settings or data differ from the checkpoint's.
pub fn check_fingerprint(state: &TrainerState, fingerprint: &str, dir: &Path) -> Result<()> {
    if state.fingerprint != fingerprint {
        bail!(
            "{}: this checkpoint was made with other training settings or data; \
             resume with the same ones, or train into a new --output folder",
            dir.display()
        );
    }
    Ok(())
}

fn list(output: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let root = checkpoints_dir(output);
    if !root.is_dir() {
        return Ok(vec![]);
    }
    let mut found = vec![];
    for entry in std::fs::read_dir(&root)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse().ok()) {
            if path.join("trainer_state.json").is_file() {
                found.push((step, path));
            }
        }
    }
    Ok(found)
}

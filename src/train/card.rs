//! The model card (`README.md`) written next to a fine-tuned model: what it was trained from, on
//! what, how, and how it scores before and after — enough to reproduce or judge the run.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::config::TrainConfig;
use super::dataset::TrainingSet;
use super::losses::{Loss, LossConfig};
use super::trainer::TrainOutcome;

pub struct CardFacts<'a> {
    pub base_model: &'a str,
    pub data: &'a TrainingSet,
    pub loss: &'a dyn Loss,
    pub loss_config: &'a LossConfig,
    pub config: &'a TrainConfig,
    pub dev: Option<&'a str>,
    pub outcome: &'a TrainOutcome,
    pub device: &'a str,
}

pub fn write_model_card(path: &Path, f: &CardFacts) -> Result<()> {
    let mut s = String::new();
    let o = f.outcome;
    writeln!(s, "---")?;
    writeln!(s, "base_model: {}", f.base_model)?;
    writeln!(s, "library_name: sentence-transformers")?;
    writeln!(s, "pipeline_tag: sentence-similarity")?;
    writeln!(
        s,
        "tags:\n- sentence-transformers\n- ragtune\n- dataset_size:{}\n- loss:{}",
        f.data.len(),
        f.loss.name()
    )?;
    writeln!(s, "---\n")?;
    writeln!(s, "# Fine-tuned from `{}` with ragtune\n", f.base_model)?;
    writeln!(
        s,
        "A sentence-transformers model (load it with `SentenceTransformer(\"<this folder>\")`) fine-tuned \
         with ragtune {} on {} training examples.\n",
        env!("CARGO_PKG_VERSION"),
        f.data.len()
    )?;

    writeln!(s, "## Training data\n")?;
    writeln!(
        s,
        "{} rows; columns: {}.\n",
        f.data.len(),
        column_list(f.data)
    )?;
    writeln!(s, "| {} |", f.data.columns.join(" | "))?;
    writeln!(s, "|{}|", vec![" --- "; f.data.columns.len()].join("|"))?;
    for row in 0..f.data.len().min(3) {
        let cells: Vec<String> = f.data.texts.iter().map(|c| cell(&c[row])).collect();
        writeln!(s, "| {} |", cells.join(" | "))?;
    }

    writeln!(s, "\n## Loss\n")?;
    writeln!(s, "`{}` with `{}`", f.loss.name(), f.loss.settings())?;
    if let Some(m) = f.loss_config.mini_batch_size {
        writeln!(
            s,
            "\nGradients computed with GradCache in mini-batches of {m}."
        )?;
    }

    writeln!(s, "\n## Hyper-parameters\n")?;
    let changed = f.config.non_defaults();
    if changed.is_empty() {
        writeln!(s, "All ragtune defaults (`TrainConfig::default()`).")?;
    } else {
        writeln!(s, "Settings that differ from ragtune's defaults:\n")?;
        for (k, v) in changed {
            writeln!(s, "- `{k}`: `{v}`")?;
        }
    }

    if let (Some(dev), Some(after)) = (f.dev, &o.dev_after) {
        writeln!(s, "\n## Evaluation on `{dev}` (dev)\n")?;
        writeln!(s, "| metric | before | after |\n| --- | --- | --- |")?;
        for (name, value) in after {
            let before = o.dev_before.as_ref().and_then(|b| b.get(name));
            let before = before.map_or("–".to_string(), |b| format!("{b:.4}"));
            writeln!(s, "| {name} | {before} | {value:.4} |")?;
        }
        if let Some((score, step)) = o.best {
            writeln!(
                s,
                "\nBest dev `{}`: {score:.4} at step {step} (saved in `best/`).",
                f.config.metric_for_best
            )?;
        }
    }

    writeln!(s, "\n## Run\n")?;
    writeln!(
        s,
        "- steps: {} ({:.2} s per step, {:.0} s of training)",
        o.steps, o.seconds_per_step, o.seconds
    )?;
    writeln!(s, "- final training loss: {:.4}", o.final_loss)?;
    writeln!(
        s,
        "- hardware: {} ({} threads), device {}",
        cpu_model(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        f.device
    )?;
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

fn column_list(data: &TrainingSet) -> String {
    let mut cols: Vec<String> = data.columns.iter().map(|c| format!("`{c}`")).collect();
    if let Some((name, _)) = &data.labels {
        cols.push(format!("`{name}` (label)"));
    }
    cols.join(", ")
}

/// A table cell: one line, pipes escaped, long texts cut.
fn cell(text: &str) -> String {
    let flat = text.replace(['\n', '\r'], " ").replace('|', "\\|");
    if flat.chars().count() > 120 {
        flat.chars().take(120).collect::<String>() + "…"
    } else {
        flat
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

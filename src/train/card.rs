//! The model card (`README.md`) written next to a fine-tuned model: what it was trained from, on
//! what, how, and how it scores before and after — enough to reproduce or judge the run.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::config::TrainConfig;
use super::trainer::TrainOutcome;

/// What kind of model a card describes: the Hub metadata and how to load it.
#[derive(Debug, Clone, Copy)]
pub struct ModelKind {
    pub library: &'static str,
    pub pipeline_tag: &'static str,
    /// One sentence: what the model is and how Python loads it.
    pub load_hint: &'static str,
}

/// What a task tells the card about its run; the loop adds the shared settings.
pub struct CardFacts<'a> {
    pub kind: ModelKind,
    pub base_model: String,
    pub rows: usize,
    /// Column names (a label column marked as such), and the first rows' cells.
    pub columns: Vec<String>,
    pub sample: Vec<Vec<String>>,
    pub loss: String,
    pub loss_settings: serde_json::Value,
    /// Further lines under the loss (e.g. gradient caching).
    pub loss_notes: Vec<String>,
    pub dev: Option<String>,
    /// The stage's default settings, against which the card lists what was changed.
    pub defaults: TrainConfig,
    pub outcome: &'a TrainOutcome,
    pub device: String,
}

pub fn write_model_card(path: &Path, f: &CardFacts, config: &TrainConfig) -> Result<()> {
    let mut s = String::new();
    let o = f.outcome;
    writeln!(s, "---")?;
    writeln!(s, "base_model: {}", f.base_model)?;
    writeln!(s, "library_name: {}", f.kind.library)?;
    writeln!(s, "pipeline_tag: {}", f.kind.pipeline_tag)?;
    writeln!(
        s,
        "tags:\n- {}\n- ragtune\n- dataset_size:{}\n- loss:{}",
        f.kind.library, f.rows, f.loss
    )?;
    writeln!(s, "---\n")?;
    writeln!(s, "# Fine-tuned from `{}` with ragtune\n", f.base_model)?;
    writeln!(
        s,
        "{} Fine-tuned with ragtune {} on {} training examples.\n",
        f.kind.load_hint,
        env!("CARGO_PKG_VERSION"),
        f.rows
    )?;

    writeln!(s, "## Training data\n")?;
    let listed: Vec<String> = f.columns.iter().map(|c| format!("`{c}`")).collect();
    writeln!(s, "{} rows; columns: {}.\n", f.rows, listed.join(", "))?;
    if let Some(first) = f.sample.first() {
        let header: Vec<&str> = f
            .columns
            .iter()
            .take(first.len())
            .map(String::as_str)
            .collect();
        writeln!(s, "| {} |", header.join(" | "))?;
        writeln!(s, "|{}|", vec![" --- "; header.len()].join("|"))?;
        for row in &f.sample {
            let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
            writeln!(s, "| {} |", cells.join(" | "))?;
        }
    }

    writeln!(s, "\n## Loss\n")?;
    writeln!(s, "`{}` with `{}`", f.loss, f.loss_settings)?;
    for note in &f.loss_notes {
        writeln!(s, "\n{note}")?;
    }

    writeln!(s, "\n## Hyper-parameters\n")?;
    let changed = config.non_defaults(&f.defaults);
    if changed.is_empty() {
        writeln!(s, "All of the stage's default settings.")?;
    } else {
        writeln!(s, "Settings that differ from the stage's defaults:\n")?;
        for (k, v) in changed {
            writeln!(s, "- `{k}`: `{v}`")?;
        }
    }

    if let (Some(dev), Some(after)) = (&f.dev, &o.dev_after) {
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
                config.metric_for_best
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

//! The training log: one JSON object per line in `train_log.jsonl` — a `loss` entry per optimizer
//! step and an `eval` entry per dev evaluation — and the chart drawn from it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::charts::{Chart, Series};
use crate::eval::metrics::MetricValues;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogEntry {
    Loss {
        step: usize,
        epoch: usize,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        seconds: f64,
        /// An f16 step whose gradients overflowed: not applied (the loss scale was halved).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        skipped: bool,
    },
    Eval {
        step: usize,
        metrics: MetricValues,
    },
}

pub struct TrainLog {
    path: PathBuf,
    pub entries: Vec<LogEntry>,
}

impl TrainLog {
    /// A fresh log at `path` (any old file is replaced).
    pub fn create(path: &Path) -> Result<Self> {
        std::fs::write(path, "").with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            entries: vec![],
        })
    }

    /// Every entry of an existing log, without changing the file.
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let entries = text
            .lines()
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str(line)
                    .with_context(|| format!("{}:{}: not a log entry", path.display(), i + 1))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The first `lines` entries of an existing log (those a checkpoint vouches for); later lines,
    /// written after that checkpoint by a run that was then killed, are dropped from the file.
    pub fn resume(path: &Path, lines: usize) -> Result<Self> {
        let mut log = Self::read(path)?;
        log.entries.truncate(lines);
        let mut text = String::new();
        for e in &log.entries {
            text.push_str(&serde_json::to_string(e)?);
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("rewriting {}", path.display()))?;
        Ok(log)
    }

    pub fn push(&mut self, entry: LogEntry) -> Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
            .with_context(|| format!("appending to {}", self.path.display()))?;
        writeln!(file, "{}", serde_json::to_string(&entry)?)?;
        self.entries.push(entry);
        Ok(())
    }

    pub fn evals(&self) -> impl Iterator<Item = (usize, &MetricValues)> {
        self.entries.iter().filter_map(|e| match e {
            LogEntry::Eval { step, metrics } => Some((*step, metrics)),
            _ => None,
        })
    }

    /// Loss per step (left axis) and the dev `metric` (right axis).
    pub fn chart(&self, metric: &str) -> Chart {
        let (mut x, mut y) = (vec![], vec![]);
        for e in &self.entries {
            if let LogEntry::Loss { step, loss, .. } = e {
                x.push(*step as f64);
                y.push(*loss);
            }
        }
        let loss = Series {
            name: "train loss".into(),
            x,
            y,
        };
        let (mut ex, mut ey) = (vec![], vec![]);
        for (step, metrics) in self.evals() {
            if let Some(v) = metrics.get(metric) {
                ex.push(step as f64);
                ey.push(*v);
            }
        }
        let dev = (!ex.is_empty()).then(|| {
            (
                "dev",
                vec![Series {
                    name: format!("dev {metric}"),
                    x: ex,
                    y: ey,
                }],
            )
        });
        Chart::lines("Training", "step", ("loss", vec![loss]), dev)
    }
}

//! The record of a synthesis run that makes it resumable: a header naming the run's settings,
//! then one line per finished chunk with its pairs, appended and flushed as each batch finishes.
//! A rerun skips the chunks already there; a line cut short by a kill is ignored (that chunk is
//! redone, its model answers coming from the response cache).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Serialize, Deserialize)]
struct Line {
    chunk_id: String,
    pairs: Vec<(String, String)>,
}

pub struct Journal {
    path: PathBuf,
    file: File,
    done: HashMap<String, Vec<(String, String)>>,
}

impl Journal {
    /// Opens (or starts) the journal at `path` for a run with these `settings`; a journal written
    /// with other settings is refused rather than mixed in.
    pub fn open(path: &Path, settings: &str) -> Result<Self> {
        let mut done = HashMap::new();
        let exists = path.exists();
        if exists {
            let lines: Vec<String> = BufReader::new(File::open(path)?)
                .lines()
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("reading {}", path.display()))?;
            let header: serde_json::Value = lines
                .first()
                .and_then(|l| serde_json::from_str(l).ok())
                .with_context(|| format!("{}: not a ragtune synthesis journal", path.display()))?;
            if header["settings"].as_str() != Some(settings) {
                bail!(
                    "{} was written by a run with other settings (generator, prompt or sampling); \
                     delete it to start over, or choose another output",
                    path.display()
                );
            }
            for (n, line) in lines.iter().enumerate().skip(1) {
                match serde_json::from_str::<Line>(line) {
                    Ok(l) => {
                        done.insert(l.chunk_id, l.pairs);
                    }
                    Err(_) if n + 1 == lines.len() => {}
                    Err(e) => bail!("{}:{}: damaged journal line: {e}", path.display(), n + 1),
                }
            }
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        if !exists {
            writeln!(
                file,
                "{}",
                json!({"journal": "ragtune synth", "settings": settings})
            )?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            done,
        })
    }

    pub fn done(&self) -> &HashMap<String, Vec<(String, String)>> {
        &self.done
    }

    pub fn record(&mut self, chunk_id: &str, pairs: &[(String, String)]) -> Result<()> {
        let line = serde_json::to_string(&Line {
            chunk_id: chunk_id.to_string(),
            pairs: pairs.to_vec(),
        })? + "\n";
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.done.insert(chunk_id.to_string(), pairs.to_vec());
        Ok(())
    }
}

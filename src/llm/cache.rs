//! Answers kept on disk, keyed by (model, messages, parameters): a rerun after a crash or Ctrl-C
//! sends no request that was already answered. Each answer is appended to `responses.jsonl` the
//! moment it arrives, as one line written in one call, so a kill loses at most the line being
//! written (which the next open skips).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{ChatModel, ChatRequest, Completion, OnAnswer};
use crate::fingerprint::Fingerprint;

#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    completion: Completion,
}

pub struct CachedChat {
    inner: Arc<dyn ChatModel>,
    path: PathBuf,
    file: Mutex<File>,
    answers: RwLock<HashMap<String, Completion>>,
    hits: AtomicUsize,
    misses: AtomicUsize,
}

impl CachedChat {
    pub fn open(inner: Arc<dyn ChatModel>, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create cache folder {}", dir.display()))?;
        let path = dir.join("responses.jsonl");
        let mut answers = HashMap::new();
        if path.exists() {
            let reader = BufReader::new(File::open(&path)?);
            let lines: Vec<String> = reader
                .lines()
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("reading {}", path.display()))?;
            for (n, line) in lines.iter().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Entry>(line) {
                    Ok(e) => {
                        answers.insert(e.key, e.completion);
                    }
                    // The last line of a killed run may be cut short; anything else is damage.
                    Err(_) if n + 1 == lines.len() => {}
                    Err(e) => {
                        anyhow::bail!("{}:{}: damaged cache entry: {e}", path.display(), n + 1)
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self {
            inner,
            path,
            file: Mutex::new(file),
            answers: RwLock::new(answers),
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// (answers served from disk, requests sent to the model) since opening.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn store(&self, key: &str, completion: &Completion) {
        let line = serde_json::to_string(&Entry {
            key: key.to_string(),
            completion: completion.clone(),
        })
        .expect("entries serialise")
            + "\n";
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // A cache that cannot be written only costs repeated requests later; say so once per answer.
        if let Err(e) = file.write_all(line.as_bytes()).and_then(|_| file.flush()) {
            eprintln!("warning: could not write {}: {e}", self.path.display());
        }
        self.answers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), completion.clone());
    }
}

impl ChatModel for CachedChat {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn chat_each(
        &self,
        requests: &[ChatRequest],
        on_answer: &OnAnswer<'_>,
    ) -> Vec<Result<Completion>> {
        let keys: Vec<String> = requests
            .iter()
            .map(|r| request_key(self.inner.name(), r))
            .collect();
        let mut answers: Vec<Option<Result<Completion>>> = {
            let known = self.answers.read().unwrap_or_else(|e| e.into_inner());
            keys.iter().map(|k| known.get(k).cloned().map(Ok)).collect()
        };
        let missing: Vec<usize> = (0..requests.len())
            .filter(|&i| answers[i].is_none())
            .collect();
        self.hits
            .fetch_add(requests.len() - missing.len(), Ordering::Relaxed);
        self.misses.fetch_add(missing.len(), Ordering::Relaxed);
        for (i, a) in answers.iter().enumerate() {
            if let Some(a) = a {
                on_answer(i, a);
            }
        }
        if !missing.is_empty() {
            let asked: Vec<ChatRequest> = missing.iter().map(|&i| requests[i].clone()).collect();
            let fresh = self.inner.chat_each(&asked, &|j, answer| {
                if let Ok(c) = answer {
                    self.store(&keys[missing[j]], c);
                }
                on_answer(missing[j], answer);
            });
            for (j, a) in fresh.into_iter().enumerate() {
                answers[missing[j]] = Some(a);
            }
        }
        answers
            .into_iter()
            .map(|a| a.expect("every request answered"))
            .collect()
    }
}

/// The identity of a request to a model: its name, messages and parameters. The server's request
/// log uses it too, so tests can tell whether a request was ever answered twice.
pub fn request_key(model: &str, request: &ChatRequest) -> String {
    let json = serde_json::to_string(request).expect("requests serialise");
    let mut f = Fingerprint::default();
    f.text(model).text(&json);
    // Two differently ordered digests make an accidental collision negligible.
    let mut g = Fingerprint::default();
    g.text(&json).text(model);
    format!("{}{}", f.hex(), g.hex())
}

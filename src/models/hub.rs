//! Where a model's files come from: a local directory or a Hugging Face hub id.
//!
//! A model argument is either a path to an existing directory, or `owner/name[@revision]`.
//! Hub ids resolve through `hf-hub` against the standard cache (`HF_HUB_CACHE`, `HF_HOME`),
//! cache first; only a file missing from the cache is downloaded, and never when
//! `HF_HUB_OFFLINE` is set. This module knows nothing about what the files mean.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hf_hub::{HFClient, HFClientSync, HFError};

/// A resolved place to read model files from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A directory on disk holding the model files.
    Local(PathBuf),
    /// A hub repository, optionally pinned to a revision (branch, tag or commit).
    Hub {
        repo_id: String,
        revision: Option<String>,
    },
}

impl ModelSource {
    /// Parses a model argument. An existing directory wins over a hub id of the same spelling.
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        if spec.is_empty() {
            bail!("empty model name: give a local directory or a hub id such as sentence-transformers/all-MiniLM-L6-v2");
        }
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok(Self::Local(path.to_path_buf()));
        }
        let (repo_id, revision) = match spec.split_once('@') {
            Some((id, rev)) if !rev.is_empty() => (id, Some(rev.to_string())),
            Some((id, _)) => (id, None),
            None => (spec, None),
        };
        let parts: Vec<&str> = repo_id.split('/').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
            bail!(
                "model `{spec}` is neither an existing directory nor a hub id of the form owner/name[@revision]"
            );
        }
        Ok(Self::Hub {
            repo_id: repo_id.to_string(),
            revision,
        })
    }

    /// A short human name for messages and reports.
    pub fn display_name(&self) -> String {
        match self {
            Self::Local(p) => p.display().to_string(),
            Self::Hub {
                repo_id,
                revision: Some(r),
            } => format!("{repo_id}@{r}"),
            Self::Hub {
                repo_id,
                revision: None,
            } => repo_id.clone(),
        }
    }

    /// The path of a file the model must have; the error names the model, the file and what to do.
    pub fn file(&self, name: &str) -> Result<PathBuf> {
        match self.optional_file(name)? {
            Some(p) => Ok(p),
            None => match self {
                Self::Local(dir) => bail!("model directory {} has no file `{name}`", dir.display()),
                Self::Hub { .. } => bail!(
                    "model `{}` has no file `{name}` on the hub",
                    self.display_name()
                ),
            },
        }
    }

    /// The path of a file the model may lack (`Ok(None)` when it is not there).
    pub fn optional_file(&self, name: &str) -> Result<Option<PathBuf>> {
        match self {
            Self::Local(dir) => {
                let p = dir.join(name);
                Ok(p.is_file().then_some(p))
            }
            Self::Hub { repo_id, revision } => fetch_from_hub(repo_id, revision.as_deref(), name),
        }
    }
}

/// True when the user asked for no network (`HF_HUB_OFFLINE=1`), as the Python hub client does.
pub fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

fn fetch_from_hub(repo_id: &str, revision: Option<&str>, name: &str) -> Result<Option<PathBuf>> {
    let client = HFClient::new().context("could not set up the Hugging Face hub client")?;
    let cache_dir = client.cache_dir().to_path_buf();
    let client =
        HFClientSync::from_inner(client).context("could not start the hub client's runtime")?;
    let (owner, repo_name) = repo_id.split_once('/').expect("parse checked owner/name");
    let repo = client.model(owner, repo_name);
    let cached = repo
        .download_file()
        .filename(name)
        .maybe_revision(revision.map(str::to_string))
        .local_files_only(true)
        .send();
    let cache_miss = match cached {
        Ok(p) => return Ok(Some(p)),
        Err(HFError::EntryNotFound { .. }) => return Ok(None),
        Err(e) => e,
    };
    let snapshot_cached = repo_snapshot_cached(&cache_dir, repo_id);
    if hub_offline() {
        // Offline, a file absent from a cached snapshot is taken as absent from the repository:
        // that is how optional files (modules.json, pooling configs) are told apart.
        if snapshot_cached {
            return Ok(None);
        }
        bail!(
            "model `{repo_id}` is not in the local Hugging Face cache ({}) and HF_HUB_OFFLINE is set \
             (missing `{name}`: {cache_miss}); run scripts/seed-models.sh for the bundled models, \
             pass a local directory, or unset HF_HUB_OFFLINE to download",
            cache_dir.display()
        );
    }
    let downloaded = repo
        .download_file()
        .filename(name)
        .maybe_revision(revision.map(str::to_string))
        .send();
    match downloaded {
        Ok(p) => Ok(Some(p)),
        Err(HFError::EntryNotFound { .. }) => Ok(None),
        Err(e) => Err(anyhow::Error::new(e)).with_context(|| {
            format!(
                "could not download `{name}` of model `{repo_id}` from the hub (cache: {}); \
                 check the id and your network, or set HF_HUB_OFFLINE=1 and seed the cache",
                cache_dir.display()
            )
        }),
    }
}

fn repo_snapshot_cached(cache_dir: &Path, repo_id: &str) -> bool {
    let folder = cache_dir.join(format!("models--{}", repo_id.replace('/', "--")));
    std::fs::read_dir(folder.join("snapshots"))
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hub_ids_and_revisions() {
        match ModelSource::parse("sentence-transformers/all-MiniLM-L6-v2@main").unwrap() {
            ModelSource::Hub { repo_id, revision } => {
                assert_eq!(repo_id, "sentence-transformers/all-MiniLM-L6-v2");
                assert_eq!(revision.as_deref(), Some("main"));
            }
            other => panic!("expected a hub id, got {other:?}"),
        }
        assert!(ModelSource::parse("not-a-dir-nor-id").is_err());
        assert!(ModelSource::parse("a/b/c").is_err());
        assert!(ModelSource::parse("").is_err());
    }

    #[test]
    fn local_directory_wins_and_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let src = ModelSource::parse(dir.path().to_str().unwrap()).unwrap();
        assert!(src.file("config.json").unwrap().ends_with("config.json"));
        assert_eq!(src.optional_file("modules.json").unwrap(), None);
        let err = src.file("model.safetensors").unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
    }
}

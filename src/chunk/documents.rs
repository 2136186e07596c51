//! Documents from files: a folder is walked recursively (hidden entries skipped, in sorted order
//! so ids and chunk order are the same on every run). Each `.txt`/`.md`/`.html`/`.pdf` file is
//! one document, with its path relative to the folder as id; each record of a `.json` (object or
//! array of objects) or `.jsonl` file is one document, with its id field or `path#line` as id.
//! Scalar fields of a record other than id, title and text are kept as JSON metadata.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::data::jsonl::{json_kind, read_objects};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Document {
    pub doc_id: String,
    pub title: String,
    pub text: String,
    /// The file it came from.
    pub source: String,
    /// JSON object of a record's other fields (`{}` for plain files).
    pub metadata: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadDocumentsOptions {
    /// The field holding a JSON record's text.
    pub text_field: String,
    /// The field holding a record's title (optional in each record).
    pub title_field: String,
    /// The field holding a record's id; records without it get `path#line`.
    pub id_fields: Vec<String>,
}

impl Default for LoadDocumentsOptions {
    fn default() -> Self {
        Self {
            text_field: "text".into(),
            title_field: "title".into(),
            id_fields: vec!["_id".into(), "id".into(), "doc_id".into()],
        }
    }
}

const EXTENSIONS: &[&str] = &[
    "txt", "md", "markdown", "html", "htm", "json", "jsonl", "pdf",
];

/// Loads a file or a folder of files. Files of other types in a folder are listed on stderr and
/// skipped; a file with no text is an error naming it, as is a folder with no documents.
pub fn load_documents(path: &Path, options: &LoadDocumentsOptions) -> Result<Vec<Document>> {
    let (root, files) = if path.is_dir() {
        let mut files = Vec::new();
        walk(path, &mut files)?;
        files.sort();
        (path.to_path_buf(), files)
    } else if path.is_file() {
        let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
        (root, vec![path.to_path_buf()])
    } else {
        bail!("{} does not exist", path.display());
    };
    let mut docs = Vec::new();
    let mut skipped = Vec::new();
    for file in &files {
        let ext = extension(file);
        if !EXTENSIONS.contains(&ext.as_str()) {
            if path.is_file() {
                bail!(
                    "{}: unsupported document type `.{ext}` (use {})",
                    file.display(),
                    EXTENSIONS.join(", ")
                );
            }
            skipped.push(file.display().to_string());
            continue;
        }
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .to_string_lossy()
            .replace('\\', "/");
        load_file(file, &rel, &ext, options, &mut docs)?;
    }
    if !skipped.is_empty() {
        eprintln!(
            "skipped {} file(s) of unsupported type: {}",
            skipped.len(),
            skipped.join(", ")
        );
    }
    if docs.is_empty() {
        bail!(
            "{}: no documents found (looked for {})",
            path.display(),
            EXTENSIONS.join(", ")
        );
    }
    Ok(docs)
}

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let p = entry.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn load_file(
    file: &Path,
    rel: &str,
    ext: &str,
    options: &LoadDocumentsOptions,
    docs: &mut Vec<Document>,
) -> Result<()> {
    let whole = |title: String, text: String| -> Result<Document> {
        if text.trim().is_empty() {
            bail!("{}: the document has no text", file.display());
        }
        Ok(Document {
            doc_id: rel.to_string(),
            title,
            text,
            source: file.display().to_string(),
            metadata: "{}".into(),
        })
    };
    let read = || {
        std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {} as UTF-8 text", file.display()))
    };
    match ext {
        "txt" => docs.push(whole(String::new(), read()?)?),
        "md" | "markdown" => {
            let text = read()?;
            let title = text
                .lines()
                .find_map(|l| l.strip_prefix("# "))
                .unwrap_or_default()
                .trim()
                .to_string();
            docs.push(whole(title, text)?);
        }
        "html" | "htm" => {
            let (title, text) = super::html::to_text(&read()?);
            docs.push(whole(title, text)?);
        }
        "pdf" => {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let text = super::pdf::to_text(&bytes)
                .with_context(|| format!("{}: cannot extract text", file.display()))?;
            docs.push(whole(String::new(), text)?);
        }
        "jsonl" => {
            for (line, obj) in read_objects(file)? {
                docs.push(record(&obj, file, rel, line, options)?);
            }
        }
        "json" => {
            let value: Value = serde_json::from_str(&read()?)
                .map_err(|e| anyhow::anyhow!("{}: malformed JSON: {e}", file.display()))?;
            let records = match value {
                Value::Array(items) => items,
                obj @ Value::Object(_) => vec![obj],
                other => bail!(
                    "{}: expected an object or a list of objects, found {}",
                    file.display(),
                    json_kind(&other)
                ),
            };
            for (i, item) in records.into_iter().enumerate() {
                let Value::Object(obj) = item else {
                    bail!(
                        "{}: item {} is {}, not an object",
                        file.display(),
                        i + 1,
                        json_kind(&item)
                    );
                };
                docs.push(record(&obj, file, rel, i + 1, options)?);
            }
        }
        _ => unreachable!("extension checked by the caller"),
    }
    Ok(())
}

/// One JSON record as a document; `at` is its line (JSONL) or 1-based position (JSON array).
fn record(
    obj: &Map<String, Value>,
    file: &Path,
    rel: &str,
    at: usize,
    options: &LoadDocumentsOptions,
) -> Result<Document> {
    let text = match obj.get(&options.text_field) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => bail!(
            "{}:{at}: field `{}` is empty",
            file.display(),
            options.text_field
        ),
        Some(other) => bail!(
            "{}:{at}: field `{}` must be a string, found {}",
            file.display(),
            options.text_field,
            json_kind(other)
        ),
        None => bail!(
            "{}:{at}: missing text field `{}` (set text_field to the field holding the text)",
            file.display(),
            options.text_field
        ),
    };
    let id_field = options
        .id_fields
        .iter()
        .find(|f| obj.contains_key(f.as_str()));
    let doc_id = match id_field.map(|f| &obj[f.as_str()]) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => bail!(
            "{}:{at}: field `{}` must be a string or number, found {}",
            file.display(),
            id_field.unwrap(),
            json_kind(other)
        ),
        None => format!("{rel}#{at}"),
    };
    let title = match obj.get(&options.title_field) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let metadata: Map<String, Value> = obj
        .iter()
        .filter(|(k, v)| {
            *k != &options.text_field
                && *k != &options.title_field
                && Some(*k) != id_field
                && !v.is_array()
                && !v.is_object()
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Document {
        doc_id,
        title,
        text,
        source: file.display().to_string(),
        metadata: Value::Object(metadata).to_string(),
    })
}

/// The documents as a frame: `doc_id`, `title`, `text`, `source`, `metadata`.
pub fn documents_frame(docs: &[Document]) -> Result<DataFrame> {
    let col = |name: &str, f: fn(&Document) -> &String| {
        Column::new(
            name.into(),
            docs.iter().map(|d| f(d).as_str()).collect::<Vec<_>>(),
        )
    };
    Ok(DataFrame::new(
        docs.len(),
        vec![
            col("doc_id", |d| &d.doc_id),
            col("title", |d| &d.title),
            col("text", |d| &d.text),
            col("source", |d| &d.source),
            col("metadata", |d| &d.metadata),
        ],
    )?)
}

/// Documents back from a frame with at least `doc_id` and `text` (title, source optional).
pub fn documents_from_frame(frame: &DataFrame) -> Result<Vec<Document>> {
    crate::data::require_columns(frame, &["doc_id", "text"], "documents")?;
    let get = |name: &str| -> Result<Vec<String>> {
        if frame.get_column_names().iter().any(|c| c.as_str() == name) {
            crate::data::table::str_column(frame, name)
        } else {
            Ok(vec![String::new(); frame.height()])
        }
    };
    let (ids, titles, texts, sources) =
        (get("doc_id")?, get("title")?, get("text")?, get("source")?);
    Ok((0..frame.height())
        .map(|i| Document {
            doc_id: ids[i].clone(),
            title: titles[i].clone(),
            text: texts[i].clone(),
            source: sources[i].clone(),
            metadata: "{}".into(),
        })
        .collect())
}

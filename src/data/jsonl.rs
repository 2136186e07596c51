//! Line-by-line JSON reading that reports the file and line of bad input.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Map, Value};

/// Reads a JSONL file into one JSON object per non-blank line, with its 1-based line number.
/// A line that is not valid JSON, or not an object, is an error naming the file and line.
pub fn read_objects(path: &Path) -> Result<Vec<(usize, Map<String, Value>)>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let lineno = i + 1;
        let line =
            line.with_context(|| format!("{}:{lineno}: cannot read line", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{lineno}: malformed JSON: {e}", path.display()))?;
        match value {
            Value::Object(map) => out.push((lineno, map)),
            other => anyhow::bail!(
                "{}:{lineno}: expected a JSON object, found {}",
                path.display(),
                json_kind(&other)
            ),
        }
    }
    Ok(out)
}

/// The string value of `field`, with ids written as numbers accepted and stringified.
/// Errors name the file, line and field.
pub fn string_field(
    obj: &Map<String, Value>,
    field: &str,
    path: &Path,
    lineno: usize,
) -> Result<String> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => anyhow::bail!(
            "{}:{lineno}: field `{field}` must be a string, found {}",
            path.display(),
            json_kind(other)
        ),
        None => anyhow::bail!("{}:{lineno}: missing field `{field}`", path.display()),
    }
}

/// Like [`string_field`] but a missing or null field gives an empty string.
pub fn optional_string_field(
    obj: &Map<String, Value>,
    field: &str,
    path: &Path,
    lineno: usize,
) -> Result<String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => string_field(obj, field, path, lineno),
    }
}

pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

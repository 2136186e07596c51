//! Plain tables on disk ⇄ Polars DataFrames: JSONL, CSV and Parquet, chosen by file extension.
//!
//! Column names are the project's documented ones (`query`, `positive`, `negative_1..n`, `text`,
//! `score`, `label`, …); [`require_columns`] turns a missing one into an error naming the file.

use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use serde_json::Value;

use super::jsonl;

/// The file formats a table can be read from or written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Jsonl,
    Csv,
    Parquet,
}

impl TableFormat {
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        Ok(match ext.as_str() {
            "jsonl" | "ndjson" => Self::Jsonl,
            "csv" | "tsv" => Self::Csv,
            "parquet" | "pq" => Self::Parquet,
            _ => bail!(
                "{}: unknown table format `.{ext}`; use .jsonl, .csv, .tsv or .parquet",
                path.display()
            ),
        })
    }
}

/// Reads a table; the format follows the extension.
pub fn read_table(path: &Path) -> Result<DataFrame> {
    let df = match TableFormat::from_path(path)? {
        TableFormat::Jsonl => read_jsonl(path)?,
        TableFormat::Csv => {
            let sep = if path.extension().is_some_and(|e| e == "tsv") {
                b'\t'
            } else {
                b','
            };
            CsvReadOptions::default()
                .with_has_header(true)
                .map_parse_options(|o| o.with_separator(sep))
                .try_into_reader_with_file_path(Some(path.to_path_buf()))
                .and_then(|r| r.finish())
                .map_err(|e| anyhow::anyhow!("{}: cannot read CSV: {e}", path.display()))?
        }
        TableFormat::Parquet => {
            let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            ParquetReader::new(f)
                .finish()
                .map_err(|e| anyhow::anyhow!("{}: cannot read Parquet: {e}", path.display()))?
        }
    };
    Ok(df)
}

/// Writes a table; the format follows the extension. Parent folders are created.
pub fn write_table(df: &DataFrame, path: &Path) -> Result<()> {
    let format = TableFormat::from_path(path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut df = df.clone();
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let result = match format {
        TableFormat::Jsonl => JsonWriter::new(file)
            .with_json_format(JsonFormat::JsonLines)
            .finish(&mut df),
        TableFormat::Csv => {
            let sep = if path.extension().is_some_and(|e| e == "tsv") {
                b'\t'
            } else {
                b','
            };
            CsvWriter::new(file).with_separator(sep).finish(&mut df)
        }
        TableFormat::Parquet => ParquetWriter::new(file).finish(&mut df).map(|_| ()),
    };
    result.map_err(|e| anyhow::anyhow!("{}: cannot write table: {e}", path.display()))
}

/// Fails with an error naming the file and the missing columns unless `df` has all of `columns`.
pub fn require_columns(df: &DataFrame, columns: &[&str], origin: &str) -> Result<()> {
    let have: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|c| c.to_string())
        .collect();
    let missing: Vec<&str> = columns
        .iter()
        .copied()
        .filter(|c| !have.iter().any(|h| h == c))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{origin}: missing column(s) {}; found {}",
            quote_list(&missing),
            quote_list(&have.iter().map(String::as_str).collect::<Vec<_>>())
        );
    }
    Ok(())
}

/// The values of a string column (nulls become empty strings).
pub fn str_column(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let col = df
        .column(name)
        .map_err(|_| anyhow::anyhow!("no column `{name}`"))?;
    let col = col.cast(&DataType::String)?;
    Ok(col
        .str()?
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect())
}

fn quote_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads JSONL with per-line error reporting. Column types are inferred from the values: all
/// integers → Int64, any float → Float64, booleans → Boolean, strings → String; arrays of strings
/// → List(String) and arrays of numbers → List(Float64) (what `mine` and the trainers write and
/// read: document lists, label lists, teacher scores); other arrays and objects are kept as their
/// JSON text. A key missing on some lines becomes null there.
fn read_jsonl(path: &Path) -> Result<DataFrame> {
    frame_from_objects(&jsonl::read_objects(path)?, &path.display().to_string())
}

/// A frame from JSON objects, typed as [`read_table`] types JSONL lines.
pub fn frame_from_objects(
    rows: &[(usize, serde_json::Map<String, Value>)],
    origin: &str,
) -> Result<DataFrame> {
    let mut names: Vec<String> = Vec::new();
    for (_, obj) in rows {
        for k in obj.keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    let mut columns = Vec::with_capacity(names.len());
    for name in &names {
        let values: Vec<Option<&Value>> = rows
            .iter()
            .map(|(_, o)| o.get(name).filter(|v| !v.is_null()))
            .collect();
        columns.push(json_column(name, &values));
    }
    DataFrame::new(rows.len(), columns)
        .map_err(|e| anyhow::anyhow!("{origin}: cannot build table: {e}"))
}

fn json_column(name: &str, values: &[Option<&Value>]) -> Column {
    let present = values.iter().flatten();
    let all = |f: fn(&Value) -> bool| present.clone().all(|v| f(v));
    let name = PlSmallStr::from(name);
    if values.iter().any(Option::is_some) && all(|v| v.as_i64().is_some()) {
        Column::new(
            name,
            values
                .iter()
                .map(|v| v.and_then(Value::as_i64))
                .collect::<Vec<_>>(),
        )
    } else if values.iter().any(Option::is_some) && all(Value::is_number) {
        Column::new(
            name,
            values
                .iter()
                .map(|v| v.and_then(Value::as_f64))
                .collect::<Vec<_>>(),
        )
    } else if values.iter().any(Option::is_some) && all(Value::is_boolean) {
        Column::new(
            name,
            values
                .iter()
                .map(|v| v.and_then(Value::as_bool))
                .collect::<Vec<_>>(),
        )
    } else if let Some(list) = list_column(&name, values) {
        list
    } else {
        let text: Vec<Option<String>> = values
            .iter()
            .map(|v| {
                v.map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            })
            .collect();
        Column::new(name, text)
    }
}

/// A list column when every present value is an array and all their items are strings, or all
/// numbers; `None` otherwise.
fn list_column(name: &PlSmallStr, values: &[Option<&Value>]) -> Option<Column> {
    let mut arrays: Vec<Option<&Vec<Value>>> = Vec::with_capacity(values.len());
    for v in values {
        arrays.push(match v {
            None => None,
            Some(v) => Some(v.as_array()?),
        });
    }
    let items = || arrays.iter().flatten().flat_map(|a| a.iter());
    if arrays.iter().all(Option::is_none) {
        return None;
    }
    let list: ListChunked = if items().all(Value::is_string) {
        arrays
            .iter()
            .map(|a| {
                a.map(|a| {
                    Series::new(
                        "".into(),
                        a.iter()
                            .map(|v| v.as_str().unwrap_or_default())
                            .collect::<Vec<_>>(),
                    )
                })
            })
            .collect()
    } else if items().all(Value::is_number) {
        arrays
            .iter()
            .map(|a| {
                a.map(|a| {
                    Series::new(
                        "".into(),
                        a.iter().filter_map(Value::as_f64).collect::<Vec<_>>(),
                    )
                })
            })
            .collect()
    } else {
        return None;
    };
    Some(list.with_name(name.clone()).into_series().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_round_trip_infers_types_and_reports_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pairs.jsonl");
        std::fs::write(
            &path,
            "{\"query\": \"a\", \"score\": 1, \"docs\": [\"x\", \"y\"], \"meta\": {\"k\": 1}}\n\n\
             {\"query\": \"b\", \"score\": 0.5, \"tags\": [1, 2.5], \"docs\": [], \"meta\": [1, \"a\"]}\n",
        )
        .unwrap();
        let df = read_table(&path).unwrap();
        assert_eq!(df.shape(), (2, 5));
        assert_eq!(df.column("score").unwrap().dtype(), &DataType::Float64);
        // Arrays of numbers and of strings become lists; a missing one is null.
        let tags = df.column("tags").unwrap().list().unwrap().clone();
        assert!(tags.get_as_series(0).is_none());
        let second: Vec<f64> = tags
            .get_as_series(1)
            .unwrap()
            .f64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        assert_eq!(second, [1.0, 2.5]);
        let docs = df.column("docs").unwrap().list().unwrap().clone();
        assert_eq!(
            docs.get_as_series(0).unwrap().str().unwrap().get(1),
            Some("y")
        );
        assert_eq!(docs.get_as_series(1).unwrap().len(), 0);
        // Anything else is kept as its JSON text.
        assert_eq!(
            str_column(&df, "meta").unwrap(),
            vec!["{\"k\":1}".to_string(), "[1,\"a\"]".to_string()]
        );

        std::fs::write(&path, "{\"query\": \"a\"}\n{\"query\": \n").unwrap();
        let err = read_table(&path).unwrap_err().to_string();
        assert!(err.contains("pairs.jsonl:2: malformed JSON"), "{err}");
    }

    #[test]
    fn csv_and_parquet_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let df = df!("query" => ["q1", "q2"], "label" => [1i64, 0]).unwrap();
        for ext in ["csv", "parquet", "jsonl", "tsv"] {
            let path = dir.path().join(format!("t.{ext}"));
            write_table(&df, &path).unwrap();
            let back = read_table(&path).unwrap();
            assert!(back.equals(&df), "{ext}: {back:?}");
        }
    }

    #[test]
    fn missing_columns_are_named() {
        let df = df!("query" => ["q"]).unwrap();
        let err = require_columns(&df, &["query", "positive"], "train.csv")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.csv") && err.contains("`positive`"),
            "{err}"
        );
    }
}

/// A comparison for [`filter_rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    /// Substring match on the value's text.
    Contains,
}

impl std::str::FromStr for Comparison {
    type Err = anyhow::Error;
    fn from_str(op: &str) -> Result<Self> {
        Ok(match op {
            "==" => Self::Eq,
            "!=" => Self::Ne,
            ">" => Self::Gt,
            ">=" => Self::Ge,
            "<" => Self::Lt,
            "<=" => Self::Le,
            "contains" => Self::Contains,
            _ => bail!("unknown comparison `{op}`; use one of == != > >= < <= contains"),
        })
    }
}

/// A value to compare a column with.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterValue {
    Number(f64),
    Text(String),
    Bool(bool),
}

/// The rows of `df` whose `column` compares to `value` as asked. Numbers compare numerically,
/// text lexically; nulls never match.
pub fn filter_rows(
    df: &DataFrame,
    column: &str,
    op: Comparison,
    value: &FilterValue,
) -> Result<DataFrame> {
    let col = df.column(column).map_err(|_| {
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|c| c.to_string())
            .collect();
        anyhow::anyhow!("no column `{column}`; columns are {}", names.join(", "))
    })?;
    use std::cmp::Ordering;
    let keep = |ord: Option<Ordering>, contains: bool| -> bool {
        match (op, ord) {
            (Comparison::Contains, _) => contains,
            (_, None) => false,
            (Comparison::Eq, Some(o)) => o == Ordering::Equal,
            (Comparison::Ne, Some(o)) => o != Ordering::Equal,
            (Comparison::Gt, Some(o)) => o == Ordering::Greater,
            (Comparison::Ge, Some(o)) => o != Ordering::Less,
            (Comparison::Lt, Some(o)) => o == Ordering::Less,
            (Comparison::Le, Some(o)) => o != Ordering::Greater,
        }
    };
    let mask: BooleanChunked = match value {
        FilterValue::Number(x) if op != Comparison::Contains => {
            let values = col
                .cast(&DataType::Float64)
                .map_err(|_| anyhow::anyhow!("column `{column}` is not numeric"))?;
            values
                .f64()?
                .iter()
                .map(|v| Some(keep(v.and_then(|v| v.partial_cmp(x)), false)))
                .collect()
        }
        FilterValue::Bool(b) if op != Comparison::Contains => {
            let values = col
                .cast(&DataType::Boolean)
                .map_err(|_| anyhow::anyhow!("column `{column}` is not boolean"))?;
            values
                .bool()?
                .iter()
                .map(|v| Some(keep(v.map(|v| v.cmp(b)), false)))
                .collect()
        }
        other => {
            let needle = match other {
                FilterValue::Text(s) => s.clone(),
                FilterValue::Number(x) => x.to_string(),
                FilterValue::Bool(b) => b.to_string(),
            };
            let values = col.cast(&DataType::String)?;
            values
                .str()?
                .iter()
                .map(|v| {
                    Some(v.is_some_and(|v| {
                        keep(Some(v.cmp(needle.as_str())), v.contains(needle.as_str()))
                    }))
                })
                .collect()
        }
    };
    Ok(df.filter(&mask)?)
}

#[cfg(test)]
mod filter_tests {
    use super::*;

    #[test]
    fn filters_numbers_text_and_substrings() {
        let df = df!("q" => ["bee", "wasp", "bumblebee"], "score" => [0.9, 0.2, 0.5]).unwrap();
        let f = |col: &str, op: &str, v: FilterValue| {
            filter_rows(&df, col, op.parse().unwrap(), &v)
                .unwrap()
                .height()
        };
        assert_eq!(f("score", ">", FilterValue::Number(0.4)), 2);
        assert_eq!(f("score", "<=", FilterValue::Number(0.2)), 1);
        assert_eq!(f("q", "==", FilterValue::Text("wasp".into())), 1);
        assert_eq!(f("q", "contains", FilterValue::Text("bee".into())), 2);
        assert!(filter_rows(&df, "nope", Comparison::Eq, &FilterValue::Bool(true)).is_err());
        assert!("~".parse::<Comparison>().is_err());
    }
}

//! Every function a script can call, registered together with its documentation so that
//! `help()` and the docs can never drift from what is callable. Each binding converts its
//! arguments, calls the Rust API, and converts the result back; nothing else.

use std::path::Path;
use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map};

use super::values::{Chart, Dataset, Embeddings, Encoder, Frame, Report};
use crate::data::{self, table};
use crate::eval::{self, RetrievalEvalOptions};
use crate::models::{EncodeOptions, LoadOptions, SentenceEncoder};

type Fallible<T> = Result<T, Box<EvalAltResult>>;

/// One binding's user-facing documentation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BindingDoc {
    pub name: &'static str,
    pub signature: &'static str,
    pub doc: &'static str,
}

/// The documentation of every binding, in registration order.
pub fn binding_docs() -> Vec<BindingDoc> {
    let mut docs = Vec::new();
    let mut engine = Engine::new_raw();
    register_all(&mut Registry {
        engine: &mut engine,
        docs: &mut docs,
    });
    docs
}

/// Registers every binding (and `help`) on `engine`.
pub fn register(engine: &mut Engine) {
    let mut docs = Vec::new();
    register_all(&mut Registry {
        engine,
        docs: &mut docs,
    });
    let listing: String = docs
        .iter()
        .map(|d| format!("{:<58} {}\n", d.signature, d.doc))
        .collect();
    let by_name = docs.clone();
    engine.register_fn("help", move || listing.clone());
    engine.register_fn("help", move |name: &str| -> Fallible<String> {
        let hits: Vec<String> = by_name
            .iter()
            .filter(|d| d.name == name)
            .map(|d| format!("{}\n    {}", d.signature, d.doc))
            .collect();
        if hits.is_empty() {
            return Err(format!("no binding named `{name}`; call help() for the list").into());
        }
        Ok(hits.join("\n"))
    });
}

struct Registry<'a> {
    engine: &'a mut Engine,
    docs: &'a mut Vec<BindingDoc>,
}

/// Registers a function and records its documentation in the same breath.
macro_rules! bind {
    ($r:expr, $name:expr, $signature:expr, $doc:expr, $func:expr $(,)?) => {{
        $r.engine.register_fn($name, $func);
        $r.docs.push($crate::script::bindings::BindingDoc {
            name: $name,
            signature: $signature,
            doc: $doc,
        });
    }};
}

// After the macro, so that these modules can use it.
mod mine;
mod train;

fn fail(e: anyhow::Error) -> Box<EvalAltResult> {
    format!("{e:#}").into()
}

fn options<T: serde::de::DeserializeOwned>(map: Map, what: &str) -> Fallible<T> {
    rhai::serde::from_dynamic(&Dynamic::from_map(map)).map_err(|e| format!("{what}: {e}").into())
}

fn strings(array: Array, what: &str) -> Fallible<Vec<String>> {
    array
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            v.into_string()
                .map_err(|t| format!("{what}[{i}] must be a string, found {t}").into())
        })
        .collect()
}

fn register_all(r: &mut Registry) {
    r.engine
        .register_type_with_name::<Frame>("Frame")
        .register_type_with_name::<Encoder>("Encoder")
        .register_type_with_name::<Embeddings>("Embeddings")
        .register_type_with_name::<Dataset>("Dataset")
        .register_type_with_name::<Report>("Report")
        .register_type_with_name::<Chart>("Chart");
    r.engine
        .register_fn("to_string", |v: &mut Frame| v.to_string());
    r.engine
        .register_fn("to_string", |v: &mut Encoder| v.to_string());
    r.engine
        .register_fn("to_string", |v: &mut Embeddings| v.to_string());
    r.engine
        .register_fn("to_string", |v: &mut Dataset| v.to_string());
    r.engine
        .register_fn("to_string", |v: &mut Report| v.to_string());
    r.engine
        .register_fn("to_string", |v: &mut Chart| v.to_string());
    r.engine
        .register_fn("to_debug", |v: &mut Frame| v.to_string());
    r.engine
        .register_fn("to_debug", |v: &mut Report| v.to_string());
    register_data(r);
    register_frames(r);
    register_models(r);
    register_eval(r);
    train::register(r);
    mine::register(r);
    bind!(
        r,
        "write_html",
        "chart.write_html(path: String)",
        "Writes a chart as a standalone HTML page (plotly).",
        |c: &mut Chart, path: &str| -> Fallible<()> {
            c.0.write_html(Path::new(path)).map_err(fail)
        },
    );
}

fn register_data(r: &mut Registry) {
    bind!(
        r,
        "load_beir",
        "load_beir(dir: String, split: String) -> Dataset",
        "Loads a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).",
        |dir: &str, split: &str| -> Fallible<Dataset> {
            data::load_beir(Path::new(dir), split)
                .map(|d| Dataset(Arc::new(d)))
                .map_err(fail)
        },
    );
    bind!(
        r,
        "load_llamaindex",
        "load_llamaindex(path: String) -> Dataset",
        "Loads a LlamaIndex EmbeddingQAFinetuneDataset JSON file.",
        |path: &str| -> Fallible<Dataset> {
            data::load_llamaindex(Path::new(path))
                .map(|d| Dataset(Arc::new(d)))
                .map_err(fail)
        },
    );
    bind!(
        r,
        "write_beir",
        "write_beir(data: Dataset, dir: String, split: String)",
        "Writes a dataset as a BEIR folder.",
        |d: &mut Dataset, dir: &str, split: &str| -> Fallible<()> {
            data::write_beir(&d.0, Path::new(dir), split).map_err(fail)
        },
    );
    bind!(
        r,
        "write_llamaindex",
        "write_llamaindex(data: Dataset, path: String)",
        "Writes a dataset as LlamaIndex EmbeddingQAFinetuneDataset JSON.",
        |d: &mut Dataset, path: &str| -> Fallible<()> {
            data::write_llamaindex(&d.0, Path::new(path)).map_err(fail)
        },
    );
    bind!(
        r,
        "read_table",
        "read_table(path: String) -> Frame",
        "Reads a .jsonl, .csv, .tsv or .parquet file into a DataFrame.",
        |path: &str| -> Fallible<Frame> {
            data::read_table(Path::new(path)).map(Frame).map_err(fail)
        },
    );
    bind!(
        r,
        "split_queries",
        "split_queries(data: Dataset, dev_fraction: float, seed: int) -> [Dataset, Dataset]",
        "Splits the judged queries at random into [train, dev] (about dev_fraction of them in dev); both keep the corpus.",
        |d: Dataset, fraction: f64, seed: i64| -> Fallible<Array> {
            let (train, dev) = d.0.split_queries(fraction, seed as u64).map_err(fail)?;
            Ok(vec![Dynamic::from(Dataset(Arc::new(train))), Dynamic::from(Dataset(Arc::new(dev)))])
        },
    );
    r.engine
        .register_get("corpus", |d: &mut Dataset| Frame(d.0.corpus.clone()));
    r.engine
        .register_get("queries", |d: &mut Dataset| Frame(d.0.queries.clone()));
    r.engine
        .register_get("qrels", |d: &mut Dataset| Frame(d.0.qrels.clone()));
    r.engine
        .register_get("name", |d: &mut Dataset| d.0.name.clone());
    r.docs.push(BindingDoc {
        name: "corpus",
        signature: "data.corpus / data.queries / data.qrels -> Frame",
        doc: "The dataset's frames (doc_id,title,body,text / query_id,text / query_id,doc_id,score).",
    });
}

fn register_frames(r: &mut Registry) {
    bind!(
        r,
        "head",
        "frame.head(n: int) -> Frame",
        "The first n rows.",
        |f: &mut Frame, n: i64| { Frame(f.0.head(Some(n.max(0) as usize))) }
    );
    bind!(
        r,
        "tail",
        "frame.tail(n: int) -> Frame",
        "The last n rows.",
        |f: &mut Frame, n: i64| { Frame(f.0.tail(Some(n.max(0) as usize))) }
    );
    bind!(
        r,
        "shape",
        "frame.shape() -> [rows, columns]",
        "Row and column counts.",
        |f: &mut Frame| {
            let (h, w) = f.0.shape();
            vec![Dynamic::from(h as i64), Dynamic::from(w as i64)]
        }
    );
    bind!(
        r,
        "len",
        "frame.len() -> int",
        "Number of rows.",
        |f: &mut Frame| f.0.height() as i64
    );
    bind!(
        r,
        "columns",
        "frame.columns() -> [String]",
        "Column names.",
        |f: &mut Frame| {
            f.0.get_column_names()
                .iter()
                .map(|c| Dynamic::from(c.to_string()))
                .collect::<Array>()
        }
    );
    bind!(
        r,
        "column",
        "frame.column(name: String) -> Array",
        "One column's values as an array (strings, numbers or booleans).",
        |f: &mut Frame, name: &str| -> Fallible<Array> {
            let col = f.0.column(name).map_err(|e| e.to_string())?;
            let series = col.as_materialized_series();
            Ok(series.iter().map(|v| any_value(&v)).collect())
        },
    );
    bind!(
        r,
        "filter",
        "frame.filter(column: String, op: String, value) -> Frame",
        "Rows where `column op value` holds; op is one of == != > >= < <= contains.",
        |f: &mut Frame, column: &str, op: &str, value: Dynamic| -> Fallible<Frame> {
            let op = op.parse().map_err(fail)?;
            let value = if let Ok(i) = value.as_int() {
                table::FilterValue::Number(i as f64)
            } else if let Ok(x) = value.as_float() {
                table::FilterValue::Number(x)
            } else if let Ok(b) = value.as_bool() {
                table::FilterValue::Bool(b)
            } else {
                table::FilterValue::Text(value.to_string())
            };
            table::filter_rows(&f.0, column, op, &value)
                .map(Frame)
                .map_err(fail)
        },
    );
    bind!(
        r,
        "write",
        "frame.write(path: String)",
        "Writes the frame as .jsonl, .csv, .tsv or .parquet (by extension).",
        |f: &mut Frame, path: &str| -> Fallible<()> {
            data::write_table(&f.0, Path::new(path)).map_err(fail)
        },
    );
}

fn any_value(v: &polars::prelude::AnyValue) -> Dynamic {
    use polars::prelude::AnyValue as V;
    match v {
        V::Null => Dynamic::UNIT,
        V::Boolean(b) => Dynamic::from(*b),
        V::String(s) => Dynamic::from(s.to_string()),
        V::StringOwned(s) => Dynamic::from(s.to_string()),
        V::Int8(_)
        | V::Int16(_)
        | V::Int32(_)
        | V::Int64(_)
        | V::UInt8(_)
        | V::UInt16(_)
        | V::UInt32(_)
        | V::UInt64(_) => v
            .extract::<i64>()
            .map(Dynamic::from)
            .unwrap_or(Dynamic::UNIT),
        V::Float32(_) | V::Float64(_) => v
            .extract::<f64>()
            .map(Dynamic::from)
            .unwrap_or(Dynamic::UNIT),
        other => Dynamic::from(other.to_string()),
    }
}

fn register_models(r: &mut Registry) {
    bind!(
        r,
        "load_encoder",
        "load_encoder(model: String) -> Encoder",
        "Loads a sentence encoder from a local folder or a hub id (owner/name[@revision]).",
        |model: &str| -> Fallible<Encoder> {
            SentenceEncoder::load(model, &LoadOptions::default())
                .map(|e| Encoder(Arc::new(e)))
                .map_err(fail)
        },
    );
    bind!(
        r,
        "encode",
        "encoder.encode(texts: [String]) -> Embeddings",
        "Sentence embeddings of the texts, in order.",
        |e: &mut Encoder, texts: Array| -> Fallible<Embeddings> {
            let texts = strings(texts, "texts")?;
            e.0.encode(&texts, &EncodeOptions::default())
                .map(Embeddings)
                .map_err(fail)
        },
    );
    bind!(
        r,
        "encode",
        "encoder.encode(texts: [String], options: #{batch_size, progress}) -> Embeddings",
        "As encode(texts), with options.",
        |e: &mut Encoder, texts: Array, opts: Map| -> Fallible<Embeddings> {
            let texts = strings(texts, "texts")?;
            let opts: EncodeOptions = options(opts, "encode options")?;
            e.0.encode(&texts, &opts).map(Embeddings).map_err(fail)
        },
    );
    bind!(
        r,
        "shape",
        "embeddings.shape() -> [rows, dim]",
        "Rows and width of an embedding matrix.",
        |e: &mut Embeddings| e
            .0
            .dims()
            .iter()
            .map(|&d| Dynamic::from(d as i64))
            .collect::<Array>(),
    );
    bind!(
        r,
        "write",
        "embeddings.write(path: String)",
        "Writes embeddings as .npy (float32) or, for .parquet/.jsonl, a one-column table `embedding`.",
        |e: &mut Embeddings, path: &str| -> Fallible<()> {
            data::embeddings::write_embeddings(&e.0, Path::new(path)).map_err(fail)
        },
    );
}

fn register_eval(r: &mut Registry) {
    bind!(
        r,
        "evaluate",
        "evaluate(encoder: Encoder, data: Dataset) -> Report",
        "Retrieval metrics (accuracy, precision, recall, mrr, ndcg, map @ 1,3,5,10,100).",
        |e: Encoder, d: Dataset| -> Fallible<Report> {
            eval::evaluate_encoder(&e.0, &d.0, &RetrievalEvalOptions::default())
                .map(|r| Report(Arc::new(r)))
                .map_err(fail)
        },
    );
    bind!(
        r,
        "evaluate",
        "evaluate(encoder: Encoder, data: Dataset, options: #{ks, batch_size, progress}) -> Report",
        "As evaluate(encoder, data), with options.",
        |e: Encoder, d: Dataset, opts: Map| -> Fallible<Report> {
            let opts: RetrievalEvalOptions = options(opts, "evaluate options")?;
            eval::evaluate_encoder(&e.0, &d.0, &opts)
                .map(|r| Report(Arc::new(r)))
                .map_err(fail)
        },
    );
    bind!(
        r,
        "compare",
        "compare(models: [String], data: Dataset) -> Frame",
        "Evaluates several models side by side; one column per model (plus delta for two).",
        |models: Array, d: Dataset| -> Fallible<Frame> {
            let models = strings(models, "models")?;
            let refs: Vec<&str> = models.iter().map(String::as_str).collect();
            let reports = eval::compare_models(
                &refs,
                &d.0,
                &LoadOptions::default(),
                &RetrievalEvalOptions::default(),
            )
            .map_err(fail)?;
            eval::comparison_frame(&reports).map(Frame).map_err(fail)
        },
    );
    bind!(
        r,
        "metrics",
        "report.metrics() -> Map",
        "The mean metrics as a map keyed `<metric>@<k>` (e.g. \"ndcg@10\").",
        |rep: &mut Report| rep
            .0
            .metrics
            .iter()
            .map(|(k, v)| (k.as_str().into(), Dynamic::from(*v)))
            .collect::<Map>(),
    );
    bind!(
        r,
        "table",
        "report.table() -> Frame",
        "The metrics as a frame (metric × cut-off).",
        |rep: &mut Report| -> Fallible<Frame> { rep.0.to_frame().map(Frame).map_err(fail) }
    );
    bind!(
        r,
        "per_query",
        "report.per_query() -> Frame",
        "One row per query with its own metrics.",
        |rep: &mut Report| -> Fallible<Frame> { rep.0.per_query_frame().map(Frame).map_err(fail) },
    );
}

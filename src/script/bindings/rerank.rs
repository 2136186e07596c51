//! Script bindings of the reranker stage: loading a cross-encoder, scoring and ranking with it,
//! mining with it as a rescorer, and retriever-vs-reranked evaluation. Training is `train_reranker`
//! (train.rs).

use std::sync::Arc;

use rhai::{Array, Map};

use super::{fail, options, strings, Fallible, Registry};
use crate::eval::{evaluate_reranker, Candidates, RerankEvalOptions};
use crate::mine::{mine_hard_negatives, MineOptions};
use crate::models::{CrossEncoder, CrossEncoderOptions, LoadOptions, PredictOptions};
use crate::script::values::{Chart, Dataset, Encoder, Frame, MinedNegatives, RerankEval, Reranker};

fn load(model: &str, opts: Map) -> Fallible<Reranker> {
    let opts: CrossEncoderOptions = options(opts, "load_reranker options")?;
    CrossEncoder::load(model, &LoadOptions::default(), &opts)
        .map(|m| Reranker(Arc::new(m)))
        .map_err(fail)
}

pub(super) fn register(r: &mut Registry) {
    r.value::<Reranker>("Reranker");
    r.value::<RerankEval>("RerankEval");
    bind!(
        r,
        "load_reranker",
        "load_reranker(model: String) -> Reranker",
        "Loads a cross-encoder (a sequence-classification folder or hub id); a BERT or sentence-transformers model \
         gets a fresh one-label head, as CrossEncoder(model, num_labels=1).",
        example: "let ce = load_reranker(\"runs/reranker\"); print(ce)",
        |model: &str| load(model, Map::new()),
    );
    bind!(
        r,
        "load_reranker",
        "load_reranker(model: String, options: #{max_length, num_labels, seed}) -> Reranker",
        "As load_reranker(model), truncating pairs at `max_length` tokens; `num_labels` and `seed` shape a fresh head.",
        |model: &str, opts: Map| load(model, opts),
    );
    bind!(
        r,
        "rerank",
        "reranker.rerank(query: String, documents: [String]) -> Frame",
        "The documents ranked by the reranker for the query, best first: columns rank, index (into the list), \
         document, score (after the model's activation, as CrossEncoder.rank).",
        example: "ce.rerank(\"what do bees make\", [\"wax\", \"honey and wax\", \"stocks\"])",
        |m: &mut Reranker, query: &str, docs: Array| -> Fallible<Frame> {
            let docs = strings(docs, "documents")?;
            let ranked = m
                .0
                .rank(query, &docs, None, &PredictOptions { progress: false, ..Default::default() })
                .map_err(fail)?;
            let frame = polars::prelude::df!(
                "rank" => (1..=ranked.len() as u32).collect::<Vec<_>>(),
                "index" => ranked.iter().map(|r| r.0 as u32).collect::<Vec<_>>(),
                "document" => ranked.iter().map(|r| docs[r.0].clone()).collect::<Vec<_>>(),
                "score" => ranked.iter().map(|r| r.1).collect::<Vec<_>>(),
            )
            .map_err(|e| fail(e.into()))?;
            Ok(Frame(frame))
        },
    );
    bind!(
        r,
        "score",
        "reranker.score(pairs: Frame) -> Frame",
        "Scores rows {query, document} (adds `score`) or {query, documents: [...]} (adds `scores`), as `ragtune rerank`.",
        example: "ce.score(mined.frame).head(3)",
        |m: &mut Reranker, pairs: Frame| -> Fallible<Frame> {
            m.0.score_frame(&pairs.0, "the frame", &PredictOptions::default())
                .map(Frame)
                .map_err(fail)
        },
    );
    bind!(
        r,
        "evaluate_reranker",
        "evaluate_reranker(retriever: Encoder, reranker: Reranker, data: Dataset, options: #{top_k, ks, include_positives, batch_size, fusion}) -> RerankEval",
        "Retrieves each judged query's top_k (100) with the retriever, reranks them, and reports retriever vs reranked \
         side by side (a relevant document the retriever missed stays missed unless include_positives). `fusion: w` \
         ranks by w·z(retriever) + (1−w)·z(reranker) per query (choose w on held-out queries: every report holds \
         NDCG@10 at w = 0, 0.1, …, 1); unset, a reranker trained with a `fusion` hold-out fuses at the weight \
         it saved (fusion: 0 for the reranker alone).",
        example: "let report = evaluate_reranker(tuned, load_reranker(\"runs/reranker\"), dev, #{top_k: 50}); display(report); display(report.chart())",
        |retriever: Encoder, reranker: Reranker, data: Dataset, opts: Map| -> Fallible<RerankEval> {
            let opts: RerankEvalOptions = options(opts, "evaluate_reranker options")?;
            let candidates = Candidates::retrieve(&retriever.0, &data.0, &opts).map_err(fail)?;
            evaluate_reranker(&reranker.0, &candidates, &opts)
                .map(|r| RerankEval(Arc::new(r)))
                .map_err(fail)
        },
    );
    bind!(
        r,
        "metrics",
        "report.metrics() -> Map",
        "#{retriever: #{\"ndcg@10\": …}, reranked: #{…}} of a reranking evaluation.",
        |e: &mut RerankEval| -> Fallible<Map> {
            rhai::serde::to_dynamic(e.0.metrics_json())?
                .try_cast::<Map>()
                .ok_or_else(|| "metrics are not a map".into())
        },
    );
    bind!(
        r,
        "chart",
        "report.chart() -> Chart",
        "Retriever vs reranked as grouped bars of MAP, MRR@10, NDCG@10, recall@10 and precision@5.",
        |e: &mut RerankEval| Chart(e.0.chart()),
    );
    bind!(
        r,
        "table",
        "report.table() -> Frame",
        "One row per metric: retriever, reranked, delta.",
        |e: &mut RerankEval| -> Fallible<Frame> { e.0.to_frame().map(Frame).map_err(fail) },
    );
    bind!(
        r,
        "rows",
        "report.rows() -> Frame",
        "Every (query, candidate) with its relevance, retriever and reranker scores and ranks, for inspection.",
        |e: &mut RerankEval| Frame(e.0.rows.clone()),
    );
    bind!(
        r,
        "mine",
        "mine(encoder: Encoder, pairs: Frame, corpus: Dataset, rescorer: Reranker, options: #{…}) -> MinedNegatives",
        "Hard negatives from a dataset's corpus, candidates and positives rescored by a cross-encoder when max_score \
         or a margin is set (sentence-transformers' cross_encoder=).",
        |e: Encoder, pairs: Frame, corpus: Dataset, rescorer: Reranker, opts: Map| -> Fallible<MinedNegatives> {
            let opts: MineOptions = options(opts, "mine options")?;
            let texts = corpus.0.doc_texts().map_err(fail)?;
            mine_hard_negatives(&e.0, &pairs.0, Some(&texts), &opts, Some(rescorer.0.as_ref()))
                .map(|m| MinedNegatives(Arc::new(m)))
                .map_err(fail)
        },
    );
}

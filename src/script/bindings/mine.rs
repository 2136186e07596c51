//! Script bindings of hard-negative mining.

use std::sync::Arc;

use rhai::{Array, Map};

use super::{fail, options, strings, Fallible, Registry};
use crate::mine::{mine_hard_negatives, MineOptions};
use crate::script::values::{Chart, Dataset, Encoder, Frame, MinedNegatives};

fn run(
    e: &Encoder,
    pairs: &Frame,
    corpus: Option<Vec<String>>,
    opts: Map,
) -> Fallible<MinedNegatives> {
    let opts: MineOptions = options(opts, "mine options")?;
    mine_hard_negatives(&e.0, &pairs.0, corpus.as_deref(), &opts, None)
        .map(|m| MinedNegatives(Arc::new(m)))
        .map_err(fail)
}

pub(super) fn register(r: &mut Registry) {
    r.value::<MinedNegatives>("MinedNegatives");
    bind!(
        r,
        "mine",
        "mine(encoder: Encoder, pairs: Frame, options: #{…}) -> MinedNegatives",
        "Hard negatives for the (query, positive) pairs in the frame's first two columns, from the other pairs' positives.",
        example: "let mined = mine(base, training_pairs(data), data, #{num_negatives: 3, range_max: 50, output_format: \"triplet\"}); print(mined); mined.frame.head(3)",
        |e: Encoder, pairs: Frame, opts: Map| -> Fallible<MinedNegatives> { run(&e, &pairs, None, opts) },
    );
    bind!(
        r,
        "mine",
        "mine(encoder: Encoder, pairs: Frame, corpus: Dataset, options: #{…}) -> MinedNegatives",
        "Hard negatives from a dataset's corpus. Options: num_negatives, range_min, range_max, max_score, min_score, \
         absolute_margin, relative_margin, sampling (\"top\"/\"random\"), output_format (\"triplet\", \"n_tuple\", \
         \"n_tuple_scores\", \"labeled_pair\", \"labeled_list\"), seed, batch_size, cache_dir, progress.",
        |e: Encoder, pairs: Frame, corpus: Dataset, opts: Map| -> Fallible<MinedNegatives> {
            let texts = corpus.0.doc_texts().map_err(fail)?;
            run(&e, &pairs, Some(texts), opts)
        },
    );
    bind!(
        r,
        "mine",
        "mine(encoder: Encoder, pairs: Frame, corpus: [String], options: #{…}) -> MinedNegatives",
        "Hard negatives from a list of candidate texts.",
        |e: Encoder, pairs: Frame, corpus: Array, opts: Map| -> Fallible<MinedNegatives> {
            run(&e, &pairs, Some(strings(corpus, "corpus")?), opts)
        },
    );
    r.engine
        .register_get("frame", |m: &mut MinedNegatives| Frame(m.0.frame.clone()));
    r.engine.register_get("summary", |m: &mut MinedNegatives| {
        Frame(m.0.summary.clone())
    });
    bind!(
        r,
        "chart",
        "mined.chart() -> Chart",
        "Histogram of positive vs negative similarity scores.",
        example: "display(run.chart())",
        |m: &mut MinedNegatives| Chart(m.0.chart()),
    );
}

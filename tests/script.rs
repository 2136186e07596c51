//! Recipes drive the Rust API through the Rhai bindings: datasets, frames, encoders, evaluation.

mod common;

use ragtune::script::{binding_docs, Session};

fn beir(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    std::fs::write(
        dir.join("corpus.jsonl"),
        "{\"_id\": \"d1\", \"title\": \"Queen\", \"text\": \"the queen lays eggs\"}\n{\"_id\": \"d2\", \"text\": \"bees make honey\"}\n{\"_id\": \"d3\", \"text\": \"mites\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("queries.jsonl"),
        "{\"_id\": \"q1\", \"text\": \"bees make honey\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("qrels/dev.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td2\t1\n",
    )
    .unwrap();
}

#[test]
fn a_recipe_loads_inspects_encodes_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(&tmp.path().join("m"), 16);
    beir(&tmp.path().join("b"));
    let mut s = Session::new();
    s.set_var("model", Session::parse_value(model.to_str().unwrap()));
    s.set_var(
        "dir",
        Session::parse_value(tmp.path().join("b").to_str().unwrap()),
    );
    s.set_var(
        "out",
        Session::parse_value(tmp.path().join("corpus.parquet").to_str().unwrap()),
    );
    let script = r#"
        let data = load_beir(dir, "dev");
        let shape = data.corpus.shape();
        let titles = data.corpus.column("title");
        let hits = data.corpus.filter("text", "contains", "honey");
        hits.write(out);
        let enc = load_encoder(model);
        let emb = enc.encode(["bees", "wax comb"], #{ batch_size: 1, progress: false });
        let report = evaluate(enc, data, #{ ks: [1, 3], progress: false });
        let m = report.metrics();
        [shape[0], shape[1], titles[0], hits.len(), emb.shape()[1], m["recall@3"], m.len()]
    "#;
    let result = s.eval(script, "recipe.rhai").unwrap().into_array().unwrap();
    assert_eq!(result[0].as_int().unwrap(), 3);
    assert_eq!(result[1].as_int().unwrap(), 4, "doc_id, title, body, text");
    assert_eq!(result[2].clone().into_string().unwrap(), "Queen");
    assert_eq!(result[3].as_int().unwrap(), 1);
    assert_eq!(result[4].as_int().unwrap(), 8);
    assert_eq!(
        result[5].as_float().unwrap(),
        1.0,
        "recall@3 over a 3-document corpus"
    );
    assert_eq!(result[6].as_int().unwrap(), 12, "6 metrics × 2 cut-offs");
    let written = ragtune::data::read_table(&tmp.path().join("corpus.parquet")).unwrap();
    assert_eq!(written.height(), 1);

    // Variables persist between inputs, as the REPL and notebooks will rely on.
    let table = s
        .eval("report.table().to_string()", "cell")
        .unwrap()
        .into_string()
        .unwrap();
    assert!(table.contains("ndcg") && table.contains("@3"), "{table}");
    let printed = s
        .eval("report.to_string()", "cell")
        .unwrap()
        .into_string()
        .unwrap();
    assert!(printed.contains("1 queries, 3 documents"), "{printed}");
}

#[test]
fn option_maps_reject_unknown_keys_and_help_documents_bindings() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(&tmp.path().join("m"), 16);
    let mut s = Session::new();
    s.set_var("model", Session::parse_value(model.to_str().unwrap()));
    let err = s
        .eval(
            "let e = load_encoder(model);\ne.encode([\"x\"], #{ batch: 4 })",
            "opts.rhai",
        )
        .unwrap_err();
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("batch"), "{err}");

    let listing = s.eval("help()", "h").unwrap().into_string().unwrap();
    for doc in binding_docs() {
        assert!(
            listing.contains(doc.signature),
            "help() lacks {}",
            doc.signature
        );
    }
    assert!(binding_docs().len() >= 15);
    let one = s
        .eval("help(\"evaluate\")", "h")
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        one.contains("evaluate(encoder: Encoder, data: Dataset) -> Report"),
        "{one}"
    );
    assert!(s.eval("help(\"nope\")", "h").is_err());
}

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

/// A session with these path variables set.
fn session(vars: &[(&str, &std::path::Path)]) -> Session {
    let mut s = Session::new();
    for (name, path) in vars {
        s.set_var(name, Session::parse_value(path.to_str().unwrap()));
    }
    s
}

#[test]
fn a_recipe_loads_inspects_encodes_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(&tmp.path().join("m"), 16);
    beir(&tmp.path().join("b"));
    let mut s = session(&[
        ("model", model.as_path()),
        ("dir", &tmp.path().join("b")),
        ("out", &tmp.path().join("corpus.parquet")),
    ]);
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

/// A BEIR folder of bee-vocabulary documents and queries, each query relevant to one document.
fn bee_beir(dir: &std::path::Path) {
    let words = [
        "bee", "honey", "queen", "hive", "wax", "mite", "swarm", "comb", "brood",
    ];
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    let mut corpus = String::new();
    let mut queries = String::new();
    let mut qrels = String::from("query-id\tcorpus-id\tscore\n");
    for i in 0..12 {
        let doc = format!(
            "the {} of the {} and {}",
            words[i % 9],
            words[(i + 2) % 9],
            words[(i * 5) % 9]
        );
        corpus.push_str(&format!("{{\"_id\": \"d{i}\", \"text\": \"{doc}\"}}\n"));
        queries.push_str(&format!(
            "{{\"_id\": \"q{i}\", \"text\": \"what {} {}\"}}\n",
            words[i % 9],
            words[(i * 5) % 9]
        ));
        qrels.push_str(&format!("q{i}\td{i}\t1\n"));
    }
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(dir.join("queries.jsonl"), queries).unwrap();
    std::fs::write(dir.join("qrels/all.tsv"), qrels).unwrap();
}

/// The shipped reranker recipe, run as a user would on a small corpus with its defaults
/// (all-MiniLM-L6-v2 as retriever and as the reranker's start; a random tiny model mines no
/// negatives under the recipe's max_score): it mines, trains, and writes the model, both charts
/// and the embedding cache that mining and training share.
#[test]
fn the_reranker_recipe_runs_end_to_end() {
    if common::skip_without_minilm() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    bee_beir(&tmp.path().join("b"));
    let out = tmp.path().join("out");
    let mut s = session(&[("beir", &tmp.path().join("b")), ("output", &out)]);
    s.set_var("split", Session::parse_value("all"));
    s.set_var("top_k", Session::parse_value("5"));
    let last = s
        .run_file(std::path::Path::new("recipes/reranker.rhai"))
        .unwrap();
    assert!(last.is_unit(), "the recipe ends in a print");
    for file in [
        "model/config_sentence_transformers.json",
        "model/train_log.jsonl",
        "training.html",
        "retriever-vs-reranked.html",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let cached = std::fs::read_dir(out.join("embedding-cache"))
        .unwrap()
        .count();
    assert!(cached > 0, "mining cached no embeddings");
}

#[test]
fn a_recipe_splits_mines_trains_and_compares() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(&tmp.path().join("m"), 16);
    bee_beir(&tmp.path().join("b"));
    let mut s = session(&[
        ("model", model.as_path()),
        ("dir", &tmp.path().join("b")),
        ("out", &tmp.path().join("run")),
    ]);
    let summary = s
        .eval(
            r#"
            let parts = split_queries(load_beir(dir, "all"), 0.25, 7);
            let train_set = parts[0];
            let dev = parts[1];
            let mined = mine(load_encoder(model), training_pairs(train_set), train_set,
                             #{ num_negatives: 2, range_min: 1, max_score: 0.99, output_format: "n_tuple" });
            let run = train(model, mined.frame, #{ output: out, loss: #{ name: "mnrl", scale: 10.0 },
                            max_steps: 2, batch_size: 4, lr: 0.01, dev: dev, progress: false });
            let table = compare([model, run.output], dev);
            [train_set.queries.len(), dev.queries.len(), mined.frame.columns(), run.summary(), table.len(), run.log().len()]
            "#,
            "pipeline.rhai",
        )
        .unwrap()
        .into_array()
        .unwrap();
    assert_eq!(
        summary[0].as_int().unwrap(),
        9,
        "12 queries, a quarter held out"
    );
    assert_eq!(summary[1].as_int().unwrap(), 3);
    let columns: Vec<String> = summary[2]
        .clone()
        .into_array()
        .unwrap()
        .into_iter()
        .map(|c| c.into_string().unwrap())
        .collect();
    assert_eq!(columns, ["anchor", "positive", "negative_1", "negative_2"]);
    let run = summary[3].clone().cast::<rhai::Map>();
    assert_eq!(run["steps"].as_int().unwrap(), 2);
    assert!(run["dev_before"].is_map() && run["dev_after"].is_map());
    assert_eq!(summary[4].as_int().unwrap(), 30, "one row per metric@k");
    assert_eq!(summary[5].as_int().unwrap(), 4, "eval, 2 loss lines, eval");
    assert!(tmp.path().join("run/model.safetensors").is_file());

    // Unknown training keys and wrong option types are named.
    let err = s
        .eval(
            r#"train(model, mined.frame, #{ output: out + "2", epoch: 3 })"#,
            "t.rhai",
        )
        .unwrap_err();
    assert!(err.message.contains("epoch"), "{err}");
    let err = s
        .eval(r#"train(model, mined.frame, #{ epochs: 1 })"#, "t.rhai")
        .unwrap_err();
    assert!(err.message.contains("output"), "{err}");
    let err = s
        .eval(
            r#"mine(load_encoder(model), mined.frame, #{ negatives: 2 })"#,
            "m.rhai",
        )
        .unwrap_err();
    assert!(err.message.contains("negatives"), "{err}");
}

#[test]
fn a_recipe_trains_and_evaluates_a_reranker() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(&tmp.path().join("m"), 16);
    bee_beir(&tmp.path().join("b"));
    let mut s = session(&[
        ("model", model.as_path()),
        ("dir", &tmp.path().join("b")),
        ("out", &tmp.path().join("reranker")),
    ]);
    let result = s
        .eval(
            r#"
            let parts = split_queries(load_beir(dir, "all"), 0.25, 7);
            let retriever = load_encoder(model);
            let mined = mine(retriever, training_pairs(parts[0]), parts[0],
                             #{ num_negatives: 2, range_min: 1, output_format: "labeled_pair" });
            let run = train_reranker(model, mined.frame, #{ output: out, loss: #{ name: "bce", pos_weight: 2.0 },
                                     max_steps: 3, batch_size: 4, lr: 0.01, dev: parts[1], retriever: retriever,
                                     dev_top_k: 5, progress: false });
            let ce = run.reranker;
            let report = evaluate_reranker(retriever, ce, parts[1], #{ top_k: 5, ks: [1, 5], progress: false });
            let ranked = ce.rerank("what bee", ["the hive", "the bee of the comb", "wax"]);
            let rescored = mine(retriever, training_pairs(parts[0]), parts[0], load_reranker(out),
                                #{ num_negatives: 1, max_score: 0.99, progress: false });
            [run.summary(), report.metrics(), report.table().len(), ranked.len(), ranked.columns(),
             ce.score(mined.frame).columns(), rescored.frame.len(), to_string(ce)]
            "#,
            "reranker.rhai",
        )
        .unwrap()
        .into_array()
        .unwrap();
    let summary = result[0].clone().cast::<rhai::Map>();
    assert_eq!(summary["steps"].as_int().unwrap(), 3);
    assert!(summary["dev_before"].is_map() && summary["dev_after"].is_map());
    assert_eq!(
        summary["loss"].clone().into_string().unwrap(),
        "BinaryCrossEntropyLoss"
    );
    let metrics = result[1].clone().cast::<rhai::Map>();
    assert!(metrics["retriever"].is_map() && metrics["reranked"].is_map());
    assert_eq!(
        result[2].as_int().unwrap(),
        12,
        "6 metric families at 2 cut-offs"
    );
    assert_eq!(result[3].as_int().unwrap(), 3);
    assert!(format!("{:?}", result[4]).contains("score"));
    assert!(format!("{:?}", result[5]).contains("\"score\""));
    assert!(result[6].as_int().unwrap() > 0);
    assert!(result[7]
        .clone()
        .into_string()
        .unwrap()
        .starts_with("Reranker("));
    assert!(tmp
        .path()
        .join("reranker/config_sentence_transformers.json")
        .is_file());

    // The fusion weight, chosen on held-out queries (here a split apart from training: every
    // query of it, fusion_every 1) and saved beside the model; the retrieval cached as asked.
    let fused = s
        .eval(
            r#"
            let run = train_reranker(model, mined.frame, #{ output: out + "3", max_steps: 1, batch_size: 4,
                                     retriever: retriever, fusion: parts[1], fusion_every: 1,
                                     fusion_top_k: 5, cache_dir: out + "-cache", progress: false });
            [run.summary(), to_string(run)]
            "#,
            "fused.rhai",
        )
        .unwrap()
        .into_array()
        .unwrap();
    let summary = fused[0].clone().cast::<rhai::Map>();
    let choice = summary["fusion"].clone().cast::<rhai::Map>();
    let w = choice["retriever_weight"].as_float().unwrap();
    assert!((0.0..=1.0).contains(&w), "{w}");
    assert!(choice["queries"].as_int().unwrap() > 0);
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("reranker3/fusion.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["retriever_weight"].as_f64(), Some(w));
    // The held-out retrieval kept the retriever's embeddings where `cache_dir` said.
    let cached = std::fs::read_dir(tmp.path().join("reranker-cache"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(cached > 0, "no embeddings cached");
    assert!(
        fused[1]
            .clone()
            .into_string()
            .unwrap()
            .contains("fusion weight"),
        "{:?}",
        fused[1]
    );

    // A reranker run has no encoder, and a loss setting of another loss is named.
    let err = s.eval("run.encoder", "r.rhai").unwrap_err();
    assert!(err.message.contains("run.reranker"), "{err}");
    let err = s
        .eval(
            r#"train_reranker(model, mined.frame, #{ output: out + "2", loss: #{ name: "list_net", pos_weight: 2 } })"#,
            "r.rhai",
        )
        .unwrap_err();
    assert!(err.message.contains("pos_weight"), "{err}");
}

#[test]
fn a_recipe_turns_documents_into_pairs_with_a_local_model_and_ict() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("bees.md"),
        "# Bees\n\nWorkers are sterile females. Young workers nurse the brood. The oldest bees forage outside.\n\n\
         Drones are males. They mate with queens on mating flights. Drones die after mating.",
    )
    .unwrap();
    std::fs::write(
        docs.join("hive.txt"),
        "A hive holds frames. Frames hold comb. Comb stores honey and pollen.",
    )
    .unwrap();
    let llm = common::tiny_llama_dir();
    let mut s = session(&[
        ("docs", &docs),
        ("llm_dir", &llm),
        ("out", &tmp.path().join("pairs.json")),
    ]);
    let script = r#"
        let frame = load_documents(docs);
        let chunks = chunk(frame, #{chunk_size: 40, chunk_overlap: 0, tokenizer: llm_dir});
        let ict = synth_queries(chunks, "ict", #{per_chunk: 2, progress: false});
        write_llamaindex(ict.dataset(), out);
        let model = load_llm(`local:${llm_dir}`, #{q8_decode: false});
        let answer = model.generate("The queen", #{max_tokens: 3});
        let parts = split_by_document(chunks, 0.5, 1);
        [frame.len(), chunks.len(), ict.frame.columns(), ict.pairs.columns(), type_of(answer), parts[0].len() + parts[1].len()]
    "#;
    let r = s
        .eval(script, "synthetic.rhai")
        .unwrap()
        .into_array()
        .unwrap();
    assert_eq!(r[0].as_int().unwrap(), 2);
    let chunks = r[1].as_int().unwrap();
    assert!(chunks >= 3, "{chunks} chunks");
    let cols = |v: &rhai::Dynamic| -> Vec<String> {
        v.clone()
            .into_array()
            .unwrap()
            .into_iter()
            .map(|c| c.into_string().unwrap())
            .collect()
    };
    assert_eq!(
        cols(&r[2]),
        vec!["query", "positive", "chunk_id", "generator"]
    );
    assert_eq!(cols(&r[3]), vec!["query", "positive"]);
    assert_eq!(r[4].clone().into_string().unwrap(), "string");
    assert_eq!(r[5].as_int().unwrap(), chunks);
    let written = ragtune::data::load_llamaindex(&tmp.path().join("pairs.json")).unwrap();
    assert!(written.queries.height() >= 3);

    // Bad options are named; an unknown generator says what to use.
    let err = s
        .eval(r#"synth_queries(chunks, "poetry", #{})"#, "cell")
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"ict\", \"crop\""), "{err}");
    let err = s
        .eval(r#"chunk(frame, #{chunk_sise: 10})"#, "cell")
        .unwrap_err()
        .to_string();
    assert!(err.contains("chunk_sise"), "{err}");
}

#[test]
fn a_recipe_fine_tunes_a_generator_with_lora_and_chats_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: String = (0..8)
        .map(|i| {
            serde_json::json!({"messages": [
                {"role": "user", "content": format!("What is {i} plus one?")},
                {"role": "assistant", "content": format!("It is {}.", i + 1)}]})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(tmp.path().join("sft.jsonl"), rows).unwrap();
    let llm = common::tiny_llama_dir();
    let mut s = session(&[
        ("data", &tmp.path().join("sft.jsonl")),
        ("llm_dir", &llm),
        ("out", &tmp.path().join("lora")),
    ]);
    let script = r#"
        let rows = read_table(data);
        let run = train_generator(llm_dir, rows.head(6), #{
            output: out, dev: rows.tail(2), epochs: 2, batch_size: 2, lr: 1e-2, progress: false,
            lora: #{r: 4, lora_alpha: 8, target_modules: ["all-linear"]}, max_length: 64
        });
        let s = run.summary();
        let answer = run.llm.generate("What is 3 plus one?", #{max_tokens: 3, temperature: 0});
        [s["steps"], s["dev_before"]["eval_loss"], s["dev_after"]["eval_loss"], type_of(answer), `${run.llm}`]
    "#;
    let r = s
        .eval(script, "generator.rhai")
        .unwrap()
        .into_array()
        .unwrap();
    assert_eq!(r[0].as_int().unwrap(), 6, "6 rows, batches of 2, 2 epochs");
    let (before, after) = (r[1].as_float().unwrap(), r[2].as_float().unwrap());
    assert!(after < before, "dev loss {before} -> {after}");
    assert_eq!(r[3].clone().into_string().unwrap(), "string");
    assert!(
        r[4].clone().into_string().unwrap().contains("adapter"),
        "the tuned model is named apart from its base"
    );
    assert!(tmp.path().join("lora/adapter_model.safetensors").is_file());
    // An unknown LoRA setting is an error naming it.
    let err = s
        .eval(
            r#"train_generator(llm_dir, read_table(data), #{output: out + "2", lora: #{rank: 4}})"#,
            "bad.rhai",
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("rank"), "{err}");
}

/// RAFT from a small claim-verification set in BEIR layout with SciFact-style evidence: examples,
/// training rows for train_generator, and the options that are errors.
#[test]
fn a_recipe_builds_raft_examples_from_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("claims");
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    let docs: String = (0..8)
        .map(|i| {
            let s = [format!("Study {i} of hives."), format!("Bees in study {i} made {i} kg of honey."), "Mites were rare.".to_string()];
            serde_json::json!({"_id": format!("d{i}"), "title": format!("Study {i}"), "text": s[1..].join(" "), "sentences": s[1..]}).to_string() + "\n"
        })
        .collect();
    std::fs::write(dir.join("corpus.jsonl"), docs).unwrap();
    let queries: String = (0..8)
        .map(|i| serde_json::json!({"_id": format!("q{i}"), "text": format!("Bees in study {i} made {i} kg of honey")}).to_string() + "\n")
        .collect();
    std::fs::write(dir.join("queries.jsonl"), queries).unwrap();
    let qrels: String = std::iter::once("query-id\tcorpus-id\tscore\n".to_string())
        .chain((0..8).map(|i| format!("q{i}\td{i}\t1\n")))
        .collect();
    std::fs::write(dir.join("qrels/train.tsv"), qrels).unwrap();
    let evidence: String = (0..8)
        .map(|i| {
            let label = if i % 2 == 0 { "SUPPORT" } else { "CONTRADICT" };
            serde_json::json!({"query-id": format!("q{i}"), "corpus-id": format!("d{i}"), "label": label, "sentences": [0]}).to_string() + "\n"
        })
        .collect();
    std::fs::write(dir.join("evidence.jsonl"), evidence).unwrap();
    let mut s = session(&[
        ("beir", &dir),
        ("evidence", &dir.join("evidence.jsonl")),
        ("corpus", &dir.join("corpus.jsonl")),
    ]);
    let script = r#"
        let data = load_beir(beir, "train");
        let raft = raft_examples(data, #{evidence: evidence, corpus_jsonl: corpus, distractors: "random",
                                         k: 2, oracle_p: 1.0, dev_share: 0.25, seed: 3});
        let rows = raft.rows("train");
        let m = raft.summary();
        [m["examples"], m["dev"], rows.len(), rows.columns(), raft.table().column("quotes_in_context")]
    "#;
    let r = s.eval(script, "raft.rhai").unwrap().into_array().unwrap();
    assert_eq!(r[0].as_int().unwrap(), 8);
    assert_eq!(r[1].as_int().unwrap(), 2);
    assert_eq!(r[2].as_int().unwrap(), 6);
    assert_eq!(
        r[3].clone().into_array().unwrap()[0]
            .clone()
            .into_string()
            .unwrap(),
        "messages"
    );
    assert!(
        r[4].clone()
            .into_array()
            .unwrap()
            .iter()
            .all(|v| v.as_bool().unwrap()),
        "gold quotes are real"
    );
    let err = s
        .eval(
            r#"raft_examples(load_beir(beir, "train"), #{evidence: evidence})"#,
            "bad.rhai",
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("corpus_jsonl"), "{err}");
    let err = s
        .eval(r#"raft_examples(load_beir(beir, "train"), #{evidence: evidence, corpus_jsonl: corpus})"#, "bad.rhai")
        .unwrap_err()
        .to_string();
    assert!(err.contains("retriever"), "{err}");
}

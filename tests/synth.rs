//! Documents → chunks → synthetic pairs: loading every file type (with located errors), the
//! token-bounded sentence chunker, stable ids, document-level splits, ICT/cropping, resumable runs,
//! and (with the seeded SmolLM2) LLM queries with the round-trip filter.

mod common;

use std::path::Path;
use std::sync::Arc;

use ragtune::chunk::{
    chunk_documents, load_documents, split_by_document, LoadDocumentsOptions, SentenceSplitter,
};
use ragtune::synth::{chunks_from_frame, synthesize, ChunkText, Generator, SynthOptions};
use tokenizers::Tokenizer;

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(common::tiny_llama_dir().join("tokenizer.json")).unwrap()
}

/// A one-page PDF with a Helvetica text line, built with correct cross-reference offsets.
fn pdf(text: &str) -> Vec<u8> {
    let stream = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for o in offsets {
        out.extend(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

fn write(dir: &Path, name: &str, content: &[u8]) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

#[test]
fn loads_every_document_type_from_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "a.txt", b"Plain text about bees.");
    write(d, "notes/b.md", b"# Varroa\n\nMites feed on bees.");
    write(
        d,
        "c.html",
        b"<html><head><title>Comb</title></head><body><p>Wax comb &amp; brood.</p></body></html>",
    );
    write(d, "d.jsonl", b"{\"_id\": \"doc-7\", \"title\": \"Queen\", \"text\": \"She lays eggs.\", \"year\": 2020}\n{\"text\": \"No id here.\"}\n");
    write(d, "e.json", b"[{\"id\": 3, \"text\": \"Numbered id.\"}]");
    write(d, "f.pdf", &pdf("Pollen is protein."));
    write(d, "g.csv", b"ignored,file\n");
    write(d, ".hidden.txt", b"never read");
    let docs = load_documents(d, &LoadDocumentsOptions::default()).unwrap();
    let ids: Vec<&str> = docs.iter().map(|d| d.doc_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "a.txt",
            "c.html",
            "doc-7",
            "d.jsonl#2",
            "3",
            "f.pdf",
            "notes/b.md"
        ]
    );
    let by_id = |id: &str| docs.iter().find(|d| d.doc_id == id).unwrap();
    assert_eq!(by_id("c.html").title, "Comb");
    assert_eq!(by_id("c.html").text, "Wax comb & brood.");
    assert_eq!(by_id("notes/b.md").title, "Varroa");
    assert_eq!(by_id("doc-7").title, "Queen");
    assert_eq!(by_id("doc-7").metadata, "{\"year\":2020}");
    assert!(
        by_id("f.pdf").text.contains("Pollen is protein."),
        "{:?}",
        by_id("f.pdf").text
    );
    assert!(by_id("f.pdf").source.ends_with("f.pdf"));
}

#[test]
fn bad_documents_are_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "bad.jsonl", b"{\"text\": \"fine\"}\n{\"text\": \n");
    let err = format!("{:#}", load_documents(d, &Default::default()).unwrap_err());
    assert!(
        err.contains("bad.jsonl:2") && err.contains("malformed JSON"),
        "{err}"
    );

    write(d, "bad.jsonl", b"{\"body\": \"wrong field\"}\n");
    let err = format!("{:#}", load_documents(d, &Default::default()).unwrap_err());
    assert!(
        err.contains("bad.jsonl:1") && err.contains("text_field"),
        "{err}"
    );

    std::fs::remove_file(d.join("bad.jsonl")).unwrap();
    write(d, "broken.pdf", b"%PDF-1.4 garbage");
    let err = format!("{:#}", load_documents(d, &Default::default()).unwrap_err());
    assert!(err.contains("broken.pdf"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = format!(
        "{:#}",
        load_documents(empty.path(), &Default::default()).unwrap_err()
    );
    assert!(err.contains("no documents found"), "{err}");
}

const LONG: &str = "Honey bees live in colonies. A colony has one queen. Workers are sterile females. \
    Drones are the males of the colony. The queen lays up to two thousand eggs a day. \
    Workers build comb from wax. Nectar becomes honey in the comb. Pollen feeds the brood.\n\n\
    Varroa mites weaken colonies. Beekeepers treat hives in late summer. Oxalic acid is one treatment. \
    Swarming is how colonies reproduce. The old queen leaves with half the workers.";

#[test]
fn chunks_respect_the_token_budget_overlap_and_sentences() {
    let splitter = SentenceSplitter::with_tokenizer(tokenizer(), 60, 25).unwrap();
    let chunks = splitter.split(LONG).unwrap();
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    let sentences: Vec<&str> = ragtune::chunk::sentences::sentence_spans(LONG)
        .into_iter()
        .map(|(s, e)| &LONG[s..e])
        .collect();
    for c in &chunks {
        assert!(c.tokens <= 60, "{} tokens: {}", c.tokens, c.text);
        assert_eq!(c.tokens, splitter.count_tokens(&c.text).unwrap());
        // Chunks start and end on sentence boundaries.
        assert!(
            sentences.iter().any(|s| c.text.starts_with(s)),
            "{}",
            c.text
        );
        assert!(sentences.iter().any(|s| c.text.ends_with(s)), "{}", c.text);
    }
    // A chunk's last sentence opens the next chunk when it fits the overlap budget; together the
    // chunks cover every sentence.
    let mut shared = 0;
    for pair in chunks.windows(2) {
        let last_sentence = sentences
            .iter()
            .rev()
            .find(|s| pair[0].text.ends_with(**s))
            .unwrap();
        if splitter.count_tokens(last_sentence).unwrap() <= 25 {
            assert!(
                pair[1].text.starts_with(last_sentence),
                "{last_sentence} not carried"
            );
            shared += 1;
        } else {
            assert!(!pair[1].text.contains(last_sentence));
        }
    }
    assert!(shared > 0);
    for s in &sentences {
        assert!(chunks.iter().any(|c| c.text.contains(s)), "lost: {s}");
    }
    // No overlap: chunks tile the sentences exactly once.
    let tiled = SentenceSplitter::with_tokenizer(tokenizer(), 60, 0)
        .unwrap()
        .split(LONG)
        .unwrap();
    let count: usize = tiled
        .iter()
        .map(|c| sentences.iter().filter(|s| c.text.contains(**s)).count())
        .sum();
    assert_eq!(count, sentences.len());
}

#[test]
fn a_sentence_longer_than_a_chunk_is_cut_between_words() {
    let splitter = SentenceSplitter::with_tokenizer(tokenizer(), 10, 0).unwrap();
    let long = "bees ".repeat(60);
    let chunks = splitter.split(long.trim()).unwrap();
    assert!(chunks.len() >= 6);
    assert!(chunks.iter().all(|c| c.tokens <= 10));
    let words: usize = chunks
        .iter()
        .map(|c| c.text.split_whitespace().count())
        .sum();
    assert_eq!(words, 60, "no word lost or repeated");
    assert!(SentenceSplitter::with_tokenizer(tokenizer(), 10, 10).is_err());
}

#[test]
fn chunk_ids_are_stable_and_splits_keep_documents_whole() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..10 {
        write(
            dir.path(),
            &format!("doc{i}.txt"),
            format!("{LONG} Document number {i}.").as_bytes(),
        );
    }
    let splitter = SentenceSplitter::with_tokenizer(tokenizer(), 48, 8).unwrap();
    let docs = load_documents(dir.path(), &Default::default()).unwrap();
    let a = chunk_documents(&docs, &splitter).unwrap();
    let b = chunk_documents(
        &load_documents(dir.path(), &Default::default()).unwrap(),
        &splitter,
    )
    .unwrap();
    assert!(a.equals(&b), "same input, same chunks and ids");
    let ids = ragtune::data::table::str_column(&a, "chunk_id").unwrap();
    assert!(ids[0].starts_with("doc0.txt#0-"), "{}", ids[0]);
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        ids.len()
    );

    let (train, val) = split_by_document(&a, 0.3, 1).unwrap();
    let docs_of = |f: &polars::prelude::DataFrame| {
        ragtune::data::table::str_column(f, "doc_id")
            .unwrap()
            .into_iter()
            .collect::<std::collections::HashSet<_>>()
    };
    assert_eq!(docs_of(&val).len(), 3);
    assert!(docs_of(&train).is_disjoint(&docs_of(&val)));
    assert_eq!(train.height() + val.height(), a.height());
}

fn sample_chunks() -> Vec<ChunkText> {
    LONG.split("\n\n")
        .chain(["Propolis seals cracks in the hive. Bees collect resin from trees. It has antimicrobial properties."])
        .enumerate()
        .map(|(i, t)| ChunkText { chunk_id: format!("c{i}"), text: t.to_string() })
        .collect()
}

#[test]
fn ict_and_crop_pairs_are_reproducible_and_resumable() {
    let chunks = sample_chunks();
    let opts = SynthOptions {
        per_chunk: 2,
        progress: false,
        ..Default::default()
    };
    let ict = synthesize(&chunks, &Generator::InverseCloze, &opts, None).unwrap();
    assert_eq!(ict.pairs.len(), 6);
    for p in &ict.pairs {
        let chunk = &chunks
            .iter()
            .find(|c| c.chunk_id == p.chunk_id)
            .unwrap()
            .text;
        assert!(chunk.contains(&p.query));
        assert_eq!(p.generator, "ict");
    }
    let again = synthesize(&chunks, &Generator::InverseCloze, &opts, None).unwrap();
    assert_eq!(ict.pairs, again.pairs);
    let crop = synthesize(&chunks, &Generator::Crop, &opts, None).unwrap();
    assert_eq!(crop.pairs.len(), 6);
    assert!(crop.pairs.iter().all(|p| p.generator == "crop"));

    // A run stopped after the first chunk and continued gives the same pairs as one full run.
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("run.journal.jsonl");
    let first = synthesize(
        &chunks[..1],
        &Generator::InverseCloze,
        &opts,
        Some(&journal),
    )
    .unwrap();
    assert_eq!(first.resumed, 0);
    let resumed = synthesize(&chunks, &Generator::InverseCloze, &opts, Some(&journal)).unwrap();
    assert_eq!(resumed.resumed, 1);
    assert_eq!(resumed.pairs, ict.pairs);
    // Other settings refuse the journal instead of mixing runs.
    let other = SynthOptions {
        per_chunk: 1,
        ..opts.clone()
    };
    let err = format!(
        "{:#}",
        synthesize(&chunks, &Generator::InverseCloze, &other, Some(&journal)).unwrap_err()
    );
    assert!(err.contains("other settings"), "{err}");

    // The LlamaIndex form: one query per pair, each relevant to its positive.
    let ds = ict.dataset(&chunks).unwrap();
    assert_eq!(ds.queries.height(), 6);
    assert_eq!(ds.qrels.height(), 6);
    let frame = ict.training_pairs().unwrap();
    assert_eq!(frame.get_column_names(), vec!["query", "positive"]);
}

#[test]
fn chunk_frames_need_unique_ids() {
    let frame = polars::df!("chunk_id" => ["a", "a"], "text" => ["x", "y"]).unwrap();
    let err = chunks_from_frame(&frame).unwrap_err().to_string();
    assert!(err.contains("`a` appears twice"), "{err}");
}

#[test]
fn smollm2_writes_queries_that_survive_the_round_trip() {
    if common::skip_unless(
        common::smollm2_seeded() && common::minilm_seeded(),
        "SmolLM2 GGUF and all-MiniLM-L6-v2 (scripts/seed-models.sh)",
    ) {
        return;
    }
    let llm = ragtune::llm::LocalLlm::load(common::SMOLLM2, &Default::default()).unwrap();
    let chunks = sample_chunks();
    let opts = SynthOptions {
        per_chunk: 2,
        max_tokens: 64,
        progress: false,
        ..Default::default()
    };
    let out = synthesize(&chunks, &Generator::Llm(Arc::new(llm)), &opts, None).unwrap();
    assert!(out.failed.is_empty());
    assert!(out.pairs.len() >= 3, "{:?}", out.pairs);
    for p in &out.pairs {
        assert!(p.query.split_whitespace().count() >= 2);
        assert!(!ragtune::synth::parse::copies_passage(
            &p.query,
            &p.positive
        ));
    }
    assert!(out.completion_tokens > 0);
    let encoder = ragtune::SentenceEncoder::load(common::MINILM, &Default::default()).unwrap();
    let (kept, stats) =
        ragtune::synth::round_trip_filter(&out.pairs, &chunks, &encoder, 1, &Default::default())
            .unwrap();
    assert_eq!(stats.kept + stats.dropped, out.pairs.len());
    assert!(
        !kept.is_empty(),
        "some queries find their own chunk first: {:?}",
        out.pairs
    );
}

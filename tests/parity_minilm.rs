//! Parity with sentence-transformers on the real all-MiniLM-L6-v2: identical token ids and
//! embeddings with cosine ≥ 0.99999 for every item of `../shared/reference/minilm-embeddings.json`
//! (made with sentence-transformers 6.2), encoded one by one and batched together.
//! Needs the seeded model (scripts/seed-models.sh) and ../shared; CI has both.

mod common;

use ragtune::models::{EncodeOptions, LoadOptions, SentenceEncoder};
use serde_json::Value;

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y.powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn minilm_matches_sentence_transformers() {
    let fixture = common::shared_dir().map(|d| d.join("reference/minilm-embeddings.json"));
    if common::skip_unless(
        fixture.as_ref().is_some_and(|f| f.is_file()),
        "../shared/reference/minilm-embeddings.json",
    ) || common::skip_unless(
        common::minilm_seeded(),
        "the seeded all-MiniLM-L6-v2 (run scripts/seed-models.sh)",
    ) {
        return;
    }
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.unwrap()).unwrap()).unwrap();
    let items = fixture["items"].as_array().unwrap();
    assert!(items.len() >= 9);

    let encoder = SentenceEncoder::load(common::MINILM, &LoadOptions::default()).unwrap();
    assert_eq!(
        encoder.max_seq_length,
        fixture["max_seq_length"].as_u64().unwrap() as usize
    );

    let texts: Vec<String> = items
        .iter()
        .map(|i| i["text"].as_str().unwrap().to_string())
        .collect();
    let encodings = encoder.tokenize(&texts).unwrap();
    for (item, enc) in items.iter().zip(&encodings) {
        let expected: Vec<u32> = item["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            enc.get_ids(),
            expected.as_slice(),
            "token ids of {:?}",
            item["text"]
        );
    }

    let quiet = EncodeOptions {
        batch_size: 4,
        progress: false,
    };
    let batched: Vec<Vec<f32>> = encoder.encode(&texts, &quiet).unwrap().to_vec2().unwrap();
    for (i, item) in items.iter().enumerate() {
        let expected: Vec<f64> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let alone: Vec<Vec<f32>> = encoder
            .encode(&texts[i..=i], &quiet)
            .unwrap()
            .to_vec2()
            .unwrap();
        for (how, got) in [("alone", &alone[0]), ("batched", &batched[i])] {
            let cos = cosine(got, &expected);
            assert!(cos >= 0.99999, "{how} {:?}: cosine {cos}", item["text"]);
        }
    }
}

// The same checks through candle's composed ops: the path CUDA takes (see `common::through_composed_ops`).

#[test]
fn minilm_matches_sentence_transformers_through_composed_ops() {
    common::through_composed_ops(minilm_matches_sentence_transformers);
}

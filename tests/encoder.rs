//! The unpadded CPU inference path computes the same embeddings as the padded one, for every
//! pooling mode, and encoding does not depend on batch composition.

mod common;

use ragtune::models::bert::Mode;
use ragtune::models::pooling::Pooling;
use ragtune::{EncodeOptions, SentenceEncoder};

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn packed_and_padded_paths_agree_for_every_pooling() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::write_tiny_model(tmp.path(), 12);
    let mut encoder = SentenceEncoder::load(dir.to_str().unwrap(), &Default::default()).unwrap();
    assert!(encoder.bert.supports_packed());
    let texts = [
        "how do bees make honey",
        "wax",
        "the queen and the brood of the hive in the spring",
        "",
    ];
    let encodings = encoder.tokenize(&texts).unwrap();
    assert_eq!(
        encodings[2].get_ids().len(),
        12,
        "truncated at max_seq_length"
    );
    let group: Vec<_> = encodings.iter().collect();
    for pooling in [
        Pooling::Mean,
        Pooling::Cls,
        Pooling::Max,
        Pooling::MeanSqrtLen,
    ] {
        encoder.pooling = pooling;
        let (ids, mask) = encoder.pad_batch(&group).unwrap();
        let padded: Vec<Vec<f32>> = encoder
            .embed_batch(&ids, &mask, Mode::Infer)
            .unwrap()
            .to_vec2()
            .unwrap();
        let packed: Vec<Vec<f32>> = encoder.embed_packed(&group).unwrap().to_vec2().unwrap();
        let diff = max_diff(&padded, &packed);
        assert!(
            diff < 1e-5,
            "{pooling:?}: packed differs from padded by {diff}"
        );
    }
}

#[test]
fn batch_composition_does_not_change_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::write_tiny_model(tmp.path(), 16);
    let encoder = SentenceEncoder::load(dir.to_str().unwrap(), &Default::default()).unwrap();
    let texts: Vec<String> = (0..9).map(|i| "bee honey wax ".repeat(i % 4 + 1)).collect();
    let quiet = |batch_size| EncodeOptions {
        batch_size,
        progress: false,
    };
    let one: Vec<Vec<f32>> = encoder
        .encode(&texts, &quiet(1))
        .unwrap()
        .to_vec2()
        .unwrap();
    let all: Vec<Vec<f32>> = encoder
        .encode(&texts, &quiet(64))
        .unwrap()
        .to_vec2()
        .unwrap();
    let some: Vec<Vec<f32>> = encoder
        .encode(&texts, &quiet(4))
        .unwrap()
        .to_vec2()
        .unwrap();
    assert!(max_diff(&one, &all) < 1e-5 && max_diff(&one, &some) < 1e-5);
    assert_ne!(one[0], one[1], "different texts, different embeddings");
}

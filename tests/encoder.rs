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

/// The `*_first` passes (the last layer for `[CLS]` alone) give the first rows of the full
/// passes, packed and padded, in both modes, for sequences of 2 to 12 tokens.
#[test]
fn first_token_passes_equal_the_full_passes_first_rows() {
    use candle_core::{IndexOp, Tensor};
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::write_tiny_model(tmp.path(), 12);
    let encoder = SentenceEncoder::load(dir.to_str().unwrap(), &Default::default()).unwrap();
    let texts = [
        "the queen and the brood of the hive in the spring",
        "",
        "wax",
        "how do bees make honey",
    ];
    let encodings = encoder.tokenize(&texts).unwrap();
    let group: Vec<_> = encodings.iter().collect();
    let seq_lens: Vec<usize> = group.iter().map(|e| e.get_ids().len()).collect();
    assert_eq!((seq_lens[0], seq_lens[1]), (12, 2));
    let ids: Vec<u32> = group.iter().flat_map(|e| e.get_ids().to_vec()).collect();
    let ids = Tensor::new(ids, &candle_core::Device::Cpu).unwrap();
    let full = encoder.bert.forward_packed(&ids, &seq_lens).unwrap();
    let starts: Vec<u32> = ragtune::models::attention::sequence_starts(&seq_lens)
        .into_iter()
        .map(|s| s as u32)
        .collect();
    let expected: Vec<Vec<f32>> = full
        .index_select(&Tensor::new(starts, &candle_core::Device::Cpu).unwrap(), 0)
        .unwrap()
        .to_vec2()
        .unwrap();
    let packed: Vec<Vec<f32>> = encoder
        .bert
        .forward_packed_first(&ids, None, &seq_lens)
        .unwrap()
        .to_vec2()
        .unwrap();
    let diff = max_diff(&expected, &packed);
    assert!(diff < 1e-5, "packed first-token pass differs by {diff}");
    let (ids, mask) = encoder.pad_batch(&group).unwrap();
    for mode in [Mode::Infer, Mode::Train(None)] {
        let full = encoder.bert.forward(&ids, &mask, mode).unwrap();
        let expected: Vec<Vec<f32>> = full.i((.., 0)).unwrap().to_vec2().unwrap();
        let first: Vec<Vec<f32>> = encoder
            .bert
            .forward_typed_first(&ids, None, &mask, mode)
            .unwrap()
            .to_vec2()
            .unwrap();
        let diff = max_diff(&expected, &first);
        assert!(
            diff < 1e-5,
            "{mode:?}: padded first-token pass differs by {diff}"
        );
        assert!(expected.iter().flatten().any(|v| v.abs() > 0.1));
    }
}

//! The fused training attention against the same attention composed from candle ops (additive
//! padding mask, softmax, two matmuls), forward and backward, on rows of different lengths, with
//! and without dropout on the probabilities.

mod common;

use candle_core::{DType, Device, Tensor, Var, D};
use common::max_abs_diff_f64 as max_abs_diff;
use ragtune::models::dropout::{Dropout, DropoutRates};
use ragtune::models::train_attention::{right_padded_lengths, self_attention};

const HEADS: usize = 2;
const HEAD_DIM: usize = 3;
const HIDDEN: usize = HEADS * HEAD_DIM;

/// Attention over `qkv` (`[batch, len, 3 * HIDDEN]`) written with candle's differentiable ops,
/// the probabilities multiplied by `dropout`'s mask tensor when given.
fn composed(qkv: &Tensor, mask: &Tensor, dropout: Option<(Dropout, usize)>) -> Tensor {
    let (batch, len, _) = qkv.dims3().unwrap();
    let part = |i: usize| {
        qkv.narrow(2, i * HIDDEN, HIDDEN)
            .unwrap()
            .reshape((batch, len, HEADS, HEAD_DIM))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
    };
    let (q, k, v) = (part(0), part(1), part(2));
    let bias = ((mask.to_dtype(DType::F64).unwrap() - 1.0).unwrap() * 1e9)
        .unwrap()
        .reshape((batch, 1, 1, len))
        .unwrap();
    let scores = (q.matmul(&k.t().unwrap()).unwrap() / (HEAD_DIM as f64).sqrt()).unwrap();
    let mut probs =
        candle_nn::ops::softmax(&scores.broadcast_add(&bias).unwrap(), D::Minus1).unwrap();
    if let Some((d, layer)) = dropout {
        let factors = d
            .attention_mask(layer, probs.dims4().unwrap(), DType::F64, &Device::Cpu)
            .unwrap();
        probs = (probs * factors).unwrap();
    }
    probs
        .matmul(&v)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((batch, len, HIDDEN))
        .unwrap()
}

#[test]
fn fused_attention_matches_composed_ops_forward_and_backward() {
    fused_matches_composed(None);
}

#[test]
fn fused_attention_drops_out_as_the_composed_mask_forward_and_backward() {
    fused_matches_composed(DropoutRates::uniform(0.4).draw(9, 0).map(|d| (d, 3)));
}

fn fused_matches_composed(dropout: Option<(Dropout, usize)>) {
    let device = Device::Cpu;
    let mask = Tensor::new(
        &[[1u32, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]],
        &device,
    )
    .unwrap();
    let lens = right_padded_lengths(&mask).unwrap().expect("right-padded");
    assert_eq!(lens, vec![5, 3, 1]);
    let qkv =
        Var::from_tensor(&Tensor::randn(0f64, 1.0, (3, 5, 3 * HIDDEN), &device).unwrap()).unwrap();
    // A loss that weighs every real output differently, so each gradient entry is exercised.
    let real = mask.to_dtype(DType::F64).unwrap().unsqueeze(2).unwrap();
    let probe = Tensor::randn(0f64, 1.0, (3, 5, HIDDEN), &device)
        .unwrap()
        .broadcast_mul(&real)
        .unwrap();

    let fused = self_attention(qkv.as_tensor(), &lens, HEADS, dropout).unwrap();
    let reference = composed(qkv.as_tensor(), &mask, dropout);
    if dropout.is_some() {
        // Not the undropped function.
        let plain = composed(qkv.as_tensor(), &mask, None);
        assert!(max_abs_diff(&on_real_rows(&fused, &mask), &on_real_rows(&plain, &mask)) > 0.1);
    }
    let on_real = |t: &Tensor| t.broadcast_mul(&real).unwrap();
    let forward_diff = max_abs_diff(&on_real(&fused), &on_real(&reference));
    assert!(forward_diff < 1e-12, "outputs differ by {forward_diff}");
    // Padding positions come out as zeros.
    let padded = (fused.clone() - on_real(&fused)).unwrap();
    assert_eq!(max_abs_diff(&padded, &padded.zeros_like().unwrap()), 0.0);

    let grad = |out: &Tensor| {
        let loss = (out * &probe).unwrap().sum_all().unwrap();
        loss.backward()
            .unwrap()
            .get(qkv.as_tensor())
            .unwrap()
            .clone()
    };
    let (g_fused, g_reference) = (grad(&fused), grad(&reference));
    let backward_diff = max_abs_diff(&g_fused, &g_reference);
    assert!(backward_diff < 1e-12, "gradients differ by {backward_diff}");
    // Not a vacuous comparison: the gradient is far from zero.
    assert!(max_abs_diff(&g_fused, &g_fused.zeros_like().unwrap()) > 0.1);
}

fn on_real_rows(t: &Tensor, mask: &Tensor) -> Tensor {
    t.broadcast_mul(&mask.to_dtype(DType::F64).unwrap().unsqueeze(2).unwrap())
        .unwrap()
}

#[test]
fn only_right_padded_masks_have_lengths() {
    let device = Device::Cpu;
    let left = Tensor::new(&[[0u32, 1, 1]], &device).unwrap();
    assert_eq!(right_padded_lengths(&left).unwrap(), None);
    let right = Tensor::new(&[[1u32, 1, 0], [0, 0, 0]], &device).unwrap();
    assert_eq!(right_padded_lengths(&right).unwrap(), Some(vec![2, 0]));
}

#[test]
fn lengths_that_do_not_fit_are_an_error() {
    let qkv = Tensor::zeros((2, 4, 3 * HIDDEN), DType::F32, &Device::Cpu).unwrap();
    let err = self_attention(&qkv, &[4, 5], HEADS, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("do not fit"), "{err}");
    let err = self_attention(&qkv, &[4], HEADS, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("do not fit"), "{err}");
}

/// Causal grouped-query attention over packed segments (the Llama training path) against the
/// composed ops with a block-diagonal causal mask, forward and backward, in f64.
#[test]
fn causal_grouped_attention_over_packed_segments_matches_composed_ops() {
    use ragtune::models::train_attention::causal_attention;
    let device = Device::Cpu;
    let (heads, kv_heads, d, len) = (4usize, 2usize, 3usize, 7usize);
    let segments = vec![vec![3, 4], vec![5]];
    let width = (heads + 2 * kv_heads) * d;
    let qkv =
        Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, len, width), &device).unwrap()).unwrap();
    // Mask (batch, 1, len, len): key j visible from query i in the same segment, j <= i; padding
    // rows (after the segments) form one more segment.
    let mut m = vec![-1e9f64; 2 * len * len];
    for (b, segs) in segments.iter().enumerate() {
        let mut bounds = vec![];
        let mut at = 0;
        for &l in segs
            .iter()
            .chain(std::iter::once(&(len - segs.iter().sum::<usize>())))
        {
            bounds.push((at, at + l));
            at += l;
        }
        for (s, e) in bounds {
            for i in s..e {
                for j in s..=i {
                    m[(b * len + i) * len + j] = 0.0;
                }
            }
        }
    }
    let mask = Tensor::from_vec(m, (2, 1, len, len), &device).unwrap();
    let composed = |qkv: &Tensor| {
        let part = |start: usize, n: usize| {
            qkv.narrow(2, start * d, n * d)
                .unwrap()
                .reshape((2, len, n, d))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (
            part(0, heads),
            part(heads, kv_heads),
            part(heads + kv_heads, kv_heads),
        );
        // Each key head serves heads / kv_heads query heads.
        let rep = |t: Tensor| {
            Tensor::cat(
                &[
                    t.narrow(1, 0, 1).unwrap(),
                    t.narrow(1, 0, 1).unwrap(),
                    t.narrow(1, 1, 1).unwrap(),
                    t.narrow(1, 1, 1).unwrap(),
                ],
                1,
            )
            .unwrap()
        };
        let (k, v) = (rep(k), rep(v));
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
        let probs =
            candle_nn::ops::softmax(&scores.broadcast_add(&mask).unwrap(), D::Minus1).unwrap();
        probs
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((2, len, heads * d))
            .unwrap()
    };
    // Compare on the rows inside segments (padding rows are zero in the kernel).
    let real = Tensor::new(
        &[[1f64, 1., 1., 1., 1., 1., 1.], [1., 1., 1., 1., 1., 0., 0.]],
        &device,
    )
    .unwrap()
    .unsqueeze(2)
    .unwrap();
    let probe = Tensor::randn(0f64, 1.0, (2, len, heads * d), &device)
        .unwrap()
        .broadcast_mul(&real)
        .unwrap();
    let fused = causal_attention(qkv.as_tensor(), &segments, heads, kv_heads).unwrap();
    let reference = composed(qkv.as_tensor());
    let on_real = |t: &Tensor| t.broadcast_mul(&real).unwrap();
    assert!(max_abs_diff(&on_real(&fused), &on_real(&reference)) < 1e-12);
    let grad = |out: &Tensor| {
        (out * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(qkv.as_tensor())
            .unwrap()
            .clone()
    };
    let (g_fused, g_reference) = (grad(&fused), grad(&reference));
    let diff = max_abs_diff(&g_fused, &g_reference);
    assert!(diff < 1e-12, "gradients differ by {diff}");
    assert!(max_abs_diff(&g_fused, &g_fused.zeros_like().unwrap()) > 0.1);
}

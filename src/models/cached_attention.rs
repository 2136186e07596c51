//! Attention of one new position per row over the KV cache: the decoding step of an LLM, for
//! CPU inference.
//!
//! Composed from candle ops, each layer of a decoding step copies the cached values to make them
//! contiguous, builds an additive mask, and runs two batched products whose left matrices are
//! only as high as a key head's group of query heads (3 on SmolLM2). At batch 16 with ~500
//! cached positions that took more than a third of the step. Here each (row, key head) is one
//! task: the query heads sharing the key head score the row's cached keys where they lie,
//! skipping the row's left padding instead of masking it, take a softmax and sum the values
//! straight into the context. The cache is read once per task and nothing is copied.

use candle_core::{bail, DType, Result, Tensor};
use rayon::prelude::*;

use super::fused::{simd_kernel, softmax_in_place, with_f32};

/// Whether [`attention`] runs `q` here (f32 on the CPU, native kernels chosen).
pub fn applies(q: &Tensor) -> bool {
    super::kernels::applies(q, &[DType::F32])
}

/// Context `[batch, 1, heads·head_dim]` of one query per row (`q`: `[batch, heads, 1, head_dim]`,
/// rope applied) over the first `total` positions of the caches (`[batch, kv_heads, capacity,
/// head_dim]` each, contiguous). The query sits at position `total - 1`; row `b`'s first
/// `pads[b]` positions are left padding and are never attended to (a query inside the padding
/// attends to itself only, as under the composed form's mask). Query heads are grouped over the
/// key heads in order (`heads / kv_heads` per key head).
pub fn attention(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    total: usize,
    pads: &[usize],
) -> Result<Tensor> {
    let (b, heads, s, hd) = q.dims4()?;
    let (cb, kv_heads, capacity, khd) = k_cache.dims4()?;
    if s != 1 {
        bail!("cached attention takes one new position per row, got {s}");
    }
    if cb != b || khd != hd || v_cache.dims() != k_cache.dims() {
        bail!(
            "cached attention: queries {:?} do not match caches {:?} / {:?}",
            q.dims(),
            k_cache.dims(),
            v_cache.dims()
        );
    }
    if total == 0 || total > capacity || pads.len() < b || kv_heads == 0 || heads % kv_heads != 0 {
        bail!(
            "cached attention: {total} positions of {capacity}, {} pads for {b} rows, {heads} \
             query heads over {kv_heads} key heads",
            pads.len()
        );
    }
    let groups = heads / kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; b * heads * hd];
    with_f32(&q.contiguous()?, |qs| {
        with_f32(k_cache, |ks| {
            with_f32(v_cache, |vs| {
                // Output row b holds heads in order, so a key head's group is one chunk.
                out.par_chunks_mut(groups * hd)
                    .enumerate()
                    .for_each(|(task, out)| {
                        let (row, g) = (task / kv_heads, task % kv_heads);
                        let first = pads[row].min(total - 1);
                        let at = (row * kv_heads + g) * capacity * hd;
                        let keys = &ks[at + first * hd..at + total * hd];
                        let values = &vs[at + first * hd..at + total * hd];
                        let mut scores = vec![0f32; total - first];
                        for (h, out) in out.chunks_exact_mut(hd).enumerate() {
                            let head = (row * heads + g * groups + h) * hd;
                            key_scores(&qs[head..head + hd], keys, &mut scores, scale);
                            softmax_in_place(&mut scores, total - first);
                            weighted_sum(&scores, values, out);
                        }
                    });
                Ok(())
            })
        })
    })?;
    Tensor::from_vec(out, (b, 1, heads * hd), q.device())
}

simd_kernel!(
    /// `scores[j] = (keys[j] · q) × scale`.
    fn key_scores(q: &[f32], keys: &[f32], scores: &mut [f32], scale: f32) = key_scores_kernel
);

#[inline(always)]
fn key_scores_kernel(q: &[f32], keys: &[f32], scores: &mut [f32], scale: f32) {
    const LANES: usize = 8;
    for (s, k) in scores.iter_mut().zip(keys.chunks_exact(q.len())) {
        let mut acc = [0f32; LANES];
        let (qc, kc) = (q.chunks_exact(LANES), k.chunks_exact(LANES));
        let tail: f32 = qc
            .remainder()
            .iter()
            .zip(kc.remainder())
            .map(|(a, b)| a * b)
            .sum();
        for (a, b) in qc.zip(kc) {
            for i in 0..LANES {
                acc[i] += a[i] * b[i];
            }
        }
        *s = (acc.iter().sum::<f32>() + tail) * scale;
    }
}

simd_kernel!(
    /// `out = Σ_j weights[j] · values[j]` over `out.len()`-wide value rows.
    fn weighted_sum(weights: &[f32], values: &[f32], out: &mut [f32]) = weighted_sum_kernel
);

#[inline(always)]
fn weighted_sum_kernel(weights: &[f32], values: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    for (&w, v) in weights.iter().zip(values.chunks_exact(out.len())) {
        for (o, &x) in out.iter_mut().zip(v) {
            *o += w * x;
        }
    }
}

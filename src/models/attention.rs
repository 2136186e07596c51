//! Fused multi-head self-attention over *packed* sequences, for CPU inference.
//!
//! Input is `qkv`: `[total_tokens, 3 * hidden]`, the query, key and value projections of several
//! sequences laid end to end with no padding (`seq_lens` says where each ends). Each (sequence,
//! head) pair is one independent task: scores `Q Kᵀ / √d`, a row softmax, then `P V` written
//! straight into the head's columns of the `[total_tokens, hidden]` output. Compared with the
//! padded, head-transposed formulation this skips padding entirely, copies nothing to split or
//! merge heads, and runs many small single-threaded matrix products in parallel instead of
//! parallelising each tiny product. No backward pass: training uses `bert::Mode::Train`.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

struct PackedAttention {
    seq_lens: Vec<usize>,
    heads: usize,
}

/// Wraps the output pointer so tasks writing disjoint regions can share it.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes only the rows of its own sequence and the columns of its own head,
// so no two tasks touch the same element; the buffer outlives the parallel loop.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl CustomOp1 for PackedAttention {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("packed attention runs on f32 only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("packed attention needs a contiguous qkv tensor");
        };
        let qkv = &data[start..end];
        let (tokens, three_h) = layout.shape().dims2()?;
        let hidden = three_h / 3;
        let head_dim = hidden / self.heads;
        if self.seq_lens.iter().sum::<usize>() != tokens || hidden % self.heads != 0 {
            candle_core::bail!(
                "packed attention: sequence lengths or heads do not fit qkv {:?}",
                layout.shape()
            );
        }
        let mut out = vec![0f32; tokens * hidden];
        let out_ptr = OutPtr(out.as_mut_ptr());
        let starts = sequence_starts(&self.seq_lens);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let tasks: Vec<(usize, usize)> = (0..self.seq_lens.len())
            .flat_map(|s| (0..self.heads).map(move |h| (s, h)))
            .collect();
        tasks
            .par_iter()
            .for_each_init(Vec::new, |scores: &mut Vec<f32>, &(s, h)| {
                let len = self.seq_lens[s];
                if len == 0 {
                    return;
                }
                let row0 = starts[s];
                scores.resize(len * len, 0.0);
                let q = qkv[row0 * three_h + h * head_dim..].as_ptr();
                let k = qkv[row0 * three_h + hidden + h * head_dim..].as_ptr();
                let v = qkv[row0 * three_h + 2 * hidden + h * head_dim..].as_ptr();
                // SAFETY: all pointers stay inside `qkv`/`out` for the given shapes and strides
                // (rows of `three_h`/`hidden` elements, `len` rows from `row0`).
                unsafe {
                    // scores[i, j] = scale * q_i · k_j   (m = n = len, k = head_dim)
                    gemm::gemm(
                        len,
                        len,
                        head_dim,
                        scores.as_mut_ptr(),
                        1,
                        len as isize,
                        false,
                        q,
                        1,
                        three_h as isize,
                        k,
                        three_h as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                super::fused::softmax_in_place(scores, len);
                let out = out_ptr;
                unsafe {
                    // out[i, h] = Σ_j p[i, j] v_j   (m = len, n = head_dim, k = len)
                    gemm::gemm(
                        len,
                        head_dim,
                        len,
                        out.0.add(row0 * hidden + h * head_dim),
                        1,
                        hidden as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        len as isize,
                        v,
                        1,
                        three_h as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((tokens, hidden))))
    }
}

/// Where each packed sequence starts: the running sum of the lengths before it.
pub fn sequence_starts(seq_lens: &[usize]) -> Vec<usize> {
    seq_lens
        .iter()
        .scan(0, |at, &len| {
            let start = *at;
            *at += len;
            Some(start)
        })
        .collect()
}

/// Self-attention context `[total_tokens, hidden]` of packed sequences from their fused
/// projections `qkv` (`[total_tokens, 3 * hidden]`: queries, then keys, then values).
pub fn packed_attention(qkv: &Tensor, seq_lens: &[usize], heads: usize) -> Result<Tensor> {
    qkv.contiguous()?.apply_op1_no_bwd(&PackedAttention {
        seq_lens: seq_lens.to_vec(),
        heads,
    })
}

/// Attention for the first token of each packed sequence only: the last encoder layer of a model
/// that reads nothing but `[CLS]` (a cross-encoder, CLS pooling) needs every token's keys and
/// values but one query per sequence, so its query projection, output projection and
/// feed-forward run on one row per sequence instead of all of them.
struct FirstTokenAttention {
    seq_lens: Vec<usize>,
    heads: usize,
}

impl candle_core::CustomOp2 for FirstTokenAttention {
    fn name(&self) -> &'static str {
        "first-token-attention"
    }

    fn cpu_fwd(
        &self,
        q_storage: &CpuStorage,
        q_layout: &Layout,
        kv_storage: &CpuStorage,
        kv_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(q_data), CpuStorage::F32(kv_data)) = (q_storage, kv_storage) else {
            candle_core::bail!("first-token attention runs on f32 only");
        };
        let (Some((q0, q1)), Some((kv0, kv1))) = (
            q_layout.contiguous_offsets(),
            kv_layout.contiguous_offsets(),
        ) else {
            candle_core::bail!("first-token attention needs contiguous q and kv tensors");
        };
        let (q, kv) = (&q_data[q0..q1], &kv_data[kv0..kv1]);
        let (seqs, hidden) = q_layout.shape().dims2()?;
        let (tokens, two_h) = kv_layout.shape().dims2()?;
        if seqs != self.seq_lens.len()
            || two_h != 2 * hidden
            || self.seq_lens.iter().sum::<usize>() != tokens
            || hidden % self.heads != 0
        {
            candle_core::bail!(
                "first-token attention: q {:?}, kv {:?} and {} sequences do not fit",
                q_layout.shape(),
                kv_layout.shape(),
                self.seq_lens.len()
            );
        }
        let head_dim = hidden / self.heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let starts = sequence_starts(&self.seq_lens);
        let mut out = vec![0f32; seqs * hidden];
        out.par_chunks_mut(hidden).enumerate().for_each_init(
            Vec::new,
            |scores: &mut Vec<f32>, (s, row)| {
                let len = self.seq_lens[s];
                if len == 0 {
                    return;
                }
                let keys = &kv[starts[s] * two_h..(starts[s] + len) * two_h];
                for h in 0..self.heads {
                    let cols = h * head_dim..(h + 1) * head_dim;
                    let query = &q[s * hidden + cols.start..s * hidden + cols.end];
                    scores.clear();
                    scores.extend(
                        keys.chunks_exact(two_h)
                            .map(|k| scale * dot(query, &k[cols.clone()])),
                    );
                    super::fused::softmax_in_place(scores, len);
                    let context = &mut row[cols.clone()];
                    for (p, kv_row) in scores.iter().zip(keys.chunks_exact(two_h)) {
                        let value = &kv_row[hidden + cols.start..hidden + cols.end];
                        for (c, v) in context.iter_mut().zip(value) {
                            *c += p * v;
                        }
                    }
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((seqs, hidden))))
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Attention context `[sequences, hidden]` of each packed sequence's first token: `q` holds the
/// first tokens' query projections (`[sequences, hidden]`), `kv` every token's keys then values
/// (`[total_tokens, 2 * hidden]`).
pub fn first_token_attention(
    q: &Tensor,
    kv: &Tensor,
    seq_lens: &[usize],
    heads: usize,
) -> Result<Tensor> {
    q.contiguous()?.apply_op2_no_bwd(
        &kv.contiguous()?,
        &FirstTokenAttention {
            seq_lens: seq_lens.to_vec(),
            heads,
        },
    )
}

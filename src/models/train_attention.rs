//! Multi-head self-attention with its own backward pass, for training on CPU: bidirectional over
//! right-padded rows (BERT) or causal within packed segments with grouped-query heads (Llama).
//!
//! Composed from candle ops, attention puts four `[batch, heads, len, len]` tensors in the autograd
//! graph (scores, probabilities and their two gradients; 100 MB each at batch 32 and 256 tokens),
//! and candle's backward allocates and adds a zeroed gradient for each before using it. Here the
//! graph holds only the fused projections `qkv` (`[batch, len, (heads + 2·kv_heads)·head_dim]`:
//! queries, then keys, then values) and the context. Each (segment, query head) is one task on the
//! thread pool: the forward pass computes `softmax(Q Kᵀ / √d) V` in a per-task scratch matrix, and
//! the backward pass — one task per (segment, key head), which owns that head's `dK` and `dV` and
//! sums the contributions of the query heads sharing it — recomputes the probabilities (one extra
//! `Q Kᵀ`, a few percent of a step's work) instead of storing them, then writes `dQ`, `dK` and
//! `dV` straight into the gradient of `qkv`.
//!
//! A segment is a run of rows that attend to each other: a right-padded sequence's real tokens,
//! or one of several sequences packed into a row. Queries attend to keys of their own segment
//! only (and, when causal, to those at or before them), exactly as under the additive mask; the
//! outputs at rows outside every segment (padding) are zero.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::dropout::{attention_key, Dropout, RowMask, Site};
use super::train_ops::{by_dtype, cast, contiguous, uses_kernels, Real};

/// Context `[batch, len, hidden]` of self-attention over `qkv` (`[batch, len, 3 * hidden]`:
/// queries, then keys, then values, each `heads` heads wide), with row `b` holding `lens[b]` real
/// tokens followed by padding. Differentiable in `qkv`. With `dropout` (and the layer's index),
/// the probabilities are dropped out with that layer's masks ([`super::dropout`]), which the
/// backward pass redraws.
pub fn self_attention(
    qkv: &Tensor,
    lens: &[usize],
    heads: usize,
    dropout: Option<(Dropout, usize)>,
) -> Result<Tensor> {
    let segments: Vec<Vec<usize>> = lens.iter().map(|&l| vec![l]).collect();
    attention(qkv, &segments, heads, heads, false, dropout)
}

/// Causal grouped-query attention over `qkv` (`[batch, len, (heads + 2·kv_heads)·head_dim]`,
/// rope already applied), `segments[b]` the lengths of the sequences packed one after another
/// into row `b` (padding after them). The context is `[batch, len, heads·head_dim]`.
/// Differentiable in `qkv`.
pub fn causal_attention(
    qkv: &Tensor,
    segments: &[Vec<usize>],
    heads: usize,
    kv_heads: usize,
) -> Result<Tensor> {
    attention(qkv, segments, heads, kv_heads, true, None)
}

fn attention(
    qkv: &Tensor,
    segments: &[Vec<usize>],
    heads: usize,
    kv_heads: usize,
    causal: bool,
    dropout: Option<(Dropout, usize)>,
) -> Result<Tensor> {
    qkv.contiguous()?.apply_op1(SelfAttention {
        shape: Dims::of(qkv, segments, heads, kv_heads, causal)?,
        dropout,
    })
}

/// Multiplies task `(b, at, l, h)`'s `l × l` probabilities by their dropout factors, which are
/// written to `factors` too when given (the backward pass needs them twice).
fn drop_probabilities<T: Real>(
    p: &mut [T],
    factors: Option<&mut Vec<T>>,
    mask: &RowMask,
    (at, l, h): (usize, usize, usize),
) {
    let key = |i: usize| attention_key(h, at + i, at);
    let (kept, dropped) = (cast::<T>(mask.scale as f64), T::zero());
    let factor = |x: f32| if x != 0.0 { kept } else { dropped };
    let mut drawn = vec![0f32; l];
    match factors {
        Some(f) => {
            f.resize(l * l, T::zero());
            for (i, (row, frow)) in p.chunks_exact_mut(l).zip(f.chunks_exact_mut(l)).enumerate() {
                mask.fill(key(i), &mut drawn);
                for ((p, f), &x) in row.iter_mut().zip(frow).zip(&drawn) {
                    *f = factor(x);
                    *p *= *f;
                }
            }
        }
        None => {
            for (i, row) in p.chunks_exact_mut(l).enumerate() {
                mask.fill(key(i), &mut drawn);
                for (p, &x) in row.iter_mut().zip(&drawn) {
                    *p *= factor(x);
                }
            }
        }
    }
}

/// Whether [`self_attention`] runs for this tensor (CPU, f32 or f64).
pub fn supported(t: &Tensor) -> bool {
    uses_kernels(t)
}

/// Real-token counts of a right-padded `[batch, len]` 0/1 mask, or `None` if some row is not
/// of that form (a zero followed by a one).
pub fn right_padded_lengths(mask: &Tensor) -> Result<Option<Vec<usize>>> {
    let rows = mask.to_dtype(candle_core::DType::U32)?.to_vec2::<u32>()?;
    let mut lens = Vec::with_capacity(rows.len());
    for row in rows {
        let len = row.iter().take_while(|&&m| m != 0).count();
        if row[len..].iter().any(|&m| m != 0) {
            return Ok(None);
        }
        lens.push(len);
    }
    Ok(Some(lens))
}

#[derive(Clone)]
struct Dims {
    batch: usize,
    len: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    causal: bool,
    /// (row, first position, length) of every non-empty segment.
    segments: Vec<(usize, usize, usize)>,
}

impl Dims {
    fn of(
        qkv: &Tensor,
        segments: &[Vec<usize>],
        heads: usize,
        kv_heads: usize,
        causal: bool,
    ) -> Result<Self> {
        let (batch, len, width) = qkv.dims3()?;
        let units = heads + 2 * kv_heads;
        if heads == 0
            || kv_heads == 0
            || !heads.is_multiple_of(kv_heads)
            || !width.is_multiple_of(units)
        {
            candle_core::bail!(
                "self-attention: qkv {:?} does not split into {heads} query and {kv_heads} key/value heads",
                qkv.shape()
            );
        }
        if segments.len() != batch {
            candle_core::bail!(
                "self-attention: {} segment lists do not fit qkv {:?}",
                segments.len(),
                qkv.shape()
            );
        }
        let mut spans = vec![];
        for (b, segs) in segments.iter().enumerate() {
            let mut at = 0;
            for &l in segs {
                if l > 0 {
                    spans.push((b, at, l));
                }
                at += l;
            }
            if at > len {
                candle_core::bail!(
                    "self-attention: segments {segs:?} do not fit rows of {len} in qkv {:?}",
                    qkv.shape()
                );
            }
        }
        Ok(Self {
            batch,
            len,
            heads,
            kv_heads,
            head_dim: width / units,
            causal,
            segments: spans,
        })
    }

    /// Width of a qkv row.
    fn width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    /// Width of a context row.
    fn out_width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Offsets within a qkv row of query head `h`, and of the key and value of its group.
    fn offsets(&self, h: usize) -> (usize, usize, usize) {
        let d = self.head_dim;
        let kv = h / (self.heads / self.kv_heads);
        let keys = self.heads * d;
        (h * d, keys + kv * d, keys + self.kv_heads * d + kv * d)
    }
}

/// A pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: each task writes only the rows of its own sequence and the columns of its own head.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// Through a method, so closures capture the `Send` wrapper rather than the bare pointer.
    fn at(self, offset: usize) -> *mut T {
        // SAFETY: callers pass offsets inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

/// `dst (m×n) = scale · lhs (m×k) · rhs (k×n)`, single-threaded (tasks already run in parallel);
/// each operand given by its pointer, row stride and column stride.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul<T: Real>(
    mnk: (usize, usize, usize),
    dst: (*mut T, usize),
    lhs: (*const T, usize, usize),
    rhs: (*const T, usize, usize),
    scale: T,
) {
    product(mnk, dst, lhs, rhs, scale, false)
}

/// [`matmul`], added onto `dst` when `accumulate`.
#[allow(clippy::too_many_arguments)]
unsafe fn product<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: (*mut T, usize),
    lhs: (*const T, usize, usize),
    rhs: (*const T, usize, usize),
    scale: T,
    accumulate: bool,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst.0,
        1,
        dst.1 as isize,
        accumulate,
        lhs.0,
        lhs.2 as isize,
        lhs.1 as isize,
        rhs.0,
        rhs.2 as isize,
        rhs.1 as isize,
        if accumulate { T::one() } else { T::zero() },
        scale,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// `p (l×l) = softmax(scale · Q Kᵀ)` for the task's segment, `q`/`k` pointing at its head; when
/// `causal`, row `i` over keys `0..=i` only (the rest zero).
unsafe fn probabilities<T: Real>(
    p: &mut [T],
    l: usize,
    d: usize,
    q: *const T,
    k: *const T,
    stride: usize,
    causal: bool,
) {
    let scale = T::one() / cast::<T>(d as f64).sqrt();
    // p[i, j] = q_i · k_j: K read transposed (row stride 1, column stride `stride`).
    matmul(
        (l, l, d),
        (p.as_mut_ptr(), l),
        (q, stride, 1),
        (k, 1, stride),
        scale,
    );
    if causal {
        for (i, row) in p.chunks_exact_mut(l).enumerate() {
            T::softmax_rows(&mut row[..=i], i + 1);
            row[i + 1..].fill(T::zero());
        }
    } else {
        T::softmax_rows(p, l);
    }
}

struct SelfAttention {
    shape: Dims,
    /// The pass's dropout and the layer whose attention masks apply.
    dropout: Option<(Dropout, usize)>,
}

impl SelfAttention {
    /// The dropout mask of batch row `b`, when the probabilities are dropped out.
    fn mask(&self, b: usize) -> Option<RowMask> {
        self.dropout
            .map(|(d, layer)| d.row(Site::Attention(layer), b))
    }

    fn forward<T: Real>(&self, qkv: &[T]) -> Vec<T> {
        let s = &self.shape;
        let (width, out_width, d) = (s.width(), s.out_width(), s.head_dim);
        let mut out = vec![T::zero(); s.batch * s.len * out_width];
        let dst = Shared(out.as_mut_ptr());
        let tasks: Vec<(usize, usize, usize, usize)> = s
            .segments
            .iter()
            .flat_map(|&(b, at, l)| (0..s.heads).map(move |h| (b, at, l, h)))
            .collect();
        tasks
            .par_iter()
            .for_each_init(Vec::new, |p: &mut Vec<T>, &(b, at, l, h)| {
                p.resize(l * l, T::zero());
                let row = (b * s.len + at) * width;
                let (qo, ko, vo) = s.offsets(h);
                // SAFETY: every pointer stays inside its buffer for `l` rows of its row stride,
                // and this task writes only its own head's columns of its own segment's rows.
                unsafe {
                    let (q, k, v) = (
                        qkv[row + qo..].as_ptr(),
                        qkv[row + ko..].as_ptr(),
                        qkv[row + vo..].as_ptr(),
                    );
                    probabilities(p, l, d, q, k, width, s.causal);
                    if let Some(mask) = self.mask(b) {
                        drop_probabilities(p, None, &mask, (at, l, h));
                    }
                    let o = dst.at((b * s.len + at) * out_width + h * d);
                    matmul(
                        (l, d, l),
                        (o, out_width),
                        (p.as_ptr(), l, 1),
                        (v, width, 1),
                        T::one(),
                    );
                }
            });
        out
    }
}

impl CustomOp1 for SelfAttention {
    fn name(&self) -> &'static str {
        "self-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let s = &self.shape;
        let shape = Shape::from((s.batch, s.len, s.out_width()));
        by_dtype!(storage, self.name(), T => {
            let qkv = contiguous::<T>(storage, layout, self.name())?;
            Ok((WithDType::to_cpu_storage_owned(self.forward(qkv)), shape))
        })
    }

    fn bwd(&self, qkv: &Tensor, _context: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let backward = SelfAttentionBackward {
            forward: SelfAttention {
                shape: self.shape.clone(),
                dropout: self.dropout,
            },
        };
        Ok(Some(qkv.apply_op2_no_bwd(&grad.contiguous()?, &backward)?))
    }
}

/// The gradient of `qkv` given it and the gradient of the context.
struct SelfAttentionBackward {
    forward: SelfAttention,
}

impl SelfAttentionBackward {
    fn backward<T: Real>(&self, qkv: &[T], grad: &[T]) -> Vec<T> {
        let s = &self.forward.shape;
        let (width, out_width, d) = (s.width(), s.out_width(), s.head_dim);
        let groups = s.heads / s.kv_heads;
        let scale = T::one() / cast::<T>(d as f64).sqrt();
        let mut out = vec![T::zero(); qkv.len()];
        let dst = Shared(out.as_mut_ptr());
        let tasks: Vec<(usize, usize, usize, usize)> = s
            .segments
            .iter()
            .flat_map(|&(b, at, l)| (0..s.kv_heads).map(move |g| (b, at, l, g)))
            .collect();
        tasks.par_iter().for_each_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(p, dp, factors): &mut (Vec<T>, Vec<T>, Vec<T>), &(b, at, l, group)| {
                p.resize(l * l, T::zero());
                dp.resize(l * l, T::zero());
                let mask = self.forward.mask(b);
                let row = (b * s.len + at) * width;
                let grow = (b * s.len + at) * out_width;
                for (n, h) in (group * groups..(group + 1) * groups).enumerate() {
                    let (qo, ko, vo) = s.offsets(h);
                    // The first query head of the group writes dK and dV, the others add to them.
                    let add = n > 0;
                    // SAFETY: as in the forward pass; the task writes its query heads' columns
                    // of dQ and its key head's columns of dK and dV, in its own segment's rows.
                    unsafe {
                        let (q, k, v) = (
                            qkv[row + qo..].as_ptr(),
                            qkv[row + ko..].as_ptr(),
                            qkv[row + vo..].as_ptr(),
                        );
                        let g = grad[grow + h * d..].as_ptr();
                        probabilities(p, l, d, q, k, width, s.causal);
                        let (dq, dk, dv) = (dst.at(row + qo), dst.at(row + ko), dst.at(row + vo));
                        // dP' = dO Vᵀ, the gradient of the dropped-out probabilities P' = P ⊙ F
                        matmul(
                            (l, l, d),
                            (dp.as_mut_ptr(), l),
                            (g, out_width, 1),
                            (v, 1, width),
                            T::one(),
                        );
                        // dP = dP' ⊙ F, and P' for dV below (P itself feeds the softmax's backward).
                        if let Some(mask) = &mask {
                            drop_probabilities(dp, Some(factors), mask, (at, l, h));
                        }
                        // dS = scale · P ⊙ (dP − Σⱼ P ⊙ dP), the softmax's backward with the
                        // score scale (zero where P is zero: masked keys).
                        for (pr, dr) in p.chunks_exact(l).zip(dp.chunks_exact_mut(l)) {
                            let dot = pr
                                .iter()
                                .zip(dr.iter())
                                .fold(T::zero(), |a, (&p, &g)| a + p * g);
                            for (g, &p) in dr.iter_mut().zip(pr) {
                                *g = scale * p * (*g - dot);
                            }
                        }
                        if mask.is_some() {
                            for (pv, &f) in p.iter_mut().zip(factors.iter()) {
                                *pv *= f;
                            }
                        }
                        // dV = P'ᵀ dO
                        product(
                            (l, d, l),
                            (dv, width),
                            (p.as_ptr(), 1, l),
                            (g, out_width, 1),
                            T::one(),
                            add,
                        );
                        // dQ = dS K, dK = dSᵀ Q
                        matmul(
                            (l, d, l),
                            (dq, width),
                            (dp.as_ptr(), l, 1),
                            (k, width, 1),
                            T::one(),
                        );
                        product(
                            (l, d, l),
                            (dk, width),
                            (dp.as_ptr(), 1, l),
                            (q, width, 1),
                            T::one(),
                            add,
                        );
                    }
                }
            },
        );
        out
    }
}

impl CustomOp2 for SelfAttentionBackward {
    fn name(&self) -> &'static str {
        "self-attention-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s1, self.name(), T => {
            let qkv = contiguous::<T>(s1, l1, self.name())?;
            let grad = contiguous::<T>(s2, l2, self.name())?;
            Ok((WithDType::to_cpu_storage_owned(self.backward(qkv, grad)), l1.shape().clone()))
        })
    }
}

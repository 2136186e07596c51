//! Multi-head self-attention with its own backward pass, for training on CPU.
//!
//! Composed from candle ops, attention puts four `[batch, heads, len, len]` tensors in the autograd
//! graph (scores, probabilities and their two gradients; 100 MB each at batch 32 and 256 tokens),
//! and candle's backward allocates and adds a zeroed gradient for each before using it. Here the
//! graph holds only the fused projections `qkv` (`[batch, len, 3 * hidden]`) and the context.
//! Each (sequence, head) pair is one task on the thread pool: the forward pass computes
//! `softmax(Q Kᵀ / √d) V` in a per-task scratch matrix, and the backward pass recomputes the
//! probabilities (one extra `Q Kᵀ`, a few percent of a step's work) instead of storing them, then
//! writes `dQ`, `dK` and `dV` straight into the gradient of `qkv`.
//!
//! Rows are right-padded: sequence `b` has `lens[b]` real tokens. Real queries attend to real keys
//! only, exactly as under the additive padding mask; the outputs at padding positions are zero
//! (pooling ignores them, and no real token attends to them).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::train_ops::{by_dtype, cast, contiguous, uses_kernels, Real};

/// Context `[batch, len, hidden]` of self-attention over `qkv` (`[batch, len, 3 * hidden]`:
/// queries, then keys, then values, each `heads` heads wide), with row `b` holding `lens[b]` real
/// tokens followed by padding. Differentiable in `qkv`.
pub fn self_attention(qkv: &Tensor, lens: &[usize], heads: usize) -> Result<Tensor> {
    qkv.contiguous()?.apply_op1(SelfAttention {
        shape: Dims::of(qkv, lens, heads)?,
    })
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
    hidden: usize,
    heads: usize,
    lens: Vec<usize>,
}

impl Dims {
    fn of(qkv: &Tensor, lens: &[usize], heads: usize) -> Result<Self> {
        let (batch, len, three_h) = qkv.dims3()?;
        let hidden = three_h / 3;
        if three_h % 3 != 0 || heads == 0 || hidden % heads != 0 {
            candle_core::bail!(
                "self-attention: qkv {:?} does not split into {heads} heads",
                qkv.shape()
            );
        }
        if lens.len() != batch || lens.iter().any(|&l| l > len) {
            candle_core::bail!(
                "self-attention: lengths {lens:?} do not fit qkv {:?}",
                qkv.shape()
            );
        }
        Ok(Self {
            batch,
            len,
            hidden,
            heads,
            lens: lens.to_vec(),
        })
    }

    fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Every (sequence, head) pair with at least one real token.
    fn tasks(&self) -> Vec<(usize, usize)> {
        (0..self.batch)
            .filter(|&b| self.lens[b] > 0)
            .flat_map(|b| (0..self.heads).map(move |h| (b, h)))
            .collect()
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
    (m, n, k): (usize, usize, usize),
    dst: (*mut T, usize),
    lhs: (*const T, usize, usize),
    rhs: (*const T, usize, usize),
    scale: T,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst.0,
        1,
        dst.1 as isize,
        false,
        lhs.0,
        lhs.2 as isize,
        lhs.1 as isize,
        rhs.0,
        rhs.2 as isize,
        rhs.1 as isize,
        T::zero(),
        scale,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// `p (l×l) = softmax(scale · Q Kᵀ)` for the task's real rows, `q`/`k` pointing at its head.
unsafe fn probabilities<T: Real>(
    p: &mut [T],
    l: usize,
    d: usize,
    q: *const T,
    k: *const T,
    stride: usize,
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
    T::softmax_rows(p, l);
}

struct SelfAttention {
    shape: Dims,
}

impl SelfAttention {
    fn forward<T: Real>(&self, qkv: &[T]) -> Vec<T> {
        let s = &self.shape;
        let (three, d) = (3 * s.hidden, s.head_dim());
        let mut out = vec![T::zero(); s.batch * s.len * s.hidden];
        let dst = Shared(out.as_mut_ptr());
        s.tasks()
            .par_iter()
            .for_each_init(Vec::new, |p: &mut Vec<T>, &(b, h)| {
                let l = s.lens[b];
                p.resize(l * l, T::zero());
                let base = qkv[b * s.len * three + h * d..].as_ptr();
                // SAFETY: every pointer stays inside its buffer for `l` rows of its row stride,
                // and this task writes only its own head's columns of its own sequence's rows.
                unsafe {
                    let (q, k, v) = (base, base.add(s.hidden), base.add(2 * s.hidden));
                    probabilities(p, l, d, q, k, three);
                    let o = dst.at(b * s.len * s.hidden + h * d);
                    matmul(
                        (l, d, l),
                        (o, s.hidden),
                        (p.as_ptr(), l, 1),
                        (v, three, 1),
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
        let shape = Shape::from((s.batch, s.len, s.hidden));
        by_dtype!(storage, self.name(), T => {
            let qkv = contiguous::<T>(storage, layout, self.name())?;
            Ok((WithDType::to_cpu_storage_owned(self.forward(qkv)), shape))
        })
    }

    fn bwd(&self, qkv: &Tensor, _context: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let backward = SelfAttentionBackward {
            shape: self.shape.clone(),
        };
        Ok(Some(qkv.apply_op2_no_bwd(&grad.contiguous()?, &backward)?))
    }
}

/// The gradient of `qkv` given it and the gradient of the context.
struct SelfAttentionBackward {
    shape: Dims,
}

impl SelfAttentionBackward {
    fn backward<T: Real>(&self, qkv: &[T], grad: &[T]) -> Vec<T> {
        let s = &self.shape;
        let (three, d) = (3 * s.hidden, s.head_dim());
        let scale = T::one() / cast::<T>(d as f64).sqrt();
        let mut out = vec![T::zero(); qkv.len()];
        let dst = Shared(out.as_mut_ptr());
        s.tasks().par_iter().for_each_init(
            || (Vec::new(), Vec::new()),
            |(p, dp): &mut (Vec<T>, Vec<T>), &(b, h)| {
                let l = s.lens[b];
                p.resize(l * l, T::zero());
                dp.resize(l * l, T::zero());
                let base = qkv[b * s.len * three + h * d..].as_ptr();
                let g = grad[b * s.len * s.hidden + h * d..].as_ptr();
                // SAFETY: as in the forward pass; the task writes its head's columns of dQ, dK
                // and dV in its own sequence's rows.
                unsafe {
                    let (q, k, v) = (base, base.add(s.hidden), base.add(2 * s.hidden));
                    probabilities(p, l, d, q, k, three);
                    let dbase = dst.at(b * s.len * three + h * d);
                    let (dq, dk, dv) = (dbase, dbase.add(s.hidden), dbase.add(2 * s.hidden));
                    // dV = Pᵀ dO
                    matmul(
                        (l, d, l),
                        (dv, three),
                        (p.as_ptr(), 1, l),
                        (g, s.hidden, 1),
                        T::one(),
                    );
                    // dP = dO Vᵀ
                    matmul(
                        (l, l, d),
                        (dp.as_mut_ptr(), l),
                        (g, s.hidden, 1),
                        (v, 1, three),
                        T::one(),
                    );
                    // dS = scale · P ⊙ (dP − Σⱼ P ⊙ dP), the softmax's backward with the score scale.
                    for (pr, dr) in p.chunks_exact(l).zip(dp.chunks_exact_mut(l)) {
                        let dot = pr
                            .iter()
                            .zip(dr.iter())
                            .fold(T::zero(), |a, (&p, &g)| a + p * g);
                        for (g, &p) in dr.iter_mut().zip(pr) {
                            *g = scale * p * (*g - dot);
                        }
                    }
                    // dQ = dS K, dK = dSᵀ Q
                    matmul(
                        (l, d, l),
                        (dq, three),
                        (dp.as_ptr(), l, 1),
                        (k, three, 1),
                        T::one(),
                    );
                    matmul(
                        (l, d, l),
                        (dk, three),
                        (dp.as_ptr(), 1, l),
                        (q, three, 1),
                        T::one(),
                    );
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

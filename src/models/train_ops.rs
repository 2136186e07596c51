//! Fused CPU kernels for the training forward pass, each with its backward pass: scaled masked
//! softmax, layer norm, and erf-GELU.
//!
//! Composed from candle primitives, these are a chain of element-wise passes, each allocating a
//! tensor of the activation's size and each with its own backward: for attention probabilities
//! (`[batch, heads, len, len]`, 100 MB at batch 32 and 256 tokens) that chain was most of a
//! training step. Here each is one pass forward and one backward. Every backward is checked
//! against finite differences (tests/gradients.rs). Other devices use the composed form.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType, D,
};
use num_traits::{Float, One, Zero};
use rayon::prelude::*;

use super::fused;

/// The float types the kernels run on, with the functions that have fast f32 forms.
pub(super) trait Real: Float + WithDType + Send + Sync + 'static {
    /// e^x for x ≤ 0.
    fn exp_nonpositive(self) -> Self;
    fn error_fn(self) -> Self;
    /// Softmax of each `width`-long row of `rows`, in place.
    fn softmax_rows(rows: &mut [Self], width: usize) {
        for row in rows.chunks_exact_mut(width) {
            let max = row
                .iter()
                .fold(Self::neg_infinity(), |m, &v| Float::max(m, v));
            let mut sum = Self::zero();
            for v in row.iter_mut() {
                *v = (*v - max).exp_nonpositive();
                sum += *v;
            }
            let inv = Self::one() / sum;
            row.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

impl Real for f32 {
    fn exp_nonpositive(self) -> Self {
        fused::exp_nonpositive(self)
    }
    fn error_fn(self) -> Self {
        fused::erf(self)
    }
    fn softmax_rows(rows: &mut [Self], width: usize) {
        fused::softmax_in_place(rows, width)
    }
}

impl Real for f64 {
    fn exp_nonpositive(self) -> Self {
        self.exp()
    }
    fn error_fn(self) -> Self {
        libm::erf(self)
    }
}

pub(super) fn cast<T: Real>(x: f64) -> T {
    num_traits::cast(x).expect("an f64 constant fits every float type")
}

pub(super) fn contiguous<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> Result<&'a [T]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: input must be contiguous");
    };
    Ok(&s.as_slice::<T>()?[start..end])
}

/// Runs `$body` with `$t` bound to the storage's float type.
macro_rules! by_dtype {
    ($storage:expr, $op:expr, $t:ident => $body:expr) => {
        match $storage {
            CpuStorage::F32(_) => {
                type $t = f32;
                $body
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                $body
            }
            _ => candle_core::bail!("{}: only f32 and f64 are supported", $op),
        }
    };
}
pub(super) use by_dtype;

/// Whether the CPU kernels below run for `t` ([`super::kernels`] decides).
pub(super) fn uses_kernels(t: &Tensor) -> bool {
    super::kernels::applies(t, &[DType::F32, DType::F64])
}

// ---------------------------------------------------------------------------------------------
// softmax(scale · scores + mask) over the last dimension

/// `softmax(scale · scores + mask_bias)` over the last dimension, where `scores` is
/// `[batch, heads, len, keys]` and `mask_bias` `[batch, 1, 1, keys]` (0 or a large negative).
/// Differentiable in `scores`.
pub fn masked_softmax(scores: &Tensor, mask_bias: &Tensor, scale: f64) -> Result<Tensor> {
    if !uses_kernels(scores) {
        // The portable path (CUDA's): candle's fused softmax kernel computes the probabilities
        // outside the autograd graph, and `WithProbs` hands them on with the softmax's own
        // gradient. Composed from max, exp, sum and division, the graph held six score-sized
        // tensors per layer and its backward ran some thirty passes over them.
        let logits = (scores.detach() * scale)?.broadcast_add(&mask_bias.detach())?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        return scores.apply_op2(&probs, WithProbs { scale });
    }
    scores
        .contiguous()?
        .apply_op2(&mask_bias.contiguous()?, MaskedSoftmax { scale })
}

struct MaskedSoftmax {
    scale: f64,
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, heads, len, keys) = l1.shape().dims4()?;
        if l2.shape().elem_count() != batch * keys {
            candle_core::bail!(
                "masked-softmax: mask {:?} does not fit scores {:?}",
                l2.shape(),
                l1.shape()
            );
        }
        by_dtype!(s1, self.name(), T => {
            let scores = contiguous::<T>(s1, l1, self.name())?;
            let mask = contiguous::<T>(s2, l2, self.name())?;
            let scale = cast::<T>(self.scale);
            let mut out = vec![T::zero(); scores.len()];
            out.par_chunks_mut(keys).zip(scores.par_chunks(keys)).enumerate().for_each(|(row, (o, s))| {
                let m = &mask[(row / (heads * len)) * keys..][..keys];
                let mut max = T::neg_infinity();
                for j in 0..keys {
                    o[j] = s[j] * scale + m[j];
                    max = max.max(o[j]);
                }
                let mut sum = T::zero();
                for v in o.iter_mut() {
                    *v = (*v - max).exp_nonpositive();
                    sum += *v;
                }
                let inv = T::one() / sum;
                o.iter_mut().for_each(|v| *v *= inv);
            });
            Ok((WithDType::to_cpu_storage_owned(out), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        _mask: &Tensor,
        probs: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g =
            probs.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward { scale: self.scale })?;
        Ok((Some(g), None))
    }
}

/// `(scores, probs) ↦ probs`, probabilities computed from `scores` elsewhere: the result is a
/// copy of `probs` whose gradient flows to `scores` as the scaled softmax's does. Works on any
/// device (a copy of the storage), so the fused kernels of every backend serve the forward pass.
struct WithProbs {
    scale: f64,
}

/// The storage of `probs`, which must be laid out from its start (softmax writes it so).
fn copy_probs<S: candle_core::backend::BackendStorage>(
    name: &str,
    storage: &S,
    layout: &Layout,
) -> Result<(S, Shape)> {
    if !layout.is_contiguous() || layout.start_offset() != 0 {
        candle_core::bail!("{name}: the probabilities must be contiguous from offset 0");
    }
    Ok((storage.try_clone(layout)?, layout.shape().clone()))
}

impl CustomOp2 for WithProbs {
    fn name(&self) -> &'static str {
        "with-softmax-probs"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        copy_probs(self.name(), s2, l2)
    }

    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        copy_probs(self.name(), s2, l2)
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        _probs: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let p = res.detach();
        let dot = (grad * &p)?.sum_keepdim(D::Minus1)?;
        let g = (p * grad.broadcast_sub(&dot)?)?.affine(self.scale, 0.0)?;
        Ok((Some(g), None))
    }
}

/// `scale · p ⊙ (g − Σ g ⊙ p)` row by row: the gradient of the scores given probabilities p and
/// the gradient g of the probabilities.
struct SoftmaxBackward {
    scale: f64,
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "masked-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let keys = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        by_dtype!(s1, self.name(), T => {
            let p = contiguous::<T>(s1, l1, self.name())?;
            let g = contiguous::<T>(s2, l2, self.name())?;
            let scale = cast::<T>(self.scale);
            let mut out = vec![T::zero(); p.len()];
            out.par_chunks_mut(keys).zip(p.par_chunks(keys).zip(g.par_chunks(keys))).for_each(|(o, (p, g))| {
                let dot = p.iter().zip(g).fold(T::zero(), |acc, (&p, &g)| acc + p * g);
                for j in 0..keys {
                    o[j] = scale * p[j] * (g[j] - dot);
                }
            });
            Ok((WithDType::to_cpu_storage_owned(out), l1.shape().clone()))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Layer norm

/// `(x − mean) / sqrt(var + eps) · weight + bias` over the last dimension; differentiable in all
/// three.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if !uses_kernels(x) {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
        return normed.broadcast_mul(weight)?.broadcast_add(bias);
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNorm { eps },
    )
}

struct LayerNorm {
    eps: f64,
}

/// A row's mean and 1 / standard deviation.
fn moments<T: Real>(row: &[T], eps: T) -> (T, T) {
    let n = T::from(row.len()).expect("row length fits");
    let mean = row.iter().fold(T::zero(), |a, &v| a + v) / n;
    let var = row
        .iter()
        .fold(T::zero(), |a, &v| a + (v - mean) * (v - mean))
        / n;
    (mean, T::one() / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dim = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        by_dtype!(s1, self.name(), T => {
            let x = contiguous::<T>(s1, l1, self.name())?;
            let (w, b) = (contiguous::<T>(s2, l2, self.name())?, contiguous::<T>(s3, l3, self.name())?);
            let eps = cast::<T>(self.eps);
            let mut out = vec![T::zero(); x.len()];
            out.par_chunks_mut(dim).zip(x.par_chunks(dim)).for_each(|(o, x)| {
                let (mean, inv) = moments(x, eps);
                for j in 0..dim {
                    o[j] = (x[j] - mean) * inv * w[j] + b[j];
                }
            });
            Ok((WithDType::to_cpu_storage_owned(out), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dim = w.elem_count();
        let rows = x.elem_count() / dim.max(1);
        // One pass gives all three gradients, packed end to end: dx, then dw, then db.
        let packed =
            x.apply_op3_no_bwd(w, &grad.contiguous()?, &LayerNormBackward { eps: self.eps })?;
        let dx = packed.narrow(0, 0, rows * dim)?.reshape(x.shape())?;
        let dw = packed.narrow(0, rows * dim, dim)?.reshape(w.shape())?;
        let db = packed
            .narrow(0, rows * dim + dim, dim)?
            .reshape(w.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The backward pass of a row-wise norm over `dim`-wide rows: `row(dx, x, g, sums)` writes one
/// row's input gradient and adds its share of `K` per-column sums (the weight's and bias's
/// gradients). Rows run in parallel chunks whose sums are added at the end. Returns the input
/// gradient followed by the `K` sums: `[rows·dim + K·dim]`.
fn norm_backward<T: Real, const K: usize>(
    x: &[T],
    g: &[T],
    dim: usize,
    row: impl Fn(&mut [T], &[T], &[T], &mut [Vec<T>; K]) + Sync,
) -> Vec<T> {
    let mut dx = vec![T::zero(); x.len()];
    let rows_per_task = (x.len() / dim)
        .div_ceil(rayon::current_num_threads() * 4)
        .max(1);
    let chunk = dim * rows_per_task;
    let partial: Vec<[Vec<T>; K]> = dx
        .par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
        .map(|(dx, (x, g))| {
            let mut sums: [Vec<T>; K] = std::array::from_fn(|_| vec![T::zero(); dim]);
            for ((dx, x), g) in dx.chunks_mut(dim).zip(x.chunks(dim)).zip(g.chunks(dim)) {
                row(dx, x, g, &mut sums);
            }
            sums
        })
        .collect();
    let mut total: [Vec<T>; K] = std::array::from_fn(|_| vec![T::zero(); dim]);
    for sums in partial {
        for (t, p) in total.iter_mut().zip(sums) {
            t.iter_mut().zip(p).for_each(|(t, p)| *t += p);
        }
    }
    for t in total {
        dx.extend(t);
    }
    dx
}

/// Given x, the weight and the output gradient g: dx = inv·(ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂)) with
/// ĝ = g ⊙ w; dw = Σ_rows g ⊙ x̂; db = Σ_rows g. Output: `[rows·dim + 2·dim]`.
struct LayerNormBackward {
    eps: f64,
}

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dim = l2.shape().elem_count().max(1);
        by_dtype!(s1, self.name(), T => {
            let x = contiguous::<T>(s1, l1, self.name())?;
            let w = contiguous::<T>(s2, l2, self.name())?;
            let g = contiguous::<T>(s3, l3, self.name())?;
            let eps = cast::<T>(self.eps);
            let n = cast::<T>(dim as f64);
            let dx = norm_backward::<T, 2>(x, g, dim, |dx, x, g, [dw, db]| {
                let (mean, inv) = moments(x, eps);
                let (mut sum_gh, mut sum_ghx) = (T::zero(), T::zero());
                for j in 0..dim {
                    let xh = (x[j] - mean) * inv;
                    let gh = g[j] * w[j];
                    sum_gh += gh;
                    sum_ghx += gh * xh;
                    dw[j] += g[j] * xh;
                    db[j] += g[j];
                }
                let (mean_gh, mean_ghx) = (sum_gh / n, sum_ghx / n);
                for j in 0..dim {
                    let xh = (x[j] - mean) * inv;
                    dx[j] = inv * (g[j] * w[j] - mean_gh - xh * mean_ghx);
                }
            });
            let len = dx.len();
            Ok((WithDType::to_cpu_storage_owned(dx), Shape::from(len)))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// GELU (erf form)

/// `x · Φ(x)` (Hugging Face's exact "gelu"); differentiable.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if !uses_kernels(x) {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(Gelu)
}

struct Gelu;

const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s, self.name(), T => {
            let x = contiguous::<T>(s, l, self.name())?;
            let (half, c) = (cast::<T>(0.5), cast::<T>(FRAC_1_SQRT_2));
            let mut out = vec![T::zero(); x.len()];
            out.par_chunks_mut(4096).zip(x.par_chunks(4096)).for_each(|(o, x)| {
                for (o, &x) in o.iter_mut().zip(x) {
                    *o = half * x * (T::one() + (x * c).error_fn());
                }
            });
            Ok((WithDType::to_cpu_storage_owned(out), l.shape().clone()))
        })
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&grad.contiguous()?, &GeluBackward)?,
        ))
    }
}

/// g · (Φ(x) + x·φ(x)).
struct GeluBackward;

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "gelu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s1, self.name(), T => {
            let x = contiguous::<T>(s1, l1, self.name())?;
            let g = contiguous::<T>(s2, l2, self.name())?;
            let (half, c) = (cast::<T>(0.5), cast::<T>(FRAC_1_SQRT_2));
            let inv_sqrt_2pi = cast::<T>(0.5 * std::f64::consts::FRAC_2_SQRT_PI * FRAC_1_SQRT_2);
            let mut out = vec![T::zero(); x.len()];
            out.par_chunks_mut(4096).zip(x.par_chunks(4096).zip(g.par_chunks(4096))).for_each(|(o, (x, g))| {
                for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
                    let cdf = half * (T::one() + (x * c).error_fn());
                    let pdf = inv_sqrt_2pi * (-half * x * x).exp_nonpositive();
                    *o = g * (cdf + x * pdf);
                }
            });
            Ok((WithDType::to_cpu_storage_owned(out), l1.shape().clone()))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

/// `x / √(mean(x²) + eps) · weight` over the last dimension (Llama's norm); differentiable in
/// both.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if !uses_kernels(x) {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        return x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(weight);
    }
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, RmsNorm { eps })
}

struct RmsNorm {
    eps: f64,
}

/// 1 / √(mean(x²) + eps) of a row.
fn inv_rms<T: Real>(row: &[T], eps: T) -> T {
    let n = T::from(row.len()).expect("row length fits");
    let ms = row.iter().fold(T::zero(), |a, &v| a + v * v) / n;
    T::one() / (ms + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dim = l2.shape().elem_count().max(1);
        by_dtype!(s1, self.name(), T => {
            let x = contiguous::<T>(s1, l1, self.name())?;
            let w = contiguous::<T>(s2, l2, self.name())?;
            let eps = cast::<T>(self.eps);
            let mut out = vec![T::zero(); x.len()];
            out.par_chunks_mut(dim).zip(x.par_chunks(dim)).for_each(|(o, x)| {
                let inv = inv_rms(x, eps);
                for j in 0..dim {
                    o[j] = x[j] * inv * w[j];
                }
            });
            Ok((WithDType::to_cpu_storage_owned(out), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dim = w.elem_count();
        let rows = x.elem_count() / dim.max(1);
        let packed =
            x.apply_op3_no_bwd(w, &grad.contiguous()?, &RmsNormBackward { eps: self.eps })?;
        let dx = packed.narrow(0, 0, rows * dim)?.reshape(x.shape())?;
        let dw = packed.narrow(0, rows * dim, dim)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw)))
    }
}

/// dx = inv·(ĝ − x̂·mean(ĝ ⊙ x̂)) with ĝ = g ⊙ w, x̂ = x·inv; dw = Σ_rows g ⊙ x̂.
/// Output: `[rows·dim + dim]`.
struct RmsNormBackward {
    eps: f64,
}

impl CustomOp3 for RmsNormBackward {
    fn name(&self) -> &'static str {
        "rms-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dim = l2.shape().elem_count().max(1);
        by_dtype!(s1, self.name(), T => {
            let x = contiguous::<T>(s1, l1, self.name())?;
            let w = contiguous::<T>(s2, l2, self.name())?;
            let g = contiguous::<T>(s3, l3, self.name())?;
            let eps = cast::<T>(self.eps);
            let n = cast::<T>(dim as f64);
            let dx = norm_backward::<T, 1>(x, g, dim, |dx, x, g, [dw]| {
                let inv = inv_rms(x, eps);
                let mut sum = T::zero();
                for j in 0..dim {
                    let xh = x[j] * inv;
                    sum += g[j] * w[j] * xh;
                    dw[j] += g[j] * xh;
                }
                let mean = sum / n;
                for j in 0..dim {
                    dx[j] = inv * (g[j] * w[j] - x[j] * inv * mean);
                }
            });
            let len = dx.len();
            Ok((WithDType::to_cpu_storage_owned(dx), Shape::from(len)))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

/// `silu(gate) ⊙ up` (Llama's feed-forward gate); differentiable in both.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !uses_kernels(gate) {
        return gate.silu()? * up;
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

struct SwiGlu;

fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "swiglu: gate {:?} and up {:?} differ",
                l1.shape(),
                l2.shape()
            );
        }
        by_dtype!(s1, self.name(), T => {
            let a = contiguous::<T>(s1, l1, self.name())?;
            let b = contiguous::<T>(s2, l2, self.name())?;
            let mut out = vec![T::zero(); a.len()];
            out.par_chunks_mut(4096).zip(a.par_chunks(4096).zip(b.par_chunks(4096))).for_each(|(o, (a, b))| {
                for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                    *o = a * sigmoid(a) * b;
                }
            });
            Ok((WithDType::to_cpu_storage_owned(out), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = gate.elem_count();
        let packed = gate.apply_op3_no_bwd(up, &grad.contiguous()?, &SwiGluBackward)?;
        Ok((
            Some(packed.narrow(0, 0, n)?.reshape(gate.shape())?),
            Some(packed.narrow(0, n, n)?.reshape(gate.shape())?),
        ))
    }
}

/// d gate = g ⊙ up ⊙ σ(a)(1 + a(1 − σ(a))); d up = g ⊙ silu(a). Output: `[2·n]`.
struct SwiGluBackward;

impl CustomOp3 for SwiGluBackward {
    fn name(&self) -> &'static str {
        "swiglu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s1, self.name(), T => {
            let a = contiguous::<T>(s1, l1, self.name())?;
            let b = contiguous::<T>(s2, l2, self.name())?;
            let g = contiguous::<T>(s3, l3, self.name())?;
            let n = a.len();
            let mut out = vec![T::zero(); 2 * n];
            let (da, db) = out.split_at_mut(n);
            da.par_chunks_mut(4096)
                .zip(db.par_chunks_mut(4096))
                .zip(a.par_chunks(4096).zip(b.par_chunks(4096)).zip(g.par_chunks(4096)))
                .for_each(|((da, db), ((a, b), g))| {
                    for i in 0..a.len() {
                        let s = sigmoid(a[i]);
                        da[i] = g[i] * b[i] * s * (T::one() + a[i] * (T::one() - s));
                        db[i] = g[i] * a[i] * s;
                    }
                });
            Ok((WithDType::to_cpu_storage_owned(out), Shape::from(2 * n)))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding

/// Rotary embedding of `x` (`[batch, len, heads, head_dim]`) by the angles whose cosines and
/// sines are `cos` / `sin` (`[batch, len, head_dim / 2]`): adjacent pairs rotated
/// (`interleaved`, GGUF's layout) or the two halves of each head (Hugging Face's).
/// Differentiable in `x` (a rotation's backward is the rotation by the opposite angle).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    if !uses_kernels(x) {
        candle_core::bail!("rope: the fused kernel runs on CPU f32/f64 only");
    }
    x.contiguous()?.apply_op3(
        &cos.contiguous()?,
        &sin.contiguous()?,
        Rope {
            interleaved,
            inverse: false,
        },
    )
}

struct Rope {
    interleaved: bool,
    /// Rotate by −θ (the backward pass).
    inverse: bool,
}

impl Rope {
    fn apply<T: Real>(&self, x: &[T], cos: &[T], sin: &[T], dims: (usize, usize, usize)) -> Vec<T> {
        let (positions, heads, d) = dims;
        let half = d / 2;
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(heads * d)
            .zip(x.par_chunks(heads * d))
            .enumerate()
            .for_each(|(p, (o, x))| {
                let (c, s) = (
                    &cos[p * half..(p + 1) * half],
                    &sin[p * half..(p + 1) * half],
                );
                for h in 0..heads {
                    let (o, x) = (&mut o[h * d..(h + 1) * d], &x[h * d..(h + 1) * d]);
                    for i in 0..half {
                        let sn = if self.inverse { -s[i] } else { s[i] };
                        let (a, b) = if self.interleaved {
                            (2 * i, 2 * i + 1)
                        } else {
                            (i, i + half)
                        };
                        o[a] = x[a] * c[i] - x[b] * sn;
                        o[b] = x[a] * sn + x[b] * c[i];
                    }
                }
            });
        let _ = positions;
        out
    }
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, len, heads, d) = l1.shape().dims4()?;
        if d % 2 != 0 || l2.shape().elem_count() != b * len * d / 2 || l3.shape() != l2.shape() {
            candle_core::bail!(
                "rope: x {:?} does not fit tables {:?} / {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        by_dtype!(s1, self.name(), T => {
            let x = contiguous::<T>(s1, l1, self.name())?;
            let cos = contiguous::<T>(s2, l2, self.name())?;
            let sin = contiguous::<T>(s3, l3, self.name())?;
            let out = self.apply(x, cos, sin, (b * len, heads, d));
            Ok((WithDType::to_cpu_storage_owned(out), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let back = Rope {
            interleaved: self.interleaved,
            inverse: !self.inverse,
        };
        Ok((
            Some(grad.contiguous()?.apply_op3_no_bwd(cos, sin, &back)?),
            None,
            None,
        ))
    }
}

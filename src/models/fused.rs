//! Fused kernels for CPU f32 inference (no backward pass; training composes candle ops).
//!
//! candle's CPU element-wise ops run on one thread, one op per pass over memory, and its matmul
//! zero-fills every output. On an encoder's `[tokens, hidden]` activations those passes cost as
//! much as a third of the matrix products, so here: the q/k/v projection writes its product
//! straight onto its bias; the feed-forward input projection adds its bias and applies GELU in
//! one pass over the product; the two output projections add bias and residual and layer-norm
//! each row in one pass while it is in cache; and the attention softmax uses a vectorisable exp.
//! Products that overwrite their output never zero-fill it first.

use candle_core::{CpuStorage, Result, Storage, Tensor};
use rayon::prelude::*;

/// Runs `f` on the contiguous f32 CPU data of `t`.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
        candle_core::bail!(
            "fused CPU kernels take f32 CPU tensors, got {:?} on {:?}",
            t.dtype(),
            t.device()
        );
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("fused CPU kernels take contiguous tensors");
    };
    f(&data[start..end])
}

/// Layer-norm parameters (`[dim]` weight and bias) for the fused kernels.
pub struct Norm<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub eps: f32,
}

/// Rows handed to one parallel task by the row-wise epilogues: enough work per task to pay for
/// the hand-off, few enough that both cores get some.
const ROWS_PER_TASK: usize = 64;

/// `x · wᵀ + bias` for `x`: `[rows, in]`, `w`: `[out, in]`, `bias`: `[out]`. The output starts as
/// copies of the bias and the product is accumulated onto it: no separate add pass.
pub fn linear(x: &Tensor, w: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (rows, inner, out_dim) = linear_dims(x, w, bias)?;
    let mut out = Vec::with_capacity(rows * out_dim);
    with_f32(bias, |b| {
        for _ in 0..rows {
            out.extend_from_slice(b);
        }
        Ok(())
    })?;
    // SAFETY: `out` holds rows × out_dim initialised values.
    unsafe { product(x, w, out.as_mut_ptr(), rows, inner, out_dim, true)? };
    Tensor::from_vec(out, (rows, out_dim), x.device())
}

/// `x · wᵀ` for `x`: `[rows, in]`, `w`: `[out, in]` (a bias-free linear layer).
pub fn matmul_xwt(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (rows, inner, out_dim) = product_dims(x, w)?;
    let out = uninit_product(x, w, rows, inner, out_dim)?;
    Tensor::from_vec(out, (rows, out_dim), x.device())
}

/// `gelu_erf(x · wᵀ + bias)`: the feed-forward input projection and its activation; the bias
/// is added in the same pass over the product that applies the activation.
pub fn linear_gelu(x: &Tensor, w: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (rows, inner, out_dim) = linear_dims(x, w, bias)?;
    let mut out = uninit_product(x, w, rows, inner, out_dim)?;
    with_f32(bias, |b| {
        out.par_chunks_mut(out_dim * ROWS_PER_TASK)
            .for_each(|rows| bias_gelu_rows(rows, b));
        Ok(())
    })?;
    Tensor::from_vec(out, (rows, out_dim), x.device())
}

/// `layer_norm(x · wᵀ + bias + residual)`: a sublayer's output projection, its residual
/// connection and the layer norm after it, with bias, residual and normalisation done in one
/// pass over each output row while it is in cache.
pub fn linear_residual_norm(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    norm: &Norm,
) -> Result<Tensor> {
    let (rows, inner, out_dim) = linear_dims(x, w, bias)?;
    if residual.dims() != [rows, out_dim] {
        candle_core::bail!(
            "fused linear: residual {:?} is not [{rows}, {out_dim}]",
            residual.dims()
        );
    }
    let mut out = uninit_product(x, w, rows, inner, out_dim)?;
    with_f32(bias, |b| {
        with_f32(&residual.contiguous()?, |r| {
            norm_rows(&mut out, out_dim, b, r, norm)
        })
    })?;
    Tensor::from_vec(out, (rows, out_dim), x.device())
}

/// Layer norm over the last dimension of a `[rows, dim]` tensor.
pub fn layer_norm(x: &Tensor, norm: &Norm) -> Result<Tensor> {
    let mut out = with_f32(&x.contiguous()?, |v| Ok(v.to_vec()))?;
    let (rows, dim) = x.dims2()?;
    norm_rows(&mut out, dim, &[], &[], norm)?;
    Tensor::from_vec(out, (rows, dim), x.device())
}

/// Layer-normalises each `dim`-long row of `values` in place after adding `bias` (`[dim]`) and
/// the matching row of `residual` (`[rows, dim]`); either may be empty to add nothing.
fn norm_rows(
    values: &mut [f32],
    dim: usize,
    bias: &[f32],
    residual: &[f32],
    norm: &Norm,
) -> Result<()> {
    if norm.weight.dims1()? != dim || norm.bias.dims1()? != dim {
        candle_core::bail!(
            "layer norm: weight {:?} / bias {:?} do not fit rows of {dim}",
            norm.weight.dims(),
            norm.bias.dims()
        );
    }
    let task = dim * ROWS_PER_TASK;
    with_f32(norm.weight, |g| {
        with_f32(norm.bias, |shift| {
            values
                .par_chunks_mut(task)
                .enumerate()
                .for_each(|(i, rows)| {
                    let residual = if residual.is_empty() {
                        residual
                    } else {
                        &residual[i * task..i * task + rows.len()]
                    };
                    residual_norm_rows(rows, bias, residual, g, shift, norm.eps)
                });
            Ok(())
        })
    })
}

/// Defines `$name` as `$kernel` compiled for AVX2 and FMA when the CPU has them (and as plain
/// `$kernel` otherwise). Kernels are `#[inline(always)]` so that they are compiled inside the
/// feature-enabled wrapper: their loops then vectorise 8 wide with fused multiply-add.
macro_rules! simd_kernel {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) = $kernel:ident) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $kernel($($arg),*)
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $kernel($($arg),*)
        }
    };
}

pub(crate) use simd_kernel;

simd_kernel!(
    /// `gelu_erf(v + bias)` in place on each row of `rows`.
    fn bias_gelu_rows(rows: &mut [f32], bias: &[f32]) = bias_gelu_kernel
);

#[inline(always)]
fn bias_gelu_kernel(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            let x = *v + b;
            *v = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

simd_kernel!(
    /// Layer norm in place on each row of `rows` after adding `bias` and the row's `residual`.
    fn residual_norm_rows(
        rows: &mut [f32],
        bias: &[f32],
        residual: &[f32],
        gain: &[f32],
        shift: &[f32],
        eps: f32
    ) = residual_norm_kernel
);

/// Two passes over each row (mean, then the mean squared deviation) rather than one pass of sum
/// and sum of squares, which loses precision when the mean is large against the spread.
#[inline(always)]
fn residual_norm_kernel(
    rows: &mut [f32],
    bias: &[f32],
    residual: &[f32],
    gain: &[f32],
    shift: &[f32],
    eps: f32,
) {
    let dim = gain.len();
    for (i, row) in rows.chunks_exact_mut(dim).enumerate() {
        if !bias.is_empty() {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
        if !residual.is_empty() {
            let r = &residual[i * dim..(i + 1) * dim];
            row.iter_mut().zip(r).for_each(|(v, r)| *v += r);
        }
        let n = dim as f32;
        let mean = lane_reduce(row, 0.0, |a, b| a + b) / n;
        let squares = lane_reduce_mapped(row, 0.0, |v| (v - mean) * (v - mean), |a, b| a + b);
        let inv_std = 1.0 / (squares / n + eps).sqrt();
        row.iter_mut()
            .zip(gain.iter().zip(shift))
            .for_each(|(v, (g, s))| *v = (*v - mean) * inv_std * g + s);
    }
}

/// Checks shapes for `x · wᵀ + bias` and returns `(rows, inner, out_dim)`.
/// `(rows, inner, out_dim)` of `x · wᵀ`, or an error when they do not fit.
fn product_dims(x: &Tensor, w: &Tensor) -> Result<(usize, usize, usize)> {
    let (rows, inner) = x.dims2()?;
    let (out_dim, w_inner) = w.dims2()?;
    if inner != w_inner {
        candle_core::bail!(
            "fused product: x {:?}, w {:?} do not fit",
            x.dims(),
            w.dims()
        );
    }
    Ok((rows, inner, out_dim))
}

fn linear_dims(x: &Tensor, w: &Tensor, bias: &Tensor) -> Result<(usize, usize, usize)> {
    product_dims(x, w)
        .ok()
        .filter(|&(_, _, out_dim)| bias.dims1().ok() == Some(out_dim))
        .ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "fused linear: x {:?}, w {:?}, bias {:?} do not fit",
                x.dims(),
                w.dims(),
                bias.dims()
            ))
        })
}

/// `x · wᵀ` into a fresh buffer that is never zero-filled: the product writes every element.
fn uninit_product(
    x: &Tensor,
    w: &Tensor,
    rows: usize,
    inner: usize,
    out_dim: usize,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(rows * out_dim);
    // SAFETY: the capacity holds rows × out_dim values; the product writes all of them without
    // reading (accumulate = false), and only then is the length set.
    unsafe {
        product(x, w, out.as_mut_ptr(), rows, inner, out_dim, false)?;
        out.set_len(rows * out_dim);
    }
    Ok(out)
}

/// `out = x · wᵀ`, or `out += x · wᵀ` with `accumulate`.
///
/// # Safety
/// `out` must be valid for writes of `rows × out_dim` f32 (and initialised when accumulating).
unsafe fn product(
    x: &Tensor,
    w: &Tensor,
    out: *mut f32,
    rows: usize,
    inner: usize,
    out_dim: usize,
    accumulate: bool,
) -> Result<()> {
    // Split a product across threads only when this call is not already one of several running
    // side by side (the encoder runs passes concurrently), and when it is big enough to pay for
    // the hand-off.
    let threads = rayon::current_num_threads();
    let nested = rayon::current_thread_index().is_some();
    let parallelism = if threads > 1 && !nested && rows * out_dim * inner >= 1 << 18 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    with_f32(&x.contiguous()?, |xs| {
        with_f32(&w.contiguous()?, |ws| {
            // BLIS is faster on these shapes single-threaded, so a product split across threads
            // gives each thread a block of rows of its own.
            match parallelism {
                gemm::Parallelism::None
                    if super::blas::sgemm_xwt(xs, ws, out, rows, inner, out_dim, accumulate) =>
                {
                    return Ok(());
                }
                gemm::Parallelism::None => {}
                _ if super::blas::available() => {
                    let block = rows.div_ceil(threads);
                    let out = out as usize;
                    let done = (0..rows.div_ceil(block)).into_par_iter().all(|i| {
                        let (from, to) = (i * block, ((i + 1) * block).min(rows));
                        // SAFETY: each block writes its own rows of `out`.
                        unsafe {
                            super::blas::sgemm_xwt(
                                &xs[from * inner..to * inner],
                                ws,
                                (out as *mut f32).add(from * out_dim),
                                to - from,
                                inner,
                                out_dim,
                                accumulate,
                            )
                        }
                    });
                    // Every block fails alike (no BLAS, or dimensions beyond its `int`).
                    if done {
                        return Ok(());
                    }
                }
                _ => {}
            }
            // SAFETY: out is [rows, out_dim], xs [rows, inner], ws [out_dim, inner], all
            // contiguous; gemm reads `out` only when accumulating.
            gemm::gemm(
                rows,
                out_dim,
                inner,
                out,
                1,
                out_dim as isize,
                accumulate,
                xs.as_ptr(),
                1,
                inner as isize,
                ws.as_ptr(),
                inner as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
            Ok(())
        })
    })
}

/// e^x for x ≤ 0 (softmax after subtracting the row max): Cody–Waite range reduction to
/// r ∈ [-ln2/2, ln2/2], a degree-7 Taylor polynomial (relative error < 1e-8), and 2^n built from
/// the exponent bits. Branch-free so that softmax loops vectorise.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.max(-87.0);
    // n = round(x·log₂e) by the 1.5·2²³ trick: plain additions, so loops vectorise even where
    // `floor` would be a libm call (code compiled without SSE4.1, as the generic training kernels).
    const ROUND: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // SAFETY: x ∈ [-87, 0] puts n in [-126, 0], representable in i32. (`as i32` would saturate,
    // which compiles to scalar code with NaN checks and stops the loop from vectorising.)
    let n = unsafe { n.to_int_unchecked::<i32>() };
    // Wrapping: an overflow check here (dev builds) would keep the loop scalar.
    let scale = f32::from_bits((n.wrapping_add(127) as u32) << 23);
    p * scale
}

/// Eight independent accumulators: float reductions are not reassociated by the compiler, so a
/// single running max or sum would serialise the loop; lanes let it use vector registers.
const LANES: usize = 8;

#[inline(always)]
fn lane_reduce(row: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    lane_reduce_mapped(row, init, |v| v, f)
}

/// Reduces `map(v)` over the row with `f`, in [`LANES`] independent accumulators.
#[inline(always)]
fn lane_reduce_mapped(
    row: &[f32],
    init: f32,
    map: impl Fn(f32) -> f32,
    f: impl Fn(f32, f32) -> f32,
) -> f32 {
    let mut acc = [init; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = f(acc[i], map(c[i]));
        }
    }
    let mut r = tail.iter().fold(init, |a, &v| f(a, map(v)));
    for a in acc {
        r = f(r, a);
    }
    r
}

#[inline(always)]
fn softmax_rows(scores: &mut [f32], width: usize) {
    for row in scores.chunks_exact_mut(width) {
        let max = lane_reduce(row, f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
        row.iter_mut().for_each(|x| *x = exp_nonpositive(*x - max));
        let inv = 1.0 / lane_reduce(row, 0.0, |a, b| a + b);
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

simd_kernel!(
    /// In-place softmax of each `width`-long row of `scores`.
    pub(crate) fn softmax_in_place(scores: &mut [f32], width: usize) = softmax_rows
);

/// erf(x) as x·P(x²)/Q(x²) on [-4, 4] (|erf| rounds to 1 in f32 beyond). Coefficients fitted for
/// this project by least squares (scripts/fit-erf.py); max abs error 3.2e-7 evaluated in f32.
/// Branch-free, so the compiler vectorises the loops that call it.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    const P: [f32; 7] = [
        1.128_378_8,
        0.206_109_15,
        0.051_385_417,
        0.003_965_437,
        0.000_148_221_05,
        -1.977_522_3e-6,
        1.966_839_7e-8,
    ];
    const Q: [f32; 5] = [
        1.0,
        0.515_988_64,
        0.117_551_5,
        0.014_880_282,
        0.001_020_432_7,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p =
        ((((((P[6] * x2 + P[5]) * x2 + P[4]) * x2 + P[3]) * x2 + P[2]) * x2 + P[1]) * x2) + P[0];
    let q = (((Q[4] * x2 + Q[3]) * x2 + Q[2]) * x2 + Q[1]) * x2 + Q[0];
    (x * p / q).clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn exp_and_softmax_are_accurate() {
        for i in 0..=9000 {
            let x = -(i as f32) / 100.0;
            let (ours, exact) = (exp_nonpositive(x) as f64, (x as f64).exp());
            // Inputs below -87 are clamped: the result stays under 2e-38 instead of going subnormal.
            assert!(
                (ours - exact).abs() <= 2e-7 * exact + 2e-38,
                "exp({x}): {ours} vs {exact}"
            );
        }
        let mut s = vec![0.0, -1.0, -3.0, 2.0, 2.0, 2.0];
        softmax_in_place(&mut s, 3);
        let e = [1.0f64, (-1f64).exp(), (-3f64).exp()];
        let z: f64 = e.iter().sum();
        for (got, want) in s.iter().zip(e.iter().map(|v| v / z).chain([1.0 / 3.0; 3])) {
            assert!((*got as f64 - want).abs() < 1e-7);
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a.to_dtype(candle_core::DType::F64).unwrap()
            - b.to_dtype(candle_core::DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap() as f32
    }

    /// Row-wise layer norm in f64 from candle's primitive ops: the reference for the fused ones.
    fn reference_norm(x: &Tensor, g: &Tensor, b: &Tensor, eps: f64) -> Tensor {
        let x = x.to_dtype(candle_core::DType::F64).unwrap();
        let centered = x.broadcast_sub(&x.mean_keepdim(1).unwrap()).unwrap();
        let var = centered.sqr().unwrap().mean_keepdim(1).unwrap();
        let f64_of = |t: &Tensor| t.to_dtype(candle_core::DType::F64).unwrap();
        centered
            .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&f64_of(g))
            .unwrap()
            .broadcast_add(&f64_of(b))
            .unwrap()
    }

    /// 300 rows span several parallel tasks, so a residual row paired with the wrong output row
    /// would show; the residual's offset of 50 would expose a one-pass variance.
    #[test]
    fn fused_linear_and_residual_norm_match_composed_ops() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (300, 40), &dev).unwrap();
        let w = Tensor::randn(0f32, 1., (24, 40), &dev).unwrap();
        let b = Tensor::randn(0f32, 1., 24, &dev).unwrap();
        let r = (Tensor::randn(0f32, 1., (300, 24), &dev).unwrap() + 50.0).unwrap();
        let (g, s) = (
            Tensor::randn(1f32, 0.1, 24, &dev).unwrap(),
            Tensor::randn(0f32, 0.1, 24, &dev).unwrap(),
        );
        let norm = Norm {
            weight: &g,
            bias: &s,
            eps: 1e-12,
        };
        let projected = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        let diff = max_diff(&linear(&x, &w, &b).unwrap(), &projected);
        assert!(diff < 1e-4, "fused linear differs by {diff}");
        let expect = reference_norm(&(&projected + &r).unwrap(), &g, &s, 1e-12);
        let diff = max_diff(
            &linear_residual_norm(&x, &w, &b, &r, &norm).unwrap(),
            &expect,
        );
        assert!(
            diff < 1e-4,
            "fused linear + residual + norm differs by {diff}"
        );
        let diff = max_diff(
            &layer_norm(&r, &norm).unwrap(),
            &reference_norm(&r, &g, &s, 1e-12),
        );
        assert!(diff < 1e-4, "layer norm differs by {diff}");
        // 301 × 24 × 40 products split across threads (row blocks of BLIS where it is loaded),
        // one block shorter than the others.
        let odd = Tensor::randn(0f32, 1., (301, 40), &dev).unwrap();
        let diff = max_diff(
            &matmul_xwt(&odd, &w).unwrap(),
            &odd.matmul(&w.t().unwrap()).unwrap(),
        );
        assert!(diff < 1e-4, "fused product differs by {diff}");
        assert!(matmul_xwt(&odd, &w.t().unwrap()).is_err());
        assert!(linear(&x, &w.t().unwrap(), &b).is_err());
        assert!(linear_residual_norm(&x, &w, &b, &x, &norm).is_err());
    }

    #[test]
    fn erf_is_accurate_and_linear_gelu_matches_candle() {
        for i in -600..=600 {
            let x = i as f64 / 100.0;
            let exact = candle_core::cpu::erf::erf_f64(x);
            assert!((erf(x as f32) as f64 - exact).abs() < 4e-7, "erf({x})");
        }
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (37, 24), &dev).unwrap();
        let w = Tensor::randn(0f32, 1., (40, 24), &dev).unwrap();
        let b = Tensor::randn(0f32, 1., 40, &dev).unwrap();
        let ours = linear_gelu(&x, &w, &b).unwrap();
        let reference = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap()
            .gelu_erf()
            .unwrap();
        let worst = (ours - reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(worst < 2e-5, "linear-gelu differs from candle by {worst}");
    }
}

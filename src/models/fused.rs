//! Fused kernels for CPU f32 inference (no backward pass; training composes candle ops).
//!
//! candle's CPU element-wise ops run on one thread, one op per pass over memory, and its matmul
//! zero-fills every output. On an encoder's `[tokens, hidden]` activations those passes cost as
//! much as a third of the matrix products, so here: a linear layer writes its product straight
//! onto its bias (and residual), the feed-forward GELU runs in place on the product's buffer, and
//! the attention softmax uses a vectorisable exp.

use candle_core::{CpuStorage, Result, Storage, Tensor};
use rayon::prelude::*;

/// Runs `f` on the contiguous f32 CPU data of `t`.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
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

/// `x · wᵀ + bias (+ residual)` for `x`: `[rows, in]`, `w`: `[out, in]`, `bias`: `[out]`,
/// `residual`: `[rows, out]`. The output starts as `bias + residual` and the matrix product is
/// accumulated onto it, so there is no separate add pass and no zero fill.
pub fn linear(x: &Tensor, w: &Tensor, bias: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
    let (out, rows, out_dim) = linear_values(x, w, bias, residual)?;
    Tensor::from_vec(out, (rows, out_dim), x.device())
}

/// `gelu_erf(x · wᵀ + bias)`: the feed-forward input projection and its activation, with the
/// activation applied in parallel on the product's own buffer.
pub fn linear_gelu(x: &Tensor, w: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (mut out, rows, out_dim) = linear_values(x, w, bias, None)?;
    out.par_chunks_mut(1 << 16).for_each(gelu_dispatch);
    Tensor::from_vec(out, (rows, out_dim), x.device())
}

fn linear_values(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    residual: Option<&Tensor>,
) -> Result<(Vec<f32>, usize, usize)> {
    let x = x.contiguous()?;
    let (rows, inner) = x.dims2()?;
    let (out_dim, w_inner) = w.dims2()?;
    if inner != w_inner || bias.dims1()? != out_dim {
        candle_core::bail!(
            "fused linear: x {:?}, w {:?}, bias {:?} do not fit",
            x.dims(),
            w.dims(),
            bias.dims()
        );
    }
    let mut out = with_f32(bias, |b| Ok(b.repeat(rows)))?;
    if let Some(r) = residual {
        if r.dims() != [rows, out_dim] {
            candle_core::bail!(
                "fused linear: residual {:?} is not [{rows}, {out_dim}]",
                r.dims()
            );
        }
        with_f32(&r.contiguous()?, |r| {
            out.par_chunks_mut(1 << 14)
                .zip(r.par_chunks(1 << 14))
                .for_each(|(o, r)| {
                    o.iter_mut().zip(r).for_each(|(o, r)| *o += r);
                });
            Ok(())
        })?;
    }
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
    with_f32(&x, |xs| {
        with_f32(&w.contiguous()?, |ws| {
            // BLIS is faster on these shapes single-threaded; a split product stays with gemm.
            if matches!(parallelism, gemm::Parallelism::None)
                && super::blas::accumulate_xwt(xs, ws, &mut out, rows, inner, out_dim)
            {
                return Ok(());
            }
            // SAFETY: out is [rows, out_dim], xs [rows, inner], ws [out_dim, inner], all contiguous.
            unsafe {
                gemm::gemm(
                    rows,
                    out_dim,
                    inner,
                    out.as_mut_ptr(),
                    1,
                    out_dim as isize,
                    true,
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
            }
            Ok(())
        })
    })?;
    Ok((out, rows, out_dim))
}

/// e^x for x ≤ 0 (softmax after subtracting the row max): Cody–Waite range reduction to
/// r ∈ [-ln2/2, ln2/2], a degree-7 Taylor polynomial (relative error < 1e-8), and 2^n built from
/// the exponent bits. Branch-free so that softmax loops vectorise.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
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
    let scale = f32::from_bits(((n + 127) as u32) << 23);
    p * scale
}

/// Eight independent accumulators: float reductions are not reassociated by the compiler, so a
/// single running max or sum would serialise the loop; lanes let it use vector registers.
const LANES: usize = 8;

#[inline(always)]
fn lane_reduce(row: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = f(acc[i], c[i]);
        }
    }
    let mut r = tail.iter().fold(init, |a, &v| f(a, v));
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_avx2(scores: &mut [f32], width: usize) {
    softmax_rows(scores, width)
}

/// In-place softmax of each `width`-long row of `scores`.
pub(crate) fn softmax_in_place(scores: &mut [f32], width: usize) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { softmax_rows_avx2(scores, width) };
    }
    softmax_rows(scores, width)
}

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

#[inline(always)]
fn gelu_in_place(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_in_place_avx2(values: &mut [f32]) {
    gelu_in_place(values)
}

fn gelu_dispatch(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { gelu_in_place_avx2(values) };
    }
    gelu_in_place(values)
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

    #[test]
    fn fused_linear_matches_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (300, 40), &dev).unwrap();
        let w = Tensor::randn(0f32, 1., (24, 40), &dev).unwrap();
        let b = Tensor::randn(0f32, 1., 24, &dev).unwrap();
        let r = Tensor::randn(0f32, 1., (300, 24), &dev).unwrap();
        let reference = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        for (res, expect) in [
            (None, reference.clone()),
            (Some(&r), (&reference + &r).unwrap()),
        ] {
            let ours = linear(&x, &w, &b, res).unwrap();
            let diff = (ours - expect)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "fused linear differs by {diff}");
        }
        assert!(linear(&x, &w.t().unwrap(), &b, None).is_err());
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

//! An optional system BLIS for the f32 products of CPU inference.
//!
//! On the encoder's shapes (7,650 × 384 × 1,536 and the like, one single-threaded product per
//! core), BLIS 0.9 ran 134–144 GFLOPS on this project's 2-core AMD machine against 106–118 for
//! the gemm crate (`scripts/bench-sgemm.sh`). BLIS is loaded at run time, so nothing is needed
//! at build time and machines without it use the gemm crate. `RAGTUNE_BLAS` chooses: unset tries
//! `libblis.so.4`; `off` never loads one; anything else is the path of a library exporting
//! `cblas_sgemm` that runs single-threaded by default (a multi-threaded OpenBLAS would start
//! its own threads inside every one of the encoder's concurrent passes).

use std::sync::OnceLock;

/// `cblas_sgemm`'s C signature.
type Sgemm = unsafe extern "C" fn(
    layout: i32,
    trans_a: i32,
    trans_b: i32,
    m: i32,
    n: i32,
    k: i32,
    alpha: f32,
    a: *const f32,
    lda: i32,
    b: *const f32,
    ldb: i32,
    beta: f32,
    c: *mut f32,
    ldc: i32,
);

const ROW_MAJOR: i32 = 101;
const NO_TRANS: i32 = 111;
const TRANS: i32 = 112;

static SGEMM: OnceLock<Option<Sgemm>> = OnceLock::new();

fn load() -> Option<Sgemm> {
    let (name, explicit) = match std::env::var("RAGTUNE_BLAS") {
        Ok(choice) if choice == "off" => return None,
        Ok(path) => (path, true),
        Err(_) => ("libblis.so.4".to_string(), false),
    };
    let sgemm = open_sgemm(&name);
    if sgemm.is_none() && explicit {
        eprintln!(
            "ragtune: RAGTUNE_BLAS={name}: cannot load it or it has no cblas_sgemm; \
             using the built-in matrix kernels"
        );
    }
    sgemm
}

#[cfg(unix)]
fn open_sgemm(name: &str) -> Option<Sgemm> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: dlopen/dlsym with valid C strings; the library stays loaded for the process.
    unsafe {
        let handle = libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if handle.is_null() {
            return None;
        }
        let symbol = libc::dlsym(handle, c"cblas_sgemm".as_ptr());
        (!symbol.is_null()).then(|| std::mem::transmute::<*mut libc::c_void, Sgemm>(symbol))
    }
}

#[cfg(not(unix))]
fn open_sgemm(_name: &str) -> Option<Sgemm> {
    None
}

/// Whether a BLAS was loaded (see the module docs for how one is chosen).
pub fn available() -> bool {
    SGEMM.get_or_init(load).is_some()
}

/// `out = x · wᵀ` (or `out += x · wᵀ` with `accumulate`) on the calling thread, for x
/// `[rows, inner]`, w `[out_dim, inner]`, out `[rows, out_dim]`, all row-major. Returns false
/// (and does nothing) without a BLAS or when a dimension does not fit the C interface's `int`.
/// Without `accumulate`, `out` is only written (BLAS reads no C when beta is zero).
///
/// # Safety
/// `out` must be valid for writes of `rows × out_dim` f32, and initialised when accumulating.
pub unsafe fn sgemm_xwt(
    x: &[f32],
    w: &[f32],
    out: *mut f32,
    rows: usize,
    inner: usize,
    out_dim: usize,
    accumulate: bool,
) -> bool {
    let Some(sgemm) = *SGEMM.get_or_init(load) else {
        return false;
    };
    let (Ok(m), Ok(k), Ok(n)) = (
        i32::try_from(rows),
        i32::try_from(inner),
        i32::try_from(out_dim),
    ) else {
        return false;
    };
    assert!(x.len() >= rows * inner && w.len() >= out_dim * inner);
    let beta = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: the slices hold the row-major matrices the leading dimensions describe; the
    // caller vouches for `out`.
    unsafe {
        sgemm(
            ROW_MAJOR,
            NO_TRANS,
            TRANS,
            m,
            n,
            k,
            1.0,
            x.as_ptr(),
            k,
            w.as_ptr(),
            k,
            beta,
            out,
            n,
        )
    };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loaded BLAS accumulates x · wᵀ onto `out`, and overwrites `out` with it, exactly as
    /// the definition says (checked in f64), on a shape whose dimensions are not multiples of any
    /// register block.
    #[test]
    fn blas_computes_x_times_w_transposed() {
        if !available() {
            println!("SKIPPED: no BLAS loaded (install libblis4, or set RAGTUNE_BLAS to a library with cblas_sgemm)");
            return;
        }
        let (rows, inner, out_dim) = (37, 29, 23);
        let x: Vec<f32> = (0..rows * inner)
            .map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0)
            .collect();
        let w: Vec<f32> = (0..out_dim * inner)
            .map(|i| ((i * 5) % 13) as f32 / 6.0 - 1.0)
            .collect();
        let start: Vec<f32> = (0..rows * out_dim).map(|i| (i % 3) as f32).collect();
        for accumulate in [true, false] {
            // A NaN start checks that overwriting never reads the old values.
            let mut out = if accumulate {
                start.clone()
            } else {
                vec![f32::NAN; rows * out_dim]
            };
            // SAFETY: `out` holds rows × out_dim initialised values.
            assert!(unsafe {
                sgemm_xwt(&x, &w, out.as_mut_ptr(), rows, inner, out_dim, accumulate)
            });
            for r in 0..rows {
                for c in 0..out_dim {
                    let dot: f64 = (0..inner)
                        .map(|k| x[r * inner + k] as f64 * w[c * inner + k] as f64)
                        .sum();
                    let base = if accumulate {
                        start[r * out_dim + c] as f64
                    } else {
                        0.0
                    };
                    let got = out[r * out_dim + c] as f64;
                    assert!(
                        (got - (base + dot)).abs() < 1e-4,
                        "[{r}, {c}] accumulate={accumulate}: {got} vs {}",
                        base + dot
                    );
                }
            }
        }
    }
}

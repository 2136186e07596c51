//! The one switch between ragtune's CPU kernels and candle's composed ops.
//!
//! Every op that has a hand-written CPU kernel (fused attention and layer norm, the packed
//! inference path, the training kernels, the frozen LoRA base product) also has a form composed
//! from candle primitives: the form other devices (CUDA) run. Each asks [`applies`] which to take.
//! The kernels win on the CPU in f32/f64 unless the composed form is asked for, which is how the
//! tests run the gradient, parity and resume checks through the path a GPU takes:
//!
//! - `RAGTUNE_KERNELS=portable` (the process default; `native`, the default, uses the kernels);
//! - [`with`] for the calling thread (tests run both paths in one binary).
//!
//! The choice is made on the thread that launches an op chain; work fanned out to other threads
//! takes the decision with it, never asks again.

use std::cell::Cell;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};

/// Which implementation the ops take on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// ragtune's fused CPU kernels where they exist (the default).
    Native,
    /// candle's composed ops everywhere: the path CUDA runs, here on the CPU.
    Portable,
}

impl Kernels {
    /// The name `RAGTUNE_KERNELS` takes.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Native => "native",
            Kernels::Portable => "portable",
        }
    }
}

thread_local! {
    static CHOSEN: Cell<Option<Kernels>> = const { Cell::new(None) };
}

fn process_default() -> Kernels {
    static FROM_ENV: OnceLock<Kernels> = OnceLock::new();
    *FROM_ENV.get_or_init(|| match std::env::var("RAGTUNE_KERNELS") {
        Ok(v) if v.eq_ignore_ascii_case("portable") => Kernels::Portable,
        Ok(v) if v.is_empty() || v.eq_ignore_ascii_case("native") => Kernels::Native,
        Ok(v) => {
            eprintln!(
                "ragtune: RAGTUNE_KERNELS={v} is neither `native` nor `portable`; using native"
            );
            Kernels::Native
        }
        Err(_) => Kernels::Native,
    })
}

/// The implementation ops launched from this thread take.
pub fn active() -> Kernels {
    CHOSEN.with(|c| c.get()).unwrap_or_else(process_default)
}

/// Runs `f` with this thread's ops on `kernels`, then restores the previous choice (also when
/// `f` panics).
pub fn with<R>(kernels: Kernels, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Kernels>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CHOSEN.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CHOSEN.with(|c| c.replace(Some(kernels))));
    f()
}

/// Whether a CPU kernel handles data of `dtype` on `device`: the device is the CPU, the kernel
/// supports the type, and the composed form was not asked for.
pub fn applies_to(device: &Device, dtype: DType, supported: &[DType]) -> bool {
    device.is_cpu() && supported.contains(&dtype) && active() == Kernels::Native
}

/// [`applies_to`] for a tensor.
pub fn applies(t: &Tensor, supported: &[DType]) -> bool {
    applies_to(t.device(), t.dtype(), supported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_is_per_thread_and_restored() {
        let t = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        let before = applies(&t, &[DType::F32]);
        let inside = with(Kernels::Portable, || {
            let here = applies(&t, &[DType::F32]);
            let elsewhere = std::thread::spawn(active).join().unwrap();
            (here, elsewhere)
        });
        assert!(!inside.0, "portable turns the kernels off");
        assert_eq!(inside.1, process_default(), "other threads keep theirs");
        assert_eq!(applies(&t, &[DType::F32]), before);
        assert!(!with(Kernels::Native, || applies(&t, &[DType::F64])));
        assert!(with(Kernels::Native, || applies(&t, &[DType::F32])));
    }
}

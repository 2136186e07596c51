//! Mixed-precision training ("autocast", as `bf16=True` / `fp16=True` in the Python trainers):
//! weights, optimizer state, gradients and every reduction stay in f32; the matrix products of
//! the forward and backward passes run in bf16 or f16, where a GPU's tensor cores make them
//! several times faster.
//!
//! The training loop sets the precision for the thread that runs a step ([`autocast`]); models
//! multiply through [`matmul`], which casts both operands down and the product back to f32 (the
//! casts are differentiable, so gradients reach the f32 weights in f32). f16's narrow range
//! needs loss scaling: the loss is multiplied by [`LossScaler`]'s scale before back-propagation
//! ([`scale_loss`]) and the gradients divided by it after; a step whose gradients overflow is
//! skipped and the scale halved, and after 2,000 clean steps it doubles (PyTorch's `GradScaler`
//! defaults). bf16 has f32's range and needs none.
//!
//! The fused CPU kernels compute in f32 whatever the precision; on the CPU mixed precision only
//! reaches the products of the composed path, and is slower than f32 there (no bf16 units).

use std::cell::Cell;

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// The type matrix products of a training step run in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (the default).
    #[default]
    F32,
    /// Products in bfloat16 (8-bit exponent: f32's range, no loss scaling).
    Bf16,
    /// Products in float16, with dynamic loss scaling.
    F16,
}

impl Precision {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Precision::F32,
            "bf16" | "bfloat16" => Precision::Bf16,
            "f16" | "fp16" | "float16" => Precision::F16,
            other => bail!("precision `{other}`: expected f32, bf16 or f16"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// The tensor type of this precision (for loading weights in it, for inference).
    pub fn dtype(self) -> DType {
        self.half().unwrap_or(DType::F32)
    }

    fn half(self) -> Option<DType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(DType::BF16),
            Precision::F16 => Some(DType::F16),
        }
    }
}

thread_local! {
    static ACTIVE: Cell<(Precision, f64)> = const { Cell::new((Precision::F32, 1.0)) };
}

/// Runs `f` (a forward and backward pass) with this thread's products in `precision` and its
/// losses scaled by `loss_scale`; restores the previous setting afterwards, also on panic.
pub fn autocast<R>(precision: Precision, loss_scale: f64, f: impl FnOnce() -> R) -> R {
    struct Restore((Precision, f64));
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTIVE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(ACTIVE.with(|c| c.replace((precision, loss_scale))));
    f()
}

/// The precision products take on this thread now.
pub fn active() -> Precision {
    ACTIVE.with(|c| c.get().0)
}

/// `a · b`, in the active precision when both are f32 (the product comes back as f32).
pub fn matmul(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    match active().half() {
        Some(half) if a.dtype() == DType::F32 && b.dtype() == DType::F32 => a
            .to_dtype(half)?
            .matmul(&b.to_dtype(half)?)?
            .to_dtype(DType::F32),
        _ => a.matmul(b),
    }
}

/// The loss to back-propagate: `loss` times the active loss scale (1 outside f16 training).
pub fn scale_loss(loss: &Tensor) -> candle_core::Result<Tensor> {
    let scale = ACTIVE.with(|c| c.get().1);
    if scale == 1.0 {
        Ok(loss.clone())
    } else {
        loss * scale
    }
}

/// Dynamic loss scaling for f16 (PyTorch `GradScaler`'s defaults); a fixed scale of 1 otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub scale: f64,
    /// Clean steps since the scale last changed.
    pub clean_steps: usize,
    /// Steps skipped for overflow so far (the optimizer took that many fewer).
    #[serde(default)]
    pub skipped: usize,
}

impl LossScaler {
    const GROWTH_INTERVAL: usize = 2000;

    pub fn new(precision: Precision) -> Self {
        Self {
            scale: if precision == Precision::F16 {
                65536.0
            } else {
                1.0
            },
            clean_steps: 0,
            skipped: 0,
        }
    }

    /// After a step: `finite` says whether its gradients were. Returns whether to apply it.
    pub fn update(&mut self, precision: Precision, finite: bool) -> bool {
        if precision != Precision::F16 {
            return finite;
        }
        if finite {
            self.clean_steps += 1;
            if self.clean_steps == Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.clean_steps = 0;
            }
        } else {
            self.scale = (self.scale * 0.5).max(1.0);
            self.clean_steps = 0;
            self.skipped += 1;
        }
        finite
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn products_run_in_half_precision_and_gradients_come_back_in_f32() {
        let dev = Device::Cpu;
        let a = Var::new(&[[1.0f32, 2.0], [3.0, 4.0]], &dev).unwrap();
        // 1 + 2^-10 is not a bf16 (8 bits of mantissa): the bf16 product shows it was rounded.
        let b = Tensor::new(&[[1.0f32 + 1.0 / 1024.0], [1.0]], &dev).unwrap();
        let exact = a.as_tensor().matmul(&b).unwrap();
        let (half, grad) = autocast(Precision::Bf16, 1.0, || {
            let y = matmul(a.as_tensor(), &b).unwrap();
            let g = scale_loss(&y.sum_all().unwrap())
                .unwrap()
                .backward()
                .unwrap();
            (y, g.get(a.as_tensor()).unwrap().clone())
        });
        assert_eq!(half.dtype(), DType::F32);
        assert_eq!(grad.dtype(), DType::F32);
        let (h, e): (Vec<f32>, Vec<f32>) = (
            half.flatten_all().unwrap().to_vec1().unwrap(),
            exact.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(h, vec![3.0, 7.0], "bf16 rounds 1 + 2^-10 to 1");
        assert!(e[0] > 3.0);
        // d(sum(a·b))/da = bᵀ per row, rounded to bf16 on the way back.
        let g: Vec<f32> = grad.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(g, vec![1.0, 1.0, 1.0, 1.0]);
        // Outside autocast the product is f32 again.
        assert_eq!(
            matmul(a.as_tensor(), &b).unwrap().to_vec2::<f32>().unwrap()[0][0],
            e[0]
        );
    }

    #[test]
    fn f16_loss_scale_backs_off_on_overflow_and_grows_after_clean_steps() {
        let mut s = LossScaler::new(Precision::F16);
        assert_eq!(s.scale, 65536.0);
        assert!(!s.update(Precision::F16, false));
        assert_eq!((s.scale, s.skipped), (32768.0, 1));
        for _ in 0..2000 {
            assert!(s.update(Precision::F16, true));
        }
        assert_eq!((s.scale, s.clean_steps), (65536.0, 0));
        let mut b = LossScaler::new(Precision::Bf16);
        assert!(b.update(Precision::Bf16, true) && b.scale == 1.0);
        let loss = Tensor::new(2.0f32, &Device::Cpu).unwrap();
        let scaled = autocast(Precision::F16, 8.0, || scale_loss(&loss).unwrap());
        assert_eq!(scaled.to_scalar::<f32>().unwrap(), 16.0);
        assert!(Precision::parse("fp16").unwrap() == Precision::F16);
        assert!(Precision::parse("int8")
            .unwrap_err()
            .to_string()
            .contains("bf16"));
    }
}

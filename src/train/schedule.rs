//! Learning-rate schedules: linear warm-up from 0, then linear or cosine decay to 0 (or
//! constant), as Hugging Face's `get_*_schedule_with_warmup`. The rate of optimizer step `s`
//! (counting from 0) is `lr · factor(s)`; the very first step therefore runs at rate 0 when there
//! is warm-up, as it does there.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    #[default]
    Linear,
    Cosine,
    Constant,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub decay: Decay,
}

impl Schedule {
    /// Warm-up steps from an explicit count or a ratio of the total (rounded up, as Transformers).
    pub fn warmup(total_steps: usize, warmup_steps: Option<usize>, warmup_ratio: f64) -> usize {
        warmup_steps.unwrap_or_else(|| (warmup_ratio * total_steps as f64).ceil() as usize)
    }

    pub fn lr_at(&self, step: usize) -> f64 {
        let (s, w, t) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        if step < self.warmup_steps {
            return self.lr * s / w.max(1.0);
        }
        let progress = (s - w) / (t - w).max(1.0);
        let factor = match self.decay {
            Decay::Constant => 1.0,
            Decay::Linear => ((t - s) / (t - w).max(1.0)).max(0.0),
            Decay::Cosine => (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
        };
        self.lr * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let s = Schedule {
            lr: 1.0,
            warmup_steps: Schedule::warmup(23, None, 0.1),
            total_steps: 23,
            decay: Decay::Linear,
        };
        assert_eq!(s.warmup_steps, 3);
        let lrs: Vec<f64> = (0..23).map(|i| s.lr_at(i)).collect();
        assert_eq!(lrs[0], 0.0);
        assert!((lrs[1] - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(lrs[3], 1.0);
        assert!((lrs[22] - 1.0 / 20.0).abs() < 1e-12);
        let c = Schedule {
            decay: Decay::Cosine,
            ..s
        };
        assert!((c.lr_at(13) - 0.5).abs() < 1e-12, "half-way through decay");
        let k = Schedule {
            decay: Decay::Constant,
            ..s
        };
        assert_eq!(k.lr_at(22), 1.0);
    }
}

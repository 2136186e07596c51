//! Base vs tuned on the same questions: the mean of the per-question differences with a seeded
//! percentile-bootstrap 95 % confidence interval (questions resampled with replacement, so the
//! interval reflects how much the gain depends on which questions were asked).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Bootstrap resamples behind each interval.
pub const RESAMPLES: usize = 2000;

/// One metric, base and tuned, over the same `n` questions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    pub n: usize,
    pub base: f64,
    pub tuned: f64,
    /// `tuned - base` (the mean of the per-question differences).
    pub difference: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

impl PairedDifference {
    /// Whether the interval excludes zero.
    pub fn significant(&self) -> bool {
        self.ci_low > 0.0 || self.ci_high < 0.0
    }
}

/// Compares per-question values (`base[i]` and `tuned[i]` belong to question `i`).
pub fn paired_difference(base: &[f64], tuned: &[f64], seed: u64) -> Result<PairedDifference> {
    if base.len() != tuned.len() {
        bail!(
            "paired values differ in length: {} base, {} tuned",
            base.len(),
            tuned.len()
        );
    }
    let n = base.len();
    if n == 0 {
        bail!("no questions to compare");
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let deltas: Vec<f64> = tuned.iter().zip(base).map(|(t, b)| t - b).collect();
    let mut rng = Rng::new(seed);
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| (0..n).map(|_| deltas[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
    Ok(PairedDifference {
        n,
        base: mean(base),
        tuned: mean(tuned),
        difference: mean(&deltas),
        ci_low: at(0.025),
        ci_high: at(0.975),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_shift_has_a_point_interval_and_noise_a_wide_one() {
        let base = [0.2, 0.4, 0.6, 0.8];
        let tuned = [0.3, 0.5, 0.7, 0.9];
        let d = paired_difference(&base, &tuned, 1).unwrap();
        assert_eq!(d.n, 4);
        assert!((d.difference - 0.1).abs() < 1e-12);
        assert!((d.ci_low - 0.1).abs() < 1e-12 && (d.ci_high - 0.1).abs() < 1e-12);
        assert!(d.significant());
        // Two questions gain 1, two lose 1: mean 0, interval around it.
        let d = paired_difference(&[0.0, 0.0, 1.0, 1.0], &[1.0, 1.0, 0.0, 0.0], 1).unwrap();
        assert_eq!(d.difference, 0.0);
        assert!(d.ci_low < 0.0 && d.ci_high > 0.0 && !d.significant());
        assert!(d.ci_low >= -1.0 && d.ci_high <= 1.0);
        // Seeded: the same interval every time.
        assert_eq!(
            paired_difference(&[0.0, 1.0, 1.0], &[1.0, 1.0, 0.5], 7).unwrap(),
            paired_difference(&[0.0, 1.0, 1.0], &[1.0, 1.0, 0.5], 7).unwrap()
        );
        assert!(paired_difference(&[1.0], &[], 0).is_err());
        assert!(paired_difference(&[], &[], 0).is_err());
    }
}

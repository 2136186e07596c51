//! Choosing one query's negatives from its ranked candidates. Pure: scores in, choices out, so
//! every filter is testable on numbers made by hand.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// The highest-scoring candidates that pass the filters.
    #[default]
    Top,
    /// A uniform sample of the candidates that pass the filters.
    Random,
}

/// The filters of `mine_hard_negatives`. As there, the score filters run first, over the
/// `range_max` (+ positives) best-ranked candidates; the survivors are cut to `range_max`, the
/// first `range_min` of them skipped, and `num_negatives` taken (top, or a random sample).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Filters {
    /// Skip the `range_min` best surviving candidates (likely unlabelled positives).
    pub range_min: usize,
    /// Consider only this many best-ranked candidates.
    pub range_max: usize,
    /// Drop candidates scoring above this (near-duplicates of the positive).
    pub max_score: Option<f32>,
    /// Drop candidates scoring below this (too easy).
    pub min_score: Option<f32>,
    /// Drop candidates scoring above `positive − absolute_margin`.
    pub absolute_margin: Option<f32>,
    /// Drop candidates scoring above `positive − |positive| · relative_margin`.
    pub relative_margin: Option<f32>,
    pub num_negatives: usize,
    pub sampling: Sampling,
}

/// `candidates`: (corpus row, score) of the best-ranked non-positive documents, best first.
/// `positive`: the score of the query's lowest-scoring positive. Returns the chosen negatives,
/// best first.
pub fn choose(
    candidates: &[(usize, f32)],
    positive: f32,
    f: &Filters,
    rng: &mut Rng,
) -> Vec<(usize, f32)> {
    let passing: Vec<(usize, f32)> = candidates
        .iter()
        .copied()
        .filter(|&(_, s)| f.absolute_margin.is_none_or(|m| s + m <= positive))
        .filter(|&(_, s)| {
            f.relative_margin
                .is_none_or(|m| s <= positive - positive.abs() * m)
        })
        .filter(|&(_, s)| f.max_score.is_none_or(|m| s <= m))
        .filter(|&(_, s)| f.min_score.is_none_or(|m| s >= m))
        .take(f.range_max)
        .skip(f.range_min)
        .collect();
    match f.sampling {
        Sampling::Top => passing.into_iter().take(f.num_negatives).collect(),
        Sampling::Random => {
            let mut picked = rng.sample(&passing, f.num_negatives);
            picked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            picked
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranked() -> Vec<(usize, f32)> {
        [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
            .iter()
            .enumerate()
            .map(|(i, &s)| (i, s))
            .collect()
    }

    fn filters() -> Filters {
        Filters {
            range_min: 0,
            range_max: 100,
            max_score: None,
            min_score: None,
            absolute_margin: None,
            relative_margin: None,
            num_negatives: 3,
            sampling: Sampling::Top,
        }
    }

    fn rows(v: Vec<(usize, f32)>) -> Vec<usize> {
        v.into_iter().map(|(i, _)| i).collect()
    }

    #[test]
    fn each_filter_removes_what_it_should() {
        let mut rng = Rng::new(0);
        let c = ranked();
        assert_eq!(rows(choose(&c, 0.85, &filters(), &mut rng)), vec![0, 1, 2]);
        let f = Filters {
            range_min: 2,
            range_max: 4,
            ..filters()
        };
        assert_eq!(
            rows(choose(&c, 0.85, &f, &mut rng)),
            vec![2, 3],
            "ranks 2 and 3 only"
        );
        let f = Filters {
            max_score: Some(0.8),
            ..filters()
        };
        assert_eq!(
            rows(choose(&c, 0.85, &f, &mut rng)),
            vec![2, 3, 4],
            "0.8 itself is kept"
        );
        let f = Filters {
            min_score: Some(0.6),
            num_negatives: 10,
            ..filters()
        };
        assert_eq!(rows(choose(&c, 0.85, &f, &mut rng)), vec![0, 1, 2, 3, 4]);
        // positive 0.85, absolute margin 0.1: at most 0.75.
        let f = Filters {
            absolute_margin: Some(0.1),
            ..filters()
        };
        assert_eq!(rows(choose(&c, 0.85, &f, &mut rng)), vec![3, 4, 5]);
        // positive 0.8, relative margin 0.25: at most 0.6.
        let f = Filters {
            relative_margin: Some(0.25),
            ..filters()
        };
        assert_eq!(rows(choose(&c, 0.8, &f, &mut rng)), vec![4, 5, 6]);
        let f = Filters {
            range_max: 2,
            ..filters()
        };
        assert_eq!(
            choose(&c, 0.85, &f, &mut rng).len(),
            2,
            "fewer than asked when the range is short"
        );
        // Filters run before range_min: 0.95 and 0.9 fail max_score, then one survivor is skipped.
        let f = Filters {
            max_score: Some(0.85),
            range_min: 1,
            ..filters()
        };
        assert_eq!(rows(choose(&c, 0.85, &f, &mut rng)), vec![3, 4, 5]);
        // A negative positive score: the relative margin still lowers the threshold (−0.2 − 0.1).
        let low: Vec<(usize, f32)> = vec![(0, -0.25), (1, -0.3), (2, -0.35)];
        let f = Filters {
            relative_margin: Some(0.5),
            ..filters()
        };
        assert_eq!(rows(choose(&low, -0.2, &f, &mut rng)), vec![1, 2]);
    }

    #[test]
    fn random_sampling_draws_distinct_passing_candidates_reproducibly() {
        let c = ranked();
        let f = Filters {
            sampling: Sampling::Random,
            max_score: Some(0.75),
            ..filters()
        };
        let a = choose(&c, 0.9, &f, &mut Rng::new(5));
        assert_eq!(a, choose(&c, 0.9, &f, &mut Rng::new(5)));
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|&(i, s)| i >= 3 && s <= 0.75));
        assert!(
            a.windows(2).all(|w| w[0].1 >= w[1].1),
            "sampled negatives come back best first"
        );
        let distinct: std::collections::HashSet<usize> = a.iter().map(|x| x.0).collect();
        assert_eq!(distinct.len(), 3);
        let draws: std::collections::HashSet<Vec<usize>> = (0..20)
            .map(|s| rows(choose(&c, 0.9, &f, &mut Rng::new(s))))
            .collect();
        assert!(draws.len() > 1, "different seeds draw different negatives");
    }
}

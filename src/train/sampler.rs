//! Which rows go into which batch. Batches are a pure function of (seed, epoch), so a resumed
//! run rebuilds the epoch's batches and skips the ones already trained on.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// What a sampler needs of a training set: how many rows, and the texts of a row (so that
/// NO_DUPLICATES can keep a text from appearing twice in one batch).
pub trait SampleRows {
    fn rows(&self) -> usize;
    fn row_texts(&self, row: usize) -> Vec<&str>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BatchSampler {
    /// Shuffled rows, cut into consecutive batches.
    Plain,
    /// As sentence-transformers' NO_DUPLICATES: no text appears twice in a batch, because with
    /// in-batch negatives a repeated text would be its own false negative. A row that clashes
    /// waits for a later batch.
    #[default]
    NoDuplicates,
}

/// The batches (row indices) of one epoch; the last may be short.
pub fn epoch_batches(
    set: &dyn SampleRows,
    batch_size: usize,
    sampler: BatchSampler,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut order: Vec<usize> = (0..set.rows()).collect();
    // Mix the epoch into the seed so each epoch has its own order.
    Rng::new(seed ^ (epoch as u64).wrapping_mul(0xA24B_AED4_963E_E407)).shuffle(&mut order);
    match sampler {
        BatchSampler::Plain => order.chunks(batch_size).map(<[usize]>::to_vec).collect(),
        BatchSampler::NoDuplicates => no_duplicates(set, &order, batch_size),
    }
}

fn no_duplicates(set: &dyn SampleRows, order: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut remaining: Vec<usize> = order.to_vec();
    let mut batches = Vec::new();
    while !remaining.is_empty() {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut batch = Vec::with_capacity(batch_size);
        for &row in &remaining {
            let values = set.row_texts(row);
            if values.iter().any(|v| seen.contains(v)) {
                continue;
            }
            seen.extend(values);
            batch.push(row);
            if batch.len() == batch_size {
                break;
            }
        }
        let taken: HashSet<usize> = batch.iter().copied().collect();
        remaining.retain(|r| !taken.contains(r));
        batches.push(batch);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::TrainingSet;

    fn set(anchors: &[&str], positives: &[&str]) -> TrainingSet {
        TrainingSet {
            columns: vec!["anchor".into(), "positive".into()],
            texts: vec![
                anchors.iter().map(|s| s.to_string()).collect(),
                positives.iter().map(|s| s.to_string()).collect(),
            ],
            labels: None,
        }
    }

    #[test]
    fn no_text_repeats_within_a_batch_and_every_row_is_used_once() {
        // Five rows share the positive "p": they must land in five different batches.
        let anchors: Vec<String> = (0..20).map(|i| format!("q{i}")).collect();
        let positives: Vec<String> = (0..20)
            .map(|i| {
                if i % 4 == 0 {
                    "p".into()
                } else {
                    format!("d{i}")
                }
            })
            .collect();
        let a: Vec<&str> = anchors.iter().map(String::as_str).collect();
        let p: Vec<&str> = positives.iter().map(String::as_str).collect();
        let s = set(&a, &p);
        let batches = epoch_batches(&s, 4, BatchSampler::NoDuplicates, 3, 0);
        let mut all: Vec<usize> = batches.concat();
        all.sort_unstable();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        for b in &batches {
            let shared = b.iter().filter(|&&r| positives[r] == "p").count();
            assert!(shared <= 1, "batch {b:?} holds the shared positive twice");
        }
        assert!(batches.len() >= 5);
    }

    #[test]
    fn batches_depend_only_on_seed_and_epoch() {
        let s = set(&["a", "b", "c", "d", "e"], &["1", "2", "3", "4", "5"]);
        let e0 = epoch_batches(&s, 2, BatchSampler::Plain, 9, 0);
        assert_eq!(e0, epoch_batches(&s, 2, BatchSampler::Plain, 9, 0));
        assert_ne!(e0, epoch_batches(&s, 2, BatchSampler::Plain, 9, 1));
        assert_eq!(e0.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 1]);
    }
}

//! LLM-free pairs from one chunk. Inverse cloze task (Lee et al., 2019, "Latent Retrieval for
//! Weakly Supervised Open Domain QA"): a sentence is the pseudo-query and the rest of the chunk
//! the positive (the sentence is left in 10 % of the time, so the model also learns lexical
//! matching). Independent cropping (Izacard et al., 2022, "Contriever"): two random spans of the
//! chunk, each 10–50 % of its words, are query and positive.

use crate::chunk::sentences::sentence_spans;
use crate::rng::Rng;

/// Pairs of (query, positive) per chunk, `per_chunk` at most, reproducible from `seed` and the
/// chunk's id.
pub fn inverse_cloze(text: &str, per_chunk: usize, rng: &mut Rng) -> Vec<(String, String)> {
    let spans = sentence_spans(text);
    if spans.len() < 2 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..spans.len()).collect();
    rng.shuffle(&mut order);
    order
        .into_iter()
        .filter(|&i| text[spans[i].0..spans[i].1].split_whitespace().count() >= 4)
        .take(per_chunk)
        .map(|i| {
            let query = text[spans[i].0..spans[i].1].to_string();
            let keep = rng.unit() < 0.1;
            let positive = spans
                .iter()
                .enumerate()
                .filter(|&(j, _)| keep || j != i)
                .map(|(_, &(s, e))| &text[s..e])
                .collect::<Vec<_>>()
                .join(" ");
            (query, positive)
        })
        .collect()
}

pub fn independent_crops(text: &str, per_chunk: usize, rng: &mut Rng) -> Vec<(String, String)> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() < 10 {
        return Vec::new();
    }
    let crop = |rng: &mut Rng| -> String {
        let ratio = 0.1 + 0.4 * rng.unit();
        let len = ((words.len() as f64 * ratio).round() as usize).max(3);
        let start = rng.below(words.len() - len + 1);
        words[start..start + len].join(" ")
    };
    (0..per_chunk).map(|_| (crop(rng), crop(rng))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "Workers are sterile females. Young workers clean cells and nurse brood. \
                        Middle-aged bees build comb and guard the entrance. The oldest bees forage outside.";

    #[test]
    fn ict_query_is_a_sentence_removed_from_its_positive() {
        let mut rng = Rng::new(1);
        let pairs = inverse_cloze(TEXT, 3, &mut rng);
        assert_eq!(pairs.len(), 3);
        for (q, p) in &pairs {
            assert!(TEXT.contains(q.as_str()), "{q}");
            assert!(q.split_whitespace().count() >= 4);
            // Removed unless the 10 % keep-draw fired; every other sentence is there.
            assert!(p.len() < TEXT.len());
        }
        let mut again = Rng::new(1);
        assert_eq!(pairs, inverse_cloze(TEXT, 3, &mut again));
        assert!(inverse_cloze("Only one sentence here.", 3, &mut rng).is_empty());
    }

    #[test]
    fn crops_are_spans_of_the_chunk() {
        let mut rng = Rng::new(5);
        let pairs = independent_crops(TEXT, 4, &mut rng);
        assert_eq!(pairs.len(), 4);
        let words = TEXT.split_whitespace().count();
        for (a, b) in &pairs {
            for span in [a, b] {
                assert!(TEXT
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .contains(span.as_str()));
                let n = span.split_whitespace().count();
                assert!(n >= 3 && n <= words / 2 + 1, "{n} of {words}");
            }
        }
    }
}

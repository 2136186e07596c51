//! The next token from a row of logits: greedy, or temperature and nucleus (top-p) sampling with
//! the request's own seeded generator (so a request's answer does not depend on its batch mates).

use crate::rng::Rng;

pub fn next_token(logits: &[f32], temperature: f64, top_p: f64, rng: &mut Rng) -> u32 {
    if temperature <= 0.0 {
        return argmax(logits);
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, (((l - max) as f64) / temperature).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    // The smallest set of most likely tokens whose mass reaches top_p.
    let mut kept = 0;
    let mut mass = 0.0;
    for p in &probs {
        kept += 1;
        mass += p.1 / total;
        if mass >= top_p {
            break;
        }
    }
    let kept = &probs[..kept];
    let kept_mass: f64 = kept.iter().map(|p| p.1).sum();
    let mut target = rng.unit() * kept_mass;
    for &(id, p) in kept {
        if target < p {
            return id;
        }
        target -= p;
    }
    kept[kept.len() - 1].0
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(
            next_token(&[0.1, 2.0, 2.0, -1.0], 0.0, 1.0, &mut Rng::new(0)),
            1
        );
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Probabilities ≈ 0.665, 0.245, 0.090: top_p 0.6 leaves only the first token.
        let logits = [2.0, 1.0, 0.0];
        let mut rng = Rng::new(7);
        for _ in 0..200 {
            assert_eq!(next_token(&logits, 1.0, 0.6, &mut rng), 0);
        }
        // With the whole distribution every token appears, in about its share.
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[next_token(&logits, 1.0, 1.0, &mut rng) as usize] += 1;
        }
        assert!(
            (counts[0] as f64 / 3000.0 - 0.665).abs() < 0.03,
            "{counts:?}"
        );
        assert!(
            (counts[2] as f64 / 3000.0 - 0.090).abs() < 0.02,
            "{counts:?}"
        );
    }

    #[test]
    fn same_seed_same_samples() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..20)
                .map(|_| next_token(&logits, 0.8, 0.9, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }
}

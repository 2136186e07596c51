//! Exact dense retrieval: the top-k documents of each query by dot product.
//!
//! Scores are computed block by block (queries × a slice of the corpus), and each query keeps only
//! its best `k`, so memory stays `O(query_block × doc_block + queries × k)` however large the
//! corpus is. Pass L2-normalised embeddings for cosine similarity.

use anyhow::{bail, Result};
use candle_core::Tensor;

/// One retrieved document: its row in the corpus and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub doc: usize,
    pub score: f32,
}

/// Block sizes for [`top_k`]; the defaults keep a score block at 64 MB.
#[derive(Debug, Clone, Copy)]
pub struct SearchOptions {
    pub query_block: usize,
    pub doc_block: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            query_block: 512,
            doc_block: 32_768,
        }
    }
}

/// For every row of `queries` (`[q, dim]`), the `k` rows of `docs` (`[n, dim]`) with the highest
/// dot product, best first (equal scores: lower row first).
pub fn top_k(
    queries: &Tensor,
    docs: &Tensor,
    k: usize,
    options: SearchOptions,
) -> Result<Vec<Vec<Hit>>> {
    let (nq, dq) = queries.dims2()?;
    let (nd, dd) = docs.dims2()?;
    if dq != dd {
        bail!("query embeddings have {dq} dimensions but document embeddings have {dd}");
    }
    let k = k.min(nd);
    let mut best: Vec<Vec<Hit>> = vec![Vec::with_capacity(2 * k); nq];
    let docs = docs.to_dtype(queries.dtype())?;
    for q0 in (0..nq).step_by(options.query_block.max(1)) {
        crate::interrupt::check()?;
        let qn = options.query_block.min(nq - q0);
        let q = queries.narrow(0, q0, qn)?;
        for d0 in (0..nd).step_by(options.doc_block.max(1)) {
            let dn = options.doc_block.min(nd - d0);
            let block = docs.narrow(0, d0, dn)?;
            let scores: Vec<Vec<f32>> = q
                .matmul(&block.t()?)?
                .to_dtype(candle_core::DType::F32)?
                .to_vec2()?;
            for (row, qi) in scores.into_iter().zip(q0..) {
                let kept = &mut best[qi];
                kept.extend(
                    row.into_iter()
                        .enumerate()
                        .map(|(j, score)| Hit { doc: d0 + j, score }),
                );
                keep_best(kept, k);
            }
        }
    }
    for hits in &mut best {
        hits.sort_by(compare_hits);
    }
    Ok(best)
}

fn compare_hits(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc))
}

/// Keeps the `k` best hits (unordered) in linear time.
fn keep_best(hits: &mut Vec<Hit>, k: usize) {
    if hits.len() > k {
        if k > 0 {
            hits.select_nth_unstable_by(k - 1, compare_hits);
        }
        hits.truncate(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn blocked_search_equals_brute_force() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1., (7, 5), &dev).unwrap();
        let d = Tensor::randn(0f32, 1., (53, 5), &dev).unwrap();
        let full: Vec<Vec<f32>> = q.matmul(&d.t().unwrap()).unwrap().to_vec2().unwrap();
        let hits = top_k(
            &q,
            &d,
            10,
            SearchOptions {
                query_block: 3,
                doc_block: 8,
            },
        )
        .unwrap();
        for (qi, row) in full.iter().enumerate() {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let got: Vec<usize> = hits[qi].iter().map(|h| h.doc).collect();
            assert_eq!(got, order[..10].to_vec());
        }
        let err = top_k(
            &q,
            &Tensor::zeros((3, 4), candle_core::DType::F32, &dev).unwrap(),
            2,
            Default::default(),
        );
        assert!(err.unwrap_err().to_string().contains("5 dimensions"));
    }
}

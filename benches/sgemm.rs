//! How fast the f32 matrix products of an all-MiniLM-L6-v2 forward pass run on this machine, and
//! what that implies for the time of encoding (and so mining against) a corpus.
//!
//! The encoder spends most of its time in these products (82 % of `ragtune encode` in a perf
//! profile, all in gemm's microkernel), so their rate sets a floor under the encode time that no
//! work outside the products can lower. Each product runs the way the encoder runs it: single
//! threaded, one per core at the same time (two passes side by side).
//!
//!   cargo bench --bench sgemm [-- TOKENS_PER_PASS CORPUS_TOKENS]
//!
//! Defaults: 7,650 tokens per pass (32 SciFact documents of 239 tokens on average) and 1,240,000
//! corpus tokens (an estimate for the 5,183 SciFact documents at max length 256: the first 1,000
//! average 239 tokens).

use std::time::Instant;

const HIDDEN: usize = 384;
const FFN: usize = 1536;
const LAYERS: usize = 6;
const HEAD_DIM: usize = 32;
const AVERAGE_LEN: usize = 239;

/// `c = a · bᵀ` with a `[m, k]`, b `[n, k]` (the layout of a linear layer's weight), single threaded.
fn product(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    // SAFETY: a is [m, k], b is [n, k] and c is [m, n], all row-major and contiguous.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// GFLOPS of `[m, k] · [k, n]` with one product per core running at the same time.
fn rate(m: usize, k: usize, n: usize, threads: usize) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    let b: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
    // Enough repetitions for about a second of work per thread at 50 GFLOPS.
    let reps = (25e9 / (2.0 * (m * n * k) as f64)).ceil() as usize;
    let seconds: Vec<f64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut c = vec![0f32; m * n];
                    product(m, k, n, &a, &b, &mut c);
                    let start = Instant::now();
                    for _ in 0..reps {
                        product(m, k, n, &a, &b, &mut c);
                    }
                    start.elapsed().as_secs_f64()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let slowest = seconds.iter().cloned().fold(0.0, f64::max);
    threads as f64 * reps as f64 * 2.0 * (m * n * k) as f64 / slowest / 1e9
}

fn main() {
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = numbers.first().copied().unwrap_or(7_650);
    let corpus_tokens = numbers.get(1).copied().unwrap_or(1_240_000) as f64;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    // (name, m, k, n, products per layer per pass, tokens the product covers)
    let len = AVERAGE_LEN;
    let shapes = [
        ("q/k/v projection", rows, HIDDEN, 3 * HIDDEN, 1.0),
        ("attention output", rows, HIDDEN, HIDDEN, 1.0),
        ("feed-forward in", rows, HIDDEN, FFN, 1.0),
        ("feed-forward out", rows, FFN, HIDDEN, 1.0),
        // Per (sequence, head): scores Q·Kᵀ and context P·V, 12 heads of rows/len sequences.
        (
            "attention Q·Kᵀ",
            len,
            HEAD_DIM,
            len,
            (HIDDEN / HEAD_DIM) as f64 * rows as f64 / len as f64,
        ),
        (
            "attention P·V",
            len,
            len,
            HEAD_DIM,
            (HIDDEN / HEAD_DIM) as f64 * rows as f64 / len as f64,
        ),
    ];
    println!("f32 products of all-MiniLM-L6-v2, {threads} concurrent single-threaded products (gemm 0.19):");
    let mut seconds_per_pass = 0.0;
    for (name, m, k, n, count) in shapes {
        let gflops = rate(m, k, n, threads);
        let flops = count * 2.0 * (m * n * k) as f64 * LAYERS as f64;
        // `threads` passes run side by side, so a pass has one core's share of the rate.
        seconds_per_pass += flops / (gflops / threads as f64 * 1e9);
        println!("  {name:<17} {m:>5} x {k:>4} x {n:>4}: {gflops:6.1} GFLOPS");
    }
    let tokens_per_second = rows as f64 * threads as f64 / seconds_per_pass;
    println!(
        "products alone: {tokens_per_second:.0} tokens/s; {corpus_tokens:.0} tokens take at least {:.0} s",
        corpus_tokens / tokens_per_second
    );
}

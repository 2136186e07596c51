//! Process-wide settings for fast CPU work. Called by the `ragtune` binary at start-up; Rust users
//! of the crate may call [`tune_allocator`] themselves (it changes global malloc behaviour, so
//! the library never does it behind their back).

/// Keeps tensor buffers of every size inside the heap (no `mmap` per allocation) and stops glibc
/// from returning freed memory to the OS at once. Inference and training allocate and free
/// buffers of the same sizes at every batch (training's attention activations are ~100 MB);
/// served by fresh `mmap`s each time, they page-fault in anew and cost a fifth of the compute.
/// One arena for all threads: glibc gives each extra thread's arena its own 64 MB heaps and
/// unmaps a heap as soon as it is empty, so buffers freed on a worker thread came back as fresh
/// pages all the same (1.8 M page faults and 6.8 s of system time encoding 1,000 SciFact texts;
/// 0.1 M and 0.7 s with one arena). jemalloc and mimalloc were tried in their place and fault
/// even more here.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before heavy allocation starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Makes the CPU treat subnormal floats as zero on this thread and on rayon's pool (where the
/// matrix products run): flush-to-zero and denormals-are-zero on x86-64, flush-to-zero on
/// AArch64. Training passes produce subnormal values (one source: an attention weight e^-87 or
/// less, divided by its row's sum, lands below 1.2e-38), and every multiply that touches one
/// takes a slow microcode path: a reranker step on 96 (question, passage) pairs took 133 s with
/// them and 14 s without, with the same loss to the seventh digit. Values below 1.2e-38 add
/// nothing to a model's numbers; PyTorch offers the same switch as
/// `torch.set_flush_denormal(True)`.
///
/// Threads inherit the setting from the thread that starts them, so the `ragtune` binary calls
/// this first thing; the library calls it again where models load and training starts (the
/// calling thread, and the pool once), for programs that use the crate directly.
///
/// `RAGTUNE_SUBNORMALS=keep` leaves the floating-point environment alone (to compare results or
/// speed with subnormals kept, as PyTorch keeps them by default).
pub fn flush_denormals() {
    static POOL: std::sync::Once = std::sync::Once::new();
    static KEEP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *KEEP.get_or_init(|| std::env::var("RAGTUNE_SUBNORMALS").is_ok_and(|v| v == "keep")) {
        return;
    }
    flush_denormals_on_this_thread();
    POOL.call_once(|| {
        rayon::broadcast(|_| flush_denormals_on_this_thread());
    });
}

#[cfg(target_arch = "x86_64")]
fn flush_denormals_on_this_thread() {
    // MXCSR bit 15 is flush-to-zero, bit 6 denormals-are-zero.
    let mut csr: u32 = 0;
    // SAFETY: stmxcsr/ldmxcsr read and write this thread's SSE control register; only the two
    // denormal bits change (rounding and exception masks stay as they were).
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
        csr |= 0x8040;
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack));
    }
}

#[cfg(target_arch = "aarch64")]
fn flush_denormals_on_this_thread() {
    // FPCR bit 24 is flush-to-zero.
    // SAFETY: reads and writes this thread's floating-point control register; only FZ changes.
    unsafe {
        let mut fpcr: u64;
        std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack));
        fpcr |= 1 << 24;
        std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack));
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn flush_denormals_on_this_thread() {}

#[cfg(test)]
mod tests {
    /// Subnormal products are zero on the calling thread, on threads it starts later and on
    /// rayon's pool; with `RAGTUNE_SUBNORMALS=keep` (the test run with it set) they stay.
    #[test]
    fn subnormal_products_become_zero_unless_kept() {
        let keep = std::env::var("RAGTUNE_SUBNORMALS").is_ok_and(|v| v == "keep");
        let tiny = std::hint::black_box(1e-30f32);
        let factor = std::hint::black_box(1e-10f32);
        std::thread::spawn(move || {
            super::flush_denormals();
            let check = |v: f32, place: &str| {
                assert_eq!(
                    v == 0.0,
                    !keep,
                    "{place}: 1e-30 * 1e-10 = {v:e} (keep: {keep})"
                );
            };
            check(tiny * factor, "this thread");
            check(
                std::thread::spawn(move || tiny * factor).join().unwrap(),
                "a thread started after it",
            );
            for v in rayon::broadcast(|_| tiny * factor) {
                check(v, "rayon's pool");
            }
        })
        .join()
        .unwrap();
    }
}

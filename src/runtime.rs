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

//! Process-wide settings for fast CPU work. Called by the `ragtune` binary at start-up; Rust users
//! of the crate may call [`tune_allocator`] themselves (it changes global malloc behaviour, so
//! the library never does it behind their back).

/// Keeps tensor buffers of every size inside the heap (no `mmap` per allocation) and stops glibc
/// from returning freed memory to the OS at once. Inference and training allocate and free
/// buffers of the same sizes at every batch (training's attention activations are ~100 MB);
/// served by fresh `mmap`s each time, they page-fault in anew and cost a fifth of the compute.
/// (jemalloc was tried in their place and was slower here.)
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before heavy allocation starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}

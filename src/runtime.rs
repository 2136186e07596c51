//! Process-wide settings for fast CPU work. Called by the `ragtune` binary at start-up; Rust users
//! of the crate may call [`tune_allocator`] themselves (it changes global malloc behaviour, so
//! the library never does it behind their back).

/// Keeps large tensor buffers (up to 32 MB, glibc's ceiling) inside the heap and stops glibc
/// from returning freed memory to the OS at once. Inference allocates and frees buffers of the
/// same sizes for every batch; served by fresh `mmap`s each time, they page-fault in anew and
/// cost as much system time as a fifth of the compute.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before heavy allocation starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

//! glibc malloc tuning, applied once when the program starts.
//!
//! glibc serves an allocation above its mmap threshold (128 KiB at start) from a mapping of its
//! own, returned to the system when freed, but every such free raises the threshold to the freed
//! size (up to 32 MiB). After the first multi-MiB chunk buffer is freed, buffers of that size come
//! from the per-thread arenas instead and stay resident after they are freed, spread over the
//! arenas of the dozen threads a bucket backup runs. Peak RSS then grows with the length of the
//! run rather than with what it holds: a snapshot of 50,000 objects peaked at 155 MiB against
//! 99 MiB for 10,000 objects; with a fixed 4 MiB threshold, 109 MiB against 95 MiB
//! (bench/RESULTS.md). Setting the threshold also turns its adjustment off. Buffers below it are
//! small enough for the arenas to reuse; 4 MiB rather than 1 MiB keeps directory backups, whose
//! chunks average 1 MiB, from page-faulting a fresh mapping for most chunks.

/// The fixed mmap threshold.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 4 * 1024 * 1024;

/// Fix glibc's mmap threshold (a no-op with other C libraries).
pub(crate) fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called first thing in `main`,
    // before any other thread exists, with a documented parameter and an in-range value.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

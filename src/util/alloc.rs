//! Keeping the CPU backend's buffers in the heap between ops.
//!
//! The CPU ops allocate their outputs (`Vec<f32>`, often megabytes) per call. glibc serves such
//! blocks with `mmap` and gives them back with `munmap`, or trims the heap top on free, so each
//! call's output is faulted in page by page again: on the SmolLM2-135M training step that was
//! ~7% of the time (page faults, zeroing, the kernel's locks). Raising glibc's mmap and trim
//! thresholds keeps freed blocks for the next op. Process-wide, so the library never does it
//! by itself: the `scalerl` binary calls `keep_freed_memory` at start, and so do the CPU
//! benches and examples that measure what the binary does; an embedding program may.

/// Raises glibc's mmap threshold to its maximum, 32 MiB (larger blocks, e.g. whole gradient
/// buffers, are allocated once anyway), and its trim threshold to 2 GiB: freed memory is kept
/// for reuse rather than returned to the OS. A no-op on other C libraries.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

//! glibc's allocator, tuned once at start-up for how an export allocates.
//!
//! glibc serves a block of 128 KiB or more with its own `mmap` and returns it with `munmap` when
//! freed; its threshold rises with what is freed, but not past 32 MiB, and the top of the heap is
//! given back to the kernel once more than twice that threshold is free. An export with long
//! windows allocates and frees batches and per-date buffers of up to 32 MiB (README "Memory")
//! over and over, so those pages were mapped, zero-filled and unmapped again each time:
//! benchmark 3's 31-day export took 243,842 page faults and 1.41 s of system time of its 10.9
//! CPU s. With blocks under 64 MiB served from the heap and the heap kept until 128 MiB of it
//! is free, the same export took 23,093 faults and 0.67 s, at the same peak RSS (115 MB);
//! README "Performance" has the runs.
//!
//! Left alone when `GLIBC_TUNABLES` is set (the user's settings win) and off glibc.

/// Blocks below this many bytes come from the heap, not from a mapping of their own.
pub const MMAP_THRESHOLD_BYTES: i32 = 64 << 20;
/// Free bytes at the top of the heap kept before it is trimmed.
pub const TRIM_THRESHOLD_BYTES: i32 = 128 << 20;

/// Applies [`MMAP_THRESHOLD_BYTES`] and [`TRIM_THRESHOLD_BYTES`] (glibc `mallopt`). Call it
/// before the first threads start. Returns whether they were applied.
pub fn tune() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("GLIBC_TUNABLES").is_some() {
            return false;
        }
        // SAFETY: mallopt only changes two allocator parameters; it is called from `main`
        // before the runtime's threads exist, and both values are in the range glibc accepts.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// glibc accepts both settings (mallopt returns 1), unless the user's tunables are set.
    #[test]
    fn glibc_accepts_the_settings() {
        assert_eq!(super::tune(), std::env::var_os("GLIBC_TUNABLES").is_none());
    }
}

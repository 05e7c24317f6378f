//! Allocator tuning for a daemon with many FUSE sessions.
//!
//! glibc raises its mmap threshold each time a large mmapped block is freed; after that, the
//! per-thread arenas serve the 16 MiB request buffers of every FUSE worker and the 1 MiB read
//! buffers from recycled (and therefore resident) heap memory. Measured: 16 devices held
//! 59 MiB RSS before a single read; with the threshold pinned, 8 MiB. Pinning it keeps large
//! buffers as fresh mappings that the kernel only backs when touched and frees on release.

/// Pin glibc's mmap threshold at 4 MiB, turning off its dynamic raise.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn pin_mmap_threshold() {
    // SAFETY: mallopt only changes allocator parameters; M_MMAP_THRESHOLD with a value below
    // its 32 MiB maximum is valid, and it is called before the daemon starts other threads.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20) };
    if ok != 1 {
        tracing::warn!("mallopt(M_MMAP_THRESHOLD) failed; memory use may be higher");
    }
}

/// Other platforms: nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn pin_mmap_threshold() {}

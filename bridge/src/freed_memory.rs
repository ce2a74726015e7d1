//! Keeping freed frame buffers in the process (`keep_freed_memory`), so that carrying a
//! large frame does not fault its pages in again each time.

/// The size from which glibc's `malloc` maps an allocation of its own (and unmaps it when
/// freed) rather than taking it from its heap: the largest it accepts (32 MiB on 64-bit).
const MMAP_THRESHOLD: i32 = 32 << 20;

/// The free memory at the top of a heap past which glibc gives it back to the kernel.
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Has glibc's `malloc` keep the memory of freed buffers of up to 32 MiB for later
/// allocations, rather than give it back to the kernel. Process-wide; the binary calls it
/// first thing, for every subcommand (Zenoh's floor too, which it then also serves).
///
/// Zenoh's receiving threads assemble each fragmented message (a frame over 64 KiB) in a
/// buffer of its size, zeroed, and free it after the callback. With glibc's defaults the
/// freed memory went back to the kernel, and zeroing the next buffer faulted it in again:
/// `perf record -e page-faults -a` over `scenarios/bridge.toml`'s 1000x1000 case counted
/// 926 884 page faults, 97 % of them in the subscribing bridges' `rx` threads (floor-get's
/// under 1 %), and 20 578 with this. The kernel's page-fault handling fell from 1.5 % to
/// 0.2 % of the run's CPU samples. Freed memory stays in the process, up to its peak use.
/// Elsewhere than glibc, nothing.
pub fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets malloc's parameters (it takes malloc's lock); the values are
    // within the ranges glibc documents for both.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

//! GPU variants of the cases. The GPU issue supplies the code paths; until then every
//! GPU job is skipped with a reason (never a failure). [`skip_reason`] is the single
//! place the runner asks, so a GPU implementation slots in by returning `None` here
//! and adding its roles to [`crate::spawn::Role`].

use crate::scenario::Job;

/// Why this GPU job cannot run here, or `None` when it can.
pub fn skip_reason(job: &Job) -> Option<String> {
    if !job.device.is_gpu() {
        return None;
    }
    if !cuda_driver_present() {
        return Some(format!(
            "{}: no CUDA driver on this machine (libcuda not loadable)",
            job.device
        ));
    }
    Some(format!(
        "{}: GPU code paths are not implemented in this harness yet",
        job.device
    ))
}

/// Whether a CUDA driver library is present (a file check; loading it is the GPU
/// issue's job and needs the library's no-panic probe).
pub fn cuda_driver_present() -> bool {
    [
        "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        "/usr/lib64/libcuda.so.1",
        "/usr/lib/libcuda.so.1",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists())
}

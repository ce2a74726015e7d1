//! GPU variants of the cases. The GPU issue supplies the code paths; until then every
//! GPU job is skipped with a reason (never a failure). [`skip_reason`] is the single
//! place the runner asks, so a GPU implementation slots in by returning `None` here
//! for the jobs it handles and adding its roles to [`crate::spawn::Role`].

use crate::scenario::{Device, Job};

/// Why this GPU job cannot run here, or `None` when it can (CPU jobs: always `None`).
pub fn skip_reason(job: &Job) -> Option<String> {
    let Device::Cuda(ordinal) = job.device else {
        return None;
    };
    // The library's probe never panics, also without a driver or a CUDA library.
    if let Some(why) = shmstream::gpu::unavailable_reason() {
        return Some(format!("{}: {why}", job.device));
    }
    let n = shmstream::gpu::device_count();
    if ordinal as usize >= n {
        return Some(format!("{}: the driver reports {n} device(s)", job.device));
    }
    Some(format!(
        "{}: the harness's GPU code paths are not implemented yet",
        job.device
    ))
}

/// Whether a CUDA device is usable from this process.
pub fn gpu_available() -> bool {
    shmstream::gpu::gpu_available()
}

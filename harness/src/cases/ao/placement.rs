//! Where the loop's stages run and how many frames a run publishes.

use crate::scenario::Job;

/// The cores of the stages (`recon == slopes` and one process when merged, as always
/// in the GPU form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Camera core.
    pub camera: usize,
    /// Slopes core (also of the merged slopes+recon process).
    pub slopes: usize,
    /// Reconstructor core.
    pub recon: usize,
    /// Slopes and reconstructor in one process.
    pub merged: bool,
}

impl Placement {
    /// The placement of `job` (camera on `writer_cpu`, the others on `reader_cpu`
    /// unless `[case.ao]` says otherwise).
    pub fn of(job: &Job) -> Self {
        let ao = job.ao.as_ref();
        let slopes = ao.and_then(|a| a.slopes_cpu).unwrap_or(job.reader_cpu);
        // The GPU form runs slopes and reconstructor in one process on the device.
        let merged = ao.is_some_and(|a| a.merged) || job.device.is_gpu();
        Self {
            camera: ao.and_then(|a| a.camera_cpu).unwrap_or(job.writer_cpu),
            slopes,
            recon: if merged {
                slopes
            } else {
                ao.and_then(|a| a.recon_cpu).unwrap_or(slopes)
            },
            merged,
        }
    }

    fn cores(&self) -> Vec<usize> {
        let mut v = vec![self.camera, self.slopes];
        if !self.merged {
            v.push(self.recon);
        }
        v
    }

    /// The cores of the stages after the camera (slopes, reconstructor; one when merged or
    /// both on one core).
    pub fn stage_cores(&self) -> Vec<usize> {
        let mut v = vec![self.slopes, self.recon];
        v.dedup();
        v
    }

    /// Whether another stage process runs on `cpu` besides one.
    pub fn shares(&self, cpu: usize) -> bool {
        self.cores().iter().filter(|c| **c == cpu).count() > 1
    }

    /// The split form with slopes and recon on one core (the default split placement).
    pub fn split_on_one_core(&self) -> bool {
        !self.merged && self.recon == self.slopes
    }

    /// A note when the stages oversubscribe cores, e.g. "slopes and recon share cpu 1".
    pub fn oversubscribed(&self) -> Option<String> {
        let cores = self.cores();
        let names = ["camera", "slopes", "recon"];
        let mut notes = Vec::new();
        for (i, c) in cores.iter().enumerate() {
            for (j, d) in cores.iter().enumerate().skip(i + 1) {
                if c == d {
                    notes.push(format!("{} and {} share cpu {c}", names[i], names[j]));
                }
            }
        }
        (!notes.is_empty()).then(|| notes.join("; "))
    }

    /// Stage processes after the camera (the ready marks the camera waits for): 1 when
    /// merged (and in the GPU form), else 2.
    pub fn stage_processes(&self) -> u64 {
        if self.merged { 1 } else { 2 }
    }

    /// "camera@0 slopes@1 recon@1" or "camera@0 slopes+recon@1".
    pub fn describe(&self) -> String {
        if self.merged {
            format!("camera@{} slopes+recon@{}", self.camera, self.slopes)
        } else {
            format!(
                "camera@{} slopes@{} recon@{}",
                self.camera, self.slopes, self.recon
            )
        }
    }

    /// Frames the camera publishes in one run: warm-up plus measured time at the rate.
    pub fn frames(&self, job: &Job) -> u64 {
        let rate = job.ao.as_ref().map_or(1000.0, |a| a.rate_hz);
        ((job.timing.warmup + job.timing.min_seconds) * rate)
            .ceil()
            .max(30.0) as u64
    }

    /// Warm-up frames left out of the statistics.
    pub fn warmup_frames(job: &Job) -> u64 {
        let rate = job.ao.as_ref().map_or(1000.0, |a| a.rate_hz);
        (job.timing.warmup * rate).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stages' cores: slopes and reconstructor, once where they share one.
    #[test]
    fn the_stage_cores_are_the_slopes_and_reconstructor_cores_each_once() {
        let p = |slopes, recon, merged| Placement {
            camera: 0,
            slopes,
            recon,
            merged,
        };
        assert_eq!(p(1, 1, false).stage_cores(), [1]);
        assert_eq!(p(1, 2, false).stage_cores(), [1, 2]);
        assert_eq!(p(3, 3, true).stage_cores(), [3]);
    }
}

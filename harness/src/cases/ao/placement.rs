//! Where the loop's stages run and how many frames a run publishes.

use crate::error::{Result, bail};
use crate::scenario::{Job, Kind};

/// Frames a run publishes at least, however short or slow.
pub const MIN_FRAMES: u64 = 30;

/// Frames the floor's compute pass measures at least ([`Placement::floor_frames`]).
pub const MIN_FLOOR_FRAMES: u64 = 50;

/// Frames the floor's compute pass runs before those it measures.
pub const FLOOR_WARMUP_FRAMES: u64 = 10;

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
            .max(MIN_FRAMES as f64) as u64
    }

    /// Frames the floor's compute pass measures, one a camera period after
    /// [`FLOOR_WARMUP_FRAMES`] more: the run's, at least [`MIN_FLOOR_FRAMES`], at most 2 s of
    /// them (and 20,000).
    pub fn floor_frames(&self, job: &Job) -> u64 {
        let rate = job.ao.as_ref().map_or(1000.0, |a| a.rate_hz);
        self.frames(job)
            .clamp(MIN_FLOOR_FRAMES, 20_000)
            .min(((2.0 * rate) as u64).max(MIN_FLOOR_FRAMES))
    }

    /// Refuses an ao-loop job a process of which cannot pace its frames, one a camera
    /// period, within the job's `timeout_s` (a process still running then is killed): each
    /// run of the loop (its frames and the period before the stop frame), the floor's
    /// compute pass, the pyshmem peer's loop. A rate so low that even the fewest frames
    /// they publish take longer could only time out. Other kinds pass.
    pub fn check_timeout(job: &Job) -> Result<()> {
        let Some(ao) = job.ao.as_ref().filter(|_| job.kind == Kind::AoLoop) else {
            return Ok(());
        };
        let rate = ao.rate_hz;
        if !(rate.is_finite() && rate > 0.0) {
            return Ok(()); // the geometry refuses it, saying so
        }
        let place = Self::of(job);
        let runs = f64::from(ao.runs.max(1));
        let run = place.frames(&super::runner::at_rate(
            job,
            rate,
            job.timing.min_seconds / runs,
        ));
        // (what, frames paced, the remedy besides a longer timeout). Where a process paces
        // the fewest frames it paces at any rate, a higher rate shortens it; otherwise its
        // frames follow the case's seconds.
        let timeout = job.timeout_s;
        let remedy = |frames: u64, paced: u64, least: u64| match paced == least {
            true => format!("raise rate_hz above {:.3} Hz", frames as f64 / timeout),
            false => "shorten min_seconds / warmup".to_string(),
        };
        let floor = place.floor_frames(job);
        let mut paced = vec![
            (
                "each run of the loop publishes",
                run + 1,
                remedy(run + 1, run, MIN_FRAMES),
            ),
            (
                "the floor's compute pass paces",
                floor + FLOOR_WARMUP_FRAMES,
                remedy(floor + FLOOR_WARMUP_FRAMES, floor, MIN_FLOOR_FRAMES),
            ),
        ];
        if job.peer && !job.device.is_gpu() {
            let n = place.frames(job);
            paced.push((
                "the pyshmem peer's loop publishes",
                n,
                format!("{}, or set peer = false", remedy(n, n, MIN_FRAMES)),
            ));
        }
        let longest = paced.into_iter().max_by_key(|(_, frames, _)| *frames);
        if let Some((what, frames, remedy)) = longest {
            let secs = frames as f64 / rate;
            if secs >= timeout {
                bail!(
                    "ao-loop: at rate_hz = {rate} {what} {frames} frames, {secs:.1} s, but \
                     timeout_s = {timeout} kills a process still running then; raise timeout_s \
                     above {secs:.1}, or {remedy}"
                );
            }
        }
        Ok(())
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

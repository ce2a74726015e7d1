//! Turns the stages' logs into the loop's figures: end-to-end latency per frame id (DM
//! publish − camera publish), per-stage compute and per-hop latencies, missed frames,
//! camera pacing error, achieved rate.

use std::collections::{HashMap, HashSet};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::stage::Entry;
use crate::error::{Error, Result};
use crate::hist;

/// p50 / p99 of one stage's compute or one hop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageStat {
    /// "slopes", "recon", "camera→slopes", "slopes→recon", and in the split form
    /// "signals write" (the slopes stage's publication of its signals, from the end of
    /// its compute to its write's return, or to the reconstructor's input where that comes
    /// first: the reconstructor's wake-up where it is parked).
    pub name: String,
    /// Median, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
}

/// The figures of one loop run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoopStats {
    /// Camera frames after the warm-up.
    pub frames: u64,
    /// Of those, frames whose id never reached the DM.
    pub missed: u64,
    /// Of the missed, frames the camera published a period or more after their deadline
    /// (its own core was paused; it then publishes the overdue frames back to back and the
    /// stages skip the stale ones): the source's loss, not the pipeline's. Counted only
    /// where the camera has its core to itself ([`analyse`]'s `camera_alone`): on a core it
    /// shares with a stage, the stages' overrun is what delays it.
    #[serde(default)]
    pub missed_at_source: u64,
    /// DM frames per second over the measured part.
    pub achieved_hz: f64,
    /// Standard deviation of the end-to-end latency, ns.
    pub jitter_ns: f64,
    /// Compute stages then hops, in loop order.
    pub stages: Vec<StageStat>,
    /// Camera publish − deadline: p50, p99, max (ns).
    pub pacing_ns: [u64; 3],
}

impl LoopStats {
    /// Missed frames the camera published in time: the pipeline's loss, which verdicts
    /// judge.
    pub fn pipeline_missed(&self) -> u64 {
        self.missed.saturating_sub(self.missed_at_source)
    }

    /// Whether the camera came a period or more late on over [`super::MAX_LATE_AT_SOURCE`]
    /// of its frames: it did not hold the rate, and the run judges no loop.
    pub fn camera_failed(&self) -> bool {
        self.missed_at_source as f64 > super::MAX_LATE_AT_SOURCE * self.frames as f64
    }

    /// The missed count for a table, with the source's share where it has one, e.g.
    /// "34 (33 late at the camera)".
    pub fn missed_text(&self) -> String {
        match self.missed_at_source {
            0 => self.missed.to_string(),
            n => format!("{} ({n} late at the camera)", self.missed),
        }
    }

    /// The stage or hop with the largest median.
    pub fn dominant(&self) -> Option<&StageStat> {
        self.stages.iter().max_by_key(|s| s.p50_ns)
    }
}

/// The parts of a loop's time ([`LoopStats::stages`]) in loop order: the camera hop, the
/// slopes' compute, the split form's signals write and signals hop, the reconstructor (the
/// merged form has the first, second and last).
pub const PARTS: [&str; 5] = [
    "camera→slopes",
    "slopes",
    "signals write",
    "slopes→recon",
    "recon",
];

fn stat(name: &str, v: &Histogram<u64>) -> StageStat {
    StageStat {
        name: name.into(),
        p50_ns: v.value_at_quantile(0.5),
        p99_ns: v.value_at_quantile(0.99),
    }
}

/// The logs of one run of the loop: the camera's, the slopes stage's (split form), and the
/// DM stage's (the reconstructor, or the merged stage). The slopes stage's entries, split
/// or merged, have the slopes-done time as their 4th field (0 where a log lacks it).
#[derive(Debug, Clone, Default)]
pub struct Logs {
    /// The camera's entries.
    pub camera: Vec<Entry>,
    /// The slopes stage's, `None` in the merged form.
    pub slopes: Option<Vec<Entry>>,
    /// The DM stage's.
    pub dm: Vec<Entry>,
}

/// A stage whose log a run's [`Logs`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOf {
    /// The camera.
    Camera,
    /// The slopes stage (split form only).
    Slopes,
    /// The stage publishing DM commands: the reconstructor, or the merged stage.
    Dm,
}

impl Logs {
    /// The logs of one run in the merged or split form, each read by `read`.
    pub fn read(merged: bool, mut read: impl FnMut(LogOf) -> Result<Vec<Entry>>) -> Result<Self> {
        Ok(Logs {
            camera: read(LogOf::Camera)?,
            slopes: match merged {
                true => None,
                false => Some(read(LogOf::Slopes)?),
            },
            dm: read(LogOf::Dm)?,
        })
    }
}

/// The camera's frame period, ns, from its deadlines (evenly spaced); `None` under two
/// frames.
fn camera_period(camera: &[Entry]) -> Option<u64> {
    match (camera.first(), camera.last()) {
        (Some(a), Some(b)) if camera.len() > 1 => {
            Some(b[1].saturating_sub(a[1]) / (camera.len() as u64 - 1))
        }
        _ => None,
    }
}

/// Why a run's logs give no figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnalysisError {
    /// No frame reached the DM after the warm-up, of `frames` the camera published. With
    /// frames, the loop could not sustain the rate at all (a stage starved until the stop
    /// frame, as a reconstructor sharing the slopes stage's core under SCHED_FIFO is): an
    /// overload, which the rate ladder counts as a failed rung.
    NoFrameReachedDm {
        /// Camera frames after the warm-up.
        frames: u64,
    },
    /// The logs contradict each other (a frame id the camera never published): a fault.
    Inconsistent(String),
}

impl std::fmt::Display for AnalysisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoFrameReachedDm { frames } => write!(
                f,
                "no frame reached the DM after the warm-up ({frames} camera frames)"
            ),
            Self::Inconsistent(why) => f.write_str(why),
        }
    }
}

impl From<AnalysisError> for Error {
    fn from(e: AnalysisError) -> Self {
        Error::msg(e.to_string())
    }
}

/// Analyses the runs of one case as one loop: each run's warm-up frames (ids up to
/// `warmup`) left out, its frames matched by id within the run (each run's camera counts
/// from the start), samples pooled, and the achieved rate over the runs' measured spans.
/// `camera_alone`: the camera had its core to itself
/// ([`super::placement::Placement::camera_alone`]), so its late frames are the source's
/// loss ([`LoopStats::missed_at_source`]).
pub fn analyse(
    runs: &[Logs],
    warmup: u64,
    camera_alone: bool,
) -> Result<(LoopStats, Histogram<u64>), AnalysisError> {
    let mut e2e = hist::new();
    let mut pacing = hist::new();
    let mut h_slopes = hist::new();
    let mut h_recon = hist::new();
    let mut h_signals_write = hist::new();
    let mut hop1 = hist::new();
    let mut hop2 = hist::new();
    let (mut frames, mut seen, mut intervals, mut span) = (0u64, 0u64, 0u64, 0u64);
    let mut missed_at_source = 0u64;
    for run in runs {
        let published: HashMap<u64, u64> = run.camera.iter().map(|e| (e[0], e[2])).collect();
        let slopes_at: HashMap<u64, (u64, u64, u64)> = run
            .slopes
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(|e| (e[0], (e[1], e[2], e[3])))
            .collect();
        for e in run.camera.iter().filter(|e| e[0] > warmup) {
            pacing.saturating_record(e[2].saturating_sub(e[1]));
        }
        let reached: HashSet<u64> = run.dm.iter().map(|e| e[0]).collect();
        let period = camera_period(&run.camera).filter(|_| camera_alone);
        missed_at_source += run
            .camera
            .iter()
            .filter(|e| e[0] > warmup && !reached.contains(&e[0]))
            .filter(|e| period.is_some_and(|p| e[2].saturating_sub(e[1]) >= p))
            .count() as u64;
        let (mut run_seen, mut first, mut last) = (0u64, u64::MAX, 0u64);
        for &[id, t_in, t_pub, mid] in run.dm.iter().filter(|e| e[0] > warmup) {
            let Some(&cam) = published.get(&id) else {
                return Err(AnalysisError::Inconsistent(format!(
                    "frame id {id} reached the DM but the camera never published it"
                )));
            };
            run_seen += 1;
            first = first.min(t_pub);
            last = last.max(t_pub);
            e2e.saturating_record(t_pub.saturating_sub(cam));
            match slopes_at.get(&id) {
                Some(&(s_in, s_pub, s_mid)) => {
                    // The slopes stage stamps its publish after `write` returns; the
                    // reconstructor it woke may have taken the signals before that stamp,
                    // so they were out by its input: the effective publish time (else the
                    // slopes stage would absorb the reconstructor's compute). Both
                    // cameras stamp before their write, so `cam` never follows `s_in`.
                    let s_pub = s_pub.min(t_in).max(s_in);
                    hop1.saturating_record(s_in.saturating_sub(cam));
                    // Split at the end of its compute where the log has it: the signals'
                    // write holds the reconstructor's wake-up, which is no centroiding.
                    let done = match s_mid {
                        0 => s_pub,
                        mid => {
                            let done = mid.clamp(s_in, s_pub);
                            h_signals_write.saturating_record(s_pub - done);
                            done
                        }
                    };
                    h_slopes.saturating_record(done - s_in);
                    hop2.saturating_record(t_in.saturating_sub(s_pub));
                    h_recon.saturating_record(t_pub.saturating_sub(t_in));
                }
                None if run.slopes.is_none() => {
                    hop1.saturating_record(t_in.saturating_sub(cam));
                    h_slopes.saturating_record(mid.saturating_sub(t_in));
                    h_recon.saturating_record(t_pub.saturating_sub(mid));
                }
                None => {
                    return Err(AnalysisError::Inconsistent(format!(
                        "frame id {id} reached the DM without passing the slopes stage"
                    )));
                }
            }
        }
        frames += run.camera.iter().filter(|e| e[0] > warmup).count() as u64;
        seen += run_seen;
        if last > first {
            intervals += run_seen - 1;
            span += last - first;
        }
    }
    if seen == 0 {
        return Err(AnalysisError::NoFrameReachedDm { frames });
    }
    let [camera_hop, slopes, signals_write, signals_hop, recon] = PARTS;
    let mut stages = vec![stat(camera_hop, &hop1), stat(slopes, &h_slopes)];
    if !h_signals_write.is_empty() {
        stages.push(stat(signals_write, &h_signals_write));
    }
    if runs.iter().any(|r| r.slopes.is_some()) {
        stages.push(stat(signals_hop, &hop2));
    }
    stages.push(stat(recon, &h_recon));
    let stats = LoopStats {
        frames,
        missed: frames.saturating_sub(seen),
        missed_at_source,
        achieved_hz: if span > 0 {
            intervals as f64 * 1e9 / span as f64
        } else {
            0.0
        },
        jitter_ns: e2e.stdev(),
        stages,
        pacing_ns: [
            pacing.value_at_quantile(0.5),
            pacing.value_at_quantile(0.99),
            pacing.max(),
        ],
    };
    Ok((stats, e2e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ids_are_matched_and_missed_frames_counted() {
        let cam: Vec<Entry> = (1..=10).map(|i| [i, i * 1000, i * 1000 + 5, 0]).collect();
        let slopes: Vec<Entry> = (1..=10)
            .filter(|i| *i != 7)
            .map(|i| [i, i * 1000 + 10, i * 1000 + 40, 0])
            .collect();
        let dm: Vec<Entry> = slopes
            .iter()
            .map(|e| [e[0], e[2] + 5, e[2] + 65, 0])
            .collect();
        let run = Logs {
            camera: cam,
            slopes: Some(slopes),
            dm,
        };
        let (s, h) = analyse(std::slice::from_ref(&run), 2, true).unwrap();
        assert_eq!((s.frames, s.missed), (8, 1));
        assert_eq!(h.value_at_quantile(0.5), 100);
        let names: Vec<_> = s
            .stages
            .iter()
            .map(|s| (s.name.as_str(), s.p50_ns))
            .collect();
        assert_eq!(
            names,
            vec![
                ("camera→slopes", 5),
                ("slopes", 30),
                ("slopes→recon", 5),
                ("recon", 60)
            ]
        );
        assert_eq!(s.dominant().unwrap().name, "recon");
        assert_eq!(s.pacing_ns[0], 5);
    }

    /// Runs of one case pool: ids are matched within each run (every run's camera counts
    /// from 1), each run's warm-up is left out, and the rate spans each run, not the gap
    /// between them.
    #[test]
    fn runs_pool_with_ids_matched_within_each_and_the_rate_over_their_spans() {
        let run = |t0: u64, latency: u64, lost: Option<u64>| {
            let cam: Vec<Entry> = (1..=10)
                .map(|i| [i, t0 + i * 1000, t0 + i * 1000, 0])
                .collect();
            let dm: Vec<Entry> = cam
                .iter()
                .filter(|e| Some(e[0]) != lost)
                .map(|e| [e[0], e[2] + 1, e[2] + latency, e[2] + 2])
                .collect();
            Logs {
                camera: cam,
                slopes: None,
                dm,
            }
        };
        // The second run starts a second after the first and loses frame 5.
        let runs = [run(0, 100, None), run(1_000_000_000, 300, Some(5))];
        let (s, h) = analyse(&runs, 2, true).unwrap();
        assert_eq!((s.frames, s.missed), (16, 1));
        assert_eq!(h.len(), 15);
        assert_eq!(h.min(), 100);
        assert_eq!(h.max(), 300);
        // 7 intervals over 7 µs in the first run, 6 over 7 µs in the second: 13 / 14 µs.
        let want = 13.0 * 1e9 / 14_000.0;
        assert!((s.achieved_hz - want).abs() < 1.0, "{}", s.achieved_hz);
    }

    /// A frame the camera published a period or more late (its core paused, then the
    /// overdue frames back to back) and the stages skipped counts as the source's loss; one
    /// published less than a period late and lost is the pipeline's.
    #[test]
    fn missed_frames_the_camera_published_late_are_the_sources() {
        // Deadlines every 1000 ns; frames 4-6 published together at 6500, frame 8 900 ns
        // late, the others 5 ns.
        let cam: Vec<Entry> = (1..=10)
            .map(|i| {
                let published = match i {
                    4..=6 => 6500,
                    8 => i * 1000 + 900,
                    _ => i * 1000 + 5,
                };
                [i, i * 1000, published, 0]
            })
            .collect();
        assert_eq!(camera_period(&cam), Some(1000));
        let dm: Vec<Entry> = cam
            .iter()
            .filter(|e| ![4, 5, 8].contains(&e[0]))
            .map(|e| [e[0], e[2] + 1, e[2] + 50, e[2] + 2])
            .collect();
        let run = Logs {
            camera: cam,
            slopes: None,
            dm,
        };
        let (s, _) = analyse(&[run], 0, true).unwrap();
        // Frame 4 was 2500 ns late and frame 5 1500 (both skipped), frame 6 500 (taken),
        // frame 8 900 (skipped: under a period, the pipeline's).
        assert_eq!((s.missed, s.missed_at_source), (3, 2));
        assert_eq!(s.pipeline_missed(), 1);
        assert_eq!(s.missed_text(), "3 (2 late at the camera)");
    }

    /// The reconstructor woke by the signals may read them before the slopes stage stamps
    /// its publish (after `write` returns): the stages still add up to the end-to-end
    /// latency, the slopes stage not absorbing the reconstructor's compute.
    #[test]
    fn a_reconstructor_input_before_the_slopes_publish_stamp_is_not_the_slopes_stages_time() {
        let run = Logs {
            camera: vec![[1, 0, 0, 0]],
            slopes: Some(vec![[1, 10, 200, 0]]),
            dm: vec![[1, 150, 180, 0]],
        };
        let (s, e2e) = analyse(&[run], 0, true).unwrap();
        let p50 = |name: &str| s.stages.iter().find(|s| s.name == name).unwrap().p50_ns;
        assert!(p50("slopes") <= 140, "{:?}", s.stages);
        let sum: u64 = s.stages.iter().map(|s| s.p50_ns).sum();
        assert_eq!(e2e.value_at_quantile(0.5), 180);
        assert!(sum <= 180, "{:?}", s.stages);
    }

    /// The split form's slopes stage logs the end of its compute: its time is given as
    /// the compute and the signals' write, up to the write's return or the
    /// reconstructor's input where that comes first (the reconstructor then ran inside the
    /// wake-up: the write holds its switch and read), and each frame's parts add up to its
    /// end-to-end latency, an end of compute outside the stage's time included (clamped).
    #[test]
    fn the_slopes_stage_is_split_into_its_compute_and_the_signals_write() {
        // (slopes log, DM log, the parts: camera→slopes, slopes, signals write,
        // slopes→recon, recon); the camera publishes frame 1 at 0.
        let frames: [(Entry, Entry, [u64; 5]); 4] = [
            ([1, 10, 60, 30], [1, 70, 95, 0], [10, 20, 30, 10, 25]),
            // The reconstructor read the signals before the write returned.
            ([1, 10, 200, 30], [1, 150, 180, 0], [10, 20, 120, 0, 30]),
            // An end of compute after the write's return, and one before the input.
            ([1, 10, 60, 90], [1, 70, 95, 0], [10, 50, 0, 10, 25]),
            ([1, 10, 60, 5], [1, 70, 95, 0], [10, 0, 50, 10, 25]),
        ];
        for (slopes, dm, want) in frames {
            let run = Logs {
                camera: vec![[1, 0, 0, 0]],
                slopes: Some(vec![slopes]),
                dm: vec![dm],
            };
            let (s, e2e) = analyse(&[run], 0, true).unwrap();
            let parts: Vec<_> = s
                .stages
                .iter()
                .map(|s| (s.name.as_str(), s.p50_ns))
                .collect();
            assert_eq!(parts, PARTS.into_iter().zip(want).collect::<Vec<_>>());
            assert_eq!(want.iter().sum::<u64>(), e2e.value_at_quantile(0.5));
        }
    }

    /// A run no frame of which reached the DM after the warm-up is told apart from a fault:
    /// the loop overloaded, its camera's frames counted.
    #[test]
    fn a_run_no_frame_of_which_reached_the_dm_is_an_overload_not_a_fault() {
        let run = Logs {
            camera: (1..=10).map(|i| [i, i * 1000, i * 1000, 0]).collect(),
            slopes: Some(vec![[1, 1001, 1002, 0]]),
            dm: vec![[1, 1003, 1004, 0]],
        };
        let err = analyse(&[run], 2, true).unwrap_err();
        assert_eq!(err, AnalysisError::NoFrameReachedDm { frames: 8 });
        assert_eq!(
            err.to_string(),
            "no frame reached the DM after the warm-up (8 camera frames)"
        );
    }

    /// The warm-up frames' pacing and loss are left out with their latency: a camera late
    /// on them, and stages that skipped them, count for nothing.
    #[test]
    fn the_warm_up_frames_pacing_and_loss_are_left_out() {
        let cam: Vec<Entry> = (1..=10)
            .map(|i| [i, i * 1000, i * 1000 + if i <= 2 { 5000 } else { 5 }, 0])
            .collect();
        let dm: Vec<Entry> = cam
            .iter()
            .filter(|e| e[0] > 2)
            .map(|e| [e[0], e[2] + 1, e[2] + 50, e[2] + 2])
            .collect();
        let run = Logs {
            camera: cam,
            slopes: None,
            dm,
        };
        let (s, _) = analyse(&[run], 2, true).unwrap();
        assert_eq!((s.frames, s.missed, s.missed_at_source), (8, 0, 0));
        assert_eq!(s.pacing_ns, [5, 5, 5]);
    }

    /// One frame at the DM spans no interval: no rate, rather than 0 / 0.
    #[test]
    fn a_run_with_one_frame_at_the_dm_gives_no_rate() {
        let run = Logs {
            camera: vec![[1, 0, 0, 0], [2, 1000, 1000, 0]],
            slopes: None,
            dm: vec![[1, 10, 50, 20]],
        };
        let (s, _) = analyse(&[run], 0, true).unwrap();
        assert_eq!((s.frames, s.missed), (2, 1));
        assert_eq!(s.achieved_hz, 0.0);
    }

    /// In the split form, a frame at the DM that the slopes stage never logged is a fault.
    #[test]
    fn a_frame_that_skipped_the_slopes_stage_is_an_error() {
        let run = Logs {
            camera: vec![[1, 0, 0, 0], [2, 1000, 1000, 0]],
            slopes: Some(vec![[1, 10, 40, 30]]),
            dm: vec![[1, 50, 90, 0], [2, 1050, 1090, 0]],
        };
        let err = analyse(&[run], 0, true).unwrap_err();
        assert_eq!(
            err,
            AnalysisError::Inconsistent(
                "frame id 2 reached the DM without passing the slopes stage".into()
            )
        );
    }

    /// The merged form reads the camera's and the DM stage's logs, the split form the
    /// slopes stage's too, each into its place; a log that cannot be read fails the read.
    #[test]
    fn logs_are_read_into_their_places_and_the_slopes_log_only_when_split() {
        let entry = |of: LogOf| -> Entry {
            match of {
                LogOf::Camera => [1, 0, 0, 0],
                LogOf::Slopes => [2, 0, 0, 0],
                LogOf::Dm => [3, 0, 0, 0],
            }
        };
        for merged in [true, false] {
            let mut asked = Vec::new();
            let logs = Logs::read(merged, |of| {
                asked.push(of);
                Ok(vec![entry(of)])
            })
            .unwrap();
            assert_eq!(logs.camera, [entry(LogOf::Camera)]);
            assert_eq!(logs.dm, [entry(LogOf::Dm)]);
            match merged {
                true => {
                    assert_eq!(logs.slopes, None);
                    assert_eq!(asked, [LogOf::Camera, LogOf::Dm]);
                }
                false => {
                    assert_eq!(logs.slopes, Some(vec![entry(LogOf::Slopes)]));
                    assert_eq!(asked, [LogOf::Camera, LogOf::Slopes, LogOf::Dm]);
                }
            }
        }
        let err = Logs::read(false, |of| match of {
            LogOf::Slopes => Err(Error::msg("no slopes log")),
            of => Ok(vec![entry(of)]),
        })
        .unwrap_err();
        assert!(err.to_string().contains("no slopes log"), "{err}");
    }

    #[test]
    fn a_frame_id_the_camera_never_sent_is_an_error() {
        let cam: Vec<Entry> = vec![[1, 0, 1, 0]];
        let dm: Vec<Entry> = vec![[5, 2, 3, 1]];
        let run = Logs {
            camera: cam,
            slopes: None,
            dm,
        };
        assert!(matches!(
            analyse(&[run], 0, true),
            Err(AnalysisError::Inconsistent(_))
        ));
    }
}

//! The `ao-loop` case: a whole adaptive-optics loop, WFS camera → slopes →
//! reconstructor → DM, each stage its own pinned process linked by notify streams, frame
//! ids carried through (see `shared/reference/ao.md`).
//!
//! - [`geometry`]: the `[case.ao]` table, checked before anything starts.
//! - [`camera`], [`slopes`], [`recon`]: what each stage computes; [`stage`]: the stage
//!   processes and their in-memory logs; [`placement`]: cores and frame counts.
//! - [`runner`]: one run and the rate ladder; [`analysis`]: logs → figures;
//!   [`floor`]: the composed floor, [`between_frames`]: its parts timed between the loop's
//!   frames; [`peer`]: the pyshmem + numpy loop.

pub mod analysis;
pub mod between_frames;
pub mod camera;
pub mod floor;
pub mod geometry;
pub mod gpu;
pub mod peer;
pub mod placement;
pub mod recon;
pub mod runner;
pub mod slopes;
pub mod stage;

use serde::Serialize;
use shmstream::{Dtype, Stream};

use self::analysis::{Logs, LoopStats, StageStat};
pub use self::geometry::AoCase;
use self::geometry::Geometry;
use self::placement::Placement;
use self::runner::{LoopRun, Rung, run_logs};
use crate::cases::{JobStreams, create, create_options};
use crate::error::{Context, Result};
use crate::measure::Measured;
use crate::peer::PeerSetup;
use crate::run::{JobResult, Runner, Side};
use crate::scenario::Job;
use crate::spawn::{Names, Role};

/// Everything an ao-loop job reports besides the end-to-end histograms.
#[derive(Debug, Clone, Serialize)]
pub struct AoSummary {
    /// The sizes.
    pub geometry: Geometry,
    /// Where the stages ran, as the processes reported it.
    pub placement: String,
    /// Set when stages share cores.
    pub oversubscribed: Option<String>,
    /// Camera rate of the main run, Hz.
    pub rate_hz: f64,
    /// Figures of the main run (ours).
    pub stats: Option<LoopStats>,
    /// Highest sustainable rate found by the ladder.
    pub max_rate_hz: Option<f64>,
    /// Whether that rate is only a lower bound: no higher rate the ladder tried failed.
    pub max_rate_lower_bound: bool,
    /// The ladder's runs.
    pub ladder: Vec<Rung>,
    /// The floor's parts.
    pub floor_parts: Vec<StageStat>,
    /// Figures of the pyshmem + numpy loop.
    pub peer: Option<LoopStats>,
    /// Reconstructor matrix bytes read per frame.
    pub recon_bytes: u64,
    /// Matrix bandwidth the rate needs, GB/s.
    pub needed_gbs: f64,
    /// Bandwidth of the reconstructor alone on this machine (matrix bytes / median time), GB/s.
    pub measured_gbs: Option<f64>,
    /// "pass" or "fail: …" at the main run's rate.
    pub verdict: String,
}

impl AoSummary {
    /// The highest sustainable rate for a table: "2400", "≥ 12800" when only a lower
    /// bound, "—" when none.
    pub fn max_rate_text(&self) -> String {
        match (self.max_rate_hz, self.max_rate_lower_bound) {
            (None, _) => "—".into(),
            (Some(hz), false) => crate::report::fmt_rate_plain(hz),
            (Some(hz), true) => format!("≥ {}", crate::report::fmt_rate_plain(hz)),
        }
    }

    /// Bytes of one frame's hand-offs: the frame, the signals, the commands.
    pub fn bytes_per_frame(&self) -> usize {
        let g = &self.geometry;
        g.pixels() * 2 + g.signals * 4 + g.actuators * 4
    }
}

/// Creates the loop's streams (host memory, in the GPU form too: camera and DM are CPU
/// processes): frame (u16), signals and commands (f32), and the ready stream the stages
/// count themselves in on. Frame and signals keep [`stage::HISTORY`] frames for the stages'
/// cursors (the Python peer's pyshmem writers do not append to it; its stages read the
/// newest frame). They are notify streams (`notify`) unless every stage busy-waits: a
/// publication then makes no `FUTEX_WAKE` call that nobody waits on, as the spin hop's
/// floor makes none.
pub fn create_streams(job: &Job, names: &Names, notify: bool) -> Result<Vec<Stream>> {
    let ao = job.ao.as_ref().context("ao-loop job without [case.ao]")?;
    let g = Geometry::derive(&job.shape, ao)?;
    // Each owned as it comes, so that a later failure (/dev/shm full) unlinks the earlier ones.
    let mut js = JobStreams::default();
    js.streams.push(create_options(
        &names.data,
        &g.wfs,
        Dtype::U16,
        notify,
        stage::HISTORY,
    )?);
    js.streams.push(create_options(
        &names.signals,
        &[g.signals],
        Dtype::F32,
        notify,
        stage::HISTORY,
    )?);
    js.streams
        .push(create(&names.commands, &[g.actuators], Dtype::F32, notify)?);
    js.streams.push(create(&names.ctl, &[1], Dtype::U64, true)?);
    Ok(js.into_streams())
}

/// A loop's side, `warmup_frames` left out of its runs in all.
fn side(run: &LoopRun, warmup_frames: u64) -> Side {
    Side {
        m: Measured {
            repeat_hz: vec![run.stats.achieved_hz],
            repeat_busy_hz: vec![run.stats.achieved_hz],
            iterations: run.e2e.len(),
            warmup_iterations: warmup_frames,
            notes: vec![
                ("missed".into(), run.stats.missed_text()),
                ("jitter_ns".into(), format!("{:.0}", run.stats.jitter_ns)),
            ],
        },
        hist: run.e2e.clone(),
        placement: run.placement.clone(),
    }
}

/// Share of a run's frames the camera may publish a period or more late (its own loss,
/// [`LoopStats::missed_at_source`]) and the run still judge the loop: beyond it the camera
/// did not hold the rate on this host, and the run says nothing of the loop at that rate.
pub const MAX_LATE_AT_SOURCE: f64 = 0.05;

/// Why a run at a rate fails, `None` when it passes: no missed frame (the camera's own
/// late frames aside, where it has its core to itself: [`LoopStats::pipeline_missed`], as
/// long as they are at most [`MAX_LATE_AT_SOURCE`] of its frames) and p99 below the frame
/// period and below `budget_us` when given. The verdict judges by it, the rate ladder's
/// rungs without the budget ([`runner::sustainable`]).
pub fn failure(run: &LoopRun, rate_hz: f64, budget_us: Option<f64>) -> Option<String> {
    let s = &run.stats;
    let p99 = run.e2e.value_at_quantile(0.99);
    let period = 1e9 / rate_hz;
    let (limit, what) = match budget_us.map(|b| b * 1e3).filter(|b| *b < period) {
        Some(b) => (b as u64, "budget"),
        None => (period as u64, "frame period"),
    };
    if s.pipeline_missed() > 0 {
        Some(format!("{} missed frames", s.pipeline_missed()))
    } else if s.camera_failed() {
        Some(format!(
            "the camera could not hold {} Hz on this host: {} of its {} frames came a period \
             or more late and were skipped (over {}%: its core was paused or taken by other work), so this run \
             does not judge the loop; rerun on a quieter host or with the camera on an \
             isolated core",
            crate::report::fmt_rate_plain(rate_hz),
            s.missed_at_source,
            s.frames,
            MAX_LATE_AT_SOURCE * 100.0
        ))
    } else if p99 >= limit {
        Some(format!(
            "p99 {} µs ≥ the {} µs {what}",
            crate::report::us(p99),
            crate::report::us(limit)
        ))
    } else {
        None
    }
}

/// The verdict at a rate: "pass", or "fail: " and the [`failure`].
pub fn verdict(run: &LoopRun, rate_hz: f64, budget_us: Option<f64>) -> String {
    failure(run, rate_hz, budget_us).map_or_else(|| "pass".into(), |why| format!("fail: {why}"))
}

/// The main run of a job from its runs' logs and placements (`warmup` frames left out of
/// each; `camera_alone` as [`analysis::analyse`] takes it): a loop so overloaded that no
/// frame reached the DM is a run that missed every frame ([`LoopRun::of_ours`]), which
/// fails its verdict, not the case; a run that failed, or logs that contradict each other,
/// fail the case.
fn main_run(
    runs: Vec<Result<(Logs, String)>>,
    warmup: u64,
    camera_alone: bool,
) -> std::result::Result<LoopRun, String> {
    runs.into_iter()
        .collect::<Result<Vec<_>>>()
        .and_then(|runs| {
            let placement = runs.first().map(|(_, p)| p.clone()).unwrap_or_default();
            let logs: Vec<Logs> = runs.into_iter().map(|(l, _)| l).collect();
            LoopRun::of_ours(&logs, warmup, camera_alone, placement)
        })
        .map_err(|e| format!("failed: {e}"))
}

/// Warm-up frames left out of `job`'s own runs in all: each run's, as its analysis leaves
/// them out (not the job's warm-up, which a run's is cut to at most half its seconds).
fn warmup_frames_of_runs(job: &Job, ao: &AoCase) -> u64 {
    Placement::warmup_frames(&runner::each_run(job)) * u64::from(ao.runs.max(1))
}

/// Measures one ao-loop job: ours, the ladder, the composed floor, the peer.
pub fn run_job(runner: &Runner, idx: usize, job: &Job) -> JobResult {
    let failed = |why: String| JobResult {
        job: job.clone(),
        ours: Err(why.clone()),
        floor: Err(why.clone()),
        peer: Err(why),
        skipped: None,
        ao: None,
    };
    let Some(ao) = job.ao.as_ref() else {
        return failed("ao-loop job without [case.ao]".into());
    };
    let g = match Placement::geometry(job, ao, geometry::available_memory()) {
        Ok(g) => g,
        Err(e) => return failed(format!("failed: {e}")),
    };
    // Spinning stages placed on one core were refused with the scenario (every job comes
    // from `Scenario::parse`, which validates), as were the timeout, memory and thread
    // checks; spinning stages that cannot be pinned here were skipped (`Runner::run_job`).
    let place = Placement::of(job);
    // The cores its processes can be pinned to here: one placed elsewhere runs unpinned.
    let pinnable = place.pinnable_here();
    // The loop's seconds in `ao.runs` runs, with a pass of the floor before, between and
    // after them, each part of the floor from its fastest pass (floor::compose) or, where
    // faster, timed between the loop's frames where the stages leave room (between_frames).
    let runs = ao.runs.max(1);
    let mut run_job = runner::each_run(job);
    let first = floor::measure(runner, idx, job, &g, 0);
    run_job.floor_between_frames = first
        .as_ref()
        .is_ok_and(|p| p.leaves_room_between_frames(job));
    let mut passes = vec![first];
    let mut logs = Vec::new();
    let (mut cameras, mut stages, mut recons) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs as usize {
        let tag = format!("ours{r}");
        let run = run_logs(runner, idx, &run_job, &tag);
        let failed = run.is_err();
        logs.push(run);
        if failed {
            break;
        }
        cameras.push(runner::result_prefix(runner, idx, &tag, Role::AoCamera));
        stages.push(runner::result_prefix(runner, idx, &tag, Role::AoSlopes));
        recons.push(runner::result_prefix(runner, idx, &tag, Role::AoRecon));
        passes.push(floor::measure(runner, idx, job, &g, r + 1));
    }
    let warmup = Placement::warmup_frames(&run_job);
    let ours = main_run(logs, warmup, place.camera_alone(pinnable.as_deref()));
    let floor = passes
        .into_iter()
        .collect::<crate::error::Result<Vec<_>>>()
        .and_then(|p| {
            let between = run_job
                .floor_between_frames
                .then(|| between_frames::Timed::read(&run_job, &cameras, &stages, &recons))
                .transpose()?;
            floor::compose(p, job, between)
        })
        .map_err(|e| format!("floor failed: {e}"));
    // A rung whose run failed fails the case, the main run's figures and the rungs run
    // before it kept in the summary. The main run is the ladder's first rung: kept up
    // where sustainable, failed where not (the ladder then reports a lower rate).
    let ladder = match &ours {
        Ok(r) if ao.ladder => runner::ladder(runner, idx, job, r),
        _ => runner::Ladder::default(),
    };
    let ladder_failed = ladder.failed.as_ref().map(|e| format!("failed: {e}"));
    let peer = match (job.peer, runner.peer_setup()) {
        (false, _) => Err("peer disabled for this case".to_string()),
        (true, _) if job.device.is_gpu() => {
            Err("no peer for the GPU form (the pyshmem + numpy loop is the CPU forms' peer)".into())
        }
        (true, PeerSetup::Missing(why)) => Err(why.clone()),
        (true, setup) => {
            peer::run(runner, setup, idx, job, &g).map_err(|e| format!("peer failed: {e}"))
        }
    };
    let recon_p50 = floor.as_ref().ok().map(|f| f.recon_p50_ns);
    let summary = AoSummary {
        geometry: g,
        placement: ours
            .as_ref()
            .map_or_else(|_| place.describe(), |r| r.placement.clone()),
        oversubscribed: place.oversubscribed(pinnable.as_deref()),
        rate_hz: ao.rate_hz,
        stats: ours.as_ref().ok().map(|r| r.stats.clone()),
        max_rate_hz: ladder.best.map(|m| m.hz),
        max_rate_lower_bound: ladder.best.is_some_and(|m| !m.bounded),
        ladder: ladder.rungs,
        floor_parts: floor.as_ref().map(|f| f.parts.clone()).unwrap_or_default(),
        peer: peer.as_ref().ok().map(|(r, _)| r.stats.clone()),
        recon_bytes: g.recon_bytes(),
        needed_gbs: g.recon_bytes() as f64 * ao.rate_hz / 1e9,
        measured_gbs: recon_p50
            .filter(|p| *p > 0)
            .map(|p| g.recon_bytes() as f64 / p as f64),
        verdict: match (&ours, &ladder_failed) {
            (Err(e), _) | (_, Some(e)) => format!("fail: {e}"),
            (Ok(r), None) => verdict(r, ao.rate_hz, ao.budget_us),
        },
    };
    let ours = ours.and_then(|r| ladder_failed.map_or(Ok(r), Err));
    let mut ours = ours.map(|r| side(&r, warmup_frames_of_runs(job, ao)));
    let mut floor = floor.map(|f| f.side);
    if job.device.is_gpu() {
        // Which launch path the GPU stage and the floor's compute ran (one CUDA graph a
        // frame, or direct launches and why).
        let note = |side: Result<&mut Side, _>, prefix: Option<&std::path::Path>| {
            if let (Ok(side), Some(path)) = (side, prefix.and_then(gpu::read_path)) {
                side.m.notes.push(("device work".into(), path));
            }
        };
        note(ours.as_mut(), stages.first().map(|p| p.as_path()));
        note(floor.as_mut(), Some(&floor::result_prefix(runner, idx, 0)));
    }
    JobResult {
        job: job.clone(),
        ours,
        floor,
        peer: peer.map(|(r, notes)| {
            let mut side = side(&r, Placement::warmup_frames(job));
            side.m.notes.extend(notes);
            side
        }),
        skipped: None,
        ao: Some(Box::new(summary)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Scenario, Wait};

    fn job(device: &str, wait: &str) -> Job {
        let text = format!(
            "name = \"t\"\n[[case]]\nkind = \"ao-loop\"\ndevice = \"{device}\"\nsizes = [[8, 8]]\n\
             [case.ao]\nsubapertures = [2, 2]\nactuators = 5\nrate_hz = 100\n{wait}"
        );
        Scenario::parse(&text).unwrap().jobs(false, None).remove(0)
    }

    fn names(tag: &str) -> Names {
        let base = format!("ao-streams-{tag}-{}", std::process::id());
        Names::under(&base, &std::env::temp_dir())
    }

    /// The failure names p99 and the limit as the report prints µs (truncated to whole µs,
    /// a 7 µs p99 over a 0.5 µs budget read "p99 7 µs ≥ 0 µs"), and which limit it is: the
    /// budget, or the frame period where that is the lower.
    #[test]
    fn a_failure_on_the_budget_names_p99_and_the_limit_in_report_us() {
        let mut e2e = crate::hist::new();
        for _ in 0..100 {
            e2e.record(7_000).unwrap();
        }
        let run = runner::LoopRun {
            stats: analysis::LoopStats::default(),
            e2e,
            placement: String::new(),
        };
        assert_eq!(
            failure(&run, 1000.0, Some(0.5)).as_deref(),
            Some("p99 7.00 µs ≥ the 0.50 µs budget")
        );
        assert_eq!(
            failure(&run, 200_000.0, None).as_deref(),
            Some("p99 7.00 µs ≥ the 5.00 µs frame period")
        );
        assert_eq!(
            failure(&run, 200_000.0, Some(6.0)).as_deref(),
            Some("p99 7.00 µs ≥ the 5.00 µs frame period")
        );
        assert_eq!(failure(&run, 1000.0, Some(8.0)), None);
    }

    /// The GPU form is one stage process after the camera (slopes and recon on the
    /// device), whatever `merged` says: the camera waits for one ready mark, and the logs
    /// are analysed as the merged form's.
    #[test]
    fn the_gpu_form_is_one_stage_process_after_the_camera() {
        let gpu = Placement::of(&job("cuda:0", ""));
        assert!(gpu.merged);
        assert_eq!(gpu.stage_processes(), 1);
        assert_eq!(gpu.describe(), "camera@0 slopes+recon@1");
        let cpu = Placement::of(&job("cpu", ""));
        assert_eq!((cpu.merged, cpu.stage_processes()), (false, 2));
        let merged = Placement::of(&job("cpu", "merged = true"));
        assert_eq!(merged.stage_processes(), 1);
    }

    /// details.json reports the warm-up the runs left out: each run's, cut to half its
    /// seconds, not the job's.
    #[test]
    fn the_reported_warm_up_is_the_one_the_runs_left_out() {
        let j = Scenario::parse(
            "name = \"t\"\n[defaults]\nwarmup = 1\nmin_seconds = 0.3\n[[case]]\n\
             kind = \"ao-loop\"\nsizes = [[8, 8]]\n[case.ao]\nsubapertures = [2, 2]\n\
             actuators = 5\nrate_hz = 1000\n",
        )
        .unwrap()
        .jobs(false, None)
        .remove(0);
        let ao = j.ao.as_ref().unwrap();
        assert_eq!(Placement::warmup_frames(&j), 1000);
        // Two runs of 0.15 s, each warming up 0.075 s: 75 frames each.
        assert_eq!(warmup_frames_of_runs(&j, ao), 150);
    }

    /// A highest rate no failing rate bounds is printed as the lower bound it is.
    #[test]
    fn a_highest_rate_that_is_only_a_lower_bound_is_printed_as_one() {
        let j = job("cpu", "");
        let mut sut = AoSummary {
            geometry: Geometry::derive(&j.shape, j.ao.as_ref().unwrap()).unwrap(),
            placement: String::new(),
            oversubscribed: None,
            rate_hz: 100.0,
            stats: None,
            max_rate_hz: None,
            max_rate_lower_bound: false,
            ladder: Vec::new(),
            floor_parts: Vec::new(),
            peer: None,
            recon_bytes: 0,
            needed_gbs: 0.0,
            measured_gbs: None,
            verdict: String::new(),
        };
        assert_eq!(sut.max_rate_text(), "—");
        sut.max_rate_hz = Some(12800.0);
        assert_eq!(sut.max_rate_text(), "12800");
        sut.max_rate_lower_bound = true;
        assert_eq!(sut.max_rate_text(), "≥ 12800");
    }

    /// The camera's `n` frames after the warm-up, deadlines 1 ms apart; `late` are
    /// published together at 6.5 ms.
    fn camera(n: u64, late: &[u64]) -> Vec<stage::Entry> {
        (1..=n)
            .map(|i| {
                let t = i * 1_000_000;
                [i, t, if late.contains(&i) { 6_500_000 } else { t }, 0]
            })
            .collect()
    }

    /// A main run so overloaded that no frame reached the DM (a reconstructor starved by
    /// the slopes stage on its SCHED_FIFO core) missed every frame: it fails its verdict,
    /// not the case, so the rate ladder still runs. A run that failed, or logs that
    /// contradict each other, still fail the case.
    #[test]
    fn a_main_run_no_frame_of_which_reached_the_dm_missed_every_frame() {
        let logs = Logs {
            camera: camera(10, &[]),
            slopes: Some(Vec::new()),
            dm: Vec::new(),
        };
        let placement = "camera@0 slopes@1 recon@1".to_string();
        let sut = main_run(vec![Ok((logs.clone(), placement.clone()))], 0, true).unwrap();
        assert_eq!((sut.stats.frames, sut.stats.missed), (10, 10));
        assert!(sut.e2e.is_empty());
        assert_eq!(sut.placement, placement);
        assert_eq!(verdict(&sut, 1000.0, Some(500.0)), "fail: 10 missed frames");
        let died = main_run(vec![Err("the slopes stage died".into())], 0, true);
        assert_eq!(died.unwrap_err(), "failed: the slopes stage died");
        let mut bad = logs;
        bad.dm.push([99, 1, 2, 0]);
        let err = main_run(vec![Ok((bad, placement))], 0, true).unwrap_err();
        assert!(err.contains("frame id 99 reached the DM"), "{err}");
    }

    /// Frames the camera published late are its own loss only where it has its core to
    /// itself (here 2 of 200, within [`MAX_LATE_AT_SOURCE`]): on the slopes stage's core,
    /// the stages' overrun is what delays it, and the frames the stages then skip fail the
    /// verdict as the pipeline's.
    #[test]
    fn late_frames_of_a_camera_on_a_stages_core_are_the_pipelines_loss() {
        let mask = [0, 1];
        let shared = Placement::of(&job("cpu", "camera_cpu = 1\nslopes_cpu = 1"));
        assert_eq!((shared.camera, shared.slopes), (1, 1));
        assert!(!shared.camera_alone(Some(&mask)));
        let alone = Placement::of(&job("cpu", ""));
        assert!(alone.camera_alone(Some(&mask)) && alone.camera_alone(None));
        // A stage placed outside the mask (a 1-core machine) runs unpinned, anywhere.
        assert!(!alone.camera_alone(Some(&[0])));
        // Frames 4 and 5, published 2.5 and 1.5 ms late, skipped; 6 taken.
        let logs = Logs {
            camera: camera(200, &[4, 5, 6]),
            slopes: None,
            dm: camera(200, &[4, 5, 6])
                .iter()
                .filter(|e| ![4, 5].contains(&e[0]))
                .map(|e| [e[0], e[2] + 10, e[2] + 50, e[2] + 20])
                .collect(),
        };
        let judged = |p: Placement| {
            let run = LoopRun::of_ours(
                std::slice::from_ref(&logs),
                0,
                p.camera_alone(Some(&mask)),
                p.describe(),
            )
            .unwrap();
            (run.stats.missed_text(), verdict(&run, 1000.0, None))
        };
        assert_eq!(
            judged(alone),
            ("2 (2 late at the camera)".into(), "pass".into())
        );
        assert_eq!(judged(shared), ("2".into(), "fail: 2 missed frames".into()));
    }

    /// A camera that delivered a tenth of its frames in time (its core taken by other work)
    /// did not hold the rate: the run does not pass, nor is the rate sustainable, though
    /// the frames that came went through well within the period. Up to 5% of its frames
    /// late, the loop is judged.
    #[test]
    fn a_camera_that_could_not_hold_the_rate_does_not_pass() {
        let mut e2e = crate::hist::new();
        for _ in 0..100 {
            e2e.record(100_000).unwrap();
        }
        let run = |late| runner::LoopRun {
            stats: LoopStats {
                frames: 1000,
                missed: late,
                missed_at_source: late,
                ..LoopStats::default()
            },
            e2e: e2e.clone(),
            placement: String::new(),
        };
        let sut = run(900);
        let v = verdict(&sut, 2000.0, Some(500.0));
        assert!(
            v.starts_with(
                "fail: the camera could not hold 2000 Hz on this host: 900 of its 1000 frames \
                 came a period or more late and were skipped (over 5%"
            ),
            "{v}"
        );
        assert!(!runner::sustainable(&sut, 2000.0));
        assert_eq!(verdict(&run(50), 2000.0, Some(500.0)), "pass");
        assert!(runner::sustainable(&run(50), 2000.0));
        assert!(!runner::sustainable(&run(51), 2000.0));
    }

    /// The GPU form meets on host streams (camera and DM are CPU processes): creating them
    /// needs no GPU, and a busy-waiting loop's streams make no futex wake-ups.
    #[test]
    fn the_loop_meets_on_host_streams_notifying_unless_its_stages_spin() {
        for (device, wait, notify) in [
            ("cuda:0", "", true),
            ("cpu", "", true),
            // Spinning stages need a core each: merged, on 2 cores.
            ("cpu", "merged = true\nwait = \"spin\"", false),
        ] {
            let j = job(device, wait);
            let n = names(&format!("{}{}", device.replace(':', ""), wait.len()));
            let js = crate::cases::create_streams(&j, &n).unwrap();
            let notifies: Vec<_> = js.streams.iter().map(|s| s.notify()).collect();
            // Frame, signals and commands as the stages wait; the ready stream always.
            assert_eq!(notifies, [notify, notify, notify, true], "{device} {wait}");
            drop(js);
            let ao = j.ao.as_ref().unwrap();
            assert_eq!(ao.stage_wait(false).notifies(), notify, "{device} {wait}");
            assert_eq!(ao.wait == Some(Wait::Spin), !notify);
        }
        // The streams themselves: notify as asked, host memory, history for the cursors.
        let j = job("cuda:0", "");
        let n = names("direct");
        let s = create_streams(&j, &n, false).unwrap();
        assert!(!s[0].notify() && !s[2].notify() && s[3].notify());
        assert!(!s[0].gpu_attached());
        assert_eq!(s[0].history_depth(), stage::HISTORY);
        for st in s {
            let name = st.name().to_string();
            drop(st);
            let _ = shmstream::unlink(&name);
        }
    }

    /// A stream that fails to be created (here a name the library refuses; /dev/shm full in
    /// earnest) takes the ones created before it away: none is left in /dev/shm.
    #[test]
    fn a_failed_create_unlinks_the_streams_created_before_it() {
        let j = job("cpu", "");
        let mut n = names("fails");
        n.ctl = "bad\0name".into();
        let e = create_streams(&j, &n, false).unwrap_err();
        assert!(format!("{e:#}").contains("creating stream"), "{e:#}");
        for name in [&n.data, &n.signals, &n.commands] {
            assert!(
                matches!(
                    shmstream::stat(name),
                    Err(shmstream::Error::NotFound { .. })
                ),
                "{name} left behind"
            );
        }
    }
}

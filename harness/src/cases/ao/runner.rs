//! Runs the loop once (stages as pinned child processes, logs analysed afterwards) and
//! the rate ladder: short runs, the rate doubled while the loop keeps up, then bisected.

use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::analysis::{AnalysisError, LogOf, Logs, LoopStats, analyse};
use super::between_frames;
use super::geometry::{Geometry, MAX_RATE_HZ};
use super::placement::Placement;
use super::stage::read_log;
use crate::cases::create_streams;
use crate::error::{Context, Result};
use crate::report::fmt_hz;
use crate::run::Runner;
use crate::scenario::Job;
use crate::spawn::{self, ChildSpec, Role};

/// One run of the loop: its figures, its end-to-end histogram, where the stages ran.
#[derive(Debug, Clone)]
pub struct LoopRun {
    /// Figures.
    pub stats: LoopStats,
    /// End-to-end latency of every measured frame.
    pub e2e: Histogram<u64>,
    /// "camera@0 slopes@1 recon@1" as the processes reported it.
    pub placement: String,
}

impl LoopRun {
    /// The figures of the runs `logs` (warm-up frames up to id `warmup` left out in each;
    /// `camera_alone` as [`analyse`] takes it), their stages placed as `placement` says.
    pub fn analysed(
        logs: &[Logs],
        warmup: u64,
        camera_alone: bool,
        placement: String,
    ) -> Result<LoopRun> {
        let (stats, e2e) = analyse(logs, warmup, camera_alone)?;
        Ok(LoopRun {
            stats,
            e2e,
            placement,
        })
    }

    /// The figures of our loop's runs (the main run's, a rung's), as [`Self::analysed`],
    /// but for runs no frame of which reached the DM after the warm-up: the loop overloaded
    /// (a stage starved until the stop frame), runs that missed every frame, which fail
    /// their verdict or rung; not an error as a fault is (a stage that died, a timeout, a
    /// frame id the camera never published).
    pub fn of_ours(
        logs: &[Logs],
        warmup: u64,
        camera_alone: bool,
        placement: String,
    ) -> Result<LoopRun> {
        let (stats, e2e) = match analyse(logs, warmup, camera_alone) {
            Err(AnalysisError::NoFrameReachedDm { frames }) if frames > 0 => {
                let stats = LoopStats {
                    frames,
                    missed: frames,
                    ..LoopStats::default()
                };
                (stats, crate::hist::new())
            }
            analysed => analysed?,
        };
        Ok(LoopRun {
            stats,
            e2e,
            placement,
        })
    }
}

/// `job` at another rate and run length (the ladder's short runs).
pub fn at_rate(job: &Job, rate_hz: f64, seconds: f64) -> Job {
    let mut j = job.clone();
    if let Some(ao) = j.ao.as_mut() {
        ao.rate_hz = rate_hz;
    }
    j.timing.min_seconds = seconds;
    j.timing.warmup = j.timing.warmup.min(seconds / 2.0);
    j
}

/// The job of each of `job`'s own runs: the loop's seconds cut into `[case.ao] runs`, each
/// with the warm-up [`at_rate`] leaves it.
pub fn each_run(job: &Job) -> Job {
    let (rate, runs) = job
        .ao
        .as_ref()
        .map_or((1000.0, 1), |a| (a.rate_hz, a.runs.max(1)));
    at_rate(job, rate, job.timing.min_seconds / f64::from(runs))
}

/// Where the process of `role` of the run of job `idx` tagged `tag` writes its results
/// (`.aolog`, and the camera's [`between_frames::LOG`]).
pub fn result_prefix(runner: &Runner, idx: usize, tag: &str, role: Role) -> PathBuf {
    runner.work().join(format!("{idx}-{tag}-{role:?}"))
}

/// Runs the loop of `job` once, under names tagged `tag`: the stages' logs and where the
/// stages ran ("camera@0 slopes@1 recon@1"). With [`Job::floor_between_frames`], the camera
/// and the stages also time the floor between frames ([`between_frames`]: the hops and, on
/// the CPU, the compute; read back by [`between_frames::Timed::read`]).
pub fn run_logs(runner: &Runner, idx: usize, job: &Job, tag: &str) -> Result<(Logs, String)> {
    let names = runner.names(idx, tag);
    let ao = job.ao.as_ref().context("ao-loop job without [case.ao]")?;
    let g = Geometry::derive(&job.shape, ao)?;
    // Made before a stop's clean-up looks, or not at all (`spawn::unless_stopping`).
    let (_streams, _bare) = crate::spawn::unless_stopping("creating the loop's streams", || {
        Ok((
            create_streams(job, &names)?,
            between_frames::create(job, &names, &g)?,
        ))
    })?;
    let place = Placement::of(job);
    let roles: &[(Role, usize)] = if place.merged {
        &[
            (Role::AoSlopes, place.slopes),
            (Role::AoCamera, place.camera),
        ]
    } else {
        &[
            (Role::AoRecon, place.recon),
            (Role::AoSlopes, place.slopes),
            (Role::AoCamera, place.camera),
        ]
    };
    let specs: Vec<ChildSpec> = roles
        .iter()
        .map(|&(role, cpu)| ChildSpec {
            role,
            job: job.clone(),
            names: names.clone(),
            cpu,
            result_prefix: result_prefix(runner, idx, tag, role),
            wait_timeout_s: job.timeout_s,
        })
        .collect();
    let outcomes = spawn::run_group(&specs, Duration::from_secs_f64(job.timeout_s))?;
    let placement = outcomes
        .iter()
        .map(|o| {
            let seen = o.report.cpu_seen.map_or("?".into(), |c| c.to_string());
            let name = match o.report.role {
                Role::AoSlopes if place.merged => "slopes+recon",
                Role::AoSlopes => "slopes",
                Role::AoRecon => "recon",
                _ => "camera",
            };
            format!(
                "{name}@{seen}{}",
                if o.report.pinned { "" } else { " (NOT pinned)" }
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
        + &job
            .rt_priority
            .map_or(String::new(), |p| format!(", SCHED_FIFO {p}"))
        + &job
            .slice_ns
            .map_or(String::new(), |ns| format!(", fair slice {} µs", ns / 1000))
        + &match ao.catch_up {
            Some(0) => ", newest frame".to_string(),
            Some(c) => format!(", catch up {c}"),
            None => String::new(),
        };
    // The specs run the DM stage first, then slopes (split form), the camera last.
    let logs = Logs::read(place.merged, |of| {
        let i = match of {
            LogOf::Dm => 0,
            LogOf::Slopes => 1,
            LogOf::Camera => specs.len() - 1,
        };
        read_log(&specs[i].result_prefix.with_extension("aolog"))
    })?;
    Ok((logs, placement))
}

/// One step of the rate ladder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rung {
    /// Camera rate, Hz.
    pub rate_hz: f64,
    /// Whether the loop kept up ([`sustainable`]).
    pub ok: bool,
    /// End-to-end p50, ns (None when no frame reached the DM).
    pub p50_ns: Option<u64>,
    /// End-to-end p99, ns (None when no frame reached the DM).
    pub p99_ns: Option<u64>,
    /// Missed frames.
    pub missed: Option<u64>,
    /// Of those, frames the camera itself published late ([`LoopStats::missed_at_source`]).
    #[serde(default)]
    pub missed_at_source: Option<u64>,
}

/// Whether a run at `rate_hz` is sustainable: no missed frame (the camera's own late
/// frames aside, as the verdict takes them) and p99 below the frame period
/// ([`super::failure`] without a budget). The case's `budget_us` does not enter it: the
/// verdict judges the budget at the case's rate, and a loop over its budget that keeps up
/// at a higher rate sustains that rate.
pub fn sustainable(run: &LoopRun, rate_hz: f64) -> bool {
    super::failure(run, rate_hz, None).is_none()
}

/// The highest rate the ladder found sustainable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaxRate {
    /// Hz.
    pub hz: f64,
    /// Whether a higher rate it tried (the main run's included) failed; if none did (it
    /// stopped at [`MAX_RATE_HZ`] or after its last try), `hz` is only a lower bound.
    pub bounded: bool,
}

/// The rate ladder's outcome.
#[derive(Debug, Clone, Default)]
pub struct Ladder {
    /// The highest sustainable rate, `None` when no rate tried was or the ladder failed.
    pub best: Option<MaxRate>,
    /// Every rung, in the order run (those before the failure where it failed).
    pub rungs: Vec<Rung>,
    /// Why the ladder stopped short: a rung whose run failed (not one that missed its
    /// deadline), which fails the case.
    pub failed: Option<String>,
}

/// Rates the ladder tries at most before it bisects.
const TRIES: u32 = 8;

/// The lowest rate the ladder from `start` Hz may try (halved at every try).
pub fn lowest_rung_hz(start: f64) -> f64 {
    start / f64::from(1u32 << (TRIES - 1))
}

/// Highest rate the loop sustains ([`sustainable`]): from the job's rate, doubled while it
/// keeps up (at most to [`MAX_RATE_HZ`]) or halved until it does, then 3 bisection steps;
/// `main`, the main run at the job's rate, is the first rung, kept up where sustainable
/// ([`climb`]). A rung no frame of which reached the DM failed ([`LoopRun::of_ours`]); a
/// rung whose run fails (a stage died, a timeout) stops the ladder, [`Ladder::failed`]
/// saying why.
pub fn ladder(runner: &Runner, idx: usize, job: &Job, main: &LoopRun) -> Ladder {
    search(job, main, |j, tag| run_logs(runner, idx, j, tag))
}

/// [`ladder`] with `run` running the loop of a rung's job under a tag (its logs and where
/// its stages ran).
fn search(
    job: &Job,
    main: &LoopRun,
    mut run: impl FnMut(&Job, &str) -> Result<(Logs, String)>,
) -> Ladder {
    let Some(ao) = job.ao.as_ref() else {
        return Ladder {
            failed: Some("ao-loop job without [case.ao]".into()),
            ..Ladder::default()
        };
    };
    let mut rungs = Vec::new();
    let camera_alone = Placement::of(job).camera_alone_here();
    let passed = sustainable(main, ao.rate_hz);
    let best = climb(ao.rate_hz, passed, |rate| {
        let tag = format!("lad{}", rungs.len());
        let j = at_rate(job, rate, ao.ladder_seconds);
        let r = run(&j, &tag)
            .and_then(|(logs, placement)| {
                let warmup = Placement::warmup_frames(&j);
                LoopRun::of_ours(&[logs], warmup, camera_alone, placement)
            })
            .with_context(|| format!("the rate ladder's run at {} Hz", fmt_hz(rate)))?;
        let ok = sustainable(&r, rate);
        let reached = !r.e2e.is_empty();
        rungs.push(Rung {
            rate_hz: rate,
            ok,
            p50_ns: reached.then(|| r.e2e.value_at_quantile(0.5)),
            p99_ns: reached.then(|| r.e2e.value_at_quantile(0.99)),
            missed: Some(r.stats.missed),
            missed_at_source: Some(r.stats.missed_at_source),
        });
        Ok(ok.into())
    });
    match best {
        Ok(best) => Ladder {
            best,
            rungs,
            failed: None,
        },
        Err(e) => Ladder {
            best: None,
            rungs,
            failed: Some(e.to_string()),
        },
    }
}

/// How a rung of the ladder went.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kept {
    /// Sustainable ([`sustainable`]).
    Yes,
    /// Not sustainable.
    No,
}

impl From<bool> for Kept {
    fn from(ok: bool) -> Kept {
        if ok { Kept::Yes } else { Kept::No }
    }
}

/// The ladder's search from `start` Hz, `kept_up` trying one rate: the highest rate that
/// kept up, and whether a higher one failed; the first error of `kept_up` stops it. The
/// main run at `start` (seconds long, where a rung is short) is the first try, never rerun
/// as a rung: where it `passed`, kept up, the search goes up from there and never reports a
/// lower rate; where it failed, the search goes down from half of it and never reports
/// `start` or a higher rate (a short rung there could pass where the full run failed).
fn climb(
    start: f64,
    passed: bool,
    mut kept_up: impl FnMut(f64) -> Result<Kept>,
) -> Result<Option<MaxRate>> {
    // The main run is the first try: kept up where it passed, the next try the rate
    // doubled; failed where it did not, the next try the rate halved. Either way one try
    // fewer is left, so the rates tried span those of a ladder from `start` (the lowest
    // rung stays at [`lowest_rung_hz`]).
    let (mut lo, mut hi) = (passed.then_some(start), (!passed).then_some(start));
    let mut rate = if passed {
        (start * 2.0).min(MAX_RATE_HZ)
    } else {
        start / 2.0
    };
    let tries = match passed {
        true if start >= MAX_RATE_HZ => 0,
        _ => TRIES - 1,
    };
    for _ in 0..tries {
        let kept = kept_up(rate)?;
        if kept == Kept::Yes {
            lo = Some(rate);
            if hi.is_some() || rate >= MAX_RATE_HZ {
                break;
            }
            rate = (rate * 2.0).min(MAX_RATE_HZ);
        } else {
            hi = Some(rate);
            if lo.is_some() {
                break;
            }
            rate /= 2.0;
        }
    }
    if let (Some(mut l), Some(mut h)) = (lo, hi) {
        for _ in 0..3 {
            let mid = (l * h).sqrt();
            if kept_up(mid)? == Kept::Yes {
                l = mid;
            } else {
                h = mid;
            }
        }
        lo = Some(l);
    }
    Ok(lo.map(|hz| MaxRate {
        hz,
        bounded: hi.is_some(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::ao::verdict;

    /// A run of 1000 frames with these missed (of which `at_source` the camera's) and every
    /// frame's end-to-end latency `e2e_ns`.
    fn run(missed: u64, at_source: u64, e2e_ns: u64) -> LoopRun {
        let mut e2e = Histogram::<u64>::new(3).unwrap();
        e2e.record(e2e_ns).unwrap();
        LoopRun {
            stats: LoopStats {
                frames: 1000,
                missed,
                missed_at_source: at_source,
                ..LoopStats::default()
            },
            e2e,
            placement: String::new(),
        }
    }

    /// Frames the camera itself published late do not fail a rung, as they do not fail the
    /// verdict: the ladder's highest rate and the verdict agree.
    #[test]
    fn a_rung_judges_missed_frames_as_the_verdict_does() {
        let sut = run(3, 3, 400_000);
        assert_eq!(verdict(&sut, 2000.0, None), "pass");
        assert!(sustainable(&sut, 2000.0));
        assert!(!sustainable(&sut, 2600.0), "p99 over the period");
        assert!(
            !sustainable(&run(3, 2, 400_000), 2000.0),
            "a frame the pipeline lost"
        );
    }

    /// A rung is judged by the period (ao.md §3: no missed frame, p99 below the frame
    /// period), the case's budget left to the verdict: p99 400 µs fits the 500 µs period at
    /// 2000 Hz, so that rate is sustainable over a 300 µs budget the verdict fails.
    #[test]
    fn a_rung_within_the_period_but_over_the_budget_is_sustainable() {
        let sut = run(0, 0, 400_000);
        assert!(sustainable(&sut, 2000.0));
        assert!(verdict(&sut, 2000.0, Some(300.0)).starts_with("fail"));
        assert!(!sustainable(&sut, 2600.0), "over the period");
    }

    /// A loop over its budget at every rate that keeps up at each (main run and rungs)
    /// sustains them: the ladder goes up from the case's rate and reports the highest, where
    /// judged with the budget it went down from half of it, stopped at its first rung and
    /// reported none ("—").
    #[test]
    fn the_ladder_finds_a_rate_for_a_loop_over_its_budget_that_keeps_up() {
        // Every frame 100 ns to the DM, against a 0.05 µs budget.
        let job = ladder_job_with(400.0, "budget_us = 0.05\n");
        let main = run(0, 0, 100);
        assert!(verdict(&main, 400.0, Some(0.05)).starts_with("fail"));
        let sut = search(&job, &main, |j, _| rung_logs(j, true));
        assert_eq!(sut.failed, None);
        let best = sut.best.expect("a sustainable rate");
        assert!(best.hz > 400.0 && !best.bounded, "{best:?}");
        assert!(sut.rungs.iter().all(|g| g.ok), "{:?}", sut.rungs);
        // A main run that misses frames still sends the ladder down.
        let sut = search(&job, &run(1, 0, 100), |j, _| rung_logs(j, true));
        let best = sut.best.unwrap();
        assert!(best.bounded && best.hz < 400.0, "{best:?}");
    }

    /// The ladder stops at the harness's rate limit: it measures the limit itself, never a
    /// rate above it.
    #[test]
    fn the_ladder_never_tries_a_rate_above_the_limit() {
        let climbed = |start: f64, keeps_up_to: f64| {
            let mut tried = Vec::new();
            let best = climb(start, true, |r| {
                tried.push(r);
                Ok((r <= keeps_up_to).into())
            })
            .unwrap();
            assert!(tried.iter().all(|&r| r <= MAX_RATE_HZ), "{tried:?}");
            (best.unwrap().hz, tried)
        };
        let (best, tried) = climbed(800.0, f64::INFINITY);
        assert_eq!((best, tried.last()), (MAX_RATE_HZ, Some(&MAX_RATE_HZ)));
        let (best, tried) = climbed(60_000.0, 80_000.0);
        assert!((60_000.0..=80_000.0).contains(&best), "{tried:?}");
        assert_eq!(tried[0], MAX_RATE_HZ);
    }

    /// A ladder whose every try, the main run's included, kept up found no upper bound: its
    /// rate is a lower bound, so reported; one that saw a higher rate fail is bounded, the
    /// main run's failed rate too.
    #[test]
    fn a_ladder_that_never_saw_a_rate_fail_reports_a_lower_bound() {
        let mut tried = Vec::new();
        let sut = climb(100.0, true, |r| {
            tried.push(r);
            Ok(Kept::Yes)
        })
        .unwrap()
        .unwrap();
        assert_eq!(tried.len(), TRIES as usize - 1);
        assert_eq!(sut.hz, 100.0 * f64::from(1u32 << (TRIES - 1)));
        assert!(!sut.bounded);
        let at_limit = climb(60_000.0, true, |_| Ok(Kept::Yes)).unwrap().unwrap();
        assert_eq!((at_limit.hz, at_limit.bounded), (MAX_RATE_HZ, false));
        let bounded = climb(100.0, true, |r| Ok((r <= 1000.0).into()))
            .unwrap()
            .unwrap();
        assert!(bounded.bounded && (800.0..=1000.0).contains(&bounded.hz));
        let below = climb(100.0, false, |_| Ok(Kept::Yes)).unwrap().unwrap();
        assert!(
            below.bounded && (50.0..100.0).contains(&below.hz),
            "{below:?}"
        );
        let mut lowest = f64::INFINITY;
        assert_eq!(
            climb(100.0, false, |r| {
                lowest = lowest.min(r);
                Ok(Kept::No)
            })
            .unwrap(),
            None
        );
        assert_eq!(lowest, lowest_rung_hz(100.0));
    }

    /// A main run that passed at the case's rate (seconds long, where a rung is short) is
    /// the ladder's first rung, kept up: the search goes up from it and never reports a
    /// lower rate, where a short, noisy rung there would have been halved and the case left
    /// with none. Where the main run did not pass, the ladder goes down from it
    /// (`a_main_run_that_failed_bounds_the_highest_rate_from_above`).
    #[test]
    fn a_main_run_that_passed_bounds_the_highest_rate_from_below() {
        let mut tried = Vec::new();
        let sut = climb(1000.0, true, |r| {
            tried.push(r);
            Ok(Kept::No)
        })
        .unwrap()
        .unwrap();
        assert_eq!((sut.hz, sut.bounded), (1000.0, true));
        assert_eq!(tried[0], 2000.0);
        assert!(tried.iter().all(|&r| r > 1000.0), "{tried:?}");
        let sut = climb(1000.0, true, |r| Ok((r <= 3000.0).into()));
        let sut = sut.unwrap().unwrap();
        assert!(
            sut.bounded && (2000.0..=3000.0).contains(&sut.hz),
            "{sut:?}"
        );
        // The main run is the first of the ladder's tries: it spans the same rates.
        let mut tried = Vec::new();
        let sut = climb(100.0, true, |r| {
            tried.push(r);
            Ok(Kept::Yes)
        })
        .unwrap()
        .unwrap();
        assert_eq!(tried.len(), TRIES as usize - 1);
        assert_eq!(
            (sut.hz, sut.bounded),
            (100.0 * f64::from(1u32 << (TRIES - 1)), false)
        );
        let at_limit = climb(MAX_RATE_HZ, true, |r| panic!("tried {r} Hz")).unwrap();
        assert_eq!(
            at_limit,
            Some(MaxRate {
                hz: MAX_RATE_HZ,
                bounded: false
            })
        );
        // Through the ladder: no rung at the case's rate, none below it.
        let sut = search(&ladder_job(400.0), &kept_up(), |j, _| rung_logs(j, false));
        assert_eq!(
            sut.best,
            Some(MaxRate {
                hz: 400.0,
                bounded: true
            })
        );
        assert!(
            sut.rungs.iter().all(|g| g.rate_hz > 400.0),
            "{:?}",
            sut.rungs
        );
    }

    /// A main run that failed at the case's rate is the ladder's first rung, failed: the
    /// ladder goes down from half of it and reports a rate below it, bounded by it, where a
    /// short rung rerun at the case's rate, passing, reported that rate or a higher one
    /// beside a verdict that failed it ("fail: 2 missed frames" at 1000 Hz beside "highest
    /// sustainable rate 1542 Hz", or "≥ 100000").
    #[test]
    fn a_main_run_that_failed_bounds_the_highest_rate_from_above() {
        let mut tried = Vec::new();
        let sut = climb(1000.0, false, |r| {
            tried.push(r);
            Ok(Kept::Yes)
        })
        .unwrap()
        .unwrap();
        assert!(
            sut.bounded && (500.0..1000.0).contains(&sut.hz),
            "{sut:?} {tried:?}"
        );
        assert_eq!(tried[0], 500.0);
        assert!(tried.iter().all(|&r| r < 1000.0), "{tried:?}");
        // Through the ladder: no rung at the case's rate or above it.
        let sut = search(&ladder_job(400.0), &missed(), |j, _| rung_logs(j, true));
        let best = sut.best.unwrap();
        assert!(
            best.bounded && (200.0..400.0).contains(&best.hz),
            "{best:?}"
        );
        assert!(
            sut.rungs.iter().all(|g| g.rate_hz < 400.0),
            "{:?}",
            sut.rungs
        );
        // Halving still ends at the same lowest rung.
        let mut tried = Vec::new();
        let none = climb(1000.0, false, |r| {
            tried.push(r);
            Ok(Kept::No)
        })
        .unwrap();
        assert_eq!(none, None);
        assert_eq!(tried.len(), TRIES as usize - 1);
        assert_eq!(tried.last(), Some(&lowest_rung_hz(1000.0)));
    }

    /// An ao-loop job at `rate_hz` with the default ladder (and a timeout that holds it).
    fn ladder_job(rate_hz: f64) -> Job {
        ladder_job_with(rate_hz, "")
    }

    /// [`ladder_job`] with `extra` added to its `[case.ao]` table.
    fn ladder_job_with(rate_hz: f64, extra: &str) -> Job {
        crate::scenario::Scenario::parse(&format!(
            "name = \"t\"\n[defaults]\ntimeout_s = 1000\n[[case]]\nkind = \"ao-loop\"\n\
             sizes = [[8, 8]]\n[case.ao]\nsubapertures = [2, 2]\nactuators = 5\n\
             rate_hz = {rate_hz}\n{extra}"
        ))
        .unwrap()
        .jobs(false, None)
        .remove(0)
    }

    /// A main run that kept up (100 ns end to end) and one that missed a frame.
    fn kept_up() -> LoopRun {
        run(0, 0, 100)
    }

    fn missed() -> LoopRun {
        run(1, 0, 100)
    }

    /// The split form's logs of a run of rung `j`: ten frames after its warm-up, each
    /// through the slopes stage, and to the DM 100 ns after the camera when `reached`.
    fn rung_logs(j: &Job, reached: bool) -> Result<(Logs, String)> {
        let period = (1e9 / j.ao.as_ref().unwrap().rate_hz) as u64;
        let ids = 1..=Placement::warmup_frames(j) + 10;
        let at = |i: u64| i * period;
        let logs = Logs {
            camera: ids.clone().map(|i| [i, at(i), at(i), 0]).collect(),
            slopes: Some(
                ids.clone()
                    .map(|i| [i, at(i) + 10, at(i) + 40, 0])
                    .collect(),
            ),
            dm: match reached {
                true => ids.map(|i| [i, at(i) + 50, at(i) + 100, 0]).collect(),
                false => Vec::new(),
            },
        };
        Ok((logs, String::new()))
    }

    /// A rate the loop cannot sustain at all, no frame reaching the DM (a reconstructor
    /// starved by the slopes stage on its SCHED_FIFO core until the stop frame), fails its
    /// rung: the ladder bisects below it, as for any rung that missed frames.
    #[test]
    fn a_rung_no_frame_of_which_reached_the_dm_fails_and_the_ladder_bisects() {
        let sut = search(&ladder_job(400.0), &kept_up(), |j, _| {
            rung_logs(j, j.ao.as_ref().unwrap().rate_hz <= 1000.0)
        });
        assert_eq!(sut.failed, None);
        let best = sut.best.unwrap();
        assert!(
            best.bounded && (800.0..=1000.0).contains(&best.hz),
            "{best:?}"
        );
        let starved = &sut.rungs[1];
        assert_eq!((starved.rate_hz, starved.ok), (1600.0, false));
        assert_eq!((starved.p50_ns, starved.missed), (None, Some(10)));
        assert_eq!(sut.rungs.len(), 5, "{:?}", sut.rungs);
    }

    /// A rung whose run fails (a stage died, a timeout) is not a rate the loop missed: the
    /// ladder stops with the run's error, naming the rate, and keeps the rungs run before
    /// it for the report.
    #[test]
    fn a_rung_whose_run_fails_stops_the_ladder_with_its_message() {
        let mut rates = Vec::new();
        let sut = search(&ladder_job(200.0), &kept_up(), |j, _| {
            let rate = j.ao.as_ref().unwrap().rate_hz;
            rates.push(rate);
            match rate > 1000.0 {
                true => Err("the slopes stage died".into()),
                false => rung_logs(j, true),
            }
        });
        assert_eq!(rates, [400.0, 800.0, 1600.0]);
        assert_eq!(
            sut.failed.as_deref(),
            Some("the rate ladder's run at 1 600 Hz: the slopes stage died")
        );
        assert_eq!(sut.best, None);
        let kept: Vec<_> = sut.rungs.iter().map(|r| (r.rate_hz, r.ok)).collect();
        assert_eq!(kept, [(400.0, true), (800.0, true)]);
        // Logs that contradict each other are a fault too, not an overload.
        let sut = search(&ladder_job(400.0), &missed(), |j, _| {
            let (mut logs, placement) = rung_logs(j, true)?;
            logs.dm[0][0] = 1_000_000;
            Ok((logs, placement))
        });
        assert!(
            sut.failed
                .as_deref()
                .is_some_and(|e| e.contains("frame id 1000000 reached the DM")),
            "{:?}",
            sut.failed
        );
        assert!(sut.rungs.is_empty());
    }

    /// A rung below 1 Hz is named with its significant digits, not rounded to "0 Hz".
    #[test]
    fn a_failed_rung_below_one_hz_is_named_with_its_digits() {
        let sut = search(&ladder_job(5.0), &missed(), |j, _| {
            match j.ao.as_ref().unwrap().rate_hz < 1.0 {
                true => Err("timed out".into()),
                false => rung_logs(j, false),
            }
        });
        assert_eq!(
            sut.failed.as_deref(),
            Some("the rate ladder's run at 0.625 Hz: timed out")
        );
        // 2.5 and 1.25 Hz, the main run's 5 Hz not rerun.
        assert_eq!(sut.rungs.len(), 2);
    }
}

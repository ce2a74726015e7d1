//! Runs the loop once (stages as pinned child processes, logs analysed afterwards) and
//! the rate ladder: short runs, the rate doubled while the loop keeps up, then bisected.

use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::analysis::{LogOf, Logs, LoopStats, analyse};
use super::between_frames;
use super::geometry::{Geometry, MAX_RATE_HZ};
use super::placement::Placement;
use super::stage::read_log;
use crate::cases::create_streams;
use crate::error::{Context, Result};
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
    /// The figures of the runs `logs` (warm-up frames up to id `warmup` left out in each),
    /// their stages placed as `placement` says.
    pub fn analysed(logs: &[Logs], warmup: u64, placement: String) -> Result<LoopRun> {
        let (stats, e2e) = analyse(logs, warmup)?;
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

/// Runs the loop of `job` once, under names tagged `tag`, and analyses it.
pub fn run_loop(runner: &Runner, idx: usize, job: &Job, tag: &str) -> Result<LoopRun> {
    let (logs, placement) = run_logs(runner, idx, job, tag)?;
    LoopRun::analysed(&[logs], Placement::warmup_frames(job), placement)
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
    let _streams = create_streams(job, &names)?;
    let ao = job.ao.as_ref().context("ao-loop job without [case.ao]")?;
    let _bare = between_frames::create(job, &names, &Geometry::derive(&job.shape, ao)?)?;
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
    /// End-to-end p50, ns (None when the run failed).
    pub p50_ns: Option<u64>,
    /// End-to-end p99, ns (None when the run failed).
    pub p99_ns: Option<u64>,
    /// Missed frames.
    pub missed: Option<u64>,
    /// Of those, frames the camera itself published late ([`LoopStats::missed_at_source`]).
    #[serde(default)]
    pub missed_at_source: Option<u64>,
}

/// Whether a run at `rate_hz` is sustainable: the verdict's rule at the frame period (no
/// missed frame, the camera's own late frames aside, and p99 below the period).
pub fn sustainable(stats: &LoopStats, e2e: &Histogram<u64>, rate_hz: f64) -> bool {
    stats.pipeline_missed() == 0 && (e2e.value_at_quantile(0.99) as f64) < 1e9 / rate_hz
}

/// Highest rate the loop sustains: from the job's rate, doubled while it keeps up (at most
/// to [`MAX_RATE_HZ`]) or halved until it does, then 3 bisection steps. Returns the best
/// rate and every rung.
pub fn ladder(runner: &Runner, idx: usize, job: &Job) -> (Option<f64>, Vec<Rung>) {
    let Some(ao) = &job.ao else {
        return (None, Vec::new());
    };
    let secs = ao.ladder_seconds;
    let mut rungs = Vec::new();
    let best = climb(ao.rate_hz, |rate| {
        let j = at_rate(job, rate, secs);
        let r = run_loop(runner, idx, &j, &format!("lad{}", rungs.len()));
        let rung = match &r {
            Ok(run) => Rung {
                rate_hz: rate,
                ok: sustainable(&run.stats, &run.e2e, rate),
                p50_ns: Some(run.e2e.value_at_quantile(0.5)),
                p99_ns: Some(run.e2e.value_at_quantile(0.99)),
                missed: Some(run.stats.missed),
                missed_at_source: Some(run.stats.missed_at_source),
            },
            Err(_) => Rung {
                rate_hz: rate,
                ok: false,
                p50_ns: None,
                p99_ns: None,
                missed: None,
                missed_at_source: None,
            },
        };
        let ok = rung.ok;
        rungs.push(rung);
        ok
    });
    (best, rungs)
}

/// The ladder's search from `start` Hz, `kept_up` trying one rate: the highest rate that
/// kept up.
fn climb(start: f64, mut kept_up: impl FnMut(f64) -> bool) -> Option<f64> {
    let (mut lo, mut hi) = (None::<f64>, None::<f64>);
    let mut rate = start;
    for _ in 0..8 {
        if kept_up(rate) {
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
            if kept_up(mid) {
                l = mid;
            } else {
                h = mid;
            }
        }
        lo = Some(l);
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::ao::verdict;

    /// Frames the camera itself published late do not fail a rung, as they do not fail the
    /// verdict: the ladder's highest rate and the verdict agree.
    #[test]
    fn a_rung_judges_missed_frames_as_the_verdict_does() {
        let stats = LoopStats {
            missed: 3,
            missed_at_source: 3,
            ..LoopStats::default()
        };
        let mut e2e = Histogram::<u64>::new(3).unwrap();
        e2e.record(400_000).unwrap();
        let run = LoopRun {
            stats,
            e2e,
            placement: String::new(),
        };
        assert_eq!(verdict(&run, 2000.0, None), "pass");
        assert!(sustainable(&run.stats, &run.e2e, 2000.0));
        assert!(
            !sustainable(&run.stats, &run.e2e, 2600.0),
            "p99 over the period"
        );
        let lost = LoopStats {
            missed_at_source: 2,
            ..run.stats.clone()
        };
        assert!(
            !sustainable(&lost, &run.e2e, 2000.0),
            "a frame the pipeline lost"
        );
    }

    /// The ladder stops at the harness's rate limit: it measures the limit itself, never a
    /// rate above it.
    #[test]
    fn the_ladder_never_tries_a_rate_above_the_limit() {
        let climbed = |start: f64, keeps_up_to: f64| {
            let mut tried = Vec::new();
            let best = climb(start, |r| {
                tried.push(r);
                r <= keeps_up_to
            });
            assert!(tried.iter().all(|&r| r <= MAX_RATE_HZ), "{tried:?}");
            (best.unwrap(), tried)
        };
        let (best, tried) = climbed(800.0, f64::INFINITY);
        assert_eq!((best, tried.last()), (MAX_RATE_HZ, Some(&MAX_RATE_HZ)));
        let (best, tried) = climbed(60_000.0, 80_000.0);
        assert!((60_000.0..=80_000.0).contains(&best), "{tried:?}");
        assert_eq!(tried[1], MAX_RATE_HZ);
    }
}

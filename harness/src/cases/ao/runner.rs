//! Runs the loop once (stages as pinned child processes, logs analysed afterwards) and
//! the rate ladder: short runs, the rate doubled while the loop keeps up, then bisected.

use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::analysis::{LogOf, Logs, LoopStats, analyse};
use super::between_frames;
use super::geometry::Geometry;
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
    /// Whether the loop kept up: no missed frame and p99 below the frame period.
    pub ok: bool,
    /// End-to-end p50, ns (None when the run failed).
    pub p50_ns: Option<u64>,
    /// End-to-end p99, ns (None when the run failed).
    pub p99_ns: Option<u64>,
    /// Missed frames.
    pub missed: Option<u64>,
}

/// Whether a run at `rate_hz` is sustainable.
pub fn sustainable(stats: &LoopStats, e2e: &Histogram<u64>, rate_hz: f64) -> bool {
    stats.missed == 0 && (e2e.value_at_quantile(0.99) as f64) < 1e9 / rate_hz
}

/// Highest rate the loop sustains: from the job's rate, doubled while it keeps up (or
/// halved until it does), then 3 bisection steps. Returns the best rate and every rung.
pub fn ladder(runner: &Runner, idx: usize, job: &Job) -> (Option<f64>, Vec<Rung>) {
    let Some(ao) = &job.ao else {
        return (None, Vec::new());
    };
    let secs = ao.ladder_seconds;
    let mut rungs = Vec::new();
    let try_rate = |rate: f64, rungs: &mut Vec<Rung>| -> bool {
        let j = at_rate(job, rate, secs);
        let r = run_loop(runner, idx, &j, &format!("lad{}", rungs.len()));
        let rung = match &r {
            Ok(run) => Rung {
                rate_hz: rate,
                ok: sustainable(&run.stats, &run.e2e, rate),
                p50_ns: Some(run.e2e.value_at_quantile(0.5)),
                p99_ns: Some(run.e2e.value_at_quantile(0.99)),
                missed: Some(run.stats.missed),
            },
            Err(_) => Rung {
                rate_hz: rate,
                ok: false,
                p50_ns: None,
                p99_ns: None,
                missed: None,
            },
        };
        let ok = rung.ok;
        rungs.push(rung);
        ok
    };
    let (mut lo, mut hi) = (None::<f64>, None::<f64>);
    let mut rate = ao.rate_hz;
    for _ in 0..8 {
        if try_rate(rate, &mut rungs) {
            lo = Some(rate);
            if hi.is_some() || rate >= 64_000.0 {
                break;
            }
            rate *= 2.0;
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
            if try_rate(mid, &mut rungs) {
                l = mid;
            } else {
                h = mid;
            }
        }
        lo = Some(l);
    }
    (lo, rungs)
}

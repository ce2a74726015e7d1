//! `harness size`: builds the ao-loop scenario for one geometry (split stages, under
//! SCHED_FIFO also with the slopes stage waking ahead, merged slopes+recon, and merged with
//! busy-waiting stages, on the CPU; slopes+recon on the device in the GPU form), runs it
//! with the runner and report writers, and puts a verdict table at the top of `report.md`.
//! A geometry that is wrong or does not fit this machine's memory, a number flag out of
//! range, a `--device` other than `cpu`, `cuda:N` or `all`, or a `--device cuda:N` that
//! cannot run here is refused before anything starts. It exits 1 where a form it measured
//! does not pass ([`exit_status`]).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cases::ao::geometry::{MAX_RATE_HZ, SHORTER_RUNS, default_wake_ahead_us};
use crate::cases::ao::placement::Placement;
use crate::cases::ao::stage::HISTORY;
use crate::error::{Context, Result, bail};
use crate::hist::Percentiles;
use crate::noise::HostNoise;
use crate::report::ao::us_if_any;
use crate::report::us;
use crate::run::JobResult;
use crate::scenario::{Device, Job, MAX_TIMEOUT_S, Scenario};
use crate::{RunOptions, execute};

/// `harness size` options.
#[derive(Debug, Clone, Args)]
pub struct SizeArgs {
    /// WFS frame, ROWSxCOLS pixels (e.g. 240x240).
    #[arg(long, value_name = "RxC")]
    pub wfs_pixels: String,
    /// Shack-Hartmann subaperture grid, ROWSxCOLS (centroid slopes).
    #[arg(long, value_name = "RxC")]
    pub subapertures: Option<String>,
    /// `centroids` (default) or `pixels` (pyramid-style pixel signals).
    #[arg(long, default_value = "centroids")]
    pub slopes: String,
    /// Pixel signals: how many valid pixels (default: the whole frame).
    #[arg(long, allow_negative_numbers = true)]
    pub valid_pixels: Option<usize>,
    /// DM actuators.
    #[arg(long, allow_negative_numbers = true)]
    pub actuators: usize,
    /// Controlled modes (default: zonal control).
    #[arg(long, allow_negative_numbers = true)]
    pub modes: Option<usize>,
    /// Loop rate, 1 to 100000 Hz.
    #[arg(long, allow_negative_numbers = true)]
    pub rate: f64,
    /// End-to-end latency budget, µs (p99 must stay below it).
    #[arg(long, allow_negative_numbers = true)]
    pub budget_us: f64,
    /// `cpu`, `cuda:N` or `all`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Seconds of the main run of each form (at most 43200: each process's timeout holds
    /// twice its run, at most a day).
    #[arg(long, default_value_t = 5.0, allow_negative_numbers = true)]
    pub seconds: f64,
    /// Run every stage (ours and the peer's) under SCHED_FIFO at this priority, 1-99
    /// (needs root, CAP_SYS_NICE or `ulimit -r`); not the busy-waiting form, which the
    /// kernel would throttle. Adds the split form whose slopes stage wakes ahead.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub rt_priority: Option<u8>,
    /// Every process (ours and the peer's) asks the fair scheduler for a time slice of
    /// this many µs, 100-100000 (Linux 6.12 or later; no privileges); with
    /// `--rt-priority`, only the busy-waiting form, which does not run under SCHED_FIFO.
    #[arg(long, value_name = "US", allow_negative_numbers = true)]
    pub slice_us: Option<f64>,
    /// Frames a stage may fall behind and still read every one in order, 0-15 (default 4);
    /// 0: always the newest frame, taken at once when it came while the stage was busy
    /// (pyshmem's `read_new`, as pyRTC's loops read, skips it and waits for the next).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub catch_up: Option<u64>,
    /// Output folder (default: `reports/size-<geometry>-<rate>hz/`, e.g.
    /// `reports/size-240x240-sh20x20-a349-m300-2000hz/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not run the pyshmem peer.
    #[arg(long)]
    pub no_peer: bool,
    /// Python interpreter for the peer.
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

/// `--what`'s `ROWSxCOLS`, each at least 1 (a 0 was refused in the scenario's terms,
/// naming a case and a shape, not the flag).
fn dims(what: &str, s: &str) -> Result<[usize; 2]> {
    let parts: Vec<_> = s.split(['x', 'X']).collect();
    let [a, b] = parts.as_slice() else {
        bail!("--{what} {s:?}: expected ROWSxCOLS, e.g. 240x240");
    };
    let side =
        |v: &str| -> Result<usize> { v.trim().parse().with_context(|| format!("--{what} {s:?}")) };
    let d = [side(a)?, side(b)?];
    if d.contains(&0) {
        bail!("--{what} {s:?}: rows and columns must each be at least 1, e.g. 240x240");
    }
    Ok(d)
}

/// The scenario text for `a` (also written next to the report, to rerun it). Its
/// `timeout_s`, each process's own bound, is twice the longest a process of any of its
/// forms paces its frames (the pyshmem peer's loop runs the whole `--seconds` in one go;
/// the rate ladder's slowest possible rung, at the rate halved at each of its tries, its
/// fewest frames: 794 s at `--rate 5`) and 300 s for its start: 10 minutes at least, as a
/// scenario's own default would be far too short, and a day at most, as any scenario's.
/// `harness size` exposes neither `timeout_s` nor the ladder, so a rate whose ladder would
/// not fit a fixed bound is not refused with remedies the user cannot apply. Nor the cores:
/// the busy-waiting form is left out where its stages cannot each be pinned to a core of
/// their own here ([`Placement::skip_reason`]: cores 0 and 1 cannot both be pinned to, as
/// on a 1-core machine or a cpuset of one core), saying so in `harness size`'s terms,
/// instead of a row skipped with a remedy naming scenario keys it has no flags for.
pub fn scenario_text(a: &SizeArgs) -> Result<String> {
    scenario_text_on(a, |j| Placement::skip_reason(j).is_none())
}

/// [`scenario_text`], the busy-waiting form kept where `spin_fits` each job.
fn scenario_text_on(a: &SizeArgs, spin_fits: impl Fn(&Job) -> bool) -> Result<String> {
    check_numbers(a)?;
    let unchecked: Scenario =
        toml::from_str(&scenario_text_with(a, MAX_TIMEOUT_S, true)?).context("harness size")?;
    let jobs = unchecked.jobs(false, None);
    let spin = jobs.iter().all(spin_fits);
    let longest = jobs
        .iter()
        .map(Placement::longest_paced_s)
        .fold(0.0, f64::max);
    scenario_text_with(a, (2.0 * longest + 300.0).clamp(600.0, MAX_TIMEOUT_S), spin)
}

/// Refuses a number flag outside what the scenario takes, naming the flag. Pasted into the
/// scenario unchecked, NaN did not parse as TOML, 1e20 printed as an integer TOML cannot
/// hold, an infinite `--seconds` overflowed counting frames before the scenario was checked,
/// and the scenario's refusals named its keys (`min_seconds`), not the flags.
fn check_numbers(a: &SizeArgs) -> Result<()> {
    let within = |flag: &str, v: f64, low: f64, high: f64, what: &str| -> Result<()> {
        if !(v.is_finite() && v > low && v <= high) {
            bail!("{flag} {v}: {what}");
        }
        Ok(())
    };
    // From 1 Hz: below about 0.05 Hz the rate ladder's slowest rung outlasts the longest
    // timeout, which `harness size` does not expose.
    let rate = format!("the loop rate must be 1 to {MAX_RATE_HZ} Hz");
    within("--rate", a.rate, 0.0, MAX_RATE_HZ, &rate)?;
    if a.rate < 1.0 {
        bail!("--rate {}: {rate}", a.rate);
    }
    within(
        "--budget-us",
        a.budget_us,
        0.0,
        f64::MAX,
        "the latency budget must be a number of µs above 0",
    )?;
    within(
        "--seconds",
        a.seconds,
        0.0,
        MAX_TIMEOUT_S / 2.0,
        &format!(
            "each form's main run must last above 0 and at most {} s (half a day: each \
             process's timeout holds twice its run, at most a day)",
            MAX_TIMEOUT_S / 2.0
        ),
    )?;
    if let Some(us) = a.slice_us
        && !(us.is_finite() && (100.0..=100_000.0).contains(&us))
    {
        bail!("--slice-us {us}: the fair-scheduler time slice must be 100 to 100000 µs");
    }
    if a.actuators == 0 {
        bail!("--actuators 0: the DM needs at least 1 actuator");
    }
    if a.valid_pixels == Some(0) {
        bail!("--valid-pixels 0: at least 1 pixel must be valid");
    }
    if let Some(p) = a.rt_priority.filter(|p| !(1..=99).contains(p)) {
        bail!("--rt-priority {p}: a SCHED_FIFO priority is 1 to 99");
    }
    if let Some(c) = a.catch_up.filter(|c| *c >= HISTORY as u64) {
        bail!(
            "--catch-up {c}: at most {} (a stage's input stream keeps {HISTORY} frames)",
            HISTORY - 1
        );
    }
    devices(a)?;
    Ok(())
}

/// The devices `--device` names: `all` the CPU and `cuda:0`, else the one the scenario's
/// `device` key takes; anything else refused naming the flag (pasted into the scenario, it
/// was a TOML error at a line of a file the user never wrote).
fn devices(a: &SizeArgs) -> Result<Vec<Device>> {
    match a.device.as_str() {
        "all" => Ok(vec![Device::Cpu, Device::Cuda(0)]),
        d => match Device::try_from(d.to_string()) {
            Ok(d) => Ok(vec![d]),
            Err(_) => bail!("--device {d:?}: expected cpu, cuda:N or all"),
        },
    }
}

/// `s` as a TOML basic string, quoted and escaped.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.into()).to_string()
}

/// The scenario text for `a`, its processes bound by `timeout_s`, the busy-waiting form
/// where `spin`; numbers as `{:?}` prints them, which TOML reads back as floats
/// ([`check_numbers`] passed only finite ones). Its name, the default output folder's,
/// holds the frame, the signals, actuators, modes and rate: two geometries of one frame
/// size, or one at two rates, each keep their report.
fn scenario_text_with(a: &SizeArgs, timeout_s: f64, spin: bool) -> Result<String> {
    let [h, w] = dims("wfs-pixels", &a.wfs_pixels)?;
    let mut ao = String::new();
    // What the signals are, for the scenario's name: "sh20x20", "px4000", "px" (every pixel).
    let (signals, signal_count) = match a.slopes.as_str() {
        "centroids" if a.valid_pixels.is_some() => bail!(
            "--valid-pixels applies to --slopes pixels; centroid slopes (--subapertures) take no \
             valid-pixel count"
        ),
        "pixels" if a.subapertures.is_some() => {
            bail!("--subapertures applies to centroid slopes; --slopes pixels takes --valid-pixels")
        }
        "centroids" => {
            let Some(sub) = &a.subapertures else {
                bail!("--subapertures RxC is needed for centroid slopes (or --slopes pixels)");
            };
            let [sy, sx] = dims("subapertures", sub)?;
            writeln!(ao, "subapertures = [{sy}, {sx}]")?;
            (
                format!("sh{sy}x{sx}"),
                sy.saturating_mul(sx).saturating_mul(2),
            )
        }
        "pixels" => {
            writeln!(ao, "slopes = \"pixels\"")?;
            match a.valid_pixels {
                Some(n) if n > h.saturating_mul(w) => bail!(
                    "--valid-pixels {n}: at most the {} pixels of the {h}x{w} frame",
                    h.saturating_mul(w)
                ),
                Some(n) => {
                    writeln!(ao, "valid_pixels = {n}")?;
                    (format!("px{n}"), n)
                }
                None => ("px".into(), h.saturating_mul(w)),
            }
        }
        other => bail!("--slopes {other:?}: expected centroids or pixels"),
    };
    if let Some(m) = a.modes {
        // A reconstructor controls at most as many modes as it has signals to see them and
        // actuators to make them.
        let most = signal_count.min(a.actuators);
        if m > most {
            bail!(
                "--modes {m}: at most {most}, the fewer of the {signal_count} WFS signals and \
                 the {} actuators (or leave --modes out for zonal control)",
                a.actuators
            );
        }
        writeln!(ao, "modes = {m}")?;
    }
    if let Some(c) = a.catch_up {
        writeln!(ao, "catch_up = {c}")?;
    }

    writeln!(
        ao,
        "actuators = {}\nrate_hz = {:?}\nbudget_us = {:?}",
        a.actuators, a.rate, a.budget_us
    )?;
    let mut t = format!(
        "name = {}\ndescription = {}\n\n[defaults]\nmin_seconds = {:?}\nwarmup = 0.5\nrepeats = 1\ntimeout_s = {timeout_s:?}\n",
        toml_str(&format!(
            "size-{h}x{w}-{signals}-a{}{}-{}hz",
            a.actuators,
            a.modes.map_or(String::new(), |m| format!("-m{m}")),
            a.rate
        )),
        toml_str(&format!(
            "harness size: {h}x{w} px WFS, {} actuators, {} Hz, budget {} µs.",
            a.actuators, a.rate, a.budget_us
        )),
        a.seconds
    );
    for d in devices(a)? {
        let tag = d.to_string().replace(':', "");
        // The forms a team chooses between on the CPU: stages as processes (waiting
        // adaptively, parked where two share a core), slopes+recon merged, and merged with
        // the stages busy-waiting (a core given to the loop: the lowest latency and highest
        // rate). On a GPU: slopes and reconstructor on the device, one process.
        // Under SCHED_FIFO also the processes whose slopes stage wakes ahead of each frame
        // on the core it shares with the reconstructor (off by default there: under the fair
        // scheduler its spin lost frames; under SCHED_FIFO it gave the lowest split latency,
        // `reports/ao-rt/`, `docs/performance.md`).
        // (name, merged, busy-waiting, wake-ahead margin in µs)
        let forms: Vec<(&str, bool, bool, Option<f64>)> = if !d.is_gpu() {
            let ahead = a.rt_priority.map(|_| {
                let us = default_wake_ahead_us(a.rate);
                ("processes-ahead", false, false, Some(us))
            });
            if !spin {
                t.push_str(&spin_left_out(a));
            }
            [("processes", false, false, None)]
                .into_iter()
                .chain(ahead)
                .chain([("merged", true, false, None)])
                .chain(spin.then_some(("merged-spin", true, true, None)))
                .collect()
        } else {
            vec![("gpu", true, false, None)]
        };
        for (form, merged, spins, ahead) in forms {
            let wait = if spins { "wait = \"spin\"\n" } else { "" };
            let ahead = ahead.map_or(String::new(), |us| format!("wake_ahead_us = {us:?}\n"));
            // SCHED_FIFO for the forms that park between frames: a spinning FIFO task is
            // throttled by the kernel (see `AoCase::rt_priority`).
            let rt = match (a.rt_priority, a.slice_us) {
                (Some(p), _) if !spins => format!("rt_priority = {p}\n"),
                (_, Some(us)) => format!("slice_us = {us:?}\n"),
                _ => String::new(),
            };
            write!(
                t,
                "\n[[case]]\nname = {}\nkind = \"ao-loop\"\ndevice = {}\nsizes = [[{h}, {w}]]\n[case.ao]\n{ao}merged = {merged}\n{wait}{ahead}{rt}",
                toml_str(&format!("size-{form}-{tag}")),
                toml_str(&d.to_string())
            )?;
        }
    }
    Ok(t)
}

/// What `harness size` says where it leaves the busy-waiting form out (a TOML comment in
/// its scenario, a line under its verdict table).
const SPIN_LEFT_OUT: &str = "\n# The busy-waiting form (slopes+recon merged, busy-waiting) is left out: cores 0 and 1 (where `harness size` places the loop) cannot both be pinned to here, and a stage spinning unpinned, on a core it shares, only delays its neighbour.\n";

/// [`SPIN_LEFT_OUT`] for `a`: with `--rt-priority`, `--slice-us` applies to the
/// busy-waiting form only (the others run under SCHED_FIFO, which has no fair slice), so
/// without that form no process got the slice, and it says so.
fn spin_left_out(a: &SizeArgs) -> String {
    match (a.rt_priority, a.slice_us) {
        (Some(_), Some(us)) => format!(
            "{SPIN_LEFT_OUT}# `--slice-us {us}` was not used: with `--rt-priority` it applies to the busy-waiting form only (the other forms run under SCHED_FIFO, which has no fair slice).\n"
        ),
        _ => SPIN_LEFT_OUT.to_string(),
    }
}

fn verdict_table(results: &[JobResult], a: &SizeArgs, noise: &HostNoise) -> Result<String> {
    let mut o = String::new();
    let late = crate::cases::ao::MAX_LATE_AT_SOURCE * 100.0;
    writeln!(
        o,
        "## Verdict\n\nAt {} Hz with an end-to-end budget of {} µs (camera publish → DM publish, p99).\n\n- **Pass**: no missed frame (the camera's own late frames aside, where it has its core to itself, up to {late:.0}% of its frames: beyond, the camera did not hold the rate on this host and the form does not pass) and p99 below the budget and the frame period. `harness size` exits 1 where a measured form does not pass.\n- **Highest sustainable rate**: the highest the rate ladder found sustainable (no missed frame, the camera's own late frames up to {late:.0}% aside, and p99 below the frame period: the budget does not enter it), at least the rate where the main run kept up (\"≥ N\": no rate it tried failed, so N is only a lower bound).\n- **Floor**: the form's composed floor, from each stage's compute alone on this harness's own single-threaded kernels and each hop's bare hand-off, measured in the same run; each percentile the lower of two sums of the parts' samples (paired by rank, the sum of the parts' same percentiles; and the compute paired independently of the hops). Its p50 bounds a loop built on these kernels in this placement on this machine, not every implementation of the form (faster kernels may go lower); its p99 is an estimate of such a loop's tail from those sums, not a bound.\n- A p99 needs {min} frames (ten beyond it): a result that rests on fewer says so, and the frames are in brackets (`--rate` × `--seconds` sets them), as the floor's samples are.\n\n| form | device | p50 / p99 µs at the rate (frames) | floor p50 / p99 µs (samples) | jitter (std) µs | missed | highest sustainable rate Hz (budget aside) | dominant stage | reconstructor bandwidth | result |\n|---|---|---|---|---|---|---|---|---|---|",
        a.rate,
        a.budget_us,
        min = crate::hist::min_samples(0.99)
    )?;
    for r in results {
        // Named from what the job runs, not from its case name.
        let case = r.job.ao.as_ref();
        let spins = case.is_some_and(|c| c.wait == Some(crate::scenario::Wait::Spin));
        let ahead = case.is_some_and(|c| c.wake_ahead_us.is_some_and(|us| us > 0.0));
        let form = match (r.job.device.is_gpu(), Placement::of(&r.job).merged, spins) {
            (true, ..) => "slopes+recon on the GPU",
            (false, true, true) => "slopes+recon merged, busy-waiting",
            (false, true, false) => "slopes+recon merged",
            (false, false, _) if ahead => "stages as processes, slopes waking ahead",
            (false, false, _) => "stages as processes",
        };
        // A row without figures: what happened and the result.
        let no_figures = |o: &mut String, what: String, result: &str| {
            writeln!(
                o,
                "| {form} | {} | {} | | | | | | | {result} |",
                r.job.device,
                what.replace('|', "\\|")
            )
        };
        let figures = r.ao.as_deref().and_then(|a| Some((a, a.stats.as_ref()?)));
        match (&r.ours, figures, &r.skipped) {
            (Ok(s), Some((ao, st)), _) => {
                let bw = match ao.measured_gbs {
                    Some(m) => format!(
                        "needs {:.3} GB/s; measured {m:.1} GB/s (estimated ceiling {:.0} Hz from it)",
                        ao.needed_gbs,
                        m * 1e9 / ao.recon_bytes.max(1) as f64
                    ),
                    None => format!("needs {:.3} GB/s; not measured", ao.needed_gbs),
                };
                let p = Percentiles::of(&s.hist);
                let lat = |ns: f64| us_if_any(&s.hist, ns);
                // With its samples, as ours has its frames: a low rate gives it few for a p99.
                let floor = r.floor.as_ref().map_or("—".into(), |f| {
                    let n = f.hist.len();
                    let f = Percentiles::of(&f.hist);
                    format!("{} / {} ({n})", us(f.p50), us(f.p99))
                });
                writeln!(
                    o,
                    "| {form} | {} | {} / {} ({}) | {floor} | {} | {} | {} | {} | {bw} | {} |",
                    r.job.device,
                    lat(p.p50 as f64),
                    lat(p.p99 as f64),
                    p.count,
                    lat(st.jitter_ns),
                    st.missed_text(),
                    ao.max_rate_text(),
                    st.dominant().map_or("—", |d| d.name.as_str()),
                    verdict_cell(&ao.verdict, p.count)
                )?;
            }
            (_, _, Some(why)) => no_figures(&mut o, format!("not measured: {why}"), "n/a")?,
            // A form that failed, in its loop or before it started (ao: None).
            (Err(e), ..) => {
                let e = in_size_terms(e);
                let why = e.lines().next().unwrap_or("");
                let why = why.strip_prefix("failed: ").unwrap_or(why);
                no_figures(&mut o, format!("failed: {why}"), "**fail**")?
            }
            (Ok(_), None, None) => {
                no_figures(&mut o, "not measured: no loop figures".into(), "n/a")?
            }
        }
    }
    let spins = |r: &JobResult| {
        r.job
            .ao
            .as_ref()
            .is_some_and(|c| c.wait == Some(crate::scenario::Wait::Spin))
    };
    if results.iter().any(|r| !r.job.device.is_gpu()) && !results.iter().any(spins) {
        write!(o, "{}", spin_left_out(a).replace("\n# ", "\n"))?;
    }
    let stages = results
        .iter()
        .flat_map(|r| Placement::of(&r.job).stage_cores());
    for c in noise.cores_of(stages) {
        if let Some(note) = noise_note(noise, c) {
            writeln!(o, "\n{note}")?;
        }
    }
    writeln!(o)?;
    Ok(o)
}

/// The result cell of a measured form: its verdict in bold, and where its p99 rests on fewer
/// frames than a p99 needs, a note saying so ([`crate::report::ao::p99_note`]).
fn verdict_cell(verdict: &str, n: u64) -> String {
    match crate::report::ao::p99_note(n) {
        Some(note) => format!("**{verdict}** ({note})"),
        None => format!("**{verdict}**"),
    }
}

/// What the host noise probe's pauses of 1 ms or more on stage core `c` mean for the
/// verdict, `None` where it saw none. A frame due during a pause comes late by up to its
/// length, so the pauses bound the max latency and the jitter from below; p99 leaves out the
/// slowest 1% of frames, so they reach it only where they took 1% of the time or more (in
/// the `reports/ao/` of 2026-12-03, 10 pauses of up to 3.3 ms on the stages' core took well
/// under 1% of the time, and the pyRTC rows' p99 stayed at 23–96 µs). Only the pauses of 1 ms or more are
/// summed here ([`crate::noise::CoreNoise::lost_over_1ms_ns`]), as the note speaks of them.
fn noise_note(noise: &HostNoise, c: &crate::noise::CoreNoise) -> Option<String> {
    if c.gaps_over_1ms == 0 {
        return None;
    }
    let lost = c.lost_over_1ms_ns as f64 / (noise.seconds * 1e9);
    let p99 = if lost >= 0.01 {
        format!(
            " They took {:.1} ms of the probe's {:.1} s ({:.1}%, no less than the 1% of frames p99 leaves out), so a p99 budget below their length can be this machine's to miss too.",
            c.lost_over_1ms_ns as f64 / 1e6,
            noise.seconds,
            lost * 100.0
        )
    } else {
        String::new()
    };
    Some(format!(
        "This machine paused a spinning thread on the stages' core (cpu {}) {} before the loops ran (`Host noise` below): frames due during such a pause come late by up to its length whatever the loop, so the longest pause bounds a loop's max latency from below and the pauses add to its jitter: a max-latency or jitter budget below what they add is this machine's to miss.{p99} Real-time placement (`--rt-priority`) or an isolated core keeps other tasks off the stages' core; the hypervisor's pauses remain.",
        c.cpu,
        noise.pauses(c)
    ))
}

/// A refusal of the scenario `harness size` built, in its flags: the memory refusal's
/// remedy for the stages' logs names scenario keys (`min_seconds`, `warmup`,
/// `ladder_seconds`) it has no flags for, where `--seconds` and `--rate` set how many frames
/// they log.
fn in_size_terms(e: &str) -> String {
    e.replace(
        SHORTER_RUNS,
        "a lower `--seconds` or `--rate` (the stages' logs grow with both)",
    )
}

/// Refuses `--device cuda:N` where that device cannot run ([`crate::cases::gpu::skip_reason`]):
/// every form would be skipped and the run, nothing measured, would pass. `--device all`
/// still runs its CPU forms, its GPU form's row saying it was not measured.
fn check_device(a: &SizeArgs, jobs: &[Job]) -> Result<()> {
    match nothing_measurable(&a.device, jobs.iter().map(crate::cases::gpu::skip_reason)) {
        Some(why) => bail!("--device {}: nothing can be measured here: {why}", a.device),
        None => Ok(()),
    }
}

/// Why a `--device` would measure nothing: it names one device (not `all`) and every job
/// of it is skipped (`skips`: each job's reason, `None` where it runs); the first reason.
fn nothing_measurable(
    device: &str,
    skips: impl IntoIterator<Item = Option<String>>,
) -> Option<String> {
    if device == "all" {
        return None;
    }
    let skips: Vec<_> = skips.into_iter().collect();
    match skips.iter().all(Option::is_some) {
        true => skips.into_iter().flatten().next(),
        false => None,
    }
}

/// Runs `harness size`.
pub fn run(a: &SizeArgs) -> Result<ExitCode> {
    let text = scenario_text(a)?;
    // Parsing checks the geometry and this machine's memory before anything starts.
    let scenario = Scenario::parse(&text)
        .map_err(|e| crate::error::Error::msg(in_size_terms(&e.to_string())))
        .context("harness size")?;
    // Before the CUDA probe below, whose driver may start threads: a stop's signal must reach
    // the run's own waiter (`execute`), not a thread that takes it with its default action.
    let _ = harness_sys::block_termination();
    check_device(a, &scenario.jobs(false, None))?;
    let opts = RunOptions {
        out: a.out.clone(),
        quick: false,
        cases: None,
        quiet: a.quiet,
        python: a.python.clone(),
        no_peer: a.no_peer,
        scenario_path: None,
    };
    let run = execute(&scenario, &opts)?;
    let (out, results) = (&run.out, &run.results);
    std::fs::write(out.join("scenario.toml"), &text)?;
    let md_path = out.join("report.md");
    let md = std::fs::read_to_string(&md_path)?;
    let table = verdict_table(results, a, &run.noise)?;
    std::fs::write(&md_path, before_first_section(&md, &table))?;
    if !a.quiet {
        eprint!("{table}");
    }
    let not_passed = not_passed(results);
    if !not_passed.is_empty() {
        eprintln!(
            "error: {} form(s) did not pass: {}",
            not_passed.len(),
            not_passed.join(", ")
        );
    }
    Ok(exit_status(run.code, results))
}

/// `md` with `section` inserted before its first `## ` heading (at its end where it has
/// none): the verdict table at the top of the report, under its title and summary.
fn before_first_section(md: &str, section: &str) -> String {
    let at = md.find("\n## ").map_or(md.len(), |i| i + 1);
    format!("{}{section}{}", &md[..at], &md[at..])
}

/// The forms measured (not skipped) whose verdict is not "pass" (a form without one, failed
/// before its loop started, included), by label.
fn not_passed(results: &[JobResult]) -> Vec<String> {
    results
        .iter()
        .filter(|r| r.skipped.is_none())
        .filter(|r| r.ao.as_ref().is_none_or(|a| a.verdict != "pass"))
        .map(|r| r.job.label())
        .collect()
}

/// `harness size`'s exit status: the run's (`code`: a failed case), and failure where a
/// measured form's verdict is not "pass", so that `harness size … && deploy` stops there.
fn exit_status(code: ExitCode, results: &[JobResult]) -> ExitCode {
    match not_passed(results).is_empty() {
        true => code,
        false => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        a: SizeArgs,
    }

    /// The jobs of the scenario `harness size` builds from `a` on a machine where the
    /// busy-waiting form's cores can be pinned (cores 0 and 1), whatever this one allows:
    /// [`scenario_text`] asks this machine, and leaves that form out on one core.
    fn jobs_of(a: &SizeArgs) -> Vec<crate::scenario::Job> {
        Scenario::parse(&scenario_text_on(a, |_| true).unwrap())
            .unwrap()
            .jobs(false, None)
    }

    fn args(extra: &[&str]) -> SizeArgs {
        let mut v = vec![
            "size",
            "--actuators",
            "349",
            "--rate",
            "2000",
            "--budget-us",
            "500",
        ];
        v.extend_from_slice(extra);
        T::parse_from(v).a
    }

    /// The small geometry the verdict-table tests run: 8x8 pixels, 2x2 subapertures, 5
    /// actuators, 2 kHz.
    const SMALL: &str = "sizes = [[8, 8]]\n[case.ao]\nsubapertures = [2, 2]\nactuators = 5\n\
                         rate_hz = 2000\n";

    /// `harness size`'s arguments for [`SMALL`].
    fn small_args() -> SizeArgs {
        args(&["--wfs-pixels", "8x8", "--subapertures", "2x2"])
    }

    /// A long `--seconds` gets a timeout that holds it: the fixed 600 s refused any form run
    /// longer than the timeout allowed, naming a `timeout_s` the user cannot set.
    #[test]
    fn long_runs_get_a_timeout_that_holds_them() {
        let geometry = ["--wfs-pixels", "240x240", "--subapertures", "20x20"];
        let jobs = jobs_of(&args(&[&geometry[..], &["--seconds", "900"]].concat()));
        assert!(jobs.iter().all(|j| j.timeout_s >= 2.0 * 900.0), "{jobs:?}");
        // The longest run the flag takes is one the scenario takes too (at a rate whose
        // stage logs fit this machine's memory).
        let mut long = args(&[&geometry[..], &["--seconds", "43200"]].concat());
        long.rate = 10.0;
        let jobs = jobs_of(&long);
        assert!(jobs.iter().all(|j| j.timeout_s > 43200.5), "{jobs:?}");
        // So is the lowest rate, its rate ladder included.
        let mut slow = args(&geometry);
        slow.rate = 1.0;
        assert!(!jobs_of(&slow).is_empty());
        let jobs = jobs_of(&args(&geometry));
        assert!(jobs.iter().all(|j| j.timeout_s == 600.0));
    }

    /// A low `--rate` gets a timeout that holds the rate ladder's slowest possible rung (the
    /// rate halved at each of its tries: 31 frames at 5/128 Hz, 793.6 s): a fixed 600 s
    /// refused any rate up to 6.6 Hz, naming a `timeout_s` and a ladder the user cannot set.
    #[test]
    fn a_low_rate_gets_a_timeout_that_holds_the_ladders_slowest_rung() {
        let a = T::parse_from([
            "size",
            "--wfs-pixels",
            "49x49",
            "--subapertures",
            "7x7",
            "--actuators",
            "97",
            "--rate",
            "5",
            "--budget-us",
            "100000",
        ])
        .a;
        let jobs = jobs_of(&a);
        assert!(!jobs.is_empty());
        assert!(jobs.iter().all(|j| j.timeout_s > 793.6), "{jobs:?}");
    }

    #[test]
    fn the_issue_example_builds_a_valid_scenario_with_every_form() {
        let a = args(&[
            "--wfs-pixels",
            "240x240",
            "--subapertures",
            "20x20",
            "--modes",
            "300",
        ]);
        let jobs = jobs_of(&a);
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs[1].case, "size-merged-cpu");
        assert_eq!(jobs[2].case, "size-merged-spin-cpu");
        let spin = jobs[2].ao.as_ref().unwrap();
        assert!(spin.merged);
        assert_eq!(spin.wait, Some(crate::scenario::Wait::Spin));
        assert_eq!(jobs[0].ao.as_ref().unwrap().budget_us, Some(500.0));
    }

    /// Where the stages cannot each be pinned to a core of their own (`allowed` = [0]: a
    /// 1-core machine, a cpuset of one core; the merged stage's default core is 1; or
    /// [1, 2]: a cpuset without core 0, where the camera is placed), the busy-waiting form
    /// is left out, saying so in the scenario and under the verdict table in `harness
    /// size`'s terms, instead of its row being skipped with a remedy naming scenario keys.
    #[test]
    fn the_busy_waiting_form_is_left_out_where_its_stages_cannot_be_pinned_apart() {
        let a = args(&["--wfs-pixels", "49x49", "--subapertures", "7x7"]);
        let fits = |allowed: &'static [usize]| {
            move |j: &Job| Placement::spin_skip_reason(j, Some(allowed)).is_none()
        };
        let text = scenario_text_on(&a, fits(&[0])).unwrap();
        assert!(text.contains(SPIN_LEFT_OUT), "{text}");
        let names: Vec<String> = Scenario::parse(&text)
            .unwrap()
            .jobs(false, None)
            .into_iter()
            .map(|j| j.case)
            .collect();
        assert_eq!(names, ["size-processes-cpu", "size-merged-cpu"]);
        let text = scenario_text_on(&a, fits(&[1, 2])).unwrap();
        assert!(text.contains(SPIN_LEFT_OUT), "{text}");
        let text = scenario_text_on(&a, fits(&[0, 1])).unwrap();
        assert!(!text.contains(SPIN_LEFT_OUT), "{text}");
        assert_eq!(Scenario::parse(&text).unwrap().jobs(false, None).len(), 3);
        // Under the verdict table.
        let case = SMALL;
        let r = |extra: &str| {
            crate::report::targets::tests::ao(
                &format!("{case}{extra}"),
                [300_000; 3],
                Default::default(),
                Default::default(),
            )
        };
        let said = "\nThe busy-waiting form (slopes+recon merged, busy-waiting) is left out: \
                    cores 0 and 1 (where `harness size` places the loop) cannot both be pinned \
                    to here";
        let table =
            verdict_table(&[r(""), r("merged = true\n")], &a, &HostNoise::default()).unwrap();
        assert!(table.contains(said), "{table}");
        let all = [
            r(""),
            r("merged = true\n"),
            r("merged = true\nwait = \"spin\"\n"),
        ];
        let table = verdict_table(&all, &a, &HostNoise::default()).unwrap();
        assert!(!table.contains("is left out"), "{table}");
    }

    /// With `--rt-priority`, `--slice-us` applies to the busy-waiting form only: where that
    /// form is left out, the scenario and the verdict say the slice was not used.
    #[test]
    fn a_slice_left_unused_with_the_busy_waiting_form_is_said_so() {
        let geometry = ["--wfs-pixels", "49x49", "--subapertures", "7x7"];
        let rt = ["--rt-priority", "50", "--slice-us", "100"];
        let a = args(&[&geometry[..], &rt[..]].concat());
        let one_core = |j: &Job| Placement::spin_skip_reason(j, Some(&[0])).is_none();
        let said = "`--slice-us 100` was not used: with `--rt-priority` it applies to the \
                    busy-waiting form only";
        let text = scenario_text_on(&a, one_core).unwrap();
        assert!(text.contains(&format!("# {said}")), "{text}");
        let jobs = Scenario::parse(&text).unwrap().jobs(false, None);
        assert!(jobs.iter().all(|j| j.slice_ns.is_none()), "{jobs:?}");
        let case = SMALL;
        let r = crate::report::targets::tests::ao(
            case,
            [300_000; 3],
            Default::default(),
            Default::default(),
        );
        let table = verdict_table(&[r], &a, &HostNoise::default()).unwrap();
        assert!(table.contains(&format!("\n{said}")), "{table}");
        // Kept, the busy-waiting form takes the slice; without `--rt-priority` every form
        // does: nothing to say.
        let text = scenario_text_on(&a, |_| true).unwrap();
        assert!(!text.contains(said), "{text}");
        let a = args(&[&geometry[..], &rt[2..]].concat());
        let text = scenario_text_on(&a, one_core).unwrap();
        assert!(
            text.contains(SPIN_LEFT_OUT) && !text.contains(said),
            "{text}"
        );
    }

    /// The host-noise note under the verdict: pauses of 1 ms or more bound the max latency
    /// and the jitter, and reach p99 only where they took 1% of the probe's time or more (in
    /// the `reports/ao/` of 2026-12-03, pauses up to 3.3 ms took 0.7% and p99 was 23-96 µs; the note said a
    /// p99 budget below 3.3 ms was this machine's to miss); no pause of 1 ms, no note (it
    /// said so of pauses of 0.04 ms).
    #[test]
    fn the_host_noise_note_names_p99_only_where_the_pauses_took_1_percent() {
        use crate::noise::CoreNoise;
        let a = small_args();
        let case = SMALL;
        // Passing at p99 300 µs against the 500 µs budget, its stages on cpu 1.
        let row = || {
            crate::report::targets::tests::ao(
                case,
                [300_000; 3],
                Default::default(),
                Default::default(),
            )
        };
        // `lost_over_1ms_ns` the pauses of 1 ms or more; 30 more gaps of 1 ms under them
        // count in `lost_ns` only, and never towards the note's share.
        let noise = |gaps_over_1ms, longest_ns, lost_over_1ms_ns| HostNoise {
            seconds: 3.0,
            cores: vec![CoreNoise {
                cpu: 1,
                pinned: true,
                gaps_over_100us: gaps_over_1ms + 30,
                gaps_over_1ms,
                longest_ns,
                lost_ns: lost_over_1ms_ns + 30 * 999_000,
                lost_over_1ms_ns,
                steal_ms: None,
            }],
            busiest_other_tasks: Vec::new(),
        };
        let note = |n: &HostNoise| {
            let table = verdict_table(&[row()], &a, n).unwrap();
            table
                .lines()
                .find(|l| l.starts_with("This machine paused"))
                .map(str::to_string)
        };
        // 14 ms of 3 s in pauses of 1 ms or more (44 ms counting the shorter gaps): under 1%.
        let seen = note(&noise(10, 3_300_000, 14_000_000)).expect("10 pauses of 1 ms or more");
        assert!(
            seen.starts_with(
                "This machine paused a spinning thread on the stages' core (cpu 1) 10 times for \
                 1 ms or more in 3.0 s, the longest 3.30 ms"
            ) && seen.contains("max latency")
                && seen.contains("jitter")
                && !seen.contains("p99"),
            "{seen}"
        );
        // 60 ms of 3 s: 2%, past the 1% p99 leaves out.
        let seen = note(&noise(20, 3_300_000, 60_000_000)).unwrap();
        assert!(
            seen.contains("They took 60.0 ms of the probe's 3.0 s (2.0%") && seen.contains("p99"),
            "{seen}"
        );
        assert_eq!(note(&noise(0, 40_000, 1_000_000)), None);
    }

    /// A memory refusal names the flags `harness size` has (`--seconds`, `--rate`), not the
    /// scenario keys it has none for (`min_seconds`, `warmup`, `ladder_seconds`): at parse,
    /// and in a form's row where the run-time re-check refused it.
    #[test]
    fn a_memory_refusal_names_the_size_flags_not_scenario_keys() {
        let a = small_args();
        let job = jobs_of(&a).remove(0);
        let err = Placement::geometry(&job, job.ao.as_ref().unwrap(), Some(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains(SHORTER_RUNS), "{err}");
        let said = in_size_terms(&err);
        assert!(
            said.contains("use a smaller geometry, a lower `--seconds` or `--rate`")
                && !said.contains("min_seconds"),
            "{said}"
        );
        let case = SMALL;
        let mut failed = crate::report::targets::tests::ao(
            case,
            [300_000; 3],
            Default::default(),
            Default::default(),
        );
        failed.ours = Err(format!("failed: {err}"));
        failed.ao = None;
        let table = verdict_table(&[failed], &a, &HostNoise::default()).unwrap();
        assert!(
            table.contains("a lower `--seconds` or `--rate`") && !table.contains("min_seconds"),
            "{table}"
        );
    }

    /// `--rt-priority` reaches the forms that park between frames, not the busy-waiting one.
    #[test]
    fn rt_priority_runs_the_parking_forms_under_sched_fifo() {
        let a = args(&[
            "--wfs-pixels",
            "49x49",
            "--subapertures",
            "7x7",
            "--rt-priority",
            "50",
        ]);
        let jobs = jobs_of(&a);
        let prio: Vec<_> = jobs.iter().map(|j| j.rt_priority).collect();
        assert_eq!(prio, vec![Some(50), Some(50), Some(50), None]);
        // Under SCHED_FIFO the split form also runs with its slopes stage waking ahead (an
        // eighth of the 500 µs period, at least 100 µs), the others as without it.
        let ahead: Vec<_> = jobs
            .iter()
            .map(|j| j.ao.as_ref().unwrap().wake_ahead_us)
            .collect();
        assert_eq!(ahead, vec![None, Some(100.0), None, None]);
        assert_eq!(jobs[1].case, "size-processes-ahead-cpu");
        assert!(!jobs[1].ao.as_ref().unwrap().merged);
    }

    /// `--slice-us` reaches every form, the busy-waiting one too.
    #[test]
    fn slice_us_gives_every_form_the_fair_slice() {
        let a = args(&[
            "--wfs-pixels",
            "49x49",
            "--subapertures",
            "7x7",
            "--slice-us",
            "100",
        ]);
        let slices: Vec<_> = jobs_of(&a).iter().map(|j| j.slice_ns).collect();
        assert_eq!(slices, vec![Some(100_000); 3]);
    }

    /// `--catch-up` reaches every form; a value the stages' streams cannot hold is refused
    /// before anything runs.
    #[test]
    fn catch_up_reaches_every_form_and_is_bounded_by_the_streams_history() {
        let geometry = ["--wfs-pixels", "49x49", "--subapertures", "7x7"];
        let a = args(&[&geometry[..], &["--catch-up", "0"]].concat());
        let c: Vec<_> = jobs_of(&a)
            .iter()
            .map(|j| j.ao.as_ref().unwrap().catch_up())
            .collect();
        assert_eq!(c, vec![0; 3]);
        let a = args(&[&geometry[..], &["--catch-up", "16"]].concat());
        let err = scenario_text(&a).unwrap_err();
        assert!(
            err.to_string().contains("--catch-up 16: at most 15"),
            "{err}"
        );
    }

    /// A number flag the scenario would not take is refused naming the flag, before the
    /// scenario is built: `--seconds inf` overflowed counting frames (a panic), `--rate nan`
    /// was a TOML error, and in-range refusals named the scenario's keys.
    #[test]
    fn number_flags_out_of_range_are_refused_naming_the_flag() {
        let geometry = ["--wfs-pixels", "8x8", "--subapertures", "2x2"];
        let pixels = ["--wfs-pixels", "8x8", "--slopes", "pixels"];
        for (flag, value, needle) in [
            (
                "--seconds",
                "inf",
                "--seconds inf: each form's main run must last above 0",
            ),
            ("--seconds", "1e17", "at most 43200 s (half a day"),
            ("--seconds", "43201", "at most 43200 s (half a day"),
            ("--seconds", "0", "--seconds 0:"),
            ("--rate", "nan", "--rate NaN: the loop rate must be 1 to"),
            (
                "--rate",
                "0.5",
                "--rate 0.5: the loop rate must be 1 to 100000 Hz",
            ),
            ("--rate", "1e20", "1 to 100000 Hz"),
            ("--rate", "0", "--rate 0:"),
            ("--budget-us", "inf", "--budget-us inf: the latency budget"),
            ("--budget-us", "0", "--budget-us 0:"),
            (
                "--slice-us",
                "50",
                "--slice-us 50: the fair-scheduler time slice",
            ),
            (
                "--rt-priority",
                "0",
                "--rt-priority 0: a SCHED_FIFO priority is 1 to 99",
            ),
            ("--actuators", "0", "--actuators 0:"),
            ("--valid-pixels", "0", "--valid-pixels 0:"),
            (
                "--valid-pixels",
                "65",
                "--valid-pixels 65: at most the 64 pixels of the 8x8 frame",
            ),
        ] {
            let mut v = vec![
                "size",
                "--actuators",
                "5",
                "--rate",
                "1000",
                "--budget-us",
                "900",
            ];
            v.extend(if flag == "--valid-pixels" {
                pixels
            } else {
                geometry
            });
            // The flag's value replaces the one above, or the flag is added.
            match v.iter().position(|f| *f == flag) {
                Some(i) => v[i + 1] = value,
                None => v.extend([flag, value]),
            }
            let err = scenario_text(&T::parse_from(v).a).unwrap_err().to_string();
            assert!(err.contains(needle), "{flag} {value}: {err}");
        }
        // The bound itself is taken: every pixel of the frame valid.
        let every = T::parse_from([
            "size",
            "--actuators",
            "5",
            "--rate",
            "1000",
            "--budget-us",
            "900",
            "--wfs-pixels",
            "8x8",
            "--slopes",
            "pixels",
            "--valid-pixels",
            "64",
        ])
        .a;
        let text = scenario_text_on(&every, |_| true).unwrap();
        assert!(text.contains("valid_pixels = 64\n"), "{text}");
    }

    /// The default output folder (`reports/<scenario name>/`) tells apart geometries of one
    /// frame size (Keck-like 20x20 subapertures and 349 actuators, ELT-like pixel signals
    /// and 4310 actuators, both 240x240) and one geometry at two rates: named after the
    /// frame alone, the second overwrote the first's report.
    #[test]
    fn the_default_output_folder_tells_geometries_and_rates_apart() {
        // Parsed unchecked: the ELT-like matrix need not fit this machine's memory.
        let name = |a: &SizeArgs| {
            let text = scenario_text_on(a, |_| true).unwrap();
            toml::from_str::<Scenario>(&text).unwrap().name
        };
        let keck = args(&["--wfs-pixels", "240x240", "--subapertures", "20x20"]);
        let mut more = keck.clone();
        more.actuators = 4310;
        let mut faster = keck.clone();
        faster.rate = 3000.5;
        let mut modal = keck.clone();
        modal.modes = Some(300);
        let mut elt = args(&["--wfs-pixels", "240x240", "--slopes", "pixels"]);
        elt.actuators = 4310;
        let mut elt_valid = elt.clone();
        elt_valid.valid_pixels = Some(40000);
        let names: Vec<String> = [keck, more, faster, modal, elt, elt_valid]
            .iter()
            .map(name)
            .collect();
        assert_eq!(
            names,
            [
                "size-240x240-sh20x20-a349-2000hz",
                "size-240x240-sh20x20-a4310-2000hz",
                "size-240x240-sh20x20-a349-3000.5hz",
                "size-240x240-sh20x20-a349-m300-2000hz",
                "size-240x240-px-a4310-2000hz",
                "size-240x240-px40000-a4310-2000hz",
            ]
        );
    }

    /// `--device` is checked before anything is built, naming the flag: pasted raw into the
    /// scenario, `gpu` was a TOML parse error at a line of a file the user never wrote, and
    /// a value with `"` injected keys. `cuda` (the scenario's own shorthand) is `cuda:0`.
    #[test]
    fn a_device_the_scenario_does_not_take_is_refused_naming_the_flag() {
        let geometry = ["--wfs-pixels", "8x8", "--subapertures", "2x2"];
        for (device, said) in [
            ("gpu", r#"--device "gpu": expected cpu, cuda:N or all"#),
            (
                "cpu\"\nrt_priority = 99\n#",
                r#"--device "cpu\"\nrt_priority = 99\n#": expected cpu, cuda:N or all"#,
            ),
            ("cuda:x", r#"--device "cuda:x": expected"#),
        ] {
            let a = args(&[&geometry[..], &["--device", device]].concat());
            let err = format!("{:#}", scenario_text(&a).unwrap_err());
            assert!(err.starts_with(said), "{device:?}: {err}");
        }
        let a = args(&[&geometry[..], &["--device", "cuda"]].concat());
        let jobs = jobs_of(&a);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].device, Device::Cuda(0));
        assert_eq!(jobs[0].case, "size-gpu-cuda0");
    }

    /// Numbers reach the scenario as TOML floats: a budget of 1e20 µs printed as an integer
    /// TOML cannot hold.
    #[test]
    fn large_numbers_reach_the_scenario_as_floats() {
        let a = T::parse_from([
            "size",
            "--wfs-pixels",
            "8x8",
            "--subapertures",
            "2x2",
            "--actuators",
            "5",
            "--rate",
            "1000",
            "--budget-us",
            "1e20",
        ])
        .a;
        let jobs = jobs_of(&a);
        assert!(
            jobs.iter()
                .all(|j| j.ao.as_ref().unwrap().budget_us == Some(1e20))
        );
    }

    /// `--device cuda:N` that no form can run on measures nothing: refused with the reason.
    /// `--device all` runs its CPU forms, and `cpu` never skips.
    #[test]
    fn a_device_every_form_of_which_is_skipped_is_refused_with_the_reason() {
        let no = || Some("cuda:0: no CUDA driver".to_string());
        assert_eq!(nothing_measurable("cuda:0", [no()]), no());
        assert_eq!(nothing_measurable("all", [None, None, None, no()]), None);
        assert_eq!(nothing_measurable("cuda:0", [None]), None);
        assert_eq!(nothing_measurable("cpu", [None, None]), None);
        // This machine's own answer: refused where it has no usable GPU, run where it has.
        let a = args(&[
            "--wfs-pixels",
            "8x8",
            "--subapertures",
            "2x2",
            "--device",
            "cuda:0",
        ]);
        let jobs = jobs_of(&a);
        match crate::cases::gpu::skip_reason(&jobs[0]) {
            Some(why) => {
                let err = check_device(&a, &jobs).unwrap_err().to_string();
                assert_eq!(
                    err,
                    format!("--device cuda:0: nothing can be measured here: {why}")
                );
            }
            None => assert!(check_device(&a, &jobs).is_ok()),
        }
    }

    /// The header states the rule the verdict judges by ([`crate::cases::ao::failure`]):
    /// frames late at a camera alone on its core are its own loss, not the form's, up to 5%
    /// of its frames.
    #[test]
    fn the_verdict_header_leaves_the_cameras_late_frames_aside() {
        let a = small_args();
        let table = verdict_table(&[], &a, &HostNoise::default()).unwrap();
        assert!(
            table.contains(
                "**Pass**: no missed frame (the camera's own late frames aside, where it has its \
                 core to itself, up to 5% of its frames: beyond, the camera did not hold the \
                 rate on this host and the form does not pass) and p99 below"
            ),
            "{table}"
        );
    }

    /// A verdict judged on a p99 that its frames do not support says so: `--rate 100
    /// --seconds 5` gives 500 frames, whose p99 is the 5th largest; 1000 frames support it.
    /// The floor's percentiles come with its samples, as ours with its frames.
    #[test]
    fn a_verdict_on_too_few_frames_for_a_p99_says_so() {
        let case = &SMALL.replace("rate_hz = 2000", "rate_hz = 100");
        let a = small_args();
        let row = |frames: u64| {
            let mut r = crate::report::targets::tests::ao(
                case,
                [300_000; 3],
                crate::cases::ao::analysis::LoopStats::default(),
                crate::cases::ao::analysis::LoopStats::default(),
            );
            let mut h = crate::hist::new();
            h.record_n(300_000, frames).unwrap();
            r.ours.as_mut().unwrap().hist = h;
            // The floor, on as many samples: shown with them.
            let mut f = crate::hist::new();
            f.record_n(300_000, frames).unwrap();
            r.floor.as_mut().unwrap().hist = f;
            let table = verdict_table(&[r], &a, &HostNoise::default()).unwrap();
            table
                .lines()
                .find(|l| l.starts_with("| stages"))
                .unwrap()
                .to_string()
        };
        let few = row(500);
        assert!(
            few.contains(" | 300.0 / 300.0 (500) | 300.0 / 300.0 (500) | ")
                && few.ends_with(" | **pass** (p99 from 500 frames: a p99 needs 1000) |"),
            "{few}"
        );
        let enough = row(1000);
        assert!(
            enough.contains("(1000) | 300.0 / 300.0 (1000) | ")
                && enough.ends_with(" | **pass** |"),
            "{enough}"
        );
    }

    /// The verdict goes under the report's title and summary, before its first section, on
    /// lines of its own; at the end of a report without sections.
    #[test]
    fn the_verdict_goes_before_the_reports_first_section() {
        let section = "## Verdict\n\n| form |\n\n";
        assert_eq!(
            before_first_section("# r\n\nsummary\n\n## Environment\n\n## AO loops\n", section),
            "# r\n\nsummary\n\n## Verdict\n\n| form |\n\n## Environment\n\n## AO loops\n"
        );
        assert_eq!(
            before_first_section("# r\n", section),
            "# r\n## Verdict\n\n| form |\n\n"
        );
    }

    /// Each row names its form from what the job runs: merged or split, busy-waiting or
    /// parking, the slopes stage waking ahead of its frames or not.
    #[test]
    fn each_verdict_row_names_its_form_from_its_job() {
        let geometry = SMALL;
        let a = small_args();
        for (keys, form) in [
            ("", "stages as processes"),
            ("wake_ahead_us = 0\n", "stages as processes"),
            (
                "wake_ahead_us = 50\n",
                "stages as processes, slopes waking ahead",
            ),
            ("merged = true\nwait = \"park\"\n", "slopes+recon merged"),
            (
                "merged = true\nwait = \"spin\"\n",
                "slopes+recon merged, busy-waiting",
            ),
        ] {
            let r = crate::report::targets::tests::ao(
                &format!("{geometry}{keys}"),
                [300_000; 3],
                Default::default(),
                Default::default(),
            );
            let table = verdict_table(&[r], &a, &HostNoise::default()).unwrap();
            let row = table.lines().find(|l| l.starts_with("| s")).unwrap();
            assert!(
                row.starts_with(&format!("| {form} | cpu | ")),
                "{keys}: {row}"
            );
        }
    }

    /// A form that failed before its loop started (no loop figures: the run-time memory
    /// re-check) is a failed row, as the exit code says; a loop no frame of which reached
    /// the DM shows no latency, but its missed frames and verdict.
    #[test]
    fn a_form_that_failed_before_its_loop_started_is_a_failed_row() {
        use crate::cases::ao::analysis::LoopStats;
        let case = SMALL;
        let stats = |missed| LoopStats {
            frames: 10,
            missed,
            ..LoopStats::default()
        };
        let result = || crate::report::targets::tests::ao(case, [300_000; 3], stats(0), stats(0));
        let mut failed = result();
        failed.ours = Err("failed: ao-loop: a run of this case needs 9 GB | 8 GB free".into());
        failed.ao = None;
        let mut overloaded = result();
        overloaded.ours.as_mut().unwrap().hist = crate::hist::new();
        let summary = overloaded.ao.as_mut().unwrap();
        summary.stats = Some(stats(10));
        summary.verdict = "fail: 10 missed frames".into();
        let a = small_args();
        let table = verdict_table(&[failed, overloaded], &a, &HostNoise::default()).unwrap();
        let rows: Vec<&str> = table
            .lines()
            .filter(|l| l.starts_with("| stages"))
            .collect();
        assert_eq!(
            rows[0],
            "| stages as processes | cpu | failed: ao-loop: a run of this case needs 9 GB \\| \
             8 GB free | | | | | | | **fail** |"
        );
        assert!(
            rows[1].starts_with(
                "| stages as processes | cpu | — / — (0) | 300.0 / 300.0 (100) | — | 10 |"
            ) && rows[1].ends_with("| **fail: 10 missed frames** |"),
            "{}",
            rows[1]
        );
    }

    /// A measured form whose verdict is not "pass" fails `harness size` (exit 1), whatever
    /// the run's own code (which counts only failed cases); a form skipped here does not.
    #[test]
    fn a_form_that_did_not_pass_fails_the_exit_status() {
        let case = SMALL;
        let result = || {
            crate::report::targets::tests::ao(
                case,
                [300_000; 3],
                Default::default(),
                Default::default(),
            )
        };
        let mut missed = result();
        missed.ao.as_mut().unwrap().verdict = "fail: 10 missed frames".into();
        assert_eq!(
            exit_status(ExitCode::SUCCESS, &[result(), missed]),
            ExitCode::FAILURE
        );
        assert_eq!(
            exit_status(ExitCode::SUCCESS, &[result(), result()]),
            ExitCode::SUCCESS
        );
        let mut skipped = result();
        skipped.skipped = Some("cuda:0: no CUDA driver".into());
        skipped.ao.as_mut().unwrap().verdict = "fail: not run".into();
        assert_eq!(
            exit_status(ExitCode::SUCCESS, &[result(), skipped]),
            ExitCode::SUCCESS
        );
        assert_eq!(
            exit_status(ExitCode::FAILURE, &[result()]),
            ExitCode::FAILURE
        );
    }

    #[test]
    fn device_all_adds_the_gpu_form_with_slopes_and_recon_in_one_process() {
        let a = args(&[
            "--wfs-pixels",
            "240x240",
            "--subapertures",
            "20x20",
            "--device",
            "all",
        ]);
        let jobs = jobs_of(&a);
        let names: Vec<_> = jobs.iter().map(|j| j.case.as_str()).collect();
        assert_eq!(
            names,
            [
                "size-processes-cpu",
                "size-merged-cpu",
                "size-merged-spin-cpu",
                "size-gpu-cuda0"
            ]
        );
        let gpu = &jobs[3];
        assert_eq!(gpu.device, crate::scenario::Device::Cuda(0));
        assert!(crate::cases::ao::placement::Placement::of(gpu).merged);
    }

    /// A negative number reaches the flag's own check (clap took `-5` for a flag: "unexpected
    /// argument"), a frame or grid side of 0 is refused naming the flag (it was refused
    /// naming a scenario case and shape), and more modes than the fewer of the signals and
    /// actuators is refused with that bound (it was accepted).
    #[test]
    fn negative_numbers_empty_sides_and_too_many_modes_are_refused_naming_the_flag() {
        let geometry = ["--wfs-pixels", "240x240", "--subapertures", "20x20"];
        let err = |extra: &[&str]| {
            let mut v = vec!["size", "--actuators", "349", "--rate", "2000"];
            v.extend_from_slice(extra);
            match T::try_parse_from(v) {
                Ok(t) => scenario_text(&t.a).unwrap_err().to_string(),
                Err(e) => e.to_string(),
            }
        };
        let negative = err(&[&geometry[..], &["--budget-us", "-5"]].concat());
        assert!(
            negative.starts_with("--budget-us -5: the latency budget"),
            "{negative}"
        );
        let seconds = err(&[&geometry[..], &["--budget-us", "5", "--seconds", "-1"]].concat());
        assert!(seconds.starts_with("--seconds -1:"), "{seconds}");
        let modes = err(&[&geometry[..], &["--budget-us", "5", "--modes", "-3"]].concat());
        assert!(
            modes.contains("'-3'") && modes.contains("--modes"),
            "{modes}"
        );
        for (flag, value) in [
            ("--wfs-pixels", "0x240"),
            ("--wfs-pixels", "240x0"),
            ("--subapertures", "0x20"),
        ] {
            let mut v = vec!["--budget-us", "500"];
            v.extend(geometry);
            let i = v.iter().position(|f| *f == flag).unwrap();
            v[i + 1] = value;
            let e = err(&v);
            assert!(
                e.starts_with(&format!(
                    "{flag} \"{value}\": rows and columns must each be"
                )),
                "{e}"
            );
        }
        // 20x20 subapertures: 800 signals; 349 actuators.
        let too_many = err(&[&geometry[..], &["--budget-us", "500", "--modes", "350"]].concat());
        assert!(
            too_many.starts_with("--modes 350: at most 349, the fewer of the 800 WFS signals"),
            "{too_many}"
        );
        let pixels = [
            "--wfs-pixels",
            "8x8",
            "--slopes",
            "pixels",
            "--valid-pixels",
            "20",
        ];
        let few = err(&[&pixels[..], &["--budget-us", "500", "--modes", "21"]].concat());
        assert!(few.starts_with("--modes 21: at most 20"), "{few}");
        assert!(scenario_text(&args(&[&geometry[..], &["--modes", "349"]].concat())).is_ok());
    }

    #[test]
    fn bad_geometries_are_refused_before_anything_runs() {
        for (extra, needle) in [
            (
                vec!["--wfs-pixels", "240x240", "--subapertures", "7x7"],
                "must divide",
            ),
            (vec!["--wfs-pixels", "240"], "ROWSxCOLS"),
            // Options of the other kind of slopes are refused, not dropped.
            (
                vec![
                    "--wfs-pixels",
                    "240x240",
                    "--subapertures",
                    "20x20",
                    "--valid-pixels",
                    "10",
                ],
                "--valid-pixels applies to --slopes pixels; centroid slopes (--subapertures)",
            ),
            (
                vec![
                    "--wfs-pixels",
                    "240x240",
                    "--slopes",
                    "pixels",
                    "--subapertures",
                    "20x20",
                ],
                "--subapertures applies to centroid slopes; --slopes pixels takes --valid-pixels",
            ),
            (vec!["--wfs-pixels", "240x240"], "--subapertures"),
            (
                vec![
                    "--wfs-pixels",
                    "40000x40000",
                    "--slopes",
                    "pixels",
                    "--modes",
                    "300",
                ],
                "available",
            ),
            // Past the stages' 32-bit pixel indices.
            (
                vec![
                    "--wfs-pixels",
                    "100000x100000",
                    "--slopes",
                    "pixels",
                    "--modes",
                    "300",
                ],
                "the stages index them in 32 bits, at most 2147483648",
            ),
            // The products of these sizes overflow 64 bits: refused, not a panic.
            (
                vec![
                    "--wfs-pixels",
                    "4000000000x4000000000",
                    "--slopes",
                    "pixels",
                    "--modes",
                    "300",
                ],
                "more than this machine can map",
            ),
        ] {
            let a = args(&extra);
            let err = scenario_text(&a)
                .and_then(|t| Scenario::parse(&t).map(|_| ()))
                .unwrap_err();
            assert!(format!("{err:#}").contains(needle), "{extra:?}: {err:#}");
        }
    }
}

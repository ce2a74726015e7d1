//! `kind = "bridge"`: frames written on side A cross two `shmstream-bridge` processes on
//! loopback (`publish --lossless` → Zenoh TCP → `subscribe`) and are read from the mirrored
//! stream on side B; beside it, Zenoh's own floor: a bare publisher → subscriber of the
//! same payloads (`shmstream-bridge floor-put` / `floor-get`), in the same run.
//!
//! The harness does not link Zenoh: it runs the bridge package's binary, found next to its
//! own executable (`cargo build -p shmstream-bridge`) or at `$SHMSTREAM_BRIDGE`.
//!
//! Each frame carries its phase in its first byte (the writer stamps it in place, as
//! floor-put stamps its payload); both sides run the same phases:
//! - warm-up: paced frames until the sessions are connected and the warm-up time is over;
//! - latency: frames paced `gap_us` apart; one-way latency = the time the reader at B gets
//!   the frame from the mirror (`subscribe --history`, read with a [`Cursor`](shmstream::Cursor): every frame
//!   in order, so frames that reach the mirror in a burst each get their sample, as each
//!   of floor-get's does) − the time its write at A was called, joined by frame id after the
//!   run (`CLOCK_MONOTONIC`, one process). The floor's equivalent: the time its subscriber
//!   receives a sample − the time its put was called (`CLOCK_MONOTONIC` too, system-wide,
//!   stamped in the payload);
//!   the report splits ours at the mirror's write time ([`hops`]): the way to the mirror,
//!   and the mirror's history append and the reader's wake-up after it;
//! - throughput: the writer keeps at most half the source's history in flight (written at
//!   A, not yet read at B), so the lossless path never laps the publisher's cursor nor the
//!   reader's; a window's rate is the frames after its first over the time from the reader
//!   getting its first to getting its last, as floor-get counts its windows. The floor's
//!   windows run flat out and in the same window (acknowledged by floor-get over Zenoh),
//!   congestion control *block*, and the pattern with the higher median is the floor.
//!
//! Ids the reader never got (lost on the way, or overwritten in the mirror's history before
//! it read them) are reported as `lost`.
//!
//! The floor's two processes live through the whole case and run the phases the harness
//! sends them, in turns with ours, inside each of our two runs: the latency phase is cut
//! into slots of about half a second, each after a slot of the floor's, and each of our
//! throughput windows (a repeat) comes after one of the floor's (flat out and in our window
//! by turns). Each side starts its turn with the other's frames all
//! arrived. Ours is pooled over its two runs and the floor's latency over all its slots,
//! so the host's speed, which on a shared machine shifts every second or so, weighs on
//! both sides alike.
//!
//! Placement: by default the scheduler places the bridges, the floor's two processes and
//! the harness's writer and reader threads, and the reader parks. With `pinned = true`
//! Zenoh's side of both (the two bridges; floor-put and floor-get) and the writer run on
//! the writer core, the reader on the reader core: neither side then pays a wake of an idle
//! core inside Zenoh's hop that the other does not. `wait = "spin"` (pinned only) has the
//! reader spin, so the latency ends when the mirror shows the frame, as the floor's ends
//! when its callback runs; a parked reader adds its own wake-up, the consumer's cost.
//! `rt_priority = N` runs Zenoh's side of both under `SCHED_FIFO` at `N`
//! (`shmstream-bridge --rt-priority`), the writer and reader (the application) staying
//! under the fair scheduler: a frame's wake-up then hands the writer's core to the
//! publishing bridge at once.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shmstream::{Dtype, Error as StreamError, Stream, StreamOptions, WriteGuard};

use crate::error::{Context, Result, bail};
use crate::hist;
use crate::measure::Measured;
use crate::run::{JobResult, Runner, Side, SideResult};
use crate::scenario::{Job, Wait};

mod hops;
use hops::Hops;
pub use hops::{TO_MIRROR, TO_MIRROR_RATIO, TO_READER};

const WARM: u8 = 0;
const LAT: u8 = 1;
const TPUT: u8 = 2;
const END: u8 = 3;

/// Most bytes of history the source stream keeps (for `publish --lossless`).
const HISTORY_BYTES: usize = 256 << 20;
/// Most frames of history it keeps: the throughput window is half of it, refilled in
/// steps, so small frames need a long window for the waits between steps not to count.
const MAX_DEPTH: usize = 2048;

/// Frames of history the source stream keeps.
fn depth(job: &Job) -> usize {
    (HISTORY_BYTES / job.payload_bytes()).clamp(4, MAX_DEPTH)
}

/// Throughput frames in flight at most, ours and the floor's windowed run: half the
/// history, so the lossless path never laps a cursor. It is refilled in steps of half of it.
fn window(depth: usize) -> u64 {
    (depth / 2).max(2) as u64
}

/// Frames per refill of the throughput window.
fn step(depth: usize) -> u64 {
    window(depth) / 2
}

/// The bridge binary: `$SHMSTREAM_BRIDGE`, or `shmstream-bridge` beside this executable.
fn bridge_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SHMSTREAM_BRIDGE") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().context("locating the harness binary")?;
    let p = exe.with_file_name("shmstream-bridge");
    if !p.exists() {
        bail!(
            "{} not found: build it first with `cargo build -p shmstream-bridge` (the same profile as the harness), or set SHMSTREAM_BRIDGE",
            p.display()
        );
    }
    Ok(p)
}

/// A free loopback TCP port (the OS picks it; released just before the bridge binds it),
/// never handed out before by this process: floor-get may not have bound the floor's port
/// yet when ours asks for its own, and `bind(0)` may give the same port again once probed.
fn free_port() -> Result<u16> {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    port_not_given(&mut given, || {
        let l = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
        Ok(l.local_addr().context("reading the port")?.port())
    })
}

/// The first port `probe` gives that is not in `given`, added to it. Gives up after a
/// bounded number of probes that all gave ports already handed out.
fn port_not_given(
    given: &mut BTreeSet<u16>,
    mut probe: impl FnMut() -> Result<u16>,
) -> Result<u16> {
    const PROBES: usize = 100;
    for _ in 0..PROBES {
        let port = probe()?;
        if given.insert(port) {
            return Ok(port);
        }
    }
    bail!(
        "no free loopback port in {PROBES} tries that this process had not handed out already ({} handed out)",
        given.len()
    )
}

/// Bridge processes, killed and reaped when dropped (they hold no state worth a clean
/// exit: the harness unlinks the mirror stream itself).
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            harness_sys::kill(c.id());
            crate::spawn::untrack(c.id());
            let _ = c.wait();
        }
    }
}

/// Starts a bridge process for `job`: on Zenoh's core of a pinned job (pinned as it
/// starts), under `SCHED_FIFO` at the job's `rt_priority`; `piped` gives it pipes for its
/// standard input and output (floor-put's phases and answers). Call it from the thread that
/// runs the case: the process dies with that thread (`PR_SET_PDEATHSIG`), so with a harness
/// killed hard (SIGKILL, an abort), which could not kill it itself.
fn spawn(bin: &Path, job: &Job, args: &[String], log: &Path, piped: bool) -> Result<Child> {
    let err = std::fs::File::create(log).context("creating a bridge log")?;
    let io = || if piped { Stdio::piped() } else { Stdio::null() };
    let mut cmd = Command::new(bin);
    if let Some(p) = job.rt_priority {
        cmd.arg("--rt-priority").arg(p.to_string());
    }
    cmd.args(args).stdin(io()).stdout(io()).stderr(err);
    harness_sys::die_with_parent(&mut cmd);
    let cpu = zenoh_cpu(job);
    let what = match cpu {
        Some(cpu) => format!(
            "starting {} on cpu {cpu} (writer_cpu of a pinned bridge case)",
            bin.display()
        ),
        None => format!("starting {}", bin.display()),
    };
    if let Some(cpu) = cpu {
        harness_sys::pin_on_exec(&mut cmd, cpu).context(what.clone())?;
    }
    // Tracked as well: a harness stopped by a signal kills it before its clean-up.
    crate::spawn::spawn_tracked(&mut cmd, false).context(what)
}

/// Pins the calling thread to `cpu` (nothing for `None`).
fn pin(cpu: Option<usize>) -> Result<()> {
    match cpu {
        Some(cpu) if !crate::spawn::pin_to(cpu) => {
            bail!("cannot pin to cpu {cpu} (writer_cpu / reader_cpu of a pinned bridge case)")
        }
        _ => Ok(()),
    }
}

/// Runs `f` on a thread pinned to `cpu`, or here when `None` (the caller's affinity stays
/// as it was either way).
fn on_cpu<T: Send>(cpu: Option<usize>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    if cpu.is_none() {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            pin(cpu)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(crate::error::Error::msg("a pinned bridge thread panicked")))
    })
}

/// The core of Zenoh's side and of the writer at A (pinned cases).
fn zenoh_cpu(job: &Job) -> Option<usize> {
    job.pinned.then_some(job.writer_cpu)
}

/// The core of the reader at B (pinned cases).
fn reader_cpu(job: &Job) -> Option<usize> {
    job.pinned.then_some(job.reader_cpu)
}

/// How the reader at B waits for the mirror (the case's `wait`, parked by default).
pub(crate) fn reader_wait(job: &Job) -> Wait {
    job.wait.unwrap_or(Wait::Park)
}

/// The placement column of ours.
fn our_placement(job: &Job) -> String {
    let wait = reader_wait(job).name();
    let placed = if job.pinned {
        format!(
            "bridges and writer on cpu {}, reader ({wait}) on cpu {}",
            job.writer_cpu, job.reader_cpu
        )
    } else {
        format!("writer+reader ({wait}) threads, bridges unpinned")
    };
    placed + &fifo(job, "bridges")
}

/// What of the job runs under `SCHED_FIFO`, for the placement columns ("" when nothing).
fn fifo(job: &Job, who: &str) -> String {
    job.rt_priority
        .map_or(String::new(), |p| format!("; {who} SCHED_FIFO {p}"))
}

/// Measures one bridge job: Zenoh's floor and ours, in turns (see the module's doc).
pub fn run_job(runner: &Runner, idx: usize, job: &Job) -> JobResult {
    if let Some(Err(e)) = job.rt_priority.map(may_run_real_time) {
        // Said before any bridge starts: each would exit at once, and the case would wait
        // out its timeout for a mirror that never comes.
        let e = format!("{e:#}");
        return result(job, Err(e.clone()), Err(e));
    }
    let work = runner.work().join(format!("{idx}-bridge"));
    let _ = std::fs::create_dir_all(&work);
    let names = runner.names(idx, "bridge");
    let mut floor = Floor::start(job, &work);
    let first = ours(job, &names.data, &work, &mut floor.turns(job));
    let second = ours(job, &names.data, &work, &mut floor.turns(job));
    let floor = floor
        .finish(job)
        .and_then(|(hist, flat, windowed)| best_floor(job, hist, flat, windowed))
        .map_err(|e| format!("floor failed: {e}"));
    let ours = first
        .and_then(|first| pooled(job, first, second?))
        .map(|(mut side, hops)| {
            let floor_p50 = floor.as_ref().map_or(0, |f| f.hist.value_at_quantile(0.5));
            side.m.notes.extend(hops.ratio_note(floor_p50));
            side
        })
        .map_err(|e| format!("failed: {e}"));
    result(job, ours, floor)
}

/// A bridge job's result: ours and the floor's sides (bridge cases have no peer).
fn result(job: &Job, ours: SideResult, floor: SideResult) -> JobResult {
    JobResult {
        job: job.clone(),
        ours,
        floor,
        peer: Err("no peer for bridge cases".into()),
        skipped: None,
        ao: None,
    }
}

/// Whether this process may put a thread under `SCHED_FIFO` at `priority`, asked on a
/// thread of its own (the policy is per thread, and that thread ends here), with the
/// harness's message for a case that may not.
fn may_run_real_time(priority: u8) -> Result<()> {
    std::thread::spawn(move || crate::spawn::real_time(priority))
        .join()
        .unwrap_or_else(|_| Err(crate::error::Error::msg("the SCHED_FIFO probe panicked")))
}

/// What one run of ours measured: latency samples and their split into hops, throughput
/// per window, and ids the reader never got (of them, `overrun` were overwritten in the
/// mirror's history before it read them).
struct Run {
    hist: Histogram<u64>,
    hops: Hops,
    rates: Vec<f64>,
    lost: u64,
    overrun: u64,
}

/// Our two runs as one side: latency samples and hops pooled (the hops' p50 and p99 in the
/// side's notes), the throughput the median of all their repeats.
fn pooled(job: &Job, first: Run, mut second: Run) -> Result<(Side, Hops)> {
    let mut hist = first.hist;
    hist.add(&second.hist)
        .context("pooling our latency samples")?;
    let mut hops = first.hops;
    hops.add(&second.hops)?;
    let mut rates = first.rates;
    rates.append(&mut second.rates);
    let mut s = side(job, hist, rates, &our_placement(job))?;
    let (lost, overrun) = (first.lost + second.lost, first.overrun + second.overrun);
    let lost = match overrun {
        0 => lost.to_string(),
        n => format!("{lost} ({n} overwritten in the mirror's history before the reader got them)"),
    };
    s.m.notes.push(("lost".into(), lost));
    s.m.notes.extend(hops.notes());
    Ok((s, hops))
}

/// Seconds each measured phase lasts.
fn phase_seconds(job: &Job) -> f64 {
    job.timing.min_seconds * f64::from(job.timing.repeats.max(1))
}

/// Seconds of one latency slot. Ours and the floor take turns at this grain through their
/// latency phases: on a shared machine the host's speed shifts every second or so (the
/// floor alone, p50 of each second of one run at 64 KiB: 86, 80, 76, 105, 105, 118 µs), and
/// turns of a whole phase each (six seconds) let the floor and ours land in different
/// speeds: at 128 KiB ours read below its floor in two runs of three.
const LAT_SLOT_S: f64 = 0.5;

/// The latency slots of one of our runs, and each slot's seconds: the phase's length in
/// slots of about [`LAT_SLOT_S`].
fn lat_slots(job: &Job) -> (u32, f64) {
    let secs = phase_seconds(job);
    let n = (secs / LAT_SLOT_S).round().max(1.0);
    (n as u32, secs / n)
}

/// Zenoh's floor from its latency samples and its throughput windows (taken in turns with
/// ours), flat out and in our window: two send patterns, neither Zenoh's best at every
/// payload on a shared machine, and the one with the higher median window is the floor (a
/// floor must bound ours). Median against median: ours is the median of its repeats, and
/// the best of six windows against a median of three would measure the machine's noise,
/// not the bridge.
fn best_floor(job: &Job, hist: Histogram<u64>, flat: Vec<f64>, windowed: Vec<f64>) -> Result<Side> {
    let (flat_hz, windowed_hz) = (
        crate::measure::median(&flat),
        crate::measure::median(&windowed),
    );
    let rates = if flat_hz >= windowed_hz {
        flat
    } else {
        windowed
    };
    let placement = match zenoh_cpu(job) {
        Some(cpu) => format!("floor-put, floor-get on cpu {cpu}"),
        None => "floor-put, floor-get".into(),
    } + &fifo(job, "both");
    let mut best = side(job, hist, rates, &placement)?;
    let (slots, slot_s) = lat_slots(job);
    best.m.notes.push((
        "floor passes".into(),
        format!(
            "latency in {slots} slots of {slot_s:.2} s in each of ours' 2 runs, alternating with ours' slots; each throughput window before one of ours, flat out and in our window by turns"
        ),
    ));
    best.m.notes.push((
        "floor throughput".into(),
        format!(
            "flat out {flat_hz:.0} frames/s, in our window {windowed_hz:.0} frames/s (medians of their windows): the higher counts"
        ),
    ));
    Ok(best)
}

/// Zenoh's floor through a case: floor-get and floor-put, alive from the case's start to
/// its end, floor-put running each phase the case sends it (see `floor.rs` in the bridge
/// package); or the first error they met, after which the case's own runs go on alone.
struct Floor {
    procs: Result<FloorProcs>,
    /// Throughput windows so far: each is a numbered run of floor-get's.
    runs: u32,
}

/// A phase of floor-put's (a line of its standard input; see `floor.rs` in the bridge
/// package).
enum FloorPhase {
    Warm(f64),
    Lat(f64),
    Tput { secs: f64, run: u32, step: u64 },
    End,
}

impl FloorPhase {
    /// The line floor-put reads.
    fn line(&self) -> String {
        match *self {
            FloorPhase::Warm(secs) => format!("warm {secs}"),
            FloorPhase::Lat(secs) => format!("lat {secs}"),
            FloorPhase::Tput { secs, run, step } => format!("tput {secs} {run} {step}"),
            FloorPhase::End => "end".into(),
        }
    }

    /// How long the phase sends frames.
    fn secs(&self) -> f64 {
        match *self {
            FloorPhase::Warm(secs) | FloorPhase::Lat(secs) | FloorPhase::Tput { secs, .. } => secs,
            FloorPhase::End => 0.0,
        }
    }
}

/// The floor's processes.
struct FloorProcs {
    /// floor-get, then floor-put.
    children: Children,
    phases: std::process::ChildStdin,
    /// floor-put's answers (`done` per phase), read on a thread of their own.
    answers: mpsc::Receiver<String>,
    out: PathBuf,
    /// The case's folder, where the floor's logs are.
    work: PathBuf,
    timeout: Duration,
}

impl Floor {
    /// Starts floor-get and floor-put and runs the warm-up phase.
    fn start(job: &Job, work: &Path) -> Floor {
        let mut floor = Floor {
            procs: FloorProcs::start(job, work),
            runs: 0,
        };
        floor.phase(FloorPhase::Warm(job.timing.warmup.max(0.5)));
        floor
    }

    /// The floor's turns in one of our runs: its latency slots, and its throughput windows,
    /// each a numbered run (counted through the case): flat out when even, in our window
    /// when odd, so that both patterns sample both of our runs' stretch of time (with
    /// one pattern per run, the better pattern's median was the one that ran while the host
    /// was faster: 327 frames/s at 3.8 MiB against 254 in the other run, ours 255 and 200).
    fn turns<'a>(&'a mut self, job: &'a Job) -> impl FnMut(Turn) + Send + 'a {
        move |turn| match turn {
            Turn::Lat(secs) => self.phase(FloorPhase::Lat(secs)),
            Turn::Tput => {
                let run = self.runs;
                let step = if run % 2 == 1 { step(depth(job)) } else { 0 };
                self.phase(FloorPhase::Tput {
                    secs: job.timing.min_seconds,
                    run,
                    step,
                });
                self.runs += 1;
            }
        }
    }

    /// Runs one phase and waits until it is over; the first error ends the floor.
    fn phase(&mut self, phase: FloorPhase) {
        if let Ok(p) = &mut self.procs
            && let Err(e) = p.phase(&phase)
        {
            self.procs = Err(e);
        }
    }

    /// Ends the floor's run and reads what floor-get measured: the latency samples and the
    /// throughput rates of its windows flat out (even runs) and in our window (odd runs).
    fn finish(self, job: &Job) -> Result<(Histogram<u64>, Vec<f64>, Vec<f64>)> {
        let runs = f64::from(self.runs);
        let mut p = self.procs?;
        p.phase(&FloorPhase::End)?;
        let timeout = Duration::from_secs_f64(job.timeout_s);
        for name in ["floor-put", "floor-get"] {
            let child = p
                .children
                .0
                .pop()
                .with_context(|| format!("{name}'s handle"))?;
            // Untracked once exited, before it is reaped (killed first at the timeout): a
            // harness stopped later must not kill its pid, which may be reused.
            let status = crate::spawn::wait_timeout(child, timeout, false);
            match status? {
                Some(status) if status.success() => {}
                Some(status) => bail!("{name} exited with {status} (see {})", p.work.display()),
                None => bail!("{name} did not finish (see {})", p.work.display()),
            }
        }
        let text = std::fs::read_to_string(&p.out)
            .with_context(|| format!("reading {} (floor-get's results)", p.out.display()))?;
        let (mut flat, mut windowed) = (Vec::new(), Vec::new());
        let mut h = hist::new();
        for l in text.lines() {
            if let Some(t) = l.strip_prefix("tput ") {
                let v: Vec<f64> = t.split(' ').filter_map(|x| x.parse().ok()).collect();
                let [run, frames, seconds] = v[..] else {
                    bail!("floor-get wrote a bad throughput line: {l}");
                };
                let rates = match run {
                    r if r >= runs => {
                        bail!("floor-get wrote a throughput line of an unknown run: {l}")
                    }
                    r if r % 2.0 == 0.0 => &mut flat,
                    _ => &mut windowed,
                };
                rates.push(frames / seconds.max(1e-9));
            } else {
                h.saturating_record(l.parse::<u64>().context("a floor latency")?);
            }
        }
        if flat.is_empty() || windowed.is_empty() {
            bail!("floor-get wrote no throughput line for one of its runs");
        }
        Ok((h, flat, windowed))
    }
}

impl FloorProcs {
    fn start(job: &Job, work: &Path) -> Result<FloorProcs> {
        if job.payload_bytes() < 16 {
            bail!("bridge payloads must be at least 16 bytes");
        }
        Self::start_with(&bridge_binary()?, job, work)
    }

    /// Starts floor-get and floor-put of the bridge binary `bin`.
    fn start_with(bin: &Path, job: &Job, work: &Path) -> Result<FloorProcs> {
        let endpoint = format!("tcp/127.0.0.1:{}", free_port()?);
        let key = format!("hsfloor{}/{}", std::process::id(), job.shape_str());
        let out = work.join("floor.txt");
        let _ = std::fs::remove_file(&out);
        let get = spawn(
            bin,
            job,
            &[
                "floor-get".into(),
                key.clone(),
                "--listen".into(),
                endpoint.clone(),
                "--out".into(),
                out.display().to_string(),
            ],
            &work.join("floor-get.log"),
            false,
        )?;
        let mut children = Children(vec![get]);
        let mut put = spawn(
            bin,
            job,
            &[
                "floor-put".into(),
                key,
                "--connect".into(),
                endpoint,
                "--bytes".into(),
                job.payload_bytes().to_string(),
                "--gap-us".into(),
                job.gap_us.to_string(),
            ],
            &work.join("floor-put.log"),
            true,
        )?;
        let (phases, stdout) = (put.stdin.take(), put.stdout.take());
        children.0.push(put);
        let (Some(phases), Some(stdout)) = (phases, stdout) else {
            bail!("floor-put started without its pipes");
        };
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(FloorProcs {
            children,
            phases,
            answers,
            out,
            work: work.to_path_buf(),
            timeout: Duration::from_secs_f64(job.timeout_s),
        })
    }

    /// Sends floor-put one phase and waits for its `done` (the phase's seconds and the
    /// case's timeout at most).
    fn phase(&mut self, phase: &FloorPhase) -> Result<()> {
        let line = phase.line();
        writeln!(self.phases, "{line}")
            .and_then(|()| self.phases.flush())
            .with_context(|| format!("sending floor-put its phase `{line}`"))?;
        match self
            .answers
            .recv_timeout(self.timeout + Duration::from_secs_f64(phase.secs()))
        {
            Ok(a) if a == "done" => Ok(()),
            Ok(a) => bail!("floor-put answered {a:?} to `{line}`"),
            Err(_) => bail!(
                "floor-put did not finish its phase `{line}` (see its log in {})",
                self.work.display()
            ),
        }
    }
}

fn side(job: &Job, hist: Histogram<u64>, rates: Vec<f64>, placement: &str) -> Result<Side> {
    if hist.is_empty() {
        bail!("no frame crossed the bridge in the latency phase");
    }
    let hz = crate::measure::median(&rates);
    let m = Measured {
        iterations: hist.len(),
        notes: vec![
            (
                "throughput".into(),
                format!(
                    "{hz:.0} frames/s ({:.1} MB/s)",
                    hz * job.payload_bytes() as f64 / 1e6
                ),
            ),
            ("mode".into(), "lossless (block)".into()),
        ],
        repeat_hz: rates,
        ..Default::default()
    };
    Ok(Side {
        m,
        hist,
        placement: placement.into(),
    })
}

/// What the reader at B has seen, for the writer's window.
#[derive(Default)]
struct Seen {
    /// The id of the newest frame the reader got.
    accounted: Mutex<u64>,
    /// The id the writer waits for: the reader wakes it only then, not at every frame (a
    /// wake-up per frame would take the cores the bridges need).
    awaited: AtomicU64,
    changed: Condvar,
    /// The first id of the end frames (0 until the writer gets there): the reader stops at it.
    end_from: AtomicU64,
    /// The throughput window under way (0: none): the reader then looks at the mirror
    /// every [`look_interval`] instead of waking at each publication, and counts the frames
    /// it gets as that window's. The writer sets it before the window's first frame and
    /// moves it on only once the reader has accounted for the window's last; the frames'
    /// way through the bridges orders the store before the reader's load.
    flat_out: AtomicU64,
}

/// How often the reader looks at the mirror during the throughput phase: a wake-up per
/// frame (tens of thousands a second at 64 B) would take the cores the bridges need, and
/// the floor's subscriber counts in the bridge's place, with no third process. The writer
/// keeps a refill step of frames in flight beyond the one it waits for, so the reader looks
/// once per quarter step at the rate it has seen, within these bounds (a look every 200 µs
/// was 18 sleeps per 4 MB frame and held ours to 0.65 of the floor's frames per second,
/// against 0.78 with looks 2 ms apart).
const TPUT_LOOK: std::ops::RangeInclusive<Duration> =
    Duration::from_micros(200)..=Duration::from_millis(5);

/// The reader's pause between looks during the throughput phase: the time a quarter of a
/// refill step took at the rate seen since the phase began (`frames` in `elapsed`).
fn look_interval(step: u64, frames: u64, elapsed: Duration) -> Duration {
    if frames == 0 {
        return *TPUT_LOOK.start();
    }
    let quarter_step = elapsed.mul_f64((step as f64 / 4.0) / frames as f64);
    quarter_step.clamp(*TPUT_LOOK.start(), *TPUT_LOOK.end())
}

/// A turn of the floor's between two of ours.
#[derive(Debug, Clone, Copy)]
enum Turn {
    /// A latency slot of this many seconds.
    Lat(f64),
    /// A throughput window (one repeat's seconds).
    Tput,
}

/// Runs the floor's turns.
type FloorTurns<'a> = dyn FnMut(Turn) + Send + 'a;

/// Streams unlinked when dropped, on every way out of a run of ours (the source stream is
/// created without `auto_unlink`; the mirror is `subscribe`'s).
struct Unlinked(Vec<String>);

impl Drop for Unlinked {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = shmstream::unlink_quiet(name);
        }
    }
}

/// The source stream `name` created and the two bridges mirroring it as `m-{name}` started,
/// both with `depth` frames of history: the guard that unlinks both, the source and the
/// bridges (each killed on drop from the moment it started).
fn start_bridges(
    bin: &Path,
    job: &Job,
    name: &str,
    work: &Path,
    depth: usize,
) -> Result<(Unlinked, Stream, Children)> {
    let dtype = Dtype::from_numpy_name(&job.dtype)
        .with_context(|| format!("dtype {} is not a stream dtype", job.dtype))?;
    let mirror_name = format!("m-{name}");
    let unlinked = Unlinked(vec![name.to_string(), mirror_name]);
    let source = crate::spawn::unless_stopping("creating the source stream", || {
        StreamOptions::new(name)
            .shape(&job.shape)
            .dtype(dtype)
            .notify(true)
            .history(depth)
            .create()
            .with_context(|| format!("creating stream {name}"))
    })?;
    let prefix = format!("hs{}", std::process::id());
    let endpoint = format!("tcp/127.0.0.1:{}", free_port()?);
    let mut children = Children(Vec::new());
    children.0.push(spawn(
        bin,
        job,
        &[
            "publish".into(),
            name.into(),
            "--listen".into(),
            endpoint.clone(),
            "--key-prefix".into(),
            prefix.clone(),
            "--lossless".into(),
        ],
        &work.join("publish.log"),
        false,
    )?);
    children.0.push(spawn(
        bin,
        job,
        &[
            "subscribe".into(),
            name.into(),
            "--connect".into(),
            endpoint,
            "--key-prefix".into(),
            prefix,
            "--local-prefix".into(),
            "m-".into(),
            // Twice the frames ever in flight (the throughput window): every frame stays
            // in the mirror's history until the reader has read it.
            "--history".into(),
            depth.to_string(),
        ],
        &work.join("subscribe.log"),
        false,
    )?);
    Ok((unlinked, source, children))
}

/// One run of ours: the bridges started, the phases, the bridges stopped; `floor_turn`
/// runs the floor's latency slots and throughput windows in turn with ours.
fn ours(job: &Job, name: &str, work: &Path, floor_turn: &mut FloorTurns<'_>) -> Result<Run> {
    if job.payload_bytes() < 16 {
        bail!("bridge payloads must be at least 16 bytes");
    }
    let bin = bridge_binary()?;
    let depth = depth(job);
    let (unlinked, source, children) = start_bridges(&bin, job, name, work, depth)?;
    let mirror_name = format!("m-{name}");
    let seen = Seen::default();
    let done = AtomicBool::new(false);
    let timeout = Duration::from_secs_f64(job.timeout_s);
    let result = std::thread::scope(|scope| {
        // The reader has a thread of its own: pinned in place.
        let reader = scope.spawn(|| {
            pin(reader_cpu(job))?;
            read_mirror(
                &mirror_name,
                reader_wait(job),
                &seen,
                step(depth),
                &done,
                timeout,
            )
        });
        let written = on_cpu(zenoh_cpu(job), || {
            write_source(&source, job, depth, &seen, timeout, floor_turn)
        });
        done.store(true, Ordering::Relaxed);
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(crate::error::Error::msg("the reader thread panicked")));
        written.and_then(|written| read.map(|tally| (written, tally)))
    });
    drop(children);
    drop(source);
    drop(unlinked);
    let (written, tally) = result?;
    let (h, hops) = latencies(written, &tally.stamps);
    Ok(Run {
        hist: h,
        hops,
        rates: tally.rates()?,
        lost: tally.lost,
        overrun: tally.overrun,
    })
}

/// The latency and its split ([`hops`]) of each frame written in the latency phase
/// (`written`) that the reader got (`got`, joined by id): `written` holds no frame of the
/// other phases, so theirs are left out.
fn latencies(written: Vec<Called>, got: &[Got]) -> (Histogram<u64>, Hops) {
    let written: std::collections::HashMap<u64, Called> =
        written.into_iter().map(|w| (w.id, w)).collect();
    let (mut h, mut hops) = (hist::new(), Hops::new());
    for g in got {
        if let Some(w) = written.get(&g.id) {
            h.saturating_record(g.at_ns.saturating_sub(w.mono_ns));
            hops.record(w.unix_s, g.written_s, g.at_s);
        }
    }
    (h, hops)
}

/// Publishes frame `id`, whose first byte is `phase`, filled in place (the rest keeps the
/// previous frame's bytes, as floor-put stamps its one reused buffer); returns when the
/// write was called, as floor-put stamps its frames before the put: the write wakes the
/// publishing bridge, which on the writer's core may run before the write returns (a
/// latency from the return then missed the publisher's read and put, about 20 µs at 64 KiB,
/// in about a fifth of the frames).
fn put(g: &WriteGuard<'_>, id: u64, phase: u8) -> Result<Called> {
    // The real-time clock first: the monotonic stamp, the latency's, is the write's call.
    let unix_s = harness_sys::clock::unix_now_s();
    let called = Called {
        id,
        mono_ns: harness_sys::clock::monotonic_ns(),
        unix_s,
    };
    g.write_bytes_view_frame(id, |frame: &mut [u8]| {
        frame[0] = phase;
        Ok::<(), std::convert::Infallible>(())
    })
    .with_context(|| format!("writing {}", g.stream().name()))?;
    Ok(called)
}

/// When the write of frame `id` at A was called: on the monotonic clock (the latency) and
/// in UNIX seconds (the hops, see [`hops`]).
#[derive(Debug, Clone, Copy)]
struct Called {
    id: u64,
    mono_ns: u64,
    unix_s: f64,
}

/// Frame `id` as the reader at B got it: when, on the monotonic clock (the latency) and in
/// UNIX seconds, and its write time in the mirror (UNIX seconds; the hops, see [`hops`]).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Got {
    id: u64,
    at_ns: u64,
    at_s: f64,
    written_s: f64,
}

/// Side A: warm-up, latency (in slots, the floor's slots between them), throughput windows
/// (one per repeat, the floor's before each), end. Returns when each latency frame's write
/// was called.
fn write_source(
    s: &Stream,
    job: &Job,
    depth: usize,
    seen: &Seen,
    timeout: Duration,
    floor_turn: &mut FloorTurns<'_>,
) -> Result<Vec<Called>> {
    // The only writer of the source: it holds the write lock for the run (as the pingpong
    // reader does), so a frame is a seqlock publication without a flock pair.
    let g = s
        .lock(Some(timeout))
        .with_context(|| format!("locking {}", s.name()))?;
    let gap = Duration::from_secs_f64(job.gap_us * 1e-6);
    let mut id = 0u64;
    let mut written = Vec::new();
    let mut paced = |until: Instant, phase: u8, id: &mut u64| -> Result<()> {
        // The first frame a gap after the start, as floor-put paces: the other side's last
        // frame has had that long to arrive.
        let mut next = Instant::now() + gap;
        while Instant::now() < until {
            // Sleep to the next slot (as floor-put does): a spinning pacer would take a
            // core from the bridges.
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            next += gap;
            *id += 1;
            let called = put(&g, *id, phase)?;
            if phase == LAT {
                written.push(called);
            }
        }
        Ok(())
    };
    // Warm-up: until the mirror has shown frames (the sessions are up) and the time is over.
    let start = Instant::now();
    let warm = Duration::from_secs_f64(job.timing.warmup.max(0.5));
    loop {
        paced(Instant::now() + warm, WARM, &mut id)?;
        if *seen.accounted.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
            break;
        }
        if start.elapsed() > timeout {
            bail!("no frame reached the mirror in {timeout:?} (see the bridge logs)");
        }
    }
    let (slots, slot_s) = lat_slots(job);
    for _ in 0..slots {
        // Our frames have all arrived before the floor's turn.
        wait_accounted(seen, id, timeout)?;
        floor_turn(Turn::Lat(slot_s));
        paced(
            Instant::now() + Duration::from_secs_f64(slot_s),
            LAT,
            &mut id,
        )?;
    }
    // Throughput: at most half the history in flight (written at A, not yet read at B), so
    // the lossless path never laps a cursor, topped up by a quarter whenever a quarter has
    // been read: the pipeline never runs dry between steps. Each repeat ends drained.
    // The reader times each window (see `Seen::flat_out`).
    let (window, step) = (window(depth), step(depth));
    for repeat in 1..=job.timing.repeats.max(1) {
        // Drained (all ours arrived, the reader waiting for publications) for the floor's
        // window, then ours.
        wait_accounted(seen, id, timeout)?;
        seen.flat_out.store(0, Ordering::Relaxed);
        floor_turn(Turn::Tput);
        seen.flat_out.store(u64::from(repeat), Ordering::Relaxed);
        let t0 = Instant::now();
        while t0.elapsed().as_secs_f64() < job.timing.min_seconds {
            wait_accounted(seen, id.saturating_sub(window - step), timeout)?;
            for _ in 0..step {
                id += 1;
                put(&g, id, TPUT)?;
            }
        }
        wait_accounted(seen, id, timeout)?;
    }
    seen.flat_out.store(0, Ordering::Relaxed);
    seen.end_from.store(id + 1, Ordering::Relaxed);
    for _ in 0..3 {
        id += 1;
        put(&g, id, END)?;
    }
    Ok(written)
}

/// Waits until the reader has seen frame `n`.
fn wait_accounted(seen: &Seen, n: u64, timeout: Duration) -> Result<()> {
    let guard = seen.accounted.lock().unwrap_or_else(|e| e.into_inner());
    // Set under the lock the reader takes, so its next account sees it.
    seen.awaited.store(n, Ordering::Relaxed);
    let (guard, t) = seen
        .changed
        .wait_timeout_while(guard, timeout, |a| *a < n)
        .unwrap_or_else(|e| e.into_inner());
    if t.timed_out() {
        bail!(
            "the mirror showed {} of {n} frames within {timeout:?}",
            *guard
        );
    }
    Ok(())
}

/// What the reader at B got, counted as it gets each frame (no allocation but the stamps'
/// and one entry per throughput window).
#[derive(Debug, Default)]
struct Tally {
    /// Each frame got outside the throughput windows (warm-up, latency, end).
    stamps: Vec<Got>,
    /// Our throughput windows, in order.
    windows: Vec<WindowSeen>,
    /// The newest id got.
    newest: Option<u64>,
    /// Ids after the first got that the reader never got: lost on the way, or overwritten
    /// in the mirror's history before it read them.
    lost: u64,
    /// Of those, the ones the mirror's history overwrote ([`StreamError::Overrun`]).
    overrun: u64,
}

/// One of our throughput windows as the reader got it: its number ([`Seen::flat_out`]), its
/// frames, and when the reader got the first and the last (monotonic ns).
#[derive(Debug, Clone, Copy, PartialEq)]
struct WindowSeen {
    number: u64,
    frames: u64,
    first_ns: u64,
    last_ns: u64,
}

impl Tally {
    /// Frame `g` got, in throughput window `window` (0: none).
    fn got(&mut self, g: Got, window: u64) {
        let (id, at_ns) = (g.id, g.at_ns);
        if let Some(newest) = self.newest {
            self.lost += id.saturating_sub(newest + 1);
        }
        self.newest = Some(self.newest.map_or(id, |n| n.max(id)));
        if window == 0 {
            self.stamps.push(g);
            return;
        }
        match self.windows.last_mut() {
            Some(w) if w.number == window => {
                w.frames += 1;
                w.last_ns = at_ns;
            }
            _ => self.windows.push(WindowSeen {
                number: window,
                frames: 1,
                first_ns: at_ns,
                last_ns: at_ns,
            }),
        }
    }

    /// `lost` frames overwritten in the mirror's history before the reader got them (those
    /// before its first frame were warm-up frames of a mirror it opened late: not counted).
    fn overrun(&mut self, lost: u64) {
        if self.newest.is_some() {
            self.overrun += lost;
        }
    }

    /// Each window's rate (see [`WindowSeen::rate`]).
    fn rates(&self) -> Result<Vec<f64>> {
        self.windows.iter().map(WindowSeen::rate).collect()
    }
}

impl WindowSeen {
    /// Frames per second: the frames after the first over the time from the first to the
    /// last, as floor-get counts its windows.
    fn rate(&self) -> Result<f64> {
        let ns = self.last_ns.saturating_sub(self.first_ns);
        if self.frames < 2 || ns == 0 {
            bail!(
                "throughput window {}: the reader got {} frame(s), too few to time (raise min_seconds)",
                self.number,
                self.frames
            );
        }
        Ok((self.frames - 1) as f64 * 1e9 / ns as f64)
    }
}

/// Side B: gets every frame of the mirror in order through a cursor over its history and
/// notes which frame it got and when (see [`Tally`]); stops at the first end frame.
fn read_mirror(
    name: &str,
    wait: Wait,
    seen: &Seen,
    step: u64,
    done: &AtomicBool,
    timeout: Duration,
) -> Result<Tally> {
    let start = Instant::now();
    // The subscriber creates the mirror when the first frame arrives.
    let mirror = loop {
        match Stream::open_readonly(name) {
            Ok(s) => break s,
            Err(StreamError::NotFound { .. }) if start.elapsed() < timeout => {
                if done.load(Ordering::Relaxed) {
                    bail!("the writer stopped before the mirror {name} appeared");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).with_context(|| format!("opening the mirror {name}")),
        }
    };
    mirror.set_wait_strategy(wait.strategy());
    let mut cursor = mirror.cursor().with_context(|| {
        format!("reading the mirror {name} frame by frame (`subscribe --history` creates it with a history; unlink a leftover of that name)")
    })?;
    // From the mirror's first frame: none of ours is written before the reader got one.
    cursor.rewind_to_start();
    let mut tally = Tally::default();
    let mut got = 0u64;
    // Whether the last look found no frame left to get.
    let mut drained = true;
    let mut idle = Instant::now();
    // The throughput window under way, when the reader first looked in it and the frames
    // got by then.
    let mut flat_out_from: Option<(u64, Instant, u64)> = None;
    loop {
        // The frame is there when its append wakes this reader. It reads the frame's id,
        // no payload (floor-get reads only its stamp): what a consumer then does with the
        // frame is its own work, on either side.
        let window = seen.flat_out.load(Ordering::Relaxed);
        let wait = if window > 0 {
            let (_, t0, got0) = match flat_out_from {
                Some(from) if from.0 == window => from,
                _ => *flat_out_from.insert((window, Instant::now(), got)),
            };
            if drained {
                std::thread::sleep(look_interval(step, got - got0, t0.elapsed()));
            }
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        match cursor.next_in_place(Some(wait), |_| ()) {
            Ok((info, ())) => {
                let frame_id = info.frame_id;
                let got_frame = Got {
                    id: frame_id,
                    at_ns: harness_sys::clock::monotonic_ns(),
                    at_s: harness_sys::clock::unix_now_s(),
                    written_s: info.write_time,
                };
                got += 1;
                drained = false;
                idle = Instant::now();
                let end = seen.end_from.load(Ordering::Relaxed);
                let ended = end > 0 && frame_id >= end;
                // Loaded after the frame was got: see `Seen::flat_out`.
                let window = if ended {
                    0
                } else {
                    seen.flat_out.load(Ordering::Relaxed)
                };
                tally.got(got_frame, window);
                account(seen, frame_id);
                if ended {
                    return Ok(tally);
                }
            }
            Err(StreamError::Overrun { lost, .. }) => {
                tally.overrun(lost);
                drained = false;
            }
            Err(StreamError::Timeout { .. }) => {
                drained = true;
                if done.load(Ordering::Relaxed)
                    && idle.elapsed() > timeout.min(Duration::from_secs(5))
                {
                    bail!("the end frames never reached the mirror {name}");
                }
            }
            Err(e) => return Err(e).with_context(|| format!("reading the mirror {name}")),
        }
    }
}

fn account(seen: &Seen, frame_id: u64) {
    *seen.accounted.lock().unwrap_or_else(|e| e.into_inner()) = frame_id;
    if frame_id >= seen.awaited.load(Ordering::Relaxed) {
        seen.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bridge case of 64 B frames, timing out after `timeout_s`.
    fn bridge_job(timeout_s: u32) -> Job {
        let text = format!(
            "name = \"t\"\n[defaults]\ntimeout_s = {timeout_s}\n[[case]]\nkind = \"bridge\"\ndtype = \"uint8\"\nsizes = [[64]]\n"
        );
        crate::scenario::Scenario::parse(&text)
            .unwrap()
            .jobs(false, None)
            .remove(0)
    }

    /// A port handed out once is never handed out again, even when the OS gives it again:
    /// the probe is asked on until it gives a new one.
    #[test]
    fn a_port_already_handed_out_is_never_handed_out_again() {
        let mut given = BTreeSet::new();
        let mut probes = [5u16, 5, 5, 6, 5, 6, 7].into_iter();
        let mut next = || port_not_given(&mut given, || Ok(probes.next().unwrap()));
        assert_eq!(
            [next().unwrap(), next().unwrap(), next().unwrap()],
            [5, 6, 7]
        );
        // A probe that only gives ports already handed out ends in an error, not a hang.
        let e = port_not_given(&mut given, || Ok(6)).unwrap_err();
        assert!(e.to_string().contains("no free loopback port"), "{e}");
        // A probe's own error is passed on.
        let e = port_not_given(&mut given, || Err(crate::error::Error::msg("bind failed")))
            .unwrap_err();
        assert_eq!(e.to_string(), "bind failed");
    }

    /// Many loopback ports in a row, all distinct: the floor's and each of our runs' ports
    /// never collide, though `bind(0)` may give a port again once it is released.
    #[test]
    fn free_port_never_hands_out_one_port_twice() {
        // 500 ports of the kernel's ~28 000 for `bind(0)`: some may repeat without the memory.
        let ports: Vec<u16> = (0..500).map(|_| free_port().unwrap()).collect();
        assert_eq!(ports.iter().collect::<BTreeSet<_>>().len(), ports.len());
    }

    /// A process tracked as a bridge is killed by `kill_tracked` (the kill a harness
    /// stopped by a signal does, in `stop_tracked`), and one reaped by `Children` is
    /// forgotten (its pid may be reused). The kill reaches only this test's process: a
    /// process another test tracks at the same time (a peer's stand-in, here a `cat`) lives
    /// on, and exits by itself once its input ends.
    #[test]
    fn started_bridges_are_killed_when_the_harness_is_stopped() {
        use std::os::unix::process::ExitStatusExt;
        let mut bystander = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        crate::spawn::track(bystander.id(), false);
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        crate::spawn::track(child.id(), false);
        crate::spawn::kill_tracked(&[child.id()]);
        // Untracked before it is reaped, as `Children` does: its pid may be reused after.
        crate::spawn::untrack(child.id());
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        // Had the kill reached it, its exit would be that SIGKILL's, whatever came after.
        drop(bystander.stdin.take());
        crate::spawn::untrack(bystander.id());
        let status = bystander.wait().unwrap();
        assert!(
            status.success(),
            "another test's tracked process was killed: {status}"
        );
        let other = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = other.id();
        crate::spawn::track(pid, false);
        drop(Children(vec![other]));
        assert!(!crate::spawn::is_tracked(pid));
    }

    /// A bridge of a pinned job runs on Zenoh's core from its start, and dies (SIGKILL) with
    /// the thread that started it, as the bridges die with a harness killed hard (SIGKILL,
    /// an abort), which cannot kill them itself. Stand-in: `sleep 30`, started through the
    /// bridges' `spawn` from a thread that ends at once.
    #[test]
    fn a_bridge_runs_on_its_core_and_dies_with_the_thread_that_started_it() {
        use std::os::unix::process::ExitStatusExt;
        let cpu = *crate::spawn::allowed_cores().unwrap().last().unwrap();
        let mut job = bridge_job(30);
        job.pinned = true;
        job.writer_cpu = cpu;
        let log = std::env::temp_dir().join(format!("bridge-owner-{}.log", std::process::id()));
        let (child, proc_status) = std::thread::spawn(move || {
            let child = spawn(Path::new("sleep"), &job, &["30".into()], &log, false).unwrap();
            let _ = std::fs::remove_file(&log);
            // Read while its starter lives, hence it too.
            let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()));
            (child, status.unwrap())
        })
        .join()
        .unwrap();
        let allowed = proc_status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(str::trim);
        let status = crate::spawn::wait_timeout(child, Duration::from_secs(10), false).unwrap();
        assert_eq!(allowed, Some(cpu.to_string().as_str()), "{status:?}");
        assert_eq!(
            status.and_then(|s| s.signal()),
            Some(libc::SIGKILL),
            "the bridge outlived the thread that started it (killed 10 s later)"
        );
    }

    /// The probe leaves the asking thread's policy alone, and answers the same as the
    /// bridges would get: allowed here, or refused naming the remedy.
    #[test]
    fn the_sched_fifo_probe_answers_without_changing_the_caller() {
        match may_run_real_time(1) {
            Ok(()) => {}
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(
                    msg.contains("ulimit -r") && msg.contains("remove rt_priority"),
                    "{msg}"
                );
            }
        }
        assert_eq!(harness_sys::scheduler().unwrap(), libc::SCHED_OTHER);
    }

    /// When the second bridge cannot start, the first is killed and reaped and the source
    /// stream unlinked: a stand-in bridge binary sleeps, and `subscribe`'s log cannot be made.
    #[test]
    fn a_bridge_that_cannot_start_leaves_no_stream_nor_first_bridge() {
        let pid = std::process::id();
        let work = std::env::temp_dir().join(format!("bridge-start-{pid}"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(work.join("subscribe.log")).unwrap();
        // The stand-in's command line names the stream, then (once it execs) a duration no
        // other process sleeps: either finds it in /proc.
        let nap = format!("30.{pid}");
        let bin = work.join("bridge");
        crate::script::write_script(&bin, &format!("#!/bin/sh\nexec sleep {nap}\n"));
        let job = bridge_job(120);
        let name = format!("bridge-start-{pid}");
        let err = start_bridges(&bin, &job, &name, &work, 4).err().unwrap();
        assert!(err.to_string().contains("bridge log"), "{err}");
        assert!(
            shmstream::stat(&name).is_err(),
            "the source stream was left"
        );
        let sleeping = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .any(|c| {
                c == format!("sleep\0{nap}\0").as_bytes()
                    || c.split(|b| *b == 0).any(|a| a == name.as_bytes())
            });
        assert!(!sleeping, "the first bridge was left running");
        std::fs::remove_dir_all(&work).unwrap();
    }

    /// floor-put and floor-get, reaped when the floor finishes, are no longer tracked: a
    /// harness stopped later would kill their pids, perhaps another process's by then.
    /// Stand-ins: floor-put answers `done` to each phase and exits after `end`; floor-get
    /// writes its results and exits.
    #[test]
    fn the_floors_processes_are_forgotten_once_reaped() {
        let work = std::env::temp_dir().join(format!("bridge-floor-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let bin = work.join("bridge");
        crate::script::write_script(
            &bin,
            "#!/bin/sh\ncase \"$1\" in\n\
             floor-get) printf 'tput 0 99 1\\ntput 1 49 1\\n5000\\n' > \"$6\" ;;\n\
             floor-put) while read -r phase; do echo done; [ \"$phase\" = end ] && exit 0; done; exit 1 ;;\n\
             esac\n",
        );
        let job = bridge_job(30);
        let procs = FloorProcs::start_with(&bin, &job, &work).unwrap();
        let pids: Vec<u32> = procs.children.0.iter().map(Child::id).collect();
        assert!(pids.iter().all(|p| crate::spawn::is_tracked(*p)));
        let mut floor = Floor {
            procs: Ok(procs),
            runs: 0,
        };
        let mut turns = floor.turns(&job);
        turns(Turn::Tput);
        turns(Turn::Tput);
        drop(turns);
        let (hist, flat, windowed) = floor.finish(&job).unwrap();
        assert_eq!((hist.len(), flat, windowed), (1, vec![99.0], vec![49.0]));
        for pid in pids {
            assert!(
                !crate::spawn::is_tracked(pid),
                "reaped pid {pid} is still tracked"
            );
        }
        std::fs::remove_dir_all(&work).unwrap();
    }

    /// Frame `id` got at `at_ns` (monotonic), its other times 0.
    fn got_at(id: u64, at_ns: u64) -> Got {
        Got {
            id,
            at_ns,
            at_s: 0.0,
            written_s: 0.0,
        }
    }

    /// A history stream standing in for the mirror, with `ids` written (all before the
    /// reader starts, as a bridge path that stalled for a while delivers them at once);
    /// the reader, stopped at `end`, and what it got.
    fn read_burst(tag: &str, ids: &[u64], end: u64, history: usize) -> Tally {
        let name = format!("bridge-{tag}-{}", std::process::id());
        let _unlinked = Unlinked(vec![name.clone()]);
        let mirror = StreamOptions::new(&name)
            .shape(&[16])
            .dtype(Dtype::U8)
            .notify(true)
            .history(history)
            .create()
            .unwrap();
        let timeout = Duration::from_secs(10);
        let g = mirror.lock(Some(timeout)).unwrap();
        for &id in ids {
            put(&g, id, LAT).unwrap();
        }
        drop(g);
        let seen = Seen::default();
        seen.end_from.store(end, Ordering::Relaxed);
        let done = AtomicBool::new(true);
        read_mirror(&name, Wait::Park, &seen, 1, &done, timeout).unwrap()
    }

    /// Frames that reach the mirror in a burst each get their latency sample, as each of
    /// floor-get's samples does: not only the newest of the burst.
    #[test]
    fn frames_that_reach_the_mirror_in_a_burst_each_get_a_sample() {
        let ids: Vec<u64> = (1..=12).collect();
        let tally = read_burst("burst", &ids, 10, 64);
        let got: Vec<u64> = tally.stamps.iter().map(|s| s.id).collect();
        assert_eq!(got, (1..=10).collect::<Vec<_>>());
        assert!(tally.stamps.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
        // Each frame's write time in the mirror, before the reader got it.
        assert!(tally.stamps.iter().all(|s| s.written_s <= s.at_s));
        assert_eq!((tally.lost, tally.overrun), (0, 0));
    }

    /// Only the latency phase's frames, those the writer noted, count: a warm-up or end
    /// frame the reader got has no sample, in the latency or its split.
    #[test]
    fn only_the_latency_phases_frames_are_timed() {
        let called = |id: u64| Called {
            id,
            mono_ns: id * 1_000_000,
            unix_s: 1.78e9 + id as f64,
        };
        let frame = |id: u64| Got {
            id,
            at_ns: id * 1_000_000 + 100_000,
            at_s: 1.78e9 + id as f64 + 100e-6,
            written_s: 1.78e9 + id as f64 + 70e-6,
        };
        let got: Vec<Got> = (1..=4).map(frame).collect();
        let (h, hops) = latencies(vec![called(2), called(3)], &got);
        assert_eq!(
            (h.len(), hops.to_mirror.len(), hops.to_reader.len()),
            (2, 2, 2)
        );
        assert!(h.equivalent(h.value_at_quantile(0.5), 100_000));
        let (m, r) = (
            hops.to_mirror.value_at_quantile(0.5),
            hops.to_reader.value_at_quantile(0.5),
        );
        // Within the clock's f64 steps (about 0.24 µs).
        assert!((69_500..=70_500).contains(&m), "{m}");
        assert!((29_500..=30_500).contains(&r), "{r}");
    }

    /// An id that never reached the mirror (a latency frame without a sample) is counted
    /// lost; the warm-up frames a ring lapped before the reader's first are not.
    #[test]
    fn ids_the_reader_never_got_are_counted_lost() {
        let tally = read_burst("gap", &[1, 2, 4, 5, 7], 7, 64);
        let got: Vec<u64> = tally.stamps.iter().map(|s| s.id).collect();
        assert_eq!((got, tally.lost), (vec![1, 2, 4, 5, 7], 2));
        let ids: Vec<u64> = (1..=10).collect();
        let tally = read_burst("lapped", &ids, 10, 4);
        let got: Vec<u64> = tally.stamps.iter().map(|s| s.id).collect();
        assert_eq!((got, tally.lost, tally.overrun), (vec![7, 8, 9, 10], 0, 0));
        // Overwritten after the first frame: lost, and said to be the history's.
        let mut tally = Tally::default();
        tally.got(got_at(1, 10), 0);
        tally.overrun(3);
        tally.got(got_at(5, 20), 0);
        assert_eq!((tally.lost, tally.overrun), (3, 3));
    }

    /// A throughput window's rate runs from the reader getting its first frame to getting
    /// its last, as floor-get's does: 5 frames over 4 ms are 1000 frames/s, whatever came
    /// before the first (the pipeline's fill, its first latency).
    #[test]
    fn a_windows_rate_runs_from_its_first_frame_got_to_its_last() {
        let mut tally = Tally::default();
        tally.got(got_at(1, 0), 0);
        for (i, id) in (2..=6).enumerate() {
            tally.got(got_at(id, 1_000_000_000 + i as u64 * 1_000_000), 1);
        }
        for (i, id) in (7..=9).enumerate() {
            tally.got(got_at(id, 2_000_000_000 + i as u64 * 500_000), 2);
        }
        tally.got(got_at(10, 3_000_000_000), 0);
        assert_eq!(tally.rates().unwrap(), [1000.0, 2000.0]);
        assert_eq!(tally.stamps.len(), 2);
        let mut one = Tally::default();
        one.got(got_at(1, 5), 1);
        let e = one.rates().unwrap_err().to_string();
        assert!(e.contains("raise min_seconds"), "{e}");
    }

    #[test]
    fn the_reader_looks_once_per_quarter_step_within_its_bounds() {
        // Nothing seen yet: the shortest pause.
        assert_eq!(
            look_interval(16, 0, Duration::from_secs(1)),
            *TPUT_LOOK.start()
        );
        // 4 MB frames at 250 a second, steps of 16: a quarter step is 4 frames, 16 ms,
        // capped at 5 ms.
        assert_eq!(
            look_interval(16, 250, Duration::from_secs(1)),
            *TPUT_LOOK.end()
        );
        // 64 KiB frames at 10 000 a second, steps of 16: 4 frames, 400 µs.
        assert_eq!(
            look_interval(16, 10_000, Duration::from_secs(1)),
            Duration::from_micros(400)
        );
        // Faster than a look every 200 µs would need: the bound holds.
        assert_eq!(
            look_interval(4, 100_000, Duration::from_secs(1)),
            *TPUT_LOOK.start()
        );
    }
}

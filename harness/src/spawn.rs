//! Child processes: the parent re-executes its own binary with the hidden `__child`
//! subcommand, one process per role, each pinned to its core. A child writes its report
//! (`<prefix>.json`) and, when it measured, its histogram (`<prefix>.hdr`, V2 format).
//! The parent waits without polling (one thread blocked in `wait()` per child), kills the
//! group on the first failure or at the timeout, and quotes each failed child's stderr.
//! Children die with the parent (`PR_SET_PDEATHSIG`), however it exits.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result, bail};
use crate::hist;
use crate::measure::Measured;
use crate::scenario::Job;

/// What a child process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Roundtrip: write then read through the library, in one process.
    Roundtrip,
    /// Pingpong writer (measures round trips).
    PingWriter,
    /// Pingpong reader (reads, acknowledges).
    PingReader,
    /// MVM driver: writes x, waits for y (measures).
    MvmDriver,
    /// MVM compute: waits for x, publishes y = A·x.
    MvmCompute,
    /// Floor of pingpong, writer side (bare shm flag + payload memcpy + flock pair).
    FloorPingWriter,
    /// Floor of pingpong, reader side.
    FloorPingReader,
    /// GPU roundtrip: write then read a GPU stream in one process.
    GpuRoundtrip,
    /// GPU pingpong writer: publishes a frame, waits for its echo (measures).
    GpuPingWriter,
    /// GPU pingpong reader: reads each frame and echoes it back on a second GPU stream.
    GpuPingReader,
    /// GPU MVM driver: writes x (host or device), waits for y (measures).
    GpuMvmDriver,
    /// GPU MVM compute: cuBLAS sgemv on the matrix it read once, publishes y.
    GpuMvmCompute,
    /// Floor of the GPU roundtrip and pingpong: the same copies with raw CUDA memcpy on
    /// plain device memory, in one process.
    FloorGpuCopy,
    /// Floor of GPU MVM: bare cuBLAS sgemv in one process.
    FloorGpuMvm,
    /// AO loop camera: paced synthetic WFS frames.
    AoCamera,
    /// AO loop slopes stage (slopes + reconstructor when merged).
    AoSlopes,
    /// AO loop reconstructor stage.
    AoRecon,
    /// Floor of the AO loop's compute: the stages alone on plain memory.
    AoFloorCompute,
    /// One hot path through the library and its bare twin, timed in alternation
    /// (`kind = "op"`).
    Op,
}

/// Names of the shared objects a job uses (unique per harness run and job).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Names {
    /// Data stream (pingpong, roundtrip) or vector x (MVM).
    pub data: String,
    /// Acknowledgement stream (pingpong) or result y (MVM).
    pub ack: String,
    /// Control stream: the writer publishes once to stop the reader.
    pub ctl: String,
    /// MVM matrix stream.
    pub matrix: String,
    /// Floor: bare shm region.
    pub region: String,
    /// Floor: lock file for the flock pair.
    pub lock: PathBuf,
    /// AO loop: the signal vector stream.
    #[serde(default)]
    pub signals: String,
    /// AO loop: the DM command stream.
    #[serde(default)]
    pub commands: String,
}

impl Names {
    /// The names of one job side: streams `BASE-data`, `BASE-ack`, …, the lock file
    /// `DIR/BASE.lock`.
    pub fn under(base: &str, dir: &std::path::Path) -> Self {
        Self {
            data: format!("{base}-data"),
            ack: format!("{base}-ack"),
            ctl: format!("{base}-ctl"),
            matrix: format!("{base}-matrix"),
            region: format!("{base}-region"),
            lock: dir.join(format!("{base}.lock")),
            signals: format!("{base}-signals"),
            commands: format!("{base}-commands"),
        }
    }

    /// The stream names among them (the floor's region and lock file are not streams).
    pub fn streams(&self) -> [&str; 6] {
        [
            &self.data,
            &self.ack,
            &self.ctl,
            &self.matrix,
            &self.signals,
            &self.commands,
        ]
    }
}

/// Everything a child needs, written as JSON next to its result files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    /// The role.
    pub role: Role,
    /// The job.
    pub job: Job,
    /// Shared object names.
    pub names: Names,
    /// Core to pin to.
    pub cpu: usize,
    /// Result files are `<prefix>.json` and `<prefix>.hdr`.
    pub result_prefix: PathBuf,
    /// Longest a single wait inside the child may take before it gives up.
    pub wait_timeout_s: f64,
}

#[cfg(test)]
impl ChildSpec {
    /// A spec for unit tests of `job` on core 0: names and result prefix under the
    /// temporary directory, tagged `tag` and this process.
    pub fn scratch(role: Role, job: Job, tag: &str, wait_timeout_s: f64) -> Self {
        let base = format!("{tag}-{}", std::process::id());
        ChildSpec {
            role,
            job,
            names: Names::under(&base, &std::env::temp_dir()),
            cpu: 0,
            result_prefix: std::env::temp_dir().join(base),
            wait_timeout_s,
        }
    }
}

/// What a child reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildReport {
    /// The role.
    pub role: Role,
    /// Whether `sched_setaffinity` succeeded.
    pub pinned: bool,
    /// `sched_getcpu()` at the end of the run.
    pub cpu_seen: Option<usize>,
    /// The measurement (measuring roles only).
    pub measured: Option<Measured>,
}

/// A finished child: its report and histogram.
#[derive(Debug)]
pub struct ChildOutcome {
    /// The report.
    pub report: ChildReport,
    /// The histogram, when it measured.
    pub hist: Option<Histogram<u64>>,
}

impl ChildOutcome {
    /// The measurement and histogram, or an error naming the role.
    pub fn into_measurement(self) -> Result<(Measured, Histogram<u64>)> {
        match (self.report.measured, self.hist) {
            (Some(m), Some(h)) => Ok((m, h)),
            _ => Err(Error::msg(format!(
                "{:?} child reported no measurement",
                self.report.role
            ))),
        }
    }
}

/// Pins the calling thread to `cpu`; false when the core does not exist or the call fails.
///
/// Not through `core_affinity::get_core_ids()`: that lists only the cores of the current
/// affinity mask, so a thread spawned by an already pinned thread could never move to
/// another core (the MVM pool's second worker would silently share the first's core).
pub fn pin_to(cpu: usize) -> bool {
    // `core_affinity` indexes a fixed `cpu_set_t` with the id and panics past its end.
    cpu < MAX_CORES && core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}

/// Core ids a `cpu_set_t` can name (`CPU_SETSIZE`): [`pin_to`] fails on any id from here
/// on, and a scenario naming one is refused.
pub const MAX_CORES: usize = libc::CPU_SETSIZE as usize;

/// The cores the calling thread may run on (its `sched_getaffinity` mask, ascending), which
/// a scenario's cores must be among ([`pin_to`] fails on any other); `None` when it cannot
/// be read. Called before anything is pinned, it is the process's.
pub fn allowed_cores() -> Option<Vec<usize>> {
    let mut cores: Vec<usize> = core_affinity::get_core_ids()?
        .into_iter()
        .map(|c| c.id)
        .collect();
    cores.sort_unstable();
    Some(cores)
}

fn tail_of(path: &Path, max: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let t = text.trim_end();
    if t.len() <= max {
        return t.to_string();
    }
    let mut cut = t.len() - max;
    while !t.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &t[cut..])
}

/// One process of a group: how to start it and what to call it in messages.
#[derive(Debug)]
pub struct GroupMember {
    /// The command, not yet started.
    pub command: Command,
    /// Name in messages, e.g. "AoSlopes child (cpu 1)".
    pub label: String,
    /// Where its stderr goes (quoted when it fails).
    pub stderr: PathBuf,
}

/// Runs one group of children (started in the given order: readers first) and waits for
/// all of them, at most `timeout`. Returns their outcomes in the same order.
pub fn run_group(specs: &[ChildSpec], timeout: Duration) -> Result<Vec<ChildOutcome>> {
    let exe = std::env::current_exe().context("locating the harness binary")?;
    let mut members = Vec::new();
    for spec in specs {
        let spec_path = spec.result_prefix.with_extension("spec.json");
        std::fs::write(&spec_path, serde_json::to_vec_pretty(spec)?)
            .with_context(|| format!("writing {}", spec_path.display()))?;
        let mut command = Command::new(&exe);
        command.arg("__child").arg(&spec_path);
        members.push(GroupMember {
            command,
            label: format!("{:?} child (cpu {})", spec.role, spec.cpu),
            stderr: spec.result_prefix.with_extension("stderr"),
        });
    }
    let remedy = specs
        .first()
        .map_or_else(String::new, |s| s.job.timeout_remedy());
    run_members(members, timeout, &remedy)?;
    specs.iter().map(read_outcome).collect()
}

/// Starts `members` in order and waits for all of them, at most `timeout`; on the first
/// failure or at the timeout the others are killed and the error quotes the stderr of
/// the one that failed (or of every one still running); a timeout's says `remedy` (the
/// job's [`Job::timeout_remedy`]).
pub fn run_members(members: Vec<GroupMember>, timeout: Duration, remedy: &str) -> Result<()> {
    let (tx, rx) = mpsc::channel::<(usize, std::io::Result<std::process::ExitStatus>)>();
    let mut pids = Vec::new();
    let mut labels = Vec::new();
    let mut stderr_paths = Vec::new();
    for (i, mut m) in members.into_iter().enumerate() {
        let err_file = match File::create(&m.stderr) {
            Ok(f) => f,
            Err(e) => {
                // The members already started would wait for this one: stop them.
                kill_tracked(&pids);
                return Err(Error::msg(format!(
                    "creating {} for {}: {e}",
                    m.stderr.display(),
                    m.label
                )));
            }
        };
        // Killed when this process exits, however it exits (the caller waits for them),
        // and tracked until it has exited, so that a stopping signal kills it and waits for
        // it (the locks it holds go with it) before the clean-up ([`stop_tracked`]).
        harness_sys::die_with_parent(&mut m.command);
        m.command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err_file));
        let mut child = match spawn_tracked(&mut m.command, false) {
            Ok(c) => c,
            Err(e) => {
                kill_tracked(&pids);
                return Err(Error::msg(format!("spawning {}: {e}", m.label)));
            }
        };
        let pid = child.id();
        pids.push(pid);
        labels.push(m.label);
        stderr_paths.push(m.stderr);
        let tx = tx.clone();
        std::thread::spawn(move || {
            // Untracked once exited but before it is reaped: its pid cannot be reused
            // while the registry still names it.
            let _ = harness_sys::wait_exited(pid);
            untrack(pid);
            let r = child.wait();
            let _ = tx.send((i, r));
        });
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let mut done = vec![false; pids.len()];
    let mut failure: Option<String> = None;
    while done.iter().any(|d| !d) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, status)) => {
                done[i] = true;
                let ok = matches!(&status, Ok(s) if s.success());
                if !ok && failure.is_none() {
                    let how = match status {
                        Ok(s) => s.to_string(),
                        Err(e) => e.to_string(),
                    };
                    failure = Some(format!(
                        "{} failed ({how}); its stderr:\n{}",
                        labels[i],
                        tail_of(&stderr_paths[i], 4000)
                    ));
                    // The others would wait for a partner that is gone: stop them now.
                    kill_tracked(&pids);
                }
            }
            Err(_) => {
                kill_tracked(&pids);
                let hung = (0..pids.len()).filter(|j| !done[*j]);
                let mut msg = format!(
                    "timed out after {} s; killed ({remedy})",
                    timeout.as_secs_f64()
                );
                for j in hung {
                    msg.push_str(&format!(
                        "\n{} stderr:\n{}",
                        labels[j],
                        tail_of(&stderr_paths[j], 2000)
                    ));
                }
                // Reap what we killed so no zombie outlives the run.
                let _ = rx.recv_timeout(Duration::from_secs(2));
                return Err(Error::msg(msg));
            }
        }
    }
    match failure {
        Some(f) => Err(Error::msg(f)),
        None => Ok(()),
    }
}

fn read_outcome(spec: &ChildSpec) -> Result<ChildOutcome> {
    read_outcome_at(&spec.result_prefix, spec.role)
}

/// Reads the result files `<prefix>.json` and `<prefix>.hdr` of a child in `role`.
pub fn read_outcome_at(prefix: &Path, role: Role) -> Result<ChildOutcome> {
    let json_path = prefix.with_extension("json");
    let report: ChildReport = serde_json::from_slice(
        &std::fs::read(&json_path).with_context(|| format!("reading {role:?} child result"))?,
    )
    .with_context(|| format!("parsing {}", json_path.display()))?;
    let hdr_path = prefix.with_extension("hdr");
    let hist = if hdr_path.exists() {
        Some(hist::from_bytes(&std::fs::read(&hdr_path)?)?)
    } else {
        None
    };
    Ok(ChildOutcome { report, hist })
}

/// Puts this process under the scheduling `job` asks for: `SCHED_FIFO`
/// ([`Job::rt_priority`](crate::scenario::Job::rt_priority)) or a fair slice
/// ([`Job::slice_ns`](crate::scenario::Job::slice_ns)); nothing otherwise.
pub fn scheduling(job: &crate::scenario::Job) -> Result<()> {
    if let Some(p) = job.rt_priority {
        real_time(p)?;
    }
    if let Some(ns) = job.slice_ns {
        fair_slice(ns)?;
    }
    Ok(())
}

/// Asks the fair scheduler for a slice of `ns` for this process
/// ([`harness_sys::set_fair_slice`]), or says why it cannot.
pub fn fair_slice(ns: u64) -> Result<()> {
    match harness_sys::set_fair_slice(ns) {
        Ok(0) => bail!(
            "slice_us = {}: this kernel ignores a fair task's sched_runtime (custom EEVDF \
             slices need Linux 6.12 or later); remove slice_us from the case",
            ns / 1000
        ),
        Ok(_) => Ok(()),
        Err(e) => bail!(
            "slice_us = {}: sched_setattr refused it ({e}); remove slice_us from the case",
            ns / 1000
        ),
    }
}

/// Puts this process under `SCHED_FIFO` at `priority`, or says what it needs.
pub fn real_time(priority: u8) -> Result<()> {
    harness_sys::set_fifo(priority).with_context(|| {
        format!(
            "rt_priority = {priority}: SCHED_FIFO needs root, CAP_SYS_NICE or `ulimit -r` >= {priority}; \
             run with one of them or remove rt_priority from the case"
        )
    })
}

/// Entry point of the hidden `__child SPEC.json` subcommand.
pub fn child_main(spec_path: &Path) -> Result<()> {
    let spec: ChildSpec = serde_json::from_slice(
        &std::fs::read(spec_path)
            .with_context(|| format!("reading child spec {}", spec_path.display()))?,
    )
    .context("parsing child spec")?;
    let pinned = pin_to(spec.cpu);
    if !pinned {
        eprintln!("warning: could not pin {:?} to cpu {}", spec.role, spec.cpu);
    }
    scheduling(&spec.job).with_context(|| format!("{:?} ({})", spec.role, spec.job.label()))?;
    let result = crate::cases::run_role(&spec)
        .with_context(|| format!("{:?} ({})", spec.role, spec.job.label()))?;
    write_outcome(&spec.result_prefix, spec.role, pinned, result.as_ref())
}

/// Writes a child's result files `<prefix>.json` (its report) and `<prefix>.hdr` (its
/// histogram, when it measured).
pub fn write_outcome(
    prefix: &Path,
    role: Role,
    pinned: bool,
    result: Option<&(Measured, Histogram<u64>)>,
) -> Result<()> {
    let report = ChildReport {
        role,
        pinned,
        cpu_seen: harness_sys::current_cpu(),
        measured: result.map(|(m, _)| m.clone()),
    };
    if let Some((_, h)) = result {
        std::fs::write(prefix.with_extension("hdr"), hist::to_bytes(h)?)?;
    }
    std::fs::write(prefix.with_extension("json"), serde_json::to_vec(&report)?)?;
    Ok(())
}

/// Processes a harness stopped by a signal kills before its clean-up ([`stop_tracked`]):
/// the pinned children ([`run_members`]), the pyshmem peers (whose partners die with their
/// leader, `PR_SET_PDEATHSIG`) and the bridges (which die with the thread that runs their
/// case too).
#[derive(Debug)]
struct Registry {
    /// `(pid, group)`: with `group`, the pid leads a process group, killed whole.
    procs: Vec<(u32, bool)>,
    /// Set once a stopping signal has killed the tracked processes: no process starts after.
    stopping: bool,
}

impl Registry {
    /// Nothing tracked, not stopping.
    const fn new() -> Self {
        Self {
            procs: Vec::new(),
            stopping: false,
        }
    }

    /// Starts `cmd` and tracks the child, unless the harness is stopping.
    fn spawn(
        &mut self,
        cmd: &mut std::process::Command,
        group: bool,
    ) -> std::io::Result<std::process::Child> {
        if self.stopping {
            return Err(std::io::Error::other("the harness is stopping"));
        }
        let child = cmd.spawn()?;
        self.procs.push((child.id(), group));
        Ok(child)
    }

    /// Runs `create` (a spawn, a job's streams or regions) unless the harness is stopping;
    /// `what` names it in the refusal.
    fn unless_stopping<T>(&self, what: &str, create: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.stopping {
            bail!("{what}: refused, the harness is stopping (a signal stopped the run)");
        }
        create()
    }

    /// Kills every tracked process; with `stop`, refuses new ones from then on.
    fn kill_all(&mut self, stop: bool) {
        self.stopping |= stop;
        self.kill_where(|_| true);
    }

    /// Waits at most `limit` for every tracked process to exit (killed, they release their
    /// locks and mappings as they go), leaving them unreaped. A process reaped already by
    /// its waiter counts as exited.
    fn wait_all_exited(&self, limit: Duration) {
        let pids: Vec<u32> = self.procs.iter().map(|&(pid, _)| pid).collect();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for pid in pids {
                let _ = harness_sys::wait_exited(pid);
            }
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(limit);
    }

    /// Kills the tracked processes whose pid `pick` accepts (a group leader's whole group).
    fn kill_where(&self, pick: impl Fn(u32) -> bool) {
        for &(pid, group) in self.procs.iter().filter(|(pid, _)| pick(*pid)) {
            if group {
                harness_sys::kill_group(pid);
            } else {
                harness_sys::kill(pid);
            }
        }
    }
}

static TRACKED: std::sync::Mutex<Registry> = std::sync::Mutex::new(Registry::new());

fn tracked() -> std::sync::MutexGuard<'static, Registry> {
    TRACKED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Tracks `pid` (a group leader with `group`) until [`untrack`]; the harness tracks the
/// children it starts as it starts them ([`spawn_tracked`]).
#[cfg(test)]
pub fn track(pid: u32, group: bool) {
    tracked().procs.push((pid, group));
}

/// Starts `cmd` and tracks the child (a group leader with `group`) under one hold of the
/// registry, so that a stopping signal's [`stop_tracked`] waits for it to be tracked
/// rather than miss a child started just before, and a spawn after it is refused rather
/// than left running. `spawn` returns once the child has exec'd or failed to, and nothing
/// it runs takes the registry.
pub fn spawn_tracked(
    cmd: &mut std::process::Command,
    group: bool,
) -> std::io::Result<std::process::Child> {
    tracked().spawn(cmd, group)
}

/// Stops tracking `pid`: before it is reaped, since its pid may be reused after.
pub fn untrack(pid: u32) {
    tracked().procs.retain(|&(p, _)| p != pid);
}

/// Whether `pid` is tracked.
#[cfg(test)]
pub fn is_tracked(pid: u32) -> bool {
    tracked().procs.iter().any(|&(p, _)| p == pid)
}

/// Runs `create` (a job's streams, a floor region, a child's spawn) unless the harness is
/// stopping, under the registry's lock: a stop ([`stop_tracked`]) holds that lock from its
/// kill through the clean-up to the exit, so what is created is either finished before the
/// clean-up looks, or refused. `create` must not take the registry itself.
pub fn unless_stopping<T>(what: &str, create: impl FnOnce() -> Result<T>) -> Result<T> {
    tracked().unless_stopping(what, create)
}

/// Whether a signal is stopping the harness; while the stop is under way this waits for
/// the exit, which ends it.
pub fn stopping() -> bool {
    tracked().stopping
}

/// The registry held by a stopping harness ([`stop_tracked`]) until it exits.
#[must_use = "hold it through the clean-up to the exit"]
#[derive(Debug)]
pub struct Stopped {
    _held: std::sync::MutexGuard<'static, Registry>,
}

/// How long a stop waits for the processes it killed to exit before its clean-up goes on.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Kills every tracked process (the pinned children of [`run_members`], the peers, the
/// bridges), waits for them to exit ([`STOP_WAIT`] at most), so that no stream lock they
/// hold is left for the clean-up to wait out, and refuses new ones (the harness is stopped
/// by a signal); hold the result through the clean-up to the exit, so that nothing is
/// created meanwhile ([`unless_stopping`]).
pub fn stop_tracked() -> Stopped {
    let mut registry = tracked();
    registry.kill_all(true);
    registry.wait_all_exited(STOP_WAIT);
    Stopped { _held: registry }
}

/// Kills the tracked processes among `pids` (a group leader's whole group), as
/// [`stop_tracked`] kills every tracked one, and lets new ones start. Only tracked ones: a
/// process is untracked before it is reaped ([`untrack`]), so a pid of `pids` already
/// reaped, which another process may have taken since, is not signalled.
pub fn kill_tracked(pids: &[u32]) {
    tracked().kill_where(|pid| pids.contains(&pid));
}

/// Waits for `child` at most `timeout` without polling; kills it at the timeout (with
/// `group`, its whole process group: a child started with `process_group(0)`) and returns
/// `None`. With `group`, the group is killed after any exit too: a leader that died hard
/// (SIGSEGV, the OOM killer) would leave what it started (a pyshmem peer's partner, maybe
/// spinning on a core the next job times) running. The child is untracked ([`untrack`])
/// once it has exited, before it is reaped.
pub fn wait_timeout(
    mut child: std::process::Child,
    timeout: Duration,
    group: bool,
) -> Result<Option<std::process::ExitStatus>> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(harness_sys::wait_exited(pid));
    });
    // An error from `wait_exited` says nothing of the child: not "exited", so it is killed
    // and never waited for unbounded.
    let in_time = matches!(rx.recv_timeout(timeout), Ok(Ok(())));
    // Only this thread reaps the child, below: until then its pid, and a group id equal to
    // it, cannot be reused (even by a group of its own once every member has gone), so
    // these kills reach it and what it started only. The child led a group of its own
    // (`process_group(0)`), never the harness's.
    if group {
        harness_sys::kill_group(pid);
    } else if !in_time {
        harness_sys::kill(pid);
    }
    let exited = in_time || matches!(rx.recv_timeout(Duration::from_secs(2)), Ok(Ok(())));
    untrack(pid);
    if !exited {
        // Killed but not gone yet (in an uninterruptible wait): reaped when it goes.
        std::thread::spawn(move || child.wait());
        return Ok(None);
    }
    let status = child.wait()?;
    Ok(in_time.then_some(status))
}

#[cfg(test)]
mod real_time_tests {
    use super::*;

    /// `rt_priority` puts the process under SCHED_FIFO, or fails saying what it needs
    /// (run in a thread of its own: the policy is per thread, and the thread ends here).
    #[test]
    fn real_time_sets_sched_fifo_or_names_the_remedy() {
        std::thread::spawn(|| match real_time(1) {
            Ok(()) => assert_eq!(harness_sys::scheduler().unwrap(), libc::SCHED_FIFO),
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(
                    msg.contains("ulimit -r") && msg.contains("remove rt_priority"),
                    "{msg}"
                );
            }
        })
        .join()
        .unwrap();
        // This thread kept the time-sharing policy.
        assert_eq!(harness_sys::scheduler().unwrap(), libc::SCHED_OTHER);
    }

    /// `slice_us` gives the thread that fair slice (the kernel reports it back), or fails
    /// saying what it needs; the policy stays the time-sharing one.
    #[test]
    fn a_fair_slice_is_set_or_names_the_remedy() {
        std::thread::spawn(|| {
            match fair_slice(250_000) {
                Ok(()) => assert_eq!(harness_sys::set_fair_slice(250_000).unwrap(), 250_000),
                Err(e) => {
                    let msg = format!("{e:#}");
                    assert!(msg.contains("remove slice_us"), "{msg}");
                }
            }
            assert_eq!(harness_sys::scheduler().unwrap(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }

    /// The fair slice the kernel runs the calling thread with (`se.slice` in
    /// `/proc/thread-self/sched`), where it shows it.
    fn shown_slice() -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        sched.lines().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "se.slice").then(|| value.trim().parse().ok())?
        })
    }

    /// A job's scheduling reaches the thread that runs it: its fair slice (checked where
    /// the kernel shows the thread's slice), SCHED_FIFO at its rt_priority, or the remedy
    /// for either; a job that asks for neither leaves the thread as it was.
    #[test]
    fn a_jobs_scheduling_reaches_its_thread() {
        let text = "name = \"t\"\n[[case]]\nkind = \"pingpong\"\nsizes = [[16]]\n";
        let plain = crate::scenario::Scenario::parse(text)
            .unwrap()
            .jobs(false, None)
            .remove(0);
        assert_eq!((plain.rt_priority, plain.slice_ns), (None, None));
        let sliced = Job {
            slice_ns: Some(300_000),
            ..plain.clone()
        };
        let fifo = Job {
            rt_priority: Some(1),
            ..plain.clone()
        };
        std::thread::spawn(move || {
            let before = shown_slice();
            scheduling(&plain).unwrap();
            assert_eq!(shown_slice(), before);
            match scheduling(&sliced) {
                Ok(()) => match shown_slice() {
                    Some(ns) => assert_eq!(ns, 300_000),
                    None => eprintln!("this kernel shows no thread's slice: not checked"),
                },
                Err(e) => assert!(format!("{e:#}").contains("remove slice_us"), "{e:#}"),
            }
            assert_eq!(harness_sys::scheduler().unwrap(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
        std::thread::spawn(move || match scheduling(&fifo) {
            Ok(()) => assert_eq!(harness_sys::scheduler().unwrap(), libc::SCHED_FIFO),
            Err(e) => assert!(format!("{e:#}").contains("remove rt_priority"), "{e:#}"),
        })
        .join()
        .unwrap();
    }

    /// A core id past what a `cpu_set_t` names is refused, not a panic; the cores a thread
    /// may run on are those of its affinity mask (`Cpus_allowed_list`), ascending.
    #[test]
    fn the_cores_a_thread_may_run_on_are_its_affinity_masks() {
        assert!(!pin_to(MAX_CORES));
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap();
        let mask: Vec<usize> = list
            .trim()
            .split(',')
            .flat_map(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                a.parse().unwrap()..=b.parse().unwrap()
            })
            .collect();
        assert_eq!(allowed_cores(), Some(mask));
    }

    /// An error quotes the end of a child's stderr: all of it when short (trailing blank
    /// lines trimmed), else its last bytes after an ellipsis, cut at a character's start;
    /// nothing for a file that is not there.
    #[test]
    fn a_childs_stderr_is_quoted_by_its_end() {
        let path = std::env::temp_dir().join(format!("tail-of-{}", std::process::id()));
        let tail = |text: &str, max: usize| {
            std::fs::write(&path, text).unwrap();
            tail_of(&path, max)
        };
        assert_eq!(tail("one\ntwo\n\n", 100), "one\ntwo");
        assert_eq!(tail("0123456789", 4), "…6789");
        assert_eq!(tail("0123456789", 10), "0123456789");
        // "é" is two bytes: a cut inside it moves past it.
        assert_eq!(tail("aé b", 3), "… b");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(tail_of(&path, 100), "");
    }

    /// A child's results go to `<prefix>.json` and, when it measured, `<prefix>.hdr`, and
    /// read back as written; a child that did not measure has no measurement to give, and
    /// says which role it was; a child that wrote nothing is named.
    #[test]
    fn a_childs_results_read_back_as_written() {
        let prefix =
            |tag: &str| std::env::temp_dir().join(format!("outcome-{tag}-{}", std::process::id()));
        let m = Measured {
            repeat_hz: vec![5.0, 6.0],
            iterations: 3,
            ..Measured::default()
        };
        let mut h = hist::new();
        for ns in [100, 200, 300] {
            h.record(ns).unwrap();
        }
        let measuring = prefix("m");
        write_outcome(&measuring, Role::PingReader, true, Some(&(m, h))).unwrap();
        let outcome = read_outcome_at(&measuring, Role::PingReader).unwrap();
        assert_eq!(
            (outcome.report.role, outcome.report.pinned),
            (Role::PingReader, true)
        );
        let (m, h) = outcome.into_measurement().unwrap();
        assert_eq!((m.repeat_hz, m.iterations), (vec![5.0, 6.0], 3));
        assert_eq!((h.len(), h.max()), (3, 300));
        let silent = prefix("s");
        write_outcome(&silent, Role::AoCamera, false, None).unwrap();
        let outcome = read_outcome_at(&silent, Role::AoCamera).unwrap();
        assert!(!outcome.report.pinned && outcome.hist.is_none());
        let err = outcome.into_measurement().unwrap_err().to_string();
        assert_eq!(err, "AoCamera child reported no measurement");
        for p in [&measuring, &silent] {
            for ext in ["json", "hdr"] {
                let _ = std::fs::remove_file(p.with_extension(ext));
            }
        }
        let err = read_outcome_at(&prefix("none"), Role::MvmCompute).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("reading MvmCompute child result"),
            "{err:#}"
        );
    }

    /// Once stopping, a registry kills what it tracks and refuses to start anything more
    /// (a signal that stops the harness while a bridge is about to start leaves none behind).
    /// No signal stopped this harness: it is not stopping.
    #[test]
    fn a_stopping_registry_kills_its_processes_and_starts_no_more() {
        use std::os::unix::process::ExitStatusExt;
        assert!(!stopping());
        let mut registry = Registry::new();
        let mut child = registry
            .spawn(std::process::Command::new("sleep").arg("30"), false)
            .unwrap();
        assert_eq!(registry.procs, [(child.id(), false)]);
        registry.kill_all(true);
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        let refused = registry
            .spawn(std::process::Command::new("sleep").arg("30"), false)
            .unwrap_err();
        assert!(refused.to_string().contains("stopping"), "{refused}");
        assert_eq!(registry.procs.len(), 1);
        let mut ran = false;
        let refused = registry
            .unless_stopping("creating x", || {
                ran = true;
                Ok(())
            })
            .unwrap_err();
        assert!(!ran, "created while stopping");
        assert!(
            refused.to_string().starts_with("creating x: refused"),
            "{refused}"
        );
    }
}

#[cfg(test)]
mod run_members_tests {
    use super::*;

    /// The children of the calling thread (`/proc/thread-self/children`: the processes
    /// it spawned, zombies included, until they are reaped), each with its state letter
    /// (`None` where it went between the two reads).
    fn my_children() -> Vec<(u32, Option<char>)> {
        let list = std::fs::read_to_string("/proc/thread-self/children")
            .expect("reading /proc/thread-self/children (CONFIG_PROC_CHILDREN)");
        list.split_whitespace()
            .map(|p| {
                let pid: u32 = p.parse().unwrap();
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
                // The state follows the command name, which is in parentheses.
                let state = stat.and_then(|s| {
                    let (_, rest) = s.rsplit_once(')')?;
                    rest.trim_start().chars().next()
                });
                (pid, state)
            })
            .collect()
    }

    /// A member reaped by its waiter is untracked first, so `run_members`' kills (through
    /// the registry) cannot reach its pid, which another process may have taken: a pid not
    /// tracked is not signalled. Stand-in for that process: a `cat` that succeeds once its
    /// input ends, unless the kill reached it.
    #[test]
    fn a_pid_no_longer_tracked_is_not_signalled() {
        let mut other = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = other.id();
        track(pid, false);
        untrack(pid);
        kill_tracked(&[pid]);
        drop(other.stdin.take());
        let status = other.wait().unwrap();
        assert!(status.success(), "an untracked pid was killed: {status}");
    }

    /// `wait_timeout` untracks the child it waits for, before it reaps it, whether it exits
    /// in time or is killed at the timeout: no caller is left to do it after the reap.
    #[test]
    fn wait_timeout_untracks_its_child() {
        for (args, timeout, in_time) in [
            (["-c", "exit 0"], Duration::from_secs(60), true),
            (["-c", "sleep 30"], Duration::from_millis(50), false),
        ] {
            let child = Command::new("sh").args(args).spawn().unwrap();
            let pid = child.id();
            track(pid, false);
            let status = wait_timeout(child, timeout, false).unwrap();
            assert_eq!(status.is_some(), in_time, "{args:?}: {status:?}");
            assert!(status.is_none_or(|s| s.success()), "{status:?}");
            assert!(!is_tracked(pid), "{args:?}: still tracked once reaped");
            // Killed at the timeout and reaped: no longer this thread's child.
            assert!(
                my_children().iter().all(|&(p, _)| p != pid),
                "{args:?}: left running"
            );
        }
    }

    /// A group past its timeout says the job's timeout remedy (which names timeout_s,
    /// min_seconds and gap_us), not only "timed out".
    #[test]
    fn a_timed_out_group_names_the_remedy() {
        let dir = scratch_dir("run-members-to");
        let members = vec![
            member(&dir, "quick", "exit 0"),
            member(&dir, "sleeper", "echo asleep >&2; exec sleep 30"),
        ];
        let err = run_members(members, Duration::from_secs(2), "raise timeout_s")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("timed out after 2 s; killed (raise timeout_s)"),
            "{err}"
        );
        // The stderr of each member still running, not of those done.
        assert!(
            err.ends_with("\nsleeper stderr:\nasleep") && !err.contains("quick"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An empty folder `TAG-PID` in the temporary directory, for a test's stderr files.
    fn scratch_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A member running `script` in `sh`, its stderr in `dir`.
    fn member(dir: &Path, label: &str, script: &str) -> GroupMember {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        GroupMember {
            command,
            label: label.into(),
            stderr: dir.join(format!("{label}.stderr")),
        }
    }

    /// A group whose members all exit 0 succeeds; a member that fails fails the group,
    /// which quotes its exit status and stderr, and stops the others.
    #[test]
    fn a_group_succeeds_when_every_member_does_and_quotes_a_failing_ones_stderr() {
        let dir = scratch_dir("run-members-ok");
        let members = vec![
            member(&dir, "a", "exit 0"),
            member(&dir, "b", "echo fine >&2"),
        ];
        run_members(members, Duration::from_secs(60), "").unwrap();
        let members = vec![
            member(&dir, "waiter", "exec sleep 30"),
            member(&dir, "failing", "echo boom >&2; exit 3"),
        ];
        let t0 = Instant::now();
        let err = run_members(members, Duration::from_secs(60), "")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "failing failed (exit status: 3); its stderr:\nboom");
        assert!(
            t0.elapsed() < Duration::from_secs(25),
            "the waiter was not stopped"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A stop waits for the processes it killed to exit (and so release what they hold),
    /// at most its limit: it returns once each has exited (unreaped: its waiter reaps
    /// it), or at the limit with one still running.
    #[test]
    fn a_registry_waits_for_its_processes_to_exit_at_most_its_limit() {
        let state = |pid: u32| my_children().into_iter().find(|&(p, _)| p == pid)?.1;
        let mut registry = Registry::new();
        let mut short = registry
            .spawn(Command::new("sleep").arg("0.3"), false)
            .unwrap();
        registry.wait_all_exited(Duration::from_secs(30));
        assert_eq!(state(short.id()), Some('Z'));
        assert!(short.wait().unwrap().success());
        let mut registry = Registry::new();
        let mut long = registry
            .spawn(Command::new("sleep").arg("30"), false)
            .unwrap();
        let t0 = Instant::now();
        registry.wait_all_exited(Duration::from_millis(200));
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
        assert_ne!(state(long.id()), Some('Z'));
        long.kill().unwrap();
        long.wait().unwrap();
    }

    /// A member whose stderr file cannot be created fails the group, and the members
    /// started before it are stopped, not left waiting for a partner that never comes.
    #[test]
    fn a_member_that_cannot_start_stops_those_started_before_it() {
        let dir = scratch_dir("run-members");
        // The test's thread (a thread of its own) has started nothing yet: whatever child
        // it has after `run_members` is the first member.
        assert_eq!(my_children(), [], "the test's thread already had children");
        // The first member would sleep for half a minute unless killed. It is started
        // from this thread, so it is this thread's child until the group's waiter reaps it;
        // it may well be killed before it runs at all, so it cannot report its own pid.
        let mut first = Command::new("sleep");
        first.arg("30");
        let members = vec![
            GroupMember {
                command: first,
                label: "first".into(),
                stderr: dir.join("first.stderr"),
            },
            GroupMember {
                command: Command::new("true"),
                label: "second".into(),
                stderr: dir.join("missing").join("second.stderr"),
            },
        ];
        let err = run_members(members, Duration::from_secs(60), "")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("second") && err.contains("second.stderr"),
            "{err}"
        );
        // Killed, it is soon a zombie or reaped (gone from the list); left running, it
        // stays a sleeping child for 30 s, past the bound.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let live: Vec<_> = my_children()
                .into_iter()
                .filter(|&(_, state)| state != Some('Z'))
                .collect();
            if live.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the member started before the failing one was left running: {live:?}"
            );
            std::thread::yield_now();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

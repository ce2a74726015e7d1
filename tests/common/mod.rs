//! Helpers shared by the integration tests (`mod common;` in each test file).
//!
//! # Names
//! [`unique_name`]`(tag)` returns `t-<tag>-<pid>-<counter>-<nanos>`: unique across the test
//! threads of one binary, across concurrently running test binaries and across re-runs, so
//! tests never collide on a stream name. [`Cleanup`] unlinks a list of names on drop (also
//! when the test panics).
//!
//! # Child processes (re-exec of the current test binary)
//! A test spawns a *role* by re-running its own test binary with
//! `[<test fn>, "--exact", "--nocapture", "--test-threads=1"]` and the environment variable
//! [`ROLE_ENV`] (`SHMSTREAM_CHILD_ROLE`) set to the role's name; parameters travel as
//! `SHMSTREAM_CHILD_P_<KEY>` environment variables. The child entry point is an ordinary
//! `#[test]` that returns at once when [`child_role`] is `None` (so it passes as a no-op in
//! the normal run):
//!
//! ```ignore
//! #[test]
//! fn child_entry() {
//!     let Some(role) = common::child_role() else { return };
//!     match role.as_str() {
//!         "writer" => {
//!             let name: String = common::param("name");
//!             let s = shmstream::Stream::open(&name).unwrap();
//!             s.write_slice(&[1.0f32]).unwrap();
//!             common::say("written"); // a protocol line on stdout
//!         }
//!         other => panic!("unknown role {other}"),
//!     }
//! }
//!
//! // in the parent test:
//! let mut child = common::child("child_entry", "writer").param("name", &name).spawn();
//! child.expect_line("written", Duration::from_secs(10));
//! child.wait_success(Duration::from_secs(10));
//! ```
//!
//! Protocol lines are printed with [`say`] (`@@ <text>` on stdout, flushed); libtest may put
//! its own text on the same line, so [`Proc::expect_line`] looks for the `@@ ` marker anywhere
//! in a line. The child's stdin is a pipe: a child that must block "forever" (e.g. to be
//! SIGKILLed mid-write) calls [`block_on_stdin`], which returns when the parent writes a line or
//! dies (EOF), so no orphan outlives its parent. A [`Proc`] is killed and reaped on drop; its
//! stderr is collected and shown in failure messages. A child is also SIGKILLed when the
//! thread that spawned it ends ([`die_with_spawner`]), so a test binary killed outright leaves
//! none running: spawn children from the test's thread, not from a helper thread that ends
//! first.
//!
//! [`Proc`] also wraps other programs (the Python peer): [`Proc::spawn`] takes any `Command`.
//!
//! # The Python peer (real pyshmem 1.4.0)
//! [`python`] returns the interpreter to use, or `None`: `$SHMSTREAM_PYTHON`, else the repo's
//! `.venv/bin/python`, else `python3`, each only if `import pyshmem, numpy` works and the
//! installed pyshmem is 1.4.0. When `SHMSTREAM_REQUIRE_PYTHON=1` (set by `scripts/test.sh` and CI)
//! a missing peer **panics** (it is a failure there); under plain `cargo test` it prints a skip
//! reason to stderr and interop tests return early:
//!
//! ```ignore
//! let Some(py) = common::python() else { return };
//! ```
//! [`py_script`] gives the path of a helper script in `tests/python/`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Environment variable naming the role a re-executed test binary plays.
pub const ROLE_ENV: &str = "SHMSTREAM_CHILD_ROLE";
/// Prefix of the environment variables carrying a child's parameters.
pub const PARAM_PREFIX: &str = "SHMSTREAM_CHILD_P_";
/// Marker that starts a protocol line on a child's stdout.
pub const MARK: &str = "@@ ";

/// A generous default for waits on other processes (2-core CI machines are slow).
pub const LONG: Duration = Duration::from_secs(30);

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Tries `attempt` until it gives a value, and panics with `failure()` once `within` has
/// passed without one. Each attempt bounds its own wait: a library wait with a timeout, or a
/// short pause before looking again at something that announces nothing (a stream being
/// made, a line on a child's stderr).
#[track_caller]
pub fn eventually<T>(
    within: Duration,
    failure: impl Fn() -> String,
    mut attempt: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = attempt() {
            return v;
        }
        assert!(Instant::now() < deadline, "{}", failure());
    }
}

/// The system call task `tid` of process `pid` is blocked in, and its arguments, as
/// `/proc/PID/task/TID/syscall` shows them (none while it runs).
pub fn blocked_syscall(pid: u32, tid: u32) -> Option<(i64, Vec<u64>)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let mut it = s.split_whitespace();
    let nr = it.next()?.parse().ok()?;
    let args = it
        .map_while(|a| u64::from_str_radix(a.strip_prefix("0x")?, 16).ok())
        .collect();
    Some((nr, args))
}

/// This thread's id.
pub fn gettid() -> i64 {
    // SAFETY: gettid has no preconditions.
    i64::from(unsafe { libc::gettid() })
}

/// How long thread `tid` of this process has so far waited, runnable, for a CPU (field 2 of
/// its `schedstat`); `None` where the thread has ended or the kernel does not tell (said
/// once). Report latencies are bounded less the reporting thread's run-queue wait over
/// their window: a loaded host delays when that thread runs, which no library bounds. (A
/// wait already under way at the window's start is counted whole: the bound errs toward
/// the host.)
pub fn runq_wait(tid: i64) -> Option<Duration> {
    static SAID: std::sync::Once = std::sync::Once::new();
    let ns = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok());
    if ns.is_none() && std::fs::metadata("/proc/thread-self/schedstat").is_err() {
        SAID.call_once(|| eprintln!("no schedstat: latency bounds include run-queue waits"));
    }
    ns.map(Duration::from_nanos)
}

/// The run-queue wait between two [`runq_wait`] readings of one thread; zero where either
/// is unknown (the bound is then on the whole latency).
pub fn runq_between(start: Option<Duration>, end: Option<Duration>) -> Duration {
    end.zip(start)
        .map_or(Duration::ZERO, |(end, start)| end.saturating_sub(start))
}

/// Waits on `rx` until thread `tid` of this process has had `window` in which it could run
/// (its run-queue waits meanwhile not counted, so a thread the host kept off the CPU gets
/// the whole window all the same); what arrived on `rx` meanwhile, if anything.
pub fn recv_within_run_time<T>(
    rx: &std::sync::mpsc::Receiver<T>,
    tid: i64,
    window: Duration,
) -> Option<T> {
    let (t0, queued_before) = (Instant::now(), runq_wait(tid));
    loop {
        let ran = t0
            .elapsed()
            .saturating_sub(runq_between(queued_before, runq_wait(tid)));
        if ran >= window {
            return None;
        }
        match rx.recv_timeout(window - ran) {
            Ok(v) => return Some(v),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// Runs `wait` on a detached thread; returns that thread's tid and the receiver of `wait`'s
/// result. A wait that never ends then leaves only that thread stuck (a test binary ends
/// without it), so [`ended_within`] fails the test where a join would hang it.
pub fn detached<T: Send + 'static>(
    wait: impl FnOnce() -> T + Send + 'static,
) -> (i64, Receiver<T>) {
    let (tid_tx, tid_rx) = channel();
    let (end_tx, end_rx) = channel();
    std::thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        let _ = end_tx.send(wait());
    });
    let tid = tid_rx
        .recv()
        .expect("the waiting thread died before it started");
    (tid, end_rx)
}

/// The result of a [`detached`] wait, which must end within [`LONG`]; panics naming `what`
/// otherwise.
pub fn ended_within<T>(end: &Receiver<T>, what: &str) -> T {
    match end.recv_timeout(LONG) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("{what}: the wait did not end within {LONG:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what}: the waiting thread panicked"),
    }
}

/// Address ranges of every mapping of `/dev/shm/<id>` in process `pid`.
pub fn mapping_ranges(pid: u32, id: &str) -> Vec<(u64, u64)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let suffix = format!("/dev/shm/{id}");
    maps.lines()
        .filter(|l| l.trim_end().ends_with(&suffix) || l.contains(&format!("{suffix} ")))
        .filter_map(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect()
}

/// The arguments of the `futex` call task `tid` of process `pid` is blocked in, where that
/// is on a word of the header of stream `name` (in that process's mapping of its `_meta`):
/// one read of `/proc`, so they are the call's that was seen parked.
pub fn futex_args_on_stream(pid: u32, tid: u32, name: &str) -> Option<Vec<u64>> {
    let (nr, args) = blocked_syscall(pid, tid)?;
    let ranges = mapping_ranges(pid, &shmstream::name::meta_id(name));
    let on_header = |&addr: &u64| ranges.iter().any(|&(a, b)| addr >= a && addr < b);
    (nr == libc::SYS_futex && args.first().is_some_and(on_header)).then_some(args)
}

/// Whether task `tid` of process `pid` is blocked in `futex` on a word of the header of
/// stream `name` (in that process's mapping of its `_meta`).
pub fn futex_parked_on_stream(pid: u32, tid: u32, name: &str) -> bool {
    futex_args_on_stream(pid, tid, name).is_some()
}

/// Whether task `tid` of process `pid` waits on stream `name`: parked in `futex` on its header
/// (`notify`), or in a sleep (a polling wait).
pub fn parked_on_stream(pid: u32, tid: u32, name: &str, notify: bool) -> bool {
    if notify {
        futex_parked_on_stream(pid, tid, name)
    } else {
        blocked_syscall(pid, tid)
            .is_some_and(|(nr, _)| nr == libc::SYS_clock_nanosleep || nr == libc::SYS_nanosleep)
    }
}

/// Waits (yielding, up to [`LONG`]) until task `tid` of process `pid` is [`parked_on_stream`];
/// panics otherwise.
pub fn wait_parked_on_stream(pid: u32, tid: u32, name: &str, notify: bool) {
    let failure = || format!("task {tid} of {pid} never parked on '{name}' (notify={notify})");
    eventually(LONG, failure, || {
        parked_on_stream(pid, tid, name, notify)
            .then_some(())
            .or_else(yield_now)
    });
}

/// Waits (yielding, up to [`LONG`]) until task `tid` of process `pid` is blocked in system
/// call `nr`; panics otherwise.
pub fn wait_blocked_in(pid: u32, tid: u32, nr: i64) {
    let failure = || format!("task {tid} of {pid} never blocked in system call {nr}");
    eventually(LONG, failure, || {
        blocked_syscall(pid, tid)
            .is_some_and(|(now, _)| now == nr)
            .then_some(())
            .or_else(yield_now)
    });
}

/// Yields the CPU, and gives no value: the failed attempt of an [`eventually`] that looks
/// again at once.
pub fn yield_now() -> Option<()> {
    std::thread::yield_now();
    None
}

/// Pauses `ms` milliseconds, and gives no value: the failed attempt of an [`eventually`]
/// that looks again at something that announces nothing.
pub fn pause<T>(ms: u64) -> Option<T> {
    std::thread::sleep(Duration::from_millis(ms));
    None
}

/// Lowers this process's descriptor limit to at most 256 and opens `/dev/null` until no
/// descriptor is left (`EMFILE`): the files, to free one at a time. Only in a child process
/// of its own: the limit and the full table affect every thread of the process.
pub fn fill_descriptors() -> Vec<std::fs::File> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit that outlives the calls.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_cur.min(256);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    let mut fillers = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return fillers,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Gives the files back mode 0600 on drop (a test that made them unreadable, also when it
/// panics: a mode-0000 file of this user's would fail every later purge and unlink).
pub struct Readable(pub Vec<PathBuf>);

impl Drop for Readable {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        for p in &self.0 {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
        }
    }
}

/// Whether the tests run as root (and so can switch users and chown files).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Stops child `pid` (SIGSTOP) and returns once it has stopped (`waitpid` with
/// `WUNTRACED`; a stop is no exit, so the child's later wait still reaps it).
pub fn freeze(pid: i32) {
    // SAFETY: signalling and waiting for our own child, into a local status word.
    unsafe {
        assert_eq!(libc::kill(pid, libc::SIGSTOP), 0);
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, libc::WUNTRACED), pid);
        assert!(libc::WIFSTOPPED(status), "status {status:#x}");
    }
}

/// Lets a child [`freeze`] stopped run on (SIGCONT).
pub fn thaw(pid: i32) {
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
}

/// Makes `cmd`'s child start with the default action for the signals a test sends to stop
/// it (SIGINT, SIGTERM, SIGHUP, SIGQUIT): a tool honours a signal it was started ignoring
/// (`nohup`'s SIGHUP, a script's background job's SIGINT and SIGQUIT), and a test suite run
/// that way would otherwise pass those on to it.
pub fn default_stop_signals(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the hook only calls `signal`, async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        })
    }
}

/// Makes `cmd`'s child get SIGKILL when the thread that spawns it ends (`PR_SET_PDEATHSIG`),
/// so also when its process dies: spawn it from a thread that lives as long as the child must
/// (a test's own thread, which ends with the test). A child whose parent died before the
/// setting took effect kills itself at once.
pub fn die_with_spawner(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec the hook only calls `prctl`, `getppid` and `raise`,
    // async-signal-safe, with plain integers.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        })
    }
}

/// Makes `cmd`'s child start with files limited to `bytes` (`ulimit -f`, standing in for a
/// full disk) and SIGXFSZ's default action (kill), whatever this test process was started
/// with: the tool must ignore it itself, so that a write past the limit fails instead.
pub fn limit_file_size(cmd: &mut Command, bytes: u64) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the hook only calls `signal` and `setrlimit`,
    // async-signal-safe, with plain values.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A stream name unique to this process, call and moment: `t-<tag>-<pid>-<n>-<nanos>`.
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("t-{tag}-{}-{n}-{nanos:x}", std::process::id())
}

/// Stream `name`'s write sequence, straight from its `_meta` segment in `/dev/shm` (odd: a
/// writer inside its bracket, or dead there; negative: an invalid generation).
pub fn write_sequence(name: &str) -> i64 {
    let meta = std::path::Path::new("/dev/shm").join(shmstream::name::meta_id(name));
    let b = std::fs::read(&meta).unwrap();
    let at = shmstream::format::offset::WRITE_SEQUENCE;
    i64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Plants the header of a GPU stream `name` without a CPU mirror, as its shmstream producer
/// writes it (CUDA-IPC flag, device 0), in /dev/shm: a tool that refuses such a stream from
/// its header alone is tested without a GPU. Unlink it (a [`Cleanup`]) when done.
pub fn plant_gpu_producer_header(name: &str) {
    use shmstream::format::{FLAG_CUDA_IPC, FLAG_GPU, NewHeader};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let meta = shmstream::format::encode_new(&NewHeader {
        name,
        dtype: shmstream::Dtype::F32,
        shape: &[4],
        flags: FLAG_GPU | FLAG_CUDA_IPC,
        device_index: 0,
        creator_pid: i64::from(std::process::id()),
        instance_id: [7; 16],
    });
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(format!("/dev/shm/{}", shmstream::name::meta_id(name)))
        .unwrap()
        .write_all(&meta)
        .unwrap();
}

/// Relabels stream `name`'s header in /dev/shm as a GPU stream's on device 0, with its CPU
/// mirror kept or dropped, and restamps its CRC: a tool's handling of GPU streams is tested
/// without a GPU. Drop the stream's handles first (it rewrites the header in place).
pub fn relabel_as_gpu(name: &str, cpu_mirror: bool) {
    use shmstream::format::{self, FLAG_CPU_MIRROR, FLAG_GPU, FLAG_HEADER_CRC, META_BYTES, offset};
    use std::os::unix::fs::FileExt;
    let meta = format!("/dev/shm/{}", shmstream::name::meta_id(name));
    let mut b: [u8; META_BYTES] = std::fs::read(&meta).unwrap()[..META_BYTES]
        .try_into()
        .unwrap();
    let u32_at = |b: &[u8], off: usize| u32::from_le_bytes(b[off..off + 4].try_into().unwrap());
    let mut flags = u32_at(&b, offset::FLAGS) | FLAG_GPU;
    if !cpu_mirror {
        flags &= !FLAG_CPU_MIRROR;
    }
    b[offset::FLAGS..offset::FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
    b[offset::DEVICE_INDEX..offset::DEVICE_INDEX + 4].copy_from_slice(&0i32.to_le_bytes());
    if flags & FLAG_HEADER_CRC != 0 {
        let c = format::crc(&b);
        b[offset::HEADER_CRC..offset::HEADER_CRC + 4].copy_from_slice(&c.to_le_bytes());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&meta)
        .unwrap()
        .write_all_at(&b, 0)
        .unwrap();
}

/// Unlinks the given streams on drop, ignoring errors (also runs when a test panics).
#[derive(Debug, Default)]
pub struct Cleanup(pub Vec<String>);

impl Cleanup {
    /// Guards `names`.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Cleanup {
        Cleanup(names.into_iter().map(Into::into).collect())
    }
    /// Adds a name.
    pub fn add(&mut self, name: &str) {
        self.0.push(name.to_owned());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = shmstream::unlink_quiet(n);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Child side
// ---------------------------------------------------------------------------------------

/// The role this process plays, if it was started by [`child`].
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_ENV).ok().filter(|r| !r.is_empty())
}

/// A parameter passed with [`ChildBuilder::param`]; panics if missing or unparsable.
pub fn param<T: std::str::FromStr>(key: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    let var = format!("{PARAM_PREFIX}{}", key.to_ascii_uppercase());
    let raw = std::env::var(&var).unwrap_or_else(|_| panic!("child parameter {var} is missing"));
    raw.parse()
        .unwrap_or_else(|e| panic!("child parameter {var}={raw:?} does not parse: {e:?}"))
}

/// A parameter, or `None` if it was not passed.
pub fn param_opt<T: std::str::FromStr>(key: &str) -> Option<T>
where
    T::Err: std::fmt::Debug,
{
    std::env::var(format!("{PARAM_PREFIX}{}", key.to_ascii_uppercase()))
        .ok()
        .map(|raw| {
            raw.parse()
                .unwrap_or_else(|e| panic!("child parameter {key}={raw:?} does not parse: {e:?}"))
        })
}

/// Prints a protocol line (`@@ <text>`) on stdout and flushes it.
pub fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\n{MARK}{text}");
    let _ = out.flush();
}

/// Blocks until the parent writes a line to our stdin or closes it (dies); returns the line.
pub fn block_on_stdin() -> String {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim_end().to_owned()
}

// ---------------------------------------------------------------------------------------
// Parent side
// ---------------------------------------------------------------------------------------

/// A builder for a child process playing `role` in test function `test_fn` of this binary.
///
/// The child is SIGKILLed when the thread that spawns it ends ([`die_with_spawner`]): a test
/// binary killed outright (SIGKILL, no drop of its [`Proc`]s) leaves no child behind, such as
/// a writer that writes until told to stop.
pub fn child(test_fn: &str, role: &str) -> ChildBuilder {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([test_fn, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role);
    die_with_spawner(&mut cmd);
    // Children must not inherit a parent's parameters by accident.
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str()
            && k.starts_with(PARAM_PREFIX)
        {
            cmd.env_remove(k);
        }
    }
    ChildBuilder {
        cmd,
        label: format!("child {test_fn}/{role}"),
    }
}

/// See [`child`].
#[derive(Debug)]
pub struct ChildBuilder {
    cmd: Command,
    label: String,
}

impl ChildBuilder {
    /// Passes `key=value` (read in the child with [`param`]).
    pub fn param(mut self, key: &str, value: impl ToString) -> Self {
        self.cmd.env(
            format!("{PARAM_PREFIX}{}", key.to_ascii_uppercase()),
            value.to_string(),
        );
        self
    }
    /// Sets another environment variable in the child.
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }
    /// Runs the child as user (and group) `uid`; needs root (see [`is_root`]).
    pub fn run_as_user(mut self, uid: u32) -> Self {
        use std::os::unix::process::CommandExt;
        self.cmd.uid(uid).gid(uid);
        self
    }
    /// Starts the child.
    pub fn spawn(self) -> Proc {
        Proc::spawn_labeled(self.cmd, self.label)
    }
    /// Runs the child to completion (within `timeout`) and asserts it succeeded and ran its
    /// test (libtest exits 0 when no test has the name: a renamed test function must not
    /// pass for a child that did nothing); returns its protocol lines.
    pub fn run(self, timeout: Duration) -> Vec<String> {
        // Its one test passed (a name no test has, or an `#[ignore]`d one, passes none; the
        // test's own "ok" follows its protocol lines, not its name).
        let mut p = self.spawn();
        p.wait_success(timeout);
        let lines = p.drain_lines();
        let ran = p
            .raw
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("test result: ok. 1 passed;"));
        assert!(ran, "{}: ran no test\n{}", p.label, p.diagnostics());
        lines
    }
}

/// Sends one message when dropped: a pipe reader's "done", also when it panics.
struct Notify(std::sync::mpsc::Sender<()>);

impl Drop for Notify {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// A running child process with line-oriented stdout, collected stderr, and a stdin pipe.
/// Killed and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Protocol lines received (text after the marker), in order.
    seen: Vec<String>,
    /// Every stdout line, for diagnostics.
    raw: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    /// One message from each pipe reader when it reaches the end of its pipe.
    drained: Receiver<()>,
    /// Pipe readers known to be done (of 2).
    pipes_closed: usize,
    status: Option<ExitStatus>,
}

/// How long a wait for an exited child's output waits for its pipes to close (a grandchild
/// that keeps them open must not hold a test).
const PIPES_CLOSE: Duration = Duration::from_secs(5);

impl Proc {
    /// Starts any command with piped stdin/stdout/stderr. Lines on stdout that contain the
    /// `@@ ` marker are protocol lines; for other programs (Python) every line counts, so
    /// Python helpers also print `@@ <text>`.
    pub fn spawn(cmd: Command) -> Proc {
        let label = format!("{:?}", cmd.get_program());
        Proc::spawn_labeled(cmd, label)
    }

    fn spawn_labeled(mut cmd: Command, label: String) -> Proc {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {label}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let (tx, rx) = channel();
        let (drained_tx, drained) = channel();
        let stdout_drained = drained_tx.clone();
        let raw = Arc::new(Mutex::new(Vec::new()));
        let raw2 = raw.clone();
        std::thread::spawn(move || {
            let _done = Notify(stdout_drained);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                raw2.lock().unwrap().push(line.clone());
                if let Some(i) = line.find(MARK)
                    && tx
                        .send(line[i + MARK.len()..].trim_end().to_owned())
                        .is_err()
                {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr2 = stderr.clone();
        std::thread::spawn(move || {
            let _done = Notify(drained_tx);
            let mut buf = [0u8; 4096];
            loop {
                match stderr_pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => stderr2
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        Proc {
            label,
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
            raw,
            stderr,
            drained,
            pipes_closed: 0,
            status: None,
        }
    }

    /// Waits (up to [`PIPES_CLOSE`]) until both pipe readers have read everything the
    /// exited child wrote: its last words are in [`Proc::diagnostics`] after this.
    fn wait_for_pipes(&mut self) {
        let deadline = Instant::now() + PIPES_CLOSE;
        while self.pipes_closed < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.drained.recv_timeout(left).is_err() {
                return;
            }
            self.pipes_closed += 1;
        }
    }

    /// The exit status if the child has exited (no wait).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Diagnostics: stdout and stderr so far.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- stderr ---\n{}",
            self.label,
            self.raw.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap()
        )
    }

    /// The next protocol line, waiting up to `timeout`; panics on timeout or EOF.
    pub fn next_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => {
                self.seen.push(l.clone());
                l
            }
            Err(RecvTimeoutError::Timeout) => panic!(
                "{}: no protocol line within {timeout:?}\n{}",
                self.label,
                self.diagnostics()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let _ = self.child.wait();
                panic!(
                    "{}: exited before the expected line\n{}",
                    self.label,
                    self.diagnostics()
                )
            }
        }
    }

    /// The next protocol line if one arrives within `timeout`, else `None` (no panic).
    pub fn line_within(&mut self, timeout: Duration) -> Option<String> {
        let l = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(l.clone());
        Some(l)
    }

    /// Waits for a protocol line starting with `prefix`, skipping others; returns the rest of
    /// the line after the prefix (trimmed).
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self.next_line(left.max(Duration::from_millis(1)));
            if let Some(rest) = l.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
    }

    /// Protocol lines received so far (after draining those already buffered).
    pub fn lines_so_far(&mut self) -> Vec<String> {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.clone()
    }

    /// After exit: every protocol line (including those not yet consumed), waiting up to 5 s
    /// for the stdout reader to reach EOF.
    pub fn drain_lines(&mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(l);
        }
        self.seen.clone()
    }

    /// Writes a line to the child's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: writing stdin: {e}", self.label));
    }

    /// Closes the child's stdin (EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends SIGKILL and leaves the child unreaped: a zombie until [`Proc::kill`], a wait
    /// or the drop reaps it.
    pub fn kill_unreaped(&mut self) {
        let _ = self.child.kill();
    }

    /// Sends SIGKILL, reaps the child and waits for what it wrote before dying to be read.
    pub fn kill(&mut self) -> ExitStatus {
        let st = self.kill_reaped();
        self.wait_for_pipes();
        st
    }

    /// Sends SIGKILL and reaps the child, at once: for a test that times what follows the
    /// death (its output may not all be read yet; [`Proc::wait_timeout`] waits for it).
    pub fn kill_reaped(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        let st = self.child.wait().expect("wait");
        self.status = Some(st);
        st
    }

    /// Waits up to `timeout` for exit; panics (after killing it) if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(st) = self.status {
            self.wait_for_pipes();
            return st;
        }
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                self.status = Some(st);
                self.wait_for_pipes();
                return st;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "{}: still running after {timeout:?}; killed\n{}",
                    self.label,
                    self.diagnostics()
                );
            }
            // Polling a child's exit status (no library wait exists for this); not used as
            // synchronization between test actors.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Waits for exit and asserts success (exit code 0).
    pub fn wait_success(&mut self, timeout: Duration) {
        let st = self.wait_timeout(timeout);
        if !st.success() {
            panic!("{}: failed with {st}\n{}", self.label, self.diagnostics());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Python peer
// ---------------------------------------------------------------------------------------

fn python_works(py: &Path) -> Result<(), String> {
    let out = Command::new(py)
        .args([
            "-c",
            "import importlib.metadata as m, pyshmem, numpy; print(m.version('pyshmem'))",
        ])
        .output()
        .map_err(|e| format!("{} cannot run: {e}", py.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{}: `import pyshmem, numpy` failed: {}",
            py.display(),
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if v != "1.4.0" {
        return Err(format!("{} has pyshmem {v}, need 1.4.0", py.display()));
    }
    Ok(())
}

fn find_python() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("SHMSTREAM_PYTHON").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        python_works(&p)?;
        return Ok(p);
    }
    let mut reasons = Vec::new();
    let venv = repo_root().join(".venv/bin/python");
    if venv.exists() {
        match python_works(&venv) {
            Ok(()) => return Ok(venv),
            Err(e) => reasons.push(e),
        }
    } else {
        reasons.push(format!("{} does not exist", venv.display()));
    }
    let sys = PathBuf::from("python3");
    match python_works(&sys) {
        Ok(()) => Ok(sys),
        Err(e) => {
            reasons.push(e);
            Err(reasons.join("; "))
        }
    }
}

/// Whether a missing Python peer is a failure (`SHMSTREAM_REQUIRE_PYTHON=1`).
pub fn python_required() -> bool {
    std::env::var("SHMSTREAM_REQUIRE_PYTHON").is_ok_and(|v| v == "1")
}

/// The Python interpreter with pyshmem 1.4.0 + numpy, or `None` (after printing why) when
/// there is none. Panics when none is found and `SHMSTREAM_REQUIRE_PYTHON=1`.
pub fn python() -> Option<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match FOUND.get_or_init(find_python) {
        Ok(p) => Some(p.clone()),
        Err(why) if python_required() => {
            panic!("SHMSTREAM_REQUIRE_PYTHON=1 but no Python peer with pyshmem 1.4.0: {why}")
        }
        Err(why) => {
            eprintln!(
                "skipping interop test: no Python peer with pyshmem 1.4.0 ({why}); run scripts/test.sh or set SHMSTREAM_PYTHON"
            );
            None
        }
    }
}

/// The workspace root (the folder holding `Cargo.lock`): these helpers serve the tests of
/// every package in the workspace (`cli/tests` include this file by path).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|d| d.join("Cargo.lock").exists())
        .unwrap_or(manifest)
        .to_path_buf()
}

/// Path of a helper script in `tests/python/`.
pub fn py_script(file: &str) -> PathBuf {
    repo_root().join("tests/python").join(file)
}

/// A `Command` running `tests/python/<script>` with `py` and `args`.
pub fn py_command(py: &Path, script: &str, args: &[&str]) -> Command {
    let mut c = Command::new(py);
    c.arg("-u").arg(py_script(script)).args(args);
    c
}

/// Runs a Python helper to completion within `timeout`, asserts success and returns its
/// protocol lines (`@@ ...`).
pub fn run_py(py: &Path, script: &str, args: &[&str], timeout: Duration) -> Vec<String> {
    let mut p = Proc::spawn(py_command(py, script, args));
    p.wait_success(timeout);
    p.drain_lines()
}

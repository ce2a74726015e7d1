//! The pyshmem peer: the same case run by pyshmem 1.4.0 + numpy through the bundled
//! script `harness/peer/pyshmem_peer.py` (embedded in the binary and written next to
//! the job's files, so the harness binary is self-contained).
//!
//! The Python interpreter is `--python`, else `.venv/bin/python` when it exists, else
//! `python3`. When it cannot `import pyshmem` the peer column stays empty and the report
//! says why. For MVM the peer process runs with `OPENBLAS_CORETYPE` and
//! `OPENBLAS_L2_SIZE` removed from its environment ([`unset_openblas_tuning`], as the AO
//! loop's Python stages do) and records which OpenBLAS kernel ran.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result, bail};
use crate::hist;
use crate::measure::Measured;
use crate::scenario::{Job, Kind, Wait};
use crate::spawn::Names;

/// The bundled script.
pub const SCRIPT: &str = include_str!("../peer/pyshmem_peer.py");

/// Environment variables removed for the peers that run numpy's BLAS (MVM, the AO loop).
pub const OPENBLAS_VARS: [&str; 2] = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"];

/// Removes [`OPENBLAS_VARS`] from `cmd`'s environment (they slow current numpy builds on
/// this machine kind) and returns the note that records it, `openblas_env`: what they
/// were here.
pub fn unset_openblas_tuning(cmd: &mut Command) -> (String, String) {
    let mut removed = Vec::new();
    for v in OPENBLAS_VARS {
        if let Ok(val) = std::env::var(v) {
            removed.push(format!("{v}={val}"));
        }
        cmd.env_remove(v);
    }
    let what = if removed.is_empty() {
        "unset (were not set)".to_string()
    } else {
        format!("unset (were {})", removed.join(", "))
    };
    ("openblas_env".into(), what)
}

/// Whether the peer can run, and with what.
#[derive(Debug, Clone, Serialize)]
pub enum PeerSetup {
    /// Python with pyshmem and numpy.
    Ready {
        /// Interpreter.
        python: PathBuf,
        /// pyshmem version.
        pyshmem: String,
        /// numpy version.
        numpy: String,
    },
    /// Why the peer column is empty.
    Missing(String),
}

/// Longest the interpreter may take to import pyshmem and numpy in [`probe`].
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Finds the interpreter and checks it has pyshmem and numpy, within [`PROBE_TIMEOUT`].
pub fn probe(python: Option<&Path>) -> PeerSetup {
    probe_within(python, PROBE_TIMEOUT)
}

/// [`probe`], the interpreter killed (its process group with it) and the peer `Missing`
/// when it has not answered within `timeout`.
fn probe_within(python: Option<&Path>, timeout: Duration) -> PeerSetup {
    let exe = match python {
        Some(p) => p.to_path_buf(),
        None if Path::new(".venv/bin/python").exists() => PathBuf::from(".venv/bin/python"),
        None => PathBuf::from("python3"),
    };
    const IMPORT: &str = "import pyshmem, numpy; print(pyshmem.__version__, numpy.__version__)";
    let mut cmd = Command::new(&exe);
    cmd.process_group(0)
        .args(["-c", IMPORT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    harness_sys::die_with_parent(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return PeerSetup::Missing(format!("{} cannot run: {e}", exe.display())),
    };
    // Read while it runs, so that a long traceback cannot fill a pipe and stall it.
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let status = match crate::spawn::wait_timeout(child, timeout, true) {
        Err(e) => return PeerSetup::Missing(format!("waiting for {}: {e}", exe.display())),
        Ok(None) => {
            return PeerSetup::Missing(format!(
                "`{} -c \"import pyshmem, numpy\"` did not finish within {:.0} s (killed); \
                 fix that interpreter or pass another with --python",
                exe.display(),
                timeout.as_secs_f64()
            ));
        }
        Ok(Some(status)) => status,
    };
    let (out, err) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    if !status.success() {
        let last = err.trim().lines().last().unwrap_or("").to_string();
        return PeerSetup::Missing(format!(
            "`{} -c \"import pyshmem\"` failed: {last}",
            exe.display()
        ));
    }
    let mut it = out.split_whitespace();
    let pyshmem = it.next().unwrap_or("?").to_string();
    let numpy = it.next().unwrap_or("?").to_string();
    PeerSetup::Ready {
        python: exe,
        pyshmem,
        numpy,
    }
}

/// A thread reading `pipe` to its end.
fn read_all(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut text);
        }
        text
    })
}

/// What the peer script sends back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PeerOut {
    repeat_hz: Vec<f64>,
    #[serde(default)]
    repeat_busy_hz: Vec<f64>,
    iterations: u64,
    warmup_iterations: u64,
    #[serde(default)]
    notes: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct PeerSpec<'a> {
    kind: &'static str,
    shape: &'a [usize],
    dtype: &'a str,
    wait: Option<&'static str>,
    /// Whether the streams notify and their waiters park, as ours do for this wait form.
    notify: bool,
    gap_us: f64,
    timing: crate::scenario::Timing,
    writer_cpu: usize,
    reader_cpu: usize,
    names: &'a Names,
    samples_path: PathBuf,
    kernel_path: PathBuf,
    /// MVM: whether the product is one ours would split over every core
    /// ([`crate::kernel::is_parallel`] given them all, as numpy takes them), where the peer's
    /// waits do not spin beside numpy's unpinned threads.
    kernel_parallel: bool,
}

impl<'a> PeerSpec<'a> {
    fn of(job: &'a Job, names: &'a Names, prefix: &Path) -> Self {
        PeerSpec {
            kind: job.kind.name(),
            shape: &job.shape,
            dtype: &job.dtype,
            wait: job.wait.map(|w| w.name()),
            notify: job.wait.is_some_and(Wait::notifies),
            gap_us: job.gap_us,
            timing: job.timing,
            writer_cpu: job.writer_cpu,
            reader_cpu: job.reader_cpu,
            names,
            samples_path: prefix.with_extension("samples"),
            kernel_path: prefix.with_extension("kernel.json"),
            // numpy's product takes every core, whatever ours' `threads`.
            kernel_parallel: job.kind == Kind::Mvm
                && crate::kernel::is_parallel(
                    job.shape[0],
                    job.shape[1],
                    std::thread::available_parallelism().map_or(1, |n| n.get()),
                ),
        }
    }
}

/// Seconds the peer's start-ups may take on top of its timing, in [`timed_out`]'s remedy
/// (the interpreter and numpy, twice: the partner process imports them again).
const STARTUP_MARGIN_S: f64 = 10.0;

/// Why the peer of `job` timed out and the remedy: the script's timing alone takes
/// `warmup + min_seconds × repeats` (MVM: `min_seconds × repeats` of numpy's kernel alone
/// first), within the same `timeout_s` as the Python start-ups, which validation cannot
/// count.
fn timed_out(job: &Job) -> String {
    let t = &job.timing;
    let runs = t.min_seconds * f64::from(t.repeats);
    let (formula, terms, need) = match job.kind {
        Kind::Mvm => (
            "min_seconds × repeats of the kernel alone, then warmup + min_seconds × repeats \
             driven",
            format!(
                "{} × {} + {} + {} × {}",
                t.min_seconds, t.repeats, t.warmup, t.min_seconds, t.repeats
            ),
            t.warmup + 2.0 * runs,
        ),
        _ => (
            "warmup + min_seconds × repeats",
            format!("{} + {} × {}", t.warmup, t.min_seconds, t.repeats),
            t.warmup + runs,
        ),
    };
    let secs = |v: f64| (v * 1000.0).round() / 1000.0;
    let remedy = if job.timeout_s >= need + STARTUP_MARGIN_S {
        // The timing fits: raising timeout_s is no remedy.
        format!(
            "that leaves {} s for the start-ups, so the peer hung or started that slowly: see \
             its stderr",
            secs(job.timeout_s - need)
        )
    } else {
        format!(
            "raise timeout_s (to {} s for {STARTUP_MARGIN_S} s of start-ups), or lower \
             min_seconds or repeats",
            (need + STARTUP_MARGIN_S).ceil()
        )
    };
    format!(
        "peer timed out after timeout_s = {} s: its timing alone takes {formula} = {terms} = \
         {} s, on top of the Python processes' start-ups; {remedy}",
        job.timeout_s,
        secs(need),
    )
}

/// Runs the peer for `job`. `prefix` names its files; `names` are fresh shm names.
pub fn run(
    setup: &PeerSetup,
    job: &Job,
    names: &Names,
    prefix: &Path,
) -> Result<(Measured, Histogram<u64>)> {
    let PeerSetup::Ready { python, .. } = setup else {
        bail!("peer unavailable");
    };
    let script = prefix.with_extension("py");
    std::fs::write(&script, SCRIPT)?;
    let spec = PeerSpec::of(job, names, prefix);
    let spec_path = prefix.with_extension("peer.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
    let err_path = prefix.with_extension("peer.stderr");
    let out_path = prefix.with_extension("peer.stdout");
    let mut cmd = Command::new(python);
    // A group of its own, so that a timeout or its exit (a crash too) kills the partner
    // process it starts.
    cmd.process_group(0)
        .arg(&script)
        .arg(&spec_path)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&out_path)?))
        .stderr(Stdio::from(std::fs::File::create(&err_path)?));
    let openblas = (job.kind == Kind::Mvm).then(|| unset_openblas_tuning(&mut cmd));
    harness_sys::die_with_parent(&mut cmd);
    // Its group, partners included, goes if a signal stops the harness, from its start.
    let child = crate::spawn::spawn_tracked(&mut cmd, true)
        .with_context(|| format!("starting {}", python.display()))?;
    let timeout = Duration::from_secs_f64(job.timeout_s);
    let status = crate::spawn::wait_timeout(child, timeout, true);
    // pyshmem 1.4.0's `unlink` keeps a stream's lock file, so the peer's streams leave theirs
    // in the lock folder both libraries share. The names are this run's alone and the
    // peer's processes have exited or been killed: unlink what is left, which takes the lock
    // files too, before any return (a timeout, a failed wait) can skip it.
    for name in names.streams().into_iter().filter(|n| !n.is_empty()) {
        let _ = shmstream::unlink_quiet(name);
    }
    let status = status?;
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let Some(status) = status else {
        return Err(Error::msg(format!(
            "{}; stderr: {}",
            timed_out(job),
            stderr.trim()
        )));
    };
    if !status.success() {
        let tail: String = stderr
            .trim()
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        bail!("peer failed ({status}):\n{tail}");
    }
    let stdout = std::fs::read_to_string(&out_path)?;
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("peer printed no JSON result")?;
    let out: PeerOut = serde_json::from_str(line).context("parsing the peer result")?;
    let samples =
        std::fs::read(prefix.with_extension("samples")).context("reading the peer samples")?;
    let mut h = hist::new();
    for c in samples.chunks_exact(8) {
        h.saturating_record(u64::from_le_bytes(c.try_into().expect("chunks_exact(8)")).max(1));
    }
    let mut notes: Vec<(String, String)> = out
        .notes
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            )
        })
        .collect();
    notes.extend(openblas);
    let m = Measured {
        repeat_hz: out.repeat_hz,
        repeat_busy_hz: out.repeat_busy_hz,
        iterations: out.iterations,
        warmup_iterations: out.warmup_iterations,
        notes,
    };
    Ok((m, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    /// The script parks on notify streams (`"notify": true`) whenever ours' wait form
    /// notifies: park (also spelled "futex") and adaptive, not spin.
    #[test]
    fn the_peer_is_told_to_notify_whenever_ours_does() {
        for (wait, notify) in [
            ("park", true),
            ("futex", true),
            ("adaptive", true),
            ("spin", false),
        ] {
            let text = format!(
                "name = \"t\"\n[[case]]\nkind = \"pingpong\"\nwait = \"{wait}\"\nsizes = [[8]]\n"
            );
            let job = Scenario::parse(&text).unwrap().jobs(false, None).remove(0);
            let names = Names::under("t", Path::new("/tmp"));
            let spec =
                serde_json::to_value(PeerSpec::of(&job, &names, Path::new("/tmp/t"))).unwrap();
            assert_eq!(spec["notify"], notify, "{wait}: {spec}");
        }
    }

    /// A stand-in script runs at once although another thread forks all the while: written
    /// from this process, one run in a hundred or so failed with "Text file busy" (a child
    /// forked meanwhile held the write descriptor until it exec'd).
    #[test]
    fn a_script_written_for_a_test_runs_at_once_while_another_thread_forks() {
        let dir = std::env::temp_dir().join(format!("peer-script-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::thread::scope(|s| {
            // The forker stops once `running` is dropped, on a panic too.
            let (running, forking) = std::sync::mpsc::channel::<()>();
            s.spawn(move || {
                while forking.try_recv() == Err(std::sync::mpsc::TryRecvError::Empty) {
                    let _ = Command::new("true").status();
                }
            });
            let failed = (0..300)
                .filter(|i| {
                    let script = dir.join(format!("s{i}"));
                    crate::script::write_script(&script, "#!/bin/sh\nexit 0\n");
                    !matches!(Command::new(&script).status(), Ok(s) if s.success())
                })
                .count();
            drop(running);
            assert_eq!(failed, 0, "runs of a fresh script that failed");
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An interpreter that hangs on import leaves the peer `Missing`, saying so, once the
    /// probe's bound has passed (a stand-in for Python that sleeps 30 s, bound 1 s).
    #[test]
    fn a_python_that_hangs_is_missing_after_the_bound() {
        let dir = std::env::temp_dir().join(format!("peer-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let python = dir.join("python");
        crate::script::write_script(&python, "#!/bin/sh\nsleep 30\n");
        let t0 = std::time::Instant::now();
        let setup = probe_within(Some(&python), Duration::from_secs(1));
        let took = t0.elapsed();
        match setup {
            PeerSetup::Missing(why) => assert!(why.contains("did not finish within 1 s"), "{why}"),
            ready => panic!("a hung interpreter probed as {ready:?}"),
        }
        assert!(took < Duration::from_secs(20), "the probe waited {took:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A stand-in for Python, run as a peer, whose only work is a `partner` subshell writing
    /// to a FIFO: what a test needs to run it, and then to read what the partner wrote.
    struct StandIn {
        dir: std::path::PathBuf,
        ready: PeerSetup,
        job: Job,
        /// Opened read-write first, so neither open blocks before the partner's; kept until
        /// the peer's run has returned, when the partner has written "up" or never will (its
        /// group killed): then the FIFO reads to its end once no partner holds it.
        writer: std::fs::File,
        /// The first line the partner wrote, then the rest, once the FIFO has no writer left.
        written: std::sync::mpsc::Receiver<(String, String)>,
    }

    impl StandIn {
        fn new(tag: &str, partner: &str, timeout_s: u32) -> StandIn {
            let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let fifo = dir.join("fifo");
            assert!(
                Command::new("mkfifo")
                    .arg(&fifo)
                    .status()
                    .unwrap()
                    .success()
            );
            let python = dir.join("python");
            crate::script::write_script(
                &python,
                &format!("#!/bin/sh\n{partner} > '{}' &\nwait\n", fifo.display()),
            );
            let writer = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&fifo)
                .unwrap();
            let mut reader = std::io::BufReader::new(std::fs::File::open(&fifo).unwrap());
            let (tx, written) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                use std::io::{BufRead, Read};
                let mut up = String::new();
                let _ = reader.read_line(&mut up);
                let mut rest = String::new();
                let _ = reader.read_to_string(&mut rest);
                let _ = tx.send((up, rest));
            });
            let text = format!(
                "name = \"t\"\n[defaults]\ntimeout_s = {timeout_s}\nmin_seconds = 0.1\nrepeats = 1\n[[case]]\nkind = \"roundtrip\"\nsizes = [[8]]\n"
            );
            let job = Scenario::parse(&text).unwrap().jobs(false, None).remove(0);
            let ready = PeerSetup::Ready {
                python,
                pyshmem: "1.4.0".into(),
                numpy: "2".into(),
            };
            StandIn {
                dir,
                ready,
                job,
                writer,
                written,
            }
        }

        /// What the partner wrote (its first line, then the rest), once the peer's run has
        /// returned and no partner holds the FIFO.
        fn partner_wrote(self) -> (String, String) {
            drop(self.writer);
            let out = self
                .written
                .recv_timeout(Duration::from_secs(60))
                .expect("the FIFO still open a minute after the peer's run returned");
            std::fs::remove_dir_all(&self.dir).unwrap();
            out
        }
    }

    /// At the timeout the peer's partner process dies with it, and its streams are unlinked:
    /// a stand-in for Python starts a partner that holds a FIFO open, writes "up" there and
    /// would write "late" after 30 s; the FIFO reads to its end with nothing more once the
    /// peer timed out.
    #[test]
    fn a_peer_that_times_out_takes_its_partner_with_it() {
        let peer = StandIn::new("peer-group", "(echo up; sleep 30; echo late)", 5);
        let names = Names::under(&format!("pg{}", std::process::id()), &peer.dir);
        // A stream left behind as the peer's side would leave it (dropping a stream does not
        // unlink it): the timeout unlinks it too.
        drop(crate::cases::create(&names.data, &[8], shmstream::Dtype::F32, false).unwrap());
        let err = run(&peer.ready, &peer.job, &names, &peer.dir.join("0-peer")).unwrap_err();
        // The error says how long the peer's timing takes and to raise timeout_s.
        assert!(
            err.to_string().starts_with(
                "peer timed out after timeout_s = 5 s: its timing alone takes warmup + \
                 min_seconds × repeats = 0.2 + 0.1 × 1 = 0.3 s"
            ) && err.to_string().contains("raise timeout_s (to 11 s"),
            "{err}"
        );
        assert!(
            matches!(
                shmstream::stat(&names.data),
                Err(shmstream::Error::NotFound { .. })
            ),
            "the peer's stream outlived its timeout"
        );
        let (up, rest) = peer.partner_wrote();
        assert_eq!(
            up, "up\n",
            "the partner never started within the peer's 5 s"
        );
        assert_eq!(rest, "", "the partner outlived the peer");
    }

    /// The MVM peer times numpy's kernel alone before it drives the loop: a timeout that
    /// fits ours' alternation (warmup + 2 × min_seconds × repeats = 6.2 s under 6.5) but not
    /// the Python start-ups too is told, with both terms and a timeout_s that fits them.
    #[test]
    fn an_mvm_peers_timeout_counts_its_kernel_timing_and_names_the_remedy() {
        let text = "name = \"t\"\n[defaults]\ntimeout_s = 6.5\nmin_seconds = 1\nrepeats = 3\n\
                    warmup = 0.2\npeer = true\n[[case]]\nkind = \"mvm\"\nsizes = [[64, 64]]\n";
        let job = Scenario::parse(text).unwrap().jobs(false, None).remove(0);
        assert_eq!(
            timed_out(&job),
            "peer timed out after timeout_s = 6.5 s: its timing alone takes min_seconds × \
             repeats of the kernel alone, then warmup + min_seconds × repeats driven = \
             1 × 3 + 0.2 + 1 × 3 = 6.2 s, on top of the Python processes' start-ups; raise \
             timeout_s (to 17 s for 10 s of start-ups), or lower min_seconds or repeats"
        );
        // A timeout_s the timing fits with room: not "raise" it to less than it is.
        let roomy = text.replace("timeout_s = 6.5", "timeout_s = 60");
        let job = Scenario::parse(&roomy).unwrap().jobs(false, None).remove(0);
        let said = timed_out(&job);
        assert!(
            !said.contains("raise timeout_s")
                && said.ends_with("leaves 53.8 s for the start-ups, so the peer hung or started that slowly: see its stderr"),
            "{said}"
        );
    }

    /// A peer that dies hard (SIGKILL, as a segfault or the OOM killer would end it) takes
    /// its partner with it: a stand-in for Python starts a partner that writes "up" to a FIFO,
    /// kills its parent and would write "late" after 30 s; the FIFO reads to its end with
    /// nothing more once the peer's run has returned.
    #[test]
    fn a_peer_that_dies_hard_takes_its_partner_with_it() {
        // `$$` in the subshell is the stand-in's own pid: the partner kills its parent.
        let peer = StandIn::new(
            "peer-crash",
            "(echo up; kill -9 $$; sleep 30; echo late)",
            60,
        );
        let names = Names::under(&format!("pc{}", std::process::id()), &peer.dir);
        let err = run(&peer.ready, &peer.job, &names, &peer.dir.join("0-peer")).unwrap_err();
        assert!(err.to_string().contains("peer failed"), "{err}");
        let (up, rest) = peer.partner_wrote();
        assert_eq!(up, "up\n", "the partner never started");
        assert_eq!(rest, "", "the partner outlived the peer");
    }
}

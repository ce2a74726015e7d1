//! What the harness's integration tests share: the binary, a scratch folder, a file written
//! there (a scenario, a results file), a quiet run on a scenario, a run waited for at most a
//! limit ([`run_bounded`]) and checked ([`assert_ran`]), the rows of its `results.json` and
//! its `details.json`, what a run left in shared memory ([`shm_objects`], [`streams`]), an
//! executable stand-in script ([`script`]), a check run against a Python peer module
//! ([`check_python_module`]).
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub mod script;

/// The harness binary.
pub fn harness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_harness"))
}

/// A fresh scratch folder for this test process (`tag` keeps tests apart).
pub fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("harness-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `text` as the file `name` in `dir` (a scenario, a results file); its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Asserts that a harness run exited 0, its stderr in the failure; that stderr.
pub fn assert_ran(o: &Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "harness failed ({}): {stderr}",
        o.status
    );
    stderr
}

/// The names in `/dev/shm` that start with `prefix` (a run's are `hs<pid>-…`).
pub fn shm_objects(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// The library's streams whose names start with `prefix`.
pub fn streams(prefix: &str) -> Vec<String> {
    shmstream::list_streams()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Held by the tests whose runs time their loops or pin a spinning process: the harness pins
/// every run's roles to cpus 0 and 1, so two such runs at once (libtest runs tests two at a
/// time here) would share both cores and starve each other's loops.
pub fn pinned_runs() -> std::sync::MutexGuard<'static, ()> {
    static RUNS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RUNS.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The harness on `scenario`, reporting into `out`, quietly; the caller adds flags and
/// environment and runs it.
pub fn run_on(scenario: &Path, out: &Path) -> Command {
    let mut c = harness();
    c.arg(scenario).arg("--out").arg(out).arg("--quiet");
    c
}

/// The rows of a run's `results.json`.
pub fn results(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap()
}

/// A run's `details.json` (every side's measurements and notes, per job).
pub fn details(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("details.json")).unwrap()).unwrap()
}

/// The Python with pyshmem and numpy that the peer needs (`SHMSTREAM_PYTHON`), or `None`
/// with a message saying the test is skipped; with `SHMSTREAM_REQUIRE_PYTHON` set (CI),
/// a missing one fails the test instead.
pub fn python() -> Option<std::ffi::OsString> {
    let python = std::env::var_os("SHMSTREAM_PYTHON");
    if python.is_none() {
        assert!(
            std::env::var_os("SHMSTREAM_REQUIRE_PYTHON").is_none(),
            "SHMSTREAM_REQUIRE_PYTHON is set but SHMSTREAM_PYTHON is not"
        );
        eprintln!("skipped: SHMSTREAM_PYTHON is not set (the pyshmem peer needs it)");
    }
    python
}

/// Runs `check` (Python) in `python` with the peer module `harness/peer/{file}` imported as
/// `alias`, and asserts that it passed.
pub fn check_python_module(python: &std::ffi::OsStr, file: &str, alias: &str, check: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peer")
        .join(file);
    let program = format!(
        "import importlib.util, sys\n\
         spec = importlib.util.spec_from_file_location(\"{alias}\", sys.argv[1])\n\
         {alias} = importlib.util.module_from_spec(spec)\n\
         spec.loader.exec_module({alias})\n{check}"
    );
    let o = run_bounded(
        Command::new(python).arg("-c").arg(program).arg(&script),
        RUN_LIMIT,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The most a harness run of these tests may take: its jobs' `timeout_s` each, its floors,
/// noise probe and reports, with room for a loaded host.
pub const RUN_LIMIT: Duration = Duration::from_secs(300);

/// Runs `cmd` ([`Bounded::spawn`]) and waits for it at most `limit` ([`Bounded::wait`]).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    Bounded::spawn(cmd).wait(limit)
}

/// A process started as the leader of a process group of its own (killed with the thread
/// that started it), its stdout and stderr collected by threads of their own. Dropped
/// unwaited (a test that panicked first), its group is killed.
#[derive(Debug)]
pub struct Bounded {
    what: String,
    child: Option<Child>,
    /// The process exited (left unreaped, so its group id cannot be reused meanwhile).
    exited: Receiver<std::io::Result<()>>,
    stdout: Pipe,
    stderr: Pipe,
}

impl Bounded {
    /// Starts `cmd` with stdin closed and stdout and stderr collected.
    pub fn spawn(cmd: &mut Command) -> Bounded {
        let what = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        harness_sys::die_with_parent(cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting `{what}`: {e}"));
        let stdout = Pipe::collect(child.stdout.take().expect("piped"));
        let stderr = Pipe::collect(child.stderr.take().expect("piped"));
        let pid = child.id();
        let (tx, exited) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(harness_sys::wait_exited(pid));
        });
        Bounded {
            what,
            child: Some(child),
            exited,
            stdout,
            stderr,
        }
    }

    /// Its pid (its process group's id too).
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("not yet waited for").id()
    }

    /// Its stderr so far (left to [`Bounded::wait`] to return in full).
    pub fn stderr_so_far(&self) -> String {
        let text = self
            .stderr
            .text
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Its exit status and output once it has exited and its stdout and stderr have closed.
    /// Panics with its stderr so far, once its whole group is killed and it is reaped, when
    /// either has not happened `limit` after this call.
    pub fn wait(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        let left = || deadline.saturating_duration_since(Instant::now());
        match self.exited.recv_timeout(left()) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.fail(&format!("waiting for it: {e}")),
            Err(_) => self.fail(&format!("still running after {limit:?}")),
        }
        let open = [("stdout", &self.stdout), ("stderr", &self.stderr)]
            .into_iter()
            .find(|(_, pipe)| pipe.closed.recv_timeout(left()).is_err())
            .map(|(name, _)| name);
        if let Some(name) = open {
            self.fail(&format!(
                "exited, but a process it started still held its {name} {limit:?} on"
            ));
        }
        let status = self.child.take().expect("waited once").wait().unwrap();
        Output {
            status,
            stdout: self.stdout.take(),
            stderr: self.stderr.take(),
        }
    }

    fn fail(&mut self, why: &str) -> ! {
        self.kill();
        panic!(
            "`{}` {why}: its process group was killed; its stderr so far:\n{}",
            self.what,
            String::from_utf8_lossy(&self.stderr.take())
        );
    }

    /// Kills its whole group while it is still unreaped (its id not reusable), then reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            harness_sys::kill_group(child.id());
            let _ = child.wait();
        }
    }
}

impl Drop for Bounded {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a child wrote to one of its pipes so far, and when the pipe closed.
#[derive(Debug)]
struct Pipe {
    text: Arc<Mutex<Vec<u8>>>,
    closed: Receiver<()>,
}

impl Pipe {
    fn collect(mut from: impl Read + Send + 'static) -> Pipe {
        let text = Arc::new(Mutex::new(Vec::new()));
        let (tx, closed) = mpsc::channel();
        let into = Arc::clone(&text);
        std::thread::spawn(move || {
            let mut buf = [0; 8192];
            loop {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => into
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        });
        Pipe { text, closed }
    }

    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.text.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

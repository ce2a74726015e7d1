//! What the harness's integration tests share: the binary, a scratch folder, a quiet run on
//! a scenario, the rows of its `results.json` and its `details.json`, an executable stand-in
//! script ([`script`]).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

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

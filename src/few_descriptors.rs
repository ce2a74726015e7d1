//! Tests of what a process out of file descriptors does: a full descriptor table is the
//! whole process's, so such a test runs again in a child (this test binary, its descriptor
//! limit lowered to 64 by the shell), which takes every descriptor left before it acts. Other
//! settings that are the whole process's (a umask) are set for a child the same way.

use std::ffi::OsStr;
use std::fs::File;

/// Opens `/dev/null` until the process has no descriptor left (`EMFILE`); the files hold
/// them until dropped.
pub(crate) fn take_every_descriptor() -> Vec<File> {
    let mut taken = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => taken.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return taken,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Runs libtest's `test` (its full path) in a child with at most 64 descriptors and the
/// environment variable `env` set; asserts it passed and returns what each of its lines
/// said after `said: `.
pub(crate) fn said_in_a_child(test: &str, env: (&str, &OsStr)) -> Vec<String> {
    said_in_a_shell_child("ulimit -n 64", test, env)
}

/// [`said_in_a_child`] with `setup`, a shell command, run before the test binary (in the
/// same process, which `exec` then becomes) instead of the descriptor limit.
pub(crate) fn said_in_a_shell_child(setup: &str, test: &str, env: (&str, &OsStr)) -> Vec<String> {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!(r#"{setup} && exec "$0" "$@""#)])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env.0, env.1)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout
        .lines()
        .filter_map(|l| Some(l.split_once("said: ")?.1.to_owned()))
        .collect()
}

//! An executable stand-in script for a test (shared by the harness's unit and integration
//! tests: `src/main.rs` includes this file under `cfg(test)`).

use std::path::Path;
use std::process::Command;

/// Writes `text` to `path` as an executable (0755) script, ready to run at once. A `sh`
/// child writes it, never this process: a write descriptor held here is inherited by any
/// child another test thread forks meanwhile, and until that child execs, running the
/// script fails with "Text file busy" (ETXTBSY, rust-lang/rust#114554).
pub fn write_script(path: &Path, text: &str) {
    let status = Command::new("sh")
        .args(["-c", "printf '%s' \"$1\" > \"$0\" && chmod 755 \"$0\""])
        .arg(path)
        .arg(text)
        .status()
        .unwrap_or_else(|e| panic!("running sh to write {}: {e}", path.display()));
    assert!(
        status.success(),
        "writing the script {}: sh {status}",
        path.display()
    );
}

//! Records the compiler version, the shmstream version and the optimization level for the
//! report's environment block.
use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HARNESS_RUSTC_VERSION={version}");
    // The library's version: the first `version = "..."` of its [package] table.
    let manifest = std::fs::read_to_string("../Cargo.toml").unwrap_or_default();
    let mut in_package = false;
    let mut lib_version = "unknown".to_string();
    for line in manifest.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_package = t == "[package]";
        } else if in_package && t.starts_with("version") {
            if let Some(v) = t.split('"').nth(1) {
                lib_version = v.to_string();
            }
            break;
        }
    }
    println!("cargo:rustc-env=HARNESS_SHMSTREAM_VERSION={lib_version}");
    // The optimization of this build (the workspace sets the library's and the harness's
    // together in the root Cargo.toml): "0" means the numbers are not meaningful.
    let opt = std::env::var("OPT_LEVEL").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=HARNESS_OPT_LEVEL={opt}");
    println!("cargo:rerun-if-changed=../Cargo.toml");
    println!("cargo:rerun-if-changed=build.rs");
}

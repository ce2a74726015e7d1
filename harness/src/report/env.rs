//! The environment block of the report: what ran where.

use std::process::Command;

use serde::Serialize;

/// Facts about the machine and the build.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    /// UTC time the run started, ISO 8601.
    pub started_utc: String,
    /// CPU model name.
    pub cpu_model: String,
    /// Logical cores available to this process.
    pub cores: usize,
    /// SIMD features relevant to the kernels.
    pub cpu_features: String,
    /// Kernel release.
    pub kernel: String,
    /// Load average at start (the machines are shared).
    pub loadavg: String,
    /// Compiler that built the harness.
    pub rustc: String,
    /// Build profile.
    pub profile: String,
    /// shmstream crate version.
    pub shmstream_version: String,
    /// Git commit of the work tree (with "-dirty" when modified).
    pub git_commit: String,
    /// GPU and driver, or why none.
    pub gpu: String,
    /// The MVM kernel variant chosen at run time.
    pub mvm_kernel: String,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

impl Environment {
    /// Collects the environment now.
    pub fn collect() -> Self {
        let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        let want = ["sse4_2", "avx", "avx2", "fma", "avx512f"];
        let cpu_features = want
            .iter()
            .filter(|f| flags.contains(f))
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        // A binary carried to another machine (scripts/gpu-check.sh) names the commit it was
        // built from: the work tree it runs in there need not be that commit.
        let work_tree = || match run("git", &["rev-parse", "--short=12", "HEAD"]) {
            Some(c) => {
                let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"])
                    .is_some_and(|s| !s.is_empty());
                if dirty { format!("{c}-dirty") } else { c }
            }
            None => "unknown (not a git work tree)".into(),
        };
        let git_commit = std::env::var("HARNESS_BUILT_FROM")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(work_tree);
        let gpu = if crate::cases::gpu::gpu_available() {
            run(
                "nvidia-smi",
                &[
                    "--query-gpu=name,driver_version,memory.total",
                    "--format=csv,noheader",
                ],
            )
            .map(|s| s.replace('\n', "; "))
            // issue #11: which publication path the GPU streams can use on this device.
            .map(|s| format!("{s}; {}", crate::cases::gpu::publish_probe_note()))
            .unwrap_or_else(|| {
                format!(
                    "{} CUDA device(s); nvidia-smi not answering",
                    shmstream::gpu::device_count()
                )
            })
        } else {
            format!(
                "none ({})",
                shmstream::gpu::unavailable_reason().unwrap_or_default()
            )
        };
        Environment {
            started_utc: utc_now(),
            cpu_model,
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_features,
            kernel: read("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into()),
            loadavg: read("/proc/loadavg")
                .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
            rustc: env!("HARNESS_RUSTC_VERSION").to_string(),
            profile: profile(),
            shmstream_version: env!("HARNESS_SHMSTREAM_VERSION").to_string(),
            git_commit,
            gpu,
            mvm_kernel: harness_sys::kernel::isa().name().to_string(),
        }
    }
}

/// Whether this harness was built without optimization (its numbers are then not meaningful).
pub fn unoptimized() -> bool {
    env!("HARNESS_OPT_LEVEL") == "0"
}

/// The warning shown first on the terminal and in the report's title of an unoptimized build.
pub const UNOPTIMIZED_WARNING: &str =
    "UNOPTIMIZED BUILD (opt-level 0): the numbers are not meaningful; see scenarios/README.md";

/// "opt-level 3, debug assertions on" and the like; when the harness and the library it
/// measures differ (the dev profile keeps the library's on), both are named.
fn profile() -> String {
    format!(
        "opt-level {}, {}{}",
        env!("HARNESS_OPT_LEVEL"),
        assertions(
            cfg!(debug_assertions),
            shmstream::BUILT_WITH_DEBUG_ASSERTIONS
        ),
        if unoptimized() {
            " (numbers are not meaningful)"
        } else {
            ""
        }
    )
}

/// The debug assertions of the harness and of the library.
fn assertions(harness: bool, library: bool) -> String {
    let on = |b: bool| if b { "on" } else { "off" };
    if harness == library {
        format!("debug assertions {}", on(harness))
    } else {
        format!(
            "debug assertions {} in the library, {} in the harness",
            on(library),
            on(harness)
        )
    }
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SSZ` (no date crate needed).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs)
}

/// Formats UNIX seconds as ISO 8601 UTC (civil-from-days, H. Hinnant's algorithm).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting_matches_known_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn the_profile_names_the_library_s_debug_assertions_where_they_differ() {
        assert_eq!(assertions(false, false), "debug assertions off");
        assert_eq!(
            assertions(false, true),
            "debug assertions on in the library, off in the harness"
        );
        let library = if shmstream::BUILT_WITH_DEBUG_ASSERTIONS {
            "on"
        } else {
            "off"
        };
        assert!(
            profile().contains(&format!("debug assertions {library}")),
            "{}",
            profile()
        );
    }
}

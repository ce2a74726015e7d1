//! The environment block of the report: what ran where.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// Facts about the machine and the build.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    /// UTC time the run started, ISO 8601.
    pub started_utc: String,
    /// CPU model name.
    pub cpu_model: String,
    /// Logical cores available to this process (its affinity mask).
    pub cores: usize,
    /// Cores online on the machine (`/sys/devices/system/cpu/online`), "n/a" where unreadable.
    pub online_cores: String,
    /// What the host does to the cores the scenario pins to.
    pub host: HostTuning,
    /// Working directory of the run.
    pub cwd: String,
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
    /// Git commit of the source tree the harness was built from (with "-dirty" when its
    /// tracked files differ from it), or `HARNESS_BUILT_FROM` where set.
    pub git_commit: String,
    /// GPU and driver, or why none.
    pub gpu: String,
    /// The MVM kernel variant chosen at run time.
    pub mvm_kernel: String,
}

/// What the kernel does to the pinned cores: frequency scaling, SMT siblings, isolation,
/// the real-time throttle. Every field is "n/a" where its file is missing (containers).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostTuning {
    /// Each pinned core.
    pub pinned: Vec<PinnedCore>,
    /// `/sys/devices/system/cpu/smt/active`: "on", "off" or "n/a".
    pub smt: String,
    /// Isolated cores (`/sys/devices/system/cpu/isolated`, else `isolcpus=` of
    /// `/proc/cmdline`): "none" where empty.
    pub isolated: String,
    /// `nohz_full` cores, as `isolated`.
    pub nohz_full: String,
    /// `/proc/sys/kernel/sched_rt_runtime_us`, with what it means.
    pub sched_rt_runtime_us: String,
}

/// One pinned core.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PinnedCore {
    /// Core number.
    pub cpu: usize,
    /// `cpufreq/scaling_governor`, "n/a" where absent.
    pub governor: String,
    /// `topology/thread_siblings_list` (the core itself where SMT is off), "n/a" where absent.
    pub siblings: String,
}

impl HostTuning {
    /// Reads it for the cores `pinned` through `read` (a file's trimmed text, `None` where
    /// it cannot be read).
    pub fn collect(pinned: &[usize], read: impl Fn(&str) -> Option<String>) -> Self {
        let sys = |f: &str| read(&format!("/sys/devices/system/cpu/{f}"));
        let or_na = |v: Option<String>| v.unwrap_or_else(|| "n/a".into());
        let cmdline = read("/proc/cmdline");
        let cores = |file: &str, param: &str| {
            let from_cmdline = || cmdline.as_deref().and_then(|c| cmdline_param(c, param));
            match sys(file) {
                // An off-stack cpumask that was never set prints "(null)": empty, unless
                // the command line says otherwise.
                Some(v) if v == "(null)" => Some(from_cmdline().unwrap_or_default()),
                Some(v) => Some(v),
                None => from_cmdline(),
            }
            .map_or_else(
                || "n/a".into(),
                |v| if v.is_empty() { "none".into() } else { v },
            )
        };
        HostTuning {
            pinned: pinned
                .iter()
                .map(|&cpu| PinnedCore {
                    cpu,
                    governor: or_na(sys(&format!("cpu{cpu}/cpufreq/scaling_governor"))),
                    siblings: or_na(sys(&format!("cpu{cpu}/topology/thread_siblings_list"))),
                })
                .collect(),
            smt: match sys("smt/active").as_deref() {
                Some("1") => "on".into(),
                Some("0") => "off".into(),
                _ => "n/a".into(),
            },
            isolated: cores("isolated", "isolcpus"),
            nohz_full: cores("nohz_full", "nohz_full"),
            sched_rt_runtime_us: rt_runtime(
                read("/proc/sys/kernel/sched_rt_runtime_us").as_deref(),
                read("/proc/sys/kernel/sched_rt_period_us").as_deref(),
            ),
        }
    }

    /// The pinned cores as one line: "cpu 0: governor performance, SMT siblings 0,4; …".
    pub fn pinned_line(&self) -> String {
        if self.pinned.is_empty() {
            return "none".into();
        }
        self.pinned
            .iter()
            .map(|c| {
                format!(
                    "cpu {}: governor {}, SMT siblings {}",
                    c.cpu, c.governor, c.siblings
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The value of kernel parameter `name` in `/proc/cmdline` text (the last one given, as
/// the kernel takes it; "" for a bare flag), `None` where absent.
fn cmdline_param(cmdline: &str, name: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .rev()
        .find_map(|w| match w.split_once('=') {
            Some((k, v)) if k == name => Some(v.to_string()),
            None if w == name => Some(String::new()),
            _ => None,
        })
}

/// `sched_rt_runtime_us` with what it means: -1 leaves real-time tasks unthrottled; else
/// they get that much of each `sched_rt_period_us`.
fn rt_runtime(runtime: Option<&str>, period: Option<&str>) -> String {
    let Some(rt) = runtime else {
        return "n/a".into();
    };
    match (
        rt.parse::<i64>(),
        period.and_then(|p| p.parse::<i64>().ok()),
    ) {
        (Ok(-1), _) => "-1 (real-time tasks never throttled)".into(),
        (Ok(r), Some(p)) if p > 0 => format!(
            "{r} of each {p} µs ({:.0}% for real-time tasks, then throttled)",
            r as f64 * 100.0 / p as f64
        ),
        _ => rt.to_string(),
    }
}

/// Cores in a kernel CPU list ("0-3,8,10-11" → 7), `None` where it does not parse.
fn cpu_list_len(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                b.parse::<usize>()
                    .ok()?
                    .checked_sub(a.parse::<usize>().ok()?)?
                    + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    Some(n)
}

/// The commit of the source tree the harness was built from (`git -C` its workspace root,
/// found at run time; the working directory may be another tree or none), with "-dirty"
/// where its tracked files differ from it.
fn built_from() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().unwrap_or(root);
    let dir = root.to_string_lossy();
    // `--no-optional-locks`: `git status` takes no index.lock in the source tree.
    let git = |args: &[&str]| {
        let mut all = vec!["--no-optional-locks", "-C", &dir];
        all.extend_from_slice(args);
        run("git", &all)
    };
    let toplevel = git(&["rev-parse", "--show-toplevel"]);
    if let Some(why) = foreign_tree(&root, toplevel.as_deref()) {
        return format!("unknown ({why})");
    }
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{c}-dirty") } else { c }
        }
        None => format!("unknown ({dir} has no commit git can read here)"),
    }
}

/// Why git's answers in source tree `root` (canonical) are not its own, given what
/// `git rev-parse --show-toplevel` said there (`None` where it failed): a tree without
/// `.git` inside another repository gets that one's. `None` where they are its own.
fn foreign_tree(root: &Path, toplevel: Option<&str>) -> Option<String> {
    let not_tree = format!("{} is not a git work tree", root.display());
    let Some(top) = toplevel else {
        return Some(format!("{not_tree} here"));
    };
    let top = Path::new(top);
    let top = top.canonicalize().unwrap_or_else(|_| top.to_path_buf());
    (top != root).then(|| format!("{not_tree}: it lies in {}'s", top.display()))
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
    /// Collects the environment now, with what the host does to the `pinned` cores.
    pub fn collect(pinned: &[usize]) -> Self {
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
        // built from, which that machine may not have.
        let git_commit = std::env::var("HARNESS_BUILT_FROM")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(built_from);
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
            online_cores: read("/sys/devices/system/cpu/online")
                .and_then(|l| cpu_list_len(&l))
                .map_or_else(|| "n/a".into(), |n| n.to_string()),
            host: HostTuning::collect(pinned, read),
            cwd: std::env::current_dir()
                .map_or_else(|e| format!("n/a ({e})"), |d| d.display().to_string()),
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

    /// The host's files as a test gives them: `None` for a file not in `files`.
    fn files<'a>(files: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |path| {
            files
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, v)| v.trim().to_string())
        }
    }

    #[test]
    fn the_host_tuning_reads_each_file_and_says_n_a_where_one_is_missing() {
        let host = [
            (
                "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
                "performance\n",
            ),
            (
                "/sys/devices/system/cpu/cpu1/topology/thread_siblings_list",
                "1,9\n",
            ),
            (
                "/sys/devices/system/cpu/cpu2/topology/thread_siblings_list",
                "2\n",
            ),
            ("/sys/devices/system/cpu/smt/active", "1\n"),
            ("/sys/devices/system/cpu/isolated", "2-3\n"),
            ("/sys/devices/system/cpu/nohz_full", "\n"),
            ("/proc/sys/kernel/sched_rt_runtime_us", "950000\n"),
            ("/proc/sys/kernel/sched_rt_period_us", "1000000\n"),
        ];
        let sut = HostTuning::collect(&[1, 2], files(&host));
        assert_eq!(
            sut.pinned_line(),
            "cpu 1: governor performance, SMT siblings 1,9; cpu 2: governor n/a, SMT siblings 2"
        );
        assert_eq!((sut.smt.as_str(), sut.isolated.as_str()), ("on", "2-3"));
        assert_eq!(sut.nohz_full, "none");
        assert_eq!(
            sut.sched_rt_runtime_us,
            "950000 of each 1000000 µs (95% for real-time tasks, then throttled)"
        );
        // A container without /sys nor /proc: every field n/a, nothing fails.
        let bare = HostTuning::collect(&[0], files(&[]));
        assert_eq!(bare.pinned_line(), "cpu 0: governor n/a, SMT siblings n/a");
        for v in [
            &bare.smt,
            &bare.isolated,
            &bare.nohz_full,
            &bare.sched_rt_runtime_us,
        ] {
            assert_eq!(v, "n/a");
        }
        // Without the sysfs files, isolation comes from the kernel's command line.
        let cmdline = [
            (
                "/proc/cmdline",
                "BOOT_IMAGE=/vmlinuz ro isolcpus=domain,3-5 nohz_full=3-5 quiet\n",
            ),
            ("/sys/devices/system/cpu/smt/active", "0\n"),
        ];
        let sut = HostTuning::collect(&[], files(&cmdline));
        assert_eq!(
            (
                sut.isolated.as_str(),
                sut.nohz_full.as_str(),
                sut.smt.as_str()
            ),
            ("domain,3-5", "3-5", "off")
        );
        assert_eq!(sut.pinned_line(), "none");
        // An unset off-stack cpumask reads "(null)": none, or the command line's.
        let null = [("/sys/devices/system/cpu/nohz_full", "(null)\n")];
        assert_eq!(HostTuning::collect(&[], files(&null)).nohz_full, "none");
        let null = [null[0], cmdline[0]];
        assert_eq!(HostTuning::collect(&[], files(&null)).nohz_full, "3-5");
    }

    /// The commit is the source tree's only where git's work tree is that tree itself, not
    /// a repository around it.
    #[test]
    fn only_a_work_tree_of_its_own_names_the_commit() {
        let root = Path::new("/nonexistent-harness-test/src");
        assert_eq!(
            foreign_tree(root, Some("/nonexistent-harness-test/src")),
            None
        );
        assert_eq!(
            foreign_tree(root, Some("/nonexistent-harness-test")).as_deref(),
            Some(
                "/nonexistent-harness-test/src is not a git work tree: it lies in \
                 /nonexistent-harness-test's"
            )
        );
        assert_eq!(
            foreign_tree(root, None).as_deref(),
            Some("/nonexistent-harness-test/src is not a git work tree here")
        );
    }

    #[test]
    fn kernel_cpu_lists_command_lines_and_the_rt_throttle_parse() {
        assert_eq!(cpu_list_len("0-3,8,10-11\n"), Some(7));
        assert_eq!(cpu_list_len("0"), Some(1));
        assert_eq!(cpu_list_len("3-1"), None);
        assert_eq!(cpu_list_len("x"), None);
        assert_eq!(
            cmdline_param("a isolcpus=1 b isolcpus=2,3", "isolcpus"),
            Some("2,3".into())
        );
        assert_eq!(
            cmdline_param("a nohz_full b", "nohz_full"),
            Some(String::new())
        );
        assert_eq!(cmdline_param("nohz_full_x=1", "nohz_full"), None);
        assert_eq!(
            rt_runtime(Some("-1"), None),
            "-1 (real-time tasks never throttled)"
        );
        assert_eq!(rt_runtime(Some("950000"), None), "950000");
        assert_eq!(rt_runtime(None, Some("1000000")), "n/a");
    }

    /// The commit is that of the tree the harness was built from, whatever the working
    /// directory (a run from /tmp said "unknown").
    #[test]
    fn the_commit_is_the_source_trees_not_the_working_directorys() {
        let here = built_from();
        let want = run(
            "git",
            &[
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short=12",
                "HEAD",
            ],
        );
        match want {
            Some(c) => assert!(here.starts_with(&c), "{here} vs {c}"),
            None => assert!(here.starts_with("unknown ("), "{here}"),
        }
    }

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

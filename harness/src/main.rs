//! `harness`: the shmstream benchmark harness.
//!
//! - `harness SCENARIO.toml [--out DIR] [--quick] [--cases REGEX] [--quiet] [--python PATH] [--no-peer]`
//!   runs a scenario and writes `report.md`, `results.json`, `results.csv`,
//!   `details.json`, `.hgrm` files and plots into `DIR` (default `reports/<name>/`).
//! - `harness compare OLD.json NEW.json… [--max-regression 0.2] [--max-regression-sub-us 0.5]
//!   [--require-all]` gates on `ratio_to_floor`, each case judged by its best repeat; exit 1
//!   when the gate fails, 2 when it could not judge (a file unreadable or not results.json).
//! - `harness best --out FILE RUN.json…` merges repeats (how the CI baseline is made).
//! - `harness size --wfs-pixels RxC --actuators N --rate HZ --budget-us US ...` builds,
//!   runs and reports the ao-loop scenario of one geometry, with a verdict table; exit 1
//!   where a form it measured does not pass.
//! - `harness __child SPEC.json` (hidden) is one pinned writer / reader / compute process.
//!
//! Module map: [`scenario`] (TOML schema) → [`run`] (per job: floor, ours, peer) →
//! [`spawn`] (child processes) → [`cases`] / [`floor`] / [`peer`] → [`report`];
//! [`compare`] reads `results.json` back. The only `unsafe` of the package lives in the
//! `harness_sys` library (shared-memory floor region, futex, flock, SIMD dispatch).
#![forbid(unsafe_code)]

mod cases;
mod compare;
mod error;
mod floor;
mod hist;
mod kernel;
mod measure;
mod noise;
mod peer;
#[cfg(test)]
mod peer_partner;
mod report;
mod run;
mod scenario;
mod size;
mod spawn;

#[cfg(test)]
#[path = "../tests/common/script.rs"]
mod script;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{Context, Result};
use crate::run::{JobResult, Runner};
use crate::scenario::{Kind, Scenario};

/// Benchmark harness for shmstream: pinned writer/reader processes, floors measured in
/// the same run, the pyshmem peer, reports.
#[derive(Debug, Parser)]
#[command(
    name = "harness",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Scenario file (TOML), e.g. scenarios/smoke.toml.
    #[arg(required = true)]
    scenario: Option<PathBuf>,
    /// Output folder (default: `reports/<scenario name>/`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Divide warm-up and measuring time by 5 and run one repeat.
    #[arg(long)]
    quick: bool,
    /// Run only cases whose name (or kind) matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    cases: Option<String>,
    /// No progress bar and no per-case lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Python interpreter for the pyshmem peer (default: .venv/bin/python if present, else
    /// python3; the default's absence leaves the peer column empty, a named one's is an error).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Do not run the pyshmem peer.
    #[arg(long)]
    no_peer: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compare a baseline with one or more results.json files (repeats of one scenario,
    /// each case judged by its best repeat); exit 1 if a case's ratio_to_floor dropped too
    /// much, 2 if a file cannot be read or parsed.
    Compare {
        /// Baseline results.json.
        old: PathBuf,
        /// New results.json files.
        #[arg(required = true)]
        new: Vec<PathBuf>,
        /// Largest tolerated relative drop of ratio_to_floor (0.2 = 20 %; 1 or more gates
        /// only cases that lost their measurement).
        #[arg(long, default_value_t = 0.2, value_parser = band, allow_hyphen_values = true)]
        max_regression: f64,
        /// The same for ping-pong cases whose floor iteration is under a microsecond (64 B).
        #[arg(long, default_value_t = 0.5, value_parser = band, allow_hyphen_values = true)]
        max_regression_sub_us: f64,
        /// Fail when a baseline case is missing from NEW or has no ratio_to_floor on either
        /// side (by default such a case is listed, not gated).
        #[arg(long)]
        require_all: bool,
    },
    /// Merge repeats of one scenario into one results.json, each case's best repeat
    /// (how reports/smoke/baseline.json is made; see scenarios/README.md).
    Best {
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// results.json files.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
    },
    /// Size an AO loop: build the scenario for a geometry, run it, write the report set
    /// with a verdict table at the top. Exits 1 where a form it measured does not pass.
    Size(size::SizeArgs),
    /// One child process of a case (internal).
    #[command(name = "__child", hide = true)]
    Child {
        /// The child's spec file.
        spec: PathBuf,
    },
}

/// A `--max-regression` band: a finite relative drop >= 0 (NaN would pass every case, a
/// negative band fail every steady one).
fn band(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a number ({e})"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!(
            "{s:?} is not a relative drop: give a finite number >= 0 (0.2 = 20 %)"
        ));
    }
    Ok(v)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Child { spec }) => spawn::child_main(spec).map(|()| ExitCode::SUCCESS),
        Some(Command::Compare {
            old,
            new,
            max_regression,
            max_regression_sub_us,
            require_all,
        }) => {
            let bands = compare::Bands {
                max_regression: *max_regression,
                max_regression_sub_us: *max_regression_sub_us,
            };
            return compare_exit(run_compare(old, new, bands, *require_all));
        }
        Some(Command::Best { out, runs }) => run_best(out, runs),
        Some(Command::Size(args)) => size::run(args),
        None => run_scenario(&cli),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The runs at `paths`, each case merged by `merge` ([`compare::best_of`] to judge,
/// [`compare::baseline_of`] to make a baseline).
fn read_runs(
    paths: &[PathBuf],
    merge: fn(&[Vec<report::record::Record>]) -> Vec<report::record::Record>,
) -> Result<Vec<report::record::Record>> {
    let runs = paths
        .iter()
        .map(|p| report::record::read_json(p))
        .collect::<Result<Vec<_>>>()?;
    Ok(merge(&runs))
}

/// `compare`'s exit status: its verdict (0 pass, 1 fail), or 2 where it could not judge (a
/// file unreadable or not a results.json), so that CI does not re-measure an error as a
/// regression.
fn compare_exit(result: Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!(
            "error: {e} (compare reads the results.json files a harness run writes; exit 2: \
             nothing was judged)"
        );
        ExitCode::from(2)
    })
}

fn run_compare(
    old: &std::path::Path,
    new: &[PathBuf],
    bands: compare::Bands,
    require_all: bool,
) -> Result<ExitCode> {
    let a = report::record::read_json(old)?;
    let b = read_runs(new, compare::best_of)?;
    let mut cmp = compare::compare(&a, &b, bands);
    cmp.require_all = require_all;
    println!("best of {} run(s) against {}", new.len(), old.display());
    print!("{}", cmp.table());
    if let Some(why) = cmp.failure() {
        println!("FAIL: {why}");
        Ok(ExitCode::FAILURE)
    } else {
        println!("ok: no case's ratio_to_floor dropped by more than its band");
        Ok(ExitCode::SUCCESS)
    }
}

fn run_best(out: &std::path::Path, runs: &[PathBuf]) -> Result<ExitCode> {
    let best = read_runs(runs, compare::baseline_of)?;
    report::record::write_file(&report::record::JsonWriter, &best, out)?;
    println!(
        "{}: best of {} run(s), {} cases",
        out.display(),
        runs.len(),
        best.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn summary_line(r: &JobResult) -> String {
    let j = &r.job;
    let label = j.label();
    if let Some(s) = &r.skipped {
        return format!("{label}: skipped ({s})");
    }
    let ours = match &r.ours {
        Ok(s) => {
            let p = s.pct();
            let mut t = format!(
                "{:.0} Hz, p50 {} µs p99 {} µs",
                s.hz(j.kind),
                report::us(p.p50),
                report::us(p.p99)
            );
            if j.kind == Kind::Mvm {
                t.push_str(&format!(
                    ", {:.2} GFLOP/s",
                    2.0 * (j.shape[0] * j.shape[1]) as f64 * s.hz(j.kind) / 1e9
                ));
            }
            t
        }
        Err(e) => e.lines().next().unwrap_or("failed").to_string(),
    };
    let floor = match (&r.floor, &r.ours) {
        (Ok(f), Ok(_)) => format!(
            "; floor {:.0} Hz (ratio {:.2})",
            f.hz(j.kind),
            r.ratio_to_floor().unwrap_or(f64::NAN)
        ),
        (Ok(f), Err(_)) => format!("; floor {:.0} Hz", f.hz(j.kind)),
        (Err(e), _) => format!("; {}", e.lines().next().unwrap_or("")),
    };
    let peer = match &r.peer {
        Ok(p) => format!("; pyshmem {:.0} Hz", p.hz(j.kind)),
        Err(_) => String::new(),
    };
    format!("{label}: {ours}{floor}{peer}")
}

/// How to run a scenario (the command line's options).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Output folder.
    pub out: Option<PathBuf>,
    /// Shorter timings.
    pub quick: bool,
    /// Case filter.
    pub cases: Option<String>,
    /// No progress output.
    pub quiet: bool,
    /// Python for the peer.
    pub python: Option<PathBuf>,
    /// No peer.
    pub no_peer: bool,
    /// The scenario file, as given (`None`: generated, `harness size`).
    pub scenario_path: Option<PathBuf>,
}

fn run_scenario(cli: &Cli) -> Result<ExitCode> {
    let path = cli
        .scenario
        .as_ref()
        .context("a scenario file is required")?;
    let scenario = Scenario::load(path)?;
    let opts = RunOptions {
        out: cli.out.clone(),
        quick: cli.quick,
        cases: cli.cases.clone(),
        quiet: cli.quiet,
        python: cli.python.clone(),
        no_peer: cli.no_peer,
        scenario_path: Some(path.clone()),
    };
    execute(&scenario, &opts).map(|run| run.code)
}

/// What [`execute`] ran and where it wrote the report set.
#[derive(Debug)]
pub struct Executed {
    /// Failure when a case failed.
    pub code: ExitCode,
    /// The report folder.
    pub out: PathBuf,
    /// One result per job.
    pub results: Vec<JobResult>,
    /// What the host noise probe saw before the cases.
    pub noise: noise::HostNoise,
}

/// Runs `scenario` and writes its report set.
pub fn execute(scenario: &Scenario, cli: &RunOptions) -> Result<Executed> {
    let filter = cli
        .cases
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .context("--cases")?;
    let jobs = scenario.jobs(cli.quick, filter.as_ref());
    if jobs.is_empty() {
        error::bail!("no case of scenario {} matches --cases", scenario.name);
    }
    let out = cli
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(&scenario.name));
    let work = std::env::temp_dir().join(format!("harness-{}", std::process::id()));
    // Stopped from outside (Ctrl-C, SIGTERM, SIGHUP): the run's streams, regions, peer and
    // scratch folder go with it; its pinned children, peer and bridge processes are killed,
    // and waited for, before the clean-up, and no more start (`spawn::stop_tracked`). The
    // stop is held to the exit: the job loop goes on meanwhile (a child killed by Ctrl-C
    // fails its job), and nothing it creates from then on would be cleaned up
    // (`spawn::unless_stopping`). Set up before any thread starts (the peer's probe starts
    // some), so that none takes a signal with its default action, and before anything the
    // clean-up removes exists (it looks for each, the scratch folder too).
    if harness_sys::block_termination().is_ok() {
        let work = work.clone();
        std::thread::spawn(move || {
            let Ok(sig) = harness_sys::wait_termination() else {
                return;
            };
            let pid = std::process::id();
            // Said whole, in one write, before a second signal can end the process: its
            // remedies were cut mid-line by a second signal that came while `eprintln!` wrote
            // the line piece by piece (stderr is unbuffered).
            let line = format!(
                "harness: stopping (signal {sig}): killing the run's processes and removing \
                 its streams; a second signal exits at once, leaving the run's streams, \
                 /dev/shm regions and scratch folder not yet removed: then remove them with \
                 `shmstream purge --prefix hs{pid}-`, `shmstream purge --prefix m-hs{pid}-` \
                 (bridge mirrors), `rm -f /dev/shm/hs{pid}-*` and `rm -r {}`\n",
                work.display()
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
            // A second signal, while the stop waits for its children or a stream lock, ends
            // the process at once (`_exit`: no atexit handler, destructor or lock wait),
            // leaving what was not yet removed. (The signals are blocked: one that came
            // during the line above waits for this thread.)
            std::thread::spawn(|| {
                if let Ok(sig) = harness_sys::wait_termination() {
                    harness_sys::exit_now(128 + sig);
                }
            });
            let _stopped = spawn::stop_tracked();
            run::clean_up(pid, &work);
            std::process::exit(128 + sig);
        });
    }
    // What the run cannot do without is checked before anything is measured: a report folder
    // found unwritable, or an interpreter the user named found unusable, only after every
    // case would lose the run.
    let peer_setup = if cli.no_peer {
        peer::PeerSetup::Missing("disabled with --no-peer".into())
    } else {
        peer::probe(cli.python.as_deref())
    };
    // (A GPU row has no peer: `Runner::peer`.)
    let runs_peer = !cli.no_peer && jobs.iter().any(|j| j.peer && !j.device.is_gpu());
    if let (Some(python), peer::PeerSetup::Missing(why), true) =
        (&cli.python, &peer_setup, runs_peer)
    {
        error::bail!(
            "--python {}: {why}; pass an interpreter that imports pyshmem and numpy \
             (`scripts/test.sh` makes .venv/bin/python), or --no-peer to run without the peer",
            python.display()
        );
    }
    report::prepare_folder(&out)?;
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    for w in scenario.core_warnings() {
        eprintln!("harness: warning: {w}");
    }
    if report::env::unoptimized() {
        eprintln!("harness: {}", report::env::UNOPTIMIZED_WARNING);
    }
    let started = Instant::now();
    let env = report::env::Environment::collect(&scenario.pinned_cores());
    let record_cost = hist::measure_record_cost(20_000_000);
    let noise = noise::probe(
        &[scenario.defaults.writer_cpu, scenario.defaults.reader_cpu],
        scenario.noise_seconds / if cli.quick { 5.0 } else { 1.0 },
    );
    let runner = Runner::new(work.clone(), peer_setup);
    let jobs = &jobs;
    let bar = if !cli.quiet && std::io::stderr().is_terminal() {
        let b = ProgressBar::new(jobs.len() as u64);
        b.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    if !cli.quiet {
        eprintln!(
            "harness: {} ({} jobs) → {}; histogram record {:.1} ns/sample; peer: {}",
            scenario.name,
            jobs.len(),
            out.display(),
            record_cost.record_ns,
            match runner.peer_setup() {
                peer::PeerSetup::Ready { pyshmem, .. } => format!("pyshmem {pyshmem}"),
                peer::PeerSetup::Missing(w) => format!("none ({w})"),
            }
        );
    }
    let mut results = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        if spawn::stopping() {
            error::bail!("stopped by a signal before case {}", job.label());
        }
        if let Some(b) = &bar {
            b.set_message(job.label());
        }
        let r = runner.run_job(i, job);
        let line = summary_line(&r);
        match &bar {
            Some(b) => {
                b.println(line);
                b.inc(1);
            }
            None if !cli.quiet => eprintln!("{line}"),
            None => {}
        }
        results.push(r);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let command_line = std::env::args()
        .enumerate()
        .map(|(i, a)| if i == 0 { "harness".to_string() } else { a })
        .collect::<Vec<_>>()
        .join(" ");
    let input = report::ReportInput {
        scenario,
        results: &results,
        env: &env,
        peer: runner.peer_setup(),
        record_cost,
        noise: &noise,
        command_line,
        scenario_path: cli.scenario_path.as_deref().map(|p| {
            std::path::absolute(p).map_or_else(
                |e| format!("{} (not made absolute: {e})", p.display()),
                |a| a.display().to_string(),
            )
        }),
        elapsed_s: started.elapsed().as_secs_f64(),
        quick: cli.quick,
    };
    let written = report::write_all(&input, &out);
    if std::env::var_os("HARNESS_KEEP_WORK").is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    let targets = written?;
    let failed = failure_lines(&results);
    if !cli.quiet {
        let pass = targets.iter().filter(|t| t.pass == Some(true)).count();
        let fail = targets.iter().filter(|t| t.pass == Some(false)).count();
        eprintln!(
            "targets: {pass} pass, {fail} fail; report: {}",
            out.join("report.md").display()
        );
    }
    let code = if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        failed.iter().for_each(|l| eprintln!("{l}"));
        ExitCode::FAILURE
    };
    Ok(Executed {
        code,
        out,
        results,
        noise,
    })
}

/// What a run says on stderr of its failed cases ([`JobResult::error`]: the library side or
/// its floor), a line each naming the case and why, then their count; empty when none failed.
fn failure_lines(results: &[JobResult]) -> Vec<String> {
    let failed: Vec<_> = results
        .iter()
        .filter_map(|r| r.error().map(|e| (r.job.label(), e)))
        .collect();
    if failed.is_empty() {
        return Vec::new();
    }
    let mut lines: Vec<String> = failed
        .iter()
        .map(|(case, why)| format!("error: case {case}: {why}"))
        .collect();
    let names: Vec<&str> = failed.iter().map(|(case, _)| case.as_str()).collect();
    lines.push(format!(
        "error: {} case(s) failed: {}",
        failed.len(),
        names.join(", ")
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed floor fails the run, as a failed library side does: the case is named with
    /// the floor's error on stderr, and its results row carries it (it was a row of nulls and
    /// exit 0); a skipped case fails nothing.
    #[test]
    fn a_failed_floor_fails_the_run_naming_the_case_and_its_error() {
        let job = Scenario::parse("name=\"x\"\n[[case]]\nkind=\"pingpong\"\nsizes=[[8]]\n")
            .unwrap()
            .jobs(false, None)
            .remove(0);
        let side = run::Side {
            m: measure::Measured::default(),
            hist: hist::new(),
            placement: "writer@0 reader@1".into(),
        };
        let result = |floor: run::SideResult, skipped: Option<String>| JobResult {
            job: job.clone(),
            ours: Ok(side.clone()),
            floor,
            peer: Err("peer disabled".into()),
            skipped,
            ao: None,
        };
        let failed = result(Err("floor failed: no report".into()), None);
        let lines = failure_lines(std::slice::from_ref(&failed));
        assert_eq!(
            lines,
            [
                format!("error: case {}: floor failed: no report", job.label()),
                format!("error: 1 case(s) failed: {}", job.label()),
            ]
        );
        let row = report::record::Record::from_result(&failed);
        assert_eq!(row.error.as_deref(), Some("floor failed: no report"));
        let fine = result(Ok(side.clone()), None);
        assert!(failure_lines(std::slice::from_ref(&fine)).is_empty());
        assert_eq!(report::record::Record::from_result(&fine).error, None);
        let skipped = result(Err("skipped: no GPU".into()), Some("no GPU".into()));
        assert!(failure_lines(&[skipped]).is_empty());
    }

    fn compare_with(flag: &str, value: &str) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(["harness", "compare", "old.json", "new.json", flag, value])
    }

    /// A file compare cannot read or parse exits 2 (an error), not 1 (a regression).
    #[test]
    fn compare_exits_2_on_an_unreadable_or_unparsable_file() {
        let dir = std::env::temp_dir().join(format!("compare-exit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "not json").unwrap();
        let bands = compare::Bands {
            max_regression: 0.2,
            max_regression_sub_us: 0.2,
        };
        for (old, new) in [
            (dir.join("absent.json"), bad.clone()),
            (bad.clone(), bad.clone()),
        ] {
            let code = compare_exit(run_compare(&old, &[new], bands, false));
            assert_eq!(code, ExitCode::from(2), "{}", old.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A band that is not a finite relative drop >= 0 is refused before anything is read:
    /// NaN compared false with every drop and passed every case.
    #[test]
    fn a_nan_negative_or_infinite_band_is_refused_naming_the_flag() {
        for flag in ["--max-regression", "--max-regression-sub-us"] {
            for bad in ["nan", "NaN", "-0.1", "inf", "-inf", "x"] {
                let err = compare_with(flag, bad).unwrap_err().to_string();
                assert!(
                    err.contains(flag) && err.contains(bad),
                    "{flag} {bad}: {err}"
                );
            }
            for good in ["0", "0.2", "1"] {
                let cli = compare_with(flag, good).unwrap();
                let Some(Command::Compare {
                    max_regression,
                    max_regression_sub_us,
                    ..
                }) = cli.command
                else {
                    panic!("not compare");
                };
                let got = if flag == "--max-regression" {
                    max_regression
                } else {
                    max_regression_sub_us
                };
                assert_eq!(got, good.parse::<f64>().unwrap());
            }
        }
    }
}

//! Report writers: `report.md`, `results.json` + `results.csv`, `details.json`,
//! `.hgrm` files and plots, all into the run's output folder.

pub mod ao;
pub mod ao_plots;
pub mod bridge;
pub mod env;
pub mod markdown;
pub mod plots;
pub mod record;
pub mod targets;

use std::path::Path;

use serde_json::json;

use crate::error::{Context, Result};
use crate::hist::{Percentiles, RecordCost};
use crate::noise::HostNoise;
use crate::peer::PeerSetup;
use crate::run::{JobResult, SideResult};
use crate::scenario::Scenario;

use self::env::Environment;
use self::record::{CsvWriter, JsonWriter, Record, write_file};

/// Everything the writers need.
#[derive(Debug)]
pub struct ReportInput<'a> {
    /// The scenario.
    pub scenario: &'a Scenario,
    /// One result per job, in run order.
    pub results: &'a [JobResult],
    /// The environment.
    pub env: &'a Environment,
    /// Peer availability.
    pub peer: &'a PeerSetup,
    /// Measured histogram recording cost.
    pub record_cost: RecordCost,
    /// What the machine took from the scenario's cores before the cases.
    pub noise: &'a HostNoise,
    /// How the harness was invoked.
    pub command_line: String,
    /// The scenario file's absolute path; `None` for a generated scenario (`harness size`).
    pub scenario_path: Option<String>,
    /// Wall time of the run.
    pub elapsed_s: f64,
    /// `--quick`.
    pub quick: bool,
}

/// Makes the report folder `out` and checks that it takes a file, before a run measures
/// anything: a folder that cannot take the report (a file of that name, no permission, a
/// name too long, a full disk) would otherwise be found after every case, losing the run.
pub fn prepare_folder(out: &Path) -> Result<()> {
    let remedy = "pass another folder with --out";
    std::fs::create_dir_all(out)
        .with_context(|| format!("making the report folder {} ({remedy})", out.display()))?;
    let probe = out.join(format!(".harness-{}-write-check", std::process::id()));
    std::fs::File::create(&probe).with_context(|| {
        format!(
            "the report folder {} does not take a file ({remedy})",
            out.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Writes every report file into `out`; returns the evaluated targets.
pub fn write_all(input: &ReportInput<'_>, out: &Path) -> Result<Vec<targets::Target>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let records: Vec<Record> = input.results.iter().map(Record::from_result).collect();
    write_file(&JsonWriter, &records, &out.join("results.json"))?;
    write_file(&CsvWriter, &records, &out.join("results.csv"))?;
    let targets = targets::evaluate(input.results, input.record_cost.record_ns);

    // A run into an earlier run's folder (`--cases`) would leave its figures beside a
    // results.json that no longer lists them.
    let hgrm = out.join("hgrm");
    remove_written(&hgrm, &["hgrm"])?;
    // Plots are optional (below): an earlier run's that cannot go is said, not fatal.
    if let Err(e) = remove_written(&out.join("plots"), &["png", "svg"]) {
        eprintln!("warning: an earlier run's plots left in place: {e:#}");
    }
    std::fs::create_dir_all(&hgrm)?;
    for r in input.results {
        for (side, s) in [("ours", &r.ours), ("floor", &r.floor), ("peer", &r.peer)] {
            if let Ok(s) = s {
                let name = format!(
                    "{}_{}_{side}.hgrm",
                    plots::sanitize(&r.job.case),
                    r.job.shape_str()
                );
                crate::hist::write_hgrm(&s.hist, &hgrm.join(name))?;
            }
        }
    }
    let plot_files = match plots::write_all(input.results, &out.join("plots")) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("warning: plots not written: {e}");
            Vec::new()
        }
    };

    let details = json!({
        "scenario": input.scenario.name,
        "command": input.command_line,
        "scenario_path": input.scenario_path,
        "cwd": input.env.cwd,
        "quick": input.quick,
        "elapsed_s": input.elapsed_s,
        "environment": input.env,
        "peer_setup": input.peer,
        "histogram_record_cost": input.record_cost,
        "host_noise": input.noise,
        "targets": targets,
        "plots": plot_files,
        "jobs": input.results.iter().map(|r| json!({
            "job": r.job,
            "skipped": r.skipped,
            "ours": side_json(&r.ours, r.job.kind),
            "floor": side_json(&r.floor, r.job.kind),
            "peer": side_json(&r.peer, r.job.kind),
            "ao": r.ao,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        out.join("details.json"),
        serde_json::to_vec_pretty(&details)?,
    )?;

    let md = markdown::render(input, &records, &targets)?;
    std::fs::write(out.join("report.md"), md)?;
    Ok(targets)
}

/// Removes the regular files of `dir` whose extension is one of `exts` (what the report
/// writes there), nothing else: no folder, no link, nothing through a link (a `dir` that is
/// a link is left alone). A missing `dir` has nothing to remove.
fn remove_written(dir: &Path, exts: &[&str]) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let ours = path
            .extension()
            .is_some_and(|x| exts.iter().any(|e| x == *e));
        if ours && entry.file_type()?.is_file() {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing the earlier {}", path.display()))?;
        }
    }
    Ok(())
}

fn side_json(s: &SideResult, kind: crate::scenario::Kind) -> serde_json::Value {
    match s {
        Ok(s) => json!({
            "hz": s.hz(kind),
            "repeat_hz": s.m.repeat_hz,
            "iterations": s.m.iterations,
            "warmup_iterations": s.m.warmup_iterations,
            "percentiles_ns": Percentiles::of(&s.hist),
            "placement": s.placement,
            "notes": s.m.notes.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        }),
        Err(e) => json!({ "error": e }),
    }
}

/// "64 B", "4 KiB", "1.5 MiB".
pub fn human_bytes(b: usize) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Hz with thin grouping, as the seed prints them: "180 311", "20.4"; below 1 Hz with 3
/// significant digits: "0.0391".
pub fn fmt_hz(v: f64) -> String {
    if v > 0.0 && v < 1.0 {
        let decimals = (2.0 - v.log10().floor()) as usize;
        return format!("{v:.decimals$}");
    }
    if v < 100.0 {
        return format!("{v:.1}");
    }
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// A rate in a list or a sentence, whole Hz without grouping ("12800", "100"); below
/// 100 Hz with 3 significant digits, trailing zeros dropped ("3.86", "5", "0.0391"): whole
/// Hz read the rate ladder's rungs at 3.86, 4 and 4.12 Hz as "4" each.
pub fn fmt_rate_plain(v: f64) -> String {
    if !(v > 0.0 && v < 100.0) {
        return format!("{v:.0}");
    }
    let decimals = (2.0 - v.log10().floor()).max(0.0) as usize;
    let s = format!("{v:.decimals$}");
    match s.contains('.') {
        true => s.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => s,
    }
}

/// Formats `Some` with `f`, `None` as "—".
pub fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or("—".into(), f)
}

/// Percentile `q` (`ns`) of `n` samples in µs, or "—" where `n` does not support it
/// ([`crate::hist::supports`]: at least ten samples beyond it).
pub fn us_at(ns: u64, q: f64, n: u64) -> String {
    if crate::hist::supports(n, q) {
        us(ns)
    } else {
        "—".into()
    }
}

/// "p50 / p99 µs" of `h`, each where its samples support it ([`us_at`]).
pub fn p50_p99(h: &hdrhistogram::Histogram<u64>) -> String {
    let n = h.len();
    format!(
        "{} / {} µs",
        us_at(h.value_at_quantile(0.5), 0.5, n),
        us_at(h.value_at_quantile(0.99), 0.99, n)
    )
}

/// The rule [`us_at`] applies, for the notes over the tables that show percentiles.
pub const SUPPORT_NOTE: &str = "n: latency samples. A percentile is shown where at least 10 samples lie beyond it \
     (n ≥ 10 / (1 − q): 20 for p50, 100 for p90, 1000 for p99, 10 000 for p99.9), else \"—\" \
     (`results.json` keeps every value).";

/// ns → "12.34" µs.
pub fn us(ns: u64) -> String {
    let v = ns as f64 / 1e3;
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_formatted_like_the_seed() {
        assert_eq!(fmt_hz(180_311.4), "180 311");
        assert_eq!(fmt_hz(9_922.0), "9 922");
        assert_eq!(fmt_hz(20.44), "20.4");
        assert_eq!(fmt_hz(0.625), "0.625");
        assert_eq!(fmt_hz(5.0 / 128.0), "0.0391");
        assert_eq!(fmt_rate_plain(12_800.0), "12800");
        assert_eq!(fmt_rate_plain(0.3125), "0.312");
        assert_eq!(fmt_rate_plain(5.0 / 128.0), "0.0391");
        assert_eq!(human_bytes(64), "64 B");
        assert_eq!(human_bytes(65536), "64 KiB");
        assert_eq!(human_bytes(40000), "39.1 KiB");
        assert_eq!(us(13_456), "13.5");
        assert_eq!(us(900), "0.90");
    }

    /// Below 100 Hz a rate keeps 3 significant digits: whole Hz printed the rate ladder's
    /// rungs at 3.86, 4 and 4.12 Hz as "4" each, and 3.86 Hz sustainable as "4".
    #[test]
    fn rates_below_100_hz_keep_3_significant_digits() {
        assert_eq!(fmt_rate_plain(3.856), "3.86");
        assert_eq!(fmt_rate_plain(12.5), "12.5");
        assert_eq!(fmt_rate_plain(4.0), "4");
        assert_eq!(fmt_rate_plain(99.96), "100");
        assert_eq!(fmt_rate_plain(0.5), "0.5");
        assert_eq!(fmt_rate_plain(100.0), "100");
        assert_eq!(fmt_rate_plain(1000.0), "1000");
        assert_eq!(fmt_rate_plain(2400.4), "2400");
    }
}

#[cfg(test)]
mod write_tests {
    use super::*;
    use crate::hist::RecordCost;
    use crate::measure::Measured;
    use crate::run::Side;

    fn side(ns: u64, hz: f64) -> Side {
        let mut hist = crate::hist::new();
        for k in 0..1000 {
            hist.record(ns + k % 7).unwrap();
        }
        let m = Measured {
            repeat_hz: vec![hz],
            repeat_busy_hz: vec![hz],
            iterations: 1000,
            ..Default::default()
        };
        Side {
            m,
            hist,
            placement: "solo@0".into(),
        }
    }

    /// The report input of a test run of `scenario`: no Python peer, no host noise.
    fn test_input<'a>(
        scenario: &'a Scenario,
        results: &'a [JobResult],
        env: &'a Environment,
        peer: &'a PeerSetup,
        noise: &'a HostNoise,
    ) -> ReportInput<'a> {
        ReportInput {
            scenario,
            results,
            env,
            peer,
            record_cost: RecordCost {
                record_ns: 12.0,
                clock_ns: 20.0,
                samples: 10,
            },
            noise,
            command_line: "harness w.toml".into(),
            scenario_path: Some("/work/w.toml".into()),
            elapsed_s: 1.0,
            quick: false,
        }
    }

    /// report.md for one float32 roundtrip case whose iterations take `ours_ns` and its
    /// floor's `floor_ns`.
    fn roundtrip_report(ours_ns: u64, floor_ns: u64) -> String {
        report_of(
            "name=\"w\"\n[[case]]\nkind=\"roundtrip\"\nsizes=[[100,100]]\n",
            ours_ns,
            floor_ns,
        )
    }

    /// report.md for the one job of the scenario `toml`, as [`roundtrip_report`].
    fn report_of(toml: &str, ours_ns: u64, floor_ns: u64) -> String {
        report_with(
            toml,
            side(ours_ns, 1e9 / ours_ns as f64),
            side(floor_ns, 1e9 / floor_ns as f64),
        )
    }

    /// report.md for the one job of the scenario `toml` with these sides.
    fn report_with(toml: &str, ours: Side, floor: Side) -> String {
        let scenario = Scenario::parse(toml).unwrap();
        let results = [JobResult {
            job: scenario.jobs(false, None).remove(0),
            ours: Ok(ours),
            floor: Ok(floor),
            peer: Err("no python".into()),
            skipped: None,
            ao: None,
        }];
        let env = Environment::collect(&[0, 1]);
        let (peer, noise) = (PeerSetup::Missing("no python".into()), HostNoise::default());
        let input = test_input(&scenario, &results, &env, &peer, &noise);
        let records: Vec<Record> = results.iter().map(Record::from_result).collect();
        let targets = targets::evaluate(&results, 12.0);
        markdown::render(&input, &records, &targets).unwrap()
    }

    /// A 25-round-trip pingpong shows its count and the percentiles 25 samples support
    /// (p50 and the maximum), not p90 … p99.9, which were all its largest sample; the floor's
    /// 1000 support its p99.
    #[test]
    fn percentiles_too_few_samples_support_are_not_shown() {
        let mut ours = side(20_000, 50_000.0);
        ours.hist = crate::hist::new();
        for k in 1..=25u64 {
            ours.hist.record(10_000 * k).unwrap();
        }
        let md = report_with(
            "name=\"w\"\n[[case]]\nkind=\"pingpong\"\nsizes=[[100]]\n",
            ours,
            side(5_000, 200_000.0),
        );
        let row = |header: &str| {
            let at = md.find(header).unwrap_or_else(|| panic!("{header}: {md}"));
            let line = md[at..].lines().nth(2).unwrap();
            line.split(" | ").map(str::to_string).collect::<Vec<_>>()
        };
        let pp = row("| case | payload | Hz | n |");
        // n, p50, p90, p99, p99.9, max, floor p50, floor p99.
        assert_eq!(
            pp[3..11],
            [
                "25 / 1000 / —",
                "130.0",
                "—",
                "—",
                "—",
                "250.1",
                "5.00",
                "5.01"
            ],
            "{pp:?}"
        );
        let all = row("| case | shape | dtype | device | wait | Hz | bytes/s | GFLOP/s | n |");
        assert_eq!(
            all[8..14],
            ["25", "130.0", "—", "—", "—", "250.1"],
            "{all:?}"
        );
        assert!(md.contains("20 for p50, 100 for p90, 1000 for p99"), "{md}");
    }

    /// The roundtrip's floor is described as what `cases::roundtrip` runs: a bare publish
    /// and snapshot, not two bare copies.
    #[test]
    fn the_roundtrip_floor_is_described_as_the_bare_publish_and_snapshot_it_runs() {
        let md = roundtrip_report(4000, 3000);
        assert!(!md.contains("two `memcpy`s"), "{md}");
        assert!(
            md.contains("Floor: a bare publish then snapshot")
                && md.contains("the odd/even sequence")
                && md.contains("the re-check"),
            "{md}"
        );
    }

    /// The ping-pong section describes the floor the CPU case runs, the harness's port of
    /// the C floor in ours' processes, for each wait form by the name its rows carry.
    #[test]
    fn the_pingpong_floor_is_described_as_the_port_it_runs_for_each_wait_form() {
        let md = report_of(
            "name=\"w\"\n[[case]]\nkind=\"pingpong\"\nwait=\"park\"\nsizes=[[64]]\ndtype=\"uint8\"\n",
            40_000,
            40_000,
        );
        assert!(!md.contains("for futex"), "{md}");
        assert!(
            md.contains("(`FloorPing` / `FloorEcho`, a port of the C `pingpong_payload`)")
                && md.contains("then sleeping in FUTEX_WAIT (`adaptive`)")
                && md.contains("asleep in FUTEX_WAIT at once (`park`)")
                && md.contains("in ours' two processes, in 10 ms slices alternating with ours"),
            "{md}"
        );
    }

    /// A floor must bound what it is compared with: a ratio above 1.05 (1.10 for a floor in
    /// other processes) is flagged (not failed), one below 1 is not.
    #[test]
    fn a_ratio_above_the_floor_is_flagged_in_the_report() {
        let flag =
            "> 1.05: the floor may not bound this case (it measures something else, or noise)";
        let md = roundtrip_report(2000, 3000);
        assert!(
            md.contains(&format!("`roundtrip/100x100`: ratio 1.50 {flag}")),
            "{md}"
        );
        // Nor does the void comparison pass its target (result "n/a": pass is None).
        assert!(
            md.contains(
                "| roundtrip 100x100 vs floor (median iteration) | n/a (the floor does not \
                 bound ours: ratio 1.50 above the slack 1.05) | ≥ 0.75× | n/a |"
            ),
            "{md}"
        );
        let md = roundtrip_report(4000, 3800);
        assert!(!md.contains(flag), "{md}");
    }

    /// An earlier run's `.hgrm` files and plots go before a run writes into its folder; what
    /// the report does not write (another extension, a folder, a link and what it points to,
    /// files beside `hgrm/` and `plots/`) stays.
    #[test]
    fn an_earlier_runs_histograms_and_plots_are_removed_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("report-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (hgrm, plots, elsewhere) = (dir.join("hgrm"), dir.join("plots"), dir.join("keep"));
        for d in [&hgrm, &plots, &elsewhere, &plots.join("sub.png")] {
            std::fs::create_dir_all(d).unwrap();
        }
        let outside = elsewhere.join("target.png");
        for f in [
            hgrm.join("old_64_ours.hgrm"),
            plots.join("old.png"),
            plots.join("old.svg"),
            hgrm.join("notes.txt"),
            plots.join("notes.txt"),
            dir.join("stray.png"),
            outside.clone(),
        ] {
            std::fs::write(f, "x").unwrap();
        }
        std::os::unix::fs::symlink(&outside, plots.join("link.png")).unwrap();
        remove_written(&hgrm, &["hgrm"]).unwrap();
        remove_written(&plots, &["png", "svg"]).unwrap();
        remove_written(&dir.join("missing"), &["png"]).unwrap();
        let mut left: Vec<String> = walk(&dir)
            .into_iter()
            .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "hgrm",
                "hgrm/notes.txt",
                "keep",
                "keep/target.png",
                "plots",
                "plots/link.png",
                "plots/notes.txt",
                "plots/sub.png",
                "stray.png"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every path under `dir`, links not followed.
    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            out.push(e.path());
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
        out
    }

    #[test]
    fn every_report_file_is_written_with_seed_columns_and_skip_lines() {
        let scenario = Scenario::parse(
            "name=\"w\"\n[[case]]\nkind=\"roundtrip\"\nsizes=[[100,100]]\n[[case]]\nkind=\"roundtrip\"\ndevice=\"cuda:0\"\nsizes=[[100,100]]\n",
        )
        .unwrap();
        let jobs = scenario.jobs(false, None);
        let results = vec![
            JobResult {
                job: jobs[0].clone(),
                ours: Ok(side(4000, 250_000.0)),
                floor: Ok(side(3000, 330_000.0)),
                peer: Err("no python".into()),
                skipped: None,
                ao: None,
            },
            JobResult {
                job: jobs[1].clone(),
                ours: Err("skipped".into()),
                floor: Err("skipped".into()),
                peer: Err("skipped".into()),
                skipped: Some("cuda:0: no CUDA driver".into()),
                ao: None,
            },
        ];
        let env = Environment::collect(&[0, 1]);
        let (peer, noise) = (PeerSetup::Missing("no python".into()), HostNoise::default());
        let input = test_input(&scenario, &results, &env, &peer, &noise);
        let dir = std::env::temp_dir().join(format!("report-test-{}", std::process::id()));
        let targets = write_all(&input, &dir).unwrap();
        let pass = targets
            .iter()
            .find(|t| t.name.starts_with("roundtrip 100x100"))
            .unwrap();
        assert_eq!(pass.pass, Some(true), "{pass:?}");
        let recs = record::read_json(&dir.join("results.json")).unwrap();
        assert_eq!(recs.len(), 2);
        let r = recs[0].ratio_to_floor.unwrap();
        assert!((r - 0.75).abs() < 0.01, "{r}");
        assert_eq!(recs[1].hz, None);
        // results.json says which case was skipped (and why) and which ran.
        assert_eq!(recs[0].skipped, None);
        assert_eq!(recs[1].skipped.as_deref(), Some("cuda:0: no CUDA driver"));
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(
            md.contains("| 100×100 | 0.038 | 180 311 | 14.42 | **250 000** |"),
            "{md}"
        );
        assert!(md.contains("`roundtrip-cuda0/100x100` skipped: cuda:0: no CUDA driver"));
        assert!(md.contains("| Host noise | not probed |"), "{md}");
        assert!(dir.join("hgrm/roundtrip_100x100_ours.hgrm").exists());
        assert!(dir.join("plots/latency_roundtrip_100x100.png").exists());
        assert!(dir.join("results.csv").exists() && dir.join("details.json").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

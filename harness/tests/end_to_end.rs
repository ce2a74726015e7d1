//! Runs the harness binary on a tiny scenario: children spawn, pin, meet on the library's
//! streams, report back; every report file appears; `compare` gates as documented.

mod common;

use common::script::write_script;
use common::{
    Bounded, RUN_LIMIT, assert_ran, details, harness, pinned_runs, python, results, run_bounded,
    run_on, scratch, shm_objects, streams, write_file,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SCENARIO: &str = r#"
name = "e2e"
noise_seconds = 0.2
[defaults]
min_seconds = 0.03
warmup = 0.01
repeats = 2
timeout_s = 60
peer = false
[[case]]
kind = "roundtrip"
sizes = [[64, 64]]
[[case]]
kind = "pingpong"
wait = "spin"
dtype = "uint8"
sizes = [[64]]
[[case]]
kind = "pingpong"
wait = "futex" # the old name of "park"
sizes = [[16]]
[[case]]
kind = "mvm"
sizes = [[64, 64]]
[[case]]
kind = "roundtrip"
device = "cuda:0"
sizes = [[8]]
"#;

/// Where the kernel uses the driver's core too (row-parallel over both cores), the floor
/// is timed with the driver asleep and, every other slice, yielding beside the kernel as
/// it does in the pipeline; the floor is the faster of the two, noted with both medians.
#[test]
fn an_mvm_floor_beside_the_drivers_core_is_timed_both_ways_and_the_faster_kept() {
    let _runs = pinned_runs();
    let dir = scratch("mvm-beside");
    let scenario = write_file(
        &dir,
        "beside.toml",
        "name = \"beside\"\nnoise_seconds = 0\n[defaults]\nmin_seconds = 0.1\nwarmup = 0.02\n\
         repeats = 2\nwriter_cpu = 0\nreader_cpu = 1\ntimeout_s = 60\npeer = false\n\
         [[case]]\nkind = \"mvm\"\nsizes = [[512, 512]]\n",
    );
    let out = dir.join("out");
    assert_ran(&run_bounded(&mut run_on(&scenario, &out), RUN_LIMIT));
    let recs = results(&out);
    let r = &recs.as_array().unwrap()[0];
    assert!(r["ratio_to_floor"].as_f64().unwrap() > 0.0, "{r}");
    let details = details(&out);
    let floor = &details["jobs"][0]["floor"];
    let note = floor["notes"]["floor driver"].as_str();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores >= 2 {
        // 512 × 512 runs on both cores: the driver yields in the pipeline.
        let note = note.unwrap_or_else(|| panic!("no floor driver note: {floor}"));
        assert!(
            note.contains("the driver asleep ") && note.contains("yielding beside the kernel "),
            "{note}"
        );
    } else {
        assert!(note.is_none(), "{floor}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tiny_scenario_runs_every_kind_and_writes_every_report_file() {
    let _runs = pinned_runs();
    let dir = scratch("run");
    let scenario = write_file(&dir, "e2e.toml", SCENARIO);
    let out = dir.join("out");
    // Run from the scratch folder (outside any git tree), the scenario named relative to it.
    assert_ran(&run_bounded(
        run_on(std::path::Path::new("e2e.toml"), &out).current_dir(&dir),
        RUN_LIMIT,
    ));
    for f in ["report.md", "results.json", "results.csv", "details.json"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let recs = results(&out);
    let recs = recs.as_array().unwrap();
    assert_eq!(recs.len(), 5);
    for r in &recs[..4] {
        assert!(r["hz"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["ratio_to_floor"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["p50_ns"].as_u64().unwrap() > 0, "{r}");
        assert!(r["peer_hz"].is_null());
    }
    assert!(recs[3]["gflops"].as_f64().unwrap() > 0.0);
    // The GPU case runs wherever the library (probed here, not taken from the harness's
    // report) sees a CUDA device, and is skipped with its reason only where it sees none.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    if !shmstream::gpu_available() {
        assert!(md.contains("skipped: cuda:0:"), "no skip reason: {md}");
        assert!(
            recs[4]["hz"].is_null(),
            "a skipped case has no figures: {}",
            recs[4]
        );
    } else {
        assert!(
            recs[4]["hz"].as_f64().is_some_and(|v| v > 0.0),
            "the GPU case ran: {}\n{md}",
            recs[4]
        );
    }
    // Every CPU case's floor alternated with ours in ours' own processes.
    let details = details(&out);
    let jobs = details["jobs"].as_array().unwrap();
    for j in &jobs[..4] {
        let passes = j["floor"]["notes"]["floor passes"].as_str().unwrap_or("");
        assert!(
            passes.contains("alternating with ours"),
            "floor passes {passes:?}: {}",
            j["floor"]
        );
        assert!(
            j["floor"]["iterations"].as_u64().unwrap() > 0,
            "{}",
            j["floor"]
        );
    }
    // The host noise probe ran on the defaults' cores for the scenario's noise_seconds.
    assert!(
        md.contains("| Host noise | a thread spinning 0.2 s on each core: cpu 0: "),
        "{md}"
    );
    // The host as it bears on the pinned cores, each row there (n/a where a file is not).
    for row in [
        "| Pinned cores | cpu 0: governor ",
        "| SMT | ",
        "| Isolated cores | isolcpus ",
        "| sched_rt_runtime_us | ",
        " cores in this process's affinity mask, ",
    ] {
        assert!(md.contains(row), "{row}: {md}");
    }
    // Where it ran from, and from which scenario, absolute; the commit is the source
    // tree's, not the working directory's (which is none).
    let (cwd, path) = (dir.display().to_string(), scenario.display().to_string());
    assert_eq!(details["cwd"], cwd.as_str());
    assert_eq!(details["scenario_path"], path.as_str());
    assert!(
        md.contains(&format!("in `{cwd}` (scenario `{path}`)")),
        "{md}"
    );
    let commit = details["environment"]["git_commit"].as_str().unwrap();
    // Where git cannot read the tree (no git, a tarball, "dubious ownership"), "unknown (…)".
    let tree = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert!(
        std::env::var_os("HARNESS_BUILT_FROM").is_some()
            || if tree.is_empty() {
                commit.starts_with("unknown (")
            } else {
                commit.starts_with(&tree)
            },
        "{commit} is not the source tree's {tree:?}"
    );
    assert!(out.join("hgrm/pingpong-spin-uint8_64_ours.hgrm").exists());
    assert!(out.join("plots/latency_mvm-host-upload_64x64.png").exists());

    // The same file against itself passes; against a doubled baseline ratio it fails.
    let res = out.join("results.json");
    let same = run_bounded(harness().arg("compare").arg(&res).arg(&res), RUN_LIMIT);
    assert!(same.status.success());
    let mut better = recs.clone();
    for r in &mut better {
        if let Some(v) = r["ratio_to_floor"].as_f64() {
            r["ratio_to_floor"] = serde_json::json!(v * 2.0);
        }
    }
    let base = dir.join("baseline.json");
    std::fs::write(&base, serde_json::to_vec(&better).unwrap()).unwrap();
    let worse = run_bounded(harness().arg("compare").arg(&base).arg(&res), RUN_LIMIT);
    assert_eq!(
        worse.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&worse.stdout)
    );
    assert!(String::from_utf8_lossy(&worse.stdout).contains("REGRESSION"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs the harness on a scenario it must refuse: exit 1, nothing run; its stderr.
fn refused(tag: &str, toml: &str) -> String {
    let dir = scratch(tag);
    let scenario = write_file(&dir, "bad.toml", toml);
    let o = run_bounded(
        harness().arg(&scenario).arg("--out").arg(dir.join("out")),
        RUN_LIMIT,
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!dir.join("out").exists());
    std::fs::remove_dir_all(&dir).unwrap();
    err
}

/// Runs the harness with `args` on a one-case scenario that it must refuse before the case
/// runs: exit 1, no case measured (no summary line), no scratch folder left; its stderr.
fn refused_before_the_case(dir: &Path, args: &[&std::ffi::OsStr]) -> String {
    let scenario = write_file(
        dir,
        "s.toml",
        "name = \"s\"\nnoise_seconds = 0\n[[case]]\nkind = \"roundtrip\"\nsizes = [[8]]\n",
    );
    let h = Bounded::spawn(harness().arg(&scenario).args(args));
    let pid = h.id();
    let o = h.wait(RUN_LIMIT);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("Hz, p50"), "a case ran: {err}");
    let work = std::env::temp_dir().join(format!("harness-{pid}"));
    assert!(!work.exists(), "{} was left", work.display());
    err
}

/// A report folder that cannot take the report is found before any case runs, not after
/// every case, which lost the run's measurements: here a file stands at its name.
#[test]
fn a_report_folder_that_takes_no_file_is_refused_before_any_case_runs() {
    let dir = scratch("out-is-a-file");
    let out = write_file(&dir, "out", "a file, not a folder");
    let err = refused_before_the_case(&dir, &["--out".as_ref(), out.as_os_str()]);
    assert!(
        err.contains(&format!("making the report folder {}", out.display()))
            && err.contains("pass another folder with --out"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "a file, not a folder"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An interpreter named with `--python` that cannot run is an error before any case runs,
/// not a run without its peer column that exits 0 (the default interpreter's absence still
/// leaves the column empty, as the report says).
#[test]
fn a_named_python_that_cannot_run_is_refused_before_any_case_runs() {
    let dir = scratch("bad-python");
    let python = dir.join("no-such-python");
    let out = dir.join("out");
    let err = refused_before_the_case(
        &dir,
        &[
            "--out".as_ref(),
            out.as_os_str(),
            "--python".as_ref(),
            python.as_os_str(),
        ],
    );
    assert!(
        err.contains(&format!("--python {}", python.display()))
            && err.contains("cannot run")
            && err.contains("or --no-peer"),
        "{err}"
    );
    assert!(!out.exists(), "the report folder was made");
    // Where no case runs the peer, the interpreter does not matter: `--no-peer`, or every
    // case `peer = false`.
    let quick = "name = \"q\"\nnoise_seconds = 0\n[defaults]\nmin_seconds = 0.01\nwarmup = 0.01\n\
                 repeats = 1\n{peer}[[case]]\nkind = \"roundtrip\"\nsizes = [[8]]\n";
    for (peer, flag) in [("", Some("--no-peer")), ("peer = false\n", None)] {
        let scenario = write_file(&dir, "q.toml", &quick.replace("{peer}", peer));
        let mut cmd = run_on(&scenario, &out);
        cmd.arg("--python").arg(&python).args(flag);
        assert_ran(&run_bounded(&mut cmd, RUN_LIMIT));
        assert!(out.join("report.md").exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unknown_key_is_reported_by_name_and_nothing_runs() {
    let err = refused(
        "bad",
        "name = \"bad\"\n[[case]]\nkind = \"roundtrip\"\nsizes = [[4]]\nwiat = \"spin\"\n",
    );
    assert!(err.contains("wiat"), "{err}");
}

#[test]
fn every_gate_op_measures_ours_and_its_floor_in_one_child() {
    let _runs = pinned_runs();
    let dir = scratch("ops");
    let gate = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/gate.toml");
    let out = dir.join("out");
    assert_ran(&run_bounded(run_on(&gate, &out).arg("--quick"), RUN_LIMIT));
    let recs = results(&out);
    let cases: Vec<&str> = recs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["case"].as_str().unwrap())
        .collect();
    assert_eq!(
        cases,
        [
            "op-write",
            "op-read",
            "op-lock-uint8",
            "op-wake-uint8",
            "op-kernel"
        ]
    );
    for r in recs.as_array().unwrap() {
        assert!(r["p50_ns"].as_u64().unwrap() > 0, "{r}");
        assert!(r["floor_hz"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["ratio_to_floor"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["peer_hz"].is_null(), "op cases have no peer: {r}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The bridge binary the harness runs: beside the harness binary (built by
/// `cargo test --workspace`, as CI runs it).
fn bridge_binary() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_harness")).with_file_name("shmstream-bridge");
    p.exists().then_some(p)
}

#[test]
fn the_bridge_case_measures_the_mirror_and_zenohs_floor_in_one_run() {
    let Some(bridge) = bridge_binary() else {
        eprintln!(
            "skipped: no shmstream-bridge beside the harness (run `cargo test --workspace`, or `cargo build -p shmstream-bridge` first)"
        );
        return;
    };
    let _runs = pinned_runs();
    let dir = scratch("bridge");
    let scenario = write_file(
        &dir,
        "bridge.toml",
        r#"
name = "bridge-test"
noise_seconds = 0.2
[defaults]
min_seconds = 0.2
warmup = 0.2
repeats = 1
timeout_s = 30
[[case]]
kind = "bridge"
dtype = "uint8"
sizes = [[64]]
gap_us = 2000
[[case]]
kind = "bridge"
dtype = "uint8"
sizes = [[64]]
gap_us = 2000
pinned = true
wait = "spin"
"#,
    );
    let out = dir.join("out");
    let stderr = assert_ran(&run_bounded(
        run_on(&scenario, &out).env("SHMSTREAM_BRIDGE", &bridge),
        RUN_LIMIT,
    ));
    let rows = results(&out);
    let [row, pinned] = &rows.as_array().unwrap()[..] else {
        panic!("two bridge rows expected: {rows:?}")
    };
    assert_eq!(pinned["case"], "bridge-pinned-spin-uint8");
    assert_eq!(pinned["wait"], "spin");
    for row in [row, pinned] {
        assert_eq!(row["kind"], "bridge");
        // Both sides measured: frames crossed the bridge and the bare Zenoh pair.
        for key in ["hz", "p50_ns", "floor_hz", "ratio_to_floor"] {
            assert!(
                row[key].as_f64().is_some_and(|v| v > 0.0),
                "{key} missing: {row}\n{stderr}"
            );
        }
        // A latency below a microsecond would mean the clock or the phases are wrong.
        assert!(row["p50_ns"].as_u64().unwrap() > 1_000, "{row}");
    }
    // The floor's latency frames were sent in turns with ours, as many slots and as long.
    let details = details(&out);
    for j in details["jobs"].as_array().unwrap() {
        let passes = j["floor"]["notes"]["floor passes"].as_str().unwrap_or("");
        assert!(passes.contains("alternating with ours"), "{}", j["floor"]);
        let (floor_n, ours_n) = (
            j["floor"]["iterations"].as_f64().unwrap(),
            j["ours"]["iterations"].as_f64().unwrap(),
        );
        assert!(
            floor_n > 0.5 * ours_n && floor_n < 2.0 * ours_n,
            "latency frames: floor {floor_n}, ours {ours_n}"
        );
        // The lossless path delivers every frame, and the reader gets each from the mirror's
        // history.
        assert_eq!(j["ours"]["notes"]["lost"], "0", "{}", j["ours"]);
        // Each latency frame's way is split at the mirror's write time: both parts have a
        // p50 (the spinning reader's second part may read under a microsecond).
        for part in [
            "to the mirror's write time",
            "the mirror's write time to the reader",
        ] {
            let p = j["ours"]["notes"][part].as_str().unwrap_or("");
            assert!(
                p.ends_with(" µs") && !p.starts_with('—'),
                "{part}: {}",
                j["ours"]
            );
        }
        // And the first part beside the floor's p50.
        let ratio = j["ours"]["notes"]["to the mirror's write time / floor p50"]
            .as_str()
            .and_then(|r| r.strip_suffix('×'))
            .and_then(|r| r.parse::<f64>().ok());
        assert!(ratio.is_some_and(|r| r > 0.0), "{}", j["ours"]);
    }
    // The issue's two targets are evaluated from this run: pass or fail, or n/a where this
    // run's floor did not bound ours (a loaded host slows the floor's turns more than ours;
    // the report then says so with the ratio rather than judge against it).
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("## Where a bridge frame's time goes"),
        "no section of the split in the report:\n{report}"
    );
    for target in [
        "bridge 64 B p50 latency vs Zenoh floor p50",
        "bridge 64 B frames/s vs Zenoh floor frames/s",
        "bridge 64 B (pinned, reader spins) p50 latency vs Zenoh floor p50",
    ] {
        let line = report
            .lines()
            .find(|l| l.contains(target))
            .unwrap_or_else(|| panic!("no target row {target:?} in the report:\n{report}"));
        assert!(
            line.contains("**pass**")
                || line.contains("**FAIL**")
                || line.contains("n/a (the floor does not bound ours: "),
            "{line}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bridge_case_with_a_payload_too_small_for_its_write_time_is_refused() {
    let err = refused(
        "bridge-bad",
        "name = \"b\"\n[[case]]\nkind = \"bridge\"\ndtype = \"uint8\"\nsizes = [[8]]\n",
    );
    assert!(err.contains("at least 16 bytes"), "{err}");
}

/// The Python ping-pong reader waits as ours does: where ours spins (no notify), it polls
/// the data stream's count past the last frame before pyshmem's wait, which would sleep(0)
/// between polls (15-75 µs a sleep on a VM's timer); and it holds the ack's write lock for
/// the run, writing each ack with `write_locked`, as ours holds it (a lock pair per ack
/// before). Run on stand-in streams, which record what the reader did.
#[test]
fn the_python_ping_reader_spins_where_ours_spins_and_holds_the_ack_lock() {
    let Some(python) = python() else {
        return;
    };
    common::check_python_module(
        &python,
        "pyshmem_peer.py",
        "peer",
        r#"
class Data:
    name = "data"
    def __init__(self):
        # The reader's first look; polls until frame 6 is counted; then until frame 7.
        self.counts, self.polled, self.waits = [5, 5, 5, 5, 6, 6, 7], [], []
        self.last_read_count = 6
    @property
    def count(self):
        c = self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]
        self.polled.append(c)
        return c
    def read_after(self, after, out, timeout, poll_interval):
        self.waits.append((after, self.polled[-1]))

class Ack:
    def __init__(self):
        self.calls = []
    def __getattr__(self, name):
        return lambda *a, **k: self.calls.append(name)

class Ctl:
    def __init__(self):
        self.looks = 0
    @property
    def count(self):
        self.looks += 1
        return 0 if self.looks < 2 else 1

data, ack, ctl = Data(), Ack(), Ctl()
streams = {"data": data, "ack": ack, "ctl": ctl}
class Pyshmem:
    @staticmethod
    def open(name):
        return streams[name]
peer.pyshmem = Pyshmem
spec = {"reader_cpu": 0, "names": {k: k for k in streams}, "shape": [8], "dtype": "uint8",
        "notify": False}
peer.ping_reader(spec)
# Each wait of pyshmem's (after, count when called) came once the count was past.
assert data.waits == [(5, 6), (6, 7)], data.waits
assert ack.calls == ["acquire", "write_locked", "write_locked", "release"], ack.calls
"#,
    );
}

/// The pyshmem peer runs beside the roundtrip and the ping-pong, with notify streams where
/// ours notify (its note `notify`), and the run leaves no lock file behind in the lock folder
/// it shares with pyshmem (pyshmem 1.4.0's `unlink` keeps a stream's lock file; the harness
/// removes those of the peer's streams once it has exited): the default one under `TMPDIR`
/// (no `PYSHMEM_LOCK_DIR`), which the run made, left empty.
#[test]
fn the_python_peer_runs_beside_the_io_cases_and_leaves_no_lock_file() {
    let Some(python) = python() else {
        return;
    };
    let _runs = pinned_runs();
    let dir = scratch("peer-locks");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let scenario = write_file(
        &dir,
        "peer.toml",
        "name = \"peer\"\nnoise_seconds = 0\n[defaults]\nmin_seconds = 0.03\nwarmup = 0.01\n\
         repeats = 1\ntimeout_s = 60\n[[case]]\nkind = \"roundtrip\"\nsizes = [[8]]\n\
         [[case]]\nkind = \"pingpong\"\nwait = \"spin\"\ndtype = \"uint8\"\nsizes = [[64]]\n\
         [[case]]\nkind = \"pingpong\"\nwait = \"park\"\ndtype = \"uint8\"\nsizes = [[64]]\n",
    );
    let out = dir.join("out");
    assert_ran(&run_bounded(
        run_on(&scenario, &out)
            .arg("--python")
            .arg(&python)
            .env("TMPDIR", &tmp)
            .env_remove("PYSHMEM_LOCK_DIR"),
        RUN_LIMIT,
    ));
    for r in results(&out).as_array().unwrap() {
        assert!(
            r["peer_hz"].as_f64().unwrap_or(0.0) > 0.0,
            "the peer ran: {r}"
        );
    }
    let notify: Vec<_> = details(&out)["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["peer"]["notes"]["notify"].clone())
        .collect();
    assert_eq!(
        notify,
        [serde_json::Value::Null, "false".into(), "true".into()],
        "the peer's ping-pong notifies where ours does"
    );
    // The peer ran (above), so the lock folder exists: exactly ours, and empty.
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&tmp).unwrap());
    let lock_dirs: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pyshmem-locks-")
        })
        .collect();
    assert_eq!(
        lock_dirs,
        [tmp.join(format!("pyshmem-locks-{uid}"))],
        "the run's lock folder"
    );
    let left: Vec<PathBuf> = std::fs::read_dir(&lock_dirs[0])
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "lock files left behind: {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A `results.json` whose rows are the cases `cases` of `kind`, each with the same figures.
fn results_of(kind: &str, cases: &[&str]) -> String {
    let rows: Vec<serde_json::Value> = cases
        .iter()
        .map(|case| {
            serde_json::json!({
                "case": case, "kind": kind, "shape": [8], "dtype": "float32",
                "device": "cpu", "hz": 1000.0, "floor_hz": 1100.0, "ratio_to_floor": 0.9
            })
        })
        .collect();
    serde_json::Value::from(rows).to_string()
}

/// `harness compare OLD NEW EXTRA…`, run to its end.
fn compare(old: &Path, new: &Path, extra: &[&str]) -> std::process::Output {
    run_bounded(
        harness().arg("compare").arg(old).arg(new).args(extra),
        RUN_LIMIT,
    )
}

/// `compare` fails when no case of the baseline is in the new results (an empty
/// results.json, one from another scenario), and refuses a band that is not a finite
/// relative drop >= 0 before reading anything: both passed with nothing gated.
#[test]
fn compare_fails_when_nothing_is_compared_and_refuses_a_band_that_gates_nothing() {
    let dir = scratch("compare-nothing");
    let old = write_file(&dir, "old.json", &results_of("roundtrip", &["a"]));
    let same = write_file(&dir, "same.json", &results_of("roundtrip", &["a"]));
    let empty = write_file(&dir, "empty.json", &results_of("roundtrip", &[]));
    let other = write_file(&dir, "other.json", &results_of("roundtrip", &["b"]));
    let ok = compare(&old, &same, &[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    for new in [&empty, &other] {
        let o = compare(&old, new, &[]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{}: {stdout}", new.display());
        assert!(
            stdout.contains("FAIL: no case of the baseline is in the new results"),
            "{stdout}"
        );
    }
    for bad in ["nan", "-0.2", "inf"] {
        let o = compare(&old, &same, &["--max-regression", bad]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--max-regression"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `compare` exits 2 when it cannot judge (a file unreadable or not results.json), 1 on a
/// failed gate; `--require-all` fails a baseline case missing from NEW, listed otherwise.
#[test]
fn compare_exits_2_on_a_bad_file_and_require_all_fails_a_missing_case() {
    let dir = scratch("compare-exit");
    let old = write_file(&dir, "old.json", &results_of("op", &["a", "b"]));
    let new = write_file(&dir, "new.json", &results_of("op", &["a"]));
    let bad = write_file(&dir, "bad.json", "{ not json");
    for (o, n) in [(&old, &bad), (&bad, &new), (&old, &dir.join("absent.json"))] {
        let out = compare(o, n, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", n.display());
        assert!(
            stderr.contains("error:") && stderr.contains("exit 2"),
            "{stderr}"
        );
    }
    let listed = compare(&old, &new, &[]);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{stdout}");
    assert!(stdout.contains("only in OLD (not gated)"), "{stdout}");
    let required = compare(&old, &new, &["--require-all"]);
    let stdout = String::from_utf8_lossy(&required.stdout);
    assert_eq!(required.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("MISSING from NEW (--require-all)")
            && stdout.contains("FAIL: --require-all: 1 baseline case(s) missing from NEW [b 8]"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A copy of `scripts/NAME` in `root/scripts/`, to run against stand-ins.
fn script_copy(root: &std::path::Path, name: &str) -> PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name);
    std::fs::create_dir_all(root.join("scripts")).unwrap();
    let dst = root.join("scripts").join(name);
    write_script(&dst, &std::fs::read_to_string(src).unwrap());
    dst
}

/// `scripts/smoke-gate.sh`'s gate against a stand-in `cargo` whose `compare` exits with the
/// given codes in turn: exit 1 re-measures (a fourth repeat) and judges again, exit 2 (an
/// error) fails at once; `--require-all` is passed unless extra arguments narrow the runs.
/// Its smoke run (the stand-in's first `SMOKE_FAILS` runs of it fail) runs once more after
/// a failure; a second failure fails CI before the gate.
#[test]
fn the_ci_gate_re_measures_only_a_failed_gate_and_requires_every_case() {
    let dir = scratch("smoke-gate");
    let gate = script_copy(&dir, "smoke-gate.sh");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    write_script(
        &dir.join("bin/cargo"),
        "#!/bin/sh
while [ $# -gt 0 ] && [ \"$1\" != -- ]; do shift; done
shift
echo \"$*\" >> \"$CALLS\"
if [ \"$1\" = scenarios/smoke.toml ] &&
    [ $(grep -c '^scenarios/smoke.toml' \"$CALLS\") -le \"${SMOKE_FAILS:-0}\" ]; then
    exit 1
fi
if [ \"$1\" = compare ]; then
         n=$(grep -c '^compare' \"$CALLS\")
exit $(echo $COMPARE_RCS | cut -d' ' -f$n)
fi
         mkdir -p \"$3\" && echo '[]' > \"$3/results.json\"
",
    );
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // `smoke_fails`: `None` runs the gate only (GATE_ONLY).
    let run_with = |rcs: &str, extra: &[&str], smoke_fails: Option<u32>| {
        let calls = dir.join(format!("calls-{}-{smoke_fails:?}", rcs.replace(' ', "")));
        let _ = std::fs::remove_file(&calls);
        let mut cmd = Command::new(&gate);
        cmd.args(extra)
            .env("PATH", &path)
            .env("CALLS", &calls)
            .env("COMPARE_RCS", rcs);
        match smoke_fails {
            None => cmd.env("GATE_ONLY", "1"),
            Some(n) => cmd.env("SMOKE_FAILS", n.to_string()),
        };
        let o = run_bounded(&mut cmd, RUN_LIMIT);
        let calls = std::fs::read_to_string(&calls).unwrap_or_default();
        let log = format!(
            "{}{}\ncalls:\n{calls}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let compares: Vec<String> = calls
            .lines()
            .filter(|l| l.starts_with("compare"))
            .map(String::from)
            .collect();
        (o.status.code(), calls.contains("gate/4"), compares, log)
    };
    let run = |rcs: &str, extra: &[&str]| run_with(rcs, extra, None);
    // The smoke run and its compare (information only: its exit ignored), then the gate.
    let (code, _, compares, log) = run_with("1 0", &[], Some(1));
    assert_eq!((code, compares.len()), (Some(0), 2), "{log}");
    assert_eq!(
        log.matches("scenarios/smoke.toml --out").count(),
        2,
        "{log}"
    );
    assert!(log.contains("smoke: the run failed (exit 1"), "{log}");
    let (code, _, compares, log) = run_with("0", &[], Some(2));
    assert_eq!((code, compares.len()), (Some(1), 0), "{log}");
    assert!(!log.contains("gate/1"), "{log}");
    let (code, fourth, compares, log) = run("0", &[]);
    assert_eq!((code, fourth, compares.len()), (Some(0), false, 1), "{log}");
    assert!(compares[0].ends_with("--require-all"), "{log}");
    let (code, fourth, compares, log) = run("2", &[]);
    assert_eq!((code, fourth, compares.len()), (Some(2), false, 1), "{log}");
    assert!(log.contains("could not judge"), "{log}");
    for (rcs, want) in [("1 1", Some(1)), ("1 0", Some(0))] {
        let (code, fourth, compares, log) = run(rcs, &[]);
        assert_eq!((code, fourth, compares.len()), (want, true, 2), "{log}");
    }
    // Other arguments run every case: every case is still required.
    let (code, _, compares, log) = run("0", &["--no-peer"]);
    assert_eq!(code, Some(0), "{log}");
    assert!(compares[0].ends_with("--require-all"), "{log}");
    let (code, _, compares, log) = run("0", &["--cases", "op-write"]);
    assert_eq!(code, Some(0), "{log}");
    assert!(!compares[0].contains("--require-all"), "{log}");
    assert!(log.contains("--quiet --cases op-write"), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `scripts/gate-proof.sh` counts a failed try as caught only when the final compare table
/// has a REGRESSION line for the slowed path's case; other failures are counted apart.
#[test]
fn gate_proof_counts_a_try_caught_only_when_the_slowed_case_regressed() {
    let dir = scratch("gate-proof");
    let proof = script_copy(&dir, "gate-proof.sh");
    write_script(
        &dir.join("scripts/smoke-gate.sh"),
        "#!/bin/sh
cat \"$FAKE_LOG\"
exit \"$FAKE_RC\"
",
    );
    let table = |rows: &str| {
        format!("best of 3 run(s) against reports/gate/baseline.json\ncase  old ratio\n{rows}")
    };
    let wake = "op-wake-uint8 1  1.017  0.600  -41.0%  REGRESSION (> 20% drop)\n";
    let lock = "op-lock-uint8 1  0.940  0.600  -36.0%  REGRESSION (> 20% drop)\n";
    let write_ok = "op-write 256x256  0.980  0.970  -1.0%  ok (band 20%)\n";
    let wake_ok = "op-wake-uint8 1  1.017  1.000  -1.7%  ok (band 20%)\n";
    let cases = [
        (
            "wake",
            table(wake),
            1,
            "0 passed, 1 caught the slowdown, 0 failed otherwise",
        ),
        (
            "write",
            table(wake),
            1,
            "0 passed, 0 caught the slowdown, 1 failed otherwise",
        ),
        (
            "wake:2,lock",
            table(&format!("{wake}{lock}")),
            1,
            "1 caught the slowdown",
        ),
        ("wake,lock", table(wake), 1, "1 failed otherwise"),
        // Spaces and empty items in the list, as the library reads it.
        (
            "wake, ,lock",
            table(&format!("{wake}{lock}")),
            1,
            "1 caught the slowdown",
        ),
        // A measurement lost in every repeat is not a caught slowdown.
        (
            "wake",
            table("op-wake-uint8 1  1.017  —  —  REGRESSION (no ratio in NEW)\n"),
            1,
            "1 failed otherwise",
        ),
        // Regressed in the first judgement, not in the final one (another failure).
        (
            "wake",
            format!("{}{}", table(wake), table(&format!("{wake_ok}{write_ok}"))),
            1,
            "1 failed otherwise",
        ),
        (
            "wake",
            format!("{}error: reading x.json: gone\n", table(wake_ok)),
            2,
            "1 failed otherwise",
        ),
        (
            "",
            table(write_ok),
            1,
            "0 caught the slowdown, 1 failed otherwise (slowdown: none)",
        ),
        (
            "wake",
            table(wake_ok),
            0,
            "1 passed, 0 caught the slowdown, 0 failed otherwise",
        ),
    ];
    for (i, (slowdown, log, rc, want)) in cases.iter().enumerate() {
        let fake = dir.join(format!("log-{i}"));
        std::fs::write(&fake, log).unwrap();
        let o = run_bounded(
            Command::new(&proof)
                .arg("1")
                .env("SHMSTREAM_TEST_SLOWDOWN", slowdown)
                .env("FAKE_LOG", &fake)
                .env("FAKE_RC", rc.to_string()),
            RUN_LIMIT,
        );
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{stdout}");
        let last = stdout.lines().last().unwrap_or("");
        assert!(
            last.contains(want),
            "slowdown {slowdown:?}, case {i}: {stdout}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A harness stopped by SIGTERM while its peer runs exits 143 and leaves nothing behind: the
/// peer's processes, the `/dev/shm` objects of its prefix and its scratch folder go. A
/// stand-in for Python makes a region `hs<harness pid>-…` and starts a partner holding a
/// FIFO open, which would write "late" there after 30 s.
#[test]
fn a_harness_stopped_by_sigterm_cleans_up_after_itself() {
    let dir = scratch("sigterm");
    let peer = stand_in_peer(
        &dir,
        "touch /dev/shm/hs$PPID-stand-in\n(echo up; sleep 30; echo late) > \"$FIFO\" &\nwait\n",
        "[[8]]",
    );
    let h = Bounded::spawn(
        run_on(&peer.scenario, &dir.join("out"))
            .arg("--python")
            .arg(&peer.python),
    );
    let pid = h.id();
    let status = stop_once_up(h, &peer);
    assert_eq!(status.code(), Some(143), "{status}");
    let rest = peer.rest.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(rest, "", "the peer's partner outlived the harness");
    let region = PathBuf::from(format!("/dev/shm/hs{pid}-stand-in"));
    assert!(!region.exists(), "{} was left", region.display());
    let work = std::env::temp_dir().join(format!("harness-{pid}"));
    assert!(!work.exists(), "{} was left", work.display());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A stand-in for the pyshmem peer's Python, the scenario it is the peer of, and what it
/// says on its FIFO ([`stand_in_peer`]).
struct StandIn {
    python: PathBuf,
    scenario: PathBuf,
    /// The first line on the FIFO.
    up: std::sync::mpsc::Receiver<String>,
    /// The rest.
    rest: std::sync::mpsc::Receiver<String>,
}

/// A stand-in for the pyshmem peer's Python in `dir`, for a one-case roundtrip scenario
/// (`sizes`) written there too: it answers the version probe and runs `body` (shell lines),
/// which says "up" on the FIFO `$FIFO`; what else is written there comes on `rest` once
/// every writer has closed it.
fn stand_in_peer(dir: &Path, body: &str, sizes: &str) -> StandIn {
    use std::io::{BufRead, Read};
    let fifo = dir.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let python = dir.join("python");
    write_script(
        &python,
        &format!(
            "#!/bin/sh\nif [ \"$1\" = -c ]; then echo 1.4.0 2.0; exit 0; fi\n\
             FIFO='{}'\n{body}",
            fifo.display()
        ),
    );
    // Opened read-write first, so that the read-only open does not block; kept open until
    // "up" has come, so that the read does not end before the stand-in opens the FIFO.
    let writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let mut reader = std::io::BufReader::new(std::fs::File::open(&fifo).unwrap());
    let (up_tx, up) = std::sync::mpsc::channel();
    let (rest_tx, rest) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = up_tx.send(line);
        drop(writer);
        let mut text = String::new();
        let _ = reader.read_to_string(&mut text);
        let _ = rest_tx.send(text);
    });
    let scenario = write_file(
        dir,
        "s.toml",
        &format!(
            "name = \"s\"\nnoise_seconds = 0\n[defaults]\nmin_seconds = 0.01\nwarmup = 0.01\n\
             repeats = 1\ntimeout_s = 60\n[[case]]\nkind = \"roundtrip\"\nsizes = {sizes}\n"
        ),
    );
    StandIn {
        python,
        scenario,
        up,
        rest,
    }
}

/// Sends the harness `h` SIGTERM once its stand-in peer says "up"; its exit status.
fn stop_once_up(h: Bounded, peer: &StandIn) -> std::process::ExitStatus {
    let up = peer.up.recv_timeout(Duration::from_secs(300));
    let killed = Command::new("kill")
        .args(["-TERM", &h.id().to_string()])
        .status()
        .unwrap();
    let status = h.wait(RUN_LIMIT).status;
    assert_eq!(up.unwrap(), "up\n", "the peer started");
    assert!(killed.success());
    status
}

/// A harness stopped between two jobs creates nothing more: the signal's clean-up and exit
/// are not raced by the next job, which the main thread went on to run once the peer it
/// waited for was killed (as a Ctrl-C kills the children), creating its streams, region and
/// files after the clean-up had looked (or finishing the run with exit 0). The stop comes
/// while job 0's peer runs: a stand-in that fills the scratch folder, so that the clean-up's
/// removal of it takes a while, then says "up" and waits. Exit 143, nothing of the run left.
#[test]
fn a_harness_stopped_between_jobs_creates_nothing_after_its_clean_up() {
    let _runs = pinned_runs();
    let dir = scratch("stop-between-jobs");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let peer = stand_in_peer(
        &dir,
        "mkdir \"$TMPDIR/harness-$PPID/fill\" && cd \"$TMPDIR/harness-$PPID/fill\" && \
         seq 1 30000 | xargs touch\necho up > \"$FIFO\"\nexec sleep 30\n",
        "[[8], [16]]",
    );
    let h = Bounded::spawn(
        run_on(&peer.scenario, &dir.join("out"))
            .arg("--python")
            .arg(&peer.python)
            .env("TMPDIR", &tmp),
    );
    let pid = h.id();
    let status = stop_once_up(h, &peer);
    assert_eq!(status.code(), Some(143), "{status}");
    let prefix = format!("hs{pid}-");
    let streams = streams(&prefix);
    let regions = shm_objects(&prefix);
    for n in &streams {
        let _ = shmstream::unlink(n);
    }
    for n in &regions {
        let _ = std::fs::remove_file(PathBuf::from("/dev/shm").join(n));
    }
    assert_eq!(streams, Vec::<String>::new(), "streams were left");
    assert_eq!(regions, Vec::<String>::new(), "/dev/shm objects were left");
    let work = tmp.join(format!("harness-{pid}"));
    assert!(!work.exists(), "{} was left", work.display());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A harness stopped while its pinned children measure kills them before its clean-up:
/// the pingpong reader holds the ack stream's write lock for the whole run, and a clean-up
/// that left it alive waited the library's 5 s for that lock, failed, and left the stream
/// and its lock file. The stop comes once the reader holds the lock (it has acknowledged
/// "ready" on the ack stream); exit 143, no stream named left behind, nothing of the run
/// left.
#[test]
fn a_harness_stopped_mid_measurement_kills_its_children_before_its_clean_up() {
    let _runs = pinned_runs();
    let dir = scratch("stop-measuring");
    let scenario = dir.join("s.toml");
    std::fs::write(
        &scenario,
        "name = \"s\"\nnoise_seconds = 0\n[defaults]\nmin_seconds = 60\nwarmup = 0.01\n\
         repeats = 1\ntimeout_s = 300\npeer = false\n[[case]]\nkind = \"pingpong\"\n\
         wait = \"spin\"\ndtype = \"uint8\"\nsizes = [[4096]]\n",
    )
    .unwrap();
    let h = Bounded::spawn(&mut run_on(&scenario, &dir.join("out")));
    let pid = h.id();
    let ack = format!("hs{pid}-0-ours-ack");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pause = Duration::from_millis(1);
    while shmstream::stat(&ack).map_or(true, |s| s.count == 0) {
        if Instant::now() >= deadline {
            // Still running: this panics with its stderr; exited: say how.
            let o = h.wait(Duration::from_secs(1));
            panic!(
                "{ack} was never acknowledged on; the harness exited {}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    let stopped = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let o = h.wait(RUN_LIMIT);
    let took = stopped.elapsed();
    assert!(killed.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    let streams = streams(&format!("hs{pid}-"));
    let lock = shmstream::name::lock_path(&ack);
    let lock_left = lock.exists();
    for n in &streams {
        let _ = shmstream::unlink(n);
    }
    assert_eq!(o.status.code(), Some(143), "{}: {stderr}", o.status);
    assert_eq!(streams, Vec::<String>::new(), "streams were left: {stderr}");
    assert!(!lock_left, "{} was left: {stderr}", lock.display());
    assert!(
        !stderr.contains("left behind"),
        "the clean-up waited out a live child's lock: {stderr}"
    );
    // The lock wait of a clean-up that left the reader alive is caught above without timing
    // (its "left behind", the stream and lock file it leaves). This bound catches a stop put
    // off to the job's end (a repeat lasts at least `min_seconds`, 60 s here) and a hang.
    assert!(
        took < Duration::from_secs(60),
        "the stop took {took:?}: {stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A second termination signal during a stop exits at once with 128 + it: here the stop's
/// clean-up would wait the library's 5 s for the write lock of a stream `hs<pid>-held`
/// that this test holds, then say it was "left behind". The stop's line names the remedy.
#[test]
fn a_second_signal_during_a_stop_exits_at_once() {
    let dir = scratch("second-signal");
    let peer = stand_in_peer(&dir, "echo up > \"$FIFO\"\nexec sleep 30\n", "[[8]]");
    let h = Bounded::spawn(
        run_on(&peer.scenario, &dir.join("out"))
            .arg("--python")
            .arg(&peer.python),
    );
    let pid = h.id();
    let up = peer.up.recv_timeout(Duration::from_secs(300));
    assert_eq!(up.unwrap(), "up\n", "the peer started");
    let held = format!("hs{pid}-held");
    let stream = shmstream::Stream::create(&held, &[8], shmstream::Dtype::U8).unwrap();
    let guard = stream.lock(None).unwrap();
    let signal = |s: &str| {
        let sent = Command::new("kill")
            .args([s, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {s}");
    };
    signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(1);
    while !h.stderr_so_far().contains("harness: stopping") {
        assert!(Instant::now() < deadline, "{}", h.stderr_so_far());
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    // SIGTERM again: a shell's background job (CI under `nohup … &`) starts with SIGINT
    // ignored, and the harness leaves an ignored signal ignored.
    signal("-TERM");
    let o = h.wait(RUN_LIMIT);
    drop(guard);
    drop(stream);
    let _ = shmstream::unlink(&held);
    for n in shm_objects(&format!("hs{pid}-")) {
        let _ = std::fs::remove_file(Path::new("/dev/shm").join(n));
    }
    let work = std::env::temp_dir().join(format!("harness-{pid}"));
    let _ = std::fs::remove_dir_all(&work);
    let stderr = String::from_utf8_lossy(&o.stderr);
    // 128 + SIGTERM either way: what tells the second signal's exit from the stop's own is
    // that the stop never got to its 5 s wait for the held stream's lock.
    assert_eq!(o.status.code(), Some(143), "{}: {stderr}", o.status);
    assert!(!stderr.contains("left behind"), "the stop ran on: {stderr}");
    for remedy in [
        format!("`shmstream purge --prefix hs{pid}-`"),
        format!("`rm -r {}`", work.display()),
    ] {
        assert!(stderr.contains(&remedy), "{remedy}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run past its limit panics with its stderr so far, and leaves nothing running: its whole
/// process group is killed, a `sleep` its shell started in the background included. Not
/// beside a pinned run, whose spinning children could keep the shell from starting within
/// the 2 s limit.
#[test]
fn a_run_past_its_limit_panics_and_leaves_no_process_behind() {
    let _runs = pinned_runs();
    let dir = scratch("bounded");
    let pid_file = dir.join("sleep.pid");
    let panic = std::panic::catch_unwind(|| {
        run_bounded(
            Command::new("sh")
                .args(["-c", "sleep 600 & echo $! > \"$0\"; echo started >&2; wait"])
                .arg(&pid_file),
            Duration::from_secs(2),
        )
    })
    .expect_err("a run past its limit must panic");
    let msg = panic
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(
        msg.contains("still running after 2s") && msg.contains("started"),
        "{msg}"
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let stat = PathBuf::from(format!("/proc/{}/stat", pid.trim()));
    // SIGKILL is delivered, not yet acted on, when `kill` returns: the process is gone, or a
    // zombie its reaper has still to take, within a bounded wait.
    let alive = || {
        std::fs::read_to_string(&stat).is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_none_or(|(_, rest)| !rest.starts_with('Z'))
        })
    };
    let mut pause = Duration::from_millis(1);
    let t0 = std::time::Instant::now();
    while alive() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    assert!(!alive(), "the run's sleep (pid {}) outlived it", pid.trim());
    std::fs::remove_dir_all(&dir).unwrap();
}

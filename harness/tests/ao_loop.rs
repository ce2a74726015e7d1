//! The ao-loop case end to end: real stage processes on real streams. Frame ids flow
//! camera → slopes → DM unchanged; a stage that dies is named and the run stops; a bad
//! geometry is refused before anything starts; the pyshmem + numpy loop runs beside ours and
//! the run leaves no stream behind.

mod common;

use std::path::{Path, PathBuf};

use common::{
    Bounded, RUN_LIMIT, assert_ran, details, harness, pinned_runs, python, results, run_bounded,
    run_on, scratch, shm_objects, streams, write_file,
};

const TIMEOUT_S: u64 = 20;

/// The camera rate of [`scenario`]'s loop, Hz.
const RATE_HZ: f64 = 500.0;

/// A scenario's head: short runs, no peer.
fn head(name: &str) -> String {
    head_with_peer(name, false)
}

/// A scenario's head: short runs, with or without the pyshmem peer.
fn head_with_peer(name: &str, peer: bool) -> String {
    format!(
        r#"
name = "{name}"
noise_seconds = 0.2
[defaults]
min_seconds = 0.3
warmup = 0.05
repeats = 1
timeout_s = {TIMEOUT_S}
peer = {peer}
"#
    )
}

fn scenario(dir: &Path, merged: bool) -> PathBuf {
    scenario_with_peer(dir, merged, false)
}

/// A small loop (24×24 px, 4×4 subapertures, 500 Hz, no ladder) in `dir/ao.toml`.
fn scenario_with_peer(dir: &Path, merged: bool, peer: bool) -> PathBuf {
    let text = head_with_peer("ao-test", peer)
        + &format!(
            r#"
[[case]]
kind = "ao-loop"
sizes = [[24, 24]]
[case.ao]
subapertures = [4, 4]
modes = 20
actuators = 25
rate_hz = {RATE_HZ}
merged = {merged}
ladder = false
"#
        );
    write_file(dir, "ao.toml", &text)
}

fn log(path: &Path) -> Vec<[u64; 4]> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(32)
        .map(|c| {
            std::array::from_fn(|i| u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().unwrap()))
        })
        .collect()
}

/// Checks run `r`'s floor timed between the loop's frames (`work`'s logs): bare frames
/// taken after the camera sent them, in id order, and computed on by the stage (in the split
/// form, signals sent bare to the reconstructor, taken and computed on too). The camera logs
/// a bare frame only if the stage took it before the next one (a period later), which a
/// stage preempted on a loaded host misses: that some were taken is asserted, not how many.
fn check_between_frames(work: &Path, r: usize, merged: bool) {
    let bare = log(&work.join(format!("0-ours{r}-AoCamera.aohop")));
    assert!(!bare.is_empty(), "run {r}: no bare frame taken");
    for pair in bare.windows(2) {
        assert!(pair[0][0] < pair[1][0], "bare ids go backwards: {pair:?}");
    }
    assert!(
        bare.iter().all(|e| e[2] >= e[1]),
        "a bare frame taken before it was sent"
    );
    // The stage also timed its compute on the bare frames it took: on every one the camera
    // saw taken (perhaps on more: one the camera had stopped looking for).
    let c = log(&work.join(format!("0-ours{r}-AoSlopes.aocompute")));
    let ids: std::collections::HashSet<u64> = c.iter().map(|e| e[0]).collect();
    assert!(bare.iter().all(|e| ids.contains(&e[0])), "{ids:?}");
    let sample = &c[..c.len().min(3)];
    if merged {
        assert!(c.iter().all(|e| e[1] > 0 && e[2] > 0), "{sample:?}");
        return;
    }
    // The split form's slopes stage computes the slopes and sends them bare to the
    // reconstructor, which takes them and computes its part.
    assert!(c.iter().all(|e| e[1] > 0 && e[2] == 0), "{sample:?}");
    let sent = log(&work.join(format!("0-ours{r}-AoSlopes.aosighop")));
    assert!(
        !sent.is_empty(),
        "run {r}: no bare signals taken of {} computed",
        c.len()
    );
    assert!(sent.iter().all(|e| ids.contains(&e[0]) && e[2] >= e[1]));
    let rc = log(&work.join(format!("0-ours{r}-AoRecon.aocompute")));
    assert!(rc.iter().all(|e| e[1] == 0 && e[2] > 0 && e[3] > 0));
    let computed: Vec<u64> = rc.iter().map(|e| e[0]).collect();
    assert!(
        sent.iter().all(|e| computed.contains(&e[0])),
        "{computed:?}"
    );
}

/// Runs the harness with its scratch folder under `dir` and kept; returns (status, stderr, work dir).
fn run(dir: &Path, merged: bool, kill: Option<&str>) -> (bool, String, PathBuf) {
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = run_on(&scenario(dir, merged), &dir.join("out"));
    cmd.env("TMPDIR", &tmp).env("HARNESS_KEEP_WORK", "1");
    if let Some(stage) = kill {
        cmd.env("HARNESS_AO_KILL_STAGE", stage);
    }
    let child = Bounded::spawn(&mut cmd);
    let pid = child.id();
    let o = child.wait(RUN_LIMIT);
    // The run's bare regions (`hs<pid>-…`) are gone, a killed stage's included.
    let left = shm_objects(&format!("hs{pid}-"));
    assert!(left.is_empty(), "left behind: {left:?}");
    let work = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("harness-")
        })
        .expect("the harness's work folder");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        work,
    )
}

#[test]
fn frame_ids_flow_from_the_camera_to_the_dm_unchanged() {
    let _runs = pinned_runs();
    for merged in [false, true] {
        let dir = scratch(if merged { "ids-merged" } else { "ids" });
        let (ok, stderr, work) = run(&dir, merged, None);
        assert!(ok, "{stderr}");
        let details = details(&dir.join("out"));
        let notes = &details["jobs"][0]["floor"]["notes"];
        let note = |key: &str| notes[key].as_str().unwrap_or_default().to_owned();
        // Whether the runs timed the floor between the loop's frames (note `floor passes`):
        // only where the floor's first pass found the stages' compute under a quarter of a
        // period, which a loaded host can miss.
        let between = note("floor passes").contains("timed between the loop's frames");
        // The loop's seconds ran in two runs (the default), each with its own processes.
        for r in 0..2 {
            let camera = log(&work.join(format!("0-ours{r}-AoCamera.aolog")));
            let slopes = log(&work.join(format!("0-ours{r}-AoSlopes.aolog")));
            let dm = if merged {
                slopes.clone()
            } else {
                log(&work.join(format!("0-ours{r}-AoRecon.aolog")))
            };
            let sent: Vec<u64> = camera.iter().map(|e| e[0]).collect();
            assert_eq!(sent, (1..=sent.len() as u64).collect::<Vec<_>>());
            let through: std::collections::HashSet<u64> = slopes.iter().map(|e| e[0]).collect();
            for pair in dm.windows(2) {
                assert!(
                    pair[0][0] < pair[1][0],
                    "DM frame ids go backwards: {pair:?}"
                );
            }
            for e in &dm {
                assert!(
                    sent.contains(&e[0]) && through.contains(&e[0]),
                    "id {} invented",
                    e[0]
                );
                let cam = camera[e[0] as usize - 1][2];
                assert!(
                    e[2] > cam,
                    "DM publish before camera publish for id {}",
                    e[0]
                );
            }
            if between {
                check_between_frames(&work, r, merged);
            } else {
                let bare = work.join(format!("0-ours{r}-AoCamera.aohop"));
                assert!(
                    !bare.exists(),
                    "run {r} timed the floor between its frames, yet no part of the floor came \
                     from it: {}",
                    note("floor passes")
                );
            }
            // A loaded machine may drop frames, never nearly all of them.
            assert!(
                dm.len() * 4 > sent.len(),
                "{} of {} frames reached the DM",
                dm.len(),
                sent.len()
            );
        }
        let rows = results(&dir.join("out"));
        let row = &rows[0];
        assert_eq!(row["kind"], "ao-loop");
        assert_eq!(row["geometry"]["signals"], 32);
        for key in [
            "rate_hz",
            "achieved_hz",
            "missed",
            "jitter_ns",
            "stages",
            "verdict",
            "p50_ns",
        ] {
            assert!(!row[key].is_null(), "{key} is null: {row}");
        }
        // The floor's stages ran alone before the loop's runs, between them and after them.
        for pass in 0..3 {
            let f = log(&work.join(format!("0-aofloor{pass}.aolog")));
            assert!(!f.is_empty(), "floor pass {pass} logged no frame");
        }
        // The report gives each part's p50 in each of the three passes.
        let per_pass = note("floor per pass");
        let hops = if merged { 1 } else { 2 };
        assert_eq!(per_pass.split("; ").count(), 1 + hops, "{per_pass}");
        for part in per_pass.split("; ") {
            assert_eq!(part.matches(", ").count(), 2, "three passes: {part}");
        }
        if between {
            // Timed between the frames, and kept or not as it was faster than the fastest
            // pass: the note says which, with both figures.
            for key in ["camera hop floor", "compute floor"] {
                let n = note(key);
                assert!(
                    n.contains("timed between the loop's frames") && n.contains("fastest pass"),
                    "{key}: {n}"
                );
            }
            let signals = notes["signals hop floor"].as_str();
            assert_eq!(
                signals.map(|n| n.contains("timed between the loop's frames")),
                (!merged).then_some(true),
                "{signals:?}"
            );
        } else {
            // Skipped only for the reason the harness has: the first pass's compute took a
            // quarter of a period or more (its median, printed in µs).
            let first_compute_us: f64 = per_pass
                .strip_prefix("compute ")
                .and_then(|p| p.split(", ").next())
                .and_then(|us| us.parse().ok())
                .unwrap_or_else(|| panic!("no first pass's compute: {per_pass}"));
            let quarter_period_us = 0.25e6 / RATE_HZ;
            assert!(
                first_compute_us >= quarter_period_us,
                "the runs did not time the floor between their frames although the first \
                 pass's compute ({first_compute_us} µs) left room: {}",
                note("floor passes")
            );
            assert!(note("camera hop floor").starts_with("from its fastest pass"));
            eprintln!(
                "the floor's first pass computed for {first_compute_us} µs, over a quarter of a \
                 period (a loaded host): the runs timed nothing between their frames, not checked"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_killed_stage_is_named_and_the_run_stops_without_hanging() {
    let _runs = pinned_runs();
    let dir = scratch("kill");
    let (ok, stderr, _) = run(&dir, false, Some("slopes"));
    assert!(!ok, "the run must fail");
    let md = std::fs::read_to_string(dir.join("out/report.md")).unwrap();
    assert!(
        md.contains("AoSlopes child") && md.contains("SIGKILL"),
        "{md}"
    );
    // Stopped by the stage's death, not by the harness's deadline ("timed out after N s;
    // killed"); a hang past even that fails in `run`.
    assert!(!md.contains("timed out"), "it waited for the timeout: {md}");
    assert!(stderr.contains("ao-loop"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The floor's compute process killed mid-pass (SIGKILL, as at the timeout, by the OOM
/// killer or in a crash) leaves none of its bare output regions behind (`run` checks
/// `/dev/shm` for the run's names): the harness creates them and removes them, and the report
/// says the floor failed, naming the process. A failed floor fails the run (it exited 0, its
/// results row all nulls): stderr names the case and the floor's error, as does the row.
#[test]
fn a_killed_floor_process_leaves_no_region_behind() {
    let _runs = pinned_runs();
    let dir = scratch("kill-floor");
    let (ok, stderr, _) = run(&dir, false, Some("floor"));
    let md = std::fs::read_to_string(dir.join("out/report.md")).unwrap();
    assert!(
        md.contains("floor failed")
            && md.contains("AoFloorCompute child")
            && md.contains("SIGKILL"),
        "{md}\n{stderr}"
    );
    assert!(!ok, "a run whose floor failed passed: {stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error: case ") && l.contains("floor failed")),
        "{stderr}"
    );
    let rows = common::results(&dir.join("out"));
    let error = rows[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("floor failed"), "{rows}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `harness size` with the geometry's and the loop's arguments, quiet, into `out`.
fn harness_size(out: &Path, geometry: &[&str], rest: &[&str]) -> std::process::Output {
    run_bounded(
        harness()
            .arg("size")
            .args(geometry)
            .args(rest)
            .arg("--quiet")
            .arg("--out")
            .arg(out),
        RUN_LIMIT,
    )
}

#[test]
fn a_bad_geometry_is_refused_before_anything_starts() {
    let dir = scratch("bad");
    let out = dir.join("out");
    let o = harness_size(
        &out,
        &["--wfs-pixels", "240x240", "--subapertures", "7x7"],
        &["--actuators", "349", "--rate", "2000", "--budget-us", "500"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("subapertures 7x7 must divide the 240x240 frame"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing may start for a bad geometry");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `harness size` runs every CPU form of a small geometry and puts its verdict table, with
/// each form's latency, jitter and result, and what the host noise probe saw on the
/// stages' core, at the top of the report.
#[test]
fn harness_size_writes_a_verdict_per_form_and_the_stage_cores_noise() {
    let _runs = pinned_runs();
    let dir = scratch("size");
    let out = dir.join("out");
    let o = harness_size(
        &out,
        &["--wfs-pixels", "24x24", "--subapertures", "4x4"],
        &[
            "--actuators",
            "16",
            "--rate",
            "500",
            "--budget-us",
            "2000",
            "--seconds",
            "0.3",
            "--no-peer",
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    let md = std::fs::read_to_string(out.join("report.md")).expect(&stderr);
    let verdict = md.find("## Verdict").expect("a verdict section");
    assert!(
        verdict < md.find("## Environment").unwrap(),
        "verdict first"
    );
    let rows: Vec<&str> = md[verdict..]
        .lines()
        .take_while(|l| !l.starts_with("## Environment"))
        .filter(|l| l.starts_with("| ") && !l.starts_with("| form") && !l.starts_with("|--"))
        .collect();
    // Split, merged and busy-waiting: a row per case of the scenario it wrote (the
    // busy-waiting form is left out where cores 0 and 1 cannot both be pinned).
    let scenario = std::fs::read_to_string(out.join("scenario.toml")).unwrap();
    let forms = scenario.matches("[[case]]").count();
    // Left out only with the comment that says so.
    assert!(
        forms == 3 || (forms == 2 && scenario.contains("The busy-waiting form (")),
        "{scenario}"
    );
    assert_eq!(rows.len(), forms, "a row per form: {rows:?}");
    // A form or its floor that failed on a loaded host (a timeout, say) is an honest row:
    // it says so, and fails the run.
    let mut a_side_failed = false;
    for row in &rows {
        assert_eq!(row.matches(" | ").count(), 9, "ten cells: {row}");
        let floor = row.split(" | ").nth(3).unwrap();
        // "p50 / p99 (samples)".
        let measured = floor.split_once(" (").is_some_and(|(p, n)| {
            n.trim_end_matches(')').parse::<u64>().is_ok_and(|n| n > 0)
                && p.split(" / ")
                    .all(|v| v.parse::<f64>().is_ok_and(|v| v > 0.0))
        });
        if !measured {
            assert!(
                (floor == "—" && row.ends_with(" |")) || row.contains(" | failed: "),
                "the form's floor p50 / p99, or a failed side: {row}"
            );
            a_side_failed = true;
        }
        assert!(
            row.contains("| **pass**") || row.contains("| **fail"),
            "{row}"
        );
        // 0.3 s at 500 Hz: some 150 frames, too few for a p99, and a passing result says so.
        if row.contains("| **pass**") {
            assert!(
                row.ends_with(" frames: a p99 needs 1000) |") && row.contains("(p99 from "),
                "{row}"
            );
        }
    }
    // The exit status says whether every form passed (a form that failed its verdict on
    // this host's scheduling fails the run, naming it), and a failed side fails it too.
    let all_passed = rows.iter().all(|r| r.contains("| **pass**"));
    assert_eq!(o.status.success(), all_passed && !a_side_failed, "{stderr}");
    assert_eq!(stderr.contains("did not pass"), !all_passed, "{stderr}");
    // `--quiet`: the table is in the report, not on the terminal.
    assert!(!stderr.contains("## Verdict"), "{stderr}");
    let details = details(&out);
    // The note is there when the stages' core was probed pinned and paused the probe's
    // thread for 1 ms or more (a quiet host has nothing to say of it).
    let paused_stage_core = details["host_noise"]["cores"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["cpu"] == 1 && c["pinned"] == true && c["gaps_over_1ms"].as_u64() > Some(0));
    assert_eq!(
        md.contains("paused a spinning thread on the stages' core (cpu 1)"),
        paused_stage_core,
        "{md}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The GPU form (slopes and reconstructor on the device): where no GPU is usable, each
/// geometry kind is skipped with a reason naming the device, and the run succeeds; on a
/// GPU, it runs (after its own check against the CPU stages) and reports its figures.
#[test]
fn the_gpu_form_runs_where_a_gpu_is_and_is_skipped_with_a_reason_where_none_is() {
    let _runs = pinned_runs();
    let dir = scratch("gpu");
    let scenario = write_file(
        &dir,
        "ao-gpu.toml",
        &(head("ao-gpu-test")
            + r#"
[[case]]
name = "centroids"
kind = "ao-loop"
device = "cuda:0"
sizes = [[24, 24]]
[case.ao]
subapertures = [4, 4]
modes = 20
actuators = 25
rate_hz = 500
ladder = false
[[case]]
name = "pixels"
kind = "ao-loop"
device = "cuda:0"
sizes = [[16, 16]]
[case.ao]
slopes = "pixels"
valid_pixels = 150
actuators = 40
rate_hz = 500
ladder = false
"#),
    );
    let out = dir.join("out");
    assert_ran(&run_bounded(&mut run_on(&scenario, &out), RUN_LIMIT));
    let rows = results(&out);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    // Whether the form can run is probed here, not taken from the harness's report: a GPU
    // form that skipped itself where a CUDA device and cuBLAS are fails the test.
    let gpu = shmstream::gpu_available();
    if !(gpu && harness_sys::gpu::cublas_available()) {
        eprintln!("no usable GPU here: the GPU form was skipped, as it must be");
        let why = if gpu {
            "skipped: cuda:0: libcublas"
        } else {
            "skipped: cuda:0:"
        };
        assert!(md.contains(why), "no skip reason {why:?}: {md}");
        for r in rows {
            assert!(r["p50_ns"].is_null(), "a skipped form has no figures: {r}");
        }
    } else {
        for r in rows {
            assert_eq!(r["kind"], "ao-loop");
            assert!(r["p50_ns"].as_u64().unwrap() > 0, "{r}");
            assert!(!r["stages"].is_null(), "{r}");
        }
        // Both the stage and the floor's compute replay each frame as one CUDA graph.
        let d = details(&out);
        for job in d["jobs"].as_array().unwrap() {
            for side in ["ours", "floor"] {
                let path = job[side]["notes"]["device work"].as_str().unwrap_or("");
                assert!(
                    path.starts_with("one CUDA graph launch a frame"),
                    "{side}: {path:?}"
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The pyshmem + numpy loop beside ours: it runs, without the OpenBLAS tuning variables
/// (note `openblas_env`), and nothing the run created is left in shared memory when it
/// ends (the streams made for the Python stages included).
#[test]
fn the_python_loop_runs_and_the_run_leaves_no_stream_behind() {
    let Some(python) = python() else {
        return;
    };
    let _runs = pinned_runs();
    let dir = scratch("peer");
    let p = scenario_with_peer(&dir, true, true);
    let out = dir.join("out");
    let child = Bounded::spawn(run_on(&p, &out).arg("--python").arg(&python));
    // The harness names its streams after its pid: `hs<pid>-<job>-<role>…`.
    let prefix = format!("hs{}-", child.id());
    assert_ran(&child.wait(RUN_LIMIT));
    let recs = results(&out);
    let r = &recs.as_array().unwrap()[0];
    assert!(
        r["peer_p50_ns"].as_u64().unwrap() > 0,
        "the peer loop ran: {r}"
    );
    // Beside the peer: each loop's frames of 1 ms and more, and the host noise probe's
    // figures for the stages' core (probed before the cases: every machine has cpu 0).
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let row = md
        .lines()
        .skip_while(|l| !l.contains("frames ≥ 1 ms (ours / pyshmem)"))
        .find(|l| l.starts_with("| `"))
        .unwrap_or_else(|| panic!("no row beside the peer: {md}"));
    assert_eq!(row.matches(" | ").count(), 6, "seven cells: {row}");
    let details = details(&out);
    // Its stages ran without the OpenBLAS tuning, as the MVM peer does.
    let openblas = &details["jobs"][0]["peer"]["notes"]["openblas_env"];
    assert!(
        openblas.as_str().is_some_and(|n| n.starts_with("unset")),
        "{openblas}"
    );
    let cores = details["host_noise"]["cores"].as_array().unwrap();
    assert!(
        cores.iter().any(|c| c["cpu"] == 0 && c["pinned"] == true),
        "{cores:?}"
    );
    let left = streams(&prefix);
    assert!(left.is_empty(), "streams left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Python slopes stage's pixel signals calibrate the valid pixels only, as ours do (it
/// calibrated the whole frame, twice the work at the SCExAO-like geometry), and still equal
/// the whole frame's calibration gathered at the valid pixels, in float32.
#[test]
fn the_python_pixel_signals_calibrate_only_the_valid_pixels() {
    let Some(python) = python() else {
        return;
    };
    check_peer_module(
        &python,
        r#"
import numpy as np

h, w, n = 12, 10, 37
slopes = ao.Slopes({"wfs": [h, w], "kind": "pixels", "signals": n})
assert slopes.dark.shape == (n,) and slopes.flat.shape == (n,), slopes.dark.shape
frame = np.random.default_rng(7).integers(0, 400, size=(h, w), dtype=np.uint16)
dark, flat = ao.calibration(h * w)
whole = np.maximum(frame.astype(np.float32) - dark.reshape(h, w), 0) * flat.reshape(h, w)
v = whole.ravel()[slopes.valid]
want = (v / max(v.mean(), 1e-30) - 1).astype(np.float32)
got = slopes(frame)
assert got.dtype == np.float32 and np.array_equal(got, want), (got, want)
"#,
    );
}

/// A Python centroid of a subaperture with no light reads 0, as ours (`slopes.rs`), not
/// minus the cell's centre; a lit one is its light's centre of mass from the cell's centre.
#[test]
fn a_python_centroid_of_a_dark_subaperture_reads_zero_as_ours() {
    let Some(python) = python() else {
        return;
    };
    check_peer_module(
        &python,
        r#"
import numpy as np

h = w = 8
slopes = ao.Slopes({"wfs": [h, w], "kind": "centroids", "subapertures": [2, 2], "signals": 8})
frame = np.zeros((h, w), dtype=np.uint16)
# Only the top-left cell is lit, one pixel at row 3, column 1 (dark and flat calibrated).
frame[3, 1] = 1000
got = slopes(frame)
assert got.dtype == np.float32 and got.shape == (8,), got
# x of the four cells, then y; a cell is 4x4, its centre 1.5.
assert np.allclose(got[[0, 4]], [1 - 1.5, 3 - 1.5]), got
assert np.array_equal(got[[1, 2, 3, 5, 6, 7]], np.zeros(6, dtype=np.float32)), got
"#,
    );
}

/// The Python camera stamps each frame's publish time before it writes the frame, as ours
/// does (the camera → slopes hop includes the frame copy on both sides): its loop run on
/// stand-in streams that note when each write begins.
#[test]
fn the_python_camera_stamps_each_frame_before_writing_it() {
    let Some(python) = python() else {
        return;
    };
    check_peer_module(
        &python,
        r#"
import time

class Frame:
    def __init__(self):
        self.begun = {}
    def write(self, payload, frame_id):
        self.begun.setdefault(frame_id, time.monotonic_ns())

class Ready:
    def wait_for_count(self, after, timeout):
        pass

class Commands:
    frame_id = ao.STOP

frame = Frame()
streams = {"frame": frame, "ready": Ready(), "commands": Commands()}
spec = {"geometry": {"wfs": [4, 4]}, "merged": True, "rate_hz": 10000, "frames": 20}
log = ao.camera(spec, streams, 5)
late = [int(i) for i, _, stamp, _ in log if stamp > frame.begun[int(i)]]
assert len(log) == 20 and not late, f"stamped after the write began: frames {late}"
"#,
    );
}

/// Runs `check` (Python, with the AO peer's module `harness/peer/pyshmem_ao.py` imported as
/// `ao`) in `python`, and asserts that it passed.
fn check_peer_module(python: &std::ffi::OsStr, check: &str) {
    common::check_python_module(python, "pyshmem_ao.py", "ao", check);
}

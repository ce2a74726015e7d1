//! `shmstream record`: every frame of a history stream into FITS cubes that astropy reads
//! (shape, dtype, values, per-frame table, no `EXTNAME` in the primary header; every FITS
//! dtype bit for bit, uint64 too, with values at both ends; 1-D and 3-D frames), `.npy` cubes, a full disk in either format (frames already written stay intact
//! with their table, exit 1; one a `.npy` cube shares with its table, by `LD_PRELOAD`, costs
//! only the frames the table needs room for), an unwritable `--out`, streams sharing file names, existing
//! files (never overwritten), a huge `--per-file`, the warning for plain streams and the
//! frames their recorder misses while it waits for the first one (lost; those published
//! while it starts are not: a unit test of `record_stream`, and a recorder stopped by
//! `LD_PRELOAD` as it creates its first file), a recording stopped by SIGHUP
//! or SIGQUIT (files finished) and not by a SIGHUP ignored as under `nohup`, names too long
//! for a file name, and the `STREAM` card (whole, however long, whatever its characters), FITS time
//! keywords (astropy reads the FRAMES times as `Time`, DATE-OBS/DATE-END the frames' times).
//! Also: the summary counts the frames on file (not those a full disk dropped), no empty
//! file after a stop at a file boundary, frames left unread at a signal, a `--duration`
//! stop taking every frame published in time, GPU streams without a CPU mirror refused up
//! front, frames published in time that a `--duration` stop never sees (pyshmem's, a write
//! in flight) counted lost, frames left unread only of those still wanted, and write errors
//! the disk reports only at `fdatasync` (and the directory's `fsync`, also of those holding
//! the directories it creates for `--out`) with `--fsync` (injected by `LD_PRELOAD`), which
//! is never called without it, and those a network file system reports at `close` without
//! it (injected too; they stop the recording at the next frame, or poll). A reader of its
//! output that went away does not kill the recorder (SIGPIPE) before its exit status, and
//! one that takes nothing (a full stderr pipe) does not keep it past one Ctrl-C. The
//! full disk is a
//! file-size limit, with SIGXFSZ at its default (the recorder ignores it itself). FITS cubes are never created over a
//! file or through a link (also one put there after the check, as `LD_PRELOAD` makes it),
//! name the OS error when the disk refuses their header, and record under umask 0222. A
//! stream replaced while recorded is reported at once, while the others record on; one
//! whose producer ends, unlinking it (a process of its own), ends its recording complete,
//! status 0 (a plain stream's frames not read by then counted lost). A `close` that waits (as a network file
//! system's does, for the write-back) stalls no recording, a FITS frame-axis card the disk
//! refuses leaves the file holding the frames the card gives, an I/O error at a `.npy`
//! cube's table or header rewrite drops no frame and is not called a full disk, and frames
//! lost to a lap count only those `--frames` still wanted (all injected: `LD_PRELOAD`, a
//! freeze).

#[path = "../../tests/common/mod.rs"]
mod common;
mod preload;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Cleanup, LONG, Proc, unique_name};
use preload::{FAILING_SYNC, SYNC_CALLED, SYNC_LOADED, preload_lib};
use shmstream::{Dtype, Stream, StreamOptions};

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin!("shmstream").to_path_buf()
}

fn out_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(unique_name(tag));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A camera: writes frame `i` (every pixel `i % 50_000`, frame id `i`) once per
/// millisecond on its own clock until `recorder` exits; returns its status and stderr.
fn produce_until_exit(s: &Stream, recorder: Proc) -> (ExitStatus, String) {
    produce_paced(s, recorder, Duration::from_millis(1))
}

/// [`produce_until_exit`] with a frame every `period`.
fn produce_paced(s: &Stream, recorder: Proc, period: Duration) -> (ExitStatus, String) {
    let mut frame = vec![0u16; s.len()];
    produce_every(s, recorder, period, |s, i| {
        frame.fill((i % 50_000) as u16);
        s.write_slice_frame(&frame, i).unwrap();
    })
}

/// A camera that writes frame `i` with `write(stream, i)`, once per millisecond on its own
/// clock, until `recorder` exits; returns its status and stderr.
fn produce_with(
    s: &Stream,
    recorder: Proc,
    write: impl FnMut(&Stream, u64),
) -> (ExitStatus, String) {
    produce_every(s, recorder, Duration::from_millis(1), write)
}

/// [`produce_with`] with a frame every `period`.
fn produce_every(
    s: &Stream,
    mut recorder: Proc,
    period: Duration,
    mut write: impl FnMut(&Stream, u64),
) -> (ExitStatus, String) {
    let start = Instant::now();
    for i in 1u64.. {
        if let Some(st) = recorder.try_status() {
            // Let the pipe readers collect the summary.
            recorder.wait_timeout(LONG);
            return (st, recorder.diagnostics());
        }
        assert!(
            start.elapsed() < LONG,
            "recorder still running:\n{}",
            recorder.diagnostics()
        );
        write(s, i);
        // The camera's frame period (pacing a producer, not synchronizing with the test).
        std::thread::sleep(period);
    }
    unreachable!()
}

/// The bytes of frame `i` in the every-dtype test: every bit pattern shows up, so the sign
/// bit, the byte order and the BZERO offset of each type are all exercised.
fn pattern(i: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|j| ((i * 37 + j * 11 + 5) % 256) as u8)
        .collect()
}

fn record(name: &str, out: &Path, extra: &[&str]) -> Proc {
    let mut c = Command::new(bin());
    c.args(["record", name, "--out"]).arg(out).args(extra);
    common::default_stop_signals(&mut c);
    Proc::spawn(c)
}

/// Checks the cubes with numpy/astropy: frames consecutive, pixels = frame id % 50000,
/// counts consecutive; prints "ok <files> <frames>".
const CHECK: &str = r#"
import sys, glob, csv, numpy as np
out, fmt, per_file = sys.argv[1], sys.argv[2], int(sys.argv[3])
shape = tuple(int(d) for d in sys.argv[4].split("x"))
files = sorted(glob.glob(f"{glob.escape(out)}/*.{fmt}"))
ids, counts, sizes = [], [], []
for f in files:
    if fmt == "fits":
        from astropy.io import fits
        with fits.open(f) as h:
            h.verify("exception")
            data = h[0].data
            assert h[0].header["BITPIX"] == 16 and h[0].header["BZERO"] == 32768, h[0].header
            # Extension names belong to extensions (fitsio names the primary image too).
            assert "EXTNAME" not in h[0].header, h[0].header
            t = h["FRAMES"].data
            fid, cnt = list(t["FRAME_ID"]), list(t["COUNT"])
            assert all(t["WRITE_TIME"] > 1e9) and all(t["RECORD_TIME"] >= t["WRITE_TIME"] - 1)
            cols = h["FRAMES"].columns
            assert cols["WRITE_TIME"].unit == "s" and cols["RECORD_TIME"].unit == "s", cols
    else:
        data = np.load(f)
        rows = list(csv.DictReader(open(f[:-4] + ".frames.csv")))
        fid, cnt = [int(r["frame_id"]) for r in rows], [int(r["count"]) for r in rows]
    assert data.dtype == np.uint16, data.dtype
    assert data.shape[1:] == shape, data.shape
    assert data.shape[0] == len(fid), (data.shape, len(fid))
    for k, i in enumerate(fid):
        assert (data[k] == i % 50000).all(), (f, k, i)
    ids += fid; counts += cnt; sizes.append(len(fid))
# A recording stopped before its first frame has one empty cube.
assert not ids or ids == list(range(ids[0], ids[0] + len(ids))), "frame ids not consecutive"
assert not counts or counts == list(range(counts[0], counts[0] + len(counts))), "counts not consecutive"
assert all(n == per_file for n in sizes[:-1]), sizes
print("ok", len(files), len(ids))
"#;

/// Runs a Python check script with `args` in the test venv; its stdout, or `None` without
/// Python. Fails the test (with the script's output) if the script fails.
fn python_check(script: &str, args: &[&std::ffi::OsStr], what: &str) -> Option<String> {
    let py = common::python()?;
    let o = Command::new(py)
        .args(["-c", script])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{what} check failed: {stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(stdout)
}

fn check(out: &Path, fmt: &str, per_file: usize) -> (usize, usize) {
    check_shaped(out, fmt, per_file, "6x5")
}

/// [`check`] for frames of `shape` ("HxW").
fn check_shaped(out: &Path, fmt: &str, per_file: usize, shape: &str) -> (usize, usize) {
    let per_file = per_file.to_string();
    let Some(stdout) = python_check(
        CHECK,
        &[
            out.as_os_str(),
            fmt.as_ref(),
            per_file.as_ref(),
            shape.as_ref(),
        ],
        fmt,
    ) else {
        return (0, 0);
    };
    let v: Vec<usize> = stdout
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0], v[1])
}

/// The ring of the small-frame cameras: the camera never waits for the recorder, so this is
/// the stall a recorder may have without losing a frame (4 s at 1 kHz; with 64 frames a
/// clean-clone CI run on 2 cores once lost one, and 512 left half a second, while the astropy
/// checks of two tests at once take both cores for a while).
const RING: usize = 4096;

fn camera(tag: &str, history: usize) -> (String, Cleanup, Stream) {
    camera_shaped(&unique_name(tag), &[6, 5], history)
}

/// A u16 camera stream `name` of frames of `shape`.
fn camera_shaped(name: &str, shape: &[usize], history: usize) -> (String, Cleanup, Stream) {
    let name = name.to_owned();
    let c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(shape)
        .dtype(Dtype::U16)
        .notify(true)
        .history(history)
        .create()
        .unwrap();
    (name, c, s)
}

#[test]
fn every_frame_of_a_history_stream_lands_in_fits_cubes_that_astropy_reads() {
    let (name, _c, s) = camera("rec-fits", RING);
    let out = out_dir("rec-fits");
    let r = record(&name, &out, &["--frames", "300", "--per-file", "120"]);
    let (st, diag) = produce_until_exit(&s, r);
    assert!(st.success(), "{diag}");
    assert!(
        diag.contains("300 frames in 3 file(s)") && diag.contains(", 0 lost"),
        "{diag}"
    );
    if common::python().is_some() {
        assert_eq!(check(&out, "fits", 120), (3, 300));
        assert_eq!(
            endings(&out),
            ["0 True"; 3],
            "LOST and COMPLETE of each file"
        );
    }
    let _ = std::fs::remove_dir_all(out);
}

/// Prints the `LOST` and `COMPLETE` cards of each FITS file in a directory, in name order,
/// as astropy reads them.
const CHECK_ENDING: &str = r#"
import sys, glob
from astropy.io import fits
for f in sorted(glob.glob(f"{glob.escape(sys.argv[1])}/*.fits")):
    with fits.open(f) as h:
        h.verify("exception")
        lost, complete = h[0].header["LOST"], h[0].header["COMPLETE"]
        assert type(lost) is int and type(complete) is bool, (lost, complete)
        print(lost, complete)
"#;

/// `LOST COMPLETE` of each FITS file in `out` (see [`CHECK_ENDING`]); call with Python.
fn endings(out: &Path) -> Vec<String> {
    python_check(CHECK_ENDING, &[out.as_os_str()], "LOST and COMPLETE cards")
        .expect("Python")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn npy_cubes_and_a_full_disk_keep_every_whole_frame_and_exit_1() {
    let (name, _c, s) = camera("rec-npy", RING);
    let out = out_dir("rec-npy");
    let (st, diag) = produce_until_exit(
        &s,
        record(
            &name,
            &out,
            &["--duration", "0.5", "--format", "npy", "--per-file", "100"],
        ),
    );
    assert!(st.success(), "{diag}");
    if common::python().is_some() {
        let (_, frames) = check(&out, "npy", 100);
        assert!(frames > 0);
    }
    let _ = std::fs::remove_dir_all(&out);

    // A 4 KiB file-size limit stands in for a full disk: the first cube fills up.
    let out = out_dir("rec-full");
    let c = record_on_a_full_disk(&[&name, "--format", "npy", "--frames", "400"], &out, 4096);
    let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
    assert_eq!(st.code(), Some(1), "{diag}");
    assert!(diag.contains("FAILED"), "{diag}");
    // (4096 - 128 header bytes) / 60 bytes per frame; the summary counts those on file.
    let kept = (4096 - 128) / 60;
    assert_eq!(summary(&diag), (1, kept), "{diag}");
    assert!(
        diag.contains(&format!(", {} not recorded", 400 - kept)),
        "{diag}"
    );
    // A file-size limit, said as one with its remedy: not a full disk.
    let too_large = std::io::Error::from_raw_os_error(libc::EFBIG);
    assert!(
        diag.contains(&format!(
            "{too_large}: the file reached the file-size limit"
        )) && diag.contains("record again with a smaller --per-file, or raise the limit")
            && !diag.contains("free some space"),
        "{diag}"
    );
    if common::python().is_some() {
        let (files, frames) = check(&out, "npy", 400);
        assert_eq!(files, 1);
        assert_eq!(frames, kept, "every whole frame kept");
    }
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn large_frames_go_to_npy_cubes_straight_from_the_ring_and_a_full_disk_keeps_whole_ones() {
    // 80 KiB frames: over the size a cube writes straight from the history ring. The camera
    // does not wait for the recorder, so the ring is what a stalled recorder has: 512 frames
    // (40 MiB) at a frame every 5 ms is 2.5 s (at 1 kHz it was half a second, which parallel
    // astropy checks on 2 cores can take; with 64 frames a CI run once lost one).
    let name = unique_name("rec-large");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[256, 160])
        .dtype(Dtype::U16)
        .notify(true)
        .history(512)
        .create()
        .unwrap();
    let out = out_dir("rec-large");
    let r = record(
        &name,
        &out,
        &["--frames", "40", "--per-file", "16", "--format", "npy"],
    );
    let (st, diag) = produce_paced(&s, r, Duration::from_millis(5));
    assert!(st.success(), "{diag}");
    assert!(
        diag.contains("40 frames in 3 file(s)") && diag.contains(", 0 lost"),
        "{diag}"
    );
    if common::python().is_some() {
        assert_eq!(check_shaped(&out, "npy", 16, "256x160"), (3, 40));
    }
    let _ = std::fs::remove_dir_all(&out);

    // Room for the 128-byte header and two and a half frames: two whole frames stay.
    let frame = 256 * 160 * 2;
    let out = out_dir("rec-large-full");
    let c = record_on_a_full_disk(
        &[&name, "--format", "npy", "--frames", "40"],
        &out,
        128 + 2 * frame + frame / 2,
    );
    let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
    assert_eq!(st.code(), Some(1), "{diag}");
    assert!(diag.contains("FAILED"), "{diag}");
    if common::python().is_some() {
        assert_eq!(check_shaped(&out, "npy", 40, "256x160"), (1, 2));
    }
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn bad_output_dirs_plain_streams_and_bad_arguments_are_clear() {
    let (name, _c, _s) = camera("rec-bad", 8);
    // An --out that cannot be made says what to do; under /proc, which is there but makes
    // no directories, says so.
    for (out, remedy) in [
        ("/proc/self/nope/x", "give another --out"),
        (
            "/proc/shmstream-rec",
            "its file system makes no new directories there: give another --out",
        ),
    ] {
        let o = Command::new(bin())
            .args(["record", &name, "--frames", "1", "--out", out])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("--out {out}: cannot create the directory: "))
                && err.contains(&format!(": {remedy}")),
            "{err}"
        );
    }

    let o = Command::new(bin())
        .args(["record", &name, "--out", "/tmp"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "--frames or --duration is required"
    );

    let plain = unique_name("rec-plain");
    let _p = Cleanup::new([&plain]);
    let p = Stream::create(&plain, &[4], Dtype::Complex64).unwrap();
    let out = out_dir("rec-plain");
    let o = Command::new(bin())
        .args(["record", &plain, "--duration", "0.2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--format npy"),
        "complex64 has no FITS type: {err}"
    );
    let o = Command::new(bin())
        .args([
            "record",
            &plain,
            "--duration",
            "0.2",
            "--format",
            "npy",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("keeps no history"), "{err}");
    assert!(
        err.contains(&format!(
            "to record every frame, have its producer create it with a history (Rust: \
             StreamOptions history(n)), or remove it with `shmstream unlink {plain}` and make it \
             first with `shmstream create {plain} --shape ... --dtype ... --history N` before \
             the producer starts (opening it)"
        )),
        "the warning names the terminal's remedy: {err}"
    );
    drop(p);
    let _ = std::fs::remove_dir_all(out);
}

/// Checks FITS cubes of any dtype: the primary image holds, frame by frame, exactly the
/// bytes `pattern(frame id)` the camera wrote, as astropy reads them (dtype and values).
const CHECK_BITS: &str = r#"
import sys, glob, numpy as np
from astropy.io import fits
out, dtype, frames = sys.argv[1], np.dtype(sys.argv[2]), int(sys.argv[3])
def pattern(i, n):
    return bytes((i * 37 + j * 11 + 5) % 256 for j in range(n))
seen = 0
for f in sorted(glob.glob(f"{out}/*.fits")):
    with fits.open(f) as h:
        data, fid = h[0].data, h["FRAMES"].data["FRAME_ID"]
        assert data.shape[0] == len(fid) and data.shape[1:] == (3, 4), (f, data.shape)
        le = data.astype(data.dtype.newbyteorder("<"))
        assert le.dtype == dtype.newbyteorder("<"), (le.dtype, dtype)
        for k, i in enumerate(fid):
            assert le[k].tobytes() == pattern(int(i), le[k].nbytes), (f, dtype, k, le[k])
        seen += len(fid)
assert seen == frames, (seen, frames)
print("ok", seen)
"#;

#[test]
fn fits_cubes_of_every_fits_dtype_hold_exactly_the_bits_written() {
    for dtype in [
        Dtype::U8,
        Dtype::I8,
        Dtype::I16,
        Dtype::U16,
        Dtype::I32,
        Dtype::U32,
        Dtype::I64,
        Dtype::U64,
        Dtype::F32,
        Dtype::F64,
    ] {
        let name = unique_name("rec-dtype");
        let _c = Cleanup::new([&name]);
        // RING frames: seconds of a stalled recorder at the camera's 1 kHz.
        let s = StreamOptions::new(&name)
            .shape(&[3, 4])
            .dtype(dtype)
            .notify(true)
            .history(RING)
            .create()
            .unwrap();
        let out = out_dir("rec-dtype");
        let r = record(&name, &out, &["--frames", "20", "--per-file", "8"]);
        let (st, diag) = produce_with(&s, r, |s, i| {
            s.write_bytes_frame(&pattern(i, s.size_bytes()), i).unwrap()
        });
        assert!(st.success(), "{dtype}: {diag}");
        python_check(
            CHECK_BITS,
            &[out.as_os_str(), dtype.numpy_name().as_ref(), "20".as_ref()],
            dtype.numpy_name(),
        );
        let _ = std::fs::remove_dir_all(out);
    }
}

/// Runs `shmstream record ARGS --out OUT` with files limited to `limit` bytes (`ulimit -f`,
/// standing in for a full disk).
fn record_on_a_full_disk(args: &[&str], out: &Path, limit: u64) -> Command {
    let mut c = Command::new(bin());
    c.arg("record")
        .args(args)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null());
    common::limit_file_size(&mut c, limit);
    c
}

/// Checks a FITS cube cut short by a full disk: valid FITS, frames consecutive with pixels
/// = frame id % 50000 and one `FRAMES` row each; prints the frames.
const CHECK_FULL_FITS: &str = r#"
import sys, glob, numpy as np
from astropy.io import fits
[f] = glob.glob(f"{sys.argv[1]}/*.fits")
with fits.open(f) as h:
    h.verify("exception")
    d, ids = h[0].data, list(h["FRAMES"].data["FRAME_ID"])
    assert d.dtype == np.uint16 and d.shape[1:] == (6, 5), (d.dtype, d.shape)
    assert len(ids) == d.shape[0], (len(ids), d.shape)
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids
    for k, i in enumerate(ids):
        assert (d[k] == i % 50000).all(), (k, i, d[k])
    # Cut short by the full disk: not complete.
    assert h[0].header["COMPLETE"] is False and h[0].header["LOST"] == 0, repr(h[0].header)
    print(d.shape[0])
"#;

#[test]
fn a_full_disk_keeps_every_whole_fits_frame_and_exits_1() {
    let (name, _c, s) = camera("rec-fits-full", RING);
    // One header block and three more: 144 frames of 60 bytes fill them, but with their
    // table (a header block and a block of rows) only 48 fit: 2880 + 2880 + 2880 + 2880.
    // 400 frames: the frames fill the file; 96: the frames fit (two blocks), their table
    // does not.
    for (frames, whole) in [("400", 144), ("96", 96)] {
        let out = out_dir("rec-fits-full");
        let c = record_on_a_full_disk(&[&name, "--frames", frames], &out, 4 * 2880);
        let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
        assert_eq!(st.code(), Some(1), "{diag}");
        assert!(diag.contains("FAILED"), "{diag}");
        assert!(
            diag.contains(&format!(
                "kept the first 48 of {whole} whole frames, dropping the last {}",
                whole - 48
            )) && diag.contains("FRAMES table"),
            "{diag}"
        );
        // A file-size limit, said as one with its remedy: not a full disk.
        assert!(
            diag.contains("the file reached the file-size limit (`ulimit -f`")
                && diag.contains("record again with a smaller --per-file, or raise the limit")
                && !diag.contains("the disk is full")
                && !diag.contains("free some space"),
            "{diag}"
        );
        assert_eq!(
            summary(&diag),
            (1, 48),
            "the summary counts the frames on file: {diag}"
        );
        let taken: usize = frames.parse().unwrap();
        assert!(
            diag.contains(&format!(", {} not recorded", taken - 48)),
            "{diag}"
        );
        if let Some(stdout) = python_check(CHECK_FULL_FITS, &[out.as_os_str()], "full-disk FITS") {
            assert_eq!(stdout.trim(), "48", "the whole frames whose table fits");
        }
        let _ = std::fs::remove_dir_all(out);
    }
}

#[test]
fn a_frame_table_cut_short_by_a_full_disk_keeps_only_the_npy_frames_it_lists() {
    // 2-byte frames and ~50-byte rows: 448 frames fill a 1 KiB cube ((1024 - 128) / 2)
    // while a 1 KiB table holds only about 19 rows.
    let (name, _c, s) = camera_shaped(&unique_name("rec-csv-full"), &[1], RING);
    let out = out_dir("rec-csv-full");
    let c = record_on_a_full_disk(&[&name, "--format", "npy", "--frames", "500"], &out, 1024);
    let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
    assert_eq!(st.code(), Some(1), "{diag}");
    assert!(
        diag.contains(".frames.csv: writing the frame table")
            && diag.contains("of 448 whole frames whose rows it holds")
            && diag.contains("record again with a smaller --per-file, or raise the limit")
            && !diag.contains("free some space"),
        "{diag}"
    );
    if common::python().is_some() {
        let (files, frames) = check_shaped(&out, "npy", 500, "1");
        assert_eq!(files, 1);
        assert!((10..30).contains(&frames), "{frames} frames");
    }
    let _ = std::fs::remove_dir_all(out);
}

/// A fault-injecting library for `LD_PRELOAD`: its `name`, the libc calls it takes over
/// and its own C `body`, which defines the static function they forward to.
struct PreloadC {
    name: &'static str,
    wraps: Wraps,
    body: &'static str,
}

/// The libc calls a [`PreloadC`] library takes over, each forwarding its arguments to one
/// static function that the library's body defines.
enum Wraps {
    /// `pwrite` and `pwrite64`, to `int refusal(int fd, size_t *count, off_t at)`: the errno
    /// the write fails with, or 0 to write its first `*count` bytes (which it may lower) with
    /// the `pwrite64` system call.
    Pwrite,
    /// `open` and `open64`, to `int opened(const char *path, int flags, va_list ap)` (`ap`
    /// holding the mode, if there is one).
    Open,
    /// `close`, to `int closed(int fd)`.
    Close,
    /// `statx`, to `int statted(int dirfd, const char *path, int flags, unsigned int mask,
    /// struct statx *buf)`.
    Statx,
    /// `pthread_create`, to `int created(pthread_t *thread, const pthread_attr_t *attr,
    /// void *(*run)(void *), void *arg)` (the body includes `<pthread.h>`).
    PthreadCreate,
}

/// The headers every [`PreloadC`] body may use, and `say`.
const PRELOAD_HEADERS: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
/* Writes `said` on stderr. */
static void say(const char *said) {
    (void)!write(2, said, strlen(said));
}
"#;

/// The constructor of every [`PreloadC`] library: it writes `NAME loaded` on stderr, `NAME`
/// standing for the library's name.
const PRELOAD_LOADED: &str = r#"__attribute__((constructor)) static void loaded(void) {
    say("NAME loaded\n");
}
"#;

impl PreloadC {
    /// The library's C source: the headers, its body, the wrappers of the calls it takes
    /// over (`CALL` standing for each one's name) and its constructor.
    fn source(&self) -> String {
        let (calls, wrapper): (&[&str], &str) = match self.wraps {
            Wraps::Pwrite => (
                &["pwrite", "pwrite64"],
                "ssize_t CALL(int fd, const void *buf, size_t count, off_t at) {
    int err = refusal(fd, &count, at);
    if (err != 0) {
        errno = err;
        return -1;
    }
    return (ssize_t)syscall(SYS_pwrite64, fd, buf, count, at);
}\n",
            ),
            Wraps::Open => (
                &["open", "open64"],
                "int CALL(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    int fd = opened(path, flags, ap);
    va_end(ap);
    return fd;
}\n",
            ),
            Wraps::Close => (&["close"], "int CALL(int fd) { return closed(fd); }\n"),
            Wraps::Statx => (
                &["statx"],
                "int CALL(int dirfd, const char *path, int flags, unsigned int mask, \
                 struct statx *buf) {
    return statted(dirfd, path, flags, mask, buf);
}\n",
            ),
            Wraps::PthreadCreate => (
                &["pthread_create"],
                "int CALL(pthread_t *thread, const pthread_attr_t *attr, \
                 void *(*run)(void *), void *arg) {
    return created(thread, attr, run, arg);
}\n",
            ),
        };
        let wrappers: String = calls.iter().map(|c| wrapper.replace("CALL", c)).collect();
        let loaded = PRELOAD_LOADED.replace("NAME", self.name);
        format!("{PRELOAD_HEADERS}{}{wrappers}{loaded}", self.body)
    }

    /// Builds the library into `dir` ([`preload_lib`]): `None` (said on stderr, `dir`
    /// removed) without a C compiler.
    fn build(&self, dir: &Path) -> Option<PathBuf> {
        let lib = preload_lib(dir, self.name, &self.source());
        if lib.is_none() {
            let _ = std::fs::remove_dir_all(dir);
        }
        lib
    }
}

/// A library for `LD_PRELOAD` that puts each `.npy` cube and its `.frames.csv` table on one
/// disk of `$SHARED_DISK_BYTES`: a `pwrite` to either (known by its `/proc/self/fd` link)
/// that grows it lands only as far as the disk has room beside both files (at their sizes
/// then), and with none fails with ENOSPC, as a full disk's does; every other write is left
/// alone. (A file-size limit gives each file a room of its own: dropped frames free none
/// for the table.) The recorder writes both with `pwrite64`.
const SHARED_DISK: PreloadC = PreloadC {
    name: "shared_disk",
    wraps: Wraps::Pwrite,
    body: r#"
/* The bytes of `count` that a write at `at` to `fd` may put on the disk. */
static size_t room(int fd, off_t at, size_t count) {
    static const char table[] = ".frames.csv", cube[] = ".npy";
    const char *disk = getenv("SHARED_DISK_BYTES");
    char link[64], path[4096];
    if (disk == NULL || *disk == '\0') {
        return count;
    }
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1 - sizeof table);
    size_t kt = sizeof table - 1, kc = sizeof cube - 1;
    if (n < 0) {
        return count;
    }
    path[n] = '\0';
    if ((size_t)n >= kt && memcmp(path + n - kt, table, kt) == 0) {
        strcpy(path + n - kt, cube);
    } else if ((size_t)n >= kc && memcmp(path + n - kc, cube, kc) == 0) {
        strcpy(path + n - kc, table);
    } else {
        return count;
    }
    /* The file may grow until the two fill the disk. */
    struct stat other;
    long long end = atoll(disk) - (stat(path, &other) == 0 ? (long long)other.st_size : 0);
    if ((long long)at >= end) {
        return 0;
    }
    return (unsigned long long)(end - at) < count ? (size_t)(end - at) : count;
}
static int refusal(int fd, size_t *count, off_t at) {
    size_t fits = room(fd, at, *count);
    if (fits == 0 && *count > 0) {
        return ENOSPC;
    }
    *count = fits;
    return 0;
}
"#,
};

/// A full disk that the `.npy` cube and its table share ([`SHARED_DISK`]) cuts the table
/// short, and dropping frames makes room for it: only as many of the last frames are
/// dropped as the rows of the rest need, not every frame after the last row that landed.
/// 1000 frames of 4 KiB on a disk with 2 KB more, for a table of about 50 KB written as the
/// recording goes (a row a frame, each second): the disk fills (the cube or the table
/// first, by timing), and the files left fill it but for less than a frame and its row:
/// about 12 frames are dropped, and if any beyond the part of one that the full disk cut,
/// said so (the rows since the last second may fit there). Skipped (said on stderr)
/// without a C compiler.
#[test]
fn a_frame_table_cut_short_on_a_disk_it_shares_with_its_npy_cube_drops_only_frames_it_needs() {
    let lib_dir = out_dir("rec-shared-disk-lib");
    let Some(lib) = SHARED_DISK.build(&lib_dir) else {
        return;
    };
    let (name, _c, s) = camera_shaped(&unique_name("rec-shared-disk"), &[64, 32], RING);
    let out = out_dir("rec-shared-disk");
    // The cube's header (checked below) and the frames; a row is under 64 bytes.
    let (header, frame, frames, row) = (128, 64 * 32 * 2, 1000, 64);
    let disk = header + frames * frame + 2048;
    let mut c = Command::new(bin());
    c.args(["record", &name, "--frames", "1000", "--per-file", "1000"])
        .args(["--format", "npy", "--out"])
        .arg(&out)
        .env("LD_PRELOAD", &lib)
        .env("SHARED_DISK_BYTES", disk.to_string());
    common::default_stop_signals(&mut c);
    let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
    assert!(diag.contains("shared_disk loaded"), "not preloaded: {diag}");
    assert_eq!(st.code(), Some(1), "{diag}");
    assert!(diag.contains("the disk is full"), "{diag}");
    let cube = out.join(format!("{name}_000000000.npy"));
    let bytes = std::fs::read(&cube).unwrap();
    assert_eq!(
        10 + usize::from(u16::from_le_bytes([bytes[8], bytes[9]])),
        header
    );
    let kept = summary(&diag).1;
    assert!(kept >= 980, "kept {kept} of {frames} frames: {diag}");
    assert_eq!(bytes.len(), header + kept * frame);
    let table = npy_table(&cube);
    assert_eq!(table_rows(&table), kept);
    // Only the frames the table needs dropped: one more and its row would not fit.
    let used = bytes.len() + std::fs::metadata(&table).unwrap().len() as usize;
    assert!(
        used <= disk && disk - used < frame + row,
        "{used} of {disk} bytes used: {diag}"
    );
    if let Some(at) = diag.find("kept the first ") {
        let said = &diag[at..];
        assert!(
            said.starts_with(&format!("kept the first {kept} of ")),
            "{diag}"
        );
    }
    if common::python().is_some() {
        assert_eq!(check_shaped(&out, "npy", frames, "64x32"), (1, kept));
    }
    let _ = std::fs::remove_dir_all(out);
    let _ = std::fs::remove_dir_all(lib_dir);
}

#[test]
fn fits_cubes_of_1d_and_3d_streams_have_the_frames_on_their_last_axis() {
    for (shape, shown) in [(&[7][..], "7"), (&[2, 3, 4][..], "2x3x4")] {
        let (name, _c, s) = camera_shaped(&unique_name("rec-ndim"), shape, RING);
        let out = out_dir("rec-ndim");
        let r = record(&name, &out, &["--frames", "20", "--per-file", "8"]);
        let (st, diag) = produce_until_exit(&s, r);
        assert!(st.success(), "{shown}: {diag}");
        if common::python().is_some() {
            assert_eq!(check_shaped(&out, "fits", 8, shown), (3, 20), "{shown}");
        }
        let _ = std::fs::remove_dir_all(out);
    }
}

#[test]
fn a_huge_per_file_records_without_reserving_it() {
    let (name, _c, s) = camera("rec-huge", RING);
    for (per_file, format) in [
        ("1000000000000", "fits"),
        ("18446744073709551615", "fits"),
        ("18446744073709551615", "npy"),
    ] {
        let out = out_dir("rec-huge");
        let r = record(
            &name,
            &out,
            &["--frames", "1", "--per-file", per_file, "--format", format],
        );
        let (st, diag) = produce_until_exit(&s, r);
        assert!(st.success(), "--per-file {per_file}: {diag}");
        assert!(!diag.contains("panicked"), "{diag}");
        if common::python().is_some() {
            assert_eq!(
                check_shaped(&out, format, per_file.parse().unwrap(), "6x5"),
                (1, 1)
            );
        }
        let _ = std::fs::remove_dir_all(out);
    }
}

/// `shmstream record ARGS --duration 0.2 --out OUT` with no camera: its status and stderr.
fn record_briefly(args: &[&str], out: &Path) -> (Option<i32>, String) {
    let o = Command::new(bin())
        .arg("record")
        .args(args)
        .args(["--duration", "0.2", "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A stream that cannot be recorded (missing, or with no FITS type) creates no `--out`
/// directory.
#[test]
fn a_refused_recording_creates_no_out_directory() {
    let missing = unique_name("rec-missing");
    let plain = unique_name("rec-nodir");
    let _p = Cleanup::new([&plain]);
    Stream::create(&plain, &[4], Dtype::Complex64).unwrap();
    let parent = out_dir("rec-nodir");
    let out = parent.join("new");
    for (stream, why) in [(&missing, "not found"), (&plain, "--format npy")] {
        let (code, err) = record_briefly(&[stream], &out);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(why), "{err}");
        assert!(!out.exists(), "{stream}: {err}");
    }
    let _ = std::fs::remove_dir_all(parent);
}

/// `--frames 0` or `--duration 0` (an empty cube) and `--per-file 0` are refused before
/// `--out` is created.
#[test]
fn zero_frames_or_zero_per_file_are_refused_before_any_out_directory() {
    let (name, _c, _s) = camera("rec-zero", 8);
    let parent = out_dir("rec-zero");
    let out = parent.join("new");
    for (args, why) in [
        (
            ["--frames", "0", "--per-file", "1"],
            "--frames must be at least 1",
        ),
        (
            ["--duration", "0", "--per-file", "1"],
            "--duration must be more than 0 seconds",
        ),
        (
            ["--frames", "1", "--per-file", "0"],
            "--per-file must be at least 1",
        ),
    ] {
        let o = Command::new(bin())
            .args(["record", &name])
            .args(args)
            .arg("--out")
            .arg(&out)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} created {out:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(parent);
}

#[test]
fn streams_that_would_share_files_are_refused_before_recording() {
    let base = unique_name("rec-dup");
    let (spaced, _c1, _s1) = camera_shaped(&format!("{base} x"), &[2], 8);
    let (underscored, _c2, _s2) = camera_shaped(&format!("{base}_x"), &[2], 8);
    let out = out_dir("rec-dup");
    let (code, err) = record_briefly(&[&spaced, &underscored, "--format", "npy"], &out);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("'{spaced}' and '{underscored}'"))
            && err.contains("separate --out directories"),
        "{err}"
    );
    let (code, err) = record_briefly(&[&spaced, "--format", "npy", &spaced], &out);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("'{spaced}' is given twice")), "{err}");
    assert!(files_in(&out).is_empty(), "{:?}", files_in(&out));
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn existing_recording_files_are_never_overwritten() {
    let (name, _c, s) = camera("rec-exists", RING);
    // Any one of a cube's files in the way refuses the recording, naming it, and leaves it
    // as it was (the FITS cube was refused so before; npy now matches it).
    for (format, file) in [
        ("npy", "_000000000.npy"),
        ("npy", "_000000000.frames.csv"),
        ("fits", "_000000000.fits"),
    ] {
        let out = out_dir("rec-exists");
        let there = out.join(format!("{name}{file}"));
        std::fs::write(&there, "an earlier recording").unwrap();
        let (code, err) = record_briefly(&[&name, "--format", format], &out);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains(&format!("{}: already exists", there.display())),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&there).unwrap(),
            "an earlier recording"
        );
        assert_eq!(files_in(&out).len(), 1, "{:?}", files_in(&out));
        let _ = std::fs::remove_dir_all(out);
    }
    // A later file in the way fails the stream when it is due: the first cube is whole, the
    // file in the way intact, and the cube beside a table in the way is not left behind.
    for file in ["_000000001.npy", "_000000001.frames.csv"] {
        let out = out_dir("rec-exists-later");
        let there = out.join(format!("{name}{file}"));
        std::fs::write(&there, "an earlier recording").unwrap();
        let r = record(
            &name,
            &out,
            &["--frames", "10", "--per-file", "5", "--format", "npy"],
        );
        let (st, diag) = produce_until_exit(&s, r);
        assert_eq!(st.code(), Some(1), "{diag}");
        assert!(
            diag.contains(&format!("{}: already exists", there.display())),
            "{diag}"
        );
        assert_eq!(
            std::fs::read_to_string(&there).unwrap(),
            "an earlier recording"
        );
        std::fs::remove_file(&there).unwrap();
        assert!(diag.contains("5 frames in 1 file(s)"), "{diag}");
        if common::python().is_some() {
            assert_eq!(check(&out, "npy", 5), (1, 5));
        }
        assert_eq!(files_in(&out).len(), 2, "{:?}", files_in(&out));
        let _ = std::fs::remove_dir_all(out);
    }
}

/// An `LD_PRELOAD` library that hides every `.fits` path from `statx` (what Rust's
/// `symlink_metadata` calls): as if a file were put there just after the recorder checked
/// that none is.
const HIDE_FITS: PreloadC = PreloadC {
    name: "hide_fits",
    wraps: Wraps::Statx,
    body: r#"
static int statted(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
    size_t n = strlen(path);
    if (n >= 5 && strcmp(path + n - 5, ".fits") == 0) {
        say("hide_fits: hidden\n");
        errno = ENOENT;
        return -1;
    }
    return syscall(SYS_statx, dirfd, path, flags, mask, buf);
}
"#,
};

#[test]
fn a_fits_cube_is_never_created_over_a_file_or_through_a_link_even_one_put_there_late() {
    let (name, _c, s) = camera("rec-link", RING);
    let lib_dir = out_dir("rec-link-lib");
    // Without the library: refused by the check; with it: by the creation itself.
    let mut preloads = vec![None];
    preloads.extend(HIDE_FITS.build(&lib_dir).map(Some));
    for preload in preloads {
        for kind in ["file", "link to a file", "dangling link"] {
            let out = out_dir("rec-link");
            let (there, victim) = (
                out.join(format!("{name}_000000000.fits")),
                out.join("victim"),
            );
            match kind {
                "file" => std::fs::write(&there, "an earlier recording").unwrap(),
                _ => std::os::unix::fs::symlink(&victim, &there).unwrap(),
            }
            if kind == "link to a file" {
                std::fs::write(&victim, "an earlier recording").unwrap();
            }
            let mut c = Command::new(bin());
            c.args(["record", &name, "--frames", "3", "--out"])
                .arg(&out);
            if let Some(lib) = &preload {
                c.env("LD_PRELOAD", lib);
            }
            let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
            let what = format!("{kind}, preloaded: {}", preload.is_some());
            assert_eq!(st.code(), Some(1), "{what}: {diag}");
            assert!(
                diag.contains(&format!("{}: already exists", there.display())),
                "{what}: {diag}"
            );
            assert_eq!(
                preload.is_some(),
                diag.contains("hide_fits: hidden"),
                "{what}: {diag}"
            );
            let left = if kind == "file" { &there } else { &victim };
            match std::fs::read_to_string(left) {
                Ok(text) => assert_eq!(text, "an earlier recording", "{what}"),
                Err(e) => assert!(kind == "dangling link", "{what}: {e}"),
            }
            assert!(
                kind != "dangling link" || !victim.exists(),
                "{what}: created through the link"
            );
            let _ = std::fs::remove_dir_all(out);
        }
    }
    let _ = std::fs::remove_dir_all(lib_dir);
}

#[test]
fn a_fits_header_the_disk_refuses_names_the_os_error_and_leaves_no_file() {
    let (name, _c, s) = camera("rec-fits-header-full", RING);
    let out = out_dir("rec-fits-header-full");
    // Less than the header's one block.
    let c = record_on_a_full_disk(&[&name, "--frames", "3"], &out, 1000);
    let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
    assert_eq!(st.code(), Some(1), "{diag}");
    let too_large = std::io::Error::from_raw_os_error(libc::EFBIG).to_string();
    assert!(
        diag.contains(&format!(
            "writing the FITS header: {too_large}: the file reached the file-size limit"
        )) && diag.contains("raise the limit (`ulimit -f`)"),
        "{diag}"
    );
    assert!(!diag.contains("failed to fill whole buffer"), "{diag}");
    assert!(files_in(&out).is_empty(), "{:?}", files_in(&out));
    let _ = std::fs::remove_dir_all(out);
}

/// Makes `c`'s child start with umask 0222 (files it creates are read-only) and, as root,
/// without `CAP_DAC_OVERRIDE` in its bounding set (so it has none after `exec`, and opens
/// files as their mode says, as any other user does).
fn read_only_umask(c: &mut Command) -> &mut Command {
    // SAFETY: between fork and exec only async-signal-safe calls (umask, geteuid, prctl).
    unsafe {
        c.pre_exec(|| {
            libc::umask(0o222);
            // CAP_DAC_OVERRIDE (linux/capability.h).
            const CAP_DAC_OVERRIDE: libc::c_ulong = 1;
            if libc::geteuid() == 0 && libc::prctl(libc::PR_CAPBSET_DROP, CAP_DAC_OVERRIDE) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

#[test]
fn a_fits_recording_under_a_read_only_umask_succeeds() {
    // Whether a child started so still writes files regardless of their mode.
    let probe = read_only_umask(Command::new("cat").arg("/proc/self/status")).output();
    let overrides = probe.as_ref().map(|o| {
        let status = String::from_utf8_lossy(&o.stdout).into_owned();
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|caps| u64::from_str_radix(caps.trim(), 16).ok())
            .is_none_or(|caps| caps & 2 != 0)
    });
    if !matches!(overrides, Ok(false)) {
        eprintln!(
            "SKIP: cannot start a recorder without CAP_DAC_OVERRIDE here (root without CAP_SETPCAP?): {probe:?}"
        );
        return;
    }
    let (name, _c, s) = camera("rec-umask", RING);
    let out = out_dir("rec-umask");
    let mut c = Command::new(bin());
    c.args(["record", &name, "--frames", "5", "--per-file", "3", "--out"])
        .arg(&out);
    read_only_umask(&mut c);
    let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
    assert!(st.success(), "{diag}");
    assert!(diag.contains("5 frames in 2 file(s)"), "{diag}");
    use std::os::unix::fs::PermissionsExt;
    for f in files_in(&out) {
        let mode = std::fs::metadata(out.join(&f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444, "{f}: the umask applies");
    }
    if common::python().is_some() {
        assert_eq!(check(&out, "fits", 3), (2, 5));
    }
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn fits_files_are_created_at_exactly_the_out_path_given() {
    // cfitsio reads `!` as "overwrite", skips leading spaces, and `(` and `[` open a
    // template and a filter: none of that applies to an --out path.
    let (name, _c, s) = camera("rec-literal", RING);
    let base = out_dir("rec-literal");
    let cube = format!("{name}_000000000.fits");
    let earlier = base.join("x").join(&cube);
    std::fs::create_dir_all(earlier.parent().unwrap()).unwrap();
    std::fs::write(&earlier, "an earlier recording").unwrap();
    let outs = ["!x", " y", "run (2)", "take[x]"];
    for out in outs {
        // Relative to the current directory: `!x` is not `x` there.
        let mut c = Command::new(bin());
        c.current_dir(&base)
            .args(["record", &name, "--frames", "3", "--out", out]);
        let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
        assert_eq!(
            std::fs::read(&earlier).unwrap(),
            b"an earlier recording",
            "--out {out:?}"
        );
        assert!(st.success(), "--out {out:?}: {diag}");
        assert_eq!(files_in(&base.join(out)), [cube.as_str()], "--out {out:?}");
        if common::python().is_some() {
            assert_eq!(check(&base.join(out), "fits", 3), (1, 3), "--out {out:?}");
        }
    }
    let mut all: Vec<String> = outs.iter().map(|o| o.to_string()).collect();
    all.push("x".into());
    all.sort();
    assert_eq!(files_in(&base), all, "nothing created beside them");
    let _ = std::fs::remove_dir_all(base);
}

/// Reads the `FRAMES` table of the one FITS cube in `sys.argv[1]`: prints its frame ids and
/// counts and their numpy dtype.
const CHECK_IDS: &str = r#"
import sys, glob
from astropy.io import fits
[f] = glob.glob(f"{glob.escape(sys.argv[1])}/*.fits")
with fits.open(f) as h:
    h.verify("exception")
    t = h["FRAMES"].data
    print(t["FRAME_ID"].dtype, *[int(i) for i in t["FRAME_ID"]], *[int(c) for c in t["COUNT"]])
"#;

#[test]
fn frame_ids_above_i64_max_read_back_exactly() {
    let (name, _c, s) = camera("rec-u64", RING);
    let out = out_dir("rec-u64");
    let r = record(&name, &out, &["--frames", "3"]);
    // Ids on both sides of 2^63, and the largest.
    let ids = [i64::MAX as u64, 1 << 63, u64::MAX];
    let (st, diag) = produce_with(&s, r, |s, i| {
        let frame = vec![0u16; s.len()];
        s.write_slice_frame(&frame, ids[(i as usize - 1) % 3])
            .unwrap()
    });
    assert!(st.success(), "{diag}");
    if let Some(stdout) = python_check(CHECK_IDS, &[out.as_os_str()], "u64 frame ids") {
        let v: Vec<&str> = stdout.split_whitespace().collect();
        assert_eq!(v[0], "uint64", "{stdout}");
        let read: Vec<u64> = v[1..].iter().map(|x| x.parse().unwrap()).collect();
        let first = ids.iter().position(|&i| i == read[0]).unwrap();
        let expected: Vec<u64> = (0..3).map(|k| ids[(first + k) % 3]).collect();
        assert_eq!(read[..3], expected, "{stdout}");
        assert_eq!(read[4], read[3] + 1, "counts: {stdout}");
    }
    let _ = std::fs::remove_dir_all(out);
}

/// Prints the uint64 cube of the one FITS file in `sys.argv[1]` as astropy reads it: its
/// dtype, its BZERO card as written and as read, then every pixel.
const CHECK_U64: &str = r#"
import sys, glob
from astropy.io import fits
[f] = glob.glob(f"{glob.escape(sys.argv[1])}/*.fits")
with fits.open(f) as h:
    h.verify("exception")
    card = next(c for c in h[0].header.cards if c.keyword == "BZERO")
    print(h[0].data.dtype, card.image[10:30].strip(), type(card.value).__name__, *h[0].data.ravel().tolist())
"#;

#[test]
fn uint64_streams_are_recorded_in_fits_and_read_back_exactly() {
    let name = unique_name("rec-u64px");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[4])
        .dtype(Dtype::U64)
        .notify(true)
        .history(RING)
        .create()
        .unwrap();
    let out = out_dir("rec-u64px");
    let r = record(&name, &out, &["--frames", "2"]);
    let frame = |i: u64| [i, 1 << 63, u64::MAX - i, (1 << 63) - 1 - i];
    let (st, diag) = produce_with(&s, r, |s, i| s.write_slice_frame(&frame(i), i).unwrap());
    assert!(st.success(), "{diag}");
    if let Some(stdout) = python_check(CHECK_U64, &[out.as_os_str()], "uint64 pixels") {
        let v: Vec<&str> = stdout.split_whitespace().collect();
        assert_eq!(v[..3], ["uint64", "9223372036854775808", "int"], "{stdout}");
        let px: Vec<u64> = v[3..].iter().map(|x| x.parse().unwrap()).collect();
        let first = px[0];
        let expected: Vec<u64> = (first..first + 2).flat_map(frame).collect();
        assert_eq!(px, expected, "{stdout}");
    }
    let _ = std::fs::remove_dir_all(out);
}

/// Prints the times of the one FITS file in `sys.argv[1]` as UNIX seconds, read as FITS
/// times: the primary header's DATE, DATE-OBS and DATE-END (UTC), then `id:write:record`
/// for each row of the `FRAMES` table read by astropy as `Time` columns.
const CHECK_TIMES: &str = r#"
import sys, glob
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
[f] = glob.glob(f"{glob.escape(sys.argv[1])}/*.fits")
h = fits.getheader(f, 0)
dates = [Time(h[k], format="isot", scale="utc").unix for k in ("DATE", "DATE-OBS", "DATE-END")]
t = Table.read(f, hdu="FRAMES", astropy_native=True)
w, r = t["WRITE_TIME"], t["RECORD_TIME"]
assert isinstance(w, Time) and isinstance(r, Time), (type(w), type(r))
print(*[repr(float(d)) for d in dates], *[f"{int(i)}:{float(x)!r}:{float(y)!r}" for i, x, y in zip(t["FRAME_ID"], w.unix, r.unix)])
"#;

/// The FITS time keywords: the `FRAMES` times read as `Time` (FITS 4.0 §9, astropy's
/// `astropy_native`) give the stream's write times back within 1 µs, and the primary
/// header's `DATE-OBS` and `DATE-END` are the first and last frame's.
#[test]
fn fits_times_read_as_fits_time_columns_and_dates_give_the_write_times() {
    let (name, _c, s) = camera("rec-time", RING);
    let out = out_dir("rec-time");
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let r = record(&name, &out, &["--frames", "5"]);
    let mut written = std::collections::HashMap::new();
    let (st, diag) = produce_with(&s, r, |s, i| {
        s.write_slice_frame(&vec![0u16; s.len()], i).unwrap();
        written.insert(i, s.write_time());
    });
    assert!(st.success(), "{diag}");
    let Some(stdout) = python_check(CHECK_TIMES, &[out.as_os_str()], "FITS times") else {
        return;
    };
    let v: Vec<&str> = stdout.split_whitespace().collect();
    let date: Vec<f64> = v[..3].iter().map(|x| x.parse().unwrap()).collect();
    let rows: Vec<(u64, f64, f64)> = v[3..]
        .iter()
        .map(|row| {
            let f: Vec<&str> = row.split(':').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 5, "{stdout}");
    for &(id, write, record) in &rows {
        let w = written[&id];
        assert!(
            (write - w).abs() < 1e-6,
            "frame {id}: {write} read, {w} written"
        );
        assert!(
            record >= w - 1.0 && record < w + 60.0,
            "frame {id}: {stdout}"
        );
    }
    let (first, last) = (written[&rows[0].0], written[&rows[4].0]);
    assert!(
        (date[1] - first).abs() < 1e-6,
        "DATE-OBS {} vs {first}",
        date[1]
    );
    assert!(
        (date[2] - last).abs() < 1e-6,
        "DATE-END {} vs {last}",
        date[2]
    );
    assert!(
        date[0] >= started - 1e-3 && date[0] < first + 60.0,
        "DATE {stdout}"
    );
    let _ = std::fs::remove_dir_all(out);
}

/// The files and frames of the summary line `<name>: N frames in K file(s), ...`.
fn summary(diag: &str) -> (usize, usize) {
    let line = diag
        .lines()
        .find(|l| l.contains(" frames in "))
        .unwrap_or_else(|| panic!("no summary line:\n{diag}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "frames").unwrap();
    (
        words[at + 2].parse().unwrap(),
        words[at - 1].parse().unwrap(),
    )
}

/// Waits (as [`wait_until`]) for the recorder's first cube of stream `name`, file type
/// `ext`, in `out`: its path.
fn first_cube(r: &mut Proc, out: &Path, name: &str, ext: &str) -> PathBuf {
    let first = out.join(format!("{name}_000000000.{ext}"));
    wait_until(r, "first cube", || first.exists());
    first
}

/// Waits until `done()` while `recorder` runs (failing if it exits or `LONG` passes).
fn wait_until(recorder: &mut Proc, what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            recorder.try_status().is_none(),
            "recorder exited before {what}:\n{}",
            recorder.diagnostics()
        );
        assert!(
            start.elapsed() < LONG,
            "no {what} after {LONG:?}:\n{}",
            recorder.diagnostics()
        );
        // Polling the file system, which has no wait for a file; not a synchronizing sleep.
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_hangup_or_quit_signal_stops_the_recording_with_its_files_finished() {
    // 80 KiB frames reach the file as they are taken (none is gathered in memory): a file
    // longer than one frame holds at least one.
    let frame = 256 * 160 * 2;
    for (signal, format) in [(libc::SIGHUP, "npy"), (libc::SIGQUIT, "fits")] {
        let (name, _c, s) = camera_shaped(&unique_name("rec-hup"), &[256, 160], 512);
        let out = out_dir("rec-hup");
        let cube = out.join(format!("{name}_000000000.{format}"));
        let r = record(&name, &out, &["--duration", "600", "--format", format]);
        let pid = r.pid() as i32;
        let mut sent = false;
        let mut pixels = vec![0u16; s.len()];
        let (st, diag) = produce_with(&s, r, |s, i| {
            pixels.fill((i % 50_000) as u16);
            s.write_slice_frame(&pixels, i).unwrap();
            if !sent && std::fs::metadata(&cube).is_ok_and(|m| m.len() > frame) {
                // SAFETY: signalling our own child.
                assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
                sent = true;
            }
        });
        assert!(st.success(), "signal {signal} ({format}): {diag}");
        let (files, frames) = summary(&diag);
        assert_eq!(files, 1, "{diag}");
        assert!(frames >= 1, "{diag}");
        if common::python().is_some() {
            assert_eq!(
                check_shaped(&out, format, 1000, "256x160"),
                (1, frames),
                "signal {signal}: the cube loads with every frame taken"
            );
        }
        let _ = std::fs::remove_dir_all(out);
    }
}

#[test]
fn a_hangup_ignored_when_the_recording_starts_as_under_nohup_does_not_stop_it() {
    // 80 KiB frames reach the file as they are taken: its length counts them.
    let frame = 256 * 160 * 2;
    let (name, _c, s) = camera_shaped(&unique_name("rec-nohup"), &[256, 160], 512);
    let out = out_dir("rec-nohup");
    let cube = out.join(format!("{name}_000000000.npy"));
    let mut c = Command::new(bin());
    c.args(["record", &name, "--out"])
        .arg(&out)
        .args(["--duration", "600", "--format", "npy"]);
    common::default_stop_signals(&mut c);
    // SAFETY: the hook only calls `signal`, async-signal-safe as the forked child needs;
    // the SIG_IGN it sets survives the exec, as `nohup`'s does (it runs after the hook
    // above, which set the default).
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let r = Proc::spawn(c);
    let pid = r.pid() as i32;
    // The cube's length when SIGHUP was sent, and whether SIGTERM was.
    let (mut hung_up_at, mut terminated) = (None, false);
    let mut pixels = vec![0u16; s.len()];
    let (st, diag) = produce_with(&s, r, |s, i| {
        pixels.fill((i % 50_000) as u16);
        s.write_slice_frame(&pixels, i).unwrap();
        let len = std::fs::metadata(&cube).map_or(0, |m| m.len());
        match hung_up_at {
            None if len > frame => {
                // SAFETY: signalling our own child.
                assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
                hung_up_at = Some(len);
            }
            // 20 frames more: a recorder that took SIGHUP stops at the next frame.
            Some(at) if !terminated && len >= at + 20 * frame => {
                // SAFETY: signalling our own child.
                assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
                terminated = true;
            }
            _ => {}
        }
    });
    assert!(terminated, "stopped by the ignored SIGHUP: {diag}");
    assert!(st.success(), "{diag}");
    let (files, frames) = summary(&diag);
    assert_eq!(files, 1, "{diag}");
    assert!(frames > 20, "{diag}");
    if common::python().is_some() {
        assert_eq!(check_shaped(&out, "npy", 1000, "256x160"), (1, frames));
    }
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn a_stream_name_too_long_for_a_file_name_is_recorded_under_a_shortened_one() {
    let mut name = unique_name("rec-long");
    name.extend(std::iter::repeat_n('a', 250 - name.len()));
    let (name, _c, s) = camera_shaped(&name, &[6, 5], RING);
    let out = out_dir("rec-long");
    let (st, diag) = produce_until_exit(&s, record(&name, &out, &["--frames", "1"]));
    assert!(st.success(), "{diag}");
    let files = files_in(&out);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].len() <= 255, "{files:?}");
    assert!(
        files[0].starts_with(&name[..150]) && files[0].ends_with("_000000000.fits"),
        "{files:?}"
    );
    if common::python().is_some() {
        assert_eq!(check(&out, "fits", 1000), (1, 1));
    }
    let _ = std::fs::remove_dir_all(out);
}

/// Prints, as JSON, the `STREAM` card of the one FITS cube in `sys.argv[1]` as astropy
/// reads it, and that card percent-decoded.
const CHECK_STREAM: &str = r#"
import sys, glob, json, urllib.parse
from astropy.io import fits
[f] = glob.glob(f"{glob.escape(sys.argv[1])}/*.fits")
with fits.open(f) as h:
    h.verify("exception")
    card = h[0].header["STREAM"]
    assert h[0].header["DTYPE"] == "uint16", h[0].header
    print(json.dumps([card, urllib.parse.unquote(card)]))
"#;

#[test]
fn the_fits_stream_card_holds_a_long_name_whole() {
    let base = unique_name("rec-card");
    let pad = "x".repeat(100 - base.len() - " obrien".len());
    let plain = format!("{base}{pad} obrien");
    assert_eq!(plain.len(), 100);
    // `%`, non-ASCII and trailing spaces, which FITS drops, are percent-encoded, and so are
    // `'` and `&`, which cfitsio's and astropy's continuations mishandle: a first card of
    // all but one quote made cfitsio add CONTINUE cards forever, and a value ending in `&`
    // lost it.
    let cases = [
        (plain.clone(), plain.clone()),
        (
            format!("{plain} µ 100% "),
            format!("{plain} %C2%B5 100%25%20"),
        ),
        (
            format!("c{}{base}", "'".repeat(67)),
            format!("c{}{base}", "%27".repeat(67)),
        ),
        (
            format!("{base}{}&", "a".repeat(80)),
            format!("{base}{}%26", "a".repeat(80)),
        ),
    ];
    for (name, card) in &cases {
        let (name, _c, s) = camera_shaped(name, &[6, 5], RING);
        let out = out_dir("rec-card");
        // Files of 1 MiB at most: a header that grows without end fails at once, without
        // filling the disk (and the camera's wait bounds the recorder's).
        let r = Proc::spawn(record_on_a_full_disk(
            &[&name, "--frames", "1"],
            &out,
            1 << 20,
        ));
        let (st, diag) = produce_until_exit(&s, r);
        assert!(st.success(), "{diag}");
        if let Some(stdout) = python_check(CHECK_STREAM, &[out.as_os_str()], "STREAM card") {
            let read: Vec<String> = serde_json::from_str(&stdout).unwrap();
            assert_eq!(read, [card.as_str(), name.as_str()], "{stdout}");
        }
        let _ = std::fs::remove_dir_all(out);
    }
}

#[test]
fn frames_a_waiting_plain_stream_recorder_misses_before_its_first_are_lost() {
    let name = unique_name("rec-plain-wait");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[6, 5])
        .dtype(Dtype::U16)
        .notify(true)
        .create()
        .unwrap();
    let out = out_dir("rec-plain-wait");
    let mut r = record(
        &name,
        &out,
        &["--frames", "2", "--per-file", "1", "--format", "npy"],
    );
    let pid = r.pid() as i32;
    let write = |i: u64| {
        s.write_slice_frame(&vec![(i % 50_000) as u16; s.len()], i)
            .unwrap()
    };
    // Parked on the stream, the recorder waits for its first frame: recording has started
    // (its first cube was there before). Frozen there, it takes the last of five frames
    // first.
    wait_parked_on(&mut r, &name);
    common::freeze(pid);
    (1..=5).for_each(write);
    common::thaw(pid);
    // The first cube is finished (its table written) once its frame is taken: the next
    // one is the second.
    let table = out.join(format!("{name}_000000000.frames.csv"));
    wait_until(&mut r, "first table", || table_rows(&table) == 1);
    write(6);
    let st = r.wait_timeout(LONG);
    let diag = r.diagnostics();
    // Frames 1 to 4 are missed: lost are the 2 of them `--frames 2` wanted (frames 5 and 6
    // are taken in their place).
    assert_eq!(st.code(), Some(1), "frames 1 and 2 are lost: {diag}");
    assert!(
        diag.contains("2 frames in 2 file(s)")
            && diag.contains(", 2 lost")
            && diag.contains("2 frame(s) lost while recording"),
        "{diag}"
    );
    if common::python().is_some() {
        assert_eq!(check(&out, "npy", 1), (2, 2), "frames 5 and 6");
    }
    let _ = std::fs::remove_dir_all(out);
}

/// Waits until a thread of `recorder` is parked in `futex` on the header of the notify
/// stream `name`: waiting there for a frame (as a plain stream's recorder does, with
/// `WaitStrategy::Park`).
fn wait_parked_on(recorder: &mut Proc, name: &str) {
    let pid = recorder.pid();
    wait_until(recorder, "the recorder waiting on the stream", || {
        std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
            tasks
                .filter_map(|t| t.ok()?.file_name().to_str()?.parse().ok())
                .any(|tid| common::futex_parked_on_stream(pid, tid, name))
        })
    });
}

/// A library for `LD_PRELOAD` whose `open` and `open64` stop the whole process (SIGSTOP)
/// before creating (`O_CREAT`) a file whose path ends in `$STOP_AT_CREATE`, saying so on
/// stderr; every file opens as usual (the `openat` system call) once it runs again.
const STOP_AT_CREATE: PreloadC = PreloadC {
    name: "stop_at_create",
    wraps: Wraps::Open,
    body: r#"
static int opened(const char *path, int flags, va_list ap) {
    int mode = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, int) : 0;
    const char *suffix = getenv("STOP_AT_CREATE");
    size_t n = strlen(path), k = suffix == NULL ? 0 : strlen(suffix);
    if (k > 0 && (flags & O_CREAT) && n >= k && strcmp(path + n - k, suffix) == 0) {
        say("stop_at_create: stopped\n");
        raise(SIGSTOP);
    }
    return (int)syscall(SYS_openat, AT_FDCWD, path, flags, mode);
}
"#,
};

/// Waits until `recorder` is stopped (by a signal), leaving that to be reported again
/// (`WNOWAIT`); fails if it exits or `LONG` passes.
fn wait_stopped(recorder: &mut Proc) {
    let start = Instant::now();
    loop {
        // SAFETY: all zeros is a valid `siginfo_t`, which `waitid` fills in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WSTOPPED | libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: waiting for our own child, into a local; `WNOWAIT` reaps nothing.
        let rc = unsafe { libc::waitid(libc::P_PID, recorder.pid(), &mut info, flags) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        // SAFETY: `waitid` set the fields of a child's state change, or left them zero.
        if unsafe { info.si_pid() } != 0 {
            assert_eq!(
                info.si_code,
                libc::CLD_STOPPED,
                "the recorder ended instead of stopping:\n{}",
                recorder.diagnostics()
            );
            return;
        }
        assert!(
            start.elapsed() < LONG,
            "the recorder did not stop in {LONG:?}:\n{}",
            recorder.diagnostics()
        );
        // Polling a child's state, which has no wait with a timeout; not a synchronizing sleep.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Frames a plain stream publishes while its recorder creates its first file are published
/// before the recording starts (it starts once the recorder waits, with the file there):
/// not lost. The recorder is stopped as it creates that file (`LD_PRELOAD`), five frames
/// are published, and it runs on: it takes the last of them, losing none. (Counted from
/// before the file was created, those four would be lost.) Skipped (said on stderr)
/// without a C compiler.
#[test]
fn frames_published_while_a_plain_stream_recorder_creates_its_first_file_are_not_lost() {
    let lib_dir = out_dir("rec-plain-create-lib");
    let Some(lib) = STOP_AT_CREATE.build(&lib_dir) else {
        return;
    };
    let name = unique_name("rec-plain-create");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[6, 5])
        .dtype(Dtype::U16)
        .notify(true)
        .create()
        .unwrap();
    let out = out_dir("rec-plain-create");
    let mut c = Command::new(bin());
    c.args(["record", &name, "--frames", "1", "--format", "npy", "--out"])
        .arg(&out)
        .env("LD_PRELOAD", &lib)
        .env("STOP_AT_CREATE", "_000000000.npy");
    common::default_stop_signals(&mut c);
    let mut r = Proc::spawn(c);
    wait_stopped(&mut r);
    publish(&s, 1..=5);
    common::thaw(r.pid() as i32);
    let st = r.wait_timeout(LONG);
    let diag = r.diagnostics();
    assert!(
        diag.contains("stop_at_create loaded") && diag.contains("stop_at_create: stopped"),
        "not stopped by the preloaded library: {diag}"
    );
    assert!(st.success(), "{diag}");
    assert!(
        diag.contains("1 frames in 1 file(s)") && diag.contains(", 0 lost"),
        "{diag}"
    );
    let table = std::fs::read_to_string(npy_table(&out.join(format!("{name}_000000000.npy"))));
    let table = table.unwrap();
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|row| row.starts_with("5,5,")),
        "the last frame published, frame 5: {table}"
    );
    let _ = std::fs::remove_dir_all(out);
    let _ = std::fs::remove_dir_all(lib_dir);
}

/// A reader of the recorder's output that went away (`record ... 2>&1 | tee log`, and
/// Ctrl-C stops `tee` too) does not kill it (SIGPIPE): its summary's write fails, and its
/// exit status is the recording's.
#[test]
fn a_reader_of_its_output_that_went_away_does_not_kill_the_recorder() {
    use std::os::unix::process::ExitStatusExt;
    let (name, _c, s) = camera("rec-pipe", RING);
    let out = out_dir("rec-pipe");
    let mut c = Command::new(bin());
    c.args(["record", &name, "--frames", "1", "--format", "npy", "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    common::default_stop_signals(&mut c);
    // Killed when the test ends, also by a failure.
    common::die_with_spawner(&mut c);
    let mut child = c.spawn().unwrap();
    // Both pipes closed before the recorder writes to either: a history stream's recorder
    // writes nothing before its summary, which waits for a frame (published below).
    drop(child.stdout.take());
    drop(child.stderr.take());
    let start = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < LONG, "recorder still running");
        publish(&s, 1..=1);
        // The camera's frame period (pacing a producer, not synchronizing with the test).
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(st.signal(), None, "killed by a signal: {st:?}");
    assert!(st.success(), "{st:?}");
    let table = npy_table(&out.join(format!("{name}_000000000.npy")));
    assert_eq!(table_rows(&table), 1, "its file finished");
    let _ = std::fs::remove_dir_all(out);
}

/// Rows of the `.frames.csv` table `path` (0 while it is missing or empty).
fn table_rows(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count().saturating_sub(1))
}

/// Writes frames `frames` (every pixel and the frame id `i`) to the u16 stream `s`.
fn publish(s: &Stream, frames: std::ops::RangeInclusive<u64>) {
    for i in frames {
        s.write_slice_frame(&vec![(i % 50_000) as u16; s.len()], i)
            .unwrap();
    }
}

#[test]
fn a_recording_stopped_after_whole_files_leaves_no_empty_file_after_them() {
    let (name, _c, s) = camera("rec-whole", RING);
    let out = out_dir("rec-whole");
    let mut r = record(
        &name,
        &out,
        &["--duration", "600", "--per-file", "2", "--format", "npy"],
    );
    let pid = r.pid() as i32;
    // The first cube is there once the recorder reads the stream: every frame after is its.
    first_cube(&mut r, &out, &name, "npy");
    publish(&s, 1..=4);
    // A file is finished (its table written) once its last frame is taken.
    let second = out.join(format!("{name}_000000001.frames.csv"));
    wait_until(&mut r, "second table", || table_rows(&second) == 2);
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let st = r.wait_timeout(LONG);
    let diag = r.diagnostics();
    assert!(st.success(), "{diag}");
    assert!(diag.contains("4 frames in 2 file(s)"), "{diag}");
    assert_eq!(
        files_in(&out).len(),
        4,
        "no third cube: {:?}",
        files_in(&out)
    );
    if common::python().is_some() {
        assert_eq!(check(&out, "npy", 2), (2, 4));
    }
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn a_signal_stops_the_recording_at_once_and_counts_the_frames_left_unread() {
    let (name, _c, s) = camera("rec-unread", RING);
    let out = out_dir("rec-unread");
    // Frozen, the recorder finds 100 frames and the signal together when it runs again; its
    // thread takes the signal before it runs on, so it takes at most the frame its wait
    // returns with (a recorder that drained the frames first would take all 100).
    let (st, diag) = signalled_while_frozen(&name, &s, &out, 100, &["--duration", "600"]);
    assert!(st.success(), "{diag}");
    let (files, frames) = summary(&diag);
    assert_eq!(files, 1, "{diag}");
    assert!(frames <= 1, "took {frames} frames after the signal: {diag}");
    assert!(
        diag.contains(&format!(", {} left unread", 100 - frames)),
        "{diag}"
    );
    if common::python().is_some() {
        assert_eq!(check(&out, "npy", 1000).1, frames);
    }
    let _ = std::fs::remove_dir_all(out);

    // Left unread are the frames still wanted: of 2, not all 20 published.
    let out = out_dir("rec-unread-frames");
    let (st, diag) = signalled_while_frozen(&name, &s, &out, 20, &["--frames", "2"]);
    assert!(st.success(), "{diag}");
    let frames = summary(&diag).1 as u64;
    assert_eq!(
        frames + summary_count(&diag, "left unread"),
        2,
        "taken and left unread: {diag}"
    );
    let _ = std::fs::remove_dir_all(out);
}

/// Records `name` as `.npy` into `out` with `stop` (`--frames N` or `--duration S`, more
/// than the test takes) until stopped: once its first cube is there, the recorder is frozen,
/// `frames` frames are published and SIGTERM sent to each of its threads (so the recording
/// thread runs its handler before anything else), then it runs again and finds them all at
/// once. Its exit status and diagnostics.
fn signalled_while_frozen(
    name: &str,
    s: &Stream,
    out: &Path,
    frames: u64,
    stop: &[&str],
) -> (ExitStatus, String) {
    let mut r = record(name, out, &[stop, &["--format", "npy"]].concat());
    let pid = r.pid() as i32;
    first_cube(&mut r, out, name, "npy");
    common::freeze(pid);
    publish(s, 1..=frames);
    // Stopped, the process starts no thread meanwhile: the list is whole.
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid: libc::pid_t = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
        // SAFETY: signalling a thread of our own (stopped) child.
        let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGTERM) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    }
    common::thaw(pid);
    let st = r.wait_timeout(LONG);
    (st, r.diagnostics())
}

/// A stream replaced (unlinked and created anew) while it is recorded ends its recording,
/// which is said at once (not only in the summary once `--duration` is up), naming the
/// stream, the frames on file and what to do; the other stream records on, and the status
/// is 1. The recorder is frozen across the replacement, so that it never sees the name
/// without a stream.
#[test]
fn a_stream_replaced_while_recorded_is_reported_at_once() {
    let (gone, _c1, s) = camera("rec-stale", RING);
    let (kept, _c2, _s2) = camera("rec-stale-kept", RING);
    let out = out_dir("rec-stale");
    let args = [
        &kept,
        "--duration",
        "600",
        "--per-file",
        "2",
        "--format",
        "npy",
    ];
    let mut r = record(&gone, &out, &args);
    let first = first_cube(&mut r, &out, &gone, "npy");
    publish(&s, 1..=2);
    // Its first file is finished (the table written) with its second frame.
    wait_until(&mut r, "first table", || {
        table_rows(&npy_table(&first)) == 2
    });
    let pid = r.pid() as i32;
    common::freeze(pid);
    shmstream::unlink(&gone).unwrap();
    let _newer = StreamOptions::new(&gone)
        .shape(&[6, 5])
        .dtype(Dtype::U16)
        .create()
        .unwrap();
    common::thaw(pid);
    let said = format!("shmstream: error: {gone}: recording stopped with 2 frame(s) on file");
    let start = Instant::now();
    let line = loop {
        let diag = r.diagnostics();
        if let Some(line) = diag.lines().find(|l| l.starts_with(&said)) {
            break line.to_owned();
        }
        assert!(
            r.try_status().is_none(),
            "recorder exited before reporting the unlink:\n{diag}"
        );
        assert!(
            start.elapsed() < LONG,
            "the unlink not reported in {LONG:?}:\n{diag}"
        );
        // Polling the stderr a pipe reader collects; not a synchronizing sleep.
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(
        line.contains(&format!(
            "stream '{gone}' was replaced by a newer stream of the same name"
        )) && line.ends_with("record the new stream again, into another --out directory"),
        "{line}"
    );
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(r.pid() as i32, libc::SIGTERM) }, 0);
    let st = r.wait_timeout(LONG);
    let diag = r.diagnostics();
    assert_eq!(st.code(), Some(1), "{diag}");
    assert!(
        diag.lines()
            .any(|l| l.starts_with(&format!("{gone}: 2 frames in 1 file(s)"))
                && l.contains("FAILED")),
        "{diag}"
    );
    assert!(
        diag.lines()
            .any(|l| l.starts_with(&format!("{kept}: 0 frames in 1 file(s)"))
                && !l.contains("FAILED")),
        "{diag}"
    );
    let _ = std::fs::remove_dir_all(out);
}

/// A producer that ends, unlinking its stream (as a creator with `auto_unlink` does when it
/// drops it), ends that stream's recording without an error: every frame it published is on
/// file, the FITS file says `COMPLETE = T`, the end is said at once, and the status is 0.
/// (It was a failure, status 1 with `COMPLETE = F`, telling to record "the new stream"
/// again.) With `--frames` not reached, it is a short recording: status 1, saying how
/// short, `COMPLETE = F`. The producer is a process of its own.
#[test]
fn a_stream_whose_producer_ends_is_recorded_whole_and_the_recording_ends_cleanly() {
    const FRAMES: u64 = 5;
    if common::child_role().as_deref() == Some("producer") {
        let name: String = common::param("name");
        let s = StreamOptions::new(&name)
            .shape(&[6, 5])
            .dtype(Dtype::U16)
            .notify(true)
            .history(RING)
            .auto_unlink(true)
            .create()
            .unwrap();
        common::say("created");
        common::block_on_stdin();
        publish(&s, 1..=FRAMES);
        // Dropped, it is unlinked (`auto_unlink`).
        return;
    }
    for stop in [["--duration", "600"], ["--frames", "1000"]] {
        let short = stop[0] == "--frames";
        let name = unique_name("rec-producer-ends");
        let _c = Cleanup::new([&name]);
        let mut producer = common::child(
            "a_stream_whose_producer_ends_is_recorded_whole_and_the_recording_ends_cleanly",
            "producer",
        )
        .param("name", &name)
        .spawn();
        producer.expect_line("created", LONG);
        let out = out_dir("rec-producer-ends");
        let mut r = record(&name, &out, &stop);
        // The first file is there once the recorder's cursor is: every frame from now is
        // taken.
        first_cube(&mut r, &out, &name, "fits");
        producer.send_line("go");
        producer.wait_success(LONG);
        let st = r.wait_timeout(LONG);
        let diag = r.diagnostics();
        assert_eq!(st.code(), Some(if short { 1 } else { 0 }), "{diag}");
        let said = match short {
            true => format!(
                ", FAILED: stream '{name}' was unlinked (its producer ended?) after {FRAMES} of the 1000 frames asked"
            ),
            false => format!(
                "shmstream: stream '{name}' was unlinked (its producer ended?) after {FRAMES} frames, all on file"
            ),
        };
        assert!(
            diag.lines()
                .any(|l| if short { l.ends_with(&said) } else { l == said }),
            "{diag}"
        );
        assert_eq!(diag.contains("FAILED"), short, "{diag}");
        assert_eq!(summary(&diag), (1, FRAMES as usize), "{diag}");
        assert_eq!(summary_count(&diag, "lost"), 0, "{diag}");
        if common::python().is_some() {
            assert_eq!(check(&out, "fits", 1000), (1, FRAMES as usize), "{diag}");
            let ending = if short { "0 False" } else { "0 True" };
            assert_eq!(endings(&out), [ending], "{diag}");
        }
        let _ = std::fs::remove_dir_all(out);
    }
}

/// Frames a pyshmem writer publishes past a history stream's ring just before the stream is
/// unlinked are lost, not "all on file": the recording of an unlinked stream ends
/// complete, but its status is 1 and the end is said with the counts. Skipped without
/// Python.
#[test]
fn frames_published_past_the_ring_before_an_unlink_are_lost() {
    let Some(py) = common::python() else {
        return;
    };
    let (name, _c, _s) = camera("rec-unlink-pyshmem", RING);
    let out = out_dir("rec-unlink-pyshmem");
    let mut r = record(&name, &out, &["--duration", "600", "--format", "npy"]);
    let pid = r.pid() as i32;
    first_cube(&mut r, &out, &name, "npy");
    // Frozen, it finds the three frames and the unlink together when it runs again.
    common::freeze(pid);
    let lines = common::run_py(&py, "peer.py", &["write_n", &name, "3", "1"], LONG);
    assert!(lines.iter().any(|l| l == "wrote 3"), "{lines:?}");
    shmstream::unlink(&name).unwrap();
    common::thaw(pid);
    let st = r.wait_timeout(LONG);
    let diag = r.diagnostics();
    assert_eq!(st.code(), Some(1), "{diag}");
    assert!(
        diag.contains(&format!(
            "stream '{name}' was unlinked (its producer ended?) after 0 frames, 0 on file, 3 lost"
        )),
        "{diag}"
    );
    assert_eq!(summary_count(&diag, "lost"), 3, "{diag}");
    let _ = std::fs::remove_dir_all(out);
}

/// A pipe whose write end takes nothing more: its buffer (made one page) is full and its
/// read end, returned with it, never read.
fn full_pipe() -> (std::fs::File, std::fs::File) {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `pipe2` writes two descriptors into the array, which we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both just made by `pipe2`, owned by nothing else.
    let (read, mut write) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: F_SETPIPE_SZ, F_GETFL and F_SETFL on a descriptor `write` holds change only
    // this pipe and this open file description.
    let flags = unsafe {
        libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 4096);
        let flags = libc::fcntl(fds[1], libc::F_GETFL);
        libc::fcntl(fds[1], libc::F_SETFL, flags | libc::O_NONBLOCK);
        flags
    };
    while write.write(&[b'x'; 4096]).is_ok() {}
    // SAFETY: as above: blocking again, as a reader that stopped reading leaves it.
    unsafe { libc::fcntl(fds[1], libc::F_SETFL, flags) };
    (read, write)
}

/// One Ctrl-C ends a recording whose stderr reader takes nothing (`2>&1 | less` paused):
/// the summary, which cannot be written, is dropped and the recorder exits by its own rule
/// (0: nothing lost), its files finished. (std's `write_all` retried the summary's blocked
/// write until a second signal.) The wait for the reader is once for the whole summary,
/// not for each of its lines: 100 streams' summary lines took at least 100 × 100 ms,
/// over the bound (8 s), which leaves a loaded machine room.
#[test]
fn one_signal_ends_a_recording_whose_stderr_reader_takes_nothing() {
    const STREAMS: usize = 100;
    let cameras: Vec<_> = (0..STREAMS)
        .map(|_| camera("rec-stalled-stderr", 8))
        .collect();
    let out = out_dir("rec-stalled-stderr");
    let (_never_read, stderr) = full_pipe();
    let mut c = Command::new(bin());
    c.arg("record")
        .args(cameras.iter().map(|(name, ..)| name))
        .args(["--duration", "600", "--format", "npy", "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    common::default_stop_signals(&mut c);
    common::die_with_spawner(&mut c);
    let mut child = c.spawn().unwrap();
    // Its first files are there once it records (the stop signals caught before).
    let firsts: Vec<_> = cameras
        .iter()
        .map(|(name, ..)| out.join(format!("{name}_000000000.npy")))
        .collect();
    let deadline = Instant::now() + LONG;
    while !firsts.iter().all(|f| f.exists()) {
        assert!(child.try_wait().unwrap().is_none(), "record exited early");
        assert!(Instant::now() < deadline, "no files in {LONG:?}");
        // Polling the file system, which has no wait for a file; not a synchronizing sleep.
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let signalled = Instant::now();
    let deadline = signalled + LONG;
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("record still running {LONG:?} after one SIGINT, its stderr full");
        }
        // Polling a child's exit, which has no wait with a timeout; not a synchronizing sleep.
        std::thread::sleep(Duration::from_millis(1));
    };
    let took = signalled.elapsed();
    assert_eq!(st.code(), Some(0), "{st}");
    assert!(
        took < Duration::from_secs(8),
        "{took:?} from the SIGINT to the exit: a wait for the stalled stderr per summary line?"
    );
    // Finished: the frame count in the header (0), not the unfinished one's u64::MAX.
    for first in &firsts {
        let cube = std::fs::read(first).unwrap();
        let header = String::from_utf8_lossy(&cube[..cube.len().min(128)]);
        assert!(header.contains("'shape': (0, 6, 5)"), "{header:?}");
    }
    let _ = std::fs::remove_dir_all(out);
}

/// A plain stream unlinked while frames published on it were not read yet: they are gone
/// with it, and counted lost (of those the recording still wanted: `--frames 2`, 2 of 3).
#[test]
fn frames_a_plain_stream_had_unread_when_it_was_unlinked_are_lost() {
    for (stop, lost) in [["--duration", "600"], ["--frames", "2"]]
        .into_iter()
        .zip([3, 2])
    {
        let name = unique_name("rec-plain-stale");
        let _c = Cleanup::new([&name]);
        let s = StreamOptions::new(&name)
            .shape(&[6, 5])
            .dtype(Dtype::U16)
            .notify(true)
            .create()
            .unwrap();
        let out = out_dir("rec-plain-stale");
        let mut r = record(&name, &out, &[&stop[..], &["--format", "npy"]].concat());
        let pid = r.pid() as i32;
        // Parked on the stream, the recorder has read nothing yet; frozen, it finds the three
        // frames and the unlink together when it runs again.
        wait_parked_on(&mut r, &name);
        common::freeze(pid);
        publish(&s, 1..=3);
        shmstream::unlink(&name).unwrap();
        common::thaw(pid);
        let st = r.wait_timeout(LONG);
        let diag = r.diagnostics();
        assert_eq!(st.code(), Some(1), "{diag}");
        assert!(
            diag.contains(&format!("stream '{name}' was unlinked")),
            "{diag}"
        );
        assert_eq!(summary(&diag).1, 0, "{diag}");
        assert_eq!(summary_count(&diag, "lost"), lost, "{stop:?}: {diag}");
        let _ = std::fs::remove_dir_all(out);
    }
}

/// The number before `what` in the summary line (", 12 lost"), 0 if it is not there.
fn summary_count(diag: &str, what: &str) -> u64 {
    let line = diag.lines().find(|l| l.contains(" frames in ")).unwrap();
    line.split(", ")
        .find_map(|part| part.strip_suffix(what)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A signal after the writer lapped the recorder's cursor: every frame published is on
/// file, lost or left unread, once (the lapped ones were counted lost and again unread).
#[test]
fn frames_lost_to_a_lap_before_a_signal_are_not_counted_unread_too() {
    let (name, _c, s) = camera("rec-lap-unread", 8);
    let out = out_dir("rec-lap-unread");
    let (_, diag) = signalled_while_frozen(&name, &s, &out, 20, &["--duration", "600"]);
    let kept = summary(&diag).1 as u64;
    let (lost, unread) = (
        summary_count(&diag, "lost"),
        summary_count(&diag, "left unread"),
    );
    assert_eq!(kept + lost + unread, 20, "{diag}");
    let _ = std::fs::remove_dir_all(out);
}

/// `--frames 2` from a ring of 8 lapped by 20 frames while the recorder was frozen: lost are
/// only the 2 frames it still wanted (it then takes 2 later ones), not every frame lapped.
#[test]
fn frames_lost_to_a_lap_are_only_those_the_recording_still_wanted() {
    let (name, _c, s) = camera("rec-lap-wanted", 8);
    let out = out_dir("rec-lap-wanted");
    let mut r = record(&name, &out, &["--frames", "2", "--format", "npy"]);
    let pid = r.pid() as i32;
    // The cursor is there before the first cube: every frame after is the recording's.
    first_cube(&mut r, &out, &name, "npy");
    common::freeze(pid);
    publish(&s, 1..=20);
    common::thaw(pid);
    let st = r.wait_timeout(LONG);
    let diag = r.diagnostics();
    assert_eq!(st.code(), Some(1), "{diag}");
    assert_eq!(summary(&diag), (1, 2), "{diag}");
    assert_eq!(summary_count(&diag, "lost"), 2, "{diag}");
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn a_duration_stop_records_every_frame_published_before_the_time_was_up() {
    // Time for the recorder to start on a loaded machine; the frames come well within it.
    // A start too slow for it proves nothing, and is tried again with twice the time (the
    // test waits out the whole duration, so the first try is short).
    let mut duration = Duration::from_secs(6);
    while !duration_stop_drains_frames_published_in_time(duration) {
        duration *= 2;
        assert!(
            duration <= 2 * LONG,
            "the recorder never started in time for a duration of up to {:?}",
            duration / 2
        );
    }
}

/// Records a fresh camera as `.npy` for `duration`: once its first cube is there, the
/// recorder is frozen, 20 frames are published, and it runs again only once its time is
/// up; it must still take all 20. `false`, with nothing asserted, where the frames came
/// too late for the recorder's time (a slow start).
fn duration_stop_drains_frames_published_in_time(duration: Duration) -> bool {
    let (name, _c, s) = camera("rec-drain", RING);
    let out = out_dir("rec-drain");
    let spawned = Instant::now();
    let secs = duration.as_secs().to_string();
    let mut r = record(&name, &out, &["--duration", &secs, "--format", "npy"]);
    let pid = r.pid() as i32;
    let first = first_cube(&mut r, &out, &name, "npy");
    // The recorder's clock started before its first cube was there.
    let time_up = Instant::now() + duration;
    common::freeze(pid);
    publish(&s, 1..=20);
    if spawned.elapsed() >= duration {
        eprintln!(
            "the frames came {:?} after the recorder started, too late for its {duration:?}",
            spawned.elapsed()
        );
        r.kill();
        let _ = std::fs::remove_dir_all(out);
        return false;
    }
    // Its time runs out while it is frozen (its clock runs on): the frames are published
    // but not read then.
    std::thread::sleep(time_up.saturating_duration_since(Instant::now()));
    common::thaw(pid);
    let st = r.wait_timeout(LONG);
    let diag = r.diagnostics();
    assert!(st.success(), "{diag}");
    assert!(
        diag.contains("20 frames in 1 file(s)") && diag.contains(", 0 lost"),
        "{diag}"
    );
    assert_eq!(table_rows(&npy_table(&first)), 20);
    if common::python().is_some() {
        assert_eq!(check(&out, "npy", 1000), (1, 20));
    }
    let _ = std::fs::remove_dir_all(out);
    true
}

/// Frames published by the end of `--duration` that the cursor neither returned nor
/// reported are lost: publications that skipped the ring (pyshmem's), with a write in flight
/// whenever the recorder looked (a cursor reports them only between writes). They went
/// uncounted, and the recording succeeded.
#[test]
fn frames_published_in_time_that_a_duration_stop_never_sees_are_lost() {
    let Some(py) = common::python() else { return };
    // As in the test above: a start too slow for the duration is tried again with twice it.
    let mut duration = Duration::from_secs(3);
    while !unseen_frames_at_the_end_of_a_duration_are_lost(&py, duration) {
        duration *= 2;
        assert!(
            duration <= 2 * LONG,
            "the recorder never started in time for a duration of up to {:?}",
            duration / 2
        );
    }
}

/// Records a fresh camera as `.npy` for `duration`: once its first cube is there, the
/// recorder is frozen, pyshmem writes 3 frames, and it runs again only once its time is up,
/// inside a write of ours: it must count the 3 lost. `false`, with nothing asserted, where
/// the recorder may have stopped before it was frozen (a slow start).
fn unseen_frames_at_the_end_of_a_duration_are_lost(py: &Path, duration: Duration) -> bool {
    let (name, _c, s) = camera("rec-drain-unseen", RING);
    let out = out_dir("rec-drain-unseen");
    let spawned = Instant::now();
    let secs = duration.as_secs().to_string();
    let mut r = record(&name, &out, &["--duration", &secs, "--format", "npy"]);
    let pid = r.pid() as i32;
    first_cube(&mut r, &out, &name, "npy");
    // The recorder's clock started before its first cube was there, and after `spawned`.
    let time_up = Instant::now() + duration;
    if spawned.elapsed() + Duration::from_secs(1) >= duration {
        eprintln!(
            "the recorder started {:?} after it was spawned, too late to be frozen within its {duration:?}",
            spawned.elapsed()
        );
        r.kill();
        let _ = std::fs::remove_dir_all(out);
        return false;
    }
    common::freeze(pid);
    let lines = common::run_py(py, "peer.py", &["write_n", &name, "3", "1"], LONG);
    assert!(lines.iter().any(|l| l == "wrote 3"), "{lines:?}");
    // Its time runs out while it is frozen (its clock runs on).
    std::thread::sleep(time_up.saturating_duration_since(Instant::now()));
    let mut st = None;
    s.write_view(|_: &mut [u16]| {
        common::thaw(pid);
        st = Some(r.wait_timeout(LONG));
        Ok::<_, std::io::Error>(())
    })
    .unwrap();
    let diag = r.diagnostics();
    assert_eq!(st.and_then(|st| st.code()), Some(1), "{diag}");
    assert!(
        diag.contains("0 frames in 1 file(s)")
            && diag.contains(", 3 lost")
            && diag.contains("3 frame(s) lost while recording"),
        "{diag}"
    );
    let _ = std::fs::remove_dir_all(out);
    true
}

/// The `.frames.csv` table beside the `.npy` cube `cube`.
fn npy_table(cube: &Path) -> PathBuf {
    cube.with_extension("frames.csv")
}

#[test]
fn a_gpu_stream_without_a_cpu_mirror_is_refused_before_any_file_is_made() {
    // Its header as its producer writes it, planted: the recorder refuses the stream from
    // the header alone, so no GPU is needed.
    let name = unique_name("rec-gpu");
    let _c = Cleanup::new([&name]);
    common::plant_gpu_producer_header(&name);
    let out = out_dir("rec-gpu");
    let (code, err) = record_briefly(&[&name, "--format", "npy"], &out);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("GPU stream without a CPU mirror") && err.contains("cpu_mirror(true)"),
        "{err}"
    );
    assert!(!err.contains("keeps no history"), "{err}");
    assert!(files_in(&out).is_empty(), "{:?}", files_in(&out));
    let _ = std::fs::remove_dir_all(out);
}

/// Records 3 frames, 2 a file, in each format with [`FAILING_SYNC`] preloaded and `extra`
/// arguments, then `check(format, status, diagnostics, cube files)`. Skipped (said on
/// stderr) without a C compiler.
fn record_with_failing_sync(
    tag: &str,
    extra: &[&str],
    check: impl Fn(&str, ExitStatus, &str, [PathBuf; 2]),
) {
    let lib = ("failing_sync", FAILING_SYNC, SYNC_LOADED);
    record_preloaded(tag, lib, extra, check);
}

/// Records 3 frames, 2 a file, in each format with the `LD_PRELOAD` library `lib` (its
/// name, its C source and the line its constructor writes on stderr) and `extra`
/// arguments, the output directory in `$PRELOAD_OUT_DIR` (its canonical path, as
/// `/proc/self/fd` shows the files in it), then `check(format, status, diagnostics, cube
/// files)`. Skipped (said on stderr) without a C compiler.
fn record_preloaded(
    tag: &str,
    (lib_name, source, loaded): (&str, &str, &str),
    extra: &[&str],
    check: impl Fn(&str, ExitStatus, &str, [PathBuf; 2]),
) {
    let lib_dir = out_dir(&format!("{tag}-lib"));
    let Some(lib) = preload_lib(&lib_dir, lib_name, source) else {
        let _ = std::fs::remove_dir_all(lib_dir);
        return;
    };
    let (name, _c, s) = camera(tag, RING);
    for format in ["npy", "fits"] {
        let out = std::fs::canonicalize(out_dir(tag)).unwrap();
        let mut c = Command::new(bin());
        c.args(["record", &name, "--frames", "3", "--per-file", "2"])
            .args(["--format", format])
            .args(extra)
            .arg("--out")
            .arg(&out)
            .env("LD_PRELOAD", &lib)
            .env("PRELOAD_OUT_DIR", &out);
        common::default_stop_signals(&mut c);
        let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
        let cubes = [0, 1].map(|i| out.join(format!("{name}_00000000{i}.{format}")));
        assert!(diag.contains(loaded), "{format}: not preloaded: {diag}");
        check(format, st, &diag, cubes);
        let _ = std::fs::remove_dir_all(out);
    }
    let _ = std::fs::remove_dir_all(lib_dir);
}

/// A library for `LD_PRELOAD` whose `close` fails with EDQUOT for every descriptor of a file
/// under `$PRELOAD_OUT_DIR` (by its `/proc/self/fd` link; other descriptors, the loader's
/// and the runtime's, close as usual), as a network file system's (NFS, CIFS, FUSE) does
/// when the data it writes back at close exceed the quota, saying so on stderr
/// ([`CLOSE_REFUSED`]). The descriptor is closed for real first, as Linux closes it
/// whatever `close` returns: the error comes after the fact, and a caller that retried
/// would close a descriptor it no longer owns.
const FAILING_CLOSE: PreloadC = PreloadC {
    name: "failing_close",
    wraps: Wraps::Close,
    body: r#"
static int closed(int fd) {
    const char *dir = getenv("PRELOAD_OUT_DIR");
    char link[40] = "/proc/self/fd/", digits[12], path[4096];
    ssize_t n = -1;
    if (dir != NULL && *dir != '\0' && fd >= 0) {
        int k = 0;
        unsigned v = (unsigned)fd;
        do {
            digits[k++] = (char)('0' + v % 10);
            v /= 10;
        } while (v != 0);
        size_t at = strlen(link);
        while (k > 0) {
            link[at++] = digits[--k];
        }
        link[at] = '\0';
        n = readlink(link, path, sizeof path - 1);
    }
    long rc = syscall(SYS_close, fd);
    if (rc != 0 || n < 0) {
        return (int)rc;
    }
    path[n] = '\0';
    size_t d = strlen(dir);
    if (strncmp(path, dir, d) != 0 || path[d] != '/') {
        return 0;
    }
    say("failing_close: refused ");
    (void)!write(2, path, (size_t)n);
    say("\n");
    errno = EDQUOT;
    return -1;
}
"#,
};

/// What [`FAILING_CLOSE`] writes on stderr when the loader preloads it.
const CLOSE_LOADED: &str = "failing_close loaded";

/// What [`FAILING_CLOSE`] writes on stderr each time it fails a `close` (the path follows).
const CLOSE_REFUSED: &str = "failing_close: refused ";

/// Without `--fsync`, `close` is where a network file system reports the write errors of
/// the data it writes back then: they fail the recording (exit 1, `FAILED`), naming each
/// file, as a failed write does (the recording stops once a close failed:
/// [`a_failed_close_stops_the_recording_before_the_next_file_fills`]).
#[test]
fn a_write_error_reported_only_when_a_file_is_closed_fails_the_recording() {
    let edquot = std::io::Error::from_raw_os_error(libc::EDQUOT).to_string();
    let source = FAILING_CLOSE.source();
    let lib = (FAILING_CLOSE.name, source.as_str(), CLOSE_LOADED);
    record_preloaded("rec-close", lib, &[], |format, st, diag, cubes| {
        assert_eq!(st.code(), Some(1), "{format}: {diag}");
        assert!(
            diag.contains(CLOSE_REFUSED) && diag.contains("FAILED"),
            "{format}: {diag}"
        );
        let mut files = vec![cubes[0].clone()];
        if format == "npy" {
            files.push(cubes[0].with_extension("frames.csv"));
        }
        for file in files {
            assert!(
                diag.contains(&format!("{}: closing it: {edquot}", file.display())),
                "{format}: {}: {diag}",
                file.display()
            );
        }
    });
}

/// A full file is closed on a thread of its own, and a close that fails there (EDQUOT, as
/// a network file system's) stops the recording as soon as it is known: at the next frame
/// (here the first of the next file, `--per-file 20`, published once the refusal is on
/// stderr) or, with none coming, within the recorder's poll. Not a whole file later, which
/// at a slow rate would fill another file into the failing share (or never, with no frame).
#[test]
fn a_failed_close_stops_the_recording_before_the_next_file_fills() {
    let lib_dir = out_dir("rec-close-now-lib");
    let Some(lib) = FAILING_CLOSE.build(&lib_dir) else {
        return;
    };
    let edquot = std::io::Error::from_raw_os_error(libc::EDQUOT).to_string();
    let per_file = 20u64;
    let (name, _c, s) = camera("rec-close-now", RING);
    // (format, closes refused per file, frames published after the refusals)
    for (format, closes, more) in [("npy", 2, true), ("fits", 1, true), ("npy", 2, false)] {
        let what = format!("{format}, more frames: {more}");
        let out = std::fs::canonicalize(out_dir("rec-close-now")).unwrap();
        let mut c = Command::new(bin());
        c.args(["record", &name, "--frames", "1000", "--per-file", "20"])
            .args(["--format", format, "--out"])
            .arg(&out)
            .env("LD_PRELOAD", &lib)
            .env("PRELOAD_OUT_DIR", &out);
        common::default_stop_signals(&mut c);
        let mut r = Proc::spawn(c);
        // Every frame published from here on is taken: the first file fills with 20.
        wait_parked_on(&mut r, &name);
        let (mut frame, start) = (vec![0u16; s.len()], Instant::now());
        let (mut published, mut refused) = (0u64, false);
        while r.try_status().is_none() {
            assert!(
                start.elapsed() < LONG,
                "{what}: recorder still running:\n{}",
                r.diagnostics()
            );
            refused = refused || r.diagnostics().matches(CLOSE_REFUSED).count() >= closes;
            // The first file's frames; then, once its close is refused, more (or none).
            if published < per_file || (refused && more) {
                published += 1;
                frame.fill((published % 50_000) as u16);
                s.write_slice_frame(&frame, published).unwrap();
            }
            // The camera's frame period (pacing a producer, not synchronizing with the test).
            std::thread::sleep(Duration::from_millis(1));
        }
        let st = r.wait_timeout(LONG);
        let diag = r.diagnostics();
        assert!(diag.contains(CLOSE_LOADED), "{what}: not preloaded: {diag}");
        assert_eq!(st.code(), Some(1), "{what}: {diag}");
        let first = out.join(format!("{name}_000000000.{format}"));
        assert!(
            diag.contains(&format!("{}: closing it: {edquot}", first.display())),
            "{what}: {diag}"
        );
        let (files, frames) = summary(&diag);
        if more {
            // The next file holds the frames taken until the failure was known: a few.
            assert_eq!(files, 2, "{what}: {diag}");
            assert!(
                (frames as u64) < 2 * per_file,
                "{what}: the next file filled on: {diag}"
            );
        } else {
            assert_eq!((files, frames), (1, 20), "{what}: {diag}");
        }
        let _ = std::fs::remove_dir_all(out);
    }
    let _ = std::fs::remove_dir_all(lib_dir);
}

/// A library for `LD_PRELOAD` whose `close` of a file under `$PRELOAD_OUT_DIR` (by its
/// `/proc/self/fd` link) waits until the file `$PRELOAD_RELEASE` exists (60 s at most), as
/// a network file system's (NFS, CIFS, FUSE) waits for the write-back of the file, saying
/// so on stderr first ([`CLOSE_HELD`]); every other descriptor closes at once.
const HELD_CLOSE: PreloadC = PreloadC {
    name: "held_close",
    wraps: Wraps::Close,
    body: r#"
static int closed(int fd) {
    const char *dir = getenv("PRELOAD_OUT_DIR"), *release = getenv("PRELOAD_RELEASE");
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = dir == NULL || release == NULL ? -1 : readlink(link, path, sizeof path - 1);
    size_t d = dir == NULL ? 0 : strlen(dir);
    if (n > 0 && (size_t)n > d && strncmp(path, dir, d) == 0 && path[d] == '/') {
        say("held_close: holding ");
        (void)!write(2, path, (size_t)n);
        say("\n");
        struct timespec ms = {0, 1000000};
        for (int i = 0; i < 60000 && access(release, F_OK) != 0; i++) {
            nanosleep(&ms, NULL);
        }
    }
    return (int)syscall(SYS_close, fd);
}
"#,
};

/// What [`HELD_CLOSE`] writes on stderr each time it holds a `close` (the path follows).
const CLOSE_HELD: &str = "held_close: holding ";

/// Without `--fsync` too, a full file is closed on a thread of its own: a `close` that
/// waits for a network file system's write-back (here, held while 1300 frames are published
/// into a ring of 1024) stalls no recording, and loses no frame.
#[test]
fn a_close_that_waits_for_the_write_back_loses_no_frame() {
    let lib_dir = out_dir("rec-held-close-lib");
    let Some(lib) = HELD_CLOSE.build(&lib_dir) else {
        return;
    };
    let (name, _c, s) = camera("rec-held-close", 1024);
    let out = std::fs::canonicalize(out_dir("rec-held-close")).unwrap();
    let release = lib_dir.join("release");
    let mut c = Command::new(bin());
    c.args(["record", &name, "--frames", "3001", "--per-file", "1500"])
        .args(["--format", "npy", "--out"])
        .arg(&out)
        .env("LD_PRELOAD", &lib)
        .env("PRELOAD_OUT_DIR", &out)
        .env("PRELOAD_RELEASE", &release);
    common::default_stop_signals(&mut c);
    let mut r = Proc::spawn(c);
    let mut held_at = None;
    let (mut frame, start) = (vec![0u16; s.len()], Instant::now());
    for i in 1u64.. {
        if r.try_status().is_some() {
            break;
        }
        assert!(
            start.elapsed() < LONG,
            "recorder still running:\n{}",
            r.diagnostics()
        );
        if held_at.is_none() && r.diagnostics().contains(CLOSE_HELD) {
            held_at = Some(i);
        }
        if held_at == Some(i.saturating_sub(1300)) {
            std::fs::write(&release, "").unwrap();
        }
        frame.fill((i % 50_000) as u16);
        s.write_slice_frame(&frame, i).unwrap();
        // The camera's frame period (pacing a producer, not synchronizing with the test).
        std::thread::sleep(Duration::from_millis(1));
    }
    let st = r.wait_timeout(LONG);
    let diag = r.diagnostics();
    assert!(diag.contains("held_close loaded"), "not preloaded: {diag}");
    assert!(release.exists(), "no close held: {diag}");
    assert!(st.success(), "{diag}");
    assert!(diag.contains("3001 frames in 3 file(s)"), "{diag}");
    assert_eq!(summary_count(&diag, "lost"), 0, "{diag}");
    if common::python().is_some() {
        assert_eq!(check(&out, "npy", 1500), (3, 3001));
    }
    let _ = std::fs::remove_dir_all(out);
    let _ = std::fs::remove_dir_all(lib_dir);
}

/// A library for `LD_PRELOAD` whose `pwrite` of one 80-byte card to a `.fits` file (the
/// recorder's frame-axis card; frames, headers and tables are written in other sizes)
/// fails with EIO, for the first `$FAILING_CARDS` of them (every one if unset), saying so
/// on stderr.
const FAILING_CARD: PreloadC = PreloadC {
    name: "failing_card",
    wraps: Wraps::Pwrite,
    body: r#"
static long refused;
static int refusal(int fd, size_t *count, off_t at) {
    (void)at;
    static const char fits[] = ".fits";
    const char *limit = getenv("FAILING_CARDS");
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = *count == 80 ? readlink(link, path, sizeof path - 1) : -1;
    size_t k = sizeof fits - 1;
    if (n >= (ssize_t)k && memcmp(path + n - k, fits, k) == 0
        && (limit == NULL || refused < atol(limit))) {
        refused++;
        say("failing_card: refused\n");
        return EIO;
    }
    return 0;
}
"#,
};

/// The `NAXIS3` value of the FITS file `bytes` and where its data unit starts.
fn frame_axis(bytes: &[u8]) -> (usize, usize) {
    let cards: Vec<&[u8]> = bytes.chunks(80).collect();
    let axis = cards.iter().find(|c| c.starts_with(b"NAXIS3  =")).unwrap();
    let n = String::from_utf8_lossy(&axis[10..30])
        .trim()
        .parse()
        .unwrap();
    let end = cards.iter().position(|c| c.starts_with(b"END ")).unwrap();
    (n, ((end + 1) * 80).next_multiple_of(2880))
}

/// A frame-axis card the disk refuses (EIO): the FITS file still holds exactly the frames
/// its card gives, and says which step failed. Refused once: all 3 frames (an I/O error is
/// no full disk: no frame is dropped to make room, and none is said to be); never written:
/// none.
#[test]
fn a_fits_frame_axis_card_the_disk_refuses_leaves_the_frames_the_card_gives() {
    let lib_dir = out_dir("rec-card-lib");
    let Some(lib) = FAILING_CARD.build(&lib_dir) else {
        return;
    };
    let eio = std::io::Error::from_raw_os_error(libc::EIO).to_string();
    // 80 KiB frames: a frame dropped frees room for a table, so a retry as on a full disk
    // would keep 2.
    let (name, _c, s) = camera_shaped(&unique_name("rec-card"), &[256, 160], 16);
    let frame = 256 * 160 * 2;
    for (refused, held) in [(Some("1"), 3), (None, 0)] {
        let out = out_dir("rec-card");
        let mut c = Command::new(bin());
        c.args(["record", &name, "--frames", "3", "--out"])
            .arg(&out)
            .env("LD_PRELOAD", &lib);
        if let Some(n) = refused {
            c.env("FAILING_CARDS", n);
        }
        common::default_stop_signals(&mut c);
        let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
        assert!(
            diag.contains("failing_card loaded"),
            "not preloaded: {diag}"
        );
        assert_eq!(st.code(), Some(1), "{diag}");
        assert!(
            diag.contains(&format!(
                "writing the frame-axis card (NAXIS3): {eio}: the file holds {held} frames without their frame ids and times; check the disk"
            )) && !diag.contains("the disk is full")
                && !diag.contains("free some space"),
            "{diag}"
        );
        assert_eq!(summary(&diag), (1, held), "{diag}");
        let bytes = std::fs::read(out.join(format!("{name}_000000000.fits"))).unwrap();
        let (card, data_start) = frame_axis(&bytes);
        assert_eq!(card, held, "{diag}");
        assert_eq!(
            bytes.len(),
            data_start + (held * frame).next_multiple_of(2880),
            "{diag}"
        );
        let _ = std::fs::remove_dir_all(out);
    }
    let _ = std::fs::remove_dir_all(lib_dir);
}

/// A library for `LD_PRELOAD` whose `pwrite` of a FITS table to a `.fits` file (a write of
/// whole 2880-byte blocks past the header: frames of 80 KiB are not) fails with ENOSPC for
/// the first `$FULL_TABLES` of them, saying so on stderr: the room a cut frees taken each
/// time by another file on the disk.
const FULL_TABLE: PreloadC = PreloadC {
    name: "full_table",
    wraps: Wraps::Pwrite,
    body: r#"
static long refused;
static int refusal(int fd, size_t *count, off_t at) {
    static const char fits[] = ".fits";
    const char *limit = getenv("FULL_TABLES");
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = at > 0 && *count % 2880 == 0 ? readlink(link, path, sizeof path - 1) : -1;
    size_t k = sizeof fits - 1;
    if (n >= (ssize_t)k && memcmp(path + n - k, fits, k) == 0
        && limit != NULL && refused < atol(limit)) {
        refused++;
        say("full_table: refused\n");
        return ENOSPC;
    }
    return 0;
}
"#,
};

/// A FITS table that finds no room twice, the room each cut of the image freed taken by
/// another file meanwhile: the file keeps the most frames whose table fits (here 1 of 3),
/// with their table, and says the disk is full once. It gave up after one retry: the file
/// held 2 frames without their frame ids and times. A table refused every time stops after
/// three tries.
#[test]
fn a_fits_table_the_full_disk_refuses_twice_keeps_the_frames_whose_table_fits() {
    let lib_dir = out_dir("rec-table-lib");
    let Some(lib) = FULL_TABLE.build(&lib_dir) else {
        return;
    };
    let (name, _c, s) = camera_shaped(&unique_name("rec-table"), &[256, 160], 16);
    let out = out_dir("rec-table");
    let mut c = Command::new(bin());
    c.args(["record", &name, "--frames", "3", "--out"])
        .arg(&out)
        .env("LD_PRELOAD", &lib)
        .env("FULL_TABLES", "2");
    common::default_stop_signals(&mut c);
    let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
    assert!(diag.contains("full_table loaded"), "not preloaded: {diag}");
    assert_eq!(diag.matches("full_table: refused").count(), 2, "{diag}");
    assert_eq!(st.code(), Some(1), "{diag}");
    let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC).to_string();
    let stopped = diag
        .lines()
        .find(|l| l.contains("recording stopped"))
        .unwrap_or_else(|| panic!("no error line: {diag}"));
    assert_eq!(
        stopped
            .matches(&format!("writing the FRAMES table: {enospc}"))
            .count(),
        1,
        "said once: {diag}"
    );
    assert!(
        diag.contains(
            "the disk is full: kept the first 1 of 3 whole frames, dropping the last 2 to make \
             room for the FRAMES table of those kept"
        ) && !diag.contains("without their frame ids"),
        "{diag}"
    );
    assert_eq!(summary(&diag), (1, 1), "{diag}");
    let bytes = std::fs::read(out.join(format!("{name}_000000000.fits"))).unwrap();
    let (card, data_start) = frame_axis(&bytes);
    assert_eq!(card, 1, "{diag}");
    let table = data_start + (256 * 160 * 2usize).next_multiple_of(2880);
    assert!(
        bytes[table..].starts_with(b"XTENSION= 'BINTABLE'"),
        "no table after the image"
    );
    assert_eq!(
        bytes.len(),
        table + 2 * 2880,
        "the table's header and one row block"
    );
    let _ = std::fs::remove_dir_all(out);
    // A disk that frees no room however much is cut (a snapshot holding the blocks) costs
    // the frames of three tries, not all of them: the file keeps 1 without its table.
    let out = out_dir("rec-table");
    let mut c = Command::new(bin());
    c.args(["record", &name, "--frames", "3", "--out"])
        .arg(&out)
        .env("LD_PRELOAD", &lib)
        .env("FULL_TABLES", "1000");
    common::default_stop_signals(&mut c);
    let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
    assert_eq!(diag.matches("full_table: refused").count(), 3, "{diag}");
    assert_eq!(st.code(), Some(1), "{diag}");
    assert!(
        diag.contains(&format!(
            "writing the FRAMES table: {enospc}: the file holds 1 frames without their frame \
             ids and times"
        )),
        "{diag}"
    );
    let bytes = std::fs::read(out.join(format!("{name}_000000000.fits"))).unwrap();
    assert_eq!(frame_axis(&bytes).0, 1, "{diag}");
    let _ = std::fs::remove_dir_all(out);
    let _ = std::fs::remove_dir_all(lib_dir);
}

/// A library for `LD_PRELOAD` whose `$FAILING_FRAME_AT`-th `pwrite` of a frame (64 KiB or
/// more) to a `.fits` file fails with EIO, saying so on stderr; only that one.
const FAILING_FRAME: PreloadC = PreloadC {
    name: "failing_frame",
    wraps: Wraps::Pwrite,
    body: r#"
static long frames;
static int refusal(int fd, size_t *count, off_t at) {
    (void)at;
    static const char fits[] = ".fits";
    const char *nth = getenv("FAILING_FRAME_AT");
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = nth != NULL && *count >= 65536 ? readlink(link, path, sizeof path - 1) : -1;
    size_t k = sizeof fits - 1;
    if (n >= (ssize_t)k && memcmp(path + n - k, fits, k) == 0 && ++frames == atol(nth)) {
        say("failing_frame: refused\n");
        return EIO;
    }
    return 0;
}
"#,
};

/// A frame write to a FITS file that fails with EIO is no full disk: the file keeps the
/// frame that reached it whole before, with its table, and the error says to check the
/// disk. (Taking the file's length at the failure for the room its table had, as after a
/// full disk, dropped that frame and said the disk was full.)
#[test]
fn an_io_error_writing_a_fits_frame_drops_no_frame_before_it_and_is_no_full_disk() {
    let lib_dir = out_dir("rec-fits-eio-lib");
    let Some(lib) = FAILING_FRAME.build(&lib_dir) else {
        return;
    };
    let eio = std::io::Error::from_raw_os_error(libc::EIO).to_string();
    // 80 KiB frames: each its own write.
    let (name, _c, s) = camera_shaped(&unique_name("rec-fits-eio"), &[256, 160], 16);
    let out = out_dir("rec-fits-eio");
    let mut c = Command::new(bin());
    c.args(["record", &name, "--frames", "3", "--out"])
        .arg(&out)
        .env("LD_PRELOAD", &lib)
        .env("FAILING_FRAME_AT", "2");
    common::default_stop_signals(&mut c);
    let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
    assert!(diag.contains("failing_frame: refused"), "{diag}");
    assert_eq!(st.code(), Some(1), "{diag}");
    let cube = out.join(format!("{name}_000000000.fits"));
    assert!(
        diag.contains(&format!(
            "{}: {eio}: check the disk (the kernel log names its errors) and record again",
            cube.display()
        )) && !diag.contains("the disk is full")
            && !diag.contains("free some space")
            && !diag.contains("dropping"),
        "{diag}"
    );
    assert_eq!(summary(&diag), (1, 1), "{diag}");
    let bytes = std::fs::read(&cube).unwrap();
    let (card, data_start) = frame_axis(&bytes);
    assert_eq!(card, 1, "{diag}");
    let frame: usize = 256 * 160 * 2;
    assert!(
        bytes.len() > data_start + frame.next_multiple_of(2880),
        "no FRAMES table after the frame: {diag}"
    );
    let rows = python_check(
        "import sys\nfrom astropy.io import fits\nwith fits.open(sys.argv[1]) as h:\n    \
         h.verify('exception')\n    print(h[0].data.shape[0], len(h['FRAMES'].data))",
        &[cube.as_os_str()],
        "FITS after an I/O error",
    );
    assert!(
        rows.as_deref().is_none_or(|r| r.trim() == "1 1"),
        "{rows:?}"
    );
    let _ = std::fs::remove_dir_all(out);
    let _ = std::fs::remove_dir_all(lib_dir);
}

/// A library for `LD_PRELOAD` whose first `pwrite` to a `.frames.csv` table (with
/// `$FAILING_NPY=table`), or second at offset 0 of a `.npy` cube (`header`: the header
/// rewritten as the cube is finished), fails with EIO, saying so on stderr; only once.
const FAILING_NPY: PreloadC = PreloadC {
    name: "failing_npy",
    wraps: Wraps::Pwrite,
    body: r#"
static int ends_with(const char *path, ssize_t n, const char *end) {
    size_t k = strlen(end);
    return n >= (ssize_t)k && memcmp(path + n - k, end, k) == 0;
}
static long headers, refused;
static int refusal(int fd, size_t *count, off_t at) {
    (void)count;
    const char *what = getenv("FAILING_NPY");
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = what != NULL && refused == 0 ? readlink(link, path, sizeof path - 1) : -1;
    int table = strcmp(what ? what : "", "table") == 0 && ends_with(path, n, ".frames.csv");
    int header = strcmp(what ? what : "", "header") == 0 && at == 0 && ends_with(path, n, ".npy")
        && ++headers == 2;
    if (table || header) {
        refused++;
        say("failing_npy: refused\n");
        return EIO;
    }
    return 0;
}
"#,
};

/// An I/O error (EIO, once) as a `.npy` cube is finished is no full disk: no frame is
/// dropped to make room, and none is said to be. At its table: the cube keeps all 3 frames
/// (a retry as on a full disk kept 2), the table the rows that landed (none); at its header
/// rewrite: the step is named (no frame is then readable). Either says to check the disk.
#[test]
fn an_io_error_finishing_an_npy_cube_drops_no_frame_and_is_no_full_disk() {
    let lib_dir = out_dir("rec-npy-eio-lib");
    let Some(lib) = FAILING_NPY.build(&lib_dir) else {
        return;
    };
    let eio = std::io::Error::from_raw_os_error(libc::EIO).to_string();
    // 80 KiB frames: a frame dropped frees room for a table.
    let (name, _c, s) = camera_shaped(&unique_name("rec-npy-eio"), &[256, 160], 16);
    let frame = 256 * 160 * 2;
    for (what, step, held) in [
        (
            "table",
            format!(
                "writing the frame table: {eio}: the cube keeps 3 of 3 whole frames, the table the rows of the first 0; check the disk"
            ),
            3,
        ),
        (
            "header",
            format!(
                "rewriting its header for 3 frames: {eio}: np.load reads the first 0 frames, which its header gave before; check the disk"
            ),
            0,
        ),
    ] {
        let out = out_dir("rec-npy-eio");
        let mut c = Command::new(bin());
        c.args(["record", &name, "--frames", "3", "--format", "npy", "--out"])
            .arg(&out)
            .env("LD_PRELOAD", &lib)
            .env("FAILING_NPY", what);
        common::default_stop_signals(&mut c);
        let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
        assert!(diag.contains("failing_npy loaded"), "not preloaded: {diag}");
        assert!(diag.contains("failing_npy: refused"), "{what}: {diag}");
        assert_eq!(st.code(), Some(1), "{what}: {diag}");
        assert!(
            diag.contains(&step)
                && !diag.contains("the disk is full")
                && !diag.contains("free some space"),
            "{what}: {diag}"
        );
        assert_eq!(summary(&diag), (1, held), "{what}: {diag}");
        let cube = out.join(format!("{name}_000000000.npy"));
        let bytes = std::fs::read(&cube).unwrap();
        let header = 10 + usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
        assert_eq!(bytes.len(), header + 3 * frame, "{what}: {diag}");
        if held == 3 {
            let dict = String::from_utf8_lossy(&bytes[10..header]).into_owned();
            assert!(dict.contains("'shape': (3, 256, 160)"), "{dict}");
            assert_eq!(table_rows(&npy_table(&cube)), 0, "{diag}");
            let loaded = python_check(
                "import sys, numpy as np; print(np.load(sys.argv[1]).shape[0])",
                &[cube.as_os_str()],
                "npy",
            );
            assert!(
                loaded.as_deref().is_none_or(|n| n.trim() == "3"),
                "{loaded:?}"
            );
        }
        let _ = std::fs::remove_dir_all(out);
    }
    let _ = std::fs::remove_dir_all(lib_dir);
}

#[test]
fn a_write_error_reported_only_when_a_file_is_put_on_the_disk_fails_the_recording() {
    let eio = std::io::Error::from_raw_os_error(libc::EIO).to_string();
    record_with_failing_sync("rec-sync", &["--fsync"], |format, st, diag, cubes| {
        assert_eq!(st.code(), Some(1), "{format}: {diag}");
        assert!(
            diag.contains(SYNC_CALLED) && diag.contains("FAILED") && diag.contains(&eio),
            "{format}: {diag}"
        );
        // The first, finished while the second filled, and the second.
        for cube in &cubes {
            assert!(
                diag.contains(&format!("{}: putting it on the disk", cube.display())),
                "{format}: {diag}"
            );
        }
        // Not on the disk, so not said complete.
        if format == "fits" && common::python().is_some() {
            let dir = cubes[0].parent().unwrap();
            assert_eq!(endings(dir), ["0 False", "0 False"], "{diag}");
        }
        // Their entries, in the directory: synced too (`fsync`), and its failure reported.
        let dir = cubes[0].parent().unwrap();
        assert!(
            diag.contains(&format!(
                "{}: putting the directory's entries on the disk",
                dir.display()
            )),
            "{format}: {diag}"
        );
    });
}

/// With `--fsync`, a FITS file whose every frame is on the disk says `COMPLETE = T` (written
/// after the rest was synced, then synced itself). Skipped without Python.
#[test]
fn with_fsync_fits_files_on_the_disk_say_complete() {
    if common::python().is_none() {
        return;
    }
    let (name, _c, s) = camera("rec-sync-fits", RING);
    let out = out_dir("rec-sync-fits");
    let args = ["--frames", "3", "--per-file", "2", "--fsync"];
    let (st, diag) = produce_until_exit(&s, record(&name, &out, &args));
    assert!(st.success(), "{diag}");
    assert!(diag.contains("3 frames in 2 file(s)"), "{diag}");
    assert_eq!(endings(&out), ["0 True", "0 True"], "{diag}");
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn without_fsync_the_recorder_never_asks_the_disk_to_sync_a_file() {
    record_with_failing_sync("rec-nosync", &[], |format, st, diag, _| {
        assert!(st.success(), "{format}: {diag}");
        assert!(
            diag.contains("3 frames in 2 file(s)") && !diag.contains(SYNC_CALLED),
            "{format}: {diag}"
        );
    });
}

/// With `--fsync`, an `--out` the recorder creates (here two levels) has its entry put on
/// the disk too: in each directory holding a created one, its failure reported. (That the
/// entries survive a power loss cannot be tested here: only that they are synced.)
#[test]
fn with_fsync_the_directories_created_for_out_are_put_on_the_disk_too() {
    let (name, _c, s) = camera("rec-sync-new", RING);
    let base = out_dir("rec-sync-new");
    let args = [
        "--frames",
        "3",
        "--per-file",
        "2",
        "--format",
        "npy",
        "--fsync",
    ];
    let out = base.join("made").join("here");
    let (st, diag) = produce_until_exit(&s, record(&name, &out, &args));
    assert!(st.success(), "{diag}");
    assert!(diag.contains("3 frames in 2 file(s)"), "{diag}");
    let cubes = files_in(&out);
    assert!(
        [0, 1]
            .map(|i| format!("{name}_00000000{i}.npy"))
            .iter()
            .all(|c| cubes.contains(c)),
        "{cubes:?}"
    );
    if let Some(lib) = preload_lib(&base, "failing_sync", FAILING_SYNC) {
        let made = base.join("failed");
        let out = made.join("here");
        let mut c = Command::new(bin());
        c.args(["record", &name, "--out"])
            .arg(&out)
            .args(args)
            .env("LD_PRELOAD", &lib);
        common::default_stop_signals(&mut c);
        let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
        assert!(diag.contains(SYNC_LOADED), "not preloaded: {diag}");
        assert_eq!(st.code(), Some(1), "{diag}");
        // Refused before recording: no file claimed to be on the disk.
        assert!(files_in(&out).is_empty(), "{diag}");
        for (dir, holder) in [(&out, &made), (&made, &base)] {
            assert!(
                diag.contains(&format!(
                    "{}: putting the directory's entries on the disk",
                    holder.display()
                )) && diag.contains(&format!("the directory {} created", dir.display())),
                "{}: {diag}",
                dir.display()
            );
        }
        // Both in one line, as a list: not joined by a line end, which the message shows
        // escaped (`\n`).
        assert!(
            diag.contains("and record again; ") && !diag.contains("record again\\n"),
            "{diag}"
        );
    }
    let _ = std::fs::remove_dir_all(base);
}

/// A library for `LD_PRELOAD` whose `pthread_create` fails with EAGAIN, as at the process or
/// thread limit (`ulimit -u`, a cgroup's `pids.max`), from its call number
/// `$PRELOAD_THREADS_LEFT` + 1 on; the calls before go to glibc's. Silent: a line of its own
/// on stderr, from a recorder's thread, could land inside one the tool is writing.
const NO_MORE_THREADS: PreloadC = PreloadC {
    name: "no_more_threads",
    wraps: Wraps::PthreadCreate,
    body: r#"
#include <dlfcn.h>
#include <pthread.h>
typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
static int created(pthread_t *thread, const pthread_attr_t *attr, void *(*run)(void *),
                   void *arg) {
    static int calls = 0;
    const char *left = getenv("PRELOAD_THREADS_LEFT");
    if (left != NULL && __atomic_fetch_add(&calls, 1, __ATOMIC_SEQ_CST) >= atoi(left)) {
        return EAGAIN;
    }
    create_fn real = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
    return real(thread, attr, run, arg);
}
"#,
};

/// A recorder thread that cannot start (out of threads) fails its own stream's recording,
/// saying why, and stops the others, which finish their files: exit 1, no panic (the
/// threads were started with `scope.spawn`, which panics).
#[test]
fn a_recorder_thread_that_cannot_start_fails_its_stream_and_stops_the_others() {
    let lib_dir = out_dir("rec-threads-lib");
    let Some(lib) = NO_MORE_THREADS.build(&lib_dir) else {
        return;
    };
    let (first, _c1, s) = camera("rec-threads-a", RING);
    let (second, _c2, _s2) = camera("rec-threads-b", RING);
    let out = out_dir("rec-threads");
    let mut c = Command::new(bin());
    c.args(["record", &first, &second, "--duration", "600"])
        .args(["--format", "npy", "--out"])
        .arg(&out)
        .env("LD_PRELOAD", &lib)
        .env("PRELOAD_THREADS_LEFT", "1");
    common::default_stop_signals(&mut c);
    let (st, diag) = produce_until_exit(&s, Proc::spawn(c));
    assert!(
        diag.contains("no_more_threads loaded"),
        "not preloaded: {diag}"
    );
    assert_eq!(st.code(), Some(1), "{diag}");
    assert!(!diag.contains("panicked"), "{diag}");
    assert!(
        diag.contains(&format!(
            "{second}: recording stopped with 0 frame(s) on file: starting its recorder \
             thread failed: {}",
            std::io::Error::from_raw_os_error(libc::EAGAIN)
        )),
        "the second stream's failure is not said: {diag}"
    );
    // The first stream's recording ended as at a signal, long before its `--duration`
    // (`produce_until_exit` bounds the run), and was summed up.
    assert!(
        diag.lines()
            .any(|l| l.starts_with(&format!("{first}: ")) && l.contains(" frames in ")),
        "no summary of the first stream: {diag}"
    );
    let _ = std::fs::remove_dir_all(out);
    let _ = std::fs::remove_dir_all(lib_dir);
}

/// `record ARGS --out OUT` in a child whose open-file limit (`ulimit -n`) is `soft`, hard
/// `hard`; its exit status and stderr, within [`LONG`].
fn record_with_open_file_limit(
    args: &[&str],
    out: &Path,
    soft: u64,
    hard: u64,
) -> (ExitStatus, String) {
    let mut c = Command::new(bin());
    c.arg("record")
        .args(args)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null());
    common::default_stop_signals(&mut c);
    // SAFETY: between fork and exec only an async-signal-safe call (setrlimit).
    unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut p = Proc::spawn(c);
    let st = p.wait_timeout(LONG);
    (st, p.diagnostics())
}

/// Ten history streams whose files would pass a 64-descriptor limit (each stream holds a
/// few, and its `.npy` cube and table two more, twice at a file change) are refused before
/// anything is created, naming the count and `ulimit -n`: the recorder would otherwise
/// open them all and fail a stream with EMFILE at its first file change, hours in. Under a
/// soft limit of 32 and a hard one of 4096 the tool raises its soft limit and records.
#[test]
fn a_recording_past_the_open_file_limit_is_refused_up_front() {
    let names: Vec<String> = (0..10)
        .map(|i| unique_name(&format!("rec-nofile{i}")))
        .collect();
    let _c = Cleanup::new(names.iter().cloned());
    let _streams: Vec<Stream> = names
        .iter()
        .map(|n| {
            StreamOptions::new(n)
                .shape(&[2])
                .dtype(Dtype::U8)
                .history(4)
                .create()
                .unwrap()
        })
        .collect();
    let mut args: Vec<&str> = names.iter().map(String::as_str).collect();
    args.extend(["--duration", "0.1", "--format", "npy"]);
    let out = out_dir("rec-nofile");
    let (st, diag) = record_with_open_file_limit(&args, &out, 64, 64);
    assert_eq!(st.code(), Some(1), "{diag}");
    assert!(
        diag.contains("recording 10 streams needs about")
            && diag.contains(
                "but the hard limit is 64 (the soft one was raised to it): raise it (as root: `ulimit -Hn"
            ),
        "{diag}"
    );
    assert!(files_in(&out).is_empty(), "{:?}", files_in(&out));

    // 10 streams hold more than 32 descriptors: opened only past a raised soft limit.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the `rlimit` passed by reference.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let hard = lim.rlim_max.min(4096);
    assert!(
        hard >= 256,
        "this test needs a hard open-file limit of 256: {hard}"
    );
    let (st, diag) = record_with_open_file_limit(&args, &out, 32, hard);
    assert!(st.success(), "{diag}");
    let _ = std::fs::remove_dir_all(out);
}

/// The frames a plain stream's recorder misses before a file's first are said in that
/// file's `LOST` card (and not again in the next file's), and a recording that ended at
/// `--frames` says `COMPLETE = T` in each file. Skipped without Python.
#[test]
fn a_fits_file_says_the_frames_lost_before_it_and_whether_it_is_complete() {
    if common::python().is_none() {
        return;
    }
    let name = unique_name("rec-fits-lost");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[6, 5])
        .dtype(Dtype::U16)
        .notify(true)
        .create()
        .unwrap();
    let out = out_dir("rec-fits-lost");
    let mut r = record(&name, &out, &["--frames", "2", "--per-file", "1"]);
    let pid = r.pid() as i32;
    let write = |i: u64| {
        s.write_slice_frame(&vec![(i % 50_000) as u16; s.len()], i)
            .unwrap()
    };
    // Frozen while waiting for its first frame, the recorder takes the last of five:
    // frames 1 to 4 are missed, 2 of them still wanted (lost).
    wait_parked_on(&mut r, &name);
    common::freeze(pid);
    (1..=5).for_each(write);
    common::thaw(pid);
    // Finished (its table written after the padded image), the first file ends on a
    // block: the next frame is the second file's.
    let first = out.join(format!("{name}_000000000.fits"));
    wait_until(&mut r, "first file finished", || {
        std::fs::metadata(&first).is_ok_and(|m| m.len() >= 4 * 2880 && m.len() % 2880 == 0)
    });
    write(6);
    let st = r.wait_timeout(LONG);
    let diag = r.diagnostics();
    assert_eq!(st.code(), Some(1), "frames 1 and 2 are lost: {diag}");
    assert!(diag.contains(", 2 lost"), "{diag}");
    assert_eq!(endings(&out), ["2 True", "0 True"], "{diag}");
    let _ = std::fs::remove_dir_all(out);
}

/// The frames the header of the cube `path` gives (a `.npy`'s shape, a FITS file's `NAXIS3`,
/// the frame axis of a 2-d stream's cube); 0 while it gives none.
fn counted(path: &Path) -> usize {
    let head = std::fs::read(path).unwrap_or_default();
    let head = String::from_utf8_lossy(&head[..head.len().min(2880)]).into_owned();
    let value = if let Some(at) = head.find("'shape': (") {
        &head[at + 10..]
    } else if let Some(at) = head.find("NAXIS3  =") {
        &head[at + 9..]
    } else {
        return 0;
    };
    let digits: String = value
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or(0)
}

/// Checks the cube left by a recorder killed: prints the frames it reads with, and for a
/// `.npy` the rows of its table. Frames consecutive with pixels = frame id % 50000 (the
/// table's ids where there is one).
const CHECK_KILLED: &str = r#"
import sys, csv, warnings, numpy as np
f = sys.argv[1]
if f.endswith(".fits"):
    from astropy.io import fits
    with warnings.catch_warnings():
        # Cut short: the data unit lacks its padding, and frames past the count may follow.
        warnings.simplefilter("ignore")
        with fits.open(f) as h:
            data = h[0].data
            # Its HDUs list too: what follows the frames counted never ends on a block
            # boundary, which astropy would take for a header missing its END card and raise.
            assert len(h) == 1, h.info(output=False)
            assert h[0].header["COMPLETE"] is False, h[0].header
            # Unknown, not 0: a blank value.
            assert isinstance(h[0].header.cards["LOST"].value, fits.card.Undefined), h[0].header
            # The checkpoint wrote the first and last frame's times too.
            from astropy.time import Time
            obs, end = (Time(h[0].header[k], format="isot", scale="utc") for k in ("DATE-OBS", "DATE-END"))
            assert obs < end, (obs, end)
            first = int(data[0, 0, 0])
            for k in range(len(data)):
                assert (data[k] == (first + k) % 50000).all(), (k, data[k])
            print(len(data), len(data))
else:
    data = np.load(f)
    rows = list(csv.DictReader(open(f[:-4] + ".frames.csv")))
    assert len(rows) >= len(data), (len(rows), len(data))
    for k in range(len(data)):
        assert (data[k] == int(rows[k]["frame_id"]) % 50000).all(), (k, data[k], rows[k])
    print(len(data), len(rows))
"#;

/// A recorder killed (SIGKILL: no chance to finish its file) leaves a cube that reads with
/// the frames its last checkpoint counted, and a `.npy`'s table their rows. The header gave
/// 2**64 - 1 frames (np.load refused it) or NAXIS3 = 0, the table was empty. Frames of a
/// whole FITS block (36x40 u16: 2880 bytes) left the file's length on a block boundary,
/// where astropy took the frames past the count for a header without its END card: it
/// raised as soon as its HDUs were listed.
#[test]
fn a_recorder_killed_leaves_a_cube_that_reads_with_the_frames_counted_last() {
    const ON_FILE: usize = 50;
    for (format, shape) in [("npy", [6, 5]), ("fits", [6, 5]), ("fits", [36, 40])] {
        let tag = format!("rec-kill-{format}-{}", shape[0]);
        let (name, _c, s) = camera_shaped(&unique_name(&tag), &shape, RING);
        let out = out_dir("rec-kill");
        let cube = out.join(format!("{name}_000000000.{format}"));
        let r = record(
            &name,
            &out,
            &[
                "--duration",
                "600",
                "--per-file",
                "100000",
                "--format",
                format,
            ],
        );
        let pid = r.pid() as i32;
        let mut killed_at = None;
        // Killed 60 frames after a checkpoint counted ON_FILE or more, and before the next
        // (a second later): by then whole-block frames (36x40) have landed past the count,
        // 22 to a gathered write.
        let mut seen: Option<(usize, u64)> = None;
        let (st, diag) = produce_with(&s, r, |s, i| {
            s.write_slice_frame(&vec![(i % 50_000) as u16; s.len()], i)
                .unwrap();
            let n = counted(&cube);
            if killed_at.is_some() || n < ON_FILE {
                return;
            }
            let since = match seen {
                Some((m, at)) if m == n => i - at,
                _ => {
                    seen = Some((n, i));
                    0
                }
            };
            if since >= 60 {
                // SAFETY: signalling our own child.
                assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
                killed_at = Some(counted(&cube));
            }
        });
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(libc::SIGKILL),
            "{format}: {diag}"
        );
        let at_kill = killed_at.unwrap();
        if let Some(stdout) = python_check(CHECK_KILLED, &[cube.as_os_str()], format) {
            let v: Vec<usize> = stdout
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            assert!(v[0] >= at_kill, "{format}: {v:?} frames, {at_kill} counted");
            assert!(v[1] >= v[0], "{format}: {v:?}");
        }
        let _ = std::fs::remove_dir_all(out);
    }
}

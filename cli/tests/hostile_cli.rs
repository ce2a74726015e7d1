//! Hostile and bad input through the `shmstream` command-line tool: malformed `.npy` files,
//! shapes and names the library refuses, and a planted corrupt `_meta` segment. Every case
//! must exit with status 1 and a message (never a panic, exit 101, or a signal), create
//! nothing, and leave the frame already in the stream untouched. The CLI's normal behaviour
//! is tested in `tests/cli.rs`.

#[path = "../../tests/common/mod.rs"]
mod common;
mod preload;

use std::path::{Path, PathBuf};

use common::{Cleanup, unique_name};
use preload::{SHM_EMFILE, SHM_EMFILE_LOADED, SHM_EMFILE_REFUSED, preload_lib};
use shmstream::{Dtype, Error, Stream};

fn bin() -> &'static Path {
    assert_cmd::cargo::cargo_bin!("shmstream")
}

/// Runs the CLI; returns (exit code, stderr). A panic or a signal fails the test.
fn run(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(bin())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("{args:?} died by a signal: {:?}\n{stderr}", out.status));
    assert_ne!(code, 101, "{args:?} panicked:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}:\n{stderr}");
    (code, stderr)
}

/// A `.npy` file: magic, version, header (padded to 64 bytes), data. Version 1 stores the
/// header length in 2 bytes, versions 2 and 3 in 4.
fn npy(version: (u8, u8), header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_owned();
    let len_bytes = if version.0 == 1 { 2 } else { 4 };
    let fixed = 6 + 2 + len_bytes;
    while !(fixed + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut v = b"\x93NUMPY".to_vec();
    v.extend_from_slice(&[version.0, version.1]);
    if len_bytes == 2 {
        v.extend_from_slice(&(h.len() as u16).to_le_bytes());
    } else {
        v.extend_from_slice(&(h.len() as u32).to_le_bytes());
    }
    v.extend_from_slice(h.as_bytes());
    v.extend_from_slice(data);
    v
}

fn dict(descr: &str, fortran: bool, shape: &str) -> String {
    let order = if fortran { "True" } else { "False" };
    format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}")
}

/// The malformed files: (what, bytes).
fn bad_files() -> Vec<(&'static str, Vec<u8>)> {
    let f32x6 = vec![0u8; 24];
    let good = npy((1, 0), &dict("<f4", false, "(2, 3)"), &f32x6);
    let mut truncated_header = good.clone();
    truncated_header.truncate(30);
    let mut bad_len = good.clone();
    bad_len[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
    vec![
        ("empty file", vec![]),
        ("not npy", b"hello, world\n".to_vec()),
        ("bad magic", {
            let mut v = good.clone();
            v[1] = b'X';
            v
        }),
        ("unknown version", {
            let mut v = good.clone();
            v[6] = 9;
            v
        }),
        ("truncated header", truncated_header),
        ("header length past the end", bad_len),
        ("header not a dict", npy((1, 0), "[1, 2, 3]", &f32x6)),
        (
            "header with garbage",
            npy((1, 0), "{'descr': '<f4', 'shape': (2, 3", &f32x6),
        ),
        (
            "missing shape",
            npy((1, 0), "{'descr': '<f4', 'fortran_order': False, }", &f32x6),
        ),
        (
            "negative dim",
            npy((1, 0), &dict("<f4", false, "(2, -3)"), &f32x6),
        ),
        (
            "zero dims",
            npy((1, 0), &dict("<f4", false, "()"), &f32x6[..4]),
        ),
        (
            "a zero dim",
            npy((1, 0), &dict("<f4", false, "(2, 0)"), &[]),
        ),
        (
            "20 dims",
            npy(
                (1, 0),
                &dict("<f4", false, &format!("({})", ["1"; 20].join(", "))),
                &f32x6[..4],
            ),
        ),
        (
            "shape product overflows",
            npy(
                (1, 0),
                &dict("<f4", false, "(4294967296, 4294967296, 4)"),
                &f32x6,
            ),
        ),
        // npyz multiplies the dimensions unchecked (the product, and the strides: every
        // prefix product in one order or the other), which panics in a debug build: each of
        // these must be refused before npyz sees it.
        (
            "a leading zero dim, the rest overflowing",
            npy(
                (1, 0),
                &dict("<f4", false, "(0, 4294967296, 4294967296)"),
                &[],
            ),
        ),
        (
            "a trailing zero dim, the rest overflowing",
            npy(
                (1, 0),
                &dict("<f4", true, "(4294967296, 4294967296, 0)"),
                &[],
            ),
        ),
        (
            "hex dims overflowing",
            npy(
                (1, 0),
                &dict("<f4", false, "(0x100000000, 0x100000000)"),
                &f32x6,
            ),
        ),
        (
            "underscored dims overflowing",
            npy(
                (1, 0),
                &dict("<f4", false, "(4_294_967_296, 4_294_967_296)"),
                &f32x6,
            ),
        ),
        (
            "octal and binary dims overflowing",
            npy(
                (1, 0),
                &dict(
                    "<f4",
                    false,
                    "(0o40000000000, 0b1_0000_0000_0000_0000_0000_0000_0000_0000)",
                ),
                &f32x6,
            ),
        ),
        (
            "dims overflowing in a list",
            npy(
                (1, 0),
                &dict("<f4", false, "[4294967296, 4294967296, 4]"),
                &f32x6,
            ),
        ),
        (
            "shape key spelled with an escape",
            npy(
                (1, 0),
                "{'descr': '<f4', 'fortran_order': False, 'sh\\x61pe': (4294967296, 4294967296, 4), }",
                &f32x6,
            ),
        ),
        (
            "shape key given twice, the last overflowing",
            npy(
                (1, 0),
                "{'shape': (2, 3), 'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4), }",
                &f32x6,
            ),
        ),
        (
            "v2 header padded past 64 KiB",
            npy(
                (2, 0),
                &format!(
                    "{{'descr': '<f4', 'fortran_order': False,{} 'shape': (4294967296, 4294967296, 4), }}",
                    " ".repeat(70_000)
                ),
                &f32x6,
            ),
        ),
        (
            "v3 header overflowing",
            npy(
                (3, 0),
                &dict("<f4", false, "(4294967296, 4294967296, 4)"),
                &f32x6,
            ),
        ),
        (
            // npyz's parser takes hours over this (its time doubles with each level).
            "brackets nested 30 deep",
            npy(
                (1, 0),
                &format!(
                    "{{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': {}{}}}",
                    "[".repeat(30),
                    "]".repeat(30)
                ),
                &f32x6,
            ),
        ),
        ("v2 header length of 4 GiB", {
            let mut v = npy((2, 0), &dict("<f4", false, "(2, 3)"), &f32x6);
            v[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
            v
        }),
        (
            "data shorter than the shape",
            npy((1, 0), &dict("<f4", false, "(2, 3)"), &f32x6[..10]),
        ),
        (
            "object dtype",
            npy((1, 0), &dict("|O", false, "(2, 3)"), &f32x6),
        ),
        (
            "structured dtype",
            npy(
                (1, 0),
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,), }",
                &f32x6,
            ),
        ),
        (
            "unsupported float",
            npy((1, 0), &dict("<f16", false, "(2, 3)"), &[0; 96]),
        ),
        (
            "string dtype",
            npy((1, 0), &dict("<U4", false, "(2, 3)"), &[0; 96]),
        ),
    ]
}

#[test]
fn malformed_npy_files_fail_cleanly_create_nothing_and_leave_frames_intact() {
    let dir = std::env::temp_dir().join(unique_name("hostile-cli"));
    std::fs::create_dir_all(&dir).unwrap();
    let existing = unique_name("hcli-existing");
    let _c = Cleanup::new([&existing]);
    let s = Stream::create(&existing, &[2, 3], Dtype::F32).unwrap();
    let frame = [1f32, 2., 3., 4., 5., 6.];
    s.write_slice_frame(&frame, 5).unwrap();
    let mut failures = Vec::new();
    for (what, bytes) in bad_files() {
        let file: PathBuf = dir.join(format!("{}.npy", what.replace(' ', "_")));
        std::fs::write(&file, &bytes).unwrap();
        let fresh = unique_name("hcli-fresh");
        let _c = Cleanup::new([&fresh]);
        for target in [&fresh, &existing] {
            let (code, stderr) = run(&["load", target, file.to_str().unwrap()]);
            if code != 1 || stderr.trim().is_empty() {
                failures.push(format!(
                    "{what} into {target}: exit {code}, stderr {stderr:?}"
                ));
            }
            // Said in words, not as npyz's "failed to fill whole buffer".
            let cut_short = "is cut short: its header declares float32 [2, 3] (24 bytes of data) but the file ends before them";
            if what == "data shorter than the shape" && !stderr.contains(cut_short) {
                failures.push(format!("{what} into {target}: stderr {stderr:?}"));
            }
        }
        // Nothing was created for the fresh name; the existing frame is untouched.
        if !matches!(shmstream::stat(&fresh), Err(Error::NotFound { .. })) {
            failures.push(format!("{what}: a failed load created stream {fresh}"));
        }
        let p = Stream::open_readonly(&existing)
            .unwrap()
            .read_publication::<f32>()
            .unwrap();
        assert_eq!(p.payload.as_slice().unwrap(), &frame, "{what}");
        assert_eq!((p.info.count, p.info.frame_id), (1, 5), "{what}");
    }
    // Well-formed files of the wrong shape or dtype: refused, naming both sides.
    for (what, header, data) in [
        ("wrong shape", dict("<f4", false, "(3, 2)"), vec![0u8; 24]),
        ("wrong dtype", dict("<i4", false, "(2, 3)"), vec![0u8; 24]),
    ] {
        let file = dir.join(format!("{}.npy", what.replace(' ', "_")));
        std::fs::write(&file, npy((1, 0), &header, &data)).unwrap();
        let (code, stderr) = run(&["load", &existing, file.to_str().unwrap()]);
        assert_eq!(code, 1, "{what}: {stderr}");
        assert!(
            stderr.contains(&existing) && stderr.contains("mismatch"),
            "{what}: {stderr}"
        );
    }
    assert_eq!(s.read::<f32>().unwrap().as_slice().unwrap(), &frame);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn bad_names_and_shapes_fail_cleanly_and_create_nothing() {
    let fresh = unique_name("hcli-shape");
    let _c = Cleanup::new([&fresh]);
    let long = "y".repeat(257);
    let cases: Vec<Vec<&str>> = vec![
        vec!["create", &fresh, "--shape", ""],
        vec!["create", &fresh, "--shape", "0"],
        vec!["create", &fresh, "--shape", "-1"],
        vec![
            "create",
            &fresh,
            "--shape",
            "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
        ],
        vec!["create", &fresh, "--shape", "4294967296,4294967296,4"],
        vec!["create", &fresh, "--shape", "99999999999999999999999"],
        vec!["create", &fresh, "--shape", "2", "--dtype", "object"],
        vec!["create", "", "--shape", "2"],
        vec!["create", " \t ", "--shape", "2"],
        vec!["create", &long, "--shape", "2"],
        vec!["stat", "   "],
        vec!["dump", ""],
        vec!["unlink", &long],
    ];
    for args in &cases {
        let (code, stderr) = run(args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(!stderr.trim().is_empty(), "{args:?}");
    }
    assert!(matches!(
        shmstream::stat(&fresh),
        Err(Error::NotFound { .. })
    ));
}

/// A planted corrupt `_meta`: `stat` and `dump` name the stream and the broken rule, `list`
/// skips it, and the advice in the message (unlink and recreate) works.
#[test]
fn a_corrupt_stream_is_reported_skipped_and_removable() {
    let name = unique_name("hcli-corrupt");
    let _c = Cleanup::new([&name]);
    let mut meta = shmstream::format::encode_new(&shmstream::format::NewHeader {
        name: &name,
        dtype: Dtype::U8,
        shape: &[4],
        flags: 0,
        device_index: -1,
        creator_pid: i64::from(std::process::id()),
        instance_id: [1; 16],
    });
    meta[shmstream::format::offset::NDIM] = 20; // breaks ndim (and the CRC after it)
    std::fs::write(
        format!("/dev/shm/{}", shmstream::name::meta_id(&name)),
        meta,
    )
    .unwrap();
    std::fs::write(
        format!("/dev/shm/{}", shmstream::name::segment_id(&name)),
        [0u8; 4],
    )
    .unwrap();
    for cmd in ["stat", "dump"] {
        let (code, stderr) = run(&[cmd, &name]);
        assert_eq!(code, 1, "{cmd}: {stderr}");
        assert!(
            stderr.contains(&name) && stderr.contains("corrupt header"),
            "{cmd}: {stderr}"
        );
    }
    let out = std::process::Command::new(bin())
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&name));
    let (code, stderr) = run(&["unlink", &name]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = run(&["create", &name, "--shape", "4", "--dtype", "uint8"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(shmstream::stat(&name).unwrap().shape, vec![4]);
}

/// A history ring every `open` refuses (its header declares frames of another size):
/// `stat` still prints the stream's metadata and exits 0 (it reports; it is `open` that
/// fails), its history line saying the ring is unusable and why; `list` shows the stream
/// with history `unusable`. They showed the declared depth, as if the ring were usable.
#[test]
fn a_corrupt_history_ring_is_reported_by_stat_and_list() {
    use std::os::unix::fs::FileExt;
    /// The ring header's frame-bytes field (`off::FRAME_BYTES` in src/history/mod.rs).
    const FRAME_BYTES: u64 = 16;
    let name = unique_name("hcli-ring");
    let _c = Cleanup::new([&name]);
    drop(
        shmstream::StreamOptions::new(&name)
            .shape(&[4])
            .dtype(Dtype::U8)
            .history(64)
            .create()
            .unwrap(),
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{}", shmstream::name::history_id(&name)))
        .unwrap()
        .write_all_at(&8u64.to_le_bytes(), FRAME_BYTES)
        .unwrap();
    assert!(matches!(
        Stream::open(&name),
        Err(Error::InvalidHistory { .. })
    ));
    let stdout = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let stat = stdout(&["stat", &name]);
    let line = |key: &str| {
        stat.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} line:\n{stat}"))
            .to_owned()
    };
    assert!(line("shape:").contains("[4]"), "{stat}");
    let history = line("history:");
    assert!(
        history.contains("unusable")
            && history.contains("frames of 8 bytes, the stream 4")
            && history.contains("recreate"),
        "{stat}"
    );
    let list = stdout(&["list"]);
    let row = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .unwrap_or_else(|| panic!("{name} not listed:\n{list}"));
    assert_eq!(row.split_whitespace().last(), Some("unusable"), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&["stat", &name, "--json"])).unwrap();
    assert_eq!(json["history"], 0);
    assert!(
        json["history_problem"]
            .as_str()
            .unwrap()
            .contains("frames of 8 bytes")
    );
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the CLI with [`SHM_EMFILE`] preloaded (refusing objects ending in `suffix`); returns
/// (exit code, stdout, stderr), having checked that the library was loaded and refused one.
fn run_out_of_descriptors(lib: &Path, suffix: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bin())
        .args(args)
        .env("LD_PRELOAD", lib)
        .env("SHM_EMFILE_SUFFIX", suffix)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains(SHM_EMFILE_LOADED),
        "{args:?}: not preloaded: {stderr}"
    );
    assert!(
        stderr.contains(&format!("{SHM_EMFILE_REFUSED}/")) && stderr.contains(suffix),
        "{args:?}: no {suffix} was refused: {stderr}"
    );
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("{args:?} died by a signal: {:?}\n{stderr}", out.status));
    assert!(!stderr.contains("panicked"), "{args:?}:\n{stderr}");
    (code, stdout, stderr)
}

/// The error and remedy of a process out of file descriptors.
fn says_out_of_descriptors(stderr: &str) -> bool {
    let emfile = std::io::Error::from_raw_os_error(libc::EMFILE).to_string();
    stderr.contains(&emfile) && stderr.contains("close some files or raise `ulimit -n`")
}

/// A scan that runs out of file descriptors opening the streams' `_meta` segments (EMFILE,
/// through `LD_PRELOAD`): `list`, `list --json` and `purge --dry-run` fail, saying so and
/// what to do. Each such stream was taken for "not ours" and skipped: `list` said "no
/// streams" (or left streams out) and `purge` "nothing to purge", exiting 0. Skipped (said
/// on stderr) without a C compiler.
#[test]
fn a_scan_out_of_file_descriptors_fails_saying_so() {
    let dir = TempDir(std::env::temp_dir().join(unique_name("hcli-emfile")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let Some(lib) = preload_lib(&dir.0, "shm_emfile", SHM_EMFILE) else {
        return;
    };
    let name = unique_name("hcli-emfile");
    let _c = Cleanup::new([&name]);
    let _stream = Stream::create(&name, &[4], Dtype::U8).unwrap();
    for args in [&["list"][..], &["list", "--json"], &["purge", "--dry-run"]] {
        let (code, stdout, stderr) = run_out_of_descriptors(&lib, "_meta", args);
        assert_eq!(code, 1, "{args:?}: stdout: {stdout}\nstderr: {stderr}");
        assert!(
            says_out_of_descriptors(&stderr),
            "{args:?}: stdout: {stdout}\nstderr: {stderr}"
        );
        assert!(
            !stdout.contains("no streams") && !stdout.contains("nothing to purge"),
            "{args:?}: {stdout}"
        );
        // About no stream: it named the `_meta`'s segment id as the stream.
        assert!(!stderr.contains("for stream '"), "{args:?}: {stderr}");
    }
    assert_eq!(shmstream::stat(&name).unwrap().shape, vec![4]);
}

/// `stat` shows the pid holding a stream's write lock (`lock_owner_pid`, 0 when none is stamped), which
/// the timeout error's remedy points at: here this test process, holding it through a
/// guard while the CLI runs.
#[test]
fn stat_shows_the_write_lock_holder() {
    let name = unique_name("hcli-lock-owner");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[4], Dtype::U8).unwrap();
    let stat = |json: bool| {
        let mut args = vec!["stat", name.as_str()];
        args.extend(json.then_some("--json"));
        let out = std::process::Command::new(bin())
            .args(&args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let owner = |json: &str| {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        v["lock_owner_pid"].as_i64()
    };
    assert_eq!(owner(&stat(true)), Some(0));
    assert!(stat(false).contains("lock_owner_pid: 0 (no holder stamped"));
    let guard = s.lock(Some(std::time::Duration::from_secs(5))).unwrap();
    let pid = std::process::id();
    assert_eq!(owner(&stat(true)), Some(i64::from(pid)));
    let human = stat(false);
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("lock_owner_pid:") && l.contains(&format!(" {pid} "))),
        "{human}"
    );
    assert_eq!(
        shmstream::stat(&name).unwrap().lock_owner_pid,
        i64::from(pid)
    );
    drop(guard);
    assert_eq!(owner(&stat(true)), Some(0));
}

/// Out of file descriptors opening a stream's history ring (EMFILE, through `LD_PRELOAD`),
/// `stat` and `list` fail saying so and what to do. They said the ring was unusable, "so
/// every open refuses the stream", which a retry with descriptors to spare disproves.
/// Skipped (said on stderr) without a C compiler.
#[test]
fn a_history_ring_out_of_file_descriptors_is_no_ring_problem() {
    let dir = TempDir(std::env::temp_dir().join(unique_name("hcli-emfile-ring")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let Some(lib) = preload_lib(&dir.0, "shm_emfile", SHM_EMFILE) else {
        return;
    };
    let name = unique_name("hcli-emfile-ring");
    let _c = Cleanup::new([&name]);
    let _stream = shmstream::StreamOptions::new(&name)
        .shape(&[4])
        .dtype(Dtype::U8)
        .history(4)
        .create()
        .unwrap();
    for args in [
        &["stat", &name][..],
        &["stat", &name, "--json"],
        &["list"],
        &["list", "--json"],
    ] {
        let (code, stdout, stderr) = run_out_of_descriptors(&lib, "_hist", args);
        assert_eq!(code, 1, "{args:?}: stdout: {stdout}\nstderr: {stderr}");
        assert!(
            says_out_of_descriptors(&stderr),
            "{args:?}: stdout: {stdout}\nstderr: {stderr}"
        );
        assert!(
            !stdout.contains("unusable") && !stdout.contains("history_problem"),
            "{args:?}: {stdout}"
        );
    }
    let stat = shmstream::stat(&name).unwrap();
    assert_eq!((stat.history, stat.history_problem), (4, None));
}

/// `watch` beside a stalled creation (a `_meta` still empty, as a creation leaves it, while
/// another process, here this test, holds the name's lock) shows that stream `unfinished`
/// and holds up neither the other rows nor its end. It waited 5 s for the creation at its
/// start and again at each sample, every row refreshed only that often, and `--duration 1`
/// ran 10 s.
#[test]
fn watch_is_not_held_up_by_a_stalled_creation() {
    use std::os::fd::AsRawFd;
    let (ok, stuck) = (
        unique_name("hcli-watch-ok"),
        unique_name("hcli-watch-stuck"),
    );
    let _c = Cleanup::new([&ok, &stuck]);
    drop(Stream::create(&ok, &[1], Dtype::U8).unwrap());
    drop(Stream::create(&stuck, &[1], Dtype::U8).unwrap());
    let shm = |id: String| PathBuf::from("/dev/shm").join(id);
    let meta = shm(shmstream::name::meta_id(&stuck));
    std::fs::write(&meta, []).unwrap();
    let lock_path = shmstream::name::lock_path(&stuck);
    let lock = std::fs::File::open(&lock_path).unwrap();
    // SAFETY: flock on a descriptor this scope owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let start = std::time::Instant::now();
    let out = std::process::Command::new(bin())
        .args([
            "watch",
            &ok,
            &stuck,
            "--interval",
            "0.05",
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    let took = start.elapsed();
    drop(lock);
    for left in [meta, shm(shmstream::name::segment_id(&stuck)), lock_path] {
        let _ = std::fs::remove_file(left);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let rows = |name: &str| {
        let field = format!(" name={name} ");
        stdout
            .lines()
            .filter(|l| l.contains(&field))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // Each sample waits CREATION_WAIT on the stalled stream, so a loaded host may give few
    // samples: the defect gave one (a 5 s wait per sample), two are enough to tell.
    let (ok_rows, stuck_rows) = (rows(&ok), rows(&stuck));
    assert!(ok_rows.len() >= 2, "too few samples in {took:?}:\n{stdout}");
    assert!(ok_rows.iter().all(|l| l.ends_with(" state=ok")), "{stdout}");
    // The stalled stream is sampled every time, not skipped to keep up.
    assert!(
        stuck_rows.len().abs_diff(ok_rows.len()) <= 1
            && stuck_rows.iter().all(|l| l.ends_with(" state=unfinished")),
        "{stdout}"
    );
    // Slack for a loaded machine starting a debug binary; the defect ran 10 s.
    assert!(took < std::time::Duration::from_secs(8), "took {took:?}");
}

/// `load --timeout 0.2` beside a stalled creation (another process, here this test, holding
/// the name's lock over a `_meta` still empty, or over a creation at work under its private
/// ids) fails within its timeout, saying the stream's creation is unfinished. Each of its
/// waits (two opens, the create's wait for the name's lock, the open after it) waited a fixed
/// 5 s: the command took 15 s, or 5 s.
#[test]
fn load_beside_a_stalled_creation_ends_within_its_timeout() {
    use std::os::fd::AsRawFd;
    let dir = TempDir(std::env::temp_dir().join(unique_name("hcli-load-stalled")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("f.npy");
    std::fs::write(
        &file,
        npy((1, 0), &dict("|u1", false, "(4,)"), &[1, 2, 3, 4]),
    )
    .unwrap();
    let shm = |id: String| PathBuf::from("/dev/shm").join(id);
    for at_work in [false, true] {
        let name = unique_name("hcli-load-stalled");
        let _c = Cleanup::new([&name]);
        let meta = shm(shmstream::name::meta_id(&name));
        let payload = shm(shmstream::name::segment_id(&name));
        let building = shm(format!(
            "{}.creating-{}",
            shmstream::name::segment_id(&name),
            std::process::id()
        ));
        drop(Stream::create(&name, &[4], Dtype::U8).unwrap());
        if at_work {
            // A creator of ours at work: nothing published yet, its payload under a
            // private id.
            std::fs::remove_file(&meta).unwrap();
            std::fs::rename(&payload, &building).unwrap();
        } else {
            std::fs::write(&meta, []).unwrap();
        }
        let lock_path = shmstream::name::lock_path(&name);
        let lock = std::fs::File::open(&lock_path).unwrap();
        // SAFETY: flock on a descriptor this scope owns.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let start = std::time::Instant::now();
        let (code, stderr) = run(&["load", &name, file.to_str().unwrap(), "--timeout", "0.2"]);
        let took = start.elapsed();
        drop(lock);
        for left in [meta, payload, building, lock_path] {
            let _ = std::fs::remove_file(left);
        }
        assert_eq!(code, 1, "at work {at_work}: {stderr}");
        assert!(
            stderr.contains(&format!("'{name}'")) && stderr.contains("creation is unfinished"),
            "at work {at_work}: {stderr}"
        );
        // Slack for a loaded machine starting a debug binary; the defect took 5 s or 15 s.
        assert!(
            took < std::time::Duration::from_millis(4500),
            "at work {at_work}: took {took:?}"
        );
    }
}

/// A `.npy` whose shape no stream can hold is refused by its header, as a creation would
/// refuse it, before its data is read or a stream there is compared with it: not "cut short
/// … write it again" after reading it, nor a mismatch.
#[test]
fn a_file_of_a_shape_no_stream_holds_is_refused_by_its_header() {
    let dir = std::env::temp_dir().join(unique_name("hcli-shape-first"));
    std::fs::create_dir_all(&dir).unwrap();
    let fresh = unique_name("hcli-huge");
    let existing = unique_name("hcli-huge-there");
    let _c = Cleanup::new([&fresh, &existing]);
    Stream::create(&existing, &[3], Dtype::U8).unwrap();
    for (what, header, data) in [
        // 2^63 - 1 complex128 elements: counted in 64 bits, but no machine maps them.
        (
            "a shape past this machine",
            dict("<c16", false, "(9223372036854775807,)"),
            vec![0u8; 64],
        ),
        (
            "20 dims",
            dict("<f4", false, &format!("({})", ["1"; 20].join(", "))),
            vec![0u8; 4],
        ),
    ] {
        let file = dir.join("f.npy");
        std::fs::write(&file, npy((1, 0), &header, &data)).unwrap();
        let (code, stderr) = run(&["load", &fresh, file.to_str().unwrap()]);
        assert!(
            code == 1
                && stderr.contains("invalid shape")
                && stderr.contains(&fresh)
                && !stderr.contains("write it again"),
            "{what}: exit {code}: {stderr}"
        );
        assert!(
            matches!(shmstream::stat(&fresh), Err(Error::NotFound { .. })),
            "{what}"
        );
        // Into a stream there, the shape no stream holds is said first, not a mismatch
        // whose remedies (another name, the stream removed) would fail on it next.
        let (code, stderr) = run(&["load", &existing, file.to_str().unwrap()]);
        assert!(
            code == 1 && stderr.contains("invalid shape") && !stderr.contains("mismatch"),
            "{what} into a stream there: exit {code}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `shmstream load NAME FILE` with 300 MB of address space (`ulimit -v`): room for the
/// tool, not for a large file's data.
fn load_in_300_mb(name: &str, file: &Path) -> std::process::Command {
    let mut c = std::process::Command::new("bash");
    c.arg("-c")
        .arg(r#"ulimit -v 300000 && exec "$0" load "$1" "$2""#)
        .arg(bin())
        .arg(name)
        .arg(file);
    c
}

/// A file larger than the memory `load` may take (`ulimit -v`) is a typed error naming the
/// stream and the limit, before anything is created: the data's buffer was allocated by
/// growing a `Vec`, which aborted the process ("memory allocation of … failed", exit 134).
#[test]
fn a_file_larger_than_the_memory_limit_is_an_error_naming_the_limit_not_an_abort() {
    let dir = std::env::temp_dir().join(unique_name("hcli-oom"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("big.npy");
    // 512 MiB of float32 zeros, a sparse file: no disk is used.
    let elements: u64 = 1 << 27;
    std::fs::write(
        &file,
        npy((1, 0), &dict("<f4", false, &format!("({elements},)")), &[]),
    )
    .unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(f.metadata().unwrap().len() + elements * 4)
        .unwrap();
    let name = unique_name("hcli-oom");
    let _c = Cleanup::new([&name]);
    let out = load_in_300_mb(&name, &file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1)
            && stderr.contains(&format!("stream '{name}'"))
            && stderr.contains("allocating a frame buffer")
            && stderr.contains("raise `ulimit -v`"),
        "{:?}: {stderr}",
        out.status
    );
    assert!(matches!(
        shmstream::stat(&name),
        Err(Error::NotFound { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `load` from a pipe (`/dev/stdin`), whose length is known only once it is read: a whole
/// `.npy` loads; one cut short that declares 4 GiB of data takes no more memory than it
/// holds (a 300 MB `ulimit -v`) and is said to be cut short, not out of memory.
#[test]
fn a_npy_from_a_pipe_loads_and_one_cut_short_takes_only_what_it_holds() {
    use std::io::Write;
    use std::process::Stdio;
    let load = |name: &str, bytes: Vec<u8>| {
        let mut child = load_in_300_mb(name, Path::new("/dev/stdin"))
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The tool may stop reading early (a refusal): a broken pipe is no failure here.
        let _ = child.stdin.take().unwrap().write_all(&bytes);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let whole = unique_name("hcli-pipe");
    let cut = unique_name("hcli-pipe-cut");
    let _c = Cleanup::new([&whole, &cut]);
    let data: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let (code, stderr) = load(&whole, npy((1, 0), &dict("<f4", false, "(3, 4)"), &data));
    assert_eq!(code, Some(0), "{stderr}");
    let got = Stream::open_readonly(&whole)
        .unwrap()
        .read::<f32>()
        .unwrap();
    assert_eq!(got.shape(), [3, 4]);
    assert_eq!(
        got.iter().copied().collect::<Vec<_>>(),
        (0..12).map(|i| i as f32).collect::<Vec<_>>()
    );
    let (code, stderr) = load(
        &cut,
        npy((1, 0), &dict("<f4", false, "(1073741824,)"), &data),
    );
    assert!(
        code == Some(1) && stderr.contains("is cut short") && !stderr.contains("memory"),
        "{code:?}: {stderr}"
    );
    assert!(matches!(shmstream::stat(&cut), Err(Error::NotFound { .. })));
}

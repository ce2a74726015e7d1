//! The `shmstream` command-line tool, run as a real binary (assert_cmd): every subcommand,
//! every error path, and interop with Python pyshmem 1.4.0.
//!
//! `purge` is exercised with `--prefix` (the tests' own names), so a test never removes
//! streams of other tests or programs running on the same machine.

#[path = "../../tests/common/mod.rs"]
mod common;
mod preload;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use assert_cmd::Command;
use common::{Cleanup, Proc, unique_name};
use predicates::prelude::*;
use preload::{FAILING_SYNC, SYNC_LOADED, preload_lib};
use shmstream::{Dtype, Stream, StreamOptions};

const JSON_KEYS: [&str; 19] = [
    "name",
    "shape",
    "dtype",
    "size",
    "count",
    "write_sequence",
    "write_time",
    "frame_id",
    "creator_pid",
    "creator_alive",
    "notify",
    "gpu_enabled",
    "gpu_device",
    "cpu_mirror",
    "instance_id",
    "history",
    "gpu_publisher_pid",
    "gpu_consumer_pid",
    "lock_owner_pid",
];

fn cli() -> Command {
    assert_cmd::cargo::cargo_bin_cmd!("shmstream")
}

fn bin() -> &'static Path {
    assert_cmd::cargo::cargo_bin!("shmstream")
}

/// A scratch directory for .npy files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(unique_name(&format!("cli-{tag}")));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.assert().success().get_output().stdout.clone();
    String::from_utf8(out).unwrap()
}

fn stat_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&stdout_of(cli().args(["stat", name, "--json"]))).unwrap()
}

/// Asserts an object has exactly the documented keys (the text keeps them in the
/// documented order; serde_json's map sorts them, so the order is checked on `text`).
fn assert_keys(obj: &serde_json::Value, text: &str) {
    let mut keys: Vec<&str> = obj
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut want = JSON_KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "exactly the documented keys");
    let pos: Vec<usize> = JSON_KEYS
        .iter()
        .map(|k| text.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]),
        "keys in the documented order:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------
// create / stat / list
// ---------------------------------------------------------------------------------------

#[test]
fn create_then_stat_json_has_exactly_the_documented_keys() {
    let name = unique_name("cli-create");
    let _c = Cleanup::new([&name]);
    cli()
        .args([
            "create", &name, "--shape", "480,640", "--dtype", "float32", "--notify",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("created '{name}'")));

    let text = stdout_of(cli().args(["stat", &name, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_keys(&v, &text);
    assert_eq!(v["name"], name.as_str());
    assert_eq!(v["shape"], serde_json::json!([480, 640]));
    assert_eq!(v["dtype"], "float32");
    assert_eq!(v["size"], 480 * 640 * 4);
    assert_eq!(v["count"], 0);
    assert_eq!(v["notify"], true);
    assert_eq!(v["gpu_enabled"], false);
    assert_eq!(v["gpu_device"], serde_json::Value::Null);
    assert_eq!(v["cpu_mirror"], true);
    // The creator was the (finished) CLI process.
    assert_eq!(v["creator_alive"], false);
    assert_eq!(v["instance_id"].as_str().unwrap().len(), 32);

    // The library sees the same stream.
    let s = Stream::open_readonly(&name).unwrap();
    assert_eq!(s.shape(), &[480, 640]);
    assert_eq!(s.dtype(), Dtype::F32);
    assert!(s.notify());
    assert_eq!(v["instance_id"], s.instance_id().as_str());

    // Human-readable stat.
    cli().args(["stat", &name]).assert().success().stdout(
        predicate::str::contains("dtype:")
            .and(predicate::str::contains("float32"))
            .and(predicate::str::contains("[480, 640]")),
    );
}

#[test]
fn list_shows_rows_and_json_matches_stat() {
    let name = unique_name("cli-list");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[2, 3])
        .dtype(Dtype::U16)
        .create()
        .unwrap();
    s.write_slice(&[1u16, 2, 3, 4, 5, 6]).unwrap();

    let out = stdout_of(cli().arg("list"));
    let header = out.lines().next().unwrap();
    for col in [
        "NAME", "SHAPE", "DTYPE", "COUNT", "AGE", "CREATOR", "NOTIFY", "GPU", "HISTORY",
    ] {
        assert!(header.contains(col), "header {header:?} lacks {col}");
    }
    assert!(
        !header.contains("WRITER"),
        "the creator, not a writer: {header:?}"
    );
    let row = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .unwrap_or_else(|| panic!("{name} not listed:\n{out}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[1..4], &["2x3", "uint16", "1"], "{row}");
    assert!(
        row.contains(&format!("{} alive", std::process::id())),
        "creator pid and liveness: {row}"
    );

    let text = stdout_of(cli().args(["list", "--json"]));
    let all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mine = all
        .iter()
        .find(|v| v["name"] == name.as_str())
        .expect("listed in --json");
    let at = text.find(&format!("\"name\": \"{name}\"")).unwrap();
    assert_keys(mine, &text[text[..at].rfind('{').unwrap()..]);
    let single = stat_json(&name);
    for k in [
        "name",
        "shape",
        "dtype",
        "size",
        "count",
        "write_sequence",
        "frame_id",
        "creator_pid",
        "creator_alive",
        "instance_id",
    ] {
        assert_eq!(mine[k], single[k], "key {k}");
    }
    assert_eq!(mine["creator_alive"], true);
}

/// Review item: `list` pads its name column, so `cam0 ` (a trailing space) showed as `cam0`;
/// a name that starts or ends with a space is quoted, and one with a no-break space escaped.
#[test]
fn list_shows_names_that_differ_by_a_space_differently() {
    let name = unique_name("cli-list-space");
    let spaced = format!("{name} ");
    let nbsp = format!("{name}\u{a0}");
    let _c = Cleanup::new([&name, &spaced, &nbsp]);
    let streams: Vec<_> = [&name, &spaced, &nbsp]
        .iter()
        .map(|n| Stream::create(n, &[4], Dtype::U8).unwrap())
        .collect();
    let out = stdout_of(cli().arg("list"));
    let rows: Vec<&str> = out.lines().filter(|l| l.contains(&name)).collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows[0] != rows[1] && rows[1] != rows[2] && rows[0] != rows[2],
        "rows alike:\n{out}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with(&format!("{name}  "))),
        "{out}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with(&format!("\"{spaced}\""))),
        "{out}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with(&format!("{name}\\u{{a0}}"))),
        "{out}"
    );
    drop(streams);
}

/// A GPU stream whose `_gpu` segment cannot be read (here: missing, under a planted `_meta`
/// with the GPU flag; no GPU needed) has an unknown publisher and consumer, not the host and
/// none; a CPU stream's publisher is the host.
#[test]
fn stat_of_a_gpu_stream_without_its_gpu_segment_shows_an_unknown_publisher() {
    let (gpu, cpu) = (unique_name("cli-stat-gpu"), unique_name("cli-stat-cpu"));
    let _c = Cleanup::new([&gpu, &cpu]);
    let meta = shmstream::format::encode_new(&shmstream::format::NewHeader {
        name: &gpu,
        dtype: Dtype::F32,
        shape: &[4],
        flags: shmstream::format::FLAG_GPU,
        device_index: 0,
        creator_pid: i64::from(std::process::id()),
        instance_id: [1; 16],
    });
    std::fs::write(format!("/dev/shm/{}", shmstream::name::meta_id(&gpu)), meta).unwrap();
    let out = stdout_of(cli().args(["stat", &gpu]));
    assert!(out.contains("gpu_enabled:    true"), "{out}");
    assert!(
        out.contains("published_by:   unknown (its _gpu segment is unreadable or pyshmem's)\n")
            && out.contains(
                "gpu_consumer:   unknown (its _gpu segment is unreadable or pyshmem's)\n"
            ),
        "{out}"
    );
    Stream::create(&cpu, &[4], Dtype::F32).unwrap();
    let out = stdout_of(cli().args(["stat", &cpu]));
    assert!(out.contains("published_by:   host\n"), "{out}");
}

#[test]
fn create_errors_exit_1_with_a_message() {
    let name = unique_name("cli-create-err");
    let _c = Cleanup::new([&name]);
    cli()
        .args(["create", &name, "--shape", "4", "--dtype", "float128"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("unknown dtype 'float128'")
                .and(predicate::str::contains("float32")),
        );
    cli()
        .args(["create", &name, "--shape", "4,0"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not a shape"));
    cli()
        .args(["create", &name, "--shape", "4", "--dtype", "int16"])
        .assert()
        .success();
    cli()
        .args(["create", &name, "--shape", "4"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("already exists")
                .and(predicate::str::contains(format!(
                    "`shmstream unlink {name}`"
                )))
                .and(predicate::str::contains("`shmstream load`"))
                .and(predicate::str::contains("Stream::open").not()),
        );
    cli().assert().code(1); // no subcommand: usage on stderr, exit 1
    cli()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("purge"));
}

/// `--dtype` takes numpy's names only: numpy (and pyshmem) read `u8`, `i8` and `f16` as
/// uint64, int64 and float128, so the short names are refused and create nothing.
#[test]
fn create_refuses_dtype_names_numpy_reads_otherwise() {
    let name = unique_name("cli-create-ambiguous");
    let _c = Cleanup::new([&name]);
    for (short, theirs, ours) in [
        ("u8", "uint64", "uint8"),
        ("i8", "int64", "int8"),
        ("f16", "float128", "float16"),
    ] {
        cli()
            .args(["create", &name, "--shape", "4", "--dtype", short])
            .assert()
            .code(1)
            .stderr(
                predicate::str::contains(format!("dtype '{short}' is ambiguous"))
                    .and(predicate::str::contains(format!("read it as {theirs}")))
                    .and(predicate::str::contains(format!("write \"{ours}\""))),
            );
        assert!(
            matches!(
                shmstream::stat(&name),
                Err(shmstream::Error::NotFound { .. })
            ),
            "--dtype {short} created a stream"
        );
    }
}

/// A fresh `[2]` uint8 stream named after `tag`, `values` written once (count 1), and the
/// guard that unlinks it: what the `dump` tests dump.
fn u8_pair_stream(tag: &str, values: [u8; 2]) -> (String, Cleanup) {
    let name = unique_name(tag);
    let cleanup = Cleanup::new([&name]);
    Stream::create(&name, &[2], Dtype::U8)
        .unwrap()
        .write_slice(&values)
        .unwrap();
    (name, cleanup)
}

#[test]
fn stat_and_dump_of_a_missing_stream_fail() {
    let name = unique_name("cli-missing");
    cli()
        .args(["stat", &name])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "stream '{name}' not found"
        )));
    cli()
        .args(["stat", &name, "--json"])
        .assert()
        .code(1)
        .stdout(predicate::str::is_empty());
    cli()
        .args(["dump", &name])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not found"));
    cli()
        .args(["watch", &name, "--duration", "0.1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not found"));
}

// ---------------------------------------------------------------------------------------
// load / dump
// ---------------------------------------------------------------------------------------

/// For every dtype: library write → `dump -o` → `load` into a new stream (created with the
/// file's shape and dtype) → library read gives the same values.
#[test]
fn dump_then_load_round_trips_every_dtype() {
    use shmstream::{Complex32, Complex64, f16};
    let dir = TempDir::new("roundtrip");
    fn case<T: shmstream::Element + PartialEq + std::fmt::Debug>(dir: &TempDir, data: &[T]) {
        let src = unique_name(&format!("cli-rt-src-{}", T::DTYPE));
        let dst = unique_name(&format!("cli-rt-dst-{}", T::DTYPE));
        let _c = Cleanup::new([&src, &dst]);
        let shape = [2, data.len() / 2];
        let s = Stream::create(&src, &shape, T::DTYPE).unwrap();
        s.write_slice(data).unwrap();
        let file = dir.file(&format!("{}.npy", T::DTYPE));
        cli()
            .args(["dump", &src, "-o"])
            .arg(&file)
            .assert()
            .success()
            .stdout(predicate::str::contains("count 1"));
        cli()
            .args(["load", &dst])
            .arg(&file)
            .assert()
            .success()
            .stdout(predicate::str::contains("(created)"));
        let d = Stream::open_readonly(&dst).unwrap();
        assert_eq!(d.dtype(), T::DTYPE);
        assert_eq!(d.shape(), &shape);
        assert_eq!(
            d.read::<T>().unwrap().as_slice().unwrap(),
            data,
            "{}",
            T::DTYPE
        );
    }
    case(&dir, &[-1i8, 2, -3, 4]);
    case(&dir, &[-1i16, 2, i16::MIN, i16::MAX]);
    case(&dir, &[-1i32, 2, i32::MIN, i32::MAX]);
    case(&dir, &[-1i64, 2, i64::MIN, i64::MAX]);
    case(&dir, &[1u8, 2, 0, 255]);
    case(&dir, &[1u16, 2, 0, u16::MAX]);
    case(&dir, &[1u32, 2, 0, u32::MAX]);
    case(&dir, &[1u64, 2, 0, u64::MAX]);
    case(
        &dir,
        &[
            f16::from_f32(1.5),
            f16::from_f32(-2.0),
            f16::MAX,
            f16::from_f32(0.0),
        ],
    );
    case(&dir, &[1.5f32, -2.25, f32::MAX, 1e-30]);
    case(&dir, &[1.5f64, -2.25, f64::MAX, 1e-300]);
    case(&dir, &[true, false, false, true]);
    case(
        &dir,
        &[
            Complex32::new(1.0, -2.0),
            Complex32::new(0.5, 0.25),
            Complex32::new(0.0, 0.0),
            Complex32::new(-3.0, 4.0),
        ],
    );
    case(
        &dir,
        &[
            Complex64::new(1.0, -2.0),
            Complex64::new(0.5, 0.25),
            Complex64::new(0.0, 0.0),
            Complex64::new(-3.0, 4.0),
        ],
    );
}

#[test]
fn load_into_an_existing_stream_writes_a_new_frame_with_its_frame_id() {
    let dir = TempDir::new("load-existing");
    let name = unique_name("cli-load");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[3])
        .dtype(Dtype::F64)
        .create()
        .unwrap();
    s.write_slice(&[1.0f64, 2.0, 3.0]).unwrap();
    let file = dir.file("x.npy");
    cli()
        .args(["dump", &name, "-o"])
        .arg(&file)
        .assert()
        .success();
    s.write_slice(&[0.0f64; 3]).unwrap();
    cli()
        .args(["load", &name])
        .arg(&file)
        .args(["--frame-id", "77"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("count 3").and(predicate::str::contains("(created)").not()),
        );
    let p = s.read_publication::<f64>().unwrap();
    assert_eq!(p.payload.as_slice().unwrap(), &[1.0, 2.0, 3.0]);
    assert_eq!(p.info.frame_id, 77);
    assert_eq!(p.info.count, 3);
}

/// `load` stopped by SIGTERM while it copies the frame (frozen there, the stream's write
/// sequence odd) finishes the frame first, then dies of the signal: the stream stays
/// readable, holding the new frame. Killed mid-copy, it left the stream unreadable
/// ("incomplete write") until the next write.
#[test]
fn a_load_stopped_by_a_signal_mid_write_finishes_the_frame() {
    use std::os::unix::process::ExitStatusExt;
    const LEN: usize = 128 << 20; // a copy of tens of milliseconds
    let dir = TempDir::new("loadstop");
    let name = unique_name("cli-loadstop");
    let _c = Cleanup::new([&name]);
    drop(Stream::create(&name, &[LEN], Dtype::Bool).unwrap());
    let file = dir.file("f.npy");
    let shape = format!("({LEN},)");
    std::fs::write(&file, npy_file("|b1", false, &shape, &vec![1u8; LEN])).unwrap();
    let child = common::default_stop_signals(&mut StdCommand::new(bin()))
        .args(["load", &name])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reaped(Some(child));
    let pid = child.id() as i32;
    let writing = || shmstream::stat(&name).unwrap().write_sequence % 2 != 0;
    let deadline = std::time::Instant::now() + common::LONG;
    while !writing() {
        assert!(
            std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "load was never seen writing"
        );
    }
    common::freeze(pid);
    assert!(writing(), "the write ended before the stop");
    // SAFETY: signalling our own (stopped) child: SIGTERM is taken once it runs on.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    common::thaw(pid);
    let deadline = std::time::Instant::now() + common::LONG;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "load did not exit");
        std::thread::yield_now();
    };
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    cli().args(["dump", &name]).assert().success().stdout(
        predicate::str::contains("count:  1").and(predicate::str::contains("min:    true")),
    );
}

#[test]
fn load_mismatch_shows_both_shapes_and_dtypes() {
    let dir = TempDir::new("mismatch");
    let (a, b) = (unique_name("cli-mm-a"), unique_name("cli-mm-b"));
    let _c = Cleanup::new([&a, &b]);
    Stream::create(&a, &[3, 2], Dtype::F64)
        .unwrap()
        .write_slice(&[0.0f64; 6])
        .unwrap();
    Stream::create(&b, &[2, 3], Dtype::F32).unwrap();
    let file = dir.file("a.npy");
    cli().args(["dump", &a, "-o"]).arg(&file).assert().success();
    cli().args(["load", &b]).arg(&file).assert().code(1).stderr(
        predicate::str::contains("mismatch")
            .and(predicate::str::contains("float32 [2, 3]"))
            .and(predicate::str::contains("float64 [3, 2]"))
            .and(predicate::str::contains(format!(
                "load it under another name, or remove it first with `shmstream unlink {b}`"
            ))),
    );
    // Same shape, other dtype.
    let c = unique_name("cli-mm-c");
    let _c2 = Cleanup::new([&c]);
    Stream::create(&c, &[3, 2], Dtype::I64).unwrap();
    cli().args(["load", &c]).arg(&file).assert().code(1).stderr(
        predicate::str::contains("int64 [3, 2]").and(predicate::str::contains("float64 [3, 2]")),
    );
    // The streams were not written.
    assert_eq!(Stream::open_readonly(&b).unwrap().count(), 0);
    assert_eq!(Stream::open_readonly(&c).unwrap().count(), 0);
}

/// A `.npy` file (version 1.0) of `data` under a header of `descr`, `fortran` order and
/// `shape` (a Python tuple), padded with spaces and a newline to a multiple of 64 bytes.
fn npy_file(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let order = if fortran { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

/// `load` of hand-built files numpy writes but `dump` never does: Fortran order (the
/// stream holds the array, in C order) and big-endian data (the stream holds native values).
#[test]
fn load_reads_fortran_order_and_big_endian_files() {
    let dir = TempDir::new("load-layouts");
    let names = ["fortran", "be-i4", "be-f8"].map(|t| (t, unique_name(&format!("cli-load-{t}"))));
    let _c = Cleanup::new(names.iter().map(|(_, n)| n));
    let load = |tag: &str, bytes: Vec<u8>| -> Stream {
        let name = &names.iter().find(|(t, _)| *t == tag).unwrap().1;
        let file = dir.file(&format!("{tag}.npy"));
        std::fs::write(&file, bytes).unwrap();
        cli()
            .args(["load", name])
            .arg(&file)
            .assert()
            .success()
            .stdout(predicate::str::contains("(created)"));
        Stream::open_readonly(name).unwrap()
    };
    // (2, 3) in Fortran order holding 0..6: column by column, [[0, 2, 4], [1, 3, 5]].
    let data: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
    let s = load("fortran", npy_file("<f4", true, "(2, 3)", &data));
    assert_eq!((s.shape(), s.dtype()), (&[2usize, 3][..], Dtype::F32));
    assert_eq!(
        s.read::<f32>().unwrap().as_slice().unwrap(),
        &[0.0, 2.0, 4.0, 1.0, 3.0, 5.0]
    );
    let ints = [1i32, -2, i32::MIN, i32::MAX];
    let data: Vec<u8> = ints.iter().flat_map(|v| v.to_be_bytes()).collect();
    let s = load("be-i4", npy_file(">i4", false, "(4,)", &data));
    assert_eq!((s.shape(), s.dtype()), (&[4usize][..], Dtype::I32));
    assert_eq!(s.read::<i32>().unwrap().as_slice().unwrap(), &ints);
    let floats = [1.5f64, -2.25, f64::MAX, 1e-300];
    let data: Vec<u8> = floats.iter().flat_map(|v| v.to_be_bytes()).collect();
    let s = load("be-f8", npy_file(">f8", false, "(2, 2)", &data));
    assert_eq!((s.shape(), s.dtype()), (&[2usize, 2][..], Dtype::F64));
    assert_eq!(s.read::<f64>().unwrap().as_slice().unwrap(), &floats);
}

/// The remedy for a mismatch gives no command to copy for a name the message shows escaped
/// (`a\b` as `a\\b`): pasted, it would name another stream.
#[test]
fn a_load_mismatch_gives_no_command_naming_an_escaped_stream() {
    let dir = TempDir::new("mismatch-bs");
    let name = format!("{}\\b", unique_name("cli-mm-bs"));
    let _c = Cleanup::new([&name]);
    Stream::create(&name, &[3], Dtype::U8).unwrap();
    let file = dir.file("two.npy");
    std::fs::write(&file, npy_file("|u1", false, "(2,)", &[1, 2])).unwrap();
    let o = cli().args(["load", &name]).arg(&file).assert().code(1);
    let err = String::from_utf8_lossy(&o.get_output().stderr).into_owned();
    let shown = name.replace('\\', "\\\\");
    assert!(
        err.contains(&format!("stream '{shown}' holds uint8 [3]")),
        "{err}"
    );
    assert!(
        !err.contains("`shmstream unlink ") && !err.contains(&format!("unlink '{shown}'")),
        "a command naming the escaped name: {err}"
    );
    assert!(
        err.contains("load it under another name, or remove it first with `shmstream unlink` given the name itself (it has characters a terminal shows escaped"),
        "{err}"
    );
    assert_eq!(Stream::open_readonly(&name).unwrap().count(), 0);
}

/// A file for a stream of another shape is refused by its header, before its data is read:
/// one whose header says 2^40 elements (its data two bytes) gets the mismatch, not a read
/// error after a terabyte was asked for.
#[test]
fn a_load_mismatch_is_found_before_the_data_is_read() {
    let dir = TempDir::new("mismatch-huge");
    let name = unique_name("cli-mm-huge");
    let _c = Cleanup::new([&name]);
    Stream::create(&name, &[3], Dtype::U8).unwrap();
    let file = dir.file("huge.npy");
    let shape = format!("({},)", 1u64 << 40);
    std::fs::write(&file, npy_file("|u1", false, &shape, &[1, 2])).unwrap();
    let out = StdCommand::new(bin())
        .args(["load", &name])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{:?}: {err}", out.status);
    assert!(
        err.contains(&format!(
            "shape/dtype mismatch: stream '{name}' holds uint8 [3], but {} holds uint8 [{}]",
            file.display(),
            1u64 << 40
        )),
        "{err}"
    );
    assert_eq!(Stream::open_readonly(&name).unwrap().count(), 0);
}

/// A datetime dtype (`'<M8[ns]'`: brackets in its string) is refused for its dtype, not
/// as a structured one's header.
#[test]
fn a_datetime_npy_is_refused_for_its_dtype() {
    let dir = TempDir::new("datetime");
    let name = unique_name("cli-datetime");
    let _c = Cleanup::new([&name]);
    let file = dir.file("dt.npy");
    std::fs::write(&file, npy_file("<M8[ns]", false, "(3,)", &[0; 24])).unwrap();
    cli()
        .args(["load", &name])
        .arg(&file)
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains(format!(
                "{}: unsupported .npy dtype '<M8[ns]' (streams hold int8,",
                file.display()
            ))
            .and(predicate::str::contains("brackets").not()),
        );
    assert!(shmstream::stat(&name).is_err());
}

/// The command a remedy gives for a name with a `'` in it, copied from stderr as shown and
/// run by a shell, removes that stream (its quoting had a backslash, which the message
/// shows doubled: the shell refused the command).
#[test]
fn a_remedy_command_for_a_name_with_a_quote_runs_as_shown() {
    let dir = TempDir::new("mismatch-quote");
    let name = format!("{} rev q's 1", unique_name("cli-mm-q"));
    let _c = Cleanup::new([&name]);
    Stream::create(&name, &[3], Dtype::U8).unwrap();
    let file = dir.file("two.npy");
    std::fs::write(&file, npy_file("|u1", false, "(2,)", &[1, 2])).unwrap();
    let o = cli().args(["load", &name]).arg(&file).assert().code(1);
    let err = String::from_utf8_lossy(&o.get_output().stderr).into_owned();
    let start = err.find("`shmstream unlink ").expect(&err) + 1;
    let len = err[start..].find('`').expect(&err);
    let command = &err[start..start + len];
    let bin = bin().to_str().unwrap();
    assert!(!bin.contains('\''), "{bin}");
    let command = command.replacen("shmstream", &format!("'{bin}'"), 1);
    let out = StdCommand::new("sh")
        .args(["-c", &command])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{command}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let left = shmstream::stat(&name);
    assert!(
        matches!(left, Err(shmstream::Error::NotFound { .. })),
        "{command} left the stream: {left:?}"
    );
}

/// The library's remedies (`stat` of an unfinished creation, `create` over an abandoned
/// one) give no command naming the stream as the message shows it escaped (`a\b` as
/// `a\\b`): pasted, it would name another stream.
#[test]
fn library_remedies_give_no_command_naming_an_escaped_stream() {
    let name = format!("{}\\b", unique_name("cli-aband-bs"));
    let _c = Cleanup::new([&name]);
    // An abandoned creation: a payload without its `_meta`.
    let payload = Foreign(Path::new("/dev/shm").join(shmstream::name::segment_id(&name)));
    std::fs::write(&payload.0, [0u8; 4]).unwrap();
    let shown = name.replace('\\', "\\\\");
    for (args, what) in [
        (vec!["stat", &name], "its creation is unfinished"),
        (
            vec!["create", &name, "--shape", "4", "--dtype", "uint8"],
            "abandoned creation",
        ),
    ] {
        let o = cli().args(&args).assert().code(1);
        let err = String::from_utf8_lossy(&o.get_output().stderr).into_owned();
        assert!(err.contains(what), "{args:?}: {err}");
        assert!(
            !err.contains("`shmstream unlink ") && !err.contains(&format!("unlink '{shown}'")),
            "{args:?}: a command naming the escaped name: {err}"
        );
        assert!(
            err.contains("`shmstream unlink` given the name itself (it has characters a terminal shows escaped"),
            "{args:?}: {err}"
        );
    }
    assert!(payload.0.exists(), "the abandoned creation was touched");
}

/// The names in `dir`, sorted.
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A uint8 stream of 64 KiB (64 × 1024, each byte 7), more than a file-size limit of 4 KiB
/// takes as a `.npy`.
fn stream_of_64_kib(tag: &str) -> (String, Cleanup) {
    let name = unique_name(tag);
    let cleanup = Cleanup::new([&name]);
    Stream::create(&name, &[64, 1024], Dtype::U8)
        .unwrap()
        .write_slice(&[7u8; 64 * 1024])
        .unwrap();
    (name, cleanup)
}

/// `dump -o` stopped by a full disk (here a file size limit, which the binary meets as
/// EFBIG: it ignores SIGXFSZ itself) leaves an existing file with its old bytes, a new one
/// unmade, and no temporary file: the file was truncated, then removed.
#[test]
fn a_dump_the_disk_refuses_leaves_an_existing_file_as_it_was() {
    let dir = TempDir::new("dumpfull");
    let (name, _c) = stream_of_64_kib("cli-dumpfull");
    let file = dir.file("frame.npy");
    std::fs::write(&file, b"earlier").unwrap();
    for target in [file.clone(), dir.file("fresh.npy")] {
        let mut c = StdCommand::new(bin());
        c.args(["dump", &name, "-o"]).arg(&target);
        let o = common::limit_file_size(&mut c, 4096).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{:?}: {err}", o.status);
        assert!(
            err.contains(&format!("dumping '{name}' to {}", target.display())),
            "{err}"
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"earlier");
    assert_eq!(
        names_in(&dir.0),
        ["frame.npy"],
        "a new or temporary file is left"
    );
}

/// A `dump -o -` whose stdout, a file, refuses the bytes past its file-size limit calls
/// what the file took a cut-short `.npy`, to be discarded.
#[test]
fn a_dump_to_dash_cut_short_by_its_file_says_to_discard_it() {
    let dir = TempDir::new("dumpdashcut");
    let (name, _c) = stream_of_64_kib("cli-dump-dash-cut");
    let out = std::fs::File::create(dir.file("out")).unwrap();
    let mut c = StdCommand::new(bin());
    c.args(["dump", &name, "-o", "-"]).stdout(out);
    let o = common::limit_file_size(&mut c, 4096).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{:?}: {err}", o.status);
    assert!(
        err.starts_with(&format!(
            "shmstream: error: dumping '{name}' to standard output: "
        )) && err.ends_with("; what it took is a cut-short .npy: discard it\n"),
        "{err}"
    );
    assert_eq!(std::fs::metadata(dir.file("out")).unwrap().len(), 4096);
}

/// `dump -o` to a file whose bytes the disk refuses only when they are put on it (NFS
/// ENOSPC or quota, a writeback EIO: here `fdatasync` fails, through `LD_PRELOAD`) fails
/// and leaves no file: the whole .npy was written to the page cache, and would read as a
/// whole dump until the disk dropped it; an existing file keeps its old bytes. Skipped (said
/// on stderr) without a C compiler.
#[test]
fn a_dump_the_disk_refuses_when_it_is_synced_fails_and_leaves_the_file_alone() {
    let dir = TempDir::new("dumpsync");
    let Some(lib) = preload_lib(&dir.0, "failing_sync", FAILING_SYNC) else {
        return;
    };
    let (name, _c) = u8_pair_stream("cli-dumpsync", [1, 2]);
    let file = dir.file("frame.npy");
    std::fs::write(&file, b"earlier").unwrap();
    let o = StdCommand::new(bin())
        .args(["dump", &name, "-o"])
        .arg(&file)
        .env("LD_PRELOAD", &lib)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(SYNC_LOADED), "not preloaded: {err}");
    assert_eq!(o.status.code(), Some(1), "{:?}: {err}", o.status);
    let eio = std::io::Error::from_raw_os_error(libc::EIO).to_string();
    assert!(
        err.contains(&format!(
            "dumping '{name}' to {}: putting it on the disk: {eio}",
            file.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"earlier");
    let mut left = names_in(&dir.0);
    left.retain(|n| n.ends_with(".partial"));
    assert!(left.is_empty(), "a temporary file is left: {left:?}");
}

/// `dump -o` stopped by SIGTERM mid-write (frozen there, so its temporary file holds part
/// of the data) exits 1, leaves the existing file with its old bytes and no temporary file.
#[test]
fn a_dump_stopped_by_a_signal_leaves_the_existing_file_alone() {
    use std::io::Read;
    const LEN: usize = 32 << 20; // a few seconds of a debug build's write
    let dir = TempDir::new("dumpstop");
    let name = unique_name("cli-dumpstop");
    let _c = Cleanup::new([&name]);
    Stream::create(&name, &[LEN], Dtype::U8)
        .unwrap()
        .write_slice(&vec![7u8; LEN])
        .unwrap();
    let file = dir.file("frame.npy");
    std::fs::write(&file, b"earlier").unwrap();
    let child = common::default_stop_signals(&mut StdCommand::new(bin()))
        .args(["dump", &name, "-o"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaped(Some(child));
    let pid = child.id() as i32;
    // The size of the temporary file the dump writes beside `file`.
    let size = || {
        std::fs::read_dir(&dir.0)
            .unwrap()
            .filter_map(|e| e.ok()?.metadata().ok())
            .filter(|m| m.len() != b"earlier".len() as u64)
            .map(|m| m.len())
            .max()
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + common::LONG;
    while size() == 0 {
        assert!(
            std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "dump never started writing"
        );
        std::thread::yield_now();
    }
    common::freeze(pid);
    assert!(size() < LEN as u64, "the write finished before the stop");
    // SAFETY: signalling our own (stopped) child: SIGTERM is taken once it runs on.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    common::thaw(pid);
    let mut stderr = child.stderr.take().unwrap();
    let code = exit_code_within(child.take(), common::LONG);
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "dumping '{name}' to {}: stopped by a signal",
            file.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"earlier");
    assert_eq!(names_in(&dir.0), ["frame.npy"], "a temporary file is left");
}

/// Asserts `bytes` is exactly one version 1 `.npy` of a `uint8 [2]` holding `data`: the
/// header numpy reads, then the data, and nothing after it.
fn assert_exact_npy(bytes: &[u8], data: [u8; 2]) {
    assert!(bytes.starts_with(b"\x93NUMPY\x01\x00"), "{bytes:?}");
    let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let header = String::from_utf8_lossy(&bytes[10..10 + header_len]);
    assert!(
        header.contains("'descr': '|u1'") && header.contains("'shape': (2,"),
        "{header}"
    );
    assert_eq!(
        &bytes[10 + header_len..],
        data,
        "exactly the data after the header"
    );
}

/// `-o` onto the tool's own stdout (`/dev/stdout` on a pipe, or `-o F > F`) leaves only
/// the .npy there: the `dumped …` line goes to stderr, or nowhere when stderr is the same
/// file (`2>&1`). To an ordinary file, the line is on stdout.
#[test]
fn a_dump_to_stdout_keeps_its_dumped_line_out_of_the_npy() {
    let (name, _c) = u8_pair_stream("cli-dumpstdout", [5, 6]);
    let dumped = format!("dumped '{name}' (uint8 [2], count 1) to ");

    // `-o /dev/stdout`, stdout a pipe.
    let out = cli()
        .args(["dump", &name, "-o", "/dev/stdout"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_exact_npy(&out.stdout, [5, 6]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err, format!("{dumped}/dev/stdout\n"));

    // `-o F > F`, then `-o F > F 2>&1`: the shell's `>` truncates, without O_APPEND.
    let dir = TempDir::new("dumpstdout");
    let file = dir.file("frame.npy");
    for stderr_too in [false, true] {
        let redirect = std::fs::File::create(&file).unwrap();
        let mut cmd = StdCommand::new(bin());
        cmd.args(["dump", &name, "-o"]).arg(&file);
        if stderr_too {
            cmd.stderr(redirect.try_clone().unwrap());
        }
        let out = cmd.stdout(redirect).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert_exact_npy(&std::fs::read(&file).unwrap(), [5, 6]);
        if !stderr_too {
            assert_eq!(err, format!("{dumped}{}\n", file.display()));
        }
    }

    // An ordinary file: the line on stdout, nothing on stderr.
    std::fs::remove_file(&file).unwrap();
    cli()
        .args(["dump", &name, "-o"])
        .arg(&file)
        .assert()
        .success()
        .stdout(format!("{dumped}{}\n", file.display()))
        .stderr("");
    assert_exact_npy(&std::fs::read(&file).unwrap(), [5, 6]);
}

#[test]
fn load_rejects_missing_bad_and_unsupported_files() {
    let dir = TempDir::new("badfile");
    let name = unique_name("cli-badfile");
    let _c = Cleanup::new([&name]);
    cli()
        .args(["load", &name])
        .arg(dir.file("nope.npy"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot open"));
    let junk = dir.file("junk.npy");
    std::fs::write(&junk, b"not an npy file at all").unwrap();
    cli()
        .args(["load", &name])
        .arg(&junk)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not a readable .npy"));
    // A float128 .npy (valid file, dtype no stream can hold).
    let f16le = dir.file("f128.npy");
    let header = "{'descr': '<f16', 'fortran_order': False, 'shape': (2,), }";
    let mut h = header.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
    bytes.extend_from_slice(h.as_bytes());
    bytes.extend_from_slice(&[0u8; 32]);
    std::fs::write(&f16le, bytes).unwrap();
    cli()
        .args(["load", &name])
        .arg(&f16le)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("unsupported .npy dtype"));
    // None of that created the stream.
    assert!(shmstream::stat(&name).is_err());
}

/// `load` reads its file once, so it takes a `.npy` from a pipe (`load NAME /dev/stdin <
/// x.npy`, or a process substitution `<(...)`).
#[test]
fn load_reads_a_npy_file_from_a_pipe() {
    use npyz::WriterBuilder;
    let name = unique_name("cli-load-pipe");
    let _c = Cleanup::new([&name]);
    let data = [1.5f64, -2.0, 3.25, 4.0, 5.5, -6.0];
    let mut npy = std::io::Cursor::new(Vec::new());
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[2, 3])
        .writer(&mut npy)
        .begin_nd()
        .unwrap();
    w.extend(data).unwrap();
    w.finish().unwrap();
    let mut child = StdCommand::new(bin())
        .args(["load", &name, "/dev/stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A tool that stops reading early closes the pipe: its exit status says why.
    let _ = child.stdin.take().unwrap().write_all(npy.get_ref());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let s = Stream::open_readonly(&name).unwrap();
    assert_eq!((s.shape(), s.dtype()), (&[2, 3][..], Dtype::F64));
    assert_eq!(s.read::<f64>().unwrap().as_slice().unwrap(), &data);
}

#[test]
fn dump_without_output_prints_a_summary() {
    let name = unique_name("cli-summary");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[2, 2], Dtype::I32).unwrap();
    s.write_slice(&[-4i32, 1, 2, 9]).unwrap();
    s.write_slice(&[-4i32, 1, 2, 9]).unwrap();
    let out = stdout_of(cli().args(["dump", &name]));
    for want in [
        "shape:  [2, 2]",
        "dtype:  int32",
        "count:  2",
        "min:    -4",
        "max:    9",
        "mean:   2.0",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

/// numpy's min/max/mean propagate NaN, for complex data too (|z| of a NaN is NaN), and
/// values far from 1 are printed in scientific notation, not with 30 zeros or 39 digits.
#[test]
fn dump_summary_propagates_nan_and_writes_extreme_values_in_scientific_notation() {
    let (cplx, real) = (unique_name("cli-sum-c"), unique_name("cli-sum-f"));
    let _c = Cleanup::new([&cplx, &real]);
    let z = |re, im| shmstream::Complex32::new(re, im);
    Stream::create(&cplx, &[3], Dtype::Complex64)
        .unwrap()
        .write_slice(&[z(1.0, 1.0), z(f32::NAN, 0.0), z(3.0, 4.0)])
        .unwrap();
    let out = stdout_of(cli().args(["dump", &cplx]));
    for want in ["min:    nan", "max:    nan", "mean:   nan+"] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    Stream::create(&real, &[3], Dtype::F32)
        .unwrap()
        .write_slice(&[1e-30f32, 3.4e38, 2.0])
        .unwrap();
    let out = stdout_of(cli().args(["dump", &real]));
    for want in ["min:    1e-30\n", "max:    3.4e38\n", "mean:   1.13"] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(
        out.trim_end().ends_with("e38"),
        "mean in scientific notation:\n{out}"
    );
}

// ---------------------------------------------------------------------------------------
// stdout errors
// ---------------------------------------------------------------------------------------

/// `/dev/full`, opened for writing: every write to it fails (ENOSPC).
fn dev_full() -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap()
}

/// A stdout that fails (`> /dev/full`) ends every subcommand that prints with the tool's
/// error and status 1, never a panic (status 101); so does a stderr that fails too
/// (`> /dev/full 2>&1`: the error is lost, the status stays). `create` and `unlink` get
/// fresh names each time, so that their work succeeds and only stdout can fail them.
#[test]
fn a_failing_stdout_is_an_error_with_status_1_not_a_panic() {
    // Its purge fails on whatever another test leaves unreadable meanwhile.
    let _purging = purging();
    let name = unique_name("cli-full");
    let mut cleanup = Cleanup::new([&name]);
    Stream::create(&name, &[4], Dtype::U8)
        .unwrap()
        .write_slice(&[1u8, 2, 3, 4])
        .unwrap();
    let dir = TempDir::new("full");
    let file = dir.file("x.npy");
    let file = file.to_str().unwrap();
    let nothing = unique_name("cli-full-none-");
    let mut failures = Vec::new();
    for stderr_too in [false, true] {
        let (made, gone) = (unique_name("cli-full-made"), unique_name("cli-full-gone"));
        cleanup.add(&made);
        cleanup.add(&gone);
        Stream::create(&gone, &[1], Dtype::U8).unwrap();
        let cases: [&[&str]; 13] = [
            &["list"],
            &["list", "--json"],
            &["stat", &name],
            &["stat", &name, "--json"],
            &["dump", &name],
            &["dump", &name, "-o", file],
            &["load", &name, file],
            &["create", &made, "--shape", "2"],
            &["unlink", &gone],
            &["purge", "--dry-run", "--prefix", &nothing],
            &["watch", &name, "--duration", "0.1"],
            &["--help"],
            &["--version"],
        ];
        for args in cases {
            let full = dev_full();
            let mut cmd = StdCommand::new(bin());
            if stderr_too {
                cmd.stderr(full.try_clone().unwrap());
            }
            let out = cmd.args(args).stdout(full).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.code() != Some(1)
                || !(stderr_too
                    || stderr.contains("shmstream: error: cannot write to standard output"))
                || stderr.contains("panicked")
            {
                failures.push(format!(
                    "{args:?} (stderr too: {stderr_too}): {:?}\n{stderr}",
                    out.status
                ));
            }
        }
        assert!(
            shmstream::stat(&made).is_ok(),
            "create did not create '{made}' (stderr too: {stderr_too})"
        );
        assert!(
            matches!(
                shmstream::stat(&gone),
                Err(shmstream::Error::NotFound { .. })
            ),
            "unlink did not remove '{gone}' (stderr too: {stderr_too})"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // `record` writes to stderr only (a warning for a plain stream, the summary): nothing
    // lost, so status 0 however those writes went.
    let rec = dir.file("rec");
    let st = StdCommand::new(bin())
        .args([
            "record",
            &name,
            "--duration",
            "0.1",
            "--format",
            "npy",
            "--out",
        ])
        .arg(&rec)
        .stderr(dev_full())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0), "record with a failing stderr");
}

// ---------------------------------------------------------------------------------------
// unlink
// ---------------------------------------------------------------------------------------

#[test]
fn unlink_reports_each_name_and_missing_is_an_error_unless_quiet() {
    let (a, b, missing) = (
        unique_name("cli-unl-a"),
        unique_name("cli-unl-b"),
        unique_name("cli-unl-missing"),
    );
    let _c = Cleanup::new([&a, &b]);
    for n in [&a, &b] {
        cli().args(["create", n, "--shape", "1"]).assert().success();
    }
    cli()
        .args(["unlink", &a, &missing, &b])
        .assert()
        .code(1)
        .stdout(
            predicate::str::contains(format!("unlinked '{a}'"))
                .and(predicate::str::contains(format!("unlinked '{b}'"))),
        )
        .stderr(
            predicate::str::contains(format!("stream '{missing}' not found")).and(
                predicate::str::contains("shmstream: error: 1 of 3 name(s) could not be unlinked"),
            ),
        );
    assert!(
        shmstream::stat(&a).is_err() && shmstream::stat(&b).is_err(),
        "existing names are still removed"
    );

    cli()
        .args(["create", &a, "--shape", "1"])
        .assert()
        .success();
    cli()
        .args(["unlink", "--quiet-missing", &missing, &a])
        .assert()
        .success()
        .stdout(
            predicate::str::contains(format!("'{missing}' not found (ignored)"))
                .and(predicate::str::contains(format!("unlinked '{a}'"))),
        );
    cli().arg("unlink").assert().code(1); // no names
}

/// `unlink` of a missing name points to the check and to `--quiet-missing`, not to
/// creating the stream first.
#[test]
fn unlink_of_a_missing_name_points_to_quiet_missing() {
    let missing = unique_name("cli-unl-gone");
    cli().args(["unlink", &missing]).assert().code(1).stderr(
        predicate::str::contains(format!("stream '{missing}' not found: check the name"))
            .and(predicate::str::contains("--quiet-missing"))
            .and(predicate::str::contains("create it first").not()),
    );
}

/// A lock wait that runs out (another process, here this test, holding the stream's lock
/// file with `flock`, unstamped) names the lock file and `lslocks`, and for `load` the
/// `--timeout` given, not a timeout option `unlink` and `purge` lack, nor a stamped pid
/// where none is. Nothing is removed.
#[test]
fn lock_timeouts_of_unlink_purge_and_load_name_the_lock_file() {
    use std::os::fd::AsRawFd;
    let _p = purging();
    let dir = TempDir::new("locktimeout");
    let name = unique_name("cli-locktimeout");
    let _c = Cleanup::new([&name]);
    drop(Stream::create(&name, &[4], Dtype::U8).unwrap());
    let file = dir.file("f.npy");
    std::fs::write(&file, npy_file("|u1", false, "(4,)", &[1, 2, 3, 4])).unwrap();
    let lock_path = shmstream::name::lock_path(&name);
    let lock = std::fs::File::open(&lock_path).unwrap();
    // SAFETY: flock on a descriptor this scope owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let holder = format!(
        "holds its lock file {}; `lslocks -o PID,COMMAND,PATH` names it",
        lock_path.display()
    );
    let file = file.to_str().unwrap();
    let runs: [(&[&str], &str); 3] = [
        (&["unlink", &name], "then retry"),
        (&["purge", "--all", "--prefix", &name], "then retry"),
        (
            &["load", &name, file, "--timeout", "0.3"],
            "timed out after --timeout 0.3 waiting",
        ),
    ];
    for (args, said) in runs {
        let o = StdCommand::new(bin()).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("stream '{name}'"))
                && err.contains(&holder)
                && !err.contains("stamped pid")
                && err.contains(said)
                && !err.contains("where the call takes one")
                && !err.contains("lock_owner_pid"),
            "{args:?}: {err}"
        );
    }
    drop(lock);
    assert!(shmstream::stat(&name).is_ok(), "the stream was removed");
}

/// `unlink` carries on past a failed stdout: every name is removed, and then it fails with
/// the stdout error.
#[test]
fn unlink_with_a_failing_stdout_still_removes_every_name() {
    unlink_three_into("cli-unl-full", dev_full());
}

/// `unlink | grep -q ..`: a reader that went away is an ordinary stdout error for `unlink`,
/// not a SIGPIPE that kills it halfway: every name is removed, then it exits 1.
#[test]
fn unlink_into_a_closed_pipe_still_removes_every_name_and_exits_1() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader); // closed before the tool writes anything
    unlink_three_into("cli-unl-pipe", writer);
}

/// Runs `unlink` on three new streams with `stdout`, which fails every write: it is not
/// killed by a signal, removes every name, says the stdout error and exits 1.
fn unlink_three_into(tag: &str, stdout: impl Into<Stdio>) {
    use std::os::unix::process::ExitStatusExt;
    let names: Vec<String> = (0..3).map(|i| unique_name(&format!("{tag}{i}"))).collect();
    let _c = Cleanup::new(&names);
    for n in &names {
        Stream::create(n, &[1], Dtype::U8).unwrap();
    }
    let out = StdCommand::new(bin())
        .arg("unlink")
        .args(&names)
        .stdout(stdout)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        None,
        "killed: {:?}\n{stderr}",
        out.status
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write to standard output"),
        "{stderr}"
    );
    for n in &names {
        let left = shmstream::stat(n);
        assert!(
            matches!(left, Err(shmstream::Error::NotFound { .. })),
            "'{n}' was not unlinked: {left:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// purge
// ---------------------------------------------------------------------------------------

/// A file in /dev/shm that is not ours, removed on drop.
struct Foreign(PathBuf);

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Serializes the tests that purge: a purge sweeps what belongs to no stream, whichever test
/// planted it.
fn purging() -> std::sync::MutexGuard<'static, ()> {
    static PURGING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    PURGING.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn purge_names_each_part_and_lock_file_of_no_stream_it_removes() {
    let _purging = purging();
    // A lock directory of its own, which no other test binary's purge sweeps.
    let dir = std::env::temp_dir().join(unique_name("cli-lockdir"));
    std::fs::create_dir(&dir).unwrap();
    let lock = dir.join(format!("{}.lock", shmstream::name::segment_id("orphan")));
    std::fs::write(&lock, b"").unwrap();
    // A history ring whose stream is gone (pyshmem's unlink leaves it).
    let gone = unique_name("cli-ring-of-no-stream");
    let ring = shmstream::name::history_id(&gone);
    let ring_path = Path::new("/dev/shm").join(&ring);
    let _ring = Foreign(ring_path.clone());
    std::fs::write(&ring_path, [0u8; 64]).unwrap();
    let lines = |verb: &str| {
        predicate::str::contains(format!(
            "{verb} {} (lock file of no stream)",
            lock.display()
        ))
        .and(predicate::str::contains(format!(
            "{verb} /dev/shm/{ring} (part of no stream)"
        )))
    };
    let purge = |dry_run: &[&str]| {
        cli()
            .env("PYSHMEM_LOCK_DIR", &dir)
            .arg("purge")
            .args(dry_run)
            .args(["--prefix", "orphan"])
            .assert()
            .success()
    };
    purge(&["--dry-run"]).stdout(lines("would remove"));
    assert!(
        lock.exists() && ring_path.exists(),
        "a dry run removed something"
    );
    purge(&[]).stdout(lines("removed"));
    assert!(!lock.exists() && !ring_path.exists());
    // The ring's own lock file, made to remove it, went with it.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir(&dir).unwrap();
}

/// Review item: a lock directory purge cannot list (here a regular file) is said to be
/// unlisted, not "could not be removed", and purge exits 1.
#[test]
fn purge_says_a_lock_directory_it_cannot_list_was_not_listed() {
    let _purging = purging();
    let file = std::env::temp_dir().join(unique_name("cli-lockdir-file"));
    std::fs::write(&file, b"not a directory").unwrap();
    let out = cli()
        .env("PYSHMEM_LOCK_DIR", &file)
        .args(["purge", "--dry-run", "--prefix", "orphan"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    std::fs::remove_file(&file).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "the directory {} could not be listed",
            file.display()
        )) && stderr.contains("1 directory(s) could not be listed")
            && !stderr.contains("could not be removed"),
        "{stderr}"
    );
}

/// Review item: a part of no stream purge cannot remove (here its lock file is a directory)
/// is named as what it is, with its path, and counted as such: the summary said "1
/// stream(s) could not be removed", the error "… failed for stream 'ps_…'". Two of them
/// are each named and counted together.
#[test]
fn purge_names_and_counts_a_leftover_it_cannot_remove_as_one() {
    let _purging = purging();
    let dir = std::env::temp_dir().join(unique_name("cli-lockdir"));
    std::fs::create_dir(&dir).unwrap();
    let mut stuck = Vec::new();
    for _ in 0..2 {
        let gone = unique_name("cli-stuck-ring");
        let ring = shmstream::name::history_id(&gone);
        let ring_path = Path::new("/dev/shm").join(&ring);
        std::fs::write(&ring_path, [0u8; 64]).unwrap();
        let lock = dir.join(format!("{}.lock", shmstream::name::segment_id(&gone)));
        std::fs::create_dir(&lock).unwrap();
        stuck.push((Foreign(ring_path), ring, lock));
    }
    let out = cli()
        .env("PYSHMEM_LOCK_DIR", &dir)
        .args(["purge", "--prefix", "orphan"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    for (ring_path, ring, lock) in &stuck {
        assert!(ring_path.0.exists(), "removed without its lock");
        let failure = format!(
            "shmstream: error: the leftover part {} could not be removed: {} is refused",
            ring_path.0.display(),
            lock.display()
        );
        assert!(stderr.contains(&failure), "{stderr}");
        assert!(
            !stderr.contains(&format!("stream '{}", &ring[..17])),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("shmstream: error: 2 leftover part(s) could not be removed")
            && !stderr.contains("stream(s)"),
        "{stderr}"
    );
}

/// Defect: a stream of this user's whose `_meta` its mode made unreadable was silently
/// absent from `list`, and `purge` passed over it, exiting 0. `list` notes it on stderr
/// (the file and `chmod 600`), its stdout still the list (valid JSON with `--json`);
/// `purge` names it as it fails and exits 1. Root ignores modes, so as root (CI) the tool
/// runs as another uid.
#[test]
fn list_notes_and_purge_reports_a_stream_whose_metadata_cannot_be_read() {
    const OTHER_UID: u32 = 64_123;
    let _purging = purging();
    let name = unique_name("cli-unreadable");
    let meta = Path::new("/dev/shm").join(shmstream::name::meta_id(&name));
    let payload = Path::new("/dev/shm").join(shmstream::name::segment_id(&name));
    let _files = [Foreign(meta.clone()), Foreign(payload)];
    let locks = TempDir::new("unreadable-locks");
    let root = common::is_root();
    if root {
        std::os::unix::fs::chown(&locks.0, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    }
    let run = |args: &[&str]| {
        let mut cmd = StdCommand::new(bin());
        cmd.args(args).env("PYSHMEM_LOCK_DIR", &locks.0);
        if root {
            cmd.uid(OTHER_UID).gid(OTHER_UID);
        }
        let out = cmd.output().unwrap();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (out.status.code(), text(out.stdout), text(out.stderr))
    };
    let chmod = |mode| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&meta, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let created = run(&["create", &name, "--shape", "4", "--dtype", "uint8"]);
    assert_eq!(created.0, Some(0), "{created:?}");
    chmod(0o000);
    let remedy = format!("`chmod 600 {}`", meta.display());
    let note = format!(
        "shmstream: note: a stream is not listed, as its metadata cannot be read: this user \
         may not open {} for reading",
        meta.display()
    );
    let noted = |stderr: &str| stderr.contains(&note) && stderr.contains(&remedy);
    let (code, stdout, stderr) = run(&["list"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(noted(&stderr), "{stderr}");
    assert!(!stdout.contains("shmstream"), "{stdout}");
    let (code, stdout, stderr) = run(&["list", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(noted(&stderr), "{stderr}");
    serde_json::from_str::<serde_json::Value>(&stdout).expect("stdout is the JSON list");
    let failure = format!(
        "shmstream: error: the unreadable stream {} could not be read: this user may not open \
         {} for reading",
        meta.display(),
        meta.display()
    );
    // A dry run removes nothing, so it says what it could not check.
    let (code, _, stderr) = run(&["purge", "--all", "--dry-run", "--prefix", &name]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&failure)
            && stderr.contains(
                "1 unreadable stream(s) could not be handled (a dry run removes nothing)"
            )
            && !stderr.contains("could not be removed"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["purge", "--all", "--prefix", &name]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&failure)
            && stderr.contains(&remedy)
            && stderr.contains("unreadable stream(s) could not be removed"),
        "{stderr}"
    );
    assert!(meta.exists(), "removed");
    chmod(0o600);
    let unlinked = run(&["unlink", &name]);
    assert_eq!(unlinked.0, Some(0), "{unlinked:?}");
}

#[test]
fn purge_removes_only_dead_creator_streams_and_never_foreign_files() {
    let _purging = purging();
    let prefix = unique_name("cli-purge") + "-";
    let dead = format!("{prefix}dead");
    let live = format!("{prefix}live");
    let _c = Cleanup::new([&dead, &live]);
    // Created by a CLI process that exits: creator dead.
    cli()
        .args(["create", &dead, "--shape", "4", "--dtype", "uint8"])
        .assert()
        .success();
    // Created by this (running) test process: creator alive.
    let _live = Stream::create(&live, &[4], Dtype::U8).unwrap();

    // A near miss: a valid-looking stream header (named with our prefix, creator dead)
    // under a segment id that is NOT the hash of its name. Purge must not touch it.
    let dead_id = shmstream::name::segment_id(&dead);
    let wrong_id = format!("ps_{:014x}", std::process::id() as u64 * 7919 + 0xabc);
    assert_ne!(wrong_id, dead_id);
    let meta = std::fs::read(format!("/dev/shm/{dead_id}_meta")).unwrap();
    let payload = std::fs::read(format!("/dev/shm/{dead_id}")).unwrap();
    let _f1 = Foreign(PathBuf::from(format!("/dev/shm/{wrong_id}")));
    let _f2 = Foreign(PathBuf::from(format!("/dev/shm/{wrong_id}_meta")));
    let _f3 = Foreign(PathBuf::from(format!(
        "/dev/shm/{}",
        unique_name("not-a-stream")
    )));
    std::fs::write(&_f1.0, &payload).unwrap();
    std::fs::write(&_f2.0, &meta).unwrap();
    std::fs::write(&_f3.0, b"someone else's data").unwrap();

    // --dry-run lists the dead-creator stream only, and removes nothing.
    cli()
        .args(["purge", "--dry-run", "--prefix", &prefix])
        .assert()
        .success()
        .stdout(
            predicate::str::contains(format!("would remove '{dead}'"))
                .and(predicate::str::contains(&live).not()),
        );
    // Without a prefix too (harmless: dry run).
    cli()
        .args(["purge", "--dry-run"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains(format!("would remove '{dead}'"))
                .and(predicate::str::contains(format!("'{live}'")).not()),
        );
    cli()
        .args(["purge", "--dry-run", "--all", "--prefix", &prefix])
        .assert()
        .success()
        .stdout(
            predicate::str::contains(format!("would remove '{dead}'"))
                .and(predicate::str::contains(format!("would remove '{live}'"))),
        );
    assert!(
        shmstream::stat(&dead).is_ok() && shmstream::stat(&live).is_ok(),
        "dry runs remove nothing"
    );

    // Something removed: never "nothing to purge".
    cli()
        .args(["purge", "--prefix", &prefix])
        .assert()
        .success()
        .stdout(
            predicate::str::contains(format!("removed '{dead}'"))
                .and(predicate::str::contains("nothing to purge").not()),
        );
    assert!(
        shmstream::stat(&dead).is_err(),
        "dead-creator stream removed"
    );
    assert!(shmstream::stat(&live).is_ok(), "live-creator stream kept");
    for f in [&_f1.0, &_f2.0, &_f3.0] {
        assert!(f.exists(), "foreign file {} was touched", f.display());
    }

    // No stream left to remove (lock files of no stream, other tests' too, may still be).
    cli()
        .args(["purge", "--prefix", &prefix])
        .assert()
        .success()
        .stdout(predicate::str::contains("removed '").not());
    cli()
        .args(["purge", "--all", "--prefix", &prefix])
        .assert()
        .success()
        .stdout(
            predicate::str::contains(format!("removed '{live}'"))
                .and(predicate::str::contains("nothing to purge").not()),
        );
    assert!(shmstream::stat(&live).is_err());
    for f in [&_f1.0, &_f2.0, &_f3.0] {
        assert!(
            f.exists(),
            "foreign file {} was touched by purge --all",
            f.display()
        );
    }
}

// ---------------------------------------------------------------------------------------
// watch
// ---------------------------------------------------------------------------------------

/// A spawned binary whose stdout lines arrive on a channel.
struct Lines {
    child: Reaped,
    rx: Receiver<String>,
}

/// A child process killed and reaped when dropped unless taken: a test that fails before
/// it stops its `watch` or `record` does not leave it running.
struct Reaped(Option<std::process::Child>);

impl Reaped {
    /// The child, no longer killed on drop.
    fn take(&mut self) -> std::process::Child {
        self.0.take().expect("the child was taken once")
    }
}

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        self.0.as_ref().expect("the child was taken")
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("the child was taken")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Lines {
    fn spawn(args: &[&str]) -> Lines {
        let mut child = common::default_stop_signals(&mut StdCommand::new(bin()))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Lines {
            child: Reaped(Some(child)),
            rx,
        }
    }
    /// The next line satisfying `pred` within `timeout`.
    fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(_) => {}
                Err(e) => panic!("no matching line within {timeout:?}: {e}"),
            }
        }
    }
    /// Waits for exit (within `timeout`) and returns the exit code.
    fn exit_code(mut self, timeout: Duration) -> Option<i32> {
        exit_code_within(self.child.take(), timeout)
    }
    /// Waits for exit (within `timeout`) and returns the exit code and the lines not read
    /// yet, up to the end of stdout (a last one without its line end included).
    fn exit_code_and_rest(mut self, timeout: Duration) -> (Option<i32>, Vec<String>) {
        let code = exit_code_within(self.child.take(), timeout);
        let deadline = std::time::Instant::now() + timeout;
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => rest.push(l),
                Err(RecvTimeoutError::Disconnected) => return (code, rest),
                Err(e) => panic!("stdout not at its end within {timeout:?}: {e}"),
            }
        }
    }
}

/// Waits for `child` to exit (within `timeout`, on a helper thread; killed and the test
/// failed if it does not) and returns its exit code.
fn exit_code_within(mut child: std::process::Child, timeout: Duration) -> Option<i32> {
    let (tx, rx) = channel();
    let pid = child.id();
    let waiter = std::thread::spawn(move || {
        let st = child.wait();
        let _ = tx.send(());
        st
    });
    if rx.recv_timeout(timeout).is_err() {
        // SAFETY: killing our own child by pid.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        panic!("process {pid} did not exit within {timeout:?}");
    }
    waiter.join().unwrap().unwrap().code()
}

#[test]
fn watch_prints_plain_lines_when_not_a_terminal_and_stops_after_duration() {
    let name = unique_name("cli-watch");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[4], Dtype::F32).unwrap();
    s.write_slice(&[0.0f32; 4]).unwrap();
    // A duration of 20 intervals: a stall of most of a second on a loaded machine still
    // leaves a second sample. The timeout only bounds a watch that never stops by itself.
    let out = stdout_of(
        cli()
            .args(["watch", &name, "--interval", "0.05", "--duration", "1.0"])
            .timeout(common::LONG),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 2, "one line per sample:\n{out}");
    assert!(
        !out.contains('\x1b'),
        "no escape codes when stdout is a pipe"
    );
    let me = std::process::id();
    // The first sample has no rate yet: "-", no unit.
    assert!(lines[0].contains(" rate=- "), "{}", lines[0]);
    assert!(lines[1].contains(" rate=0.0Hz "), "{}", lines[1]);
    for l in &lines {
        for want in [
            name.as_str(),
            "count=1",
            "rate=",
            "age=",
            "missed=",
            &format!("name={name} "),
            &format!("creator={me}:alive"),
        ] {
            assert!(l.contains(want), "{want:?} missing in {l:?}");
        }
    }
}

/// The fields of a plain `watch` line as a shell splits them (`shlex.split`): words
/// separated by spaces, with `'...'` and `"..."` quoting (no backslashes: the tool quotes
/// without them).
fn shell_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let (mut word, mut quote, mut started) = (String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (None, ' ') => {
                if started {
                    fields.push(std::mem::take(&mut word));
                }
                started = false;
            }
            (None, '\'' | '"') => (quote, started) = (Some(c), true),
            (Some(q), c) if c == q => quote = None,
            _ => {
                word.push(c);
                started = true;
            }
        }
    }
    assert!(quote.is_none(), "unbalanced quote in {line:?}");
    if started {
        fields.push(word);
    }
    fields
}

/// A name with a space and `=` in a plain `watch` line is one quoted `name=` field: it
/// cannot forge a field of its own.
#[test]
fn watch_plain_lines_quote_a_name_that_looks_like_fields() {
    for name in [
        format!("{} count=999", unique_name("cli-watch-forge")),
        format!("-{} it's count=999", unique_name("cli-watch-forge")),
    ] {
        let _c = Cleanup::new([&name]);
        Stream::create(&name, &[1], Dtype::U8).unwrap();
        let out = stdout_of(
            cli()
                .args(["watch", "--duration", "0", "--", &name])
                .timeout(common::LONG),
        );
        assert!(!out.is_empty(), "one sample at least");
        for l in out.lines() {
            let fields = shell_fields(l);
            let counts: Vec<_> = fields.iter().filter(|f| f.starts_with("count=")).collect();
            assert_eq!(counts, ["count=0"], "exactly one count field in {l:?}");
            assert_eq!(fields[1], format!("name={name}"), "{l:?}");
        }
    }
}

/// A stream still being created (its payload there, its header not yet, as pyshmem's
/// create leaves it for a moment) is watched, and shown as `unfinished`, not `gone`.
#[test]
fn watch_shows_a_stream_still_being_created_as_unfinished() {
    let name = unique_name("cli-watch-creating");
    let _c = Cleanup::new([&name]);
    drop(Stream::create(&name, &[1], Dtype::U8).unwrap());
    std::fs::remove_file(format!("/dev/shm/{}", shmstream::name::meta_id(&name))).unwrap();
    let out = stdout_of(
        cli()
            .args(["watch", &name, "--duration", "0"])
            .timeout(common::LONG),
    );
    let _ = std::fs::remove_file(format!("/dev/shm/{}", shmstream::name::segment_id(&name)));
    assert!(!out.is_empty(), "one sample at least");
    for l in out.lines() {
        assert!(l.ends_with(" state=unfinished"), "{l:?}");
    }
}

#[test]
fn watch_reports_rate_and_missed_frames_and_stops_on_ctrl_c() {
    let name = unique_name("cli-watch-int");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[2], Dtype::U32).unwrap();
    s.write_slice_frame(&[1u32, 2], 10).unwrap();
    let w = Lines::spawn(&["watch", &name, "--interval", "0.05"]);
    w.wait_for(common::LONG, |l| l.contains("count=1"));
    // One write whose frame id jumps 10 → 20: 9 frames the writer skipped.
    s.write_slice_frame(&[3u32, 4], 20).unwrap();
    let l = w.wait_for(common::LONG, |l| l.contains("count=2"));
    assert!(l.contains("missed=9"), "{l}");
    let l = w.wait_for(common::LONG, |l| l.contains("count=2"));
    assert!(l.contains("rate=0.0Hz"), "no writes since: {l}");
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(w.child.id() as i32, libc::SIGINT) }, 0);
    let (code, rest) = w.exit_code_and_rest(common::LONG);
    assert_eq!(code, Some(0), "Ctrl-C is a clean stop");
    // Terminal modes are for a terminal, not a pipe.
    assert!(rest.iter().all(|l| !l.contains('\x1b')), "{rest:?}");
}

/// A `watch` blocked writing to a pipe nobody reads (`| less` paused, `| sleep 600`) still
/// stops on SIGTERM, cleanly: the write the signal interrupts is not retried.
#[test]
fn watch_blocked_on_a_full_stdout_pipe_stops_on_sigterm() {
    let name = unique_name("cli-watch-full");
    let _c = Cleanup::new([&name]);
    Stream::create(&name, &[1], Dtype::U8).unwrap();
    // 16 rows a sample fill the pipe's 64 KiB within a second.
    let mut args = vec!["watch", "--interval", "0.001"];
    args.extend([name.as_str(); 16]);
    let mut child = common::default_stop_signals(&mut StdCommand::new(bin()))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _never_read = child.stdout.take();
    wait_blocked_writing_stdout(&mut child);
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(
        exit_code_within(child, common::LONG),
        Some(0),
        "SIGTERM is a clean stop"
    );
}

/// Waits (within LONG) until `child` waits for the reader of its stdout, as
/// /proc/PID/syscall shows it: in a write to (a duplicate of) its stdout (the syscall number,
/// then the descriptor), or in the `poll` of one descriptor, (a duplicate of) its stdout,
/// that a write which would block waits in (the tool's writes never block): the pollfd read
/// from /proc/PID/mem at the pointer the syscall was given. Kills it and fails the test if
/// it never does.
fn wait_blocked_writing_stdout(child: &mut std::process::Child) {
    use std::os::unix::fs::FileExt;
    let pid = child.id();
    let fd_target = |fd: &str| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok();
    let is_stdout = |fd: i64| fd_target(&fd.to_string()).is_some_and(|t| Some(t) == fd_target("1"));
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("the child's memory");
    // The descriptor of the one pollfd at `ptr` (`int fd` first); none if it cannot be read.
    let polled = |ptr: u64| {
        let mut fd = [0u8; 4];
        mem.read_exact_at(&mut fd, ptr).ok()?;
        Some(i64::from(i32::from_ne_bytes(fd)))
    };
    let blocked = || {
        common::blocked_syscall(pid, pid).is_some_and(|(nr, args)| match nr {
            libc::SYS_write => args.first().is_some_and(|&fd| is_stdout(fd as i64)),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_poll => args.get(1) == Some(&1) && polled(args[0]).is_some_and(is_stdout),
            libc::SYS_ppoll => args.get(1) == Some(&1) && polled(args[0]).is_some_and(is_stdout),
            _ => false,
        })
    };
    let deadline = std::time::Instant::now() + common::LONG;
    while !blocked() {
        if std::time::Instant::now() >= deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("watch never blocked writing to its stdout");
        }
        std::thread::yield_now();
    }
}

#[test]
fn watch_stopped_for_a_second_does_not_make_up_the_missed_samples_back_to_back() {
    let name = unique_name("cli-watch-stall");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[2], Dtype::U32).unwrap();
    s.write_slice(&[1u32, 2]).unwrap();
    let (interval, duration) = (0.05, 3.0);
    let w = Lines::spawn(&[
        "watch",
        &name,
        "--interval",
        &interval.to_string(),
        "--duration",
        &duration.to_string(),
    ]);
    let mut lines = vec![w.wait_for(common::LONG, |_| true)];
    let pid = w.child.id() as i32;
    common::freeze(pid);
    let stopped = std::time::Instant::now();
    // The stall itself (what is checked is measured, not assumed to last this long).
    std::thread::sleep(Duration::from_secs(1));
    let stall = stopped.elapsed().as_secs_f64();
    common::thaw(pid);
    while let Ok(l) = w.rx.recv_timeout(common::LONG) {
        lines.push(l);
    }
    assert_eq!(w.exit_code(common::LONG), Some(0));
    // Samples come an interval apart or more (a loaded machine only spaces them further),
    // bar the first after the stall and the last at the end: at most this many, where
    // making up the stall adds one per interval it lasted (20 for a second).
    let most = ((duration - stall) / interval).ceil() as usize + 5;
    assert!(
        lines.len() <= most,
        "{} samples, at most {most} after a stall of {stall:.2} s:\n{}",
        lines.len(),
        lines.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// a terminal that hangs up
// ---------------------------------------------------------------------------------------

/// The tool run on a new pseudo-terminal of 24 rows by 80 columns (stdin, stdout and
/// stderr) as the session leader whose controlling terminal it is, like a shell in a
/// terminal window.
struct OnTerminal {
    child: Reaped,
    master: Option<std::fs::File>,
    seen: String,
}

impl OnTerminal {
    /// Runs the tool with `args` on a terminal of 24 rows by 80 columns; `SIGHUP` ignored (as
    /// under `nohup`) if `ignore_hup`. `None` (the caller skips, saying so) where this machine
    /// has no pseudo-terminals.
    fn spawn(args: &[&str], ignore_hup: bool) -> Option<OnTerminal> {
        OnTerminal::spawn_with_rows(args, ignore_hup, 24)
    }

    /// [`OnTerminal::spawn`] on a terminal of `rows` rows (0: one that does not say).
    fn spawn_with_rows(args: &[&str], ignore_hup: bool, rows: u16) -> Option<OnTerminal> {
        use std::os::fd::FromRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::process::CommandExt;
        // SAFETY: `posix_openpt` returns a new descriptor (close-on-exec, so that no child
        // of a concurrent test keeps the terminal open), owned by the File from here on;
        // `ptsname_r` writes a NUL-terminated path of at most `path.len()` bytes; TIOCSWINSZ
        // only reads one `winsize`.
        let (master, path) = unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            if fd < 0 {
                let e = std::io::Error::last_os_error();
                eprintln!("skipped: no pseudo-terminal here (posix_openpt: {e})");
                return None;
            }
            let master = std::fs::File::from_raw_fd(fd);
            assert_eq!(libc::grantpt(fd), 0);
            assert_eq!(libc::unlockpt(fd), 0);
            let size = libc::winsize {
                ws_row: rows,
                ws_col: 80,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            assert_eq!(libc::ioctl(fd, libc::TIOCSWINSZ, &size), 0);
            let mut path = [0 as libc::c_char; 64];
            assert_eq!(libc::ptsname_r(fd, path.as_mut_ptr(), path.len()), 0);
            let path = std::ffi::CStr::from_ptr(path.as_ptr());
            (master, path.to_str().unwrap().to_owned())
        };
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .unwrap();
        let mut cmd = StdCommand::new(bin());
        common::default_stop_signals(&mut cmd)
            .args(args)
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // SAFETY: between fork and exec the hook only calls `setsid`, `ioctl` and `signal`,
        // async-signal-safe; stdin is the terminal by then.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Ctrl-Z's default action, whatever this test process was started with.
                libc::signal(libc::SIGTSTP, libc::SIG_DFL);
                if ignore_hup {
                    libc::signal(libc::SIGHUP, libc::SIG_IGN);
                }
                Ok(())
            });
        }
        Some(OnTerminal {
            child: Reaped(Some(cmd.spawn().unwrap())),
            master: Some(master),
            seen: String::new(),
        })
    }

    /// Reads the terminal until the tool has written `text` to it.
    fn wait_for(&mut self, text: &str, timeout: Duration) {
        self.wait_until(&format!("{text:?}"), |seen| seen.contains(text), timeout);
    }

    /// Reads the terminal until what the tool wrote to it is `what` (`done`).
    fn wait_until(&mut self, what: &str, done: impl Fn(&str) -> bool, timeout: Duration) {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let master = self.master.as_ref().unwrap();
        let deadline = std::time::Instant::now() + timeout;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "{what} not on the terminal within {timeout:?}: {:?}",
                self.seen
            );
            let mut p = libc::pollfd {
                fd: master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut p, 1, left.as_millis().min(60_000) as i32) } > 0 {
                let mut buf = [0u8; 4096];
                let n = (&*master)
                    .read(&mut buf)
                    .unwrap_or_else(|e| panic!("{e}, after {:?}", self.seen));
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    }

    /// Closes the terminal, as closing its window does: the kernel hangs it up (writes to
    /// it fail with EIO) and sends SIGHUP to the tool. Returns the tool's exit code.
    fn hang_up(mut self) -> Option<i32> {
        drop(self.master.take());
        exit_code_within(self.child.take(), common::LONG)
    }
}

/// A `watch` whose terminal is closed stops cleanly on the SIGHUP (status 0), though the
/// cursor can no longer be shown again; one that ignores SIGHUP fails on its next draw.
#[test]
fn watch_on_a_terminal_that_hangs_up_stops_cleanly() {
    let name = unique_name("cli-watch-hup");
    let _c = Cleanup::new([&name]);
    Stream::create(&name, &[1], Dtype::U8).unwrap();
    // One draw, then nothing but waiting for the signal.
    let Some(mut w) = OnTerminal::spawn(&["watch", &name, "--interval", "1000"], false) else {
        return;
    };
    w.wait_for(&name, common::LONG);
    assert!(
        w.seen.contains(" CREATOR ") && !w.seen.contains("WRITER"),
        "the creator's column: {:?}",
        w.seen
    );
    assert_eq!(w.hang_up(), Some(0), "a hangup is a clean stop");
    let Some(mut w) = OnTerminal::spawn(&["watch", &name, "--interval", "0.05"], true) else {
        return;
    };
    w.wait_for(&name, common::LONG);
    assert_eq!(w.hang_up(), Some(1), "a failed draw is an error");
}

/// On a terminal, `watch` redraws with autowrap off (a row wider than the terminal would wrap
/// onto lines the next redraw does not go back over) and a table cut to the terminal's
/// height, as the terminal tells it (lines scrolled off the top cannot be gone back over),
/// and a stop restores autowrap and the cursor.
#[test]
fn watch_on_a_terminal_redraws_exactly_the_lines_it_drew() {
    let name = unique_name("cli-watch-wrap");
    let _c = Cleanup::new([&name]);
    Stream::create(&name, &[1], Dtype::U8).unwrap();
    // 30 rows of over 80 columns, on 24 rows by 80 columns.
    let mut args = vec!["watch", "--interval", "0.05"];
    args.extend([name.as_str(); 30]);
    let Some(mut w) = OnTerminal::spawn(&args, false) else {
        return;
    };
    w.wait_for("F\x1b[J", common::LONG); // a redraw
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(w.child.id() as i32, libc::SIGTERM) }, 0);
    w.wait_for("\x1b[?7h\x1b[?25h", common::LONG);
    let seen = std::mem::take(&mut w.seen);
    assert_eq!(w.hang_up(), Some(0));
    assert!(
        seen.starts_with("\x1b[?25l\x1b[?7l\x1b[J"),
        "cursor hidden and autowrap off first: {seen:?}"
    );
    let mut redraws = 0;
    // Each draw up to the next one's move back up over it.
    for draw in seen.split("\x1b[J").skip(1) {
        let Some((drawn, up)) = draw.rsplit_once("\x1b[") else {
            continue;
        };
        let Some(Ok(up)) = up.strip_suffix('F').map(str::parse::<usize>) else {
            continue;
        };
        let lines = drawn.matches('\n').count();
        // All 24 rows but the last (a line end there would scroll): the header, 21 streams
        // and a line for the other 9.
        assert!(
            up == lines && lines == 23,
            "{lines} lines drawn, {up} gone back over: {draw:?}"
        );
        assert!(
            drawn.contains("(9 more streams: the terminal is too short)"),
            "{draw:?}"
        );
        redraws += 1;
    }
    assert!(redraws > 0, "{seen:?}");
}

/// On a terminal that does not say its height (0 rows), the table is drawn whole.
#[test]
fn watch_on_a_terminal_of_no_height_draws_the_whole_table() {
    let name = unique_name("cli-watch-no-rows");
    let _c = Cleanup::new([&name]);
    Stream::create(&name, &[1], Dtype::U8).unwrap();
    let mut args = vec!["watch", "--interval", "1000"];
    args.extend([name.as_str(); 30]);
    let Some(mut w) = OnTerminal::spawn_with_rows(&args, false, 0) else {
        return;
    };
    // One draw: the header and 30 streams, or the streams a cut table shows and its line
    // for the others.
    let cut = "more streams: the terminal is too short";
    let drawn = |seen: &str| seen.matches(&*name).count() == 30 || seen.contains(cut);
    w.wait_until("the table", drawn, common::LONG);
    let seen = std::mem::take(&mut w.seen);
    assert_eq!(w.hang_up(), Some(0));
    assert!(!seen.contains(cut), "{seen:?}");
}

/// Ctrl-Z (SIGTSTP) gives the terminal back its cursor and autowrap before `watch` stops,
/// and once it is continued (`fg`) the table is drawn afresh, not over what the shell wrote
/// meanwhile. Here the tool's process group is orphaned (its parent, this test, is in
/// another session), so the kernel discards the stop, as it would SIGTSTP's default action:
/// `watch` carries on as after a `fg`, and stops cleanly on Ctrl-C.
#[test]
fn watch_on_a_terminal_gives_it_back_on_ctrl_z_and_draws_afresh_after() {
    const ENTER: &str = "\x1b[?25l\x1b[?7l";
    const LEAVE: &str = "\x1b[?7h\x1b[?25h";
    let name = unique_name("cli-watch-tstp");
    let _c = Cleanup::new([&name]);
    Stream::create(&name, &[1], Dtype::U8).unwrap();
    let Some(mut w) = OnTerminal::spawn(&["watch", &name, "--interval", "0.05"], false) else {
        return;
    };
    let pid = w.child.id() as i32;
    // What the terminal showed after the first `text` on it (from `w.seen`).
    let after = |w: &mut OnTerminal, text: &str| {
        w.wait_for(text, common::LONG);
        let seen = std::mem::take(&mut w.seen);
        seen.split_once(text).unwrap().1.to_owned()
    };
    w.wait_for("F\x1b[J", common::LONG); // a redraw
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTSTP) }, 0);
    w.seen = after(&mut w, LEAVE);
    w.seen = after(&mut w, ENTER);
    w.wait_for("F\x1b[J", common::LONG); // it carries on redrawing
    assert!(
        w.seen.starts_with("\x1b[J") && !w.seen.contains(LEAVE),
        "the first draw after the Ctrl-Z goes back over nothing: {:?}",
        w.seen
    );
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    w.wait_for(LEAVE, common::LONG);
    assert_eq!(
        w.hang_up(),
        Some(0),
        "Ctrl-C after a Ctrl-Z is a clean stop"
    );
}

/// A `watch` blocked writing to a terminal that stopped reading (Ctrl-S, a terminal program
/// that hangs) stops on one SIGTERM: nothing after the stop, restoring the terminal's modes
/// included, waits for the terminal.
#[test]
fn watch_blocked_on_a_terminal_that_stopped_reading_stops_on_sigterm() {
    let name = unique_name("cli-watch-held");
    let _c = Cleanup::new([&name]);
    Stream::create(&name, &[1], Dtype::U8).unwrap();
    // Draws of 23 lines of over 80 columns, 100 a second, fill the terminal's buffers
    // within a second: its master side is never read.
    let mut args = vec!["watch", "--interval", "0.001"];
    args.extend([name.as_str(); 30]);
    let Some(mut w) = OnTerminal::spawn(&args, false) else {
        return;
    };
    wait_blocked_writing_stdout(&mut w.child);
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(w.child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(
        exit_code_within(w.child.take(), common::LONG),
        Some(0),
        "one SIGTERM is a clean stop"
    );
}

/// A `record` whose terminal is closed finishes its files and exits by its own rule (here
/// 0: nothing written, nothing lost), though its progress line and summary are lost.
#[test]
fn record_on_a_terminal_that_hangs_up_stops_cleanly() {
    let name = unique_name("cli-rec-hup");
    let _c = Cleanup::new([&name]);
    StreamOptions::new(&name)
        .shape(&[1])
        .dtype(Dtype::U8)
        .history(4)
        .create()
        .unwrap();
    let dir = TempDir::new("rec-hup");
    let out = dir.file("out");
    let Some(mut r) = OnTerminal::spawn(
        &[
            "record",
            &name,
            "--duration",
            "1000",
            "--format",
            "npy",
            "--out",
            out.to_str().unwrap(),
        ],
        false,
    ) else {
        return;
    };
    r.wait_for("recording 1 stream(s)", common::LONG);
    // The progress line can show before the recorder thread opens its first file: hang up
    // only once it has, or the SIGHUP may stop the recording before there is one.
    let first = out.join(format!("{name}_000000000.npy"));
    let deadline = std::time::Instant::now() + common::LONG;
    while !first.exists() {
        assert!(r.child.try_wait().unwrap().is_none(), "record exited early");
        assert!(
            std::time::Instant::now() < deadline,
            "{first:?} not created within {:?}",
            common::LONG
        );
        // Polling the file system, which has no wait for a file; not a synchronizing sleep.
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(r.hang_up(), Some(0));
    // Finished: the real frame count in the header (the unfinished one declares u64::MAX
    // frames) and the frame table's column names.
    let cube = std::fs::read(&first).unwrap();
    let header = String::from_utf8_lossy(&cube[..cube.len().min(128)]);
    assert!(header.contains("'shape': (0, 1)"), "{header:?}");
    let table = std::fs::read_to_string(first.with_extension("frames.csv")).unwrap();
    assert_eq!(table, "frame_id,count,write_time,record_time\n");
}

/// A fault-injecting library that `cc` cannot build fails the test that needs it, with the
/// compiler's stderr: only a missing `cc` skips it.
#[test]
fn a_preload_library_cc_cannot_build_fails_with_its_stderr() {
    let no_cc = StdCommand::new("cc").arg("--version").output();
    if no_cc.is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        eprintln!("skipping: no C compiler (cc)");
        return;
    }
    let dir = TempDir::new("preload-broken");
    let built = std::panic::catch_unwind(|| preload_lib(&dir.0, "broken", "not C at all;\n"));
    let why = built.expect_err("a library cc cannot build is no skip");
    let why = why.downcast_ref::<String>().expect("a formatted panic");
    assert!(
        why.contains("could not build") && why.contains("broken.c"),
        "{why}"
    );
}

// ---------------------------------------------------------------------------------------
// Python pyshmem 1.4.0 interop
// ---------------------------------------------------------------------------------------

const PY_PEER: &str = r#"
import sys, numpy as np, pyshmem
name = sys.argv[1]
expected = (np.arange(12, dtype=np.float32).reshape(3, 4) * 0.5 - 1.0)
s = pyshmem.create(name, shape=(3, 4), dtype=np.float32)
s.write(expected, frame_id=41)
print("@@ ready", flush=True)
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "compare":
        got = np.load(arg)
        print("@@ equal", got.dtype == expected.dtype and got.shape == expected.shape and bool((got == expected).all()), flush=True)
    elif cmd == "read":
        print("@@ read", " ".join(str(x) for x in s.read().ravel().tolist()), flush=True)
    elif cmd == "quit":
        break
s.close()
pyshmem.unlink(name)
print("@@ bye", flush=True)
"#;

#[test]
fn python_stream_is_listed_stated_dumped_and_loaded() {
    let Some(py) = common::python() else { return };
    let dir = TempDir::new("py");
    let name = unique_name("cli-py");
    let _c = Cleanup::new([&name]);
    let mut cmd = StdCommand::new(&py);
    cmd.args(["-u", "-c", PY_PEER, &name]);
    let mut peer = Proc::spawn(cmd);
    peer.expect_line("ready", common::LONG);

    // list: the Python stream appears, with its Python creator alive.
    let out = stdout_of(cli().arg("list"));
    let row = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .unwrap_or_else(|| panic!("{name} not listed:\n{out}"));
    assert!(
        row.contains("3x4")
            && row.contains("float32")
            && row.contains(&format!("{} alive", peer.pid())),
        "{row}"
    );
    let v = stat_json(&name);
    assert_eq!(v["frame_id"], 41);
    assert_eq!(v["count"], 1);
    assert_eq!(v["creator_pid"], peer.pid());

    // dump → .npy → numpy compares it with what it wrote.
    let file = dir.file("py.npy");
    cli()
        .args(["dump", &name, "-o"])
        .arg(&file)
        .assert()
        .success();
    peer.send_line(&format!("compare {}", file.display()));
    assert_eq!(peer.expect_line("equal", common::LONG), "True");

    // load into the Python stream; pyshmem reads what the CLI wrote.
    let src = unique_name("cli-py-src");
    let _c2 = Cleanup::new([&src]);
    let vals: Vec<f32> = (0..12).map(|i| i as f32 * 10.0).collect();
    Stream::create(&src, &[3, 4], Dtype::F32)
        .unwrap()
        .write_slice(&vals)
        .unwrap();
    let file2 = dir.file("rust.npy");
    cli()
        .args(["dump", &src, "-o"])
        .arg(&file2)
        .assert()
        .success();
    cli().args(["load", &name]).arg(&file2).assert().success();
    peer.send_line("read");
    let got: Vec<f32> = peer
        .expect_line("read", common::LONG)
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(got, vals);

    peer.send_line("quit");
    peer.expect_line("bye", common::LONG);
    peer.wait_success(common::LONG);
    let _ = std::io::stdout().flush();
}

// ---------------------------------------------------------------------------------------
// create --history; dump, load, unlink and record messages
// ---------------------------------------------------------------------------------------

/// `create --history N` makes a stream with a history ring of N frames (what `record` and
/// the bridge's `--lossless` need); a depth the library refuses is its typed error, and
/// creates nothing.
#[test]
fn create_with_history_keeps_that_many_frames_and_refuses_a_depth_out_of_range() {
    let name = unique_name("cli-create-hist");
    let too_deep = unique_name("cli-create-hist-deep");
    let _c = Cleanup::new([&name, &too_deep]);
    cli()
        .args(["create", &name, "--shape", "4", "--history", "8"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains(format!("created '{name}'"))
                .and(predicate::str::contains("(history 8)")),
        );
    assert_eq!(stat_json(&name)["history"], 8);
    assert_eq!(Stream::open_readonly(&name).unwrap().history_depth(), 8);

    let deep = (shmstream::MAX_HISTORY + 1).to_string();
    cli()
        .args(["create", &too_deep, "--shape", "4", "--history", &deep])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "history of stream '{too_deep}': history depth {deep} is outside 1..={} (0 keeps no \
             history)",
            shmstream::MAX_HISTORY
        )));
    assert!(shmstream::stat(&too_deep).is_err(), "nothing was created");
}

/// `dump -o` into a directory that does not exist names that directory and the remedy, not
/// the temporary file it would have written first; nothing is created.
#[test]
fn a_dump_into_a_missing_directory_names_the_directory() {
    let name = unique_name("cli-dump-nodir");
    let _c = Cleanup::new([&name]);
    drop(Stream::create(&name, &[2], Dtype::U8).unwrap());
    let dir = TempDir::new("dumpnodir");
    let missing = dir.file("nodir");
    let out = cli()
        .args(["dump", &name, "-o"])
        .arg(missing.join("out.npy"))
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!(
            "directory {} does not exist: create it, or give another -o",
            missing.display()
        )) && !err.contains("partial"),
        "{err}"
    );
    assert!(!missing.exists());
}

/// `dump -o` into a directory whose file system makes no new files (`/proc` answers ENOENT)
/// says so, not that the directory does not exist.
#[test]
fn a_dump_into_proc_does_not_call_it_missing() {
    let name = unique_name("cli-dump-proc");
    let _c = Cleanup::new([&name]);
    drop(Stream::create(&name, &[2], Dtype::U8).unwrap());
    cli()
        .args(["dump", &name, "-o", "/proc/shmstream-dump.npy"])
        .assert()
        .code(1)
        // (A /proc mounted read-only answers EROFS: a read-only file system, said so.)
        .stderr(
            predicate::str::contains(
                "cannot create a file in directory /proc (No such file or directory (os error \
                 2)): its file system makes no new files there: give another -o",
            )
            .or(predicate::str::contains(
                "directory /proc is on a read-only file system: give another -o",
            ))
            .and(predicate::str::contains("does not exist").not()),
        );
}

/// `dump -o` into a directory this user may not write names the directory and the remedy.
/// Root writes anywhere: then it is skipped.
#[test]
fn a_dump_into_a_directory_not_writable_names_the_directory() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("skipped: root may create files in any directory");
        return;
    }
    let name = unique_name("cli-dump-rodir");
    let _c = Cleanup::new([&name]);
    drop(Stream::create(&name, &[2], Dtype::U8).unwrap());
    let dir = TempDir::new("dumprodir");
    let locked = dir.file("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    cli()
        .args(["dump", &name, "-o"])
        .arg(locked.join("out.npy"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "this user may not create files in directory {}: it (or a directory above it) \
             cannot be searched or written by this user: give another -o",
            locked.display()
        )));
    assert!(!locked.join("out.npy").exists());
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `dump -o -` writes the .npy to stdout (the status line to stderr), and makes no file `-`.
#[test]
fn a_dump_to_dash_writes_stdout() {
    let (name, _c) = u8_pair_stream("cli-dump-dash", [5, 6]);
    let dir = TempDir::new("dumpdash");
    let out = cli()
        .current_dir(&dir.0)
        .args(["dump", &name, "-o", "-"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_exact_npy(&out.stdout, [5, 6]);
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!("dumped '{name}' (uint8 [2], count 1) to standard output\n")
    );
    assert!(!dir.file("-").exists(), "a file named - was made");
}

/// A `dump -o -` that wrote no byte (`/dev/full` refuses the first) does not call its
/// output a cut-short .npy. (A closed stdout, `>&-`, is /dev/null: std opens it.)
#[test]
fn a_dump_to_dash_that_wrote_nothing_says_so() {
    let (name, _c) = u8_pair_stream("cli-dump-dash-none", [5, 6]);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = StdCommand::new(bin())
        .args(["dump", &name, "-o", "-"])
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        format!(
            "shmstream: error: dumping '{name}' to standard output: No space left on device (os error 28)\n"
        )
    );
}

/// An error written to a stderr that is a pty master reaches that pty (its slave reads it):
/// the master is duplicated, not opened anew through `/proc/self/fd` (which opens
/// `/dev/ptmx`, a new pty whose output goes nowhere).
#[test]
fn an_error_to_a_pty_master_stderr_reaches_the_pty() {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::OpenOptionsExt;
    let name = unique_name("cli-ptmx-missing");
    // SAFETY: posix_openpt, grantpt, unlockpt and ptsname_r on a descriptor we then own.
    let (master, slave_path) = unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        let master = OwnedFd::from_raw_fd(fd);
        assert_eq!(libc::grantpt(fd), 0);
        assert_eq!(libc::unlockpt(fd), 0);
        let mut buf = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(fd, buf.as_mut_ptr(), buf.len()), 0);
        let path = std::ffi::CStr::from_ptr(buf.as_ptr())
            .to_str()
            .unwrap()
            .to_owned();
        (master, path)
    };
    let mut slave = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(&slave_path)
        .unwrap();
    let st = StdCommand::new(bin())
        .args(["stat", &name])
        .stdout(Stdio::null())
        .stderr(std::fs::File::from(master.try_clone().unwrap()))
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1));
    // The line is in the slave's input once the tool exited; the poll's timeout only bounds
    // a failure.
    let mut p = libc::pollfd {
        fd: slave.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd of a descriptor `slave` holds.
    let ready = unsafe { libc::poll(&mut p, 1, 10_000) };
    assert_eq!(ready, 1, "nothing reached the pty from the tool's stderr");
    let mut got = vec![0; 4096];
    let n = slave.read(&mut got).unwrap();
    let got = String::from_utf8_lossy(&got[..n]);
    assert!(got.contains(&name), "{got:?}");
}

/// `dump -o -` writes to descriptor 1 as it is, without opening or truncating it: a file
/// stdout (`>>`, or `{ echo header; dump -o -; } > F`) keeps what it held before the .npy.
#[test]
fn a_dump_to_dash_keeps_what_a_file_stdout_already_holds() {
    let (name, _c) = u8_pair_stream("cli-dump-dash-append", [5, 6]);
    let dir = TempDir::new("dumpdashappend");
    let file = dir.file("out");
    std::fs::write(&file, b"header\n").unwrap();
    let stdout = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    let out = StdCommand::new(bin())
        .args(["dump", &name, "-o", "-"])
        .stdout(stdout)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err,
        format!("dumped '{name}' (uint8 [2], count 1) to standard output\n")
    );
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..7], b"header\n", "the header line was lost");
    assert_exact_npy(&bytes[7..], [5, 6]);
}

/// `dump -o -` refuses a terminal stdout rather than write binary to it (a pty through
/// `script`, skipped where there is none), its message escaping the name once (`a\\b`).
#[test]
fn a_dump_to_dash_refuses_a_terminal() {
    let name = format!("{}\\b", unique_name("cli-dump-dash-tty"));
    let _c = Cleanup::new([&name]);
    drop(Stream::create(&name, &[2], Dtype::U8).unwrap());
    // One shell word each: the path may hold spaces, the name a backslash.
    let word = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let cmd = format!(
        "{} dump {} -o -",
        word(&bin().display().to_string()),
        word(&name)
    );
    let out = match StdCommand::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: no `script` (util-linux) to give the tool a terminal");
            return;
        }
        Err(e) => panic!("script (util-linux) runs: {e}"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let shown = name.replace('\\', "\\\\");
    assert!(
        text.contains(&format!("cannot dump '{shown}' with -o -: stdout is a terminal: redirect or pipe it (-o - writes the .npy's bytes)")),
        "{text}"
    );
    assert!(
        !text.contains("NUMPY"),
        "binary reached the terminal: {text}"
    );
}

/// `dump -o` of a stream never written warns that the file holds its initial zeros, and
/// still succeeds.
#[test]
fn a_dump_of_a_stream_never_written_warns() {
    let name = unique_name("cli-dump-unwritten");
    let _c = Cleanup::new([&name]);
    drop(Stream::create(&name, &[2], Dtype::U8).unwrap());
    let dir = TempDir::new("dumpunwritten");
    let file = dir.file("f.npy");
    let warning = format!(
        "shmstream: warning: stream '{name}' was never written: the file holds its initial zeros\n"
    );
    cli()
        .args(["dump", &name, "-o"])
        .arg(&file)
        .assert()
        .success()
        .stderr(warning);
    assert_exact_npy(&std::fs::read(&file).unwrap(), [0, 0]);
    // Once written, no warning.
    Stream::open(&name).unwrap().write_slice(&[1u8, 2]).unwrap();
    cli()
        .args(["dump", &name, "-o"])
        .arg(&file)
        .assert()
        .success()
        .stderr("");
}

/// `load --timeout` covers every wait, and `unlink` says it waits for the write lock.
#[test]
fn load_and_unlink_help_say_what_they_wait_for() {
    cli().args(["load", "--help"]).assert().success().stdout(
        predicate::str::contains("for a creation of the stream already under way")
            .and(predicate::str::contains("for the write lock")),
    );
    cli()
        .args(["unlink", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "waiting up to 5 s for each one's write lock",
        ));
}

/// `record` needs one of --frames and --duration, and says so naming both; given both, it
/// refuses them together.
#[test]
fn record_without_frames_or_duration_names_both() {
    let dir = TempDir::new("recordusage");
    let out = dir.file("out");
    cli()
        .args(["record", "any-name", "--out"])
        .arg(&out)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "<--frames <FRAMES>|--duration <DURATION>>",
        ));
    cli()
        .args([
            "record",
            "any-name",
            "--frames",
            "1",
            "--duration",
            "1",
            "--out",
        ])
        .arg(&out)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot be used with"));
    assert!(!out.exists());
}

/// `record --out` naming a regular file says it is a file, and leaves it as it was.
#[test]
fn record_out_naming_a_file_says_it_is_not_a_directory() {
    let name = unique_name("cli-record-outfile");
    let _c = Cleanup::new([&name]);
    drop(Stream::create(&name, &[2], Dtype::U8).unwrap());
    let dir = TempDir::new("recordoutfile");
    let file = dir.file("a-file");
    std::fs::write(&file, b"kept").unwrap();
    cli()
        .args(["record", &name, "--frames", "1", "--out"])
        .arg(&file)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "--out {} is a file, not a directory: give a directory",
            file.display()
        )));
    assert_eq!(std::fs::read(&file).unwrap(), b"kept");
}

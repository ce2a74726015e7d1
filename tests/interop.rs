//! Interop with the real pyshmem 1.4.0 (Python helper: tests/python/peer.py).
//!
//! Under `scripts/test.sh` (SHMSTREAM_REQUIRE_PYTHON=1) a missing Python peer fails these
//! tests; under plain `cargo test` they print a skip reason and pass.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    Cleanup, LONG, Proc, child, child_role, param, py_command, python, run_py, say, unique_name,
};
use shmstream::{Complex32, Complex64, Dtype, Element, Error, Stream, StreamOptions, f16};

/// The raw bytes of a slice of elements (C order, native = little endian on our targets).
fn bytes_of<T: Element>(v: &[T]) -> Vec<u8> {
    // SAFETY: every `Element` is a plain-old-data type without padding (integers, floats,
    // `bool`, `f16`, `Complex<f32|f64>`), so viewing its storage as bytes is sound.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
        .to_vec()
}

/// Writes a stream's data with a frame id, through the typed API of its dtype.
type WriteFn = Box<dyn Fn(&Stream, u64)>;
/// Reads a stream's payload as bytes, through the typed API of its dtype.
type ReadFn = Box<dyn Fn(&Stream) -> Vec<u8>>;

/// One stream per dtype: its data, and typed read/write closures.
struct Case {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
    write: WriteFn,
    read: ReadFn,
}

fn case<T: Element>(dtype: Dtype, shape: &[usize], make: impl Fn(usize) -> T) -> Case {
    let n: usize = shape.iter().product();
    let data: Vec<T> = (0..n).map(make).collect();
    Case {
        dtype,
        shape: shape.to_vec(),
        bytes: bytes_of(&data),
        write: Box::new(move |s, fid| s.write_slice_frame(&data, fid).unwrap()),
        read: Box::new(|s| {
            let a = s.read::<T>().unwrap();
            assert_eq!(a.shape(), s.shape());
            bytes_of(a.as_slice().unwrap())
        }),
    }
}

/// Every dtype in a 3-D shape, plus a bigger 3-D float32 case.
fn cases() -> Vec<Case> {
    let sh = [2usize, 3, 4];
    vec![
        case(Dtype::I8, &sh, |i| {
            (i as i8).wrapping_mul(37).wrapping_sub(90)
        }),
        case(Dtype::I16, &sh, |i| (i as i16) * -1371 + 5),
        case(Dtype::I32, &sh, |i| {
            if i == 0 {
                i32::MIN
            } else {
                (i as i32) * 98_765 - 3
            }
        }),
        case(Dtype::I64, &sh, |i| {
            if i == 1 {
                i64::MIN
            } else {
                (i as i64) * -(1 << 41) + 17
            }
        }),
        case(Dtype::U8, &sh, |i| if i == 2 { 255 } else { (i * 9) as u8 }),
        case(Dtype::U16, &sh, |i| {
            if i == 3 { u16::MAX } else { (i as u16) * 2_111 }
        }),
        case(Dtype::U32, &sh, |i| u32::MAX - (i as u32) * 77_777),
        case(Dtype::U64, &sh, |i| {
            u64::MAX - (i as u64) * 0x00ab_cdef_0123_4567
        }),
        case(Dtype::F16, &sh, |i| f16::from_f32(i as f32 * 0.25 - 2.5)),
        case(Dtype::F32, &sh, |i| {
            if i == 5 {
                f32::MAX
            } else {
                i as f32 * -3.0e-5 + 0.1
            }
        }),
        case(Dtype::F64, &sh, |i| {
            if i == 6 {
                f64::NEG_INFINITY
            } else {
                (i as f64).sin() * 1e200
            }
        }),
        case(Dtype::Bool, &sh, |i| i % 5 < 2),
        case(Dtype::Complex64, &sh, |i| {
            Complex32::new(i as f32 - 0.5, (i * i) as f32)
        }),
        case(Dtype::Complex128, &sh, |i| {
            Complex64::new(1.0 / (i as f64 + 1.0), -(i as f64) * 1e-100)
        }),
        case(Dtype::F32, &[3, 5, 7], |i| i as f32 * 1.5),
    ]
}

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(unique_name(tag));
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct TmpDir(PathBuf);
impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn py_json(line: &str, prefix: &str) -> serde_json::Value {
    serde_json::from_str(
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{line:?} lacks {prefix:?}")),
    )
    .unwrap()
}

fn one(lines: &[String], prefix: &str) -> String {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {lines:?}"))
        .clone()
}

#[test]
fn python_writes_rust_reads_every_dtype() {
    let Some(py) = python() else { return };
    let dir = TmpDir(tmp_dir("interop-py2rs"));
    let cases = cases();
    let names: Vec<String> = cases
        .iter()
        .map(|c| unique_name(&format!("py2rs-{}", c.dtype)))
        .collect();
    let _c = Cleanup::new(names.iter());
    let mut manifest = Vec::new();
    for (i, (c, name)) in cases.iter().zip(&names).enumerate() {
        let file = dir.0.join(format!("{i}.bin"));
        std::fs::write(&file, &c.bytes).unwrap();
        manifest.push(serde_json::json!({"name": name, "dtype": c.dtype.numpy_name(), "shape": c.shape, "file": s(&file), "frame_id": 500 + i}));
    }
    let mf = dir.0.join("manifest.json");
    std::fs::write(&mf, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let lines = run_py(&py, "peer.py", &["create_write", s(&mf)], LONG);
    assert_eq!(lines.len(), cases.len(), "{lines:?}");

    for (i, (c, name)) in cases.iter().zip(&names).enumerate() {
        let line = one(&lines, &format!("created {name} "));
        let fields: Vec<&str> = line.split(' ').collect();
        let (py_id, py_count) = (fields[2], fields[3]);
        assert_eq!(py_count, "1");
        let r = Stream::open_readonly(name).unwrap();
        assert_eq!(r.dtype(), c.dtype, "{name}");
        assert_eq!(r.shape(), c.shape.as_slice(), "{name}");
        assert_eq!(r.instance_id(), py_id, "{name}");
        assert_eq!(r.count(), 1);
        assert!(!r.producer_alive(), "the Python creator has exited");
        assert_eq!(
            (c.read)(&r),
            c.bytes,
            "{name}: Rust read different data than Python wrote"
        );
        // frame_id written by Python is read by Rust in the same publication.
        assert_eq!(r.frame_id(), 500 + i as u64, "{name}");
        // A Rust writer can take over the Python-created stream.
        let w = Stream::open(name).unwrap();
        (c.write)(&w, 1);
        assert_eq!(w.count(), 2);
    }
}

#[test]
fn rust_writes_python_reads_every_dtype() {
    let Some(py) = python() else { return };
    let dir = TmpDir(tmp_dir("interop-rs2py"));
    let cases = cases();
    let names: Vec<String> = cases
        .iter()
        .map(|c| unique_name(&format!("rs2py-{}", c.dtype)))
        .collect();
    let _c = Cleanup::new(names.iter());
    let mut streams = Vec::new();
    let mut manifest = Vec::new();
    for (i, (c, name)) in cases.iter().zip(&names).enumerate() {
        let st = StreamOptions::new(name)
            .shape(&c.shape)
            .dtype(c.dtype)
            .notify(i % 2 == 0)
            .create()
            .unwrap();
        (c.write)(&st, 0);
        (c.write)(&st, 900 + i as u64);
        assert_eq!(st.frame_id(), 900 + i as u64);
        manifest
            .push(serde_json::json!({"name": name, "file": s(&dir.0.join(format!("{i}.out")))}));
        streams.push(st);
    }
    let mf = dir.0.join("manifest.json");
    std::fs::write(&mf, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let lines = run_py(&py, "peer.py", &["read_dump", s(&mf)], LONG);
    for (i, ((c, name), st)) in cases.iter().zip(&names).zip(&streams).enumerate() {
        let line = one(&lines, &format!("read {name} "));
        let f: Vec<&str> = line.split(' ').collect();
        let shape = c
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            &f[2..],
            &[
                "2",
                &(900 + i).to_string(),
                c.dtype.numpy_name(),
                &shape,
                &st.instance_id()
            ][..],
            "{line}"
        );
        let got = std::fs::read(dir.0.join(format!("{i}.out"))).unwrap();
        assert_eq!(
            got, c.bytes,
            "{name}: Python read different data than Rust wrote"
        );
    }
}

#[test]
fn python_stat_and_list_agree_with_ours() {
    let Some(py) = python() else { return };
    let dir = TmpDir(tmp_dir("interop-stat"));
    let ours = unique_name("ours");
    let theirs = unique_name("theirs");
    let _c = Cleanup::new([&ours, &theirs]);
    let w = StreamOptions::new(&ours)
        .shape(&[4, 5, 6])
        .dtype(Dtype::U16)
        .notify(true)
        .create()
        .unwrap();
    for k in 0..3u16 {
        w.write_slice_frame(&[k; 120], 7).unwrap();
    }
    let lines = run_py(&py, "peer.py", &["stat", &ours], LONG);
    let st = py_json(&one(&lines, "stat "), "stat ");
    let mine = shmstream::stat(&ours).unwrap();
    assert_eq!(st["name"], ours);
    assert_eq!(st["shape"], serde_json::json!([4, 5, 6]));
    assert_eq!(st["dtype"], "uint16");
    assert_eq!(st["size"], 240);
    assert_eq!(st["count"], 3);
    assert_eq!(st["count"], mine.count);
    assert_eq!(st["write_sequence"], mine.write_sequence);
    // serde_json's default float parser may round the last bit differently from Python's
    // repr; the value itself is the same f64 in the header.
    let py_time = st["write_time"].as_f64().unwrap();
    assert!(
        (py_time - mine.write_time).abs() < 1e-6,
        "{py_time} vs {}",
        mine.write_time
    );
    assert_eq!(st["instance_id"], w.instance_id());
    assert_eq!(st["creator_pid"], std::process::id());
    assert_eq!(st["creator_alive"], true);
    assert_eq!(st["notify"], true);
    assert_eq!(st["gpu_enabled"], false);
    assert_eq!(st["cpu_mirror"], true);

    // A Python-created stream appears in our list and stat; ours in theirs.
    let file = dir.0.join("t.bin");
    std::fs::write(&file, bytes_of(&[1.5f64, -2.5])).unwrap();
    let mf = dir.0.join("m.json");
    std::fs::write(&mf, serde_json::to_vec(&serde_json::json!([{"name": theirs, "dtype": "float64", "shape": [2], "file": s(&file), "frame_id": 3, "notify": true}])).unwrap()).unwrap();
    let created = run_py(&py, "peer.py", &["create_write", s(&mf)], LONG);
    let their_id = one(&created, "created ")
        .split(' ')
        .nth(2)
        .unwrap()
        .to_owned();
    let list = shmstream::list_streams().unwrap();
    assert!(list.contains(&ours) && list.contains(&theirs), "{list:?}");
    let t = shmstream::stat(&theirs).unwrap();
    assert_eq!(
        (t.shape.as_slice(), t.dtype, t.count, t.frame_id, t.notify),
        (&[2usize][..], Dtype::F64, 1, 3, true)
    );
    assert_eq!(t.instance_id.as_deref(), Some(their_id.as_str()));
    assert!(!t.creator_alive);
    let lines = run_py(&py, "peer.py", &["list"], LONG);
    let pylist = py_json(&one(&lines, "list "), "list ");
    let pylist: Vec<String> = serde_json::from_value(pylist).unwrap();
    assert!(
        pylist.contains(&ours) && pylist.contains(&theirs),
        "{pylist:?}"
    );
}

#[test]
fn unlink_from_either_side_is_seen_by_the_other() {
    let Some(py) = python() else { return };
    let ours = unique_name("unl-ours");
    let theirs = unique_name("unl-theirs");
    let _c = Cleanup::new([&ours, &theirs]);

    // Python unlinks a Rust stream.
    let w = Stream::create(&ours, &[3], Dtype::I32).unwrap();
    w.write_slice(&[1i32, 2, 3]).unwrap();
    assert_eq!(
        one(&run_py(&py, "peer.py", &["open", &ours], LONG), "open "),
        "open ok 1"
    );
    run_py(&py, "peer.py", &["unlink", &ours], LONG);
    assert!(matches!(
        shmstream::stat(&ours),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(Stream::open(&ours), Err(Error::NotFound { .. })));
    assert!(!shmstream::list_streams().unwrap().contains(&ours));
    // pyshmem's unlink does not invalidate the sequence, so a plain read through an old
    // handle may still return the last frame; but the handle knows its generation is gone.
    assert!(
        matches!(w.unlink(), Err(Error::Stale { .. })),
        "{:?}",
        w.unlink()
    );
    // A waiting read notices at its deadline instead of reporting a timeout.
    let _ = w.read::<i32>(); // consume frame 1 (it may still be readable)
    let e = w
        .read_new::<i32>(Some(Duration::from_millis(100)))
        .unwrap_err();
    assert!(matches!(e, Error::Stale { .. }), "{e:?}");

    // Rust unlinks a stream Python created.
    let dir = TmpDir(tmp_dir("interop-unlink"));
    let file = dir.0.join("t.bin");
    std::fs::write(&file, bytes_of(&[9u8; 4])).unwrap();
    let mf = dir.0.join("m.json");
    std::fs::write(&mf, serde_json::to_vec(&serde_json::json!([{"name": theirs, "dtype": "uint8", "shape": [4], "file": s(&file), "frame_id": 0}])).unwrap()).unwrap();
    run_py(&py, "peer.py", &["create_write", s(&mf)], LONG);
    assert_eq!(
        Stream::open(&theirs)
            .unwrap()
            .read::<u8>()
            .unwrap()
            .as_slice()
            .unwrap(),
        &[9; 4]
    );
    shmstream::unlink(&theirs).unwrap();
    assert_eq!(
        one(&run_py(&py, "peer.py", &["stat", &theirs], LONG), "stat "),
        "stat missing"
    );
    assert_eq!(
        one(&run_py(&py, "peer.py", &["open", &theirs], LONG), "open "),
        "open missing"
    );
    let pylist: Vec<String> = serde_json::from_value(py_json(
        &one(&run_py(&py, "peer.py", &["list"], LONG), "list "),
        "list ",
    ))
    .unwrap();
    assert!(
        !pylist.contains(&theirs) && !pylist.contains(&ours),
        "{pylist:?}"
    );

    // The name is free again for either side.
    let again = Stream::create(&theirs, &[1], Dtype::U8).unwrap();
    again.write_slice(&[4u8]).unwrap();
    assert_eq!(
        one(&run_py(&py, "peer.py", &["open", &theirs], LONG), "open "),
        "open ok 4"
    );
}

/// The lock file is where pyshmem has it whatever temporary-directory variables are set
/// (Python's `tempfile.gettempdir()` order: `$TMPDIR`, `$TEMP`, `$TMP`, usable ones only,
/// made absolute): a Rust writer and a pyshmem writer elsewhere would write at once. Usable
/// is Python's probe, not `access(2)`: root may access `/sys/kernel` but create nothing there.
#[test]
fn the_lock_file_is_where_pyshmem_has_it() {
    if child_role().as_deref() == Some("lock-path") {
        let name: String = param("name");
        say(&format!(
            "path {}",
            shmstream::name::lock_path(&name).display()
        ));
        return;
    }
    let Some(py) = python() else { return };
    let dir = TmpDir(tmp_dir("interop-tmpvars"));
    let (tmp, temp) = (dir.0.join("tmp"), dir.0.join("temp"));
    std::fs::create_dir(&tmp).unwrap();
    std::fs::create_dir(&temp).unwrap();
    let missing = dir.0.join("missing");
    let dotted = format!("{}/./x/..", s(&temp));
    let name = unique_name("lockpath");
    let mut cases = vec![
        [("TMPDIR", ""), ("TEMP", ""), ("TMP", s(&tmp))],
        [
            ("TMPDIR", s(&missing)),
            ("TEMP", s(&temp)),
            ("TMP", s(&tmp)),
        ],
        [("TMPDIR", dotted.as_str()), ("TEMP", ""), ("TMP", "")],
    ];
    let sysfs = Path::new("/sys/kernel");
    let probe = sysfs.join(format!("shmstream-probe-{}", std::process::id()));
    if !common::is_root() || !sysfs.is_dir() {
        eprintln!(
            "skipping TMPDIR={}: needs root and that directory",
            s(sysfs)
        );
    } else if std::fs::File::create_new(&probe).is_ok() {
        let _ = std::fs::remove_file(&probe);
        eprintln!("skipping TMPDIR={}: files can be created there", s(sysfs));
    } else {
        cases.push([("TMPDIR", s(sysfs)), ("TEMP", ""), ("TMP", s(&tmp))]);
    }
    for vars in cases {
        let out = std::process::Command::new(&py)
            .args([
                "-c",
                "import sys, pyshmem._shared as s; print(s._lock_path(sys.argv[1]))",
                &name,
            ])
            .envs(vars)
            .env("PYSHMEM_LOCK_DIR", "")
            .output()
            .unwrap();
        assert!(out.status.success(), "{vars:?}: {out:?}");
        let theirs = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let mut c = child("the_lock_file_is_where_pyshmem_has_it", "lock-path")
            .param("name", &name)
            .env("PYSHMEM_LOCK_DIR", "");
        for (k, v) in vars {
            c = c.env(k, v);
        }
        let lines = c.run(LONG);
        let ours = lines
            .iter()
            .find_map(|l| l.strip_prefix("path "))
            .unwrap_or_else(|| panic!("{vars:?}: {lines:?}"));
        assert_eq!(ours, theirs, "{vars:?}");
    }
}

/// What `stat` or `open` saw of a stream: its shape, dtype and count.
type Seen = Result<(Vec<usize>, Dtype, u64), Error>;

/// A call that waits for a creation in progress: `stat` or `open` of the stream. Each waits
/// up to [`LONG`] (not 5 s) for the creation: the test, not the host's load, ends the
/// creator's window.
fn look_during_creation(call: &'static str, name: &str) -> Seen {
    match call {
        "stat" => shmstream::stat_within(name, LONG).map(|st| (st.shape, st.dtype, st.count)),
        "open" => {
            Stream::open_within(name, LONG).map(|s| (s.shape().to_vec(), s.dtype(), s.count()))
        }
        _ => unreachable!("{call}"),
    }
}

/// Starts [`look_during_creation`] on a thread and returns once that thread waits for the
/// creation under the name's lock: the name's lock file open in this process (only that
/// wait opens it before a stream is open) and the thread asleep between its looks. A call
/// that returns before it waits fails the test.
fn waiting_for_creation(call: &'static str, name: &str) -> std::thread::JoinHandle<Seen> {
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let h = {
        let name = name.to_owned();
        std::thread::spawn(move || {
            tid_tx.send(common::gettid()).unwrap();
            look_during_creation(call, &name)
        })
    };
    let tid = tid_rx.recv().unwrap() as u32;
    let lock = shmstream::name::lock_path(name);
    let lock = std::fs::canonicalize(&lock).unwrap_or(lock);
    let lock_open = || {
        std::fs::read_dir("/proc/self/fd").is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == lock))
        })
    };
    let deadline = Instant::now() + LONG;
    loop {
        if h.is_finished() {
            let returned = h.join().unwrap();
            panic!("{call} returned during the creation without waiting for it: {returned:?}");
        }
        if common::parked_on_stream(std::process::id(), tid, name, false) && lock_open() {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "{call} never waited for the creation"
        );
        std::thread::yield_now();
    }
}

/// pyshmem writes a header's magic only after zero-filling the payload (and its name after
/// a GPU stream's CUDA setup), holding the name's lock: `open` and `stat` during that time
/// wait for the creation, never reporting a corrupt header (row 19).
#[test]
fn open_during_a_slow_pyshmem_create_waits_for_the_stream() {
    let Some(py) = python() else { return };
    for call in ["stat", "open"] {
        let name = unique_name("interop-slow-create");
        let _c = Cleanup::new([&name]);
        let mut p = Proc::spawn(py_command(&py, "peer.py", &["create_slowly", &name]));
        p.expect_line("creating", LONG);
        let waiting = waiting_for_creation(call, &name);
        p.send_line("go");
        let seen = waiting.join().unwrap();
        assert_eq!(
            seen.map_err(|e| format!("{call}: {e}")),
            Ok((vec![4], Dtype::U8, 0))
        );
        p.expect_line("created", LONG);
        p.expect_line("ready", LONG);
        p.send_line("go");
        p.wait_success(LONG);
    }
}

/// pyshmem's `create` writes its header in place under the name's lock, in steps that each
/// leave it invalid for a moment (the instance id stored before its flag, the CRC flag set
/// before the CRC): `open` and `stat` meeting a creator stopped in one wait for it (they
/// reported a corrupt header after 50 ms, whose remedy said to unlink the stream; row 19).
#[test]
fn open_during_a_pyshmem_create_stopped_mid_header_waits_for_the_stream() {
    let Some(py) = python() else { return };
    for window in ["instance_id", "crc"] {
        for call in ["stat", "open"] {
            let name = unique_name("interop-mid-header");
            let _c = Cleanup::new([&name]);
            let mut p = Proc::spawn(py_command(
                &py,
                "peer.py",
                &["create_stalled", &name, window],
            ));
            p.expect_line("stalled", LONG);
            let waiting = waiting_for_creation(call, &name);
            p.send_line("go");
            let seen = waiting.join().unwrap();
            assert_eq!(
                seen.map_err(|e| format!("{window}: {call}: {e}")),
                Ok((vec![4], Dtype::U8, 0))
            );
            p.expect_line("created", LONG);
            p.expect_line("ready", LONG);
            p.send_line("go");
            p.wait_success(LONG);
        }
    }
}

/// A pyshmem creation that fails after its `_meta` exists removes its segments: `open` and
/// `stat` waiting for it then report the stream not found (they reported a corrupt header,
/// whose remedy, unlink, then said "not found" too).
#[test]
fn open_during_a_pyshmem_create_that_fails_finds_no_stream() {
    let Some(py) = python() else { return };
    for call in ["stat", "open"] {
        let name = unique_name("interop-failed-create");
        let _c = Cleanup::new([&name]);
        let mut p = Proc::spawn(py_command(&py, "peer.py", &["create_failing", &name]));
        p.expect_line("creating", LONG);
        let waiting = waiting_for_creation(call, &name);
        p.send_line("go");
        let seen = waiting.join().unwrap();
        assert!(
            matches!(
                seen,
                Err(Error::NotFound {
                    unfinished: false,
                    ..
                })
            ),
            "{call}: {seen:?}"
        );
        p.expect_line("failed", LONG);
        p.wait_success(LONG);
    }
}

/// pyshmem hashes any non-blank name, `/` included: such a stream made on either side is
/// opened, read, stat'ed and unlinked on the other (it was listed but refused here).
#[test]
fn names_with_a_slash_are_shared_with_pyshmem() {
    let Some(py) = python() else { return };
    let theirs = format!("{}/left", unique_name("cams"));
    let ours = format!("{}/right", unique_name("cams"));
    let _c = Cleanup::new([&theirs, &ours]);
    let dir = TmpDir(tmp_dir("interop-slash"));
    let file = dir.0.join("t.bin");
    std::fs::write(&file, bytes_of(&[7u8; 4])).unwrap();
    let mf = dir.0.join("m.json");
    std::fs::write(&mf, serde_json::to_vec(&serde_json::json!([{"name": theirs, "dtype": "uint8", "shape": [4], "file": s(&file), "frame_id": 0}])).unwrap()).unwrap();
    run_py(&py, "peer.py", &["create_write", s(&mf)], LONG);
    let r = Stream::open(&theirs).unwrap();
    assert_eq!(r.read::<u8>().unwrap().as_slice().unwrap(), &[7; 4]);
    assert_eq!(shmstream::stat(&theirs).unwrap().name, theirs);
    drop(r);
    shmstream::unlink(&theirs).unwrap();
    assert_eq!(
        one(&run_py(&py, "peer.py", &["open", &theirs], LONG), "open "),
        "open missing"
    );
    let w = Stream::create(&ours, &[1], Dtype::U8).unwrap();
    w.write_slice(&[5u8]).unwrap();
    assert_eq!(
        one(&run_py(&py, "peer.py", &["open", &ours], LONG), "open "),
        "open ok 5"
    );
}

#[test]
fn python_and_rust_writers_serialize_on_the_same_lock() {
    let Some(py) = python() else { return };
    let name = unique_name("interop-lock");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[1], Dtype::I64).unwrap();
    s.write_slice(&[0i64]).unwrap();
    const N: i64 = 400;
    let mut p = Proc::spawn(py_command(
        &py,
        "peer.py",
        &["increment", &name, &N.to_string()],
    ));
    p.expect_line("ready", LONG);
    p.send_line("go");
    let w = Stream::open(&name).unwrap();
    for _ in 0..N {
        let g = w.lock(Some(LONG)).unwrap();
        let v = g.live::<i64>().unwrap()[[0]];
        g.write_slice(&[v + 1]).unwrap();
    }
    p.expect_line("done", Duration::from_secs(120));
    p.wait_success(LONG);
    assert_eq!(
        s.read::<i64>().unwrap()[[0]],
        2 * N,
        "lost updates: Python and Rust writers were not serialized"
    );
    assert_eq!(s.count(), 2 * N as u64 + 1);
}

/// Whether the main thread of process `pid` is blocked in a shared `FUTEX_WAIT` on the
/// word at `addr` (in its address space), as `/proc/PID/task/PID/syscall` shows it.
fn parked_on(pid: u32, addr: u64) -> bool {
    common::blocked_syscall(pid, pid).is_some_and(|(nr, args)| {
        nr == libc::SYS_futex && args.get(..2) == Some(&[addr, libc::FUTEX_WAIT as u64][..])
    })
}

/// Waits (yielding, within [`LONG`]) until [`parked_on`] holds.
fn wait_parked(p: &mut Proc, addr: u64) {
    let failure = || {
        format!(
            "pyshmem's read_new never parked on {addr:#x}\n{}",
            p.diagnostics()
        )
    };
    common::eventually(LONG, failure, || {
        parked_on(p.pid(), addr)
            .then_some(())
            .or_else(common::yield_now)
    });
}

/// Creates the notify stream `name` holding one frame, and starts a pyshmem peer in
/// `read_new` on it, without a timeout and its park cap raised to an hour; returns once the
/// peer is seen parked on the stream's futex word.
fn python_parked_on_a_new_stream(py: &Path, name: &str) -> (Stream, Proc) {
    let s = StreamOptions::new(name)
        .shape(&[2])
        .dtype(Dtype::I32)
        .notify(true)
        .create()
        .unwrap();
    s.write_slice(&[1i32, 1]).unwrap();
    let mut p = Proc::spawn(py_command(py, "peer.py", &["read_new_parked", name]));
    let waiting = p.expect_line("waiting", LONG);
    let (count, addr) = waiting.split_once(" 0x").unwrap();
    assert_eq!(count, "1");
    wait_parked(&mut p, u64::from_str_radix(addr, 16).unwrap());
    (s, p)
}

/// A Rust write wakes pyshmem's `read_new` parked on the stream's futex. The peer waits
/// without a timeout, its park cap (50 ms, after which pyshmem looks at the count again)
/// raised to an hour, and the write comes only once the peer is seen parked on the word: a
/// wake that missed it (another word, a private futex) leaves it parked past [`LONG`],
/// where with the cap it would only have polled.
#[test]
fn python_read_new_wakes_on_a_rust_write() {
    let Some(py) = python() else { return };
    let name = unique_name("interop-wake");
    let _c = Cleanup::new([&name]);
    let (s, mut p) = python_parked_on_a_new_stream(&py, &name);
    s.write_slice(&[100i32, 100]).unwrap();
    let got = p.line_within(LONG);
    assert_eq!(
        got.as_deref(),
        Some("got 100 2"),
        "the Rust write's wake missed pyshmem's parked read_new\n{}",
        p.diagnostics()
    );
    p.wait_success(LONG);
}

/// Our unlink ends pyshmem's `read_new` parked on the stream: the unlink stores a negative
/// sequence, which pyshmem reads as a stream it must refuse, and wakes the futex. With the
/// park cap raised to an hour (as above), a store pyshmem does not refuse, or a wake that
/// missed it, leaves the peer parked past [`LONG`].
#[test]
fn our_unlink_ends_a_python_read_new_parked_on_the_stream() {
    let Some(py) = python() else { return };
    let name = unique_name("interop-unlink-wake");
    let _c = Cleanup::new([&name]);
    let (_s, mut p) = python_parked_on_a_new_stream(&py, &name);
    shmstream::unlink(&name).unwrap();
    let got = p.line_within(LONG);
    assert!(
        got.as_deref().is_some_and(|l| l.starts_with("refused ")
            && l.contains(&format!("stream '{name}' contains an incomplete write"))),
        "pyshmem's parked read_new did not end at our unlink: {got:?}\n{}",
        p.diagnostics()
    );
    p.wait_success(LONG);
}

/// The other direction can only be shown by timing, since our park cap is raised only in
/// unit tests: so this test checks the data, and the wake is shown transitively.
/// `python_read_new_wakes_on_a_rust_write` shows our wake reaches pyshmem's wait (same word,
/// shared futex); `notify::tests::a_parked_wait_is_woken_by_the_writers_wake_not_its_cap`
/// shows our wait is woken by our wake; pyshmem's own wait and wake key on the same
/// `_seq_word_addr` with shared futex ops. So pyshmem's wake reaches our wait.
#[test]
fn rust_read_new_wakes_on_a_python_write() {
    let Some(py) = python() else { return };
    let name = unique_name("interop-wake2");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[3])
        .dtype(Dtype::U32)
        .notify(true)
        .create()
        .unwrap();
    s.write_slice(&[1u32; 3]).unwrap();
    let r = Stream::open_readonly(&name).unwrap();
    assert_eq!(r.read::<u32>().unwrap()[[0]], 1);
    let mut p = Proc::spawn(py_command(
        &py,
        "peer.py",
        &["write_on_go", &name, "77", "4242"],
    ));
    p.expect_line("ready", LONG);
    p.send_line("go");
    let pub_ = r.read_new_publication::<u32>(Some(LONG)).unwrap();
    assert_eq!(pub_.payload.as_slice().unwrap(), &[77; 3]);
    assert_eq!((pub_.info.count, pub_.info.frame_id), (2, 4242));
    assert_eq!(p.expect_line("wrote", LONG), "2");
    p.wait_success(LONG);
}

/// A pyshmem producer that writes a uint8 mask viewed as bool (an OpenCV 0/255 mask, no
/// copy) stores bytes 0, 255, 2, 1; numpy and pyshmem read every nonzero byte as True, and
/// so do our reads (guarantees row 10). A Rust write of what was read stores 0 and 1 only.
#[test]
fn a_pyshmem_bool_view_of_a_uint8_mask_reads_as_numpy_reads_it() {
    let Some(py) = python() else { return };
    let name = unique_name("interop-bool-mask");
    let _c = Cleanup::new([&name]);
    let w = StreamOptions::new(&name)
        .shape(&[4])
        .dtype(Dtype::Bool)
        .notify(true)
        .create()
        .unwrap();
    w.write_slice(&[false; 4]).unwrap();
    let r = Stream::open_readonly(&name).unwrap();
    assert_eq!(r.read::<bool>().unwrap().as_slice().unwrap(), &[false; 4]);
    let mut p = Proc::spawn(py_command(
        &py,
        "peer.py",
        &["write_bool_mask_on_go", &name],
    ));
    p.expect_line("ready", LONG);
    p.send_line("go");
    let expected = [false, true, true, true];
    let new = r.read_new_publication::<bool>(Some(LONG)).unwrap();
    assert_eq!(
        (new.payload.as_slice().unwrap(), new.info.count),
        (&expected[..], 2)
    );
    assert_eq!(
        p.expect_line("wrote", LONG),
        "2 0,255,2,1 False,True,True,True",
        "pyshmem stored the mask's bytes and reads them as numpy does"
    );
    p.wait_success(LONG);
    assert_eq!(r.read::<bool>().unwrap().as_slice().unwrap(), &expected);
    let mut buf = [false; 4];
    assert_eq!(r.read_into_slice(&mut buf).unwrap(), 2);
    assert_eq!(buf, expected);
    let mut raw = [0u8; 4];
    r.read_publication_into_bytes(&mut raw).unwrap();
    assert_eq!(raw, [0, 255, 2, 1], "the raw bytes are the producer's");
    w.write_slice(&buf).unwrap();
    r.read_publication_into_bytes(&mut raw).unwrap();
    assert_eq!(raw, [0, 1, 1, 1], "our writes store 0 and 1 only");
}

#[test]
fn aborted_writes_are_reported_on_both_sides() {
    let Some(py) = python() else { return };
    let name = unique_name("interop-abort");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[4], Dtype::F32).unwrap();
    s.write_slice(&[2.0f32; 4]).unwrap();
    // Rust aborts: Python sees InconsistentStreamError.
    let _ = s.write_view(|_: &mut [f32]| Err::<(), _>("abort"));
    assert_eq!(
        one(
            &run_py(&py, "peer.py", &["read_error", &name], LONG),
            "error "
        ),
        "error InconsistentStreamError"
    );
    s.write_slice(&[3.0f32; 4]).unwrap();
    assert_eq!(
        one(
            &run_py(&py, "peer.py", &["read_error", &name], LONG),
            "error "
        ),
        "error none 3.0"
    );
    // Python aborts: Rust sees Inconsistent, and recovers on the next write.
    run_py(&py, "peer.py", &["abort_write", &name], LONG);
    assert!(
        matches!(s.read::<f32>(), Err(Error::Inconsistent { .. })),
        "{:?}",
        s.read::<f32>()
    );
    s.write_slice(&[4.0f32; 4]).unwrap();
    assert_eq!(s.read::<f32>().unwrap().as_slice().unwrap(), &[4.0; 4]);
}

/// A pyshmem writer that takes the lock from a shmstream writer killed inside its bracket
/// (odd sequence S, lock free) stores S+1, even, for its copy and S+2, odd, at its end, and
/// each later pyshmem write does the same: a reader during any of those copies can accept a
/// torn frame (`docs/guarantees.md`, *Limits*). pyshmem's readers never end it (they look
/// for a dead writer through the owner pid, which pyshmem's release cleared); ours do, at
/// their first look at the free lock: the generation is marked invalid, and the next
/// pyshmem write starts a fresh odd one, its copy under an odd sequence again.
#[test]
fn a_pyshmem_takeover_of_a_dead_writers_bracket_is_ended_by_our_first_read() {
    const FN: &str = "a_pyshmem_takeover_of_a_dead_writers_bracket_is_ended_by_our_first_read";
    if child_role().as_deref() == Some("stuck-writer") {
        let s = Stream::open(&param::<String>("name")).unwrap();
        s.write_view(|buf: &mut [u32]| {
            buf[..2].fill(9);
            say("inside");
            common::block_on_stdin();
            Ok::<_, std::convert::Infallible>(())
        })
        .unwrap();
        return;
    }
    let Some(py) = python() else { return };
    let name = unique_name("interop-takeover");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[4], Dtype::U32).unwrap();
    s.write_slice(&[1u32; 4]).unwrap();
    let mut w = child(FN, "stuck-writer").param("name", &name).spawn();
    w.expect_line("inside", LONG);
    w.kill_reaped();
    let dead = common::write_sequence(&name);
    assert!(dead > 0 && dead % 2 == 1, "a dead writer's bracket: {dead}");
    // pyshmem takes over, twice: each write ends on an odd sequence (its copy ran under an
    // even one), and no pyshmem write mends it.
    run_py(&py, "peer.py", &["write_n", &name, "2", "5"], LONG);
    assert_eq!(common::write_sequence(&name), dead + 4, "pyshmem's writes");
    // Our first read (a read-only handle's, as `shmstream dump`'s) finds the odd sequence
    // with the lock free: a dead writer's bracket.
    let r = Stream::open_readonly(&name).unwrap();
    let first = r.read_publication::<u32>();
    assert!(
        matches!(first, Err(Error::Inconsistent { .. })),
        "{first:?}"
    );
    assert_eq!(common::write_sequence(&name), -(dead + 4), "marked invalid");
    // pyshmem's next write starts a fresh odd generation and ends even.
    run_py(&py, "peer.py", &["write_n", &name, "1", "7"], LONG);
    let mended = common::write_sequence(&name);
    assert!(mended > dead + 4 && mended % 2 == 0, "{mended}");
    assert_eq!(s.read::<u32>().unwrap().as_slice().unwrap(), &[7; 4]);
    assert_eq!(
        s.count(),
        4,
        "our frame and pyshmem's three (the dead writer counted none)"
    );
}

/// After pyshmem unlinks a stream and creates a new one under the same name, a Rust handle on
/// the old generation gets `Error::Stale` from `read()` (issue 3: "a handle whose name now
/// belongs to a newer generation gets a Stale error on unlink and on reads"), although
/// pyshmem's unlink leaves the old header looking valid: reads check the segment's link count
/// on a coarse clock.
#[test]
fn rust_handle_reads_stale_after_python_unlink_and_recreate() {
    let Some(py) = python() else { return };
    let name = unique_name("interop-regen");
    let _c = Cleanup::new([&name]);
    let old = Stream::create(&name, &[2], Dtype::U8).unwrap();
    old.write_slice(&[1u8, 1]).unwrap();
    run_py(&py, "peer.py", &["unlink", &name], LONG);
    let dir = TmpDir(tmp_dir("interop-regen"));
    let file = dir.0.join("t.bin");
    std::fs::write(&file, [2u8, 2]).unwrap();
    let mf = dir.0.join("m.json");
    std::fs::write(&mf, serde_json::to_vec(&serde_json::json!([{"name": name, "dtype": "uint8", "shape": [2], "file": s(&file), "frame_id": 0}])).unwrap()).unwrap();
    run_py(&py, "peer.py", &["create_write", s(&mf)], LONG);
    assert_ne!(
        shmstream::stat(&name).unwrap().instance_id.unwrap(),
        old.instance_id()
    );
    assert_eq!(
        Stream::open(&name)
            .unwrap()
            .read::<u8>()
            .unwrap()
            .as_slice()
            .unwrap(),
        &[2, 2]
    );
    let r = old.read::<u8>();
    assert!(
        matches!(r, Err(Error::Stale { .. })),
        "old handle read {r:?} after the name was recreated"
    );
}

/// docs/format.md: flag bit 5 `CUDA_IPC` is ours, and pyshmem refuses a header carrying it
/// with "unsupported metadata flags". A CPU stream pyshmem opens is refused once the bit is
/// set in its `_meta` (the CRC restamped, so the flag is the only rule broken), and opened
/// again once the header is restored.
#[test]
fn pyshmem_refuses_a_stream_with_the_cuda_ipc_flag() {
    use shmstream::format::{self, FLAG_CUDA_IPC, META_BYTES, offset};
    use std::os::unix::fs::FileExt;
    let Some(py) = python() else { return };
    let name = unique_name("interop-cuda-ipc");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[4], Dtype::U8).unwrap();
    s.write_slice(&[3u8; 4]).unwrap();
    let open = || one(&run_py(&py, "peer.py", &["open_refused", &name], LONG), "");
    assert_eq!(open(), "opened");

    let meta = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/{}", shmstream::name::meta_id(&name)))
        .unwrap();
    let mut b = [0u8; META_BYTES];
    meta.read_exact_at(&mut b, 0).unwrap();
    let original = b;
    let flags = u32::from_le_bytes(b[offset::FLAGS..offset::FLAGS + 4].try_into().unwrap());
    b[offset::FLAGS..offset::FLAGS + 4].copy_from_slice(&(flags | FLAG_CUDA_IPC).to_le_bytes());
    let crc = format::crc(&b);
    b[offset::HEADER_CRC..offset::HEADER_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    let put = |b: &[u8; META_BYTES]| {
        for at in [offset::FLAGS, offset::HEADER_CRC] {
            meta.write_all_at(&b[at..at + 4], at as u64).unwrap();
        }
    };
    put(&b);
    let refused = open();
    put(&original);
    assert!(
        refused.starts_with("refused ValueError: unsupported metadata flags"),
        "{refused}"
    );
    assert_eq!(open(), "opened");
}

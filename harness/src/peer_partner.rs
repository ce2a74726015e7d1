//! The pyshmem peer's partner process (`harness/peer/pyshmem_peer.py`, which the harness
//! runs) dies with the leader that spawned it. Test only, beside the peer it tests; it runs
//! where `SHMSTREAM_PYTHON` names a Python with pyshmem and numpy.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The state letter of process `pid` (`None` once it is gone).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// A pingpong peer's leader killed hard (SIGKILL: with a harness killed hard, the harness's
/// group kill never comes) takes its partner with it at once, not after the partner's 60 s
/// read timeout: the partner is up (it has acknowledged on the ack stream) when its leader
/// is killed, and gone or a zombie well within that.
#[test]
fn the_peer_partner_dies_with_its_leader() {
    let Some(python) = std::env::var_os("SHMSTREAM_PYTHON") else {
        assert!(
            std::env::var_os("SHMSTREAM_REQUIRE_PYTHON").is_none(),
            "SHMSTREAM_REQUIRE_PYTHON is set but SHMSTREAM_PYTHON is not"
        );
        eprintln!("skipped: SHMSTREAM_PYTHON is not set (the pyshmem peer needs it)");
        return;
    };
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("peer-partner-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let names = ["data", "ack", "ctl"].map(|k| format!("ppd{pid}-{k}"));
    // A core this process may use (a cpuset may leave out core 0).
    let core = crate::spawn::allowed_cores()
        .and_then(|c| c.first().copied())
        .unwrap_or(0);
    // A warm-up far longer than the test: the leader is still in it when killed.
    let spec = serde_json::json!({
        "kind": "pingpong", "shape": [8], "dtype": "float32", "wait": "park",
        "notify": true, "gap_us": 0.0,
        "timing": {"warmup": 600.0, "min_seconds": 1.0, "repeats": 1},
        "writer_cpu": core, "reader_cpu": core,
        "names": {"data": names[0], "ack": names[1], "ctl": names[2]},
        "samples_path": dir.join("samples"), "kernel_path": dir.join("kernel.json"),
    });
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let mut cmd = Command::new(python);
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/peer/pyshmem_peer.py"))
        .arg(&spec_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
    harness_sys::die_with_parent(&mut cmd);
    let mut leader = cmd.spawn().unwrap();
    // The partner acknowledges once it has opened the streams, past its start.
    let timeout = Duration::from_secs(60);
    let start = Instant::now();
    let ack = loop {
        match shmstream::Stream::open_readonly(&names[1]) {
            Ok(s) => break s,
            Err(shmstream::Error::NotFound { .. }) if start.elapsed() < timeout => {
                assert!(leader.try_wait().unwrap().is_none(), "the leader exited");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("opening {}: {e}", names[1]),
        }
    };
    ack.wait_for_count(0, Some(timeout)).unwrap();
    let children = format!("/proc/{0}/task/{0}/children", leader.id());
    // Among its children (Python's multiprocessing resource tracker too), the partner.
    let partner: u32 = std::fs::read_to_string(children)
        .unwrap()
        .split_whitespace()
        .find(|p| {
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).any(|a| a == b"--role")
        })
        .expect("the leader has no partner child")
        .parse()
        .unwrap();
    leader.kill().unwrap();
    leader.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut left = state(partner);
    while left.is_some_and(|s| s != 'Z') && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        left = state(partner);
    }
    harness_sys::kill(partner);
    drop(ack);
    for name in &names {
        let _ = shmstream::unlink_quiet(name);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        left.is_none_or(|s| s == 'Z'),
        "the partner {partner} outlived its leader by 20 s (state {left:?})"
    );
}

//! Two hosts on one machine: a pair of Linux network namespaces joined by a veth link, a
//! bridge in each, so that frames cross a real (non-loopback) TCP link that the test can
//! cut. `ip netns exec` gives each bridge a copy of the test's mount namespace, so /dev/shm is
//! the same file system on both sides: each side's streams have names of their own (the
//! subscriber's `--local-prefix`). Needs root and `ip netns`: where either is missing, or the
//! set-up fails, the tests say so on stdout and pass.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::common::{self, Cleanup, LONG, Proc, unique_name};
use super::{reported_lost, said, source, wait_carrying, wait_frame_within, wait_linked};

/// Host A's address on the link (B's is [`B_IP`]); each test has namespaces of its own.
const A_IP: &str = "10.77.0.1";
const B_IP: &str = "10.77.0.2";
/// The interface of the link in each namespace.
const VETH: &str = "veth0";
/// How long the peers may take to reconnect after a cut: 5–6 s seen here, 17 s once on a
/// loaded machine (the subscriber's connect retries back off). At 100 Hz the frames written
/// meanwhile stay within the source's history.
const RECONNECT: Duration = Duration::from_secs(60);

/// Two network namespaces `A` and `B` (named with the test's pid and a counter) joined by a
/// veth link, [`A_IP`] and [`B_IP`] on it, loopback up in each; deleted on drop (also
/// when the test panics), which deletes the link and ends nothing but the link: bridges
/// still running in them are the test's to end.
struct TwoHosts {
    a: String,
    b: String,
}

impl TwoHosts {
    /// The two hosts, or `None` after saying why on stdout: not root, or a step of the set-up
    /// failed (no `ip`, no CAP_SYS_ADMIN, a kernel without namespaces or veth, a sandbox that
    /// refuses `ip netns exec`'s mount namespace, no `bash` or `timeout` to run in them).
    fn new(test: &str) -> Option<TwoHosts> {
        if !common::is_root() {
            println!("skipping {test}: it makes network namespaces, which needs root");
            return None;
        }
        delete_orphans();
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{NS_PREFIX}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let (a, b) = (format!("{id}-a"), format!("{id}-b"));
        if let Err(why) = ip(&["netns", "add", &a]) {
            println!("skipping {test}: `ip netns add` failed: {why}");
            return None;
        }
        // From here the drop deletes whatever was made.
        let hosts = TwoHosts { a, b };
        match hosts.set_up() {
            Ok(()) => Some(hosts),
            Err(why) => {
                println!("skipping {test}: the two hosts cannot be set up: {why}");
                None
            }
        }
    }

    /// B, the veth link and its addresses, loopback up in each, and a probe that a program
    /// runs in each namespace with what [`TwoHosts::tcp_connects`] needs.
    fn set_up(&self) -> Result<(), String> {
        ip(&["netns", "add", &self.b])?;
        ip(&[
            "link", "add", VETH, "netns", &self.a, "type", "veth", "peer", "name", VETH, "netns",
            &self.b,
        ])?;
        for (ns, addr) in [(&self.a, A_IP), (&self.b, B_IP)] {
            let cidr = format!("{addr}/24");
            ip(&["-n", ns, "addr", "add", &cidr, "dev", VETH])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", VETH, "up"])?;
            let probe = self
                .command(ns, "timeout", &["5", "bash", "-c", "true"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running ip netns exec: {e}"))?;
            if !probe.status.success() {
                return Err(format!(
                    "`ip netns exec {ns} timeout 5 bash -c true`: {}: {}",
                    probe.status,
                    String::from_utf8_lossy(&probe.stderr).trim()
                ));
            }
        }
        Ok(())
    }

    /// Runs `ip ARGS` in namespace `ns`, panicking with its stderr if it fails.
    fn ip_in(&self, ns: &str, args: &[&str]) {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        ip(&all).unwrap();
    }

    /// `program ARGS` to run in namespace `ns`.
    fn command(&self, ns: &str, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]).args(args);
        c
    }

    /// A bridge with `args` in namespace `ns` (`ip netns exec` execs it: the child is the
    /// bridge itself, its signals its own), started as [`super::bridge`] starts one.
    fn bridge(&self, ns: &str, args: &[&str]) -> Proc {
        let mut c = self.command(ns, env!("CARGO_BIN_EXE_shmstream-bridge"), args);
        common::default_stop_signals(&mut c);
        // A test binary killed (a CI timeout) takes its bridges with it: a subscriber would
        // otherwise retry its connection forever. (`ip netns exec` keeps the setting.)
        common::die_with_spawner(&mut c);
        Proc::spawn(c)
    }

    /// Takes A's end of the link down (`up` false: a cable pulled; B's end loses its carrier)
    /// or up again (the link's route comes back with it).
    fn link_a(&self, up: bool) {
        self.ip_in(
            &self.a,
            &["link", "set", VETH, if up { "up" } else { "down" }],
        );
    }

    /// Whether a TCP connection from namespace `ns` to `addr:port` is accepted (bash's
    /// `/dev/tcp`; refused or unreachable is `false`).
    fn tcp_connects(&self, ns: &str, addr: &str, port: u16) -> bool {
        let script = format!("exec 3<>/dev/tcp/{addr}/{port}");
        self.command(ns, "timeout", &["5", "bash", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// The start of the namespaces' names, followed by the test binary's pid.
const NS_PREFIX: &str = "shmstream-";

/// Deletes the namespaces a test binary that no longer runs left (killed before its drops
/// ran): named [`NS_PREFIX`] and the pid of no live process.
fn delete_orphans() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Runs `ip ARGS`: its stderr as the error where it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "ip {}: {}: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Stops bridge `p` with SIGINT and returns what it said: its summaries, said as it ends.
fn stop(p: &mut Proc) -> String {
    // SAFETY: kill(2) on our own child's pid, which it keeps until we reap it.
    let sent = unsafe { libc::kill(p.pid() as libc::pid_t, libc::SIGINT) };
    assert_eq!(sent, 0);
    let st = p.wait_timeout(LONG);
    let said = p.diagnostics();
    assert!(st.success(), "after SIGINT: {st}\n{said}");
    assert!(!said.contains("panicked"), "{said}");
    said
}

/// A lossless publisher in A listening on A's link address and a subscriber in B
/// connected to it carry the u16 [4, 8] stream; frames are written at about 100 Hz, and
/// after a second the link is cut for `cut` (A's end down), then restored, and written on
/// until one written after it is mirrored (the peers reconnected by themselves; waited up
/// to [`LONG`]). Every frame mirrored is intact and in order, and each of the others is
/// reported lost by a bridge; returns how many were lost and how long the first frame
/// written after the link returned took to be mirrored.
fn cut_link_while_frames_flow(test: &str, cut: Duration, depth: usize) -> Option<(u64, Duration)> {
    let hosts = TwoHosts::new(test)?;
    let (a_name, prefix) = (unique_name("br-ns"), unique_name("br-key"));
    let b_name = format!("m-{a_name}");
    let _c = Cleanup::new([&a_name, &b_name]);
    let a = source(&a_name, depth);
    let ep = format!("tcp/{A_IP}:7447");
    let mut p = hosts.bridge(
        &hosts.a,
        &[
            "publish",
            &a_name,
            "--lossless",
            "--listen",
            &ep,
            "--key-prefix",
            &prefix,
        ],
    );
    // The mirror deeper than all the frames written: the test's cursor is not lapped.
    let mut s = hosts.bridge(
        &hosts.b,
        &[
            "subscribe",
            &a_name,
            "--connect",
            &ep,
            "--key-prefix",
            &prefix,
            "--local-prefix",
            "m-",
            "--history",
            "8192",
        ],
    );
    wait_carrying(&p, &a_name, "(lossless)");
    let b = wait_linked(&a, &b_name, &[&p, &s]);
    let mut cursor = b.cursor().unwrap();
    let period = Duration::from_millis(10);
    let mut id = 0u64;
    let write = |id: &mut u64| {
        *id += 1;
        a.write_slice_frame(&[*id as u16; 32], *id).unwrap();
        // Pacing the writer (a camera's frame rate), not waiting for anyone.
        std::thread::sleep(period);
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        write(&mut id);
    }
    hosts.link_a(false);
    let down = Instant::now();
    while down.elapsed() < cut {
        write(&mut id);
    }
    hosts.link_a(true);
    let up = Instant::now();
    let first_after = id + 1;
    while b.frame_id() < first_after {
        assert!(
            up.elapsed() < RECONNECT,
            "no frame written after the link came back mirrored within {RECONNECT:?} (the \
             mirror shows {})\n{}",
            b.frame_id(),
            said(&[&p, &s])
        );
        write(&mut id);
    }
    let back_after = up.elapsed();
    // The last frame, then the bridges' summaries as they stop.
    let last = id;
    wait_frame_within(&b, last, LONG, &[&p, &s]);
    let said = format!("{}\n{}", stop(&mut p), stop(&mut s));
    let mut buf = [0u16; 32];
    let mut next = 1;
    let mut mirrored = 0;
    while next <= last {
        let info = cursor.next_into_slice(&mut buf, Some(LONG)).unwrap();
        if info.frame_id == 0 {
            continue; // a late probe frame
        }
        assert!(
            info.frame_id >= next,
            "frame {} after frame {}: lossless frames arrive in order\n{said}",
            info.frame_id,
            next - 1
        );
        assert_eq!(
            buf, [info.frame_id as u16; 32],
            "frame {} intact",
            info.frame_id
        );
        mirrored += 1;
        next = info.frame_id + 1;
    }
    let lost = last - mirrored;
    assert_eq!(
        reported_lost(&said),
        lost,
        "of {last} frames {mirrored} mirrored: the others are reported lost, each once\n{said}"
    );
    println!(
        "{test}: link cut {cut:?}: {mirrored} of {last} frames mirrored, {lost} reported lost; \
         the first frame written after the link came back mirrored {back_after:?} later"
    );
    Some((lost, back_after))
}

/// Frames cross a real link between two hosts, and a cut shorter than Zenoh's lease (10 s)
/// loses none: TCP sends them again once the link is back.
#[test]
fn two_hosts_a_short_cut_loses_no_lossless_frame() {
    let test = "two_hosts_a_short_cut_loses_no_lossless_frame";
    if let Some((lost, _)) = cut_link_while_frames_flow(test, Duration::from_secs(2), 8192) {
        assert_eq!(lost, 0, "a 2 s cut, under the lease: nothing lost");
    }
}

/// A cut longer than Zenoh's lease (10 s): the subscriber connects again by itself once the
/// link is back (no restart), frames written after that are mirrored, and none is lost.
/// (The publisher put most of those written during the cut into the old connection before
/// it heard that its subscriber went, as traced with debug logs: the subscriber asks for
/// them again, and they come from the source's history.)
#[test]
fn two_hosts_reconnect_by_themselves_after_a_cut_longer_than_the_lease() {
    let test = "two_hosts_reconnect_by_themselves_after_a_cut_longer_than_the_lease";
    if let Some((lost, _)) = cut_link_while_frames_flow(test, Duration::from_secs(12), 8192) {
        assert_eq!(
            lost, 0,
            "a 12 s cut: the frames put into the dead connection are asked for again"
        );
    }
}

/// A 12 s cut over a source ring of 512 frames, fewer than those written over the cut and
/// the reconnection (~1 800): the frames gone from the ring when the subscriber asks are
/// lost, and every frame is either mirrored or reported lost once, by one bridge or the other.
#[test]
fn two_hosts_a_cut_longer_than_the_ring_loses_only_what_the_ring_lost() {
    let test = "two_hosts_a_cut_longer_than_the_ring_loses_only_what_the_ring_lost";
    if let Some((lost, _)) = cut_link_while_frames_flow(test, Duration::from_secs(12), 512) {
        assert!(lost > 0, "the ring was lapped over the cut");
    }
}

/// A publisher given no `--listen` listens on loopback only: reachable on 127.0.0.1 in its
/// own namespace, refused at its link address from the other host.
#[test]
fn two_hosts_a_publisher_listens_on_loopback_unless_told() {
    let test = "two_hosts_a_publisher_listens_on_loopback_unless_told";
    let Some(hosts) = TwoHosts::new(test) else {
        return;
    };
    let name = unique_name("br-ns");
    let _c = Cleanup::new([&name]);
    let _a = source(&name, 0);
    let prefix = unique_name("br-key");
    let p = hosts.bridge(&hosts.a, &["publish", &name, "--key-prefix", &prefix]);
    // Said once the session is open, its listener bound.
    wait_carrying(&p, &name, "(latest value)");
    assert!(
        hosts.tcp_connects(&hosts.a, "127.0.0.1", 7447),
        "the publisher listens on its default endpoint\n{}",
        p.diagnostics()
    );
    assert!(
        !hosts.tcp_connects(&hosts.b, A_IP, 7447),
        "reachable from the other host without --listen\n{}",
        p.diagnostics()
    );
    // The link carries a connection to a publisher told to listen on it.
    let ep = format!("tcp/{A_IP}:7448");
    let q = hosts.bridge(
        &hosts.a,
        &["publish", &name, "--listen", &ep, "--key-prefix", &prefix],
    );
    wait_carrying(&q, &name, "(latest value)");
    assert!(
        hosts.tcp_connects(&hosts.b, A_IP, 7448),
        "--listen {ep} not reachable from the other host\n{}",
        q.diagnostics()
    );
}

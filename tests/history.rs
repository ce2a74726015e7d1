//! Frame history (`StreamOptions::history`) and cursors: every frame in order, exact loss
//! counts when the writer laps a cursor or a non-appending writer (pyshmem) writes, no torn
//! frame when a writer dies mid-append, and clear errors for bad sizes.

mod common;

use std::time::{Duration, Instant};

use common::{Cleanup, LONG, unique_name};
use shmstream::{Dtype, Error, LossCause, MAX_HISTORY, Stream, StreamOptions};

const SHORT: Option<Duration> = Some(Duration::from_millis(50));

/// Child roles, re-executed from this test binary.
#[test]
fn child_entry() {
    let Some(role) = common::child_role() else {
        return;
    };
    let name: String = common::param("name");
    let s = Stream::open(&name).unwrap();
    let mut frame = vec![0u32; s.len()];
    match role.as_str() {
        // Writes `first` frames, reports, waits for a line, then writes `rest` more, all at
        // full speed; frame i holds i everywhere and has frame id i.
        "batches" => {
            let (first, rest): (u64, u64) = (common::param("first"), common::param("rest"));
            for i in 0..first + rest {
                if i == first {
                    common::say("first batch written");
                    common::block_on_stdin();
                }
                frame.fill(i as u32);
                s.write_slice_frame(&frame, i).unwrap();
            }
            common::say("all written");
        }
        // Writes frames with ids from `start` on, forever (until killed).
        "forever" => {
            let start: u64 = common::param("start");
            for i in start.. {
                frame.fill(i as u32);
                s.write_slice_frame(&frame, i).unwrap();
                if i == start {
                    common::say("writing");
                }
            }
        }
        // Starts a write and blocks inside its bracket, before its append (until killed).
        "stuck" => {
            s.write_view(|buf: &mut [u32]| {
                buf.fill(0xdead);
                common::say("inside");
                common::block_on_stdin();
                Ok::<_, std::convert::Infallible>(())
            })
            .unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

fn history_stream(name: &str, len: usize, depth: usize) -> Stream {
    StreamOptions::new(name)
        .shape(&[len])
        .dtype(Dtype::U32)
        .notify(true)
        .history(depth)
        .create()
        .unwrap()
}

#[test]
fn a_cursor_returns_frames_in_order_and_names_exactly_what_a_lapping_writer_overwrote() {
    let name = unique_name("hist-order");
    let _c = Cleanup::new([&name]);
    let s = history_stream(&name, 3, 8);
    assert_eq!(s.history_depth(), 8);
    let mut c = s.cursor().unwrap();
    for i in 0..5u32 {
        s.write_slice_frame(&[i, i, i], 100 + i as u64).unwrap();
    }
    let mut buf = [0u32; 3];
    for i in 0..5u32 {
        let info = c.next_into_slice(&mut buf, SHORT).unwrap();
        assert_eq!(
            (buf, info.frame_id, info.count),
            ([i; 3], 100 + i as u64, i as u64 + 1)
        );
    }
    assert!(matches!(
        c.next_into_slice(&mut buf, SHORT),
        Err(Error::Timeout { .. })
    ));

    // 20 more frames into a ring of 8: 12 are gone, the 8 newest follow in order.
    for i in 5..25u32 {
        s.write_slice_frame(&[i, i, i], 100 + i as u64).unwrap();
    }
    assert_eq!(c.lag(), 20);
    match c.next_into_slice(&mut buf, SHORT) {
        Err(Error::Overrun {
            lost,
            cause,
            name: n,
        }) => {
            assert_eq!(
                (lost, cause, n.as_str()),
                (12, LossCause::Overwritten, name.as_str())
            );
        }
        other => panic!("expected an overrun, got {other:?}"),
    }
    for i in 17..25u32 {
        let p = c.next_publication::<u32>(SHORT).unwrap();
        assert_eq!(p.payload.as_slice().unwrap(), &[i; 3]);
        assert_eq!(p.info.frame_id, 100 + i as u64);
    }
    // A handle opened later writes into the same ring.
    let other = Stream::open(&name).unwrap();
    assert_eq!(other.history_depth(), 8);
    other.write_slice_frame(&[7u32, 8, 9], 999).unwrap();
    assert_eq!(
        c.next::<u32>(SHORT).unwrap().as_slice().unwrap(),
        &[7, 8, 9]
    );
    // Rewinding replays what the ring still holds.
    c.rewind_to_oldest();
    assert_eq!(c.lag(), 8);
    assert_eq!(c.next::<u32>(SHORT).unwrap().as_slice().unwrap(), &[18; 3]);
}

#[test]
fn a_fast_writer_in_another_process_never_makes_a_cursor_skip_silently() {
    let name = unique_name("hist-fast");
    let _c = Cleanup::new([&name]);
    let s = history_stream(&name, 1024, 16);
    let mut c = s.cursor().unwrap();
    let (first, rest) = (200u64, 20_000u64);
    let mut w = common::child("child_entry", "batches")
        .param("name", &name)
        .param("first", first)
        .param("rest", rest)
        .spawn();
    w.expect_line("first batch written", LONG);
    let mut buf = vec![0u32; 1024];
    let (mut expected, mut returned, mut lost_total, mut overruns) = (0u64, 0u64, 0u64, 0u64);
    let mut released = false;
    while expected < first + rest {
        match c.next_into_slice(&mut buf, Some(LONG)) {
            Ok(info) => {
                assert_eq!(
                    info.frame_id, expected,
                    "frames must come strictly in order"
                );
                assert!(
                    buf.iter().all(|&v| v == expected as u32),
                    "torn frame {expected}"
                );
                expected += 1;
                returned += 1;
            }
            Err(Error::Overrun { lost, cause, .. }) => {
                assert_eq!(cause, LossCause::Overwritten);
                assert!(lost > 0);
                expected += lost;
                lost_total += lost;
                overruns += 1;
            }
            Err(e) => panic!("cursor: {e}"),
        }
        if !released && expected >= first.saturating_sub(16) {
            w.send_line("go");
            released = true;
        }
    }
    w.expect_line("all written", LONG);
    w.wait_success(LONG);
    assert_eq!(
        returned + lost_total,
        first + rest,
        "every frame returned or counted lost"
    );
    assert!(
        overruns >= 1,
        "the first batch (200 frames into 16 slots) must overrun"
    );
    assert!(matches!(
        c.next_into_slice(&mut buf, SHORT),
        Err(Error::Timeout { .. })
    ));
}

#[test]
fn a_writer_killed_mid_append_leaves_no_torn_frame_and_the_next_writer_goes_on() {
    // 4 MiB frames in a 16 MiB ring, which appends with streaming stores after the payload:
    // the append's copy is about half of each write, so kills land in it.
    killed_writers_leave_no_torn_frame("hist-kill", 1 << 20);
}

#[test]
fn a_writer_killed_in_a_ring_first_write_leaves_no_torn_frame_and_the_next_writer_goes_on() {
    // 1 MiB frames in a 4 MiB ring: whole-frame writes fill the slot first, then copy it into
    // the payload, so kills land in the slot (never returned) or after it is complete (its
    // frame may be returned, whole, though the publication never ended).
    killed_writers_leave_no_torn_frame("hist-kill-first", 1 << 18);
}

/// Eight writers of `len`-element frames, each killed wherever it is after a cursor read
/// three of its frames: the cursor returns whole frames only, in order, and a writer after
/// them all reaches it. A writer killed between storing its frame's count in the header and
/// completing the frame's slot leaves a count no frame got, reported once as one frame
/// not recorded: at most one such report per kill.
fn killed_writers_leave_no_torn_frame(tag: &str, len: usize) {
    let name = unique_name(tag);
    let _c = Cleanup::new([&name]);
    let s = history_stream(&name, len, 4);
    let mut c = s.cursor().unwrap();
    let mut buf = vec![0u32; len];
    let mut last_id = 0u64;
    // Counts left without a frame by the writers killed so far, as reported.
    let mut unrecorded = 0u64;
    let mut unrecorded_by_a_kill = |round: u64, n: u64| {
        unrecorded += n;
        assert!(
            n == 1 && unrecorded <= round,
            "round {round}: {unrecorded} frames not recorded after {round} kills"
        );
    };
    for round in 0..8 {
        let mut w = common::child("child_entry", "forever")
            .param("name", &name)
            .param("start", (round + 1) * 1_000_000)
            .spawn();
        w.expect_line("writing", LONG);
        // Read a few frames of this writer, then kill it wherever it is. A reader starved of
        // CPU (two of these tests' writers on two cores) can be lapped again and again: after
        // a lap the cursor resumes at the oldest frame, whose slot the writer takes next. So
        // it skips ahead to the newest frame, three appends from being overwritten
        // (`skip_after_overrun` keeps all but an eighth of the ring, at least one frame:
        // 3 of the 4 slots here, one of slack), and the whole wait has one deadline, which
        // fails rather than hangs.
        let t0 = Instant::now();
        let (mut got, mut laps, mut lost, mut skipped) = (0, 0u64, 0u64, 0u64);
        while got < 3 {
            let seen = || {
                format!(
                    "round {round}: {got} of 3 frames read in {:?}, lapped {laps} times \
                     ({lost} frames lost, {skipped} skipped)",
                    t0.elapsed()
                )
            };
            assert!(t0.elapsed() < LONG, "{}", seen());
            match c.next_into_slice(&mut buf, Some(LONG.saturating_sub(t0.elapsed()))) {
                Ok(info) => {
                    assert!(info.frame_id > last_id, "round {round}: order");
                    assert!(
                        buf.iter().all(|&v| v == info.frame_id as u32),
                        "round {round}: torn frame {}",
                        info.frame_id
                    );
                    last_id = info.frame_id;
                    got += 1;
                }
                Err(Error::Overrun {
                    lost: n,
                    cause: LossCause::NotRecorded,
                    ..
                }) => unrecorded_by_a_kill(round, n),
                Err(Error::Overrun { lost: n, cause, .. }) => {
                    assert_eq!(cause, LossCause::Overwritten, "{}", seen());
                    laps += 1;
                    lost += n;
                    skipped += c.skip_to_recent(1);
                }
                Err(e) => panic!("{}: {e}", seen()),
            }
        }
        w.kill();
        // Drain what the ring holds: complete frames only, in order.
        loop {
            match c.next_into_slice(&mut buf, SHORT) {
                Ok(info) => {
                    assert!(info.frame_id > last_id, "round {round}: order after kill");
                    assert!(buf.iter().all(|&v| v == info.frame_id as u32), "torn");
                    last_id = info.frame_id;
                }
                Err(Error::Overrun {
                    lost: n,
                    cause: LossCause::NotRecorded,
                    ..
                }) => unrecorded_by_a_kill(round + 1, n),
                Err(Error::Overrun { cause, .. }) => assert_eq!(cause, LossCause::Overwritten),
                Err(Error::Timeout { .. }) => break,
                Err(e) => panic!("round {round}: after the kill: {e}"),
            }
        }
    }
    // The stream is usable after all the kills: this writer's frame reaches the cursor.
    s.write_slice_frame(&vec![5u32; len], last_id + 100)
        .unwrap();
    let info = match c.next_into_slice(&mut buf, Some(LONG)) {
        Err(Error::Overrun {
            lost: n,
            cause: LossCause::NotRecorded,
            ..
        }) => {
            unrecorded_by_a_kill(8, n);
            c.next_into_slice(&mut buf, Some(LONG))
        }
        other => other,
    }
    .unwrap();
    assert_eq!(info.frame_id, last_id + 100);
    assert!(buf.iter().all(|&v| v == 5));
}

#[test]
fn frames_written_by_pyshmem_show_up_as_a_reported_gap() {
    let Some(py) = common::python() else { return };
    let name = unique_name("hist-py");
    let _c = Cleanup::new([&name]);
    let s = history_stream(&name, 4, 8);
    let mut c = s.cursor().unwrap();
    for i in 1..=3u32 {
        s.write_slice_frame(&[i; 4], i as u64).unwrap();
    }
    let lines = common::run_py(&py, "peer.py", &["write_n", &name, "2", "10"], LONG);
    assert!(lines.iter().any(|l| l == "wrote 5"), "{lines:?}");
    s.write_slice_frame(&[20u32; 4], 20).unwrap();

    let mut buf = [0u32; 4];
    for i in 1..=3u32 {
        assert_eq!(
            c.next_into_slice(&mut buf, SHORT).unwrap().frame_id,
            i as u64
        );
    }
    match c.next_into_slice(&mut buf, SHORT) {
        Err(e @ Error::Overrun { .. }) => {
            let Error::Overrun { lost, cause, .. } = &e else {
                unreachable!()
            };
            assert_eq!((*lost, *cause), (2, LossCause::NotRecorded));
            assert!(e.to_string().contains("pyshmem"), "{e}");
        }
        other => panic!("expected the pyshmem gap, got {other:?}"),
    }
    let info = c.next_into_slice(&mut buf, SHORT).unwrap();
    assert_eq!((buf, info.frame_id, info.count), ([20; 4], 20, 6));
    // pyshmem reads the latest frame of a history stream as of any other.
    assert_eq!(s.read::<u32>().unwrap().as_slice().unwrap(), &[20; 4]);
}

/// Frames pyshmem writes (it never appends to the ring) are reported when no ring frame
/// follows them: written before the cursor's call, or while it waits. The cursor used to
/// wait on past them (the head never moves) and time out, reporting nothing.
#[test]
fn frames_written_by_pyshmem_with_no_ring_frame_after_them_are_reported() {
    let Some(py) = common::python() else { return };
    let name = unique_name("hist-py-last");
    let _c = Cleanup::new([&name]);
    let s = history_stream(&name, 4, 8);
    let mut c = s.cursor().unwrap();
    let mut buf = [0u32; 4];
    let lines = common::run_py(&py, "peer.py", &["write_n", &name, "2", "10"], LONG);
    assert!(lines.iter().any(|l| l == "wrote 2"), "{lines:?}");
    match c.next_into_slice(&mut buf, SHORT) {
        Err(Error::Overrun { lost, cause, .. }) => {
            assert_eq!((lost, cause), (2, LossCause::NotRecorded));
        }
        other => panic!("expected the pyshmem frames reported, got {other:?}"),
    }
    assert!(matches!(
        c.next_into_slice(&mut buf, SHORT),
        Err(Error::Timeout { .. })
    ));
    s.write_slice_frame(&[3u32; 4], 3).unwrap();
    let info = c.next_into_slice(&mut buf, SHORT).unwrap();
    assert_eq!((info.frame_id, info.count, buf), (3, 3, [3; 4]));

    // Written while the cursor waits (reported as they land, in one or more gaps).
    let mut lost_total = 0;
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let lines = common::run_py(&py, "peer.py", &["write_n", &name, "3", "20"], LONG);
            assert!(lines.iter().any(|l| l == "wrote 6"), "{lines:?}");
        });
        while lost_total < 3 {
            match c.next_into_slice(&mut buf, Some(LONG)) {
                Err(Error::Overrun { lost, cause, .. }) => {
                    assert_eq!(cause, LossCause::NotRecorded);
                    lost_total += lost;
                }
                other => panic!("expected the pyshmem frames reported, got {other:?}"),
            }
        }
        writer.join().unwrap();
    });
    assert_eq!(lost_total, 3);
    assert!(matches!(
        c.next_into_slice(&mut buf, SHORT),
        Err(Error::Timeout { .. })
    ));
}

/// A pyshmem frame inside the region a lap overwrote is reported too: frames returned plus
/// frames reported lost equal frames written (the lap used to forget the last count, and
/// the frame went unreported).
#[test]
fn a_pyshmem_frame_inside_a_lapped_region_is_counted_lost() {
    let Some(py) = common::python() else { return };
    let name = unique_name("hist-py-lap");
    let _c = Cleanup::new([&name]);
    let s = history_stream(&name, 4, 2);
    let mut c = s.cursor().unwrap();
    s.write_slice_frame(&[1u32; 4], 1).unwrap();
    let lines = common::run_py(&py, "peer.py", &["write_n", &name, "1", "2"], LONG);
    assert!(lines.iter().any(|l| l == "wrote 2"), "{lines:?}");
    for i in 3..=5u32 {
        s.write_slice_frame(&[i; 4], u64::from(i)).unwrap();
    }
    let mut buf = [0u32; 4];
    let mut events = vec![];
    let (mut returned, mut lost_total) = (0u64, 0u64);
    loop {
        match c.next_into_slice(&mut buf, SHORT) {
            Ok(info) => {
                events.push(format!("frame {}", info.count));
                returned += 1;
            }
            Err(Error::Overrun { lost, cause, .. }) => {
                events.push(format!("lost {lost} {cause:?}"));
                lost_total += lost;
            }
            Err(Error::Timeout { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        events,
        [
            "lost 2 Overwritten",
            "lost 1 NotRecorded",
            "frame 4",
            "frame 5"
        ]
    );
    assert_eq!(returned + lost_total, s.count(), "{events:?}");
}

/// A cursor whose wait finds a writer dead inside its bracket does not report it (the ring
/// is whole), and gives the handle's one report back: a later `read_new` on the same handle
/// reports it instead of waiting in silence.
#[test]
fn a_cursor_leaves_the_report_of_a_dead_writer_to_the_handles_next_read() {
    let name = unique_name("hist-dead");
    let _c = Cleanup::new([&name]);
    let s = history_stream(&name, 4, 4);
    s.write_slice_frame(&[1u32; 4], 1).unwrap();
    let mut c = s.cursor().unwrap();
    let mut w = common::child("child_entry", "stuck")
        .param("name", &name)
        .spawn();
    w.expect_line("inside", LONG);
    w.kill();
    assert_eq!(
        s.write_sequence() & 1,
        1,
        "the dead writer's bracket is open"
    );
    let mut buf = [0u32; 4];
    let r = c.next_into_slice(&mut buf, Some(Duration::from_millis(300)));
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(
        s.write_sequence() < 0,
        "the cursor's wait found the writer dead and marked the generation invalid"
    );
    // Once more, in the invalid generation: still a quiet wait, parked, not a loop on the
    // report the handle keeps making and the cursor keeps giving back.
    let cpu = thread_cpu_time();
    let r = c.next_into_slice(&mut buf, Some(Duration::from_millis(300)));
    let cpu = thread_cpu_time() - cpu;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(
        cpu < Duration::from_millis(150),
        "the wait took {cpu:?} of CPU"
    );
    let r = s.read_new::<u32>(Some(Duration::from_millis(300)));
    assert!(matches!(r, Err(Error::Inconsistent { .. })), "{r:?}");
    // Reported once per handle: the next wait is quiet; the next writer recovers both.
    let r = s.read_new::<u32>(SHORT);
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    s.write_slice_frame(&[2u32; 4], 2).unwrap();
    let info = c.next_into_slice(&mut buf, SHORT).unwrap();
    assert_eq!((info.frame_id, buf), (2, [2; 4]));
    assert_eq!(
        s.read_new::<u32>(SHORT).unwrap().as_slice().unwrap(),
        &[2; 4]
    );
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[test]
fn history_is_shown_kept_by_config_and_removed_with_the_stream() {
    let name = unique_name("hist-meta");
    let mut cleanup = Cleanup::new([&name]);
    let s = history_stream(&name, 6, 32);
    let hist = format!("/dev/shm/{}", shmstream::name::history_id(&name));
    assert!(std::path::Path::new(&hist).exists());
    assert_eq!(shmstream::stat(&name).unwrap().history, 32);
    assert!(
        s.describe().contains("history:      32 frames"),
        "{}",
        s.describe()
    );
    let config = s.to_config();
    assert_eq!(config.history, 32);
    let listed = shmstream::list_stats().unwrap();
    assert_eq!(listed.iter().find(|x| x.name == name).unwrap().history, 32);
    shmstream::unlink(&name).unwrap();
    assert!(
        !std::path::Path::new(&hist).exists(),
        "unlink removes the ring"
    );

    let again = Stream::create_from_config(&config).unwrap();
    assert_eq!(again.history_depth(), 32);
    drop(again);
    shmstream::unlink(&name).unwrap();

    let plain_name = unique_name("hist-none");
    cleanup.add(&plain_name);
    let plain = Stream::create(&plain_name, &[2], Dtype::F32).unwrap();
    assert_eq!(shmstream::stat(&plain_name).unwrap().history, 0);
    let serialized = serde_json::to_string(&plain.to_config()).unwrap();
    assert!(
        !serialized.contains("history"),
        "pyshmem's keys only: {serialized}"
    );
    match plain.cursor() {
        Err(e @ Error::NoHistory { .. }) => {
            // The remedy of a CPU stream: its producer's option, or made first by the CLI.
            assert!(e.to_string().contains("history(n)"), "{e}");
            assert!(e.to_string().contains("shmstream create"), "{e}");
            assert!(e.to_string().contains(&plain_name), "{e}");
        }
        other => panic!("expected NoHistory, got {other:?}"),
    }
}

/// `stat` and `list` read a ring's depth from its header without mapping its slots; they
/// showed the declared depth of a ring every `open` refuses. Now they make the checks `open`
/// makes and say why instead: a ring declaring frames of another size, a depth outside the
/// limits, or a segment shorter than its header declares.
#[test]
fn stat_and_list_report_the_corrupt_ring_open_refuses() {
    use std::os::unix::fs::FileExt;
    /// The ring header's capacity and frame-bytes fields (`off` in src/history/mod.rs).
    const CAPACITY: u64 = 12;
    const FRAME_BYTES: u64 = 16;
    let healthy = unique_name("hist-healthy");
    let _h = Cleanup::new([&healthy]);
    let _s = history_stream(&healthy, 6, 64);
    let stat = shmstream::stat(&healthy).unwrap();
    assert_eq!((stat.history, stat.history_problem), (64, None));

    type Corrupt = fn(&std::fs::File);
    let cases: [(&str, Corrupt, &str); 3] = [
        (
            "frame bytes",
            |f| f.write_all_at(&8u64.to_le_bytes(), FRAME_BYTES).unwrap(),
            "frames of 8 bytes, the stream 24",
        ),
        (
            "capacity 0",
            |f| f.write_all_at(&0u32.to_le_bytes(), CAPACITY).unwrap(),
            "declares 0 frames of 24 bytes",
        ),
        (
            "truncated",
            |f| f.set_len(64 + 128).unwrap(),
            "segment is 192 bytes",
        ),
    ];
    for (what, corrupt, says) in cases {
        let name = unique_name("hist-corrupt");
        let _c = Cleanup::new([&name]);
        // Dropped before the ring shrinks under its mapping.
        drop(history_stream(&name, 6, 64));
        corrupt(
            &std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/dev/shm/{}", shmstream::name::history_id(&name)))
                .unwrap(),
        );
        match Stream::open(&name) {
            Err(Error::InvalidHistory { reason, .. }) => {
                assert!(reason.contains(says), "{what}: {reason}")
            }
            other => panic!("{what}: expected InvalidHistory, got {other:?}"),
        }
        let stat = shmstream::stat(&name).unwrap();
        let problem = stat.history_problem.as_deref().unwrap_or_default();
        assert!(
            stat.history == 0 && problem.contains(says) && problem.contains("recreate"),
            "{what}: {stat:?}"
        );
        let listed = shmstream::list_stats().unwrap();
        let entry = listed.iter().find(|x| x.name == name).unwrap();
        assert_eq!(entry.history_problem, stat.history_problem, "{what}");
    }
}

#[test]
fn bad_history_sizes_are_refused_and_create_nothing() {
    for (depth, shape) in [
        (MAX_HISTORY + 1, vec![4usize]),
        (MAX_HISTORY, vec![1 << 20]),
        (1 << 16, vec![1 << 26]),
    ] {
        let name = unique_name("hist-bad");
        let _c = Cleanup::new([&name]);
        match StreamOptions::new(&name)
            .shape(&shape)
            .dtype(Dtype::U8)
            .history(depth)
            .create()
        {
            Err(e @ Error::InvalidHistory { .. }) => {
                assert!(e.to_string().contains(&name), "{e}");
            }
            other => {
                panic!("depth {depth} shape {shape:?}: expected InvalidHistory, got {other:?}")
            }
        }
        assert!(matches!(
            shmstream::stat(&name),
            Err(Error::NotFound { .. })
        ));
        let hist = format!("/dev/shm/{}", shmstream::name::history_id(&name));
        assert!(!std::path::Path::new(&hist).exists());
    }
    let name = unique_name("hist-gpu");
    let _c = Cleanup::new([&name]);
    let r = StreamOptions::new(&name)
        .shape(&[4])
        .device("cuda:0")
        .history(4)
        .create();
    assert!(
        matches!(&r, Err(Error::InvalidHistory { reason, .. }) if reason.contains("cpu_mirror")),
        "{r:?}"
    );
}

#[test]
fn frames_lent_in_place_are_written_copied_in_part_or_whole_and_mapped_and_a_lap_during_the_loan_is_a_loss()
 {
    let name = unique_name("hist-in-place");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[4])
        .dtype(Dtype::U16)
        .history(4)
        .create()
        .unwrap();
    let mut c = s.cursor().unwrap();
    s.write_slice_frame(&[1u16, 2, 3, 0x8000], 10).unwrap();
    s.write_slice_frame(&[5u16; 4], 11).unwrap();

    // write_at: the frame's bytes at an offset of a file, nothing else touched.
    let path = std::env::temp_dir().join(unique_name("hist-in-place-file"));
    let file = std::fs::File::create(&path).unwrap();
    let (info, written) = c
        .next_in_place(SHORT, |f| {
            assert_eq!(f.len(), 8);
            assert!(!f.is_empty());
            f.write_at(&file, 3)
        })
        .unwrap();
    written.unwrap();
    assert_eq!(info.frame_id, 10);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..3], &[0, 0, 0]);
    assert_eq!(
        &bytes[3..],
        bytemuck::cast_slice::<u16, u8>(&[1, 2, 3, 0x8000])
    );
    // A file not open for writing: the kernel's error, returned at once, nothing written.
    let read_only = std::fs::File::open(&path).unwrap();
    let (_, refused) = c
        .next_in_place(SHORT, |f| f.write_at(&read_only, 0))
        .unwrap();
    let err = refused.unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let _ = std::fs::remove_file(&path);

    // copy_into and map_into; a buffer of the wrong size is a typed error naming the stream.
    c.rewind_to_oldest();
    let (_, copied) = c
        .next_in_place(SHORT, |f| {
            let mut short = [0u8; 7];
            let err = f.copy_into(&mut short).unwrap_err();
            assert!(
                matches!(&err, Error::BufferSize { name: n, given_bytes: 7, .. } if *n == name),
                "{err}"
            );
            // A range past the frame's end is refused, naming the stream.
            let err = f.copy_range_into(6, &mut [0u8; 3]).unwrap_err();
            assert!(
                matches!(&err, Error::Unsupported { name: n, .. } if *n == name),
                "{err}"
            );
            let mut part = [0u8; 4];
            f.copy_range_into(2, &mut part)?;
            // A range that ends at the frame's end is within it.
            let mut tail = [0u8; 2];
            f.copy_range_into(6, &mut tail)?;
            let mut whole = [0u8; 8];
            f.copy_into(&mut whole).map(|()| (part, tail, whole))
        })
        .unwrap();
    let (part, tail, whole) = copied.unwrap();
    assert_eq!(
        part,
        bytemuck::cast::<[u16; 2], [u8; 4]>([2, 3]),
        "words 1 and 2"
    );
    assert_eq!(tail, 0x8000u16.to_ne_bytes(), "word 3");
    assert_eq!(
        whole,
        bytemuck::cast::<[u16; 4], [u8; 8]>([1, 2, 3, 0x8000])
    );
    let (info, mapped) = c
        .next_in_place(SHORT, |f| {
            let mut words = [0u16; 4];
            f.map_into(&mut words, |x: u16| x.swap_bytes())
                .map(|()| words)
        })
        .unwrap();
    assert_eq!(info.frame_id, 11);
    assert_eq!(mapped.unwrap(), [0x0500; 4]);

    // The writer laps the cursor while the frame is lent: the frame is reported lost, never
    // returned, and the cursor resumes at the oldest frame still held.
    s.write_slice_frame(&[20u16; 4], 20).unwrap();
    let lapped = c.next_in_place(SHORT, |_| {
        for i in 21..25u16 {
            s.write_slice_frame(&[i; 4], u64::from(i)).unwrap();
        }
    });
    match lapped {
        Err(Error::Overrun { lost, cause, .. }) => {
            assert_eq!(lost, 1);
            assert_eq!(cause, LossCause::Overwritten);
        }
        other => panic!("expected an overrun, got {other:?}"),
    }
    assert_eq!(c.next::<u16>(SHORT).unwrap().as_slice().unwrap(), &[21; 4]);
}

#[test]
fn skipping_to_recent_frames_counts_what_it_skips() {
    let name = unique_name("hist-skip");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[1])
        .dtype(Dtype::U32)
        .history(8)
        .create()
        .unwrap();
    let mut c = s.cursor().unwrap();
    for i in 0..6u32 {
        s.write_slice_frame(&[i], u64::from(i)).unwrap();
    }
    assert_eq!(c.skip_to_recent(8), 0, "already within 8 of the head");
    assert_eq!(c.skip_to_recent(2), 4);
    assert_eq!(c.lag(), 2);
    assert_eq!(c.next::<u32>(SHORT).unwrap().as_slice().unwrap(), &[4]);
    // Lapped: keep is capped at the ring's capacity, so skipping also leaves the lost frames.
    for i in 6..30u32 {
        s.write_slice_frame(&[i], u64::from(i)).unwrap();
    }
    assert_eq!(c.skip_to_recent(100), 30 - 8 - 5);
    assert_eq!(c.next::<u32>(SHORT).unwrap().as_slice().unwrap(), &[22]);
}

/// A head planted in the `_hist` segment near the top of `u64` (bytes written without the
/// lock are hostile input) makes cursors and appends report or return frames the ring holds,
/// never an overflow panic, and never a slot no append wrote (at a head of `2^63 - 1` or
/// `u64::MAX` the stamp of a finished append wraps to 0, a never-written slot's: a cursor
/// returned such a slot as an all-zero frame of count 0); the stream's own frame is
/// untouched.
#[test]
fn a_ring_head_planted_near_the_top_of_u64_never_panics() {
    use std::os::unix::fs::FileExt;
    /// The ring header's head word (`off::HEAD` in src/history/mod.rs).
    const HEAD: u64 = 40;
    for planted in [u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) - 1] {
        let name = unique_name("hist-head");
        let _c = Cleanup::new([&name]);
        let s = history_stream(&name, 4, 4);
        s.write_slice(&[1u32; 4]).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/{}", shmstream::name::history_id(&name)))
            .unwrap()
            .write_all_at(&planted.to_le_bytes(), HEAD)
            .unwrap();
        let mut c = s.cursor().unwrap();
        // Only frames some append wrote: 1s of count 1, 2s of count 2.
        let written = |got: shmstream::Result<shmstream::Publication<u32>>| {
            if let Ok(p) = got {
                let v = p.payload.as_slice().unwrap().to_vec();
                assert!(
                    matches!((p.info.count, v[0]), (1, 1) | (2, 2)) && v.iter().all(|&x| x == v[0]),
                    "head {planted}: a frame no append wrote: count {}, {v:?}",
                    p.info.count
                );
            }
        };
        written(c.next_publication::<u32>(Some(Duration::ZERO)));
        let _ = (c.lag(), c.skip_to_recent(2));
        c.rewind_to_oldest();
        written(c.next_publication::<u32>(Some(Duration::ZERO)));
        s.write_slice(&[2u32; 4]).unwrap();
        for _ in 0..6 {
            written(c.next_publication::<u32>(Some(Duration::ZERO)));
        }
        assert_eq!(
            s.read::<u32>().unwrap().as_slice().unwrap(),
            &[2u32; 4],
            "head {planted}"
        );
    }
}

/// A frame of the ring with a bool byte other than 0 or 1 (planted without the lock, as a
/// foreign writer's uint8 mask viewed as bool stores it) reads as numpy reads it: nonzero is
/// `true`.
#[test]
fn a_cursor_reads_a_bool_byte_other_than_0_or_1_in_the_ring_as_true() {
    use std::os::unix::fs::FileExt;
    /// Slot 0's frame in the `_hist` segment (see the layout in src/history/mod.rs).
    const SLOT0_FRAME: u64 = 128;
    let name = unique_name("hist-bad-bool");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[3])
        .dtype(Dtype::Bool)
        .history(4)
        .create()
        .unwrap();
    let mut c = s.cursor().unwrap();
    // False where the byte is planted: a true read back can only come from it.
    s.write_slice(&[false, false, true]).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{}", shmstream::name::history_id(&name)))
        .unwrap()
        .write_all_at(&[2], SLOT0_FRAME)
        .unwrap();
    s.write_slice(&[false, true, true]).unwrap();
    for (want, count) in [([true, false, true], 1), ([false, true, true], 2)] {
        let next = c.next_publication::<bool>(SHORT).unwrap();
        assert_eq!(
            (next.payload.as_slice().unwrap(), next.info.count),
            (&want[..], count)
        );
    }
    assert_eq!(c.lag(), 0);
}

/// `rewind_to_start` carries a generation from its first frame: frames the ring no longer
/// holds come as one overrun, then every frame it holds, in order, with its id; the current
/// frame reads into bytes with its id too.
#[test]
fn a_cursor_rewound_to_the_start_reports_the_frames_gone_then_returns_the_rest() {
    let name = unique_name("hist-start");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[2])
        .dtype(Dtype::U8)
        .history(4)
        .create()
        .unwrap();
    let mut buf = [0u8; 2];
    // Fewer frames than the ring holds: all of them, no loss.
    for id in 1..=2u64 {
        s.write_slice_frame(&[id as u8; 2], id).unwrap();
    }
    let mut c = s.cursor().unwrap();
    c.rewind_to_start();
    for id in 1..=2u64 {
        let info = c.next_into_bytes(&mut buf, SHORT).unwrap();
        assert_eq!((info.frame_id, info.count, buf), (id, id, [id as u8; 2]));
    }
    // More than it holds: the first two are gone.
    for id in 3..=6u64 {
        s.write_slice_frame(&[id as u8; 2], id).unwrap();
    }
    c.rewind_to_start();
    match c.next_into_bytes(&mut buf, SHORT) {
        Err(Error::Overrun { lost, cause, .. }) => {
            assert_eq!((lost, cause), (2, LossCause::Overwritten))
        }
        other => panic!("expected an overrun of 2, got {other:?}"),
    }
    for id in 3..=6u64 {
        let info = c.next_into_bytes(&mut buf, SHORT).unwrap();
        assert_eq!((info.frame_id, buf), (id, [id as u8; 2]));
    }
    assert!(matches!(
        c.next_into_bytes(&mut buf, SHORT),
        Err(Error::Timeout { .. })
    ));
    let info = s.read_publication_into_bytes(&mut buf).unwrap();
    assert_eq!((info.frame_id, info.count, buf), (6, 6, [6u8; 2]));
}

/// A cursor's wait for its next frame while this thread holds the stream's write lock is
/// refused at once, whatever it waits with (a spinning one spun until its deadline, a
/// parked one slept through it); a frame written through the guard is still returned.
#[test]
fn a_cursor_waiting_under_its_own_threads_lock_is_refused_at_once() {
    use shmstream::WaitStrategy;
    let name = unique_name("hist-own-lock");
    let _c = Cleanup::new([&name]);
    let s = history_stream(&name, 4, 4);
    for strategy in [
        WaitStrategy::Spin,
        WaitStrategy::Adaptive,
        WaitStrategy::Park,
        WaitStrategy::Yield,
    ] {
        s.set_wait_strategy(strategy);
        let mut c = s.cursor().unwrap();
        let g = s.lock(Some(LONG)).unwrap();
        g.write_slice_frame(&[7u32; 4], 7).unwrap();
        let frame = c.next_publication::<u32>(Some(LONG));
        assert_eq!(frame.unwrap().info.frame_id, 7, "{strategy:?}");
        // A long timeout, and a bound half of it: a refusal that waits out its timeout
        // (or most of it) fails, a descheduled test machine does not.
        let t0 = Instant::now();
        let e = c.next::<u32>(Some(LONG)).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported { .. }),
            "{strategy:?}: {e:?}"
        );
        assert!(e.to_string().contains(&name), "{e}");
        assert!(
            t0.elapsed() < LONG / 2,
            "{strategy:?}: refused late, {:?}",
            t0.elapsed()
        );
        // A poll waits for nothing: it times out as it does without the lock.
        let polled = c.next::<u32>(Some(Duration::ZERO)).unwrap_err();
        assert!(
            matches!(polled, Error::Timeout { .. }),
            "{strategy:?}: {polled:?}"
        );
        drop(g);
    }
}

/// A ring of ours this user cannot open (`chmod 0000`) was taken for another user's file and
/// dropped: `open` went on without history, its writes appending nothing. It is refused
/// naming the file and the remedy, and `stat` says why it shows no history. Root reads any
/// mode, so as root (CI) the check runs in a child switched to another uid.
#[test]
fn an_unreadable_ring_of_ours_is_refused_not_dropped() {
    use std::os::unix::fs::PermissionsExt;
    const OTHER_UID: u32 = 64_123;
    let check = || {
        let name = unique_name("hist-0000");
        let _c = Cleanup::new([&name]);
        drop(history_stream(&name, 4, 8));
        let ring = format!("/dev/shm/{}", shmstream::name::history_id(&name));
        std::fs::set_permissions(&ring, std::fs::Permissions::from_mode(0o000)).unwrap();
        let opened = match Stream::open(&name) {
            Err(Error::InvalidHistory { reason, .. }) => {
                reason.contains(&ring) && reason.contains("mode 0600")
            }
            _ => false,
        };
        let stat = shmstream::stat(&name).map(|s| s.history_problem.unwrap_or_default());
        let problem = stat.is_ok_and(|p| p.contains("cannot be mapped"));
        format!("refused {opened}, stat says why {problem}")
    };
    let said = if common::child_role().as_deref() == Some("other_uid") {
        common::say(&check());
        return;
    } else if common::is_root() {
        let lock_dir = std::env::temp_dir().join(format!("shmstream-hostile-{OTHER_UID}"));
        common::child(
            "an_unreadable_ring_of_ours_is_refused_not_dropped",
            "other_uid",
        )
        .env("PYSHMEM_LOCK_DIR", &lock_dir)
        .run_as_user(OTHER_UID)
        .run(LONG)
        .join("\n")
    } else {
        check()
    };
    assert_eq!(said, "refused true, stat says why true");
}

/// A cursor asked for frames of another element type is refused with `DtypeMismatch`
/// (`next_publication` now checks before allocating a buffer of that type; the order itself
/// is not observable without a counting allocator), and the frame is still there after.
#[test]
fn a_cursor_asked_for_another_element_type_is_refused_and_keeps_the_frame() {
    let name = unique_name("hist-dtype");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[4])
        .dtype(Dtype::U8)
        .history(4)
        .create()
        .unwrap();
    let mut c = s.cursor().unwrap();
    s.write_slice(&[7u8; 4]).unwrap();
    let wrong = c.next_publication::<f64>(SHORT).map(|_| ());
    assert!(
        matches!(
            wrong,
            Err(Error::DtypeMismatch {
                expected: Dtype::U8,
                given: Dtype::F64,
                ..
            })
        ),
        "{wrong:?}"
    );
    let wrong = c.next::<u32>(SHORT).map(|_| ());
    assert!(
        matches!(wrong, Err(Error::DtypeMismatch { .. })),
        "{wrong:?}"
    );
    assert_eq!(c.next::<u8>(SHORT).unwrap().as_slice().unwrap(), &[7u8; 4]);
}

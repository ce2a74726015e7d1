//! Real multi-process behaviour: the test binary re-executes itself as child processes
//! (roles in `child_entry`, see tests/common/mod.rs) that open the same streams.

mod common;

use std::time::{Duration, Instant};

use common::{Cleanup, LONG, block_on_stdin, child, child_role, param, say, unique_name};
use shmstream::{Dtype, Error, Stream, StreamOptions};

#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    let name: String = param("name");
    match role.as_str() {
        // Reads the current frame and prints its values, count and frame id.
        "read_print" => {
            let s = Stream::open_readonly(&name).unwrap();
            let p = s.read_publication::<i32>().unwrap();
            let vals: Vec<String> = p.payload.iter().map(|v| v.to_string()).collect();
            say(&format!(
                "frame {} {} {}",
                p.info.count,
                p.info.frame_id,
                vals.join(",")
            ));
        }
        // Writes `frames` frames: frame k is [base + k; len] with frame_id 1000 + k.
        "write_frames" => {
            let base: i32 = param("base");
            let frames: u64 = param("frames");
            let s = Stream::open(&name).unwrap();
            for k in 0..frames {
                s.write_slice_frame(&vec![base + k as i32; s.len()], 1000 + k)
                    .unwrap();
            }
            say("wrote");
        }
        // N locked read-modify-write increments of element 0.
        "increment" => {
            let n: u64 = param("n");
            let s = Stream::open(&name).unwrap();
            say("ready");
            assert_eq!(block_on_stdin(), "go");
            for _ in 0..n {
                let g = s.lock(Some(LONG)).unwrap();
                let v = g.live::<i64>().unwrap()[[0]];
                g.write_slice(&[v + 1]).unwrap();
            }
            say("done");
        }
        // Waits for "go" on stdin, then writes one frame.
        "write_on_go" => {
            let value: i32 = param("value");
            let s = Stream::open(&name).unwrap();
            say("ready");
            assert_eq!(block_on_stdin(), "go");
            s.write_slice(&vec![value; s.len()]).unwrap();
            say("wrote");
        }
        // Says its read count and thread id, parks in read_new and prints what it got.
        "read_new_print" => {
            let s = Stream::open_readonly(&name).unwrap();
            say(&format!(
                "waiting {} {}",
                s.last_read_count(),
                common::gettid()
            ));
            let a = s.read_new::<i32>(Some(LONG)).unwrap();
            say(&format!("got {} {}", s.last_read_count(), a[[0]]));
        }
        // Takes the lock, starts a zero-copy write, scribbles half the frame, tells the parent
        // and blocks until killed (or until the parent goes away).
        "die_mid_write" => {
            let s = Stream::open(&name).unwrap();
            let g = s.lock(Some(LONG)).unwrap();
            let _ = g.write_view(|buf: &mut [i32]| -> Result<(), Error> {
                let half = buf.len() / 2;
                buf[..half].fill(-666);
                say("inside");
                block_on_stdin();
                Ok(())
            });
            say("not killed");
        }
        // Takes the write lock, then forks without exec. The forked child tries the lock
        // through the inherited handle, drops its copy of the guard, tries through a handle
        // opened after the fork, and says what each did. The parent holds on until stdin
        // closes.
        "fork_holder" => {
            let s = Stream::open(&name).unwrap();
            let g = s.lock(Some(LONG)).unwrap();
            // SAFETY: the forked child runs only this block and leaves with `_exit`; the
            // parent's other thread (the test harness's main thread) holds none of the locks
            // it takes.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let outcome = |r: Result<(), Error>| match r {
                    Ok(()) => "took it".to_owned(),
                    Err(Error::Timeout { .. }) => "excluded".to_owned(),
                    Err(e) => format!("error {e}"),
                };
                let inherited = outcome(s.lock(Some(Duration::ZERO)).map(drop));
                let write = match g.write_slice(&[1i32; 4]) {
                    Err(Error::Unsupported { .. }) => "refused",
                    Ok(()) => "written",
                    Err(_) => "failed",
                };
                let live = match g.live::<i32>().map(drop) {
                    Err(Error::Unsupported { .. }) => "refused",
                    Ok(()) => "lent",
                    Err(_) => "failed",
                };
                drop(g);
                let fresh = outcome(
                    Stream::open(&name).and_then(|t| t.lock(Some(Duration::ZERO)).map(drop)),
                );
                say(&format!(
                    "forked: inherited {inherited}, its guard's write {write}, its guard's live {live}, fresh {fresh}"
                ));
                // SAFETY: ends the forked child without running the parent's exit handlers.
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: waits for the child forked above; `status` outlives the call.
            let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(waited, pid);
            say("holding");
            block_on_stdin();
            drop(g);
        }
        // Opens `name` (and locks it once), then forks without exec. The forked child locks
        // through the inherited handle and says whose pid the header's lock owner stamp holds.
        "fork_stamp" => {
            let s = Stream::open(&name).unwrap();
            drop(s.lock(Some(LONG)).unwrap());
            // SAFETY: the forked child runs only this block and leaves with `_exit`; the
            // parent's other thread (the test harness's main thread) holds none of the locks
            // it takes.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let g = s.lock(Some(LONG)).unwrap();
                let owner = lock_owner_stamp(&name);
                let me = i64::from(std::process::id());
                let whose = if owner == me {
                    "self".to_owned()
                } else {
                    format!("{owner}, not {me}")
                };
                drop(g);
                say(&format!("forked: owner {whose}"));
                // SAFETY: ends the forked child without running the parent's exit handlers.
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: waits for the child forked above; `status` outlives the call.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        }
        // Forks without exec inside a write (the lock held, the sequence odd). The forked child
        // waits briefly for a frame, through the inherited handle and a fresh one, and says
        // what each wait gave and whether the sequence is still the live writer's (odd), not
        // marked abandoned. The parent then finishes its write ([7; len]).
        "fork_mid_write" => {
            let s = Stream::open(&name).unwrap();
            let g = s.lock(Some(LONG)).unwrap();
            g.write_view(|buf: &mut [i32]| -> Result<(), Error> {
                buf.fill(7);
                // SAFETY: the forked child runs only this block and leaves with `_exit`; the
                // parent's other thread (the test harness's main thread) holds none of the
                // locks it takes.
                let pid = unsafe { libc::fork() };
                assert!(pid >= 0, "fork failed");
                if pid == 0 {
                    let wait =
                        |t: &Stream| match t.wait_for_count(0, Some(Duration::from_millis(300))) {
                            Err(Error::Timeout { .. }) => "timed out".to_owned(),
                            Ok(c) => format!("got count {c}"),
                            Err(e) => format!("error {e}"),
                        };
                    let inherited = wait(&s);
                    let fresh = match Stream::open_readonly(&name) {
                        Ok(t) => wait(&t),
                        Err(e) => format!("open error {e}"),
                    };
                    let seq = s.write_sequence();
                    let seq = if seq > 0 && seq % 2 == 1 {
                        "odd".to_owned()
                    } else {
                        seq.to_string()
                    };
                    say(&format!(
                        "forked: inherited {inherited}, fresh {fresh}, sequence {seq}"
                    ));
                    // SAFETY: ends the forked child without running the parent's exit
                    // handlers.
                    unsafe { libc::_exit(0) };
                }
                let mut status = 0;
                // SAFETY: waits for the child forked above; `status` outlives the call.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                Ok(())
            })
            .unwrap();
            drop(g);
            say("wrote");
        }
        // Takes the write lock and a live view, then forks without exec and lets both go. The
        // forked child writes once its parent released, drops its copy of the view (the
        // parent's loan), writes again, and says what each did.
        "fork_live_view" => {
            let s = Stream::open(&name).unwrap();
            let g = s.lock(Some(LONG)).unwrap();
            let v = g.live::<i32>().unwrap();
            // SAFETY: the forked child runs only this block and leaves with `_exit`; the
            // parent's other thread (the test harness's main thread) holds none of the locks
            // it takes.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let write = |r: Result<(), Error>| match r {
                    Ok(()) => "written".to_owned(),
                    Err(e) => format!("error {e}"),
                };
                let first = write(
                    s.lock(Some(LONG))
                        .and_then(|mine| mine.write_slice(&[1i32; 4])),
                );
                let dropped =
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(v))) {
                        Ok(()) => "dropped",
                        Err(_) => "panicked",
                    };
                drop(g);
                let again = write(s.write_slice(&[2i32; 4]));
                say(&format!("forked: {first}, view {dropped}, then {again}"));
                // SAFETY: ends the forked child without running the parent's exit handlers.
                unsafe { libc::_exit(0) };
            }
            drop(v);
            drop(g);
            let mut status = 0;
            // SAFETY: waits for the child forked above; `status` outlives the call.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        }
        // Creates `name` with auto-unlink, forks without exec; the forked child drops its
        // copy of the handle and leaves. The parent says whether the stream is still there,
        // then drops its own.
        "fork_auto_unlink" => {
            let s = StreamOptions::new(&name)
                .shape(&[4])
                .dtype(Dtype::I32)
                .auto_unlink(true)
                .create()
                .unwrap();
            // SAFETY: the forked child runs only this block and leaves with `_exit`; the
            // parent's other thread (the test harness's main thread) holds none of the locks
            // it takes.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                drop(s);
                // SAFETY: ends the forked child without running the parent's exit handlers.
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: waits for the child forked above; `status` outlives the call.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            let there = shmstream::stat(&name).is_ok();
            say(&format!("after the child's drop: there {there}"));
            drop(s);
        }
        // Opens `name`, has another handle unlink it, then forks without exec. The forked
        // child locks through the inherited handle and says what it got and whether a lock
        // file is at the stream's lock path afterwards.
        "fork_unlinked_lock" => {
            let s = Stream::open(&name).unwrap();
            Stream::open(&name).unwrap().unlink().unwrap();
            say_forked_lock(&s, &name);
        }
        // Removes the lock file of a stream that lives (as a temporary-file cleaner ages an
        // old one out), then forks without exec. The forked child locks through the inherited
        // handle and says what it got and whether a lock file is at the path again.
        "fork_cleaned_lock" => {
            let s = Stream::open(&name).unwrap();
            drop(s.lock(Some(LONG)).unwrap());
            std::fs::remove_file(shmstream::name::lock_path(&name)).unwrap();
            say_forked_lock(&s, &name);
        }
        other => panic!("unknown role {other}"),
    }
}

/// Forks without exec; the forked child locks through the inherited handle `s` and says what
/// it got and whether a lock file is at the stream's lock path afterwards; the parent waits.
fn say_forked_lock(s: &Stream, name: &str) {
    // SAFETY: the forked child runs only this block and leaves with `_exit`; the parent's
    // other thread (the test harness's main thread) holds none of the locks it takes.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let got = match s.lock(Some(Duration::ZERO)).map(drop) {
            Ok(()) => "a guard".to_owned(),
            Err(Error::Stale { .. }) => "stale".to_owned(),
            Err(e) => format!("error {e}"),
        };
        let file = shmstream::name::lock_path(name).exists();
        say(&format!("forked: {got}, lock file {file}"));
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above; `status` outlives the call.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
}

/// The lock owner pid stamped in stream `name`'s header, straight from its `_meta` segment.
fn lock_owner_stamp(name: &str) -> i64 {
    let b = std::fs::read(format!("/dev/shm/{}", shmstream::name::meta_id(name))).unwrap();
    let off = shmstream::format::offset::LOCK_OWNER_PID;
    i64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// A child named after a test this binary does not have runs nothing and exits 0 (libtest):
/// its run fails rather than pass for a check that never ran.
#[test]
#[should_panic(expected = "ran no test")]
fn a_child_of_a_test_this_binary_lacks_fails_its_run() {
    child("no_test_is_named_this", "none").run(LONG);
}

#[test]
fn parent_writes_child_reads_and_child_writes_parent_reads() {
    let name = unique_name("xproc");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[2, 3], Dtype::I32).unwrap();
    s.write_slice_frame(&[1i32, -2, 3, -4, 5, i32::MAX], 77)
        .unwrap();
    let lines = child("child_entry", "read_print")
        .param("name", &name)
        .run(LONG);
    assert_eq!(lines, vec![format!("frame 1 77 1,-2,3,-4,5,{}", i32::MAX)]);

    child("child_entry", "write_frames")
        .param("name", &name)
        .param("base", 40)
        .param("frames", 3)
        .run(LONG);
    let p = s.read_publication::<i32>().unwrap();
    assert_eq!(p.payload.as_slice().unwrap(), &[42; 6]);
    assert_eq!((p.info.count, p.info.frame_id, p.info.missed), (4, 1002, 3)); // this handle never read frame 1
    let st = shmstream::stat(&name).unwrap();
    assert_eq!((st.count, st.frame_id, st.write_sequence), (4, 1002, 8));
}

#[test]
fn two_writer_processes_serialize_on_the_lock() {
    let name = unique_name("serial");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[1], Dtype::I64).unwrap();
    s.write_slice(&[0i64]).unwrap();
    const N: u64 = 2000;
    let mut a = child("child_entry", "increment")
        .param("name", &name)
        .param("n", N)
        .spawn();
    let mut b = child("child_entry", "increment")
        .param("name", &name)
        .param("n", N)
        .spawn();
    // The parent competes too, through a second handle.
    a.expect_line("ready", LONG);
    b.expect_line("ready", LONG);
    a.send_line("go");
    b.send_line("go");
    for _ in 0..N / 4 {
        let g = s.lock(Some(LONG)).unwrap();
        let v = g.live::<i64>().unwrap()[[0]];
        g.write_slice(&[v + 1]).unwrap();
    }
    a.wait_success(Duration::from_secs(120));
    b.wait_success(Duration::from_secs(120));
    let total = 2 * N + N / 4;
    assert_eq!(
        s.read::<i64>().unwrap()[[0]],
        total as i64,
        "lost updates: writers were not serialized"
    );
    assert_eq!(s.count(), total + 1);
}

#[test]
fn read_new_in_parent_wakes_on_a_child_write() {
    for notify in [true, false] {
        let name = unique_name("wake");
        let _c = Cleanup::new([&name]);
        let s = StreamOptions::new(&name)
            .shape(&[4])
            .dtype(Dtype::I32)
            .notify(notify)
            .create()
            .unwrap();
        s.write_slice(&[0i32; 4]).unwrap();
        let r = Stream::open_readonly(&name).unwrap();
        assert_eq!(r.read::<i32>().unwrap()[[0]], 0);
        let mut w = child("child_entry", "write_on_go")
            .param("name", &name)
            .param("value", 31)
            .spawn();
        w.expect_line("ready", LONG);
        // The child writes only once the reader is parked in its wait.
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let a = std::thread::scope(|sc| {
            let reader = sc.spawn(|| {
                tid_tx.send(common::gettid()).unwrap();
                r.read_new::<i32>(Some(LONG))
            });
            let tid = tid_rx.recv().unwrap();
            common::wait_parked_on_stream(std::process::id(), tid as u32, &name, notify);
            w.send_line("go");
            reader.join().unwrap()
        })
        .unwrap();
        assert_eq!(a.as_slice().unwrap(), &[31; 4], "notify={notify}");
        assert_eq!(r.last_read_count(), 2);
        w.expect_line("wrote", LONG);
        w.wait_success(LONG);
        // Nothing newer: the next read_new times out.
        assert!(matches!(
            r.read_new::<i32>(Some(Duration::from_millis(30))),
            Err(Error::Timeout { .. })
        ));
    }
}

#[test]
fn read_new_in_child_wakes_on_a_parent_write() {
    let name = unique_name("wake2");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[1])
        .dtype(Dtype::I32)
        .notify(true)
        .create()
        .unwrap();
    s.write_slice(&[5i32]).unwrap();
    let mut r = child("child_entry", "read_new_print")
        .param("name", &name)
        .spawn();
    let waiting = r.expect_line("waiting", LONG);
    let (count, tid) = waiting.split_once(' ').unwrap();
    assert_eq!(count, "1");
    // Written once the child is parked in its wait.
    common::wait_parked_on_stream(r.pid(), tid.parse().unwrap(), &name, true);
    s.write_slice(&[6i32]).unwrap();
    assert_eq!(r.expect_line("got", LONG), "2 6");
    r.wait_success(LONG);
}

#[test]
fn many_frames_across_processes_arrive_in_order() {
    let name = unique_name("order");
    let _c = Cleanup::new([&name]);
    let _s = StreamOptions::new(&name)
        .shape(&[16])
        .dtype(Dtype::I32)
        .notify(true)
        .create()
        .unwrap();
    let r = Stream::open_readonly(&name).unwrap();
    let mut w = child("child_entry", "write_frames")
        .param("name", &name)
        .param("base", 0)
        .param("frames", 500)
        .spawn();
    let mut last_count = 0;
    let mut seen = 0;
    loop {
        let p = r.read_new_publication::<i32>(Some(LONG)).unwrap();
        assert!(
            p.info.count > last_count,
            "count went from {last_count} to {}",
            p.info.count
        );
        let v = p.payload[[0]];
        assert!(
            p.payload.iter().all(|x| *x == v),
            "torn frame {:?}",
            p.payload
        );
        assert_eq!(
            v as u64 + 1,
            p.info.count,
            "payload and count from different publications"
        );
        assert_eq!(
            p.info.frame_id,
            1000 + v as u64,
            "payload and frame_id from different publications"
        );
        assert_eq!(p.info.missed, p.info.count - last_count - 1);
        last_count = p.info.count;
        seen += 1;
        if p.info.count == 500 {
            break;
        }
    }
    assert!(seen >= 1);
    assert_eq!(r.total_missed_writes() + seen, 500);
    w.wait_success(LONG);
}

/// Starts a child that dies (SIGKILL) inside its write bracket, with half the frame scribbled.
fn kill_mid_write(name: &str) {
    let mut w = child("child_entry", "die_mid_write")
        .param("name", name)
        .spawn();
    w.expect_line("inside", LONG);
    let st = shmstream::stat(name).unwrap();
    assert_eq!(
        st.write_sequence % 2,
        1,
        "the child should be inside its bracket: {st:?}"
    );
    let status = w.kill();
    assert!(!status.success());
    assert!(!w.drain_lines().iter().any(|l| l == "not killed"));
}

#[test]
fn writer_killed_mid_write_leaves_readers_a_clear_error_and_the_next_writer_recovers() {
    let name = unique_name("killed");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[64])
        .dtype(Dtype::I32)
        .notify(true)
        .create()
        .unwrap();
    s.write_slice(&[7i32; 64]).unwrap();
    let r = Stream::open_readonly(&name).unwrap();
    let waiter = Stream::open_readonly(&name).unwrap();
    assert_eq!(waiter.read::<i32>().unwrap()[[0]], 7);

    std::thread::scope(|sc| {
        // A reader parked in read_new while the writer dies must not hang.
        let parked = sc.spawn(|| {
            let t0 = Instant::now();
            (
                waiter.read_new::<i32>(Some(Duration::from_secs(60))),
                t0.elapsed(),
            )
        });
        kill_mid_write(&name);
        // A snapshot read gets a typed error within its timeout, never torn data.
        r.set_default_timeout(Duration::from_secs(20));
        let t0 = Instant::now();
        let e = r.read::<i32>().unwrap_err();
        assert!(matches!(e, Error::Inconsistent { .. }), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
        assert!(e.to_string().contains(&name), "{e}");
        let (res, waited) = parked.join().unwrap();
        assert!(matches!(res, Err(Error::Inconsistent { .. })), "{res:?}");
        assert!(waited < Duration::from_secs(60), "{waited:?}");
    });
    assert!(
        s.write_sequence() < 0,
        "the dead writer's generation is marked invalid"
    );
    assert!(matches!(
        r.read_publication::<i32>(),
        Err(Error::Inconsistent { .. })
    ));

    // The next writer (another process) takes the lock the dead one held and recovers.
    child("child_entry", "write_frames")
        .param("name", &name)
        .param("base", 9)
        .param("frames", 1)
        .run(LONG);
    let p = r.read_publication::<i32>().unwrap();
    assert_eq!(p.payload.as_slice().unwrap(), &[9; 64]);
    assert_eq!((p.info.count, p.info.frame_id), (2, 1000));
    assert!(s.write_sequence() > 0 && s.write_sequence() % 2 == 0);
    assert_eq!(waiter.read_new::<i32>(Some(LONG)).unwrap()[[0]], 9);
    // And this process can write too.
    s.write_slice(&[10i32; 64]).unwrap();
    assert_eq!(r.read::<i32>().unwrap()[[63]], 10);
}

#[test]
fn writer_killed_mid_write_then_written_before_anyone_reads() {
    let name = unique_name("killed2");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[32], Dtype::I32).unwrap();
    s.write_slice(&[1i32; 32]).unwrap();
    kill_mid_write(&name);
    // Nobody marked the dead bracket: the next writer must still produce a readable frame.
    let t0 = Instant::now();
    s.write_slice(&[2i32; 32]).unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the dead writer's lock was not released"
    );
    let r = Stream::open_readonly(&name).unwrap();
    assert_eq!(r.read::<i32>().unwrap().as_slice().unwrap(), &[2; 32]);
    assert_eq!(r.count(), 2);
    assert!(
        s.write_sequence() > 0 && s.write_sequence() % 2 == 0,
        "{}",
        s.write_sequence()
    );
}

#[test]
fn a_child_forked_without_exec_is_excluded_by_its_parent_s_lock() {
    let name = unique_name("fork");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[4], Dtype::I32).unwrap();
    let mut p = child("child_entry", "fork_holder")
        .param("name", &name)
        .spawn();
    // A flock belongs to the open file description, which fork shares: through the
    // inherited one the child would take the lock its parent holds.
    assert_eq!(
        p.expect_line("forked: ", LONG),
        "inherited excluded, its guard's write refused, its guard's live refused, fresh excluded"
    );
    p.expect_line("holding", LONG);
    // The child's drop of its copy of the parent's guard left the parent's lock held.
    assert!(matches!(
        s.lock(Some(Duration::ZERO)),
        Err(Error::Timeout { .. })
    ));
    p.close_stdin();
    p.wait_success(LONG);
    drop(s.lock(Some(LONG)).unwrap());
    // A child's lock is stamped with its own pid, not the parent's (cached at its open).
    let mut p = child("child_entry", "fork_stamp")
        .param("name", &name)
        .spawn();
    assert_eq!(p.expect_line("forked: ", LONG), "owner self");
    p.wait_success(LONG);
    // A reader in the child does not take its parent's live write for a dead writer's: its
    // waits time out, the generation stays the writer's, and the write then completes.
    s.write_slice(&[1i32; 4]).unwrap();
    let before = s.count();
    let mut p = child("child_entry", "fork_mid_write")
        .param("name", &name)
        .spawn();
    assert_eq!(
        p.expect_line("forked: ", LONG),
        "inherited timed out, fresh timed out, sequence odd"
    );
    p.expect_line("wrote", LONG);
    p.wait_success(LONG);
    let got = s.read_publication::<i32>().unwrap();
    assert_eq!(got.payload.as_slice().unwrap(), &[7; 4]);
    assert_eq!(got.info.count, before + 1);
}

/// A live view held across a fork without exec is the parent's loan: the child's drop of its
/// copy leaves the child's own lock state alone, and its writes go on.
#[test]
fn a_live_view_a_child_inherited_through_a_fork_does_not_lend_its_payload() {
    let name = unique_name("fork-view");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[4], Dtype::I32).unwrap();
    s.write_slice(&[0i32; 4]).unwrap();
    let mut p = child("child_entry", "fork_live_view")
        .param("name", &name)
        .spawn();
    assert_eq!(
        p.expect_line("forked: ", LONG),
        "written, view dropped, then written"
    );
    p.wait_success(LONG);
    assert_eq!(s.read::<i32>().unwrap().as_slice().unwrap(), &[2; 4]);
}

/// A child forked without exec that locks an inherited handle of a stream removed meanwhile
/// gets Stale, and the removed stream's lock file is not made again at its path.
#[test]
fn a_forked_child_s_lock_of_an_unlinked_stream_is_stale_and_leaves_no_lock_file() {
    let name = unique_name("fork-stale");
    let _c = Cleanup::new([&name]);
    let _s = Stream::create(&name, &[4], Dtype::I32).unwrap();
    let mut p = child("child_entry", "fork_unlinked_lock")
        .param("name", &name)
        .spawn();
    assert_eq!(p.expect_line("forked: ", LONG), "stale, lock file false");
    p.wait_success(LONG);
    assert!(!shmstream::name::lock_path(&name).exists());
}

/// A child forked without exec that locks an inherited handle whose lock file was removed
/// while the stream lives (a temporary-file cleaner) takes the lock on a file made again at
/// the path: the stream is there, so it is not Stale.
#[test]
fn a_forked_child_s_lock_of_a_live_stream_whose_lock_file_was_removed_is_taken() {
    let name = unique_name("fork-cleaned");
    let _c = Cleanup::new([&name]);
    let _s = Stream::create(&name, &[4], Dtype::I32).unwrap();
    let mut p = child("child_entry", "fork_cleaned_lock")
        .param("name", &name)
        .spawn();
    assert_eq!(p.expect_line("forked: ", LONG), "a guard, lock file true");
    p.wait_success(LONG);
}

#[test]
fn a_child_forked_without_exec_leaves_its_parent_s_auto_unlink_stream() {
    let name = unique_name("fork-auto");
    let _c = Cleanup::new([&name]);
    let mut p = child("child_entry", "fork_auto_unlink")
        .param("name", &name)
        .spawn();
    assert_eq!(
        p.expect_line("after the child's drop: ", LONG),
        "there true"
    );
    p.wait_success(LONG);
    // The parent's own drop removed it.
    assert!(shmstream::stat(&name).is_err());
}

//! Waits, creation and history reads under a periodic signal (a profiler's timer): a no-op
//! `SIGALRM` handler installed without `SA_RESTART`, every 1 ms. Its own test binary: signal
//! dispositions and interval timers are process-wide.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Cleanup, LONG, block_on_stdin, child, child_role, param, say, unique_name};
use shmstream::{Dtype, Error, Stream, StreamOptions};

/// Signals the handler took.
static HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::Relaxed);
}

/// Sets `ITIMER_REAL` to fire every `every` (zero: disarmed).
fn set_timer(every: Duration) {
    let tv = libc::timeval {
        tv_sec: every.as_secs() as libc::time_t,
        tv_usec: every.subsec_micros() as libc::suseconds_t,
    };
    let it = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: `it` is a valid `itimerval`; the old value is not asked for.
    let rc = unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "setitimer: {}", std::io::Error::last_os_error());
}

/// The timer's handler and the timer, until dropped (also on a failed assertion): the
/// timer disarmed, the handler left installed. A signal the timer generated just before
/// the disarm may still be pending; delivered after a restored default disposition, it
/// would end the test binary (`SIGALRM`: alarm clock, seen once in CI).
struct Ticking;

impl Ticking {
    fn start() -> Ticking {
        // SAFETY: a zeroed `sigaction` is valid (no flags: no SA_RESTART; empty mask); the
        // handler only adds to an atomic, which is async-signal-safe.
        unsafe {
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = count_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            assert_eq!(
                libc::sigaction(libc::SIGALRM, &new, std::ptr::null_mut()),
                0
            );
        }
        set_timer(Duration::from_millis(1));
        Ticking
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        set_timer(Duration::ZERO);
    }
}

#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    let name: String = param("name");
    match role.as_str() {
        // Holds the stream's write lock until the parent writes a line or dies.
        "hold_lock" => {
            let s = Stream::open(&name).unwrap();
            let g = s.lock(Some(LONG)).unwrap();
            say("holding");
            block_on_stdin();
            drop(g);
        }
        other => panic!("unknown role {other}"),
    }
}

/// Asserts that `f` timed out after at least `timeout` and well before 2 s.
fn times_out(what: &str, timeout: Duration, f: impl FnOnce() -> shmstream::Result<()>) {
    let start = Instant::now();
    let got = f();
    let took = start.elapsed();
    assert!(matches!(got, Err(Error::Timeout { .. })), "{what}: {got:?}");
    assert!(
        took >= timeout && took < Duration::from_secs(2),
        "{what}: timed out after {took:?}"
    );
}

#[test]
fn creation_waits_and_history_reads_work_under_a_1khz_signal_timer() {
    let big = unique_name("sig-big");
    let idle = unique_name("sig-idle");
    let locked = unique_name("sig-locked");
    let hist = unique_name("sig-hist");
    let _cleanup = Cleanup::new([&big, &idle, &locked, &hist]);
    let timeout = Duration::from_millis(200);
    let ticking = Ticking::start();

    // tmpfs gives up a whole posix_fallocate at a pending signal: reserved in chunks (of
    // up to 8 MiB). 256 MiB, or a quarter of /dev/shm's free room on a small runner (Docker's
    // default is 64 MiB), but a few chunks at least.
    let free = shmstream::harness_support::shm_available().unwrap_or(u64::MAX);
    let big_len = (256u64 << 20).min(free / 4).max(16 << 20) as usize;
    let s = StreamOptions::new(&big)
        .shape(&[big_len])
        .dtype(Dtype::U8)
        .create()
        .unwrap_or_else(|e| panic!("a {big_len}-byte stream under the timer: {e}"));
    drop(s);
    shmstream::unlink(&big).unwrap();

    // An idle notify stream: each strategy's wait times out on time (a parked wait's
    // interrupted parks are not its deadline).
    let w = StreamOptions::new(&idle)
        .shape(&[4])
        .dtype(Dtype::U8)
        .notify(true)
        .create()
        .unwrap();
    w.write_slice(&[1u8; 4]).unwrap();
    let r = Stream::open_readonly(&idle).unwrap();
    for strategy in [
        shmstream::WaitStrategy::Adaptive,
        shmstream::WaitStrategy::Park,
    ] {
        r.set_wait_strategy(strategy);
        times_out(&format!("read_new ({strategy:?})"), timeout, || {
            r.read_new::<u8>(Some(timeout)).map(drop)
        });
    }

    // The write lock, held by another process.
    let s = StreamOptions::new(&locked)
        .shape(&[4])
        .dtype(Dtype::U8)
        .create()
        .unwrap();
    let mut holder = child("child_entry", "hold_lock")
        .param("name", &locked)
        .spawn();
    holder.expect_line("holding", LONG);
    times_out("the write lock", timeout, || {
        s.lock(Some(timeout)).map(drop)
    });
    drop(holder);

    // Whole frames through the history, written while the cursor waits (1 MiB frames:
    // ring-first publications with their early wake).
    const LEN: usize = 1 << 20;
    const FRAMES: u64 = 16;
    let w = StreamOptions::new(&hist)
        .shape(&[LEN])
        .dtype(Dtype::U8)
        .notify(true)
        .history(FRAMES as usize)
        .create()
        .unwrap();
    let r = Stream::open_readonly(&hist).unwrap();
    let mut c = r.cursor().unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for k in 0..FRAMES {
                w.write_slice_frame(&vec![k as u8; LEN], k).unwrap();
            }
        });
        let mut dst = vec![0u8; LEN];
        for k in 0..FRAMES {
            let info = c.next_into_slice(&mut dst, Some(LONG)).unwrap();
            assert_eq!(info.frame_id, k);
            assert!(dst.iter().all(|&b| b == k as u8), "frame {k} is torn");
        }
    });

    let handled = HANDLED.load(Ordering::Relaxed);
    drop(ticking);
    assert!(handled > 50, "the handler ran {handled} times");
}

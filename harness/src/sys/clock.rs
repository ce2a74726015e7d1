//! A clock every process of a run shares: `CLOCK_MONOTONIC` in nanoseconds, so the
//! stages of an AO loop can stamp publications that the parent compares afterwards.

use shmstream::spin::Spin;

/// `clock_gettime(clock)`: vDSO, no system call.
#[inline]
fn clock_now(clock: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec on our stack; the callers pass clocks that
    // always exist on Linux, so the call only fills `ts`.
    unsafe {
        libc::clock_gettime(clock, &mut ts);
    }
    ts
}

/// Nanoseconds of `CLOCK_MONOTONIC` (the same clock in every process of the machine).
#[inline]
pub fn monotonic_ns() -> u64 {
    let ts = clock_now(libc::CLOCK_MONOTONIC);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Seconds since the Unix epoch (`CLOCK_REALTIME`): a floor's write time, taken as the
/// library takes its own (one inlined `clock_gettime`, not std's `SystemTime` path).
#[inline]
pub fn unix_now_s() -> f64 {
    let ts = clock_now(libc::CLOCK_REALTIME);
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// How long before a deadline [`sleep_then_spin_until`] stops sleeping and spins.
const SPIN_NS: u64 = 150_000;

/// Waits until `deadline_ns` (monotonic) as a paced source does: sleeps while it is far,
/// spins the last 150 µs (a sleep alone overshoots by the timer slack and the wake-up).
pub fn sleep_then_spin_until(deadline_ns: u64) {
    let mut spin = Spin::new();
    loop {
        let now = monotonic_ns();
        if now >= deadline_ns {
            return;
        }
        let left = deadline_ns - now;
        if left > SPIN_NS {
            std::thread::sleep(std::time::Duration::from_nanos(left - SPIN_NS));
        } else {
            spin.pause();
        }
    }
}

/// Spins until `deadline_ns` (monotonic), as a busy-waiting stage does until its input comes.
pub fn spin_until(deadline_ns: u64) {
    let mut spin = Spin::new();
    while monotonic_ns() < deadline_ns {
        spin.pause();
    }
}

/// Sleeps until `deadline_ns` (monotonic), as a stage sleeps until its input comes.
pub fn sleep_until(deadline_ns: u64) {
    std::thread::sleep(std::time::Duration::from_nanos(
        deadline_ns.saturating_sub(monotonic_ns()),
    ));
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_moves_forward() {
        let a = super::monotonic_ns();
        let b = super::monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}

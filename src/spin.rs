//! One pause of a busy wait, with the break that keeps a hypervisor from stopping it.
//!
//! Under KVM, a vCPU that runs `pause` over and over, each within a threshold of cycles
//! (128 by default) of the last, is taken for a waiter on a lock whose holder is preempted
//! and made to exit to the host: AMD's pause filter after a count of pauses (3 000 by
//! default), Intel's pause-loop exiting after a window of cycles (4 096); the count grows at
//! each exit and is reset when the vCPU runs again after a halt. A wait that wakes from an
//! idle core and spins on its stream therefore loses the exit's few µs about 90 µs into its
//! spin, and a frame that comes then waits them out. On this project's AMD EPYC VM
//! (`scripts/probes/pause-exits.c`): 1 000 wakes each spinning 400 µs lost 2-10 µs (6-7 µs
//! on average) 1 500-1 800 times, 800-880 of them 80-110 µs into the spin; with 100 ns
//! without a `pause` every 256 pauses, 50-200 times, spread over the spin like the host's
//! own noise. In the AO loop's merged form under `SCHED_FIFO`, the camera hop's floor
//! (a stage woken about 100 µs before a bare frame, spinning for it) was over 2.5 µs for
//! 22-24 % of frames, and for 1-6 % with the breaks.
//!
//! [`Spin::pause`] is that: a spin-loop hint, and every [`PAUSES_PER_BREAK`] pauses a break
//! of [`BREAK`] reading the clock instead, whose last read it returns for the caller's own
//! deadline. Every busy wait of the library pauses through it; it is public so that a
//! benchmark's floor spins exactly as the waits it bounds. On Intel cores, where a `pause`
//! takes about 140 cycles, 256 pauses outlast the default window: there the exits remain
//! until the window has grown past them (not measured here).

use std::time::{Duration, Instant};

/// Pauses between two breaks: about 8 µs of spinning on the AMD EPYC host (a pause there
/// takes about 25-30 ns), well inside its pause filter's 3 000.
pub const PAUSES_PER_BREAK: u32 = 256;

/// How long a break goes without a `pause`: 260-370 cycles at the host's 2.6-3.7 GHz,
/// past the 128 between two pauses that the pause filter still counts as one loop (40 ns
/// was enough there; the margin covers faster clocks).
pub const BREAK: Duration = Duration::from_nanos(100);

/// The state of one busy wait: how many pauses since its last break.
#[derive(Debug, Default, Clone)]
pub struct Spin {
    pauses: u32,
}

impl Spin {
    /// A new wait, its first break [`PAUSES_PER_BREAK`] pauses away.
    pub const fn new() -> Spin {
        Spin { pauses: 0 }
    }

    /// One pause of the wait: a spin-loop hint, or, every [`PAUSES_PER_BREAK`] calls, after
    /// it a break of [`BREAK`] without one; the clock's last read in the break, when it took
    /// one (so that the caller need not read it again for its deadline).
    #[inline]
    pub fn pause(&mut self) -> Option<Instant> {
        std::hint::spin_loop();
        self.pauses = self.pauses.wrapping_add(1);
        if !self.pauses.is_multiple_of(PAUSES_PER_BREAK) {
            return None;
        }
        Some(pause_free(BREAK))
    }
}

/// Busy-waits until `until`, pausing as [`Spin::pause`] does.
pub fn spin_until(until: Instant) {
    let mut spin = Spin::new();
    while Instant::now() < until {
        spin.pause();
    }
}

/// Spins `len` on the clock alone, without a `pause`; the last read.
#[cold]
#[inline(never)]
fn pause_free(len: Duration) -> Instant {
    let start = Instant::now();
    loop {
        let now = Instant::now();
        if now.duration_since(start) >= len {
            return now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spin_breaks_every_so_many_pauses_for_at_least_its_break() {
        let mut spin = Spin::new();
        for _ in 1..PAUSES_PER_BREAK {
            assert_eq!(spin.pause(), None);
        }
        let before = Instant::now();
        let read = spin.pause().expect("a break at the 256th pause");
        assert!(
            read.duration_since(before) >= BREAK,
            "the break was shorter than BREAK"
        );
        assert_eq!(spin.pause(), None, "the count starts again after a break");
    }

    #[test]
    fn spin_until_returns_at_its_instant_not_before() {
        let until = Instant::now() + Duration::from_millis(2);
        spin_until(until);
        assert!(Instant::now() >= until, "returned before its instant");
    }
}

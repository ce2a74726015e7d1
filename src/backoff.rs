//! Pauses between the polls of a wait that nothing wakes (a lock file's `flock`, a word a
//! CUDA stream stores, a stream without notify): yields while the event is likely near, then
//! sleeps that double up to a cap, never past the wait's deadline.

use std::time::{Duration, Instant};

/// Sleeps that double from a first one to a longest one.
#[derive(Debug)]
pub(crate) struct Sleeps {
    next: Duration,
    longest: Duration,
}

impl Sleeps {
    /// Sleeps of `first`, then twice as long each time, up to `longest`.
    pub(crate) const fn new(first: Duration, longest: Duration) -> Self {
        Self {
            next: first,
            longest,
        }
    }

    /// Sleeps the next sleep, or `left` where that is shorter.
    pub(crate) fn sleep(&mut self, left: Duration) {
        std::thread::sleep(self.next.min(left));
        self.next = (self.next * 2).min(self.longest);
    }
}

/// How long a [`Backoff`] yields before it sleeps.
#[derive(Debug)]
enum Yields {
    /// This many more yields.
    Rounds(u32),
    /// Yields until then.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Until(Instant),
}

/// Yields, then [`Sleeps`].
#[derive(Debug)]
pub(crate) struct Backoff {
    yields: Yields,
    sleeps: Sleeps,
}

impl Backoff {
    /// `rounds` yields, then `sleeps`.
    pub(crate) const fn yielding_rounds(rounds: u32, sleeps: Sleeps) -> Self {
        Self {
            yields: Yields::Rounds(rounds),
            sleeps,
        }
    }

    /// Yields for `phase` from now, then `sleeps`.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn yielding_for(phase: Duration, sleeps: Sleeps) -> Self {
        Self {
            yields: Yields::Until(Instant::now() + phase),
            sleeps,
        }
    }

    /// One pause: a yield early in the wait, later a sleep, never past `deadline`.
    pub(crate) fn pause(&mut self, deadline: Option<Instant>) {
        let now = match &mut self.yields {
            Yields::Rounds(left @ 1..) => {
                *left -= 1;
                None
            }
            Yields::Rounds(0) => Some(Instant::now()),
            Yields::Until(end) => Some(Instant::now()).filter(|now| now >= end),
        };
        let Some(now) = now else {
            std::thread::yield_now();
            return;
        };
        let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
        self.sleeps.sleep(left);
    }
}

/// Polls until `poll` answers, pausing between polls with `backoff` (which a wait made of
/// several polls, each with its own deadline, keeps from one to the next); `None` once
/// `deadline` has passed (after a last poll).
pub(crate) fn poll_with<T>(
    backoff: &mut Backoff,
    deadline: Option<Instant>,
    mut poll: impl FnMut() -> Option<T>,
) -> Option<T> {
    loop {
        if let Some(t) = poll() {
            return Some(t);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        backoff.pause(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sleeps double up to their cap, and a pause never sleeps past the deadline (a
    /// sleep of the full cap here would take 10 s).
    #[test]
    fn sleeps_double_to_their_cap_and_end_at_the_deadline() {
        let mut s = Sleeps::new(Duration::from_nanos(1), Duration::from_nanos(5));
        let nexts: Vec<_> = (0..4)
            .map(|_| {
                s.sleep(Duration::ZERO);
                s.next.as_nanos()
            })
            .collect();
        assert_eq!(nexts, [2, 4, 5, 5]);
        let mut b = Backoff::yielding_rounds(
            0,
            Sleeps::new(Duration::from_secs(10), Duration::from_secs(10)),
        );
        let start = Instant::now();
        let got: Option<()> = poll_with(&mut b, Some(start + Duration::from_millis(1)), || None);
        assert_eq!(got, None);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "slept past the deadline"
        );
    }

    /// A backoff yields its rounds before its first sleep (which counts the sleeps down).
    #[test]
    fn a_backoff_yields_its_rounds_then_sleeps() {
        let sleeps = Sleeps::new(Duration::from_nanos(1), Duration::from_nanos(8));
        let mut b = Backoff::yielding_rounds(3, sleeps);
        for _ in 0..3 {
            b.pause(None);
        }
        assert_eq!(b.sleeps.next.as_nanos(), 1, "a sleep among the yields");
        b.pause(None);
        assert_eq!(b.sleeps.next.as_nanos(), 2);
        let mut timed = Backoff::yielding_for(
            Duration::from_secs(3600),
            Sleeps::new(Duration::from_nanos(1), Duration::from_nanos(8)),
        );
        timed.pause(None);
        assert_eq!(
            timed.sleeps.next.as_nanos(),
            1,
            "slept within its yield phase"
        );
    }
}

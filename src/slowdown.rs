//! Test-only slowdown injection, for proving that the CI performance gate catches a
//! regression (scenarios/README.md, "The gate").
//!
//! `SHMSTREAM_TEST_SLOWDOWN=PATH[:FACTOR][,PATH[:FACTOR]…]` with PATH one of `write`,
//! `read`, `lock`, `wake`, `mvm` makes that hot path take FACTOR (default 1.5) times as
//! long: after the path's own work, the thread spins for `(FACTOR - 1) ×` the time it took.
//! The variable is read once per process; unset, each hot-path call costs one load of the
//! cached, empty mask.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A hot path the gate must guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotPath {
    /// The publication bracket and payload copy of a write.
    Write,
    /// The payload copy of a read.
    Read,
    /// Taking and releasing the write lock (each half is slowed).
    Lock,
    /// Waking the stream's waiters after a publication.
    Wake,
    /// The harness's MVM kernel.
    Mvm,
}

impl HotPath {
    const ALL: [HotPath; 5] = [Self::Write, Self::Read, Self::Lock, Self::Wake, Self::Mvm];

    fn name(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Read => "read",
            Self::Lock => "lock",
            Self::Wake => "wake",
            Self::Mvm => "mvm",
        }
    }

    fn bit(self) -> usize {
        self as usize
    }
}

/// The environment variable.
pub const VAR: &str = "SHMSTREAM_TEST_SLOWDOWN";

/// Extra time per path, as a fraction of the path's own time (0: not slowed).
type Extras = [f64; 5];

/// The largest slowdown: a path made 1001 times as long.
const MAX_EXTRA: f64 = 1000.0;

fn parse(spec: &str) -> Extras {
    let mut extras = [0.0; 5];
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, factor) = item.split_once(':').unwrap_or((item, "1.5"));
        let factor: f64 = factor.trim().parse().unwrap_or(1.5);
        if let Some(p) = HotPath::ALL.iter().find(|p| p.name() == name.trim()) {
            // Bounded: an infinite or huge factor would overflow the clock in `Guard::drop`,
            // inside a write's bracket.
            extras[p.bit()] = if factor.is_finite() {
                (factor - 1.0).clamp(0.0, MAX_EXTRA)
            } else {
                0.0
            };
        }
    }
    extras
}

#[inline]
fn extras() -> &'static Option<Extras> {
    static EXTRAS: OnceLock<Option<Extras>> = OnceLock::new();
    EXTRAS.get_or_init(|| std::env::var(VAR).ok().map(|s| parse(&s)))
}

/// Times one call of a hot path; dropping it adds the injected slowdown, if any.
#[derive(Debug)]
#[must_use = "the slowdown is added when the guard drops"]
pub struct Guard(Option<(Instant, f64)>);

/// Starts timing `path` (a no-op unless the variable names it).
#[inline]
pub fn guard(path: HotPath) -> Guard {
    match extras() {
        None => Guard(None),
        Some(e) if e[path.bit()] == 0.0 => Guard(None),
        Some(e) => Guard(Some((Instant::now(), e[path.bit()]))),
    }
}

impl Drop for Guard {
    #[inline]
    fn drop(&mut self) {
        if let Some((start, extra)) = self.0 {
            let until = Instant::now() + start.elapsed().mul_f64(extra);
            crate::spin::spin_until(until);
        }
    }
}

/// How long `path` is slowed per second of its own work (for tests).
pub fn extra_for(spec: &str, path: HotPath) -> Duration {
    Duration::from_secs_f64(parse(spec)[path.bit()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_factors_and_defaults_parse() {
        assert_eq!(
            extra_for("write", HotPath::Write),
            Duration::from_millis(500)
        );
        assert_eq!(
            extra_for("read:2, mvm", HotPath::Read),
            Duration::from_secs(1)
        );
        assert_eq!(
            extra_for("read:2, mvm", HotPath::Mvm),
            Duration::from_millis(500)
        );
        assert_eq!(extra_for("read:2, mvm", HotPath::Lock), Duration::ZERO);
        assert_eq!(extra_for("bogus,lock:0.5", HotPath::Lock), Duration::ZERO);
        // Factors the clock could not add stay bounded (`extra_for` panics on inf).
        assert_eq!(extra_for("write:inf", HotPath::Write), Duration::ZERO);
        assert_eq!(
            extra_for("write:1e300", HotPath::Write),
            Duration::from_secs(1000)
        );
    }

    /// A guard dropped after its path's own work spins on for `extra` times that work: a
    /// path slowed by 1 (factor 2) takes at least twice as long.
    #[test]
    fn a_slowed_path_takes_its_factor_times_as_long() {
        let work = Duration::from_millis(20);
        let start = Instant::now();
        let slowed = Guard(Some((start, 1.0)));
        crate::spin::spin_until(start + work);
        drop(slowed);
        assert!(start.elapsed() >= 2 * work, "{:?}", start.elapsed());
    }

    #[test]
    fn an_unnamed_path_is_not_timed() {
        // The test process does not set the variable for `wake`.
        if !std::env::var(VAR).is_ok_and(|s| s.contains("wake")) {
            assert!(guard(HotPath::Wake).0.is_none());
        }
    }
}

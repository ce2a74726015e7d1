//! Deadlines of waits. A timeout too long for the clock (`Duration::MAX`, `u64::MAX`
//! seconds: what callers pass to mean "forever") is no deadline, never an overflow panic.

use std::time::{Duration, Instant};

/// `from + timeout`; `None` (wait as long as it takes) when `timeout` is `None` or reaches
/// past what the clock can represent.
pub(crate) fn after(from: Instant, timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| from.checked_add(t))
}

/// [`after`] now, reading the clock only for a `Some` timeout (a wait with none, on a
/// cursor's or a lock's fast path, costs no clock read).
pub(crate) fn from_now(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_past_the_clock_is_no_deadline() {
        let now = Instant::now();
        assert_eq!(after(now, None), None);
        assert_eq!(after(now, Some(Duration::MAX)), None);
        assert_eq!(after(now, Some(Duration::from_secs(u64::MAX))), None);
        assert_eq!(
            after(now, Some(Duration::from_millis(5))),
            Some(now + Duration::from_millis(5))
        );
        assert_eq!(from_now(None), None);
        assert_eq!(from_now(Some(Duration::MAX)), None);
        let soon = from_now(Some(Duration::from_secs(60))).unwrap();
        assert!(soon > now + Duration::from_secs(59), "{soon:?}");
    }
}

//! Lossless frames lost, said without filling the log: the first loss at once, later ones
//! summed up ([`Losses`]).

use std::time::Instant;

use crate::SUM_UP_EVERY;

/// Frames lost on a lossless stream (by a publisher lapped by its writer, or in transit):
/// the first loss is said at once, later ones summed up at most every [`SUM_UP_EVERY`] and
/// when the bridge ends (one that stays behind its writer loses frames at almost every
/// frame, and must not fill the log with a line each).
#[derive(Debug)]
pub(crate) struct Losses {
    /// Frames reported lost so far (a publisher's go out in every frame's attachment).
    pub(crate) total: u64,
    unsaid: u64,
    said_at: Option<Instant>,
    /// How they were lost, and the remedy: the end of the line.
    why: &'static str,
}

impl Losses {
    pub(crate) fn new(why: &'static str) -> Losses {
        Losses {
            total: 0,
            unsaid: 0,
            said_at: None,
            why,
        }
    }

    pub(crate) fn lost(&mut self, frames: u64) {
        // Saturating: a subscriber counts gaps from counts a hostile sender chose.
        self.total = self.total.saturating_add(frames);
        self.unsaid = self.unsaid.saturating_add(frames);
    }

    /// The line to say now, if losses are unsaid and the last line is old enough (the
    /// clock is read only then: this runs after every frame put).
    pub(crate) fn due(&mut self) -> Option<String> {
        if self.unsaid == 0 {
            return None;
        }
        self.due_at(Instant::now())
    }

    /// [`Losses::due`] at `now`.
    pub(crate) fn due_at(&mut self, now: Instant) -> Option<String> {
        if self.unsaid == 0
            || self
                .said_at
                .is_some_and(|t| now.saturating_duration_since(t) < SUM_UP_EVERY)
        {
            return None;
        }
        self.said_at = Some(now);
        self.rest()
    }

    /// The line for the losses not said yet, if any.
    pub(crate) fn rest(&mut self) -> Option<String> {
        let n = std::mem::take(&mut self.unsaid);
        (n > 0).then(|| {
            let why = self.why;
            format!("{n} frame(s) {why}")
        })
    }
}

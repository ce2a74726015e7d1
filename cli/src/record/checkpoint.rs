//! Checkpoints: when a cube being filled is made readable as it stands, so that a recorder
//! killed mid-file leaves a file that reads with the frames counted at its last checkpoint.

/// Seconds between the moments a cube being filled is made readable as it stands: its
/// gathered frames handed to the kernel and its frame count rewritten in its header (with a
/// `.npy`, its new `.frames.csv` rows written first), so that a recorder killed leaves a file
/// that reads with the frames counted then. Checked at each frame, against its record time
/// ([`Checkpoints`]).
pub(super) const CHECKPOINT_S: f64 = 1.0;

/// When a cube being filled is due a checkpoint ([`CHECKPOINT_S`]), from the record times
/// of its frames: the first starts the schedule, one [`CHECKPOINT_S`] or more after the last
/// checkpoint (or the first frame) is due, and so is one more than [`CHECKPOINT_S`] before
/// it (the wall clock stepped back, by NTP or a resumed VM: else no checkpoint came until it
/// caught up).
#[derive(Debug, Default)]
pub(super) struct Checkpoints {
    last: Option<f64>,
}

impl Checkpoints {
    /// Whether a frame recorded at `now` is due a checkpoint; if so, it counts as made.
    pub(super) fn due(&mut self, now: f64) -> bool {
        let Some(last) = self.last else {
            self.last = Some(now);
            return false;
        };
        let due = now - last >= CHECKPOINT_S || last - now > CHECKPOINT_S;
        if due {
            self.last = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_due_a_second_on_and_after_the_clock_steps_back() {
        let mut c = Checkpoints::default();
        // The first frame starts the schedule; the same time, or less than a second on, is
        // not due.
        assert!(!c.due(100.0));
        assert!(!c.due(100.0));
        assert!(!c.due(100.9));
        // A second on: due, and the next a second after that.
        assert!(c.due(101.0));
        assert!(!c.due(101.5));
        assert!(c.due(102.25));
        // A little back (under a second) is not due; the clock stepped back by more is, and
        // the schedule goes on from there.
        assert!(!c.due(101.5));
        assert!(!c.due(101.25), "a second back is not more than a second");
        assert!(c.due(50.0));
        assert!(!c.due(50.5));
        assert!(c.due(51.0));
    }
}

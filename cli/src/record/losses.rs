//! The loss arithmetic: how many of the frames a recorder missed count as lost (or as left
//! unread at a signal), counting only those the recording still wanted: none past the end
//! of `--duration`, no more than `--frames` still to take.

use super::Plan;

/// The frames lost to the recording when `lost` frames after count `last` were missed and
/// `skipped` more stepped over: all of them, or once `--duration` is up (`drain_to`) only
/// those up to that count (the ring head read at a lap, and so `lost`, runs on past it).
pub(super) fn lost_by(last: u64, drain_to: Option<u64>, lost: u64, skipped: u64) -> u64 {
    let all = lost.saturating_add(skipped);
    drain_to.map_or(all, |to| all.min(to.saturating_sub(last)))
}

/// The frames `--frames` still wants once `taken` are taken (`None`: no limit).
pub(super) fn wanted(plan: &Plan, taken: u64) -> Option<u64> {
    plan.frames.map(|n| n.saturating_sub(taken))
}

/// `lost`, but no more than the frames still `wanted`: those a recording of `--frames`
/// would have taken in their place.
pub(super) fn at_most(lost: u64, wanted: Option<u64>) -> u64 {
    wanted.map_or(lost, |n| lost.min(n))
}

/// Frames left unread when a signal stops the recording at the stream's `count`, the last
/// taken being `last`: those published since, but none past the end of `--duration`
/// (`drain_to`) nor more than `--frames` still wanted (`wanted`).
pub(super) fn unread(count: u64, last: u64, drain_to: Option<u64>, wanted: Option<u64>) -> u64 {
    let published = drain_to.map_or(count, |to| count.min(to));
    at_most(published.saturating_sub(last), wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_lost_past_the_end_of_a_duration_are_not_counted() {
        // Ring of 8, time up at count 100, cursor at 92, writer at 120 when it is read:
        // only 93..=100 were lost within the recording.
        assert_eq!(lost_by(92, Some(100), 20, 1), 8);
        assert_eq!(lost_by(92, None, 20, 1), 21);
        assert_eq!(
            lost_by(92, Some(100), 3, 1),
            4,
            "a lap inside the window counts whole"
        );
        assert_eq!(lost_by(100, Some(100), 5, 0), 0);
        assert_eq!(lost_by(0, None, u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn frames_still_wanted_are_those_of_frames_not_taken_yet() {
        let mut plan = Plan {
            frames: Some(10),
            ..Plan::for_test(super::super::Format::Npy, "out")
        };
        assert_eq!(wanted(&plan, 0), Some(10));
        assert_eq!(wanted(&plan, 4), Some(6));
        assert_eq!(wanted(&plan, 12), Some(0), "no more than all");
        plan.frames = None;
        assert_eq!(wanted(&plan, 4), None, "no --frames: no limit");
    }

    #[test]
    fn frames_counted_lost_are_at_most_those_the_recording_still_wanted() {
        assert_eq!(at_most(1000, Some(5)), 5, "--frames 10, 5 taken");
        assert_eq!(at_most(3, Some(5)), 3);
        assert_eq!(at_most(1000, None), 1000);
    }

    #[test]
    fn frames_left_unread_are_only_those_the_recording_still_wanted() {
        // Last taken 5 of a stream now at 1005.
        assert_eq!(unread(1005, 5, None, None), 1000);
        assert_eq!(unread(1005, 5, None, Some(5)), 5, "--frames 10, 5 taken");
        assert_eq!(unread(1005, 5, Some(8), None), 3, "time up at count 8");
        assert_eq!(unread(1005, 5, Some(8), Some(2)), 2);
        assert_eq!(
            unread(7, 5, Some(8), None),
            2,
            "the drain still had frames to take"
        );
        assert_eq!(unread(5, 5, None, Some(5)), 0);
        assert_eq!(unread(3, 5, None, None), 0, "none before the last taken");
    }
}

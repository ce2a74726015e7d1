//! Saying frames refused without filling the log: a run of frames refused for one reason is
//! said once, then summed up ([`Refusals`]), reasons that differ only in their numbers
//! being one reason.

use std::time::Instant;

use crate::SUM_UP_EVERY;

/// The refusals said and counted. A run of frames refused for one reason (reasons that
/// differ only in their numbers, sizes or dimensions a sender chose, are one reason: a sender
/// varying them must not fill the log either) is said once, then summed up: every
/// [`SUM_UP_EVERY`] while it goes on, when the reason changes, and when the mirror closes.
/// A frame written between refused ones ends the run but not its count: a refusal of the
/// reason last said, within [`SUM_UP_EVERY`] of that line, is counted into it, not said
/// again, so that good and refused frames mixed at the frame rate (a local reader holding
/// the write lock most of each period, two publishers of different shapes on one key) do not
/// print a line per frame. The frames refused and unsaid are summed up by the first frame
/// written [`SUM_UP_EVERY`] after the last line, if no refusal did so first.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    run: Option<Run>,
}

/// The refusals of the reason last said ([`Refusals`]).
#[derive(Debug)]
struct Run {
    /// The reason of the last frame refused for it.
    reason: String,
    /// Frames refused for it since its last line, not said yet.
    unsaid: u64,
    /// When its last line was said.
    said_at: Instant,
    /// Whether no frame was written since its last refusal.
    open: bool,
}

impl Refusals {
    /// The reason of the last frame refused, if a run is on record.
    #[cfg(test)]
    pub(super) fn last_reason(&self) -> Option<&str> {
        self.run.as_ref().map(|run| run.reason.as_str())
    }

    /// A frame refused for `reason` at `now`: the lines to say (none while a run repeats).
    pub(super) fn refused(&mut self, reason: String, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(run) = &mut self.run {
            let recent = now.saturating_duration_since(run.said_at) < SUM_UP_EVERY;
            // Of the reason last said: counted while it goes on, or soon after, or while
            // frames of it are unsaid (then summed up with them).
            if class(&run.reason).eq(class(&reason)) && (run.open || recent || run.unsaid > 0) {
                run.unsaid += 1;
                run.reason = reason;
                run.open = true;
                if !recent {
                    lines.push(repeated(run.unsaid, &run.reason));
                    (run.unsaid, run.said_at) = (0, now);
                }
                return lines;
            }
            lines.extend(self.rest());
        }
        lines.push(format!("refused a frame: {reason}"));
        self.run = Some(Run {
            reason,
            unsaid: 0,
            said_at: now,
            open: true,
        });
        lines
    }

    /// A frame was written: ends the run, with the line that sums it up where frames went
    /// unsaid and its last line is [`SUM_UP_EVERY`] old (the clock is read only then: this
    /// runs after every frame written).
    pub(super) fn end_run(&mut self) -> Option<String> {
        let run = self.run.as_mut()?;
        if run.unsaid == 0 {
            run.open = false;
            return None;
        }
        self.end_run_at(Instant::now())
    }

    /// [`Refusals::end_run`] at `now`.
    fn end_run_at(&mut self, now: Instant) -> Option<String> {
        let run = self.run.as_mut()?;
        run.open = false;
        if run.unsaid == 0 || now.saturating_duration_since(run.said_at) < SUM_UP_EVERY {
            return None;
        }
        run.said_at = now;
        Some(repeated(std::mem::take(&mut run.unsaid), &run.reason))
    }

    /// The line that sums up the frames refused and not said yet, if any (the reason
    /// changes, or the mirror closes).
    pub(super) fn rest(&mut self) -> Option<String> {
        let run = self.run.as_mut()?;
        (run.unsaid > 0).then(|| repeated(std::mem::take(&mut run.unsaid), &run.reason))
    }
}

/// A refusal's reason without its numbers.
fn class(reason: &str) -> impl Iterator<Item = char> + '_ {
    reason.chars().filter(|c| !c.is_ascii_digit())
}

/// The line summing up `more` frames refused, `reason` the last one's.
fn repeated(more: u64, reason: &str) -> String {
    format!("refused {more} more frame(s) for the same reason: {reason}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::codec::FrameHeader;
    use crate::subscribe::tests::h;

    #[test]
    fn a_run_of_frames_refused_for_one_reason_is_said_once_then_summed_up() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = Refusals::default();
        let bad = || "no attachment".to_owned();
        assert_eq!(r.refused(bad(), at(0)), ["refused a frame: no attachment"]);
        for ms in 1..100 {
            assert!(r.refused(bad(), at(ms)).is_empty(), "said again at {ms} ms");
        }
        // Every SUM_UP_EVERY while it lasts.
        assert_eq!(
            r.refused(bad(), at(10_000)),
            ["refused 100 more frame(s) for the same reason: no attachment"]
        );
        assert!(r.refused(bad(), at(10_001)).is_empty());
        // Another reason: the run so far is summed up, the new reason said.
        assert_eq!(
            r.refused("bad magic".into(), at(10_002)),
            [
                "refused 1 more frame(s) for the same reason: no attachment",
                "refused a frame: bad magic"
            ]
        );
        // Nothing more refused before a frame was written: nothing to sum up.
        assert_eq!(r.end_run_at(at(10_002)), None);
        // Not the reason last said: said.
        assert_eq!(
            r.refused(bad(), at(10_003)),
            ["refused a frame: no attachment"]
        );
        r.refused(bad(), at(10_004));
        // A frame written soon after the line: the count is kept, and a refusal for the
        // same reason soon after is counted into it.
        assert_eq!(r.end_run_at(at(10_005)), None);
        assert!(r.refused(bad(), at(10_006)).is_empty());
        // Summed up by a frame written SUM_UP_EVERY after the line.
        assert_eq!(r.end_run_at(at(20_002)), None);
        assert_eq!(
            r.end_run_at(at(20_003)).as_deref(),
            Some("refused 2 more frame(s) for the same reason: no attachment")
        );
        assert_eq!(r.end_run_at(at(20_004)), None, "said once");
        // Long after the run ended: said afresh.
        assert_eq!(
            r.refused(bad(), at(30_003)),
            ["refused a frame: no attachment"]
        );
    }

    /// A frame written ends the run ([`Refusals::end_run`], at the clock): a refusal of its
    /// reason long after its line is then said afresh, not counted into it; and frames
    /// refused and unsaid are summed up by the first frame written [`SUM_UP_EVERY`] after
    /// the line.
    #[test]
    fn a_frame_written_ends_the_run_and_sums_up_what_is_due() {
        let bad = || "bad magic".to_owned();
        let now = Instant::now();
        let mut r = Refusals::default();
        assert_eq!(r.end_run(), None, "no run");
        r.refused(bad(), now);
        assert_eq!(r.end_run(), None, "nothing unsaid");
        assert_eq!(
            r.refused(bad(), now + SUM_UP_EVERY),
            ["refused a frame: bad magic"]
        );
        let long_ago = now.checked_sub(SUM_UP_EVERY).unwrap();
        let mut r = Refusals::default();
        r.refused(bad(), long_ago);
        assert!(r.refused(bad(), long_ago).is_empty());
        assert_eq!(
            r.end_run().as_deref(),
            Some("refused 1 more frame(s) for the same reason: bad magic")
        );
    }

    /// Good and refused frames alternating at the frame rate (a local reader holding the
    /// write lock most of each period; two publishers of different shapes on one key) are
    /// said once, then summed up with the count whole: every written frame ended the run,
    /// and the next refusal was said again, a line per refused frame.
    #[test]
    fn refusals_between_written_frames_are_summed_up_not_said_each() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let reason = || "upstream sends f32 [4], the local stream holds f32 [3]".to_owned();
        // 100 alternations within a second: one line, then the rest summed up at close.
        let mut r = Refusals::default();
        let mut lines = Vec::new();
        for i in 0..100 {
            lines.extend(r.refused(reason(), at(10 * i)));
            lines.extend(r.end_run_at(at(10 * i + 5)));
        }
        lines.extend(r.rest());
        let more = "refused 99 more frame(s) for the same reason: upstream sends f32 [4]";
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("refused a frame: upstream sends"),
            "{lines:?}"
        );
        assert!(lines[1].starts_with(more), "{lines:?}");
        // Over 50 s: said once, summed up every SUM_UP_EVERY, no frame left uncounted.
        let mut r = Refusals::default();
        let mut lines = Vec::new();
        for i in 0..100 {
            lines.extend(r.refused(reason(), at(500 * i)));
            lines.extend(r.end_run_at(at(500 * i + 250)));
        }
        lines.extend(r.rest());
        assert!(lines.len() <= 7, "{lines:?}");
        let counted: u64 = lines
            .iter()
            .map(|l| match l.strip_prefix("refused ") {
                Some(rest) if rest.starts_with("a frame") => 1,
                Some(rest) => rest.split(' ').next().unwrap().parse::<u64>().unwrap(),
                None => panic!("{l}"),
            })
            .sum();
        assert_eq!(counted, 100, "{lines:?}");
    }

    /// A sender varying the numbers in its bad frames (here attachments of 5 to 24 bytes,
    /// cut short after the version) gets one line, not one per frame.
    #[test]
    fn refusals_differing_only_in_their_numbers_are_one_run() {
        let t0 = Instant::now();
        let mut r = Refusals::default();
        let mut lines = Vec::new();
        let whole = h(1, 1, 0).encode().unwrap();
        for len in 5..=24u64 {
            let reason = FrameHeader::decode(&whole[..len as usize]).unwrap_err();
            lines.extend(r.refused(reason, t0 + Duration::from_millis(len)));
        }
        lines.extend(r.rest());
        assert_eq!(
            lines,
            [
                "refused a frame: attachment of 5 bytes is too short",
                "refused 19 more frame(s) for the same reason: attachment of 24 bytes is too short"
            ]
        );
    }
}

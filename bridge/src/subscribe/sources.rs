//! Following each source instance's newest frame received ([`Sources`], which tells a
//! source seen before from a new generation and notices interleaving), and the arithmetic
//! of the lossless frames missed in transit between two of one source's frames, less the
//! losses its publisher reported ([`missed`]); frames of a new generation before its first
//! one received are said, not counted ([`new_source_line`]). The mirror does the counting.

use crate::codec::FrameHeader;

/// How many source instances [`Sources`] remembers: more than publishers interleaving on
/// one key would plausibly be, few enough to look through at every frame.
pub(super) const SOURCES_KEPT: usize = 8;

/// The source instances whose frames arrived here, each once, the most recent last (where
/// lookups start: it is nearly always the frame's), each with the (count, publisher's
/// losses) and the frame id of its newest frame received; at most [`SOURCES_KEPT`], the
/// least recent forgotten first (an old generation, which sends no more).
#[derive(Debug, Default)]
pub(super) struct Sources {
    seen: Vec<([u8; 16], (u64, u64), u64)>,
}

/// What a frame's source is to [`Sources`].
#[derive(Debug, PartialEq)]
pub(super) enum Arrival {
    /// The first frame received here.
    First,
    /// A source seen before, whose newest frame received had (count, losses) `last` and
    /// frame id `last_id`; `back`: frames of another source came in between (publishers
    /// interleaving on one key).
    Known {
        last: (u64, u64),
        last_id: u64,
        back: bool,
    },
    /// A source not seen before (a new generation); the frame received before it had a
    /// publisher's losses `lost`.
    New { lost: u64 },
}

impl Sources {
    /// Remembers the frame `h` of its source and says what that source is.
    pub(super) fn arrived(&mut self, h: &FrameHeader) -> Arrival {
        let this = (h.source, (h.count, h.lost), h.frame_id);
        let Some(&(newest, (_, lost), _)) = self.seen.last() else {
            self.seen.push(this);
            return Arrival::First;
        };
        let Some(at) = self.seen.iter().rposition(|(src, ..)| *src == h.source) else {
            if self.seen.len() == SOURCES_KEPT {
                self.seen.remove(0);
            }
            self.seen.push(this);
            return Arrival::New { lost };
        };
        let seen = self.seen.remove(at);
        // A frame again, or an older one, leaves the newest as it was.
        self.seen.push(if h.count > seen.1.0 { this } else { seen });
        Arrival::Known {
            last: seen.1,
            last_id: seen.2,
            back: seen.0 != newest,
        }
    }

    /// The (count, publisher's losses) of the newest frame of `source` received.
    pub(super) fn newest(&self, source: &[u8; 16]) -> Option<(u64, u64)> {
        self.seen
            .iter()
            .rev()
            .find(|(src, ..)| src == source)
            .map(|&(_, last, _)| last)
    }

    /// Follows the source of `h` anew from `h` (its newest frame received now, though its
    /// count went back): the source made again ([`Mirror::restarted`](super::Mirror::restarted)).
    pub(super) fn follow_anew(&mut self, h: &FrameHeader) {
        if let Some(seen) = self
            .seen
            .iter_mut()
            .rev()
            .find(|(src, ..)| *src == h.source)
        {
            *seen = (h.source, (h.count, h.lost), h.frame_id);
        }
    }
}

/// Lossless frames of one source instance between its frame last received, with (count,
/// publisher's losses) `last`, and `h` that the publisher did not report lost
/// ([`reported`]).
pub(super) fn missed((count, lost): (u64, u64), h: &FrameHeader) -> u64 {
    if h.count > count {
        let gap = h.count - count - 1;
        gap.saturating_sub(reported(lost, h))
    } else {
        0
    }
}

/// Lossless frames of a new source generation (the source stream made again) before `h`, the
/// first of it received here, that the publisher did not report lost, `lost` the losses
/// reported with the frame received before `h`: frames 1 to `h.count - 1` of it were not
/// carried (a publisher restarted meanwhile carries it from its current frame on). Not
/// asked for the first frame this mirror receives: frames before it were put to no one
/// ([`Mirror::resumed`](super::Mirror::resumed) says what is known).
pub(super) fn uncarried(lost: u64, h: &FrameHeader) -> u64 {
    h.count.saturating_sub(1).saturating_sub(reported(lost, h))
}

/// What is said of the first frame of a new source received here when frames of it came
/// before it ([`uncarried`]): said, not counted, since a source new here may also be another
/// publisher's stream of the same name on the key (interleaving, said once when it shows),
/// whose earlier frames were never this mirror's, and `lost` then is that other publisher's.
pub(super) fn new_source_line(lost: u64, h: &FrameHeader) -> Option<String> {
    let before = uncarried(lost, h);
    (before > 0).then(|| {
        format!(
            "a new source generation's first frame arrived at count {}: up to {before} \
             frame(s) of it before were not carried here (written before the publisher opened \
             it, or lost in transit) and not reported lost by the publisher",
            h.count
        )
    })
}

/// The losses the publisher reported since the frame last seen, whose count of reported
/// losses was `lost`: its count went up by those; went down, it restarted, and only the
/// losses it reported since then are known.
fn reported(lost: u64, h: &FrameHeader) -> u64 {
    if h.lost >= lost {
        h.lost - lost
    } else {
        h.lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscribe::Mirror;
    use crate::subscribe::tests::h;

    #[test]
    fn lossless_gaps_the_publisher_did_not_report_are_counted() {
        let last = (10, 4);
        assert_eq!(missed(last, &h(1, 11, 4)), 0, "the next frame");
        assert_eq!(missed(last, &h(1, 10, 4)), 0, "the same frame again");
        assert_eq!(missed(last, &h(1, 15, 4)), 4, "4 missed, none reported");
        assert_eq!(missed(last, &h(1, 15, 7)), 1, "4 missed, 3 reported");
        assert_eq!(missed(last, &h(1, 15, 9)), 0, "all reported");
        assert_eq!(
            missed(last, &h(1, 15, 1)),
            3,
            "a restarted publisher reported 1"
        );
    }

    /// A new source generation whose first frame arrives at count 5 had 4 frames before it
    /// that were not carried, less those its publisher reported lost (frames lapped in its
    /// ring before it opened the new generation): said, not counted.
    #[test]
    fn frames_of_a_new_source_generation_before_its_first_carried_one_are_said() {
        assert_eq!(uncarried(4, &h(2, 1, 4)), 0, "carried from its first frame");
        assert_eq!(uncarried(4, &h(2, 5, 4)), 4, "from count 5, none reported");
        assert_eq!(uncarried(4, &h(2, 5, 7)), 1, "3 of them reported lost");
        assert_eq!(
            uncarried(4, &h(2, 5, 2)),
            2,
            "a restarted publisher reported 2"
        );
        assert_eq!(new_source_line(4, &h(2, 1, 4)), None);
        let line = new_source_line(4, &h(2, 5, 4)).unwrap();
        assert!(line.contains("at count 5: up to 4 frame(s)"), "{line}");
        let mut m = Mirror::new("cam0", "br-no-such-mirror".into(), 0);
        for frame in [h(1, 10, 4), h(1, 11, 4), h(2, 1, 4)] {
            m.account(&frame).unwrap();
        }
        assert_eq!(
            m.new_source_said_at, None,
            "a new source carried from its first frame"
        );
        m.account(&h(3, 5, 4)).unwrap();
        let said = m.new_source_said_at.expect("the frames before it are said");
        // Said at most every SUM_UP_EVERY, and never counted as gaps.
        m.account(&h(4, 5, 4)).unwrap();
        assert_eq!(m.new_source_said_at, Some(said));
        assert_eq!(m.gaps.total, 0, "counted as gaps");
    }

    /// A frame again (at the newest's count, another frame id) or an older one leaves the
    /// newest as it was: its frame id and the losses its publisher reported with it.
    #[test]
    fn a_frame_again_or_an_older_one_leaves_the_newest_as_it_was() {
        let mut s = Sources::default();
        s.arrived(&h(1, 5, 2));
        let again = FrameHeader {
            frame_id: 50,
            ..h(1, 5, 3)
        };
        for frame in [again, h(1, 4, 9)] {
            s.arrived(&frame);
            assert_eq!(s.newest(&[1; 16]), Some((5, 2)), "after {frame:?}");
        }
        let next = Arrival::Known {
            last: (5, 2),
            last_id: 5,
            back: false,
        };
        assert_eq!(s.arrived(&h(1, 6, 2)), next);
    }

    /// At most [`SOURCES_KEPT`] sources are kept, the least recent forgotten first.
    #[test]
    fn the_least_recent_source_is_forgotten_first() {
        let mut s = Sources::default();
        assert_eq!(s.arrived(&h(0, 1, 0)), Arrival::First);
        for src in 1..SOURCES_KEPT as u8 {
            assert_eq!(s.arrived(&h(src, 1, 0)), Arrival::New { lost: 0 });
        }
        let back = Arrival::Known {
            last: (1, 0),
            last_id: 1,
            back: true,
        };
        assert_eq!(
            s.arrived(&h(0, 1, 0)),
            back,
            "source 0 is now the most recent"
        );
        assert_eq!(s.arrived(&h(99, 1, 0)), Arrival::New { lost: 0 });
        assert_eq!(s.seen.len(), SOURCES_KEPT);
        assert_eq!(s.arrived(&h(0, 2, 0)), back, "kept");
        assert_eq!(
            s.arrived(&h(1, 2, 0)),
            Arrival::New { lost: 0 },
            "forgotten"
        );
        assert_eq!(
            s.arrived(&h(1, 3, 0)),
            Arrival::Known {
                last: (2, 0),
                last_id: 2,
                back: false
            }
        );
    }
}

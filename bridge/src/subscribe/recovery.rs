//! The lossless resend recovery: a lossless source's frames missed in transit (a gap its
//! publisher did not report) are asked for again on the stream's resend key
//! ([`crate::resend_key`]), round after round ([`recover`]), its live frames held meanwhile
//! ([`Recovery`]) and written once the frames before them came or were asked for in vain.
//! What the mirror knows of it is kept together in [`Resends`]; the rules that write frames
//! are the [`Mirror`] methods here.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use zenoh::Wait;
use zenoh::handlers::{FifoChannel, RingChannel, RingChannelHandler};
use zenoh::matching::{MatchingListener, MatchingStatus};
use zenoh::qos::CongestionControl;
use zenoh::query::{ConsolidationMode, Querier, QueryTarget};
use zenoh::sample::{Sample, SampleBuilder};

use super::Mirror;
use super::sources::missed;
use crate::codec::{ANSWER_END, FrameHeader, ResendRequest};
use crate::{BridgeError, POLL, RESEND_WAIT, Stop, zenoh_err};

/// How long a recovery waits for a publisher's resend queryable to be matched before it
/// asks all the same: at a reconnection, its declaration may come after the first frames.
const RESEND_MATCH_WAIT: Duration = Duration::from_secs(2);
/// After an answer that brought none of the frames a recovery asked for (the publisher no
/// longer holds them, or did not answer), how long gaps are counted lost at once rather than
/// asked for: each recovery holds the live frames back while it waits.
const RESEND_BACKOFF: Duration = Duration::from_secs(10);
/// Rounds in a row a recovery asks whose answer brings no frame and does not end
/// ([`ANSWER_END`]) before it gives up on the frames asked for: such an answer was cut short
/// (the query dropped by a publisher with requests waiting, the link cut, the wait run out),
/// and the ring may still hold them.
const RESEND_TRIES: u32 = 3;
/// How long after an answer that brought no frame and did not end a recovery asks again.
const RESEND_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long a round waits for the first reply of an answer (a frame, or its end) before it
/// takes it for unanswered: a request lost on a link not quite back would otherwise hold the
/// live frames for [`RESEND_WAIT`] at each of [`RESEND_TRIES`].
const FIRST_REPLY_WAIT: Duration = Duration::from_secs(2);

/// The querier on a stream's resend key ([`crate::resend_key`]), and whether a publisher
/// answering requests for lossless frames again is matched there.
pub(super) struct Resender<'a> {
    /// Before the querier: fields drop in their order, and undeclaring the querier first
    /// takes its listener with it (Zenoh then logs "Unable to find MatchingListener").
    matching: MatchingListener<RingChannelHandler<MatchingStatus>>,
    querier: Querier<'a>,
    matched: bool,
}

impl<'a> Resender<'a> {
    /// Declares it for stream key `k`. Every publisher there is asked (one of another
    /// source answers nothing), each answer whole (no reply merged into another of its
    /// key); a reply waits for room rather than being dropped, as a lossless frame, at the
    /// live frames' priority (a lower one would wait behind a publisher catching up its ring,
    /// and Zenoh closes a link whose blocked message waits past its deadline).
    pub(super) fn declare(
        session: &'a zenoh::Session,
        k: &str,
    ) -> Result<Resender<'a>, BridgeError> {
        let rk = crate::resend_key(k);
        let querier = session
            .declare_querier(rk.clone())
            .target(QueryTarget::All)
            .consolidation(ConsolidationMode::None)
            .congestion_control(CongestionControl::Block)
            .timeout(RESEND_WAIT)
            .wait()
            .map_err(zenoh_err(format!("declaring the querier on {rk}")))?;
        let matching = querier
            .matching_listener()
            .with(RingChannel::new(1))
            .wait()
            .map_err(zenoh_err(format!(
                "declaring the matching listener on {rk}"
            )))?;
        Ok(Resender {
            querier,
            matching,
            matched: false,
        })
    }

    /// Takes the status changes since the last call. As a publisher answering requests
    /// appears (at the start, or as a link comes back), the mirror knows that one answers,
    /// and asks for the frames after the last lossless frame it wrote: those put into a
    /// connection that died show no gap where no frame follows them.
    pub(super) fn poll(&mut self, state: &Mutex<Mirror>) {
        while let Ok(Some(status)) = self.matching.try_recv() {
            let appeared = status.matching() && !self.matched;
            self.matched = status.matching();
            if !appeared {
                continue;
            }
            let mut m = state.lock().unwrap_or_else(PoisonError::into_inner);
            m.resends.seen = true;
            if m.resends.recovery.is_none()
                && let Some(source) = m.resends.lossless_source
                && m.sources.newest(&source).is_some()
            {
                m.resends.recovery = Some(Recovery::new(source));
            }
        }
    }
}

/// Asks for the frames the mirror's recovery waits for, if it has one, round after round
/// until it ends ([`Mirror::answered`]) or `stop` is set: each round asks the publishers on
/// the resend key for the frames of its source between the newest received and the first
/// held ([`Recovery::request`]), and writes those that come, in order, until the answer
/// ends or [`RESEND_WAIT`]. It waits up to [`RESEND_MATCH_WAIT`] for a publisher's
/// queryable there, then asks all the same. Stopped, it leaves the recovery to the
/// mirror's close, which counts its frames lost.
pub(super) fn recover(
    stop: &Stop,
    state: &Mutex<Mirror>,
    resend: &Resender<'_>,
    k: &str,
) -> Result<(), BridgeError> {
    while !stop.is_set() {
        let asked = {
            let m = state.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(r) = &m.resends.recovery else {
                return Ok(());
            };
            if (!resend.matched && r.since.elapsed() < RESEND_MATCH_WAIT)
                || Instant::now() < r.ask_at
            {
                return Ok(());
            }
            r.request(m.sources.newest(&r.source).map_or(0, |(c, _)| c))
        };
        let replies = resend
            .querier
            .get()
            .payload(asked.encode().to_vec())
            .with(FifoChannel::new(16))
            .wait()
            .map_err(zenoh_err(format!("asking {k} for lossless frames again")))?;
        // Whether the publisher said its answer is whole, and whether any reply came.
        let (mut whole, mut replied, asked_at) = (false, false, Instant::now());
        loop {
            if stop.is_set() {
                return Ok(());
            }
            match replies.recv_timeout(POLL) {
                Ok(Some(reply)) => match reply.result() {
                    Ok(sample) => {
                        let mut m = state.lock().unwrap_or_else(PoisonError::into_inner);
                        if !m.closed {
                            m.write_resent(sample);
                        }
                    }
                    Err(e) => whole |= *e.payload().to_bytes() == *ANSWER_END,
                },
                // No reply yet: the request was lost (a link not quite back) or waits behind
                // others; asked again rather than waited for up to RESEND_WAIT.
                Ok(None) if !replied && asked_at.elapsed() >= FIRST_REPLY_WAIT => break,
                Ok(None) => continue,
                // The query is done: answered, or its wait ran out.
                Err(_) => break,
            }
            replied = true;
        }
        if !state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .answered(&asked, whole, resend.matched)
        {
            return Ok(());
        }
    }
    Ok(())
}

/// The most a recovery holds of its source's live frames, in payload bytes (at least one
/// frame): past it, they are dropped, and asked for once the held ones are written.
const HELD_BYTES: usize = 256 << 20;

/// What a mirror knows of lossless resends: whether a publisher answers requests for frames
/// again, the recovery under way, and what is left of the last one.
#[derive(Debug)]
pub(super) struct Resends {
    /// Whether a publisher that answers requests for lossless frames again
    /// ([`crate::resend`]) was seen on the key: until one is (an older bridge's does not),
    /// a lossless gap is counted lost at once, as before.
    seen: bool,
    /// The lossless source whose missed frames are being asked for again.
    recovery: Option<Recovery>,
    /// A source, and the newest count written as its recovery ended: its live frames up to
    /// there, late (an answer ran ahead of the live ones), are dropped unsaid.
    resent_through: Option<([u8; 16], u64)>,
    /// When a gap was last asked for in vain ([`Mirror::answered`]): a gap within
    /// [`RESEND_BACKOFF`] of it is counted lost at once.
    failed_at: Option<Instant>,
    /// The source of the last frame written, where it was lossless (one that carries an
    /// instance id): its frames after it are asked for when a publisher answering requests
    /// appears again (a reconnection), as those put into the lost connection show no gap
    /// where no frame follows them.
    lossless_source: Option<[u8; 16]>,
    /// The most a recovery holds of its source's live frames, in payload bytes (at least
    /// one frame): [`HELD_BYTES`].
    room: usize,
}

impl Resends {
    pub(super) fn new() -> Resends {
        Resends {
            seen: false,
            recovery: None,
            resent_through: None,
            failed_at: None,
            lossless_source: None,
            room: HELD_BYTES,
        }
    }

    /// The frame `h` was written.
    pub(super) fn wrote(&mut self, h: &FrameHeader) {
        self.lossless_source = (h.lossless && h.source != [0; 16]).then_some(h.source);
    }
}

/// A lossless source's frames missed in transit, asked for again ([`recover`]): its live
/// frames that come meanwhile are held, and written once the frames before them came, or
/// were asked for in vain.
#[derive(Debug)]
struct Recovery {
    source: [u8; 16],
    /// Its live frames held, in count order, with their headers.
    held: VecDeque<(Sample, FrameHeader)>,
    /// Their payloads' bytes.
    held_bytes: usize,
    /// Whether a live frame of it was dropped for want of room ([`HELD_BYTES`]): the frames
    /// after the held ones are asked for once those are written.
    dropped: bool,
    /// Its newest live frame that came, held or dropped.
    newest_live: Option<FrameHeader>,
    /// Frames counted below this were asked for and did not come: their gap is counted lost.
    given_up_below: u64,
    /// Rounds in a row whose answer brought no frame and did not end ([`Mirror::answered`]).
    unanswered: u32,
    /// When the next round may ask: [`RESEND_RETRY_AFTER`] after an unanswered one.
    ask_at: Instant,
    /// When the recovery began.
    since: Instant,
}

impl Recovery {
    /// A recovery of `source`, holding none of its live frames yet (the one that came after
    /// a gap is held next; none where it asks whether frames followed the newest).
    fn new(source: [u8; 16]) -> Recovery {
        Recovery {
            source,
            held: VecDeque::new(),
            held_bytes: 0,
            dropped: false,
            newest_live: None,
            given_up_below: 0,
            unanswered: 0,
            ask_at: Instant::now(),
            since: Instant::now(),
        }
    }

    /// Holds the live frame `h`, newer than any held, or drops it for want of `room` (held
    /// ones stay contiguous: once one is dropped, so are those after it). A copy is held:
    /// the sample itself keeps Zenoh's whole receive batch (up to 64 KiB) for a frame of a
    /// few bytes.
    fn hold(&mut self, sample: &Sample, h: &FrameHeader, room: usize) {
        self.newest_live = Some(h.clone());
        let bytes = sample.payload().len();
        if !self.dropped && (self.held.is_empty() || self.held_bytes + bytes <= room) {
            self.held_bytes += bytes;
            let payload = sample.payload().to_bytes().into_owned();
            let attachment = sample.attachment().map(|a| a.to_bytes().into_owned());
            let copy = SampleBuilder::put(sample.key_expr().clone(), payload)
                .attachment(attachment)
                .into();
            self.held.push_back((copy, h.clone()));
        } else {
            self.dropped = true;
        }
    }

    /// What the next round asks for: the frames after `newest` (the count of the newest
    /// received) before the first held.
    fn request(&self, newest: u64) -> ResendRequest {
        ResendRequest {
            source: self.source,
            after: newest,
            before: self.held.front().map_or(u64::MAX, |(_, h)| h.count),
        }
    }
}

impl Mirror {
    /// Writes `sample`, a frame of an answer to a request for frames again ([`recover`]),
    /// where it is one the recovery waits for: of its source, after the newest received and
    /// not after the first held.
    fn write_resent(&mut self, sample: &Sample) {
        if let Some(h) = self.checked(sample)
            && let Some(r) = &self.resends.recovery
            && h.lossless
            && h.source == r.source
            && self
                .sources
                .newest(&h.source)
                .is_none_or(|(c, _)| h.count > c)
            && r.held
                .front()
                .is_none_or(|(_, first)| h.count <= first.count)
        {
            self.write_checked(sample, h);
        }
    }

    /// Whether the live lossless frame `h` (of `sample`) is taken by a recovery rather than
    /// written now: held (or dropped for want of room) where its source is being recovered,
    /// dropped unsaid where it came again or late (written from an answer); or it is the
    /// first after a gap its publisher did not report, which begins a recovery where a
    /// publisher answering requests was seen and none failed within [`RESEND_BACKOFF`]. One
    /// recovery at a time: a frame of another source ends it ([`Mirror::give_up_recovery`]).
    pub(super) fn held_for_resend(&mut self, sample: &Sample, h: &FrameHeader) -> bool {
        if !h.lossless || h.source == [0; 16] {
            return false;
        }
        let newest = self.sources.newest(&h.source);
        if self
            .resends
            .recovery
            .as_ref()
            .is_some_and(|r| r.source != h.source)
        {
            // Another source (made again, or interleaving): the recovery ends first, its held
            // frames written before this one, so the mirror's frames do not go back.
            self.give_up_recovery();
            return false;
        }
        if let Some(r) = self.resends.recovery.as_mut() {
            let behind = r
                .newest_live
                .as_ref()
                .map(|l| l.count)
                .or(newest.map(|(c, _)| c));
            if behind.is_none_or(|c| h.count > c) {
                r.hold(sample, h, self.resends.room);
            }
            return true;
        }
        if self
            .resends
            .resent_through
            .is_some_and(|(src, c)| src == h.source && h.count <= c)
        {
            return true;
        }
        let Some(last) = newest else {
            return false;
        };
        if !self.resends.seen
            || missed(last, h) == 0
            || self
                .resends
                .failed_at
                .is_some_and(|t| t.elapsed() < RESEND_BACKOFF)
        {
            return false;
        }
        let mut r = Recovery::new(h.source);
        r.hold(sample, h, self.resends.room);
        self.resends.recovery = Some(r);
        true
    }

    /// Ends a round of [`recover`] that asked `asked` (nothing, where the recovery is now
    /// another source's), its answer `whole` or not (ended by the publisher,
    /// [`ANSWER_END`]), a publisher answering requests `matched` or not, writing the held
    /// frames that now follow the newest received: whether another round is due at once.
    /// Where none of the frames asked for came, an answer not whole (cut short) is asked for
    /// again [`RESEND_RETRY_AFTER`] later, up to [`RESEND_TRIES`] times in all (after that,
    /// with none matched, no gap is asked for until one appears again); after that, or where
    /// the whole answer held none, they are given up on, and counted lost as the held frame
    /// after them is written (and, for a gap, gaps within [`RESEND_BACKOFF`] are counted lost
    /// at once). Another round asks for a gap still before a held frame, or, once all are
    /// written, for the frames after them where some were dropped for want of room. The
    /// recovery ends otherwise.
    fn answered(&mut self, asked: &ResendRequest, whole: bool, matched: bool) -> bool {
        let Some(mut r) = self.resends.recovery.take() else {
            return false;
        };
        if r.source != asked.source {
            // Another recovery began meanwhile (a frame of another source ended this one).
            self.resends.recovery = Some(r);
            return false;
        }
        let newest = |m: &Mirror| m.sources.newest(&r.source).unwrap_or((0, 0));
        // Whether the answer brought a frame past those the mirror had when it asked.
        let brought = newest(self).0 > asked.after;
        if brought || whole {
            r.unanswered = 0;
        } else {
            r.unanswered += 1;
            if r.unanswered < RESEND_TRIES {
                r.ask_at = Instant::now() + RESEND_RETRY_AFTER;
                self.resends.recovery = Some(r);
                return false;
            }
            // No publisher answering requests matched (an older bridge's took over the key?):
            // gaps are counted at once until one appears again. (One matched but busy is
            // left to the backoff.)
            r.unanswered = 0;
            self.resends.seen &= matched;
        }
        if !brought {
            r.given_up_below = asked.before;
            if asked.before != u64::MAX {
                self.resends.failed_at = Some(Instant::now());
            }
        }
        while let Some((_, first)) = r.held.front() {
            let last = newest(self);
            if missed(last, first) > 0 && first.count > r.given_up_below {
                break;
            }
            let Some((sample, h)) = r.held.pop_front() else {
                break;
            };
            r.held_bytes -= sample.payload().len();
            // One that came in an answer is passed.
            if h.count > last.0 {
                self.write_checked(&sample, h);
            }
        }
        if r.held.is_empty() && std::mem::take(&mut r.dropped) {
            r.given_up_below = 0;
        } else if r.held.is_empty() {
            self.resends.resent_through = Some((r.source, newest(self).0));
            return false;
        }
        self.resends.recovery = Some(r);
        true
    }

    /// Ends the recovery, if any, without asking more: its held frames are written, the
    /// gaps before them counted lost, and so are the frames dropped for want of room after
    /// them ([`Mirror::count_unwritten`]).
    fn give_up_recovery(&mut self) {
        let Some(mut r) = self.resends.recovery.take() else {
            return;
        };
        while let Some((sample, h)) = r.held.pop_front() {
            if self
                .sources
                .newest(&r.source)
                .is_none_or(|(c, _)| h.count > c)
            {
                self.write_checked(&sample, h);
            }
        }
        self.count_unwritten(&r);
    }

    /// Ends the recovery, if any, as the bridge stops: its frames, held or asked for, not
    /// written, are counted lost ([`Mirror::count_unwritten`]).
    pub(super) fn close_recovery(&mut self) {
        if let Some(r) = self.resends.recovery.take() {
            self.count_unwritten(&r);
        }
    }

    /// Counts lost the frames of recovery `r` not written, up to its newest live frame
    /// (held, or dropped for want of room), with the gaps before them its publisher did not
    /// report, and follows its source from that frame (its late frames dropped unsaid).
    fn count_unwritten(&mut self, r: &Recovery) {
        if let (Some(last), Some(live)) = (self.sources.newest(&r.source), &r.newest_live)
            && live.count > last.0
        {
            self.gaps.lost(missed(last, live).saturating_add(1));
            self.sources.follow_anew(live);
            self.resends.resent_through = Some((r.source, live.count));
        }
        if let Some(line) = self.gaps.due() {
            self.say(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use shmstream::Stream;
    use zenoh::query::{Query, Queryable};

    use super::*;
    use crate::subscribe::tests::{h, sample_of};

    /// A mirror of "cam0" into a new local stream of 16 frames of history (unlinked as the
    /// guard drops), fed lossless frames of source [7; 16] by count: live ones as Zenoh's
    /// thread gives them, answered ones as [`recover`] does.
    struct Recovering {
        m: Mirror,
        local: Local,
    }

    /// The name of a mirror's local stream, unlinked as it drops.
    struct Local(String);

    impl Drop for Local {
        fn drop(&mut self) {
            let _ = shmstream::unlink(&self.0);
        }
    }

    impl Local {
        /// The frame ids of the stream's history, oldest first.
        fn mirrored(&self) -> Vec<u64> {
            let s = Stream::open_readonly(&self.0).unwrap();
            let mut c = s.cursor().unwrap();
            c.rewind_to_oldest();
            let mut ids = vec![];
            let mut buf = [0u8];
            while let Ok(info) = c.next_into_bytes(&mut buf, Some(Duration::ZERO)) {
                assert_eq!(
                    buf[0], info.frame_id as u8,
                    "frame {} intact",
                    info.frame_id
                );
                ids.push(info.frame_id);
            }
            ids
        }
    }

    impl Recovering {
        fn new(tag: &str) -> Recovering {
            let name = format!("br-{tag}-{}", std::process::id());
            let _ = shmstream::unlink(&name);
            let mut m = Mirror::new("cam0", name.clone(), 16);
            m.resends.seen = true;
            Recovering {
                m,
                local: Local(name),
            }
        }

        fn sample(count: u64) -> Sample {
            sample_of(&h(7, count, 0))
        }

        fn live(&mut self, counts: impl IntoIterator<Item = u64>) {
            for c in counts {
                self.m.write(&Self::sample(c));
            }
        }

        fn answer(&mut self, counts: impl IntoIterator<Item = u64>) {
            for c in counts {
                self.m.write_resent(&Self::sample(c));
            }
        }

        /// The round asked now, ended once `answered` frames came, the answer `whole` or not.
        fn round_of(
            &mut self,
            answered: impl IntoIterator<Item = u64>,
            whole: bool,
        ) -> (ResendRequest, bool) {
            let r = self.m.resends.recovery.as_ref().expect("a recovery");
            let asked = r.request(self.m.sources.newest(&r.source).unwrap().0);
            self.answer(answered);
            (asked, self.m.answered(&asked, whole, false))
        }

        /// [`Recovering::round_of`] a whole answer.
        fn round(&mut self, answered: impl IntoIterator<Item = u64>) -> (ResendRequest, bool) {
            self.round_of(answered, true)
        }

        /// The frame ids of the local stream's history, oldest first.
        fn mirrored(&self) -> Vec<u64> {
            self.local.mirrored()
        }
    }

    fn request(after: u64, before: u64) -> ResendRequest {
        ResendRequest {
            source: [7; 16],
            after,
            before,
        }
    }

    /// A lossless gap its publisher did not report begins a recovery (where a publisher
    /// answering requests was seen): the source's live frames are held, late ones dropped
    /// unsaid, and each round asks for the frames between the newest written and the first
    /// held, until they all came; the held ones are then written, in order, nothing lost. A
    /// gap the publisher reported, or before any publisher answering was seen, is not asked
    /// for; late live frames after the recovery are dropped unsaid.
    #[test]
    fn a_gap_is_asked_for_round_after_round_and_the_held_frames_written_after_it() {
        let mut t = Recovering::new("recover-gap");
        t.m.resends.seen = false;
        t.live([1, 2]);
        assert!(
            !t.m.held_for_resend(&Recovering::sample(5), &h(7, 5, 0)),
            "no publisher answering seen"
        );
        t.m.resends.seen = true;
        assert!(
            !t.m.held_for_resend(&Recovering::sample(5), &h(7, 5, 2)),
            "a gap the publisher reported"
        );
        assert!(t.m.resends.recovery.is_none());
        t.live([5, 6, 6, 4]);
        let r = t.m.resends.recovery.as_ref().unwrap();
        let held: Vec<u64> = r.held.iter().map(|(_, h)| h.count).collect();
        assert_eq!(held, [5, 6], "6 came again, 4 late");
        assert_eq!(t.round([3]), (request(2, 5), true), "4 still missing");
        assert_eq!(t.round([4]), (request(3, 5), false), "all came");
        assert!(t.m.resends.recovery.is_none());
        t.live([3, 6, 7]);
        assert_eq!(
            t.mirrored(),
            [1, 2, 3, 4, 5, 6, 7],
            "3 late and 6 again dropped unsaid"
        );
        assert_eq!(t.m.gaps.total, 0, "nothing lost");
        assert_eq!(t.m.refusals.last_reason(), None, "nothing refused");
    }

    /// Frames asked for in vain (a whole answer without them: the publisher no longer holds
    /// them; or [`RESEND_TRIES`] answers that never ended) are counted lost as the held
    /// frames after them are written, and gaps within [`RESEND_BACKOFF`] are counted lost at
    /// once, unasked. At close, a recovery's frames, held or asked for, are counted lost,
    /// not written.
    #[test]
    fn frames_asked_for_in_vain_are_counted_lost_and_the_held_ones_written() {
        let mut t = Recovering::new("recover-vain");
        t.live([2, 5, 6]);
        for _ in 1..RESEND_TRIES {
            assert_eq!(t.round_of([], false), (request(2, 5), false), "asked again");
            assert!(t.m.resends.recovery.is_some(), "at the next look");
        }
        assert_eq!(t.round_of([], false), (request(2, 5), false), "given up");
        assert!(t.m.resends.recovery.is_none());
        assert_eq!(t.m.gaps.total, 2, "3 and 4");
        assert_eq!(t.mirrored(), [2, 5, 6]);
        assert!(
            !t.m.resends.seen,
            "no publisher answers: gaps counted at once"
        );
        t.m.resends.seen = true;
        t.m.resends.failed_at = None;
        t.live([8]);
        assert_eq!(
            t.round([]),
            (request(6, 8), false),
            "a whole answer without 7"
        );
        assert_eq!(t.m.gaps.total, 3, "7");
        t.live([10]);
        assert!(t.m.resends.recovery.is_none(), "backing off");
        assert_eq!(t.m.gaps.total, 4, "9 too");
        t.m.resends.failed_at = None;
        t.live([13, 14]);
        assert!(t.m.resends.recovery.is_some());
        let lines = t.m.close();
        assert_eq!(t.m.gaps.total, 8, "11 to 14 too");
        assert!(
            lines[0].starts_with("6 frame(s) lost in transit"),
            "{lines:?}"
        );
        assert_eq!(t.mirrored(), [2, 5, 6, 8, 10]);
    }

    /// A frame of another source (the stream made again) ends a recovery: its held frames
    /// are written first, the gap before them counted lost, then the new source's frame.
    #[test]
    fn a_frame_of_another_source_ends_a_recovery_after_its_held_frames() {
        let mut t = Recovering::new("recover-other");
        t.live([1, 4, 5]);
        assert!(t.m.resends.recovery.is_some());
        let other = FrameHeader {
            frame_id: 100,
            ..h(8, 1, 0)
        };
        t.m.write(&sample_of(&other));
        assert!(t.m.resends.recovery.is_none());
        assert_eq!(t.m.gaps.total, 2, "2 and 3");
        assert_eq!(t.mirrored(), [1, 4, 5, 100]);
    }

    /// Live frames past the room a recovery holds are dropped, and once the held ones are
    /// written, the frames after them are asked for: nothing is lost.
    #[test]
    fn live_frames_past_the_room_held_are_asked_for_after_the_held_ones() {
        let mut t = Recovering::new("recover-room");
        t.live([1, 5]);
        t.m.resends.room = 1;
        t.live([6, 7]);
        assert!(t.m.resends.recovery.as_ref().unwrap().dropped);
        assert_eq!(t.round([2, 3, 4]), (request(1, 5), true), "6 and 7 dropped");
        let r = t.m.resends.recovery.as_ref().unwrap();
        assert_eq!((r.held.len(), r.held_bytes), (0, 0), "5 written");
        assert_eq!(t.round([6, 7]), (request(5, u64::MAX), false));
        assert_eq!(t.mirrored(), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(t.m.gaps.total, 0);
    }

    /// A gap in the frames of a source without an instance id, or in latest-value frames,
    /// begins no recovery: a publisher answers requests for a lossless source's frames,
    /// which it tells by its instance id.
    #[test]
    fn a_gap_of_frames_without_a_source_id_or_latest_value_is_not_asked_for() {
        let mut t = Recovering::new("recover-none");
        for h in [h(0, 1, 0), h(0, 3, 0)] {
            t.m.write(&sample_of(&h));
        }
        assert!(t.m.resends.recovery.is_none(), "no source id");
        assert_eq!(t.m.gaps.total, 1, "2 counted lost at once");
        let latest = |count| FrameHeader {
            lossless: false,
            ..h(7, count, 0)
        };
        for h in [latest(4), latest(6)] {
            t.m.write(&sample_of(&h));
        }
        assert!(t.m.resends.recovery.is_none(), "latest value");
        assert_eq!(t.mirrored(), [1, 3, 4, 6]);
    }

    /// The source of the last frame written is kept for the recovery a reconnection asks
    /// for only where that frame is lossless and carries a source instance id.
    #[test]
    fn only_a_lossless_frame_with_a_source_id_is_followed_after_a_reconnection() {
        let mut r = Resends::new();
        r.wrote(&h(7, 1, 0));
        assert_eq!(r.lossless_source, Some([7; 16]));
        for frame in [
            FrameHeader {
                lossless: false,
                ..h(7, 2, 0)
            },
            h(0, 3, 0),
        ] {
            r.wrote(&frame);
            assert_eq!(r.lossless_source, None, "after {frame:?}");
        }
    }

    /// A Zenoh session of this process alone (no endpoints, no scouting): a recovery's
    /// requests reach only the queryables declared on it.
    fn alone() -> zenoh::Session {
        crate::open_session(&crate::Endpoints::default()).unwrap()
    }

    /// The publisher's part on `session`: a queryable on the resend key of "cam0" giving
    /// each request to `answer`.
    fn answering(
        session: &zenoh::Session,
        answer: impl Fn(Query) + Send + Sync + 'static,
    ) -> Queryable<()> {
        session
            .declare_queryable(crate::resend_key("cam0"))
            .callback(answer)
            .wait()
            .unwrap()
    }

    /// Answers `q` with the frames of source [7; 16] at `counts`, then says the answer is
    /// whole ([`ANSWER_END`]), as a publisher does.
    fn reply(q: &Query, counts: &[u64]) {
        for &c in counts {
            q.reply(q.key_expr().clone(), vec![c as u8])
                .attachment(h(7, c, 0).encode().unwrap())
                .wait()
                .unwrap();
        }
        q.reply_err(ANSWER_END).wait().unwrap();
    }

    /// Takes `resend`'s matching status as [`Resender::poll`] does, once its queryable is
    /// matched (within 10 s).
    fn wait_matched(resend: &mut Resender<'_>) {
        let status = resend.matching.recv_timeout(Duration::from_secs(10));
        assert!(
            status.unwrap().is_some_and(|s| s.matching()),
            "the queryable matched"
        );
        resend.matched = true;
    }

    /// A mirror (as [`Recovering`]) given frames 1, 2 and 5, its recovery begun for 3 and
    /// 4, ready for [`recover`], and a session of its own for the resend querier.
    fn missing_3_and_4(tag: &str) -> (Mutex<Mirror>, Local, zenoh::Session) {
        let mut t = Recovering::new(tag);
        t.live([1, 2, 5]);
        assert!(t.m.resends.recovery.is_some());
        let Recovering { m, local } = t;
        (Mutex::new(m), local, alone())
    }

    /// One call of [`recover`] for "cam0" (never stopped), and the rounds in a row its
    /// recovery, if one is left, asked in vain.
    fn recover_once(state: &Mutex<Mirror>, resend: &Resender<'_>) -> Option<u32> {
        let not_stopped = AtomicBool::new(false);
        recover(&Stop::new(&[&not_stopped]), state, resend, "cam0").unwrap();
        let m = state.lock().unwrap();
        m.resends.recovery.as_ref().map(|r| r.unanswered)
    }

    /// A recovery asks at once where a publisher answering requests is matched. Where none
    /// is, it waits [`RESEND_MATCH_WAIT`] from its start for one (at a reconnection, its
    /// declaration may come after the first frames), then asks all the same; and a round
    /// set for later (after one asked in vain) is not asked before its time.
    #[test]
    fn a_recovery_asks_once_a_publisher_answering_is_matched_or_waited_for() {
        let (state, local, session) = missing_3_and_4("recover-ask");
        let mut resend = Resender::declare(&session, "cam0").unwrap();
        assert_eq!(
            recover_once(&state, &resend),
            Some(0),
            "not asked: none matched, and the wait for one not over"
        );
        let recovery = |f: &dyn Fn(&mut Recovery)| {
            f(state.lock().unwrap().resends.recovery.as_mut().unwrap());
        };
        recovery(&|r| r.since -= RESEND_MATCH_WAIT);
        assert_eq!(
            recover_once(&state, &resend),
            Some(1),
            "asked all the same once the wait is over (nothing answers)"
        );
        assert_eq!(
            recover_once(&state, &resend),
            Some(1),
            "not asked again before RESEND_RETRY_AFTER"
        );
        // One frame an answer: a round that brought one asks again at once.
        let next = AtomicU64::new(3);
        let _q = answering(&session, move |q| {
            reply(&q, &[next.fetch_add(1, Ordering::Relaxed)]);
        });
        wait_matched(&mut resend);
        recovery(&|r| (r.since, r.ask_at) = (Instant::now(), Instant::now()));
        assert_eq!(
            recover_once(&state, &resend),
            None,
            "asked at once, round after round until answered"
        );
        assert_eq!(local.mirrored(), [1, 2, 3, 4, 5]);
        assert_eq!(state.lock().unwrap().gaps.total, 0);
    }

    /// An answer the publisher ends ([`ANSWER_END`]) without the frames asked for gives
    /// them up at once, unasked again: they are counted lost, and the frames held after
    /// them written.
    #[test]
    fn an_answer_ended_without_the_frames_asked_for_gives_them_up_at_once() {
        let (state, local, session) = missing_3_and_4("recover-ended");
        let mut resend = Resender::declare(&session, "cam0").unwrap();
        let _q = answering(&session, |q| reply(&q, &[]));
        wait_matched(&mut resend);
        assert_eq!(recover_once(&state, &resend), None, "given up");
        assert_eq!(state.lock().unwrap().gaps.total, 2, "3 and 4");
        assert_eq!(local.mirrored(), [1, 2, 5]);
    }

    /// A round waits for an answer slower than a poll ([`POLL`]) to begin, up to
    /// [`FIRST_REPLY_WAIT`]: a publisher busy with other requests still answers it.
    #[test]
    fn a_round_waits_for_an_answer_slower_than_a_poll() {
        let (state, local, session) = missing_3_and_4("recover-slow");
        let mut resend = Resender::declare(&session, "cam0").unwrap();
        let _q = answering(&session, |q| {
            std::thread::spawn(move || {
                std::thread::sleep(5 * POLL);
                reply(&q, &[3, 4]);
            });
        });
        wait_matched(&mut resend);
        assert_eq!(recover_once(&state, &resend), None, "answered");
        assert_eq!(local.mirrored(), [1, 2, 3, 4, 5]);
    }

    /// A round whose request gets no reply at all (lost on a link not quite back) ends
    /// after [`FIRST_REPLY_WAIT`], asked in vain, not after the querier's whole
    /// [`RESEND_WAIT`] while the live frames are held.
    #[test]
    fn a_round_without_a_reply_ends_after_the_first_reply_wait() {
        let (state, local, session) = missing_3_and_4("recover-silent");
        let mut resend = Resender::declare(&session, "cam0").unwrap();
        // Kept unanswered: a query dropped is answered as done.
        let kept = Arc::new(Mutex::new(Vec::new()));
        let keep = kept.clone();
        let _q = answering(&session, move |q| keep.lock().unwrap().push(q));
        wait_matched(&mut resend);
        let asked = Instant::now();
        assert_eq!(recover_once(&state, &resend), Some(1), "asked in vain");
        let took = asked.elapsed();
        assert_eq!(kept.lock().unwrap().len(), 1, "one request");
        assert!(
            took < RESEND_WAIT,
            "the round took {took:?}: it waited for the querier's timeout"
        );
        assert_eq!(local.mirrored(), [1, 2]);
    }
}

//! A lossless publisher's answers to a subscriber's [`ResendRequest`]: the frames it missed,
//! read again from the source's history.
//!
//! Across a network cut longer than Zenoh's lease, a lossless publisher's puts went into a
//! connection that then died, though its history still held the frames. The subscriber sees
//! the gap at the next frame that reaches it (or, at a reconnection, asks whether frames
//! followed its newest), and asks on the stream's resend key ([`crate::resend_key`]) for the
//! frames counted between its newest and the first it holds past the gap. The answer is a
//! reply per frame, to that subscriber alone, from a thread with a cursor of its own (a few
//! such threads per stream, for subscribers asking at once): the live frames go on as they
//! were, to every subscriber. Frames gone from the ring are not in the answer; the
//! subscriber counts them lost.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use shmstream::{Error, Stream};
use zenoh::Wait;
use zenoh::query::{Query, Queryable};

use crate::codec::{ANSWER_END, ResendRequest};
use crate::publish::{attachment_of, header_of, lend, stamp};
use crate::{BridgeError, POLL, RESEND_WAIT, Stop, instance_of, resend_key, say, zenoh_err};

/// Requests taken and not yet answered, past which a new one is dropped (it gets its final
/// reply at once, without a frame, and its subscriber asks again a second later) rather
/// than block Zenoh's thread.
const WAITING: usize = 64;

/// Requests for frames again, taken on a lossless publisher's resend key, each with the
/// moment it came (its asker waits [`RESEND_WAIT`] from about then).
pub(crate) struct Requests {
    _queryable: Queryable<()>,
    taken: Mutex<Receiver<(Instant, Query)>>,
}

impl Requests {
    /// Declares the queryable on the resend key of stream key `k`.
    pub(crate) fn declare(session: &zenoh::Session, k: &str) -> Result<Requests, BridgeError> {
        let rk = resend_key(k);
        let (tx, rx): (SyncSender<(Instant, Query)>, _) = std::sync::mpsc::sync_channel(WAITING);
        let queryable = session
            .declare_queryable(rk.clone())
            // Full (or its threads gone): the request drops, and its final reply goes out.
            .callback(move |q| drop(tx.try_send((Instant::now(), q))))
            .wait()
            .map_err(zenoh_err(format!("declaring the queryable on {rk}")))?;
        Ok(Requests {
            _queryable: queryable,
            taken: Mutex::new(rx),
        })
    }

    /// The next request, waiting up to [`POLL`]; `Err` once none can come.
    fn next(&self) -> Result<Option<(Instant, Query)>, RecvTimeoutError> {
        let taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        match taken.recv_timeout(POLL) {
            Ok(q) => Ok(Some(q)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Answers the requests for stream `name`, one at a time, until `stop` or `done` is set
    /// (looked at every [`POLL`], and at every frame of an answer); several threads may
    /// serve one [`Requests`], each request going to one of them. A request its asker no
    /// longer waits for ([`RESEND_WAIT`] since it came) is dropped unanswered.
    pub(crate) fn serve(&self, name: &str, losses: &LossLog, stop: &Stop, done: &AtomicBool) {
        let ended = || stop.is_set() || done.load(Ordering::Relaxed);
        let mut source: Option<Stream> = None;
        // The frame buffer, kept from one answer to the next (as the live thread keeps its).
        let mut buf = BytesMut::new();
        while !ended() {
            let (came, q) = match self.next() {
                Ok(Some(q)) => q,
                Ok(None) => {
                    // An unlinked generation is let go: its memory is freed with the last map.
                    if source.as_ref().is_some_and(Stream::is_unlinked) {
                        source = None;
                    }
                    continue;
                }
                Err(_) => return,
            };
            let deadline = came + RESEND_WAIT;
            // Any other payload gets its final reply, without a frame, as the query drops.
            let Some(asked) = q
                .payload()
                .and_then(|p| ResendRequest::decode(&p.to_bytes()))
            else {
                continue;
            };
            // The stream as it is now: a generation made since is another source.
            if source.as_ref().is_none_or(Stream::is_unlinked) {
                source = Stream::open_readonly(name).ok();
            }
            let Some(s) = source.as_ref().filter(|s| instance_of(s) == asked.source) else {
                continue;
            };
            let answer = Answer {
                s,
                name,
                q: &q,
                asked,
                losses,
                deadline,
            };
            match answer.send(&mut buf, &ended) {
                // A reply that fails only means the asker left.
                Ok(true) => drop(q.reply_err(ANSWER_END).wait()),
                Ok(false) => {}
                Err(e) => say(name, &format!("answering a request for frames again: {e}")),
            }
        }
    }
}

/// One request's answer: the frames of `s` counted as `asked` says, in its ring.
struct Answer<'a> {
    s: &'a Stream,
    name: &'a str,
    q: &'a Query,
    asked: ResendRequest,
    losses: &'a LossLog,
    /// When the asker stops waiting.
    deadline: Instant,
}

impl Answer<'_> {
    /// Replies with the frames of the ring counted after `asked.after` and before
    /// `asked.before`, up to the count the stream had when the answer began and the frame
    /// the live thread put last (those after go out live), in order, until the deadline or
    /// `ended`, leaving out those the live thread reported lost ([`LossLog`]). A frame gone
    /// from the ring is left out, and so are those the cursor passes after a lap as it reads
    /// ([`Cursor::skip_after_overrun`](shmstream::Cursor::skip_after_overrun)); the asker
    /// counts them lost. `buf`: a frame buffer, sized here. Whether the answer is whole (not
    /// cut short by the deadline, `ended`, or the asker gone).
    fn send(&self, buf: &mut BytesMut, ended: &dyn Fn() -> bool) -> Result<bool, BridgeError> {
        let (s, after) = (self.s, self.asked.after);
        let mut c = s.cursor()?;
        c.rewind_to_oldest();
        // Past the frames counted at or before `after`, without copying them: an append
        // stores its count before the head passes its frame, so loaded after `lag` (which
        // loads the head) the count bounds every frame ahead, and of those ahead at most
        // `count - after` are counted after `after`. (Frames left ahead that are not, those
        // beside publications that skipped the ring, are read and passed below.)
        let ahead = c.lag();
        let count = s.count();
        c.skip(ahead.saturating_sub(count.saturating_sub(after)));
        let until = count
            .min(self.asked.before.saturating_sub(1))
            .min(self.losses.live_put.load(Ordering::Relaxed));
        if buf.len() != s.size_bytes() {
            *buf = crate::publish::frame_buffer(s)?;
        }
        let mut header = header_of(s, self.name, true);
        let k = self.q.key_expr().clone();
        while Instant::now() < self.deadline && !ended() {
            let info = match c.next_into_bytes(buf, Some(Duration::ZERO)) {
                Ok(info) => info,
                // Lapped as it was read, or publications that skipped the ring: left out.
                Err(Error::Overrun { cause, .. }) => {
                    c.skip_after_overrun(cause);
                    continue;
                }
                // The newest frame was answered; the stream unlinked (a new source).
                Err(Error::Timeout { .. } | Error::Stale { .. } | Error::Closed { .. }) => {
                    return Ok(true);
                }
                // A writer's bracket left open: cut short (the asker asks again).
                Err(Error::Inconsistent { .. }) => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            // Before the frames asked for, or reported lost by the live thread (passed after
            // a lap though still in the ring, or its own to put or report).
            if info.count <= after {
                continue;
            }
            let Some(lost_before) = self.losses.answerable(info.count) else {
                continue;
            };
            if info.count > until {
                return Ok(true);
            }
            stamp(&mut header, &info);
            header.lost = lost_before;
            let attachment = attachment_of(&header, &k)?;
            // A reply that fails only means the asker left.
            if lend(buf, s.name(), |frame| {
                self.q.reply(k.clone(), frame).attachment(attachment).wait()
            })?
            .is_err()
            {
                return Ok(false);
            }
        }
        Ok(false)
    }
}

/// Events the log keeps; older ones are folded into one total.
const LOSS_EVENTS_KEPT: usize = 1024;

/// The losses a lossless publisher's live thread reported, each with the count of the last
/// frame it put before and of the first it read after: a frame answered again carries the
/// total reported before it, as it would have live, and one the live thread reported lost
/// (passed after a lap, though still in the ring) is not answered, so that the asker
/// counts only the gaps the publisher did not report, and no frame is both mirrored and
/// reported lost.
#[derive(Default)]
pub(crate) struct LossLog {
    events: Mutex<LossEvents>,
    /// The count of the frame the live thread put last ([`LossLog::put`]).
    live_put: AtomicU64,
}

#[derive(Default)]
struct LossEvents {
    /// The total of the newest event folded away.
    folded: u64,
    /// Oldest first.
    recent: VecDeque<LossEvent>,
}

/// Losses the live thread reported.
#[derive(Clone, Copy)]
struct LossEvent {
    /// The count of the frame it put before them (0: none of the stream's generation).
    put: u64,
    /// The count of the frame it read after them; `None` until it read one: the frames
    /// after `put` are its own to put or report.
    resumed: Option<u64>,
    /// Its total of frames reported lost, with them.
    total: u64,
}

impl LossLog {
    /// The live thread reported losses bringing its total to `total`, after putting the
    /// frame counted `put`.
    pub(crate) fn record(&self, put: u64, total: u64) {
        let mut e = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        // Losses again before it read a frame (lapped twice): one event, its total the newest.
        if let Some(last) = e.recent.back_mut()
            && last.resumed.is_none()
        {
            last.total = total;
            return;
        }
        e.push(LossEvent {
            put,
            resumed: None,
            total,
        });
    }

    /// The live thread put the frame counted `count` (0: a generation opened): an answer
    /// goes no further, the frames after it being the live thread's to put or report.
    pub(crate) fn put(&self, count: u64) {
        self.live_put.store(count, Ordering::Relaxed);
    }

    /// The live thread opened a stream's generation, its total of losses `total` so far:
    /// the generation's counts, from 1 again, are not compared with an earlier one's, and
    /// it has put none of them yet.
    pub(crate) fn record_start(&self, total: u64) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(LossEvent {
                put: 0,
                resumed: Some(0),
                total,
            });
        self.put(0);
    }

    /// The live thread read the frame counted `count`, the first since the losses it
    /// reported last.
    pub(crate) fn resumed(&self, count: u64) {
        let mut e = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = e.recent.back_mut()
            && last.resumed.is_none()
        {
            last.resumed = Some(count);
        }
    }

    /// What an answer does with the frame counted `count`: `None` where the live thread
    /// reported it lost or has it to put or report ([`LossEvents::reported`]), else the total
    /// of losses reported before it ([`LossEvents::total_before`]). One look under the lock.
    fn answerable(&self, count: u64) -> Option<u64> {
        let e = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        (!e.reported(count)).then(|| e.total_before(count))
    }

    #[cfg(test)]
    fn total_before(&self, count: u64) -> u64 {
        let e = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        e.total_before(count)
    }

    #[cfg(test)]
    fn reported(&self, count: u64) -> bool {
        let e = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        e.reported(count)
    }
}

impl LossEvents {
    fn push(&mut self, event: LossEvent) {
        if self.recent.len() == LOSS_EVENTS_KEPT
            && let Some(old) = self.recent.pop_front()
        {
            self.folded = old.total;
        }
        self.recent.push_back(event);
    }

    /// The total reported before the frame counted `count` was put: of the newest event
    /// logged after a frame counted below it.
    fn total_before(&self, count: u64) -> u64 {
        self.recent
            .iter()
            .rev()
            .find(|ev| ev.put < count)
            .map_or(self.folded, |ev| ev.total)
    }

    /// Whether the frame counted `count` is the live thread's to report or put: between the
    /// frames it put before and read after losses of the current generation (events after
    /// its start).
    fn reported(&self, count: u64) -> bool {
        self.recent
            .iter()
            .rev()
            .take_while(|ev| ev.put != 0 || ev.resumed != Some(0))
            .any(|ev| ev.put < count && ev.resumed.is_none_or(|r| count < r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame answered again carries the total reported before it: losses logged after
    /// frames counted below it, not those logged after it, nor an earlier generation's
    /// (whose counts a generation's start marks off); folded-away events give their total.
    #[test]
    fn a_frame_answered_again_carries_the_losses_reported_before_it() {
        let log = LossLog::default();
        assert_eq!(log.total_before(5), 0, "none reported");
        log.record(10, 3);
        log.resumed(12);
        log.record(20, 7);
        log.resumed(25);
        assert_eq!(log.total_before(10), 0, "reported after frame 10 was put");
        assert_eq!(log.total_before(12), 3);
        assert_eq!(log.total_before(25), 7);
        // A new generation, counted from 1 again.
        log.record_start(7);
        log.record(4, 9);
        assert_eq!(
            log.total_before(3),
            7,
            "this generation's start, not frame 20's loss"
        );
        assert_eq!(log.total_before(5), 9);
        log.resumed(5);
        for i in 0..LOSS_EVENTS_KEPT as u64 {
            log.record(100 + i, 100 + i);
            log.resumed(101 + i);
        }
        assert_eq!(log.total_before(100), 9, "of the newest event folded away");
        assert_eq!(log.total_before(101), 100);
    }

    /// Frames the live thread reported lost (between the frame it put before a loss and
    /// the one it read after) are not answered, nor those after a loss it has not read past
    /// yet; an earlier generation's losses do not count in this one.
    #[test]
    fn frames_the_live_thread_reported_lost_are_not_answered() {
        let log = LossLog::default();
        log.record(10, 3);
        log.resumed(14);
        assert!(
            !log.reported(10) && !log.reported(14),
            "put, and read after"
        );
        assert!((11..14).all(|c| log.reported(c)), "lapped or passed");
        log.record(20, 5);
        log.record(20, 6);
        assert!(log.reported(21) && log.reported(1000), "not read past yet");
        log.resumed(22);
        assert!(log.reported(21) && !log.reported(22) && !log.reported(1000));
        assert_eq!(
            log.total_before(22),
            6,
            "lapped twice before a read: one event"
        );
        log.record_start(5);
        assert!(!log.reported(12), "an earlier generation's");
        log.record(3, 6);
        log.resumed(5);
        assert!(log.reported(4) && !log.reported(12));
        // An answer takes a frame with the total before it, or leaves it to the live thread.
        assert_eq!(log.answerable(4), None);
        assert_eq!(log.answerable(5), Some(6));
        assert_eq!(log.answerable(3), Some(5));
        // Losses before the live thread put any frame of a generation (after frame 0).
        log.record_start(6);
        log.record(0, 8);
        log.resumed(3);
        assert!(log.reported(1) && log.reported(2) && !log.reported(3));
        assert_eq!(log.answerable(3), Some(8));
    }

    /// An answer goes no further than the frame the live thread put last; a generation's
    /// start has it put none of its frames yet.
    #[test]
    fn the_frame_the_live_thread_put_last_is_kept() {
        let log = LossLog::default();
        log.put(7);
        assert_eq!(log.live_put.load(Ordering::Relaxed), 7);
        log.record_start(0);
        assert_eq!(log.live_put.load(Ordering::Relaxed), 0);
    }
}

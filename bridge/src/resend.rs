//! A lossless publisher's answers to a subscriber's [`ResendRequest`]: the frames it missed,
//! read again from the source's history.
//!
//! Across a network cut longer than Zenoh's lease, a lossless publisher's puts went into a
//! connection that then died, though its history still held the frames. The subscriber sees
//! the gap at the next frame that reaches it (or, at a reconnection, asks whether frames
//! followed its newest), and asks on the stream's resend key ([`crate::resend_key`]) for the
//! frames counted after its newest. The answer is a reply per frame, to that subscriber
//! alone, from a thread of its own with a cursor of its own: the live frames go on as they
//! were, to every subscriber. Frames gone from the ring are not in the answer; the
//! subscriber counts them lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use shmstream::{Error, Stream};
use zenoh::Wait;
use zenoh::handlers::{RingChannel, RingChannelHandler};
use zenoh::query::{Query, Queryable};

use crate::codec::{FrameHeader, ResendRequest};
use crate::publish::{attachment_of, lend, stamp};
use crate::{BridgeError, POLL, RESEND_WAIT, Stop, instance_of, resend_key, say, zenoh_err};

/// Requests for frames again, taken on a lossless publisher's resend key.
pub(crate) struct Requests {
    queries: Queryable<RingChannelHandler<Query>>,
}

impl Requests {
    /// Declares the queryable on the resend key of stream key `k`. A ring channel: a burst
    /// of requests past it drops the oldest, which then gets its final reply without a frame
    /// (its subscriber counts those frames lost) rather than block Zenoh's thread.
    pub(crate) fn declare(session: &zenoh::Session, k: &str) -> Result<Requests, BridgeError> {
        let rk = resend_key(k);
        let queries = session
            .declare_queryable(rk.clone())
            .with(RingChannel::new(8))
            .wait()
            .map_err(zenoh_err(format!("declaring the queryable on {rk}")))?;
        Ok(Requests { queries })
    }

    /// Answers the requests for stream `name`, one at a time, until `stop` or `done` is set
    /// (looked at every [`POLL`]). `reported`: the frames the live thread reported lost so
    /// far, sent with each frame as with its live ones.
    pub(crate) fn serve(&self, name: &str, reported: &AtomicU64, stop: &Stop, done: &AtomicBool) {
        let mut source: Option<Stream> = None;
        // The frame buffer, kept from one answer to the next (as the live thread keeps its).
        let mut buf = BytesMut::new();
        while !stop.is_set() && !done.load(Ordering::Relaxed) {
            let q = match self.queries.recv_timeout(POLL) {
                Ok(Some(q)) => q,
                Ok(None) => continue,
                // The session is closing: no request will come.
                Err(_) => return,
            };
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
            let deadline = Instant::now() + RESEND_WAIT;
            if let Err(e) = answer(s, &q, asked.after, reported, deadline, &mut buf) {
                say(name, &format!("answering a request for frames again: {e}"));
            }
        }
    }
}

/// Replies to `q` with the frames of `s` in its ring counted after `after`, up to the count
/// `s` had when the answer began (those after it went out live), in order, until
/// `deadline` (when the asker stops waiting). A frame gone from the ring, or lapped as it
/// is read, is left out; the asker counts it lost. `buf`: a frame buffer, sized here.
fn answer(
    s: &Stream,
    q: &Query,
    after: u64,
    reported: &AtomicU64,
    deadline: Instant,
    buf: &mut BytesMut,
) -> Result<(), BridgeError> {
    let mut c = s.cursor()?;
    c.rewind_to_oldest();
    // Past the frames counted at or before `after`, without copying them: an append
    // stores its count before the head passes its frame, so loaded after `lag` (which
    // loads the head) the count bounds every frame ahead, and of those ahead at most
    // `until - after` are counted after `after`. (Frames left ahead that are not, those
    // beside publications that skipped the ring, are read and passed below.)
    let ahead = c.lag();
    let until = s.count();
    c.skip(ahead.saturating_sub(until.saturating_sub(after)));
    if buf.len() != s.size_bytes() {
        *buf = BytesMut::zeroed(s.size_bytes());
    }
    let mut header = FrameHeader {
        dtype: s.dtype(),
        shape: s.shape().to_vec(),
        frame_id: 0,
        count: 0,
        write_time: 0.0,
        source: instance_of(s),
        lossless: true,
        lost: 0,
        name_len: s.name().len(),
    };
    let k = q.key_expr().clone();
    while Instant::now() < deadline {
        let info = match c.next_into_bytes(buf, Some(Duration::ZERO)) {
            Ok(info) => info,
            // Lapped as it was read, or publications that skipped the ring: left out.
            Err(Error::Overrun { cause, .. }) => {
                c.skip_after_overrun(cause);
                continue;
            }
            Err(Error::Inconsistent { .. }) => continue,
            // The newest frame was answered, or the stream unlinked (a new source).
            Err(Error::Timeout { .. } | Error::Stale { .. } | Error::Closed { .. }) => {
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if info.count <= after {
            continue;
        }
        if info.count > until {
            return Ok(());
        }
        stamp(&mut header, &info);
        header.lost = reported.load(Ordering::Relaxed);
        let attachment = attachment_of(&header, &k)?;
        // A reply that fails only means the asker left.
        if lend(buf, |frame| {
            q.reply(k.clone(), frame).attachment(attachment).wait()
        })
        .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

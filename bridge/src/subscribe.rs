//! Zenoh → local streams: each remote frame is checked against its attachment and written,
//! with its frame id, into a local stream of the remote shape and dtype.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use shmstream::{Dtype, Error, Stream, StreamOptions, WriteGuard};
use zenoh::Wait;
use zenoh::handlers::RingChannel;
use zenoh::query::Querier;
use zenoh::sample::Sample;

use crate::codec::FrameHeader;
use crate::{
    BridgeError, Endpoints, POLL, SUM_UP_EVERY, Stop, check_keys, key, open_session, per_stream,
    zenoh_err,
};

/// What [`subscribe`] mirrors and where.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Remote stream names.
    pub names: Vec<String>,
    /// Zenoh endpoints.
    pub endpoints: Endpoints,
    /// Key prefix the publisher uses.
    pub prefix: String,
    /// Local stream `P + NAME` mirrors remote `NAME`.
    pub local_prefix: String,
    /// History depth of local streams this bridge creates (0: none), so local readers can
    /// read every mirrored frame with a cursor.
    pub history: usize,
}

/// Mirrors until `stop` is set (checked every 100 ms). A frame that does not fit its local
/// stream, or whose attachment is malformed, is refused with a message on stderr and the
/// local stream is left as it was.
pub fn subscribe(o: &SubscribeOptions, stop: &AtomicBool) -> Result<(), BridgeError> {
    check_keys(&o.prefix, &o.names)?;
    let session = open_session(&o.endpoints)?;
    let result = per_stream(&o.names, "subscriber", stop, |name, stop| {
        mirror(&session, o, name, stop)
    });
    let _ = session.close().wait();
    result
}

/// How long the mirror waits for its local stream's write lock before refusing a frame.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// How long a query for a publisher's current frame waits for its reply.
const QUERY_WAIT: Duration = Duration::from_secs(5);

/// Mirrors remote `name` until `stop` is set. Zenoh's receiving thread writes each frame into
/// the local stream as it comes ([`Mirror::write`]): no hand-off to a thread of ours, whose
/// wake-up would lie on every frame's path (a bare subscriber wakes its consumer once; so
/// does a local stream, waking its readers), and frames go in the order they arrive.
///
/// A put reaches only the subscribers its publisher knows at that moment, and a publisher
/// puts its current frame again only when it goes from no matched subscriber to one; a
/// subscriber that arrives while another is matched would wait for the writer's next frame.
/// So each time a latest-value publisher's queryable appears (at the start, after a link
/// comes back), the mirror asks it for its current frame ([`ask`]).
fn mirror(
    session: &zenoh::Session,
    o: &SubscribeOptions,
    name: &str,
    stop: &Stop,
) -> Result<(), BridgeError> {
    let k = key(&o.prefix, name);
    let state = Arc::new(Mutex::new(Mirror {
        name: format!("{}{name}", o.local_prefix),
        history: o.history,
        local: None,
        refusals: Refusals::default(),
        closed: false,
        last: None,
        written: 0,
    }));
    let receiving = Arc::clone(&state);
    let _sub = session
        .declare_subscriber(k.clone())
        .callback(move |sample| {
            // A panic while writing poisons nothing we rely on: the stream is reopened or
            // the frame refused the next time.
            let mut m = receiving.lock().unwrap_or_else(PoisonError::into_inner);
            if !m.closed {
                m.write(&sample);
            }
        })
        .wait()
        .map_err(zenoh_err(format!("declaring the subscriber on {k}")))?;
    let querier = session
        .declare_querier(k.clone())
        .timeout(QUERY_WAIT)
        .wait()
        .map_err(zenoh_err(format!("declaring the querier on {k}")))?;
    // A ring channel: only the newest status matters.
    let publishers = querier
        .matching_listener()
        .with(RingChannel::new(1))
        .wait()
        .map_err(zenoh_err(format!("declaring the matching listener on {k}")))?;
    while !stop.is_set() {
        match publishers.recv_timeout(POLL) {
            Ok(Some(status)) if status.matching() => ask(&querier, &state, &k)?,
            Ok(_) => {}
            // The session is closing: no status will come.
            Err(_) => std::thread::sleep(POLL),
        }
    }
    // Neither dropping the subscriber nor closing the session waits for a callback that is
    // running, and the process may exit next: wait here for a frame being written into the
    // local stream (the lock), and let no other start, so the mirror is left whole.
    state.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
    Ok(())
}

/// Asks the publishers on `k` for their current frame, and writes a reply as a sample
/// ([`Mirror::write`]) only if no frame was written since: a reply never overwrites a newer
/// live frame.
fn ask(querier: &Querier<'_>, state: &Arc<Mutex<Mirror>>, k: &str) -> Result<(), BridgeError> {
    let asked_at = state.lock().unwrap_or_else(PoisonError::into_inner).written;
    let answering = Arc::clone(state);
    querier
        .get()
        .callback(move |reply| {
            if let Ok(sample) = reply.result() {
                let mut m = answering.lock().unwrap_or_else(PoisonError::into_inner);
                if !m.closed && m.written == asked_at {
                    m.write(sample);
                }
            }
        })
        .wait()
        .map_err(zenoh_err(format!("asking {k} for its current frame")))
}

/// One mirrored stream: its local name, and the local stream once a frame opened or
/// created it.
struct Mirror {
    name: String,
    /// History depth of a local stream this bridge creates.
    history: usize,
    local: Option<Stream>,
    refusals: Refusals,
    /// Set when the bridge stops: no frame is written after.
    closed: bool,
    /// The (count, frame id, write time bits) of the last frame written: the same frame put
    /// again, or also answering a query, is not written twice.
    last: Option<(u64, u64, u64)>,
    /// Frames written so far.
    written: u64,
}

impl Mirror {
    /// Writes `sample` into the local stream under its write lock, taken for the frame alone
    /// (a local `unlink`, the remedy for a new upstream shape, or another tool gets it
    /// between frames), or refuses it on stderr, leaving the local stream as it was. A
    /// local stream unlinked meanwhile is opened (or created) again for the frame. The frame
    /// last written, received again (put again, or a reply), is skipped: local readers
    /// never see one publication twice.
    fn write(&mut self, sample: &Sample) {
        let h = match check(sample) {
            Ok(h) => h,
            Err(reason) => return self.refuse(&reason),
        };
        let id = (h.count, h.frame_id, h.write_time.to_bits());
        if self.last == Some(id) && self.local.as_ref().is_some_and(|s| !s.is_unlinked()) {
            return;
        }
        for _ in 0..2 {
            let local = match self.local.take() {
                Some(s) => s,
                None => match open_or_create(&self.name, &h, self.history) {
                    Ok(s) => s,
                    Err(e) => return self.refuse(&e),
                },
            };
            let written = match local.lock(Some(LOCK_WAIT)) {
                Ok(guard) => write_sample(&guard, sample, &h),
                Err(Error::Stale { .. }) => Err(Refusal::Stale),
                Err(e) => Err(Refusal::Reason(e.to_string())),
            };
            match written {
                Ok(()) => {
                    self.local = Some(local);
                    self.last = Some(id);
                    self.written += 1;
                    if let Some(line) = self.refusals.written() {
                        self.say(&line);
                    }
                    return;
                }
                Err(Refusal::Stale) => {}
                Err(Refusal::Reason(r)) => {
                    self.local = Some(local);
                    return self.refuse(&r);
                }
            }
        }
        self.refuse(&"the local stream was unlinked again as it was reopened")
    }

    /// Says why a frame was refused: the first of a run of frames refused for one reason,
    /// then how many more were, when the reason changes, a frame is written, or every
    /// [`SUM_UP_EVERY`] (a sender that keeps sending a bad frame at its rate must not fill the
    /// log).
    fn refuse(&mut self, reason: &dyn std::fmt::Display) {
        for line in self.refusals.refused(reason.to_string(), Instant::now()) {
            self.say(&line);
        }
    }

    fn say(&self, line: &str) {
        crate::say(&self.name, line);
    }
}

/// The run of refusals being counted: its reason, the frames refused since it was last said,
/// and when it was last said.
#[derive(Debug, Default)]
struct Refusals {
    run: Option<(String, u64, Instant)>,
}

impl Refusals {
    /// A frame refused for `reason` at `now`: the lines to say (none while a run repeats).
    fn refused(&mut self, reason: String, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        match &mut self.run {
            Some((same, more, said)) if *same == reason => {
                *more += 1;
                if now.saturating_duration_since(*said) >= SUM_UP_EVERY {
                    lines.push(repeated(*more, same));
                    (*more, *said) = (0, now);
                }
                return lines;
            }
            Some(_) => lines.extend(self.written()),
            None => {}
        }
        lines.push(format!("refused a frame: {reason}"));
        self.run = Some((reason, 0, now));
        lines
    }

    /// A frame was written: ends the run, with the line that sums it up if frames went unsaid.
    fn written(&mut self) -> Option<String> {
        match self.run.take() {
            Some((reason, more, _)) if more > 0 => Some(repeated(more, &reason)),
            _ => None,
        }
    }
}

fn repeated(more: u64, reason: &str) -> String {
    format!("refused {more} more frame(s) for the same reason: {reason}")
}

/// Why a checked frame was not written.
enum Refusal {
    /// The local stream was unlinked: open it again.
    Stale,
    /// Anything else, said on stderr; the local stream is left as it was.
    Reason(String),
}

/// The header of a sample whose attachment decodes and whose payload has the size the
/// header gives; the error is the reason it is refused.
fn check(sample: &Sample) -> Result<FrameHeader, String> {
    let att = sample
        .attachment()
        .ok_or("no attachment (not sent by shmstream-bridge)")?;
    let h = FrameHeader::decode(&att.to_bytes())?;
    let len = sample.payload().len();
    if len != h.frame_bytes() {
        return Err(format!(
            "payload of {len} bytes, but its header says {} {:?} ({} bytes)",
            h.dtype,
            h.shape,
            h.frame_bytes()
        ));
    }
    if h.dtype == Dtype::Bool && sample.payload().slices().flatten().any(|&b| b > 1) {
        return Err("a bool payload byte other than 0 or 1".into());
    }
    Ok(h)
}

/// Writes a checked sample into the locked local stream, straight from the pieces Zenoh
/// received it in.
fn write_sample(guard: &WriteGuard<'_>, sample: &Sample, h: &FrameHeader) -> Result<(), Refusal> {
    let s = guard.stream();
    if s.dtype() != h.dtype || s.shape() != h.shape.as_slice() {
        if s.is_unlinked() {
            // Unlinked (to follow the new shape, as the refusal says): open or create again.
            return Err(Refusal::Stale);
        }
        return Err(Refusal::Reason(format!(
            "upstream sends {} {:?}, the local stream holds {} {:?}: unlink it to follow the new shape",
            h.dtype,
            h.shape,
            s.dtype(),
            s.shape()
        )));
    }
    let fill = |frame: &mut [u8]| -> Result<(), &'static str> {
        let mut at = 0;
        for piece in sample.payload().slices() {
            frame
                .get_mut(at..at + piece.len())
                .ok_or("the payload outgrew the frame")?
                .copy_from_slice(piece);
            at += piece.len();
        }
        Ok(())
    };
    match guard.write_bytes_view_frame(h.frame_id, fill) {
        Ok(()) => Ok(()),
        Err(Error::Stale { .. }) => Err(Refusal::Stale),
        Err(e) => Err(Refusal::Reason(e.to_string())),
    }
}

fn open_or_create(name: &str, h: &FrameHeader, history: usize) -> Result<Stream, Error> {
    match Stream::open(name) {
        Err(Error::NotFound { .. }) => match StreamOptions::new(name)
            .shape(&h.shape)
            .dtype(h.dtype)
            .notify(true)
            .history(history)
            .create()
        {
            Err(Error::AlreadyExists { .. }) => Stream::open(name),
            other => other,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(r.written(), None);
        assert_eq!(
            r.refused(bad(), at(10_003)),
            ["refused a frame: no attachment"]
        );
        r.refused(bad(), at(10_004));
        assert_eq!(
            r.written().as_deref(),
            Some("refused 1 more frame(s) for the same reason: no attachment")
        );
        assert_eq!(
            r.refused(bad(), at(10_005)),
            ["refused a frame: no attachment"]
        );
    }
}

//! Zenoh → local streams: each remote frame is checked against its attachment and written,
//! with its frame id, into a local stream of the remote shape and dtype.

use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use shmstream::{Dtype, Error, Stream, StreamOptions, WriteGuard};
use zenoh::Wait;
use zenoh::sample::Sample;

use crate::codec::FrameHeader;
use crate::{BridgeError, Endpoints, POLL, key, open_session, per_stream, zenoh_err};

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
    let session = open_session(&o.endpoints)?;
    let result = per_stream(&o.names, "subscriber", |name| {
        mirror(&session, o, name, stop)
    });
    let _ = session.close().wait();
    result
}

/// How long the mirror waits for its local stream's write lock before refusing a frame.
const LOCK_WAIT: Duration = Duration::from_secs(1);

fn mirror(
    session: &zenoh::Session,
    o: &SubscribeOptions,
    name: &str,
    stop: &AtomicBool,
) -> Result<(), BridgeError> {
    let k = key(&o.prefix, name);
    let sub = session
        .declare_subscriber(k.clone())
        .wait()
        .map_err(zenoh_err(format!("declaring the subscriber on {k}")))?;
    let local_name = format!("{}{name}", o.local_prefix);
    let refuse = |reason: &dyn std::fmt::Display| {
        eprintln!("shmstream-bridge: refused a frame for stream '{local_name}': {reason}");
    };
    let recv = || -> Result<Option<Sample>, BridgeError> {
        while !stop.load(Ordering::Relaxed) {
            match sub.recv_timeout(POLL) {
                Ok(Some(s)) => return Ok(Some(s)),
                Ok(None) => {}
                Err(e) => return Err(zenoh_err(format!("receiving on {k}"))(e)),
            }
        }
        Ok(None)
    };
    // A frame that could not go into the local stream as it was (unlinked meanwhile): it
    // goes into the stream opened again.
    let mut pending = None;
    loop {
        let Some(sample) = pending.take().map_or_else(&recv, |s| Ok(Some(s)))? else {
            return Ok(());
        };
        let h = match check(&sample) {
            Ok(h) => h,
            Err(reason) => {
                refuse(&reason);
                continue;
            }
        };
        let local = match open_or_create(&local_name, &h, o.history) {
            Ok(s) => s,
            Err(e) => {
                refuse(&e);
                continue;
            }
        };
        // The write lock is held while frames are queued (a backlog is written as seqlock
        // publications without a flock pair each) and let go whenever the queue is empty or
        // a frame is refused, so a local `unlink` (the remedy for a new upstream shape) or
        // another tool gets the lock between bursts.
        let mut guard: Option<WriteGuard<'_>> = None;
        let mut next = Some((sample, h));
        loop {
            let (sample, h) = match next.take() {
                Some(x) => x,
                None => {
                    let queued = sub
                        .try_recv()
                        .map_err(zenoh_err(format!("receiving on {k}")))?;
                    let sample = match queued {
                        Some(s) => s,
                        None => {
                            guard = None;
                            let Some(s) = recv()? else { return Ok(()) };
                            s
                        }
                    };
                    match check(&sample) {
                        Ok(h) => (sample, h),
                        Err(reason) => {
                            refuse(&reason);
                            continue;
                        }
                    }
                }
            };
            if guard.is_none() {
                match local.lock(Some(LOCK_WAIT)) {
                    Ok(g) => guard = Some(g),
                    Err(Error::Stale { .. }) => {
                        pending = Some(sample);
                        break;
                    }
                    Err(e) => {
                        refuse(&e);
                        continue;
                    }
                }
            }
            let Some(g) = guard.as_ref() else { continue };
            match write_sample(g, &sample, &h) {
                Ok(()) => {}
                // Unlinked under us: open or create it again for this frame.
                Err(Refusal::Stale) => {
                    pending = Some(sample);
                    break;
                }
                Err(Refusal::Reason(r)) => {
                    guard = None;
                    refuse(&r);
                }
            }
        }
    }
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

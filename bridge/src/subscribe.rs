//! Zenoh → local streams: each remote frame is checked against its attachment and written,
//! with its frame id, into a local stream of the remote shape and dtype.

use std::sync::atomic::{AtomicBool, Ordering};

use shmstream::{Error, Stream, StreamOptions};
use zenoh::Wait;
use zenoh::sample::Sample;

use crate::codec::FrameHeader;
use crate::{BridgeError, Endpoints, POLL, key, open_session, zenoh_err};

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
    let result = std::thread::scope(|scope| {
        let handles: Vec<_> = o
            .names
            .iter()
            .map(|name| {
                let session = &session;
                scope.spawn(move || mirror(session, o, name, stop).map_err(|e| e.to_string()))
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a subscriber thread panicked".into()))
            })
            .collect();
        results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
    });
    let _ = session.close().wait();
    result.map_err(BridgeError::Usage)
}

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
    let mut local: Option<Stream> = None;
    while !stop.load(Ordering::Relaxed) {
        let sample = match sub.recv_timeout(POLL) {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => return Err(zenoh_err(format!("receiving on {k}"))(e)),
        };
        if let Err(reason) = write_sample(&sample, &local_name, o.history, &mut local) {
            eprintln!("shmstream-bridge: refused a frame for stream '{local_name}': {reason}");
        }
    }
    Ok(())
}

/// Checks one sample and writes it; the error is the reason it was refused.
fn write_sample(
    sample: &Sample,
    local_name: &str,
    history: usize,
    local: &mut Option<Stream>,
) -> Result<(), String> {
    let att = sample
        .attachment()
        .ok_or("no attachment (not sent by shmstream-bridge)")?;
    let h = FrameHeader::decode(&att.to_bytes())?;
    let payload = sample.payload().to_bytes();
    if payload.len() != h.frame_bytes() {
        return Err(format!(
            "payload of {} bytes, but its header says {} {:?} ({} bytes)",
            payload.len(),
            h.dtype,
            h.shape,
            h.frame_bytes()
        ));
    }
    for _attempt in 0..2 {
        if local.is_none() {
            *local = Some(open_or_create(local_name, &h, history).map_err(|e| e.to_string())?);
        }
        let Some(s) = local.as_ref() else { continue };
        if s.dtype() != h.dtype || s.shape() != h.shape.as_slice() {
            return Err(format!(
                "upstream sends {} {:?}, the local stream holds {} {:?}: unlink it to follow the new shape",
                h.dtype,
                h.shape,
                s.dtype(),
                s.shape()
            ));
        }
        match s.write_bytes_frame(&payload, h.frame_id) {
            Ok(()) => return Ok(()),
            // Unlinked under us: create it again.
            Err(Error::Stale { .. }) => *local = None,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("the local stream was unlinked twice while writing".into())
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

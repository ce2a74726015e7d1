//! Local streams → Zenoh: one thread per stream waits for its frames and puts each one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use shmstream::{Error, Stream, WaitStrategy};
use zenoh::Wait;
use zenoh::qos::CongestionControl;

use crate::codec::FrameHeader;
use crate::{BridgeError, Endpoints, POLL, key, open_session, per_stream, zenoh_err};

/// What [`publish`] carries and how.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Local stream names.
    pub names: Vec<String>,
    /// Zenoh endpoints.
    pub endpoints: Endpoints,
    /// Key prefix: stream `NAME` goes on `PREFIX/NAME`.
    pub prefix: String,
    /// At most this many frames per second per stream (the newest frame at each slot).
    pub max_rate: Option<f64>,
    /// Every frame, through a history cursor, with congestion control *block*.
    pub lossless: bool,
}

/// Publishes until `stop` is set (checked every 100 ms) or a stream fails.
pub fn publish(o: &PublishOptions, stop: &AtomicBool) -> Result<(), BridgeError> {
    if o.max_rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(BridgeError::Usage(
            "--max-rate must be a positive number of frames per second".into(),
        ));
    }
    let session = open_session(&o.endpoints)?;
    let result = per_stream(&o.names, "publisher", |name| {
        publish_stream(&session, o, name, stop)
    });
    let _ = session.close().wait();
    result
}

/// Pauses for a rate limit or for a stream to appear, in slices that watch `stop`.
fn pause(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(POLL));
    }
}

fn publish_stream(
    session: &zenoh::Session,
    o: &PublishOptions,
    name: &str,
    stop: &AtomicBool,
) -> Result<(), BridgeError> {
    let k = key(&o.prefix, name);
    let publisher = session
        .declare_publisher(k.clone())
        .congestion_control(if o.lossless {
            CongestionControl::Block
        } else {
            CongestionControl::Drop
        })
        .express(true)
        .wait()
        .map_err(zenoh_err(format!("declaring the publisher on {k}")))?;
    let period = o.max_rate.map(|r| Duration::from_secs_f64(1.0 / r));
    while !stop.load(Ordering::Relaxed) {
        // A stream that does not exist yet (or was unlinked) is waited for: the bridge may
        // start before the writer. There is no wait for creation, so look again every 100 ms.
        let s = match Stream::open_readonly(name) {
            Ok(s) => s,
            Err(Error::NotFound { .. }) => {
                pause(POLL, stop);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // Sleep in the futex between frames: a network hop follows, and a spinning bridge
        // would take a core from the writer it serves.
        s.set_wait_strategy(WaitStrategy::Park);
        if o.lossless && s.history_depth() == 0 {
            return Err(BridgeError::Usage(format!(
                "stream '{name}' keeps no history: --lossless needs a stream created with history(n)"
            )));
        }
        let mut cursor = if o.lossless { Some(s.cursor()?) } else { None };
        // Each frame is read into `buf` and lent to Zenoh, which copies it out during the put;
        // the buffer comes back for the next frame unless Zenoh kept a reference (then a new
        // one is made), so the hot path neither allocates nor touches fresh pages.
        let mut buf = BytesMut::zeroed(s.size_bytes());
        let mut header = FrameHeader {
            dtype: s.dtype(),
            shape: s.shape().to_vec(),
            frame_id: 0,
            count: 0,
            write_time: 0.0,
        };
        while !stop.load(Ordering::Relaxed) {
            let got = match cursor.as_mut() {
                Some(c) => c.next_into_bytes(&mut buf, Some(POLL)),
                None => s.read_new_into_bytes(&mut buf, Some(POLL)),
            };
            let info = match got {
                Ok(info) => info,
                Err(Error::Timeout { .. }) | Err(Error::Inconsistent { .. }) => continue,
                Err(Error::Overrun { lost, .. }) => {
                    eprintln!(
                        "shmstream-bridge: stream '{name}': {lost} frame(s) lost before they could be published (deepen the stream's history)"
                    );
                    continue;
                }
                // Unlinked or replaced: open the new generation (its shape may differ).
                Err(Error::Stale { .. }) | Err(Error::Closed { .. }) => break,
                Err(e) => return Err(e.into()),
            };
            header.frame_id = info.frame_id;
            header.count = info.count;
            header.write_time = info.write_time;
            let frame = std::mem::take(&mut buf).freeze();
            publisher
                .put(frame.clone())
                .attachment(header.encode())
                .wait()
                .map_err(zenoh_err(format!("putting a frame on {k}")))?;
            buf = frame
                .try_into_mut()
                .unwrap_or_else(|_| BytesMut::zeroed(s.size_bytes()));
            if let Some(p) = period {
                pause(p, stop);
            }
        }
    }
    Ok(())
}

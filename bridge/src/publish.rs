//! Local streams → Zenoh: one thread per stream waits for its frames and puts each one.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use shmstream::{Error, Stream, WaitStrategy};
use zenoh::Wait;
use zenoh::qos::CongestionControl;

use crate::codec::FrameHeader;
use crate::{BridgeError, Endpoints, POLL, Stop, key, open_session, per_stream, zenoh_err};

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
    let period = o.max_rate.map(period_of).transpose()?;
    let session = open_session(&o.endpoints)?;
    let result = per_stream(&o.names, "publisher", stop, |name, stop| {
        publish_stream(&session, o, period, name, stop)
    });
    let _ = session.close().wait();
    result
}

/// The pause between two frames that `--max-rate rate` asks for.
fn period_of(rate: f64) -> Result<Duration, BridgeError> {
    match Duration::try_from_secs_f64(1.0 / rate) {
        Ok(p) if rate > 0.0 && rate.is_finite() => Ok(p),
        _ => Err(BridgeError::Usage(format!(
            "--max-rate {rate}: give a positive, finite number of frames per second of at least 1e-19"
        ))),
    }
}

/// Pauses for a rate limit or for a stream to appear, in slices that watch `stop`.
fn pause(d: Duration, stop: &Stop) {
    let until = Instant::now().checked_add(d);
    while !stop.is_set() {
        let left = until.map_or(POLL, |u| u.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(POLL));
    }
}

fn publish_stream(
    session: &zenoh::Session,
    o: &PublishOptions,
    period: Option<Duration>,
    name: &str,
    stop: &Stop,
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
    while !stop.is_set() {
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
        while !stop.is_set() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_max_rate_whose_period_does_not_fit_is_a_usage_error_not_a_panic() {
        assert_eq!(period_of(2.0).unwrap(), Duration::from_millis(500));
        assert_eq!(
            period_of(1e-19).unwrap(),
            Duration::from_secs(10u64.pow(19))
        );
        for r in [0.0, -1.0, 1e-20, 5e-324, f64::NAN, f64::INFINITY] {
            match period_of(r) {
                Err(BridgeError::Usage(m)) => assert!(m.starts_with("--max-rate "), "{m}"),
                other => panic!("--max-rate {r}: {other:?}"),
            }
        }
    }
}

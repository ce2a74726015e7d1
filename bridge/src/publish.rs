//! Local streams → Zenoh: one thread per stream waits for its frames and puts each one.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use shmstream::{Error, Stream, WaitStrategy};
use zenoh::Wait;
use zenoh::qos::CongestionControl;

use crate::codec::FrameHeader;
use crate::{
    BridgeError, Endpoints, POLL, SUM_UP_EVERY, Stop, check_keys, key, open_session, per_stream,
    say, zenoh_err,
};

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
    /// Every frame, through a history cursor, with congestion control *block*: of a stream
    /// there at the start from its current frame on, of one made (again) while the bridge
    /// waits for it from its first frame.
    pub lossless: bool,
}

/// Publishes until `stop` is set (checked every 100 ms) or a stream fails.
pub fn publish(o: &PublishOptions, stop: &AtomicBool) -> Result<(), BridgeError> {
    check_keys(&o.prefix, &o.names)?;
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
    // Whether the stream was made (or made again) while this thread waited for it: then every
    // frame of its generation is this bridge's to carry. (A stream there when the bridge
    // starts is carried from its current frame on.)
    let mut made_since = false;
    let mut losses = Losses::default();
    while !stop.is_set() {
        // A stream that does not exist yet (or was unlinked) is waited for: the bridge may
        // start before the writer. There is no wait for creation, so look again every 100 ms.
        let s = match Stream::open_readonly(name) {
            Ok(s) => s,
            Err(Error::NotFound { .. }) => {
                made_since = true;
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
        if let Some(c) = cursor.as_mut().filter(|_| made_since) {
            c.rewind_to_start();
        }
        // Latest-value: the frame the stream holds when it is opened goes first, so a writer
        // that writes once and then idles is mirrored too.
        let mut current_first = cursor.is_none();
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
                None if std::mem::take(&mut current_first) => {
                    match s.read_publication_into_bytes(&mut buf) {
                        Ok(info) if info.count == 0 => continue, // never written
                        other => other,
                    }
                }
                None => s.read_new_into_bytes(&mut buf, Some(POLL)),
            };
            let info = match got {
                Ok(info) => info,
                Err(Error::Timeout { .. }) | Err(Error::Inconsistent { .. }) => continue,
                Err(Error::Overrun { lost, cause, .. }) => {
                    // Lapped: resume an eighth of the ring ahead of the oldest frame, as
                    // `record` does, not at the slot the writer overwrites next.
                    let skipped = cursor.as_mut().map_or(0, |c| c.skip_after_overrun(cause));
                    losses.lost(lost + skipped);
                    say_any(name, losses.due());
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
            say_any(name, losses.due());
            if let Some(p) = period {
                pause(p, stop);
            }
        }
        made_since = true;
    }
    say_any(name, losses.rest());
    Ok(())
}

/// Says `line`, if there is one.
fn say_any(name: &str, line: Option<String>) {
    if let Some(line) = line {
        say(name, &line);
    }
}

/// Frames a lossless publisher lost: the first loss is said at once, later ones summed up
/// at most every [`SUM_UP_EVERY`] and when the publisher ends (one that stays behind its
/// writer loses frames at almost every frame, and must not fill the log with a line each).
#[derive(Debug, Default)]
struct Losses {
    unsaid: u64,
    said_at: Option<Instant>,
}

impl Losses {
    fn lost(&mut self, frames: u64) {
        self.unsaid += frames;
    }

    /// The line to say now, if losses are unsaid and the last line is old enough (the
    /// clock is read only then: this runs after every frame put).
    fn due(&mut self) -> Option<String> {
        if self.unsaid == 0 {
            return None;
        }
        self.due_at(Instant::now())
    }

    /// [`Losses::due`] at `now`.
    fn due_at(&mut self, now: Instant) -> Option<String> {
        if self.unsaid == 0
            || self
                .said_at
                .is_some_and(|t| now.saturating_duration_since(t) < SUM_UP_EVERY)
        {
            return None;
        }
        self.said_at = Some(now);
        self.rest()
    }

    /// The line for the losses not said yet, if any.
    fn rest(&mut self) -> Option<String> {
        let n = std::mem::take(&mut self.unsaid);
        (n > 0).then(|| {
            format!(
                "{n} frame(s) lost before they could be published (deepen the stream's history)"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_are_said_at_once_then_summed_up_every_ten_seconds_and_at_the_end() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut l = Losses::default();
        assert_eq!(l.due_at(at(0)), None);
        l.lost(3);
        let line = |n: u64| {
            Some(format!(
                "{n} frame(s) lost before they could be published (deepen the stream's history)"
            ))
        };
        assert_eq!(l.due_at(at(0)), line(3));
        for s in 1..10 {
            l.lost(1);
            assert_eq!(l.due_at(at(s)), None, "said again at {s} s");
        }
        assert_eq!(l.due_at(at(10)), line(9));
        assert_eq!(l.due_at(at(25)), None, "nothing unsaid");
        l.lost(2);
        assert_eq!(l.due_at(at(25)), line(2));
        l.lost(4);
        assert_eq!(l.rest(), line(4));
        assert_eq!(l.rest(), None);
    }

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

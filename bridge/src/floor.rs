//! Zenoh's own floor for the harness's `bridge` case (hidden subcommands `floor-put` and
//! `floor-get`): a bare Zenoh publisher → subscriber of the same payloads over the same
//! loopback transport, with none of the bridge's work (no shared memory, no header, no
//! mirror stream).
//!
//! Every payload starts with its put time (ns since the Unix epoch, little-endian; one
//! clock for both processes on one host). The attachment says the phase: `warm` (ignored:
//! the session is still connecting), `lat` (paced; the subscriber keeps each one-way
//! latency), `tput` (flat out with congestion control *block*; the subscriber counts), and
//! `end` (or a second without frames after `tput` ones). The subscriber then writes `FILE`:
//! a line `tput <frames> <seconds>` per window (the throughput phase cut into `windows`
//! equal spans, as the harness's repeats) and one latency in ns per line.
//!
//! With `step` > 0 the throughput phase runs in a window: the subscriber acknowledges every
//! `step`-th frame on `KEY/ack`, and the publisher keeps at most two steps unacknowledged
//! (before each step it waits for the one before the last): the shape of the bridge case's
//! lossless window, with nothing but Zenoh in the path.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use shmstream_bridge::{BridgeError, Endpoints, open_session, zenoh_err};
use zenoh::Wait;
use zenoh::qos::CongestionControl;

/// The little-endian u64 a floor payload starts with (its stamp, or an acknowledged count),
/// read from the pieces Zenoh received it in (a large payload is never copied whole).
fn leading_u64(bytes: &zenoh::bytes::ZBytes) -> u64 {
    let mut b = [0u8; 8];
    let mut at = 0;
    for piece in bytes.slices() {
        let n = piece.len().min(8 - at);
        b[at..at + n].copy_from_slice(&piece[..n]);
        at += n;
        if at == 8 {
            break;
        }
    }
    u64::from_le_bytes(b)
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What `floor-put` sends (its command-line options).
#[derive(Debug, Clone, clap::Args)]
pub struct PutPlan {
    /// Payload bytes (at least 8).
    #[arg(long)]
    pub bytes: usize,
    /// Microseconds between latency frames.
    #[arg(long, default_value_t = 1000.0)]
    pub gap_us: f64,
    /// Seconds of warm-up frames (the session connects meanwhile).
    #[arg(long, default_value_t = 1.0)]
    pub warm_s: f64,
    /// Seconds of paced latency frames.
    #[arg(long, default_value_t = 1.0)]
    pub lat_s: f64,
    /// Seconds of throughput frames.
    #[arg(long, default_value_t = 1.0)]
    pub tput_s: f64,
    /// Throughput frames per acknowledged step, at most two steps in flight (0: flat
    /// out, no acknowledgements).
    #[arg(long, default_value_t = 0)]
    pub step: u64,
}

/// The key floor-get acknowledges steps on.
fn ack_key(key: &str) -> String {
    format!("{key}/ack")
}

/// How long floor-put waits for an acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The publishing side.
pub fn put(key: &str, endpoints: &Endpoints, plan: &PutPlan) -> Result<(), BridgeError> {
    if plan.bytes < 8 {
        return Err(BridgeError::Usage("--bytes must be at least 8".into()));
    }
    let session = open_session(endpoints)?;
    let publisher = session
        .declare_publisher(key.to_owned())
        .congestion_control(CongestionControl::Block)
        .express(true)
        .wait()
        .map_err(zenoh_err("declaring the floor publisher"))?;
    let acks = session
        .declare_subscriber(ack_key(key))
        .wait()
        .map_err(zenoh_err(
            "declaring the floor's acknowledgement subscriber",
        ))?;
    // One buffer, lent to Zenoh for each put and taken back (as the bridge's publisher
    // does): a frame's time is Zenoh's alone, with no copy or allocation of ours in it.
    let mut payload = BytesMut::zeroed(plan.bytes);
    let mut send = |tag: &str| {
        payload[..8].copy_from_slice(&now_ns().to_le_bytes());
        let frame = std::mem::take(&mut payload).freeze();
        let put = publisher
            .put(frame.clone())
            .attachment(tag.as_bytes().to_vec())
            .wait()
            .map_err(zenoh_err("putting a floor frame"));
        payload = frame
            .try_into_mut()
            .unwrap_or_else(|_| BytesMut::zeroed(plan.bytes));
        put
    };
    let gap = Duration::from_secs_f64(plan.gap_us * 1e-6);
    for (tag, secs) in [("warm", plan.warm_s), ("lat", plan.lat_s)] {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        let mut next = Instant::now();
        while Instant::now() < until {
            // The same pacing as the harness's writer: sleep to the next slot.
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            next += gap;
            send(tag)?;
        }
    }
    let until = Instant::now() + Duration::from_secs_f64(plan.tput_s);
    let mut sent = 0u64;
    while Instant::now() < until {
        send("tput")?;
        sent += 1;
        if plan.step > 0 && sent.is_multiple_of(plan.step) {
            // The step just sent may be in flight; the one before must have arrived.
            wait_ack(&acks, sent - plan.step)?;
        }
    }
    for _ in 0..3 {
        send("end")?;
    }
    drop(publisher);
    let _ = session.close().wait();
    Ok(())
}

/// Waits until floor-get has acknowledged `sent` throughput frames.
fn wait_ack(
    acks: &zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>,
    sent: u64,
) -> Result<(), BridgeError> {
    if sent == 0 {
        return Ok(());
    }
    let deadline = Instant::now() + ACK_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(ack) = acks
            .recv_timeout(left)
            .map_err(zenoh_err("receiving a floor acknowledgement"))?
        else {
            return Err(BridgeError::Usage(format!(
                "floor-get acknowledged no step up to frame {sent} within {ACK_TIMEOUT:?}"
            )));
        };
        if leading_u64(ack.payload()) >= sent {
            return Ok(());
        }
    }
}

/// What the floor's subscriber has seen, filled on Zenoh's receiving thread.
#[derive(Default)]
struct Seen {
    /// One-way latencies of the `lat` frames, ns.
    lat: Vec<u64>,
    /// Arrival of every throughput frame (a few MB at most), cut into windows at the end.
    arrivals: Vec<Instant>,
    /// An `end` frame came.
    ended: bool,
    /// Acknowledging a step failed.
    error: Option<BridgeError>,
}

/// The subscribing side: runs until `end` (or `stop`), then writes `out`. Each sample is
/// timed in the subscriber's callback, on Zenoh's receiving thread: the first code of an
/// application a sample reaches, as the bridge's mirror writes its local stream from there.
/// Timed after a channel's hand-off to a thread of its own, the floor at 64 B read 94-122 µs
/// at p50 while the bridge's whole path, two futex wake-ups included, read 93: it bounded
/// nothing.
pub fn get(
    key: &str,
    endpoints: &Endpoints,
    out: &std::path::Path,
    step: u64,
    windows: u32,
    stop: &AtomicBool,
) -> Result<(), BridgeError> {
    let session = open_session(endpoints)?;
    let acks = session
        .declare_publisher(ack_key(key))
        .congestion_control(CongestionControl::Block)
        .express(true)
        .wait()
        .map_err(zenoh_err("declaring the floor's acknowledgement publisher"))?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&seen);
    let sub = session
        .declare_subscriber(key.to_owned())
        .callback(move |sample| {
            let (now, at) = (now_ns(), Instant::now());
            let stamp = leading_u64(sample.payload());
            let tag = sample.attachment().map(|a| a.to_bytes().to_vec());
            let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
            match tag.as_deref() {
                Some(b"lat") => s.lat.push(now.saturating_sub(stamp)),
                Some(b"tput") => {
                    s.arrivals.push(at);
                    let n = s.arrivals.len() as u64;
                    if step > 0 && n.is_multiple_of(step) {
                        drop(s);
                        if let Err(e) = acks.put(n.to_le_bytes().to_vec()).wait() {
                            let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
                            s.error = Some(zenoh_err("acknowledging a floor step")(e));
                        }
                    }
                }
                Some(b"end") => s.ended = true,
                _ => {}
            }
        })
        .wait()
        .map_err(zenoh_err("declaring the floor subscriber"))?;
    while !stop.load(Ordering::Relaxed) {
        {
            let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(e) = s.error.take() {
                return Err(e);
            }
            // The publisher closing its session may discard the `end` frames queued behind
            // a backlog: a second without frames after the throughput phase ends it too.
            let quiet = s
                .arrivals
                .last()
                .is_some_and(|t| t.elapsed() > Duration::from_secs(1));
            if s.ended || quiet {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(sub);
    let Seen { lat, arrivals, .. } =
        std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));
    let mut text = String::new();
    if let (Some(&first), Some(&last)) = (arrivals.first(), arrivals.last()) {
        let n = windows.max(1);
        let span = last.duration_since(first) / n;
        for w in 0..n {
            let (from, to) = (first + span * w, first + span * (w + 1));
            // Frames after the window's start, up to its end: rates, not counts, compare.
            let frames = arrivals.iter().filter(|&&t| t > from && t <= to).count();
            text.push_str(&format!("tput {frames} {:.9}\n", span.as_secs_f64()));
        }
    }
    for l in &lat {
        text.push_str(&format!("{l}\n"));
    }
    std::fs::File::create(out)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| BridgeError::Usage(format!("{}: {e}", out.display())))?;
    let _ = session.close().wait();
    Ok(())
}

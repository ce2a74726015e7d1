//! Zenoh's own floor for the harness's `bridge` case (hidden subcommands `floor-put` and
//! `floor-get`): a bare Zenoh publisher → subscriber of the same payloads over the same
//! loopback transport, with none of the bridge's work (no shared memory, no header, no
//! mirror stream).
//!
//! floor-put runs the phases the harness asks for on its standard input, one line each,
//! and answers `done` on its standard output when one is over, so the harness can
//! interleave the floor's phases with its own run of the bridge:
//! - `warm SECS`: paced frames, ignored (the session is still connecting);
//! - `lat SECS`: paced frames; the subscriber keeps each one-way latency;
//! - `tput SECS RUN STEP`: flat out with congestion control *block*; the subscriber counts
//!   them as throughput run `RUN` (one window). With `STEP` > 0 the run has a window: the subscriber
//!   acknowledges every `STEP`-th frame of the run on `KEY/ack`, and the publisher keeps at
//!   most two steps unacknowledged (before each step it waits for the one before the last):
//!   the shape of the bridge case's lossless window, with nothing but Zenoh in the path;
//! - `end`: end frames, acknowledged by the subscriber before the publisher closes its
//!   session (closing may discard what is still queued), then floor-put exits.
//!
//! Every other phase ends with a `sync` frame that the subscriber acknowledges: when
//! floor-put answers `done`, all of the phase's frames have arrived, and the bridge's turn
//! does not overlap the floor's tail.
//!
//! floor-put numbers its phases from 1. A frame floor-get acknowledges (throughput, `sync`,
//! `end`) carries its phase's number as the attachment's last word, and each
//! acknowledgement ([`Ack`]) names it: floor-put accepts only one of the phase it waits in,
//! and of the kind it waits for ([`Awaited`]), so a late or repeated acknowledgement (a
//! sync sent again after [`SYNC_RETRY`] is acknowledged twice) never ends a later wait.
//!
//! Every payload starts with its put time (ns of `CLOCK_MONOTONIC`, little-endian: one
//! clock for both processes on one host, and the clock the bridge side is timed by, so a
//! step of the wall clock biases neither), then [`FILL`] bytes in pages of its own
//! ([`filled_payload`]); the attachment says the phase. After `end`
//! floor-get writes `FILE`: a line `tput <run> <frames> <seconds>` per throughput run
//! (the frames after the run's first, over the time from its first to its last arrival)
//! and one latency in ns per line.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use shmstream_bridge::{BridgeError, Endpoints, open_session, zenoh_err};
use zenoh::Wait;
use zenoh::qos::CongestionControl;

/// The little-endian u64 a floor payload starts with (its stamp),
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

/// Nanoseconds of `CLOCK_MONOTONIC`: system-wide, so floor-put's stamp and floor-get's
/// arrival compare across the two processes; unlike the wall clock it never steps.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec on our stack and CLOCK_MONOTONIC always
    // exists on Linux, so the call only fills `ts`.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What `floor-put` sends (its command-line options; the phases come on standard input).
#[derive(Debug, Clone, clap::Args)]
pub struct PutPlan {
    /// Payload bytes (at least 8).
    #[arg(long)]
    pub bytes: usize,
    /// Microseconds between paced (warm-up and latency) frames.
    #[arg(long, default_value_t = 1000.0)]
    pub gap_us: f64,
}

/// One phase the harness asks floor-put for (a line of its standard input).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Paced frames for `secs`, tagged `warm`.
    Warm { secs: Duration },
    /// Paced frames for `secs`, tagged `lat`.
    Lat { secs: Duration },
    /// Frames flat out for `secs`, throughput run `run`, `step` frames per acknowledged
    /// step (0: no window).
    Tput { secs: Duration, run: u32, step: u64 },
    /// The end frames.
    End,
}

impl Phase {
    fn parse(line: &str) -> Result<Phase, BridgeError> {
        let bad = || {
            BridgeError::Usage(format!(
                "floor-put: bad phase '{line}' (warm SECS | lat SECS | tput SECS RUN STEP | end)"
            ))
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        // Negative, not a number or too large: bad.
        let secs = |w: &str| Duration::try_from_secs_f64(w.parse().ok()?).ok();
        Ok(match words[..] {
            ["warm", s] => Phase::Warm {
                secs: secs(s).ok_or_else(bad)?,
            },
            ["lat", s] => Phase::Lat {
                secs: secs(s).ok_or_else(bad)?,
            },
            ["tput", s, run, step] => Phase::Tput {
                secs: secs(s).ok_or_else(bad)?,
                run: run.parse().map_err(|_| bad())?,
                step: step.parse().map_err(|_| bad())?,
            },
            ["end"] => Phase::End,
            _ => return Err(bad()),
        })
    }
}

/// The attachment of a throughput frame: its run and the run's step.
fn tput_tag(run: u32, step: u64) -> String {
    format!("tput {run} {step}")
}

/// The run and step of a throughput frame's attachment.
fn parse_tput_tag(tag: &[u8]) -> Option<(u32, u64)> {
    let s = std::str::from_utf8(tag).ok()?.strip_prefix("tput ")?;
    let (run, step) = s.split_once(' ')?;
    Some((run.parse().ok()?, step.parse().ok()?))
}

/// The attachment of a frame floor-get acknowledges: `what` (`sync`, `end` or a
/// [`tput_tag`]), then its phase's number.
fn acked_tag(what: &str, phase: u64) -> String {
    format!("{what} {phase}")
}

/// What an acknowledged frame's attachment says and its phase's number.
fn parse_acked_tag(tag: &[u8]) -> Option<(&str, u64)> {
    let (what, phase) = std::str::from_utf8(tag).ok()?.rsplit_once(' ')?;
    Some((what, phase.parse().ok()?))
}

/// The key floor-get acknowledges steps, syncs and the end on.
fn ack_key(key: &str) -> String {
    format!("{key}/ack")
}

/// The acknowledgement of the end frames.
const END_ACK: u64 = u64::MAX;

/// The acknowledgement of a phase's `sync` frame (above any step's count, below the end's).
const SYNC_ACK: u64 = u64::MAX - 1;

/// An acknowledgement on `KEY/ack` (two little-endian u64s): the number of the phase it
/// belongs to, and what it acknowledges: a count of the run's frames, [`SYNC_ACK`] or
/// [`END_ACK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ack {
    phase: u64,
    what: u64,
}

impl Ack {
    fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.phase.to_le_bytes());
        b[8..].copy_from_slice(&self.what.to_le_bytes());
        b
    }

    /// `None` for a payload of another length.
    fn from_bytes(b: &[u8]) -> Option<Ack> {
        let (phase, what) = b.split_first_chunk::<8>()?;
        Some(Ack {
            phase: u64::from_le_bytes(*phase),
            what: u64::from_le_bytes(what.try_into().ok()?),
        })
    }
}

/// What floor-put waits for in phase `phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Awaited {
    phase: u64,
    kind: AckKind,
}

/// The kind of acknowledgement floor-put waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckKind {
    /// At least this many of the run's frames.
    Frames(u64),
    /// The phase's `sync`.
    Sync,
    /// The end frames.
    End,
}

impl Awaited {
    /// Whether `ack` ends this wait: it is of this phase and of this kind.
    fn is_answered_by(self, ack: Ack) -> bool {
        ack.phase == self.phase
            && match self.kind {
                AckKind::Frames(n) => (n..SYNC_ACK).contains(&ack.what),
                AckKind::Sync => ack.what == SYNC_ACK,
                AckKind::End => ack.what == END_ACK,
            }
    }
}

/// How long floor-put waits for an acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long floor-put waits for a sync's acknowledgement before it sends the sync again.
const SYNC_RETRY: Duration = Duration::from_millis(100);

type Acks = zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>;

/// The byte a floor payload holds after its stamp. Zenoh's transport here does not compress,
/// so the value does not matter, only that it was written; not 0, so that a test tells it
/// from a zeroed allocation.
const FILL: u8 = 0xA5;

/// A floor payload of `bytes`, written through, so that its pages are its own as a frame's
/// are. A fresh allocation's untouched pages all map the kernel's one zero page, which
/// Zenoh's copy into its batches then reads from the L1 cache: floor-put → floor-get alone
/// at 4 MB, in 10 alternating pairs of runs (2-core host, 2026-12-05), the zeroed buffer
/// moved more frames/s in 8, medians 369 and 386 against 352 and 364 with a written one.
fn filled_payload(bytes: usize) -> BytesMut {
    let mut p = BytesMut::with_capacity(bytes);
    p.resize(bytes, FILL);
    p
}

/// The publishing side: runs the phases read from standard input until `end`.
pub fn put(key: &str, endpoints: &Endpoints, plan: &PutPlan) -> Result<(), BridgeError> {
    if plan.bytes < 8 {
        return Err(BridgeError::Usage("--bytes must be at least 8".into()));
    }
    let gap = Duration::try_from_secs_f64(plan.gap_us * 1e-6).map_err(|_| {
        BridgeError::Usage(format!(
            "--gap-us {}: give a number of microseconds from 0 to 1.8e25",
            plan.gap_us
        ))
    })?;
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
    let mut payload = filled_payload(plan.bytes);
    let mut send = |tag: &[u8]| {
        payload[..8].copy_from_slice(&now_ns().to_le_bytes());
        let frame = std::mem::take(&mut payload).freeze();
        let put = publisher
            .put(frame.clone())
            .attachment(tag.to_vec())
            .wait()
            .map_err(zenoh_err("putting a floor frame"));
        payload = frame
            .try_into_mut()
            .unwrap_or_else(|_| filled_payload(plan.bytes));
        put
    };
    let usage = |e: std::io::Error| BridgeError::Usage(format!("floor-put's phases: {e}"));
    let mut answers = std::io::stdout().lock();
    for (line, number) in std::io::stdin().lock().lines().zip(1u64..) {
        let phase = Phase::parse(&line.map_err(usage)?)?;
        let awaited = |kind| Awaited {
            phase: number,
            kind,
        };
        // Earlier phases' acknowledgements are ignored anyway; dropping them keeps the
        // queue short.
        while let Ok(Some(_)) = acks.try_recv() {}
        match phase {
            Phase::Warm { secs } => pace(&mut send, b"warm", secs, gap)?,
            Phase::Lat { secs } => pace(&mut send, b"lat", secs, gap)?,
            Phase::Tput { secs, run, step } => {
                let tag = acked_tag(&tput_tag(run, step), number);
                let until = later(Instant::now(), secs, "the phase")?;
                let mut sent = 0u64;
                while Instant::now() < until {
                    send(tag.as_bytes())?;
                    sent += 1;
                    if step > 0 && sent.is_multiple_of(step) {
                        // The step just sent may be in flight; the one before must have arrived.
                        wait_ack(&acks, awaited(AckKind::Frames(sent - step)))?;
                    }
                }
            }
            Phase::End => {
                let tag = acked_tag("end", number);
                for _ in 0..3 {
                    send(tag.as_bytes())?;
                }
                wait_ack(&acks, awaited(AckKind::End))?;
            }
        }
        if phase != Phase::End {
            // Sent again until acknowledged: after a warm-up the sessions may still be
            // connecting, and Zenoh drops a put that has no subscriber yet.
            let (tag, deadline) = (acked_tag("sync", number), Instant::now() + ACK_TIMEOUT);
            loop {
                send(tag.as_bytes())?;
                if acked(&acks, awaited(AckKind::Sync), SYNC_RETRY)? {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(BridgeError::Usage(format!(
                        "floor-get acknowledged no sync within {ACK_TIMEOUT:?}"
                    )));
                }
            }
        }
        writeln!(answers, "done")
            .and_then(|()| answers.flush())
            .map_err(usage)?;
        if phase == Phase::End {
            drop(publisher);
            let _ = session.close().wait();
            return Ok(());
        }
    }
    Err(BridgeError::Usage(
        "floor-put: its standard input closed before `end`".into(),
    ))
}

/// Sends frames tagged `tag` `gap` apart for `secs`, paced as the harness's writer: the
/// first a gap after the phase begins (the bridge's last frame has had that long to
/// arrive), then each at its slot, sleeping in between.
fn pace(
    send: &mut impl FnMut(&[u8]) -> Result<(), BridgeError>,
    tag: &[u8],
    secs: Duration,
    gap: Duration,
) -> Result<(), BridgeError> {
    let (until, mut next) = (later(Instant::now(), secs, "the phase")?, Instant::now());
    while Instant::now() < until {
        next = later(next, gap, "--gap-us")?;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        send(tag)?;
    }
    Ok(())
}

/// `d` after `t`; a usage error naming `what` where that is beyond the clock's range.
fn later(t: Instant, d: Duration, what: &str) -> Result<Instant, BridgeError> {
    t.checked_add(d).ok_or_else(|| {
        BridgeError::Usage(format!(
            "floor-put: {what} ({d:?}) reaches beyond the clock's range: give a shorter time"
        ))
    })
}

/// Waits until floor-get has acknowledged what `awaited` names (no frames: at once).
fn wait_ack(acks: &Acks, awaited: Awaited) -> Result<(), BridgeError> {
    if awaited.kind == AckKind::Frames(0) || acked(acks, awaited, ACK_TIMEOUT)? {
        return Ok(());
    }
    Err(BridgeError::Usage(format!(
        "floor-get did not acknowledge {:?} of phase {} within {ACK_TIMEOUT:?}",
        awaited.kind, awaited.phase
    )))
}

/// Whether an acknowledgement that answers `awaited` comes within `timeout` (any other
/// is dropped).
fn acked(acks: &Acks, awaited: Awaited, timeout: Duration) -> Result<bool, BridgeError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(ack) = acks
            .recv_timeout(left)
            .map_err(zenoh_err("receiving a floor acknowledgement"))?
        else {
            return Ok(false);
        };
        if Ack::from_bytes(&ack.payload().to_bytes()).is_some_and(|a| awaited.is_answered_by(a)) {
            return Ok(true);
        }
    }
}

/// What the floor's subscriber has seen, filled on Zenoh's receiving thread.
#[derive(Default)]
struct Seen {
    /// One-way latencies of the `lat` frames, ns.
    lat: Vec<u64>,
    /// Arrival of every throughput frame (a few MB at most) by run.
    arrivals: BTreeMap<u32, Vec<Instant>>,
    /// An `end` frame came.
    ended: bool,
    /// Acknowledging a step or the end failed.
    error: Option<BridgeError>,
}

/// Notes one sample of floor-get's (its attachment `tag`, its payload's `stamp`, its
/// arrival `(monotonic ns, instant)`) in `seen` and sends the acknowledgement it calls
/// for with `ack`. The end is noted only once its acknowledgement is sent: `get` closes the
/// session when it sees the end, which would drop an acknowledgement still to be put.
fn on_sample(
    seen: &Mutex<Seen>,
    tag: Option<&[u8]>,
    stamp: u64,
    (now, at): (u64, Instant),
    ack: impl FnOnce(Ack) -> Result<(), BridgeError>,
) {
    let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
    let due = match tag {
        Some(b"lat") => {
            s.lat.push(now.saturating_sub(stamp));
            None
        }
        Some(t) => parse_acked_tag(t).and_then(|(what, phase)| {
            let what = match what {
                "end" => Some(END_ACK),
                "sync" => Some(SYNC_ACK),
                t => parse_tput_tag(t.as_bytes()).and_then(|(run, step)| {
                    let arrivals = s.arrivals.entry(run).or_default();
                    arrivals.push(at);
                    let n = arrivals.len() as u64;
                    (step > 0 && n.is_multiple_of(step)).then_some(n)
                }),
            }?;
            Some(Ack { phase, what })
        }),
        None => None,
    };
    drop(s);
    let Some(due) = due else { return };
    let sent = ack(due);
    let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
    match sent {
        Err(e) => s.error = Some(e),
        Ok(()) if due.what == END_ACK => s.ended = true,
        Ok(()) => {}
    }
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
            on_sample(&shared, tag.as_deref(), stamp, (now, at), |ack| {
                acks.put(ack.to_bytes().to_vec())
                    .wait()
                    .map_err(zenoh_err("acknowledging a floor step"))
            });
        })
        .wait()
        .map_err(zenoh_err("declaring the floor subscriber"))?;
    while !stop.load(Ordering::Relaxed) {
        {
            let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(e) = s.error.take() {
                return Err(e);
            }
            if s.ended {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(sub);
    let Seen { lat, arrivals, .. } =
        std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));
    let mut text = String::new();
    for (run, arrivals) in &arrivals {
        let (Some(&first), Some(&last)) = (arrivals.first(), arrivals.last()) else {
            continue;
        };
        // The frames after the first, over the time since it: rates, not counts, compare.
        let span = last.duration_since(first).as_secs_f64();
        text.push_str(&format!("tput {run} {} {span:.9}\n", arrivals.len() - 1));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte written, none left to the zero page: a payload of zeros would be the
    /// zeroed allocation's untouched pages again.
    #[test]
    fn a_floor_payload_is_written_through() {
        const { assert!(FILL != 0) };
        let p = filled_payload(3 << 20);
        assert_eq!(p.len(), 3 << 20);
        assert!(p.iter().all(|&b| b == FILL));
    }

    #[test]
    fn phases_parse_and_bad_ones_are_refused() {
        let secs = Duration::from_secs_f64;
        assert_eq!(
            Phase::parse("warm 0.5").unwrap(),
            Phase::Warm { secs: secs(0.5) }
        );
        assert_eq!(
            Phase::parse("lat 2").unwrap(),
            Phase::Lat { secs: secs(2.0) }
        );
        assert_eq!(
            Phase::parse("tput 6 1 512").unwrap(),
            Phase::Tput {
                secs: secs(6.0),
                run: 1,
                step: 512
            }
        );
        assert_eq!(Phase::parse("end").unwrap(), Phase::End);
        for bad in [
            "",
            "lat",
            "lat -1",
            "lat nan",
            "lat 1e300",
            "warm inf",
            "tput 1e20 0 0",
            "tput 1 2",
            "tput 1 x 3",
            "stop",
        ] {
            let e = Phase::parse(bad).unwrap_err().to_string();
            assert!(e.contains("bad phase"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn times_beyond_a_duration_or_the_clock_are_usage_errors_not_panics() {
        for gap_us in [-1.0, f64::NAN, 1e300] {
            match put("k", &Endpoints::default(), &PutPlan { bytes: 64, gap_us }) {
                Err(BridgeError::Usage(m)) => assert!(m.starts_with("--gap-us "), "{m}"),
                other => panic!("--gap-us {gap_us}: {other:?}"),
            }
        }
        let e = later(Instant::now(), Duration::MAX, "the phase").unwrap_err();
        assert!(e.to_string().contains("beyond the clock's range"), "{e}");
    }

    #[test]
    fn a_throughput_tag_carries_its_run_and_step() {
        assert_eq!(parse_tput_tag(tput_tag(3, 64).as_bytes()), Some((3, 64)));
        assert_eq!(parse_tput_tag(b"lat"), None);
        assert_eq!(parse_tput_tag(b"tput x 1"), None);
        let tag = acked_tag(&tput_tag(3, 64), 7);
        let (what, phase) = parse_acked_tag(tag.as_bytes()).unwrap();
        assert_eq!((parse_tput_tag(what.as_bytes()), phase), (Some((3, 64)), 7));
        assert_eq!(parse_acked_tag(b"warm"), None);
    }

    /// The first of `queue` (acknowledgements as they came) that answers `awaited`.
    fn first_answer(queue: &[Ack], awaited: Awaited) -> Option<usize> {
        queue
            .iter()
            .map(|a| Ack::from_bytes(&a.to_bytes()).unwrap())
            .position(|a| awaited.is_answered_by(a))
    }

    #[test]
    fn a_late_or_repeated_acknowledgement_never_ends_a_later_phases_wait() {
        let sync = |phase| Ack {
            phase,
            what: SYNC_ACK,
        };
        let frames = |phase, what| Ack { phase, what };
        let wait = |phase, kind| Awaited { phase, kind };
        // Phase 1's sync was sent twice (its first acknowledgement came after SYNC_RETRY):
        // the second acknowledgement is still queued when phase 2 waits for its own sync.
        let queue = [sync(1), frames(2, 8), sync(2)];
        assert_eq!(first_answer(&queue, wait(2, AckKind::Sync)), Some(2));
        // Nor does it (or a step of an earlier run) count as frames of a throughput run.
        let queue = [sync(1), frames(1, 64), sync(3), frames(3, 16)];
        assert_eq!(first_answer(&queue, wait(3, AckKind::Frames(16))), Some(3));
        assert_eq!(first_answer(&queue, wait(3, AckKind::Frames(24))), None);
        // Nor a sync as the end.
        let queue = [
            sync(4),
            Ack {
                phase: 4,
                what: END_ACK,
            },
        ];
        assert_eq!(first_answer(&queue, wait(4, AckKind::End)), Some(1));
        assert_eq!(Ack::from_bytes(&[0; 8]), None);
    }

    /// floor-get notes the end only after its acknowledgement was put: once it is noted,
    /// `get` may close the session, and an acknowledgement put after that never reaches
    /// floor-put, which then fails the floor at its timeout.
    #[test]
    fn the_end_is_noted_only_after_its_acknowledgement_is_sent() {
        let seen = Mutex::new(Seen::default());
        let at = (now_ns(), Instant::now());
        let mut sent = Vec::new();
        on_sample(&seen, Some(acked_tag("end", 5).as_bytes()), 0, at, |ack| {
            assert!(
                !seen.lock().unwrap().ended,
                "the end was noted before its acknowledgement was sent"
            );
            sent.push(ack);
            Ok(())
        });
        assert_eq!(
            sent,
            [Ack {
                phase: 5,
                what: END_ACK
            }]
        );
        assert!(seen.lock().unwrap().ended);
        // An acknowledgement that fails is the error `get` returns, not the end.
        let seen = Mutex::new(Seen::default());
        on_sample(&seen, Some(acked_tag("end", 6).as_bytes()), 0, at, |_| {
            Err(BridgeError::Usage("closed".into()))
        });
        let s = seen.lock().unwrap();
        assert!(!s.ended && s.error.is_some());
    }

    /// The stamp and arrival read CLOCK_MONOTONIC, the clock the bridge side is timed by:
    /// with the wall clock a step during a phase made 0-ns or huge floor samples.
    #[test]
    fn the_floor_stamps_with_the_monotonic_clock() {
        let stamp = now_ns();
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec on our stack.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        assert_eq!(rc, 0);
        let mono = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        assert!(
            mono >= stamp && mono - stamp < 1_000_000_000,
            "stamp {stamp} ns is not CLOCK_MONOTONIC ({mono} ns)"
        );
    }
}

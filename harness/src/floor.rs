//! The floors: the same loops as the cases, over plain memory, measured in the same run
//! on the same cores (the machines are shared and noisy; only ratios from one run are
//! comparable).
//!
//! - roundtrip: a [`BareStream`] publish then snapshot: what the format makes every
//!   implementation do (the `flock` pair, the odd/even sequence, the copy, the write time,
//!   the count; then sequence, copy out, re-check), on a bare shared-memory region (the C
//!   floor `roundtrip.c`, "reused dst", plus the format's bracket).
//! - pingpong: the C floor `pingpong_payload.c` with the flock pair: the writer takes
//!   `flock`, bumps a bare shared sequence word to odd, copies the payload in, publishes
//!   the even value, unlocks; the reader copies out, re-checks the word and stores an
//!   ack word; the writer also stamps the write time, as the format does. Each wait form
//!   waits by the same mechanism as the library's: `spin` spins; `park` (`futex`) sleeps
//!   in `FUTEX_WAIT` at once, woken by `FUTEX_WAKE` (the C `futex rtt` floor with a
//!   payload; the writer idles `gap_us` before each round trip, as in the case);
//!   `adaptive` spins [`shmstream::ADAPTIVE_SPIN_ROUNDS`] pauses, then sleeps. With
//!   [`Job::one_way`](crate::scenario::Job::one_way) the writer records each frame's
//!   one-way latency instead (from its publish's start or its wake's return to the
//!   reader's re-checked copy, on the shared monotonic clock), as an ao-loop stage
//!   measures its input hop.
//! - MVM: timed by the compute process itself, in alternation with the pipeline
//!   ([`crate::cases::mvm`]).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use harness_sys::clock::{monotonic_ns, sleep_then_spin_until, sleep_until};
use harness_sys::flock::LockFile;
use harness_sys::futex;
use harness_sys::shm::ShmRegion;
use hdrhistogram::Histogram;

use crate::cases::PageBuf;
use crate::error::{Context, Result, bail};
use crate::measure::{Measured, timed_loop};
use crate::scenario::{OneWay, Wait};
use crate::spawn::ChildSpec;

/// Offsets of the control words in the pingpong floor region, one cache line each.
const SEQ: usize = 0;
const ACK: usize = 64;
const READY: usize = 128;
const STOP: usize = 192;
const COUNT: usize = 256;
const TIME: usize = 320;
/// When the reader held the payload (monotonic ns), for one-way floors.
const ARRIVED: usize = 384;
/// The payload starts on its own page.
pub const PAYLOAD: usize = 4096;

/// Size of a [`BareStream`] region for `payload` bytes of frame.
pub fn bare_region_len(payload: usize) -> usize {
    PAYLOAD + payload
}

/// The least any writer and reader of the format do, over a bare region and lock file:
/// the floor of every publication and snapshot.
pub struct BareStream<'a> {
    region: &'a ShmRegion,
    lock: LockFile,
}

impl<'a> BareStream<'a> {
    /// Over `region` (laid out as the pingpong region: control words, then the payload
    /// at [`PAYLOAD`]) and the lock file `lock`.
    pub fn new(region: &'a ShmRegion, lock: &std::path::Path) -> Result<Self> {
        Ok(BareStream {
            region,
            lock: LockFile::open(lock, false)?,
        })
    }

    /// Publishes `src`: `flock`, odd sequence, copy, write time, count, even sequence,
    /// unlock.
    pub fn publish(&self, src: &[u8]) -> Result<()> {
        let seq = self.region.atomic_u32(SEQ);
        self.lock.lock()?;
        let s = seq.load(Ordering::Relaxed);
        // Odd: a write is in progress. Release fence: odd before any payload byte.
        seq.store(s | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.region.copy_in(PAYLOAD, src);
        stamp(self.region.atomic_u64(TIME));
        self.region
            .atomic_u64(COUNT)
            .fetch_add(1, Ordering::Relaxed);
        seq.store((s | 1) + 1, Ordering::Release);
        self.lock.unlock()?;
        Ok(())
    }

    /// Copies the published frame into `dst`: sequence, copy, re-check.
    pub fn snapshot(&self, dst: &mut [u8]) -> Result<()> {
        let seq = self.region.atomic_u32(SEQ);
        let s = seq.load(Ordering::Acquire);
        self.region.copy_out(PAYLOAD, dst);
        // Acquire fence: the copy completes before the re-check.
        fence(Ordering::Acquire);
        if s & 1 == 1 || seq.load(Ordering::Relaxed) != s {
            bail!("the floor's frame changed under its reader");
        }
        Ok(())
    }

    /// The sequence word (the floor's futex word).
    pub fn word(&self) -> &AtomicU32 {
        self.region.atomic_u32(SEQ)
    }
}

/// Stores the write time, as every publication of the format does (the pyshmem header's
/// write time: seconds since the epoch, an f64).
pub fn stamp(word: &AtomicU64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    word.store(now.to_bits(), Ordering::Relaxed);
}

/// Roundtrip floor: a bare publish, then a bare snapshot, per iteration.
pub fn roundtrip(spec: &ChildSpec) -> Result<(Measured, Histogram<u64>)> {
    let n = spec.job.payload_bytes();
    let region = ShmRegion::open(&spec.names.region, bare_region_len(n))
        .context("opening the floor region")?;
    region.prefault();
    let bare = BareStream::new(&region, &spec.names.lock)?;
    let src = PageBuf::<u8>::new(n);
    let mut dst = PageBuf::<u8>::new(n);
    let r = timed_loop(&spec.job.timing, 0.0, |_| {
        bare.publish(src.as_slice())?;
        bare.snapshot(dst.as_mut_slice())
    })?;
    Ok(r)
}

/// Whether a floor waiter in its `rounds`-th pause sleeps in `FUTEX_WAIT` (else it
/// spins): never for spin, after the library's own spin budget for adaptive, at once for
/// park. The same mechanism as the library's wait of that name.
fn sleeps(wait: Option<Wait>, rounds: u32) -> bool {
    match wait {
        Some(Wait::Park) => true,
        Some(Wait::Adaptive) => rounds >= shmstream::ADAPTIVE_SPIN_ROUNDS,
        _ => false,
    }
}

/// Waits until `pred(word)`, spinning or sleeping in `FUTEX_WAIT` as [`sleeps`] says. The
/// clock is read only every 1024 spins so that it does not slow the spin.
fn wait_until(
    word: &AtomicU32,
    pred: impl Fn(u32) -> bool,
    wait: Option<Wait>,
    timeout: Duration,
) -> Result<u32> {
    let mut deadline: Option<Instant> = None;
    let mut rounds = 0u32;
    loop {
        let v = word.load(Ordering::Acquire);
        if pred(v) {
            return Ok(v);
        }
        let sleep = sleeps(wait, rounds);
        if sleep {
            futex::wait(word, v, Duration::from_millis(50));
        } else {
            std::hint::spin_loop();
        }
        rounds = rounds.saturating_add(1);
        if sleep || rounds.is_multiple_of(1024) {
            let now = Instant::now();
            if now > *deadline.get_or_insert(now + timeout) {
                bail!("floor peer did not answer within {timeout:?}");
            }
        }
    }
}

/// Pingpong floor, writer side (measures).
pub fn ping_writer(spec: &ChildSpec) -> Result<(Measured, Histogram<u64>)> {
    let job = &spec.job;
    let n = job.payload_bytes();
    let region = ShmRegion::open(&spec.names.region, bare_region_len(n))
        .context("opening the floor region")?;
    let bare = BareStream::new(&region, &spec.names.lock)?;
    let wait = job.wait;
    let notify = wait.is_some_and(Wait::notifies);
    let to = Duration::from_secs_f64(spec.wait_timeout_s);
    let (seq, ack) = (bare.word(), region.atomic_u32(ACK));
    // Page-aligned, as ours' buffers and the region's payload: every run copies at the
    // same relative alignment (see `PageBuf`).
    let mut src = PageBuf::<u8>::new(n);
    src.as_mut_slice().fill(1);
    let src = src.as_slice();
    region.prefault();
    wait_until(region.atomic_u32(READY), |v| v != 0, None, to)?;
    let mut generation = 0u32;
    let arrived = region.atomic_u64(ARRIVED);
    let mut one_way = Vec::new();
    // One way, the writer paces itself as the hop's sender does (see `OneWay`) rather than
    // spinning the gap: a sender that spun a whole period is preempted by the receiver
    // it wakes on a shared core, and a stage woken by its own input is not.
    let gap_us = if job.one_way.is_some() {
        0.0
    } else {
        job.gap_us
    };
    let mut next_slot = monotonic_ns();
    let (m, h) = timed_loop(&job.timing, gap_us, |_| {
        generation += 1;
        if let Some(from) = job.one_way {
            next_slot += (job.gap_us * 1e3) as u64;
            match from {
                OneWay::Publish => sleep_then_spin_until(next_slot),
                OneWay::Published => sleep_until(next_slot),
            }
        }
        let mut sent = monotonic_ns();
        // The only writer: publication `generation` leaves the sequence at 2·generation,
        // which the reader waits for.
        bare.publish(src)?;
        if notify {
            futex::wake_all(seq);
        }
        if job.one_way == Some(OneWay::Published) {
            sent = monotonic_ns();
        }
        wait_until(ack, |v| v == generation, wait, to)?;
        if job.one_way.is_some() {
            one_way.push(arrived.load(Ordering::Relaxed).saturating_sub(sent));
        }
        Ok(())
    })?;
    region.atomic_u32(STOP).store(1, Ordering::Release);
    futex::wake_all(seq);
    if job.one_way.is_none() {
        return Ok((m, h));
    }
    let mut h = crate::hist::new();
    for &ns in one_way.iter().skip(m.warmup_iterations as usize) {
        h.saturating_record(ns);
    }
    Ok((m, h))
}

/// Pingpong floor, reader side.
pub fn ping_reader(spec: &ChildSpec) -> Result<()> {
    let job = &spec.job;
    let n = job.payload_bytes();
    let region = ShmRegion::open(&spec.names.region, bare_region_len(n))
        .context("opening the floor region")?;
    let wait = job.wait;
    let notify = wait.is_some_and(Wait::notifies);
    let to = Duration::from_secs_f64(spec.wait_timeout_s);
    let (seq, ack, stop) = (
        region.atomic_u32(SEQ),
        region.atomic_u32(ACK),
        region.atomic_u32(STOP),
    );
    let mut dst = PageBuf::<u8>::new(n);
    let dst = dst.as_mut_slice();
    dst.fill(2);
    region.atomic_u32(READY).store(1, Ordering::Release);
    let mut generation = 0u32;
    loop {
        generation += 1;
        let want = 2 * generation;
        let mut deadline: Option<Instant> = None;
        let mut rounds = 0u32;
        loop {
            let s = seq.load(Ordering::Acquire);
            if s == want {
                region.copy_out(PAYLOAD, dst);
                // Acquire fence: the copy is complete before the re-check.
                fence(Ordering::Acquire);
                if seq.load(Ordering::Relaxed) == s {
                    // Before the acknowledgement, which publishes it to the writer.
                    region
                        .atomic_u64(ARRIVED)
                        .store(monotonic_ns(), Ordering::Relaxed);
                    break;
                }
                continue;
            }
            if stop.load(Ordering::Acquire) != 0 {
                std::hint::black_box(&*dst);
                return Ok(());
            }
            let sleep = sleeps(wait, rounds);
            if sleep {
                futex::wait(seq, s, Duration::from_millis(50));
            } else {
                std::hint::spin_loop();
            }
            rounds = rounds.saturating_add(1);
            if sleep || rounds.is_multiple_of(1024) {
                let now = Instant::now();
                if now > *deadline.get_or_insert(now + to) {
                    bail!("floor writer went silent for {to:?}");
                }
            }
        }
        ack.store(generation, Ordering::Release);
        if notify {
            futex::wake_all(ack);
        }
    }
}

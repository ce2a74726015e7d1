//! The floors: the same loops as the cases, over plain memory, measured in the same run
//! on the same cores (the machines are shared and noisy; only ratios from one run are
//! comparable).
//!
//! - roundtrip: a [`BareStream`] publish then snapshot: what the format makes every
//!   implementation do (the `flock` pair, the odd/even sequence, the copy, the write time,
//!   the count; then sequence, copy out, re-check; the C floor `roundtrip.c`, "reused
//!   dst", plus the format's bracket), timed by ours' process in alternation with ours
//!   ([`crate::cases::roundtrip`]), on the stream's own payload pages ([`stream_pages`]).
//! - pingpong: the C floor `pingpong_payload.c` with the flock pair: the writer takes
//!   `flock`, bumps a bare shared sequence word to odd, copies the payload in, publishes
//!   the even value, wakes the reader (notify forms; before the unlock, as ours), unlocks;
//!   the reader copies out, re-checks the word and stores an ack word; the writer also
//!   stamps the write time, as the format does. Each wait form waits by the same
//!   mechanism as the library's: `spin` spins; `park` (`futex`) sleeps in `FUTEX_WAIT` at
//!   once, woken by `FUTEX_WAKE` (the C `futex rtt` floor with a payload; the writer idles
//!   `gap_us` before each round trip, as in the case);
//!   `adaptive` spins for [`shmstream::ADAPTIVE_SPIN`], then sleeps. With
//!   [`Job::one_way`](crate::scenario::Job::one_way) the writer records each frame's
//!   one-way latency instead (from its publish's start or its wake's return to the
//!   reader's re-checked copy, on the shared monotonic clock), as an ao-loop stage
//!   measures its input hop, with the hop's
//!   [`Job::floor_slots`](crate::scenario::Job::floor_slots) and
//!   [`Job::wake_ahead_ns`](crate::scenario::Job::wake_ahead_ns). The CPU ping-pong case
//!   runs [`FloorPing`] and [`FloorEcho`] in its own two processes, alternating with ours
//!   ([`crate::cases::pingpong`]), on the data stream's own payload pages
//!   ([`stream_pages`]); the ping-pong roles here serve the AO loop's hop floors.
//! - MVM: timed by the compute process itself, in alternation with the pipeline
//!   ([`crate::cases::mvm`]).
//!
//! The bare publication and its re-checked copy are [`harness_sys::bare`]'s, which the
//! harness's examples share.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use harness_sys::bare::{ACK, ARRIVED, LEAVE, READY, SEQ, STOP, region_len};
pub use harness_sys::bare::{BareStream, Frames};
use harness_sys::clock::{monotonic_ns, sleep_then_spin_until, sleep_until};
use harness_sys::futex;
use harness_sys::shm::ShmRegion;
use hdrhistogram::Histogram;
use shmstream::Element;
use shmstream::spin::Spin;

use crate::cases::PageBuf;
use crate::error::{Context, Result, bail};
use crate::measure::{Measured, timed_loop};
use crate::scenario::{OneWay, Wait};
use crate::spawn::ChildSpec;

/// Size of a [`BareStream`] region for `job`'s frames and floor slots
/// ([`crate::scenario::Job::floor_slots`]).
pub fn bare_region_len(job: &crate::scenario::Job) -> usize {
    region_len(job.payload_bytes(), job.floor_slots)
}

/// Size of the region of a floor timed beside ours whose frames lie on the stream's own
/// payload pages ([`stream_pages`]): its control words alone (a region sized for the frames
/// too took another 400 MB of `/dev/shm` at 10000², unused).
pub fn paired_region_len() -> usize {
    region_len(0, 1)
}

/// The payload pages of stream `name` (`bytes` long), mapped again for a floor that copies
/// into and out of the same physical memory as ours ([`Frames::of_stream`]): at 16 MB, which
/// pages a copy lands on moved it by up to 12% here, same `memcpy` on both sides. The floor
/// writes there outside the stream's seqlock, so only while ours is idle and nobody else
/// reads the stream (the harness's own streams, in the cases' alternation).
pub fn stream_pages(name: &str, bytes: usize) -> Result<ShmRegion> {
    ShmRegion::open(&shmstream::name::segment_id(name), bytes)
        .with_context(|| format!("mapping the payload pages of stream {name}"))
}

/// The floor of a stage publishing its output, for a writer that holds the stream for the
/// run: a [held](BareStream::held) bare publication into the next of as many slots as the
/// stream keeps frames (its history ring, or its one payload), on a region of its own, and
/// the wake where the stream notifies. Nobody reads it: the floor of a publication alone.
pub struct BareOutput {
    region: ShmRegion,
    turns: Turns,
}

impl BareOutput {
    /// The floor over region `name` for `slots` frames of `bytes` (prefaulted), which
    /// another process created (`region_len(bytes, slots)` long) and removes: a process
    /// killed mid-run leaves nothing behind.
    pub fn open(name: &str, bytes: usize, slots: usize, notify: bool) -> Result<Self> {
        let region = ShmRegion::open(name, region_len(bytes, slots))
            .with_context(|| format!("opening the floor region {name}"))?;
        Ok(Self::over(region, slots, notify))
    }

    fn over(region: ShmRegion, slots: usize, notify: bool) -> Self {
        region.prefault();
        BareOutput {
            region,
            turns: Turns::new(None, notify, Duration::ZERO, slots),
        }
    }

    /// Publishes `src` as the next frame (and wakes, for a notify stream); returns the
    /// nanoseconds it took.
    pub fn publish<T: Element>(&mut self, src: &[T]) -> Result<u64> {
        let t0 = monotonic_ns();
        self.turns.publish(&BareStream::held(&self.region), src)?;
        Ok(monotonic_ns().saturating_sub(t0))
    }
}

/// The longest one park of a floor waiter lasts before it looks at its word again.
const MAX_PARK: Duration = Duration::from_millis(50);

/// A floor waiter's pauses, by the same mechanism as the library's wait of that name:
/// spin never sleeps; adaptive spins for the library's own spin time
/// ([`shmstream::ADAPTIVE_SPIN`]), then sleeps in `FUTEX_WAIT`; park sleeps at once. Made
/// at the first pause, as the library's waiter is. A spin pauses as the library's busy
/// waits do ([`shmstream::spin::Spin`], whose breaks keep the hypervisor from stopping it),
/// and reads the clock only at those breaks, as the library's waiter does.
struct Pauses {
    /// Parks (park, or adaptive once its spin ended).
    sleep: bool,
    /// Adaptive: when the spin ends.
    spin_until: Option<Instant>,
    /// Set at the first clock read.
    deadline: Option<Instant>,
    timeout: Duration,
    spin: Spin,
}

impl Pauses {
    fn new(wait: Option<Wait>, timeout: Duration) -> Pauses {
        // Only an adaptive wait reads the clock at its start (as the library's does).
        let started = (wait == Some(Wait::Adaptive)).then(Instant::now);
        Pauses {
            sleep: wait == Some(Wait::Park),
            spin_until: started.map(|t| t + shmstream::ADAPTIVE_SPIN),
            deadline: started.map(|t| t + timeout),
            timeout,
            spin: Spin::new(),
        }
    }

    /// One pause while `word` still holds `v`; `false` once the deadline has passed.
    fn pause(&mut self, word: &AtomicU32, v: u32) -> bool {
        self.pause_by(Instant::now, |left| futex::wait(word, v, left))
    }

    /// [`Self::pause`], with the clock read and the park it makes given. A park reads the
    /// clock before it sleeps, for what is left of the deadline, as the library's does, and
    /// not after the wake: that read would lie between a woken waiter and its word, where
    /// the library's waiter has none.
    #[inline(always)]
    fn pause_by(&mut self, now: impl FnOnce() -> Instant, park: impl FnOnce(Duration)) -> bool {
        if self.sleep {
            let now = now();
            let deadline = *self.deadline.get_or_insert(now + self.timeout);
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return false;
            }
            park(left.min(MAX_PARK));
            return true;
        }
        let Some(now) = self.spin.pause() else {
            return true;
        };
        if now > *self.deadline.get_or_insert(now + self.timeout) {
            return false;
        }
        self.sleep |= self.spin_until.is_some_and(|end| now >= end);
        true
    }
}

/// Waits until `pred(word)`, pausing as [`Pauses`] says.
fn wait_until(
    word: &AtomicU32,
    pred: impl Fn(u32) -> bool,
    wait: Option<Wait>,
    timeout: Duration,
) -> Result<u32> {
    let mut pauses: Option<Pauses> = None;
    loop {
        let v = word.load(Ordering::Acquire);
        if pred(v) {
            return Ok(v);
        }
        if !pauses
            .get_or_insert_with(|| Pauses::new(wait, timeout))
            .pause(word, v)
        {
            bail!("floor peer did not answer within {timeout:?}");
        }
    }
}

/// The ping-pong floor's writer waits for its reader's ready mark parked, not spinning: on
/// a core it shares with the reader under SCHED_FIFO (an AO loop's same-core hop), a
/// spinning writer kept the reader, of the same priority, from ever running to set it (a
/// 300 s hang, then the case's timeout).
fn wait_for_reader(region: &ShmRegion, timeout: Duration) -> Result<()> {
    wait_until(
        region.atomic_u32(READY),
        |v| v != 0,
        Some(Wait::Park),
        timeout,
    )
    .map(|_| ())
}

/// The reader's ready mark, and the wake-up of a writer parked for it.
fn say_ready(region: &ShmRegion) {
    let ready = region.atomic_u32(READY);
    ready.store(1, Ordering::Release);
    futex::wake_all(ready);
}

/// Pingpong floor, writer side (measures).
pub fn ping_writer(spec: &ChildSpec) -> Result<(Measured, Histogram<u64>)> {
    let job = &spec.job;
    let region = ShmRegion::open(&spec.names.region, bare_region_len(job))
        .context("opening the floor region")?;
    let mut ping = FloorPing::new(&region, spec)?;
    let mut src = PageBuf::<u8>::new(job.payload_bytes());
    src.as_mut_slice().fill(1);
    let src = src.as_slice();
    wait_for_reader(&region, ping.turns.to)?;
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
        if let Some(from) = job.one_way {
            next_slot += (job.gap_us * 1e3) as u64;
            match from {
                OneWay::Publish => sleep_then_spin_until(next_slot),
                OneWay::Published => sleep_until(next_slot),
            }
        }
        let mut sent = monotonic_ns();
        ping.publish(src)?;
        if job.one_way == Some(OneWay::Published) {
            sent = monotonic_ns();
        }
        ping.wait_ack()?;
        if job.one_way.is_some() {
            one_way.push(ping.arrived().saturating_sub(sent));
        }
        Ok(())
    })?;
    ping.stop();
    if job.one_way.is_none() {
        return Ok((m, h));
    }
    let mut h = crate::hist::new();
    for &ns in one_way.iter().skip(m.warmup_iterations as usize) {
        h.saturating_record(ns);
    }
    Ok((m, h))
}

/// Name of the thread keeping a floor reader's core busy
/// ([`crate::scenario::Job::busy_reader_core`]).
const BUSY_CORE_THREAD: &str = "floor-busy-core";

/// Pingpong floor, reader side.
pub fn ping_reader(spec: &ChildSpec) -> Result<()> {
    let job = &spec.job;
    if job.busy_reader_core && job.rt_priority.is_some() {
        // A spinning thread at the reader's SCHED_FIFO priority would never let it run.
        bail!(
            "job {}: a busy reader core needs the fair scheduler, but the job runs under SCHED_FIFO",
            job.case
        );
    }
    let region = ShmRegion::open(&spec.names.region, bare_region_len(job))
        .context("opening the floor region")?;
    let mut echo = FloorEcho::new(&region, spec);
    let mut dst = PageBuf::<u8>::new(job.payload_bytes());
    let dst = dst.as_mut_slice();
    dst.fill(2);
    let done = std::sync::atomic::AtomicBool::new(false);
    let spinning = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        if job.busy_reader_core {
            // Spawned threads keep the reader's core and scheduling: each frame's wake-up
            // preempts this one, as a stage's preempts the stage computing beside it.
            std::thread::Builder::new()
                .name(BUSY_CORE_THREAD.into())
                .spawn_scoped(s, || {
                    spinning.store(true, Ordering::Release);
                    let mut spin = Spin::new();
                    while !done.load(Ordering::Relaxed) {
                        spin.pause();
                    }
                })
                .context("starting the thread that keeps the reader's core busy")?;
            // Ready only once the core is busy: a new thread first runs when the scheduler
            // gets to it (on the core it shares with this one), and until then neither
            // spins nor bears its name.
            while !spinning.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
        }
        say_ready(&region);
        let served = loop {
            match echo.serve(dst) {
                Ok(Echo::Frame) => {}
                other => break other.map(drop),
            }
        };
        done.store(true, Ordering::Relaxed);
        std::hint::black_box(dst);
        served
    })
}

/// What [`FloorEcho::serve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Copied and acknowledged a frame.
    Frame,
    /// Copied and acknowledged a frame the writer marked as the last before ours.
    Leave,
    /// The writer said stop.
    Stop,
}

/// What both halves of the ping-pong floor take from the job and keep in step: the wait
/// form, the payload slots frames rotate over, and the frame count.
struct Turns {
    wait: Option<Wait>,
    notify: bool,
    to: Duration,
    /// Payload slots the writer rotates over ([`crate::scenario::Job::floor_slots`]).
    slots: u32,
    generation: u32,
}

impl Turns {
    fn new(wait: Option<Wait>, notify: bool, to: Duration, slots: usize) -> Self {
        Turns {
            wait,
            notify,
            to,
            slots: slots.max(1) as u32,
            generation: 0,
        }
    }

    fn of(spec: &ChildSpec) -> Self {
        let job = &spec.job;
        Turns::new(
            job.wait,
            job.wait.is_some_and(Wait::notifies),
            Duration::from_secs_f64(spec.wait_timeout_s),
            job.floor_slots,
        )
    }

    /// Moves to the next frame: its generation and the payload slot it goes through (slot
    /// 0 first, then each in turn).
    fn advance(&mut self) -> (u32, usize) {
        self.generation += 1;
        (self.generation, self.slot_of(self.generation))
    }

    /// The payload slot publication `generation` (1, 2, …) goes through.
    fn slot_of(&self, generation: u32) -> usize {
        ((generation - 1) % self.slots) as usize
    }

    /// Publishes `src` through `bare` as the next frame, into its slot, and wakes the
    /// reader (notify forms) before the unlock, as ours wakes inside its bracket's lock
    /// ([`BareStream::publish_waking`]). The only writer: publication `generation` leaves
    /// the sequence at 2·generation, which the reader waits for.
    fn publish<T: Element>(&mut self, bare: &BareStream<'_>, src: &[T]) -> Result<()> {
        let (_, slot) = self.advance();
        bare.publish_waking(slot, None, src, || self.wake(bare))?;
        Ok(())
    }

    /// [`Self::publish`] as publication `generation` (later than the last).
    fn publish_as<T: Element>(
        &mut self,
        bare: &BareStream<'_>,
        generation: u32,
        src: &[T],
    ) -> Result<()> {
        self.generation = generation;
        let slot = self.slot_of(generation);
        bare.publish_waking(slot, Some(generation), src, || self.wake(bare))?;
        Ok(())
    }

    /// Wakes the reader (notify forms).
    fn wake(&self, bare: &BareStream<'_>) {
        if self.notify {
            futex::wake_all(bare.word());
        }
    }
}

/// The ping-pong floor's reader: waits for each bare publication as the job's wait form
/// says, copies it out into the caller's buffer (the one ours reads into, where it runs in
/// ours' reader), re-checks, stamps its arrival (one-way floors) and acknowledges.
pub struct FloorEcho<'a> {
    region: &'a ShmRegion,
    frames: Frames<'a>,
    /// The job is one way ([`crate::scenario::Job::one_way`]): its writer reads each
    /// frame's arrival ([`FloorPing::arrived`]). A round trip, as ours, reads no clock.
    one_way: bool,
    /// (period, margin) ns of a reader that wakes ahead of paced frames
    /// ([`crate::scenario::Job::wake_ahead_ns`]).
    ahead: Option<(u64, u64)>,
    /// Earliest `arrival − generation · period` seen, ns: when frames are due.
    phase: Option<u64>,
    turns: Turns,
}

impl<'a> FloorEcho<'a> {
    /// The reader of `spec`'s floor over `region`.
    pub fn new(region: &'a ShmRegion, spec: &ChildSpec) -> Self {
        let job = &spec.job;
        FloorEcho {
            region,
            frames: Frames::own(region),
            one_way: job.one_way.is_some(),
            ahead: job
                .wake_ahead_ns
                .map(|margin| ((job.gap_us * 1e3) as u64, margin)),
            phase: None,
            turns: Turns::of(spec),
        }
    }

    /// The same, with its frames on `frames` (one slot).
    pub fn with_frames(self, frames: Frames<'a>) -> Self {
        FloorEcho { frames, ..self }
    }

    /// Serves the next frame into `dst` (the frame's size), or learns that the writer
    /// stopped.
    pub fn serve<T: Element>(&mut self, dst: &mut [T]) -> Result<Echo> {
        let (generation, _) = self.turns.advance();
        self.serve_from(generation, dst)
    }

    /// The generation of the frame served last (0 before the first).
    pub fn served(&self) -> u32 {
        self.turns.generation
    }

    /// Serves the newest frame of generation `from` or later into `dst`, or learns that
    /// the writer stopped: for a writer that publishes on its own schedule, not waiting
    /// for each acknowledgement (the AO loop's camera hop between frames). A ping-pong
    /// writer waits for each, so there it is [`Self::serve`]'s next frame.
    pub fn serve_from<T: Element>(&mut self, from: u32, dst: &mut [T]) -> Result<Echo> {
        let (seq, ack, stop) = (
            self.region.atomic_u32(SEQ),
            self.region.atomic_u32(ACK),
            self.region.atomic_u32(STOP),
        );
        // Generations start at 1 (publication k leaves the sequence at 2·k).
        let from = from.max(1);
        let want = 2 * from;
        let ahead = self.ahead.zip(self.phase);
        if let Some(((period, margin), phase)) = ahead {
            // Asleep until `margin` before the frame is due, then spinning for it.
            let due = phase + u64::from(from) * period;
            sleep_until(due.saturating_sub(margin));
        }
        let mut pauses: Option<Pauses> = None;
        let generation = loop {
            let s = seq.load(Ordering::Acquire);
            if s >= want && s & 1 == 0 {
                let generation = s / 2;
                let slot = self.turns.slot_of(generation);
                if self.frames.read_published(seq, s, slot, dst).is_some() {
                    self.stamp_arrival(generation);
                    break generation;
                }
                continue;
            }
            if stop.load(Ordering::Acquire) != 0 {
                return Ok(Echo::Stop);
            }
            if !pauses
                .get_or_insert_with(|| Pauses::new(self.turns.wait, self.turns.to))
                .pause(seq, s)
            {
                bail!("floor writer went silent for {:?}", self.turns.to);
            }
        };
        self.turns.generation = generation;
        // The writer marks a frame as the last before ours before publishing it, so the
        // sequence's acquire above makes the mark visible. A load, not a swap: the floor's
        // round trip must not pay a locked instruction that ours does not.
        let mark = self.region.atomic_u32(LEAVE);
        let leave = mark.load(Ordering::Relaxed) != 0;
        if leave {
            mark.store(0, Ordering::Relaxed);
        }
        ack.store(generation, Ordering::Release);
        if self.turns.notify {
            futex::wake_all(ack);
        }
        Ok(if leave { Echo::Leave } else { Echo::Frame })
    }

    /// Stamps when frame `generation` arrived, for a one-way writer (before the
    /// acknowledgement, which publishes it), and learns when frames are due for a reader
    /// that wakes ahead of them; a round trip reads no clock here.
    fn stamp_arrival(&mut self, generation: u32) {
        if !self.one_way && self.ahead.is_none() {
            return;
        }
        let now = monotonic_ns();
        if self.one_way {
            self.region
                .atomic_u64(ARRIVED)
                .store(now, Ordering::Relaxed);
        }
        if let Some((period, _)) = self.ahead {
            let p = now.saturating_sub(u64::from(generation) * period);
            self.phase = Some(self.phase.map_or(p, |q| q.min(p)));
        }
    }
}

/// The ping-pong floor's writer, one round trip at a time: a bare publication of the
/// caller's buffer (the one ours writes from, where it runs in ours' writer), the wake
/// (notify forms), the wait for the reader's acknowledgement.
pub struct FloorPing<'a> {
    bare: BareStream<'a>,
    turns: Turns,
}

impl<'a> FloorPing<'a> {
    /// The writer of `spec`'s floor over `region` (prefaulted here).
    pub fn new(region: &'a ShmRegion, spec: &ChildSpec) -> Result<Self> {
        let job = &spec.job;
        region.prefault();
        // A hop's sender (one way) holds its output stream's write lock for the run, as
        // every AO stage does: its floor takes no flock pair either.
        let bare = if job.one_way.is_some() {
            BareStream::held(region)
        } else {
            BareStream::new(region, &spec.names.lock)?
        };
        Ok(FloorPing {
            bare,
            turns: Turns::of(spec),
        })
    }

    /// The same, with its frames on `frames` (one slot).
    pub fn with_frames(self, frames: Frames<'a>) -> Self {
        FloorPing {
            bare: self.bare.with_frames(frames),
            ..self
        }
    }

    /// Publishes `src` as the next frame and wakes the reader.
    pub fn publish<T: Element>(&mut self, src: &[T]) -> Result<()> {
        self.turns.publish(&self.bare, src)
    }

    /// Publishes `src` as publication `generation` (later than the last one: a writer
    /// that numbers its frames by the loop's frame ids and skips some) and wakes the
    /// reader, which serves it as [`FloorEcho::serve_from`] any generation up to it.
    pub fn publish_as<T: Element>(&mut self, generation: u32, src: &[T]) -> Result<()> {
        if generation <= self.turns.generation {
            bail!(
                "floor publication {generation} after publication {}",
                self.turns.generation
            );
        }
        self.turns.publish_as(&self.bare, generation, src)
    }

    /// Waits for the reader's acknowledgement of the last frame.
    pub fn wait_ack(&self) -> Result<()> {
        let ack = self.bare.region().atomic_u32(ACK);
        let t = &self.turns;
        wait_until(ack, |v| v == t.generation, t.wait, t.to)?;
        Ok(())
    }

    /// Whether the reader acknowledged the last frame (without waiting).
    pub fn acked(&self) -> bool {
        let ack = self.bare.region().atomic_u32(ACK);
        ack.load(Ordering::Acquire) == self.turns.generation
    }

    /// One round trip: [`Self::publish`], then [`Self::wait_ack`].
    pub fn round_trip<T: Element>(&mut self, src: &[T]) -> Result<()> {
        self.publish(src)?;
        self.wait_ack()
    }

    /// Marks the next frame as the last before ours: the reader leaves after it.
    pub fn mark_leave(&self) {
        self.bare
            .region()
            .atomic_u32(LEAVE)
            .store(1, Ordering::Relaxed);
    }

    /// Tells the reader to stop.
    pub fn stop(&self) {
        self.bare
            .region()
            .atomic_u32(STOP)
            .store(1, Ordering::Release);
        futex::wake_all(self.bare.word());
    }

    /// When the reader last held a frame (monotonic ns), for one-way floors.
    pub fn arrived(&self) -> u64 {
        self.bare
            .region()
            .atomic_u64(ARRIVED)
            .load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;
    use crate::spawn::Role;
    use harness_sys::bare::COUNT;
    use harness_sys::flock::LockFile;
    use std::path::Path;

    fn spec(slots: usize, tag: &str) -> ChildSpec {
        let text = "name = \"t\"\n[[case]]\nkind = \"pingpong\"\nwait = \"spin\"\ndtype = \"uint8\"\nsizes = [[5000]]\n";
        let mut job = Scenario::parse(text).unwrap().jobs(false, None).remove(0);
        job.floor_slots = slots;
        ChildSpec::scratch(Role::FloorPingWriter, job, &format!("floor-{tag}"), 10.0)
    }

    /// A floor's lock file, removed from the scratch folder when dropped.
    struct ScratchLock(#[allow(dead_code)] LockFile, std::path::PathBuf);

    impl Drop for ScratchLock {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.1);
        }
    }

    /// The floor's region for `spec` and its lock file, as the harness makes them before
    /// the floor's processes start.
    fn region_and_lock(spec: &ChildSpec) -> (ShmRegion, ScratchLock) {
        let region = ShmRegion::create(&spec.names.region, bare_region_len(&spec.job)).unwrap();
        let lock = LockFile::open(&spec.names.lock, true).unwrap();
        (region, ScratchLock(lock, spec.names.lock.clone()))
    }

    /// A parked floor waiter reads the clock before it parks, for what is left of its
    /// deadline, and never after the wake (as the library's park: no clock read between a
    /// woken waiter and its look at the word); once the deadline has passed it stops
    /// without parking.
    #[test]
    fn a_parked_floor_waiter_reads_the_clock_before_it_parks_not_after_the_wake() {
        let timeout = Duration::from_secs(1);
        let t0 = Instant::now();
        let events = std::cell::RefCell::new(Vec::new());
        let mut pauses = Pauses::new(Some(Wait::Park), timeout);
        for at in [t0, t0 + timeout - Duration::from_millis(20)] {
            let clock = || {
                events.borrow_mut().push("clock");
                at
            };
            assert!(pauses.pause_by(clock, |left| events.borrow_mut().push(
                if left == MAX_PARK.min(t0 + timeout - at) {
                    "park"
                } else {
                    "park for the wrong time"
                }
            )));
        }
        assert_eq!(*events.borrow(), ["clock", "park", "clock", "park"]);
        assert!(
            !pauses.pause_by(|| t0 + timeout, |_| panic!("parked past its deadline")),
            "a pause past the deadline went on"
        );
    }

    /// A floor waiter whose peer never answers gives up at its timeout, whatever its wait
    /// (a spinning one checks its deadline at its clock reads, as a parked one before each
    /// park), and a word that already holds what it waits for ends the wait at once.
    #[test]
    fn a_floor_waiter_whose_peer_never_answers_gives_up_at_its_timeout() {
        let word = AtomicU32::new(7);
        let timeout = Duration::from_millis(20);
        for wait in [
            Some(Wait::Spin),
            Some(Wait::Adaptive),
            Some(Wait::Park),
            None,
        ] {
            let t0 = Instant::now();
            let err = wait_until(&word, |v| v == 8, wait, timeout).unwrap_err();
            assert!(t0.elapsed() >= timeout, "{wait:?}: {:?}", t0.elapsed());
            assert_eq!(
                err.to_string(),
                "floor peer did not answer within 20ms",
                "{wait:?}"
            );
            assert_eq!(wait_until(&word, |v| v == 7, wait, timeout).unwrap(), 7);
        }
    }

    /// An adaptive floor waiter spins for the library's spin time, then parks, as the
    /// library's adaptive wait does; a spinning one never parks.
    #[test]
    fn an_adaptive_floor_waiter_parks_once_its_spin_time_is_over() {
        let word = AtomicU32::new(7);
        let start = Instant::now();
        let mut adaptive = Pauses::new(Some(Wait::Adaptive), Duration::from_secs(10));
        while !adaptive.sleep {
            assert!(adaptive.pause(&word, 7));
            assert!(start.elapsed() < Duration::from_secs(5), "it never parked");
        }
        assert!(
            start.elapsed() >= shmstream::ADAPTIVE_SPIN,
            "{:?}",
            start.elapsed()
        );
        let mut spin = Pauses::new(Some(Wait::Spin), Duration::from_secs(10));
        let start = Instant::now();
        while start.elapsed() < 2 * shmstream::ADAPTIVE_SPIN {
            assert!(spin.pause(&word, 7) && !spin.sleep);
        }
    }

    /// Every frame reaches the reader whole, from the slot its generation names: the
    /// writer rotates over the slots and the reader follows (a reader looking in the wrong
    /// slot copies another frame's bytes).
    #[test]
    fn the_ping_pong_floor_delivers_each_frame_through_its_slot() {
        for slots in [1, 3] {
            let spec = spec(slots, &format!("slots{slots}"));
            let (region, _lock) = region_and_lock(&spec);
            let n = spec.job.payload_bytes();
            let received = std::thread::scope(|s| {
                let reader = s.spawn(|| {
                    let mut echo = FloorEcho::new(&region, &spec);
                    let mut dst = vec![0u8; n];
                    let mut firsts = Vec::new();
                    while echo.serve(&mut dst).unwrap() == Echo::Frame {
                        assert!(dst.iter().all(|&b| b == dst[0]), "a torn or mixed frame");
                        firsts.push(dst[0]);
                    }
                    firsts
                });
                let mut ping = FloorPing::new(&region, &spec).unwrap();
                for k in 1..=7u8 {
                    ping.round_trip(&vec![k; n]).unwrap();
                }
                ping.stop();
                reader.join().unwrap()
            });
            assert_eq!(received, (1..=7).collect::<Vec<u8>>(), "{slots} slot(s)");
        }
    }

    /// A floor set on a stream's payload pages ([`Frames::of_stream`], as the cases bound
    /// ours there) moves each frame through those pages, writer and reader alike: a side
    /// left on its own region would pass the other nothing.
    #[test]
    fn a_floor_on_a_streams_pages_moves_its_frames_through_them() {
        let spec = spec(1, "pages");
        let n = spec.job.payload_bytes();
        let (region, _lock) = region_and_lock(&spec);
        let pages = ShmRegion::create(&format!("{}-pages", spec.names.region), n).unwrap();
        let mut ping = FloorPing::new(&region, &spec)
            .unwrap()
            .with_frames(Frames::of_stream(&pages));
        let mut echo = FloorEcho::new(&region, &spec).with_frames(Frames::of_stream(&pages));
        ping.publish(&vec![7u8; n]).unwrap();
        let mut dst = vec![0u8; n];
        assert_eq!(echo.serve(&mut dst).unwrap(), Echo::Frame);
        assert!(dst.iter().all(|&b| b == 7), "the reader read another frame");
        let mut on_pages = vec![0u8; n];
        pages.copy_out(0, &mut on_pages);
        assert!(
            on_pages.iter().all(|&b| b == 7),
            "the frame did not go through the pages"
        );
    }

    /// A frame the writer marks as the last before ours reaches the reader as such, once:
    /// the mark is cleared with it, so the next frame is a plain one.
    #[test]
    fn a_frame_marked_as_the_last_before_ours_is_served_as_such_once() {
        let spec = spec(1, "leave");
        let (region, _lock) = region_and_lock(&spec);
        let n = spec.job.payload_bytes();
        let mut ping = FloorPing::new(&region, &spec).unwrap();
        let mut echo = FloorEcho::new(&region, &spec);
        let mut dst = vec![0u8; n];
        let mut served = Vec::new();
        for k in 1..=3u8 {
            if k == 2 {
                ping.mark_leave();
            }
            ping.publish(&vec![k; n]).unwrap();
            served.push(echo.serve(&mut dst).unwrap());
            ping.wait_ack().unwrap();
        }
        assert_eq!(served, [Echo::Frame, Echo::Leave, Echo::Frame]);
    }

    /// A reader that wakes ahead of paced frames learns when they are due from a frame's
    /// arrival (its generation's periods after the phase) and sleeps until its margin
    /// before the next is due, even where that frame came at once.
    #[test]
    fn a_reader_that_wakes_ahead_sleeps_until_its_margin_before_each_frame_is_due() {
        const PERIOD: u64 = 100_000_000;
        const MARGIN: u64 = 10_000_000;
        let mut spec = spec(1, "ahead");
        spec.job.gap_us = (PERIOD / 1000) as f64;
        spec.job.wake_ahead_ns = Some(MARGIN);
        let (region, _lock) = region_and_lock(&spec);
        let n = spec.job.payload_bytes();
        let mut ping = FloorPing::new(&region, &spec).unwrap();
        let mut echo = FloorEcho::new(&region, &spec);
        let mut dst = vec![0u8; n];
        let before = monotonic_ns();
        ping.publish_as(5, &vec![5u8; n]).unwrap();
        assert_eq!(echo.serve_from(5, &mut dst).unwrap(), Echo::Frame);
        let after = monotonic_ns();
        let phase = echo.phase.expect("no phase learned from the first frame");
        let first_due = |t: u64| t.saturating_sub(5 * PERIOD);
        assert!(
            (first_due(before)..=first_due(after)).contains(&phase),
            "phase {phase} for frame 5 arriving in {before}..={after}"
        );
        ping.wait_ack().unwrap();
        ping.publish_as(6, &vec![6u8; n]).unwrap();
        assert_eq!(echo.serve_from(6, &mut dst).unwrap(), Echo::Frame);
        let woke = monotonic_ns() - before;
        assert!(
            woke >= PERIOD - MARGIN,
            "it took frame 6 {woke} ns after frame 5: before its margin"
        );
        assert_eq!((dst[0], echo.served()), (6, 6));
    }

    /// Only a one-way floor's reader stamps each frame's arrival for its writer: a round
    /// trip, as ours, reads no clock between the copy and the acknowledgement.
    #[test]
    fn only_a_one_way_floors_reader_stamps_the_arrival() {
        for one_way in [None, Some(OneWay::Publish)] {
            let spec = {
                let mut s = spec(1, &format!("arrival-{}", one_way.is_some()));
                s.job.one_way = one_way;
                s
            };
            let (region, _lock) = region_and_lock(&spec);
            let n = spec.job.payload_bytes();
            let mut ping = FloorPing::new(&region, &spec).unwrap();
            let mut echo = FloorEcho::new(&region, &spec);
            let before = monotonic_ns();
            ping.publish(&vec![1u8; n]).unwrap();
            assert_eq!(echo.serve(&mut vec![0u8; n]).unwrap(), Echo::Frame);
            ping.wait_ack().unwrap();
            match one_way {
                None => assert_eq!(ping.arrived(), 0, "a round trip stamped its arrival"),
                Some(_) => assert!(ping.arrived() >= before, "no arrival stamped"),
            }
        }
    }

    /// A writer whose reader is late waits for it asleep (it would keep a reader sharing its
    /// core under SCHED_FIFO from running), does not go on before the reader says it is
    /// ready, and goes on once it has. Observed through the writer thread's state, not a
    /// duration: a spinning writer is never asleep, one that stopped waiting finishes.
    #[test]
    fn the_writer_sleeps_until_its_late_reader_is_ready() {
        const WRITER: &str = "floor-ready-wr";
        let spec = spec(1, "ready");
        let region = ShmRegion::create(&spec.names.region, bare_region_len(&spec.job)).unwrap();
        let passed = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let writer = std::thread::Builder::new()
                .name(WRITER.into())
                .spawn_scoped(s, || {
                    wait_for_reader(&region, Duration::from_secs(10)).unwrap();
                    passed.store(true, Ordering::Release);
                })
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while thread_state(WRITER) != Some('S') {
                assert!(
                    !passed.load(Ordering::Acquire),
                    "the writer went on before its reader was ready"
                );
                assert!(
                    Instant::now() < deadline,
                    "the writer never slept waiting for its reader (state {:?})",
                    thread_state(WRITER)
                );
                std::thread::yield_now();
            }
            assert!(
                !passed.load(Ordering::Acquire),
                "the writer went on before its reader was ready"
            );
            say_ready(&region);
            writer.join().unwrap();
        });
        assert!(passed.load(Ordering::Acquire));
    }

    /// A stage output's floor publishes each frame into the next of its slots, as the
    /// stream's history ring takes it, and counts it as a publication.
    #[test]
    fn a_bare_output_rotates_over_its_slots_and_counts_each_publication() {
        let name = format!("floor-output-{}", std::process::id());
        let n = 100;
        let _owner = ShmRegion::create(&name, region_len(n * 4, 3)).unwrap();
        let mut out = BareOutput::open(&name, n * 4, 3, true).unwrap();
        for k in 1..=4u8 {
            out.publish(&vec![f32::from(k); n]).unwrap();
        }
        let frames = Frames::own(&out.region);
        let mut dst = vec![0f32; n];
        for (slot, k) in [(0, 4.0), (1, 2.0), (2, 3.0)] {
            frames.copy_out(slot, &mut dst);
            assert!(dst.iter().all(|&v| v == k), "slot {slot}: {}", dst[0]);
        }
        assert_eq!(out.region.atomic_u64(COUNT).load(Ordering::Relaxed), 4);
        assert_eq!(out.region.atomic_u32(SEQ).load(Ordering::Relaxed), 8);
    }

    /// CPU time (ns) of the thread whose `/proc` directory is `dir` (the first field of its
    /// schedstat), `None` once it has exited.
    fn schedstat_cpu_ns(dir: &Path) -> Option<u64> {
        let stat = std::fs::read_to_string(dir.join("schedstat")).ok()?;
        stat.split_whitespace().next()?.parse().ok()
    }

    /// The `/proc` directory of this process's thread named `name`, if one runs.
    fn thread_dir(name: &str) -> Option<std::path::PathBuf> {
        std::fs::read_dir("/proc/self/task").unwrap().find_map(|t| {
            let dir = t.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            (comm.trim() == name).then_some(dir)
        })
    }

    /// CPU time (ns) of this process's thread named `name`, if one runs.
    fn thread_cpu_ns(name: &str) -> Option<u64> {
        schedstat_cpu_ns(&thread_dir(name)?)
    }

    /// The scheduler state of this process's thread named `name` (`R` running, `S`
    /// asleep, ...; the field after the command in its `stat`), if one runs.
    fn thread_state(name: &str) -> Option<char> {
        let stat = std::fs::read_to_string(thread_dir(name)?.join("stat")).ok()?;
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    /// With a busy reader core, a thread spins beside the parked reader for the whole run
    /// (its CPU time grows while the reader waits for a late frame), every frame still
    /// arrives, and the thread stops with the reader. Observed through the thread's CPU
    /// time, not over a set duration: on a loaded host it may get little of any one span.
    #[test]
    fn a_busy_reader_core_spins_beside_the_parked_reader_and_stops_with_it() {
        const SPIN_NS: u64 = 30_000_000;
        let mut spec = spec(1, "busy");
        spec.job.wait = Some(Wait::Park);
        spec.job.busy_reader_core = true;
        let (region, _lock) = region_and_lock(&spec);
        let n = spec.job.payload_bytes();
        std::thread::scope(|s| {
            let reader = s.spawn(|| ping_reader(&spec));
            let mut ping = FloorPing::new(&region, &spec).unwrap();
            ping.round_trip(&vec![1u8; n]).unwrap();
            let before = thread_cpu_ns(BUSY_CORE_THREAD).expect("no thread keeps the core busy");
            // The next frame comes once the thread has spun 30 ms beside the parked reader
            // (the case under test).
            // Whenever it is looked at, it is runnable (`R`, on a core or waiting for one): a
            // thread that slept between short runs would also gather the CPU time, slowly.
            let deadline = Instant::now() + Duration::from_secs(10);
            let (mut looks, mut runnable) = (0u32, 0u32);
            loop {
                let spent = thread_cpu_ns(BUSY_CORE_THREAD)
                    .expect("the busy-core thread stopped while its reader waited")
                    - before;
                if spent >= SPIN_NS {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the busy-core thread ran {} ms in 10 s of the reader's wait",
                    spent / 1_000_000
                );
                looks += 1;
                runnable += u32::from(thread_state(BUSY_CORE_THREAD) == Some('R'));
                std::thread::yield_now();
            }
            assert!(
                runnable * 10 >= looks * 9,
                "the busy-core thread was runnable at {runnable} of {looks} looks: it does not spin"
            );
            ping.round_trip(&vec![2u8; n]).unwrap();
            ping.stop();
            reader.join().unwrap().unwrap();
        });
        // Joined when the reader returned; the kernel reaps a thread just after its join
        // can return, so its entry may linger a moment.
        let gone = Instant::now() + Duration::from_secs(2);
        while thread_cpu_ns(BUSY_CORE_THREAD).is_some() && Instant::now() < gone {
            std::thread::yield_now();
        }
        assert_eq!(
            thread_cpu_ns(BUSY_CORE_THREAD),
            None,
            "the busy-core thread outlived its reader"
        );
    }

    /// Under SCHED_FIFO a spinning thread would starve the reader beside it: refused.
    #[test]
    fn a_busy_reader_core_under_sched_fifo_is_refused() {
        let mut spec = spec(1, "busy-fifo");
        spec.job.busy_reader_core = true;
        spec.job.rt_priority = Some(50);
        let err = ping_reader(&spec).unwrap_err().to_string();
        assert!(err.contains("SCHED_FIFO"), "{err}");
    }
}

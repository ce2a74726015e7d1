//! The loop's processes (camera, slopes, recon, slopes+recon merged), each pinned by
//! [`crate::spawn`]. They meet on notify streams; each frame carries the camera's frame
//! id through every stage. A stage reads its input through a history cursor, frame after
//! frame: a stage or camera stalled for a period (a preempted core) catches up instead of
//! skipping frames, and only a stage more than [`CATCH_UP`] frames behind skips to the
//! newest (those frames are reported missed). A stage keeps
//! `[frame id, input time, publish time, mid]` per frame in memory and writes the log once
//! at the end (`<prefix>.aolog`): no measurement traffic in the loop. The camera ends the
//! run with a frame stamped [`STOP`], which every stage forwards before it exits. In the
//! runs the floor is compared with, the camera and the stages also time the floor between
//! frames ([`between_frames`]).

use std::path::Path;
use std::time::Duration;

use harness_sys::bare::region_len;
use harness_sys::clock::{monotonic_ns, sleep_then_spin_until, sleep_until, spin_until};
use harness_sys::shm::ShmRegion;
use shmstream::{Cursor, Element, FrameInfo, Stream, WaitStrategy};

use super::between_frames;
use super::camera;
use super::geometry::Geometry;
use super::placement::Placement;
use super::recon::Recon;
use super::slopes::Slopes;
use crate::cases::wait_timeout;
use crate::error::{Context, Result};
use crate::floor::BareOutput;
use crate::scenario::Job;
use crate::spawn::{ChildSpec, Names};

/// Frame id of the frame that ends the run.
pub const STOP: u64 = u64::MAX;

/// One log entry: frame id, input (camera: deadline) time, publish time, and for the
/// slopes stage (split or merged) the time its slopes were done (else 0). Monotonic ns.
pub type Entry = [u64; 4];

/// Frames the frame and signals streams keep, so a stage can read every frame in order.
pub const HISTORY: usize = 16;

/// Frames a stage may fall behind and still catch up, by default ([`super::AoCase::catch_up`]);
/// further behind, it skips to the newest frame (a loop that cannot keep up drops frames
/// rather than queueing stale ones).
pub const CATCH_UP: u64 = 4;

/// The next input frame in order into `dst`, or the newest when the stage is more than
/// `catch_up` frames behind.
pub(super) fn next_input<T: Element>(
    cursor: &mut Cursor<'_>,
    dst: &mut [T],
    to: Option<Duration>,
    catch_up: u64,
    what: &str,
) -> Result<FrameInfo> {
    next_input_within(cursor, dst, to, catch_up)
        .with_context(|| format!("waiting for {what}"))?
        .with_context(|| format!("waiting for {what}: none came within {to:?}"))
}

/// [`next_input`], but `None` when nothing came within `to`.
fn next_input_within<T: Element>(
    cursor: &mut Cursor<'_>,
    dst: &mut [T],
    to: Option<Duration>,
    catch_up: u64,
) -> std::result::Result<Option<FrameInfo>, shmstream::Error> {
    loop {
        if cursor.lag() > catch_up {
            cursor.skip_to_recent(1);
        }
        match cursor.next_into_slice(dst, to) {
            Ok(info) => return Ok(Some(info)),
            Err(shmstream::Error::Timeout { .. }) => return Ok(None),
            // Lapped while stalled: resume at the newest frame.
            Err(shmstream::Error::Overrun { .. }) => {
                cursor.skip_to_recent(1);
            }
            Err(e) => return Err(e),
        }
    }
}

/// How the stage reading camera frames waits for them. The camera is paced, so frame `id`
/// comes at `phase + id · period` or later; the stage learns `phase` (the earliest
/// arrival seen, less its id's periods) and, with a wake-ahead
/// ([`super::AoCase::wake_ahead_ns`]), waits until `margin` before the next frame is
/// due (parked on the stream's futex, so a frame that comes sooner still wakes it), then
/// spins for it (yields, on a shared core) for up to a period before it parks again.
/// An idle core woken by a timer it set itself is awake when the frame comes; one woken by
/// the camera's `FUTEX_WAKE` pays that wake-up in the frame's latency (tens of µs here).
#[derive(Debug)]
pub(super) struct FrameWait {
    /// (period, margin) ns; the period unrounded, as the camera paces its frames
    /// ([`camera()`]), so that the frames due keep to the camera's at any rate.
    ahead: Option<(f64, u64)>,
    /// The strategy after the early wake, and otherwise.
    near: WaitStrategy,
    far: WaitStrategy,
    /// Earliest `arrival − id · period` seen, ns.
    phase: Option<u64>,
    last_id: u64,
    /// [`super::AoCase::catch_up`].
    catch_up: u64,
}

impl FrameWait {
    /// The wait of a stage of `ao` (`shared`: it shares its core with another stage).
    pub(super) fn new(ao: &super::AoCase, shared: bool, stream: &Stream) -> Self {
        let far = ao.stage_wait(shared).strategy();
        stream.set_wait_strategy(far);
        Self {
            ahead: ao.wake_ahead_ns(shared).map(|m| (1e9 / ao.rate_hz, m)),
            near: if shared {
                WaitStrategy::Yield
            } else {
                WaitStrategy::Spin
            },
            far,
            phase: None,
            last_id: 0,
            catch_up: ao.catch_up(),
        }
    }

    /// Whether it sleeps until shortly before each frame is due (armed by a timer).
    pub(super) fn wakes_ahead(&self) -> bool {
        self.ahead.is_some()
    }

    /// The next frame of `stream` through `cursor` into `dst`.
    pub(super) fn next<T: Element>(
        &mut self,
        stream: &Stream,
        cursor: &mut Cursor<'_>,
        dst: &mut [T],
        to: Option<Duration>,
    ) -> Result<FrameInfo> {
        let mut got = None;
        if let (Some((period, margin)), Some(due)) = (self.ahead, self.due()) {
            // Parked until the early wake (a frame that comes sooner wakes it, as without
            // the wake-ahead), then spinning.
            let early = due.saturating_sub(margin).saturating_sub(monotonic_ns());
            got = next_input_within(
                cursor,
                dst,
                Some(Duration::from_nanos(early)),
                self.catch_up,
            )
            .context("waiting for a frame")?;
            if got.is_none() {
                stream.set_wait_strategy(self.near);
                let spin = due.saturating_sub(monotonic_ns()) + period as u64;
                got =
                    next_input_within(cursor, dst, Some(Duration::from_nanos(spin)), self.catch_up)
                        .context("waiting for a frame")?;
                stream.set_wait_strategy(self.far);
            }
        }
        let info = match got {
            Some(info) => info,
            None => next_input(cursor, dst, to, self.catch_up, "a frame")?,
        };
        self.saw(info.frame_id, monotonic_ns());
        Ok(info)
    }

    /// When the frame after the last one read is due, ns: `phase + id · period`, once a
    /// phase is learned.
    fn due(&self) -> Option<u64> {
        let (period, _) = self.ahead?;
        Some(self.phase? + ((self.last_id + 1) as f64 * period) as u64)
    }

    /// Learns from frame `frame_id`, read at `now` (monotonic ns): with a wake-ahead, the
    /// phase becomes the earliest `now − id · period` yet (a frame read late, after a
    /// preemption or as it came late, never moves it later) and the next frame due is the
    /// one after `frame_id`. The end of the run ([`STOP`]) teaches nothing.
    fn saw(&mut self, frame_id: u64, now: u64) {
        if let Some((period, _)) = self.ahead
            && frame_id != STOP
        {
            let p = now.saturating_sub((frame_id as f64 * period) as u64);
            self.phase = Some(self.phase.map_or(p, |q| q.min(p)));
            self.last_id = frame_id;
        }
    }
}

/// Environment variable naming a stage that kills itself after 20 frames (tests): `camera`,
/// `slopes`, `recon`, or `floor` (the floor's compute process, [`paced_floor`]).
pub const KILL_ENV: &str = "HARNESS_AO_KILL_STAGE";

/// Writes a stage log as little-endian u64s.
pub fn write_log(path: &Path, log: &[Entry]) -> Result<()> {
    let bytes: Vec<u8> = log.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Reads a log written by [`write_log`] (or the Python peer).
pub fn read_log(path: &Path) -> Result<Vec<Entry>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes
        .chunks_exact(32)
        .map(|c| {
            let v = |i: usize| u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            [v(0), v(1), v(2), v(3)]
        })
        .collect())
}

pub(super) struct Streams {
    pub frame: Stream,
    pub signals: Stream,
    pub commands: Stream,
    pub ready: Stream,
}

pub(super) fn open(spec: &ChildSpec) -> Result<Streams> {
    let n = &spec.names;
    Ok(Streams {
        frame: Stream::open(&n.data).context("opening the frame stream")?,
        signals: Stream::open(&n.signals).context("opening the signals stream")?,
        commands: Stream::open(&n.commands).context("opening the commands stream")?,
        ready: Stream::open(&n.ctl).context("opening the ready stream")?,
    })
}

/// The geometry and `[case.ao]` of a stage's job. Not checked against the memory available
/// now: the job's streams already hold part of what the parent checked at the job's start.
pub(super) fn geometry(spec: &ChildSpec) -> Result<(Geometry, &super::AoCase)> {
    let ao = spec
        .job
        .ao
        .as_ref()
        .context("ao-loop job without [case.ao]")?;
    Ok((Geometry::derive(&spec.job.shape, ao)?, ao))
}

/// Says "ready" after every stage downstream did: stage `k` (counted from the DM end)
/// waits for `k - 1` ready marks, then writes `k`.
pub(super) fn mark_ready(ready: &Stream, k: u64, to: Option<Duration>) -> Result<()> {
    if k > 1 {
        ready
            .wait_for_count(k - 1 - 1, to)
            .context("waiting for the downstream stage")?;
    }
    ready.write_slice(&[k])?;
    Ok(())
}

pub(super) fn kill_me_after(role: &str, frames: usize) {
    if frames == 20 && std::env::var(KILL_ENV).is_ok_and(|v| v == role) {
        harness_sys::kill(std::process::id());
    }
}

/// Camera: waits until every stage is ready, then publishes frames 1.. at the rate.
pub fn camera(spec: &ChildSpec) -> Result<()> {
    let (g, ao) = geometry(spec)?;
    let s = open(spec)?;
    let to = wait_timeout(spec);
    let frames = camera::frames(&g);
    let place = Placement::of(&spec.job);
    s.ready
        .wait_for_count(place.stage_processes() - 1, to)
        .context("waiting for the stages to be ready")?;
    let period = 1e9 / ao.rate_hz;
    let n = place.frames(&spec.job);
    let mut log = Vec::with_capacity(n as usize);
    let regions = between_frames::open(spec, &g)?;
    let mut bare = match &regions {
        Some(r) => Some(between_frames::Sender::camera(r, spec, &g)?),
        None => None,
    };
    let guard = s.frame.lock(to).context("locking the frame stream")?;
    let t0 = monotonic_ns() + 1_000_000;
    for id in 1..=n {
        let deadline = t0 + (period * (id - 1) as f64) as u64;
        sleep_then_spin_until(deadline);
        // The publish instant is taken just before the write: a stage woken by it may
        // publish before this process runs again (it can be preempted after the wake), and
        // end-to-end latency must never come out negative. It includes the frame copy.
        let published = monotonic_ns();
        let frame = &frames[id as usize % frames.len()];
        guard.write_slice_frame(frame, id)?;
        log.push([id, deadline, published, 0]);
        kill_me_after("camera", id as usize);
        if let Some(bare) = bare.as_mut() {
            sleep_then_spin_until(deadline + (period / 2.0) as u64);
            bare.send(id, frame)?;
        }
    }
    // One more period before the stop frame, as between any two frames: a stage that
    // fell far behind skips to the newest, and a stop right behind the last frame would
    // hide it.
    sleep_then_spin_until(t0 + (period * n as f64) as u64);
    if let Some(bare) = bare {
        bare.finish(&spec.result_prefix)?;
    }
    guard.write_slice_frame(&frames[0], STOP)?;
    write_log(&spec.result_prefix.with_extension("aolog"), &log)
}

/// Slopes (or slopes+recon when `merged`): frame in, signals (or commands) out.
pub fn slopes(spec: &ChildSpec) -> Result<()> {
    let (g, ao) = geometry(spec)?;
    let s = open(spec)?;
    let to = wait_timeout(spec);
    let place = Placement::of(&spec.job);
    let mut wait = FrameWait::new(ao, place.shares_here(place.slopes), &s.frame);
    let mut stage = Slopes::new(&g);
    let mut recon = if place.merged {
        Some(Recon::new(
            &g,
            ao.threads,
            &place.recon_cores(),
            ao.gain,
            ao.leak,
        )?)
    } else {
        None
    };
    let out_stream = if place.merged {
        &s.commands
    } else {
        &s.signals
    };
    let guard = out_stream.lock(to).context("locking the output stream")?;
    let mut frame = vec![0u16; g.pixels()];
    let mut sig = vec![0.0f32; g.signals];
    let mut cmd = vec![0.0f32; g.actuators];
    let mut log = Vec::with_capacity(place.frames(&spec.job) as usize);
    let mut input = s.frame.cursor().context("a cursor on the frame stream")?;
    let regions = between_frames::open(spec, &g)?;
    let mut bare = regions
        .as_ref()
        .map(|r| between_frames::Receiver::camera(r, spec, &g));
    let mut bare_compute = between_frames::Compute::new(spec, &g, recon.as_ref())?;
    // The split form's: the slopes computed on the bare frame go on to the reconstructor.
    let mut bare_signals = match &regions {
        Some(r) => between_frames::Sender::signals(r, spec, &g)?,
        None => None,
    };
    // A stage that sleeps ahead of each frame, sharing its core with the reconstructor,
    // yields the core to it after publishing the signals (and its floor after the bare
    // ones), before it goes back to sleep: a sleep that arms a timer ending before the
    // next tick made the reconstructor's wake-up cost about 5 us more here
    // (scripts/probes/timer-handoff.c).
    let hand_over = place.split_on_one_core() && wait.wakes_ahead();
    mark_ready(&s.ready, place.stage_processes(), to)?;
    loop {
        let info = wait.next(&s.frame, &mut input, &mut frame, to)?;
        let t_in = monotonic_ns();
        if info.frame_id == STOP {
            match &recon {
                Some(_) => guard.write_slice_frame(&cmd, STOP)?,
                None => guard.write_slice_frame(&sig, STOP)?,
            }
            break;
        }
        stage.compute(&frame, &mut sig);
        let mid = monotonic_ns();
        match &mut recon {
            Some(r) => {
                r.step(&sig, &mut cmd);
                guard.write_slice_frame(&cmd, info.frame_id)?;
            }
            None => guard.write_slice_frame(&sig, info.frame_id)?,
        }
        log.push([info.frame_id, t_in, monotonic_ns(), mid]);
        if hand_over {
            std::thread::yield_now();
        }
        kill_me_after("slopes", log.len());
        if let Some(bare) = bare.as_mut()
            && let Some(taken) = bare.take(info.frame_id, &mut frame)?
            && let Some(c) = bare_compute.as_mut()
        {
            let slopes_ns = c.slopes(&frame, &mut stage);
            let (recon_ns, publish_ns) = match (recon.as_mut(), bare_signals.as_mut()) {
                (Some(r), _) => c.recon(r)?,
                (None, Some(tx)) => {
                    let sent = tx.send(taken, c.signals())?;
                    if hand_over {
                        std::thread::yield_now();
                    }
                    (0, sent)
                }
                (None, None) => (0, 0),
            };
            c.log([taken, slopes_ns, recon_ns, publish_ns]);
        }
    }
    if let Some(tx) = bare_signals {
        tx.finish(&spec.result_prefix)?;
    }
    if let Some(c) = bare_compute {
        c.finish(&spec.result_prefix)?;
    }
    write_log(&spec.result_prefix.with_extension("aolog"), &log)
}

/// Reconstructor: signals in, DM commands out.
pub fn recon(spec: &ChildSpec) -> Result<()> {
    let (g, ao) = geometry(spec)?;
    let s = open(spec)?;
    let to = wait_timeout(spec);
    let place = Placement::of(&spec.job);
    s.signals
        .set_wait_strategy(ao.stage_wait(place.shares_here(place.recon)).strategy());
    let mut r = Recon::new(&g, ao.threads, &place.recon_cores(), ao.gain, ao.leak)?;
    let guard = s.commands.lock(to).context("locking the commands stream")?;
    let mut sig = vec![0.0f32; g.signals];
    let mut cmd = vec![0.0f32; g.actuators];
    let mut log = Vec::with_capacity(place.frames(&spec.job) as usize);
    let mut input = s
        .signals
        .cursor()
        .context("a cursor on the signals stream")?;
    let regions = between_frames::open(spec, &g)?;
    let mut bare = regions
        .as_ref()
        .and_then(|regions| between_frames::Receiver::signals(regions, spec, &g));
    let mut bare_compute = between_frames::Compute::new(spec, &g, Some(&r))?;
    mark_ready(&s.ready, 1, to)?;
    loop {
        let info = next_input(&mut input, &mut sig, to, ao.catch_up(), "signals")?;
        let t_in = monotonic_ns();
        if info.frame_id == STOP {
            guard.write_slice_frame(&cmd, STOP)?;
            break;
        }
        r.step(&sig, &mut cmd);
        guard.write_slice_frame(&cmd, info.frame_id)?;
        log.push([info.frame_id, t_in, monotonic_ns(), 0]);
        kill_me_after("recon", log.len());
        // The bare signals the slopes stage sends between this frame and the next.
        if let (Some(bare), Some(c)) = (bare.as_mut(), bare_compute.as_mut())
            && let Some(taken) = bare.take(info.frame_id, c.signals())?
        {
            let (recon_ns, publish_ns) = c.recon(&mut r)?;
            c.log([taken, 0, recon_ns, publish_ns]);
        }
    }
    if let Some(c) = bare_compute {
        c.finish(&spec.result_prefix)?;
    }
    write_log(&spec.result_prefix.with_extension("aolog"), &log)
}

/// Floor of the stages' compute: slopes and reconstructor alone on plain memory, on the
/// slopes stage's core, and the bare publication of each stage's output (the signals in
/// the split form with the stages on two cores, the commands in all: a stage's publish
/// time is when its write returned, so the loop's latency holds them; [`BareOutput`]).
/// Log entries:
/// `[i, slopes ns, recon ns, publish ns]`. One frame a camera period (up to 2 s of them),
/// the core sleeping in between, spinning when the stages spin, or asleep until the
/// stage's wake-ahead margin and spinning from there when it wakes ahead: a stage computes on a
/// core as the loop leaves it between frames, and a back-to-back loop measured a hot kernel
/// the loop never runs (pyRTC: slopes alone 2.9 µs back to back, 10.7 µs in the loop;
/// with spinning stages, slopes and recon alone 1.6 µs each back to back against 3.4 and
/// 6.9 µs in the loop).
pub fn floor_compute(spec: &ChildSpec) -> Result<()> {
    let (g, ao) = geometry(spec)?;
    let place = Placement::of(&spec.job);
    let mut stage = Slopes::new(&g);
    let mut r = Recon::new(&g, ao.threads, &place.recon_cores(), ao.gain, ao.leak)?;
    let frames = camera::frames(&g);
    let mut frame = vec![0u16; g.pixels()];
    let mut sig = vec![0.0f32; g.signals];
    let mut cmd = vec![0.0f32; g.actuators];
    let mut out = Outputs::open(spec, &g, ao)?;
    paced_floor(spec, |i| {
        // The stage computes on the frame its hop just copied in (hot in cache; the copy is
        // the hop's floor): so does the floor.
        frame.copy_from_slice(&frames[i % frames.len()]);
        let t0 = monotonic_ns();
        stage.compute(&frame, &mut sig);
        let t1 = monotonic_ns();
        let sent = match out.signals.as_mut() {
            Some(o) => o.publish(&sig)?,
            None => 0,
        };
        let t2 = monotonic_ns();
        r.step(&sig, &mut cmd);
        let t3 = monotonic_ns();
        let sent = sent + out.commands.publish(&cmd)?;
        Ok([t1 - t0, t3 - t2, sent])
    })
}

/// The floors of the loop's output publications ([`floor_compute`]).
pub(super) struct Outputs {
    /// The signals, published only when slopes and recon are separate processes on
    /// separate cores (on one core, the slopes→recon hop's floor holds their publication:
    /// [`super::floor::signals_hop_start`]).
    signals: Option<BareOutput>,
    pub(super) commands: BareOutput,
}

/// A bare output region: its name, frame bytes and slots.
type OutputRegion = (String, usize, usize);

impl Outputs {
    /// Name, frame bytes and slots of each bare output region of the floor of `job` whose
    /// regions are named after `region`, as the loop's streams are
    /// ([`super::create_streams`]): the signals keep [`HISTORY`] frames, the commands one.
    /// The signals' only where [`Outputs::signals`] says.
    fn layout(job: &Job, region: &str, g: &Geometry) -> (Option<OutputRegion>, OutputRegion) {
        let place = Placement::of(job);
        let alone = !place.merged && !place.split_on_one_core();
        (
            alone.then(|| (format!("{region}-signals"), g.signals * 4, HISTORY)),
            (format!("{region}-commands"), g.actuators * 4, 1),
        )
    }

    /// Creates the regions of the floor's outputs for the compute process of `job` under
    /// `names` (held until dropped): the harness creates them and removes them after the
    /// run, so a compute process killed mid-run leaves none behind.
    pub(super) fn create_regions(job: &Job, names: &Names, g: &Geometry) -> Result<Vec<ShmRegion>> {
        let (signals, commands) = Self::layout(job, &names.region, g);
        signals
            .into_iter()
            .chain([commands])
            .map(|(name, bytes, slots)| {
                ShmRegion::create(&name, region_len(bytes, slots))
                    .with_context(|| format!("creating the floor region {name}"))
            })
            .collect()
    }

    /// The bare outputs over the regions [`Self::create_regions`] made, opened in the
    /// compute process of `spec`; both notify unless the stages spin.
    pub(super) fn open(spec: &ChildSpec, g: &Geometry, ao: &super::AoCase) -> Result<Self> {
        let notify = ao.stage_wait(false).notifies();
        let open =
            |(name, bytes, slots): OutputRegion| BareOutput::open(&name, bytes, slots, notify);
        let (signals, commands) = Self::layout(&spec.job, &spec.names.region, g);
        Ok(Outputs {
            signals: signals.map(open).transpose()?,
            commands: open(commands)?,
        })
    }
}

/// The floor's frame loop: `frame(i)` (returning its slopes, recon and publish ns) once a
/// camera period, up to 2 s of frames, the core sleeping in between or spinning when the
/// stages spin; the first 10 frames warm up. Writes the log `[i, slopes ns, recon ns,
/// publish ns]`.
pub(super) fn paced_floor(
    spec: &ChildSpec,
    mut frame: impl FnMut(usize) -> Result<[u64; 3]>,
) -> Result<()> {
    let (_, ao) = geometry(spec)?;
    let place = Placement::of(&spec.job);
    let spins = ao.stage_wait(false) == crate::scenario::Wait::Spin;
    // A stage that wakes ahead of the camera's frames computes on a core it kept awake,
    // spinning, for that margin: so does its floor (asleep the whole period, the pyRTC
    // merged form's slopes and recon alone read 2.5 and 4.2 µs against 1.6 and 2.8 in the
    // loop beside them).
    let ahead = ao.wake_ahead_ns(place.shares_here(place.slopes));
    let period_ns = (1e9 / ao.rate_hz) as u64;
    let n = place.floor_frames(&spec.job);
    let warm = super::placement::FLOOR_WARMUP_FRAMES;
    let mut log = Vec::with_capacity(n as usize);
    let mut slot = monotonic_ns();
    for i in 0..n + warm {
        slot = (slot + period_ns).max(monotonic_ns());
        if spins {
            spin_until(slot);
        } else if let Some(margin) = ahead {
            sleep_until(slot.saturating_sub(margin));
            spin_until(slot);
        } else {
            sleep_until(slot);
        }
        let [slopes, recon, publish] = frame(i as usize)?;
        if i >= warm {
            log.push([i, slopes, recon, publish]);
        }
        kill_me_after("floor", i as usize + 1);
    }
    write_log(&spec.result_prefix.with_extension("aolog"), &log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmstream::{Dtype, StreamOptions};

    /// A fresh u16 notify stream with the stages' history, as the camera's frame stream.
    fn frame_stream(tag: &str, len: usize) -> (String, Stream) {
        let name = format!("ao-{tag}-{}", std::process::id());
        let _ = shmstream::unlink(&name);
        let s = StreamOptions::new(&name)
            .shape(&[len])
            .dtype(Dtype::U16)
            .notify(true)
            .history(HISTORY)
            .create()
            .unwrap();
        (name, s)
    }

    #[test]
    fn a_stage_reads_every_frame_in_order_and_skips_to_the_newest_only_when_far_behind() {
        let (name, s) = frame_stream("next-input", 2);
        let mut c = s.cursor().unwrap();
        let to = Some(Duration::from_secs(5));
        let mut dst = [0u16; 2];
        // A stall of a few frames: every one is read, in order.
        for id in 1..=CATCH_UP {
            s.write_slice_frame(&[id as u16, 0], id).unwrap();
        }
        for id in 1..=CATCH_UP {
            let info = next_input(&mut c, &mut dst, to, CATCH_UP, "frames").unwrap();
            assert_eq!((info.frame_id, dst[0]), (id, id as u16));
        }
        // Further behind than CATCH_UP (and lapped by the ring): the newest frame next.
        let last = CATCH_UP + HISTORY as u64 + 3;
        for id in CATCH_UP + 1..=last {
            s.write_slice_frame(&[id as u16, 0], id).unwrap();
        }
        let info = next_input(&mut c, &mut dst, to, CATCH_UP, "frames").unwrap();
        assert_eq!((info.frame_id, dst[0]), (last, last as u16));
        // With no catching up (`catch_up = 0`): two frames behind, the newest; one behind
        // (the next is the newest), that one, at once. pyshmem's `read_new` differs there:
        // it waits for a frame published after the call, so it skips that pending one.
        for id in last + 1..=last + 2 {
            s.write_slice_frame(&[id as u16, 0], id).unwrap();
        }
        let info = next_input(&mut c, &mut dst, to, 0, "frames").unwrap();
        assert_eq!(info.frame_id, last + 2);
        s.write_slice_frame(&[0u16, 0], last + 3).unwrap();
        let info = next_input(&mut c, &mut dst, to, 0, "frames").unwrap();
        assert_eq!(info.frame_id, last + 3);
        drop(s);
        shmstream::unlink(&name).unwrap();
    }

    /// The phase a stage learns is the earliest `arrival − id · period` of the frames it has
    /// read, whenever it read them: frames read late (a stage preempted, a frame that came
    /// a period late) leave it where an earlier one put it, an early frame moves it earlier,
    /// and the end of the run leaves it and the next frame due alone. A stage that does not
    /// wake ahead learns nothing. Arrivals are given, not timed.
    #[test]
    fn the_phase_is_the_earliest_arrival_less_its_periods() {
        let period = 20_000_000u64;
        let t0 = 1_000_000_000_000u64;
        let ahead = |ahead| FrameWait {
            ahead,
            near: WaitStrategy::Spin,
            far: WaitStrategy::Park,
            phase: None,
            last_id: 0,
            catch_up: CATCH_UP,
        };
        let mut wait = ahead(Some((period as f64, 2_500_000)));
        // (frame id, read at, the phase then).
        let arrivals = [
            // Read 3 ms after it was due: the first phase, 3 ms late.
            (1, t0 + period + 3_000_000, t0 + 3_000_000),
            // On time: earlier.
            (2, t0 + 2 * period, t0),
            // Read 16 ms late (a preempted stage): no later.
            (3, t0 + 3 * period + 16_000_000, t0),
            // 16 ms early: earlier.
            (4, t0 + 4 * period - 16_000_000, t0 - 16_000_000),
            // A period late, then on time: no later.
            (5, t0 + 6 * period, t0 - 16_000_000),
            (6, t0 + 6 * period, t0 - 16_000_000),
            // After a stall, several read at once, long after: no later.
            (7, t0 + 10 * period, t0 - 16_000_000),
            (8, t0 + 10 * period, t0 - 16_000_000),
            // 17 ms early: earlier still.
            (9, t0 + 9 * period - 17_000_000, t0 - 17_000_000),
        ];
        for (id, now, phase) in arrivals {
            wait.saw(id, now);
            assert_eq!((wait.phase, wait.last_id), (Some(phase), id), "frame {id}");
        }
        wait.saw(STOP, t0);
        assert_eq!((wait.phase, wait.last_id), (Some(t0 - 17_000_000), 9));
        let mut plain = ahead(None);
        plain.saw(1, t0);
        assert_eq!((plain.phase, plain.last_id), (None, 0));
    }

    /// The frame due next stays on the camera's schedule (frame `k` at `t0 + k · period`,
    /// the period unrounded) over a million frames at 3000 Hz: with the period truncated to
    /// 333 333 ns, it drifted a third of a ns earlier a frame, 333 µs by the last. Arrivals
    /// are given, not timed.
    #[test]
    fn the_frame_due_keeps_to_a_period_of_a_fraction_of_a_ns() {
        let period = 1e9 / 3000.0;
        let t0 = 1_000_000_000_000u64;
        let at = |k: u64| t0 + (k as f64 * period) as u64;
        let mut wait = FrameWait {
            ahead: Some((period, 40_000)),
            near: WaitStrategy::Spin,
            far: WaitStrategy::Park,
            phase: None,
            last_id: 0,
            catch_up: CATCH_UP,
        };
        for k in 1..=1_000_000u64 {
            wait.saw(k, at(k));
            let due = wait.due().expect("phase learned");
            assert!(
                due.abs_diff(at(k + 1)) <= 1_000,
                "frame {}: due {due}, comes {}",
                k + 1,
                at(k + 1)
            );
        }
    }

    /// A stage that wakes ahead of paced frames reads every one in order, also those that
    /// come long before they are due (the futex still wakes it) or late, and a camera that
    /// stops is a timeout, not a hang. It learns a phase, between the earliest it could
    /// (frame 5 or 9 read as soon as it came, 16 ms early) and the last frame's read less
    /// its periods; which one it is depends on when this thread ran, and
    /// `the_phase_is_the_earliest_arrival_less_its_periods` shows how it is learned.
    #[test]
    fn a_stage_waking_ahead_reads_early_late_and_on_time_frames_in_order() {
        let (name, s) = frame_stream("wake-ahead", 1);
        let frames = 12u64;
        let mut ao = crate::cases::ao::geometry::tests::case(Some([1, 1]), None, 1);
        ao.rate_hz = 50.0; // 20 ms period, 2.5 ms wake-ahead
        // Every frame in order, however long the reader stalls: it never falls more than
        // `catch_up` behind (which would skip to the newest) and the ring, deeper than the
        // run, never laps it. Skipping is the other test's.
        ao.catch_up = Some(frames);
        assert!(frames <= HISTORY as u64);
        let mut wait = FrameWait::new(&ao, false, &s);
        assert!(wait.ahead.is_some());
        let mut c = s.cursor().unwrap();
        let to = Some(Duration::from_secs(5));
        let writer = Stream::open(&name).unwrap();
        let period = 20_000_000u64;
        let t0 = monotonic_ns() + period;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for id in 1..=frames {
                    // Frames 5 and 9 come 16 ms early, frame 7 a period late.
                    let at = match id {
                        5 | 9 => t0 + id * period - 16_000_000,
                        7 => t0 + (id + 1) * period,
                        _ => t0 + id * period,
                    };
                    sleep_until(at);
                    writer.write_slice_frame(&[id as u16], id).unwrap();
                }
            });
            let mut dst = [0u16];
            for id in 1..=frames {
                let info = wait.next(&s, &mut c, &mut dst, to).unwrap();
                assert_eq!((info.frame_id, dst[0]), (id, id as u16));
            }
        });
        let read_all = monotonic_ns();
        let phase = wait.phase.expect("phase not learned");
        assert!(
            (t0 - 16_000_000..=read_all - frames * period).contains(&phase),
            "phase {phase} out of [{}, {}]",
            t0 - 16_000_000,
            read_all - frames * period
        );
        let short = Some(Duration::from_millis(30));
        let err = wait.next(&s, &mut c, &mut [0u16], short).unwrap_err();
        assert!(
            format!("{err:#}").contains("waiting for a frame"),
            "{err:#}"
        );
        drop((s, writer));
        shmstream::unlink(&name).unwrap();
    }
}

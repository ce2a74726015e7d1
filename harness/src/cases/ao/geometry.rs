//! The `[case.ao]` table of an `ao-loop` case, and the loop geometry derived from it and
//! the case's WFS frame shape: checked before any process starts.

use serde::{Deserialize, Serialize};

use crate::error::{Context, Result, bail};

/// The highest camera rate an ao-loop case may ask for, Hz.
pub const MAX_RATE_HZ: f64 = 1e5;

/// How the slopes stage turns a frame into signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalKind {
    /// Shack-Hartmann centroids over the subaperture grid (2 signals per subaperture).
    #[default]
    Centroids,
    /// Pyramid-style: the valid pixels, normalized by their mean.
    Pixels,
}

/// `[case.ao]`: what the loop computes, at which rate, where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AoCase {
    /// `"centroids"` (default) or `"pixels"`.
    #[serde(default)]
    pub slopes: SignalKind,
    /// Centroids: the subaperture grid `[rows, cols]`; it must divide the frame.
    #[serde(default)]
    pub subapertures: Option<[usize; 2]>,
    /// Pixels: how many valid pixels (default: every pixel of the frame).
    #[serde(default)]
    pub valid_pixels: Option<usize>,
    /// Controlled modes; absent or 0: zonal control (one MVM, signals → actuators).
    #[serde(default)]
    pub modes: Option<usize>,
    /// DM actuators.
    pub actuators: usize,
    /// Camera frame rate, Hz.
    pub rate_hz: f64,
    /// Cores of the stages (default: camera on `writer_cpu`, the others on `reader_cpu`).
    #[serde(default)]
    pub camera_cpu: Option<usize>,
    /// Core of the slopes stage.
    #[serde(default)]
    pub slopes_cpu: Option<usize>,
    /// Core of the reconstructor stage.
    #[serde(default)]
    pub recon_cpu: Option<usize>,
    /// Run slopes and reconstructor in one process.
    #[serde(default)]
    pub merged: bool,
    /// How the stages wait for their input: absent or `"adaptive"` = spin briefly, then
    /// park (park at once on a shared core); `"park"` = park at once; `"spin"` =
    /// busy-wait (needs a core per stage). The hop floors wait the same way.
    #[serde(default)]
    pub wait: Option<crate::scenario::Wait>,
    /// With the adaptive wait (the default), the stage that reads camera frames wakes this
    /// many µs before each frame is due (the camera is paced: frame k is due a fixed
    /// phase + k periods after the first) and spins for it (yielding its core where it
    /// shares one), instead of parking until the camera's wake-up reaches an idle core.
    /// Default: an eighth of the period, at least 100 µs, at most half the period, for a
    /// stage alone on its core; none on a shared core; 0 turns it off.
    #[serde(default)]
    pub wake_ahead_us: Option<f64>,
    /// Run every process of the case (the stages, the floor's, the pyshmem peer's) under
    /// `SCHED_FIFO` at this priority (1-99), as real-time controllers do: nothing of lower
    /// priority preempts a stage on its core. Needs root, `CAP_SYS_NICE` or an
    /// `RLIMIT_RTPRIO` (`ulimit -r`) at least this high; not with `wait = "spin"`, which the
    /// kernel would throttle. Default: the time-sharing policy.
    #[serde(default)]
    pub rt_priority: Option<u8>,
    /// Every process of the case (the stages, the floor's, the pyshmem peer's) asks the
    /// fair scheduler for a time slice of this many µs (100 to 100 000): `sched_setattr`
    /// with `sched_runtime`, which EEVDF (Linux 6.12 and later) takes as the task's slice,
    /// without privileges. A stage with a short slice gets its core back sooner from a
    /// task that woke on it (a kernel worker, another process), so rare preemptions cost
    /// it less. Not with `rt_priority`. Default: the kernel's base slice.
    #[serde(default)]
    pub slice_us: Option<f64>,
    /// Frames a stage may fall behind and still read every one in order; further behind,
    /// it skips to the newest frame (those it skips are missed). 0: always the newest
    /// frame, taken at once (late) when one came while the stage was busy; pyshmem's
    /// `read_new` (and so pyRTC's loops) skips that one too and waits for the next. 0 to
    /// 15, the input streams keeping 16 frames. Default [`super::stage::CATCH_UP`] (4).
    #[serde(default)]
    pub catch_up: Option<u64>,
    /// Search the highest sustainable rate with a ladder of short runs.
    #[serde(default = "yes")]
    pub ladder: bool,
    /// Seconds of each ladder run.
    #[serde(default = "ladder_seconds")]
    pub ladder_seconds: f64,
    /// The loop's measured seconds are cut into this many runs (fresh processes each, a
    /// warm-up each), with a pass of the floor before the first, between each two and
    /// after the last, each part of the floor from its fastest pass: passes spread over the
    /// loop's time catch the host's states the loop saw ([`super::floor::compose`]).
    /// Missed frames are counted over all of them. Default 2.
    #[serde(default = "two")]
    pub runs: u32,
    /// Latency budget, µs: the verdict needs end-to-end p99 below it (and below the
    /// frame period).
    #[serde(default)]
    pub budget_us: Option<f64>,
    /// Reconstructor kernel threads (default 1); no more than the placement gives the
    /// reconstructor cores, one ([`super::placement::Placement::check_threads`]).
    #[serde(default = "one")]
    pub threads: usize,
    /// Integrator gain.
    #[serde(default = "gain")]
    pub gain: f32,
    /// Integrator leak (state ← leak·state − gain·modes).
    #[serde(default = "leak")]
    pub leak: f32,
}

impl AoCase {
    /// How a stage waits for its input: the case's wait (default adaptive), but parked at
    /// once when the stage shares its core with another (a spinner there only delays its
    /// neighbour) unless told to spin. The hop floors wait the same way.
    pub fn stage_wait(&self, shared: bool) -> crate::scenario::Wait {
        use crate::scenario::Wait;
        match self.wait {
            Some(w @ (Wait::Spin | Wait::Park)) => w,
            _ if shared => Wait::Park,
            _ => Wait::Adaptive,
        }
    }

    /// Frames a stage may fall behind and still read every one ([`AoCase::catch_up`]).
    pub fn catch_up(&self) -> u64 {
        self.catch_up.unwrap_or(super::stage::CATCH_UP)
    }

    /// The case's fair-scheduler slice in ns ([`AoCase::slice_us`]).
    pub fn slice_ns(&self) -> Option<u64> {
        self.slice_us.map(|us| (us * 1e3) as u64)
    }

    /// How long before a camera frame is due the stage reading it wakes, ns (`shared`: it
    /// shares its core with another stage). `None`: it does not wake ahead: the wait is
    /// spin or park, `wake_ahead_us = 0`, or the stage shares its core and the case does
    /// not ask for it (a stage yielding its shared core for a period's eighth lost about
    /// 100 frames in 11,000 at the Keck-like split form in two noisy runs, against 6-14
    /// parked; see scenarios/README.md).
    pub fn wake_ahead_ns(&self, shared: bool) -> Option<u64> {
        use crate::scenario::Wait;
        if matches!(self.wait, Some(Wait::Spin | Wait::Park)) || self.rate_hz <= 0.0 {
            return None;
        }
        let us = match self.wake_ahead_us {
            Some(us) => us,
            None if shared => 0.0,
            None => default_wake_ahead_us(self.rate_hz),
        };
        (us > 0.0).then_some((us * 1e3) as u64)
    }
}

/// How long before each camera frame a stage with a core of its own wakes at `rate_hz`, µs:
/// an eighth of the period, at least 100 µs and at most half the period.
pub fn default_wake_ahead_us(rate_hz: f64) -> f64 {
    let period_us = 1e6 / rate_hz;
    (period_us / 8.0).max(100.0).min(period_us / 2.0)
}

fn yes() -> bool {
    true
}
fn ladder_seconds() -> f64 {
    0.3
}
fn two() -> u32 {
    2
}

fn one() -> usize {
    1
}
fn gain() -> f32 {
    0.3
}
fn leak() -> f32 {
    0.99
}

/// The remedy a memory refusal ([`Geometry::check_memory`]) names for the stages' logs, in a
/// scenario's keys; `harness size`, which has no such keys, says it in its flags.
pub const SHORTER_RUNS: &str = "shorter runs (min_seconds, warmup, ladder_seconds)";

/// The sizes every stage works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    /// WFS frame `[rows, cols]` (u16 pixels).
    pub wfs: [usize; 2],
    /// Signal kind.
    pub kind: SignalKind,
    /// Subaperture grid (centroids) or `[0, 0]`.
    pub subapertures: [usize; 2],
    /// Length of the signal vector.
    pub signals: usize,
    /// Controlled modes (0 = zonal).
    pub modes: usize,
    /// DM actuators.
    pub actuators: usize,
}

/// Bytes the machine must keep free beside what [`Geometry::memory`] counts by size (the
/// processes themselves: code, libraries, stacks; their logs are [`Memory::logs`]).
const OVERHEAD_BYTES: u64 = 256 << 20;

/// Bytes one run of the loop holds per pixel of the (u16) frame at its peak: an estimate from
/// what its processes allocate, counted as if every process's largest moment came at once
/// (they start together). The loop's runs are the job's peak: the floor's passes and the
/// peer run between them, each holding less.
/// - /dev/shm: the frame stream's payload and its [`super::stage::HISTORY`] frames of history
///   (17 × 2 B) and, in the runs that time the floor between frames, the bare camera region's
///   16 slots (16 × 2 B): 66;
/// - the camera: its [`super::camera::FRAMES`] precomputed frames (4 × 2 B) and, while it
///   makes them, the synthetic calibration (dark u16 + flat f32, 6 B) and a spot buffer
///   (f32, 4 B): 18;
/// - the stage reading frames, in its largest form (the GPU form, whose self-check holds the
///   camera's frames beside the CPU stages' calibration and dark as f32, plus the frame's
///   page-locked copy): 8 + 6 + 4 + 2 = 20.
const BYTES_PER_PIXEL: u64 = 66 + 18 + 20;

/// The most pixels (and actuators) a loop has: the stages index them in 32 bits, and a GPU
/// kernel's strided loop (up to 1024 threads) must not wrap past the last one.
const MAX_INDEXED: usize = 1 << 31;

/// Pixel signals: the valid-pixel index the slopes stage builds over every pixel (u32) and
/// its sort's scratch (half as many u32), per pixel.
const VALID_INDEX_BYTES_PER_PIXEL: u64 = 4 + 2;

/// Bytes per signal (f32): the signals stream's payload and [`super::stage::HISTORY`] frames
/// of history, the bare signals region's 16 slots ((17 + 16) × 4 B), and the stages' buffers
/// (3 × 4 B).
const BYTES_PER_SIGNAL: u64 = (17 + 16) * 4 + 3 * 4;

/// Bytes per actuator (f32): the commands stream and the bare commands region (one frame
/// each) and the stages' buffers (3).
const BYTES_PER_ACTUATOR: u64 = 5 * 4;

/// What one run of a geometry needs, bytes ([`Geometry::memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// The f32 reconstructor matrices, once (the reconstructor's process; the floor and the
    /// peer hold their own copy one at a time).
    pub matrices: u64,
    /// What grows with the frame, the signals and the actuators (estimated).
    pub frames: u64,
    /// The stages' logs of the job's largest run (sized to its frames:
    /// [`super::placement::Placement::log_bytes`]); 0 for a geometry alone.
    pub logs: u64,
    /// The processes themselves.
    pub overhead: u64,
}

impl Memory {
    /// The whole ([`Geometry::memory`] counted it; saturated for one made otherwise).
    pub fn total(&self) -> u64 {
        self.matrices
            .saturating_add(self.frames)
            .saturating_add(self.logs)
            .saturating_add(self.overhead)
    }
}

impl Geometry {
    /// Checks `ao` against the frame shape, derives the sizes and refuses a geometry that
    /// does not fit this machine's available memory (now). The stage processes, started
    /// once the job's streams hold part of that memory, use [`Geometry::derive`].
    pub fn new(wfs: &[usize], ao: &AoCase) -> Result<Self> {
        let g = Self::derive(wfs, ao)?;
        g.check_memory(available_memory(), 0)?;
        Ok(g)
    }

    /// [`Geometry::new`] without the memory check (its sizes are still counted, so a
    /// geometry whose bytes cannot be counted is refused).
    pub fn derive(wfs: &[usize], ao: &AoCase) -> Result<Self> {
        let [h, w] = match wfs {
            [h, w] if *h > 0 && *w > 0 => [*h, *w],
            _ => bail!("ao-loop: the WFS frame must be [rows, cols] with both > 0, got {wfs:?}"),
        };
        let Some(pixels) = h.checked_mul(w) else {
            bail!(
                "ao-loop: the {h}x{w} WFS frame needs more memory than can be counted ({h} × {w} \
                 pixels overflow {} bits); use a smaller frame",
                usize::BITS
            );
        };
        // The stages and the GPU kernels index pixels and actuators in 32 bits, with room for
        // a kernel's stride past the last one.
        if pixels > MAX_INDEXED {
            bail!(
                "ao-loop: the {h}x{w} WFS frame has {pixels} pixels; the stages index them in \
                 32 bits, at most {MAX_INDEXED}: use a smaller frame"
            );
        }
        if ao.actuators == 0 {
            bail!("ao-loop: actuators must be > 0");
        }
        if ao.actuators > MAX_INDEXED {
            bail!(
                "ao-loop: actuators = {}: the stages index them in 32 bits, at most \
                 {MAX_INDEXED}",
                ao.actuators
            );
        }
        // NaN passes the clip and would publish NaN commands for the whole run.
        if !(ao.gain.is_finite() && ao.leak.is_finite()) {
            bail!(
                "ao-loop: gain = {} and leak = {} must be finite numbers (the integrator: \
                 state <- leak·state - gain·modes)",
                ao.gain,
                ao.leak
            );
        }
        if !(ao.rate_hz.is_finite() && ao.rate_hz > 0.0 && ao.rate_hz <= MAX_RATE_HZ) {
            bail!(
                "ao-loop: rate_hz must be in (0, {MAX_RATE_HZ}], got {}",
                ao.rate_hz
            );
        }
        if ao.budget_us.is_some_and(|b| !(b.is_finite() && b > 0.0)) {
            bail!("ao-loop: budget_us must be > 0");
        }
        if ao.threads == 0 || !(ao.ladder_seconds.is_finite() && ao.ladder_seconds > 0.0) {
            bail!("ao-loop: threads must be >= 1 and ladder_seconds > 0");
        }
        // A rung's frames are counted in 64 bits and its run bound by a timeout: no longer
        // than the longest timeout a scenario may give.
        let max_s = crate::scenario::MAX_TIMEOUT_S;
        if ao.ladder_seconds > max_s {
            bail!(
                "ao-loop: ladder_seconds = {} must be at most {max_s} (a day, the longest \
                 timeout_s)",
                ao.ladder_seconds
            );
        }
        if ao
            .catch_up
            .is_some_and(|c| c >= super::stage::HISTORY as u64)
        {
            bail!(
                "ao-loop: catch_up is at most {} (a stage's input stream keeps {} frames)",
                super::stage::HISTORY - 1,
                super::stage::HISTORY
            );
        }
        // NaN or a negative margin turned waking ahead off (only 0 says so), an infinite one
        // spun the whole period.
        if let Some(us) = ao
            .wake_ahead_us
            .filter(|us| !(us.is_finite() && *us >= 0.0))
        {
            bail!(
                "ao-loop: wake_ahead_us = {us} must be a number of µs >= 0 (0 turns waking \
                 ahead off)"
            );
        }
        if !(1..=20).contains(&ao.runs) {
            bail!("ao-loop: runs is how many runs the loop's seconds are cut into, 1 to 20");
        }
        if ao.rt_priority.is_some_and(|p| !(1..=99).contains(&p)) {
            bail!("ao-loop: rt_priority is a SCHED_FIFO priority, 1 to 99");
        }
        if ao.rt_priority.is_some() && ao.wait == Some(crate::scenario::Wait::Spin) {
            bail!(
                "ao-loop: rt_priority with wait = \"spin\": the kernel throttles a busy-waiting \
                 SCHED_FIFO task (by default it loses its core for 50 ms of every second, \
                 /proc/sys/kernel/sched_rt_runtime_us); use the adaptive wait with rt_priority"
            );
        }
        if ao
            .slice_us
            .is_some_and(|us| !(us.is_finite() && (100.0..=100_000.0).contains(&us)))
        {
            bail!("ao-loop: slice_us is a fair-scheduler time slice, 100 to 100000 µs");
        }
        if ao.slice_us.is_some() && ao.rt_priority.is_some() {
            bail!(
                "ao-loop: slice_us with rt_priority: SCHED_FIFO tasks have no fair slice; \
                 choose one"
            );
        }
        let (subapertures, signals) = match ao.slopes {
            SignalKind::Centroids => {
                if ao.valid_pixels.is_some() {
                    bail!("ao-loop: valid_pixels applies to slopes = \"pixels\" only");
                }
                let Some([sy, sx]) = ao.subapertures else {
                    bail!("ao-loop: slopes = \"centroids\" needs subapertures = [rows, cols]");
                };
                if sy == 0 || sx == 0 || h % sy != 0 || w % sx != 0 || h / sy < 2 || w / sx < 2 {
                    bail!(
                        "ao-loop: subapertures {sy}x{sx} must divide the {h}x{w} frame into \
                         cells of at least 2x2 pixels"
                    );
                }
                // Cells of at least 2x2 pixels: 2·sy·sx <= pixels / 2, which was counted.
                let signals = sy
                    .checked_mul(sx)
                    .and_then(|n| n.checked_mul(2))
                    .context("ao-loop: the subaperture grid's signals cannot be counted")?;
                ([sy, sx], signals)
            }
            SignalKind::Pixels => {
                if ao.subapertures.is_some() {
                    bail!("ao-loop: subapertures applies to slopes = \"centroids\" only");
                }
                let n = ao.valid_pixels.unwrap_or(pixels);
                if n == 0 || n > pixels {
                    bail!("ao-loop: valid_pixels = {n} must be in 1..={pixels} ({h}x{w})");
                }
                ([0, 0], n)
            }
        };
        let modes = ao.modes.unwrap_or(0);
        // A reconstructor controls at most as many modes as it has signals to see them and
        // actuators to make them (`harness size --modes` names its flag for the same limit).
        let most = signals.min(ao.actuators);
        if modes > most {
            bail!(
                "ao-loop: modes = {modes} must be at most {most}, the fewer of the {signals} \
                 signals and the {} actuators (0 or absent: zonal control)",
                ao.actuators
            );
        }
        let g = Geometry {
            wfs: [h, w],
            kind: ao.slopes,
            subapertures,
            signals,
            modes,
            actuators: ao.actuators,
        };
        // Nothing is available to compare with here, but a size that overflows is refused.
        g.check_memory(None, 0)?;
        Ok(g)
    }

    /// Pixels of one frame.
    pub fn pixels(&self) -> usize {
        self.wfs[0] * self.wfs[1]
    }

    /// The reconstructor's matrices as `(rows, cols)`: R, then M2C when modal.
    pub fn matrices(&self) -> Vec<(usize, usize)> {
        if self.modes == 0 {
            vec![(self.actuators, self.signals)]
        } else {
            vec![(self.modes, self.signals), (self.actuators, self.modes)]
        }
    }

    /// A subaperture's cell, `[rows, cols]` pixels (centroids; `[0, 0]` for pixel signals).
    pub fn cell(&self) -> [usize; 2] {
        let [sy, sx] = self.subapertures;
        if sy == 0 || sx == 0 {
            return [0, 0];
        }
        [self.wfs[0] / sy, self.wfs[1] / sx]
    }

    /// Matrix bytes the reconstructor reads per frame (f32), `None` when they cannot be
    /// counted in 64 bits.
    fn recon_bytes_checked(&self) -> Option<u64> {
        self.matrices().iter().try_fold(0u64, |sum, &(r, c)| {
            let bytes = u64::try_from(r)
                .ok()?
                .checked_mul(u64::try_from(c).ok()?)?
                .checked_mul(4)?;
            sum.checked_add(bytes)
        })
    }

    /// Matrix bytes the reconstructor reads per frame (f32; a geometry that passed
    /// [`Geometry::derive`] counts them exactly, saturated otherwise).
    pub fn recon_bytes(&self) -> u64 {
        self.recon_bytes_checked().unwrap_or(u64::MAX)
    }

    /// Memory one run needs ([`Memory`]): the matrices, what grows with the frame, the
    /// signals and the actuators ([`BYTES_PER_PIXEL`], [`BYTES_PER_SIGNAL`],
    /// [`BYTES_PER_ACTUATOR`]: estimated), and a fixed overhead. `None` when it cannot be
    /// counted in 64 bits.
    pub fn memory(&self) -> Option<Memory> {
        let count = |n: usize, each: u64| u64::try_from(n).ok()?.checked_mul(each);
        let per_pixel = BYTES_PER_PIXEL
            + match self.kind {
                SignalKind::Pixels => VALID_INDEX_BYTES_PER_PIXEL,
                SignalKind::Centroids => 0,
            };
        let pixels = self.wfs[0].checked_mul(self.wfs[1])?;
        let frames = count(pixels, per_pixel)?
            .checked_add(count(self.signals, BYTES_PER_SIGNAL)?)?
            .checked_add(count(self.actuators, BYTES_PER_ACTUATOR)?)?;
        let m = Memory {
            matrices: self.recon_bytes_checked()?,
            frames,
            logs: 0,
            overhead: OVERHEAD_BYTES,
        };
        m.matrices.checked_add(m.frames)?.checked_add(m.overhead)?;
        Some(m)
    }

    /// "100000x200000 + …": the matrices, for messages.
    fn matrices_text(&self) -> String {
        self.matrices()
            .iter()
            .map(|(r, c)| format!("{r}x{c}"))
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// Refuses a geometry whose memory ([`Geometry::memory`]) with `logs` bytes of the
    /// stages' logs ([`Memory::logs`]) does not fit `available` bytes (None: unknown), or
    /// cannot be counted at all.
    pub fn check_memory(&self, available: Option<u64>, logs: u64) -> Result<()> {
        let Some(mut need) = self.memory() else {
            bail!(
                "ao-loop: this geometry needs more memory than can be counted in 64 bits (f32 \
                 reconstructor matrices {}, {}x{} px frames, {} signals, {} actuators); use a \
                 smaller geometry",
                self.matrices_text(),
                self.wfs[0],
                self.wfs[1],
                self.signals,
                self.actuators
            );
        };
        need.logs = logs;
        if let Some(avail) = available
            && need.total() > avail
        {
            let gb = |b: u64| b as f64 / 1e9;
            bail!(
                "ao-loop: a run of this case needs an estimated {:.2} GB ({:.2} GB of f32 \
                 reconstructor matrices {}; {:.2} GB that grows with the {}x{} px frame, the \
                 {} signals and the {} actuators: the streams' and bare floor regions' frame \
                 histories in /dev/shm, the camera's precomputed frames, the calibration and \
                 the stages' buffers; {:.2} GB for the stages' logs of its longest run, sized to \
                 its seconds × rate_hz frames; {:.2} GB for the processes) but the \
                 machine has {:.2} GB available; use a smaller geometry, {SHORTER_RUNS} or a \
                 larger machine",
                gb(need.total()),
                gb(need.matrices),
                self.matrices_text(),
                gb(need.frames),
                self.wfs[0],
                self.wfs[1],
                self.signals,
                self.actuators,
                gb(need.logs),
                gb(need.overhead),
                gb(avail)
            );
        }
        Ok(())
    }

    /// `"wfs 49x49, 49 subap, 98 signals, 97 modes, 97 act"`.
    pub fn describe(&self) -> String {
        let sig = match self.kind {
            SignalKind::Centroids => format!(
                "{}x{} subap → {} slopes",
                self.subapertures[0], self.subapertures[1], self.signals
            ),
            SignalKind::Pixels => format!("{} pixel signals", self.signals),
        };
        let modes = if self.modes == 0 {
            "zonal".to_string()
        } else {
            format!("{} modes", self.modes)
        };
        format!(
            "{}x{} px, {sig}, {modes}, {} actuators",
            self.wfs[0], self.wfs[1], self.actuators
        )
    }
}

/// `MemAvailable` of `/proc/meminfo`, bytes.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn case(sub: Option<[usize; 2]>, modes: Option<usize>, act: usize) -> AoCase {
        AoCase {
            wake_ahead_us: None,
            rt_priority: None,
            slice_us: None,
            catch_up: None,
            slopes: SignalKind::Centroids,
            subapertures: sub,
            valid_pixels: None,
            modes,
            actuators: act,
            rate_hz: 1000.0,
            camera_cpu: None,
            slopes_cpu: None,
            recon_cpu: None,
            merged: false,
            wait: None,
            ladder: false,
            ladder_seconds: 0.3,
            runs: 2,
            budget_us: None,
            threads: 1,
            gain: 0.3,
            leak: 0.99,
        }
    }

    #[test]
    fn the_wake_ahead_is_an_eighth_of_the_period_within_100_us_and_half_a_period_alone_on_a_core() {
        let mut c = case(Some([7, 7]), None, 10);
        let at = |c: &mut AoCase, hz: f64| {
            c.rate_hz = hz;
            c.wake_ahead_ns(false)
        };
        assert_eq!(at(&mut c, 1000.0), Some(125_000));
        assert_eq!(at(&mut c, 3000.0), Some(100_000));
        assert_eq!(at(&mut c, 10_000.0), Some(50_000));
        assert_eq!(at(&mut c, 100.0), Some(1_250_000));
        assert_eq!(
            c.wake_ahead_ns(true),
            None,
            "not on a shared core unless asked"
        );
        c.wake_ahead_us = Some(40.0);
        assert_eq!(at(&mut c, 1000.0), Some(40_000));
        assert_eq!(c.wake_ahead_ns(true), Some(40_000));
        c.wake_ahead_us = Some(0.0);
        assert_eq!(at(&mut c, 1000.0), None, "0 turns it off");
        c.wake_ahead_us = None;
        for w in [crate::scenario::Wait::Spin, crate::scenario::Wait::Park] {
            c.wait = Some(w);
            assert_eq!(at(&mut c, 1000.0), None, "{w:?} stages do not wake ahead");
        }
    }

    /// A wake-ahead margin that is not a number of µs >= 0 is refused naming the key and the
    /// case: a negative or NaN one turned waking ahead off (only 0 is documented to), an
    /// infinite one spun the whole period.
    #[test]
    fn a_wake_ahead_margin_below_0_or_not_finite_is_refused_naming_the_key_and_the_case() {
        let scenario = |us: &str| {
            crate::scenario::Scenario::parse(&format!(
                "name = \"t\"\n[[case]]\nname = \"ahead\"\nkind = \"ao-loop\"\n\
                 sizes = [[8, 8]]\n[case.ao]\nsubapertures = [2, 2]\nactuators = 5\n\
                 rate_hz = 1000\nwake_ahead_us = {us}\n"
            ))
        };
        for bad in ["-5", "nan", "inf", "-0.001"] {
            let err = scenario(bad).unwrap_err().to_string();
            assert!(
                err.contains("[[case]] #1 (ahead)") && err.contains("wake_ahead_us = "),
                "{bad}: {err}"
            );
        }
        for ok in ["0", "0.0", "125", "1e6"] {
            assert!(scenario(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn the_pyrtc_geometry_has_98_slopes() {
        let g = Geometry::new(&[49, 49], &case(Some([7, 7]), Some(97), 97)).unwrap();
        assert_eq!(g.signals, 98);
        assert_eq!(g.matrices(), vec![(97, 98), (97, 97)]);
    }

    #[test]
    fn bad_geometries_are_clear_errors() {
        for (wfs, c, needle) in [
            (vec![0, 49], case(Some([7, 7]), None, 10), "both > 0"),
            (vec![49, 49], case(Some([7, 8]), None, 10), "must divide"),
            (vec![49, 49], case(Some([0, 7]), None, 10), "must divide"),
            (vec![49, 49], case(None, None, 10), "needs subapertures"),
            (vec![49, 49], case(Some([7, 7]), None, 0), "actuators"),
            (vec![49], case(Some([7, 7]), None, 10), "[rows, cols]"),
        ] {
            let err = Geometry::new(&wfs, &c).unwrap_err().to_string();
            assert!(err.contains(needle), "{wfs:?}: {err}");
        }
        let mut p = case(None, None, 10);
        p.slopes = SignalKind::Pixels;
        p.valid_pixels = Some(50);
        let err = Geometry::new(&[7, 7], &p).unwrap_err().to_string();
        assert!(err.contains("valid_pixels = 50"), "{err}");
        // The pyRTC geometry with one option changed: the error it is refused with.
        let refused = |edit: &dyn Fn(&mut AoCase)| {
            let mut c = case(Some([7, 7]), None, 10);
            edit(&mut c);
            Geometry::new(&[49, 49], &c).unwrap_err().to_string()
        };
        for bad in [0, 100] {
            let err = refused(&|c| c.rt_priority = Some(bad));
            assert!(err.contains("rt_priority"), "{bad}: {err}");
        }
        for bad in [0, 21] {
            let err = refused(&|c| c.runs = bad);
            assert!(err.contains("runs"), "{bad}: {err}");
        }
        let err = refused(&|c| {
            c.rt_priority = Some(50);
            c.wait = Some(crate::scenario::Wait::Spin);
        });
        assert!(err.contains("throttles"), "{err}");
        for bad in [0.0, 99.0, 100_001.0, f64::NAN] {
            let err = refused(&|c| c.slice_us = Some(bad));
            assert!(err.contains("slice_us"), "{bad}: {err}");
        }
        let mut c = case(Some([7, 7]), None, 10);
        c.slice_us = Some(100.0);
        assert!(Geometry::new(&[49, 49], &c).is_ok());
        let err = refused(&|c| {
            c.slice_us = Some(100.0);
            c.rt_priority = Some(50);
        });
        assert!(err.contains("choose one"), "{err}");
    }

    /// Sizes whose products overflow are refused with a message, never a panic (the dev
    /// profile keeps overflow checks): the matrices, the frame's pixels.
    #[test]
    fn a_geometry_whose_sizes_overflow_is_refused_not_a_panic() {
        // `harness size --wfs-pixels 32768x65536 --slopes pixels --actuators 2^31 --modes 2^31`:
        // 2^64 bytes in each matrix.
        let most = 1usize << 31;
        let mut c = case(None, Some(most), most);
        c.slopes = SignalKind::Pixels;
        let err = Geometry::new(&[32768, 65536], &c).unwrap_err().to_string();
        assert!(
            err.contains("more memory than can be counted")
                && err.contains("2147483648x2147483648 + 2147483648x2147483648"),
            "{err}"
        );
        let huge = 1usize << 33;
        let err = Geometry::new(&[huge, huge], &case(Some([2, 2]), None, 10))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("8589934592x8589934592 WFS frame needs more memory than can be counted"),
            "{err}"
        );
        let mut p = case(None, None, 10);
        p.slopes = SignalKind::Pixels;
        p.valid_pixels = Some(5);
        let err = Geometry::new(&[huge, huge], &p).unwrap_err().to_string();
        assert!(err.contains("more memory than can be counted"), "{err}");
        // A geometry made by hand reports saturated figures rather than panicking.
        let g = Geometry::new(&[10, 10], &case(Some([5, 5]), None, 10)).unwrap();
        let big = Geometry {
            signals: usize::MAX,
            actuators: usize::MAX,
            ..g
        };
        assert_eq!(big.recon_bytes(), u64::MAX);
        assert_eq!(big.memory(), None);
        assert!(big.check_memory(Some(1 << 40), 0).is_err());
    }

    /// What the loop cannot run is refused before anything starts: more modes than the
    /// fewer of the signals and the actuators (a rank-deficient basis timed as a real one),
    /// an integrator whose gain or leak is not finite (NaN passes the clip: NaN commands
    /// for the whole run), a frame of more pixels, or more actuators, than the stages index
    /// in 32 bits.
    #[test]
    fn too_many_modes_a_gain_or_leak_not_finite_and_a_frame_past_32_bits_are_refused() {
        let err = |wfs: &[usize], c: &AoCase| Geometry::derive(wfs, c).unwrap_err().to_string();
        // 7x7 subapertures: 98 signals; 97 actuators.
        assert!(Geometry::derive(&[49, 49], &case(Some([7, 7]), Some(97), 97)).is_ok());
        let e = err(&[49, 49], &case(Some([7, 7]), Some(98), 97));
        assert!(
            e.contains(
                "modes = 98 must be at most 97, the fewer of the 98 signals and the 97 \
                        actuators"
            ),
            "{e}"
        );
        let e = err(&[49, 49], &case(Some([7, 7]), Some(99), 500));
        assert!(e.contains("at most 98"), "{e}");
        for (gain, leak) in [
            (f32::NAN, 0.99),
            (0.3, f32::INFINITY),
            (f32::NEG_INFINITY, 1.0),
        ] {
            let mut c = case(Some([7, 7]), None, 97);
            (c.gain, c.leak) = (gain, leak);
            let e = err(&[49, 49], &c);
            assert!(e.contains("must be finite numbers"), "{gain} {leak}: {e}");
        }
        let mut p = case(None, None, 10);
        p.slopes = SignalKind::Pixels;
        p.valid_pixels = Some(1000);
        let e = err(&[32768, 65537], &p);
        assert!(
            e.contains("32768x65537 WFS frame has 2147516416 pixels")
                && e.contains("at most 2147483648"),
            "{e}"
        );
        // The largest frame the stages index passes the check (its memory is checked apart).
        assert!(Geometry::derive(&[32768, 65536], &p).is_ok());
        let e = err(&[49, 49], &case(Some([7, 7]), None, (1 << 31) + 1));
        assert!(
            e.contains("actuators = 2147483649: the stages index them in 32 bits"),
            "{e}"
        );
    }

    /// What grows with the frame counts: a 30000x30000 px frame with a 2x2 grid and 10
    /// actuators has tiny matrices but 104 B per pixel of streams, bare regions, camera
    /// frames, calibration and buffers (94 GB in all).
    #[test]
    fn a_geometry_whose_frames_do_not_fit_is_refused_with_the_figure() {
        let g = Geometry::derive(&[30000, 30000], &case(Some([2, 2]), None, 10)).unwrap();
        let m = g.memory().unwrap();
        assert_eq!(m.matrices, 10 * 8 * 4);
        assert_eq!(m.frames, 900_000_000 * 104 + 8 * 144 + 10 * 20);
        let err = g.check_memory(Some(64 << 30), 0).unwrap_err().to_string();
        assert!(
            err.contains("needs an estimated 93.87 GB")
                && err.contains("93.60 GB that grows with the 30000x30000 px frame")
                && err.contains("68.72 GB available"),
            "{err}"
        );
        // Pixel signals add the valid-pixel index over every pixel.
        let mut p = case(None, None, 10);
        p.slopes = SignalKind::Pixels;
        p.valid_pixels = Some(100);
        let px = Geometry::derive(&[1000, 1000], &p)
            .unwrap()
            .memory()
            .unwrap();
        assert_eq!(px.frames, 1_000_000 * 110 + 100 * 144 + 10 * 20);
    }

    #[test]
    fn a_geometry_too_big_for_memory_is_refused_with_the_figure() {
        let g = Geometry::new(&[10, 10], &case(Some([5, 5]), None, 10)).unwrap();
        let big = Geometry {
            signals: 200_000,
            actuators: 100_000,
            ..g
        };
        let err = big.check_memory(Some(8 << 30), 0).unwrap_err().to_string();
        assert!(
            err.contains("80.00 GB") && err.contains("100000x200000"),
            "{err}"
        );
    }
}

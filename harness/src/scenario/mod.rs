//! Scenario files (TOML): the schema, its validation, and the expansion into jobs
//! (one per case × size). The schema is documented in `scenarios/README.md`.
//!
//! Every table rejects unknown keys (`deny_unknown_fields`); the error names the key,
//! the table and the line.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use shmstream::WaitStrategy;

pub use crate::cases::ao::geometry::AoCase;
use crate::error::{Context, Result, bail};

/// The numpy dtype names pyshmem (and shmstream) support, with their item sizes.
pub const DTYPES: [(&str, usize); 14] = [
    ("bool", 1),
    ("int8", 1),
    ("uint8", 1),
    ("int16", 2),
    ("uint16", 2),
    ("int32", 4),
    ("uint32", 4),
    ("int64", 8),
    ("uint64", 8),
    ("float16", 2),
    ("float32", 4),
    ("float64", 8),
    ("complex64", 8),
    ("complex128", 16),
];

/// A finite number > 0 (NaN and infinities are rejected).
fn positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

/// A finite number >= 0.
fn non_negative(v: f64) -> bool {
    v.is_finite() && v >= 0.0
}

/// The longest `timeout_s` a scenario may give, seconds (a day): every timeout becomes an
/// instant ahead of now, which a number of seconds beyond any run cannot be.
pub const MAX_TIMEOUT_S: f64 = 86_400.0;

/// Refuses a `timeout_s` that is not a number of seconds in (0, [`MAX_TIMEOUT_S`]]; `table`
/// says where it was set (`"[defaults]"`, or empty inside a `[[case]]`, whose context names it).
fn check_timeout(table: &str, v: f64) -> Result<()> {
    if !(positive(v) && v <= MAX_TIMEOUT_S) {
        bail!(
            "{table}timeout_s = {v} must be a number of seconds above 0 and at most {MAX_TIMEOUT_S} \
             (a day): a case's process still running then is killed and the case reported failed"
        );
    }
    Ok(())
}

/// Refuses a job that times its floor in alternation with ours
/// ([`crate::cases::floor_timer`]) whose timing cannot end within `timeout_s`: the warm-up
/// and every repeat (2 × `min_seconds`, one per side) run whole pairs of slices
/// ([`crate::measure::alternate`]) until their time is up, and a slice runs at least one
/// call, each after a pingpong's `gap_us`: with `P` = 2 × gap, a phase of `secs` lasts at
/// least `P × max(1, ⌈secs / P⌉)`, else its processes would be killed with nothing measured.
fn check_alternated_timeout(j: &Job) -> Result<()> {
    if crate::cases::floor_timer(j).is_none() {
        return Ok(());
    }
    let t = &j.timing;
    let gap = j.gap_us / 1e6;
    let pair = 2.0 * gap;
    // Whole pairs of slices: the phase ends at the first pair that ends past `secs` (the
    // tolerance keeps a whole number of pairs from counting one more).
    let pairs = |secs: f64| (secs / pair - 1e-9).ceil().max(1.0);
    let phase = |secs: f64| if pair > 0.0 { pair * pairs(secs) } else { secs };
    let need = phase(t.warmup) + f64::from(t.repeats) * phase(2.0 * t.min_seconds);
    if need < j.timeout_s {
        return Ok(());
    }
    let (w, m, r) = (t.warmup, t.min_seconds, t.repeats);
    // Sums of tenths print as 2.4000000000000004.
    let need = (need * 1e6).round() / 1e6;
    if gap > 0.0 {
        bail!(
            "P × max(1, ⌈warmup / P⌉) + repeats × P × max(1, ⌈2 × min_seconds / P⌉) with P = \
             2 × gap = {pair} s: {pair} × {} + {r} × {pair} × {} = {need} s, not under \
             timeout_s = {} (ours and its floor alternate a slice at a time, whole pairs of \
             slices until each phase is over, each repeat lasting 2 × min_seconds = 2 × {m}, \
             the warm-up {w}, and every slice runs at least one round trip, after gap_us = \
             {} µs, assuming round trips short against the gap: longer ones end a phase \
             sooner): its processes would be killed with nothing measured; lower gap_us, \
             min_seconds or repeats, or raise timeout_s",
            pairs(w),
            pairs(2.0 * m),
            j.timeout_s,
            j.gap_us
        );
    }
    bail!(
        "warmup + 2 × min_seconds × repeats = {w} + 2 × {m} × {r} = {need} s, not under \
         timeout_s = {} (ours and its floor alternate, each repeat lasting 2 × \
         min_seconds): its processes would be killed with nothing measured; lower \
         min_seconds or repeats, or raise timeout_s",
        j.timeout_s
    );
}

/// Refuses a pingpong or MVM job whose two processes both busy-wait on one core
/// (`[defaults] writer_cpu = reader_cpu`): `wait = "spin"`, the default but for a CPU MVM
/// kernel on every core (whose driver yields). Each would spin through the other's time
/// slice, and every round trip would last a scheduler tick, ours and its floor's alike.
fn check_shared_spin(j: &Job) -> Result<()> {
    let spins = match j.kind {
        Kind::Mvm if !j.device.is_gpu() => crate::cases::mvm_driver_wait(j) == WaitStrategy::Spin,
        Kind::Pingpong | Kind::Mvm => j.wait.is_none_or(|w| w == Wait::Spin),
        _ => false,
    };
    if spins && j.writer_cpu == j.reader_cpu {
        bail!(
            "{}: both processes busy-wait (wait = \"spin\"{}) on one core, [defaults] \
             writer_cpu = reader_cpu = {}: each would spin through the other's time slice, and \
             every round trip would measure the scheduler's tick; give [defaults] writer_cpu \
             and reader_cpu a core each, or set wait = \"park\" or \"adaptive\" in the case",
            j.kind.name(),
            if j.wait.is_none() {
                ", the default"
            } else {
                ""
            },
            j.writer_cpu
        );
    }
    Ok(())
}

/// Refuses a core id no CPU set can name ([`crate::spawn::MAX_CORES`]): pinning there would
/// fail in every process, and no machine has that core, so it is a typo.
fn check_core(table: &str, key: &str, cpu: usize) -> Result<()> {
    let max = crate::spawn::MAX_CORES;
    if cpu >= max {
        bail!(
            "{table}{key} = {cpu}: core ids must be below {max} (the most a CPU set names); \
             set {key} to a core this machine has"
        );
    }
    Ok(())
}

/// Bytes of a payload of `shape` with items of `itemsize` bytes, `None` when they cannot be
/// counted (the product overflows).
pub fn shape_bytes(shape: &[usize], itemsize: usize) -> Option<usize> {
    shape
        .iter()
        .try_fold(itemsize, |bytes, d| bytes.checked_mul(*d))
}

/// `cores` (ascending) as ranges: "0-3, 6, 8-9".
fn core_list(cores: &[usize]) -> String {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &c in cores {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == c => *end = c,
            _ => runs.push((c, c)),
        }
    }
    runs.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Item size in bytes of a numpy dtype name, if it is one of [`DTYPES`].
pub fn itemsize(dtype: &str) -> Option<usize> {
    DTYPES.iter().find(|(n, _)| *n == dtype).map(|(_, s)| *s)
}

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Scenario name; the default output folder is `reports/<name>/`.
    pub name: String,
    /// Free text shown at the top of the report.
    #[serde(default)]
    pub description: Option<String>,
    /// Seconds the host noise probe spins on each of the defaults' cores before the
    /// cases ([`crate::noise`]); 0 skips it.
    #[serde(default = "default_noise_seconds")]
    pub noise_seconds: f64,
    /// Defaults for every case.
    #[serde(default)]
    pub defaults: Defaults,
    /// The cases, in order.
    #[serde(rename = "case", default)]
    pub cases: Vec<CaseSpec>,
}

fn default_noise_seconds() -> f64 {
    3.0
}

/// `[defaults]`: timing and placement shared by every case.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Seconds each measured repeat runs at least.
    pub min_seconds: f64,
    /// Seconds of warm-up before measuring (at least 2 iterations).
    pub warmup: f64,
    /// Measured repeats; the reported rate is their median.
    pub repeats: u32,
    /// Core of the writer (and of in-process cases); one this process may run on.
    pub writer_cpu: usize,
    /// Core of the reader / compute process; one this process may run on.
    pub reader_cpu: usize,
    /// Seconds after which a child process is killed and the case reported as failed.
    pub timeout_s: f64,
    /// Run the pyshmem peer when Python has it.
    pub peer: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            min_seconds: 1.0,
            warmup: 0.2,
            repeats: 3,
            writer_cpu: 0,
            reader_cpu: 1,
            timeout_s: 120.0,
            peer: true,
        }
    }
}

/// What a case measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Write then read in one process (the seed's IO table).
    Roundtrip,
    /// Writer process publishes, reader process waits, reads a safe snapshot, acknowledges.
    Pingpong,
    /// Matrix in a stream, vector per iteration, compute process publishes y = A·x.
    Mvm,
    /// A whole AO loop: camera → slopes → reconstructor → DM, stages as processes.
    #[serde(rename = "ao-loop")]
    AoLoop,
    /// One hot path (write, read, lock, wake, MVM kernel) timed alone in one process,
    /// beside its bare twin: the CI gate's cases (`scenarios/gate.toml`).
    Op,
    /// Frames across two `shmstream-bridge` processes over Zenoh on loopback, beside a
    /// bare Zenoh publisher → subscriber (`cases::bridge`).
    Bridge,
}

impl Kind {
    /// The lowercase name used in files.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Roundtrip => "roundtrip",
            Kind::Pingpong => "pingpong",
            Kind::Mvm => "mvm",
            Kind::AoLoop => "ao-loop",
            Kind::Op => "op",
            Kind::Bridge => "bridge",
        }
    }
}

/// The hot path a `kind = "op"` case times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HotOp {
    /// `write_slice` of a whole frame (lock pair, bracket, copy, timestamp).
    Write,
    /// `read_into_slice` of a published frame (optimistic read, copy, re-check).
    Read,
    /// Taking and releasing the write lock.
    Lock,
    /// Waking a notify stream's waiters (`wake_waiters`, none parked).
    Wake,
    /// The cases' MVM kernel alone, single thread, against the bare kernel function.
    Kernel,
}

impl HotOp {
    /// The lowercase name used in files.
    pub fn name(self) -> &'static str {
        match self {
            HotOp::Write => "write",
            HotOp::Read => "read",
            HotOp::Lock => "lock",
            HotOp::Wake => "wake",
            HotOp::Kernel => "kernel",
        }
    }
}

/// How a waiting side waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Wait {
    /// Busy-wait on the sequence ([`WaitStrategy::Spin`]).
    Spin,
    /// Notify stream; spin for the library's adaptive budget, then park on the futex
    /// ([`WaitStrategy::Adaptive`]). Floor: the same spin budget, then `FUTEX_WAIT`.
    Adaptive,
    /// Notify stream; park on the futex at once ([`WaitStrategy::Park`]). Floor: both
    /// sides asleep in `FUTEX_WAIT`. `"futex"` is accepted for it (older scenarios).
    #[serde(alias = "futex")]
    Park,
}

impl Wait {
    /// The lowercase name used in files.
    pub fn name(self) -> &'static str {
        match self {
            Wait::Spin => "spin",
            Wait::Adaptive => "adaptive",
            Wait::Park => "park",
        }
    }

    /// The library's strategy of the same name.
    pub fn strategy(self) -> WaitStrategy {
        match self {
            Wait::Spin => WaitStrategy::Spin,
            Wait::Adaptive => WaitStrategy::Adaptive,
            Wait::Park => WaitStrategy::Park,
        }
    }

    /// Whether waiters sleep on the futex (notify streams), after spinning or at once.
    pub fn notifies(self) -> bool {
        self != Wait::Spin
    }
}

/// The MVM pipeline variant (the seed's two GPU tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Pipeline {
    /// The vector is written from the host each iteration.
    #[serde(rename = "host-upload")]
    HostUpload,
    /// Vector and matrix stay on the device.
    #[serde(rename = "device-resident")]
    DeviceResident,
    /// Device buffers, and every reader is the stream's GPU consumer (issue #11): its CUDA
    /// stream waits for the frame, copies it and acknowledges; only the timing process's host
    /// waits, once per iteration.
    #[serde(rename = "gpu-consumer")]
    GpuConsumer,
}

impl Pipeline {
    /// The name used in files.
    pub fn name(self) -> &'static str {
        match self {
            Pipeline::HostUpload => "host-upload",
            Pipeline::DeviceResident => "device-resident",
            Pipeline::GpuConsumer => "gpu-consumer",
        }
    }
}

/// Where the payload lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Device {
    /// Host memory.
    Cpu,
    /// CUDA device memory, by ordinal.
    Cuda(u32),
}

impl Device {
    /// Whether this is a GPU device.
    pub fn is_gpu(self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl TryFrom<String> for Device {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "cpu" {
            return Ok(Device::Cpu);
        }
        if let Some(i) = s.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            return Ok(Device::Cuda(i));
        }
        if s == "cuda" {
            return Ok(Device::Cuda(0));
        }
        Err(format!("device {s:?} is neither \"cpu\" nor \"cuda:N\""))
    }
}

impl From<Device> for String {
    fn from(d: Device) -> String {
        d.to_string()
    }
}

fn default_device() -> Device {
    Device::Cpu
}

/// One `[[case]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseSpec {
    /// Case name (the `case` column); default built from kind, wait/pipeline and device.
    #[serde(default)]
    pub name: Option<String>,
    /// What to measure.
    pub kind: Kind,
    /// Shapes to run, e.g. `[[100, 100], [1000, 1000]]`.
    pub sizes: Vec<Vec<usize>>,
    /// numpy dtype name (default "float32"; ao-loop: "uint16", the only one it takes).
    #[serde(default)]
    pub dtype: Option<String>,
    /// "cpu" (default) or "cuda:N".
    #[serde(default = "default_device")]
    pub device: Device,
    /// GPU cases: keep a CPU mirror.
    #[serde(default)]
    pub mirror: Option<bool>,
    /// MVM: "host-upload" (default) or "device-resident". GPU roundtrip and pingpong:
    /// "device-resident" (default: device buffers) or "host-upload" (host slices).
    #[serde(default)]
    pub pipeline: Option<Pipeline>,
    /// Pingpong (and MVM writer): "spin" or "futex" (pingpong default "spin"; MVM default:
    /// spin when the kernel runs on one thread, futex when it uses every core). Bridge: how
    /// the reader at B waits for the mirror, "park" (default) or "spin" (needs `pinned`).
    #[serde(default)]
    pub wait: Option<Wait>,
    /// Bridge only: Zenoh's side of ours and of the floor (both bridges, floor-put,
    /// floor-get) and the writer at A on `writer_cpu`, the reader at B on `reader_cpu`
    /// (default: left to the scheduler).
    #[serde(default)]
    pub pinned: Option<bool>,
    /// Bridge only: both bridges and Zenoh's floor processes run under `SCHED_FIFO` at this
    /// priority (1-99, `shmstream-bridge --rt-priority`); the writer at A and the reader at
    /// B, the application's side, stay under the fair scheduler. (An ao-loop case sets its
    /// own in `ao.rt_priority`.)
    #[serde(default)]
    pub rt_priority: Option<u8>,
    /// Pingpong only: microseconds the writer idles between round trips (lets a futex
    /// waiter fall asleep). Default 0 for spin, 100 for futex.
    #[serde(default)]
    pub gap_us: Option<f64>,
    /// MVM only: kernel threads (default: every core; 1 disables rayon).
    #[serde(default)]
    pub threads: Option<usize>,
    /// kind = "op" only: which hot path.
    #[serde(default)]
    pub op: Option<HotOp>,
    /// Run the pyshmem peer for this case (default: `[defaults] peer`).
    #[serde(default)]
    pub peer: Option<bool>,
    /// Per-case override of `[defaults] min_seconds`.
    #[serde(default)]
    pub min_seconds: Option<f64>,
    /// Per-case override of `[defaults] warmup`.
    #[serde(default)]
    pub warmup: Option<f64>,
    /// Per-case override of `[defaults] repeats`.
    #[serde(default)]
    pub repeats: Option<u32>,
    /// Per-case override of `[defaults] timeout_s`.
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// ao-loop only: the loop's geometry, rate and placement (`[case.ao]`).
    #[serde(default)]
    pub ao: Option<AoCase>,
}

/// Timing of one job.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Timing {
    /// Warm-up seconds.
    pub warmup: f64,
    /// Seconds per repeat.
    pub min_seconds: f64,
    /// Repeats.
    pub repeats: u32,
}

/// One case × size, with every default resolved: what the runner executes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Case name.
    pub case: String,
    /// Kind.
    pub kind: Kind,
    /// Shape of the payload (MVM: the matrix).
    pub shape: Vec<usize>,
    /// numpy dtype name.
    pub dtype: String,
    /// Item size in bytes.
    pub itemsize: usize,
    /// Device.
    pub device: Device,
    /// GPU mirror flag (GPU cases only).
    pub mirror: Option<bool>,
    /// MVM pipeline; GPU roundtrip/pingpong: device buffers or host slices.
    pub pipeline: Option<Pipeline>,
    /// Wait strategy (pingpong; MVM when given).
    pub wait: Option<Wait>,
    /// Pingpong gap between round trips, µs.
    pub gap_us: f64,
    /// MVM kernel threads.
    pub threads: usize,
    /// kind = "op": the hot path.
    #[serde(default)]
    pub op: Option<HotOp>,
    /// Timing.
    pub timing: Timing,
    /// Writer core.
    pub writer_cpu: usize,
    /// Reader core.
    pub reader_cpu: usize,
    /// Child timeout, seconds.
    pub timeout_s: f64,
    /// Run the Python peer.
    pub peer: bool,
    /// ao-loop: geometry, rate, placement.
    #[serde(default)]
    pub ao: Option<AoCase>,
    /// Pingpong floor: record each frame's one-way latency (from [`OneWay`] to the reader
    /// holding the payload, on the shared monotonic clock) instead of the round trip: the
    /// floor of an ao-loop hop, whose receiver wakes from an idle core while the writer's
    /// wake for the acknowledgement comes microseconds after it parked.
    #[serde(default)]
    pub one_way: Option<OneWay>,
    /// One-way pingpong floor of a hop whose receiver wakes ahead of the camera's frames
    /// (`wake_ahead_us`): the floor's reader sleeps until this many ns before each frame is
    /// due (frames come `gap_us` apart), then spins, as that stage does.
    #[serde(default)]
    pub wake_ahead_ns: Option<u64>,
    /// Pingpong floor: payload slots its writer rotates over, as a stream with history
    /// appends each frame to the next slot of its ring (an ao-loop hop's input stream), so
    /// it rarely writes lines the reader still holds. 0 or 1: one payload, as a stream
    /// without history.
    #[serde(default)]
    pub floor_slots: usize,
    /// Pingpong floor: a thread of the reader's process spins on the reader's core for the
    /// whole measurement, so each frame wakes a busy core (a wake-up preempting it) rather
    /// than an idle one, as an ao-loop stage's core is busy when the stage sharing it
    /// computes for longer than a frame period (on this VM an idle core's wake-up costs
    /// twice a busy one's: a 28.8 KB parked round trip read 52-62 µs against 27).
    #[serde(default)]
    pub busy_reader_core: bool,
    /// Every child of the job runs under `SCHED_FIFO` at this priority (ao-loop's
    /// `rt_priority`, carried to its floor's processes).
    #[serde(default)]
    pub rt_priority: Option<u8>,
    /// Every child of the job asks the fair scheduler for this slice, ns (ao-loop's
    /// `slice_us`, carried to its floor's processes).
    #[serde(default)]
    pub slice_ns: Option<u64>,
    /// Bridge: the case's `pinned`.
    #[serde(default)]
    pub pinned: bool,
    /// ao-loop: the camera also publishes a bare frame half a period after each of its
    /// frames, which the stage reading them takes (and, merged, computes on) between its
    /// frames: the floor timed in the loop's own processes
    /// ([`crate::cases::ao::between_frames`]). Set on the runs the floor is compared with,
    /// not from the scenario.
    #[serde(default)]
    pub floor_between_frames: bool,
}

/// Where a one-way floor starts its clock, as the stage that sends on the hop does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OneWay {
    /// Before the publication (the camera stamps a frame, then writes it); the writer
    /// paces as the camera does (sleeps, then spins to the slot).
    Publish,
    /// When the publication, wake included, has returned (a stage's publish time is when
    /// its write returned; the write is part of its compute); the writer sleeps to the
    /// slot, as a stage sleeps until its input comes.
    Published,
}

impl Job {
    /// Number of elements of the payload (a scenario's shapes were counted when it was
    /// parsed: see [`shape_bytes`]; saturated otherwise).
    pub fn elements(&self) -> usize {
        shape_bytes(&self.shape, 1).unwrap_or(usize::MAX)
    }

    /// Payload bytes of one frame (MVM: the matrix; saturated as [`Job::elements`]).
    pub fn payload_bytes(&self) -> usize {
        shape_bytes(&self.shape, self.itemsize).unwrap_or(usize::MAX)
    }

    /// "100x100".
    pub fn shape_str(&self) -> String {
        shape_str(&self.shape)
    }

    /// What a job whose processes ran past `timeout_s` says: that key and the timing that
    /// fills it (`gap_us` where the writer idles before each round trip), with the remedy.
    pub fn timeout_remedy(&self) -> String {
        let t = &self.timing;
        let gap = if self.kind == Kind::Pingpong && self.gap_us > 0.0 {
            format!(", gap_us = {} µs before each round trip", self.gap_us)
        } else {
            String::new()
        };
        format!(
            "the case's timeout_s = {} s; its timing: warmup = {} s, then {} repeat(s) of \
             min_seconds = {} s{gap}; raise timeout_s, or lower min_seconds or repeats{}",
            self.timeout_s,
            t.warmup,
            t.repeats,
            t.min_seconds,
            if gap.is_empty() { "" } else { " or gap_us" }
        )
    }

    /// "case/100x100", used in file names and messages.
    pub fn label(&self) -> String {
        format!("{}/{}", self.case, self.shape_str())
    }
}

/// "100x100" for `[100, 100]`.
pub fn shape_str(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("scenario {}", path.display()))
    }

    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> Result<Self> {
        let s: Scenario =
            toml::from_str(text).map_err(|e| crate::error::Error::msg(e.to_string().trim_end()))?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            bail!("name {:?} must be a plain folder name", self.name);
        }
        let d = &self.defaults;
        if !positive(d.min_seconds)
            || !non_negative(d.warmup)
            || d.repeats == 0
            || d.min_seconds.max(d.warmup) > MAX_TIMEOUT_S
        {
            bail!(
                "[defaults]: min_seconds must be > 0, warmup >= 0 (both at most {MAX_TIMEOUT_S} s, a day), repeats >= 1"
            );
        }
        check_timeout("[defaults] ", d.timeout_s)?;
        check_core("[defaults] ", "writer_cpu", d.writer_cpu)?;
        check_core("[defaults] ", "reader_cpu", d.reader_cpu)?;
        if !non_negative(self.noise_seconds) || self.noise_seconds > 60.0 {
            bail!(
                "noise_seconds = {} must be between 0 (no probe) and 60",
                self.noise_seconds
            );
        }
        if self.cases.is_empty() {
            bail!("no [[case]] tables");
        }
        let mut names = std::collections::HashSet::new();
        for (i, c) in self.cases.iter().enumerate() {
            let name = c.resolved_name();
            // File names (hgrm, plots) and report tables are built from it: other characters
            // would be replaced in file names (two cases sharing one) or break a table's row.
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'))
            {
                bail!(
                    "[[case]] #{}: case name {name:?} must be non-empty and use only letters, \
                     digits, '_', '.' and '-' (set `name` to such a name)",
                    i + 1
                );
            }
            c.validate()
                .and_then(|()| {
                    // A floor timed in alternation with ours fits the case's timeout.
                    // ao-loop: every process paces its frames within the case's timeout, a
                    // run fits this machine's memory, its stages' logs included, the
                    // reconstructor has a core per kernel thread, and busy-waiting stages are
                    // placed on a core each: refused here, not when the case's turn comes.
                    // (Whether those cores can be pinned to here is the job's own matter: a
                    // job that cannot is skipped when its turn comes, `--cases` may leave it
                    // out, and the other cases run.)
                    use crate::cases::ao::placement::Placement;
                    self.case_jobs(c, false).iter().try_for_each(|j| {
                        check_alternated_timeout(j)
                            .and_then(|()| check_shared_spin(j))
                            .and_then(|()| Placement::check_timeout(j))
                            .and_then(|()| Placement::check_memory(j))
                            .and_then(|()| Placement::check_threads(j))
                            .and_then(|()| Placement::check_spin(j))
                    })
                })
                .with_context(|| format!("[[case]] #{} ({name})", i + 1))?;
            if !names.insert(name.clone()) {
                bail!(
                    "[[case]] #{}: duplicate case name {name:?} (set `name`)",
                    i + 1
                );
            }
        }
        Ok(())
    }

    /// What the run says (on stderr and in the report's Pinning row) of core keys naming a
    /// core no process can be pinned to here ([`Placement::pinnable_cores`], tried, not read
    /// from this process's affinity mask: under `taskset` or `isolcpus` a child pins itself
    /// outside that mask wherever the cpuset allows): what the harness places there runs
    /// unpinned. Not a refusal: a 1-core VM or a cpuset still runs every scenario (and
    /// `harness size`, which has no core flags), and says so; a busy-waiting ao-loop job
    /// placed there is skipped ([`Placement::skip_reason`]).
    ///
    /// [`Placement::pinnable_cores`]: crate::cases::ao::placement::Placement::pinnable_cores
    /// [`Placement::skip_reason`]: crate::cases::ao::placement::Placement::skip_reason
    pub fn core_warnings(&self) -> Vec<String> {
        let keys: Vec<usize> = self.core_keys().into_iter().map(|(.., c)| c).collect();
        let own = crate::spawn::allowed_cores();
        crate::cases::ao::placement::Placement::pinnable_cores(&keys)
            .map_or_else(Vec::new, |cores| self.cores_outside(&cores, own.as_deref()))
    }

    /// The cores the scenario's keys pin to ([`Self::core_keys`]), ascending, each once.
    pub fn pinned_cores(&self) -> Vec<usize> {
        let mut cores: Vec<usize> = self.core_keys().into_iter().map(|(.., c)| c).collect();
        cores.sort_unstable();
        cores.dedup();
        cores
    }

    /// The core keys the scenario sets (`writer_cpu`, `reader_cpu`, an ao-loop stage's
    /// `*_cpu`): (table, key, core).
    fn core_keys(&self) -> Vec<(String, &'static str, usize)> {
        let mut out = vec![
            ("[defaults]".into(), "writer_cpu", self.defaults.writer_cpu),
            ("[defaults]".into(), "reader_cpu", self.defaults.reader_cpu),
        ];
        for (i, c) in self.cases.iter().enumerate() {
            let Some(ao) = &c.ao else { continue };
            let table = format!("[[case]] #{} ({}) [case.ao]", i + 1, c.resolved_name());
            for (key, cpu) in [
                ("camera_cpu", ao.camera_cpu),
                ("slopes_cpu", ao.slopes_cpu),
                ("recon_cpu", ao.recon_cpu),
            ] {
                if let Some(cpu) = cpu {
                    out.push((table.clone(), key, cpu));
                }
            }
        }
        out
    }

    /// The core keys naming a core outside `pinnable` (the cores a process can be pinned to
    /// here), each as a line naming the key and the core, and `own` (this process's
    /// affinity mask, cores it can certainly be pinned to; `None`: unknown) as examples.
    fn cores_outside(&self, pinnable: &[usize], own: Option<&[usize]>) -> Vec<String> {
        let such = own.filter(|c| !c.is_empty()).map_or(String::new(), |c| {
            format!(" (such as this process's own cores, {})", core_list(c))
        });
        self.core_keys()
            .into_iter()
            .filter(|(.., cpu)| !pinnable.contains(cpu))
            .map(|(table, key, cpu)| {
                format!(
                    "{table} {key} = {cpu}: no process can be pinned to core {cpu} here (a \
                     core this machine lacks or its cpuset leaves out), so what the harness \
                     places there runs unpinned; set {key} to a core it can be pinned to{such}"
                )
            })
            .collect()
    }

    /// Expands the cases into jobs (case × size), with defaults resolved. `quick`
    /// divides the timing by 5 and runs one repeat.
    pub fn jobs(&self, quick: bool, filter: Option<&regex::Regex>) -> Vec<Job> {
        let mut out = Vec::new();
        for c in &self.cases {
            if let Some(re) = filter
                && !re.is_match(&c.resolved_name())
                && !re.is_match(c.kind.name())
            {
                continue;
            }
            out.extend(self.case_jobs(c, quick));
        }
        out
    }

    /// The jobs of case `c` (one per size), with defaults resolved; `quick` as [`Self::jobs`].
    fn case_jobs(&self, c: &CaseSpec, quick: bool) -> Vec<Job> {
        let d = &self.defaults;
        let case = c.resolved_name();
        let mut out = Vec::new();
        let mut timing = Timing {
            warmup: c.warmup.unwrap_or(d.warmup),
            min_seconds: c.min_seconds.unwrap_or(d.min_seconds),
            repeats: c.repeats.unwrap_or(d.repeats),
        };
        if quick {
            timing.warmup /= 5.0;
            timing.min_seconds /= 5.0;
            timing.repeats = 1;
        }
        let wait = match c.kind {
            Kind::Pingpong => Some(c.wait.unwrap_or(Wait::Spin)),
            _ => c.wait,
        };
        let gap_us = c.gap_us.unwrap_or(match c.kind {
            Kind::Pingpong if wait == Some(Wait::Park) => 100.0,
            // One frame a millisecond across the bridge's latency phase.
            Kind::Bridge => 1000.0,
            _ => 0.0,
        });
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let dtype = c.resolved_dtype().to_string();
        for shape in &c.sizes {
            out.push(Job {
                case: case.clone(),
                kind: c.kind,
                shape: shape.clone(),
                itemsize: itemsize(&dtype).unwrap_or(1),
                dtype: dtype.clone(),
                device: c.device,
                mirror: if c.device.is_gpu() {
                    Some(c.mirror.unwrap_or(false))
                } else {
                    None
                },
                pipeline: c.resolved_pipeline(),
                wait,
                gap_us,
                threads: if c.kind == Kind::Op {
                    1
                } else {
                    c.threads.unwrap_or(cores)
                },
                op: c.op,
                timing,
                writer_cpu: d.writer_cpu,
                reader_cpu: d.reader_cpu,
                timeout_s: c.timeout_s.unwrap_or(d.timeout_s),
                peer: !matches!(c.kind, Kind::Op | Kind::Bridge) && c.peer.unwrap_or(d.peer),
                ao: c.ao.clone(),
                one_way: None,
                wake_ahead_ns: None,
                floor_slots: 0,
                busy_reader_core: false,
                rt_priority: c
                    .ao
                    .as_ref()
                    .and_then(|ao| ao.rt_priority)
                    .or(c.rt_priority),
                slice_ns: c.ao.as_ref().and_then(|ao| ao.slice_ns()),
                pinned: c.pinned.unwrap_or(false),
                floor_between_frames: false,
            });
        }
        out
    }
}

impl CaseSpec {
    /// The case name: `name`, or built from kind, wait/pipeline and device.
    pub fn resolved_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let mut n = self.kind.name().to_string();
        match self.kind {
            Kind::Pingpong => {
                n.push('-');
                n.push_str(self.wait.unwrap_or(Wait::Spin).name());
            }
            Kind::Mvm => {
                n.push('-');
                n.push_str(self.pipeline.unwrap_or(Pipeline::HostUpload).name());
            }
            Kind::Op => {
                if let Some(op) = self.op {
                    n.push('-');
                    n.push_str(op.name());
                }
            }
            Kind::AoLoop => {
                let ao = self.ao.as_ref();
                if ao.is_some_and(|a| a.slopes == crate::cases::ao::geometry::SignalKind::Pixels) {
                    n.push_str("-pixels");
                }
                if ao.is_some_and(|a| a.merged) {
                    n.push_str("-merged");
                }
            }
            Kind::Bridge => {
                if self.pinned == Some(true) {
                    n.push_str("-pinned");
                }
                if self.wait == Some(Wait::Spin) {
                    n.push_str("-spin");
                }
                if self.rt_priority.is_some() {
                    n.push_str("-rt");
                }
            }
            Kind::Roundtrip => {}
        }
        match self.resolved_pipeline() {
            Some(Pipeline::HostUpload) if self.kind != Kind::Mvm => n.push_str("-host"),
            Some(Pipeline::GpuConsumer) if self.kind != Kind::Mvm => n.push_str("-consumer"),
            _ => {}
        }
        if let Device::Cuda(i) = self.device {
            n.push_str(&format!("-cuda{i}"));
            if self.mirror == Some(true) {
                n.push_str("-mirror");
            }
        } else if let Some(d) = self.dtype.as_deref().filter(|d| *d != "float32") {
            n.push('-');
            n.push_str(d);
        }
        n
    }

    /// The dtype key, else its default: "float32", but "uint16" for an ao-loop case, whose
    /// frames are uint16.
    pub fn resolved_dtype(&self) -> &str {
        match (&self.dtype, self.kind) {
            (Some(d), _) => d,
            (None, Kind::AoLoop) => "uint16",
            (None, _) => "float32",
        }
    }

    /// The pipeline: MVM (default host-upload); GPU roundtrip and pingpong (default
    /// device-resident: device buffers; host-upload: host slices); `None` otherwise.
    pub fn resolved_pipeline(&self) -> Option<Pipeline> {
        match self.kind {
            Kind::Mvm => Some(self.pipeline.unwrap_or(Pipeline::HostUpload)),
            _ if self.device.is_gpu() => Some(self.pipeline.unwrap_or(Pipeline::DeviceResident)),
            _ => None,
        }
    }

    fn validate(&self) -> Result<()> {
        let dtype = self.resolved_dtype();
        if itemsize(dtype).is_none() {
            let names: Vec<_> = DTYPES.iter().map(|(n, _)| *n).collect();
            bail!("dtype {dtype:?} is not one of {}", names.join(", "));
        }
        if self.sizes.is_empty() {
            bail!("sizes is empty");
        }
        let item = itemsize(dtype).unwrap_or(1);
        for (i, s) in self.sizes.iter().enumerate() {
            // Its rows would share one key: compare keeps one, hgrm files overwrite each other.
            if self.sizes[..i].contains(s) {
                bail!("sizes lists the shape {} twice", shape_str(s));
            }
            if s.is_empty() || s.contains(&0) {
                bail!("shape {s:?}: every shape needs at least one dimension, all > 0");
            }
            if shape_bytes(s, item).is_none() {
                bail!(
                    "shape {s:?}: a payload of {item}-byte items that large needs more memory \
                     than can be counted (over 2^{} bytes); use a smaller shape",
                    usize::BITS
                );
            }
        }
        if let Some(t) = self.timeout_s {
            check_timeout("", t)?;
        }
        if self.mirror.is_some() && !self.device.is_gpu() {
            bail!(
                "mirror applies to GPU devices only (device = \"{}\")",
                self.device
            );
        }
        if self.pipeline.is_some() && self.kind != Kind::Mvm && !self.device.is_gpu() {
            bail!("pipeline applies to kind = \"mvm\" and to GPU cases only");
        }
        // The ao-loop's GPU form meets on host streams of uint16 frames.
        if self.device.is_gpu() && self.kind != Kind::AoLoop && dtype != "float32" {
            bail!("GPU cases support dtype = \"float32\" only");
        }
        if self.pipeline == Some(Pipeline::DeviceResident) && !self.device.is_gpu() {
            bail!("pipeline = \"device-resident\" needs a GPU device");
        }
        if self.pipeline == Some(Pipeline::GpuConsumer)
            && !(self.device.is_gpu() && matches!(self.kind, Kind::Pingpong | Kind::Mvm))
        {
            bail!("pipeline = \"gpu-consumer\" applies to GPU pingpong and mvm cases");
        }
        if self.pipeline == Some(Pipeline::GpuConsumer) && self.mirror == Some(true) {
            bail!("pipeline = \"gpu-consumer\" reads device buffers: mirror = true adds nothing");
        }
        if self.wait.is_some() && matches!(self.kind, Kind::Roundtrip | Kind::Op) {
            bail!("wait applies to pingpong, mvm and bridge only");
        }
        if self.pinned.is_some() && self.kind != Kind::Bridge {
            bail!("pinned applies to kind = \"bridge\" only (the other kinds are always pinned)");
        }
        if let Some(p) = self.rt_priority {
            if self.kind != Kind::Bridge {
                bail!(
                    "rt_priority applies to kind = \"bridge\" only (an ao-loop case sets ao.rt_priority)"
                );
            }
            if !(1..=99).contains(&p) {
                bail!("rt_priority is a SCHED_FIFO priority, 1 to 99");
            }
        }
        if self.kind == Kind::Bridge {
            match self.wait {
                Some(Wait::Adaptive) => {
                    bail!("the bridge case's reader parks or spins: wait = \"park\" or \"spin\"")
                }
                // Left to the scheduler, a spinning reader shares its core with Zenoh's
                // threads, and ours came in under Zenoh's floor (0.56-0.67x at 64 B).
                Some(Wait::Spin) if self.pinned != Some(true) => bail!(
                    "a spinning bridge reader needs pinned = true (unpinned, it takes a core the bridges' threads land on)"
                ),
                _ => {}
            }
        }
        if self.gap_us.is_some() && !matches!(self.kind, Kind::Pingpong | Kind::Bridge) {
            bail!("gap_us applies to kind = \"pingpong\" and \"bridge\" only");
        }
        if self.kind == Kind::Bridge {
            if self.device.is_gpu() {
                bail!("kind = \"bridge\" carries host streams only");
            }
            if self.gap_us.is_some_and(|g| !positive(g)) {
                bail!("gap_us of a bridge case must be > 0 (the latency phase's frame period)");
            }
            let small = self
                .sizes
                .iter()
                .any(|s| shape_bytes(s, item).is_some_and(|b| b < 16));
            if small {
                bail!("bridge payloads must be at least 16 bytes (they carry a write time)");
            }
        }
        if self.threads.is_some() && self.kind != Kind::Mvm {
            bail!("threads applies to kind = \"mvm\" only");
        }
        if self.threads == Some(0) {
            bail!(
                "threads = 0: the MVM kernel needs at least 1 thread (1 runs it on the compute \
                 core alone; leave threads out for one per core)"
            );
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if let Some(t) = self.threads.filter(|t| *t > cores) {
            bail!(
                "threads = {t}: this machine has {cores} core(s); the MVM kernel's workers are \
                 pinned one per core (leave threads out for one per core)"
            );
        }
        match (self.kind, self.op) {
            (Kind::Op, None) => {
                bail!(
                    "kind = \"op\" needs op = \"write\", \"read\", \"lock\", \"wake\" or \"kernel\""
                )
            }
            (Kind::Op, Some(op)) => {
                if self.device.is_gpu() {
                    bail!("kind = \"op\" runs on the CPU only");
                }
                if op == HotOp::Kernel
                    && (dtype != "float32" || self.sizes.iter().any(|s| s.len() != 2))
                {
                    bail!("op = \"kernel\" takes float32 matrix shapes [rows, cols]");
                }
            }
            (_, Some(_)) => bail!("op applies to kind = \"op\" only"),
            _ => {}
        }
        if self.kind == Kind::AoLoop {
            self.validate_ao()?;
        } else if self.ao.is_some() {
            bail!("[case.ao] applies to kind = \"ao-loop\" only");
        }
        if self.kind == Kind::Mvm {
            if dtype != "float32" {
                bail!("mvm supports dtype = \"float32\" only");
            }
            if self.sizes.iter().any(|s| s.len() != 2) {
                bail!("mvm sizes are matrix shapes [rows, cols]");
            }
        }
        if self
            .min_seconds
            .is_some_and(|v| !positive(v) || v > MAX_TIMEOUT_S)
            || self.repeats == Some(0)
            || self
                .warmup
                .is_some_and(|v| !non_negative(v) || v > MAX_TIMEOUT_S)
        {
            bail!(
                "min_seconds must be > 0, warmup >= 0 (both at most {MAX_TIMEOUT_S} s, a day), repeats >= 1"
            );
        }
        if self
            .gap_us
            .is_some_and(|g| !non_negative(g) || g > MAX_TIMEOUT_S * 1e6)
        {
            bail!("gap_us must be a number of microseconds >= 0 and at most a day");
        }
        Ok(())
    }

    fn validate_ao(&self) -> Result<()> {
        let Some(ao) = &self.ao else {
            bail!("kind = \"ao-loop\" needs a [case.ao] table (actuators, rate_hz, ...)");
        };
        for (key, cpu) in [
            ("camera_cpu", ao.camera_cpu),
            ("slopes_cpu", ao.slopes_cpu),
            ("recon_cpu", ao.recon_cpu),
        ] {
            cpu.map_or(Ok(()), |cpu| check_core("[case.ao] ", key, cpu))?;
        }
        if let Some(d) = self.dtype.as_deref().filter(|d| *d != "uint16") {
            bail!(
                "ao-loop frames are uint16, not dtype = {d:?}: leave dtype out or set \
                 dtype = \"uint16\""
            );
        }
        if self.wait.is_some() || self.pipeline.is_some() {
            bail!("ao-loop: set wait inside [case.ao]; pipeline does not apply");
        }
        if let Some(r) = self.repeats {
            bail!(
                "ao-loop: repeats = {r} does not apply (the loop runs its min_seconds once, \
                 cut into runs with a floor pass beside each): remove repeats from this case \
                 and set [case.ao] runs (1 to 20) instead"
            );
        }
        for s in &self.sizes {
            crate::cases::ao::geometry::Geometry::new(s, ao)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
[defaults]
min_seconds = 0.1
[[case]]
kind = "roundtrip"
sizes = [[100, 100], [10]]
[[case]]
kind = "pingpong"
wait = "futex"
sizes = [[16]]
dtype = "uint8"
[[case]]
kind = "mvm"
sizes = [[100, 100]]
device = "cuda:0"
pipeline = "device-resident"
"#;

    #[test]
    fn a_valid_scenario_expands_into_one_job_per_size() {
        let sut = Scenario::parse(GOOD).unwrap();
        let jobs = sut.jobs(false, None);
        assert_eq!(jobs.len(), 4);
        assert_eq!(jobs[0].case, "roundtrip");
        assert_eq!(
            jobs[2].case, "pingpong-park-uint8",
            "\"futex\" is the old name of park"
        );
        assert_eq!(jobs[2].gap_us, 100.0);
        assert_eq!(jobs[2].payload_bytes(), 16);
        assert_eq!(jobs[3].case, "mvm-device-resident-cuda0");
        assert_eq!(jobs[3].device, Device::Cuda(0));
        assert_eq!(jobs[3].mirror, Some(false));
        assert_eq!(jobs[0].timing.min_seconds, 0.1);
        assert_eq!(jobs[0].timing.repeats, 3);
    }

    #[test]
    fn quick_and_filter_shrink_the_job_list() {
        let sut = Scenario::parse(GOOD).unwrap();
        let re = regex::Regex::new("^ping").unwrap();
        let jobs = sut.jobs(true, Some(&re));
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].timing.repeats, 1);
        assert!((jobs[0].timing.min_seconds - 0.02).abs() < 1e-12);
    }

    #[test]
    fn a_shape_listed_twice_in_a_case_is_an_error_naming_the_case_and_shape() {
        let err =
            Scenario::parse("name = \"x\"\n[[case]]\nkind=\"roundtrip\"\nsizes=[[16],[4],[16]]\n")
                .unwrap_err()
                .to_string();
        assert_eq!(
            err, "[[case]] #1 (roundtrip): sizes lists the shape 16 twice",
            "{err}"
        );
    }

    #[test]
    fn an_unknown_top_level_key_is_an_error_naming_it() {
        let err =
            Scenario::parse("name = \"x\"\nbogus = 1\n[[case]]\nkind=\"mvm\"\nsizes=[[2,2]]\n")
                .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn the_noise_probe_lasts_3_s_unless_the_scenario_says_and_stays_within_a_minute() {
        assert_eq!(Scenario::parse(GOOD).unwrap().noise_seconds, 3.0);
        let with = |v: &str| {
            Scenario::parse(&format!(
                "name = \"x\"\nnoise_seconds = {v}\n[[case]]\nkind=\"mvm\"\nsizes=[[2,2]]\n"
            ))
        };
        assert_eq!(with("0").unwrap().noise_seconds, 0.0);
        assert_eq!(with("0.5").unwrap().noise_seconds, 0.5);
        for bad in ["-1", "61", "nan"] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains("noise_seconds"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_unknown_case_key_is_an_error_naming_it() {
        let err = Scenario::parse(
            "name = \"x\"\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\nsize=[[3]]\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("size") && msg.contains("unknown field"),
            "{msg}"
        );
    }

    #[test]
    fn an_unknown_defaults_key_is_an_error_naming_it() {
        let err = Scenario::parse(
            "name = \"x\"\n[defaults]\nwarmup_s = 1\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("warmup_s"), "{err}");
    }

    #[test]
    fn misplaced_keys_and_bad_values_are_rejected() {
        for (body, needle) in [
            (
                "kind=\"roundtrip\"\nsizes=[[2]]\nwait=\"spin\"",
                "wait applies",
            ),
            (
                "kind=\"roundtrip\"\nsizes=[[2]]\nmirror=true",
                "mirror applies",
            ),
            (
                "kind=\"pingpong\"\nsizes=[[2]]\npipeline=\"host-upload\"",
                "pipeline applies",
            ),
            ("kind=\"mvm\"\nsizes=[[2]]", "[rows, cols]"),
            ("kind=\"mvm\"\nsizes=[[2,2]]\ndtype=\"float64\"", "float32"),
            (
                "kind=\"roundtrip\"\nsizes=[[2]]\ndtype=\"float128\"",
                "float128",
            ),
            ("kind=\"roundtrip\"\nsizes=[[0]]", "all > 0"),
            ("kind=\"roundtrip\"\nsizes=[[2]]\ndevice=\"tpu\"", "tpu"),
            ("kind=\"teleport\"\nsizes=[[2]]", "teleport"),
            ("kind=\"op\"\nsizes=[[2]]", "needs op ="),
            (
                "kind=\"roundtrip\"\nsizes=[[2]]\nop=\"write\"",
                "op applies",
            ),
            ("kind=\"op\"\nop=\"kernel\"\nsizes=[[2]]", "matrix shapes"),
            (
                "kind=\"op\"\nop=\"write\"\nsizes=[[2]]\nwait=\"spin\"",
                "wait applies",
            ),
            (
                "kind=\"bridge\"\nsizes=[[64]]\ndtype=\"uint8\"\nwait=\"adaptive\"",
                "parks or spins",
            ),
            (
                "kind=\"bridge\"\nsizes=[[64]]\ndtype=\"uint8\"\nwait=\"spin\"",
                "needs pinned = true",
            ),
            (
                "kind=\"roundtrip\"\nsizes=[[2]]\npinned=true",
                "pinned applies",
            ),
            (
                "kind=\"pingpong\"\nsizes=[[2]]\nrt_priority=20",
                "rt_priority applies",
            ),
            (
                "kind=\"bridge\"\nsizes=[[64]]\ndtype=\"uint8\"\nrt_priority=100",
                "1 to 99",
            ),
        ] {
            let err = Scenario::parse(&format!("name=\"x\"\n[[case]]\n{body}\n")).unwrap_err();
            assert!(err.to_string().contains(needle), "{body}: {err}");
        }
    }

    /// `[defaults] timeout_s` and a case's own are numbers of seconds up to a day: beyond,
    /// the runner's `Duration::from_secs_f64` or `Instant::now() + timeout` panicked.
    #[test]
    fn every_timeout_is_a_number_of_seconds_up_to_a_day() {
        let with = |defaults: &str, case: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\n{defaults}\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n{case}\n"
            ))
        };
        for bad in ["1e20", "0", "-1", "nan", "inf", "86401"] {
            let err = with(&format!("timeout_s = {bad}"), "")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("[defaults] timeout_s = ") && err.contains("at most 86400"),
                "{bad}: {err}"
            );
            let err = with("", &format!("timeout_s = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("[[case]] #1 (roundtrip): timeout_s = ")
                    && err.contains("at most 86400"),
                "{bad}: {err}"
            );
        }
        let s = with(
            "timeout_s = 86400",
            "timeout_s = 0.5\nmin_seconds = 0.1\nrepeats = 1",
        )
        .unwrap();
        assert_eq!(s.jobs(false, None)[0].timeout_s, 0.5);
        // The other durations become instants ahead of now as well.
        for (defaults, case) in [
            ("min_seconds = 1e20", ""),
            ("warmup = 1e20", ""),
            ("", "min_seconds = 1e20"),
            ("", "warmup = 1e20"),
        ] {
            let err = with(defaults, case).unwrap_err().to_string();
            assert!(err.contains("at most 86400 s"), "{defaults}{case}: {err}");
        }
        for gap in ["-1", "1e30", "nan"] {
            let err = Scenario::parse(&format!(
                "name=\"x\"\n[[case]]\nkind=\"pingpong\"\nsizes=[[8]]\ngap_us = {gap}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains("gap_us must be"), "{gap}: {err}");
        }
    }

    /// A shape whose bytes overflow is refused at parse, for every kind (the bridge's size
    /// check and `Job::payload_bytes` multiplied without a check and panicked).
    #[test]
    fn a_shape_whose_bytes_cannot_be_counted_is_refused_not_a_panic() {
        for body in [
            "kind=\"roundtrip\"\nsizes=[[4294967296, 4294967296]]",
            "kind=\"pingpong\"\nsizes=[[8], [4294967296, 4294967296]]",
            "kind=\"bridge\"\ndtype=\"uint8\"\nsizes=[[4294967296, 4294967296]]",
            "kind=\"mvm\"\nsizes=[[4294967296, 4294967296]]",
            "kind=\"roundtrip\"\ndtype=\"complex128\"\nsizes=[[1152921504606846976]]",
        ] {
            let err = Scenario::parse(&format!("name=\"x\"\n[[case]]\n{body}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("[[case]] #1")
                    && err.contains("needs more memory than can be counted")
                    && err.contains("use a smaller shape"),
                "{body}: {err}"
            );
        }
        // A job made by hand saturates rather than panicking.
        let mut job = Scenario::parse(GOOD).unwrap().jobs(false, None).remove(0);
        job.shape = vec![1 << 32, 1 << 32];
        assert_eq!(job.payload_bytes(), usize::MAX);
        assert_eq!(job.elements(), usize::MAX);
    }

    /// An ao-loop rate so low that the fewest frames a process paces take longer than the
    /// case's timeout could only time out: refused, naming both figures; so is a case whose
    /// seconds run its peer past it.
    #[test]
    fn an_ao_rate_whose_frames_cannot_fit_the_timeout_is_refused_naming_both() {
        let ao = |rate: &str, defaults: &str, case: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\n{defaults}\n[[case]]\nkind=\"ao-loop\"\n\
                 sizes=[[8, 8]]\n{case}\n[case.ao]\nsubapertures=[2, 2]\nactuators=5\nrate_hz={rate}\n\
                 ladder=false\n"
            ))
        };
        // 0.1 Hz: the floor's 50 + 10 frames take 600 s, the runs' 30 + 1 take 310 s.
        let err = ao("0.1", "peer = false", "").unwrap_err().to_string();
        assert!(
            err.starts_with("[[case]] #1 (ao-loop): ao-loop: at rate_hz = 0.1")
                && err.contains("60 frames, 600.0 s")
                && err.contains("timeout_s = 120")
                && err.contains("above 600.0")
                && err.contains("rate_hz above 0.500 Hz"),
            "{err}"
        );
        // The case's own timeout is the one compared.
        let err = ao("1", "peer = false", "timeout_s = 45")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("60 frames, 60.0 s") && err.contains("timeout_s = 45"),
            "{err}"
        );
        assert!(ao("1", "peer = false", "timeout_s = 61").is_ok());
        assert!(ao("0.6", "timeout_s = 120\npeer = false", "").is_ok());
        // The peer's loop runs the case's whole seconds in one go.
        let err = ao("1000", "timeout_s = 60\npeer = true\nmin_seconds = 100", "")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the pyshmem peer's loop publishes 100200 frames, 100.2 s")
                && err.contains("shorten min_seconds / warmup, or set peer = false"),
            "{err}"
        );
    }

    /// An ao-loop case refuses `repeats` (the loop is cut by `[case.ao] runs`), naming the
    /// key and the remedy; `[defaults] repeats`, which every case shares, stays accepted.
    #[test]
    fn an_ao_loop_case_refuses_repeats_pointing_to_runs() {
        let ao = |defaults: &str, case: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\npeer = false\n{defaults}\n[[case]]\nkind=\"ao-loop\"\n\
                 sizes=[[8, 8]]\n{case}\n[case.ao]\nsubapertures=[2, 2]\nactuators=5\n\
                 rate_hz=1000\nladder=false\n"
            ))
        };
        let err = ao("", "repeats = 3").unwrap_err().to_string();
        assert!(
            err.starts_with("[[case]] #1 (ao-loop): ao-loop: repeats = 3 does not apply")
                && err.contains("set [case.ao] runs"),
            "{err}"
        );
        assert!(ao("repeats = 3", "").is_ok());
    }

    /// The rate ladder's rungs must fit the case's timeout too: its slowest possible rung
    /// (the rate halved at each try) or a long `ladder_seconds` is refused at parse, naming
    /// the case, the figures and the remedies.
    #[test]
    fn an_ao_ladder_whose_rungs_cannot_fit_the_timeout_is_refused_naming_the_case() {
        let ao = |rate: &str, timeout: &str, extra: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\npeer = false\ntimeout_s = {timeout}\n[[case]]\n\
                 kind=\"ao-loop\"\nsizes=[[8, 8]]\n[case.ao]\nsubapertures=[2, 2]\n\
                 actuators=5\nrate_hz={rate}\n{extra}"
            ))
        };
        // 10 Hz: the runs fit 61 s, but a rung at 10/128 Hz publishes 31 frames in 396.8 s.
        let err = ao("10", "61", "").unwrap_err().to_string();
        assert!(
            err.starts_with("[[case]] #1 (ao-loop): ao-loop: at rate_hz = 10 the rate ladder's")
                && err.contains("slowest rung, at 0.078125 Hz")
                && err.contains("31 frames, 396.8 s")
                && err.contains("raise timeout_s above 396.8")
                && err.contains("raise rate_hz above 65.049 Hz, or set ladder = false"),
            "{err}"
        );
        assert!(ao("10", "61", "ladder = false").is_ok());
        assert!(ao("10", "400", "").is_ok());
        // Long rungs: their seconds, not their rate, are the remedy.
        let err = ao("1000", "61", "ladder_seconds = 100")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("shorten ladder_seconds / warmup, or set ladder = false"),
            "{err}"
        );
        // Rungs longer than any timeout: refused naming the key, not an overflow panic in
        // counting their frames.
        let err = ao("1000", "61", "ladder_seconds = 1e20")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ladder_seconds = 100000000000000000000 must be at most 86400"),
            "{err}"
        );
    }

    /// A split ao-loop case whose busy-waiting stages share a core is refused when the
    /// scenario is read, before the cases ahead of it run, naming the case and the core.
    #[test]
    fn a_spinning_ao_case_on_a_shared_core_is_refused_before_any_case_runs() {
        let text = |wait: &str| {
            format!(
                "name=\"x\"\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n[[case]]\n\
                 kind=\"ao-loop\"\nsizes=[[8, 8]]\n[case.ao]\nsubapertures=[2, 2]\n\
                 actuators=5\nrate_hz=1000\nladder=false\nslopes_cpu=1\nrecon_cpu=1\n\
                 wait=\"{wait}\"\n"
            )
        };
        let err = Scenario::parse(&text("spin")).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "[[case]] #2 (ao-loop): ao-loop: wait = \"spin\" needs a core per stage"
            ) && err.contains("slopes and recon share cpu 1"),
            "{err}"
        );
        assert!(Scenario::parse(&text("park")).is_ok());
    }

    #[test]
    fn a_pinned_bridge_case_with_a_spinning_reader_says_so_in_its_name() {
        let s = Scenario::parse(
            "name=\"x\"\n[[case]]\nkind=\"bridge\"\nsizes=[[64]]\ndtype=\"uint8\"\npinned=true\nwait=\"spin\"\n",
        )
        .unwrap();
        assert_eq!(s.cases[0].resolved_name(), "bridge-pinned-spin-uint8");
        assert!(s.jobs(false, None)[0].pinned);
    }

    #[test]
    fn a_bridge_case_under_sched_fifo_carries_its_priority_and_says_so_in_its_name() {
        let s = Scenario::parse(
            "name=\"x\"\n[[case]]\nkind=\"bridge\"\nsizes=[[64]]\ndtype=\"uint8\"\npinned=true\nrt_priority=20\n",
        )
        .unwrap();
        assert_eq!(s.cases[0].resolved_name(), "bridge-pinned-rt-uint8");
        assert_eq!(s.jobs(false, None)[0].rt_priority, Some(20));
    }

    /// A core key naming a core no process can be pinned to here is warned of, naming the
    /// key and the core (its children would run unpinned while the report said otherwise),
    /// and still parses: a 1-core VM or a cpuset runs every scenario. Both default keys name
    /// a far core, so the machine decides nothing; the rest on an injected pinnable set.
    #[test]
    fn a_core_no_process_can_be_pinned_to_is_warned_of_naming_the_key_and_the_core() {
        let far = Scenario::parse(
            "name=\"x\"\n[defaults]\nwriter_cpu = 1023\nreader_cpu = 1023\n[[case]]\n\
             kind=\"roundtrip\"\nsizes=[[2]]\n",
        )
        .unwrap();
        let warned = far.core_warnings();
        assert_eq!(warned.len(), 2, "{warned:?}");
        for (line, key) in warned.iter().zip(["writer_cpu", "reader_cpu"]) {
            assert!(
                line.starts_with(&format!(
                    "[defaults] {key} = 1023: no process can be pinned to core 1023 here"
                )) && line.contains(&format!("set {key} to a core it can be pinned to")),
                "{warned:?}"
            );
        }
        let two = [0, 1];
        let sut = Scenario::parse(
            "name=\"x\"\n[defaults]\nreader_cpu = 7\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n",
        )
        .unwrap();
        assert_eq!(
            sut.cores_outside(&two, Some(&two)),
            vec![
                "[defaults] reader_cpu = 7: no process can be pinned to core 7 here (a core this \
                 machine lacks or its cpuset leaves out), so what the harness places there runs \
                 unpinned; set reader_cpu to a core it can be pinned to (such as this process's \
                 own cores, 0-1)"
                    .to_owned()
            ]
        );
        assert!(sut.cores_outside(&two, None)[0].ends_with("to a core it can be pinned to"));
        assert!(sut.cores_outside(&[0, 7], None).is_empty());
        for key in ["camera_cpu", "slopes_cpu", "recon_cpu"] {
            let sut = Scenario::parse(&format!(
                "name=\"x\"\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n[[case]]\n\
                 kind=\"ao-loop\"\nsizes=[[8, 8]]\n[case.ao]\nsubapertures=[2, 2]\n\
                 actuators=5\nrate_hz=1000\n{key} = 2\n"
            ))
            .unwrap();
            let warned = sut.cores_outside(&two, None);
            assert!(
                warned.len() == 1
                    && warned[0].starts_with(&format!(
                        "[[case]] #2 (ao-loop) [case.ao] {key} = 2: no process can be pinned to \
                         core 2 here"
                    )),
                "{warned:?}"
            );
            assert!(sut.cores_outside(&[0, 1, 2], None).is_empty());
        }
        assert_eq!(core_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3, 6, 8-9");
    }

    /// The warning follows where a process can be pinned, not this process's affinity mask:
    /// from a thread whose mask is one core (as under `taskset -c`, or a stage already
    /// pinned), a core key naming another core of the machine is not warned of, since a
    /// child pins itself there all the same. Needs two cores this process may run on.
    #[test]
    fn a_core_outside_the_affinity_mask_but_pinnable_is_not_warned_of() {
        let cores = crate::spawn::allowed_cores().unwrap();
        let [mine, other, ..] = cores[..] else {
            eprintln!("one core: nothing outside the mask to pin to");
            return;
        };
        let sut = Scenario::parse(&format!(
            "name=\"x\"\n[defaults]\nwriter_cpu = {mine}\nreader_cpu = {other}\n[[case]]\n\
             kind=\"roundtrip\"\nsizes=[[2]]\n"
        ))
        .unwrap();
        let (mask, warned) = std::thread::spawn(move || {
            assert!(crate::spawn::pin_to(mine));
            (crate::spawn::allowed_cores().unwrap(), sut.core_warnings())
        })
        .join()
        .unwrap();
        assert_eq!(mask, [mine]);
        assert!(warned.is_empty(), "{warned:?}");
    }

    /// A core id no CPU set can name (1024 and up) panicked in every process that pinned to
    /// it: refused, naming the table and the key, the default keys and a stage's alike.
    #[test]
    fn a_core_id_no_cpu_set_can_name_is_refused_naming_the_case_and_key() {
        for key in ["writer_cpu", "reader_cpu"] {
            let err = Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\n{key} = 100000\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n"
            ))
            .unwrap_err()
            .to_string();
            assert_eq!(
                err,
                format!(
                    "[defaults] {key} = 100000: core ids must be below 1024 (the most a CPU set \
                     names); set {key} to a core this machine has"
                )
            );
        }
        for key in ["camera_cpu", "slopes_cpu", "recon_cpu"] {
            let err = Scenario::parse(&format!(
                "name=\"x\"\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n[[case]]\n\
                 kind=\"ao-loop\"\nsizes=[[8, 8]]\n[case.ao]\nsubapertures=[2, 2]\n\
                 actuators=5\nrate_hz=1000\n{key} = 1024\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with(&format!(
                    "[[case]] #2 (ao-loop): [case.ao] {key} = 1024: core ids must be below 1024"
                )),
                "{err}"
            );
        }
        assert!(!crate::spawn::pin_to(100_000));
    }

    /// `threads = 0` was run on one thread without a word: refused, naming the remedy.
    #[test]
    fn an_mvm_case_with_no_threads_is_refused() {
        let err =
            Scenario::parse("name=\"x\"\n[[case]]\nkind=\"mvm\"\nsizes=[[2, 2]]\nthreads = 0\n")
                .unwrap_err()
                .to_string();
        assert_eq!(
            err,
            "[[case]] #1 (mvm-host-upload): threads = 0: the MVM kernel needs at least 1 thread \
             (1 runs it on the compute core alone; leave threads out for one per core)"
        );
    }

    /// A case name becomes file names and a table cell: one outside [A-Za-z0-9_.-] (two such
    /// names sanitised to one file, a '|' splitting a report row) is refused, naming it.
    #[test]
    fn a_case_name_outside_the_file_name_characters_is_refused() {
        let parse = |name: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[[case]]\nname={name:?}\nkind=\"roundtrip\"\nsizes=[[2]]\n"
            ))
        };
        for bad in ["a|b", "a b", "a/b", "é", "a:b", ""] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(
                err.contains(&format!("case name {bad:?} must be non-empty"))
                    && err.contains("'_', '.' and '-'"),
                "{bad}: {err}"
            );
        }
        for good in ["a.b_c-1", "A9"] {
            parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    /// A pingpong or MVM case whose two processes busy-wait on one core is refused, naming
    /// the case, the keys and the remedy (it ran, exited 0, and measured the scheduler's
    /// tick); a waiting form that sleeps, or two cores, is not.
    #[test]
    fn a_spinning_pingpong_or_mvm_case_on_one_core_is_refused() {
        let with = |kind: &str, reader: usize, case: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\nwriter_cpu = 0\nreader_cpu = {reader}\n[[case]]\n\
                 kind=\"roundtrip\"\nsizes=[[2]]\n[[case]]\nkind=\"{kind}\"\n\
                 sizes=[[64, 64]]\n{case}\n"
            ))
        };
        for (kind, extra) in [("pingpong", ""), ("mvm", "threads = 1")] {
            for wait in ["", "wait = \"spin\""] {
                let err = with(kind, 0, &format!("{extra}\n{wait}"))
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.starts_with(&format!("[[case]] #2 ({kind}")),
                    "{kind} {wait}: {err}"
                );
                assert!(
                    err.contains("[defaults] writer_cpu = reader_cpu = 0")
                        && err.contains("set wait = \"park\""),
                    "{kind} {wait}: {err}"
                );
            }
            assert!(with(kind, 0, &format!("{extra}\nwait = \"park\"")).is_ok());
            assert!(with(kind, 1, &format!("{extra}\nwait = \"spin\"")).is_ok());
        }
    }

    /// Ours and its floor alternate, each repeat lasting 2 × min_seconds: a timing that
    /// cannot end within timeout_s is refused, naming the three keys.
    #[test]
    fn an_alternated_timing_longer_than_the_timeout_is_refused() {
        let with = |kind: &str, case: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\nwarmup = 0.5\n[[case]]\nkind=\"{kind}\"\n\
                 sizes=[[2, 2]]\n{case}\n"
            ))
        };
        for kind in ["roundtrip", "pingpong", "mvm"] {
            let err = with(kind, "min_seconds = 30\nrepeats = 3")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("warmup + 2 × min_seconds × repeats = 0.5 + 2 × 30 × 3 = 180.5 s")
                    && err.contains("timeout_s = 120"),
                "{kind}: {err}"
            );
            assert!(with(kind, "min_seconds = 30\nrepeats = 3\ntimeout_s = 181").is_ok());
            assert!(with(kind, "min_seconds = 19\nrepeats = 3").is_ok());
        }
        let op = with("op", "op = \"write\"\nmin_seconds = 60\nrepeats = 1");
        assert!(op.unwrap_err().to_string().contains("= 120.5 s"));
    }

    /// An ao-loop case's frames are uint16: `dtype = "float32"` written out is refused
    /// (it was taken for the default and silently run as uint16), left out or "uint16" runs.
    #[test]
    fn an_ao_loop_case_refuses_an_explicit_float32_dtype() {
        let with = |dtype: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[[case]]\nkind=\"ao-loop\"\nsizes=[[8, 8]]\n{dtype}\n\
                 [case.ao]\nsubapertures=[2, 2]\nactuators=5\nrate_hz=1000\nladder=false\n"
            ))
        };
        let err = with("dtype = \"float32\"").unwrap_err().to_string();
        assert!(
            err.contains("ao-loop frames are uint16, not dtype = \"float32\""),
            "{err}"
        );
        for ok in ["", "dtype = \"uint16\""] {
            let job = with(ok).unwrap().jobs(false, None).remove(0);
            assert_eq!((job.dtype.as_str(), job.itemsize), ("uint16", 2), "{ok}");
        }
        let plain = Scenario::parse("name=\"x\"\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n");
        assert_eq!(plain.unwrap().jobs(false, None)[0].dtype, "float32");
    }

    /// A pingpong whose gap alone outlasts timeout_s is refused up front, naming gap_us:
    /// the warm-up and every repeat run at least one round trip a side, each after the gap
    /// (it passed, then failed "timed out after 3 s; killed").
    #[test]
    fn a_pingpong_gap_that_cannot_fit_the_timeout_is_refused_naming_gap_us() {
        let with = |gap: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\nmin_seconds = 0.01\nwarmup = 0.01\nrepeats = 1\n\
                 timeout_s = 3\n[[case]]\nkind=\"pingpong\"\nwait=\"park\"\nsizes=[[8]]\n\
                 gap_us = {gap}\n"
            ))
        };
        let err = with("2000000").unwrap_err().to_string();
        assert!(
            err.contains(
                "with P = 2 × gap = 4 s: 4 × 1 + 1 × 4 × 1 = 8 s, not under timeout_s = 3"
            ) && err.contains("gap_us = 2000000 µs")
                && err.contains("lower gap_us"),
            "{err}"
        );
        assert!(with("1000000").is_err(), "2 + 2 s leave nothing to measure");
        assert!(with("500000").is_ok());
        let job = with("500000").unwrap().jobs(false, None).remove(0);
        let remedy = job.timeout_remedy();
        assert!(
            remedy.contains("timeout_s = 3 s")
                && remedy.contains("min_seconds = 0.01 s")
                && remedy.contains("gap_us = 500000 µs")
                && remedy.contains("lower min_seconds or repeats or gap_us"),
            "{remedy}"
        );
    }

    /// Each phase runs whole pairs of slices, each at least 2 × gap long: a gap of 0.4 s
    /// makes the warm-up 0.8 s and a 1 s repeat 1.6 s (2.4 s in all), not max(warmup, 0.8)
    /// + max(1, 0.8) = 1.8 s, which passed a 2 s timeout_s its run could not meet.
    #[test]
    fn a_pingpong_gap_counts_whole_pairs_of_slices_per_phase() {
        let with = |timeout: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\nmin_seconds = 0.5\nwarmup = 0.01\nrepeats = 1\n\
                 timeout_s = {timeout}\n[[case]]\nkind=\"pingpong\"\nwait=\"park\"\n\
                 sizes=[[8]]\ngap_us = 400000\n"
            ))
        };
        let err = with("2").unwrap_err().to_string();
        assert!(
            err.contains(
                "with P = 2 × gap = 0.8 s: 0.8 × 1 + 1 × 0.8 × 2 = 2.4 s, not under timeout_s = 2"
            ),
            "{err}"
        );
        assert!(with("2.4").is_err());
        assert!(with("2.5").is_ok());
    }

    /// The MVM kernel pins a worker per core: more threads than cores is refused (a
    /// huge count overflowed the kernel's chunk size and started 65 535 pinned threads).
    #[test]
    fn more_mvm_threads_than_cores_are_refused() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let with = |t: usize| {
            Scenario::parse(&format!(
                "name=\"x\"\n[[case]]\nkind=\"mvm\"\nsizes=[[2, 2]]\nthreads = {t}\n"
            ))
        };
        assert_eq!(with(cores).unwrap().jobs(false, None)[0].threads, cores);
        for t in [cores + 1, 100_000, usize::MAX / 2] {
            let err = with(t).unwrap_err().to_string();
            assert!(
                err.contains(&format!("threads = {t}: this machine has {cores} core(s)")),
                "{err}"
            );
        }
    }

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut parsed = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "toml") {
                Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                parsed.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        for f in [
            "smoke.toml",
            "gate.toml",
            "ao.toml",
            "ao-newest.toml",
            "bridge.toml",
        ] {
            assert!(parsed.iter().any(|p| p == f), "{f} missing: {parsed:?}");
        }
    }
}

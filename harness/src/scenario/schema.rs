//! The scenario file's tables as they are written (`[defaults]`, `[[case]]`), the values
//! their keys take (kind, op, wait, pipeline, device), and what a case's unset name, dtype
//! and pipeline resolve to.

use std::fmt;

use serde::{Deserialize, Serialize};
use shmstream::WaitStrategy;

use crate::cases::ao::geometry::AoCase;
use crate::error::Result;

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

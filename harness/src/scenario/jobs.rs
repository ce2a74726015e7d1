//! Jobs: one case × size with every default resolved, what the runner executes, and the
//! expansion of a scenario's cases into them.

use serde::{Deserialize, Serialize};

use super::payload::{itemsize, shape_bytes, shape_str};
use super::{CaseSpec, Device, HotOp, Kind, Pipeline, Scenario, Wait};
use crate::cases::ao::geometry::AoCase;

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

impl Scenario {
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
    pub(super) fn case_jobs(&self, c: &CaseSpec, quick: bool) -> Vec<Job> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::GOOD;

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

    /// A job that ran past its timeout is told the key and the timing that fills it, with
    /// the pingpong gap only where its writer idles before each round trip.
    #[test]
    fn the_timeout_remedy_names_the_timing_and_only_a_pingpongs_gap() {
        let mut job = Scenario::parse(
            "name = \"t\"\n[defaults]\nwarmup = 0.5\nmin_seconds = 2\nrepeats = 3\n\
             timeout_s = 30\n[[case]]\nkind = \"pingpong\"\nwait = \"park\"\n\
             sizes = [[16]]\ngap_us = 250\n",
        )
        .unwrap()
        .jobs(false, None)
        .remove(0);
        assert_eq!(
            job.timeout_remedy(),
            "the case's timeout_s = 30 s; its timing: warmup = 0.5 s, then 3 repeat(s) of \
             min_seconds = 2 s, gap_us = 250 µs before each round trip; raise timeout_s, or \
             lower min_seconds or repeats or gap_us"
        );
        let plain = "min_seconds = 2 s; raise timeout_s, or lower min_seconds or repeats";
        job.kind = Kind::Roundtrip;
        assert!(
            job.timeout_remedy().ends_with(plain),
            "{}",
            job.timeout_remedy()
        );
        job.kind = Kind::Pingpong;
        job.gap_us = 0.0;
        assert!(
            job.timeout_remedy().ends_with(plain),
            "{}",
            job.timeout_remedy()
        );
    }

    #[test]
    fn quick_and_filter_shrink_the_job_list() {
        let sut = Scenario::parse(GOOD).unwrap();
        let re = regex::Regex::new("^ping").unwrap();
        let jobs = sut.jobs(true, Some(&re));
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].timing.repeats, 1);
        assert!((jobs[0].timing.min_seconds - 0.02).abs() < 1e-12);
        let full = sut.jobs(false, Some(&re))[0].timing.warmup;
        assert!(full > 0.0 && (jobs[0].timing.warmup - full / 5.0).abs() < 1e-12);
    }

    /// A bridge case sends a frame a millisecond in its latency phase unless it says
    /// otherwise.
    #[test]
    fn a_bridge_case_sends_a_frame_a_millisecond_by_default() {
        let jobs = Scenario::parse("name = \"t\"\n[[case]]\nkind = \"bridge\"\nsizes = [[16]]\n")
            .unwrap()
            .jobs(false, None);
        assert_eq!(jobs[0].gap_us, 1000.0);
    }
}

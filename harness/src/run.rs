//! The runner: for each job, the library ("ours") and its floor, then the pyshmem peer,
//! in pinned processes. The CPU cases time their floor in alternation with ours, inside
//! ours' processes ([`cases::floor_timer`]); the GPU floors run in processes of their own
//! before ours, and the ao-loop and bridge cases run their own sequence. Failures are
//! captured per side so that one broken case never stops the run or hangs it.

use std::path::PathBuf;
use std::time::Duration;

use harness_sys::flock::LockFile;
use harness_sys::shm::ShmRegion;
use hdrhistogram::Histogram;

use crate::cases;
use crate::error::{Context, Result};
use crate::hist::Percentiles;
use crate::measure::Measured;
use crate::peer::{self, PeerSetup};
use crate::scenario::{Job, Kind};
use crate::spawn::{self, ChildSpec, Names, Role};

/// One measured side (ours, floor or peer).
#[derive(Debug, Clone)]
pub struct Side {
    /// Rates and notes.
    pub m: Measured,
    /// Latency of every measured iteration.
    pub hist: Histogram<u64>,
    /// Which cores the processes reported (pinning check), e.g. "writer@0 reader@1".
    pub placement: String,
}

impl Side {
    /// Iterations per second: the median over repeats of each repeat's rate. Pingpong uses
    /// pyshmem's convention (round trips / Σ latency, so an idle gap between round trips
    /// does not count); the others the wall-clock rates.
    pub fn hz(&self, kind: Kind) -> f64 {
        if kind == Kind::Pingpong && !self.m.repeat_busy_hz.is_empty() {
            crate::measure::median(&self.m.repeat_busy_hz)
        } else {
            self.m.hz()
        }
    }

    /// Percentiles of the latency histogram.
    pub fn pct(&self) -> Percentiles {
        Percentiles::of(&self.hist)
    }

    /// A note by key.
    pub fn note(&self, key: &str) -> Option<&str> {
        self.m
            .notes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A side's measurement, or why there is none.
pub type SideResult = std::result::Result<Side, String>;

/// Everything measured for one job.
#[derive(Debug)]
pub struct JobResult {
    /// The job.
    pub job: Job,
    /// The library.
    pub ours: SideResult,
    /// The floor.
    pub floor: SideResult,
    /// The pyshmem peer.
    pub peer: SideResult,
    /// Set when the whole job was skipped (GPU without CUDA, a busy-waiting ao-loop stage
    /// that cannot be pinned here), with the reason.
    pub skipped: Option<String>,
    /// ao-loop: stages, hops, rate ladder, floor parts, peer loop, bandwidth.
    pub ao: Option<Box<cases::ao::AoSummary>>,
}

impl JobResult {
    /// `ratio_to_floor`: the floor's median iteration time over ours (1.0 = as fast as
    /// the floor). Medians, not mean rates: on a shared machine a few preempted
    /// iterations (milliseconds each) would otherwise decide the ratio, and CI gates
    /// on it. `hz / floor_hz` stays available from the two rate columns.
    pub fn ratio_to_floor(&self) -> Option<f64> {
        let ours = self.ours.as_ref().ok()?.hist.value_at_quantile(0.5);
        let floor = self.floor.as_ref().ok()?.hist.value_at_quantile(0.5);
        (ours > 0 && floor > 0).then(|| floor as f64 / ours as f64)
    }

    /// Whether the library side or its floor failed (a skip is not a failure): a case
    /// without its floor has no ratio to gate on.
    pub fn failed(&self) -> bool {
        self.error().is_some()
    }

    /// Why the library side or its floor failed, both when both did (once when it is one
    /// error, as a pair of processes timing both gives); `None` when neither did, or the
    /// job was skipped.
    pub fn error(&self) -> Option<String> {
        if self.skipped.is_some() {
            return None;
        }
        match (&self.ours, &self.floor) {
            (Ok(_), Ok(_)) => None,
            (Err(o), Err(f)) if o != f => Some(format!("{o}; {f}")),
            (Err(e), _) | (_, Err(e)) => Some(e.clone()),
        }
    }
}

/// Runs jobs; owns the scratch folder for child files.
#[derive(Debug)]
pub struct Runner {
    work: PathBuf,
    peer: PeerSetup,
    pid: u32,
}

impl Runner {
    /// A runner writing child files under `work`.
    pub fn new(work: PathBuf, peer: PeerSetup) -> Self {
        Self {
            work,
            peer,
            pid: std::process::id(),
        }
    }

    /// The peer setup (for the report).
    pub fn peer_setup(&self) -> &PeerSetup {
        &self.peer
    }

    /// The folder for child files.
    pub fn work(&self) -> &std::path::Path {
        &self.work
    }

    /// Unique shared-object names for job `idx`, side `tag`.
    pub fn names(&self, idx: usize, tag: &str) -> Names {
        Names::under(&format!("hs{}-{idx}-{tag}", self.pid), &self.work)
    }

    fn spec(&self, role: Role, job: &Job, names: &Names, idx: usize, tag: &str) -> ChildSpec {
        let cpu = match role {
            Role::PingReader
            | Role::FloorPingReader
            | Role::MvmCompute
            | Role::GpuPingReader
            | Role::GpuMvmCompute
            | Role::FloorGpuMvm => job.reader_cpu,
            _ => job.writer_cpu,
        };
        ChildSpec {
            role,
            job: job.clone(),
            names: names.clone(),
            cpu,
            result_prefix: self.work.join(format!("{idx}-{tag}-{role:?}")),
            wait_timeout_s: job.timeout_s,
        }
    }

    /// Measures one job: floor, ours, peer.
    pub fn run_job(&self, idx: usize, job: &Job) -> JobResult {
        // A GPU job without a usable device; a busy-waiting ao-loop job a stage of which
        // cannot be pinned here (a 1-core machine or cpuset): skipped with the reason.
        if let Some(reason) = cases::gpu::skip_reason(job)
            .or_else(|| cases::ao::placement::Placement::skip_reason(job))
        {
            let why = format!("skipped: {reason}");
            return JobResult {
                job: job.clone(),
                ours: Err(why.clone()),
                floor: Err(why.clone()),
                peer: Err(why),
                skipped: Some(reason),
                ao: None,
            };
        }
        if job.kind == Kind::AoLoop {
            return cases::ao::run_job(self, idx, job);
        }
        if job.kind == Kind::Bridge {
            return cases::bridge::run_job(self, idx, job);
        }
        // The CPU cases time their floor in alternation with ours, in ours' processes
        // (cases::op, cases::roundtrip, cases::pingpong, cases::mvm); the GPU ones in
        // processes of their own.
        let (floor, ours) = if cases::floor_timer(job).is_some() {
            match self.paired(idx, job) {
                Ok((o, f)) => (f.map_err(|e| format!("floor failed: {e}")), Ok(o)),
                Err(e) => (Err(format!("failed: {e}")), Err(format!("failed: {e}"))),
            }
        } else {
            (
                self.floor(idx, job)
                    .map_err(|e| format!("floor failed: {e}")),
                self.ours(idx, job).map_err(|e| format!("failed: {e}")),
            )
        };
        JobResult {
            job: job.clone(),
            ours,
            floor,
            peer: self.peer(idx, job),
            skipped: None,
            ao: None,
        }
    }

    fn collect(&self, specs: &[ChildSpec], job: &Job) -> Result<Side> {
        let outcomes = spawn::run_group(specs, Duration::from_secs_f64(job.timeout_s))?;
        let placement = outcomes
            .iter()
            .map(|o| {
                let r = &o.report;
                let seen = r.cpu_seen.map_or("?".to_string(), |c| c.to_string());
                let pin = if r.pinned { "" } else { " (NOT pinned)" };
                format!("{}@{seen}{pin}", role_short(r.role))
            })
            .collect::<Vec<_>>()
            .join(" ");
        let last = outcomes.into_iter().last().context("no child ran")?;
        let (m, hist) = last.into_measurement()?;
        Ok(Side { m, hist, placement })
    }

    /// Measures the floor of `job` (also used for the AO loop's hop floors).
    pub fn floor(&self, idx: usize, job: &Job) -> Result<Side> {
        let names = self.names(idx, "floor");
        if job.device.is_gpu() {
            let role = cases::gpu::floor_role(job.kind);
            return self.collect(&[self.spec(role, job, &names, idx, "floor")], job);
        }
        match job.kind {
            Kind::Pingpong => {
                let _bare = bare_floor_objects(&names, crate::floor::bare_region_len(job))?;
                let specs = [
                    self.spec(Role::FloorPingReader, job, &names, idx, "floor"),
                    self.spec(Role::FloorPingWriter, job, &names, idx, "floor"),
                ];
                self.collect(&specs, job)
            }
            Kind::Op | Kind::Roundtrip | Kind::Mvm => {
                crate::error::bail!("this case measures its floor in alternation with ours")
            }
            Kind::AoLoop => crate::error::bail!("the AO loop composes its floor (cases::ao)"),
            Kind::Bridge => {
                crate::error::bail!("the bridge case measures Zenoh's floor (cases::bridge)")
            }
        }
    }

    /// A case one of whose children times the floor in alternation with ours
    /// ([`cases::floor_timer`]) and writes it beside its own result.
    fn paired(&self, idx: usize, job: &Job) -> Result<(Side, Result<Side>)> {
        let names = self.names(idx, "ours");
        let _streams = spawn::unless_stopping("creating the job's streams", || {
            cases::create_streams(job, &names)
        })?;
        let _bare = if matches!(job.kind, Kind::Op | Kind::Roundtrip | Kind::Pingpong) {
            Some(bare_floor_objects(
                &names,
                crate::floor::paired_region_len(),
            )?)
        } else {
            None
        };
        let specs: Vec<_> = cases::roles(job)
            .iter()
            .map(|r| self.spec(*r, job, &names, idx, "ours"))
            .collect();
        let ours = self.collect(&specs, job)?;
        let timer = specs
            .iter()
            .find(|s| Some(s.role) == cases::floor_timer(job))
            .context("no child times the floor")?;
        let floor = spawn::read_outcome_at(&cases::floor_prefix(&timer.result_prefix), timer.role)
            .and_then(spawn::ChildOutcome::into_measurement)
            .map(|(m, hist)| Side {
                m,
                hist,
                placement: ours.placement.clone(),
            });
        Ok((ours, floor))
    }

    /// The pyshmem peer of `job`, where the scenario and this machine have one.
    fn peer(&self, idx: usize, job: &Job) -> std::result::Result<Side, String> {
        if job.kind == Kind::Op {
            return Err("no peer for op cases".into());
        }
        // The script runs pyshmem's CPU streams only: its figures are no GPU row's peer.
        if job.device.is_gpu() {
            return Err("no GPU peer".into());
        }
        if !job.peer {
            Err("peer disabled for this case".to_string())
        } else {
            match &self.peer {
                PeerSetup::Missing(why) => Err(why.clone()),
                ready => {
                    let names = self.names(idx, "py");
                    peer::run(ready, job, &names, &self.work.join(format!("{idx}-peer")))
                        .map(|(m, hist)| Side {
                            m,
                            hist,
                            placement: format!("writer@{} (python)", job.writer_cpu),
                        })
                        .map_err(|e| format!("peer failed: {e}"))
                }
            }
        }
    }

    fn ours(&self, idx: usize, job: &Job) -> Result<Side> {
        let names = self.names(idx, "ours");
        let _streams = spawn::unless_stopping("creating the job's streams", || {
            cases::create_streams(job, &names)
        })?;
        let specs: Vec<_> = cases::roles(job)
            .iter()
            .map(|r| self.spec(*r, job, &names, idx, "ours"))
            .collect();
        self.collect(&specs, job)
    }
}

/// Removes what the run of harness `pid` has in the shared folders now, when it is stopped
/// from outside: its streams (`hs<pid>-…`, the bridge's mirrors `m-hs<pid>-…`), its floors'
/// regions (`/dev/shm/hs<pid>-…`) and its scratch folder `work`. Its children, peers and
/// bridges are killed before it ([`crate::spawn::stop_tracked`]). A stream it cannot remove
/// is named on stderr with the remedy.
pub fn clean_up(pid: u32, work: &std::path::Path) {
    let prefix = format!("hs{pid}-");
    for name in shmstream::list_streams().unwrap_or_default() {
        if name
            .strip_prefix("m-")
            .unwrap_or(&name)
            .starts_with(&prefix)
            && let Err(e) = shmstream::unlink_quiet(&name)
        {
            eprintln!("harness: {}", left_stream(&name, &prefix, &e));
        }
    }
    for e in std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir_all(work);
}

/// What a stopped run (its streams named `prefix…`) says of stream `name`, which its
/// clean-up could not remove (`e`).
fn left_stream(name: &str, prefix: &str, e: &shmstream::Error) -> String {
    // A bridge mirror's name is the run's prefix behind `m-`.
    let prefix = if name.starts_with("m-") {
        format!("m-{prefix}")
    } else {
        prefix.to_owned()
    };
    format!(
        "stream {name} was left behind by the stopped run ({e}); remove it with \
         `shmstream unlink {name}`, or the run's every stream with \
         `shmstream purge --prefix {prefix}`"
    )
}

/// Creates the bare region (`len` bytes) and lock file of a [`crate::floor::BareStream`]
/// floor (held until its children exit), unless the harness is stopping.
fn bare_floor_objects(names: &Names, len: usize) -> Result<(ShmRegion, LockFile)> {
    spawn::unless_stopping("creating the floor region", || {
        let region = ShmRegion::create(&names.region, len).context("creating the floor region")?;
        Ok((region, LockFile::open(&names.lock, true)?))
    })
}

fn role_short(r: Role) -> &'static str {
    match r {
        Role::Roundtrip | Role::GpuRoundtrip | Role::FloorGpuCopy | Role::Op => "solo",
        Role::PingWriter
        | Role::FloorPingWriter
        | Role::MvmDriver
        | Role::GpuPingWriter
        | Role::GpuMvmDriver => "writer",
        Role::PingReader | Role::FloorPingReader | Role::GpuPingReader => "reader",
        Role::MvmCompute | Role::GpuMvmCompute | Role::FloorGpuMvm => "compute",
        Role::AoCamera => "camera",
        Role::AoSlopes => "slopes",
        Role::AoRecon => "recon",
        Role::AoFloorCompute => "compute",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(samples: &[u64], hz: &[f64]) -> Side {
        let mut hist = crate::hist::new();
        for &s in samples {
            hist.saturating_record(s);
        }
        Side {
            m: Measured {
                repeat_hz: hz.to_vec(),
                iterations: samples.len() as u64,
                ..Default::default()
            },
            hist,
            placement: "floor@1".into(),
        }
    }

    /// What a stopped run leaves goes: its streams and mirrors, its regions and scratch
    /// folder; another run's stream stays.
    #[test]
    fn a_stopped_run_leaves_no_stream_region_nor_scratch_folder() {
        let pid = 4_200_000_000 + std::process::id();
        let other = format!("hs{pid}0-0-ours-data");
        let names = [
            format!("hs{pid}-0-ours-data"),
            format!("m-hs{pid}-1-bridge-data"),
        ];
        for n in names.iter().chain([&other]) {
            crate::cases::create(n, &[4], shmstream::Dtype::U8, false).unwrap();
        }
        let region = ShmRegion::create(&format!("hs{pid}-0-floor-region"), 64).unwrap();
        let work = std::env::temp_dir().join(format!("harness-{pid}"));
        std::fs::create_dir_all(&work).unwrap();
        clean_up(pid, &work);
        for n in &names {
            assert!(shmstream::stat(n).is_err(), "{n} was left");
        }
        assert!(shmstream::stat(&other).is_ok());
        shmstream::unlink(&other).unwrap();
        assert!(ShmRegion::open(&format!("hs{pid}-0-floor-region"), 64).is_err());
        assert!(!work.exists());
        drop(region);
    }

    /// A floor region left by a run that died hard (its pid reused) is named with its path
    /// and the remedy.
    #[test]
    fn a_leftover_floor_region_is_named_with_its_path_and_the_remedy() {
        let names = Names::under(
            &format!("stale-{}", std::process::id()),
            &std::env::temp_dir(),
        );
        let path = format!("/dev/shm/{}", names.region);
        std::fs::write(&path, b"left").unwrap();
        let err = bare_floor_objects(&names, 64).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains(&path) && err.contains("remove it"), "{err}");
    }

    /// Pingpong Hz is the median over repeats of round trips / Σ latency, as the report
    /// says, not the inverse of the pooled mean latency; the others' the median wall rate.
    #[test]
    fn pingpong_hz_is_the_median_of_the_per_repeat_busy_rates() {
        let mut s = side(&[1_000, 1_000, 1_000_000], &[1.0, 2.0, 3.0]);
        s.m.repeat_busy_hz = vec![900.0, 1000.0, 10.0];
        assert_eq!(s.hz(Kind::Pingpong), 900.0);
        assert_eq!(s.hz(Kind::Roundtrip), 2.0);
    }

    /// A job with ours and its floor, each measured (a median iteration time, ns) or
    /// failed (its error).
    fn job_result(
        ours: std::result::Result<u64, &str>,
        floor: std::result::Result<u64, &str>,
    ) -> JobResult {
        let text = "name = \"t\"\n[[case]]\nkind = \"roundtrip\"\nsizes = [[8]]\n";
        let side_of = |r: std::result::Result<u64, &str>| {
            r.map(|ns| side(&[ns], &[1.0])).map_err(str::to_owned)
        };
        JobResult {
            job: crate::scenario::Scenario::parse(text)
                .unwrap()
                .jobs(false, None)
                .remove(0),
            ours: side_of(ours),
            floor: side_of(floor),
            peer: Err("no peer".into()),
            skipped: None,
            ao: None,
        }
    }

    /// A job's error is ours' or its floor's, once where both sides failed with one error
    /// (a pair of processes timing both), both where they differ; a skipped job has none.
    #[test]
    fn a_jobs_error_names_each_failed_side_once() {
        let error = |ours, floor| {
            let r = job_result(ours, floor);
            assert_eq!(r.failed(), r.error().is_some());
            r.error()
        };
        assert_eq!(error(Ok(1), Ok(1)), None);
        assert_eq!(error(Err("a"), Ok(1)).as_deref(), Some("a"));
        assert_eq!(error(Ok(1), Err("f")).as_deref(), Some("f"));
        assert_eq!(error(Err("x"), Err("x")).as_deref(), Some("x"));
        assert_eq!(error(Err("a"), Err("b")).as_deref(), Some("a; b"));
        let mut skipped = job_result(Err("skipped: no GPU"), Err("skipped: no GPU"));
        skipped.skipped = Some("no GPU".into());
        assert!(!skipped.failed() && skipped.error().is_none());
    }

    /// The ratio to the floor is the floor's median time over ours, where both have one.
    #[test]
    fn the_ratio_to_the_floor_is_its_median_time_over_ours() {
        assert_eq!(job_result(Ok(1000), Ok(800)).ratio_to_floor(), Some(0.8));
        assert_eq!(job_result(Ok(1000), Ok(0)).ratio_to_floor(), None);
        assert_eq!(job_result(Ok(0), Ok(800)).ratio_to_floor(), None);
        assert_eq!(job_result(Ok(1000), Err("f")).ratio_to_floor(), None);
    }

    /// Each job side's shared objects carry the run's prefix (what its clean-up removes),
    /// the job and the side; its readers run on the reader core, the rest on the writer's;
    /// the placement calls each process by its part.
    #[test]
    fn a_job_sides_names_and_cores_come_from_the_run_and_the_job() {
        let runner = Runner::new(std::env::temp_dir(), PeerSetup::Missing("none".into()));
        let names = runner.names(3, "ours");
        let base = format!("hs{}-3-ours", std::process::id());
        assert_eq!(names.data, format!("{base}-data"));
        assert_eq!(
            names.lock,
            std::env::temp_dir().join(format!("{base}.lock"))
        );
        let mut job = job_result(Ok(1), Ok(1)).job;
        (job.writer_cpu, job.reader_cpu) = (2, 5);
        for (role, cpu) in [
            (Role::PingWriter, 2),
            (Role::PingReader, 5),
            (Role::FloorPingReader, 5),
            (Role::MvmCompute, 5),
            (Role::Roundtrip, 2),
        ] {
            assert_eq!(
                runner.spec(role, &job, &names, 3, "ours").cpu,
                cpu,
                "{role:?}"
            );
        }
        for (role, short) in [
            (Role::Roundtrip, "solo"),
            (Role::FloorPingWriter, "writer"),
            (Role::FloorPingReader, "reader"),
            (Role::MvmCompute, "compute"),
            (Role::AoCamera, "camera"),
        ] {
            assert_eq!(role_short(role), short);
        }
    }

    /// A stream the clean-up of a stopped run could not remove is named, with the command
    /// that removes it and the prefix that purges the run's others (a bridge mirror's
    /// behind `m-`).
    #[test]
    fn a_stream_left_by_a_stopped_run_is_named_with_the_remedy() {
        let e = shmstream::stat("hs-no-such-stream").unwrap_err();
        for (name, prefix) in [
            ("hs7-1-ours-data", "hs7-"),
            ("m-hs7-1-bridge-data", "m-hs7-"),
        ] {
            let text = left_stream(name, "hs7-", &e);
            assert!(
                text.starts_with(&format!(
                    "stream {name} was left behind by the stopped run ("
                )) && text.ends_with(&format!(
                    "; remove it with `shmstream unlink {name}`, or the run's every stream \
                         with `shmstream purge --prefix {prefix}`"
                )),
                "{text}"
            );
        }
    }

    /// A GPU case has no peer (the script's CPU streams measure no GPU row), even where
    /// Python is ready.
    #[test]
    fn a_gpu_case_has_no_peer() {
        let text =
            "name = \"t\"\n[[case]]\nkind = \"roundtrip\"\ndevice = \"cuda:0\"\nsizes = [[8]]\n";
        let job = crate::scenario::Scenario::parse(text)
            .unwrap()
            .jobs(false, None)
            .remove(0);
        assert!(job.peer);
        let ready = PeerSetup::Ready {
            python: "/nonexistent/python".into(),
            pyshmem: "1.4.0".into(),
            numpy: "2".into(),
        };
        let runner = Runner::new(std::env::temp_dir(), ready);
        assert_eq!(runner.peer(0, &job).unwrap_err(), "no GPU peer");
    }
}

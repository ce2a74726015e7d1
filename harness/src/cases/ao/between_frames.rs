//! The floor timed between the loop's own frames, in the loop's own processes: half a
//! period after each of its frames, the camera publishes the same frame bare
//! ([`FloorPing`], the hop floor's own publication into a region of
//! [`super::stage::HISTORY`] slots), and the stage that reads camera frames takes it
//! between two of its frames ([`FloorEcho`], waiting as the hop's floor waits:
//! [`super::floor::camera_hop_job`]): the camera hop's floor. In the merged form on the CPU
//! (one stage process), that stage then computes the slopes and the reconstructor on the
//! bare frame as on plain memory ([`Compute`], the same matrices on an integrator state of
//! its own) and publishes the commands bare: the compute floor. On this VM the host's state
//! changes within seconds and an idle core's wake-up moved 3× between passes of one run
//! (the pyRTC loop's camera-hop floor read 0.9 µs in one pass and 3.1 in the next), so a
//! floor measured in passes of its own before, between and after the loop can land in
//! another state than the loop's frames; interleaved frame by frame, both see the same host.
//!
//! The camera never waits for the stage, so a slow or dead stage costs the loop nothing:
//! a stage that comes late takes the newest bare frame (the one it missed is not timed).
//! Only where the stages' compute (the floor's first pass) takes under a
//! quarter of a period ([`super::floor::Parts::leaves_room_between_frames`]), so that the
//! stage is idle when the bare frame comes and done with it before the next frame, and
//! only in the runs the floor is compared with (not the rate ladder's).

use std::path::{Path, PathBuf};

use harness_sys::bare::region_len;
use harness_sys::clock::monotonic_ns;
use harness_sys::shm::ShmRegion;
use hdrhistogram::Histogram;

use super::floor::camera_hop_job;
use super::geometry::Geometry;
use super::placement::Placement;
use super::recon::Recon;
use super::slopes::Slopes;
use super::stage::{Entry, HISTORY, Outputs, read_log, write_log};
use crate::error::{Context, Result};
use crate::floor::{Echo, FloorEcho, FloorPing};
use crate::scenario::Job;
use crate::spawn::{ChildSpec, Names};

/// Extension of the camera's log of bare frames (`<prefix>.aohop`).
pub const LOG: &str = "aohop";

/// Extension of the merged stage's log of its compute on them (`<prefix>.aocompute`).
pub const COMPUTE_LOG: &str = "aocompute";

/// Whether the merged stage of a run of `job` also times the compute floor between frames
/// (the merged form on the CPU; the split form's stages and the GPU form's device work
/// keep the passes' compute floor).
pub fn times_compute(job: &Job) -> bool {
    job.floor_between_frames && Placement::of(job).merged && !job.device.is_gpu()
}

/// Bytes of the region of `g`'s bare camera frames.
fn len(g: &Geometry) -> usize {
    region_len(g.pixels() * 2, HISTORY)
}

/// Creates the region of the bare camera frames of a run of `job` (kept until dropped),
/// or `None` when the run does not time its camera hop's floor in the loop.
pub fn create(job: &Job, names: &Names, g: &Geometry) -> Result<Option<ShmRegion>> {
    if !job.floor_between_frames {
        return Ok(None);
    }
    let region = ShmRegion::create(&names.region, len(g))
        .with_context(|| format!("creating the camera hop floor's region {}", names.region))?;
    Ok(Some(region))
}

/// Opens the region in a stage or camera process of `spec`, or `None` when its run does
/// not time the camera hop's floor.
pub(super) fn open(spec: &ChildSpec, g: &Geometry) -> Result<Option<ShmRegion>> {
    if !spec.job.floor_between_frames {
        return Ok(None);
    }
    let region = ShmRegion::open(&spec.names.region, len(g)).with_context(|| {
        format!(
            "opening the camera hop floor's region {}",
            spec.names.region
        )
    })?;
    Ok(Some(region))
}

/// Frames of the run of `spec`: the logs hold that many, allocated before the loop (a
/// log that grew in it would copy itself between two frames).
fn frames(spec: &ChildSpec) -> usize {
    Placement::of(&spec.job).frames(&spec.job) as usize
}

/// The spec of the hop's floor in a process of `spec`: its wait, slots and wake-ahead.
fn hop_spec(spec: &ChildSpec, g: &Geometry) -> ChildSpec {
    ChildSpec {
        job: camera_hop_job(&spec.job, g),
        ..spec.clone()
    }
}

/// The camera's side: one bare frame half a period after each of its frames, frame `id`'s
/// as the bare stream's publication `id` (so the camera sends one for every frame, taken
/// or not). Keeps `[frame id, sent, arrived, 0]` per frame the stage took.
pub(super) struct Sender<'a> {
    ping: FloorPing<'a>,
    /// Frame id and send time of the last frame sent, until it is seen taken.
    pending: Option<(u64, u64)>,
    log: Vec<Entry>,
}

impl<'a> Sender<'a> {
    pub(super) fn new(region: &'a ShmRegion, spec: &ChildSpec, g: &Geometry) -> Result<Self> {
        Ok(Sender {
            ping: FloorPing::new(region, &hop_spec(spec, g))?,
            pending: None,
            log: Vec::with_capacity(frames(spec)),
        })
    }

    /// Logs the last frame sent if the stage took it (a frame it skipped, taking a newer
    /// one, is not logged).
    fn settle(&mut self) {
        if let Some((id, sent)) = self.pending
            && self.ping.acked()
        {
            self.log.push([id, sent, self.ping.arrived(), 0]);
            self.pending = None;
        }
    }

    /// Publishes `frame` bare as frame `id`'s (the ids 1, 2, … in turn), timed from before
    /// the publication as the camera times its own; never waits for the stage.
    pub(super) fn send(&mut self, id: u64, frame: &[u16]) -> Result<()> {
        self.settle();
        let sent = monotonic_ns();
        self.ping.publish(frame)?;
        self.pending = Some((id, sent));
        Ok(())
    }

    /// Logs the last frame if taken, tells the stage there are no more (before the stop
    /// frame, which the stage reads after), and writes the log to `path`.
    pub(super) fn finish(mut self, path: &Path) -> Result<()> {
        self.settle();
        self.ping.stop();
        write_log(path, &self.log)
    }
}

/// The stage's side: takes the camera's bare frame between two of its frames.
pub(super) struct Receiver<'a> {
    echo: FloorEcho<'a>,
    stopped: bool,
}

impl<'a> Receiver<'a> {
    pub(super) fn new(region: &'a ShmRegion, spec: &ChildSpec, g: &Geometry) -> Self {
        Receiver {
            echo: FloorEcho::new(region, &hop_spec(spec, g)),
            stopped: false,
        }
    }

    /// After the stage's frame `id`: waits for the bare frame sent after it (or a later
    /// one, when the stage is late) and copies it into `dst` (the buffer the stage reads
    /// its frames into); the id of the one it took. None at once when it already took one
    /// as late, or once the camera said it sends no more.
    pub(super) fn take(&mut self, id: u64, dst: &mut [u16]) -> Result<Option<u64>> {
        let id = u32::try_from(id).context("a frame id beyond the bare stream's count")?;
        if self.stopped || self.echo.served() >= id {
            return Ok(None);
        }
        self.stopped = self.echo.serve_from(id, dst)? == Echo::Stop;
        Ok((!self.stopped).then(|| u64::from(self.echo.served())))
    }
}

/// The merged stage's compute floor between frames: slopes and reconstructor on the bare
/// frame just taken (the stage's own [`Slopes`] and [`Recon`], on an integrator state of
/// its own), the commands published bare as [`super::stage::floor_compute`] does. Keeps
/// `[frame id, slopes ns, recon ns, publish ns]` per frame.
pub(super) struct Compute {
    sig: Vec<f32>,
    cmd: Vec<f32>,
    state: Vec<f32>,
    out: Outputs,
    log: Vec<Entry>,
}

impl Compute {
    /// For the merged stage of `spec` with reconstructor `recon`, or `None` where the run
    /// does not time the compute between frames ([`times_compute`]).
    pub(super) fn new(spec: &ChildSpec, g: &Geometry, recon: &Recon) -> Result<Option<Self>> {
        if !times_compute(&spec.job) {
            return Ok(None);
        }
        let ao = spec
            .job
            .ao
            .as_ref()
            .context("ao-loop job without [case.ao]")?;
        Ok(Some(Compute {
            sig: vec![0.0; g.signals],
            cmd: vec![0.0; g.actuators],
            state: recon.fresh_state(),
            out: Outputs::create(spec, g, ao)?,
            log: Vec::with_capacity(frames(spec)),
        }))
    }

    /// Times the compute on `frame` (the bare frame of `id`).
    pub(super) fn frame(
        &mut self,
        id: u64,
        frame: &[u16],
        slopes: &mut Slopes,
        recon: &mut Recon,
    ) -> Result<()> {
        let t0 = monotonic_ns();
        slopes.compute(frame, &mut self.sig);
        let t1 = monotonic_ns();
        recon.step_on(&mut self.state, &self.sig, &mut self.cmd);
        let t2 = monotonic_ns();
        let sent = self.out.commands.publish(&self.cmd)?;
        self.log.push([id, t1 - t0, t2 - t1, sent]);
        Ok(())
    }

    /// Writes the log to `path`.
    pub(super) fn finish(self, path: &Path) -> Result<()> {
        write_log(path, &self.log)
    }
}

/// What the runs timed between their frames: the camera hop's one-way latencies and, in
/// the merged form on the CPU, the compute entries (else empty).
#[derive(Debug, Clone)]
pub struct Timed {
    /// The camera hop's one-way latency per bare frame taken.
    pub hop: Histogram<u64>,
    /// `[frame id, slopes ns, recon ns, publish ns]` per bare frame computed on.
    pub compute: Vec<Entry>,
}

impl Timed {
    /// Reads the camera's and (where [`times_compute`]) the merged stage's logs of the
    /// runs of `job` whose result prefixes are `cameras` and `stages`.
    pub fn read(job: &Job, cameras: &[PathBuf], stages: &[PathBuf]) -> Result<Self> {
        let warmup = Placement::warmup_frames(job);
        let logs = |prefixes: &[PathBuf], ext: &str| -> Vec<PathBuf> {
            prefixes.iter().map(|p| p.with_extension(ext)).collect()
        };
        Ok(Timed {
            hop: read(&logs(cameras, LOG), warmup)?,
            compute: match times_compute(job) {
                true => read_compute(&logs(stages, COMPUTE_LOG), warmup)?,
                false => Vec::new(),
            },
        })
    }
}

/// The compute entries `[frame id, slopes ns, recon ns, publish ns]` of the merged stage's
/// logs at `paths` (frames after id `warmup` in each).
fn read_compute(paths: &[PathBuf], warmup: u64) -> Result<Vec<Entry>> {
    let mut all = Vec::new();
    for path in paths {
        all.extend(read_log(path)?.into_iter().filter(|e| e[0] > warmup));
    }
    Ok(all)
}

/// The one-way latencies of the camera logs at `paths` (frames after id `warmup` in each).
fn read(paths: &[PathBuf], warmup: u64) -> Result<Histogram<u64>> {
    let mut h = crate::hist::new();
    for path in paths {
        for [id, sent, arrived, _] in read_log(path)? {
            if id > warmup && arrived >= sent {
                h.saturating_record(arrived - sent);
            }
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;
    use crate::spawn::Role;
    use std::time::Duration;

    fn spec(tag: &str, wait: &str) -> (ChildSpec, Geometry) {
        let text = format!(
            "name = \"t\"\n[[case]]\nkind = \"ao-loop\"\nsizes = [[8, 8]]\n\
             [case.ao]\nsubapertures = [2, 2]\nactuators = 5\nrate_hz = 1000\nmerged = true\n{wait}"
        );
        let mut job = Scenario::parse(&text).unwrap().jobs(false, None).remove(0);
        job.floor_between_frames = true;
        job.timeout_s = 5.0;
        let g = Geometry::new(&job.shape, job.ao.as_ref().unwrap()).unwrap();
        let spec = ChildSpec::scratch(Role::AoCamera, job, &format!("ao-hop-{tag}"), 5.0);
        (spec, g)
    }

    /// Every bare frame the stage takes is logged with its id and an arrival after its
    /// send; a stage that comes late takes the newest (the one it missed is not logged)
    /// and then does not wait for the frame it already took; the camera's stop releases a
    /// stage waiting for a frame that never comes.
    #[test]
    fn bare_frames_are_taken_between_frames_and_a_late_stage_takes_the_newest() {
        for wait in ["", "wait = \"spin\""] {
            let (spec, g) = spec(&format!("take{}", wait.len()), wait);
            let region = create(&spec.job, &spec.names, &g).unwrap().unwrap();
            let opened = open(&spec, &g).unwrap().unwrap();
            let mut tx = Sender::new(&region, &spec, &g).unwrap();
            let frames: Vec<Vec<u16>> = (0..4u16).map(|k| vec![k; g.pixels()]).collect();
            let log = spec.result_prefix.with_extension(LOG);
            std::thread::scope(|s| {
                let (go_tx, go) = std::sync::mpsc::channel::<()>();
                let (taken_tx, taken) = std::sync::mpsc::channel::<u16>();
                let (opened, spec, g) = (&opened, &spec, &g);
                let stage = s.spawn(move || {
                    let mut rx = Receiver::new(opened, spec, g);
                    let mut dst = vec![9u16; g.pixels()];
                    // Frame 1's after frame 1, frame 3's after frame 2, none after 3.
                    for (id, took) in [(1, Some(1)), (2, Some(3)), (3, None)] {
                        go.recv().unwrap();
                        assert_eq!(rx.take(id, &mut dst).unwrap(), took, "after {id}");
                        taken_tx.send(dst[0]).unwrap();
                    }
                    // No frame comes any more: the camera's stop ends the wait.
                    assert_eq!(rx.take(4, &mut dst).unwrap(), None);
                    assert!(rx.stopped);
                });
                let until_acked = |tx: &Sender<'_>| {
                    let t0 = std::time::Instant::now();
                    while !tx.ping.acked() {
                        assert!(t0.elapsed() < Duration::from_secs(5), "not acknowledged");
                        std::thread::yield_now();
                    }
                };
                // Frame 1, taken.
                tx.send(1, &frames[1]).unwrap();
                go_tx.send(()).unwrap();
                assert_eq!(taken.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
                until_acked(&tx);
                // Frames 2 and 3 before the stage comes for frame 2: it takes 3, then
                // does not wait after its frame 3.
                tx.send(2, &frames[2]).unwrap();
                tx.send(3, &frames[3]).unwrap();
                go_tx.send(()).unwrap();
                assert_eq!(taken.recv_timeout(Duration::from_secs(5)).unwrap(), 3);
                go_tx.send(()).unwrap();
                assert_eq!(taken.recv_timeout(Duration::from_secs(5)).unwrap(), 3);
                until_acked(&tx);
                tx.finish(&log).unwrap();
                stage.join().unwrap();
            });
            let entries = read_log(&log).unwrap();
            let ids: Vec<u64> = entries.iter().map(|e| e[0]).collect();
            assert_eq!(ids, [1, 3], "{wait}");
            assert!(
                entries.iter().all(|e| e[2] >= e[1] && e[1] > 0),
                "{entries:?}"
            );
            assert_eq!(
                read(std::slice::from_ref(&log), 1).unwrap().len(),
                1,
                "frame 1 is warm-up"
            );
            std::fs::remove_file(&log).unwrap();
        }
    }

    /// A run that does not time the hop in the loop makes and opens no region.
    #[test]
    fn runs_without_the_hop_in_the_loop_have_no_region() {
        let (mut spec, g) = spec("none", "");
        spec.job.floor_between_frames = false;
        assert!(create(&spec.job, &spec.names, &g).unwrap().is_none());
        assert!(open(&spec, &g).unwrap().is_none());
    }
}

//! The floor timed between the loop's own frames, in the loop's own processes: half a
//! period after each of its frames, the camera publishes the same frame bare
//! ([`FloorPing`], the hop floor's own publication into a region of
//! [`super::stage::HISTORY`] slots), and the stage that reads camera frames takes it
//! between two of its frames ([`FloorEcho`], waiting as the hop's floor waits:
//! [`super::floor::camera_hop_job`]): the camera hop's floor. On the CPU that stage then
//! computes on the bare frame as on plain memory ([`Compute`]: the same matrices, on an
//! integrator state of its own) and publishes bare what it publishes: the merged stage the
//! commands; the split form's slopes stage the signals, through a second region to the
//! reconstructor, which takes them between two of its frames as the slopes stage took the
//! frame (the signals hop's floor, [`super::floor::signals_hop_job`]), computes and
//! publishes the commands bare. That is the whole composed floor, timed in the loop. On
//! this VM the host's state changes within seconds and an idle core's wake-up moved 3×
//! between passes of one run (the pyRTC loop's camera-hop floor read 0.9 µs in one pass
//! and 3.1 in the next), so a floor measured in passes of its own before, between and after
//! the loop can land in another state than the loop's frames; interleaved frame by frame,
//! both see the same host.
//!
//! Neither sender waits for its receiver, so a slow or dead stage costs the loop nothing:
//! a stage that comes late takes the newest bare frame (the one it missed is not timed).
//! A bare publication carries its frame's id as its number, so the reconstructor waits
//! after its frame `id` for the bare signals of frame `id` or later, which the slopes stage
//! sends before its signals of frame `id + 1`. Only where the stages' compute (the floor's
//! first pass) takes under a quarter of a period
//! ([`super::floor::Parts::leaves_room_between_frames`]), so that a stage is idle when a
//! bare frame comes and done with it before the next frame, and only in the runs the floor
//! is compared with (not the rate ladder's).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use harness_sys::bare::region_len;
use harness_sys::clock::monotonic_ns;
use harness_sys::shm::ShmRegion;
use hdrhistogram::Histogram;
use shmstream::Element;

use super::floor::{camera_hop_job, signals_hop_job};
use super::geometry::Geometry;
use super::placement::Placement;
use super::recon::Recon;
use super::slopes::Slopes;
use super::stage::{Entry, HISTORY, read_log, write_log};
use crate::error::{Context, Result};
use crate::floor::{BareOutput, Echo, FloorEcho, FloorPing};
use crate::scenario::{Job, OneWay};
use crate::spawn::{ChildSpec, Names};

/// Extension of the camera's log of bare frames (`<prefix>.aohop`).
pub const LOG: &str = "aohop";

/// Extension of the split form's slopes stage's log of bare signals (`<prefix>.aosighop`).
pub const SIGNALS_LOG: &str = "aosighop";

/// Extension of a stage's log of its compute on bare frames (`<prefix>.aocompute`).
pub const COMPUTE_LOG: &str = "aocompute";

/// Whether the stages of a run of `job` also time their compute between frames (on the
/// CPU; the GPU form's device work keeps the passes' compute floor).
pub fn times_compute(job: &Job) -> bool {
    job.floor_between_frames && !job.device.is_gpu()
}

/// Whether a run of `job` also times the signals hop between frames (the split form on
/// the CPU).
pub fn times_signals(job: &Job) -> bool {
    times_compute(job) && !Placement::of(job).merged
}

/// The regions of a run's bare frames: the camera's, the signals' in the split form, and
/// the commands' where [`times_compute`]. The harness creates them all and removes them
/// after the run, so a stage killed mid-run leaves none behind.
pub struct Regions {
    pub(super) camera: ShmRegion,
    pub(super) signals: Option<ShmRegion>,
    /// Kept only to be removed: the stage publishes through a mapping of its own
    /// ([`Compute`]).
    _commands: Option<ShmRegion>,
}

/// Name of the region of the commands published bare in a run whose bare frames go
/// through region `region`.
fn commands_region(region: &str) -> String {
    format!("{region}-commands")
}

/// Name and bytes of the regions of `names`' run of `job`: the camera's, the signals'
/// where [`times_signals`], the commands' where [`times_compute`] (one frame, as the
/// commands stream keeps).
fn layout(job: &Job, region: &str, g: &Geometry) -> [Option<(String, usize)>; 3] {
    [
        Some((region.to_string(), region_len(g.pixels() * 2, HISTORY))),
        times_signals(job).then(|| {
            (
                format!("{region}-bare-signals"),
                region_len(g.signals * 4, HISTORY),
            )
        }),
        times_compute(job).then(|| (commands_region(region), region_len(g.actuators * 4, 1))),
    ]
}

/// Creates the regions of the bare frames of a run of `job` (kept until dropped), or
/// `None` when the run does not time its floor in the loop.
pub fn create(job: &Job, names: &Names, g: &Geometry) -> Result<Option<Regions>> {
    regions(job, &names.region, g, |name, len| {
        ShmRegion::create(name, len).with_context(|| format!("creating the bare region {name}"))
    })
}

/// Opens the regions in a stage or camera process of `spec`, or `None` when its run does
/// not time its floor in the loop.
pub(super) fn open(spec: &ChildSpec, g: &Geometry) -> Result<Option<Regions>> {
    regions(&spec.job, &spec.names.region, g, |name, len| {
        ShmRegion::open(name, len).with_context(|| format!("opening the bare region {name}"))
    })
}

fn regions(
    job: &Job,
    region: &str,
    g: &Geometry,
    map: impl Fn(&str, usize) -> Result<ShmRegion>,
) -> Result<Option<Regions>> {
    if !job.floor_between_frames {
        return Ok(None);
    }
    let [camera, signals, commands] =
        layout(job, region, g).map(|r| r.map(|(name, len)| map(&name, len)));
    Ok(Some(Regions {
        camera: camera.context("no camera region")??,
        signals: signals.transpose()?,
        _commands: commands.transpose()?,
    }))
}

/// Frames of the run of `spec`: the logs hold that many, allocated before the loop (a
/// log that grew in it would copy itself between two frames).
fn frames(spec: &ChildSpec) -> usize {
    Placement::of(&spec.job).frames(&spec.job) as usize
}

/// The spec of a hop's floor job in a process of `spec`: its wait, slots and wake-ahead.
fn hop_spec(spec: &ChildSpec, hop: Job) -> ChildSpec {
    ChildSpec {
        job: hop,
        ..spec.clone()
    }
}

/// A hop's sending side: frame `id`'s bare publication as publication `id`, never waiting
/// for the receiver. Keeps `[frame id, sent, arrived, the publication's return]` per frame
/// the receiver took (monotonic ns).
pub(super) struct Sender<'a> {
    ping: FloorPing<'a>,
    /// Where the hop's clock starts, as its floor's job says.
    start: OneWay,
    /// The extension of its log ([`LOG`], [`SIGNALS_LOG`]).
    ext: &'static str,
    /// Frame id, send time and the publication's return of the last frame sent, until it
    /// is seen taken.
    pending: Option<(u64, u64, u64)>,
    log: Vec<Entry>,
}

impl<'a> Sender<'a> {
    /// The camera's, to the stage that reads its frames.
    pub(super) fn camera(regions: &'a Regions, spec: &ChildSpec, g: &Geometry) -> Result<Self> {
        Self::new(
            &regions.camera,
            spec,
            camera_hop_job(&spec.job, g, false),
            LOG,
        )
    }

    /// The split form's slopes stage's, to the reconstructor (`None` where the run does
    /// not time the signals hop).
    pub(super) fn signals(
        regions: &'a Regions,
        spec: &ChildSpec,
        g: &Geometry,
    ) -> Result<Option<Self>> {
        regions
            .signals
            .as_ref()
            .map(|r| Self::new(r, spec, signals_hop_job(&spec.job, g), SIGNALS_LOG))
            .transpose()
    }

    fn new(region: &'a ShmRegion, spec: &ChildSpec, hop: Job, ext: &'static str) -> Result<Self> {
        let start = hop.one_way.unwrap_or(OneWay::Publish);
        Ok(Sender {
            ping: FloorPing::new(region, &hop_spec(spec, hop))?,
            start,
            ext,
            pending: None,
            log: Vec::with_capacity(frames(spec)),
        })
    }

    /// Logs the last frame sent if the receiver took it (a frame it skipped, taking a
    /// newer one, is not logged).
    fn settle(&mut self) {
        if let Some((id, sent, returned)) = self.pending
            && self.ping.acked()
        {
            self.log.push([id, sent, self.ping.arrived(), returned]);
            self.pending = None;
        }
    }

    /// Publishes `frame` bare as frame `id`'s (ids increase), timed as the hop's floor
    /// starts its clock: from before the publication (the camera's, and a hop within one
    /// core, whose floor holds the publication), or from its return, when this returns
    /// the publication's ns (a part of the compute floor, "publish alone"; else 0).
    pub(super) fn send<T: Element>(&mut self, id: u64, frame: &[T]) -> Result<u64> {
        self.settle();
        let generation = u32::try_from(id).context("a frame id beyond the bare stream's count")?;
        let t0 = monotonic_ns();
        self.ping.publish_as(generation, frame)?;
        let t1 = monotonic_ns();
        let (sent, publish) = match self.start {
            OneWay::Publish => (t0, 0),
            OneWay::Published => (t1, t1 - t0),
        };
        self.pending = Some((id, sent, t1));
        Ok(publish)
    }

    /// Logs the last frame if taken, tells the receiver there are no more (before the
    /// stop frame, which the receiver reads after), and writes the log beside the process's
    /// results (`prefix` with its extension).
    pub(super) fn finish(mut self, prefix: &Path) -> Result<()> {
        self.settle();
        self.ping.stop();
        write_log(&prefix.with_extension(self.ext), &self.log)
    }
}

/// A hop's receiving side: takes the bare frame between two of the stage's frames.
pub(super) struct Receiver<'a> {
    echo: FloorEcho<'a>,
    stopped: bool,
}

impl<'a> Receiver<'a> {
    /// The stage's that reads camera frames.
    pub(super) fn camera(regions: &'a Regions, spec: &ChildSpec, g: &Geometry) -> Self {
        Self::new(&regions.camera, spec, camera_hop_job(&spec.job, g, false))
    }

    /// The split form's reconstructor's (`None` where the run does not time the signals
    /// hop).
    pub(super) fn signals(regions: &'a Regions, spec: &ChildSpec, g: &Geometry) -> Option<Self> {
        let hop = signals_hop_job(&spec.job, g);
        regions.signals.as_ref().map(|r| Self::new(r, spec, hop))
    }

    fn new(region: &'a ShmRegion, spec: &ChildSpec, hop: Job) -> Self {
        Receiver {
            echo: FloorEcho::new(region, &hop_spec(spec, hop)),
            stopped: false,
        }
    }

    /// After the stage's frame `id`: waits for the bare frame sent after it (or a later
    /// one, when the stage is late) and copies it into `dst` (the buffer the stage reads
    /// its frames into); the id of the one it took. None at once when it already took one
    /// as late, or once the sender said it sends no more.
    pub(super) fn take<T: Element>(&mut self, id: u64, dst: &mut [T]) -> Result<Option<u64>> {
        let id = u32::try_from(id).context("a frame id beyond the bare stream's count")?;
        if self.stopped || self.echo.served() >= id {
            return Ok(None);
        }
        self.stopped = self.echo.serve_from(id, dst)? == Echo::Stop;
        Ok((!self.stopped).then(|| u64::from(self.echo.served())))
    }
}

/// A stage's compute floor between frames, on the bare frame (or signals) just taken:
/// the slopes and the reconstructor (the stage's own [`Slopes`] and [`Recon`], on an
/// integrator state of its own), the commands published bare as
/// [`super::stage::floor_compute`] does. Keeps `[frame id, slopes ns, recon ns, publish
/// ns]` per frame (0 for a part the stage does not compute: the split form's stages each
/// log theirs, joined by frame id in [`Timed::read`]).
pub(super) struct Compute {
    sig: Vec<f32>,
    cmd: Vec<f32>,
    state: Vec<f32>,
    /// The commands' bare publication, for a stage with a reconstructor.
    commands: Option<BareOutput>,
    log: Vec<Entry>,
}

impl Compute {
    /// For a stage of `spec` (with reconstructor `recon`, where it has one), or `None`
    /// where the run does not time the compute between frames ([`times_compute`]).
    pub(super) fn new(
        spec: &ChildSpec,
        g: &Geometry,
        recon: Option<&Recon>,
    ) -> Result<Option<Self>> {
        if !times_compute(&spec.job) {
            return Ok(None);
        }
        let ao = spec
            .job
            .ao
            .as_ref()
            .context("ao-loop job without [case.ao]")?;
        let commands = match recon {
            Some(_) => Some(BareOutput::open(
                &commands_region(&spec.names.region),
                g.actuators * 4,
                1,
                ao.stage_wait(false).notifies(),
            )?),
            None => None,
        };
        Ok(Some(Compute {
            sig: vec![0.0; g.signals],
            cmd: vec![0.0; g.actuators],
            state: recon.map_or_else(Vec::new, Recon::fresh_state),
            commands,
            log: Vec::with_capacity(frames(spec)),
        }))
    }

    /// Times the slopes on `frame` into the signals; their ns.
    pub(super) fn slopes(&mut self, frame: &[u16], slopes: &mut Slopes) -> u64 {
        let t0 = monotonic_ns();
        slopes.compute(frame, &mut self.sig);
        monotonic_ns() - t0
    }

    /// The signals: the slopes' output, or where the reconstructor's receiver puts them.
    pub(super) fn signals(&mut self) -> &mut [f32] {
        &mut self.sig
    }

    /// Times the reconstructor on the signals and the commands' bare publication: their
    /// ns.
    pub(super) fn recon(&mut self, recon: &mut Recon) -> Result<(u64, u64)> {
        let t0 = monotonic_ns();
        recon.step_on(&mut self.state, &self.sig, &mut self.cmd);
        let t1 = monotonic_ns();
        let sent = match self.commands.as_mut() {
            Some(c) => c.publish(&self.cmd)?,
            None => 0,
        };
        Ok((t1 - t0, sent))
    }

    /// Keeps `[frame id, slopes ns, recon ns, publish ns]`.
    pub(super) fn log(&mut self, entry: Entry) {
        self.log.push(entry);
    }

    /// Writes the log beside the process's results (`prefix`.[`COMPUTE_LOG`]).
    pub(super) fn finish(self, prefix: &Path) -> Result<()> {
        write_log(&prefix.with_extension(COMPUTE_LOG), &self.log)
    }
}

/// What the runs timed between their frames: the hops' one-way latencies and, on the
/// CPU, the compute entries (else empty).
#[derive(Debug, Clone)]
pub struct Timed {
    /// The camera hop's one-way latency per bare frame taken.
    pub hop: Histogram<u64>,
    /// The signals hop's, in the split form on the CPU (else empty).
    pub signals_hop: Histogram<u64>,
    /// `[frame id, slopes ns, recon ns, publish ns]` per bare frame computed on.
    pub compute: Vec<Entry>,
}

impl Timed {
    /// Reads the logs of the runs of `job` whose result prefixes are `cameras`, `stages`
    /// (the stage reading camera frames) and `recons` (the split form's reconstructor),
    /// run by run (each run's frame ids start at 1).
    pub fn read(
        job: &Job,
        cameras: &[PathBuf],
        stages: &[PathBuf],
        recons: &[PathBuf],
    ) -> Result<Self> {
        let warmup = Placement::warmup_frames(job);
        let log = |prefix: &PathBuf, ext: &str| -> Result<Vec<Entry>> {
            Ok(read_log(&prefix.with_extension(ext))?
                .into_iter()
                .filter(|e| e[0] > warmup)
                .collect())
        };
        let mut t = Timed {
            hop: crate::hist::new(),
            signals_hop: crate::hist::new(),
            compute: Vec::new(),
        };
        for (r, camera) in cameras.iter().enumerate() {
            let hop = one_way(&log(camera, LOG)?);
            let signals = match (times_signals(job), stages.get(r)) {
                (true, Some(stage)) => Some(one_way(&log(stage, SIGNALS_LOG)?)),
                _ => None,
            };
            // The merged stage logs its whole compute; the split form's two stages each
            // log their part, joined by frame id.
            let compute = match (stages.get(r), recons.get(r)) {
                (Some(stage), _) if times_compute(job) && signals.is_none() => {
                    log(stage, COMPUTE_LOG)?
                }
                (Some(stage), Some(recon)) if signals.is_some() => {
                    join(&log(stage, COMPUTE_LOG)?, &log(recon, COMPUTE_LOG)?)
                }
                _ => Vec::new(),
            };
            for ns in hop.values() {
                t.hop.saturating_record(*ns);
            }
            for ns in signals.iter().flat_map(|s| s.values()) {
                t.signals_hop.saturating_record(*ns);
            }
            t.compute.extend(compute);
        }
        Ok(t)
    }
}

/// The one-way latency of each frame of a hop log (`[frame id, sent, arrived, …]`) by
/// frame id; an arrival stamped before its send (the two cores' clock reads crossing) is
/// 0, as the loop's analysis and the floor's passes take it, not left out.
fn one_way(log: &[Entry]) -> HashMap<u64, u64> {
    log.iter()
        .map(|e| (e[0], e[2].saturating_sub(e[1])))
        .collect()
}

/// The split form's compute entries: each frame's slopes entry (its slopes, its signals'
/// publication) with the reconstructor's entry of the same frame (its recon, its
/// commands' publication); frames only one stage computed on are left out.
fn join(slopes: &[Entry], recon: &[Entry]) -> Vec<Entry> {
    let recon: HashMap<u64, &Entry> = recon.iter().map(|e| (e[0], e)).collect();
    slopes
        .iter()
        .filter_map(|s| recon.get(&s[0]).map(|r| [s[0], s[1], r[2], s[3] + r[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::floor::Frames;
    use crate::scenario::{Device, Scenario};
    use crate::spawn::Role;
    use std::time::Duration;

    fn spec(tag: &str, wait: &str) -> (ChildSpec, Geometry) {
        spec_of(tag, &format!("merged = true\n{wait}"))
    }

    fn spec_of(tag: &str, ao: &str) -> (ChildSpec, Geometry) {
        let text = format!(
            "name = \"t\"\n[[case]]\nkind = \"ao-loop\"\nsizes = [[8, 8]]\n\
             [case.ao]\nsubapertures = [2, 2]\nactuators = 5\nrate_hz = 1000\n{ao}"
        );
        let mut job = Scenario::parse(&text).unwrap().jobs(false, None).remove(0);
        job.floor_between_frames = true;
        job.timeout_s = 5.0;
        let g = Geometry::new(&job.shape, job.ao.as_ref().unwrap()).unwrap();
        let spec = ChildSpec::scratch(Role::AoCamera, job, &format!("ao-hop-{tag}"), 5.0);
        (spec, g)
    }

    /// A split form's run (`ao` added to its table) timing the signals hop, its results
    /// prefix given extension `ext`: its regions as the harness creates them and as a
    /// stage opens them.
    fn signals_hop(tag: &str, ao: &str, ext: &str) -> (ChildSpec, Geometry, Regions, Regions) {
        let (mut spec, g) = spec_of(tag, ao);
        spec.result_prefix = spec.result_prefix.with_extension(ext);
        let regions = create(&spec.job, &spec.names, &g).unwrap().unwrap();
        let opened = open(&spec, &g).unwrap().unwrap();
        (spec, g, regions, opened)
    }

    /// A frame whose arrival is stamped before its send (the cores' clock reads crossing)
    /// counts as a 0 ns hop, as in the loop's analysis and the floor's passes: left out,
    /// the between-frames floor lost its fastest samples.
    #[test]
    fn an_arrival_stamped_before_its_send_is_a_0_ns_hop() {
        let hop = one_way(&[[1, 10, 5, 0], [2, 10, 17, 0]]);
        assert_eq!(hop, HashMap::from([(1, 0), (2, 7)]));
    }

    /// Every bare frame the stage takes is logged with its id and an arrival after its
    /// send; a stage that comes late takes the newest (the one it missed is not logged)
    /// and then does not wait for the frame it already took; the camera's stop releases a
    /// stage waiting for a frame that never comes.
    #[test]
    fn bare_frames_are_taken_between_frames_and_a_late_stage_takes_the_newest() {
        for wait in ["", "wait = \"spin\""] {
            let (spec, g) = spec(&format!("take{}", wait.len()), wait);
            let regions = create(&spec.job, &spec.names, &g).unwrap().unwrap();
            assert!(
                regions.signals.is_none(),
                "the merged form has no signals hop"
            );
            let opened = open(&spec, &g).unwrap().unwrap();
            let mut tx = Sender::camera(&regions, &spec, &g).unwrap();
            let frames: Vec<Vec<u16>> = (0..4u16).map(|k| vec![k; g.pixels()]).collect();
            let log = spec.result_prefix.with_extension(LOG);
            std::thread::scope(|s| {
                let (go_tx, go) = std::sync::mpsc::channel::<()>();
                let (taken_tx, taken) = std::sync::mpsc::channel::<u16>();
                let (opened, spec, g) = (&opened, &spec, &g);
                let stage = s.spawn(move || {
                    let mut rx = Receiver::camera(opened, spec, g);
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
                tx.finish(&spec.result_prefix).unwrap();
                stage.join().unwrap();
            });
            let entries = read_log(&log).unwrap();
            let ids: Vec<u64> = entries.iter().map(|e| e[0]).collect();
            assert_eq!(ids, [1, 3], "{wait}");
            assert!(
                entries.iter().all(|e| e[2] >= e[1] && e[1] > 0),
                "{entries:?}"
            );
            let hop = one_way(&entries);
            assert_eq!(hop.len(), 2);
            assert_eq!(hop[&3], entries[1][2] - entries[1][1]);
            std::fs::remove_file(&log).unwrap();
        }
    }

    /// The split form's slopes stage sends the bare signals of the frames it took, each
    /// numbered by its frame id, skipping the others; the reconstructor, after its frame
    /// `id`, takes those of `id` or later, at once when it already took them, and the
    /// sender's stop releases it. Within one core the hop is timed from before the
    /// publication (the send's own ns are not a part of the compute then).
    #[test]
    fn the_signals_go_to_the_reconstructor_numbered_by_frame_id() {
        let (spec, g, regions, opened) = signals_hop("signals", "", "sig");
        let mut tx = Sender::signals(&regions, &spec, &g).unwrap().unwrap();
        let mut rx = Receiver::signals(&opened, &spec, &g).unwrap();
        let sig = |v: f32| vec![v; g.signals];
        let mut dst = sig(0.0);
        // Frame 1's signals, taken after frame 1.
        assert_eq!(tx.send(1, &sig(1.0)).unwrap(), 0);
        assert_eq!(rx.take(1, &mut dst).unwrap(), Some(1));
        assert_eq!(dst[0], 1.0);
        // The slopes stage was late: it took frame 3's bare frame after its frame 2 and
        // sends its signals as frame 3's; after frame 2 the reconstructor takes them, and
        // after frame 3 it does not wait.
        tx.send(3, &sig(3.0)).unwrap();
        assert_eq!(rx.take(2, &mut dst).unwrap(), Some(3));
        assert_eq!(dst[0], 3.0);
        assert_eq!(rx.take(3, &mut dst).unwrap(), None);
        // Numbers only grow.
        assert!(tx.send(3, &sig(3.0)).is_err());
        let log = spec.result_prefix.with_extension(SIGNALS_LOG);
        std::thread::scope(|s| {
            let waiting = s.spawn(|| rx.take(4, &mut dst).unwrap());
            tx.finish(&spec.result_prefix).unwrap();
            assert_eq!(waiting.join().unwrap(), None, "released by the stop");
        });
        let ids: Vec<u64> = read_log(&log).unwrap().iter().map(|e| e[0]).collect();
        assert_eq!(ids, [1, 3]);
        std::fs::remove_file(&log).unwrap();
    }

    /// The split form's compute entries pair each frame's slopes with its reconstructor's
    /// step; the publications add up; a frame only one stage computed on is left out.
    #[test]
    fn the_split_forms_compute_is_joined_by_frame_id() {
        let slopes = [[1, 10, 0, 1], [2, 11, 0, 2], [3, 12, 0, 3]];
        let recon = [[2, 0, 20, 5], [3, 0, 21, 6], [4, 0, 22, 7]];
        assert_eq!(join(&slopes, &recon), [[2, 11, 20, 7], [3, 12, 21, 9]]);
    }

    /// The logs of two runs of the split form are read run by run (frame ids start at 1
    /// in each): each run's slopes entries are joined with its own reconstructor's, the
    /// hops' latencies pooled, the warm-up frames left out.
    #[test]
    fn the_split_forms_logs_are_read_run_by_run() {
        let (mut spec, _) = spec_of("timed", "");
        spec.job.floor_between_frames = true;
        let warmup = Placement::warmup_frames(&spec.job);
        let dir = std::env::temp_dir().join(format!("ao-timed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = |run: usize, role: &str| dir.join(format!("{run}-{role}"));
        let (a, b) = (warmup + 1, warmup + 2);
        for run in 0..2u64 {
            let k = 1000 * (run + 1);
            let write = |role: &str, ext: &str, log: &[Entry]| {
                write_log(&prefix(run as usize, role).with_extension(ext), log).unwrap()
            };
            // Camera hop k; frame b's missing in run 1.
            let hop: Vec<Entry> = [a, b]
                .iter()
                .filter(|&&id| run == 0 || id == a)
                .map(|&id| [id, 10, 10 + k, 0])
                .collect();
            write("camera", LOG, &hop);
            write(
                "slopes",
                SIGNALS_LOG,
                &[[a, 5, 5 + 2 * k, 0], [b, 5, 5 + 2 * k, 0]],
            );
            write(
                "slopes",
                COMPUTE_LOG,
                &[[1, 9, 0, 9], [a, 3 * k, 0, 0], [b, 3 * k, 0, 0]],
            );
            write("recon", COMPUTE_LOG, &[[a, 0, 4 * k, 1], [b, 0, 4 * k, 1]]);
        }
        let list = |role: &str| -> Vec<PathBuf> { (0..2).map(|r| prefix(r, role)).collect() };
        let t = Timed::read(&spec.job, &list("camera"), &list("slopes"), &list("recon")).unwrap();
        assert_eq!(
            t.compute,
            [
                [a, 3000, 4000, 1],
                [b, 3000, 4000, 1],
                [a, 6000, 8000, 1],
                [b, 6000, 8000, 1]
            ]
        );
        assert_eq!(t.hop.len(), 3);
        assert_eq!((t.hop.min(), t.hop.max()), (1000, 2000));
        assert_eq!(t.signals_hop.len(), 4);
        assert_eq!(t.compute.len(), 4, "the warm-up frame is left out");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The regions: the camera's u16 frames and the split form's f32 signals over the
    /// input streams' history slots, the f32 commands in one frame; the commands' only
    /// where the run times its compute (on the CPU), the signals' only in the split form
    /// there. (Sizes whose slots take whole pages apart from those of their neighbours,
    /// and from each other's.)
    #[test]
    fn the_regions_hold_the_hops_histories_and_one_frame_of_commands() {
        let (split, mut g) = spec_of("layout", "");
        (g.wfs, g.signals, g.actuators) = ([100, 50], 1500, 1100);
        let camera = Some(("r".to_string(), region_len(10_000, HISTORY)));
        let signals = Some(("r-bare-signals".to_string(), region_len(6000, HISTORY)));
        let commands = Some(("r-commands".to_string(), region_len(4400, 1)));
        assert!(times_compute(&split.job) && times_signals(&split.job));
        assert_eq!(
            layout(&split.job, "r", &g),
            [camera.clone(), signals, commands.clone()]
        );
        let (merged, _) = spec("layout", "");
        assert!(times_compute(&merged.job) && !times_signals(&merged.job));
        assert_eq!(
            layout(&merged.job, "r", &g),
            [camera.clone(), None, commands]
        );
        // On the GPU the device work keeps the passes' compute floor: the camera hop alone.
        let mut gpu = split.job.clone();
        gpu.device = Device::Cuda(0);
        assert!(!times_compute(&gpu) && !times_signals(&gpu));
        assert_eq!(layout(&gpu, "r", &g), [camera, None, None]);
        let mut passes_only = split.job;
        passes_only.floor_between_frames = false;
        assert!(!times_compute(&passes_only));
    }

    /// Across cores the signals hop's clock starts at the publication's return, as the
    /// slopes stage stamps it: `send` returns the publication's ns (a part of the compute
    /// floor), and the log's send stamp is that return.
    #[test]
    fn across_cores_the_signals_hop_is_timed_from_the_publications_return() {
        let (spec, g, regions, opened) = signals_hop("signals-across", "recon_cpu = 0\n", "sigx");
        let mut tx = Sender::signals(&regions, &spec, &g).unwrap().unwrap();
        let mut rx = Receiver::signals(&opened, &spec, &g).unwrap();
        let publish = tx.send(1, &vec![1.0f32; g.signals]).unwrap();
        assert!(publish > 1 && publish < 1_000_000_000, "{publish} ns");
        let mut dst = vec![0.0f32; g.signals];
        assert_eq!(rx.take(1, &mut dst).unwrap(), Some(1));
        tx.finish(&spec.result_prefix).unwrap();
        let log = spec.result_prefix.with_extension(SIGNALS_LOG);
        let entries = read_log(&log).unwrap();
        std::fs::remove_file(&log).unwrap();
        let [[id, sent, arrived, returned]] = entries[..] else {
            panic!("one frame sent and taken: {entries:?}");
        };
        assert_eq!((id, sent), (1, returned));
        assert!(arrived >= sent, "{entries:?}");
    }

    /// Between frames a stage with a reconstructor computes with the loop's matrices on an
    /// integrator state of its own: its signals are the stage's slopes of the frame, its
    /// commands the reconstructor's from a fresh state, published bare into the commands
    /// region; each part is timed, and its log, allocated for the run's frames before the
    /// loop, is written beside the results.
    #[test]
    fn the_compute_between_frames_runs_the_loops_matrices_on_a_state_of_its_own() {
        let (spec, g) = spec("compute", "");
        let regions = create(&spec.job, &spec.names, &g).unwrap().unwrap();
        let recon = || Recon::new(&g, 1, &[0], 0.5, 0.9).unwrap();
        let (mut loops, mut fresh) = (recon(), recon());
        let mut c = Compute::new(&spec, &g, Some(&loops)).unwrap().unwrap();
        let frames = Placement::of(&spec.job).frames(&spec.job) as usize;
        assert!(frames > 1 && c.log.capacity() >= frames, "{frames}");
        let frame: Vec<u16> = (0..g.pixels()).map(|i| (i * 37 % 1000) as u16).collect();
        let slopes_ns = c.slopes(&frame, &mut Slopes::new(&g));
        let mut sig = vec![0.0f32; g.signals];
        Slopes::new(&g).compute(&frame, &mut sig);
        assert!(sig.iter().any(|&v| v != 0.0), "{sig:?}");
        assert_eq!(c.signals(), &sig[..]);
        let (recon_ns, publish_ns) = c.recon(&mut loops).unwrap();
        for ns in [slopes_ns, recon_ns, publish_ns] {
            assert!(ns > 1 && ns < 1_000_000_000, "{ns} ns");
        }
        let mut cmd = vec![0.0f32; g.actuators];
        fresh.step(&sig, &mut cmd);
        assert!(cmd.iter().any(|&v| v != 0.0), "{cmd:?}");
        let mut published = vec![0.0f32; g.actuators];
        Frames::own(regions._commands.as_ref().unwrap()).copy_out(0, &mut published);
        assert_eq!(published, cmd);
        c.log([7, slopes_ns, recon_ns, publish_ns]);
        c.finish(&spec.result_prefix).unwrap();
        let log = spec.result_prefix.with_extension(COMPUTE_LOG);
        let entries = read_log(&log).unwrap();
        std::fs::remove_file(&log).unwrap();
        assert_eq!(entries, [[7, slopes_ns, recon_ns, publish_ns]]);
    }

    /// The merged stage logs its whole compute, read as logged (past the warm-up); on the
    /// GPU the runs time the camera hop alone, and no compute log is looked for.
    #[test]
    fn the_merged_stages_compute_is_read_as_logged_and_the_gpus_not_at_all() {
        let (spec, _) = spec("timed-merged", "");
        let warmup = Placement::warmup_frames(&spec.job);
        let dir = std::env::temp_dir().join(format!("ao-timed-merged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let [camera, stage, recon] = ["camera", "stage", "recon"].map(|r| [dir.join(r)]);
        write_log(&camera[0].with_extension(LOG), &[[warmup + 1, 10, 1010, 0]]).unwrap();
        let computed = [warmup + 1, 3000, 4000, 500];
        write_log(
            &stage[0].with_extension(COMPUTE_LOG),
            &[[warmup, 1, 1, 1], computed],
        )
        .unwrap();
        let t = Timed::read(&spec.job, &camera, &stage, &[]).unwrap();
        assert_eq!(t.compute, [computed], "the last warm-up frame is left out");
        assert_eq!((t.hop.len(), t.signals_hop.len()), (1, 0));
        let (split, _) = spec_of("timed-gpu", "");
        let mut gpu = split.job;
        gpu.device = Device::Cuda(0);
        let t = Timed::read(&gpu, &camera, &stage, &recon).unwrap();
        assert!(t.compute.is_empty() && t.signals_hop.is_empty());
        assert_eq!(t.hop.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
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

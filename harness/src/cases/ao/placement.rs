//! Where the loop's stages run and how many frames a run publishes.

use super::geometry::{AoCase, Geometry, MAX_RATE_HZ};
use super::runner::{at_rate, each_run, lowest_rung_hz};
use crate::error::{Result, bail};
use crate::scenario::{Job, Kind};

/// Frames a run publishes at least, however short or slow.
pub const MIN_FRAMES: u64 = 30;

/// Frames the floor's compute pass measures at least ([`Placement::floor_frames`]).
pub const MIN_FLOOR_FRAMES: u64 = 50;

/// Frames the floor's compute pass runs before those it measures.
pub const FLOOR_WARMUP_FRAMES: u64 = 10;

/// Bytes of our stages' logs per frame of a run: a 32 B entry in each of up to 7 logs, all
/// sized to the run's frames at their start (the camera's and its bare frames' sender's;
/// the slopes (or GPU) stage's, its bare compute's and its bare signals' sender's; the
/// reconstructor's and its bare compute's).
pub const LOG_BYTES_PER_FRAME: u64 = 7 * 32;

/// Bytes of the Python peer's logs per frame and stage after the camera: about 150 B of a
/// list of tuples, then their 32 B copy as an array (the camera's is 32 B).
const PEER_LOG_BYTES_PER_FRAME: u64 = 150 + 32;

/// A process of an ao-loop job pacing its frames, one a camera period
/// ([`Placement::check_timeout`]).
struct Paced {
    /// What it is and does: "each run of the loop publishes".
    what: String,
    /// Frames it paces.
    frames: u64,
    /// Seconds they take.
    secs: f64,
    /// The remedy, besides a longer timeout, when they take too long.
    remedy: String,
}

/// The cores of the stages (`recon == slopes` and one process when merged, as always
/// in the GPU form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Camera core.
    pub camera: usize,
    /// Slopes core (also of the merged slopes+recon process).
    pub slopes: usize,
    /// Reconstructor core.
    pub recon: usize,
    /// Slopes and reconstructor in one process.
    pub merged: bool,
}

impl Placement {
    /// The placement of `job` (camera on `writer_cpu`, the others on `reader_cpu`
    /// unless `[case.ao]` says otherwise).
    pub fn of(job: &Job) -> Self {
        let ao = job.ao.as_ref();
        let slopes = ao.and_then(|a| a.slopes_cpu).unwrap_or(job.reader_cpu);
        // The GPU form runs slopes and reconstructor in one process on the device.
        let merged = ao.is_some_and(|a| a.merged) || job.device.is_gpu();
        Self {
            camera: ao.and_then(|a| a.camera_cpu).unwrap_or(job.writer_cpu),
            slopes,
            recon: if merged {
                slopes
            } else {
                ao.and_then(|a| a.recon_cpu).unwrap_or(slopes)
            },
            merged,
        }
    }

    fn cores(&self) -> Vec<usize> {
        let mut v = vec![self.camera, self.slopes];
        if !self.merged {
            v.push(self.recon);
        }
        v
    }

    /// The cores of the stages after the camera (slopes, reconstructor; one when merged or
    /// both on one core).
    pub fn stage_cores(&self) -> Vec<usize> {
        let mut v = vec![self.slopes, self.recon];
        v.dedup();
        v
    }

    /// The cores among `cores` a process can be pinned to here: those
    /// [`crate::spawn::pin_to`] succeeds on, tried from a scratch thread (the caller's own
    /// affinity stays as it is); `None` when that thread could not run. A process placed on
    /// any other core (one this machine lacks, or its cpuset leaves out, as on a 1-core VM
    /// or in a container given one core) runs unpinned, anywhere its mask allows. Tried, not
    /// read from the affinity mask ([`crate::spawn::allowed_cores`]): a stage, pinned
    /// before it asks, has a mask of its own core only, and `sched_setaffinity` pins a
    /// process outside the mask it inherited (under `taskset`) wherever the cpuset allows.
    pub fn pinnable_cores(cores: &[usize]) -> Option<Vec<usize>> {
        let mut cores = cores.to_vec();
        cores.sort_unstable();
        cores.dedup();
        std::thread::Builder::new()
            .name("pin-probe".into())
            .spawn(move || {
                cores
                    .into_iter()
                    .filter(|&c| crate::spawn::pin_to(c))
                    .collect()
            })
            .ok()?
            .join()
            .ok()
    }

    /// [`Self::pinnable_cores`] among this placement's cores.
    pub fn pinnable_here(&self) -> Option<Vec<usize>> {
        Self::pinnable_cores(&self.cores())
    }

    /// Whether a process placed on `cpu` runs pinned there: `cpu` among `allowed` (the
    /// cores a process can be pinned to, [`Self::pinnable_cores`]; `None`: unknown, each
    /// taken as pinned).
    fn pinned_on(cpu: usize, allowed: Option<&[usize]>) -> bool {
        allowed.is_none_or(|a| a.contains(&cpu))
    }

    /// Whether the process placed on `cpu` shares a core with another: another is placed on
    /// `cpu`, or one of them runs unpinned ([`Self::pinned_on`] on `allowed`), on any core,
    /// so beside every other process.
    pub fn shares(&self, cpu: usize, allowed: Option<&[usize]>) -> bool {
        let cores = self.cores();
        cores.iter().filter(|c| **c == cpu).count() > 1
            || cores.iter().any(|&c| !Self::pinned_on(c, allowed))
    }

    /// [`Self::shares`] on the cores a process can be pinned to here.
    pub fn shares_here(&self, cpu: usize) -> bool {
        self.shares(cpu, self.pinnable_here().as_deref())
    }

    /// Whether the camera has its core to itself: no stage placed on it, and every process
    /// pinned where placed, each core among `allowed` (the cores a process can be pinned to,
    /// [`Self::pinnable_cores`], `None` when unknown; a process placed elsewhere runs
    /// unpinned, on any core, the camera's too, as everything does on a 1-core machine).
    /// Only then are the frames it publishes late its own loss
    /// ([`super::analysis::LoopStats::missed_at_source`]).
    pub fn camera_alone(&self, allowed: Option<&[usize]>) -> bool {
        !self.shares(self.camera, allowed)
    }

    /// [`Self::camera_alone`] on the cores a process can be pinned to here.
    pub fn camera_alone_here(&self) -> bool {
        self.camera_alone(self.pinnable_here().as_deref())
    }

    /// The split form with slopes and recon on one core (the default split placement).
    pub fn split_on_one_core(&self) -> bool {
        !self.merged && self.recon == self.slopes
    }

    /// A note when the stages oversubscribe cores, e.g. "slopes and recon share cpu 1", or
    /// run unpinned, placed on a core not among `allowed` (the cores a process can be
    /// pinned to, [`Self::pinnable_cores`]; `None`: unknown, each taken as pinned).
    pub fn oversubscribed(&self, allowed: Option<&[usize]>) -> Option<String> {
        let cores = self.cores();
        let names = ["camera", "slopes", "recon"];
        let mut notes = Vec::new();
        for (i, c) in cores.iter().enumerate() {
            for (j, d) in cores.iter().enumerate().skip(i + 1) {
                if c == d {
                    notes.push(format!("{} and {} share cpu {c}", names[i], names[j]));
                }
            }
        }
        let unpinned: Vec<String> = cores
            .iter()
            .zip(names)
            .filter(|&(&c, _)| !Self::pinned_on(c, allowed))
            .map(|(c, name)| format!("{name} (cpu {c})"))
            .collect();
        if !unpinned.is_empty() {
            notes.push(format!(
                "{} cannot be pinned here (a core this machine lacks or its cpuset leaves \
                 out), so {} unpinned, sharing a core with the other stages",
                unpinned.join(" and "),
                if unpinned.len() == 1 { "runs" } else { "run" }
            ));
        }
        (!notes.is_empty()).then(|| notes.join("; "))
    }

    /// Whether `job` is an ao-loop job whose stages busy-wait (`wait = "spin"`).
    fn spins(job: &Job) -> bool {
        job.kind == Kind::AoLoop
            && job
                .ao
                .as_ref()
                .is_some_and(|ao| ao.wait == Some(crate::scenario::Wait::Spin))
    }

    /// Refuses an ao-loop job whose stages busy-wait (`wait = "spin"`) where two are placed
    /// on one core: a spinner there only delays its neighbour. Checked when the scenario is
    /// read, so no case of it has run when it is refused; it does not depend on the machine
    /// (where a stage cannot be pinned here, the job is skipped when its turn comes,
    /// [`Self::skip_reason`], and the scenario's other cases run). Other kinds pass.
    pub fn check_spin(job: &Job) -> Result<()> {
        if !Self::spins(job) {
            return Ok(());
        }
        if let Some(note) = Self::of(job).oversubscribed(None) {
            bail!(
                "ao-loop: wait = \"spin\" needs a core per stage, but {note}; give each \
                 stage a core of its own (camera_cpu, slopes_cpu, recon_cpu), or leave wait \
                 out (adaptive)"
            );
        }
        Ok(())
    }

    /// Why ao-loop `job` cannot run here, or `None` when it can: its stages busy-wait
    /// (`wait = "spin"`) and one of its processes cannot be pinned where it is placed
    /// ([`Self::pinnable_cores`]: a core this machine lacks or its cpuset leaves out), so
    /// it would run unpinned, spinning beside the others. The job is skipped with this
    /// reason, as a GPU job without a device is, not failed. Other jobs: `None` (probing
    /// nothing).
    pub fn skip_reason(job: &Job) -> Option<String> {
        if !Self::spins(job) {
            return None;
        }
        Self::spin_skip_reason(job, Self::of(job).pinnable_here().as_deref())
    }

    /// [`Self::skip_reason`] with `allowed` the cores a process can be pinned to
    /// ([`Self::pinnable_cores`]; `None`: unknown, each taken as pinned).
    pub fn spin_skip_reason(job: &Job, allowed: Option<&[usize]>) -> Option<String> {
        if !Self::spins(job) {
            return None;
        }
        let place = Self::of(job);
        let names = match place.merged {
            true => ["camera", "slopes+recon", ""],
            false => ["camera", "slopes", "recon"],
        };
        let unpinned: Vec<String> = place
            .cores()
            .iter()
            .zip(names)
            .filter(|&(&c, _)| !Self::pinned_on(c, allowed))
            .map(|(c, name)| format!("{name} (cpu {c})"))
            .collect();
        if unpinned.is_empty() {
            return None;
        }
        let verb = if unpinned.len() == 1 { "is" } else { "are" };
        Some(format!(
            "wait = \"spin\" needs each stage pinned to a core of its own, but {} {verb} \
             placed on a core no process can be pinned to here (one this machine lacks or its \
             cpuset leaves out) and would run unpinned, spinning beside the other stages; \
             place each stage on a core it can be pinned to here (camera_cpu, slopes_cpu, \
             recon_cpu; writer_cpu and reader_cpu by default), or leave wait out (adaptive)",
            unpinned.join(" and ")
        ))
    }

    /// The cores the reconstructor's kernel workers are pinned to, in turn: its stage's
    /// one (the slopes stage's when merged).
    pub fn recon_cores(&self) -> Vec<usize> {
        vec![self.recon]
    }

    /// Refuses an ao-loop job whose reconstructor asks for more kernel threads than the
    /// placement gives it cores ([`Self::recon_cores`]): its workers would take turns on
    /// them, the stage asleep while they compute, no faster than one thread. Other kinds
    /// pass.
    pub fn check_threads(job: &Job) -> Result<()> {
        let Some(ao) = job.ao.as_ref().filter(|_| job.kind == Kind::AoLoop) else {
            return Ok(());
        };
        let cores = Self::of(job).recon_cores();
        if ao.threads > cores.len() {
            bail!(
                "ao-loop: threads = {}, but the placement gives the reconstructor {} core(s) \
                 ({cores:?}): its kernel's workers would take turns on them, no faster than \
                 one thread; leave threads out (1)",
                ao.threads,
                cores.len()
            );
        }
        Ok(())
    }

    /// Stage processes after the camera (the ready marks the camera waits for): 1 when
    /// merged (and in the GPU form), else 2.
    pub fn stage_processes(&self) -> u64 {
        if self.merged { 1 } else { 2 }
    }

    /// "camera@0 slopes@1 recon@1" or "camera@0 slopes+recon@1".
    pub fn describe(&self) -> String {
        if self.merged {
            format!("camera@{} slopes+recon@{}", self.camera, self.slopes)
        } else {
            format!(
                "camera@{} slopes@{} recon@{}",
                self.camera, self.slopes, self.recon
            )
        }
    }

    /// Frames the camera publishes in one run: warm-up plus measured time at the rate.
    pub fn frames(&self, job: &Job) -> u64 {
        let rate = job.ao.as_ref().map_or(1000.0, |a| a.rate_hz);
        ((job.timing.warmup + job.timing.min_seconds) * rate)
            .ceil()
            .max(MIN_FRAMES as f64) as u64
    }

    /// Frames the floor's compute pass measures, one a camera period after
    /// [`FLOOR_WARMUP_FRAMES`] more: the run's, at least [`MIN_FLOOR_FRAMES`], at most 2 s of
    /// them (and 20,000).
    pub fn floor_frames(&self, job: &Job) -> u64 {
        let rate = job.ao.as_ref().map_or(1000.0, |a| a.rate_hz);
        self.frames(job)
            .clamp(MIN_FLOOR_FRAMES, 20_000)
            .min(((2.0 * rate) as u64).max(MIN_FLOOR_FRAMES))
    }

    /// Refuses an ao-loop job a process of which cannot pace its frames, one a camera
    /// period, within the job's `timeout_s` (a process still running then is killed): each
    /// run of the loop (its frames and the period before the stop frame), the floor's
    /// compute pass, the pyshmem peer's loop, the rate ladder's slowest possible rung. A
    /// rate so low that even the fewest frames they publish take longer could only time
    /// out. Other kinds pass.
    pub fn check_timeout(job: &Job) -> Result<()> {
        if let Some(Paced {
            what,
            frames,
            secs,
            remedy,
        }) = Self::longest_paced(job)
            && secs >= job.timeout_s
        {
            bail!(
                "ao-loop: at rate_hz = {} {what} {frames} frames, {secs:.1} s, but \
                 timeout_s = {} kills a process still running then; raise timeout_s \
                 above {secs:.1}, or {remedy}",
                job.ao.as_ref().map_or(0.0, |a| a.rate_hz),
                job.timeout_s
            );
        }
        Ok(())
    }

    /// The longest a process of an ao-loop `job` paces its frames, seconds
    /// ([`Self::check_timeout`]); 0 for other kinds.
    pub fn longest_paced_s(job: &Job) -> f64 {
        Self::longest_paced(job).map_or(0.0, |p| p.secs)
    }

    /// The process of an ao-loop `job` that paces its frames the longest, `None` for other
    /// kinds or a rate the geometry refuses.
    fn longest_paced(job: &Job) -> Option<Paced> {
        let ao = job.ao.as_ref().filter(|_| job.kind == Kind::AoLoop)?;
        let rate = ao.rate_hz;
        if !(rate.is_finite() && rate > 0.0) {
            return None; // the geometry refuses it, saying so
        }
        let place = Self::of(job);
        let run = place.frames(&each_run(job));
        // (what, frames paced, at which rate, the remedy besides a longer timeout). Where a
        // process paces the fewest frames it paces at any rate, a higher rate shortens it;
        // otherwise its frames follow the case's seconds.
        let timeout = job.timeout_s;
        let remedy = |frames: u64, paced: u64, least: u64| match paced == least {
            true => format!("raise rate_hz above {:.3} Hz", frames as f64 / timeout),
            false => "shorten min_seconds / warmup".to_string(),
        };
        // Saturating: frame counts saturate for seconds no scenario passes, and the counts
        // are compared with a timeout, not used.
        let floor = place.floor_frames(job);
        let floor_paced = floor.saturating_add(FLOOR_WARMUP_FRAMES);
        let mut paced = vec![
            (
                "each run of the loop publishes".to_string(),
                run.saturating_add(1),
                rate,
                remedy(run.saturating_add(1), run, MIN_FRAMES),
            ),
            (
                "the floor's compute pass paces".to_string(),
                floor_paced,
                rate,
                remedy(floor_paced, floor, MIN_FLOOR_FRAMES),
            ),
        ];
        if job.peer && !job.device.is_gpu() {
            let n = place.frames(job);
            paced.push((
                "the pyshmem peer's loop publishes".to_string(),
                n,
                rate,
                format!("{}, or set peer = false", remedy(n, n, MIN_FRAMES)),
            ));
        }
        if ao.ladder {
            // The slowest rung the ladder may run: its rate halved at every try.
            let low = lowest_rung_hz(rate);
            let rung = place.frames(&at_rate(job, low, ao.ladder_seconds));
            let fix = match rung == MIN_FRAMES {
                true => format!(
                    "raise rate_hz above {:.3} Hz",
                    rung.saturating_add(1) as f64 / timeout * rate / low
                ),
                false => "shorten ladder_seconds / warmup".to_string(),
            };
            paced.push((
                format!(
                    "the rate ladder's slowest rung, at {low} Hz (the rate halved at each \
                     of its tries), publishes"
                ),
                rung.saturating_add(1),
                low,
                format!("{fix}, or set ladder = false"),
            ));
        }
        paced
            .into_iter()
            .map(|(what, frames, hz, remedy)| Paced {
                what,
                frames,
                secs: frames as f64 / hz,
                remedy,
            })
            .max_by(|a, b| a.secs.total_cmp(&b.secs))
    }

    /// Bytes the stages' logs of `job`'s longest run hold by its end, saturated: ours
    /// [`LOG_BYTES_PER_FRAME`] a frame of one run of the loop, or of the ladder's longest
    /// rung (at [`MAX_RATE_HZ`]); the Python peer's, whose one run is the job's whole
    /// seconds, [`PEER_LOG_BYTES_PER_FRAME`] a frame per stage and 32 B for its camera.
    pub fn log_bytes(job: &Job) -> u64 {
        let Some(ao) = job.ao.as_ref() else {
            return 0;
        };
        let place = Self::of(job);
        let rung = match ao.ladder {
            true => place.frames(&at_rate(job, MAX_RATE_HZ, ao.ladder_seconds)),
            false => 0,
        };
        let ours = place
            .frames(&each_run(job))
            .max(rung)
            .saturating_mul(LOG_BYTES_PER_FRAME);
        let peer = match job.peer && !job.device.is_gpu() {
            true => place
                .frames(job)
                .saturating_mul(32 + PEER_LOG_BYTES_PER_FRAME * place.stage_processes()),
            false => 0,
        };
        ours.max(peer)
    }

    /// Refuses an ao-loop job a run of which does not fit this machine's available memory
    /// now: its geometry's ([`Geometry::memory`]) and its stages' logs
    /// ([`Self::log_bytes`]). Other kinds pass.
    pub fn check_memory(job: &Job) -> Result<()> {
        match job.ao.as_ref().filter(|_| job.kind == Kind::AoLoop) {
            Some(ao) => Self::geometry(job, ao, super::geometry::available_memory()).map(drop),
            None => Ok(()),
        }
    }

    /// The geometry of ao-loop `job` (its `[case.ao]` `ao`), refused where a run of it,
    /// its stages' logs included, does not fit `available` bytes (None: unknown).
    pub fn geometry(job: &Job, ao: &AoCase, available: Option<u64>) -> Result<Geometry> {
        let g = Geometry::derive(&job.shape, ao)?;
        g.check_memory(available, Self::log_bytes(job))?;
        Ok(g)
    }

    /// Warm-up frames left out of the statistics.
    pub fn warmup_frames(job: &Job) -> u64 {
        let rate = job.ao.as_ref().map_or(1000.0, |a| a.rate_hz);
        (job.timing.warmup * rate).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stages' cores: slopes and reconstructor, once where they share one.
    #[test]
    fn the_stage_cores_are_the_slopes_and_reconstructor_cores_each_once() {
        let p = |slopes, recon, merged| Placement {
            camera: 0,
            slopes,
            recon,
            merged,
        };
        assert_eq!(p(1, 1, false).stage_cores(), [1]);
        assert_eq!(p(1, 2, false).stage_cores(), [1, 2]);
        assert_eq!(p(3, 3, true).stage_cores(), [3]);
    }

    /// A process placed on a core it cannot be pinned to (a 1-core machine, a cpuset of
    /// one core: `allowed` = [0]) runs unpinned, anywhere: it shares a core with every other
    /// process, the placement is oversubscribed, and busy-waiting stages are skipped, where
    /// with both cores pinnable (or the cores unknown) nothing changes.
    #[test]
    fn a_stage_placed_on_a_core_it_cannot_be_pinned_to_shares_every_core() {
        let job = |extra: &str| {
            crate::scenario::Scenario::parse(&format!(
                "name = \"t\"\n[[case]]\nname = \"spin\"\nkind = \"ao-loop\"\n\
                 sizes = [[8, 8]]\n[case.ao]\nsubapertures = [2, 2]\nactuators = 5\n\
                 rate_hz = 1000\nmerged = true\n{extra}"
            ))
            .unwrap()
            .jobs(false, None)
            .remove(0)
        };
        let merged = Placement::of(&job(""));
        assert_eq!((merged.camera, merged.slopes), (0, 1));
        let one: &[usize] = &[0];
        let two: &[usize] = &[0, 1];
        assert!(merged.shares(1, Some(one)) && merged.shares(0, Some(one)));
        assert!(!merged.camera_alone(Some(one)));
        let note = merged.oversubscribed(Some(one)).unwrap();
        assert!(
            note.contains("slopes (cpu 1) cannot be pinned here"),
            "{note}"
        );
        for known in [Some(two), None] {
            assert!(!merged.shares(1, known) && !merged.shares(0, known));
            assert_eq!(merged.oversubscribed(known), None);
        }
        // Busy-waiting stages on cores a process cannot be pinned to are skipped, saying
        // where and what to do; the scenario itself is not refused for it.
        let spin = job("wait = \"spin\"\n");
        assert!(Placement::check_spin(&spin).is_ok());
        let why = Placement::spin_skip_reason(&spin, Some(one)).unwrap();
        assert!(
            why.starts_with(
                "wait = \"spin\" needs each stage pinned to a core of its own, but \
                 slopes+recon (cpu 1) is placed on a core no process can be pinned to here"
            ) && why.contains("place each stage on a core it can be pinned to here")
                && why.contains("or leave wait out"),
            "{why}"
        );
        assert_eq!(Placement::spin_skip_reason(&spin, Some(two)), None);
        assert_eq!(Placement::spin_skip_reason(&spin, None), None);
        assert_eq!(Placement::spin_skip_reason(&job(""), Some(one)), None);
        // The split form: its stages share cpu 1 either way, and run unpinned with [0].
        let split = Placement {
            merged: false,
            recon: 1,
            ..merged
        };
        assert_eq!(
            split.oversubscribed(Some(two)).as_deref(),
            Some("slopes and recon share cpu 1")
        );
        let note = split.oversubscribed(Some(one)).unwrap();
        assert!(
            note.starts_with("slopes and recon share cpu 1; slopes (cpu 1) and recon (cpu 1)"),
            "{note}"
        );
    }

    /// A busy-waiting case placed on a core no process can be pinned to here (1023 on any
    /// machine of fewer cores) still parses, a scenario's other cases with it (`--cases`
    /// may leave it out), and its job is skipped when its turn comes, naming the core,
    /// without starting anything. Placed with two stages on one core, it is refused when
    /// read, on any machine.
    #[test]
    fn a_spinning_stage_that_cannot_be_pinned_here_is_skipped_not_refused() {
        let text = |cores: &str| {
            format!(
                "name = \"t\"\n[defaults]\nmin_seconds = 0.05\nwarmup = 0\n\
                 {cores}\n[[case]]\nname = \"other\"\nkind = \"roundtrip\"\n\
                 sizes = [[2]]\n[[case]]\nname = \"spin\"\nkind = \"ao-loop\"\n\
                 sizes = [[8, 8]]\n[case.ao]\nsubapertures = [2, 2]\nactuators = 5\n\
                 rate_hz = 1000\nmerged = true\nwait = \"spin\"\nladder = false\n"
            )
        };
        // The camera on a core this process runs on, which it can be pinned to.
        let own = crate::spawn::allowed_cores()
            .and_then(|c| c.first().copied())
            .unwrap_or(0);
        let far = crate::scenario::Scenario::parse(&text(&format!(
            "writer_cpu = {own}\nreader_cpu = 1023"
        )))
        .unwrap();
        let job = far.jobs(false, None).remove(1);
        assert_eq!(job.case, "spin");
        let why = Placement::skip_reason(&job).unwrap();
        assert!(
            why.contains(
                "slopes+recon (cpu 1023) is placed on a core no process can be pinned to here"
            ),
            "{why}"
        );
        assert_eq!(Placement::skip_reason(&far.jobs(false, None)[0]), None);
        let runner = crate::run::Runner::new(
            std::env::temp_dir(),
            crate::peer::PeerSetup::Missing("no peer here".into()),
        );
        let r = runner.run_job(1, &job);
        assert_eq!(r.skipped.as_deref(), Some(why.as_str()));
        assert!(!r.failed() && r.ao.is_none());
        let same = crate::scenario::Scenario::parse(&text("writer_cpu = 1023\nreader_cpu = 1023"))
            .unwrap_err()
            .to_string();
        assert!(
            same.starts_with(
                "[[case]] #2 (spin): ao-loop: wait = \"spin\" needs a core per stage, \
                 but camera and slopes share cpu 1023"
            ),
            "{same}"
        );
    }

    /// The cores a process can be pinned to are tried, leaving the caller's own affinity
    /// as it was: one of its own is among them, one no `cpu_set_t` can name is not.
    #[test]
    fn the_pinnable_cores_are_tried_without_moving_the_caller() {
        let before = crate::spawn::allowed_cores().unwrap();
        let mine = before[0];
        let none = crate::spawn::MAX_CORES + 1;
        assert_eq!(
            Placement::pinnable_cores(&[none, mine, mine]),
            Some(vec![mine])
        );
        assert_eq!(crate::spawn::allowed_cores().unwrap(), before);
    }

    /// A job whose frames saturate their count (seconds no scenario passes: `harness size`
    /// asked for the longest pacing before validating) gives an unbounded figure, not an
    /// overflow panic in counting the frame after the last.
    #[test]
    fn frame_counts_that_saturate_give_a_figure_not_a_panic() {
        let mut job = crate::scenario::Scenario::parse(
            "name = \"t\"\n[[case]]\nkind = \"ao-loop\"\nsizes = [[8, 8]]\n[case.ao]\n\
             subapertures = [2, 2]\nactuators = 5\nrate_hz = 1000\n",
        )
        .unwrap()
        .jobs(false, None)
        .remove(0);
        job.timing.min_seconds = f64::INFINITY;
        assert!(Placement::longest_paced_s(&job) >= u64::MAX as f64 / 1000.0);
        job.timing.min_seconds = 1.0;
        job.ao.as_mut().unwrap().ladder_seconds = 1e20;
        assert!(Placement::longest_paced_s(&job) >= u64::MAX as f64 / 1000.0);
    }

    /// The placement gives the reconstructor one core: more kernel threads than that are
    /// refused when the scenario is read, naming the case, instead of taking turns on it.
    #[test]
    fn more_reconstructor_threads_than_its_cores_are_refused() {
        let text = |threads: usize| {
            format!(
                "name = \"t\"\n[[case]]\nname = \"ao-threads\"\nkind = \"ao-loop\"\n\
                 sizes = [[8, 8]]\n[case.ao]\nsubapertures = [2, 2]\nactuators = 5\n\
                 rate_hz = 1000\nrecon_cpu = 1\nthreads = {threads}\n"
            )
        };
        let err = crate::scenario::Scenario::parse(&text(2))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("[[case]] #1 (ao-threads): ao-loop: threads = 2")
                && err.contains("gives the reconstructor 1 core(s) ([1])"),
            "{err}"
        );
        assert!(crate::scenario::Scenario::parse(&text(1)).is_ok());
    }

    /// The stages' logs are sized to a run's frames (seconds × rate_hz): a case whose logs
    /// alone exceed the machine is refused when the scenario is read, before anything
    /// starts, with the figure.
    #[test]
    fn a_case_whose_logs_do_not_fit_memory_is_refused_before_anything_starts() {
        let text = |peer: bool| {
            format!(
                "name = \"t\"\n[defaults]\nmin_seconds = 80000\nwarmup = 0.5\n\
                 timeout_s = 86400\npeer = {peer}\n[[case]]\nkind = \"ao-loop\"\n\
                 sizes = [[8, 8]]\n[case.ao]\nsubapertures = [2, 2]\nactuators = 5\n\
                 rate_hz = 1e5\nladder = false\n"
            )
        };
        let err = crate::scenario::Scenario::parse(&text(true))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("[[case]] #1 (ao-loop): ao-loop: a run of this case needs")
                && err.contains("GB for the stages' logs of its longest run"),
            "{err}"
        );
        // Without the peer: two runs of 40000.5 s at 100 kHz, 224 B a frame.
        let mut job = crate::scenario::Scenario::parse(&text(false).replace("80000", "1"))
            .unwrap()
            .jobs(false, None)
            .remove(0);
        job.timing.min_seconds = 80000.0;
        assert_eq!(
            Placement::log_bytes(&job),
            4_000_050_000 * LOG_BYTES_PER_FRAME
        );
        let ao = job.ao.clone().unwrap();
        let err = Placement::geometry(&job, &ao, Some(64 << 30))
            .unwrap_err()
            .to_string();
        assert!(err.contains("896.01 GB for the stages' logs"), "{err}");
        job.timing.min_seconds = 1.0;
        assert!(Placement::geometry(&job, &ao, Some(64 << 30)).is_ok());
    }
}

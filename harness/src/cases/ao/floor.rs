//! The loop's floor, composed in the same run: each stage's compute alone on plain
//! memory (one pinned process), the bare publication of each stage's output (a stage's
//! publish time is when its write returned), plus the hand-off floor of each hop's payload (the
//! harness's ping-pong floor on a bare shared-memory region, futex or spin as the stages
//! wait, timed one way: the stage's hop is a one-way wake of an idle core, which half a
//! round trip understates, since the acknowledgement wakes a writer that parked
//! microseconds before), summed percentile by percentile.
//!
//! The samples are paired by rank (comonotonically): the frames sorted by their compute
//! time, the `k`-th of `n` gets each hop's floor at quantile `(k + 0.5) / n`, so each
//! percentile of the composed floor is the sum of its parts' same percentiles (its p50 the
//! sum of their p50s). That bounds a pipeline whose parts are each at best as fast as
//! alone: where its slow frames are slow in every part (the host's slow moments are the
//! same for all of them), its percentiles are that sum or above; where its right-skewed
//! parts (a few slow wakes) are slow independently, its median lies above the sum of their
//! medians. Paired independently, the floor's own samples took that excess on themselves:
//! its p50 came out 0-4% above the sum of its parts' (the Keck-like merged loop's floor
//! read 0.99 of ours against 0.95). Parts mostly slow with a fast minority turn that
//! around (by rank, the p50 adds two slow parts; a loop whose parts are slow independently
//! has a fast one in its p50 frame), so each percentile of the floor is the lower of the
//! two pairings ([`lower_of_pairings`]).
//!
//! Each hop's floor moves its frame as the loop's streams do, minus the library: the
//! sender holds the lock (no flock pair), frames go to the next of [`super::stage::HISTORY`]
//! slots as into the input stream's history ring (one slot, rewritten while the reader's
//! core still held its lines, made a 115 KB hop's floor 15-17 µs against the loop's 13.6),
//! and a receiver that wakes ahead of the camera sleeps, then spins, as the stage does;
//! where the receiving stage's core is still busy with the reconstructor when a frame comes,
//! a thread keeps the floor's receiver core busy too ([`slopes_core_busy`]).

use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::analysis::StageStat;
use super::between_frames::Timed;
use super::geometry::Geometry;
use super::placement::Placement;
use super::stage::read_log;
use crate::error::{Context, Result};
use crate::hist;
use crate::measure::Measured;
use crate::run::{Runner, Side};
use crate::scenario::{Device, Job, Kind, OneWay, Timing, Wait};
use crate::spawn::{self, ChildSpec, Role};

/// The composed floor and its parts.
#[derive(Debug, Clone)]
pub struct Floor {
    /// The summed distribution, as a side of the job.
    pub side: Side,
    /// Its parts: compute alone per stage, then each hop's floor (p50 / p99).
    pub parts: Vec<StageStat>,
    /// Median of the reconstructor alone, ns (the MVM kernel's bandwidth comes from it).
    pub recon_p50_ns: u64,
}

/// A hop of the loop, whose floor [`hop_job`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    /// Camera → slopes (or the merged stage): timed from before the camera's write; the
    /// receiving stage may wake ahead of the camera's paced frames.
    Camera,
    /// Slopes → recon, in the split form: timed as [`signals_hop_start`] says.
    Signals,
}

/// The ping-pong floor job for one hop of `bytes`, between the cores of its stages, waiting
/// the way the receiving stage waits ([`super::AoCase::stage_wait`]; parked where it shares
/// its core). Frames come one camera period apart, as in the loop, so an adaptive waiter has
/// spent its spin budget and parked when the frame comes, as the stage has. Timed one way,
/// as the sending stage stamps. `busy`: the receiver's core is busy when frames come
/// ([`slopes_core_busy`]), so a thread keeps the floor's reader core busy too (parked
/// receivers only; a spinning one would share its core with it). For up to 2 s (the case's
/// seconds if fewer): on this VM an idle core's wake-up latency takes a second or so to
/// settle, and a 0.3 s floor came out above the loop's own hop.
fn hop_job(job: &Job, bytes: usize, hop: Hop, busy: bool) -> Job {
    let place = Placement::of(job);
    let ((from, to), start) = match hop {
        Hop::Camera => ((place.camera, place.slopes), OneWay::Publish),
        Hop::Signals => ((place.slopes, place.recon), signals_hop_start(&place)),
    };
    let shared = place.shares_here(to);
    // A stage that wakes ahead of the camera's frames sleeps until shortly before each one
    // is due, then spins: so does its hop's floor reader (one spinning the whole period
    // came out slower than the stage here, 15-17 µs against 13.6 at 115 KB). Only the
    // camera's frames come on a schedule to wake ahead of, and not on the camera's own
    // core: a stage there yields once awake, which the floor has no form of, and a floor
    // reader spinning beside its writer waits out time slices (under `SCHED_FIFO` starves
    // it): that hop's floor parks, as a stage sharing its core without the wake does.
    let ahead = match job.ao.as_ref() {
        Some(ao) if hop == Hop::Camera && from != to => ao.wake_ahead_ns(shared),
        _ => None,
    };
    let wait = match job.ao.as_ref() {
        Some(_) if ahead.is_some() => Wait::Spin,
        Some(ao) => ao.stage_wait(shared || from == to),
        None => Wait::Adaptive,
    };
    Job {
        case: "ao-hop".into(),
        kind: Kind::Pingpong,
        shape: vec![bytes],
        dtype: "uint8".into(),
        itemsize: 1,
        device: Device::Cpu,
        mirror: None,
        pipeline: None,
        wait: Some(wait),
        // The camera paces its frames whatever the stages do, so its hop's floor writer
        // does too (a writer that slept most of a period publishes from cold caches: a
        // 4.8 KB frame's write took 5-6 µs after the camera's sleep against 1 µs back to
        // back); a spinning stage sends as soon as its input came, back to back.
        gap_us: match (start, wait, job.ao.as_ref()) {
            (OneWay::Publish, _, Some(ao)) if ao.rate_hz > 0.0 => 1e6 / ao.rate_hz,
            (_, Wait::Spin, _) => 0.0,
            (_, _, Some(ao)) if ao.rate_hz > 0.0 => 1e6 / ao.rate_hz,
            _ => 100.0,
        },
        threads: 1,
        op: None,
        timing: Timing {
            warmup: 0.05,
            min_seconds: job.timing.min_seconds.min(2.0),
            repeats: 1,
        },
        writer_cpu: from,
        reader_cpu: to,
        timeout_s: job.timeout_s,
        peer: false,
        ao: None,
        one_way: Some(start),
        wake_ahead_ns: ahead,
        // The stages' input streams keep a history ring: a frame goes to the next slot.
        floor_slots: super::stage::HISTORY,
        busy_reader_core: busy && wait != Wait::Spin,
        rt_priority: job.rt_priority,
        slice_ns: job.slice_ns,
        pinned: false,
        floor_between_frames: false,
    }
}

/// The camera hop's floor job for `job` of geometry `g`; `busy`: its reader's core is kept
/// busy ([`slopes_core_busy`]; false as [`super::between_frames`] times it between the loop's
/// frames, the receiver's core as the loop leaves it).
pub(super) fn camera_hop_job(job: &Job, g: &Geometry, busy: bool) -> Job {
    hop_job(job, g.pixels() * 2, Hop::Camera, busy)
}

/// The signals hop's floor job for `job` of geometry `g` (the split form), as
/// [`super::between_frames`] times it between the loop's frames.
pub(super) fn signals_hop_job(job: &Job, g: &Geometry) -> Job {
    hop_job(job, g.signals * 4, Hop::Signals, false)
}

/// Whether the slopes stage's core is busy when a camera frame comes: in the split form
/// with slopes and recon on one core, a reconstructor that computes and publishes for
/// longer than a camera period (`compute`'s median: the SCExAO- and ELT-like loops here)
/// is still at work on an earlier frame, and the camera's wake-up preempts it rather than
/// waking an idle core (twice as fast on this VM, so an idle-core floor sat above the
/// loop's own hop: 36.9 against 24.3 µs). Not under SCHED_FIFO, where the woken stage
/// waits for the reconstructor instead.
fn slopes_core_busy(job: &Job, compute: &[[u64; 4]]) -> bool {
    let Some(ao) = job.ao.as_ref() else {
        return false;
    };
    Placement::of(job).split_on_one_core()
        && job.rt_priority.is_none()
        && median(compute, |e| e[2] + e[3]).is_some_and(|r| r as f64 >= 1e9 / ao.rate_hz)
}

/// Where the slopes→recon hop's floor starts its clock. With both stages on one core it
/// starts before the signals' publication, which it then holds (the stage's publication
/// leaves the compute floor's "publish alone"): the woken reconstructor may run inside
/// the slopes stage's wake, and timed from the publication's return its switch and copy
/// fell out of the floor (the hop read 0 ns at p50 against 3.5-4.3 µs in the loop).
/// Across cores, from the publication's return, as the stage stamps it.
pub(super) fn signals_hop_start(place: &Placement) -> OneWay {
    match place.split_on_one_core() {
        true => OneWay::Publish,
        false => OneWay::Published,
    }
}

fn stat(name: &str, h: &Histogram<u64>) -> StageStat {
    StageStat {
        name: name.into(),
        p50_ns: h.value_at_quantile(0.5),
        p99_ns: h.value_at_quantile(0.99),
    }
}

/// One pass of the floor's measurements: the stages' compute log and each hop's floor.
pub struct Parts {
    /// `[i, slopes ns, recon ns, publish ns]` per frame.
    compute: Vec<[u64; 4]>,
    /// Each hop's one-way floor.
    hops: Vec<(&'static str, Histogram<u64>)>,
}

/// Where the compute process of the floor's pass `pass` of job `idx` writes its results.
pub fn result_prefix(runner: &Runner, idx: usize, pass: usize) -> PathBuf {
    runner.work().join(format!("{idx}-aofloor{pass}"))
}

/// Measures one pass of the floor's parts of `job` (`pass` keeps the passes' names and
/// files apart).
pub fn measure(runner: &Runner, idx: usize, job: &Job, g: &Geometry, pass: usize) -> Result<Parts> {
    let place = Placement::of(job);
    let names = runner.names(idx, &format!("aofloor{pass}"));
    // Held until the compute process is gone, which only opens them.
    let _outputs = spawn::unless_stopping("creating the floor's regions", || {
        super::stage::Outputs::create_regions(job, &names, g)
    })?;
    let spec = ChildSpec {
        role: Role::AoFloorCompute,
        job: job.clone(),
        names,
        cpu: place.slopes,
        result_prefix: result_prefix(runner, idx, pass),
        wait_timeout_s: job.timeout_s,
    };
    spawn::run_group(
        std::slice::from_ref(&spec),
        Duration::from_secs_f64(job.timeout_s),
    )?;
    let compute = read_log(&spec.result_prefix.with_extension("aolog"))?;
    let busy = slopes_core_busy(job, &compute);
    let mut hops = vec![("camera→slopes floor", camera_hop_job(job, g, busy))];
    if !place.merged {
        hops.push(("slopes→recon floor", signals_hop_job(job, g)));
    }
    let mut hop_hists = Vec::new();
    for (k, (name, hj)) in hops.iter().enumerate() {
        let side = runner
            .floor(idx * 1000 + 100 + 10 * pass + k, hj)
            .with_context(|| name.to_string())?;
        hop_hists.push((*name, side.hist));
    }
    Ok(Parts {
        compute,
        hops: hop_hists,
    })
}

impl Parts {
    /// Whether the stages of `job` compute and publish (this pass's median) in under a
    /// quarter of a camera period, so that the stage reading camera frames is idle half a
    /// period after each and the camera hop's floor can be timed between the loop's frames
    /// ([`super::between_frames`]).
    pub fn leaves_room_between_frames(&self, job: &Job) -> bool {
        job.ao.as_ref().is_some_and(|ao| {
            ao.rate_hz > 0.0 && (compute_median(&self.compute) as f64) < 0.25e9 / ao.rate_hz
        })
    }
}

/// Median of `part` of each entry of a pass's compute log (`[i, slopes, recon, publish]`
/// ns), `None` for an empty log.
fn median(compute: &[[u64; 4]], part: impl Fn(&[u64; 4]) -> u64) -> Option<u64> {
    let mut t: Vec<u64> = compute.iter().map(part).collect();
    t.sort_unstable();
    t.get(t.len() / 2).copied()
}

/// Median of the compute time (slopes + recon + publish) of a pass's log.
fn compute_median(compute: &[[u64; 4]]) -> u64 {
    median(compute, |e| e[1] + e[2] + e[3]).unwrap_or(u64::MAX)
}

/// Each part's p50 in each pass, in the passes' order (the compute as slopes + recon +
/// publish), in µs: the host's state can differ from one pass to the next (the pyRTC
/// loop's camera-hop floor read 0.9 µs in one pass and 3.1 in the next), and the report
/// shows which state each part of the floor came from.
fn per_pass(passes: &[Parts]) -> String {
    let us = |v: Vec<u64>| {
        v.iter()
            .map(|ns| format!("{:.2}", *ns as f64 / 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = vec![format!(
        "compute {} µs",
        us(passes.iter().map(|p| compute_median(&p.compute)).collect())
    )];
    if let Some(first) = passes.first() {
        for (k, (name, _)) in first.hops.iter().enumerate() {
            let p50s = passes
                .iter()
                .filter_map(|p| p.hops.get(k).map(|(_, h)| h.value_at_quantile(0.5)))
                .collect();
            parts.push(format!("{name} {} µs", us(p50s)));
        }
    }
    parts.join("; ")
}

/// Composes the floor of `job` from its passes, measured beside the loop's runs (before
/// the first, between each two, after the last): each part from its fastest pass (the
/// compute log with the lowest median, each hop's floor with the lowest p50). The host's
/// speed drifts over seconds (as for every CPU floor), and a floor must bound the loop:
/// pooled, a pass in a slow minute put the Keck-like merged form's floor above the loop it
/// bounds (slopes alone 28.6 µs after the loop, 22.5 in it; ratio 1.10); one pass before a
/// 5 s loop and one after it caught a 115 KB hop's floor at 21.8 µs in both while the
/// loop's hop ran at 12.5 (ratio 1.23; the same hop in plain C,
/// `scripts/probes/cross-core-copy.c`, moved between 9 and 51 µs within 30 s here); each
/// run's floor from the two passes beside it alone still read 1.00-1.06 in three cases of
/// one run.
///
/// `between`: the hops' floors and (on the CPU) the compute floor timed between the
/// loop's own frames ([`super::between_frames`]), which see the host as the loop's frames
/// do: each replaces its part's fastest pass where its p50 (the compute's median) is
/// lower, as a pass replaces another (the passes' still appear in the note `floor per
/// pass`, and each part's note says which it came from). Slower, it kept the floor above
/// the loop it bounds: the Keck-like merged parked loop's camera hop read 53.6 µs between
/// frames, 49.1 in its fastest pass and 51.8 in the loop.
pub fn compose(passes: Vec<Parts>, job: &Job, between: Option<Timed>) -> Result<Floor> {
    let place = Placement::of(job);
    let n_passes = passes.len();
    let per_pass = per_pass(&passes);
    let mut passes = passes.into_iter();
    let Parts {
        mut compute,
        hops: mut hop_hists,
    } = passes.next().context("no floor pass")?;
    for p in passes {
        if compute_median(&p.compute) < compute_median(&compute) {
            compute = p.compute;
        }
        for ((_, into), (_, h)) in hop_hists.iter_mut().zip(p.hops) {
            if h.value_at_quantile(0.5) < into.value_at_quantile(0.5) {
                *into = h;
            }
        }
    }
    let (between_hop, between_signals, between_compute) = match between {
        Some(t) => (
            Some(t.hop).filter(|h| !h.is_empty()),
            Some(t.signals_hop).filter(|h| !h.is_empty()),
            Some(t.compute).filter(|c| !c.is_empty()),
        ),
        None => (None, None, None),
    };
    let from_passes = "from its fastest pass, as the other parts";
    // A part timed between frames replaces the fastest pass's only where its p50 is lower
    // (as a pass replaces another): a floor bounds the loop, and one timed slower between
    // frames than in a pass measured a slower moment of the host, not the loop's.
    let which = |replaces: bool, timed: String, pass_ns: u64| {
        let pass = pass_ns as f64 / 1e3;
        match replaces {
            true => format!("{timed}, faster than its fastest pass (p50 {pass:.2} µs)"),
            false => format!("from its fastest pass (p50 {pass:.2} µs), faster than {timed}"),
        }
    };
    let mut between_any = false;
    let mut hop_note = |between: Option<Histogram<u64>>, k: usize| match (
        between,
        hop_hists.get_mut(k),
    ) {
        (Some(h), Some((_, into))) => {
            between_any = true;
            let (timed, pass) = (h.value_at_quantile(0.5), into.value_at_quantile(0.5));
            let note = which(
                timed < pass,
                format!(
                    "timed between the loop's frames in its own processes ({} frames, p50 {:.2} µs)",
                    h.len(),
                    timed as f64 / 1e3
                ),
                pass,
            );
            if timed < pass {
                *into = h;
            }
            note
        }
        _ => from_passes.to_string(),
    };
    let camera_hop = hop_note(between_hop, 0);
    // The split form's (the merged form has no signals hop).
    let signals_hop = (!place.merged).then(|| hop_note(between_signals, 1));
    let compute_note = match between_compute {
        Some(c) => {
            between_any = true;
            let (timed, pass) = (compute_median(&c), compute_median(&compute));
            let note = which(
                timed < pass,
                format!(
                    "timed between the loop's frames in {} ({} frames, slopes + recon + publish p50 {:.2} µs)",
                    match place.merged {
                        true => "its stage's process",
                        false => "its stages' processes",
                    },
                    c.len(),
                    timed as f64 / 1e3
                ),
                pass,
            );
            if timed < pass {
                compute = c;
            }
            note
        }
        None => from_passes.into(),
    };
    let (mut hs, mut hr, mut hp, mut total) = (hist::new(), hist::new(), hist::new(), hist::new());
    for e in &compute {
        hs.saturating_record(e[1]);
        hr.saturating_record(e[2]);
        hp.saturating_record(e[3]);
    }
    for sum in lower_of_pairings(&compute, &hop_hists) {
        total.saturating_record(sum);
    }
    let mut parts = vec![
        stat("slopes alone", &hs),
        stat("recon alone", &hr),
        stat("publish alone", &hp),
    ];
    parts.extend(hop_hists.iter().map(|(n, h)| stat(n, h)));
    let mean = total.mean().max(1.0);
    Ok(Floor {
        side: Side {
            m: Measured {
                repeat_hz: vec![1e9 / mean],
                repeat_busy_hz: vec![1e9 / mean],
                iterations: total.len(),
                warmup_iterations: 10,
                notes: [
                    (
                        "floor passes".into(),
                        format!(
                            "{n_passes}, before, between and after our runs; each part from its fastest pass{}",
                            match (between_any, signals_hop.is_some()) {
                                (false, _) => "",
                                (true, false) => " or, where faster, timed between the loop's frames (notes camera hop floor, compute floor)",
                                (true, true) => " or, where faster, timed between the loop's frames (notes camera hop floor, signals hop floor, compute floor)",
                            }
                        ),
                    ),
                    ("floor per pass".into(), per_pass),
                    ("camera hop floor".into(), camera_hop),
                ]
                .into_iter()
                .chain(signals_hop.map(|n| ("signals hop floor".into(), n)))
                .chain([
                    ("compute floor".into(), compute_note),
                    (
                        "composition".into(),
                        "slopes + recon alone on plain memory (a frame a camera period unless the \
                     stages spin) + the bare publication of each stage's output (held, into as \
                     many slots as its stream keeps frames, wake included where the streams \
                     notify) + the one-way floor of each hop (timed as its sender stamps \
                     -> the receiver holds the payload, from before the publication where \
                     both share a core; frames rotating over the input \
                     stream's history slots), one camera period apart, waiting as its stages \
                     do (parked where they share a core, waking ahead where they do; the \
                     receiver's core kept busy where the reconstructor sharing it outlasts \
                     a period)"
                            .to_string(),
                    ),
                ])
                .collect(),
            },
            hist: total,
            placement: format!("compute@{} + hops", place.slopes),
        },
        recon_p50_ns: hr.value_at_quantile(0.5),
        parts,
    })
}

/// The floor's per-frame sums (compute `e[1] + e[2] + e[3]` plus every hop), each percentile
/// the lower of two pairings (the module's doc): by rank (the `k`-th fastest compute with
/// each hop's floor at quantile `(k + 0.5) / n`: each percentile the sum of the parts' same
/// percentiles) and independent (each frame's hops at a quantile spread by the golden ratio,
/// unrelated to its compute; the hops stay paired with each other by rank). By rank bounds
/// right-skewed parts, independent ones the left-skewed (mostly slow, a fast minority),
/// where the rank sum of two slow majorities exceeds a loop whose parts are slow
/// independently; the lower of two sorted sample sets, element by element, is itself one: a
/// composite whose percentiles bound, and whose mean (`floor_hz`) is no single pairing's.
/// Sorted, ascending.
fn lower_of_pairings(compute: &[[u64; 4]], hops: &[(&str, Histogram<u64>)]) -> Vec<u64> {
    let hop_at = |q: f64| -> u64 { hops.iter().map(|(_, h)| h.value_at_quantile(q)).sum() };
    let n = compute.len() as f64;
    let mut by_rank: Vec<u64> = compute.iter().map(|e| e[1] + e[2] + e[3]).collect();
    by_rank.sort_unstable();
    for (k, sum) in by_rank.iter_mut().enumerate() {
        *sum += hop_at((k as f64 + 0.5) / n);
    }
    let mut independent: Vec<u64> = compute
        .iter()
        .enumerate()
        .map(|(i, e)| e[1] + e[2] + e[3] + hop_at(((i as f64 + 0.5) * 0.618_033_988_75).fract()))
        .collect();
    independent.sort_unstable();
    by_rank
        .iter()
        .zip(&independent)
        .map(|(a, b)| *a.min(b))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    /// A small ao-loop job on an 8×8 frame, with `ao` added to its `[case.ao]` table.
    fn ao_job(ao: &str) -> Job {
        let text = format!(
            "name = \"t\"\n[[case]]\nkind = \"ao-loop\"\nsizes = [[8, 8]]\n\
             [case.ao]\nsubapertures = [2, 2]\nactuators = 5\n{ao}"
        );
        Scenario::parse(&text).unwrap().jobs(false, None).remove(0)
    }

    fn job() -> Job {
        ao_job("rate_hz = 100\nmerged = true\n")
    }

    fn pass(slopes_ns: u64, recon_ns: u64, publish_ns: u64, hop_ns: u64) -> Parts {
        let mut h = hist::new();
        for _ in 0..100 {
            h.record(hop_ns).unwrap();
        }
        Parts {
            compute: (0..100)
                .map(|i| [i, slopes_ns, recon_ns, publish_ns])
                .collect(),
            hops: vec![("camera→slopes floor", h)],
        }
    }

    /// The case's scheduling reaches its jobs and its hop floors' processes.
    #[test]
    fn the_fair_slice_reaches_the_case_and_its_hop_floors() {
        let job = ao_job("rate_hz = 100\nslice_us = 200\n");
        assert_eq!(job.slice_ns, Some(200_000));
        let hop = hop_job(&job, 128, Hop::Camera, false);
        assert_eq!((hop.slice_ns, hop.rt_priority), (Some(200_000), None));
    }

    /// Each part comes from its fastest pass (before, between or after the loop's runs):
    /// the compute of the first, the hop of the one between.
    #[test]
    fn each_floor_part_comes_from_its_fastest_pass() {
        let floor = compose(
            vec![
                pass(20_000, 10_000, 2_000, 9_000),
                pass(35_000, 16_000, 3_000, 5_000),
                pass(30_000, 15_000, 1_000, 7_000),
            ],
            &job(),
            None,
        )
        .unwrap();
        let p50 = |name: &str| {
            let part = floor.parts.iter().find(|p| p.name == name).unwrap();
            part.p50_ns as f64
        };
        let near = |a: f64, b: f64| (a - b).abs() <= b * 0.01;
        assert!(
            near(p50("slopes alone"), 20_000.0),
            "{}",
            p50("slopes alone")
        );
        assert!(near(p50("recon alone"), 10_000.0));
        // The publications belong to the compute pass (they are logged with it).
        assert!(near(p50("publish alone"), 2_000.0));
        assert!(near(p50("camera→slopes floor"), 5_000.0));
        let total = floor.side.hist.value_at_quantile(0.5) as f64;
        assert!(near(total, 37_000.0), "{total}");
        // Every pass's parts are in the report, in order (a hop's p50 as its histogram's
        // bucket reads it, as everywhere in the report).
        let note = |k: &str| {
            let n = floor.side.m.notes.iter().find(|(n, _)| n == k);
            n.map(|(_, v)| v.clone()).unwrap_or_default()
        };
        assert_eq!(
            note("floor per pass"),
            "compute 32.00, 54.00, 46.00 µs; camera→slopes floor 9.01, 5.00, 7.00 µs"
        );
        assert_eq!(
            note("camera hop floor"),
            "from its fastest pass, as the other parts"
        );
    }

    /// A hop's histogram of `ns`.
    fn times(ns: &[u64]) -> Histogram<u64> {
        let mut h = hist::new();
        for &v in ns {
            h.record(v).unwrap();
        }
        h
    }

    /// The camera hop's floor and the compute floor timed between the loop's frames
    /// replace the fastest pass's only where faster (a slower one saw a slower moment of
    /// the host than the pass, and would put the floor above the loop), and the notes say
    /// which each part came from; the passes' stay in `floor per pass`. Empty ones (no
    /// frame taken, or the split form's compute) leave the passes'.
    #[test]
    fn the_parts_timed_between_frames_replace_the_passes_only_where_faster() {
        let passes = || {
            vec![
                pass(20_000, 10_000, 2_000, 5_000),
                pass(30_000, 15_000, 1_000, 7_000),
            ]
        };
        let p50 =
            |f: &Floor, name: &str| f.parts.iter().find(|p| p.name == name).unwrap().p50_ns as f64;
        let near = |a: f64, b: f64| (a - b).abs() <= b * 0.01;
        // Slower between frames (hop 9 µs against 5, compute 40 µs against 32): the
        // fastest pass's parts stay.
        let slower = Timed {
            hop: times(&[8_000, 9_000, 10_000]),
            signals_hop: hist::new(),
            compute: (1..=5).map(|i| [i, 25_000, 12_000, 3_000]).collect(),
        };
        let floor = compose(passes(), &job(), Some(slower.clone())).unwrap();
        assert!(near(p50(&floor, "camera→slopes floor"), 5_000.0));
        assert!(near(p50(&floor, "slopes alone"), 20_000.0));
        assert!(near(p50(&floor, "recon alone"), 10_000.0));
        assert!(near(p50(&floor, "publish alone"), 2_000.0));
        let total = floor.side.hist.value_at_quantile(0.5) as f64;
        assert!(near(total, 37_000.0), "{total}");
        assert_eq!(
            note_of(&floor, "camera hop floor"),
            "from its fastest pass (p50 5.00 µs), faster than timed between the loop's frames \
             in its own processes (3 frames, p50 9.01 µs)"
        );
        assert_eq!(
            note_of(&floor, "compute floor"),
            "from its fastest pass (p50 32.00 µs), faster than timed between the loop's frames \
             in its stage's process (5 frames, slopes + recon + publish p50 40.00 µs)"
        );
        assert!(note_of(&floor, "floor passes").ends_with(
            "or, where faster, timed between the loop's frames (notes camera hop floor, compute floor)"
        ));
        assert!(note_of(&floor, "floor per pass").contains("camera→slopes floor 5.00, 7.00 µs"));
        assert!(
            !floor
                .side
                .m
                .notes
                .iter()
                .any(|(n, _)| n == "signals hop floor")
        );
        // Faster between frames (hop 4 µs, compute 24 µs): they replace the passes'.
        let faster = Timed {
            hop: times(&[3_000, 4_000, 5_000]),
            signals_hop: hist::new(),
            compute: (1..=5).map(|i| [i, 15_000, 8_000, 1_000]).collect(),
        };
        let floor = compose(passes(), &job(), Some(faster.clone())).unwrap();
        assert!(near(p50(&floor, "camera→slopes floor"), 4_000.0));
        assert!(near(p50(&floor, "slopes alone"), 15_000.0));
        assert!(near(p50(&floor, "recon alone"), 8_000.0));
        assert!(near(p50(&floor, "publish alone"), 1_000.0));
        let total = floor.side.hist.value_at_quantile(0.5) as f64;
        assert!(near(total, 28_000.0), "{total}");
        assert_eq!(
            note_of(&floor, "camera hop floor"),
            "timed between the loop's frames in its own processes (3 frames, p50 4.00 µs), \
             faster than its fastest pass (p50 5.00 µs)"
        );
        assert_eq!(
            note_of(&floor, "compute floor"),
            "timed between the loop's frames in its stage's process (5 frames, slopes + recon + \
             publish p50 24.00 µs), faster than its fastest pass (p50 32.00 µs)"
        );
        // Each part on its own: the faster hop with the slower compute.
        let mixed = Timed {
            compute: slower.compute.clone(),
            ..faster.clone()
        };
        let floor = compose(passes(), &job(), Some(mixed)).unwrap();
        assert!(near(p50(&floor, "camera→slopes floor"), 4_000.0));
        assert!(near(p50(&floor, "slopes alone"), 20_000.0));
        // The hop alone (the GPU form): the compute from the fastest pass.
        let hop_only = Timed {
            compute: Vec::new(),
            ..faster
        };
        let floor = compose(passes(), &job(), Some(hop_only)).unwrap();
        assert!(near(p50(&floor, "slopes alone"), 20_000.0));
        assert!(near(p50(&floor, "camera→slopes floor"), 4_000.0));
        assert_eq!(
            note_of(&floor, "compute floor"),
            "from its fastest pass, as the other parts"
        );
        // Nothing taken: the passes' parts.
        let none = Timed {
            hop: hist::new(),
            signals_hop: hist::new(),
            compute: Vec::new(),
        };
        let floor = compose(passes(), &job(), Some(none)).unwrap();
        assert!(near(p50(&floor, "camera→slopes floor"), 5_000.0));
        assert!(!note_of(&floor, "floor passes").contains("timed between"));
    }

    /// A part timed between frames exactly as fast as its fastest pass (the same p50, the
    /// same compute median) leaves the pass's, tail and all, as a tie between passes does.
    #[test]
    fn a_part_timed_between_frames_as_fast_as_its_pass_leaves_the_passs() {
        let tie = Timed {
            hop: times(&[5_000, 5_000, 60_000]),
            signals_hop: hist::new(),
            compute: (1..=5).map(|i| [i, 25_000, 5_000, 2_000]).collect(),
        };
        let passes = vec![pass(20_000, 10_000, 2_000, 5_000)];
        let floor = compose(passes, &job(), Some(tie)).unwrap();
        let part = |name: &str| floor.parts.iter().find(|p| p.name == name).unwrap();
        assert_eq!(part("camera→slopes floor").p99_ns / 100, 50);
        assert_eq!(part("slopes alone").p50_ns / 100, 200);
        for note in ["camera hop floor", "compute floor"] {
            let text = note_of(&floor, note);
            assert!(
                text.starts_with("from its fastest pass (p50 "),
                "{note}: {text}"
            );
        }
    }

    /// In the split form the signals hop's floor timed between frames replaces the
    /// passes' too where faster, with a note of its own; without it, or slower, the
    /// passes' stays, and says so.
    #[test]
    fn the_split_forms_signals_hop_timed_between_frames_replaces_the_passes_where_faster() {
        let split = ao_job("rate_hz = 100\n");
        let passes = || {
            let mut p = pass(20_000, 10_000, 2_000, 5_000);
            p.hops.push(("slopes→recon floor", times(&[4_000; 100])));
            vec![p]
        };
        let between = Timed {
            hop: times(&[3_000; 3]),
            signals_hop: times(&[1_000, 2_000, 3_000]),
            compute: (1..=5).map(|i| [i, 15_000, 8_000, 1_000]).collect(),
        };
        let floor = compose(passes(), &split, Some(between.clone())).unwrap();
        let p50 = |f: &Floor, name: &str| f.parts.iter().find(|p| p.name == name).unwrap().p50_ns;
        assert_eq!(p50(&floor, "slopes→recon floor") / 100, 20);
        let total = floor.side.hist.value_at_quantile(0.5) / 1000;
        assert!((28..=30).contains(&total), "15 + 8 + 1 + 3 + 2 µs: {total}");
        assert_eq!(
            note_of(&floor, "signals hop floor"),
            "timed between the loop's frames in its own processes (3 frames, p50 2.00 µs), \
             faster than its fastest pass (p50 4.00 µs)"
        );
        assert!(
            note_of(&floor, "floor passes")
                .ends_with("(notes camera hop floor, signals hop floor, compute floor)")
        );
        let slower_signals = Timed {
            signals_hop: times(&[6_000, 7_000, 8_000]),
            ..between.clone()
        };
        let floor = compose(passes(), &split, Some(slower_signals)).unwrap();
        assert_eq!(p50(&floor, "slopes→recon floor") / 100, 40);
        assert_eq!(
            note_of(&floor, "signals hop floor"),
            "from its fastest pass (p50 4.00 µs), faster than timed between the loop's frames \
             in its own processes (3 frames, p50 7.00 µs)"
        );
        let no_signals = Timed {
            signals_hop: hist::new(),
            ..between
        };
        let floor = compose(passes(), &split, Some(no_signals)).unwrap();
        assert_eq!(p50(&floor, "slopes→recon floor") / 100, 40);
        assert_eq!(
            note_of(&floor, "signals hop floor"),
            "from its fastest pass, as the other parts"
        );
    }

    /// Right-skewed parts (60% at 10 µs, 40% at 100 µs): summed rank by rank, the floor's
    /// p50 and p99 are the sums of the parts' (20 and 200 µs); paired independently, 48% of
    /// the frames would sum a fast part and a slow one, and the p50 would read 110 µs. Each
    /// percentile is the lower of the two, so between the 60th and the 84th it is 110.
    #[test]
    fn the_floor_sums_its_parts_percentile_by_percentile() {
        // The slow frames spread over the log: the last 2 of every 5.
        let compute: Vec<[u64; 4]> = (0..1000)
            .map(|i| match i % 5 < 3 {
                true => [i, 6_000, 3_000, 1_000],
                false => [i, 60_000, 30_000, 10_000],
            })
            .collect();
        let hop: Vec<u64> = (0..1000)
            .map(|i| if i % 5 < 3 { 10_000 } else { 100_000 })
            .collect();
        let parts = Parts {
            compute,
            hops: vec![("camera→slopes floor", times(&hop))],
        };
        let floor = compose(vec![parts], &job(), None).unwrap();
        let h = &floor.side.hist;
        let p50 = h.value_at_quantile(0.5);
        assert!(p50 <= 20_100, "sum of the p50s 20 µs: {p50}");
        let p99 = h.value_at_quantile(0.99);
        assert!(
            (199_000..=201_000).contains(&p99),
            "sum of the p99s 200 µs: {p99}"
        );
        // Each percentile the lower of the two pairings: 20 µs to the 60th (by rank), 110
        // from there to the 84th (independent: a fast part and a slow one), then 200.
        let mean = 0.6 * 20_000.0 + 0.24 * 110_000.0 + 0.16 * 200_000.0;
        assert!(
            (h.mean() - mean).abs() < 1_000.0,
            "{} against {mean}",
            h.mean()
        );
    }

    /// Parts mostly slow with a fast minority (left-skewed: 40% at 10 µs, 60% at 100 µs),
    /// slow independently in a loop: by rank, the floor's p50 would be the sum of two slow
    /// parts, 200 µs, above the 110 µs of a loop whose p50 frame has one fast part. Each
    /// percentile is the lower of the two pairings.
    #[test]
    fn mostly_slow_parts_give_the_floor_no_p50_above_an_independent_loops() {
        let compute: Vec<[u64; 4]> = (0..1000)
            .map(|i| match i % 5 < 2 {
                true => [i, 6_000, 3_000, 1_000],
                false => [i, 60_000, 30_000, 10_000],
            })
            .collect();
        let hop: Vec<u64> = (0..1000)
            .map(|i| if i % 5 < 2 { 10_000 } else { 100_000 })
            .collect();
        let parts = Parts {
            compute,
            hops: vec![("camera→slopes floor", times(&hop))],
        };
        let floor = compose(vec![parts], &job(), None).unwrap();
        let p50 = floor.side.hist.value_at_quantile(0.5);
        assert!(
            (109_000..=111_000).contains(&p50),
            "a fast part and a slow one, 110 µs: {p50}"
        );
    }

    fn note_of(f: &Floor, k: &str) -> String {
        let n = f.side.m.notes.iter().find(|(n, _)| n == k);
        n.map(|(_, v)| v.clone()).unwrap_or_default()
    }

    /// The hop is timed between frames only where the stages' compute and publication take
    /// under a quarter of a period (100 Hz: 2.5 ms; a quarter exactly is not under it), and
    /// not in a job without a rate (the scenario refuses one).
    #[test]
    fn the_hop_is_timed_between_frames_only_where_the_stages_leave_room() {
        assert!(pass(1_000_000, 1_000_000, 400_000, 0).leaves_room_between_frames(&job()));
        assert!(!pass(1_000_000, 1_000_000, 500_000, 0).leaves_room_between_frames(&job()));
        assert!(!pass(1_000_000, 1_000_000, 600_000, 0).leaves_room_between_frames(&job()));
        let mut no_rate = job();
        no_rate.ao.as_mut().unwrap().rate_hz = 0.0;
        assert!(!pass(1_000, 1_000, 1_000, 0).leaves_room_between_frames(&no_rate));
    }

    /// A pass's compute median is its middle frame's slopes + recon + publish (the upper
    /// middle of an even count); an empty log has none, and as a pass it is the slowest.
    #[test]
    fn a_passs_compute_median_is_its_middle_frames_sum() {
        let log: Vec<[u64; 4]> = [5, 1, 4, 2, 3]
            .iter()
            .map(|&us| [0, us * 1_000, us * 100, us * 10])
            .collect();
        assert_eq!(compute_median(&log), 3_330);
        assert_eq!(median(&log, |e| e[2]), Some(300));
        assert_eq!(median(&log[..4], |e| e[1]), Some(4_000));
        assert_eq!(median(&[], |e| e[1]), None);
        assert_eq!(compute_median(&[]), u64::MAX);
    }

    /// A tie keeps the earlier pass: a later pass replaces a part only where it is faster
    /// (the compute by its median, a hop by its p50), so the parts' tails come from the
    /// pass that was first fastest.
    #[test]
    fn a_later_pass_as_fast_as_an_earlier_one_replaces_no_part() {
        let first = pass(20_000, 10_000, 2_000, 5_000);
        let mut tie = pass(22_000, 8_000, 2_000, 5_000);
        tie.hops[0].1 = times(&[[5_000; 98].as_slice(), &[50_000; 2]].concat());
        let floor = compose(vec![first, tie], &job(), None).unwrap();
        let part = |name: &str| floor.parts.iter().find(|p| p.name == name).unwrap();
        assert_eq!(part("slopes alone").p50_ns / 100, 200);
        assert_eq!(part("camera→slopes floor").p99_ns / 100, 50);
    }

    /// The hops' floors move the frames their hops carry: the camera's u16 pixels, the
    /// split form's f32 signals.
    #[test]
    fn the_hop_floors_carry_the_frame_and_the_signals() {
        let job = ao_job("rate_hz = 1000\n");
        let g = Geometry::new(&job.shape, job.ao.as_ref().unwrap()).unwrap();
        assert_eq!((g.pixels(), g.signals), (64, 8));
        assert_eq!(camera_hop_job(&job, &g, false).shape, [128]);
        assert_eq!(signals_hop_job(&job, &g).shape, [32]);
    }

    /// The floor's compute passes write under the run's work folder, a file name per job
    /// and pass.
    #[test]
    fn each_floor_pass_writes_its_own_results() {
        let runner = Runner::new(
            PathBuf::from("/w"),
            crate::peer::PeerSetup::Missing("-".into()),
        );
        assert_eq!(result_prefix(&runner, 3, 1), PathBuf::from("/w/3-aofloor1"));
    }

    /// The slopes stage's core counts as busy only in the split form with slopes and recon
    /// sharing it, when the reconstructor outlasts a camera period, and not under
    /// SCHED_FIFO; only then does the camera→slopes floor keep its reader's core busy.
    #[test]
    fn the_slopes_core_is_busy_when_a_reconstructor_sharing_it_outlasts_a_period() {
        let split = |extra: &str| ao_job(&format!("rate_hz = 1000\n{extra}"));
        // recon 900 µs + publish 50 µs per frame: below the 1 ms period; 980 + 50 µs and
        // 1.2 ms: above (the publication counts).
        let log = |recon_ns: u64| -> Vec<[u64; 4]> {
            (0..9).map(|i| [i, 10_000, recon_ns, 50_000]).collect()
        };
        let (short, long) = (log(900_000), log(1_200_000));
        let job = split("");
        assert!(!slopes_core_busy(&job, &short));
        assert!(slopes_core_busy(&job, &long));
        assert!(slopes_core_busy(&job, &log(980_000)));
        assert!(!slopes_core_busy(&split("merged = true\n"), &long));
        assert!(!slopes_core_busy(&split("recon_cpu = 0\n"), &long));
        assert!(!slopes_core_busy(&split("rt_priority = 50\n"), &long));
        let hop =
            |busy, extra: &str| hop_job(&split(extra), 128, Hop::Camera, busy).busy_reader_core;
        assert!(hop(true, ""));
        assert!(!hop(false, ""));
        // A receiver that spins (its own wait, or waking ahead) does not share its core
        // (spinning stages have a core each: the scenario refuses them sharing one).
        assert!(!hop(true, "wait = \"spin\"\nmerged = true\n"));
    }

    /// On one core the slopes→recon floor holds the signals' publication (timed from
    /// before it) and the compute floor publishes only the commands; across cores it is
    /// timed from the publication's return and the compute floor publishes both.
    #[test]
    fn the_signals_hop_floor_holds_the_publication_only_when_both_stages_share_a_core() {
        let split = |extra: &str| Placement::of(&ao_job(&format!("rate_hz = 100\n{extra}")));
        assert_eq!(signals_hop_start(&split("")), OneWay::Publish);
        assert_eq!(
            signals_hop_start(&split("recon_cpu = 0\n")),
            OneWay::Published
        );
    }

    /// A hop's floor paces its frames as the loop's sender sends them: the camera's a
    /// camera period apart whatever the stages do (to a spinning stage too); across cores
    /// a spinning slopes stage's signals back to back, a parked or adaptive one's a
    /// period apart (one for each camera frame). A job without a rate (the scenario
    /// refuses one) paces them 100 µs apart.
    #[test]
    fn a_hop_floors_frames_come_as_the_loops_sender_sends_them() {
        let gap = |job: &Job, hop| hop_job(job, 128, hop, false).gap_us;
        let spinning = ao_job("rate_hz = 1000\nmerged = true\nwait = \"spin\"\n");
        assert_eq!(gap(&spinning, Hop::Camera), 1000.0);
        assert_eq!(gap(&ao_job("rate_hz = 500\n"), Hop::Camera), 2000.0);
        let across = "rate_hz = 1000\ncamera_cpu = 0\nslopes_cpu = 1\nrecon_cpu = 2\n";
        let spin_across = ao_job(&format!("{across}wait = \"spin\"\n"));
        assert_eq!(gap(&spin_across, Hop::Signals), 0.0);
        let mut across = ao_job(across);
        assert_eq!(gap(&across, Hop::Signals), 1000.0);
        across.ao.as_mut().unwrap().rate_hz = 0.0;
        assert_eq!(gap(&across, Hop::Signals), 100.0);
        assert_eq!(gap(&across, Hop::Camera), 100.0);
    }

    /// A hop's floor reader waits as its stage does: parked where the stage shares its
    /// core (here the split form's slopes stage, with the reconstructor, while the camera
    /// sends from a core of its own), adaptive on a core of its own.
    #[test]
    fn a_hop_floors_reader_parks_where_its_stage_shares_its_core() {
        let split = ao_job("rate_hz = 1000\n");
        assert_eq!(
            hop_job(&split, 128, Hop::Camera, false).wait,
            Some(Wait::Park)
        );
        let merged = ao_job("rate_hz = 1000\nmerged = true\nwake_ahead_us = 0\n");
        let wait = match Placement::of(&merged).shares_here(1) {
            true => Wait::Park,
            false => Wait::Adaptive,
        };
        assert_eq!(hop_job(&merged, 128, Hop::Camera, false).wait, Some(wait));
    }

    /// Only the camera hop's reader wakes ahead: the reconstructor is woken by the signals,
    /// and a floor reader spinning beside its writer on one core took 4 ms time slices.
    #[test]
    fn only_the_camera_hop_floor_wakes_ahead() {
        let job = ao_job("rate_hz = 1000\nwake_ahead_us = 100\n");
        let camera = hop_job(&job, 128, Hop::Camera, false);
        assert_eq!(
            (camera.wake_ahead_ns, camera.wait),
            (Some(100_000), Some(Wait::Spin))
        );
        let signals = hop_job(&job, 128, Hop::Signals, false);
        assert_eq!(signals.wake_ahead_ns, None);
        assert_ne!(signals.wait, Some(Wait::Spin));
        assert_eq!(signals.one_way, Some(OneWay::Publish));
        assert_eq!((signals.writer_cpu, signals.reader_cpu), (1, 1));
        // Nor does the camera hop's where its stage shares the camera's core: it parks.
        let one_core = ao_job("rate_hz = 1000\nwake_ahead_us = 100\ncamera_cpu = 1\n");
        let camera = hop_job(&one_core, 128, Hop::Camera, false);
        assert_eq!((camera.writer_cpu, camera.reader_cpu), (1, 1));
        assert_eq!(
            (camera.wake_ahead_ns, camera.wait),
            (None, Some(Wait::Park))
        );
    }
}

//! The performance targets of this machine kind (issue: "Targets on this machine"),
//! each evaluated from the same run and reported as pass / fail.

use serde::Serialize;

use crate::cases::ao::AoSummary;
use crate::run::JobResult;
use crate::scenario::{Kind, Wait};

/// One evaluated target.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is held to a limit.
    pub name: String,
    /// The measured value, formatted.
    pub measured: String,
    /// The limit, formatted.
    pub limit: String,
    /// Pass / fail; `None` when a side is missing (shown as "n/a" with the reason).
    pub pass: Option<bool>,
}

fn cpu_f32(r: &JobResult, kind: Kind) -> bool {
    r.job.kind == kind && !r.job.device.is_gpu() && r.skipped.is_none()
}

/// Why `r`'s floor comparisons are void: ours beats its floor beyond the slack
/// ([`Record::floor_bound_note`](crate::report::record::Record::floor_bound_note)); a floor
/// must bound what it is compared with.
fn unbounded(r: &JobResult) -> Option<String> {
    let rec = crate::report::record::Record::from_result(r);
    rec.floor_bound_note()?;
    Some(format!(
        "the floor does not bound ours: ratio {:.2} above the slack {:.2}",
        rec.ratio_to_floor?,
        rec.floor_bound_slack()
    ))
}

/// `num / den` held to at least `min`×; n/a with `void` (ours against a floor that does not
/// bound it, [`unbounded`]) or without a side (`why`).
fn ratio_target(
    out: &mut Vec<Target>,
    name: String,
    num: Option<f64>,
    den: Option<f64>,
    min: f64,
    why: &str,
    void: Option<&str>,
) {
    let (measured, pass) = match (void, num, den) {
        (Some(v), _, _) => (format!("n/a ({v})"), None),
        (None, Some(a), Some(b)) if b > 0.0 => (format!("{:.3}×", a / b), Some(a / b >= min)),
        _ => (format!("n/a ({why})"), None),
    };
    out.push(Target {
        name,
        measured,
        limit: format!("≥ {min:.2}×"),
        pass,
    });
}

/// What to add to a target's measured value judged at quantile `q` of `sides`, where one has
/// too few samples to support it ([`crate::hist::supports`]): "(p99 from N samples: a p99
/// needs 1000)", naming the fewest; empty where all do.
fn thin_note(q: f64, sides: &[Option<&crate::run::Side>]) -> String {
    let n = sides.iter().flatten().map(|s| s.hist.len()).min();
    match n {
        Some(n) if !crate::hist::supports(n, q) => format!(
            " (p{} from {n} samples: it needs {})",
            (q * 1000.0).round() / 10.0,
            crate::hist::min_samples(q)
        ),
        _ => String::new(),
    }
}

/// The CPU ping-pong's absolute target, the 64 B spinning round trip's p50 (ns) at most
/// 1.2 µs, with the floor's p50 beside ours: an absolute limit follows the host, and where
/// the floor of the same protocol is over it too, the host more than the library misses it;
/// the verdict stays ours'.
fn absolute_round_trip_target(ours: Option<u64>, floor: Option<u64>) -> Target {
    const LIMIT_NS: u64 = 1200;
    let us = |v: u64| v as f64 / 1e3;
    let beside = match floor {
        None => String::new(),
        Some(f) if f > LIMIT_NS => format!(
            " (the floor's {:.3} µs: over the limit itself on this host)",
            us(f)
        ),
        Some(f) => format!(" (the floor's {:.3} µs)", us(f)),
    };
    let measured = ours.map_or("n/a (failed)".into(), |v| {
        format!("{:.3} µs{beside}", us(v))
    });
    Target {
        name: "pingpong 64 B spin p50 round trip".into(),
        measured,
        limit: format!("≤ {:.3} µs", us(LIMIT_NS)),
        pass: ours.map(|v| v <= LIMIT_NS),
    }
}

/// Ours against the floor at quantile `q` of their latencies, held to at most `max`×; n/a
/// where the floor does not bound ours ([`unbounded`]).
fn quantile_target(out: &mut Vec<Target>, name: String, r: &JobResult, q: f64, max: f64) {
    let at = |s: &crate::run::Side| s.hist.value_at_quantile(q) as f64;
    let (a, b) = (r.ours.as_ref().ok().map(at), r.floor.as_ref().ok().map(at));
    let limit = format!("≤ {max:.2}×");
    out.push(match (unbounded(r), a, b) {
        (Some(v), _, _) => Target {
            name,
            measured: format!("n/a ({v})"),
            limit,
            pass: None,
        },
        (None, Some(a), Some(b)) if b > 0.0 => Target {
            name,
            measured: format!(
                "{:.2} µs / {:.2} µs = {:.2}×{}",
                a / 1e3,
                b / 1e3,
                a / b,
                thin_note(q, &[r.ours.as_ref().ok(), r.floor.as_ref().ok()])
            ),
            limit,
            pass: Some(a <= max * b),
        },
        _ => Target {
            name,
            measured: "n/a (a side failed)".into(),
            limit,
            pass: None,
        },
    });
}

/// Evaluates every target that applies to the jobs of this run.
pub fn evaluate(results: &[JobResult], record_ns: f64) -> Vec<Target> {
    let mut out = Vec::new();
    for r in results {
        let j = &r.job;
        let ours = r.ours.as_ref().ok();
        let floor = r.floor.as_ref().ok();
        let void = unbounded(r);
        if cpu_f32(r, Kind::Roundtrip) && j.dtype == "float32" {
            let min = match j.shape.as_slice() {
                [100, 100] => Some(0.75),
                [1000, 1000] | [10000, 10000] => Some(0.95),
                _ => None,
            };
            if let Some(min) = min {
                ratio_target(
                    &mut out,
                    format!("roundtrip {} vs floor (median iteration)", j.shape_str()),
                    r.ratio_to_floor(),
                    Some(1.0),
                    min,
                    "a side failed",
                    void.as_deref(),
                );
            }
        }
        if cpu_f32(r, Kind::Pingpong) {
            let bytes = j.payload_bytes();
            if j.wait == Some(Wait::Spin) && bytes == 65536 {
                for (label, q, max) in [("p50", 0.5, 1.15), ("p99", 0.99, 1.5)] {
                    quantile_target(
                        &mut out,
                        format!("pingpong 64 KiB spin {label} vs floor {label}"),
                        r,
                        q,
                        max,
                    );
                }
            }
            if j.wait == Some(Wait::Spin) && bytes == 64 {
                out.push(absolute_round_trip_target(
                    ours.map(|s| s.hist.value_at_quantile(0.5)),
                    floor.map(|s| s.hist.value_at_quantile(0.5)),
                ));
            }
            if let Some(w) = j.wait.filter(|w| w.notifies()) {
                quantile_target(
                    &mut out,
                    format!(
                        "pingpong {} {} p50 vs {} floor p50",
                        w.name(),
                        crate::report::human_bytes(bytes),
                        w.name()
                    ),
                    r,
                    0.5,
                    2.0,
                );
            }
        }
        if cpu_f32(r, Kind::Mvm) && j.shape[0] == j.shape[1] {
            let n = j.shape[0];
            let min = match n {
                100 => Some(2.0),
                1000 | 10000 => Some(1.0),
                _ => None,
            };
            if let Some(min) = min {
                let ours_k = floor.map(|s| 2.0 * (n * n) as f64 * s.hz(j.kind) / 1e9);
                let numpy_k = r
                    .peer
                    .as_ref()
                    .ok()
                    .and_then(|p| p.note("kernel_gflops"))
                    .and_then(|v| v.parse::<f64>().ok());
                ratio_target(
                    &mut out,
                    format!("MVM kernel n={n}: our GFLOP/s vs numpy sgemv GFLOP/s"),
                    ours_k,
                    numpy_k,
                    min,
                    "no numpy peer or floor",
                    None,
                );
            }
            if j.pipeline == Some(crate::scenario::Pipeline::HostUpload)
                && (1000..=3000).contains(&n)
            {
                ratio_target(
                    &mut out,
                    format!(
                        "MVM pipeline {}: median iteration, kernel alone ÷ ours",
                        j.shape_str()
                    ),
                    r.ratio_to_floor(),
                    Some(1.0),
                    0.85,
                    "a side failed",
                    void.as_deref(),
                );
            }
        }
        if let Some(a) = r.ao.as_deref() {
            ao_targets(&mut out, r, a);
        }
        if j.kind == Kind::Bridge && r.skipped.is_none() {
            bridge_targets(&mut out, r);
        }
        gpu_targets(&mut out, r);
    }
    out.push(Target {
        name: "histogram recording cost".into(),
        measured: format!("{record_ns:.1} ns/sample"),
        limit: "≤ 50 ns".into(),
        pass: Some(record_ns <= 50.0),
    });
    out
}

/// The AO reference geometries the AO issue holds to targets.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AoReference {
    /// pyRTC's synthetic Shack-Hartmann: 7×7 subapertures on 49×49 px, 97 modes, 1 kHz.
    PyRtc,
    /// Keck-like: 20×20 subapertures on 240×240 px, 349 actuators.
    Keck,
}

fn ao_reference(a: &AoSummary) -> Option<AoReference> {
    let g = &a.geometry;
    match (g.wfs, g.subapertures, g.actuators) {
        ([49, 49], [7, 7], 97) if g.modes == 97 => Some(AoReference::PyRtc),
        ([240, 240], [20, 20], 349) => Some(AoReference::Keck),
        _ => None,
    }
}

/// Seconds the no-missed-frame target asks the pyRTC loop to run.
const AO_MISSED_SECONDS: f64 = 30.0;

/// The AO issue's targets, for the pyRTC and Keck-like geometries: our p50 ≤ 1.25× the
/// composed floor; at pyRTC's 1 kHz, our p50, p99 and jitter each ≥ 5× lower than the
/// pyshmem + numpy loop of the same run, and no missed frame over 30 s (shown, not judged,
/// for a loop that reads the newest frame).
fn ao_targets(out: &mut Vec<Target>, r: &JobResult, a: &AoSummary) {
    let Some(geometry) = ao_reference(a) else {
        return;
    };
    let label = r.job.label();
    let (ours, peer) = (r.ours.as_ref().ok(), r.peer.as_ref().ok());
    // An overloaded loop ran, but no frame of it reached the DM: it has no latency.
    let none_reached = ours.is_some_and(|s| s.hist.is_empty());
    ratio_target(
        out,
        format!("AO `{label}` end-to-end p50: composed floor ÷ ours"),
        r.ratio_to_floor(),
        Some(1.0),
        0.8,
        if none_reached {
            "no frame of ours reached the DM"
        } else {
            "a side failed"
        },
        unbounded(r).as_deref(),
    );
    if geometry != AoReference::PyRtc || a.rate_hz != 1000.0 {
        return;
    }
    let why = match ours {
        None => "the loop failed",
        Some(_) if none_reached => "no frame of ours reached the DM",
        Some(_) => "no pyshmem peer in this run",
    };
    let at = |s: &crate::run::Side, q: f64| s.hist.value_at_quantile(q) as f64;
    for (what, q) in [("p50", 0.5), ("p99", 0.99)] {
        ratio_target(
            out,
            format!("AO `{label}` {what}: pyshmem + numpy ÷ ours"),
            peer.map(|s| at(s, q)),
            ours.map(|s| at(s, q)),
            5.0,
            why,
            None,
        );
        if let Some(t) = out.last_mut().filter(|t| t.pass.is_some()) {
            t.measured.push_str(&thin_note(q, &[peer, ours]));
        }
    }
    ratio_target(
        out,
        format!("AO `{label}` jitter (std): pyshmem + numpy ÷ ours"),
        a.peer.as_ref().map(|p| p.jitter_ns),
        a.stats
            .as_ref()
            .filter(|_| !none_reached)
            .map(|s| s.jitter_ns),
        5.0,
        why,
        None,
    );
    let limit = format!("0 over ≥ {AO_MISSED_SECONDS:.0} s");
    let newest = r.job.ao.as_ref().is_some_and(|c| c.catch_up() == 0);
    out.push(match &a.stats {
        // A loop that reads the newest frame skips a frame whenever a stage falls behind:
        // that is its choice, not a failure to keep up (the target is for loops that read
        // every frame; the count stays on show).
        Some(st) if newest => Target {
            name: format!("AO `{label}` missed frames"),
            measured: format!(
                "{} over {:.0} s (not judged: the loop reads the newest frame, `catch_up = 0`, and skips by design)",
                st.missed,
                st.frames as f64 / a.rate_hz
            ),
            limit,
            pass: None,
        },
        Some(st) => {
            let seconds = st.frames as f64 / a.rate_hz;
            let long_enough = seconds >= AO_MISSED_SECONDS;
            // Frames the camera itself published a period late (its core paused) are the
            // source's loss: shown, not judged, as its pacing error is. Over
            // `MAX_LATE_AT_SOURCE` of its frames, the run judges no loop (as its verdict
            // says, `crate::cases::ao::failure`).
            let late_max = crate::cases::ao::MAX_LATE_AT_SOURCE;
            let source_failed = st.camera_failed();
            let source = match st.missed_at_source {
                0 => String::new(),
                n if source_failed => format!(
                    " (and {n} the camera published a period or more late, over {}% of its frames: n/a, the run does not judge the loop)",
                    late_max * 100.0
                ),
                n => format!(
                    " (and {n} the camera published a period or more late, its core paused: the source's, not judged)"
                ),
            };
            Target {
                name: format!("AO `{label}` missed frames"),
                measured: if long_enough {
                    format!("{} over {seconds:.0} s{source}", st.pipeline_missed())
                } else {
                    format!(
                        "{} over {seconds:.1} s{source} (n/a: the run is shorter than {AO_MISSED_SECONDS:.0} s)",
                        st.pipeline_missed()
                    )
                },
                limit,
                // A miss in a shorter run already fails; a clean short run proves nothing,
                // nor one whose camera did not hold the rate.
                pass: if st.pipeline_missed() > 0 {
                    Some(false)
                } else {
                    (long_enough && !source_failed).then_some(true)
                },
            }
        }
        None => Target {
            name: format!("AO `{label}` missed frames"),
            measured: "n/a (the loop failed)".into(),
            limit,
            pass: None,
        },
    });
}

/// Why `r`'s comparison of frames per second is void: ours outran its floor beyond the
/// slack ([`Record::rate_beyond_slack`](crate::report::record::Record::rate_beyond_slack)); a
/// floor's rate must bound ours, as its latency must ([`unbounded`]).
fn rate_unbounded(r: &JobResult) -> Option<String> {
    let rec = crate::report::record::Record::from_result(r);
    Some(format!(
        "the floor does not bound ours: frames/s ratio {:.2} above the slack {:.2}",
        rec.rate_beyond_slack()?,
        rec.floor_bound_slack()
    ))
}

/// The bridge issue's targets: p50 latency ≤ 1.2× Zenoh's floor, frames delivered per
/// second ≥ 0.8× the floor's, both from this run.
fn bridge_targets(out: &mut Vec<Target>, r: &JobResult) {
    let j = &r.job;
    let how = match (j.pinned, crate::cases::bridge::reader_wait(j)) {
        (false, _) => "",
        (true, crate::scenario::Wait::Spin) => " (pinned, reader spins)",
        (true, _) => " (pinned, reader parked)",
    };
    let size = format!("{}{how}", crate::report::human_bytes(j.payload_bytes()));
    quantile_target(
        out,
        format!("bridge {size} p50 latency vs Zenoh floor p50"),
        r,
        0.5,
        1.2,
    );
    let hz = |s: &crate::run::Side| s.hz(r.job.kind);
    ratio_target(
        out,
        format!("bridge {size} frames/s vs Zenoh floor frames/s"),
        r.ours.as_ref().ok().map(hz),
        r.floor.as_ref().ok().map(hz),
        0.8,
        "a side failed",
        unbounded(r).or_else(|| rate_unbounded(r)).as_deref(),
    );
}

/// The GPU issues' targets (set for an H100 under MPS): a 64 KiB cross-process round trip
/// (GPU pingpong, echo) p50 ≤ 20 µs (issue #11), and the device-resident MVM at n = 10000
/// ≥ 1.2 TFLOP/s.
fn gpu_targets(out: &mut Vec<Target>, r: &JobResult) {
    let j = &r.job;
    if !j.device.is_gpu() || r.skipped.is_some() {
        return;
    }
    let ours = r.ours.as_ref().ok();
    if j.kind == Kind::Pingpong && j.payload_bytes() == 65536 {
        let p50 = ours.map(|s| s.hist.value_at_quantile(0.5));
        out.push(Target {
            name: format!(
                "{}: GPU 64 KiB cross-process round trip p50 (H100 target, under MPS)",
                j.case
            ),
            measured: p50.map_or("n/a (failed)".into(), |v| {
                format!("{:.1} µs", v as f64 / 1e3)
            }),
            limit: "≤ 20 µs".into(),
            pass: p50.map(|v| v <= 20_000),
        });
    }
    if j.kind == Kind::Mvm
        && matches!(
            j.pipeline,
            Some(
                crate::scenario::Pipeline::DeviceResident | crate::scenario::Pipeline::GpuConsumer
            )
        )
        && j.shape == [10000, 10000]
    {
        let tf = ours.map(|s| 2e8 * s.hz(j.kind) / 1e12);
        out.push(Target {
            name: format!("{}: device-resident MVM n=10000 (H100 target)", j.case),
            measured: tf.map_or("n/a (failed)".into(), |v| format!("{v:.3} TFLOP/s")),
            limit: "≥ 1.2 TFLOP/s".into(),
            pass: tf.map(|v| v >= 1.2),
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cases::ao::analysis::LoopStats;
    use crate::cases::ao::geometry::Geometry;
    use crate::measure::Measured;
    use crate::run::Side;
    use crate::scenario::{Job, Scenario};

    /// A side whose every iteration took `ns`.
    fn side(ns: u64) -> Side {
        let mut hist = crate::hist::new();
        for _ in 0..100 {
            hist.record(ns).unwrap();
        }
        Side {
            m: Measured::default(),
            hist,
            placement: "solo@0".into(),
        }
    }

    /// A result of a job without a loop or a peer: ours and its floor.
    fn plain(job: Job, ours: Side, floor: Side) -> JobResult {
        JobResult {
            job,
            ours: Ok(ours),
            floor: Ok(floor),
            peer: Err("no python".into()),
            skipped: None,
            ao: None,
        }
    }

    fn stats(frames: u64, missed: u64, jitter_ns: f64) -> LoopStats {
        LoopStats {
            frames,
            missed,
            jitter_ns,
            ..Default::default()
        }
    }

    /// An ao-loop result: ours, floor and peer p50 (ns), our and the peer's loop figures.
    pub(crate) fn ao(case: &str, ns: [u64; 3], ours: LoopStats, peer: LoopStats) -> JobResult {
        let job = Scenario::parse(&format!(
            "name = \"t\"\n[[case]]\nkind = \"ao-loop\"\n{case}"
        ))
        .unwrap()
        .jobs(false, None)
        .remove(0);
        let spec = job.ao.clone().unwrap();
        let summary = AoSummary {
            geometry: Geometry::new(&job.shape, &spec).unwrap(),
            placement: String::new(),
            oversubscribed: None,
            rate_hz: spec.rate_hz,
            stats: Some(ours),
            max_rate_hz: None,
            max_rate_lower_bound: false,
            ladder: Vec::new(),
            floor_parts: Vec::new(),
            peer: Some(peer),
            recon_bytes: 0,
            needed_gbs: 0.0,
            measured_gbs: None,
            verdict: "pass".into(),
        };
        JobResult {
            job,
            ours: Ok(side(ns[0])),
            floor: Ok(side(ns[1])),
            peer: Ok(side(ns[2])),
            skipped: None,
            ao: Some(Box::new(summary)),
        }
    }

    pub(crate) const PYRTC: &str = "sizes = [[49, 49]]\n[case.ao]\nsubapertures = [7, 7]\nmodes = 97\nactuators = 97\nrate_hz = 1000\n";
    const KECK: &str = "sizes = [[240, 240]]\n[case.ao]\nsubapertures = [20, 20]\nactuators = 349\nrate_hz = 2000\n";

    fn find<'a>(t: &'a [Target], name: &str) -> &'a Target {
        t.iter()
            .find(|t| t.name.contains(name))
            .unwrap_or_else(|| panic!("no target {name} in {t:#?}"))
    }

    #[test]
    fn the_absolute_round_trip_target_shows_the_floor_and_says_when_it_is_over_the_limit_too() {
        let slow_host = absolute_round_trip_target(Some(1_733), Some(1_431));
        assert_eq!(slow_host.pass, Some(false));
        assert_eq!(
            slow_host.measured,
            "1.733 µs (the floor's 1.431 µs: over the limit itself on this host)"
        );
        let fast_host = absolute_round_trip_target(Some(780), Some(650));
        assert_eq!(fast_host.pass, Some(true));
        assert_eq!(fast_host.measured, "0.780 µs (the floor's 0.650 µs)");
        let no_floor = absolute_round_trip_target(Some(1_300), None);
        assert_eq!(
            (no_floor.pass, no_floor.measured.as_str()),
            (Some(false), "1.300 µs")
        );
        assert_eq!(absolute_round_trip_target(None, Some(1_000)).pass, None);
        // A floor at the limit is not over it.
        assert_eq!(
            absolute_round_trip_target(Some(1_300), Some(1_200)).measured,
            "1.300 µs (the floor's 1.200 µs)"
        );
        assert_eq!(slow_host.limit, "≤ 1.200 µs");
    }

    #[test]
    fn the_pyrtc_loop_is_held_to_its_floor_its_peer_and_no_missed_frame() {
        // Floor 9 µs / ours 10 µs = 0.9; peer 100 µs = 10× ours; jitter only 4× lower.
        let r = ao(
            PYRTC,
            [10_000, 9_000, 100_000],
            stats(31_000, 0, 5_000.0),
            stats(31_000, 40, 20_000.0),
        );
        let t = evaluate(&[r], 5.0);
        assert_eq!(find(&t, "end-to-end p50").pass, Some(true));
        assert_eq!(find(&t, " p50: pyshmem").pass, Some(true));
        assert_eq!(find(&t, " p99: pyshmem").pass, Some(true));
        assert_eq!(find(&t, "jitter").pass, Some(false));
        let missed = find(&t, "missed frames");
        assert_eq!(missed.pass, Some(true), "{missed:?}");
        assert_eq!(missed.measured, "0 over 31 s");
    }

    #[test]
    fn a_short_pyrtc_run_proves_no_missed_frame_target_but_a_miss_fails_it() {
        let clean = ao(
            PYRTC,
            [10_000; 3],
            stats(5_000, 0, 1.0),
            stats(5_000, 0, 1.0),
        );
        let missed = ao(
            PYRTC,
            [10_000; 3],
            stats(5_000, 2, 1.0),
            stats(5_000, 0, 1.0),
        );
        let t = evaluate(&[clean], 5.0);
        let m = find(&t, "missed frames");
        assert_eq!(m.pass, None);
        assert!(m.measured.contains("shorter than 30 s"), "{m:?}");
        assert_eq!(
            find(&evaluate(&[missed], 5.0), "missed frames").pass,
            Some(false)
        );
    }

    /// Frames the camera published a period late (its core paused) and the stages skipped
    /// are shown beside the target, not judged; one more lost in the pipeline fails it.
    #[test]
    fn frames_the_camera_published_late_are_shown_but_not_judged() {
        let at_source = |missed, late| LoopStats {
            missed_at_source: late,
            ..stats(31_000, missed, 1.0)
        };
        let source_only = ao(PYRTC, [10_000; 3], at_source(33, 33), stats(31_000, 0, 1.0));
        let m = find(&evaluate(&[source_only], 5.0), "missed frames").clone();
        assert_eq!(m.pass, Some(true), "{m:?}");
        assert!(
            m.measured
                .starts_with("0 over 31 s (and 33 the camera published")
                && m.measured
                    .ends_with("its core paused: the source's, not judged)"),
            "{m:?}"
        );
        let one_more = ao(PYRTC, [10_000; 3], at_source(34, 33), stats(31_000, 0, 1.0));
        let m = find(&evaluate(&[one_more], 5.0), "missed frames").clone();
        assert_eq!(m.pass, Some(false), "{m:?}");
        assert!(m.measured.starts_with("1 over 31 s"), "{m:?}");
        // Late on over 5% of its frames, the camera did not hold the rate: the run judges
        // no loop (its verdict fails it), and the target says n/a, not pass.
        let source_failed = ao(
            PYRTC,
            [10_000; 3],
            at_source(2_000, 2_000),
            stats(31_000, 0, 1.0),
        );
        let m = find(&evaluate(&[source_failed], 5.0), "missed frames").clone();
        assert_eq!(m.pass, None, "{m:?}");
        assert!(
            m.measured
                .starts_with("0 over 31 s (and 2000 the camera published")
                && m.measured.contains("over 5% of its frames: n/a"),
            "{m:?}"
        );
    }

    #[test]
    fn a_loop_reading_the_newest_frame_shows_its_missed_frames_unjudged() {
        let newest = ao(
            &format!("{PYRTC}catch_up = 0\n"),
            [10_000; 3],
            stats(31_000, 28, 1.0),
            stats(31_000, 62, 1.0),
        );
        let t = evaluate(&[newest], 5.0);
        let m = find(&t, "missed frames");
        assert_eq!(m.pass, None, "{m:?}");
        assert!(m.measured.starts_with("28 over 31 s (not judged"), "{m:?}");
        // The other pyRTC targets still judge it.
        assert_eq!(find(&t, " p50: pyshmem").pass, Some(false));
    }

    #[test]
    fn the_keck_loop_is_held_to_its_floor_only_and_other_geometries_to_nothing() {
        // Floor 7 µs / ours 10 µs = 0.7 < 0.8.
        let keck = ao(
            KECK,
            [10_000, 7_000, 1_000],
            stats(1, 0, 1.0),
            stats(1, 0, 1.0),
        );
        let t = evaluate(&[keck], 5.0);
        assert_eq!(find(&t, "end-to-end p50").pass, Some(false));
        assert!(!t.iter().any(|t| t.name.contains("pyshmem")), "{t:#?}");
        let other = ao(
            "sizes = [[48, 48]]\n[case.ao]\nsubapertures = [8, 8]\nactuators = 60\nrate_hz = 1000\n",
            [10_000; 3],
            stats(1, 0, 1.0),
            stats(1, 0, 1.0),
        );
        assert!(
            !evaluate(&[other], 5.0)
                .iter()
                .any(|t| t.name.starts_with("AO"))
        );
    }

    /// The GPU targets hold GPU jobs that ran: the 64 KiB ping-pong's p50 to 20 µs, the
    /// device-resident MVM at n = 10000 to 1.2 TFLOP/s (2·n²·rate). Other sizes, a CPU job
    /// and a skipped GPU job are held to neither.
    #[test]
    fn the_gpu_targets_hold_only_the_gpu_jobs_that_ran() {
        let jobs = Scenario::parse(
            "name = \"t\"\n\
             [[case]]\nkind = \"pingpong\"\ndevice = \"cuda:0\"\nsizes = [[16384], [16]]\n\
             [[case]]\nkind = \"pingpong\"\nsizes = [[65536]]\ndtype = \"uint8\"\n\
             [[case]]\nkind = \"mvm\"\ndevice = \"cuda:0\"\npipeline = \"device-resident\"\nsizes = [[10000, 10000], [1000, 1000]]\n",
        )
        .unwrap()
        .jobs(false, None);
        let gpu_targets = |skipped: Option<&str>| {
            let results: Vec<JobResult> = jobs
                .iter()
                .map(|job| {
                    // 1 µs a 64 KiB round trip (2 µs at 64 B); 10 000 products a second at
                    // n = 10000: 2 TFLOP/s (30 000 at n = 1000).
                    let big = job.payload_bytes() == 65536 || job.shape[0] == 10000;
                    let mut ours = side(if big { 1_000 } else { 2_000 });
                    ours.m.repeat_hz = vec![if big { 1e4 } else { 3e4 }];
                    JobResult {
                        skipped: skipped.filter(|_| job.device.is_gpu()).map(str::to_owned),
                        ..plain(job.clone(), ours, side(900))
                    }
                })
                .collect();
            evaluate(&results, 5.0)
                .into_iter()
                .filter(|t| t.name.contains("H100"))
                .map(|t| (t.name, t.measured, t.limit, t.pass))
                .collect::<Vec<_>>()
        };
        let ran = gpu_targets(None);
        let want = [
            (
                ": GPU 64 KiB cross-process round trip p50 (H100 target, under MPS)",
                "1.0 µs",
                "≤ 20 µs",
            ),
            (
                ": device-resident MVM n=10000 (H100 target)",
                "2.000 TFLOP/s",
                "≥ 1.2 TFLOP/s",
            ),
        ];
        assert_eq!(ran.len(), want.len(), "{ran:#?}");
        for ((name, measured, limit, pass), (suffix, want_measured, want_limit)) in
            ran.iter().zip(want)
        {
            assert!(name.ends_with(suffix), "{name}");
            assert_eq!(
                (&**measured, &**limit, *pass),
                (want_measured, want_limit, Some(true))
            );
        }
        assert_eq!(gpu_targets(Some("no GPU")), []);
    }

    /// The pyshmem targets hold pyRTC's geometry (97 modes) at 1 kHz only, and say why
    /// they are n/a where the run has no peer.
    #[test]
    fn the_pyshmem_targets_hold_only_pyrtc_at_1_khz_and_say_why_they_are_missing() {
        let pyshmem = |case: &str| {
            let r = ao(case, [10_000; 3], stats(1, 0, 1.0), stats(1, 0, 1.0));
            let t = evaluate(&[r], 5.0);
            t.iter().filter(|t| t.name.contains("pyshmem")).count()
        };
        assert_eq!(pyshmem(PYRTC), 3);
        assert_eq!(
            pyshmem(&PYRTC.replace("rate_hz = 1000", "rate_hz = 500")),
            0
        );
        assert_eq!(pyshmem(&PYRTC.replace("modes = 97", "modes = 50")), 0);
        let mut r = ao(PYRTC, [10_000; 3], stats(1, 0, 1.0), stats(1, 0, 1.0));
        r.peer = Err("no python".into());
        let t = evaluate(&[r], 5.0);
        assert_eq!(
            find(&t, " p50: pyshmem").measured,
            "n/a (no pyshmem peer in this run)"
        );
    }

    /// A floor ours beats beyond its slack bounds nothing: each target against it is n/a
    /// (pass `None`), where the same floor within its slack is judged.
    #[test]
    fn a_target_against_a_floor_that_does_not_bound_ours_is_void() {
        // AO: composed floor 15 µs / ours 10 µs = 1.50 > 1.10.
        let r = ao(
            PYRTC,
            [10_000, 15_000, 100_000],
            stats(31_000, 0, 5_000.0),
            stats(31_000, 0, 50_000.0),
        );
        let t = evaluate(&[r], 5.0);
        let e2e = find(&t, "end-to-end p50");
        assert_eq!(e2e.pass, None, "{e2e:?}");
        assert_eq!(
            e2e.measured,
            "n/a (the floor does not bound ours: ratio 1.50 above the slack 1.10)"
        );
        // Against the peer, not the floor: judged.
        assert_eq!(find(&t, " p50: pyshmem").pass, Some(true));
        // Ping-pong at 64 KiB, spin and park: floor 10.6 µs / ours 10 µs = 1.06 > 1.05.
        let jobs = Scenario::parse(
            "name = \"t\"\n[[case]]\nkind = \"pingpong\"\nsizes = [[65536]]\ndtype = \"uint8\"\n\
             [[case]]\nkind = \"pingpong\"\nwait = \"park\"\nsizes = [[65536]]\ndtype = \"uint8\"\n",
        )
        .unwrap()
        .jobs(false, None);
        for (floor, pass) in [(10_600, None), (10_400, Some(true))] {
            let results: Vec<JobResult> = jobs
                .iter()
                .map(|job| plain(job.clone(), side(10_000), side(floor)))
                .collect();
            let t = evaluate(&results, 5.0);
            for name in ["spin p50 vs floor", "spin p99 vs floor", "park 64 KiB p50"] {
                assert_eq!(find(&t, name).pass, pass, "{:?}", find(&t, name));
                let void = find(&t, name)
                    .measured
                    .starts_with("n/a (the floor does not bound");
                assert_eq!(void, pass.is_none(), "{:?}", find(&t, name));
            }
        }
    }

    /// Each IO target holds only its own cases, to its own limit: the float32 round trip
    /// at 100² (0.75×), 1000² and 10000² (0.95×); the spinning 64 KiB ping-pong's p50 and
    /// p99 to its floor's (1.15×, 1.5×), the spinning 64 B one to 1.2 µs, a notifying one's
    /// p50 to its floor's (2×); our MVM kernel's GFLOP/s (2·n²·rate) to numpy's, 2× at
    /// n = 100 and 1× at n = 1000 (and the host-upload pipeline to its kernel alone). A
    /// ping-pong whose floor has no samples, or of no size with a target, is held to none.
    #[test]
    fn each_io_target_holds_its_own_cases_to_its_own_limit() {
        let jobs = Scenario::parse(
            "name = \"t\"\n\
             [[case]]\nkind = \"roundtrip\"\nsizes = [[100, 100], [1000, 1000], [10000, 10000], [50, 50]]\n\
             [[case]]\nkind = \"roundtrip\"\nsizes = [[100, 100]]\ndtype = \"uint8\"\n\
             [[case]]\nkind = \"pingpong\"\nsizes = [[64], [65536], [128]]\ndtype = \"uint8\"\n\
             [[case]]\nkind = \"pingpong\"\nwait = \"park\"\nsizes = [[64], [128]]\ndtype = \"uint8\"\n\
             [[case]]\nkind = \"mvm\"\nsizes = [[100, 100], [1000, 1000]]\n",
        )
        .unwrap()
        .jobs(false, None);
        let results: Vec<JobResult> = jobs
            .into_iter()
            .map(|job| {
                let mut floor = side(900);
                let mut peer = side(1);
                if job.kind == Kind::Mvm {
                    // 2·n²·rate: 2 GFLOP/s at both sizes, against numpy's 0.5 and 4.
                    let n = job.shape[0] as f64;
                    floor.m.repeat_hz = vec![1e9 / (n * n)];
                    let numpy = if n == 100.0 { "0.5" } else { "4" };
                    peer.m.notes = vec![("kernel_gflops".into(), numpy.into())];
                }
                if job.wait == Some(Wait::Park) && job.payload_bytes() == 128 {
                    floor.hist = crate::hist::new();
                }
                JobResult {
                    job,
                    ours: Ok(side(1_000)),
                    floor: Ok(floor),
                    peer: Ok(peer),
                    skipped: None,
                    ao: None,
                }
            })
            .collect();
        let t = evaluate(&results, 5.0);
        let got: Vec<(&str, &str, &str, Option<bool>)> = t
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.measured.as_str(),
                    t.limit.as_str(),
                    t.pass,
                )
            })
            .collect();
        let fl = "vs floor (median iteration)";
        let kernel = "our GFLOP/s vs numpy sgemv GFLOP/s";
        assert_eq!(
            got,
            [
                (
                    &*format!("roundtrip 100x100 {fl}"),
                    "0.900×",
                    "≥ 0.75×",
                    Some(true)
                ),
                (
                    &format!("roundtrip 1000x1000 {fl}"),
                    "0.900×",
                    "≥ 0.95×",
                    Some(false)
                ),
                (
                    &format!("roundtrip 10000x10000 {fl}"),
                    "0.900×",
                    "≥ 0.95×",
                    Some(false)
                ),
                (
                    "pingpong 64 B spin p50 round trip",
                    "1.000 µs (the floor's 0.900 µs)",
                    "≤ 1.200 µs",
                    Some(true)
                ),
                (
                    "pingpong 64 KiB spin p50 vs floor p50",
                    "1.00 µs / 0.90 µs = 1.11×",
                    "≤ 1.15×",
                    Some(true)
                ),
                (
                    "pingpong 64 KiB spin p99 vs floor p99",
                    "1.00 µs / 0.90 µs = 1.11× (p99 from 100 samples: it needs 1000)",
                    "≤ 1.50×",
                    Some(true)
                ),
                (
                    "pingpong park 64 B p50 vs park floor p50",
                    "1.00 µs / 0.90 µs = 1.11×",
                    "≤ 2.00×",
                    Some(true)
                ),
                (
                    "pingpong park 128 B p50 vs park floor p50",
                    "n/a (a side failed)",
                    "≤ 2.00×",
                    None
                ),
                (
                    &format!("MVM kernel n=100: {kernel}"),
                    "4.000×",
                    "≥ 2.00×",
                    Some(true)
                ),
                (
                    &format!("MVM kernel n=1000: {kernel}"),
                    "0.500×",
                    "≥ 1.00×",
                    Some(false)
                ),
                (
                    "MVM pipeline 1000x1000: median iteration, kernel alone ÷ ours",
                    "0.900×",
                    "≥ 0.85×",
                    Some(true)
                ),
                (
                    "histogram recording cost",
                    "5.0 ns/sample",
                    "≤ 50 ns",
                    Some(true)
                ),
            ]
        );
    }

    /// A target judged on a p99 of fewer than 1000 samples says so in its measured value;
    /// its p50 (100 samples support it) does not.
    #[test]
    fn a_target_on_a_p99_of_too_few_samples_says_so() {
        let job = Scenario::parse(
            "name = \"t\"\n[[case]]\nkind = \"pingpong\"\nsizes = [[65536]]\ndtype = \"uint8\"\n",
        )
        .unwrap()
        .jobs(false, None)
        .remove(0);
        let result = |samples: u64| {
            let with = |ns: u64| {
                let mut s = side(ns);
                s.hist = crate::hist::new();
                s.hist.record_n(ns, samples).unwrap();
                s
            };
            plain(job.clone(), with(10_000), with(10_000))
        };
        let t = evaluate(&[result(100)], 5.0);
        let p99 = &find(&t, "spin p99 vs floor").measured;
        assert!(
            p99.ends_with("= 1.00× (p99 from 100 samples: it needs 1000)"),
            "{p99}"
        );
        assert!(find(&t, "spin p50 vs floor").measured.ends_with("= 1.00×"));
        let t = evaluate(&[result(1000)], 5.0);
        let p99 = &find(&t, "spin p99 vs floor").measured;
        assert!(p99.ends_with("= 1.00×"), "{p99}");
    }

    /// Frames per second of ours beyond the slack over the floor's void the throughput
    /// target (the floor does not bound ours), as a latency beyond it does; within the slack
    /// the target is judged.
    #[test]
    fn a_bridge_rate_beyond_its_floors_is_not_judged() {
        let job = Scenario::parse(
            "name = \"t\"\n[[case]]\nkind = \"bridge\"\ndtype = \"uint8\"\nsizes = [[65536]]\n",
        )
        .unwrap()
        .jobs(false, None)
        .remove(0);
        let at = |hz: f64| {
            let mut s = side(100_000);
            s.m.repeat_hz = vec![hz];
            s
        };
        let name = "bridge 64 KiB frames/s vs Zenoh floor frames/s";
        for (floor_hz, measured, pass) in [
            (
                12_000.0,
                "n/a (the floor does not bound ours: frames/s ratio 1.33 above the slack 1.10)",
                None,
            ),
            (15_000.0, "1.067×", Some(true)),
        ] {
            let r = JobResult {
                job: job.clone(),
                ours: Ok(at(16_000.0)),
                floor: Ok(at(floor_hz)),
                peer: Err("no peer for bridge cases".into()),
                skipped: None,
                ao: None,
            };
            let t = evaluate(&[r], 5.0);
            let row = find(&t, name);
            assert_eq!((row.measured.as_str(), row.pass), (measured, pass));
        }
    }

    #[test]
    fn the_mvm_pipeline_from_1000_to_3000_is_held_to_its_kernel() {
        let jobs = Scenario::parse(
            "name = \"t\"\n[[case]]\nkind = \"mvm\"\npipeline = \"host-upload\"\nsizes = [[500, 500], [1000, 1000], [3000, 3000]]\n",
        )
        .unwrap()
        .jobs(false, None);
        let results: Vec<JobResult> = jobs
            .into_iter()
            .zip([[10_000u64, 8_000], [10_000, 8_400], [10_000, 9_000]])
            .map(|(job, [ours, floor])| plain(job, side(ours), side(floor)))
            .collect();
        let t = evaluate(&results, 5.0);
        let pipeline: Vec<_> = t
            .iter()
            .filter(|t| t.name.starts_with("MVM pipeline"))
            .collect();
        assert_eq!(pipeline.len(), 2, "{pipeline:#?}");
        assert_eq!(pipeline[0].pass, Some(false), "0.84 < 0.85");
        assert_eq!(pipeline[1].pass, Some(true));
    }
}

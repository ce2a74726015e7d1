//! The performance targets of this machine kind (issue: "Targets on this machine"),
//! each evaluated from the same run and reported as pass / fail.

use serde::Serialize;

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

fn ratio_target(
    out: &mut Vec<Target>,
    name: String,
    num: Option<f64>,
    den: Option<f64>,
    min: f64,
    why: &str,
) {
    match (num, den) {
        (Some(a), Some(b)) if b > 0.0 => out.push(Target {
            name,
            measured: format!("{:.3}×", a / b),
            limit: format!("≥ {min:.2}×"),
            pass: Some(a / b >= min),
        }),
        _ => out.push(Target {
            name,
            measured: format!("n/a ({why})"),
            limit: format!("≥ {min:.2}×"),
            pass: None,
        }),
    }
}

/// Ours against the floor at quantile `q` of their latencies, held to at most `max`×.
fn quantile_target(out: &mut Vec<Target>, name: String, r: &JobResult, q: f64, max: f64) {
    let at = |s: &crate::run::Side| s.hist.value_at_quantile(q) as f64;
    let (a, b) = (r.ours.as_ref().ok().map(at), r.floor.as_ref().ok().map(at));
    let limit = format!("≤ {max:.2}×");
    out.push(match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Target {
            name,
            measured: format!("{:.2} µs / {:.2} µs = {:.2}×", a / 1e3, b / 1e3, a / b),
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
                let p50 = ours.map(|s| s.hist.value_at_quantile(0.5));
                out.push(Target {
                    name: "pingpong 64 B spin p50 round trip".into(),
                    measured: p50.map_or("n/a (failed)".into(), |v| {
                        format!("{:.3} µs", v as f64 / 1e3)
                    }),
                    limit: "≤ 1.200 µs".into(),
                    pass: p50.map(|v| v <= 1200),
                });
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
                );
            }
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

/// The bridge issue's targets: p50 latency ≤ 1.2× Zenoh's floor, frames delivered per
/// second ≥ 0.8× the floor's, both from this run.
fn bridge_targets(out: &mut Vec<Target>, r: &JobResult) {
    let j = &r.job;
    let how = match (j.pinned, j.wait.unwrap_or(crate::scenario::Wait::Park)) {
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

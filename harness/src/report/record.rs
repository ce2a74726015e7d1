//! The machine-readable results: one [`Record`] per case × size × device, written as
//! `results.json` and `results.csv` with exactly the same columns, through the
//! [`TableWriter`] trait (one struct per format).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cases::ao::analysis::StageStat;
use crate::error::Result;
use crate::run::JobResult;
use crate::scenario::{HotOp, Kind, shape_str};

/// One row of `results.json` / `results.csv`. `None` is `null` (JSON) or empty (CSV).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Case name.
    pub case: String,
    /// roundtrip | pingpong | mvm.
    pub kind: String,
    /// Payload shape (MVM: the matrix).
    pub shape: Vec<usize>,
    /// numpy dtype name.
    pub dtype: String,
    /// cpu | cuda:N.
    pub device: String,
    /// GPU cases: CPU mirror.
    pub mirror: Option<bool>,
    /// MVM: host-upload | device-resident.
    pub pipeline: Option<String>,
    /// Pingpong (and MVM): spin | futex.
    pub wait: Option<String>,
    /// Iterations (round trips, products) per second.
    pub hz: Option<f64>,
    /// Write + read bytes per second of wall time (the seed's convention): what moved, so a
    /// pingpong's idle gaps count here though not in its `hz`; null for an op that moves no
    /// payload (lock, wake).
    pub bytes_per_s: Option<f64>,
    /// MVM: 2·rows·cols·hz / 1e9.
    pub gflops: Option<f64>,
    /// Latency percentiles of every measured iteration, ns.
    pub p50_ns: Option<u64>,
    /// 90th percentile, ns.
    pub p90_ns: Option<u64>,
    /// 99th percentile, ns.
    pub p99_ns: Option<u64>,
    /// 99.9th percentile, ns.
    pub p999_ns: Option<u64>,
    /// Largest latency, ns.
    pub max_ns: Option<u64>,
    /// Latency samples the percentiles come from (report.md shows a percentile only where
    /// they support it, [`crate::hist::supports`]; these fields keep every value). (Absent
    /// in files written before it, read as null.)
    #[serde(default)]
    pub samples: Option<u64>,
    /// The same loop on plain memory, same run, same cores (ao-loop: 1 / the composed
    /// floor's mean latency, not a rate).
    pub floor_hz: Option<f64>,
    /// Floor median iteration time / ours (see [`JobResult::ratio_to_floor`]).
    pub ratio_to_floor: Option<f64>,
    /// pyshmem 1.4.0 doing the same case.
    pub peer_hz: Option<f64>,
    /// ao-loop: the loop's sizes.
    #[serde(default)]
    pub geometry: Option<AoGeometry>,
    /// ao-loop: camera rate of the run, Hz.
    #[serde(default)]
    pub rate_hz: Option<f64>,
    /// ao-loop: DM frames per second measured.
    #[serde(default)]
    pub achieved_hz: Option<f64>,
    /// ao-loop: camera frames whose id never reached the DM.
    #[serde(default)]
    pub missed: Option<u64>,
    /// ao-loop: of those, frames the camera published a period or more late (its core
    /// paused), which the verdict leaves to the source.
    #[serde(default)]
    pub missed_at_source: Option<u64>,
    /// ao-loop: standard deviation of the end-to-end latency, ns.
    #[serde(default)]
    pub jitter_ns: Option<f64>,
    /// ao-loop: per-stage compute and per-hop latencies.
    #[serde(default)]
    pub stages: Option<Vec<StageStat>>,
    /// ao-loop: highest sustainable rate found by the rate ladder, Hz.
    #[serde(default)]
    pub max_rate_hz: Option<f64>,
    /// ao-loop: whether `max_rate_hz` is only a lower bound (no higher rate the ladder tried
    /// failed; "≥ N" in report.md); null without a rate.
    #[serde(default)]
    pub max_rate_lower_bound: Option<bool>,
    /// ao-loop: the pyshmem + numpy loop's end-to-end p50, ns.
    #[serde(default)]
    pub peer_p50_ns: Option<u64>,
    /// ao-loop: the peer's p99, ns.
    #[serde(default)]
    pub peer_p99_ns: Option<u64>,
    /// ao-loop: the peer's jitter (std), ns.
    #[serde(default)]
    pub peer_jitter_ns: Option<f64>,
    /// ao-loop: "pass" or "fail: …" at the rate.
    #[serde(default)]
    pub verdict: Option<String>,
    /// Why the case did not run here (a GPU case without a usable CUDA device), null when it
    /// ran: a case without figures and without a reason failed. (Absent in files written
    /// before it, read as null.)
    #[serde(default)]
    pub skipped: Option<String>,
    /// Why the case failed (its library side or its floor; [`JobResult::error`]), null when
    /// it did not. (Absent in files written before it, read as null.)
    #[serde(default)]
    pub error: Option<String>,
}

/// The `geometry` key of an ao-loop row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AoGeometry {
    /// WFS frame `[rows, cols]`.
    pub wfs_pixels: [usize; 2],
    /// Subaperture grid (`[0, 0]` for pixel signals).
    pub subapertures: [usize; 2],
    /// Signal vector length.
    pub signals: usize,
    /// Controlled modes (0 = zonal).
    pub modes: usize,
    /// DM actuators.
    pub actuators: usize,
}

/// The CSV header, in column order (the JSON keys, same order).
pub const COLUMNS: [&str; 35] = [
    "case",
    "kind",
    "shape",
    "dtype",
    "device",
    "mirror",
    "pipeline",
    "wait",
    "hz",
    "bytes_per_s",
    "gflops",
    "p50_ns",
    "p90_ns",
    "p99_ns",
    "p999_ns",
    "max_ns",
    "samples",
    "floor_hz",
    "ratio_to_floor",
    "peer_hz",
    "geometry",
    "rate_hz",
    "achieved_hz",
    "missed",
    "missed_at_source",
    "jitter_ns",
    "stages",
    "max_rate_hz",
    "max_rate_lower_bound",
    "peer_p50_ns",
    "peer_p99_ns",
    "peer_jitter_ns",
    "verdict",
    "skipped",
    "error",
];

/// Bytes written + read per iteration (the seed's IO convention); `None` for an op that
/// moves no payload (lock, wake), whose `bytes_per_s` is then null.
pub fn bytes_per_iteration(r: &JobResult) -> Option<f64> {
    let j = &r.job;
    match j.kind {
        // A GPU ping-pong echoes the whole frame back (two hops of it, `cases::gpu`); a CPU
        // one acknowledges with a count.
        Kind::Pingpong if j.device.is_gpu() => Some(4.0 * j.payload_bytes() as f64),
        Kind::Roundtrip | Kind::Pingpong => Some(2.0 * j.payload_bytes() as f64),
        Kind::Op if matches!(j.op, Some(HotOp::Lock | HotOp::Wake)) => None,
        // One copy (write or read; the kernel reads the matrix).
        Kind::Op => Some(j.payload_bytes() as f64),
        // The frame delivered at B (the bridge's throughput).
        Kind::Bridge => Some(j.payload_bytes() as f64),
        // x and y each written once and read once.
        Kind::Mvm => Some(2.0 * ((j.shape[0] + j.shape[1]) * j.itemsize) as f64),
        // The frame, the signals and the commands, each written once and read once.
        Kind::AoLoop => r.ao.as_ref().map(|a| 2.0 * a.bytes_per_frame() as f64),
    }
}

/// The highest `ratio_to_floor` noise explains for a floor timed in processes of its own
/// (bridge, GPU, ao-loop): a floor bounds its case, so a case beating its floor by more
/// ([`Record::floor_bound_note`]) is flagged, not failed.
pub const FLOOR_BOUND_SLACK: f64 = 1.10;

/// [`FLOOR_BOUND_SLACK`] for a floor timed in alternation in ours' own processes
/// ([`crate::cases::floor_timer`]: op, CPU roundtrip, ping-pong, MVM), which agree with
/// ours within a fraction of a percent.
pub const ALTERNATED_FLOOR_BOUND_SLACK: f64 = 1.05;

impl Record {
    /// The highest ratio noise explains for this row's floor.
    pub fn floor_bound_slack(&self) -> f64 {
        let alternated = match self.kind.as_str() {
            "op" => true,
            "roundtrip" | "pingpong" | "mvm" => self.device == "cpu",
            _ => false,
        };
        if alternated {
            ALTERNATED_FLOOR_BOUND_SLACK
        } else {
            FLOOR_BOUND_SLACK
        }
    }

    /// Why this row's floor may not bound it, when its ratio exceeds
    /// [`Self::floor_bound_slack`] (report.md and `harness compare` list it).
    pub fn floor_bound_note(&self) -> Option<String> {
        let slack = self.floor_bound_slack();
        let r = self.ratio_to_floor.filter(|r| *r > slack)?;
        Some(format!(
            "ratio {r:.2} > {slack:.2}: the floor may not bound this case (it measures \
             something else, or noise)"
        ))
    }

    /// Why this bridge row's floor may not bound its throughput: its frames/s exceed the
    /// floor's by more than [`Self::floor_bound_slack`] (report.md lists it). A bridge's
    /// throughput is measured apart from its latency, so the floor's rate must bound it
    /// too; other kinds' rates come from the runs their latency does (`None`).
    pub fn rate_bound_note(&self) -> Option<String> {
        let (ratio, slack) = (self.rate_beyond_slack()?, self.floor_bound_slack());
        Some(format!(
            "frames/s ratio {ratio:.2} > {slack:.2}: the floor may not bound this case's \
             throughput (it measures something else, or noise)"
        ))
    }

    /// A bridge row's frames/s over its floor's, where beyond [`Self::floor_bound_slack`]
    /// ([`Self::rate_bound_note`]).
    pub fn rate_beyond_slack(&self) -> Option<f64> {
        if self.kind != "bridge" {
            return None;
        }
        let ratio = self.hz? / self.floor_hz.filter(|f| *f > 0.0)?;
        (ratio > self.floor_bound_slack()).then_some(ratio)
    }

    /// The row for one job.
    pub fn from_result(r: &JobResult) -> Self {
        let j = &r.job;
        let ours = r.ours.as_ref().ok();
        let hz = ours.map(|s| s.hz(j.kind));
        // No percentiles of an empty histogram (an AO loop no frame of which reached the DM).
        let pct = ours.filter(|s| !s.hist.is_empty()).map(|s| s.pct());
        let floor_hz = r.floor.as_ref().ok().map(|s| s.hz(j.kind));
        let gflops = if j.kind == Kind::Mvm {
            hz.map(|h| 2.0 * (j.shape[0] * j.shape[1]) as f64 * h / 1e9)
        } else {
            None
        };
        let ao = r.ao.as_deref();
        let stats = ao.and_then(|a| a.stats.as_ref());
        // Nor a jitter or stages (a default `LoopStats`' zeros) of a loop without latencies.
        let latency_stats = stats.filter(|_| pct.is_some());
        let peer_side = r.peer.as_ref().ok().filter(|_| ao.is_some());
        Record {
            geometry: ao.map(|a| AoGeometry {
                wfs_pixels: a.geometry.wfs,
                subapertures: a.geometry.subapertures,
                signals: a.geometry.signals,
                modes: a.geometry.modes,
                actuators: a.geometry.actuators,
            }),
            rate_hz: ao.map(|a| a.rate_hz),
            achieved_hz: stats.map(|s| s.achieved_hz),
            missed: stats.map(|s| s.missed),
            missed_at_source: stats.map(|s| s.missed_at_source),
            jitter_ns: latency_stats.map(|s| s.jitter_ns),
            stages: latency_stats.map(|s| s.stages.clone()),
            max_rate_hz: ao.and_then(|a| a.max_rate_hz),
            max_rate_lower_bound: ao.and_then(|a| a.max_rate_hz.map(|_| a.max_rate_lower_bound)),
            peer_p50_ns: peer_side.map(|s| s.pct().p50),
            peer_p99_ns: peer_side.map(|s| s.pct().p99),
            peer_jitter_ns: peer_side.map(|s| s.hist.stdev()),
            verdict: ao.map(|a| a.verdict.clone()),
            case: j.case.clone(),
            kind: j.kind.name().into(),
            shape: j.shape.clone(),
            dtype: j.dtype.clone(),
            device: j.device.to_string(),
            mirror: j.mirror,
            pipeline: j.pipeline.map(|p| p.name().into()),
            wait: if j.kind == Kind::Mvm {
                ours.and_then(|s| s.note("driver_wait"))
                    .map(str::to_string)
                    .or(j.wait.map(|w| w.name().into()))
            } else {
                j.wait.map(|w| w.name().into())
            },
            hz,
            // The wall rate: a pingpong's `hz` counts busy time only.
            bytes_per_s: ours
                .map(|s| s.m.hz())
                .zip(bytes_per_iteration(r))
                .map(|(h, b)| h * b),
            gflops,
            p50_ns: pct.map(|p| p.p50),
            p90_ns: pct.map(|p| p.p90),
            p99_ns: pct.map(|p| p.p99),
            p999_ns: pct.map(|p| p.p999),
            max_ns: pct.map(|p| p.max),
            samples: pct.map(|p| p.count),
            floor_hz,
            ratio_to_floor: r.ratio_to_floor(),
            peer_hz: r.peer.as_ref().ok().map(|s| s.hz(j.kind)),
            skipped: r.skipped.clone(),
            error: r.error(),
        }
    }

    /// The key `compare` matches rows by.
    pub fn key(&self) -> String {
        format!(
            "{}|{}|{}|{}|{:?}|{:?}",
            self.case,
            shape_str(&self.shape),
            self.dtype,
            self.device,
            self.mirror,
            self.pipeline
        )
    }
}

/// A results file format.
pub trait TableWriter {
    /// Writes all records to `w`.
    fn write(&self, records: &[Record], w: &mut dyn Write) -> Result<()>;
}

/// `results.json`: an array of records.
#[derive(Debug)]
pub struct JsonWriter;

impl TableWriter for JsonWriter {
    fn write(&self, records: &[Record], w: &mut dyn Write) -> Result<()> {
        serde_json::to_writer_pretty(&mut *w, records)?;
        writeln!(w)?;
        Ok(())
    }
}

/// `results.csv`: the same columns; `shape` as `100x100`, null as an empty field.
#[derive(Debug)]
pub struct CsvWriter;

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// A structured field as compact JSON in one CSV cell.
fn json_opt<T: Serialize>(v: &Option<T>) -> String {
    v.as_ref()
        .and_then(|v| serde_json::to_string(v).ok())
        .unwrap_or_default()
}

impl TableWriter for CsvWriter {
    fn write(&self, records: &[Record], w: &mut dyn Write) -> Result<()> {
        let mut c = csv::Writer::from_writer(w);
        c.write_record(COLUMNS)?;
        for r in records {
            c.write_record([
                r.case.clone(),
                r.kind.clone(),
                shape_str(&r.shape),
                r.dtype.clone(),
                r.device.clone(),
                opt(&r.mirror),
                opt(&r.pipeline),
                opt(&r.wait),
                opt(&r.hz),
                opt(&r.bytes_per_s),
                opt(&r.gflops),
                opt(&r.p50_ns),
                opt(&r.p90_ns),
                opt(&r.p99_ns),
                opt(&r.p999_ns),
                opt(&r.max_ns),
                opt(&r.samples),
                opt(&r.floor_hz),
                opt(&r.ratio_to_floor),
                opt(&r.peer_hz),
                json_opt(&r.geometry),
                opt(&r.rate_hz),
                opt(&r.achieved_hz),
                opt(&r.missed),
                opt(&r.missed_at_source),
                opt(&r.jitter_ns),
                json_opt(&r.stages),
                opt(&r.max_rate_hz),
                opt(&r.max_rate_lower_bound),
                opt(&r.peer_p50_ns),
                opt(&r.peer_p99_ns),
                opt(&r.peer_jitter_ns),
                opt(&r.verdict),
                opt(&r.skipped),
                opt(&r.error),
            ])?;
        }
        c.flush()?;
        Ok(())
    }
}

/// Writes `records` to `path` with `writer`.
pub fn write_file(writer: &dyn TableWriter, records: &[Record], path: &Path) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writer.write(records, &mut f)?;
    f.flush()?;
    Ok(())
}

/// Reads a `results.json`.
pub fn read_json(path: &Path) -> Result<Vec<Record>> {
    use crate::error::Context;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(case: &str, ratio: Option<f64>) -> Record {
        Record {
            case: case.into(),
            kind: "roundtrip".into(),
            shape: vec![100, 100],
            dtype: "float32".into(),
            device: "cpu".into(),
            mirror: None,
            pipeline: None,
            wait: None,
            hz: Some(1000.0),
            bytes_per_s: Some(8e7),
            gflops: None,
            p50_ns: Some(900),
            p90_ns: Some(950),
            p99_ns: Some(1200),
            p999_ns: Some(2000),
            max_ns: Some(9000),
            samples: Some(100_000),
            floor_hz: ratio.map(|r| 1000.0 / r),
            ratio_to_floor: ratio,
            peer_hz: None,
            geometry: None,
            rate_hz: None,
            achieved_hz: None,
            missed: None,
            missed_at_source: None,
            jitter_ns: None,
            stages: None,
            max_rate_hz: None,
            max_rate_lower_bound: None,
            peer_p50_ns: None,
            peer_p99_ns: None,
            peer_jitter_ns: None,
            verdict: None,
            skipped: None,
            error: None,
        }
    }

    #[test]
    fn json_has_exactly_the_issue_keys_in_order_and_round_trips() {
        let recs = vec![sample("a", Some(0.9)), sample("b", None)];
        let mut buf = Vec::new();
        JsonWriter.write(&recs, &mut buf).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        let keys: Vec<_> = v[0].as_object().unwrap().keys().cloned().collect();
        let mut want: Vec<_> = COLUMNS.iter().map(|s| s.to_string()).collect();
        want.sort();
        let mut got = keys.clone();
        got.sort();
        assert_eq!(got, want);
        // The order: each key's position in the text of the first record.
        let text = String::from_utf8(buf.clone()).unwrap();
        let at: Vec<usize> = COLUMNS
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(v[1]["ratio_to_floor"].is_null());
        let back: Vec<Record> = serde_json::from_slice(&buf).unwrap();
        assert_eq!(back, recs);
    }

    /// Each CSV cell sits under its own header: with a value of its own in every field, each
    /// cell reads as the JSON value under the same key (`shape` as `3x5`, structured fields
    /// as compact JSON).
    #[test]
    fn each_csv_cell_is_the_json_value_under_the_same_key() {
        let rec = Record {
            case: "c".into(),
            kind: "ao-loop".into(),
            shape: vec![3, 5],
            dtype: "float64".into(),
            device: "cuda:1".into(),
            mirror: Some(true),
            pipeline: Some("host-upload".into()),
            wait: Some("spin".into()),
            hz: Some(1.5),
            bytes_per_s: Some(2.5),
            gflops: Some(3.5),
            p50_ns: Some(11),
            p90_ns: Some(12),
            p99_ns: Some(13),
            p999_ns: Some(14),
            max_ns: Some(15),
            samples: Some(1616),
            floor_hz: Some(4.5),
            ratio_to_floor: Some(0.5),
            peer_hz: Some(6.5),
            geometry: Some(AoGeometry {
                wfs_pixels: [30, 31],
                subapertures: [32, 33],
                signals: 34,
                modes: 35,
                actuators: 36,
            }),
            rate_hz: Some(7.5),
            achieved_hz: Some(8.5),
            missed: Some(16),
            missed_at_source: Some(17),
            jitter_ns: Some(9.5),
            stages: Some(vec![StageStat {
                name: "recon".into(),
                p50_ns: 18,
                p99_ns: 19,
            }]),
            max_rate_hz: Some(10.5),
            max_rate_lower_bound: Some(false),
            peer_p50_ns: Some(20),
            peer_p99_ns: Some(21),
            peer_jitter_ns: Some(22.5),
            verdict: Some("pass".into()),
            skipped: Some("why".into()),
            error: Some("failed: why".into()),
        };
        let json = serde_json::to_value(&rec).unwrap();
        let mut csv = Vec::new();
        CsvWriter
            .write(std::slice::from_ref(&rec), &mut csv)
            .unwrap();
        let mut rows = csv::Reader::from_reader(&csv[..]);
        let headers = rows.headers().unwrap().clone();
        let row = rows.records().next().unwrap().unwrap();
        assert_eq!(headers.iter().collect::<Vec<_>>(), COLUMNS);
        assert_eq!(row.len(), COLUMNS.len());
        for (key, cell) in headers.iter().zip(row.iter()) {
            let want = &json[key];
            assert!(!want.is_null(), "{key}: give every field a value");
            let same = match want {
                serde_json::Value::String(s) => s == cell,
                _ if key == "shape" => cell == "3x5",
                serde_json::Value::Number(n) => cell.parse::<f64>().ok() == n.as_f64(),
                _ => {
                    serde_json::from_str::<serde_json::Value>(cell)
                        .ok()
                        .as_ref()
                        == Some(want)
                }
            };
            assert!(same, "column {key}: CSV {cell:?}, JSON {want}");
        }
    }

    /// Whether the ladder's highest rate is only a lower bound ("≥ N" in report.md) reaches
    /// both files beside that rate; null where the row has no rate.
    #[test]
    fn a_highest_rate_that_is_only_a_lower_bound_is_flagged_in_both_files() {
        use crate::report::targets::tests::{PYRTC, ao};
        let mut r = ao(PYRTC, [1, 1, 1], Default::default(), Default::default());
        let summary = r.ao.as_mut().unwrap();
        summary.max_rate_hz = Some(12_800.0);
        summary.max_rate_lower_bound = true;
        let recs = [Record::from_result(&r), sample("b", None)];
        let mut json = Vec::new();
        JsonWriter.write(&recs, &mut json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v[0]["max_rate_lower_bound"], serde_json::Value::Bool(true));
        assert!(v[1]["max_rate_lower_bound"].is_null());
        let mut csv = Vec::new();
        CsvWriter.write(&recs, &mut csv).unwrap();
        let mut rows = csv::Reader::from_reader(&csv[..]);
        let col = rows
            .headers()
            .unwrap()
            .iter()
            .position(|h| h == "max_rate_lower_bound")
            .unwrap();
        let cells: Vec<_> = rows
            .records()
            .map(|row| row.unwrap()[col].to_string())
            .collect();
        assert_eq!(cells, ["true", ""]);
    }

    /// Taking the lock or waking waiters moves no payload: no bytes/s, where a write, a
    /// read and the kernel (which reads the matrix) count their payload.
    #[test]
    fn an_op_that_moves_no_payload_has_no_bytes_per_s() {
        use crate::measure::Measured;
        use crate::run::{JobResult, Side};
        let side = || Side {
            m: Measured {
                repeat_hz: vec![1000.0],
                ..Default::default()
            },
            hist: crate::hist::new(),
            placement: "solo@0".into(),
        };
        let bytes_per_s = |op: &str, shape: &str| {
            let job = crate::scenario::Scenario::parse(&format!(
                "name=\"x\"\n[[case]]\nkind=\"op\"\nop=\"{op}\"\nsizes=[{shape}]\n"
            ))
            .unwrap()
            .jobs(false, None)
            .remove(0);
            let r = JobResult {
                job,
                ours: Ok(side()),
                floor: Ok(side()),
                peer: Err("no peer".into()),
                skipped: None,
                ao: None,
            };
            Record::from_result(&r).bytes_per_s
        };
        assert_eq!(bytes_per_s("lock", "[1]"), None);
        assert_eq!(bytes_per_s("wake", "[1]"), None);
        assert_eq!(bytes_per_s("write", "[256]"), Some(1000.0 * 1024.0));
        assert_eq!(bytes_per_s("read", "[256]"), Some(1000.0 * 1024.0));
        assert_eq!(bytes_per_s("kernel", "[4, 8]"), Some(1000.0 * 128.0));
    }

    /// An MVM product writes and reads x and y once each (the matrix stays in place), and
    /// its row gives its GFLOP/s and the wait its driver ran with; an AO loop's frame,
    /// signals and commands are each written and read once a frame.
    #[test]
    fn an_mvm_and_an_ao_loop_count_each_vector_and_frame_written_and_read() {
        let mvm = crate::scenario::Scenario::parse(
            "name=\"x\"\n[[case]]\nkind=\"mvm\"\nsizes=[[4, 8]]\n",
        )
        .unwrap()
        .jobs(false, None)
        .remove(0);
        let ours = crate::run::Side {
            m: crate::measure::Measured {
                repeat_hz: vec![1000.0],
                notes: vec![("driver_wait".into(), "yield".into())],
                ..Default::default()
            },
            hist: crate::hist::new(),
            placement: "writer@0 compute@1".into(),
        };
        let r = crate::run::JobResult {
            job: mvm,
            ours: Ok(ours),
            floor: Err("not run".into()),
            peer: Err("not run".into()),
            skipped: None,
            ao: None,
        };
        // (4 + 8) float32s, written and read.
        assert_eq!(bytes_per_iteration(&r), Some(2.0 * 12.0 * 4.0));
        // 2 · 4 · 8 flops a product, 1000 products a second; the driver's wait as it ran.
        let rec = Record::from_result(&r);
        assert_eq!(rec.gflops, Some(2.0 * 32.0 * 1000.0 / 1e9));
        assert_eq!(rec.wait.as_deref(), Some("yield"));
        let ao = crate::report::targets::tests::ao(
            crate::report::targets::tests::PYRTC,
            [1; 3],
            Default::default(),
            Default::default(),
        );
        // 49 × 49 u16 pixels, 98 f32 slopes, 97 f32 commands, written and read.
        let frame = 49 * 49 * 2 + 98 * 4 + 97 * 4;
        assert_eq!(bytes_per_iteration(&ao), Some(2.0 * frame as f64));
    }

    /// A pingpong's Hz leaves its idle gaps out (pyshmem's convention); its bytes/s is what
    /// moved per second of wall time: here round trips busy half the time move half the
    /// bytes the busy rate would say. A GPU ping-pong moves its frame twice a round trip
    /// (echoed back whole), a CPU one once.
    #[test]
    fn a_pingpongs_bytes_per_s_counts_its_idle_gaps() {
        use crate::measure::Measured;
        use crate::run::{JobResult, Side};
        let record = |case: &str| {
            let job = crate::scenario::Scenario::parse(&format!(
                "name=\"x\"\n[[case]]\nkind=\"pingpong\"\nwait=\"park\"\nsizes=[[64]]\n{case}"
            ))
            .unwrap()
            .jobs(false, None)
            .remove(0);
            let side = Side {
                m: Measured {
                    repeat_hz: vec![500.0],
                    repeat_busy_hz: vec![1000.0],
                    ..Default::default()
                },
                hist: crate::hist::new(),
                placement: "writer@0 reader@1".into(),
            };
            Record::from_result(&JobResult {
                job,
                ours: Ok(side),
                floor: Err("no floor".into()),
                peer: Err("no peer".into()),
                skipped: None,
                ao: None,
            })
        };
        let rec = record("dtype=\"uint8\"\n");
        assert_eq!(rec.hz, Some(1000.0));
        assert_eq!(rec.bytes_per_s, Some(500.0 * 2.0 * 64.0));
        let gpu = record("device=\"cuda:0\"\ndtype=\"float32\"\n");
        assert_eq!(gpu.bytes_per_s, Some(500.0 * 4.0 * 256.0));
    }

    /// A floor timed in alternation in ours' processes is flagged from 1.05, one timed in
    /// processes of its own (bridge, GPU) from 1.10.
    #[test]
    fn the_floor_bound_slack_is_tighter_for_floors_timed_in_alternation() {
        let with = |kind: &str, device: &str, ratio: f64| Record {
            kind: kind.into(),
            device: device.into(),
            ..sample("x", Some(ratio))
        };
        assert!(with("mvm", "cpu", 1.076).floor_bound_note().is_some());
        assert!(with("op", "cpu", 1.06).floor_bound_note().is_some());
        assert!(with("mvm", "cpu", 1.04).floor_bound_note().is_none());
        assert!(with("bridge", "cpu", 1.076).floor_bound_note().is_none());
        assert!(with("mvm", "cuda:0", 1.076).floor_bound_note().is_none());
        assert!(with("bridge", "cpu", 1.11).floor_bound_note().is_some());
        // The slack itself is noise.
        assert!(with("op", "cpu", 1.05).floor_bound_note().is_none());
        assert!(with("bridge", "cpu", 1.10).floor_bound_note().is_none());
    }

    /// A bridge row whose frames/s beat its floor's beyond the slack is flagged; within it,
    /// or of another kind, it is not.
    #[test]
    fn a_bridge_rate_beyond_its_floors_is_flagged() {
        let with = |kind: &str, hz: f64, floor_hz: f64| Record {
            kind: kind.into(),
            hz: Some(hz),
            floor_hz: Some(floor_hz),
            ..sample("x", Some(0.7))
        };
        let note = with("bridge", 16_000.0, 12_000.0).rate_bound_note();
        assert!(note.is_some_and(|n| n.starts_with("frames/s ratio 1.33 > 1.10")));
        assert!(
            with("bridge", 16_000.0, 15_000.0)
                .rate_bound_note()
                .is_none()
        );
        assert!(
            with("pingpong", 16_000.0, 12_000.0)
                .rate_bound_note()
                .is_none()
        );
        // The slack itself is noise, and a floor without a rate gives no ratio.
        assert_eq!(with("bridge", 110.0, 100.0).rate_beyond_slack(), None);
        assert_eq!(with("bridge", 16_000.0, 0.0).rate_beyond_slack(), None);
    }

    #[test]
    fn csv_has_the_same_columns_and_empty_fields_for_null() {
        let mut buf = Vec::new();
        CsvWriter.write(&[sample("a", None)], &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), COLUMNS.join(","));
        let row = lines.next().unwrap();
        assert!(
            row.starts_with("a,roundtrip,100x100,float32,cpu,,,,1000,80000000,,900,"),
            "{row}"
        );
        assert!(row.ends_with(",,,,,,,,,,,,,,,"), "{row}");
    }
}

//! `report.md`: the seed's three tables with our numbers beside the published ones, the
//! latency table, every result with its extended columns, the targets, the environment.

use std::fmt::Write as _;

use crate::error::Result;
use crate::peer::PeerSetup;
use crate::report::record::Record;
use crate::report::targets::Target;
use crate::report::{ReportInput, SUPPORT_NOTE, fmt_hz, fmt_opt, human_bytes, us, us_at};
use crate::run::{JobResult, Side};
use crate::scenario::{Job, Kind, Pipeline};

/// The seed's published numbers (pyshmem 1.0.4 README, RTX 5090 host), by n.
struct SeedIo {
    n: usize,
    cpu_hz: f64,
    cpu_gbs: f64,
    gpu_hz: f64,
    gpu_gbs: f64,
}
const SEED_IO: [SeedIo; 3] = [
    SeedIo {
        n: 100,
        cpu_hz: 180_311.0,
        cpu_gbs: 14.42,
        gpu_hz: 36_214.0,
        gpu_gbs: 2.90,
    },
    SeedIo {
        n: 1000,
        cpu_hz: 9_922.0,
        cpu_gbs: 79.38,
        gpu_hz: 5_027.0,
        gpu_gbs: 40.22,
    },
    SeedIo {
        n: 10000,
        cpu_hz: 20.0,
        cpu_gbs: 16.29,
        gpu_hz: 50.0,
        gpu_gbs: 39.97,
    },
];
struct SeedMvm {
    n: usize,
    cpu_hz: f64,
    cpu_gf: f64,
    gpu_hz: f64,
    gpu_gf: f64,
    dev_hz: f64,
    dev_gf: f64,
}
const SEED_MVM: [SeedMvm; 3] = [
    SeedMvm {
        n: 100,
        cpu_hz: 109_844.0,
        cpu_gf: 2.20,
        gpu_hz: 26_466.0,
        gpu_gf: 0.53,
        dev_hz: 30_241.0,
        dev_gf: 0.60,
    },
    SeedMvm {
        n: 1000,
        cpu_hz: 11_125.0,
        cpu_gf: 22.25,
        gpu_hz: 22_485.0,
        gpu_gf: 44.97,
        dev_hz: 26_734.0,
        dev_gf: 53.47,
    },
    SeedMvm {
        n: 10000,
        cpu_hz: 26.0,
        cpu_gf: 5.24,
        gpu_hz: 1_299.0,
        gpu_gf: 259.86,
        dev_hz: 1_322.0,
        dev_gf: 264.33,
    },
];

fn square(r: &JobResult) -> Option<usize> {
    match r.job.shape.as_slice() {
        [a, b] if a == b => Some(*a),
        _ => None,
    }
}

/// Whether `job` is the GPU variant a seed table's GPU column shows: the seed's `pipeline`
/// (device buffers for IO and the device-resident table, host slices for the host-upload
/// table) without the CPU mirror, as pyshmem 1.0.4's GPU streams ran. A scenario may list
/// several GPU variants of a shape (scenarios/io.toml lists four); the others are in "All
/// results".
fn is_seed_gpu_variant(job: &Job, pipeline: Pipeline) -> bool {
    job.device.is_gpu() && job.pipeline == Some(pipeline) && job.mirror == Some(false)
}

fn side_hz(s: &Result<Side, String>, kind: Kind) -> Option<f64> {
    s.as_ref().ok().map(|s| s.hz(kind))
}

fn gbs(hz: Option<f64>, bytes: f64) -> String {
    hz.map_or("—".into(), |h| format!("{:.2}", h * bytes / 1e9))
}

fn why(s: &Result<Side, String>) -> String {
    match s {
        Ok(_) => String::new(),
        Err(e) => e.lines().next().unwrap_or("").to_string(),
    }
}

/// Renders the report.
pub fn render(input: &ReportInput<'_>, records: &[Record], targets: &[Target]) -> Result<String> {
    let mut o = String::new();
    let env = input.env;
    writeln!(
        o,
        "# shmstream benchmark report: `{}`{}\n",
        input.scenario.name,
        if super::env::unoptimized() {
            format!(" — {}", super::env::UNOPTIMIZED_WARNING)
        } else {
            String::new()
        }
    )?;
    if let Some(d) = &input.scenario.description {
        writeln!(o, "{}\n", d.trim())?;
    }
    writeln!(
        o,
        "Generated {} by `{}` in {:.0} s{}.\n",
        env.started_utc,
        input.command_line,
        input.elapsed_s,
        if input.quick {
            " (**--quick**: timings divided by 5, one repeat)"
        } else {
            ""
        }
    )?;

    // Environment.
    writeln!(o, "## Environment\n\n| | |\n|---|---|")?;
    let mut pin = format!(
        "writer/in-process cases on cpu {}, reader/compute on cpu {} (sched_setaffinity per child; observed cores in the per-case table)",
        input.scenario.defaults.writer_cpu, input.scenario.defaults.reader_cpu
    );
    for w in input.scenario.core_warnings() {
        pin.push_str(&format!("; **{w}**"));
    }
    let peer = match input.peer {
        PeerSetup::Ready {
            python,
            pyshmem,
            numpy,
        } => format!("pyshmem {pyshmem}, numpy {numpy} ({})", python.display()),
        PeerSetup::Missing(why) => format!("not available: {why}"),
    };
    for (k, v) in [
        (
            "CPU",
            format!(
                "{} ({} cores; {})",
                env.cpu_model, env.cores, env.cpu_features
            ),
        ),
        ("Kernel", env.kernel.clone()),
        ("Load average at start", env.loadavg.clone()),
        (
            "Compiler / profile",
            format!("{} / {}", env.rustc, env.profile),
        ),
        (
            "shmstream",
            format!("{} (git {})", env.shmstream_version, env.git_commit),
        ),
        ("GPU / driver", env.gpu.clone()),
        ("Pinning", pin),
        (
            "MVM kernel",
            format!("{} (runtime dispatch), rayon row-parallel", env.mvm_kernel),
        ),
        ("Python peer", peer),
        (
            "Histogram recording",
            format!(
                "{:.1} ns/sample (hdrhistogram `record`, {} samples); `Instant::now()` {:.1} ns",
                input.record_cost.record_ns, input.record_cost.samples, input.record_cost.clock_ns
            ),
        ),
        ("Host noise", input.noise.line()),
    ] {
        writeln!(o, "| {k} | {} |", v.replace('|', "\\|"))?;
    }
    writeln!(o)?;

    // Targets.
    writeln!(
        o,
        "## Targets on this machine\n\n| target | measured | limit | result |\n|---|---|---|---|"
    )?;
    for t in targets {
        let res = match t.pass {
            Some(true) => "**pass**",
            Some(false) => "**FAIL**",
            None => "n/a",
        };
        writeln!(o, "| {} | {} | {} | {res} |", t.name, t.measured, t.limit)?;
    }
    writeln!(o)?;

    let results = input.results;
    o.push_str(&super::ao::section(results, input.noise)?);
    // Seed table 1: IO vs image size.
    let io: Vec<&JobResult> = results
        .iter()
        .filter(|r| r.job.kind == Kind::Roundtrip && r.job.dtype == "float32")
        .collect();
    if !io.is_empty() {
        writeln!(
            o,
            "## IO vs image size (the seed's table, float32 write + read in one process)\n"
        )?;
        writeln!(
            o,
            "Seed: pyshmem 1.0.4 README (RTX 5090 host). Ours: this run. GB/s counts write + read bytes. \
             Floor: a bare publish then snapshot, each through mappings of its own, on the stream's own payload pages and the same buffers, \
             timed in alternation with ours in {} ms slices by the same process on the same core: \
             the `flock` pair, the odd/even sequence, the copy in, the write time and count; then the sequence, the copy out, the re-check \
             (what the format makes every implementation do). Ratio to floor = floor median iteration time / ours. \
             GPU: device buffers without the CPU mirror (`pipeline = \"device-resident\"`, `mirror = false`), the seed's GPU variant; \
             the other GPU variants are in \"All results\". {SUPPORT_NOTE}\n",
            crate::measure::PAIR_SLICE.as_millis()
        )?;
        writeln!(
            o,
            "| Image size | Payload (MiB) | seed CPU Hz | seed CPU GB/s | **CPU Hz** | **CPU GB/s** | floor Hz | ratio to floor | pyshmem 1.4.0 Hz | n | p50 µs | p99 µs | seed GPU Hz | seed GPU GB/s | GPU Hz | GPU GB/s |"
        )?;
        writeln!(
            o,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        )?;
        let mut sizes: Vec<Vec<usize>> = io.iter().map(|r| r.job.shape.clone()).collect();
        sizes.sort_by_key(|s| s.iter().product::<usize>());
        sizes.dedup();
        for shape in sizes {
            let cpu = io
                .iter()
                .find(|r| r.job.shape == shape && !r.job.device.is_gpu());
            let gpu = io.iter().find(|r| {
                r.job.shape == shape && is_seed_gpu_variant(&r.job, Pipeline::DeviceResident)
            });
            let bytes = shape.iter().product::<usize>() as f64 * 4.0;
            let seed = match shape.as_slice() {
                [a, b] if a == b => SEED_IO.iter().find(|s| s.n == *a),
                _ => None,
            };
            let (ours_hz, floor_hz, peer_hz, p) = match cpu {
                Some(r) => (
                    side_hz(&r.ours, Kind::Roundtrip),
                    side_hz(&r.floor, Kind::Roundtrip),
                    side_hz(&r.peer, Kind::Roundtrip),
                    r.ours.as_ref().ok().map(|s| s.pct()),
                ),
                None => (None, None, None, None),
            };
            let gpu_cell = match gpu {
                Some(r) if r.skipped.is_some() => ("skipped".to_string(), "—".to_string()),
                Some(r) => (
                    fmt_opt(side_hz(&r.ours, Kind::Roundtrip), fmt_hz),
                    gbs(side_hz(&r.ours, Kind::Roundtrip), 2.0 * bytes),
                ),
                None => ("not run".into(), "—".into()),
            };
            writeln!(
                o,
                "| {} | {:.3} | {} | {} | **{}** | **{}** | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("×"),
                bytes / 1048576.0,
                seed.map_or("—".into(), |s| fmt_hz(s.cpu_hz)),
                seed.map_or("—".into(), |s| format!("{:.2}", s.cpu_gbs)),
                fmt_opt(ours_hz, fmt_hz),
                gbs(ours_hz, 2.0 * bytes),
                fmt_opt(floor_hz, fmt_hz),
                cpu.and_then(|r| r.ratio_to_floor())
                    .map_or("—".into(), |v| format!("{v:.2}")),
                fmt_opt(peer_hz, fmt_hz),
                p.map_or("—".into(), |p| p.count.to_string()),
                p.map_or("—".into(), |p| us_at(p.p50, 0.5, p.count)),
                p.map_or("—".into(), |p| us_at(p.p99, 0.99, p.count)),
                seed.map_or("—".into(), |s| fmt_hz(s.gpu_hz)),
                seed.map_or("—".into(), |s| format!("{:.2}", s.gpu_gbs)),
                gpu_cell.0,
                gpu_cell.1,
            )?;
        }
        writeln!(o)?;
    }

    // Seed tables 2 and 3: MVM.
    let mvm: Vec<&JobResult> = results.iter().filter(|r| r.job.kind == Kind::Mvm).collect();
    if !mvm.is_empty() {
        writeln!(
            o,
            "## Shared-memory MVM pipeline, host-upload (the seed's table)\n"
        )?;
        writeln!(
            o,
            "Ours: the driver process publishes x, the compute process (matrix read once from its stream) publishes y = A·x, \
             the driver waits for y; GFLOP/s = 2n² × Hz. Kernel: the same kernel alone on plain memory (the floor). \
             numpy: `np.dot(A, x, out=y)` alone (OpenBLAS sgemv) and the same pipeline with pyshmem 1.4.0. \
             GPU: host-upload without the CPU mirror (`mirror = false`), the seed's GPU variant; the others are in \"All results\". {SUPPORT_NOTE}\n"
        )?;
        writeln!(
            o,
            "| Matrix size | Matrix (MiB) | seed CPU Hz | seed CPU GFLOP/s | **CPU Hz** | **CPU GFLOP/s** | kernel GFLOP/s | ratio to kernel | numpy sgemv GFLOP/s | pyshmem+numpy Hz | n | p50 µs | p99 µs | seed GPU Hz | seed GPU GFLOP/s | GPU Hz | GPU GFLOP/s |"
        )?;
        writeln!(
            o,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        )?;
        let host: Vec<&&JobResult> = mvm
            .iter()
            .filter(|r| {
                !matches!(
                    r.job.pipeline,
                    Some(Pipeline::DeviceResident | Pipeline::GpuConsumer)
                )
            })
            .collect();
        let mut ns: Vec<usize> = host.iter().filter_map(|r| square(r)).collect();
        ns.sort_unstable();
        ns.dedup();
        for n in &ns {
            let cpu = host
                .iter()
                .find(|r| square(r) == Some(*n) && !r.job.device.is_gpu());
            let gpu = host.iter().find(|r| {
                square(r) == Some(*n) && is_seed_gpu_variant(&r.job, Pipeline::HostUpload)
            });
            let seed = SEED_MVM.iter().find(|s| s.n == *n);
            let flops = 2.0 * (*n * *n) as f64;
            let gf = |h: Option<f64>| h.map_or("—".into(), |h| format!("{:.2}", h * flops / 1e9));
            let (ours_hz, kern_hz, numpy_gf, peer_hz, p) = match cpu {
                Some(r) => (
                    side_hz(&r.ours, Kind::Mvm),
                    side_hz(&r.floor, Kind::Mvm),
                    r.peer
                        .as_ref()
                        .ok()
                        .and_then(|p| p.note("kernel_gflops"))
                        .and_then(|v| v.parse::<f64>().ok()),
                    side_hz(&r.peer, Kind::Mvm),
                    r.ours.as_ref().ok().map(|s| s.pct()),
                ),
                None => (None, None, None, None, None),
            };
            let gpu_cells = match gpu {
                Some(r) if r.skipped.is_some() => ("skipped".to_string(), "—".to_string()),
                Some(r) => (
                    fmt_opt(side_hz(&r.ours, Kind::Mvm), fmt_hz),
                    gf(side_hz(&r.ours, Kind::Mvm)),
                ),
                None => ("not run".into(), "—".into()),
            };
            writeln!(
                o,
                "| {n}×{n} | {:.3} | {} | {} | **{}** | **{}** | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                flops * 2.0 / 1048576.0,
                seed.map_or("—".into(), |s| fmt_hz(s.cpu_hz)),
                seed.map_or("—".into(), |s| format!("{:.2}", s.cpu_gf)),
                fmt_opt(ours_hz, fmt_hz),
                gf(ours_hz),
                gf(kern_hz),
                cpu.and_then(|r| r.ratio_to_floor())
                    .map_or("—".into(), |v| format!("{v:.2}")),
                numpy_gf.map_or("—".into(), |v| format!("{v:.2}")),
                fmt_opt(peer_hz, fmt_hz),
                p.map_or("—".into(), |p| p.count.to_string()),
                p.map_or("—".into(), |p| us_at(p.p50, 0.5, p.count)),
                p.map_or("—".into(), |p| us_at(p.p99, 0.99, p.count)),
                seed.map_or("—".into(), |s| fmt_hz(s.gpu_hz)),
                seed.map_or("—".into(), |s| format!("{:.2}", s.gpu_gf)),
                gpu_cells.0,
                gpu_cells.1,
            )?;
        }
        writeln!(o)?;
        let blas: Vec<String> = mvm
            .iter()
            .filter_map(|r| r.peer.as_ref().ok())
            .filter_map(|p| {
                Some(format!(
                    "{} kernel {} ({} threads), OPENBLAS_* {}",
                    p.note("blas")?,
                    p.note("blas_kernel").unwrap_or("?"),
                    p.note("blas_threads").unwrap_or("?"),
                    p.note("openblas_env").unwrap_or("?")
                ))
            })
            .collect();
        if let Some(b) = blas.first() {
            writeln!(o, "numpy BLAS in the peer: {b}.\n")?;
        }

        writeln!(
            o,
            "## Fully device-resident GPU pipeline (the seed's table)\n"
        )?;
        writeln!(
            o,
            "| Matrix size | Matrix (MiB) | seed GPU Hz | seed GPU GFLOP/s | GPU Hz | GPU GFLOP/s |\n|---|---|---|---|---|---|"
        )?;
        let dev: Vec<&&JobResult> = mvm
            .iter()
            .filter(|r| is_seed_gpu_variant(&r.job, Pipeline::DeviceResident))
            .collect();
        for s in &SEED_MVM {
            let r = dev.iter().find(|r| square(r) == Some(s.n));
            let flops = 2.0 * (s.n * s.n) as f64;
            let (hz, g) = match r {
                Some(r) if r.skipped.is_some() => ("skipped".into(), "—".into()),
                Some(r) => {
                    let h = side_hz(&r.ours, Kind::Mvm);
                    (
                        fmt_opt(h, fmt_hz),
                        h.map_or("—".into(), |h| format!("{:.2}", h * flops / 1e9)),
                    )
                }
                None => ("not run".to_string(), "—".to_string()),
            };
            writeln!(
                o,
                "| {0}×{0} | {1:.3} | {2} | {3:.2} | {hz} | {g} |",
                s.n,
                flops * 2.0 / 1048576.0,
                fmt_hz(s.dev_hz),
                s.dev_gf
            )?;
        }
        writeln!(o)?;
    }

    // Latency table.
    let pp: Vec<&JobResult> = results
        .iter()
        .filter(|r| r.job.kind == Kind::Pingpong)
        .collect();
    if !pp.is_empty() {
        writeln!(
            o,
            "## Cross-process pingpong latency (round trip, pinned)\n"
        )?;
        writeln!(
            o,
            "Writer publishes (flock pair + seqlock + copy), reader waits, copies a safe snapshot out and acknowledges; \
             the writer times the round trip. Floor: the same protocol on a bare shared-memory word with the flock pair \
             (`FloorPing` / `FloorEcho`, a port of the C `pingpong_payload`), waiting by the same mechanism as ours: spinning (`spin`), \
             spinning the library's budget then sleeping in FUTEX_WAIT (`adaptive`), or both sides asleep in FUTEX_WAIT at once (`park`); \
             on the CPU it runs in ours' two processes, in {ping} ms slices alternating with ours. \
             Hz = median over repeats of round trips / Σ latency (pyshmem's convention; idle gaps do not count). \
             GPU rows (`cuda`): the reader echoes the whole frame back on a second GPU stream; their floor is the same four copies \
             with raw CUDA memcpy on plain device memory, in one process. n: round trips timed (ours / floor / pyshmem), \
             each side's percentiles from its own. {SUPPORT_NOTE}\n",
            ping = crate::cases::pingpong::PING_SLICE.as_millis(),
        )?;
        writeln!(
            o,
            "| case | payload | Hz | n | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | floor p50 µs | floor p99 µs | p50 / floor | pyshmem p50 µs | pyshmem p99 µs |"
        )?;
        writeln!(
            o,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        )?;
        for r in &pp {
            let p = r.ours.as_ref().ok().map(|s| s.pct());
            let f = r.floor.as_ref().ok().map(|s| s.pct());
            let q = r.peer.as_ref().ok().map(|s| s.pct());
            writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.job.case,
                human_bytes(r.job.payload_bytes()),
                fmt_opt(side_hz(&r.ours, Kind::Pingpong), fmt_hz),
                [p, f, q]
                    .map(|s| s.map_or("—".into(), |s| s.count.to_string()))
                    .join(" / "),
                p.map_or(why(&r.ours), |p| us_at(p.p50, 0.5, p.count)),
                p.map_or("—".into(), |p| us_at(p.p90, 0.9, p.count)),
                p.map_or("—".into(), |p| us_at(p.p99, 0.99, p.count)),
                p.map_or("—".into(), |p| us_at(p.p999, 0.999, p.count)),
                p.map_or("—".into(), |p| us(p.max)),
                f.map_or(why(&r.floor), |p| us_at(p.p50, 0.5, p.count)),
                f.map_or("—".into(), |p| us_at(p.p99, 0.99, p.count)),
                match (p, f) {
                    (Some(p), Some(f)) if f.p50 > 0 =>
                        format!("{:.2}", p.p50 as f64 / f.p50 as f64),
                    _ => "—".into(),
                },
                q.map_or("—".into(), |p| us_at(p.p50, 0.5, p.count)),
                q.map_or("—".into(), |p| us_at(p.p99, 0.99, p.count)),
            )?;
        }
        writeln!(o)?;
    }

    // Everything.
    writeln!(
        o,
        "## All results\n\nFloor Hz: the floor's iterations per second, except on ao-loop rows, where it \
         is 1 / the composed floor's mean latency, not a rate (Hz there is the DM frame rate \
         achieved, at most the camera's): compare them through the ratio (median latencies). \
         bytes/s: write + read bytes per second of wall time, so a pingpong's idle gaps count there though not in its Hz. \
         {SUPPORT_NOTE}\n"
    )?;
    writeln!(
        o,
        "| case | shape | dtype | device | wait | Hz | bytes/s | GFLOP/s | n | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | floor Hz | ratio | peer Hz | placement (ours) |"
    )?;
    writeln!(
        o,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for (rec, r) in records.iter().zip(results) {
        let n = rec.samples.unwrap_or(0);
        let ns = |v: Option<u64>, q: f64| v.map_or("—".into(), |v| us_at(v, q, n));
        writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            rec.case,
            crate::scenario::shape_str(&rec.shape),
            rec.dtype,
            rec.device,
            rec.wait.as_deref().unwrap_or("—"),
            fmt_opt(rec.hz, fmt_hz),
            rec.bytes_per_s
                .map_or("—".into(), |b| format!("{:.2} GB/s", b / 1e9)),
            rec.gflops.map_or("—".into(), |g| format!("{g:.2}")),
            rec.samples.map_or("—".into(), |n| n.to_string()),
            ns(rec.p50_ns, 0.5),
            ns(rec.p90_ns, 0.9),
            ns(rec.p99_ns, 0.99),
            ns(rec.p999_ns, 0.999),
            ns(rec.max_ns, 1.0),
            fmt_opt(rec.floor_hz, fmt_hz),
            rec.ratio_to_floor.map_or("—".into(), |v| format!("{v:.3}")),
            fmt_opt(rec.peer_hz, fmt_hz),
            r.ours
                .as_ref()
                .map_or_else(|_| "—".to_string(), |s| s.placement.clone()),
        )?;
    }
    writeln!(o)?;

    // A floor must bound what it is compared with.
    let unbounded: Vec<String> = records
        .iter()
        .zip(results)
        .filter_map(|(rec, r)| {
            Some(format!(
                "- `{}`: {}",
                r.job.label(),
                rec.floor_bound_note()?
            ))
        })
        .collect();
    if !unbounded.is_empty() {
        writeln!(o, "## Floors that may not bound their case\n")?;
        writeln!(o, "{}\n", unbounded.join("\n"))?;
    }

    // Skipped / failed / empty columns.
    let mut notes = Vec::new();
    for r in results {
        let label = r.job.label();
        if let Some(s) = &r.skipped {
            notes.push(format!("- `{label}` skipped: {s}"));
            continue;
        }
        for (side, v) in [("ours", &r.ours), ("floor", &r.floor), ("peer", &r.peer)] {
            if let Err(e) = v {
                // First line (what failed) and the last lines (the child's final message).
                let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
                let first = if lines.len() <= 4 {
                    lines.join(" / ")
                } else {
                    format!(
                        "{} / … / {}",
                        lines[0],
                        lines[lines.len() - 3..].join(" / ")
                    )
                };
                notes.push(format!("- `{label}` {side}: {first}"));
            }
        }
    }
    if !notes.is_empty() {
        writeln!(o, "## Skipped, failed and empty columns\n")?;
        let mut seen = std::collections::HashSet::new();
        for n in notes {
            if seen.insert(n.clone()) {
                writeln!(o, "{n}")?;
            }
        }
        writeln!(o)?;
    }

    writeln!(o, "## Files\n")?;
    writeln!(
        o,
        "- `results.json`, `results.csv`: one record per case × size × device (null / empty where not applicable).\n\
         - `details.json`: everything above plus per-repeat rates, floor and peer percentiles, notes.\n\
         - `hgrm/*.hgrm`: latency percentile distributions (µs) of ours, floor and peer per case and size.\n\
         - `plots/*.png`, `plots/*.svg`: throughput vs payload size (log-log) and latency percentile curves.\n"
    )?;
    writeln!(o, "## Method\n")?;
    writeln!(
        o,
        "- Each case runs in processes of its own (the harness re-executes itself), pinned with `sched_setaffinity`; \
         writer and in-process cases on the writer core, reader / compute on the reader core; the CPU roundtrip's, ops', ping-pong's and MVM's floors run in the same processes.\n\
         - Warm-up, then repeats of at least `min_seconds`; Hz is the median over repeats (pingpong: round trips / Σ latency per repeat). \
         One latency sample per iteration (two `Instant::now()` around the step; the record outside the timing).\n\
         - Floors run the same loop shape without the library in the same run (in those four CPU kinds a floor's frames are copied into and out of the stream's own payload pages, and each floor alternates with ours, since the host's share of cache, \
         bandwidth and wake-ups drifts over seconds: in ours' own processes, in slices of {pair} ms (the roundtrip and the ops), {ping} ms (the ping-pong) and {mvm} ms (the MVM kernel)); `ratio_to_floor` = the floor's median \
         iteration time / ours (medians keep a few preempted iterations on a shared machine from deciding it). \
         Ratios, not absolute times, are compared across runs (`harness compare`).\n\
         - The pingpong reader and the MVM compute process hold the write lock of their reply stream for the run \
         (each is its only writer), so a reply is a seqlock publish without the flock pair, and so does the MVM driver for x \
         (a controller owns its streams); the roundtrip and pingpong data writes take the flock pair every time, as their floors do.",
        pair = crate::measure::PAIR_SLICE.as_millis(),
        ping = crate::cases::pingpong::PING_SLICE.as_millis(),
        mvm = crate::cases::mvm::MVM_SLICE.as_millis(),
    )?;
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    /// A scenario may list several GPU variants of a shape (io.toml lists four): each seed
    /// table's GPU column takes the seed's, device buffers (IO) or host slices (MVM) without
    /// the mirror, however they are ordered; here it is listed last.
    #[test]
    fn the_seed_gpu_columns_take_the_seeds_variant_whatever_the_order() {
        let mut text = String::from("name=\"x\"\n");
        for kind in ["roundtrip", "mvm"] {
            for (pipeline, mirror) in [
                ("host-upload", true),
                ("device-resident", true),
                ("host-upload", false),
                ("device-resident", false),
            ] {
                text.push_str(&format!(
                    "[[case]]\nkind=\"{kind}\"\ndevice=\"cuda:0\"\npipeline=\"{pipeline}\"\n\
                     mirror={mirror}\nsizes=[[100, 100]]\n"
                ));
            }
        }
        let jobs = Scenario::parse(&text).unwrap().jobs(false, None);
        for (kind, pipeline) in [
            (Kind::Roundtrip, Pipeline::DeviceResident),
            (Kind::Mvm, Pipeline::HostUpload),
            (Kind::Mvm, Pipeline::DeviceResident),
        ] {
            let seed: Vec<(Option<Pipeline>, Option<bool>)> = jobs
                .iter()
                .filter(|j| j.kind == kind && is_seed_gpu_variant(j, pipeline))
                .map(|j| (j.pipeline, j.mirror))
                .collect();
            assert_eq!(seed, [(Some(pipeline), Some(false))], "{kind:?}");
        }
    }
}

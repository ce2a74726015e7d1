//! Latency histograms: creation, (de)serialization for the child → parent hand-off,
//! percentile summaries, `.hgrm` files, and the measured cost of recording.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Result};

/// Highest recordable latency: 60 s in ns.
const MAX_NS: u64 = 60_000_000_000;

/// A new latency histogram: 1 ns .. 60 s, 3 significant digits.
pub fn new() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("static histogram bounds are valid")
}

/// Serializes with the V2 format (what the children send back).
pub fn to_bytes(h: &Histogram<u64>) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    V2Serializer::new().serialize(h, &mut buf)?;
    Ok(buf)
}

/// Reverse of [`to_bytes`].
pub fn from_bytes(bytes: &[u8]) -> Result<Histogram<u64>> {
    Ok(Deserializer::new().deserialize(&mut &bytes[..])?)
}

/// The percentiles the reports show, in ns.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
    /// Smallest sample.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Number of samples.
    pub count: u64,
}

/// Samples that must lie beyond a percentile for a report table to show it: with fewer,
/// the percentile is one of the few largest samples (with n = 300, p99.9 is the maximum),
/// not an estimate of the tail.
pub const MIN_BEYOND: u64 = 10;

/// The fewest samples that support percentile `q` (0 < q < 1): n ≥ [`MIN_BEYOND`] / (1 − q),
/// so 20 for p50, 100 for p90, 1000 for p99, 10 000 for p99.9. The maximum (q = 1) is an
/// observation, not an estimate: one sample supports it.
pub fn min_samples(q: f64) -> u64 {
    if q >= 1.0 {
        return 1;
    }
    // The small margin keeps 10 / (1 − 0.9) = 100.000…01 (floating point) at 100.
    (MIN_BEYOND as f64 / (1.0 - q.max(0.0)) - 1e-6).ceil() as u64
}

/// Whether `n` samples support percentile `q` ([`min_samples`]).
pub fn supports(n: u64, q: f64) -> bool {
    n >= min_samples(q)
}

impl Percentiles {
    /// Summarizes `h` (all zeros when empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            min: h.min(),
            mean: h.mean(),
            count: h.len(),
        }
    }
}

/// Writes the percentile distribution in the `.hgrm` text format of HdrHistogram's
/// `outputPercentileDistribution` (values in µs, 5 ticks per half-distance).
pub fn write_hgrm(h: &Histogram<u64>, path: &Path) -> Result<()> {
    let mut out = String::new();
    use std::fmt::Write as _;
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let scale = 1000.0; // ns -> us
    if !h.is_empty() {
        // TotalCount is the running total up to the value, as HdrHistogram prints it.
        let mut total = 0u64;
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let inv = if q < 1.0 {
                format!("{:14.2}", 1.0 / (1.0 - q))
            } else {
                format!("{:>14}", "")
            };
            writeln!(
                out,
                "{:12.3} {:2.12} {:10} {inv}",
                v.value_iterated_to() as f64 / scale,
                q,
                total
            )?;
        }
        writeln!(
            out,
            "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n#[Buckets = {:12}, SubBuckets     = {:12}]",
            h.mean() / scale,
            h.stdev() / scale,
            h.max() as f64 / scale,
            h.len(),
            h.buckets(),
            sub_buckets(h)
        )?;
    }
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(out.as_bytes())?;
    Ok(())
}

/// Sub-buckets per bucket, as HdrHistogram's `.hgrm` footer prints them: the power of two
/// that gives unit resolution up to 2·10^sigfig (2048 at 3 significant digits).
fn sub_buckets(h: &Histogram<u64>) -> u32 {
    (2 * 10u32.pow(u32::from(h.sigfig()))).next_power_of_two()
}

/// Measured cost of one `record` call (ns/sample), and of one `Instant::now()` for scale.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RecordCost {
    /// ns per `Histogram::record` of a typical latency value.
    pub record_ns: f64,
    /// ns per `Instant::now()` (two per sample in the measuring loops).
    pub clock_ns: f64,
    /// Samples recorded.
    pub samples: u64,
}

/// Measures the recording cost with `samples` values spread over 0.3 µs .. 3 ms (the
/// range the cases produce), against a loop that only sums the same values.
pub fn measure_record_cost(samples: u64) -> RecordCost {
    let mut h = new();
    // A cheap deterministic spread of values (xorshift), precomputed outside the timing.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let values: Vec<u64> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            300 + (x % 3_000_000) / (1 + (x >> 60))
        })
        .collect();
    let t0 = Instant::now();
    let mut sink = 0u64;
    for i in 0..samples {
        sink = sink.wrapping_add(std::hint::black_box(values[(i & 4095) as usize]));
    }
    let base = t0.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    let t1 = Instant::now();
    for i in 0..samples {
        h.saturating_record(std::hint::black_box(values[(i & 4095) as usize]));
    }
    let rec = t1.elapsed().as_secs_f64();
    std::hint::black_box(&h);
    let n_clock = 1_000_000u32;
    let t2 = Instant::now();
    for _ in 0..n_clock {
        std::hint::black_box(Instant::now());
    }
    let clock = t2.elapsed().as_secs_f64();
    RecordCost {
        record_ns: ((rec - base).max(0.0)) * 1e9 / samples as f64,
        clock_ns: clock * 1e9 / f64::from(n_clock),
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A percentile needs ten samples beyond it: 1000 frames support p99, 999 do not (its
    /// p99 would rest on the 9 largest); p99.9 needs 10 000; the maximum needs one sample.
    #[test]
    fn a_percentile_needs_ten_samples_beyond_it() {
        assert_eq!(
            [0.5, 0.9, 0.99, 0.999].map(min_samples),
            [20, 100, 1000, 10_000]
        );
        assert!(supports(1000, 0.99) && !supports(999, 0.99));
        assert!(supports(100, 0.9) && !supports(99, 0.9));
        assert!(!supports(500, 0.99), "harness size --rate 100 --seconds 5");
        assert!(!supports(300, 0.999) && supports(300, 0.5));
        assert!(supports(1, 1.0) && !supports(0, 1.0));
    }

    #[test]
    fn a_histogram_survives_the_v2_round_trip() {
        let mut sut = new();
        for v in [100, 200, 300, 1_000_000] {
            sut.record(v).unwrap();
        }
        let back = from_bytes(&to_bytes(&sut).unwrap()).unwrap();
        assert_eq!(back, sut);
        let p = Percentiles::of(&back);
        assert_eq!(p.count, 4);
        assert!(p.max >= 1_000_000 && p.p50 >= 199 && p.p50 <= 201);
    }

    #[test]
    fn an_hgrm_file_lists_percentiles_in_microseconds() {
        let mut h = new();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let dir = std::env::temp_dir().join(format!("hgrm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.hgrm");
        write_hgrm(&h, &p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("       Value     Percentile"));
        assert!(text.contains("Total count    =         1000"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
        // The largest sample, 1e6 ns, reads as ~1000 µs (HdrHistogram's highest equivalent
        // value at 3 significant digits), in the footer and on the last value line.
        let max: f64 = text
            .split("#[Max     =")
            .nth(1)
            .and_then(|t| t.split(',').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no Max in the footer: {text}"));
        let last: f64 = text
            .lines()
            .rfind(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no value line: {text}"));
        for v in [max, last] {
            assert!(
                (1000.0..1001.0).contains(&v),
                "{v} is not 1e6 ns in µs: {text}"
            );
        }
        // Each value line but the last gives 1/(1-Percentile); the last (percentile 1) leaves
        // that column empty, as HdrHistogram does.
        let lines: Vec<Vec<f64>> = text
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
            .collect();
        let (last, rest) = lines.split_last().unwrap();
        assert_eq!((last.len(), last[1]), (3, 1.0), "{text}");
        for l in rest {
            assert_eq!(l.len(), 4, "{text}");
            assert!((l[3] - 1.0 / (1.0 - l[1])).abs() <= 0.01 * l[3], "{l:?}");
        }
    }

    /// The footer's SubBuckets is the sub-bucket count HdrHistogram prints (2048 at 3
    /// significant digits, 256 at 2), not the number of counts the histogram holds.
    #[test]
    fn an_hgrm_files_sub_buckets_are_those_of_one_bucket() {
        let mut h = new();
        h.record(1000).unwrap();
        let dir = std::env::temp_dir().join(format!("hgrm-sub-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.hgrm");
        write_hgrm(&h, &p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
        let two = Histogram::<u64>::new_with_bounds(1, MAX_NS, 2).unwrap();
        assert_eq!(sub_buckets(&two), 256);
    }

    /// The TotalCount column is the running total up to each value, as HdrHistogram's
    /// `outputPercentileDistribution` prints it: never decreasing, every sample at the end.
    #[test]
    fn an_hgrm_files_total_count_column_is_the_running_total() {
        let mut h = new();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let dir = std::env::temp_dir().join(format!("hgrm-total-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.hgrm");
        write_hgrm(&h, &p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let totals: Vec<u64> = text
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with('#'))
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
            .collect();
        assert!(totals.len() > 10, "{text}");
        assert!(totals.windows(2).all(|w| w[0] <= w[1]), "{totals:?}");
        assert_eq!(totals.last(), Some(&1000), "{text}");
    }
}

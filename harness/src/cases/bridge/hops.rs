//! Where a bridge frame's latency goes, split at the mirror's write time at B (stamped once
//! the subscribing bridge has filled the mirror's payload): the way there from the frame's
//! write at A (the source's publication and history append, the publishing bridge's wake-up,
//! read and put, Zenoh, the subscribing bridge's callback and fill), and on to the reader
//! getting the frame (the mirror's history append, which its cursor reads, and its
//! wake-up). Zenoh's floor, timed to its subscriber's callback, compares with the first.
//!
//! Both parts are timed on `CLOCK_REALTIME`, the clock of the library's write times (UNIX
//! seconds, an `f64`: steps of about 0.24 µs): the writer notes when it called the write,
//! the reader the mirror's write time of each frame and when it got it. The whole latency
//! stays on the monotonic clock.

use hdrhistogram::Histogram;

use crate::error::{Context, Result};
use crate::hist;
use crate::report::p50_p99;

/// The two parts of our latency frames' way, in ns.
pub(super) struct Hops {
    /// Write called at A → the mirror's write time at B.
    pub(super) to_mirror: Histogram<u64>,
    /// The mirror's write time → the reader at B got the frame.
    pub(super) to_reader: Histogram<u64>,
}

/// The note on ours of the first part's p50 / p99, for the report's section
/// (`report::bridge`).
pub const TO_MIRROR: &str = "to the mirror's write time";
/// The note on ours of the second part's p50 / p99.
pub const TO_READER: &str = "the mirror's write time to the reader";
/// The note on ours of the first part's p50 over the floor's.
pub const TO_MIRROR_RATIO: &str = "to the mirror's write time / floor p50";

/// Seconds → ns, 0 where `to` is before `from` (a step of the real-time clock).
fn ns_between(from_s: f64, to_s: f64) -> u64 {
    ((to_s - from_s) * 1e9).max(0.0).round() as u64
}

impl Hops {
    pub(super) fn new() -> Hops {
        Hops {
            to_mirror: hist::new(),
            to_reader: hist::new(),
        }
    }

    /// A frame whose write was called at `called`, stamped `written` in the mirror and
    /// got by the reader at `got` (UNIX seconds).
    pub(super) fn record(&mut self, called: f64, written: f64, got: f64) {
        self.to_mirror
            .saturating_record(ns_between(called, written));
        self.to_reader.saturating_record(ns_between(written, got));
    }

    /// Both runs' hops pooled.
    pub(super) fn add(&mut self, other: &Hops) -> Result<()> {
        self.to_mirror
            .add(&other.to_mirror)
            .context("pooling the hops to the mirror")?;
        self.to_reader
            .add(&other.to_reader)
            .context("pooling the hops to the reader")
    }

    /// The notes the report shows: each hop's p50 / p99 (µs, where its samples support
    /// them, as the tables show percentiles).
    pub(super) fn notes(&self) -> Vec<(String, String)> {
        [(TO_MIRROR, &self.to_mirror), (TO_READER, &self.to_reader)]
            .into_iter()
            .map(|(key, h)| (key.to_string(), p50_p99(h)))
            .collect()
    }

    /// The note of the first part's p50 over the floor's (Zenoh put → its subscriber's
    /// callback), or none without samples.
    pub(super) fn ratio_note(&self, floor_p50_ns: u64) -> Option<(String, String)> {
        let ours = self.to_mirror.value_at_quantile(0.5);
        (!self.to_mirror.is_empty() && floor_p50_ns > 0).then(|| {
            (
                TO_MIRROR_RATIO.to_string(),
                format!("{:.2}×", ours as f64 / floor_p50_ns as f64),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame's two hops add up to its way from the write to the reader, each measured
    /// between the stamps that bound it; a clock step backwards reads as 0, not a wrap.
    #[test]
    fn a_frames_hops_run_from_the_write_to_the_mirror_and_on_to_the_reader() {
        let mut hops = Hops::new();
        let t = 1.78e9;
        for i in 0..20u32 {
            let called = t + f64::from(i);
            hops.record(called, called + 100e-6, called + 130e-6);
        }
        let (m, r) = (
            hops.to_mirror.value_at_quantile(0.5),
            hops.to_reader.value_at_quantile(0.5),
        );
        // Within the clock's f64 steps (about 0.24 µs) and the histogram's precision.
        assert!((99_500..=100_500).contains(&m), "{m}");
        assert!((29_500..=30_500).contains(&r), "{r}");
        hops.record(t + 1.0, t + 0.5, t + 0.5);
        assert_eq!(hops.to_mirror.min(), 0);
        let notes = hops.notes();
        assert_eq!(notes[0].0, TO_MIRROR);
        assert!(notes[0].1.ends_with(" / — µs"), "{notes:?}");
        let (key, ratio) = hops.ratio_note(50_000).unwrap();
        assert_eq!((key.as_str(), ratio.as_str()), (TO_MIRROR_RATIO, "2.00×"));
        assert!(Hops::new().ratio_note(50_000).is_none());
    }

    /// Both runs' samples count once each when pooled.
    #[test]
    fn pooled_hops_hold_both_runs_samples() {
        let (mut a, mut b) = (Hops::new(), Hops::new());
        a.record(0.0, 1e-4, 2e-4);
        b.record(0.0, 3e-4, 4e-4);
        b.record(0.0, 3e-4, 4e-4);
        a.add(&b).unwrap();
        assert_eq!((a.to_mirror.len(), a.to_reader.len()), (3, 3));
    }
}

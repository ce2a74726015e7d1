//! The timed loop every measuring process runs: warm-up, then `repeats` repeats of at
//! least `min_seconds`, one histogram sample per iteration (two `Instant::now()` around
//! the step, the record outside them), one rate per repeat.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::hist;
use crate::scenario::Timing;

/// What a measuring process reports besides its histogram.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Measured {
    /// Iterations per second of each repeat (iterations / wall time of the repeat).
    pub repeat_hz: Vec<f64>,
    /// Iterations per second of busy time of each repeat (iterations / Σ step latency):
    /// pyshmem's rate convention, which leaves out idle gaps between steps.
    #[serde(default)]
    pub repeat_busy_hz: Vec<f64>,
    /// Measured iterations over all repeats.
    pub iterations: u64,
    /// Warm-up iterations.
    pub warmup_iterations: u64,
    /// Free-form facts for the report ("kernel": "avx2+fma", ...).
    #[serde(default)]
    pub notes: Vec<(String, String)>,
}

impl Measured {
    /// Median of the per-repeat rates.
    pub fn hz(&self) -> f64 {
        median(&self.repeat_hz)
    }
}

/// Median of `v` (0 when empty).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// Runs `step` under `timing`; returns the rates and the histogram of every measured
/// iteration. `step` gets the iteration number (1-based, warm-up included). `gap_us`
/// of busy idle time precede each step, outside its timing (but inside the repeat's
/// wall time, so with a gap the rate is not 1/latency).
pub fn timed_loop(
    timing: &Timing,
    gap_us: f64,
    mut step: impl FnMut(u64) -> Result<()>,
) -> Result<(Measured, Histogram<u64>)> {
    let mut h = hist::new();
    let mut i = 0u64;
    let warm_until = Instant::now() + Duration::from_secs_f64(timing.warmup);
    let mut warm = 0u64;
    while warm < 2 || Instant::now() < warm_until {
        i += 1;
        spin_for_us(gap_us);
        step(i)?;
        warm += 1;
    }
    let min = Duration::from_secs_f64(timing.min_seconds);
    let mut m = Measured {
        warmup_iterations: warm,
        ..Default::default()
    };
    for _ in 0..timing.repeats {
        let start = Instant::now();
        let mut n = 0u64;
        let mut busy_ns = 0u64;
        let end = loop {
            i += 1;
            spin_for_us(gap_us);
            let t0 = Instant::now();
            step(i)?;
            let t1 = Instant::now();
            let ns = t1.duration_since(t0).as_nanos() as u64;
            h.saturating_record(ns);
            busy_ns += ns;
            n += 1;
            if n >= 3 && t1.duration_since(start) >= min {
                break t1;
            }
        };
        m.repeat_hz
            .push(n as f64 / end.duration_since(start).as_secs_f64());
        m.repeat_busy_hz
            .push(n as f64 * 1e9 / busy_ns.max(1) as f64);
        m.iterations += n;
    }
    Ok((m, h))
}

/// How long each side of [`timed_pair`] runs before the other takes over.
pub const PAIR_SLICE: Duration = Duration::from_millis(5);

/// One side of an alternation ([`alternate`]): runs for one slice when told, and closes
/// a repeat when told.
pub trait Slicer {
    /// Runs one slice, recording its iterations when `record` (warm-up otherwise).
    fn slice(&mut self, record: bool) -> Result<()>;
    /// Closes the current repeat (one rate per repeat).
    fn end_repeat(&mut self) -> Result<()>;
}

/// A side measured in this process: `step` repeated for `len` per slice, every call timed.
pub struct SliceSide<F> {
    step: F,
    len: Duration,
    gap_us: f64,
    m: Measured,
    h: Histogram<u64>,
    n: u64,
    busy_ns: u64,
    wall: Duration,
}

impl<F: FnMut() -> Result<()>> SliceSide<F> {
    /// A side that calls `step` for `len` per slice.
    pub fn new(len: Duration, step: F) -> Self {
        Self {
            step,
            len,
            gap_us: 0.0,
            m: Measured::default(),
            h: hist::new(),
            n: 0,
            busy_ns: 0,
            wall: Duration::ZERO,
        }
    }

    /// Busy idle time before each call, outside its timing but inside the slice's wall
    /// time (as [`timed_loop`]'s `gap_us`).
    pub fn with_gap_us(mut self, gap_us: f64) -> Self {
        self.gap_us = gap_us;
        self
    }

    /// The rates and the histogram of every recorded call.
    pub fn finish(self) -> (Measured, Histogram<u64>) {
        (self.m, self.h)
    }
}

impl<F: FnMut() -> Result<()>> Slicer for SliceSide<F> {
    /// Runs `step` for one slice (at least one call), recording every call.
    fn slice(&mut self, record: bool) -> Result<()> {
        let start = Instant::now();
        loop {
            spin_for_us(self.gap_us);
            let t0 = Instant::now();
            (self.step)()?;
            let t1 = Instant::now();
            let ns = t1.duration_since(t0).as_nanos() as u64;
            if record {
                self.h.saturating_record(ns);
                self.busy_ns += ns;
                self.n += 1;
            } else {
                self.m.warmup_iterations += 1;
            }
            if t1.duration_since(start) >= self.len {
                if record {
                    self.wall += t1.duration_since(start);
                }
                return Ok(());
            }
        }
    }

    fn end_repeat(&mut self) -> Result<()> {
        self.m
            .repeat_hz
            .push(self.n as f64 / self.wall.as_secs_f64().max(1e-9));
        self.m
            .repeat_busy_hz
            .push(self.n as f64 * 1e9 / self.busy_ns.max(1) as f64);
        self.m.iterations += self.n;
        (self.n, self.busy_ns, self.wall) = (0, 0, Duration::ZERO);
        Ok(())
    }
}

/// Runs two sides in alternation, `a` then `b`, one slice at a time: whatever
/// changes on a shared host over milliseconds to seconds (other tenants, clock
/// frequency, a neighbour's cache traffic) hits both alike, so their ratio does not move
/// with it. Warm-up lasts `timing.warmup`, each repeat twice `min_seconds` (each side's
/// half), by the clock and at least one slice each: a step longer than a slice (a 400 MB
/// frame's 65 ms copy) makes one call a slice, and a count of slices made such a repeat
/// last that many calls (13 s a side at 10000², not 1 s).
pub fn alternate(timing: &Timing, a: &mut dyn Slicer, b: &mut dyn Slicer) -> Result<()> {
    fn pairs(a: &mut dyn Slicer, b: &mut dyn Slicer, secs: f64, record: bool) -> Result<()> {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        loop {
            a.slice(record)?;
            b.slice(record)?;
            if Instant::now() >= until {
                return Ok(());
            }
        }
    }
    pairs(a, b, timing.warmup, false)?;
    for _ in 0..timing.repeats {
        pairs(a, b, 2.0 * timing.min_seconds, true)?;
        a.end_repeat()?;
        b.end_repeat()?;
    }
    Ok(())
}

/// [`timed_loop`] for two steps measured in alternation ([`alternate`]), [`PAIR_SLICE`]
/// at a time, in one process on one core.
pub fn timed_pair(
    timing: &Timing,
    a: impl FnMut() -> Result<()>,
    b: impl FnMut() -> Result<()>,
) -> Result<[(Measured, Histogram<u64>); 2]> {
    let mut sa = SliceSide::new(PAIR_SLICE, a);
    let mut sb = SliceSide::new(PAIR_SLICE, b);
    alternate(timing, &mut sa, &mut sb)?;
    Ok([sa.finish(), sb.finish()])
}

/// Busy-waits `us` microseconds (the pingpong gap; the writer's core is its own).
pub fn spin_for_us(us: f64) {
    if us <= 0.0 {
        return;
    }
    shmstream::spin::spin_until(Instant::now() + Duration::from_secs_f64(us * 1e-6));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_runs_every_repeat_and_records_every_iteration() {
        let t = Timing {
            warmup: 0.0,
            min_seconds: 0.01,
            repeats: 2,
        };
        let mut calls = 0u64;
        let (m, h) = timed_loop(&t, 0.0, |_| {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(m.repeat_hz.len(), 2);
        assert_eq!(h.len(), m.iterations);
        assert_eq!(calls, m.iterations + m.warmup_iterations);
        // No warm-up time: the two calls a warm-up makes at least.
        assert_eq!(m.warmup_iterations, 2);
        assert!(m.hz() > 0.0);
    }

    /// Each repeat's rates say what its calls took: a busy rate of at most `max_busy_hz`
    /// (calls of 1 / `max_busy_hz` s or more), a wall rate at most the busy one (the
    /// repeat's wall time holds its calls) and above 1 Hz.
    fn assert_rates_within(m: &Measured, max_busy_hz: f64) {
        for (wall, busy) in m.repeat_hz.iter().zip(&m.repeat_busy_hz) {
            assert!(
                *busy <= max_busy_hz && wall <= busy && *wall > 1.0,
                "{wall} {busy}"
            );
        }
    }

    /// The warm-up lasts `warmup` (two calls at least) and each repeat `min_seconds` (three
    /// at least), by the clock; the step gets its numbers 1, 2, ... in order, every
    /// measured call is one sample, and the rates say what the calls took: 1 ms or more
    /// each (busy rate at most 1000 Hz), inside the repeat's wall time (wall rate at most
    /// the busy one).
    #[test]
    fn the_loop_warms_up_and_times_each_repeat_by_the_clock() {
        let t = Timing {
            warmup: 0.02,
            min_seconds: 0.01,
            repeats: 2,
        };
        let step = Duration::from_millis(1);
        let mut calls: Vec<(u64, Instant)> = Vec::new();
        let before = Instant::now();
        let (m, h) = timed_loop(&t, 0.0, |i| {
            calls.push((i, Instant::now()));
            shmstream::spin::spin_until(Instant::now() + step);
            Ok(())
        })
        .unwrap();
        let took = before.elapsed();
        let numbers: Vec<u64> = calls.iter().map(|c| c.0).collect();
        assert_eq!(numbers, (1..=calls.len() as u64).collect::<Vec<_>>());
        let warm = m.warmup_iterations as usize;
        assert!(warm >= 2, "{warm} warm-up calls");
        assert_eq!(calls.len(), warm + m.iterations as usize);
        assert_eq!(h.len(), m.iterations);
        assert!(m.iterations >= 6, "{} calls", m.iterations);
        // The first measured call starts after the warm-up's time is up.
        let warmed = calls[warm].1.duration_since(before);
        assert!(warmed >= Duration::from_secs_f64(t.warmup), "{warmed:?}");
        // Then each repeat lasts its time.
        let want = Duration::from_secs_f64(t.warmup + 2.0 * t.min_seconds);
        assert!(took >= want, "{took:?}");
        // (A sample reads back as the lowest value of its histogram bucket.)
        assert!(h.highest_equivalent(h.min()) >= 1_000_000, "{}", h.min());
        assert_eq!(m.repeat_hz.len(), 2);
        assert_rates_within(&m, 1000.0);
    }

    /// Every call of each side is a warm-up call or a recorded one, and each side counts
    /// its own warm-up (the details said 0 for every side timed in alternation).
    #[test]
    fn a_pair_measures_both_steps_in_every_repeat() {
        let timing = Timing {
            warmup: 0.01,
            min_seconds: 0.01,
            repeats: 2,
        };
        let (mut na, mut nb) = (0u64, 0u64);
        let [(ma, ha), (mb, hb)] = timed_pair(
            &timing,
            || {
                na += 1;
                Ok(())
            },
            || {
                nb += 1;
                spin_for_us(10.0);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!((ma.repeat_hz.len(), mb.repeat_hz.len()), (2, 2));
        assert_eq!(ma.iterations, ha.len());
        assert_eq!(mb.iterations, hb.len());
        assert!(ma.warmup_iterations > 0 && mb.warmup_iterations > 0);
        assert_eq!(na, ma.iterations + ma.warmup_iterations);
        assert_eq!(nb, mb.iterations + mb.warmup_iterations);
        assert!(
            hb.value_at_quantile(0.5) >= 10_000,
            "the 10 µs step is timed"
        );
        // Calls of 10 µs or more: at most 100 000 a second of busy time, and the slices'
        // wall time holds them.
        assert_rates_within(&mb, 100_000.0);
        assert!(
            mb.iterations < ma.iterations,
            "the slow step fits fewer calls per slice"
        );
    }

    /// Each phase of a pair lasts its time by the clock (the warm-up `warmup`, a repeat
    /// 2 × `min_seconds`), and each side's rates come from its own slices: its wall time
    /// at least one slice and at most the run, its busy time within that and at least its
    /// calls' own time.
    #[test]
    fn a_pair_times_each_side_by_its_own_slices() {
        let timing = Timing {
            warmup: 0.01,
            min_seconds: 0.02,
            repeats: 1,
        };
        let before = Instant::now();
        let [(a, _), (b, _)] = timed_pair(
            &timing,
            || {
                spin_for_us(10.0);
                Ok(())
            },
            || Ok(()),
        )
        .unwrap();
        let took = before.elapsed().as_secs_f64();
        assert!(took >= timing.warmup + 2.0 * timing.min_seconds, "{took} s");
        for (m, call_s) in [(a, 10e-6), (b, 0.0)] {
            let n = m.iterations as f64;
            let wall = n / m.repeat_hz[0];
            let busy = n / m.repeat_busy_hz[0];
            assert!(
                (PAIR_SLICE.as_secs_f64()..=took).contains(&wall),
                "{wall} s of {took}"
            );
            assert!(
                busy >= n * call_s && busy <= wall * (1.0 + 1e-9),
                "{busy} of {wall} s"
            );
        }
    }

    /// A repeat lasts `min_seconds` a side by the clock, not a count of slices: a step
    /// longer than a slice makes one call a slice, and 10 slices a side (0.05 s / 5 ms)
    /// made a repeat of 20 ms steps last 10 calls a side, 0.4 s.
    #[test]
    fn a_pair_of_steps_longer_than_a_slice_runs_min_seconds_not_a_count_of_slices() {
        let timing = Timing {
            warmup: 0.0,
            min_seconds: 0.05,
            repeats: 1,
        };
        let step = || {
            spin_for_us(20_000.0);
            Ok(())
        };
        let [(a, _), (b, _)] = timed_pair(&timing, step, step).unwrap();
        // 0.1 s of 40 ms pairs: three pairs recorded, at most, whatever the host's speed (a
        // slower one fits fewer); at least one.
        let (na, nb) = (a.iterations, b.iterations);
        assert!((1..=3).contains(&na) && na == nb, "{na} and {nb} calls");
    }

    #[test]
    fn the_median_of_an_even_list_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}

//! `harness compare OLD.json NEW.json… [--max-regression 0.2] [--max-regression-sub-us 0.5]
//! [--require-all]`: a table of changes in `ratio_to_floor` per case; fails when any case's
//! ratio dropped by more than its band (relative), and with `--require-all` when a baseline
//! case is missing from NEW or lacks a ratio on either side. Ratios are measured within one
//! run, so two runs on different (or differently loaded) machines stay comparable; absolute
//! times are never gated. Several NEW files (repeats of one scenario) are merged by
//! [`best_of`]: each case is judged by its best repeat, so a repeat hit by load does not
//! fail the gate, while a real slowdown lowers every repeat; a repeat above its floor's
//! slack counts for less, one far above it (a disturbed floor) for nothing while another
//! has a ratio. [`baseline_of`], for a baseline, takes repeats whose floor bounds them
//! first. Ping-pong cases whose floor iteration is under a microsecond (64 B) move with the
//! host far more than the others, so they get their own, wider band. A case whose ratio
//! exceeds its floor's slack
//! ([`Record::floor_bound_slack`](crate::report::record::Record::floor_bound_slack)) in
//! either file is listed as one its floor may not bound, without failing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::report::record::Record;
use crate::scenario::shape_str;

/// The verdict for one case present in both files.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// "case shape".
    pub label: String,
    /// Old ratio.
    pub old: Option<f64>,
    /// New ratio.
    pub new: Option<f64>,
    /// (new - old) / old.
    pub change: Option<f64>,
    /// Dropped by more than the threshold.
    pub regressed: bool,
    /// The tolerated drop for this case.
    pub band: f64,
    /// Why the case did not run in NEW, when it was skipped there.
    pub skipped: Option<String>,
}

/// The comparison of two result sets.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    /// Cases in both, in the old file's order.
    pub changes: Vec<Change>,
    /// Cases only in the old file.
    pub missing: Vec<String>,
    /// Cases only in the new file.
    pub added: Vec<String>,
    /// Cases whose floor may not bound them ([`Record::floor_bound_note`]), in either file:
    /// listed, not gated.
    pub unbounded: Vec<String>,
    /// `--require-all`: a baseline case missing from NEW, or without a ratio on either side,
    /// fails (by default it is listed, not gated).
    pub require_all: bool,
}

impl Comparison {
    /// Whether any case regressed.
    pub fn has_regression(&self) -> bool {
        self.changes.iter().any(|c| c.regressed)
    }

    /// Why the comparison fails, `None` when it passes: a case regressed, or no case of the
    /// baseline is in the new results (an empty NEW, one from another scenario, an empty
    /// baseline), or none of those has a ratio in both (a baseline of null ratios): nothing
    /// was compared, so nothing can pass; with [`require_all`](Self::require_all), a baseline
    /// case that was not judged.
    pub fn failure(&self) -> Option<String> {
        if self.has_regression() {
            return Some(
                "at least one case's ratio_to_floor dropped by more than its band, or went \
                 missing"
                    .into(),
            );
        }
        if self.changes.is_empty() {
            return Some(format!(
                "no case of the baseline is in the new results ({} case(s) only in OLD, {} only \
                 in NEW): nothing was compared; compare runs of the baseline's scenario",
                self.missing.len(),
                self.added.len()
            ));
        }
        // Compared: what `compare` gates, a ratio in both and a baseline ratio > 0.
        if !self.changes.iter().any(|c| c.change.is_some()) {
            // Say which side lacks them: NEW skipped every case (a GPU scenario on a machine
            // without one), or OLD has none.
            let remedy = if self.changes.iter().all(|c| c.skipped.is_some()) {
                "every case was skipped in NEW (see why in the table): run it where they can run"
            } else {
                "compare against a baseline whose cases have ratios"
            };
            return Some(format!(
                "none of the {} case(s) in both files has a ratio_to_floor in both (> 0 in \
                 OLD): nothing was compared; {remedy}",
                self.changes.len()
            ));
        }
        if self.require_all {
            let unjudged: Vec<&str> = self
                .changes
                .iter()
                .filter(|c| c.change.is_none())
                .map(|c| c.label.as_str())
                .collect();
            if !self.missing.is_empty() || !unjudged.is_empty() {
                let skipped = if self
                    .changes
                    .iter()
                    .any(|c| c.change.is_none() && c.skipped.is_some())
                {
                    "; a case skipped in NEW (why in the table) needs a run where it can run"
                } else {
                    ""
                };
                return Some(format!(
                    "--require-all: {} baseline case(s) missing from NEW [{}] and {} without a \
                     ratio_to_floor in both files [{}]: run every case of the baseline's \
                     scenario (no --cases), or regenerate the baseline after changing the \
                     scenario (scenarios/README.md){skipped}",
                    self.missing.len(),
                    self.missing.join(", "),
                    unjudged.len(),
                    unjudged.join(", ")
                ));
            }
        }
        None
    }

    /// A plain-text table.
    pub fn table(&self) -> String {
        let mut o = String::new();
        // Wide enough for every label, the cases on one side only included.
        let w = self
            .changes
            .iter()
            .map(|c| c.label.as_str())
            .chain(self.missing.iter().chain(&self.added).map(String::as_str))
            .map(str::len)
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(
            o,
            "{:<w$}  {:>10}  {:>10}  {:>9}  status",
            "case", "old ratio", "new ratio", "change"
        );
        let f = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.3}"));
        for c in &self.changes {
            let status = if c.regressed && c.new.is_none() {
                "REGRESSION (no ratio in NEW)".to_string()
            } else if c.regressed {
                format!("REGRESSION (> {:.0}% drop)", c.band * 100.0)
            } else if let (Some(_), None, Some(why)) = (c.old, c.new, &c.skipped) {
                format!("skipped in NEW ({why})")
            } else if c.old.is_none() || c.new.is_none() {
                "no ratio (skipped or failed)".to_string()
            } else {
                format!("ok (band {:.0}%)", c.band * 100.0)
            };
            let ch = c
                .change
                .map_or("—".to_string(), |v| format!("{:+.1}%", v * 100.0));
            let _ = writeln!(
                o,
                "{:<w$}  {:>10}  {:>10}  {:>9}  {status}",
                c.label,
                f(c.old),
                f(c.new),
                ch
            );
        }
        let missing = if self.require_all {
            "MISSING from NEW (--require-all)"
        } else {
            "only in OLD (not gated)"
        };
        // In the status column, the ratio columns empty.
        let one_side = |o: &mut String, label: &str, status: &str| {
            let _ = writeln!(
                o,
                "{label:<w$}  {:>10}  {:>10}  {:>9}  {status}",
                "", "", ""
            );
        };
        for m in &self.missing {
            one_side(&mut o, m, missing);
        }
        for a in &self.added {
            one_side(&mut o, a, "only in NEW (not gated)");
        }
        for u in &self.unbounded {
            let _ = writeln!(o, "note: {u}");
        }
        o
    }
}

fn label(r: &Record) -> String {
    let mut s = format!("{} {}", r.case, shape_str(&r.shape));
    if r.device != "cpu" {
        s.push_str(&format!(" {}", r.device));
    }
    s
}

/// The tolerated relative drops of `ratio_to_floor`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bands {
    /// For every case but the sub-microsecond ping-pongs.
    pub max_regression: f64,
    /// For ping-pong cases whose floor iteration (baseline) takes under a microsecond.
    pub max_regression_sub_us: f64,
}

impl Bands {
    /// One band for every case.
    #[cfg(test)]
    pub fn uniform(max_regression: f64) -> Self {
        Bands {
            max_regression,
            max_regression_sub_us: max_regression,
        }
    }

    /// The band for the case `old` (a baseline record): the sub-µs band for a ping-pong
    /// whose floor runs over a million round trips a second; other fast rows (`op-wake`)
    /// are timed beside their floor in one process and keep the default band.
    pub fn for_case(&self, old: &Record) -> f64 {
        if old.kind == "pingpong" && old.floor_hz.is_some_and(|f| f > 1e6) {
            self.max_regression_sub_us
        } else {
            self.max_regression
        }
    }
}

/// Merges repeats of one scenario to be judged: per case, the repeat ranked highest, by
/// `ratio_to_floor` (a record with a ratio beats one without). A repeat above its floor's
/// slack `s` ([`Record::floor_bound_note`]) ranks as `ratio / s`, the least its true ratio
/// can be if noise slowed its floor by no more than `s` (a tie goes to a bounded repeat);
/// one above `s²` (its floor slowed by more) ranks below every other repeat with a ratio.
/// The record picked keeps its measured ratio, listed as unbounded by [`compare`].
///
/// The ratios alone cannot tell a repeat whose run was hit by load from a real slowdown
/// beside a repeat whose floor was: this rule passes repeats 1.07, 0.80 (load), 1.06
/// against 1.017 (1.07 ranks 1.019), and still fails 0.74 and 1.3 (void) against 0.98. A
/// slowdown hides behind any repeat whose floor noise lifted up to `s²` (ranking bounded
/// repeats first, up to `s`): that is the price of a gate that does not flake. Cases keep the order of their first appearance.
pub fn best_of(runs: &[Vec<Record>]) -> Vec<Record> {
    merge(runs, |r| {
        let slack = r.floor_bound_slack();
        let bounded = r.floor_bound_note().is_none();
        let ratio = r.ratio_to_floor;
        let void = ratio.is_some_and(|v| v > slack * slack);
        let rank = if bounded || void {
            ratio
        } else {
            ratio.map(|v| v / slack)
        };
        (ratio.is_some(), !void, rank, bounded)
    })
}

/// Merges repeats of one scenario into a baseline: per case, the record with the highest
/// `ratio_to_floor` (a record with a ratio beats one without, and one its floor bounds beats
/// one above the floor's slack: a baseline row is gated against, and that comparison would
/// be void). Cases keep the order of their first appearance.
pub fn baseline_of(runs: &[Vec<Record>]) -> Vec<Record> {
    merge(runs, |r| {
        (
            r.ratio_to_floor.is_some(),
            r.floor_bound_note().is_none(),
            r.ratio_to_floor,
        )
    })
}

/// Per case (in first-seen order), the first record of those ranked highest by `rank`.
fn merge<K: PartialOrd>(runs: &[Vec<Record>], rank: impl Fn(&Record) -> K) -> Vec<Record> {
    let mut best: Vec<Record> = Vec::new();
    for r in runs.iter().flatten() {
        match best.iter_mut().find(|b| b.key() == r.key()) {
            None => best.push(r.clone()),
            Some(b) if rank(r) > rank(b) => *b = r.clone(),
            Some(_) => {}
        }
    }
    best
}

/// Compares `old` with `new`: a case regresses when both have a ratio and
/// `(old - new) / old` exceeds its band. A ratio that went missing (the case, or only its
/// floor, failed in NEW but had a ratio in OLD) is also a regression; one skipped in NEW (a
/// GPU case without a usable device, [`Record::skipped`]) is not.
pub fn compare(old: &[Record], new: &[Record], bands: Bands) -> Comparison {
    let new_by_key: BTreeMap<String, &Record> = new.iter().map(|r| (r.key(), r)).collect();
    let old_keys: std::collections::HashSet<String> = old.iter().map(Record::key).collect();
    let mut cmp = Comparison::default();
    for o in old {
        let Some(n) = new_by_key.get(&o.key()) else {
            cmp.missing.push(label(o));
            continue;
        };
        let (a, b) = (o.ratio_to_floor, n.ratio_to_floor);
        let change = match (a, b) {
            (Some(a), Some(b)) if a > 0.0 => Some((b - a) / a),
            _ => None,
        };
        let regressed = match (a, b) {
            (Some(a), Some(_)) if a > 0.0 => change.is_some_and(|c| -c > bands.for_case(o)),
            (Some(_), None) => n.skipped.is_none(),
            _ => false,
        };
        cmp.changes.push(Change {
            label: label(o),
            old: a,
            new: b,
            change,
            regressed,
            band: bands.for_case(o),
            skipped: n.skipped.clone(),
        });
    }
    cmp.added = new
        .iter()
        .filter(|r| !old_keys.contains(&r.key()))
        .map(label)
        .collect();
    for (file, records) in [("OLD", old), ("NEW", new)] {
        cmp.unbounded.extend(
            records
                .iter()
                .filter_map(|r| Some(format!("{} in {file}: {}", label(r), r.floor_bound_note()?))),
        );
    }
    cmp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::record::tests::sample;

    #[test]
    fn a_drop_beyond_the_threshold_is_a_regression() {
        let old = vec![sample("a", Some(1.0)), sample("b", Some(0.8))];
        let new = vec![sample("a", Some(0.74)), sample("b", Some(0.79))];
        let sut = compare(&old, &new, Bands::uniform(0.25));
        assert!(sut.has_regression());
        assert!(sut.changes[0].regressed);
        assert!(!sut.changes[1].regressed);
        assert!(sut.table().contains("REGRESSION"));
    }

    #[test]
    fn a_drop_within_the_threshold_or_a_gain_passes() {
        let old = vec![sample("a", Some(1.0))];
        let sut = compare(&old, &[sample("a", Some(0.76))], Bands::uniform(0.25));
        assert!(!sut.has_regression());
        // A drop of exactly the band does not exceed it.
        let sut = compare(&old, &[sample("a", Some(0.75))], Bands::uniform(0.25));
        assert_eq!(sut.changes[0].change, Some(-0.25));
        assert!(!sut.has_regression());
        let sut = compare(&old, &[sample("a", Some(2.0))], Bands::uniform(0.25));
        assert!(!sut.has_regression());
        assert_eq!(sut.changes[0].change, Some(1.0));
    }

    /// A case on one side only is listed, not gated, beside the cases both have.
    #[test]
    fn missing_and_added_cases_are_listed_but_not_gated() {
        let sut = compare(
            &[sample("a", Some(1.0)), sample("c", Some(1.0))],
            &[sample("b", Some(1.0)), sample("c", Some(1.0))],
            Bands::uniform(0.25),
        );
        assert!(!sut.has_regression());
        assert_eq!(sut.failure(), None);
        assert_eq!(sut.missing, vec!["a 100x100"]);
        assert_eq!(sut.added, vec!["b 100x100"]);
        let table = sut.table();
        assert!(table.contains("only in OLD (not gated)") && table.contains("only in NEW"));
        // Every row's status starts under the header's: a longer label on one side only
        // widens the case column for all.
        let long = compare(
            &[
                sample("a-case-on-one-side-only", Some(1.0)),
                sample("c", Some(1.0)),
            ],
            &[sample("c", Some(1.0))],
            Bands::uniform(0.25),
        )
        .table();
        let at = |l: &str, word: &str| l.find(word).unwrap();
        let lines: Vec<&str> = long.lines().collect();
        let column = at(lines[0], "status");
        assert_eq!(at(lines[1], "ok (band"), column, "{long}");
        assert_eq!(at(lines[2], "only in OLD"), column, "{long}");
    }

    /// With no case of the baseline in NEW nothing was compared: an empty NEW, one from
    /// another scenario and an empty baseline fail, naming why.
    #[test]
    fn nothing_compared_fails() {
        let old = [sample("a", Some(1.0)), sample("b", Some(0.8))];
        for new in [vec![], vec![sample("other", Some(1.0))]] {
            let sut = compare(&old, &new, Bands::uniform(0.25));
            assert!(!sut.has_regression(), "no case regressed");
            let why = sut.failure().expect("nothing compared must fail");
            assert!(
                why.contains("no case of the baseline is in the new results")
                    && why.contains("2 case(s) only in OLD"),
                "{why}"
            );
        }
        let sut = compare(&[], &[sample("a", Some(1.0))], Bands::uniform(0.25));
        assert!(sut.failure().is_some());
        let sut = compare(&old, &old, Bands::uniform(0.25));
        assert_eq!(sut.failure(), None);
    }

    #[test]
    fn a_case_that_lost_its_measurement_is_a_regression() {
        let mut failed = sample("a", None);
        failed.hz = None;
        let sut = compare(&[sample("a", Some(1.0))], &[failed], Bands::uniform(0.25));
        assert!(sut.has_regression());
        assert!(sut.failure().is_some());
    }

    /// Ours measured but the floor failed in NEW: the ratio went missing, a regression.
    #[test]
    fn a_case_whose_floor_failed_is_a_regression() {
        let no_floor = sample("a", None);
        assert!(no_floor.hz.is_some() && no_floor.floor_hz.is_none());
        let sut = compare(&[sample("a", Some(1.0))], &[no_floor], Bands::uniform(0.25));
        assert!(sut.has_regression());
        assert!(
            sut.table().contains("REGRESSION (no ratio in NEW)"),
            "{}",
            sut.table()
        );
    }

    /// A GPU case that crashed lost its measurement (a regression) where one skipped for
    /// want of a device did not: results.json says which ([`Record::skipped`]).
    #[test]
    fn a_gpu_case_that_crashed_is_a_regression_one_skipped_is_not() {
        let gpu = |ratio| {
            let mut r = sample("g", ratio);
            r.device = "cuda:0".into();
            r
        };
        let mut crashed = gpu(None);
        crashed.hz = None;
        let sut = compare(&[gpu(Some(1.0))], &[crashed.clone()], Bands::uniform(0.25));
        assert!(sut.has_regression(), "a crashed GPU case passed the gate");
        let mut skipped = crashed;
        skipped.skipped = Some("cuda:0: no CUDA driver".into());
        let sut = compare(&[gpu(Some(1.0))], &[skipped], Bands::uniform(0.25));
        assert!(!sut.has_regression());
        assert!(
            sut.table()
                .contains("skipped in NEW (cuda:0: no CUDA driver)"),
            "{}",
            sut.table()
        );
        // Only that case: nothing was compared, and the failure says NEW skipped it.
        let why = sut.failure().expect("nothing compared must fail");
        assert!(why.contains("every case was skipped in NEW"), "{why}");
    }

    #[test]
    fn skipped_cases_without_ratios_on_both_sides_pass() {
        let sut = compare(
            &[sample("a", None), sample("b", Some(1.0))],
            &[sample("a", None), sample("b", Some(1.0))],
            Bands::uniform(0.25),
        );
        assert!(!sut.has_regression());
        assert_eq!(sut.failure(), None);
    }

    /// A case with a ratio on one side only (none in OLD, or none in NEW where it was
    /// skipped) is listed without a band: nothing was compared for it.
    #[test]
    fn a_case_with_a_ratio_on_one_side_only_shows_no_band() {
        let mut skipped = sample("b", None);
        skipped.skipped = Some("no GPU".into());
        let sut = compare(
            &[sample("a", None), sample("b", Some(1.0))],
            &[sample("a", Some(1.0)), skipped],
            Bands::uniform(0.25),
        );
        let table = sut.table();
        let row = |case: &str| {
            let at = format!("{case} 100x100");
            table
                .lines()
                .find(|l| l.starts_with(&at))
                .unwrap()
                .to_owned()
        };
        assert!(
            row("a").ends_with("no ratio (skipped or failed)"),
            "{table}"
        );
        assert!(row("b").ends_with("skipped in NEW (no GPU)"), "{table}");
        assert!(!table.contains("ok (band"), "{table}");
    }

    /// Cases in both files, but none with a ratio in both (a baseline of null ratios): nothing
    /// was compared, and the gate fails whatever NEW says.
    #[test]
    fn no_ratio_in_both_files_fails() {
        for (old, new) in [
            (sample("a", None), sample("a", Some(0.1))),
            (sample("a", None), sample("a", None)),
        ] {
            let sut = compare(&[old], &[new], Bands::uniform(0.25));
            assert!(!sut.has_regression(), "no case regressed");
            let why = sut.failure().expect("nothing compared must fail");
            assert!(
                why.contains("none of the 1 case(s) in both files has a ratio_to_floor in both"),
                "{why}"
            );
        }
    }

    #[test]
    fn sub_microsecond_cases_get_their_own_band() {
        let bands = Bands {
            max_regression: 0.2,
            max_regression_sub_us: 0.5,
        };
        // sample's floor iteration is 1 ms / ratio: make one ping-pong's floor sub-µs.
        let mut fast_old = sample("fast", Some(0.87));
        fast_old.kind = "pingpong".into();
        fast_old.floor_hz = Some(1.3e6);
        let mut fast_new = fast_old.clone();
        fast_new.ratio_to_floor = Some(0.52);
        let slow_old = sample("slow", Some(1.0));
        let slow_new = sample("slow", Some(0.75));
        let sut = compare(&[fast_old, slow_old], &[fast_new, slow_new], bands);
        assert!(
            !sut.changes[0].regressed,
            "a 40% drop is inside the sub-µs band"
        );
        assert!(
            sut.changes[1].regressed,
            "a 25% drop is outside the 20% band"
        );
    }

    /// The sub-µs band is the 64 B ping-pong's: `op-wake` (floor 1.48 MHz in the gate's
    /// baseline) keeps the default band.
    #[test]
    fn only_a_sub_microsecond_ping_pong_gets_the_sub_us_band() {
        let bands = Bands {
            max_regression: 0.2,
            max_regression_sub_us: 0.5,
        };
        let row = |kind: &str, floor_hz: f64| {
            let mut r = sample("x", Some(1.0));
            r.kind = kind.into();
            r.floor_hz = Some(floor_hz);
            r
        };
        assert_eq!(bands.for_case(&row("op", 1.48e6)), 0.2);
        assert_eq!(bands.for_case(&row("pingpong", 1.3e6)), 0.5);
        // Over a million round trips a second: a floor of exactly 1 µs keeps the default.
        assert_eq!(bands.for_case(&row("pingpong", 1e6)), 0.2);
        assert_eq!(bands.for_case(&row("pingpong", 2e5)), 0.2);
        let mut slower = row("op", 1.48e6);
        slower.ratio_to_floor = Some(0.7);
        let sut = compare(&[row("op", 1.48e6)], &[slower], bands);
        assert!(sut.changes[0].regressed, "a 30% drop of op-wake passed");
    }

    /// A baseline ratio of 0 is not compared (no relative change): it does not count as
    /// the one compared case that lets the gate pass.
    #[test]
    fn a_zero_baseline_ratio_is_not_counted_as_compared() {
        let sut = compare(
            &[sample("a", Some(0.0))],
            &[sample("a", Some(0.9))],
            Bands::uniform(0.25),
        );
        assert_eq!(sut.changes[0].change, None);
        let why = sut.failure().expect("nothing compared must fail");
        assert!(why.contains("nothing was compared"), "{why}");
    }

    /// `--require-all`: a baseline case missing from NEW, or without a ratio on either
    /// side, fails, naming it; without the flag the same comparison passes.
    #[test]
    fn require_all_fails_on_a_missing_case_or_a_null_ratio() {
        let judged = || sample("a", Some(1.0));
        let mut skipped = sample("g", None);
        skipped.hz = None;
        skipped.skipped = Some("cuda:0: no CUDA driver".into());
        for (old, new, names) in [
            (
                vec![judged(), sample("b", Some(1.0))],
                vec![judged()],
                "b 100x100",
            ),
            (
                vec![judged(), sample("c", None)],
                vec![judged(), sample("c", Some(1.0))],
                "c 100x100",
            ),
            (
                vec![judged(), sample("g", Some(1.0))],
                vec![judged(), skipped.clone()],
                "g 100x100",
            ),
        ] {
            let mut sut = compare(&old, &new, Bands::uniform(0.25));
            assert_eq!(sut.failure(), None, "not gated without --require-all");
            sut.require_all = true;
            let why = sut.failure().expect("--require-all must fail");
            assert!(
                why.contains("--require-all") && why.contains(names),
                "{why}"
            );
            assert_eq!(
                why.contains("skipped in NEW"),
                names == "g 100x100",
                "{why}"
            );
        }
        let mut sut = compare(
            &[judged()],
            &[judged(), sample("new", Some(1.0))],
            Bands::uniform(0.25),
        );
        sut.require_all = true;
        assert_eq!(sut.failure(), None, "a case only in NEW is not required");
        let mut sut = compare(
            &[judged(), sample("b", Some(1.0))],
            &[judged()],
            Bands::uniform(0.25),
        );
        sut.require_all = true;
        assert!(
            sut.table().lines().any(|l| l.starts_with("b 100x100 ")
                && l.ends_with("  MISSING from NEW (--require-all)")),
            "{}",
            sut.table()
        );
    }

    /// The committed gate: every job of scenarios/gate.toml is a row of
    /// reports/gate/baseline.json with a ratio, and the baseline has no other row, so CI's
    /// `--require-all` judges every case (a changed shape in gate.toml fails here).
    #[test]
    fn every_gate_job_is_in_the_gate_baseline_with_a_ratio() {
        use std::path::Path;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let gate = crate::scenario::Scenario::load(&root.join("scenarios/gate.toml")).unwrap();
        let base =
            crate::report::record::read_json(&root.join("reports/gate/baseline.json")).unwrap();
        let jobs: Vec<String> = gate
            .jobs(false, None)
            .into_iter()
            .map(|job| {
                let r = crate::run::JobResult {
                    job,
                    ours: Err("not run".into()),
                    floor: Err("not run".into()),
                    peer: Err("not run".into()),
                    skipped: None,
                    ao: None,
                };
                Record::from_result(&r).key()
            })
            .collect();
        for key in &jobs {
            let row = base.iter().find(|r| &r.key() == key);
            assert!(
                row.is_some_and(|r| r.ratio_to_floor.is_some_and(|v| v > 0.0)),
                "gate job {key} has no row with a ratio in the baseline: regenerate it \
                 (scenarios/README.md)"
            );
        }
        // A baseline ratio its floor does not bound would gate against a void comparison.
        for r in &base {
            assert_eq!(r.floor_bound_note(), None, "baseline row {}", r.key());
        }
        let keys: Vec<String> = base.iter().map(Record::key).collect();
        assert_eq!(
            keys, jobs,
            "the baseline's rows are the gate's jobs, in order"
        );
    }

    /// A ratio above its floor's slack (1.05 for a floor timed in alternation, 1.10 for one
    /// in other processes), in either file, is listed as a floor that may not bound its
    /// case, without failing the gate; one below 1 is not.
    #[test]
    fn a_ratio_above_the_floor_is_flagged_but_not_gated() {
        let flag = "the floor may not bound this case (it measures something else, or noise)";
        let sut = compare(
            &[sample("a", Some(0.95)), sample("b", Some(1.5))],
            &[sample("a", Some(1.5)), sample("b", Some(0.95))],
            Bands::uniform(0.5),
        );
        assert!(!sut.has_regression());
        assert_eq!(sut.failure(), None);
        let table = sut.table();
        assert!(
            table.contains(&format!("a 100x100 in NEW: ratio 1.50 > 1.05: {flag}"))
                && table.contains(&format!("b 100x100 in OLD: ratio 1.50 > 1.05: {flag}")),
            "{table}"
        );
        assert_eq!(table.matches(flag).count(), 2, "{table}");
        let sut = compare(
            &[sample("a", Some(0.95))],
            &[sample("a", Some(0.95))],
            Bands::uniform(0.25),
        );
        assert!(!sut.table().contains(flag), "{}", sut.table());
    }

    /// A repeat far above its floor's slack (1.3 > 1.05²: its floor disturbed) is no
    /// case's best while another repeat has a ratio: the real slowdown (0.74 against 0.98)
    /// still fails.
    #[test]
    fn best_of_ranks_a_ratio_far_above_its_floor_s_slack_last() {
        let runs = vec![vec![sample("a", Some(0.74))], vec![sample("a", Some(1.3))]];
        let best = best_of(&runs);
        assert_eq!(best[0].ratio_to_floor, Some(0.74));
        let sut = compare(&[sample("a", Some(0.98))], &best, Bands::uniform(0.2));
        assert!(sut.has_regression(), "{}", sut.table());
        // At exactly the slack squared it is not yet far above: it ranks as ratio / slack
        // (1.05), above a bounded 1.04.
        let slack = sample("a", None).floor_bound_slack();
        let runs = vec![
            vec![sample("a", Some(1.04))],
            vec![sample("a", Some(slack * slack))],
        ];
        assert_eq!(best_of(&runs)[0].ratio_to_floor, Some(slack * slack));
        // Without a repeat with a ratio the unbounded one still beats no ratio.
        let best = best_of(&[vec![sample("a", None)], vec![sample("a", Some(1.3))]]);
        assert_eq!(best[0].ratio_to_floor, Some(1.3));
    }

    /// A repeat just above its floor's slack (1.07, 1.06 > 1.05) ranks as ratio / slack: it
    /// beats a repeat hit by load (0.80, which alone would fail against 1.017), and is
    /// judged and listed with its measured ratio; a bounded repeat above that rank (1.03 >
    /// 1.07 / 1.05), or equal to it, still wins.
    #[test]
    fn best_of_ranks_a_ratio_just_above_its_floor_s_slack_as_ratio_over_slack() {
        let runs = [1.07, 0.80, 1.06].map(|r| vec![sample("a", Some(r))]);
        let best = best_of(&runs);
        assert_eq!(best[0].ratio_to_floor, Some(1.07));
        let sut = compare(&[sample("a", Some(1.017))], &best, Bands::uniform(0.2));
        assert_eq!(sut.failure(), None, "{}", sut.table());
        assert!(sut.table().contains("a 100x100 in NEW: ratio 1.07 > 1.05"));
        let best = best_of(&[1.07, 1.03].map(|r| vec![sample("a", Some(r))]));
        assert_eq!(best[0].ratio_to_floor, Some(1.03));
        let best = best_of(&[1.05 * 1.02, 1.02].map(|r| vec![sample("a", Some(r))]));
        assert_eq!(
            best[0].ratio_to_floor,
            Some(1.02),
            "a tie goes to the bounded one"
        );
    }

    /// A baseline takes a repeat its floor bounds over any above the slack, however low.
    #[test]
    fn baseline_of_ranks_every_ratio_its_floor_does_not_bound_last() {
        let runs = [1.07, 0.80, 1.06].map(|r| vec![sample("a", Some(r))]);
        assert_eq!(baseline_of(&runs)[0].ratio_to_floor, Some(0.80));
        let best = baseline_of(&[vec![sample("a", None)], vec![sample("a", Some(1.3))]]);
        assert_eq!(best[0].ratio_to_floor, Some(1.3));
    }

    /// Between repeats ranked alike, the merge keeps the first: the best of three equal
    /// ratios, and the baseline of them, is the first run's record.
    #[test]
    fn of_repeats_ranked_alike_the_first_is_kept() {
        let runs: Vec<Vec<Record>> = (0..3u32)
            .map(|k| {
                let mut r = sample("a", Some(0.9));
                r.hz = Some(f64::from(1000 + k));
                vec![r]
            })
            .collect();
        for merged in [best_of(&runs), baseline_of(&runs)] {
            assert_eq!(merged.len(), 1);
            assert_eq!(merged[0].hz, Some(1000.0));
        }
    }

    #[test]
    fn best_of_keeps_each_cases_highest_ratio_in_first_seen_order() {
        let runs = vec![
            vec![sample("a", Some(0.5)), sample("b", None)],
            vec![sample("b", Some(0.9)), sample("a", Some(0.7))],
            vec![sample("a", Some(0.6)), sample("c", Some(0.1))],
        ];
        let best = best_of(&runs);
        let got: Vec<_> = best
            .iter()
            .map(|r| (r.case.as_str(), r.ratio_to_floor))
            .collect();
        assert_eq!(
            got,
            vec![("a", Some(0.7)), ("b", Some(0.9)), ("c", Some(0.1))]
        );
    }
}

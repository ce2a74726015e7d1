//! `harness compare OLD.json NEW.json [--max-regression 0.25]`: a table of changes in
//! `ratio_to_floor` per case; fails when any case's ratio dropped by more than the
//! threshold (relative). Ratios are measured within one run, so two runs on different
//! (or differently loaded) machines stay comparable; absolute times are never gated.

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
}

impl Comparison {
    /// Whether any case regressed.
    pub fn has_regression(&self) -> bool {
        self.changes.iter().any(|c| c.regressed)
    }

    /// A plain-text table.
    pub fn table(&self, max_regression: f64) -> String {
        let mut o = String::new();
        let w = self
            .changes
            .iter()
            .map(|c| c.label.len())
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
            let status = if c.regressed {
                format!("REGRESSION (> {:.0}% drop)", max_regression * 100.0)
            } else if c.old.is_none() || c.new.is_none() {
                "no ratio (skipped or failed)".to_string()
            } else {
                "ok".to_string()
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
        for m in &self.missing {
            let _ = writeln!(o, "{m:<w$}  only in OLD (not gated)");
        }
        for a in &self.added {
            let _ = writeln!(o, "{a:<w$}  only in NEW (not gated)");
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

/// Compares `old` with `new`: a case regresses when both have a ratio and
/// `(old - new) / old > max_regression`. A ratio that went missing (the case failed
/// in NEW but had a ratio in OLD) is also a regression.
pub fn compare(old: &[Record], new: &[Record], max_regression: f64) -> Comparison {
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
            (Some(a), Some(_)) if a > 0.0 => change.is_some_and(|c| -c > max_regression),
            (Some(_), None) => n.device == "cpu" && n.hz.is_none(),
            _ => false,
        };
        cmp.changes.push(Change {
            label: label(o),
            old: a,
            new: b,
            change,
            regressed,
        });
    }
    cmp.added = new
        .iter()
        .filter(|r| !old_keys.contains(&r.key()))
        .map(label)
        .collect();
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
        let sut = compare(&old, &new, 0.25);
        assert!(sut.has_regression());
        assert!(sut.changes[0].regressed);
        assert!(!sut.changes[1].regressed);
        assert!(sut.table(0.25).contains("REGRESSION"));
    }

    #[test]
    fn a_drop_within_the_threshold_or_a_gain_passes() {
        let old = vec![sample("a", Some(1.0))];
        let sut = compare(&old, &[sample("a", Some(0.76))], 0.25);
        assert!(!sut.has_regression());
        let sut = compare(&old, &[sample("a", Some(2.0))], 0.25);
        assert!(!sut.has_regression());
        assert_eq!(sut.changes[0].change, Some(1.0));
    }

    #[test]
    fn missing_and_added_cases_are_listed_but_not_gated() {
        let sut = compare(&[sample("a", Some(1.0))], &[sample("b", Some(1.0))], 0.25);
        assert!(!sut.has_regression());
        assert_eq!(sut.missing, vec!["a 100x100"]);
        assert_eq!(sut.added, vec!["b 100x100"]);
    }

    #[test]
    fn a_case_that_lost_its_measurement_is_a_regression() {
        let mut failed = sample("a", None);
        failed.hz = None;
        let sut = compare(&[sample("a", Some(1.0))], &[failed], 0.25);
        assert!(sut.has_regression());
    }

    #[test]
    fn skipped_cases_without_ratios_on_both_sides_pass() {
        let sut = compare(&[sample("a", None)], &[sample("a", None)], 0.25);
        assert!(!sut.has_regression());
    }
}

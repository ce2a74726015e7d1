//! The `report.md` section of the bridge jobs: each frame's latency split at the mirror's
//! write time, so a report says how much of it is the way to the mirror at B and how much
//! the mirror's history append and the reader's wake-up after it, beside Zenoh's floor
//! (see `cases::bridge::hops`).

use std::fmt::Write as _;

use crate::cases::bridge::{TO_MIRROR, TO_MIRROR_RATIO, TO_READER};
use crate::error::Result;
use crate::run::JobResult;
use crate::scenario::Kind;

use super::p50_p99;

/// The note `key` of `r`'s side of ours, or "—".
fn note<'a>(r: &'a JobResult, key: &str) -> &'a str {
    r.ours
        .as_ref()
        .ok()
        .and_then(|s| s.note(key))
        .unwrap_or("—")
}

/// The section, or an empty string when the run has no bridge job that measured.
pub fn section(results: &[JobResult]) -> Result<String> {
    let rows: Vec<&JobResult> = results
        .iter()
        .filter(|r| r.job.kind == Kind::Bridge && r.ours.is_ok())
        .collect();
    let mut o = String::new();
    if rows.is_empty() {
        return Ok(o);
    }
    writeln!(
        o,
        "## Where a bridge frame's time goes\n\nEach latency frame's way split at the mirror's \
         write time at B, which the library stamps once the subscribing bridge has filled the \
         mirror's payload: from the call of the frame's write at A to that stamp (the source's \
         publication and history append, the publishing bridge's wake-up, read and put, Zenoh, \
         the subscribing bridge's callback and fill), then on to the reader getting the frame \
         (the subscribing bridge appending it to the mirror's history, a copy of the frame, \
         which the reader's cursor reads, and the reader's wake-up). Zenoh's floor ends at its \
         subscriber's callback, so it compares with the first part, which adds to Zenoh's hop \
         the source's publication and history append, the publishing bridge's wake-up and \
         read, and the fill of the mirror. Both parts on `CLOCK_REALTIME`, the clock of the library's \
         write times (UNIX seconds in an `f64`, steps of about 0.24 µs); the whole latency in \
         the tables above is on the monotonic clock, and the targets judge it.\n\n| case | \
         shape | write at A → mirror's write time at B (p50 / p99) | mirror's write time → \
         reader (p50 / p99) | Zenoh floor (p50 / p99) | first part p50 ÷ floor p50 |\n\
         |---|---|---|---|---|---|"
    )?;
    for r in rows {
        let floor = r
            .floor
            .as_ref()
            .map_or_else(|_| "—".to_string(), |f| p50_p99(&f.hist));
        writeln!(
            o,
            "| {} | {} | {} | {} | {floor} | {} |",
            r.job.case,
            r.job.shape_str(),
            note(r, TO_MIRROR),
            note(r, TO_READER),
            note(r, TO_MIRROR_RATIO),
        )?;
    }
    writeln!(o)?;
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Measured;
    use crate::run::Side;
    use crate::scenario::Scenario;

    fn side(ns: u64, notes: &[(&str, &str)]) -> Side {
        let mut hist = crate::hist::new();
        hist.record_n(ns, 1000).unwrap();
        Side {
            m: Measured {
                notes: notes
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            },
            hist,
            placement: "bridges unpinned".into(),
        }
    }

    /// A bridge row shows ours' hops from its notes and the floor's own percentiles; a run
    /// without a bridge job that measured has no section.
    #[test]
    fn the_section_shows_each_bridge_rows_hops_beside_the_floor() {
        let job = Scenario::parse(
            "name = \"t\"\n[[case]]\nkind = \"bridge\"\ndtype = \"uint8\"\nsizes = [[64]]\n",
        )
        .unwrap()
        .jobs(false, None)
        .remove(0);
        let result = |ours: crate::run::SideResult| JobResult {
            job: job.clone(),
            ours,
            floor: Ok(side(100_000, &[])),
            peer: Err("no peer for bridge cases".into()),
            skipped: None,
            ao: None,
        };
        let notes = [
            (TO_MIRROR, "120.0 / 300.0 µs"),
            (TO_READER, "30.0 / 90.0 µs"),
            (TO_MIRROR_RATIO, "1.20×"),
        ];
        let s = section(&[result(Ok(side(150_000, &notes)))]).unwrap();
        assert!(s.starts_with("## Where a bridge frame's time goes"), "{s}");
        let rows: Vec<&str> = s.lines().filter(|l| l.contains("| 64 |")).collect();
        let [row] = rows[..] else {
            panic!("one row for the one job: {s}")
        };
        assert!(row.starts_with(&format!("| {} | 64 |", job.case)), "{row}");
        for cell in [
            "120.0 / 300.0 µs",
            "30.0 / 90.0 µs",
            "100.0 / 100.0 µs",
            "1.20×",
        ] {
            assert!(row.contains(cell), "{cell} not in {row}");
        }
        assert_eq!(section(&[result(Err("failed".into()))]).unwrap(), "");
    }
}

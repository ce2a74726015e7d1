//! The ao-loop plots: end-to-end latency against rate (ours from the rate ladder, the
//! composed floor, the pyshmem loop) and a stacked per-stage bar (ours and the peer).
//! The latency-by-percentile curve of each job comes from [`super::plots`].

use std::path::Path;

use plotters::prelude::*;

use super::plots::{FONT, SIDE_COLORS, SIZE, Series, line_chart, pe, register, sanitize};
use crate::cases::ao::AoSummary;
use crate::cases::ao::analysis::{PARTS, StageStat};
use crate::error::Result;
use crate::run::JobResult;

fn lighter(c: RGBColor) -> RGBColor {
    let l = |v: u8| v + (255 - v) / 2;
    RGBColor(l(c.0), l(c.1), l(c.2))
}

/// The rate plot's lines: ours (the ladder's rungs and the main run, those that have a
/// latency), the floor's p50, the peer.
pub(crate) fn rate_series(r: &JobResult, a: &AoSummary) -> Vec<Series> {
    let [ours, floor, peer] = SIDE_COLORS;
    let mut rungs: Vec<(f64, u64, u64)> = a
        .ladder
        .iter()
        .filter_map(|g| Some((g.rate_hz, g.p50_ns?, g.p99_ns?)))
        .collect();
    // A main run no frame of which reached the DM has no latency, as such a rung has none.
    if let Some(s) = r.ours.as_ref().ok().filter(|s| !s.hist.is_empty()) {
        rungs.push((
            a.rate_hz,
            s.hist.value_at_quantile(0.5),
            s.hist.value_at_quantile(0.99),
        ));
    }
    rungs.sort_by(|x, y| x.0.total_cmp(&y.0));
    let us = |ns: u64| ns as f64 / 1e3;
    let mut v = vec![
        Series {
            label: "shmstream p50".into(),
            color: ours,
            points: rungs.iter().map(|g| (g.0, us(g.1))).collect(),
        },
        Series {
            label: "shmstream p99".into(),
            color: lighter(ours),
            points: rungs.iter().map(|g| (g.0, us(g.2))).collect(),
        },
    ];
    if let (Ok(f), Some(lo), Some(hi)) = (&r.floor, rungs.first(), rungs.last()) {
        let y = us(f.hist.value_at_quantile(0.5));
        v.push(Series {
            label: "floor p50".into(),
            color: floor,
            points: vec![(lo.0, y), (hi.0.max(lo.0 * 1.01), y)],
        });
    }
    if let Ok(p) = &r.peer {
        for (q, label, c) in [
            (0.5, "pyshmem p50", peer),
            (0.99, "pyshmem p99", lighter(peer)),
        ] {
            v.push(Series {
                label: label.into(),
                color: c,
                points: vec![(a.rate_hz, us(p.hist.value_at_quantile(q)))],
            });
        }
    }
    v
}

/// The colour of each of the loop's [`PARTS`], in their order: a part has the same colour
/// in every plot, the merged form's three and the split form's five alike.
const STAGE_COLORS: [RGBColor; PARTS.len()] = [
    RGBColor(0x9e, 0xc9, 0xe2),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xfd, 0xae, 0x6b),
    RGBColor(0xd9, 0x48, 0x01),
    RGBColor(0x31, 0xa3, 0x54),
];

/// The colour of part `name` (grey for a part [`PARTS`] does not name).
fn part_colour(name: &str) -> RGBColor {
    PARTS
        .iter()
        .position(|p| *p == name)
        .map_or(RGBColor(0x96, 0x96, 0x96), |k| STAGE_COLORS[k])
}

/// One stacked bar per side: the medians of the stages and hops in loop order.
fn draw_stacks<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    bars: &[(String, Vec<StageStat>)],
) -> Result<()> {
    root.fill(&WHITE).map_err(pe)?;
    let top = bars
        .iter()
        .map(|(_, s)| s.iter().map(|x| x.p50_ns).sum::<u64>())
        .max()
        .unwrap_or(1) as f64
        / 1e3
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24))
        .margin(18)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..bars.len() as f64, 0.0..top)
        .map_err(pe)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("median latency (µs), stacked by stage and hop")
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .draw()
        .map_err(pe)?;
    let mut legend_done = std::collections::HashSet::new();
    for (i, (name, stages)) in bars.iter().enumerate() {
        let x0 = i as f64 + 0.2;
        let x1 = i as f64 + 0.8;
        let mut y = 0.0;
        for s in stages {
            let h = s.p50_ns as f64 / 1e3;
            let c = part_colour(&s.name);
            let series = chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, y), (x1, y + h)],
                    c.filled(),
                )))
                .map_err(pe)?;
            if legend_done.insert(s.name.clone()) {
                series.label(s.name.clone()).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled())
                });
            }
            y += h;
        }
        chart
            .draw_series(std::iter::once(Text::new(
                name.clone(),
                (i as f64 + 0.25, y + top * 0.02),
                (FONT, 16),
            )))
            .map_err(pe)?;
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(pe)?;
    root.present().map_err(pe)?;
    Ok(())
}

/// Writes the ao-loop plots of the run into `dir`; returns the file names.
pub fn write(results: &[JobResult], dir: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for r in results {
        let Some(a) = r.ao.as_deref() else { continue };
        let stem = format!("{}_{}", sanitize(&r.job.case), r.job.shape_str());
        let series = rate_series(r, a);
        if series.iter().any(|s| !s.points.is_empty()) {
            files.extend(line_chart(
                dir,
                &format!("ao_rate_{stem}"),
                format!("{}: end-to-end latency against loop rate", r.job.label()),
                "camera rate (Hz)",
                "end-to-end latency (µs)",
                series,
            )?);
        }
        let mut bars = Vec::new();
        if let Some(s) = a.stats.as_ref().filter(|s| !s.stages.is_empty()) {
            bars.push(("shmstream".to_string(), s.stages.clone()));
        }
        if let Some(p) = &a.peer {
            bars.push(("pyshmem 1.4.0".to_string(), p.stages.clone()));
        }
        if !bars.is_empty() {
            register()?;
            let title = format!("{}: where the time goes (p50)", r.job.label());
            let png = dir.join(format!("ao_stages_{stem}.png"));
            let svg = dir.join(format!("ao_stages_{stem}.svg"));
            draw_stacks(
                BitMapBackend::new(&png, SIZE).into_drawing_area(),
                &title,
                &bars,
            )?;
            draw_stacks(
                SVGBackend::new(&svg, SIZE).into_drawing_area(),
                &title,
                &bars,
            )?;
            files.push(format!("ao_stages_{stem}.png"));
            files.push(format!("ao_stages_{stem}.svg"));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part the analysis gives, in the split and the merged form, has a colour of
    /// its own: no two parts of a bar share one, and a part the list does not name is told
    /// apart from them all.
    #[test]
    fn each_part_of_a_loop_has_a_colour_of_its_own() {
        use crate::cases::ao::analysis::{Logs, analyse};
        let camera = vec![[1, 0, 0, 0]];
        let split = Logs {
            camera: camera.clone(),
            slopes: Some(vec![[1, 10, 60, 30]]),
            dm: vec![[1, 70, 95, 0]],
        };
        let merged = Logs {
            camera,
            slopes: None,
            dm: vec![[1, 10, 95, 30]],
        };
        let rgb = |c: RGBColor| (c.0, c.1, c.2);
        for (form, logs) in [("split", split), ("merged", merged)] {
            let (stats, _) = analyse(&[logs], 0, true).unwrap();
            let names: Vec<_> = stats.stages.iter().map(|s| s.name.as_str()).collect();
            assert!(names.iter().all(|n| PARTS.contains(n)), "{form}: {names:?}");
            let colours: std::collections::HashSet<_> =
                names.iter().map(|n| rgb(part_colour(n))).collect();
            assert_eq!(colours.len(), names.len(), "{form}: {names:?}");
        }
        let known: std::collections::HashSet<_> =
            PARTS.iter().map(|p| rgb(part_colour(p))).collect();
        assert_eq!(known.len(), PARTS.len());
        assert!(!known.contains(&rgb(part_colour("floor"))));
    }
}

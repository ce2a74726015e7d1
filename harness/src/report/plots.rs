//! Plots (PNG and SVG) with an embedded DejaVu Sans, so no system fonts are needed:
//! throughput vs payload size per case (log-log; ours, floor, peer) and latency
//! percentile curves per case and size.

use std::path::Path;
use std::sync::OnceLock;

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::error::{Error, Result};
use crate::report::human_bytes;
use crate::run::JobResult;
use crate::scenario::Kind;

pub(crate) const FONT: &str = "sans-serif";
pub(crate) const SIZE: (u32, u32) = (1100, 650);
const OURS: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const FLOOR: RGBColor = RGBColor(0x55, 0x55, 0x55);
const PEER: RGBColor = RGBColor(0xd6, 0x27, 0x28);

pub(crate) fn register() -> Result<()> {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok =
        *OK.get_or_init(|| register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::msg("the embedded DejaVu font failed to load"))
    }
}

/// One line on a plot.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Colour.
    pub color: RGBColor,
    /// Points, x and y > 0 (log axes).
    pub points: Vec<(f64, f64)>,
}

/// A log-log chart description.
struct Chart<'a> {
    title: String,
    x_desc: &'a str,
    y_desc: &'a str,
    x_fmt: &'a dyn Fn(&f64) -> String,
    y_fmt: &'a dyn Fn(&f64) -> String,
    series: Vec<Series>,
    /// Draw a dot at every point (sparse series) or only the line (curves).
    markers: bool,
    legend: SeriesLabelPosition,
}

pub(crate) fn pe<E: std::fmt::Debug>(e: E) -> Error {
    Error::msg(format!("plotting: {e:?}"))
}

fn bounds(series: &[Series]) -> Option<((f64, f64), (f64, f64))> {
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .collect();
    if pts.is_empty() {
        return None;
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    // Pad by a factor so lines do not touch the frame; widen degenerate ranges.
    let (x0, x1) = if x1 / x0 < 4.0 {
        (x0 / 2.0, x1 * 2.0)
    } else {
        (x0 / 1.3, x1 * 1.3)
    };
    let (y0, y1) = if y1 / y0 < 4.0 {
        (y0 / 2.0, y1 * 2.0)
    } else {
        (y0 / 1.5, y1 * 1.5)
    };
    Some(((x0, x1), (y0, y1)))
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Chart<'_>) -> Result<()> {
    root.fill(&WHITE).map_err(pe)?;
    let Some(((x0, x1), (y0, y1))) = bounds(&c.series) else {
        return Ok(());
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, (FONT, 26))
        .margin(18)
        .x_label_area_size(60)
        .y_label_area_size(95)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_desc(c.x_desc)
        .y_desc(c.y_desc)
        .axis_desc_style((FONT, 19))
        .label_style((FONT, 16))
        .x_label_formatter(c.x_fmt)
        .y_label_formatter(c.y_fmt)
        .y_labels(12)
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()
        .map_err(pe)?;
    for s in &c.series {
        if s.points.is_empty() {
            continue;
        }
        let color = s.color;
        let style = ShapeStyle::from(&color).stroke_width(3);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style))
            .map_err(pe)?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 24, y)],
                    ShapeStyle::from(&color).stroke_width(3),
                )
            });
        if c.markers {
            chart
                .draw_series(s.points.iter().map(|p| Circle::new(*p, 5, color.filled())))
                .map_err(pe)?;
        }
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 17))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(c.legend.clone())
        .draw()
        .map_err(pe)?;
    root.present().map_err(pe)?;
    Ok(())
}

/// Writes `c` as `stem`.png and .svg; returns their names, none when no series has a point
/// to draw (a row with no measured side would be a blank image).
fn save(c: &Chart<'_>, dir: &Path, stem: &str) -> Result<Vec<String>> {
    if bounds(&c.series).is_none() {
        return Ok(Vec::new());
    }
    register()?;
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    draw(BitMapBackend::new(&png, SIZE).into_drawing_area(), c)?;
    draw(SVGBackend::new(&svg, SIZE).into_drawing_area(), c)?;
    Ok(vec![format!("{stem}.png"), format!("{stem}.svg")])
}

fn si(v: &f64) -> String {
    let v = *v;
    let (d, s) = if v >= 1e9 {
        (1e9, "G")
    } else if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let x = v / d;
    if x >= 100.0 || x.fract().abs() < 1e-9 {
        format!("{x:.0}{s}")
    } else {
        format!("{x:.1}{s}")
    }
}

/// Decimal byte labels for log axes, whose ticks are powers of ten: "100 B", "10 kB".
fn bytes_fmt(v: &f64) -> String {
    let mut s = si(v);
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        s.push(' ');
    }
    format!("{s}B")
        .replace("kB", " kB")
        .replace("MB", " MB")
        .replace("GB", " GB")
        .replace("  ", " ")
}

fn us_fmt(v: &f64) -> String {
    if *v >= 100.0 {
        format!("{v:.0}")
    } else if *v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `1/(1-q)` axis → "99.9%".
fn pct_fmt(v: &f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / v.max(1.0));
    if p < 1e-9 {
        "0%".into()
    } else {
        let digits = ((v.log10() - 1e-6).ceil() as i32 - 2).clamp(0, 6) as usize;
        format!("{p:.digits$}%")
    }
}

/// Points of a percentile curve: x = 1/(1-q), y = latency in µs.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let n = h.len() as f64;
    let mut pts = Vec::new();
    for k in 0..=120 {
        let inv = 10f64.powf(f64::from(k) / 20.0); // 1 .. 1e6
        if inv > n {
            break;
        }
        let q = 1.0 - 1.0 / inv;
        pts.push((inv, h.value_at_quantile(q).max(1) as f64 / 1e3));
    }
    pts.push((n.max(1.0), h.max().max(1) as f64 / 1e3));
    pts
}

/// Writes every plot of the run into `dir`; returns the file names (a chart with nothing to
/// draw is not written).
pub fn write_all(results: &[JobResult], dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    let mut cases: Vec<&str> = results.iter().map(|r| r.job.case.as_str()).collect();
    cases.dedup();
    for case in cases {
        let rows: Vec<&JobResult> = results
            .iter()
            .filter(|r| r.job.case == case && r.skipped.is_none())
            .collect();
        let Some(first) = rows.first() else { continue };
        let kind = first.job.kind;
        let mut series = Vec::new();
        for (label, color, pick) in [
            ("shmstream", OURS, 0usize),
            (
                if kind == Kind::Mvm {
                    "kernel alone (floor)"
                } else {
                    "floor (plain memory)"
                },
                FLOOR,
                1,
            ),
            ("pyshmem 1.4.0", PEER, 2),
        ] {
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter_map(|r| {
                    let side = [&r.ours, &r.floor, &r.peer][pick].as_ref().ok()?;
                    Some((r.job.payload_bytes() as f64, side.hz(kind)))
                })
                .collect();
            series.push(Series {
                label: label.into(),
                color,
                points: pts,
            });
        }
        let title = format!("{case}: throughput vs payload size");
        let chart = Chart {
            title,
            x_desc: if kind == Kind::Mvm {
                "matrix size (bytes)"
            } else {
                "payload per frame (bytes)"
            },
            y_desc: match kind {
                Kind::Roundtrip => "write+read round trips per second (Hz)",
                Kind::Pingpong => "round trips per second (Hz)",
                Kind::Mvm => "y = A·x per second (Hz)",
                Kind::AoLoop => "loop frames per second (Hz)",
                Kind::Op => "calls per second (Hz)",
                Kind::Bridge => "frames delivered per second (Hz)",
            },
            x_fmt: &bytes_fmt,
            y_fmt: &si,
            series,
            markers: true,
            legend: SeriesLabelPosition::UpperRight,
        };
        if rows.len() > 1 {
            files.extend(save(
                &chart,
                dir,
                &format!("throughput_{}", sanitize(case)),
            )?);
        }
        for r in &rows {
            let mut series = Vec::new();
            for (label, color, side) in [
                ("shmstream", OURS, &r.ours),
                ("floor", FLOOR, &r.floor),
                ("pyshmem 1.4.0", PEER, &r.peer),
            ] {
                if let Ok(s) = side {
                    series.push(Series {
                        label: label.into(),
                        color,
                        points: percentile_curve(&s.hist),
                    });
                }
            }
            let chart = Chart {
                title: format!(
                    "{case} {} ({}): latency by percentile",
                    r.job.shape_str(),
                    human_bytes(r.job.payload_bytes())
                ),
                x_desc: "percentile",
                y_desc: "latency per iteration (µs)",
                x_fmt: &pct_fmt,
                y_fmt: &us_fmt,
                series,
                markers: false,
                legend: SeriesLabelPosition::UpperLeft,
            };
            files.extend(save(
                &chart,
                dir,
                &format!("latency_{}_{}", sanitize(case), r.job.shape_str()),
            )?);
        }
    }
    files.extend(super::ao_plots::write(results, dir)?);
    Ok(files)
}

/// Writes one log-log line chart with markers (used by the ao-loop plots).
pub fn line_chart(
    dir: &Path,
    stem: &str,
    title: String,
    x_desc: &str,
    y_desc: &str,
    series: Vec<Series>,
) -> Result<Vec<String>> {
    let chart = Chart {
        title,
        x_desc,
        y_desc,
        x_fmt: &si,
        y_fmt: &us_fmt,
        series,
        markers: true,
        legend: SeriesLabelPosition::UpperLeft,
    };
    save(&chart, dir, stem)
}

/// The colours of ours, the floor and the peer.
pub const SIDE_COLORS: [RGBColor; 3] = [OURS, FLOOR, PEER];

/// A file-name-safe version of a case name: the identity on the names a scenario accepts
/// ([A-Za-z0-9_.-]), so no two cases share a file.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels_read_as_percentages() {
        assert_eq!(pct_fmt(&1.0), "0%");
        assert_eq!(pct_fmt(&10.0), "90%");
        assert_eq!(pct_fmt(&100.0), "99%");
        assert_eq!(pct_fmt(&1000.0), "99.9%");
        assert_eq!(pct_fmt(&2.0), "50%");
        assert_eq!(bytes_fmt(&100.0), "100 B");
        assert_eq!(bytes_fmt(&10000.0), "10 kB");
    }

    /// A row with no measured side has nothing to plot: no blank latency (or throughput)
    /// image is written, and none is listed.
    #[test]
    fn a_row_with_no_measured_side_writes_no_plot() {
        let scenario = crate::scenario::Scenario::parse(
            "name=\"w\"\n[[case]]\nkind=\"roundtrip\"\nsizes=[[8],[64]]\n",
        )
        .unwrap();
        let results: Vec<JobResult> = scenario
            .jobs(false, None)
            .into_iter()
            .map(|job| JobResult {
                job,
                ours: Err("crashed".into()),
                floor: Err("crashed".into()),
                peer: Err("no python".into()),
                skipped: None,
                ao: None,
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("plot-empty-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = write_all(&results, &dir).unwrap();
        let written: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(files.is_empty(), "{files:?}");
        assert!(written.is_empty(), "{written:?}");
    }

    #[test]
    fn a_chart_renders_to_png_and_svg_with_the_embedded_font() {
        let dir = std::env::temp_dir().join(format!("plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = Chart {
            title: "test".into(),
            x_desc: "payload (bytes)",
            y_desc: "Hz",
            x_fmt: &bytes_fmt,
            y_fmt: &si,
            series: vec![Series {
                label: "a".into(),
                color: OURS,
                points: vec![(64.0, 1e6), (65536.0, 7e4)],
            }],
            markers: true,
            legend: SeriesLabelPosition::UpperRight,
        };
        let files = save(&c, &dir, "t").unwrap();
        assert_eq!(files.len(), 2);
        assert!(std::fs::metadata(dir.join("t.png")).unwrap().len() > 1000);
        let svg = std::fs::read_to_string(dir.join("t.svg")).unwrap();
        assert!(svg.contains("payload (bytes)"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The demo's charts (SVG, no fonts needed — plotters' SVG backend writes text elements the
//! viewer renders): for the faults, throughput and errors over time per client with the faults
//! marked; for overload, goodput and attempts per second per client with the load steps marked
//! (see [`Panel`]).

use std::path::Path;

use plotters::prelude::*;
use tokio::time::Duration;

use crate::error::CliError;

/// One client's line: (completed calls, errors) per time bucket.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Series {
    /// Client name, used in the legend.
    pub(crate) name: &'static str,
    /// Per bucket: (completed calls, errors).
    pub(crate) points: Vec<(u64, u64)>,
}

/// A fault: when it was injected and when it was over, as offsets from the start.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FaultMark {
    /// When the fault was injected.
    pub(crate) start: Duration,
    /// When the fault was over.
    pub(crate) end: Duration,
    /// Short label drawn at the mark.
    pub(crate) label: &'static str,
}

/// Everything the chart shows.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ChartData {
    /// Width of a bucket.
    pub(crate) bucket: Duration,
    /// One series per client (at most a handful; colours cycle).
    pub(crate) series: Vec<Series>,
    /// The faults, in order.
    pub(crate) marks: Vec<FaultMark>,
}

impl ChartData {
    /// (time in s at the bucket's middle, successful calls per second, errors per second) per
    /// bucket.
    pub(crate) fn rates(&self, series: &Series) -> Vec<(f64, f64, f64)> {
        let width = self.bucket.as_secs_f64();
        series
            .points
            .iter()
            .enumerate()
            .map(|(index, (ops, errors))| {
                let ok = ops.saturating_sub(*errors);
                (
                    (index as f64 + 0.5) * width,
                    ok as f64 / width,
                    *errors as f64 / width,
                )
            })
            .collect()
    }

    fn span_s(&self) -> f64 {
        let buckets = self
            .series
            .iter()
            .map(|s| s.points.len())
            .max()
            .unwrap_or(0);
        let marks = self
            .marks
            .iter()
            .map(|m| m.end.as_secs_f64())
            .fold(0.0, f64::max);
        (buckets as f64 * self.bucket.as_secs_f64())
            .max(marks)
            .max(1.0)
    }
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];
const FAULT_FILL: RGBColor = RGBColor(255, 221, 170);

/// One panel of a chart: lines of (time in s, value) sharing a y axis.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Panel {
    /// Title above the panel.
    pub(crate) title: String,
    /// Label of the y axis.
    pub(crate) y_desc: &'static str,
    /// One line per client: (name for the legend, points).
    pub(crate) lines: Vec<(&'static str, Vec<(f64, f64)>)>,
    /// A dashed horizontal line with its label (e.g. the server's capacity).
    pub(crate) reference: Option<(f64, String)>,
}

/// Writes the chart as an SVG file at `path`.
pub(crate) fn write_svg(path: &Path, data: &ChartData) -> Result<(), CliError> {
    let per = format!(
        "per {} ms bucket, shown per second",
        data.bucket.as_millis()
    );
    let rates: Vec<Vec<(f64, f64, f64)>> = data.series.iter().map(|s| data.rates(s)).collect();
    let line = |pick: fn(&(f64, f64, f64)) -> f64| {
        data.series
            .iter()
            .zip(&rates)
            .map(|(series, points)| (series.name, points.iter().map(|r| (r.0, pick(r))).collect()))
            .collect()
    };
    let panels = [
        Panel {
            title: format!("Throughput (successful calls/s, {per})"),
            y_desc: "ok calls/s",
            lines: line(|r| r.1),
            reference: None,
        },
        Panel {
            title: format!("Errors seen by the application (errors/s, {per})"),
            y_desc: "errors/s",
            lines: line(|r| r.2),
            reference: None,
        },
    ];
    write_panels_svg(path, &panels, &data.marks, data.span_s())
}

/// Writes `panels` stacked in one SVG file at `path`, over `0 .. span_s` seconds, with `marks`
/// shaded on every panel (labelled on the first).
pub(crate) fn write_panels_svg(
    path: &Path,
    panels: &[Panel],
    marks: &[FaultMark],
    span_s: f64,
) -> Result<(), CliError> {
    draw(path, panels, marks, span_s).map_err(|err| {
        CliError::runtime(format!("cannot write the chart {}: {err}", path.display()))
    })
}

fn draw(
    path: &Path,
    panels: &[Panel],
    marks: &[FaultMark],
    span: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let height = 70 + 315 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for (index, (panel, area)) in panels.iter().zip(&areas).enumerate() {
        draw_panel(area, panel, marks, span.max(1.0), index == 0)?;
    }
    root.present()?;
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
    marks: &[FaultMark],
    span: f64,
    labels: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let top = panel
        .lines
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .chain(panel.reference.as_ref().map(|r| r.0))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..span, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc(panel.y_desc)
        .label_style(("sans-serif", 14))
        .draw()?;
    shade_faults(&mut chart, marks, top, labels)?;
    if let Some((value, label)) = &panel.reference {
        chart.draw_series(DashedLineSeries::new(
            [(0.0, *value), (span, *value)],
            6,
            4,
            BLACK.stroke_width(1),
        ))?;
        chart.draw_series(std::iter::once(Text::new(
            label.clone(),
            (span * 0.01, value + top * 0.02),
            ("sans-serif", 14),
        )))?;
    }
    for (index, (name, points)) in panel.lines.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Shades each fault's active interval and draws its injection line (and label when `labels`).
fn shade_faults(
    chart: &mut Chart<'_, '_>,
    marks: &[FaultMark],
    top: f64,
    labels: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    for mark in marks {
        let (start, end) = (mark.start.as_secs_f64(), mark.end.as_secs_f64());
        chart.draw_series(std::iter::once(Rectangle::new(
            [(start, 0.0), (end.max(start + 0.05), top)],
            FAULT_FILL.mix(0.6).filled(),
        )))?;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(start, 0.0), (start, top)],
            BLACK.stroke_width(1),
        )))?;
        if labels {
            chart.draw_series(std::iter::once(Text::new(
                mark.label,
                (start + 0.1, top * 0.97),
                ("sans-serif", 14),
            )))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> ChartData {
        ChartData {
            bucket: Duration::from_millis(250),
            series: vec![
                Series {
                    name: "resilient",
                    points: vec![(100, 0), (50, 0), (100, 0)],
                },
                Series {
                    name: "raw",
                    points: vec![(100, 0), (10, 5), (100, 0)],
                },
            ],
            marks: vec![FaultMark {
                start: Duration::from_millis(300),
                end: Duration::from_millis(600),
                label: "restart",
            }],
        }
    }

    #[test]
    fn rates_are_per_second_at_bucket_middles() {
        let data = data();
        assert_eq!(
            data.rates(&data.series[1]),
            vec![
                (0.125, 400.0, 0.0),
                (0.375, 20.0, 20.0),
                (0.625, 400.0, 0.0)
            ]
        );
    }

    #[test]
    fn writes_stacked_panels_with_a_reference_line() {
        let dir = std::env::temp_dir().join(format!("rr-panels-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("panels.svg");
        let panel = |title: &str| Panel {
            title: title.to_owned(),
            y_desc: "calls/s",
            lines: vec![("naive", vec![(0.5, 10.0), (1.5, 30.0)])],
            reference: Some((20.0, "capacity 20/s".to_owned())),
        };
        let marks = [FaultMark {
            start: Duration::from_secs(1),
            end: Duration::from_secs(1),
            label: "2x",
        }];
        write_panels_svg(&path, &[panel("Goodput"), panel("Attempts")], &marks, 2.0)
            .expect("chart written");
        let svg = std::fs::read_to_string(&path).expect("readable");
        let _ = std::fs::remove_dir_all(&dir);
        for text in ["Goodput", "Attempts", "naive", "capacity 20/s", "2x"] {
            assert!(svg.contains(text), "{text} missing from the chart");
        }
    }

    #[test]
    fn writes_an_svg_with_legend_and_fault_label() {
        let dir = std::env::temp_dir().join(format!("rr-chart-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("chart.svg");
        write_svg(&path, &data()).expect("chart written");
        let svg = std::fs::read_to_string(&path).expect("readable");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(svg.starts_with("<svg"));
        for text in ["resilient", "raw", "restart", "Throughput"] {
            assert!(svg.contains(text), "{text} missing from the chart");
        }
    }
}

//! Inline SVG charts of a family's stitched series, drawn with `plotters`.
//!
//! Each run's line is drawn in two parts: the inherited part (points owned by
//! an ancestor) faint, the run's own part solid; fork steps are dashed
//! vertical lines. Series are reduced to [`points_per_part`] points per part
//! (the `drawn_extremes` strategy of `query::functions::downsample`), a budget shared by
//! the chart's runs, so a chart stays under about a hundred KiB however long
//! and however many the runs are. In a chart of more than [`FAINT_RUNS`] runs
//! the inherited parts, which lie on their ancestors' own lines, are not
//! drawn a second time, and the budget goes to the own parts. Text uses the SVG backend's `<text>` elements,
//! so no font is needed at build time; the browser picks one.

use plotters::prelude::*;

use super::FamilyMetric;
use super::stats::drawn_part;
use crate::error::{Error, Result};

/// Points a chart draws at most, about, over all its runs and parts: what
/// its 1,000 pixel columns can show, a few times over.
const CHART_POINTS: usize = 6_000;

/// Points of one run part (inherited or own), at most and at least.
const PART_POINTS: (usize, usize) = (24, 500);

/// Charts of at most this many runs draw each run's inherited part, faint.
pub const FAINT_RUNS: usize = 12;

/// Whether a chart of `runs` runs draws their inherited parts.
pub fn draws_inherited(runs: usize) -> bool {
    runs <= FAINT_RUNS
}

/// Points drawn per run part of a chart of `runs` runs: the chart's budget
/// shared out, so a family of a hundred runs draws about as many points as
/// one of ten.
pub fn points_per_part(runs: usize) -> usize {
    let parts = runs.max(1) * if draws_inherited(runs) { 2 } else { 1 };
    (CHART_POINTS / parts).clamp(PART_POINTS.0, PART_POINTS.1)
}

/// A run part's points, `(step, value)`.
type Steps = Vec<(u64, f64)>;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 380;

/// A color per run, by its position in the family (repeats after ten).
pub fn color(index: usize) -> RGBColor {
    const PALETTE: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    PALETTE[index % PALETTE.len()]
}

/// CSS hex of [`color`].
pub fn css_color(index: usize) -> String {
    let RGBColor(r, g, b) = color(index);
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn draw_error<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> Error {
    Error::invalid(format!("chart: {e}"))
}

/// The SVG of one metric of one family; `None` when no run has a finite point.
pub fn svg(section: &FamilyMetric) -> Result<Option<String>> {
    // (own part, inherited part) of each run, finite points only, downsampled.
    let budget = points_per_part(section.series.len());
    let faint = draws_inherited(section.series.len());
    let parts: Vec<(Steps, Steps)> = section
        .series
        .iter()
        .map(|s| {
            let inherited = if faint {
                drawn_part(s, true, budget)
            } else {
                Vec::new()
            };
            (drawn_part(s, false, budget), inherited)
        })
        .collect();
    let all = || parts.iter().flat_map(|(a, b)| a.iter().chain(b.iter()));
    let Some(first) = all().next() else {
        return Ok(None);
    };
    let (mut x0, mut x1, mut y0, mut y1) = (first.0, first.0, first.1, first.1);
    for &(s, v) in all() {
        x0 = x0.min(s);
        x1 = x1.max(s);
        y0 = y0.min(v);
        y1 = y1.max(v);
    }
    if x1 == x0 {
        x1 = x0 + 1;
    }
    let pad = if y1 > y0 {
        (y1 - y0) * 0.05
    } else {
        y0.abs().max(1.0) * 0.05
    };
    // Losses span decades: a log axis when every value is positive and they do,
    // so the late, decisive part of the curves is not flattened at the bottom.
    let log = y0 > 0.0 && y1 / y0 > 10.0;
    let ty = |v: f64| if log { v.log10() } else { v };
    let (y0, y1) = if log {
        (ty(y0) - 0.02, ty(y1) + 0.02)
    } else {
        (y0 - pad, y1 + pad)
    };
    let (x0, x1) = (x0 as f64, x1 as f64);

    let mut out = String::new();
    let mut forks = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(215, 215, 215))
            .x_desc("step")
            .y_desc(if log {
                format!("{} (log scale)", section.metric)
            } else {
                section.metric.clone()
            })
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| super::numbers::tick(if log { 10f64.powf(*y) } else { *y }))
            .draw()
            .map_err(draw_error)?;

        // One SVG dashed line per fork, added after plotters is done: its
        // dashed series writes every dash as an element of its own.
        for (i, row) in section.runs.iter().enumerate() {
            if let Some(fork) = row.fork_step {
                let (x, top) = chart.backend_coord(&(fork as f64, y1));
                let (_, bottom) = chart.backend_coord(&(fork as f64, y0));
                forks.push_str(&format!(
                    "<line x1=\"{x}\" y1=\"{top}\" x2=\"{x}\" y2=\"{bottom}\" stroke=\"{}\" \
                     stroke-opacity=\"0.7\" stroke-width=\"1\" stroke-dasharray=\"6 4\"/>\n",
                    css_color(i)
                ));
            }
        }
        for (i, (own, inherited)) in parts.iter().enumerate() {
            let to_xy = |pts: &[(u64, f64)]| -> Vec<(f64, f64)> {
                pts.iter().map(|&(s, v)| (s as f64, ty(v))).collect()
            };
            if inherited.len() > 1 {
                chart
                    .draw_series(LineSeries::new(
                        to_xy(inherited),
                        color(i).mix(0.25).stroke_width(1),
                    ))
                    .map_err(draw_error)?;
            }
            let own = to_xy(own);
            if own.len() > 1 {
                let width = if section.runs[i].winner { 3 } else { 2 };
                chart
                    .draw_series(LineSeries::new(own, color(i).stroke_width(width)))
                    .map_err(draw_error)?;
            } else if let Some(&(x, y)) = own.first() {
                chart
                    .draw_series(std::iter::once(Circle::new((x, y), 3, color(i).filled())))
                    .map_err(draw_error)?;
            }
        }
        root.present().map_err(draw_error)?;
    }
    match out.rfind("</svg>") {
        Some(end) => out.insert_str(end, &forks),
        None => {
            return Err(Error::invalid(
                "chart: the SVG backend wrote no closing tag",
            ));
        }
    }
    Ok(Some(out))
}

//! A console chart: one metric of some runs (a family, or the runs a
//! compare page picked), stitched or raw, over a step range, reduced by the
//! `downsample` aggregate to one bucket per pixel column, so the cost of a
//! redraw follows the chart's width, not the series' length.
//!
//! Drawn as SVG by hand rather than with the report's `plotters` chart: each
//! line carries its run and part (`data-run`, `data-part`) and the plot area
//! its step range, which the page's zoom and the tests read. Colours, tick
//! labels and the log-axis rule are the report's.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use datafusion::execution::FunctionRegistry;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::prelude::{DataFrame, SessionContext, col, lit};

use super::params::Axis;
use crate::catalog::{RunId, Segment};
use crate::error::{Error, Result};
use crate::query::lineage::Lineage;
use crate::query::scan::metric_selection::MetricFilter;
use crate::report::chart::css_color;
use crate::report::numbers::tick;
use crate::report::render::esc;

/// Page width in CSS pixels when the page does not say, and the bounds of one chart.
pub const DEFAULT_WIDTH: u32 = 1000;
const MIN_WIDTH: u32 = 200;
const MAX_WIDTH: u32 = 4000;
const HEIGHT: u32 = 380;
const LEFT: u32 = 64;
const RIGHT: u32 = 12;
const TOP: u32 = 10;
const BOTTOM: u32 = 34;

/// What to draw: the metric, the steps shown (whole series when open), the
/// chart's width, the axis, and whether series are stitched.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartRequest {
    pub metric: String,
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub width: u32,
    pub axis: Axis,
    pub inherited: bool,
}

impl ChartRequest {
    /// Buckets asked of `downsample`: one per pixel column of the plot area.
    pub fn buckets(&self) -> u32 {
        self.width() - LEFT - RIGHT
    }

    fn width(&self) -> u32 {
        self.width.clamp(MIN_WIDTH, MAX_WIDTH)
    }
}

/// A run drawn: its id, label, fork step and colour index.
#[derive(Debug, Clone)]
pub struct Line<'a> {
    pub run: RunId,
    pub label: &'a str,
    pub fork_step: Option<u64>,
    pub color: usize,
}

/// One bucket of a run part: first step, min and max (NaN skipped; `None` when all were).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub step: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// The buckets of each (run, inherited) part, by run id.
pub type Parts = BTreeMap<(RunId, bool), Vec<Bucket>>;

/// The downsampled plan of the stitched `views` (each run's segments, as
/// `family_metrics` and `stitched_metrics` read them) or, when the request
/// leaves inherited points out, of the runs' own latest points: restricted to
/// the step range, `downsample(step, value, n)` per (run, inherited),
/// unnested. Everything the caller gave is a typed literal.
pub fn plan(
    ctx: &SessionContext,
    views: &[(RunId, Segment)],
    request: &ChartRequest,
) -> Result<DataFrame> {
    let lineage = Lineage::of(ctx)?;
    let metric = MetricFilter::Exact(request.metric.clone());
    let mut df = if request.inherited {
        DataFrame::new(ctx.state(), lineage.stitched_views(views, &request.metric)?)
    } else {
        let mut runs: Vec<i64> = views.iter().map(|(run, _)| *run as i64).collect();
        runs.sort_unstable();
        runs.dedup();
        let raw = lineage
            .points()
            .latest(Some(&runs), "m")?
            .filter(metric.expr(col("metric")))?
            .build()?;
        DataFrame::new(ctx.state(), raw).select(vec![
            col("run_id"),
            col("step"),
            col("value"),
            lit(false).alias("inherited"),
        ])?
    };
    if let Some(from) = request.from {
        df = df.filter(col("step").gt_eq(lit(from as i64)))?;
    }
    if let Some(to) = request.to {
        df = df.filter(col("step").lt_eq(lit(to as i64)))?;
    }
    let downsample = ctx.udaf("downsample")?;
    let df = df
        .aggregate(
            vec![col("run_id"), col("inherited")],
            vec![
                downsample
                    .call(vec![
                        col("step"),
                        col("value"),
                        lit(request.buckets() as i64),
                    ])
                    .alias("b"),
            ],
        )?
        .unnest_columns(&["b"])?
        .select(vec![
            col("run_id"),
            col("inherited"),
            get_field(col("b"), "step").alias("step"),
            get_field(col("b"), "min").alias("min"),
            get_field(col("b"), "max").alias("max"),
        ])?;
    Ok(df)
}

/// The buckets of the answer of [`plan`], each part sorted by step.
pub fn parts(batches: &[arrow::array::RecordBatch]) -> Result<Parts> {
    let mut out = Parts::new();
    for batch in batches {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::invalid(format!("chart plan lacks column {name}")))
        };
        let runs = column("run_id")?.as_primitive::<Int64Type>();
        let inherited = column("inherited")?.as_boolean();
        let steps = column("step")?.as_primitive::<Int64Type>();
        let mins = column("min")?.as_primitive::<Float64Type>();
        let maxs = column("max")?.as_primitive::<Float64Type>();
        for i in 0..batch.num_rows() {
            if runs.is_null(i) || steps.is_null(i) {
                continue;
            }
            let finite = |a: &arrow::array::Float64Array| {
                (!a.is_null(i) && a.value(i).is_finite()).then(|| a.value(i))
            };
            out.entry((runs.value(i) as RunId, inherited.value(i)))
                .or_default()
                .push(Bucket {
                    step: steps.value(i).max(0) as u64,
                    min: finite(mins),
                    max: finite(maxs),
                });
        }
    }
    for buckets in out.values_mut() {
        buckets.sort_by_key(|b| b.step);
    }
    Ok(out)
}

/// The vertices of a bucket: its min, then its max when it differs.
pub fn vertices(bucket: &Bucket) -> impl Iterator<Item = (u64, f64)> + '_ {
    let max = bucket.max.filter(|m| Some(*m) != bucket.min);
    bucket
        .min
        .into_iter()
        .chain(max)
        .map(move |v| (bucket.step, v))
}

/// The SVG of the chart and the step range it shows, or a note when no run
/// has a point in the range.
pub fn svg(lines: &[Line], parts: &Parts, request: &ChartRequest) -> (String, Option<(u64, u64)>) {
    let points = || {
        parts
            .values()
            .flat_map(|buckets| buckets.iter().flat_map(vertices))
    };
    let Some((first_step, first_value)) = points().next() else {
        let note = format!(
            "<p class=\"empty\">No point of <code>{}</code> in this range.</p>",
            esc(&request.metric)
        );
        return (note, request.from.zip(request.to));
    };
    let (mut x0, mut x1, mut y0, mut y1) = (first_step, first_step, first_value, first_value);
    for (s, v) in points() {
        x0 = x0.min(s);
        x1 = x1.max(s);
        y0 = y0.min(v);
        y1 = y1.max(v);
    }
    // The axis shows the asked range, so zooming keeps the frame the user chose.
    let x0 = request.from.unwrap_or(x0);
    let x1 = request.to.unwrap_or(x1).max(x0 + 1);
    // As the report by default: a log axis when every value is positive and
    // they span a decade; asked for, whenever every value is positive.
    let log = y0 > 0.0
        && match request.axis {
            Axis::Auto => y1 / y0 > 10.0,
            Axis::Log => true,
            Axis::Linear => false,
        };
    let ty = |v: f64| if log { v.log10() } else { v };
    let (y0, y1) = if log {
        (ty(y0) - 0.02, ty(y1) + 0.02)
    } else {
        let pad = if y1 > y0 {
            (y1 - y0) * 0.05
        } else {
            y0.abs().max(1.0) * 0.05
        };
        (y0 - pad, y1 + pad)
    };
    let width = request.width();
    let plot_w = f64::from(width - LEFT - RIGHT);
    let plot_h = f64::from(HEIGHT - TOP - BOTTOM);
    let px = |s: u64| f64::from(LEFT) + (s as f64 - x0 as f64) / (x1 - x0) as f64 * plot_w;
    let py = |v: f64| f64::from(TOP) + (1.0 - (ty(v) - y0) / (y1 - y0)) * plot_h;

    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {width} {HEIGHT}\" data-metric=\"{}\" data-from=\"{x0}\" data-to=\"{x1}\" \
         data-buckets=\"{}\" data-left=\"{LEFT}\" data-plot-width=\"{plot_w}\" data-log=\"{log}\" \
         data-inherited=\"{}\">",
        esc(&request.metric),
        request.buckets(),
        request.inherited,
    );
    let _ = write!(
        out,
        "<rect class=\"plot\" x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" height=\"{plot_h}\"/>"
    );
    // Ticks: five intervals on each axis.
    for i in 0..=5 {
        let f = f64::from(i) / 5.0;
        let step = x0 as f64 + f * (x1 - x0) as f64;
        let x = f64::from(LEFT) + f * plot_w;
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
             <text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            f64::from(TOP) + plot_h,
            f64::from(TOP) + plot_h + 16.0,
            step.round()
        );
        let yv = y0 + f * (y1 - y0);
        let y = f64::from(TOP) + (1.0 - f) * plot_h;
        let label = tick(if log { 10f64.powf(yv) } else { yv });
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            f64::from(LEFT) + plot_w,
            LEFT - 4,
            y + 4.0
        );
    }
    let _ = write!(
        out,
        "<text class=\"axis\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">step</text>",
        f64::from(LEFT) + plot_w / 2.0,
        HEIGHT - 2
    );
    let by_run: BTreeMap<RunId, &Line> = lines.iter().map(|l| (l.run, l)).collect();
    for line in lines {
        if let Some(fork) = line.fork_step.filter(|f| (x0..=x1).contains(f)) {
            let x = px(fork);
            let _ = write!(
                out,
                "<line class=\"fork\" data-run=\"{}\" x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" \
                 stroke=\"{}\" stroke-dasharray=\"6 4\"/>",
                esc(line.label),
                f64::from(TOP) + plot_h,
                css_color(line.color)
            );
        }
    }
    // Inherited parts first, so every run's own line is drawn over them.
    for inherited in [true, false] {
        for ((run, _), buckets) in parts.iter().filter(|((_, inh), _)| *inh == inherited) {
            let Some(line) = by_run.get(run) else {
                continue;
            };
            let mut coords = String::new();
            for (s, v) in buckets.iter().flat_map(vertices) {
                let _ = write!(coords, "{:.1},{:.1} ", px(s), py(v));
            }
            let _ = write!(
                out,
                "<polyline class=\"{}\" data-run=\"{}\" data-part=\"{}\" data-buckets=\"{}\" \
                 fill=\"none\" stroke=\"{}\" points=\"{}\"/>",
                if inherited {
                    "line inherited"
                } else {
                    "line own"
                },
                esc(line.label),
                if inherited { "inherited" } else { "own" },
                buckets.len(),
                css_color(line.color),
                coords.trim_end()
            );
        }
    }
    let _ = write!(
        out,
        "<rect class=\"select\" x=\"0\" y=\"{TOP}\" width=\"0\" height=\"{plot_h}\"/></svg>"
    );
    (out, Some((x0, x1)))
}

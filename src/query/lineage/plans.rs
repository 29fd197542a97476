//! The plans behind the lineage views: the points of a run's segments, and
//! stitched views of one or many runs, through the stitching operator where
//! the owners' points are bounded (one run, or one metric) and as a join of
//! `metrics` with the segment list otherwise.

use std::sync::Arc;

use datafusion::common::{Column, plan_err};
use datafusion::datasource::provider_as_source;
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::{col, lit};

use super::stitch::{StitchedTable, Views};
use crate::catalog::{RunId, SYSTEM_METRIC_PREFIX, Segment, inheritable};
use crate::query::scan::{MetricFilter, PointSource};

/// [`inheritable`] as an expression over the `metric` column. With one named
/// metric the answer is known at planning time, which spares a string
/// comparison on every inherited row.
fn inheritable_expr(metric: Expr, filter: Option<&MetricFilter>) -> Expr {
    match filter {
        Some(MetricFilter::Exact(m)) => lit(inheritable(m)),
        _ => metric.not_like(lit(format!("{SYSTEM_METRIC_PREFIX}%"))),
    }
}

fn stitched_projection(viewer: Expr, source: Expr, inherited: Expr, q: &str) -> Vec<Expr> {
    let c = |name: &str| Expr::Column(Column::new(Some(q), name));
    vec![
        viewer.alias("run_id"),
        source.alias("source_run_id"),
        c("metric").alias("metric"),
        c("step").alias("step"),
        c("value").alias("value"),
        c("time").alias("time"),
        inherited.alias("inherited"),
    ]
}

/// The points of `viewer`'s stitched series: one scan of the owners' points,
/// a superset of the segments' points that the stitching operator cuts
/// exactly (each segment is a step range of one owner's sorted rows).
///
/// The scan's predicate holds single-column terms only: the owners (`run_id
/// IN`), the steps all segments span together and the metric. Ancestors'
/// system metrics are left to the operator too: excluding them in the scan
/// takes a two-column term (the viewer's own are kept), which prunes no page
/// and made the scan evaluate it, and cache the metric column for it, on
/// every row (a stitched series of every metric: 15% of its CPU). DataFusion 55
/// prunes pages with single-column terms alone, and rewrites the whole
/// predicate twice for every file it opens (for row groups, and again
/// inverted to find fully matched ones), so a term per segment, `(run_id =
/// owner AND step in range)` ORed, pruned no page and cost more per file
/// than reading a depth-8 run's rows (Q1: 40% of its CPU). What such a term
/// could still prune is a row group holding one owner's steps alone, past
/// its segment; ingest files mix runs and compacted row groups mix metrics,
/// so that is rare, while the cost was paid on every file of every query.
pub fn segment_points(
    points: &PointSource,
    viewer: RunId,
    segments: &[Segment],
    metric: Option<&MetricFilter>,
) -> DFResult<LogicalPlanBuilder> {
    if segments.is_empty() {
        return plan_err!("a lineage has at least one segment");
    }
    let q = |name: &str| Expr::Column(Column::new(Some("metrics"), name));
    // An inherited system metric is never read: of one named system metric
    // only the viewer's own points count.
    let own_only = matches!(metric, Some(MetricFilter::Exact(m)) if !inheritable(m));
    let read: Vec<&Segment> = segments
        .iter()
        .filter(|s| !own_only || s.owner == viewer)
        .collect();
    let mut owners: Vec<i64> = read.iter().map(|s| s.owner as i64).collect();
    owners.sort_unstable();
    owners.dedup();
    let mut scan = points.latest(Some(&owners), "metrics")?;
    let from = read.iter().map(|s| s.from_step).min();
    if let Some(from) = from.filter(|&f| f > 0) {
        scan = scan.filter(q("step").gt_eq(lit(from as i64)))?;
    }
    let to = read
        .iter()
        .map(|s| s.to_step)
        .try_fold(0, |hi, t| t.map(|t| hi.max(t)));
    if let Some(to) = to {
        scan = scan.filter(q("step").lt_eq(lit(to as i64)))?;
    }
    if let Some(m) = metric {
        scan = scan.filter(m.expr(q("metric")))?;
    }
    Ok(scan)
}

/// The stitched series of `viewer`: its segment points, stitched (the
/// operator holds one run's series, which is the answer's size).
pub fn stitched_plan(
    points: &PointSource,
    viewer: RunId,
    segments: &[Segment],
    metric: Option<&MetricFilter>,
) -> DFResult<LogicalPlan> {
    let views: Vec<(RunId, Segment)> = segments.iter().map(|s| (viewer, *s)).collect();
    lineage_plan(points, &views, metric, Some(viewer), None)
}

/// The stitching operator over `owners`, as a plan.
fn stitch(
    owners: LogicalPlan,
    metric: Option<&MetricFilter>,
    views: &[(RunId, Segment)],
) -> DFResult<LogicalPlan> {
    let exact = match metric {
        Some(MetricFilter::Exact(name)) => Some(name.as_str()),
        _ => None,
    };
    let table = StitchedTable::try_new(owners, exact, Views::new(views))?;
    LogicalPlanBuilder::scan("stitched", provider_as_source(Arc::new(table)), None)?.build()
}

/// Stitched views of many runs of the metric `name` through the stitching
/// operator, ordered by `(run_id, step)`: for a caller that holds the
/// selected owners' points anyway (a chart), where the joined plan would fan
/// them out unordered.
pub fn stitched_views_plan(
    points: &PointSource,
    views: &[(RunId, Segment)],
    name: &str,
) -> DFResult<LogicalPlan> {
    let metric = MetricFilter::Exact(name.to_string());
    stitch(
        owner_points(points, views, Some(&metric), None)?,
        Some(&metric),
        views,
    )
}

/// The plan of a lineage view: the stitched series of `single` (whose
/// segments `views` are), or stitched views of many runs at once, reading an
/// owner's data once however many descendants inherit it. Of one metric, the
/// stitching operator slices the owners' sorted points per segment; of
/// several, the joined plan streams however many points the metrics hold.
/// `owner_filter` (over the owners' columns) filters the owners' points.
pub(super) fn lineage_plan(
    points: &PointSource,
    views: &[(RunId, Segment)],
    metric: Option<&MetricFilter>,
    single: Option<RunId>,
    owner_filter: Option<Expr>,
) -> DFResult<LogicalPlan> {
    match (single, metric) {
        (Some(viewer), _) => {
            let segments: Vec<Segment> = views.iter().map(|(_, s)| *s).collect();
            let mut owners = segment_points(points, viewer, &segments, metric)?;
            if let Some(filter) = owner_filter {
                owners = owners.filter(filter)?;
            }
            stitch(owners.build()?, metric, views)
        }
        (None, Some(MetricFilter::Exact(_))) => stitch(
            owner_points(points, views, metric, owner_filter)?,
            metric,
            views,
        ),
        (None, _) => joined_plan(points, views, metric, owner_filter),
    }
}

/// The latest points of every owner of `views`, of `metric`, that `filter`
/// keeps: what the stitching operator slices, and what the report reads to
/// cut each run's series in place.
pub fn owner_points(
    points: &PointSource,
    views: &[(RunId, Segment)],
    metric: Option<&MetricFilter>,
    filter: Option<Expr>,
) -> DFResult<LogicalPlan> {
    if views.is_empty() {
        return plan_err!("a family has at least one run");
    }
    let mut owners: Vec<i64> = views.iter().map(|(_, s)| s.owner as i64).collect();
    owners.sort_unstable();
    owners.dedup();
    let mut points = points.latest(Some(&owners), "m")?;
    if let Some(m) = metric {
        points = points.filter(m.expr(col("metric")))?;
    }
    if let Some(filter) = filter {
        points = points.filter(filter)?;
    }
    points.build()
}

/// Stitched views of many runs as one scan of the owners' points joined to
/// the `(viewer, owner, from_step, to_step)` segment list: it streams, holding
/// no more than a batch whatever the views cover.
fn joined_plan(
    points: &PointSource,
    views: &[(RunId, Segment)],
    metric: Option<&MetricFilter>,
    owner_filter: Option<Expr>,
) -> DFResult<LogicalPlan> {
    let points = owner_points(points, views, metric, owner_filter)?;
    let rows: Vec<Vec<Expr>> = views
        .iter()
        .map(|(viewer, s)| {
            vec![
                lit(*viewer as i64),
                lit(s.owner as i64),
                lit(s.from_step as i64),
                lit(s.to_step.map_or(i64::MAX, |t| t as i64)),
            ]
        })
        .collect();
    let segments = LogicalPlanBuilder::values(rows)?
        .project(vec![
            col("column1").alias("viewer"),
            col("column2").alias("owner"),
            col("column3").alias("from_step"),
            col("column4").alias("to_step"),
        ])?
        .alias("s")?
        .build()?;
    let s = |name: &str| Expr::Column(Column::new(Some("s"), name));
    let m = |name: &str| Expr::Column(Column::new(Some("m"), name));
    LogicalPlanBuilder::from(segments)
        .join(
            points,
            JoinType::Inner,
            (
                vec![Column::new(Some("s"), "owner")],
                vec![Column::new(Some("m"), "run_id")],
            ),
            Some(
                m("step").between(s("from_step"), s("to_step")).and(
                    s("viewer")
                        .eq(m("run_id"))
                        .or(inheritable_expr(m("metric"), metric)),
                ),
            ),
        )?
        .project(stitched_projection(
            s("viewer"),
            m("run_id"),
            s("viewer").not_eq(m("run_id")),
            "m",
        ))?
        .build()
}

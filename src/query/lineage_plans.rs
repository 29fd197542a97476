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

use super::metric_selection::MetricFilter;
use super::points::PointSource;
use super::stitch::{StitchedTable, Views};
use crate::catalog::{RunId, Segment};
use crate::ingest::SYSTEM_METRIC_PREFIX;

/// System metrics (`sys/…`) describe the host a run ran on: never inherited.
/// With one named metric the answer is known at planning time, which spares
/// a string comparison on every inherited row.
fn not_system_metric(metric: Expr, filter: Option<&MetricFilter>) -> Expr {
    match filter {
        Some(MetricFilter::Exact(m)) => lit(!m.starts_with(SYSTEM_METRIC_PREFIX)),
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

/// Most segments a scan predicate gives a term each. Each file a scan opens
/// rewrites and prunes with the whole predicate, at a cost that grows about
/// with the square of its terms (DataFusion 55; a scan of 101 one-run files
/// in a debug build: 0.1 s with 16 terms, 1.1 s with 32, 15 s with 100), so
/// one term per segment made deep lineages unusable. Up to this many
/// segments (lineages of depth 15) each keeps its own term.
const MAX_SEGMENT_TERMS: usize = 16;

/// Terms of the predicate of a deeper lineage, each covering a run of
/// neighbouring segments. A store that is not compacted yet holds a file per
/// ancestor: the stitched series of a depth-1,000 run, 1,000 files, took
/// 3.0 s with 16 terms, 1.8 s with 8 and 1.3 s with 4, where a plain scan of
/// those files takes 0.4 s.
const GROUPED_TERMS: usize = 4;

/// The points of `viewer`'s stitched series: one scan of the owners' points
/// whose predicate is the segment list itself, `(run_id = owner AND step in
/// range)` ORed, so statistics and the page index prune to exactly the
/// segments' pages (each stored point belongs to at most one segment).
///
/// Of more than [`MAX_SEGMENT_TERMS`] segments, a term covers several
/// neighbours: the range of their owners' ids and the steps they span
/// together. That is a superset of their points, which the stitching
/// operator cuts exactly.
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
    let per_term = match segments.len() {
        n if n <= MAX_SEGMENT_TERMS => 1,
        n => n.div_ceil(GROUPED_TERMS),
    };
    let in_segments = segments
        .chunks(per_term)
        .map(|group| {
            let (first, last) = (group[0], group[group.len() - 1]);
            let mut predicate = match group {
                [one] => q("run_id").eq(lit(one.owner as i64)),
                // The scan below already keeps the owners' rows only, so a
                // range of ids suffices (an IN list would be expanded into
                // one pruning term per owner, in every file opened).
                _ => {
                    let (lo, hi) = group.iter().fold((u64::MAX, 0), |(lo, hi), s| {
                        (lo.min(s.owner), hi.max(s.owner))
                    });
                    q("run_id").between(lit(lo as i64), lit(hi as i64))
                }
            };
            predicate = predicate.and(q("step").gt_eq(lit(first.from_step as i64)));
            if let Some(to) = last.to_step {
                predicate = predicate.and(q("step").lt_eq(lit(to as i64)));
            }
            if group.iter().all(|s| s.owner != viewer) {
                predicate = predicate.and(not_system_metric(q("metric"), metric));
            }
            predicate
        })
        .reduce(Expr::or)
        .expect("at least one segment");
    let mut owners: Vec<i64> = segments.iter().map(|s| s.owner as i64).collect();
    owners.sort_unstable();
    owners.dedup();
    let mut scan = points
        .latest(Some(&owners), "metrics")?
        .filter(in_segments)?;
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

/// Stitched views of many runs of the metrics `names` through the stitching
/// operator, ordered by `(run_id, metric, step)`: for a caller that holds the
/// selected owners' points anyway (the report, a chart), where the joined
/// plan would fan them out unordered. Several names are read in one scan of
/// the owners, which then holds all their points.
pub fn stitched_views_plan(
    points: &PointSource,
    views: &[(RunId, Segment)],
    names: &[String],
) -> DFResult<LogicalPlan> {
    match names {
        [] => plan_err!("stitched views need at least one metric"),
        [name] => {
            let metric = MetricFilter::Exact(name.clone());
            stitch(
                owner_points(points, views, Some(&metric), None)?,
                Some(&metric),
                views,
            )
        }
        several => {
            let list = several.iter().map(|n| lit(n.as_str())).collect();
            let owners = owner_points(
                points,
                views,
                None,
                Some(col("metric").in_list(list, false)),
            )?;
            stitch(owners, None, views)
        }
    }
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

/// The latest points of every owner of `views`, of `metric`, that `filter` keeps.
fn owner_points(
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
                        .or(not_system_metric(m("metric"), metric)),
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

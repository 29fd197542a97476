//! Lineage reads: stitched series of one run, a family or a project, planned
//! from the catalog snapshot a session was built with.
//!
//! [`Lineage`] is the one way to ask for them. The SQL table functions
//! ([`functions`]), the SDK read API, exports ([`export`]), the report, the
//! console's charts and the engine's fork check all call it; the inheritance
//! rules it applies (`Segment::rows`, `sees`, `inheritable`) live beside
//! `Segment` in the catalog.

pub mod export;
mod functions;
mod max_step;
mod plans;
mod pushdown;
pub mod stitch;
mod view;

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::plan_err;
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::SessionContext;

pub use self::export::SeriesExport;
pub use self::functions::register;
use self::view::LineageView;
use super::scan::{MetricFilter, PointSource};
use crate::catalog::{CatalogSnapshot, RunId, Segment};
use crate::error::{Error, Result};

/// The lineage reads of one session: its (scoped) catalog snapshot, which
/// resolves lineage without I/O, and its point source, which plans the scans.
#[derive(Debug, Clone)]
pub struct Lineage {
    snapshot: Arc<CatalogSnapshot>,
    points: Arc<PointSource>,
}

impl Lineage {
    /// Reads over `snapshot`'s runs and `points`.
    pub fn new(snapshot: Arc<CatalogSnapshot>, points: Arc<PointSource>) -> Self {
        Self { snapshot, points }
    }

    /// The lineage reads of a session built by `session::build`
    /// (kept in its configuration, so planning reaches them without I/O).
    pub fn of(ctx: &SessionContext) -> Result<Arc<Self>> {
        ctx.state()
            .config()
            .get_extension::<Self>()
            .ok_or_else(|| Error::invalid("not a forkline session"))
    }

    /// The catalog snapshot lineage is resolved from.
    pub fn snapshot(&self) -> &Arc<CatalogSnapshot> {
        &self.snapshot
    }

    /// Where the points are read from.
    pub fn points(&self) -> &Arc<PointSource> {
        &self.points
    }

    /// `run`'s segments, `(viewer, segment)` pairs as the plans take them;
    /// errors name `function`, the read asked for.
    fn views_of(&self, function: &str, run: RunId) -> DFResult<Vec<(RunId, Segment)>> {
        let segments = self
            .snapshot
            .segments(run)
            .or_else(|e| plan_err!("{function}: {e}"))?;
        Ok(segments.into_iter().map(|s| (run, s)).collect())
    }

    /// `run`'s stitched series (`stitched_metrics(run [, metric])`).
    pub fn stitched(
        &self,
        run: RunId,
        metric: Option<MetricFilter>,
    ) -> DFResult<Arc<dyn TableProvider>> {
        let views = self.views_of("stitched_metrics", run)?;
        self.view(views, metric, Some(run))
    }

    /// Every member of `run`'s family, each with its stitched series
    /// (`family_metrics(run [, metric])`).
    pub fn family(
        &self,
        run: RunId,
        metric: Option<MetricFilter>,
    ) -> DFResult<Arc<dyn TableProvider>> {
        const NAME: &str = "family_metrics";
        let family = self
            .snapshot
            .family(run)
            .or_else(|e| plan_err!("{NAME}: {e}"))?;
        let mut views = Vec::new();
        for member in &family {
            views.extend(self.views_of(NAME, member.run.id)?);
        }
        self.view(views, metric, None)
    }

    /// Every run of `project`, each with its stitched series, planned as one
    /// family view over all its families so each owner is read once
    /// (`project_metrics(project [, metric])`).
    pub fn project(
        &self,
        project: &str,
        metric: Option<MetricFilter>,
    ) -> DFResult<Arc<dyn TableProvider>> {
        const NAME: &str = "project_metrics";
        let mut views = Vec::new();
        for run in self.snapshot.runs().filter(|r| r.project == project) {
            views.extend(self.views_of(NAME, run.id)?);
        }
        if views.is_empty() {
            return plan_err!("{NAME}: unknown project `{project}`");
        }
        self.view(views, metric, None)
    }

    fn view(
        &self,
        views: Vec<(RunId, Segment)>,
        metric: Option<MetricFilter>,
        single: Option<RunId>,
    ) -> DFResult<Arc<dyn TableProvider>> {
        Ok(Arc::new(LineageView::try_new(
            self.points.clone(),
            views,
            metric,
            single,
        )?))
    }

    /// The latest points of every owner of `views`, of `metric`, that
    /// `filter` keeps: what the stitching operator slices, and what the
    /// report reads to cut each run's series in place.
    pub fn owner_points(
        &self,
        views: &[(RunId, Segment)],
        metric: Option<&MetricFilter>,
        filter: Option<Expr>,
    ) -> DFResult<LogicalPlan> {
        plans::owner_points(&self.points, views, metric, filter)
    }

    /// Stitched `views` of the metric `name`, ordered by `(run_id, step)`:
    /// for a caller that holds the selected owners' points anyway (a chart).
    pub fn stitched_views(&self, views: &[(RunId, Segment)], name: &str) -> DFResult<LogicalPlan> {
        plans::stitched_views_plan(&self.points, views, name)
    }

    /// Highest step of the stitched view `segments` over all metrics
    /// (`None` if it has no points), run on `ctx`.
    pub async fn max_step(
        &self,
        ctx: &SessionContext,
        segments: &[Segment],
    ) -> Result<Option<u64>> {
        max_step::max_step(ctx, &self.points, segments).await
    }
}

//! The stitching operator: stitched series produced by slicing each owner's
//! sorted points once per segment.
//!
//! A family shares its owners: a root's points are inherited by every
//! descendant. Joining points to the segment list and sorting the fanned-out
//! rows costs a hash probe per owner point and a sort of every output row.
//! Here the owners' points are read once, ordered by `(run_id, metric, step)`
//! (which compacted files already are, so ordering is a check), and each
//! segment of each viewer becomes a contiguous slice of one owner's rows. The
//! output comes out ordered by `(run_id, metric, step)` and says so, so an
//! `ORDER BY` on that key (or on `metric, step` of one run, or `run_id, step`
//! of one metric) costs nothing and grouping by run streams.
//!
//! The owners' points are held in memory (accounted to the memory pool), so
//! the planner uses this operator where they are bounded by what is asked
//! for: one run's series (the output itself), or one metric of many runs.
//! Where even that exceeds the pool, the operator reads the owners again and
//! sorts the fanned-out rows with a sort that spills (`spill`).

mod batches;
mod exec;
mod owner_points;
mod spill;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::project_schema;
use datafusion::datasource::TableType;
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::col;

pub use self::exec::StitchExec;
use crate::catalog::{RunId, Segment};

/// The columns of a stitched view, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Out {
    /// The viewing run.
    RunId,
    /// The owner the point was read from.
    SourceRunId,
    Metric,
    Step,
    Value,
    Time,
    /// Whether the point comes from an ancestor.
    Inherited,
}

const OUTPUTS: [Out; 7] = [
    Out::RunId,
    Out::SourceRunId,
    Out::Metric,
    Out::Step,
    Out::Value,
    Out::Time,
    Out::Inherited,
];

impl Out {
    /// The owner column this output is read from, if any.
    pub(super) fn owner_column(self) -> Option<&'static str> {
        match self {
            Out::SourceRunId => Some("run_id"),
            Out::Metric => Some("metric"),
            Out::Step => Some("step"),
            Out::Value => Some("value"),
            Out::Time => Some("time"),
            Out::RunId | Out::Inherited => None,
        }
    }
}

/// Every viewer's segments, viewers ascending, segments by step.
#[derive(Debug)]
pub struct Views(Vec<(RunId, Vec<Segment>)>);

impl Views {
    /// `(viewer, segment)` pairs in any order.
    pub fn new(pairs: &[(RunId, Segment)]) -> Self {
        let mut sorted: Vec<&(RunId, Segment)> = pairs.iter().collect();
        sorted.sort_by_key(|(viewer, s)| (*viewer, s.from_step));
        let mut views: Vec<(RunId, Vec<Segment>)> = Vec::new();
        for (viewer, segment) in sorted {
            match views.last_mut() {
                Some((last, segments)) if last == viewer => segments.push(*segment),
                _ => views.push((*viewer, vec![*segment])),
            }
        }
        Self(views)
    }

    /// `(viewer, segments)`, viewers ascending, segments by step.
    pub fn viewers(&self) -> &[(RunId, Vec<Segment>)] {
        &self.0
    }

    /// The one viewer, if there is one.
    pub(super) fn single(&self) -> Option<RunId> {
        match self.0.as_slice() {
            [(viewer, _)] => Some(*viewer),
            _ => None,
        }
    }
}

/// Stitched views of many runs, as a table.
#[derive(Debug)]
pub struct StitchedTable {
    schema: SchemaRef,
    /// The owners' latest points: `run_id, metric, step, value, time`.
    owners: LogicalPlan,
    /// The one metric `owners` holds, when the call named one.
    metric: Option<String>,
    views: Arc<Views>,
}

impl StitchedTable {
    /// A table of `views` over `owners` (filtered to `metric` when one is named).
    pub fn try_new(owners: LogicalPlan, metric: Option<&str>, views: Views) -> DFResult<Self> {
        let owner_schema = owners.schema().as_arrow().clone();
        let field =
            |name: &str| -> DFResult<Field> { Ok(owner_schema.field_with_name(name)?.clone()) };
        let schema = Arc::new(Schema::new(vec![
            Field::new("run_id", DataType::Int64, false),
            field("run_id")?.with_name("source_run_id"),
            field("metric")?,
            field("step")?,
            field("value")?,
            field("time")?,
            Field::new("inherited", DataType::Boolean, false),
        ]));
        Ok(Self {
            schema,
            owners,
            metric: metric.map(str::to_string),
            views: Arc::new(views),
        })
    }
}

#[async_trait]
impl TableProvider for StitchedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let outputs: Vec<Out> = match projection {
            Some(p) => p.iter().map(|&i| OUTPUTS[i]).collect(),
            None => OUTPUTS.to_vec(),
        };
        // Segments are located by `run_id`, `metric` and `step` (the metric
        // is known when one is named); other owner columns are read only
        // when asked for.
        let mut needed = vec!["run_id", "step"];
        if self.metric.is_none() {
            needed.push("metric");
        }
        for name in outputs.iter().filter_map(|o| o.owner_column()) {
            if !needed.contains(&name) {
                needed.push(name);
            }
        }
        let owners = LogicalPlanBuilder::from(self.owners.clone())
            .project(needed.iter().map(|n| col(*n)))?
            .build()?;
        let owners = state.create_physical_plan(&owners).await?;
        let schema = project_schema(&self.schema, projection)?;
        Ok(Arc::new(StitchExec::try_new(
            owners,
            self.views.clone(),
            self.metric.clone(),
            schema,
            outputs,
        )?))
    }
}

//! The stitching operator: the stitched series of many runs of one metric,
//! produced by slicing each owner's step-sorted points once per segment.
//!
//! A family shares its owners: a root's points are inherited by every
//! descendant. Joining points to the segment list and sorting the fanned-out
//! rows costs a hash probe per owner point and a sort of every output row.
//! Here the owners' points are read once, ordered by `(run_id, step)` (which
//! compacted files already are, so ordering is a check), and each segment of
//! each viewer becomes a contiguous slice of one owner's rows. The output
//! comes out ordered by `(run_id, step)` and says so, so an `ORDER BY run_id,
//! step` above costs nothing and grouping by run streams.
//!
//! One metric only: then each owner has at most one point per step and the
//! points held in memory are bounded by owners × steps. Calls over several
//! metrics keep the join plan, which streams.

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions, UInt32Array,
};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take, take_record_batch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ScalarValue, internal_err, project_schema};
use datafusion::datasource::TableType;
use datafusion::error::Result as DFResult;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_expr::{
    AcrossPartitions, ConstExpr, EquivalenceProperties, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream, execute_stream,
};
use datafusion::prelude::col;
use futures::{StreamExt, TryStreamExt};

use crate::catalog::{RunId, Segment};

/// The columns of a stitched view, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
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
    fn owner_column(self) -> Option<&'static str> {
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

/// Every viewer's segments, viewers ascending.
#[derive(Debug)]
pub struct Views {
    views: Vec<(RunId, Vec<Segment>)>,
    /// System metrics are never inherited: only a viewer's own segment counts.
    own_only: bool,
}

impl Views {
    /// `(viewer, segment)` pairs in any order; `own_only` drops inherited segments.
    pub fn new(pairs: &[(RunId, Segment)], own_only: bool) -> Self {
        let mut views: Vec<(RunId, Vec<Segment>)> = Vec::new();
        let mut sorted: Vec<&(RunId, Segment)> = pairs.iter().collect();
        sorted.sort_by_key(|(viewer, s)| (*viewer, s.from_step));
        for (viewer, segment) in sorted {
            if own_only && segment.owner != *viewer {
                continue;
            }
            match views.last_mut() {
                Some((last, segments)) if last == viewer => segments.push(*segment),
                _ => views.push((*viewer, vec![*segment])),
            }
        }
        Self { views, own_only }
    }
}

/// The stitched views of many runs over one metric, as a table.
#[derive(Debug)]
pub struct StitchedTable {
    schema: SchemaRef,
    /// The owners' latest points of the metric: `run_id, metric, step, value, time`.
    owners: LogicalPlan,
    metric: String,
    views: Arc<Views>,
}

impl StitchedTable {
    /// A table of `views` over `owners` (already filtered to `metric`).
    pub fn try_new(owners: LogicalPlan, metric: &str, views: Views) -> DFResult<Self> {
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
            metric: metric.to_string(),
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
        // Segments are located by `run_id` and `step`; other owner columns
        // are read only when asked for.
        let mut needed = vec!["run_id", "step"];
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
            &self.metric,
            schema,
            outputs,
        )?))
    }
}

/// Stitches one metric's owner points into every viewer's series (one output
/// partition, ordered by `(run_id, step)`).
#[derive(Debug)]
pub struct StitchExec {
    owners: Arc<dyn ExecutionPlan>,
    views: Arc<Views>,
    metric: String,
    schema: SchemaRef,
    outputs: Vec<Out>,
    properties: Arc<PlanProperties>,
}

impl StitchExec {
    fn try_new(
        owners: Arc<dyn ExecutionPlan>,
        views: Arc<Views>,
        metric: &str,
        schema: SchemaRef,
        outputs: Vec<Out>,
    ) -> DFResult<Self> {
        let column = |out: Out| -> Option<Arc<dyn PhysicalExpr>> {
            let i = outputs.iter().position(|o| *o == out)?;
            Some(Arc::new(PhysicalColumn::new(schema.field(i).name(), i)))
        };
        let ordering: Vec<PhysicalSortExpr> = [Out::RunId, Out::Step]
            .into_iter()
            .map_while(column)
            .map(PhysicalSortExpr::new_default)
            .collect();
        let mut equivalences = EquivalenceProperties::new(schema.clone());
        if !ordering.is_empty() {
            equivalences.add_ordering(ordering);
        }
        if let Some(metric_column) = column(Out::Metric) {
            let value = match metric_column.data_type(&schema)? {
                DataType::Utf8View => ScalarValue::Utf8View(Some(metric.to_string())),
                DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(metric.to_string())),
                _ => ScalarValue::Utf8(Some(metric.to_string())),
            };
            equivalences.add_constants([ConstExpr::new(
                metric_column,
                AcrossPartitions::Uniform(Some(value)),
            )])?;
        }
        let properties = PlanProperties::new(
            equivalences,
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Self {
            owners,
            views,
            metric: metric.to_string(),
            schema,
            outputs,
            properties: Arc::new(properties),
        })
    }
}

impl DisplayAs for StitchExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "StitchExec: metric={}, viewers={}, own_only={}",
            self.metric,
            self.views.views.len(),
            self.views.own_only
        )
    }
}

impl ExecutionPlan for StitchExec {
    fn name(&self) -> &str {
        "StitchExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.owners]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DFResult<TreeNodeRecursion>,
    ) -> DFResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let [owners] = <[_; 1]>::try_from(children)
            .or_else(|_| internal_err!("StitchExec takes one child"))?;
        Ok(Arc::new(Self::try_new(
            owners,
            self.views.clone(),
            &self.metric,
            self.schema.clone(),
            self.outputs.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("StitchExec has one partition, asked for {partition}");
        }
        let owners = self.owners.clone();
        let views = self.views.clone();
        let outputs = self.outputs.clone();
        let schema = self.schema.clone();
        let batch_size = context.session_config().batch_size();
        let collected = async move {
            let reservation = MemoryConsumer::new("StitchExec").register(context.memory_pool());
            let points = OwnerPoints::collect(owners, context, reservation).await?;
            let pieces = pieces(&points, &views);
            Ok::<_, datafusion::error::DataFusionError>(futures::stream::iter(Batches {
                points,
                pieces,
                next: (0, 0),
                batch_size: batch_size.max(1),
                schema,
                outputs,
            }))
        };
        let stream = futures::stream::once(collected).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// The owners' points of one metric in one batch ordered by `(run_id, step)`,
/// with each owner's row range.
struct OwnerPoints {
    batch: RecordBatch,
    /// `(owner, first row, end row)`, owners ascending.
    ranges: Vec<(i64, usize, usize)>,
    /// Held while the points are.
    _reservation: MemoryReservation,
}

impl OwnerPoints {
    async fn collect(
        plan: Arc<dyn ExecutionPlan>,
        context: Arc<TaskContext>,
        reservation: MemoryReservation,
    ) -> DFResult<Self> {
        let schema = plan.schema();
        let mut stream = execute_stream(plan, context)?;
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if batch.num_rows() > 0 {
                reservation.try_grow(batch.get_array_memory_size())?;
                batches.push(batch);
            }
        }
        let run = schema.index_of("run_id")?;
        let step = schema.index_of("step")?;
        // Compacted files are sorted and disjoint in run: ordered by their
        // first row, the batches usually concatenate into sorted order.
        let first = |b: &RecordBatch| {
            (
                b.column(run).as_primitive::<Int64Type>().value(0),
                b.column(step).as_primitive::<Int64Type>().value(0),
            )
        };
        batches.sort_by_key(first);
        let mut batch = concat_batches(&schema, &batches)?;
        drop(batches);
        reservation.try_grow(batch.get_array_memory_size())?;
        if !is_sorted(&batch, run, step) {
            let indices = lexsort_to_indices(
                &[run, step].map(|c| SortColumn {
                    values: batch.column(c).clone(),
                    options: None,
                }),
                None,
            )?;
            batch = take_record_batch(&batch, &indices)?;
        }
        let runs = batch.column(run).as_primitive::<Int64Type>().values();
        let mut ranges: Vec<(i64, usize, usize)> = Vec::new();
        let mut start = 0;
        for i in 1..=runs.len() {
            if i == runs.len() || runs[i] != runs[start] {
                ranges.push((runs[start], start, i));
                start = i;
            }
        }
        Ok(Self {
            batch,
            ranges,
            _reservation: reservation,
        })
    }

    /// Rows of `owner` with a step in the segment.
    fn rows(&self, owner: i64, segment: &Segment, step_column: usize) -> (usize, usize) {
        let Ok(i) = self.ranges.binary_search_by_key(&owner, |r| r.0) else {
            return (0, 0);
        };
        let (_, start, end) = self.ranges[i];
        let steps = &self
            .batch
            .column(step_column)
            .as_primitive::<Int64Type>()
            .values()[start..end];
        let from = steps.partition_point(|&s| s < segment.from_step as i64);
        let to = match segment.to_step {
            Some(to) => steps.partition_point(|&s| s <= to as i64),
            None => steps.len(),
        };
        (start + from, start + to.max(from))
    }
}

fn is_sorted(batch: &RecordBatch, run: usize, step: usize) -> bool {
    let runs = batch.column(run).as_primitive::<Int64Type>().values();
    let steps = batch.column(step).as_primitive::<Int64Type>().values();
    (1..runs.len()).all(|i| (runs[i - 1], steps[i - 1]) < (runs[i], steps[i]))
}

/// A contiguous run of owner rows in one viewer's output.
struct Piece {
    viewer: i64,
    owner: i64,
    start: usize,
    end: usize,
}

/// Every viewer's segments as owner row ranges, in output order.
fn pieces(points: &OwnerPoints, views: &Views) -> Vec<Piece> {
    let step = points
        .batch
        .schema()
        .index_of("step")
        .expect("owner points carry step");
    let mut out = Vec::new();
    for (viewer, segments) in &views.views {
        for segment in segments {
            let (start, end) = points.rows(segment.owner as i64, segment, step);
            if start < end {
                out.push(Piece {
                    viewer: *viewer as i64,
                    owner: segment.owner as i64,
                    start,
                    end,
                });
            }
        }
    }
    out
}

/// Output batches cut from the pieces, `batch_size` rows at a time.
struct Batches {
    points: OwnerPoints,
    pieces: Vec<Piece>,
    /// Next piece and the row offset within it.
    next: (usize, usize),
    batch_size: usize,
    schema: SchemaRef,
    outputs: Vec<Out>,
}

impl Iterator for Batches {
    type Item = DFResult<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut indices: Vec<u32> = Vec::with_capacity(self.batch_size);
        let mut viewers: Vec<i64> = Vec::with_capacity(self.batch_size);
        let mut inherited: Vec<bool> = Vec::with_capacity(self.batch_size);
        while indices.len() < self.batch_size {
            let Some(piece) = self.pieces.get(self.next.0) else {
                break;
            };
            let from = piece.start + self.next.1;
            let take_n = (piece.end - from).min(self.batch_size - indices.len());
            indices.extend((from..from + take_n).map(|i| i as u32));
            viewers.extend(std::iter::repeat_n(piece.viewer, take_n));
            inherited.extend(std::iter::repeat_n(piece.owner != piece.viewer, take_n));
            if from + take_n == piece.end {
                self.next = (self.next.0 + 1, 0);
            } else {
                self.next.1 += take_n;
            }
        }
        if indices.is_empty() {
            return None;
        }
        Some(self.build(indices, viewers, inherited))
    }
}

impl Batches {
    fn build(
        &self,
        indices: Vec<u32>,
        viewers: Vec<i64>,
        inherited: Vec<bool>,
    ) -> DFResult<RecordBatch> {
        let rows = indices.len();
        let indices = UInt32Array::from(indices);
        let viewers: ArrayRef = Arc::new(Int64Array::from(viewers));
        let inherited: ArrayRef = Arc::new(BooleanArray::from(inherited));
        let owner_schema = self.points.batch.schema();
        let columns = self
            .outputs
            .iter()
            .map(|out| -> DFResult<ArrayRef> {
                Ok(match out.owner_column() {
                    Some(name) => take(
                        self.points.batch.column(owner_schema.index_of(name)?),
                        &indices,
                        None,
                    )?,
                    None if *out == Out::RunId => viewers.clone(),
                    None => inherited.clone(),
                })
            })
            .collect::<DFResult<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

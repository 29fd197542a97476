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

use std::fmt;
use std::sync::Arc;

use arrow::array::make_comparator;
use arrow::array::{
    ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions, StringArray,
    UInt32Array,
};
use arrow::compute::kernels::cmp::distinct;
use arrow::compute::{
    SortColumn, SortOptions, cast, concat_batches, lexsort_to_indices, take, take_record_batch,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ScalarValue, internal_err, project_schema};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_expr::{
    AcrossPartitions, ConstExpr, EquivalenceProperties, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::Distribution;
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream, execute_stream,
};
use datafusion::prelude::col;
use futures::{StreamExt, TryStreamExt};

use crate::catalog::{RunId, Segment};
use crate::ingest::SYSTEM_METRIC_PREFIX;

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

    /// The one viewer, if there is one.
    fn single(&self) -> Option<RunId> {
        match self.0.as_slice() {
            [(viewer, _)] => Some(*viewer),
            _ => None,
        }
    }
}

/// System metrics describe the host a run ran on: never inherited.
fn inheritable(metric: &str) -> bool {
    !metric.starts_with(SYSTEM_METRIC_PREFIX)
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

/// Stitches owner points into every viewer's series (one output partition,
/// ordered by `(run_id, metric, step)`).
#[derive(Debug)]
pub struct StitchExec {
    owners: Arc<dyn ExecutionPlan>,
    views: Arc<Views>,
    metric: Option<String>,
    schema: SchemaRef,
    outputs: Vec<Out>,
    properties: Arc<PlanProperties>,
}

impl StitchExec {
    fn try_new(
        owners: Arc<dyn ExecutionPlan>,
        views: Arc<Views>,
        metric: Option<String>,
        schema: SchemaRef,
        outputs: Vec<Out>,
    ) -> DFResult<Self> {
        let column = |out: Out| -> Option<Arc<dyn PhysicalExpr>> {
            let i = outputs.iter().position(|o| *o == out)?;
            Some(Arc::new(PhysicalColumn::new(schema.field(i).name(), i)))
        };
        // A key column left out of the projection keeps the order of the
        // columns after it only where it is constant.
        let constant = |out: Out| match out {
            Out::RunId => views.single().is_some(),
            Out::Metric => metric.is_some(),
            _ => false,
        };
        let mut ordering = Vec::new();
        for out in [Out::RunId, Out::Metric, Out::Step] {
            match column(out) {
                Some(c) => ordering.push(PhysicalSortExpr::new_default(c)),
                None if constant(out) => {}
                None => break,
            }
        }
        let mut equivalences = EquivalenceProperties::new(schema.clone());
        if !ordering.is_empty() {
            equivalences.add_ordering(ordering);
        }
        let mut constants = Vec::new();
        if let (Some(c), Some(viewer)) = (column(Out::RunId), views.single()) {
            constants.push((c, ScalarValue::Int64(Some(viewer as i64))));
        }
        if let (Some(c), Some(m)) = (column(Out::Metric), &metric) {
            let value = match c.data_type(&schema)? {
                DataType::Utf8View => ScalarValue::Utf8View(Some(m.clone())),
                DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(m.clone())),
                _ => ScalarValue::Utf8(Some(m.clone())),
            };
            constants.push((c, value));
        }
        equivalences.add_constants(
            constants
                .into_iter()
                .map(|(c, v)| ConstExpr::new(c, AcrossPartitions::Uniform(Some(v)))),
        )?;
        let properties = PlanProperties::new(
            equivalences,
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Self {
            owners,
            views,
            metric,
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
            "StitchExec: metric={}, viewers={}",
            self.metric.as_deref().unwrap_or("*"),
            self.views.0.len(),
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

    /// One input partition: the owners' scans then end in a coalesce, which
    /// a distributed planner (Ballista) makes a stage boundary, so the scans
    /// spread over executors and this task reads all of their output.
    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        InputDistributionRequirements::new(vec![Distribution::SinglePartition])
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
            self.metric.clone(),
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
        let metric = self.metric.clone();
        let outputs = self.outputs.clone();
        let schema = self.schema.clone();
        let batch_size = context.session_config().batch_size();
        let collected = async move {
            let reservation = MemoryConsumer::new("StitchExec").register(context.memory_pool());
            let points =
                OwnerPoints::collect(owners, metric.as_deref(), context, reservation).await?;
            let pieces = points.pieces(&views);
            Ok::<_, DataFusionError>(futures::stream::iter(Batches {
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

/// The rows of one owner and metric.
struct Group {
    owner: i64,
    metric: String,
    start: usize,
    end: usize,
}

/// The owners' points in one batch ordered by `(run_id, metric, step)`,
/// grouped by owner and metric.
struct OwnerPoints {
    batch: RecordBatch,
    step: usize,
    /// Groups ascending by `(owner, metric)`.
    groups: Vec<Group>,
    /// Held while the points are.
    _reservation: MemoryReservation,
}

impl OwnerPoints {
    /// The points `plan` yields, which hold only `named` when it is given
    /// (their metric column may then be left unread).
    async fn collect(
        plan: Arc<dyn ExecutionPlan>,
        named: Option<&str>,
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
        let metric = schema.index_of("metric").ok();
        // Compacted files are sorted and disjoint in run: ordered by their
        // first row, the batches usually concatenate into sorted order.
        let mut firsts = Vec::with_capacity(batches.len());
        for (i, b) in batches.iter().enumerate() {
            let names = metric
                .map(|m| texts(&b.column(m).slice(0, 1)))
                .transpose()?;
            firsts.push((
                b.column(run).as_primitive::<Int64Type>().value(0),
                names.map(|n| n.value(0).to_string()),
                b.column(step).as_primitive::<Int64Type>().value(0),
                i,
            ));
        }
        firsts.sort();
        let ordered: Vec<&RecordBatch> = firsts.iter().map(|f| &batches[f.3]).collect();
        let mut batch = concat_batches(&schema, ordered)?;
        drop(batches);
        reservation.try_resize(batch.get_array_memory_size())?;
        let mut renamed = metric_changes(&batch, metric)?;
        if !is_sorted(&batch, run, metric, renamed.as_ref(), step)? {
            let columns: Vec<SortColumn> = [Some(run), metric, Some(step)]
                .into_iter()
                .flatten()
                .map(|c| SortColumn {
                    values: batch.column(c).clone(),
                    options: None,
                })
                .collect();
            batch = take_record_batch(&batch, &lexsort_to_indices(&columns, None)?)?;
            reservation.try_resize(batch.get_array_memory_size())?;
            renamed = metric_changes(&batch, metric)?;
        }
        let runs = batch.column(run).as_primitive::<Int64Type>().values();
        let mut groups = Vec::new();
        let mut start = 0;
        for i in 1..=runs.len() {
            let boundary = i == runs.len()
                || runs[i] != runs[i - 1]
                || renamed.as_ref().is_some_and(|c| c.value(i - 1));
            if boundary {
                let name = match metric {
                    Some(m) => texts(&batch.column(m).slice(start, 1))?
                        .value(0)
                        .to_string(),
                    None => named.unwrap_or_default().to_string(),
                };
                groups.push(Group {
                    owner: runs[start],
                    metric: name,
                    start,
                    end: i,
                });
                start = i;
            }
        }
        Ok(Self {
            batch,
            step,
            groups,
            _reservation: reservation,
        })
    }

    /// The groups of `owner`.
    fn of_owner(&self, owner: i64) -> &[Group] {
        let from = self.groups.partition_point(|g| g.owner < owner);
        let to = self.groups.partition_point(|g| g.owner <= owner);
        &self.groups[from..to]
    }

    /// Rows of `group` with a step in `segment`.
    fn rows(&self, group: &Group, segment: &Segment) -> (usize, usize) {
        let steps = &self
            .batch
            .column(self.step)
            .as_primitive::<Int64Type>()
            .values()[group.start..group.end];
        let from = steps.partition_point(|&s| s < segment.from_step as i64);
        let to = match segment.to_step {
            Some(to) => steps.partition_point(|&s| s <= to as i64),
            None => steps.len(),
        };
        (group.start + from, group.start + to.max(from))
    }

    /// Every viewer's series as owner row ranges, in output order: by viewer,
    /// then metric, then segment.
    fn pieces(&self, views: &Views) -> Vec<Piece> {
        let mut out = Vec::new();
        for (viewer, segments) in &views.0 {
            let viewer = *viewer as i64;
            // (metric, segment index, group) of every piece of this viewer.
            let mut found: Vec<(&str, usize, &Group)> = Vec::new();
            for (i, segment) in segments.iter().enumerate() {
                let owner = segment.owner as i64;
                for group in self.of_owner(owner) {
                    if owner == viewer || inheritable(&group.metric) {
                        found.push((&group.metric, i, group));
                    }
                }
            }
            found.sort_by_key(|(metric, i, _)| (*metric, *i));
            for (_, i, group) in found {
                let (start, end) = self.rows(group, &segments[i]);
                if start < end {
                    out.push(Piece {
                        viewer,
                        owner: group.owner,
                        start,
                        end,
                    });
                }
            }
        }
        out
    }
}

/// A string column's values, whichever string type it is read as.
fn texts(column: &ArrayRef) -> DFResult<StringArray> {
    Ok(cast(column, &DataType::Utf8)?.as_string::<i32>().clone())
}

/// Whether each row's metric differs from the next one's (vectorized: rows
/// are compared as strings only where this says they differ).
fn metric_changes(batch: &RecordBatch, metric: Option<usize>) -> DFResult<Option<BooleanArray>> {
    let Some(m) = metric else { return Ok(None) };
    let column = batch.column(m);
    if column.len() < 2 {
        return Ok(Some(BooleanArray::from(Vec::<bool>::new())));
    }
    let n = column.len() - 1;
    Ok(Some(distinct(&column.slice(0, n), &column.slice(1, n))?))
}

/// Whether the rows are strictly ascending by `(run_id, metric, step)`.
fn is_sorted(
    batch: &RecordBatch,
    run: usize,
    metric: Option<usize>,
    renamed: Option<&BooleanArray>,
    step: usize,
) -> DFResult<bool> {
    let runs = batch.column(run).as_primitive::<Int64Type>().values();
    let steps = batch.column(step).as_primitive::<Int64Type>().values();
    let names = metric
        .map(|m| make_comparator(batch.column(m), batch.column(m), SortOptions::default()))
        .transpose()?;
    Ok((1..runs.len()).all(|i| {
        if runs[i] != runs[i - 1] {
            return runs[i] > runs[i - 1];
        }
        match (renamed, &names) {
            (Some(renamed), Some(names)) if renamed.value(i - 1) => {
                names(i - 1, i) == std::cmp::Ordering::Less
            }
            _ => steps[i] > steps[i - 1],
        }
    }))
}

/// A contiguous run of owner rows in one viewer's output.
struct Piece {
    viewer: i64,
    owner: i64,
    start: usize,
    end: usize,
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

/// What the cluster codec (`crate::cluster`) carries of a [`StitchExec`]
/// across processes, and how it is rebuilt there.
impl StitchExec {
    /// Every viewer's segments.
    pub fn views(&self) -> &Views {
        &self.views
    }

    /// The one metric the owners hold, when the call named one.
    pub fn metric(&self) -> Option<&str> {
        self.metric.as_deref()
    }

    /// The output columns, as positions in the full stitched schema.
    pub fn output_positions(&self) -> Vec<usize> {
        self.outputs
            .iter()
            .map(|o| OUTPUTS.iter().position(|p| p == o).unwrap_or_default())
            .collect()
    }

    /// The operator [`StitchExec::views`], [`StitchExec::metric`], its
    /// schema and [`StitchExec::output_positions`] describe, over `owners`.
    pub fn from_parts(
        owners: Arc<dyn ExecutionPlan>,
        views: Views,
        metric: Option<String>,
        schema: SchemaRef,
        positions: &[usize],
    ) -> DFResult<Self> {
        let outputs = positions
            .iter()
            .map(|&i| {
                OUTPUTS.get(i).copied().ok_or_else(|| {
                    DataFusionError::Plan(format!("stitched view has no output column {i}"))
                })
            })
            .collect::<DFResult<Vec<_>>>()?;
        if outputs.len() != schema.fields().len() {
            return internal_err!(
                "StitchExec: {} outputs for {} columns",
                outputs.len(),
                schema.fields().len()
            );
        }
        Self::try_new(owners, Arc::new(views), metric, schema, outputs)
    }
}

impl Views {
    /// `(viewer, segments)`, viewers ascending, segments by step.
    pub fn viewers(&self) -> &[(RunId, Vec<Segment>)] {
        &self.0
    }
}

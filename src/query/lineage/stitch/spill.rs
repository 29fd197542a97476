//! Stitching when the owners' points do not fit the memory pool.
//!
//! The in-memory operator holds every owner's points so that each segment is
//! a slice of them. When the pool refuses them, the owners are read again as
//! a stream and each row is fanned out to the segments that see it (a row of
//! an owner goes to the owner itself and to each descendant whose segment
//! covers its step); DataFusion's sort, which spills to disk beyond the pool,
//! then restores the operator's `(run_id, metric, step)` order. Memory stays
//! within the pool whatever the family holds, at the cost of the sort.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions};
use arrow::array::{StringArray, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use futures::{StreamExt, TryStreamExt};

use super::{Out, Views};
use crate::catalog::inheritable;

/// Whether `error` is the memory pool refusing a reservation.
pub(super) fn is_pool_exhausted(error: &DataFusionError) -> bool {
    matches!(error.find_root(), DataFusionError::ResourcesExhausted(_))
}

/// The stitched rows of `views` over a fresh read of `owners`, in the
/// operator's order, with `schema` (the operator's outputs).
pub(super) fn sorted_stream(
    owners: Arc<dyn ExecutionPlan>,
    views: &Views,
    metric: Option<String>,
    outputs: Vec<Out>,
    schema: SchemaRef,
    context: Arc<TaskContext>,
) -> DFResult<SendableRecordBatchStream> {
    // A plan's operators keep the state of their one execution
    // (repartitioning hands out each partition once): read from a fresh copy.
    let owners = reset_plan_states(owners)?;
    let fanout = Arc::new(Fanout::try_new(owners, views, metric, outputs, &schema)?);
    let internal = fanout.schema.clone();
    let first = fanout.keys;
    let keys: Vec<PhysicalSortExpr> = (0..first)
        .map(|i| {
            let column = PhysicalColumn::new(internal.field(i).name(), i);
            PhysicalSortExpr::new_default(Arc::new(column))
        })
        .collect();
    let partition: Arc<dyn PartitionStream> = Arc::new(FanoutPartition(fanout));
    let source = StreamingTableExec::try_new(internal, vec![partition], None, [], false, None)?;
    let ordering = LexOrdering::new(keys).expect("viewer and step are always sort keys");
    let sorted = SortExec::new(ordering, Arc::new(source)).execute(0, context)?;
    let out = schema.clone();
    let rows = sorted.map(move |batch| {
        let batch = batch?;
        Ok(RecordBatch::try_new_with_options(
            out.clone(),
            batch.columns()[first..].to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?)
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows)))
}

/// Owner rows fanned out to the segments that see them, unordered, with the
/// sort keys (`viewer`, the metric when the owners hold it, `step`) first and
/// the operator's outputs after them.
#[derive(Debug)]
struct Fanout {
    owners: Arc<dyn ExecutionPlan>,
    /// Of each owner, the `(viewer, from_step, to_step)` segments that read it.
    seen_by: HashMap<i64, Vec<(i64, i64, i64)>>,
    /// The one metric the owners hold when the call named it.
    named: Option<String>,
    outputs: Vec<Out>,
    /// Sort keys, then outputs.
    schema: SchemaRef,
    /// How many sort keys lead the schema.
    keys: usize,
}

impl Fanout {
    fn try_new(
        owners: Arc<dyn ExecutionPlan>,
        views: &Views,
        named: Option<String>,
        outputs: Vec<Out>,
        output_schema: &SchemaRef,
    ) -> DFResult<Self> {
        let mut seen_by: HashMap<i64, Vec<(i64, i64, i64)>> = HashMap::new();
        for (viewer, segments) in &views.0 {
            for s in segments {
                let to = s.to_step.map_or(i64::MAX, |t| t as i64);
                seen_by.entry(s.owner as i64).or_default().push((
                    *viewer as i64,
                    s.from_step as i64,
                    to,
                ));
            }
        }
        let owner_schema = owners.schema();
        let mut fields = vec![Field::new("__viewer", DataType::Int64, false)];
        if let Ok(metric) = owner_schema.field_with_name("metric") {
            fields.push(metric.clone().with_name("__metric"));
        }
        fields.push(
            owner_schema
                .field_with_name("step")?
                .clone()
                .with_name("__step"),
        );
        let keys = fields.len();
        fields.extend(output_schema.fields().iter().map(|f| f.as_ref().clone()));
        Ok(Self {
            owners,
            seen_by,
            named,
            outputs,
            schema: Arc::new(Schema::new(fields)),
            keys,
        })
    }

    /// The rows `batch` (of the owners) gives, as `(row, viewer)` pairs.
    fn fan(&self, batch: &RecordBatch) -> DFResult<(Vec<u32>, Vec<i64>)> {
        let schema = batch.schema();
        let runs = batch
            .column(schema.index_of("run_id")?)
            .as_primitive::<Int64Type>()
            .values();
        let steps = batch
            .column(schema.index_of("step")?)
            .as_primitive::<Int64Type>()
            .values();
        let names: Option<StringArray> = match schema.index_of("metric") {
            Ok(m) => Some(
                cast(batch.column(m), &DataType::Utf8)?
                    .as_string::<i32>()
                    .clone(),
            ),
            Err(_) => None,
        };
        let named_inheritable = self.named.as_deref().is_none_or(inheritable);
        let (mut rows, mut viewers) = (Vec::new(), Vec::new());
        let mut start = 0;
        while start < runs.len() {
            let owner = runs[start];
            let end = start + runs[start..].iter().take_while(|&&r| r == owner).count();
            if let Some(seen) = self.seen_by.get(&owner) {
                for row in start..end {
                    let step = steps[row];
                    let shared = match &names {
                        Some(names) => inheritable(names.value(row)),
                        None => named_inheritable,
                    };
                    for &(viewer, from, to) in seen {
                        if (from..=to).contains(&step) && (viewer == owner || shared) {
                            rows.push(row as u32);
                            viewers.push(viewer);
                        }
                    }
                }
            }
            start = end;
        }
        Ok((rows, viewers))
    }

    /// The rows `batch` fans out to, at most `batch_size` a batch (an owner
    /// batch seen by many viewers fans out to many times its size).
    fn build(&self, batch: &RecordBatch, batch_size: usize) -> DFResult<Vec<RecordBatch>> {
        let (rows, viewers) = self.fan(batch)?;
        rows.chunks(batch_size)
            .zip(viewers.chunks(batch_size))
            .map(|(rows, viewers)| self.cut(batch, rows, viewers))
            .collect()
    }

    fn cut(&self, batch: &RecordBatch, rows: &[u32], viewers: &[i64]) -> DFResult<RecordBatch> {
        let schema = batch.schema();
        let indices = UInt32Array::from(rows.to_vec());
        let owners = take(batch.column(schema.index_of("run_id")?), &indices, None)?;
        let inherited: BooleanArray = owners
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .zip(viewers)
            .map(|(owner, viewer)| Some(owner != viewer))
            .collect();
        let viewers: ArrayRef = Arc::new(Int64Array::from(viewers.to_vec()));
        let inherited: ArrayRef = Arc::new(inherited);
        let column = |name: &str| -> DFResult<ArrayRef> {
            Ok(take(batch.column(schema.index_of(name)?), &indices, None)?)
        };
        let mut columns = vec![viewers.clone()];
        if self.keys == 3 {
            columns.push(column("metric")?);
        }
        columns.push(column("step")?);
        for out in &self.outputs {
            columns.push(match out.owner_column() {
                Some(name) => column(name)?,
                None if *out == Out::RunId => viewers.clone(),
                None => inherited.clone(),
            });
        }
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(indices.len())),
        )?)
    }
}

/// The fan-out as the one partition of a scan the sort reads.
#[derive(Debug)]
struct FanoutPartition(Arc<Fanout>);

impl PartitionStream for FanoutPartition {
    fn schema(&self) -> &SchemaRef {
        &self.0.schema
    }

    fn execute(&self, context: Arc<TaskContext>) -> SendableRecordBatchStream {
        let fanout = self.0.clone();
        let owners = fanout.owners.clone();
        let batch_size = context.session_config().batch_size().max(1);
        let rows = futures::stream::once(async move { execute_stream(owners, context) })
            .try_flatten()
            .map(move |batch| fanout.build(&batch?, batch_size))
            .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
            .try_flatten();
        Box::pin(RecordBatchStreamAdapter::new(self.0.schema.clone(), rows))
    }
}

//! The owners' points of a stitching, held in memory and sliced per segment.

use arrow::array::make_comparator;
use arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::compute::kernels::cmp::distinct;
use arrow::compute::{
    SortColumn, SortOptions, cast, concat_batches, lexsort_to_indices, take_record_batch,
};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::error::Result as DFResult;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::StreamExt;
use std::sync::Arc;

use super::{Views, inheritable};
use crate::catalog::Segment;

/// A contiguous run of owner rows in one viewer's output.
pub(super) struct Piece {
    pub(super) viewer: i64,
    pub(super) owner: i64,
    pub(super) start: usize,
    pub(super) end: usize,
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
pub(super) struct OwnerPoints {
    pub(super) batch: RecordBatch,
    step: usize,
    /// Groups ascending by `(owner, metric)`.
    groups: Vec<Group>,
    /// Held while the points are.
    _reservation: MemoryReservation,
}

impl OwnerPoints {
    /// The points `plan` yields, which hold only `named` when it is given
    /// (their metric column may then be left unread).
    pub(super) async fn collect(
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
    pub(super) fn pieces(&self, views: &Views) -> Vec<Piece> {
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

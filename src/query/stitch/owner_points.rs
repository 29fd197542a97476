//! The owners' points of a stitching, held in memory and sliced per segment.

use arrow::array::make_comparator;
use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::compute::kernels::cmp::distinct;
use arrow::compute::{
    SortColumn, SortOptions, cast, concat_batches, lexsort_to_indices, take_record_batch,
};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::internal_datafusion_err;
use datafusion::error::Result as DFResult;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::StreamExt;
use std::sync::Arc;

use super::{Views, sees, segment_rows};
use crate::catalog::{RunId, Segment};

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

/// The owners' points ordered by `(run_id, metric, step)` across the batches
/// they were read in, grouped by owner and metric.
///
/// The batches are kept as read, not concatenated: copying every owner row
/// once more (and faulting in the pages of a buffer that size) cost a
/// stitched series of every metric a third of its time. Rows are numbered
/// across the batches in order; a piece of output may span two batches.
pub(super) struct OwnerPoints {
    batches: Vec<RecordBatch>,
    /// Where each batch's rows start in that numbering, and the row count last.
    offsets: Vec<usize>,
    /// `step` of every row, in that numbering.
    steps: Vec<i64>,
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
        let columns = KeyColumns {
            run: schema.index_of("run_id")?,
            step: schema.index_of("step")?,
            metric: schema.index_of("metric").ok(),
        };
        // Compacted files are sorted and disjoint in run: ordered by their
        // first row, the batches are usually in sorted order as they are.
        let mut firsts = Vec::with_capacity(batches.len());
        for (i, b) in batches.iter().enumerate() {
            firsts.push((
                b.column(columns.run).as_primitive::<Int64Type>().value(0),
                columns.metric.map(|m| name_at(b, m, 0)).transpose()?,
                b.column(columns.step).as_primitive::<Int64Type>().value(0),
                i,
            ));
        }
        firsts.sort();
        let mut slots: Vec<Option<RecordBatch>> = batches.into_iter().map(Some).collect();
        let ordered: Vec<RecordBatch> = firsts.iter().filter_map(|f| slots[f.3].take()).collect();
        let rows: usize = ordered.iter().map(RecordBatch::num_rows).sum();
        // The run and step of every row, besides the batches.
        let keys = 2 * rows * std::mem::size_of::<i64>();
        reservation.try_grow(keys)?;
        let ordered = match Layout::of(&ordered, &columns, named, true)? {
            Some(layout) => return Ok(layout.into_points(ordered, reservation)),
            None => ordered,
        };
        let batch = concat_batches(&schema, &ordered)?;
        drop(ordered);
        let sort: Vec<SortColumn> = [Some(columns.run), columns.metric, Some(columns.step)]
            .into_iter()
            .flatten()
            .map(|c| SortColumn {
                values: batch.column(c).clone(),
                options: None,
            })
            .collect();
        let sorted = vec![take_record_batch(
            &batch,
            &lexsort_to_indices(&sort, None)?,
        )?];
        drop(batch);
        let held: usize = sorted.iter().map(RecordBatch::get_array_memory_size).sum();
        reservation.try_resize(held + keys)?;
        let layout = Layout::of(&sorted, &columns, named, false)?
            .ok_or_else(|| internal_datafusion_err!("an unchecked layout is always built"))?;
        Ok(layout.into_points(sorted, reservation))
    }

    /// The batch holding row `row` and the row's index in it.
    pub(super) fn locate(&self, row: usize) -> (usize, usize) {
        locate(&self.offsets, row)
    }

    /// The batches, in the order their rows are numbered.
    pub(super) fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// The groups of `owner`.
    fn of_owner(&self, owner: i64) -> &[Group] {
        let from = self.groups.partition_point(|g| g.owner < owner);
        let to = self.groups.partition_point(|g| g.owner <= owner);
        &self.groups[from..to]
    }

    /// Rows of `group` with a step in `segment`.
    fn rows(&self, group: &Group, segment: &Segment) -> (usize, usize) {
        let rows = segment_rows(&self.steps[group.start..group.end], |&s| s, segment);
        (group.start + rows.start, group.start + rows.end)
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
                    if sees(viewer as RunId, owner as RunId, &group.metric) {
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

/// Where the key columns are in the owners' batches.
struct KeyColumns {
    run: usize,
    step: usize,
    metric: Option<usize>,
}

/// The metric of row `row` of `batch`.
fn name_at(batch: &RecordBatch, metric: usize, row: usize) -> DFResult<String> {
    Ok(texts(&batch.column(metric).slice(row, 1))?
        .value(0)
        .to_string())
}

/// The batch of rows numbered from `offsets` that holds `row`, and the row's index in it.
fn locate(offsets: &[usize], row: usize) -> (usize, usize) {
    let batch = offsets.partition_point(|&o| o <= row) - 1;
    (batch, row - offsets[batch])
}

/// The row numbering and the groups of batches read one after another.
struct Layout {
    offsets: Vec<usize>,
    steps: Vec<i64>,
    groups: Vec<Group>,
}

impl Layout {
    /// The layout of `batches` in this order; with `check`, `None` unless
    /// their rows are strictly ascending by `(run_id, metric, step)`.
    fn of(
        batches: &[RecordBatch],
        columns: &KeyColumns,
        named: Option<&str>,
        check: bool,
    ) -> DFResult<Option<Self>> {
        let mut offsets = Vec::with_capacity(batches.len() + 1);
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut runs = Vec::with_capacity(rows);
        let mut steps = Vec::with_capacity(rows);
        // Rows after which the metric changes (vectorized within a batch,
        // the one row pair across each boundary compared on its own).
        let mut renamed = vec![false; rows];
        let mut at = 0;
        for (i, batch) in batches.iter().enumerate() {
            offsets.push(at);
            runs.extend_from_slice(
                batch
                    .column(columns.run)
                    .as_primitive::<Int64Type>()
                    .values(),
            );
            steps.extend_from_slice(
                batch
                    .column(columns.step)
                    .as_primitive::<Int64Type>()
                    .values(),
            );
            if let Some(m) = columns.metric {
                let column = batch.column(m);
                let n = column.len();
                if n > 1 {
                    let changed = distinct(&column.slice(0, n - 1), &column.slice(1, n - 1))?;
                    for r in changed.values().set_indices() {
                        renamed[at + r] = true;
                    }
                }
                if i > 0 {
                    let prev = &batches[i - 1];
                    let last = prev.num_rows() - 1;
                    let cmp = make_comparator(prev.column(m), column, SortOptions::default())?;
                    renamed[at - 1] = cmp(last, 0) != std::cmp::Ordering::Equal;
                }
            }
            at += batch.num_rows();
        }
        offsets.push(at);
        let name = |row: usize| -> DFResult<String> {
            match columns.metric {
                Some(m) => {
                    let (batch, at) = locate(&offsets, row);
                    name_at(&batches[batch], m, at)
                }
                None => Ok(named.unwrap_or_default().to_string()),
            }
        };
        let mut groups: Vec<Group> = Vec::new();
        let mut start = 0;
        for i in 1..=rows {
            if i < rows && runs[i] == runs[i - 1] && !renamed[i - 1] {
                continue;
            }
            let group = Group {
                owner: runs[start],
                metric: name(start)?,
                start,
                end: i,
            };
            if check {
                let after = groups
                    .last()
                    .is_none_or(|g| (g.owner, &g.metric) < (group.owner, &group.metric));
                if !after || !steps[start..i].windows(2).all(|w| w[0] < w[1]) {
                    return Ok(None);
                }
            }
            groups.push(group);
            start = i;
        }
        Ok(Some(Self {
            offsets,
            steps,
            groups,
        }))
    }

    fn into_points(self, batches: Vec<RecordBatch>, reservation: MemoryReservation) -> OwnerPoints {
        OwnerPoints {
            batches,
            offsets: self.offsets,
            steps: self.steps,
            groups: self.groups,
            _reservation: reservation,
        }
    }
}

/// A string column's values, whichever string type it is read as.
fn texts(column: &ArrayRef) -> DFResult<StringArray> {
    Ok(cast(column, &DataType::Utf8)?.as_string::<i32>().clone())
}

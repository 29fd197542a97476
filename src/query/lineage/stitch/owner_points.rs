//! The owners' points of a stitching, held in memory and sliced per segment.

use arrow::array::make_comparator;
use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::buffer::BooleanBuffer;
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

use super::Views;
use crate::catalog::{RunId, Segment, sees};

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
    /// Where `step` is in the batches.
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
        let ordered = match Layout::of(&ordered, &columns, named, true)? {
            Some(layout) => return Ok(layout.into_points(ordered, columns.step, reservation)),
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
        reservation.try_resize(held)?;
        let layout = Layout::of(&sorted, &columns, named, false)?
            .ok_or_else(|| internal_datafusion_err!("an unchecked layout is always built"))?;
        Ok(layout.into_points(sorted, columns.step, reservation))
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
        let rows = segment.range(group.end - group.start, |before| {
            self.first_failing(group, before) - group.start
        });
        (group.start + rows.start, group.start + rows.end)
    }

    /// The first row of `group` whose step fails `before` (which holds for
    /// a prefix of the group's rows), searched batch by batch.
    fn first_failing(&self, group: &Group, before: &dyn Fn(i64) -> bool) -> usize {
        let (mut batch, _) = self.locate(group.start);
        while batch + 1 < self.offsets.len() && self.offsets[batch] < group.end {
            let base = self.offsets[batch];
            let from = group.start.max(base) - base;
            let to = group.end.min(self.offsets[batch + 1]) - base;
            let steps = &self.batches[batch]
                .column(self.step)
                .as_primitive::<Int64Type>()
                .values()[from..to];
            let k = steps.partition_point(|&s| before(s));
            if k < steps.len() {
                return base + from + k;
            }
            batch += 1;
        }
        group.end
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
    groups: Vec<Group>,
}

impl Layout {
    /// The layout of `batches` in this order; with `check`, `None` unless
    /// their rows are strictly ascending by `(run_id, metric, step)`.
    ///
    /// Group boundaries are found batch by batch (a word of 64 row pairs at
    /// a time), the one row pair across each batch boundary on its own: no
    /// key is copied out of the batches, whose owners can hold millions of rows.
    fn of(
        batches: &[RecordBatch],
        columns: &KeyColumns,
        named: Option<&str>,
        check: bool,
    ) -> DFResult<Option<Self>> {
        let mut offsets = Vec::with_capacity(batches.len() + 1);
        let mut groups: Vec<Group> = Vec::new();
        // Where the open group starts: its row, batch and row in that batch.
        let mut open = (0, 0, 0);
        let mut at = 0;
        // Closes the open group at `end`; `false` if it is not after the last one.
        let close = |groups: &mut Vec<Group>,
                     (start, batch, row): (usize, usize, usize),
                     end: usize|
         -> DFResult<bool> {
            let b: &RecordBatch = &batches[batch];
            let group = Group {
                owner: b.column(columns.run).as_primitive::<Int64Type>().value(row),
                metric: match columns.metric {
                    Some(m) => name_at(b, m, row)?,
                    None => named.unwrap_or_default().to_string(),
                },
                start,
                end,
            };
            let after = groups
                .last()
                .is_none_or(|g| (g.owner, &g.metric) < (group.owner, &group.metric));
            groups.push(group);
            Ok(after)
        };
        for (i, batch) in batches.iter().enumerate() {
            offsets.push(at);
            let n = batch.num_rows();
            let runs = batch
                .column(columns.run)
                .as_primitive::<Int64Type>()
                .values();
            let steps = batch
                .column(columns.step)
                .as_primitive::<Int64Type>()
                .values();
            if i > 0 {
                let prev = &batches[i - 1];
                let last = prev.num_rows() - 1;
                let prev_runs = prev.column(columns.run).as_primitive::<Int64Type>();
                let mut new_group = prev_runs.value(last) != runs[0];
                if let Some(m) = columns.metric {
                    let cmp =
                        make_comparator(prev.column(m), batch.column(m), SortOptions::default())?;
                    new_group |= cmp(last, 0) != std::cmp::Ordering::Equal;
                }
                if new_group {
                    if !close(&mut groups, open, at)? && check {
                        return Ok(None);
                    }
                    open = (at, i, 0);
                } else if check {
                    let prev_step = prev
                        .column(columns.step)
                        .as_primitive::<Int64Type>()
                        .value(last);
                    if prev_step >= steps[0] {
                        return Ok(None);
                    }
                }
            }
            if n > 1 {
                let renamed = match columns.metric {
                    Some(m) => {
                        let column = batch.column(m);
                        Some(distinct(&column.slice(0, n - 1), &column.slice(1, n - 1))?)
                    }
                    None => None,
                };
                let cuts = BooleanBuffer::collect_bool(n - 1, |r| {
                    runs[r] != runs[r + 1] || renamed.as_ref().is_some_and(|c| c.value(r))
                });
                if check {
                    let ascending = steps
                        .windows(2)
                        .enumerate()
                        .all(|(r, w)| w[0] < w[1] || cuts.value(r));
                    if !ascending {
                        return Ok(None);
                    }
                }
                for r in cuts.set_indices() {
                    if !close(&mut groups, open, at + r + 1)? && check {
                        return Ok(None);
                    }
                    open = (at + r + 1, i, r + 1);
                }
            }
            at += n;
        }
        offsets.push(at);
        if at > 0 && !close(&mut groups, open, at)? && check {
            return Ok(None);
        }
        Ok(Some(Self { offsets, groups }))
    }

    fn into_points(
        self,
        batches: Vec<RecordBatch>,
        step: usize,
        reservation: MemoryReservation,
    ) -> OwnerPoints {
        OwnerPoints {
            batches,
            offsets: self.offsets,
            step,
            groups: self.groups,
            _reservation: reservation,
        }
    }
}

/// A string column's values, whichever string type it is read as.
fn texts(column: &ArrayRef) -> DFResult<StringArray> {
    Ok(cast(column, &DataType::Utf8)?.as_string::<i32>().clone())
}

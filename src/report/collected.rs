//! The stitched series of a report scan, gathered as its ordered batches arrive.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::kernels::cmp::distinct;
use arrow::datatypes::{DataType, Float64Type, Int64Type};

use super::stats::FiniteSeries;
use crate::catalog::RunId;
use crate::error::{Error, Result};

/// Each run's stitched series of one metric (its finite points), by run.
pub(super) type Stitched = HashMap<RunId, FiniteSeries>;

/// The series of a scan of `names`, by metric in the order of `names`.
pub(super) struct Collected {
    names: Vec<String>,
    done: Vec<Stitched>,
}

impl Collected {
    pub(super) fn new(names: &[String]) -> Self {
        Self {
            names: names.to_vec(),
            done: vec![HashMap::new(); names.len()],
        }
    }

    /// Adds a batch of `run_id, step, value, inherited`, and `metric` when
    /// the scan reads more than one. The stitching operator sends each
    /// series whole, in `(run, metric, step)` order, so a batch is a few
    /// long stretches of one series each.
    pub(super) fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::invalid(format!("stitched plan lacks column {name}")))
        };
        let runs = column("run_id")?.as_primitive::<Int64Type>();
        let steps = column("step")?.as_primitive::<Int64Type>();
        let values = column("value")?.as_primitive::<Float64Type>();
        let inherited = column("inherited")?.as_boolean();
        let metrics = match self.names.len() {
            1 => None,
            _ => Some(Metrics::new(column("metric")?)?),
        };
        let nulls = runs.null_count() + steps.null_count() + values.null_count() > 0;
        let run_values = runs.values();
        let starts = stretches(run_values, metrics.as_ref());
        for (k, &start) in starts.iter().enumerate() {
            let end = starts.get(k + 1).copied().unwrap_or(batch.num_rows());
            let metric = match &metrics {
                Some(m) => {
                    let name = m.name(start)?;
                    self.names.iter().position(|n| n == name).ok_or_else(|| {
                        Error::invalid(format!("stitched scan returned unasked metric {name}"))
                    })?
                }
                None => 0,
            };
            let series = self.done[metric]
                .entry(run_values[start] as RunId)
                .or_default();
            let flags = inherited.values().slice(start, end - start);
            if nulls {
                for (j, flag) in (start..end).zip(flags.iter()) {
                    if runs.is_null(j) || steps.is_null(j) {
                        continue;
                    }
                    let value = match values.is_null(j) {
                        true => f64::NAN,
                        false => values.value(j),
                    };
                    series.push(steps.value(j).max(0) as u64, value, flag);
                }
            } else {
                let (steps, values) = (steps.values(), values.values());
                series.extend(&steps[start..end], &values[start..end], &flags);
            }
        }
        Ok(())
    }

    /// Every series read, by metric in the order asked, then by run, each
    /// in step order.
    pub(super) fn finish(self) -> Vec<Stitched> {
        // Already so when the plan keeps the operator's order; checked, not assumed.
        self.done
            .into_iter()
            .map(|runs| {
                runs.into_iter()
                    .map(|(run, series)| (run, series.sorted()))
                    .collect()
            })
            .collect()
    }
}

/// Where each stretch of rows of one run and metric starts. Every row is
/// compared with the next, a word of 64 at a time: by run id, and by the
/// metric's 16-byte view where the column has views. A name of up to 12
/// bytes is held whole in its view; a longer one compared by view may cut
/// a stretch where the name does not change, and both parts then go to the
/// same series.
fn stretches(runs: &[i64], metrics: Option<&Metrics>) -> Vec<usize> {
    let n = runs.len();
    if n == 0 {
        return Vec::new();
    }
    let pairs = n - 1;
    let changes = match metrics.map(|m| &m.changes) {
        None => BooleanBuffer::collect_bool(pairs, |i| runs[i] != runs[i + 1]),
        Some(Changes::Views(views)) => BooleanBuffer::collect_bool(pairs, |i| {
            runs[i] != runs[i + 1] || views[i] != views[i + 1]
        }),
        Some(Changes::Compared(names)) => {
            BooleanBuffer::collect_bool(pairs, |i| runs[i] != runs[i + 1] || names.value(i))
        }
    };
    std::iter::once(0)
        .chain(changes.set_indices().map(|i| i + 1))
        .collect()
}

/// How a batch's metric changes from row to row are told.
enum Changes {
    /// The column's views, compared directly.
    Views(arrow::buffer::ScalarBuffer<u128>),
    /// Whether row `i` and row `i + 1` differ, compared as strings.
    Compared(BooleanBuffer),
}

/// A batch's metric column.
struct Metrics {
    names: ArrayRef,
    changes: Changes,
}

impl Metrics {
    fn new(column: &ArrayRef) -> Result<Self> {
        let names = match column.data_type() {
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => column.clone(),
            _ => arrow::compute::cast(column, &DataType::Utf8)?,
        };
        let changes = match names.data_type() {
            DataType::Utf8View => Changes::Views(names.as_string_view().views().clone()),
            _ => {
                let n = names.len().saturating_sub(1);
                let differ = distinct(&names.slice(0, n), &names.slice(1, n))?;
                Changes::Compared(differ.values().clone())
            }
        };
        Ok(Self { names, changes })
    }

    fn name(&self, i: usize) -> Result<&str> {
        if self.names.is_null(i) {
            return Err(Error::invalid(
                "stitched scan returned a point without metric",
            ));
        }
        Ok(match self.names.data_type() {
            DataType::Utf8View => self.names.as_string_view().value(i),
            DataType::LargeUtf8 => self.names.as_string::<i64>().value(i),
            _ => self.names.as_string::<i32>().value(i),
        })
    }
}

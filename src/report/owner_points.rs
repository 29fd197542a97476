//! The owners' series of a report scan, gathered as its batches arrive.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::kernels::cmp::distinct;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::MemoryReservation;

use super::series::OwnerSeries;
use crate::catalog::RunId;
use crate::error::{Error, Result};

/// Every owner's series of the metrics of a scan, by owner and metric index.
pub(super) struct OwnerPoints {
    series: HashMap<(RunId, usize), OwnerSeries>,
    /// What the series hold, in the query memory pool.
    _reservation: MemoryReservation,
}

impl OwnerPoints {
    /// The series of `(owner, metric)`, `metric` indexing the scan's names.
    pub(super) fn get(&self, owner: RunId, metric: usize) -> Option<&OwnerSeries> {
        self.series.get(&(owner, metric))
    }
}

/// The owners' series of a scan of `names`, as its batches arrive.
pub(super) struct Gathering {
    names: HashMap<String, usize>,
    series: HashMap<(RunId, usize), OwnerSeries>,
    reservation: MemoryReservation,
}

impl Gathering {
    pub(super) fn new(names: &[String], reservation: MemoryReservation) -> Self {
        Self {
            names: names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i))
                .collect(),
            series: HashMap::new(),
            reservation,
        }
    }

    /// Adds a batch of `run_id, step, value`, and `metric` when the scan
    /// reads more than one; a metric not asked for is passed over. The
    /// owners' points come a few long stretches of one series each
    /// (compacted files are sorted by run, metric and step).
    pub(super) fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::invalid(format!("owner scan lacks column {name}")))
        };
        let runs = column("run_id")?.as_primitive::<Int64Type>();
        let steps = column("step")?.as_primitive::<Int64Type>();
        let values = column("value")?.as_primitive::<Float64Type>();
        let metrics = match self.names.len() {
            1 => None,
            _ => Some(Metrics::new(column("metric")?)?),
        };
        self.reservation
            .try_grow(batch.num_rows() * OwnerSeries::BYTES_PER_POINT)
            .map_err(|e| {
                Error::Query(DataFusionError::ResourcesExhausted(format!(
                    "the report's series exceed the query memory pool ({e}): \
                     report fewer metrics or families at once, or raise --memory-mb"
                )))
            })?;
        let run_values = runs.values();
        let starts = stretches(run_values, metrics.as_ref());
        for (k, &start) in starts.iter().enumerate() {
            let end = starts.get(k + 1).copied().unwrap_or(batch.num_rows());
            let metric = match &metrics {
                Some(m) => match self.names.get(m.name(start)?) {
                    Some(&i) => i,
                    None => continue,
                },
                None => 0,
            };
            let series = self
                .series
                .entry((run_values[start] as RunId, metric))
                .or_default();
            if runs.null_count() + steps.null_count() + values.null_count() == 0 {
                series.extend(&steps.values()[start..end], &values.values()[start..end]);
                continue;
            }
            for j in start..end {
                if runs.is_null(j) || steps.is_null(j) {
                    continue;
                }
                let value = match values.is_null(j) {
                    true => f64::NAN,
                    false => values.value(j),
                };
                series.extend(&[steps.value(j)], &[value]);
            }
        }
        Ok(())
    }

    /// Every series read, each in step order.
    pub(super) fn finish(self) -> OwnerPoints {
        OwnerPoints {
            series: self
                .series
                .into_iter()
                .map(|(key, series)| (key, series.sorted()))
                .collect(),
            _reservation: self.reservation,
        }
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
            return Err(Error::invalid("owner scan returned a point without metric"));
        }
        Ok(match self.names.data_type() {
            DataType::Utf8View => self.names.as_string_view().value(i),
            DataType::LargeUtf8 => self.names.as_string::<i64>().value(i),
            _ => self.names.as_string::<i32>().value(i),
        })
    }
}

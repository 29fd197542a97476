//! The one write path for metric points: validate, sort, and shape them into a
//! batch that the store commits atomically; [`GroupCommitter`] coalesces
//! concurrent batches into one commit.

mod group_commit;

pub use group_commit::GroupCommitter;

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use chrono::Utc;

use crate::catalog::RunId;
use crate::error::{Error, Result};
use crate::store::TableKind;
use crate::store::schema::{arrow_schema, timestamps};

/// A write sequence number: microseconds since the epoch, strictly increasing
/// within the process, so a later write of the same point always wins.
pub fn next_write_seq() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = Utc::now().timestamp_micros();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Metrics named with this prefix are system metrics: never inherited by forks.
pub const SYSTEM_METRIC_PREFIX: &str = "sys/";

/// Longest metric name accepted.
pub const MAX_METRIC_NAME: usize = 256;

/// One logged value of one metric at one step.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// Metric name, e.g. `train/loss`.
    pub metric: String,
    /// Step, ≥ 0.
    pub step: u64,
    /// Value; NaN and ±Infinity are legal.
    pub value: f64,
    /// Wall-clock time in microseconds since the epoch; `None` means now.
    pub time_us: Option<i64>,
}

impl MetricPoint {
    /// A point logged now.
    pub fn new(metric: impl Into<String>, step: u64, value: f64) -> Self {
        Self {
            metric: metric.into(),
            step,
            value,
            time_us: None,
        }
    }
}

/// Points of one or more runs gathered for a single commit.
#[derive(Debug, Default)]
pub struct PointBatch {
    rows: Vec<(RunId, MetricPoint)>,
}

impl PointBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the points of `run`, rejecting the whole call on the first bad point.
    pub fn extend(
        &mut self,
        run: RunId,
        points: impl IntoIterator<Item = MetricPoint>,
    ) -> Result<()> {
        let start = self.rows.len();
        for p in points {
            if let Err(e) = validate(&p) {
                self.rows.truncate(start);
                return Err(e);
            }
            self.rows.push((run, p));
        }
        Ok(())
    }

    /// Moves every point of `other` into this batch, after the points already here.
    pub fn append(&mut self, other: PointBatch) {
        self.rows.extend(other.rows);
    }

    /// Number of points gathered so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no point was gathered.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Sorts by `(run_id, metric, step)`, keeps the last write of a repeated
    /// key, and encodes the result in the `metrics` table schema; `seq` orders
    /// this write against earlier ones of the same keys (last write wins).
    pub fn into_record_batch(self, seq: i64) -> Result<RecordBatch> {
        let mut rows: Vec<(usize, (RunId, MetricPoint))> =
            self.rows.into_iter().enumerate().collect();
        rows.sort_by(|(ia, (ra, a)), (ib, (rb, b))| {
            (ra, &a.metric, a.step, ia).cmp(&(rb, &b.metric, b.step, ib))
        });
        // Keep the last write of each key: after the stable sort it is the last of its run.
        let mut kept: Vec<(RunId, MetricPoint)> = Vec::with_capacity(rows.len());
        for (_, (run, p)) in rows {
            match kept.last_mut() {
                Some((r, last)) if *r == run && last.metric == p.metric && last.step == p.step => {
                    *last = p
                }
                _ => kept.push((run, p)),
            }
        }
        let now = Utc::now().timestamp_micros();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(kept.iter().map(|(r, _)| *r as i64).collect::<Int64Array>()),
            Arc::new(StringArray::from_iter_values(
                kept.iter().map(|(_, p)| p.metric.as_str()),
            )),
            Arc::new(
                kept.iter()
                    .map(|(_, p)| p.step as i64)
                    .collect::<Int64Array>(),
            ),
            Arc::new(kept.iter().map(|(_, p)| p.value).collect::<Float64Array>()),
            Arc::new(timestamps(
                kept.iter().map(|(_, p)| p.time_us.unwrap_or(now)).collect(),
            )),
            Arc::new(Int64Array::from(vec![seq; kept.len()])),
        ];
        Ok(RecordBatch::try_new(
            arrow_schema(TableKind::Metrics),
            columns,
        )?)
    }
}

fn validate(p: &MetricPoint) -> Result<()> {
    if p.metric.trim().is_empty() {
        return Err(Error::invalid("metric name must not be empty"));
    }
    if p.metric.len() > MAX_METRIC_NAME {
        return Err(Error::invalid(format!(
            "metric name `{}…` is longer than {MAX_METRIC_NAME} bytes",
            &p.metric[..p.metric.floor_char_boundary(32)]
        )));
    }
    if p.step > i64::MAX as u64 {
        return Err(Error::invalid(format!("step {} is too large", p.step)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type};

    #[test]
    fn sorts_and_keeps_last_write() {
        let mut b = PointBatch::new();
        b.extend(
            2,
            [MetricPoint::new("b", 1, 1.0), MetricPoint::new("a", 2, 2.0)],
        )
        .unwrap();
        b.extend(1, [MetricPoint::new("z", 0, 3.0)]).unwrap();
        b.extend(2, [MetricPoint::new("a", 2, 4.0)]).unwrap();
        let batch = b.into_record_batch(1).unwrap();
        let runs: Vec<i64> = batch
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        let values: Vec<f64> = batch
            .column(3)
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        assert_eq!(runs, vec![1, 2, 2]);
        assert_eq!(values, vec![3.0, 4.0, 1.0]);
    }

    #[test]
    fn rejects_empty_metric_without_keeping_part_of_the_call() {
        let mut b = PointBatch::new();
        let err = b.extend(
            1,
            [MetricPoint::new("a", 0, 1.0), MetricPoint::new(" ", 1, 1.0)],
        );
        assert!(err.is_err());
        assert!(b.is_empty());
    }
}

//! What comes in: metric points validated, sorted and shaped into a batch
//! that the store commits atomically (the engine's group committer coalesces
//! concurrent batches into one commit), the input limits, and file import.

pub mod import;
pub mod limits;

pub use limits::MAX_METRIC_NAME;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use chrono::Utc;

use crate::error::{Error, Result};
use crate::store::RunId;
use crate::store::TableKind;
use crate::store::schema::{arrow_schema, timestamps};

/// A write sequence number: microseconds since the epoch, strictly increasing
/// within the process, so a later write of the same point always wins.
pub fn next_write_seq() -> i64 {
    reserve_write_seqs(1)
}

/// The first of `n` consecutive write sequence numbers that no other call
/// gets: a commit that holds several writes of one point orders them by
/// distinct numbers, so all of them are kept and the last still wins.
fn reserve_write_seqs(n: i64) -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = Utc::now().timestamp_micros();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let first = now.max(last + 1);
        let next = first + n.max(1) - 1;
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return first,
            Err(seen) => last = seen,
        }
    }
}

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

/// Points of one or more runs gathered for a single commit, held by column
/// with each metric name stored once: ingest sees few names and many points,
/// so a point costs no allocation of its own.
#[derive(Debug, Default)]
pub struct PointBatch {
    /// Distinct metric names, by id.
    names: Vec<Box<str>>,
    ids: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    runs: Vec<RunId>,
    metrics: Vec<u32>,
    steps: Vec<i64>,
    values: Vec<f64>,
    times: Vec<Option<i64>>,
    /// Most points the batch takes (one client request's), if limited.
    limit: Option<usize>,
}

impl PointBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch of one client request: at most
    /// [`MAX_POINTS_PER_REQUEST`](limits::MAX_POINTS_PER_REQUEST) points.
    pub fn for_request() -> Self {
        Self {
            limit: Some(limits::MAX_POINTS_PER_REQUEST),
            ..Self::default()
        }
    }

    /// Refuses `more` points that would take the batch past its limit.
    pub fn ensure_room(&self, more: usize) -> Result<()> {
        match self.limit {
            Some(limit) if self.len() + more > limit => Err(Error::invalid(format!(
                "the request holds more than {limit} metric values (MAX_POINTS_PER_REQUEST); send it in parts"
            ))),
            _ => Ok(()),
        }
    }

    /// Room for `additional` more points (within the batch's limit), so that
    /// gathering them moves nothing.
    pub fn reserve(&mut self, additional: usize) {
        let additional = match self.limit {
            Some(limit) => additional.min(limit.saturating_sub(self.len())),
            None => additional,
        };
        self.runs.reserve(additional);
        self.metrics.reserve(additional);
        self.steps.reserve(additional);
        self.values.reserve(additional);
        self.times.reserve(additional);
    }

    /// Adds one point of `run`; a bad point is refused and nothing is added.
    pub fn push(
        &mut self,
        run: RunId,
        metric: &str,
        step: u64,
        value: f64,
        time_us: Option<i64>,
    ) -> Result<()> {
        let known = self.ids.get(metric).copied();
        if known.is_none() {
            check_name(metric)?;
        }
        check_point(metric, step, time_us)?;
        self.ensure_room(1)?;
        let id = match known {
            Some(id) => id,
            None => {
                let id = self.names.len() as u32;
                self.names.push(metric.into());
                self.ids.insert(metric.into(), id);
                id
            }
        };
        self.runs.push(run);
        self.metrics.push(id);
        self.steps.push(step as i64);
        self.values.push(value);
        self.times.push(time_us);
        Ok(())
    }

    /// Adds the points of `run`, rejecting the whole call on the first bad point.
    pub fn extend(
        &mut self,
        run: RunId,
        points: impl IntoIterator<Item = MetricPoint>,
    ) -> Result<()> {
        let start = self.len();
        for p in points {
            if let Err(e) = self.push(run, &p.metric, p.step, p.value, p.time_us) {
                self.truncate(start);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Keeps the first `len` points (names stay known: unused ones encode nothing).
    fn truncate(&mut self, len: usize) {
        self.runs.truncate(len);
        self.metrics.truncate(len);
        self.steps.truncate(len);
        self.values.truncate(len);
        self.times.truncate(len);
    }

    /// Moves every point of `other` into this batch, after the points already here.
    pub fn append(&mut self, other: PointBatch) {
        let remap: Vec<u32> = other
            .names
            .into_iter()
            .map(|name| match self.ids.get(&name) {
                Some(id) => *id,
                None => {
                    let id = self.names.len() as u32;
                    self.ids.insert(name.clone(), id);
                    self.names.push(name);
                    id
                }
            })
            .collect();
        self.runs.extend(other.runs);
        self.metrics
            .extend(other.metrics.into_iter().map(|m| remap[m as usize]));
        self.steps.extend(other.steps);
        self.values.extend(other.values);
        self.times.extend(other.times);
    }

    /// Number of points gathered so far.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Whether no point was gathered.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Sorts by `(run_id, metric, step)` and encodes the points in the
    /// `metrics` table schema with fresh write sequence numbers.
    ///
    /// Every point is kept, repeated keys included (`metric_writes` shows every
    /// acknowledged write): the n-th write of a key in this batch gets the n-th
    /// number of a reserved range, so the last one gathered wins, as it would
    /// have in separate commits. A batch without repeats uses a single number.
    pub fn into_record_batch(self) -> Result<RecordBatch> {
        self.encode(reserve_write_seqs)
    }

    /// As [`Self::into_record_batch`], numbering from `reserve(count)`.
    fn encode(self, reserve: impl FnOnce(i64) -> i64) -> Result<RecordBatch> {
        // Names compare by their rank among the batch's names, so the sort
        // compares integers only.
        let mut by_name: Vec<u32> = (0..self.names.len() as u32).collect();
        by_name.sort_unstable_by(|a, b| self.names[*a as usize].cmp(&self.names[*b as usize]));
        let mut rank = vec![0u32; by_name.len()];
        for (r, id) in by_name.iter().enumerate() {
            rank[*id as usize] = r as u32;
        }
        let order = self.order(&rank)?;
        let key = |i: usize| (self.runs[i], self.metrics[i], self.steps[i]);
        let mut ranks: Vec<i64> = Vec::with_capacity(order.len());
        for (n, &i) in order.iter().enumerate() {
            let repeat = n > 0 && key(order[n - 1]) == key(i);
            ranks.push(if repeat { ranks[n - 1] + 1 } else { 0 });
        }
        let first_seq = reserve(ranks.iter().max().map_or(1, |m| m + 1));
        let now = Utc::now().timestamp_micros();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                order
                    .iter()
                    .map(|&i| self.runs[i] as i64)
                    .collect::<Int64Array>(),
            ),
            Arc::new(StringArray::from_iter_values(
                order
                    .iter()
                    .map(|&i| &*self.names[self.metrics[i] as usize]),
            )),
            Arc::new(order.iter().map(|&i| self.steps[i]).collect::<Int64Array>()),
            Arc::new(
                order
                    .iter()
                    .map(|&i| self.values[i])
                    .collect::<Float64Array>(),
            ),
            Arc::new(timestamps(
                order
                    .iter()
                    .map(|&i| self.times[i].unwrap_or(now))
                    .collect(),
            )),
            Arc::new(
                ranks
                    .iter()
                    .map(|rank| first_seq + rank)
                    .collect::<Int64Array>(),
            ),
        ];
        Ok(RecordBatch::try_new(
            arrow_schema(TableKind::Metrics),
            columns,
        )?)
    }

    /// The points' positions ordered by `(run, metric rank, step)`, equal
    /// keys in the order they were gathered. A group commit holds about a
    /// hundred thousand points of a few hundred runs and a few dozen names,
    /// so two stable counting passes (by metric, then by run) replace a
    /// comparison sort; they leave each `(run, metric)` block in gathered
    /// order, which is step order for a client logging forward, and only a
    /// block that is not gets sorted by step.
    fn order(&self, rank: &[u32]) -> Result<Vec<usize>> {
        if u32::try_from(self.len()).is_err() {
            return Err(Error::invalid(
                "a commit holds more than 2^32 points; send it in parts",
            ));
        }
        // Requests are one run each, so the runs come in long stretches.
        let mut runs: Vec<RunId> = Vec::new();
        for &run in &self.runs {
            if runs.last() != Some(&run) {
                runs.push(run);
            }
        }
        runs.sort_unstable();
        runs.dedup();
        let mut last = (RunId::MAX, 0);
        let run_rank: Vec<u32> = self
            .runs
            .iter()
            .map(|&run| {
                if run != last.0 {
                    let r = runs.binary_search(&run).expect("every run is listed");
                    last = (run, r as u32);
                }
                last.1
            })
            .collect();
        let by_metric = counting_pass(0..self.len() as u32, rank.len(), |p| {
            rank[self.metrics[p as usize] as usize] as usize
        });
        let mut order = counting_pass(by_metric.iter().copied(), runs.len(), |p| {
            run_rank[p as usize] as usize
        });
        let block = |p: u32| (self.runs[p as usize], self.metrics[p as usize]);
        for stretch in order.chunk_by_mut(|a, b| block(*a) == block(*b)) {
            let step = |p: &u32| self.steps[*p as usize];
            if !stretch.is_sorted_by_key(step) {
                // Stable: repeats of a step keep their gathered order.
                stretch.sort_by_key(step);
            }
        }
        Ok(order.into_iter().map(|p| p as usize).collect())
    }
}

/// `positions` reordered stably by `key` (below `buckets`).
fn counting_pass(
    positions: impl Iterator<Item = u32> + Clone,
    buckets: usize,
    key: impl Fn(u32) -> usize,
) -> Vec<u32> {
    let mut starts = vec![0usize; buckets + 1];
    let mut len = 0;
    for p in positions.clone() {
        starts[key(p) + 1] += 1;
        len += 1;
    }
    for b in 1..=buckets {
        starts[b] += starts[b - 1];
    }
    let mut out = vec![0u32; len];
    for p in positions {
        let slot = &mut starts[key(p)];
        out[*slot] = p;
        *slot += 1;
    }
    out
}

/// A metric name is checked once per batch, when it is first seen.
fn check_name(metric: &str) -> Result<()> {
    if metric.trim().is_empty() {
        return Err(Error::invalid("metric name must not be empty"));
    }
    if metric.len() > MAX_METRIC_NAME {
        return Err(Error::invalid(format!(
            "metric name `{}…` is longer than the limit of {MAX_METRIC_NAME} bytes",
            short(metric)
        )));
    }
    Ok(())
}

fn check_point(metric: &str, step: u64, time_us: Option<i64>) -> Result<()> {
    if step > i64::MAX as u64 {
        return Err(Error::invalid(format!("step {step} is too large")));
    }
    if let Some(us) = time_us
        && !limits::time_in_window(us)
    {
        return Err(Error::invalid(format!(
            "time of `{}` at step {step} ({us} µs since the epoch) is outside {}",
            short(metric),
            limits::TIME_WINDOW
        )));
    }
    Ok(())
}

/// The start of a name, for error messages.
fn short(name: &str) -> &str {
    &name[..name.floor_char_boundary(32)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type};

    #[test]
    fn sorts_and_keeps_every_write_with_the_last_one_newest() {
        let mut b = PointBatch::new();
        b.extend(
            2,
            [MetricPoint::new("b", 1, 1.0), MetricPoint::new("a", 2, 2.0)],
        )
        .unwrap();
        b.extend(1, [MetricPoint::new("z", 0, 3.0)]).unwrap();
        b.extend(2, [MetricPoint::new("a", 2, 4.0)]).unwrap();
        b.extend(2, [MetricPoint::new("a", 2, 5.0)]).unwrap();
        let mut reserved = 0;
        let batch = b
            .encode(|n| {
                reserved = n;
                100
            })
            .unwrap();
        let column = |i: usize| {
            batch
                .column(i)
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        };
        let values: Vec<f64> = batch
            .column(3)
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        assert_eq!(column(0), vec![1, 2, 2, 2, 2]);
        assert_eq!(values, vec![3.0, 2.0, 4.0, 5.0, 1.0]);
        assert_eq!(reserved, 3, "three writes of run 2's `a` at step 2");
        assert_eq!(column(5), vec![100, 100, 101, 102, 100]);
    }

    proptest::proptest! {
        /// Whatever order points arrive in, the batch is what a stable sort
        /// by `(run, metric, step)` gives, repeats numbered in arrival order.
        #[test]
        fn encodes_as_a_stable_sort_by_key(
            points in proptest::collection::vec((0u64..6, 0usize..4, 0u64..8), 0..400),
            runs_in_stretches in proptest::bool::ANY,
        ) {
            let names = ["b", "a", "sys/c", "a/b"];
            let mut points = points;
            if runs_in_stretches {
                // As requests arrive: each run's points together, steps forward.
                points.sort_by_key(|p| (p.0, p.2));
            }
            let mut b = PointBatch::new();
            for (pos, (run, m, step)) in points.iter().enumerate() {
                b.push(*run, names[*m], *step, pos as f64, None).unwrap();
            }
            let batch = b.encode(|_| 1000).unwrap();
            let mut expected: Vec<(u64, &str, u64, usize)> = points
                .iter()
                .enumerate()
                .map(|(pos, (run, m, step))| (*run, names[*m], *step, pos))
                .collect();
            expected.sort_by_key(|e| (e.0, e.1, e.2));
            let ints = |i: usize| batch.column(i).as_primitive::<Int64Type>().values().to_vec();
            let metrics: Vec<String> = batch
                .column(1)
                .as_string::<i32>()
                .iter()
                .map(|m| m.unwrap().to_string())
                .collect();
            let values = batch.column(3).as_primitive::<Float64Type>().values().to_vec();
            let (runs, steps, seqs) = (ints(0), ints(2), ints(5));
            for (n, e) in expected.iter().enumerate() {
                proptest::prop_assert_eq!(runs[n], e.0 as i64);
                proptest::prop_assert_eq!(&metrics[n], e.1);
                proptest::prop_assert_eq!(steps[n], e.2 as i64);
                proptest::prop_assert_eq!(values[n], e.3 as f64);
                let repeats = expected[..n]
                    .iter()
                    .filter(|p| (p.0, p.1, p.2) == (e.0, e.1, e.2))
                    .count();
                proptest::prop_assert_eq!(seqs[n], 1000 + repeats as i64);
            }
        }
    }

    #[test]
    fn reserved_sequence_ranges_never_overlap() {
        let a = reserve_write_seqs(1000);
        let b = reserve_write_seqs(1);
        assert!(b >= a + 1000);
        assert!(next_write_seq() > b);
    }

    #[test]
    fn refuses_times_outside_the_window() {
        for us in [-1, limits::MAX_TIME_US, i64::MAX, i64::MIN] {
            let mut b = PointBatch::new();
            let mut p = MetricPoint::new("a", 0, 1.0);
            p.time_us = Some(us);
            let err = b.extend(1, [p]).unwrap_err().to_string();
            assert!(err.contains("outside 1970"), "{err}");
        }
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

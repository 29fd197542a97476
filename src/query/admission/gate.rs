//! Admission and deadlines: at most `max_concurrent` queries run at once, at
//! most `max_queued` more wait for a slot, and none runs past `timeout`.
//!
//! A query's time counts from its arrival, waiting included, to its last row.
//! When it is up the query's stream is dropped — which aborts the tasks
//! DataFusion spawned for it, so its CPU stops — even if nobody is polling it
//! (a client that stopped reading), and its slot goes to the next query.
//!
//! Every query is recorded as it ends — in `system.queries` and the
//! Prometheus metrics — with its interface, caller, rows, bytes and outcome
//! (ok, error, timeout, busy, or cancelled when the client went away).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use datafusion::prelude::DataFrame;
use futures::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::runner::{self, PlanRunner};
use crate::error::{Error, Result};
use crate::observe::activity::{Activity, Outcome, QueryInfo, QueryRecord};

/// Limits on the queries a server runs.
#[derive(Debug, Clone)]
pub struct QueryLimits {
    /// Longest a query may take from arrival to its last row.
    pub timeout: Duration,
    /// Queries running at once.
    pub max_concurrent: usize,
    /// Queries waiting for a slot; more are refused at once.
    pub max_queued: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        (&crate::options::QueryArgs::default()).into()
    }
}

impl From<&crate::options::QueryArgs> for QueryLimits {
    fn from(args: &crate::options::QueryArgs) -> Self {
        Self {
            timeout: args.timeout(),
            max_concurrent: args.max_concurrent(),
            max_queued: args.query_queue,
        }
    }
}

tokio::task_local! {
    /// Set while a task runs inside an admitted query, so that work it does
    /// through the engine (which admits its own queries) neither waits for a
    /// second slot — a deadlock once every slot is held — nor gets a new deadline.
    static ADMITTED: ();
}

/// Admission control and deadlines shared by every interface of an engine.
#[derive(Debug)]
pub struct QueryGate {
    limits: QueryLimits,
    running: Arc<Semaphore>,
    queue: Arc<Semaphore>,
    activity: Arc<Activity>,
    runner: Arc<dyn PlanRunner>,
}

/// What a query run with [`QueryGate::run`] delivered: `(rows, bytes)` for its record.
pub trait Delivered {
    /// Rows and Arrow bytes handed to the caller.
    fn delivered(&self) -> (u64, u64);
}

impl Delivered for Vec<RecordBatch> {
    fn delivered(&self) -> (u64, u64) {
        self.iter().fold((0, 0), |(rows, bytes), b| {
            (
                rows + b.num_rows() as u64,
                bytes + b.get_array_memory_size() as u64,
            )
        })
    }
}

/// A statement planned, not run (Flight's `GetFlightInfo`).
impl Delivered for DataFrame {
    fn delivered(&self) -> (u64, u64) {
        (0, 0)
    }
}

impl QueryGate {
    /// A gate enforcing `limits` that records every query it admits in `activity`.
    pub fn new(limits: QueryLimits, activity: Arc<Activity>, runner: Arc<dyn PlanRunner>) -> Self {
        Self {
            running: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            queue: Arc::new(Semaphore::new(limits.max_queued)),
            limits,
            activity,
            runner,
        }
    }

    /// Starts `df`'s plan where this engine runs plans (see [`PlanRunner`]).
    pub async fn execute(&self, df: DataFrame) -> Result<SendableRecordBatchStream> {
        self.runner.execute(df).await
    }

    /// Every row of `df`, run as [`QueryGate::execute`] runs it.
    pub async fn collect(&self, df: DataFrame) -> Result<Vec<RecordBatch>> {
        runner::collect(self.execute(df).await?).await
    }

    /// Where this engine runs plans.
    pub fn runner(&self) -> &Arc<dyn PlanRunner> {
        &self.runner
    }

    /// The limits enforced.
    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// Runs `work` — planning and consuming queries — as one admitted query
    /// described by `query`: it waits for a slot and is dropped (cancelling
    /// its queries) at the deadline. Work inside an admitted query is part of
    /// it: neither admitted nor recorded again.
    pub async fn run<T: Delivered>(
        &self,
        query: QueryInfo,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        if ADMITTED.try_with(|_| ()).is_ok() {
            return work.await;
        }
        let tracker = Tracker::start(self.activity.clone(), query);
        let deadline = Instant::now() + self.limits.timeout;
        let outcome = async {
            let _slot = self.admit(deadline).await?;
            tokio::time::timeout_at(deadline, ADMITTED.scope((), work))
                .await
                .unwrap_or_else(|_| Err(self.timed_out()))
        }
        .await;
        match &outcome {
            Ok(value) => {
                let (rows, bytes) = value.delivered();
                tracker.delivered(rows, bytes);
                tracker.finish(Outcome::Ok, None);
            }
            Err(e) => tracker.fail(e),
        }
        outcome
    }

    /// Admits the query described by `query`, plans it with `plan` and
    /// starts it. The stream holds the slot until it ends or is dropped,
    /// fails at the deadline, and records the query when it ends.
    pub async fn stream(
        &self,
        query: QueryInfo,
        plan: impl Future<Output = Result<DataFrame>>,
    ) -> Result<SendableRecordBatchStream> {
        let start = async { self.runner.execute(plan.await?).await };
        if ADMITTED.try_with(|_| ()).is_ok() {
            return start.await;
        }
        let tracker = Tracker::start(self.activity.clone(), query);
        let deadline = Instant::now() + self.limits.timeout;
        let started = async {
            let slot = self.admit(deadline).await?;
            let stream = tokio::time::timeout_at(deadline, ADMITTED.scope((), start))
                .await
                .unwrap_or_else(|_| Err(self.timed_out()))?;
            Ok((stream, slot))
        }
        .await;
        match started {
            Ok((stream, slot)) => Ok(Box::pin(Deadlined::start(
                stream,
                slot,
                tracker,
                deadline,
                self.limits.timeout,
            ))),
            Err(e) => {
                tracker.fail(&e);
                Err(e)
            }
        }
    }

    async fn admit(&self, deadline: Instant) -> Result<OwnedSemaphorePermit> {
        if let Ok(slot) = self.running.clone().try_acquire_owned() {
            return Ok(slot);
        }
        let Ok(_place) = self.queue.clone().try_acquire_owned() else {
            return Err(Error::Busy(format!(
                "the server is busy: {} queries are running and {} waiting, its limits \
                 (--max-concurrent-queries, --query-queue); retry later",
                self.limits.max_concurrent, self.limits.max_queued
            )));
        };
        match tokio::time::timeout_at(deadline, self.running.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(Error::Busy(format!(
                "the server is busy: no query slot freed within the query timeout of {}; \
                 retry later",
                seconds(self.limits.timeout)
            ))),
        }
    }

    fn timed_out(&self) -> Error {
        timed_out(self.limits.timeout)
    }
}

fn timed_out(timeout: Duration) -> Error {
    Error::TimedOut(format!(
        "query cancelled: it ran longer than the server's query timeout of {} \
         (--query-timeout-s); narrow it (filters, LIMIT) or ask for a longer timeout",
        seconds(timeout)
    ))
}

fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// A query in progress, recorded once when it ends: finished, failed, or —
/// when dropped before either, as when the client went away — cancelled.
struct Tracker {
    activity: Arc<Activity>,
    /// Taken when the record is written.
    info: Option<QueryInfo>,
    start: chrono::DateTime<chrono::Utc>,
    clock: Instant,
    rows: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

impl Tracker {
    fn start(activity: Arc<Activity>, info: QueryInfo) -> Self {
        Self {
            activity,
            info: Some(info),
            start: chrono::Utc::now(),
            clock: Instant::now(),
            rows: 0.into(),
            bytes: 0.into(),
        }
    }

    fn delivered(&self, rows: u64, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.rows.fetch_add(rows, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    fn fail(self, e: &Error) {
        self.finish(Outcome::of(e), Some(e.to_string()));
    }

    fn finish(mut self, outcome: Outcome, error: Option<String>) {
        self.record(outcome, error);
    }

    fn record(&mut self, outcome: Outcome, error: Option<String>) {
        let Some(info) = self.info.take() else {
            return;
        };
        if outcome == Outcome::Ok && !info.record_success {
            return;
        }
        self.activity.record_query(QueryRecord {
            info,
            start: self.start,
            duration: self.clock.elapsed(),
            outcome,
            rows: *self.rows.get_mut(),
            bytes: *self.bytes.get_mut(),
            error,
        });
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.record(Outcome::Cancelled, None);
    }
}

/// What a [`Deadlined`] stream and its watchdog share.
struct Running {
    stream: Option<SendableRecordBatchStream>,
    slot: Option<OwnedSemaphorePermit>,
    /// The query's record, written by whichever side ends it.
    tracker: Option<Tracker>,
    expired: bool,
    waker: Option<Waker>,
}

/// A query's stream that releases its slot when it ends and is cut at its deadline.
struct Deadlined {
    running: Arc<Mutex<Running>>,
    schema: SchemaRef,
    timeout: Duration,
    reported: bool,
    watchdog: tokio::task::JoinHandle<()>,
}

impl Deadlined {
    fn start(
        stream: SendableRecordBatchStream,
        slot: OwnedSemaphorePermit,
        tracker: Tracker,
        deadline: Instant,
        timeout: Duration,
    ) -> Self {
        let schema = stream.schema();
        let running = Arc::new(Mutex::new(Running {
            stream: Some(stream),
            slot: Some(slot),
            tracker: Some(tracker),
            expired: false,
            waker: None,
        }));
        let watchdog = tokio::spawn(expire(running.clone(), deadline, timeout));
        Self {
            running,
            schema,
            timeout,
            reported: false,
            watchdog,
        }
    }
}

/// At `deadline`, drops the query (aborting its tasks) and frees its slot.
async fn expire(running: Arc<Mutex<Running>>, deadline: Instant, timeout: Duration) {
    tokio::time::sleep_until(deadline).await;
    // The consumer holds the lock while it polls, which may compute a batch:
    // wait for it without blocking this worker thread.
    let (stream, slot, waker) = loop {
        let taken = match running.try_lock() {
            Ok(mut run) => {
                if run.stream.is_none() {
                    return;
                }
                run.expired = true;
                if let Some(tracker) = run.tracker.take() {
                    tracker.fail(&timed_out(timeout));
                }
                Some((run.stream.take(), run.slot.take(), run.waker.take()))
            }
            Err(_) => None,
        };
        match taken {
            Some(taken) => break taken,
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    tracing::warn!("query cancelled at its deadline");
    drop(stream);
    drop(slot);
    if let Some(waker) = waker {
        waker.wake();
    }
}

impl Stream for Deadlined {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let mut run = this.running.lock().expect("query stream lock");
        if run.expired {
            if this.reported {
                return Poll::Ready(None);
            }
            this.reported = true;
            let error = timed_out(this.timeout);
            return Poll::Ready(Some(Err(DataFusionError::External(Box::new(error)))));
        }
        let Some(stream) = run.stream.as_mut() else {
            return Poll::Ready(None);
        };
        match stream.poll_next_unpin(cx) {
            Poll::Pending => {
                run.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Poll::Ready(None) => {
                if let Some(tracker) = run.tracker.take() {
                    tracker.finish(Outcome::Ok, None);
                }
                let finished = (run.stream.take(), run.slot.take());
                drop(run);
                drop(finished);
                this.watchdog.abort();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(batch))) => {
                if let Some(tracker) = &run.tracker {
                    tracker.delivered(
                        batch.num_rows() as u64,
                        batch.get_array_memory_size() as u64,
                    );
                }
                Poll::Ready(Some(Ok(batch)))
            }
            Poll::Ready(Some(Err(e))) => {
                let Some(tracker) = run.tracker.take() else {
                    return Poll::Ready(Some(Err(e)));
                };
                let error = Error::from(e);
                tracker.fail(&error);
                // Handed on as it came.
                let e = match error {
                    Error::Query(e) => e,
                    other => DataFusionError::External(Box::new(other)),
                };
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

impl RecordBatchStream for Deadlined {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl Drop for Deadlined {
    fn drop(&mut self) {
        self.watchdog.abort();
    }
}

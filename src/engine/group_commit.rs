//! Group commit: concurrent ingest requests share one Delta commit, and each
//! caller is answered only once that commit is durable.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::ingest::PointBatch;
use crate::store::{Store, TableKind};

/// A group is committed early once it holds this many points.
const MAX_GROUP_POINTS: usize = 2_000_000;

/// Where a group's points go: the store's metrics table (see [`append`]).
type Sink = Arc<dyn Fn(PointBatch) -> BoxFuture<'static, Result<usize>> + Send + Sync>;

struct Pending {
    batch: PointBatch,
    done: oneshot::Sender<Result<usize, Arc<Error>>>,
}

/// Handle to the background task that coalesces ingest batches into commits.
#[derive(Debug, Clone)]
pub(super) struct GroupCommitter {
    tx: mpsc::Sender<Pending>,
}

impl GroupCommitter {
    /// Starts the committer. A group opens with the first waiting batch and
    /// closes `window` later (or when large), so a lone request waits at most
    /// `window` plus one commit.
    pub(super) fn spawn(store: Arc<Store>, window: Duration) -> Self {
        Self::spawn_into(
            Arc::new(move |batch| {
                let store = store.clone();
                Box::pin(async move { append(&store, batch).await })
            }),
            window,
        )
    }

    fn spawn_into(sink: Sink, window: Duration) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(sink, rx, window));
        Self { tx }
    }

    /// Commits `batch` together with whatever else arrives in the window;
    /// returns the number of points stored once the commit is durable.
    pub(super) async fn submit(&self, batch: PointBatch) -> Result<usize> {
        if batch.is_empty() {
            return Ok(0);
        }
        // The committer's task ends only with the engine, or by a panic: either
        // way a fault of this server, not of the store or the request.
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Pending { batch, done })
            .await
            .map_err(|_| Error::Internal("the ingest committer has stopped".into()))?;
        match wait.await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(cause)) => Err(Error::Commit("points", cause)),
            Err(_) => Err(Error::Internal(
                "the ingest commit was abandoned; its points may or may not be stored".into(),
            )),
        }
    }
}

/// Groups committed at once: the next group gathers (and encodes) while the
/// last one's file and log entry are written, so the window is not idle time.
/// Appends to one table retry on a concurrent commit, and the newest write of
/// a point is told by its write sequence number, not by commit order.
const IN_FLIGHT: u32 = 2;

async fn run(sink: Sink, mut rx: mpsc::Receiver<Pending>, window: Duration) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT as usize));
    while let Some(first) = rx.recv().await {
        let deadline = Instant::now() + window;
        let mut points = first.batch.len();
        let mut group = vec![first];
        while points < MAX_GROUP_POINTS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => {
                    points += p.batch.len();
                    group.push(p);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let sink = sink.clone();
        tokio::spawn(async move {
            commit(&sink, group, points).await;
            drop(slot);
        });
    }
    // Every group taken is answered before the committer ends.
    let _ = slots.acquire_many(IN_FLIGHT).await;
}

/// Commits `group` as one append and answers each of its callers.
async fn commit(sink: &Sink, group: Vec<Pending>, points: usize) {
    let mut merged = PointBatch::new();
    merged.reserve(points);
    let mut counts = Vec::with_capacity(group.len());
    let mut waiters = Vec::with_capacity(group.len());
    for p in group {
        counts.push(p.batch.len());
        merged.append(p.batch);
        waiters.push(p.done);
    }
    let started = Instant::now();
    let outcome = sink(merged).await.map_err(Arc::new);
    crate::observe::metrics::group_commit(
        waiters.len(),
        points,
        started.elapsed(),
        outcome.is_ok(),
    );
    if let Err(e) = &outcome {
        tracing::error!(error = %e, points, "group commit failed");
    }
    for (done, n) in waiters.into_iter().zip(counts) {
        let reply = match &outcome {
            Ok(_) => Ok(n),
            Err(e) => Err(e.clone()),
        };
        let _ = done.send(reply);
    }
}

/// Appends a batch gathered from any number of runs (which must exist) as one commit.
async fn append(store: &Store, batch: PointBatch) -> Result<usize> {
    let records = batch.into_record_batch()?;
    let n = records.num_rows();
    store.append(TableKind::Metrics, vec![records]).await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn batch(points: usize) -> PointBatch {
        let mut batch = PointBatch::new();
        for step in 0..points {
            batch.push(1, "loss", step as u64, 0.5, None).unwrap();
        }
        batch
    }

    /// A committer whose every group fails with `fault`.
    fn failing(fault: fn() -> Error) -> GroupCommitter {
        GroupCommitter::spawn_into(
            Arc::new(move |_| Box::pin(async move { Err(fault()) })),
            Duration::from_millis(20),
        )
    }

    #[tokio::test]
    async fn each_caller_of_a_failed_group_gets_its_cause_with_its_kind() {
        let internal = failing(|| Error::Internal("encoder fault".into()));
        let outage = failing(|| {
            Error::ObjectStore(object_store::Error::Generic {
                store: "S3",
                source: "connection refused".into(),
            })
        });
        for (committer, kind) in [
            (internal, ErrorKind::Internal),
            (outage, ErrorKind::Unavailable),
        ] {
            // Two callers in one window share the group and its cause.
            let (a, b) = tokio::join!(committer.submit(batch(3)), committer.submit(batch(2)));
            for e in [a.unwrap_err(), b.unwrap_err()] {
                assert_eq!(e.kind(), kind, "{e}");
                assert!(
                    e.to_string().starts_with("points were not committed: "),
                    "{e}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_committed_group_answers_each_caller_with_its_own_count() {
        let committer = GroupCommitter::spawn_into(
            Arc::new(|batch: PointBatch| Box::pin(async move { Ok(batch.len()) })),
            Duration::from_millis(20),
        );
        let (a, b) = tokio::join!(committer.submit(batch(3)), committer.submit(batch(2)));
        assert_eq!((a.unwrap(), b.unwrap()), (3, 2));
        assert_eq!(committer.submit(PointBatch::new()).await.unwrap(), 0);
    }
}

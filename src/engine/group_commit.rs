//! Group commit: concurrent ingest requests share one Delta commit, and each
//! caller is answered only once that commit is durable.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::Engine;
use crate::error::{Error, Result};
use crate::ingest::PointBatch;

/// A group is committed early once it holds this many points.
const MAX_GROUP_POINTS: usize = 2_000_000;

struct Pending {
    batch: PointBatch,
    done: oneshot::Sender<Result<usize, String>>,
}

/// Handle to the background task that coalesces ingest batches into commits.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::Sender<Pending>,
}

impl GroupCommitter {
    /// Starts the committer. A group opens with the first waiting batch and
    /// closes `window` later (or when large), so a lone request waits at most
    /// `window` plus one commit.
    pub fn spawn(engine: Arc<Engine>, window: Duration) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(engine, rx, window));
        Self { tx }
    }

    /// Commits `batch` together with whatever else arrives in the window;
    /// returns the number of points stored once the commit is durable.
    pub async fn submit(&self, batch: PointBatch) -> Result<usize> {
        if batch.is_empty() {
            return Ok(0);
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Pending { batch, done })
            .await
            .map_err(|_| Error::Conflict("the ingest committer has stopped".into()))?;
        match wait.await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(msg)) => Err(Error::Unavailable(msg)),
            Err(_) => Err(Error::Unavailable("the ingest commit was abandoned".into())),
        }
    }
}

/// Groups committed at once: the next group gathers (and encodes) while the
/// last one's file and log entry are written, so the window is not idle time.
/// Appends to one table retry on a concurrent commit, and the newest write of
/// a point is told by its write sequence number, not by commit order.
const IN_FLIGHT: u32 = 2;

async fn run(engine: Arc<Engine>, mut rx: mpsc::Receiver<Pending>, window: Duration) {
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
        let engine = engine.clone();
        tokio::spawn(async move {
            commit(&engine, group, points).await;
            drop(slot);
        });
    }
    // Every group taken is answered before the committer ends.
    let _ = slots.acquire_many(IN_FLIGHT).await;
}

/// Commits `group` as one append and answers each of its callers.
async fn commit(engine: &Engine, group: Vec<Pending>, points: usize) {
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
    let outcome = engine.write_batch(merged).await;
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
            Err(e) => Err(format!("points were not committed: {e}")),
        };
        let _ = done.send(reply);
    }
}

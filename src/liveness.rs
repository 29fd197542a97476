//! Liveness of RUNNING runs: the activity markers servers write, and the
//! stale-run monitor of `forkline serve` that terminates runs gone silent.
//!
//! **Markers.** A run's activity (ingest, heartbeat, status call) is recorded
//! as one small object per run, `activity/<run id>` under the store root,
//! whose modification time is the last activity. Writes are throttled per
//! run and process to one every [`marker_interval`] (at most a minute), in
//! the background of the request: a busy run costs one PUT a minute per
//! server, not a Delta commit per request, and the `runs` table (which every
//! process reads whole) does not grow with heartbeats. The monitor reads all
//! markers with one listing, so every server sees the activity every other
//! server on the store saw. A marker is not an acknowledged write: losing one
//! can only make a live run look silent, which its next activity undoes.
//!
//! **Monitor.** A RUNNING run whose last activity — the newest of its marker,
//! its latest revision, and the moment this monitor started watching — is
//! older than `--stale-after` becomes TERMINATED (source `stale-monitor`).
//! The change is a conditional commit planned on the revision judged silent
//! ([`RunUpdate::StaleTerminate`]), so several servers on one store record it
//! once, and a run that changed meanwhile is left alone. Activity on a run the
//! monitor terminated makes it RUNNING again (source `activity`); a run a
//! client finished stays finished.
//!
//! Clocks: marker times come from the store, revision times and "now" from
//! the servers; skews of seconds are small beside the default 15 minutes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::catalog::{Run, RunId, RunStatus, RunUpdate, StatusSource};
use crate::engine::Engine;
use crate::error::Result;

/// Directory of the markers under the store root (not a table: vacuum and
/// check leave it alone).
const MARKERS: &str = "activity";

/// The longest a marker write is put off.
const MAX_MARKER_INTERVAL: Duration = Duration::from_secs(60);

/// How often a process writes a run's marker at most: a quarter of the
/// stale period (so a marker is never more than that behind the activity),
/// and at least once a minute (for the monitors of servers configured with
/// a shorter period than this one's).
pub fn marker_interval(stale_after: Option<Duration>) -> Duration {
    stale_after.map_or(MAX_MARKER_INTERVAL, |s| (s / 4).min(MAX_MARKER_INTERVAL))
}

/// How often the monitor looks: as often as markers may lag, within bounds.
fn check_interval(stale_after: Duration) -> Duration {
    (stale_after / 4).clamp(Duration::from_millis(100), MAX_MARKER_INTERVAL)
}

/// Records activity of runs: throttled marker writes, and revival of runs
/// the monitor terminated.
#[derive(Debug)]
pub struct RunActivity {
    engine: Arc<Engine>,
    interval: Duration,
    /// When this process last wrote each run's marker.
    written: Mutex<HashMap<RunId, Instant>>,
}

/// Runs whose write times are remembered before old ones are forgotten.
const MAX_REMEMBERED: usize = 10_000;

impl RunActivity {
    /// Activity of `engine`'s runs, writing each marker at most once per `interval`.
    pub fn new(engine: Arc<Engine>, interval: Duration) -> Self {
        Self {
            engine,
            interval,
            written: Mutex::new(HashMap::new()),
        }
    }

    /// `run` (as the request's catalog holds it) was active on behalf of the
    /// API key `key_id`: refresh its marker unless this process did so within
    /// the interval, and make it RUNNING again if the stale-run monitor had
    /// terminated it. Returns the run as it is now. Nothing happens on a
    /// read-only store.
    pub async fn seen(&self, run: &Arc<Run>, key_id: Option<&str>) -> Result<Arc<Run>> {
        if self.engine.store().is_read_only() {
            return Ok(run.clone());
        }
        if self.due(run.id) {
            let store = self.engine.store().location().object_store.clone();
            let path = marker_path(&self.engine, run.id)?;
            tokio::spawn(async move {
                let payload = PutPayload::from(Utc::now().to_rfc3339().into_bytes());
                if let Err(e) = store.put(&path, payload).await {
                    tracing::warn!(%path, error = %e, "could not write a run's activity marker");
                }
            });
        }
        let terminated_by_monitor = run.status == RunStatus::Terminated
            && run
                .status_change
                .as_ref()
                .is_some_and(|c| c.source == StatusSource::StaleMonitor);
        if !terminated_by_monitor {
            return Ok(run.clone());
        }
        self.engine
            .update_run_by(&run.id.to_string(), RunUpdate::Revive, key_id)
            .await
    }

    /// Whether `run`'s marker is due, taking the slot if so.
    fn due(&self, run: RunId) -> bool {
        let now = Instant::now();
        let mut written = self.written.lock().expect("activity lock poisoned");
        if written
            .get(&run)
            .is_some_and(|at| now.duration_since(*at) < self.interval)
        {
            return false;
        }
        if written.len() >= MAX_REMEMBERED {
            let interval = self.interval;
            written.retain(|_, at| now.duration_since(*at) < interval);
        }
        written.insert(run, now);
        true
    }
}

fn marker_path(engine: &Engine, run: RunId) -> Result<object_store::path::Path> {
    engine.store().location().path(&format!("{MARKERS}/{run}"))
}

/// The time of every marker in the store, by run, from one listing.
async fn markers(engine: &Engine) -> Result<HashMap<RunId, DateTime<Utc>>> {
    let store = &engine.store().location().object_store;
    let prefix = engine.store().location().path(MARKERS)?;
    let listed: Vec<object_store::ObjectMeta> = store.list(Some(&prefix)).try_collect().await?;
    Ok(listed
        .into_iter()
        .filter_map(|meta| {
            let id = meta.location.filename()?.parse().ok()?;
            Some((id, meta.last_modified))
        })
        .collect())
}

/// One look of the stale-run monitor at `engine`'s runs: terminates the
/// RUNNING runs silent for longer than `stale_after` (counting from
/// `watching_since` at the earliest), and deletes the markers of finished
/// runs silent as long. Returns the runs this call terminated.
pub async fn check(
    engine: &Engine,
    stale_after: Duration,
    watching_since: DateTime<Utc>,
) -> Result<Vec<RunId>> {
    let stale_after = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
    // Markers first: one written after the listing belongs to a revision the
    // catalog read next may not show, but then the run is not stale anyway.
    let markers = markers(engine).await?;
    let catalog = engine.catalog().await?;
    let now = Utc::now();
    let mut terminated = Vec::new();
    for run in catalog.runs() {
        let marker = markers.get(&run.id).copied();
        if run.status != RunStatus::Running {
            if let Some(at) = marker
                && now - at > stale_after
            {
                let path = marker_path(engine, run.id)?;
                // Gone already (another monitor) is as good as deleted.
                let _ = engine.store().location().object_store.delete(&path).await;
            }
            continue;
        }
        let last = marker
            .into_iter()
            .chain([run.updated_at, watching_since])
            .max()
            .unwrap_or(now);
        if now - last <= stale_after {
            continue;
        }
        let (after, committed) = engine
            .change_run(
                &run.id.to_string(),
                RunUpdate::StaleTerminate { rev: run.rev },
                None,
            )
            .await?;
        if committed {
            tracing::info!(
                run = %after.display_id,
                silent_s = (now - last).num_seconds(),
                "run terminated: no heartbeat, ingest or status call for --stale-after"
            );
            terminated.push(run.id);
        }
    }
    Ok(terminated)
}

/// The stale-run monitor: [`check`] every quarter of `stale_after` until the
/// process ends. Failures are logged and retried at the next look.
pub async fn monitor(engine: Arc<Engine>, stale_after: Duration) {
    let watching_since = Utc::now();
    let mut ticks = tokio::time::interval(check_interval(stale_after));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = check(&engine, stale_after, watching_since).await {
            tracing::warn!(error = %e, "stale-run check failed, will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(marker_interval(None), MAX_MARKER_INTERVAL);
        assert_eq!(
            marker_interval(Some(Duration::from_secs(2))),
            Duration::from_millis(500)
        );
        assert_eq!(
            marker_interval(Some(Duration::from_secs(15 * 60))),
            MAX_MARKER_INTERVAL
        );
        assert_eq!(
            check_interval(Duration::from_millis(10)),
            Duration::from_millis(100)
        );
    }
}

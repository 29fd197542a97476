//! The run catalog: its cached snapshot, and group commit of its mutations.
//!
//! Every catalog mutation (create, fork, status, tags, config, resume) is a
//! plan: a function from the catalog to the run's next revision. Mutations
//! that arrive while a commit is being written wait in a queue; the next
//! writer takes the whole queue, plans each mutation in arrival order on top
//! of one catalog version (each seeing the ones planned before it, so display
//! ids stay gapless) and lands them in one conditional commit. A batch that
//! loses the race to another process is re-planned, whole, on the winner's
//! catalog; a mutation whose plan fails is answered with its own error and
//! its neighbours commit. Every caller is answered only once the commit that
//! holds its revision is durable.
//!
//! Before this, each mutation took a process-wide lock for its own commit:
//! one run mutation at a time, ~160 ms each, so a sweep of 16 clients created
//! 6 runs a second (issue 34).

use std::sync::{Arc, Mutex, RwLock};

use datafusion::execution::runtime_env::RuntimeEnv;
use deltalake::DeltaTable;
use tokio::sync::oneshot;

use crate::catalog::run::{runs_from_batch, runs_to_batch};
use crate::catalog::{CatalogSnapshot, Run};
use crate::error::{Error, Result};
use crate::store::{CommitOutcome, Store, TableKind};

/// How often a batch is re-planned after losing a commit race.
const ATTEMPTS: usize = 32;

/// The most mutations one commit carries; the rest wait for the next.
const MAX_BATCH: usize = 4096;

/// Longest a reader waits for this process's writer to publish a catalog
/// it has committed, before reading the table itself.
const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A mutation: the run's next revision as planned on a catalog. It is called
/// again on a newer catalog when its batch lost a race, so it reads the clock
/// (and anything else that may move) each time.
pub(super) type Plan = Box<dyn FnMut(&CatalogSnapshot) -> Result<Run> + Send>;

/// A mutation of several runs at once (a deletion with its cascade): their
/// next revisions, which commit together or not at all.
pub(super) type ManyPlan = Box<dyn FnMut(&CatalogSnapshot) -> Result<Vec<Run>> + Send>;

/// What a caller is answered: the runs' latest revisions, and whether its
/// mutation committed new ones (`false`: it changed nothing); or its own
/// refusal, or the failure of the commit its batch shared.
type Answer = Result<(Vec<Arc<Run>>, bool)>;

struct Pending {
    plan: ManyPlan,
    done: oneshot::Sender<Answer>,
}

/// The catalog of one engine: readers take its cached snapshot, writers
/// queue their mutations here.
#[derive(Clone)]
pub(super) struct Catalog {
    state: Arc<State>,
    queue: Arc<Mutex<Vec<Pending>>>,
    /// Held by the one writer of this process committing a batch.
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("version", &self.cached().version())
            .finish()
    }
}

struct State {
    store: Arc<Store>,
    runtime: Arc<RuntimeEnv>,
    cached: RwLock<Arc<CatalogSnapshot>>,
    /// The version of `cached`, for readers waiting for a publication.
    installed: tokio::sync::watch::Sender<Option<u64>>,
}

impl Catalog {
    pub(super) fn new(store: Arc<Store>, runtime: Arc<RuntimeEnv>) -> Self {
        Self {
            state: Arc::new(State {
                store,
                runtime,
                cached: RwLock::new(Arc::new(CatalogSnapshot::default())),
                installed: tokio::sync::watch::Sender::new(None),
            }),
            queue: Default::default(),
            writer: Default::default(),
        }
    }

    /// The newest snapshot this process has built.
    pub(super) fn cached(&self) -> Arc<CatalogSnapshot> {
        self.state.cached()
    }

    /// The catalog for reading: as of `table`'s version or newer.
    ///
    /// This process's writer publishes a commit's catalog moments after the
    /// commit itself; a reader that saw the table move in between waits for
    /// it rather than re-read every run of the store (with 256 clients
    /// creating, readers in that window rebuilt the catalog from the whole
    /// `runs` table again and again: CPU and memory growing with the store).
    pub(super) async fn at_least(&self, table: &DeltaTable) -> Result<Arc<CatalogSnapshot>> {
        let cached = self.cached();
        if cached.version() >= table.version() {
            return Ok(cached);
        }
        if self.writer.try_lock().is_err() {
            let mut installed = self.state.installed.subscribe();
            let wanted = table.version();
            let _ = tokio::time::timeout(PUBLISH_WAIT, installed.wait_for(|v| *v >= wanted)).await;
            let cached = self.cached();
            if cached.version() >= table.version() {
                return Ok(cached);
            }
        }
        // Another process committed: read it.
        self.state.at(table).await
    }

    /// Commits the revision `plan` derives from the latest catalog, together
    /// with whatever other mutations are waiting; returns the run's latest
    /// revision and whether this mutation committed it.
    pub(super) async fn commit(&self, mut plan: Plan) -> Result<(Arc<Run>, bool)> {
        let (runs, changed) = self
            .commit_many(Box::new(move |snap| Ok(vec![plan(snap)?])))
            .await?;
        let run = runs
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal("a run's commit answered no revision".into()))?;
        Ok((run, changed))
    }

    /// As [`Catalog::commit`], for a mutation of several runs: all of its
    /// revisions land in one commit.
    pub(super) async fn commit_many(&self, plan: ManyPlan) -> Answer {
        let (done, mut answer) = oneshot::channel();
        self.queue
            .lock()
            .expect("catalog queue poisoned")
            .push(Pending { plan, done });
        loop {
            tokio::select! {
                biased;
                answered = &mut answer => {
                    return match answered {
                        Ok(reply) => reply,
                        Err(_) => Err(Error::Internal(
                            "the catalog commit was abandoned; the change may or may not be stored"
                                .into(),
                        )),
                    };
                }
                writer = self.writer.clone().lock_owned() => {
                    let batch = {
                        let mut queue = self.queue.lock().expect("catalog queue poisoned");
                        let take = queue.len().min(MAX_BATCH);
                        queue.drain(..take).collect::<Vec<_>>()
                    };
                    if batch.is_empty() {
                        continue;
                    }
                    // Written by a task of its own, so that a caller who goes
                    // away (a client that hung up) abandons no one's commit.
                    let state = self.state.clone();
                    let task = tokio::spawn(async move {
                        state.commit_batch(batch).await;
                        drop(writer);
                    });
                    if let Err(e) = task.await {
                        tracing::error!(error = %e, "catalog commit task failed");
                    }
                }
            }
        }
    }
}

/// What planning one mutation gave.
enum Planned {
    Failed(Error),
    Unchanged(Vec<Arc<Run>>),
    Changed(Vec<crate::catalog::run::RunId>),
}

impl State {
    fn cached(&self) -> Arc<CatalogSnapshot> {
        self.cached.read().expect("catalog lock poisoned").clone()
    }

    fn install(&self, next: &Arc<CatalogSnapshot>) {
        let mut slot = self.cached.write().expect("catalog lock poisoned");
        if slot.version() < next.version() {
            *slot = next.clone();
            self.installed.send_replace(next.version());
        }
    }

    /// The catalog as of exactly `table`'s version (never a newer one, which a
    /// writer planning on top of `table` must not see).
    async fn at(&self, table: &DeltaTable) -> Result<Arc<CatalogSnapshot>> {
        let cached = self.cached();
        if cached.version() == table.version() {
            return Ok(cached);
        }
        let batches = crate::query::session::scan_all(&self.runtime, table).await?;
        let mut revisions = Vec::new();
        for batch in &batches {
            revisions.extend(runs_from_batch(batch)?);
        }
        let snapshot = Arc::new(CatalogSnapshot::from_revisions(table.version(), revisions));
        self.install(&snapshot);
        Ok(snapshot)
    }

    /// Plans and commits `batch`, re-planning it on a newer catalog whenever
    /// another process won the race, and answers every caller.
    async fn commit_batch(&self, mut batch: Vec<Pending>) {
        let outcome = self.land(&mut batch).await;
        let planned = match outcome {
            Ok(planned) => planned,
            Err(e) => {
                let cause = Arc::new(e);
                for p in batch {
                    let _ = p
                        .done
                        .send(Err(Error::Commit("run changes", cause.clone())));
                }
                return;
            }
        };
        let (catalog, planned) = planned;
        for (p, planned) in batch.into_iter().zip(planned) {
            let answer = match planned {
                Planned::Failed(e) => Err(e),
                Planned::Unchanged(run) => Ok((run, false)),
                Planned::Changed(ids) => ids
                    .iter()
                    .map(|id| catalog.revision(*id).cloned())
                    .collect::<Result<Vec<_>>>()
                    .map(|runs| (runs, true)),
            };
            let _ = p.done.send(answer);
        }
    }

    /// The catalog after the batch's commit and what each mutation gave.
    async fn land(&self, batch: &mut [Pending]) -> Result<(Arc<CatalogSnapshot>, Vec<Planned>)> {
        for attempt in 1..=ATTEMPTS {
            // Plan on the catalog of the very version the commit is conditional
            // on: a concurrent reader may move the cached table to another
            // process's newer commit between two separate reads, and a plan
            // from the older catalog would then commit a duplicate display id.
            let base = self.store.refresh(TableKind::Runs).await?;
            let snapshot = self.at(&base).await?;
            let mut working = CatalogSnapshot::clone(&snapshot);
            let mut rows = Vec::new();
            let mut planned = Vec::with_capacity(batch.len());
            for p in batch.iter_mut() {
                planned.push(match (p.plan)(&working) {
                    Err(e) => Planned::Failed(e),
                    Ok(runs) => {
                        let held: Vec<Arc<Run>> = runs
                            .iter()
                            .filter_map(|run| working.get(run.id).filter(|h| h.rev == run.rev))
                            .cloned()
                            .collect();
                        if held.len() == runs.len() {
                            Planned::Unchanged(held)
                        } else {
                            let ids = runs.iter().map(|run| run.id).collect();
                            for run in runs {
                                if held.iter().all(|h| h.id != run.id) {
                                    working.add(run.clone());
                                    rows.push(run);
                                }
                            }
                            Planned::Changed(ids)
                        }
                    }
                });
            }
            if rows.is_empty() {
                return Ok((snapshot, planned));
            }
            let records = runs_to_batch(&rows)?;
            match self
                .store
                .append_if_unchanged(TableKind::Runs, &base, vec![records.clone()])
                .await?
            {
                CommitOutcome::Committed(version) => {
                    for run in &rows {
                        if let Some(change) =
                            run.status_change.as_ref().filter(|_| run.changed_status())
                        {
                            crate::observe::metrics::status_change(
                                change.source.as_str(),
                                run.status.as_str(),
                            );
                        }
                    }
                    crate::observe::metrics::catalog_commit(batch.len());
                    // The commit was conditional on `base`, so the catalog
                    // planned on is the store's state at `version`: no re-read
                    // of every run (a time growing with the catalog). Its runs
                    // are taken as read back from the rows committed
                    // (unreadable rows are durable all the same: their
                    // acknowledgement stands, with the planned revisions).
                    let stored = runs_from_batch(&records).unwrap_or_default();
                    let next = Arc::new(working.committed(Some(version), stored));
                    self.install(&next);
                    return Ok((next, planned));
                }
                CommitOutcome::Lost => {
                    crate::observe::metrics::catalog_conflict(attempt < ATTEMPTS);
                }
            }
        }
        Err(Error::Conflict(
            "the run catalog is under heavy concurrent modification; try again".into(),
        ))
    }
}

//! The engine: a store, its catalog snapshot, and the operations every interface shares.

mod catalog_commit;
mod deletes;
mod fork_steps;
mod group_commit;
mod queries;
pub mod uploads;
mod writes;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow::array::RecordBatch;
use chrono::Utc;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionContext;

use crate::catalog::{self, CatalogSnapshot, ForkRequest, NewRun, Run, RunUpdate};
use crate::error::Result;
use crate::observe::Activity;
use crate::query;
use crate::query::lineage::Lineage;
use crate::scope::Projects;
use crate::store::{Store, TableKind};

/// Sessions kept for reuse, one per project scope.
const MAX_CACHED_SESSIONS: usize = 64;

/// Limits of the query engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Memory pool for query execution, in bytes; spilling operators spill beyond it.
    pub memory_limit: usize,
    /// Parallelism of query plans.
    pub target_partitions: usize,
    /// Reads trust a table state checked this recently; commits by other
    /// processes become visible within it (this process's own at once).
    pub refresh_interval: std::time::Duration,
    /// Object-store settings the store URL does not carry (S3 endpoint, …).
    pub store: crate::store::StoreOptions,
    /// Whether opening may create the store, and whether the engine may write.
    pub open: crate::store::OpenMode,
    /// Concurrency, queue and timeout of queries run through [`Engine::gate`].
    pub query: query::admission::gate::QueryLimits,
    /// Finished queries kept in memory for `system.queries`.
    pub query_history: usize,
    /// Where planned queries run: this process, or a cluster (`crate::cluster`).
    pub runner: Arc<dyn query::admission::runner::PlanRunner>,
    /// Metric batches ingested within this window share one commit (a
    /// server's `--commit-window-ms`); zero still coalesces the batches that
    /// wait while a commit is written.
    pub commit_window: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self::new(&Default::default(), &Default::default())
    }
}

impl EngineOptions {
    /// The engine the global options and a server's query options describe
    /// (creating the store where needed; set `open` for other modes).
    pub fn new(global: &crate::options::GlobalArgs, queries: &crate::options::QueryArgs) -> Self {
        Self {
            memory_limit: global.memory_limit(),
            target_partitions: global.target_partitions(),
            refresh_interval: global.refresh_interval(),
            store: global.store_options(),
            open: Default::default(),
            query: queries.into(),
            query_history: queries.query_history,
            runner: Arc::new(query::admission::runner::InProcess),
            commit_window: Duration::ZERO,
        }
    }
}

/// Result of a fork: the new run and where it was attached.
#[derive(Debug, Clone)]
pub struct ForkOutcome {
    /// The new run.
    pub run: Arc<Run>,
    /// The parent it was attached to after lineage resolution.
    pub parent: Arc<Run>,
    /// Last inherited step.
    pub fork_step: u64,
}

/// A store opened for reading and writing.
#[derive(Debug)]
pub struct Engine {
    store: Arc<Store>,
    /// Coalesces ingested metric batches into commits; started by the first one.
    committer: OnceLock<group_commit::GroupCommitter>,
    /// The cached run catalog and the queue its mutations are committed from.
    catalog: catalog_commit::Catalog,
    /// Max steps of runs being forked, read once per metrics version.
    fork_steps: fork_steps::ForkSteps,
    runtime: Arc<RuntimeEnv>,
    /// Settings of every query session (see [`query::session::config`]).
    session_config: datafusion::prelude::SessionConfig,
    options: EngineOptions,
    /// The last session built per project scope, reused while no table moved.
    sessions: SessionCache,
    /// The latest catalog restricted per project scope, reused while `runs` did not move.
    scoped_catalogs: std::sync::Mutex<HashMap<Projects, Arc<CatalogSnapshot>>>,
    /// Admission and deadlines of the queries the interfaces run.
    gate: query::admission::gate::QueryGate,
    /// Recent queries and compactions of this process (the system tables).
    activity: Arc<Activity>,
}

#[derive(Default)]
struct SessionCache(std::sync::Mutex<HashMap<Projects, (SessionKey, SessionContext)>>);

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionCache")
    }
}

/// Versions a session was built from: `runs`, `metrics`, `logs`, `data`, `files`.
type SessionKey = [Option<deltalake::kernel::Version>; 5];

impl Engine {
    /// Opens (creating if needed) the store at `spec` with default limits.
    pub async fn open(spec: &str) -> Result<Self> {
        Self::open_with(spec, EngineOptions::default()).await
    }

    /// Opens the store at `spec` with the given limits, creating it only
    /// where `options.open` allows.
    pub async fn open_with(spec: &str, options: EngineOptions) -> Result<Self> {
        let store = Store::open_in(spec, &options.store, options.open).await?;
        let runtime = query::session::runtime(options.memory_limit)?;
        let session_config =
            query::session::config(options.target_partitions, options.memory_limit)?;
        // Metric scans read the store's files directly (see `query::scan::file_set`).
        let location = store.location();
        runtime.register_object_store(
            location.object_store_url().as_ref(),
            location.object_store.clone(),
        );
        let activity = Arc::new(Activity::new(options.query_history));
        let store = Arc::new(store);
        let engine = Self {
            catalog: catalog_commit::Catalog::new(store.clone(), runtime.clone()),
            fork_steps: Default::default(),
            store,
            committer: OnceLock::new(),
            runtime,
            session_config,
            gate: query::admission::gate::QueryGate::new(
                options.query.clone(),
                activity.clone(),
                options.runner.clone(),
            ),
            activity,
            options,
            sessions: Default::default(),
            scoped_catalogs: Default::default(),
        };
        engine.catalog().await?;
        Ok(engine)
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Engine limits.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// The runtime every query of this engine runs in (memory pool, object stores, caches).
    pub fn runtime(&self) -> &Arc<RuntimeEnv> {
        &self.runtime
    }

    /// The catalog as of the latest `runs` version, reloaded only when it moved.
    pub async fn catalog(&self) -> Result<Arc<CatalogSnapshot>> {
        let table = self.store.refresh(TableKind::Runs).await?;
        self.catalog.at_least(&table).await
    }

    /// The latest catalog as a request of `scope` sees it: runs of other
    /// projects are not in it, so looking one up is "unknown run".
    pub async fn scoped_catalog(&self, scope: &Projects) -> Result<Arc<CatalogSnapshot>> {
        let full = self.catalog().await?;
        Ok(self.restricted(full, scope))
    }

    /// `full` as `scope` sees it, caught up from this scope's last restricted
    /// copy where there is one (see [`CatalogSnapshot::restricted_after`]).
    fn restricted(&self, full: Arc<CatalogSnapshot>, scope: &Projects) -> Arc<CatalogSnapshot> {
        if *scope == Projects::All {
            return full;
        }
        let older = {
            let cache = self.scoped_catalogs.lock().expect("scope cache poisoned");
            cache.get(scope).cloned()
        };
        if let Some(c) = older.as_ref().filter(|c| c.version() == full.version()) {
            return c.clone();
        }
        let restricted = match older {
            Some(older) => Arc::new(full.restricted_after(&older, |p| scope.allows(p))),
            None => scope.restrict(full),
        };
        let mut cache = self.scoped_catalogs.lock().expect("scope cache poisoned");
        if cache.len() >= MAX_CACHED_SESSIONS {
            cache.clear();
        }
        if cache
            .get(scope)
            .is_none_or(|held| held.version() < restricted.version())
        {
            cache.insert(scope.clone(), restricted.clone());
        }
        restricted
    }

    /// The catalog for reading: as of a `runs` state at most `refresh_interval` old.
    async fn read_catalog(&self) -> Result<Arc<CatalogSnapshot>> {
        let table = self
            .store
            .refresh_within(TableKind::Runs, self.options.refresh_interval)
            .await?;
        self.catalog.at_least(&table).await
    }

    /// Commits the run revision that `plan` derives from the latest catalog
    /// (see [`catalog_commit`]): with the mutations of other callers, and
    /// re-planned on a newer catalog whenever another process won the race.
    ///
    /// A plan that returns a run's latest revision unchanged commits nothing.
    /// Since the commit is conditional on the version planned on, a status
    /// change and the record of it (the revision itself) land once: two
    /// processes racing to make the same change both plan it, one commits,
    /// and the other re-plans on the winner's catalog and finds nothing to do.
    async fn commit_run(&self, plan: catalog_commit::Plan) -> Result<Arc<Run>> {
        Ok(self.catalog.commit(plan).await?.0)
    }

    /// Creates a root run; its project is created on first use.
    pub async fn create_run(&self, req: NewRun) -> Result<Arc<Run>> {
        self.create_run_by(req, None).await
    }

    /// As [`Engine::create_run`], on behalf of the API key `key_id`, which the
    /// run's creation event records.
    pub async fn create_run_by(&self, req: NewRun, key_id: Option<&str>) -> Result<Arc<Run>> {
        let key_id = key_id.map(str::to_owned);
        self.commit_run(Box::new(move |snap| {
            catalog::plan_create(snap, &req, key_id.as_deref(), Utc::now())
        }))
        .await
    }

    /// Forks a run at a step, attaching the new run to the resolved parent.
    pub async fn fork_run(&self, req: ForkRequest) -> Result<ForkOutcome> {
        self.fork_run_by(req, None).await
    }

    /// As [`Engine::fork_run`], on behalf of the API key `key_id`.
    pub async fn fork_run_by(&self, req: ForkRequest, key_id: Option<&str>) -> Result<ForkOutcome> {
        // The forked run's logged steps are read before the fork joins the
        // catalog's commit queue, so that other writers never wait on a scan. That is sound
        // because a run's lineage is fixed when it is created (parent and fork
        // step never change), so the segments scanned are those the planner
        // resolves against, and ids are never reused.
        let snapshot = self.catalog().await?;
        let forked = snapshot.lookup(&req.run)?.id;
        // Another process may have committed points moments ago: read the latest.
        let metrics = self.store.refresh(TableKind::Metrics).await?.version();
        let max_step = self
            .fork_steps
            .get(forked, metrics, || async {
                let segments = snapshot.segments(forked)?;
                let ctx = query::session::lineage_only(
                    &self.runtime,
                    &self.session_config,
                    snapshot.clone(),
                    &self.store,
                )
                .await?;
                Lineage::of(&ctx)?.max_step(&ctx, &segments).await
            })
            .await?;
        let key_id = key_id.map(str::to_owned);
        let run = self
            .commit_run(Box::new(move |snap| {
                catalog::plan_fork(snap, &req, max_step, key_id.as_deref(), Utc::now())
            }))
            .await?;
        // The parent was in the catalog the fork was planned on; no reload needed.
        let snapshot = self.catalog.cached();
        let parent_id = run.parent_id.expect("a fork has a parent");
        Ok(ForkOutcome {
            parent: snapshot.require(parent_id)?.clone(),
            fork_step: run.fork_step.expect("a fork has a fork step"),
            run,
        })
    }

    /// Applies a change to an existing run; returns its latest revision
    /// (unchanged where the change was refused or changed nothing).
    pub async fn update_run(&self, run: &str, update: RunUpdate) -> Result<Arc<Run>> {
        self.update_run_by(run, update, None).await
    }

    /// As [`Engine::update_run`], on behalf of the API key `key_id`, which a
    /// status change records.
    pub async fn update_run_by(
        &self,
        run: &str,
        update: RunUpdate,
        key_id: Option<&str>,
    ) -> Result<Arc<Run>> {
        Ok(self.change_run(run, update, key_id).await?.0)
    }

    /// As [`Engine::update_run_by`], telling whether this call committed a
    /// new revision (`false`: the change was refused, changed nothing, or
    /// another writer had made it first).
    pub async fn change_run(
        &self,
        run: &str,
        update: RunUpdate,
        key_id: Option<&str>,
    ) -> Result<(Arc<Run>, bool)> {
        let (run, key_id) = (run.to_owned(), key_id.map(str::to_owned));
        self.catalog
            .commit(Box::new(move |snap| {
                catalog::plan_update(snap, &run, &update, key_id.as_deref(), Utc::now())
            }))
            .await
    }

    /// What `/metrics` reports about the engine's state now: table versions
    /// (as cached, at most `refresh_interval` old), runs by status and the
    /// query memory pool.
    pub async fn gauges(&self) -> Result<crate::observe::metrics::Gauges> {
        let mut gauges = crate::observe::metrics::Gauges::default();
        for kind in TableKind::ALL {
            let table = self
                .store
                .refresh_within(kind, self.options.refresh_interval)
                .await?;
            if let Some(version) = table.version() {
                gauges.table_versions.push((kind, version));
            }
        }
        for run in self.catalog().await?.runs() {
            *gauges
                .runs_by_status
                .entry(run.status.as_str())
                .or_insert(0) += 1;
        }
        gauges.memory_reserved = self.runtime.memory_pool.reserved();
        gauges.memory_limit = self.options.memory_limit;
        Ok(gauges)
    }

    /// Resolves a run reference against the latest catalog.
    pub async fn resolve_run(&self, run: &str) -> Result<Arc<Run>> {
        Ok(self.catalog().await?.lookup(run)?.clone())
    }

    /// Every row of a (small) stored table at its latest version, with that version.
    pub async fn read_table(&self, kind: TableKind) -> Result<(Option<u64>, Vec<RecordBatch>)> {
        let table = self.store.refresh(kind).await?;
        let batches = query::session::scan_all(&self.runtime, &table).await?;
        Ok((table.version(), batches))
    }
}

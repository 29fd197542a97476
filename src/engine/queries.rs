//! How every interface runs a query: on a session scoped to the request's
//! key, admitted by the gate (slot, queue, deadline), recorded in
//! `system.queries` under the request's id.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{DataFrame, SessionContext};

use super::{Engine, MAX_CACHED_SESSIONS, SessionKey};
use crate::error::Result;
use crate::observe::{Activity, Interface, QueryInfo, RequestContext};
use crate::query;
use crate::query::admission::{Delivered, QueryGate};
use crate::scope::Projects;
use crate::store::TableKind;

impl Engine {
    /// A query session over the latest state of the store.
    pub async fn session(&self) -> Result<SessionContext> {
        self.scoped_session(&Projects::All).await
    }

    /// A query session that sees only the runs of `projects` (see [`query::session::build`]).
    ///
    /// Sessions are reused while no table has moved, so a warm server plans a
    /// query without rebuilding tables, functions and providers.
    pub(crate) async fn scoped_session(&self, projects: &Projects) -> Result<SessionContext> {
        let snapshot = self.read_catalog().await?;
        let mut key: SessionKey = [snapshot.version(), None, None, None, None];
        for (slot, kind) in key[1..].iter_mut().zip([
            TableKind::Metrics,
            TableKind::Logs,
            TableKind::Data,
            TableKind::Uploads,
        ]) {
            *slot = self
                .store
                .refresh_within(kind, self.options.refresh_interval)
                .await?
                .version();
        }
        let reusable = {
            let sessions = self.sessions.0.lock().expect("session cache poisoned");
            sessions
                .get(projects)
                .filter(|(built, _)| *built == key)
                .map(|(_, ctx)| ctx.clone())
        };
        if let Some(ctx) = reusable {
            return Ok(ctx);
        }
        let scoped = self.restricted(snapshot.clone(), projects);
        let ctx = query::session::build(
            &self.runtime,
            &self.session_config,
            self.options.refresh_interval,
            (snapshot, scoped),
            &self.store,
            &self.activity,
            projects,
        )
        .await?;
        let mut sessions = self.sessions.0.lock().expect("session cache poisoned");
        // Bounded: key scopes are few, but glob lists are the caller's to vary.
        if sessions.len() >= MAX_CACHED_SESSIONS {
            sessions.clear();
        }
        sessions.insert(projects.clone(), (key, ctx.clone()));
        Ok(ctx)
    }

    /// Plans a read-only SQL statement; DDL, DML, COPY and SET are refused.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        self.scoped_sql(sql, &Projects::All).await
    }

    /// As [`Engine::sql`], seeing only the runs of `projects`.
    pub(crate) async fn scoped_sql(&self, sql: &str, projects: &Projects) -> Result<DataFrame> {
        let ctx = self.scoped_session(projects).await?;
        query::read_only_sql(&ctx, sql).await
    }

    /// Admission control and deadlines of queries (see [`QueryGate`]).
    pub fn gate(&self) -> &QueryGate {
        &self.gate
    }

    /// Recent queries and compactions of this process.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Runs a read-only query of an in-process caller (the CLI) as one
    /// admitted query and collects its result.
    pub async fn collect(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let request = RequestContext::local(Interface::Cli);
        self.query(&request, sql, |ctx| async move {
            self.gate
                .collect(query::read_only_sql(&ctx, sql).await?)
                .await
        })
        .await
    }

    /// Runs `work` on a session scoped to `request`'s key as one admitted
    /// query (a slot, the queue and the deadline of the gate), recorded in
    /// `system.queries` under `text` and the request's id. Work inside it
    /// (more queries on the session) is part of it.
    pub async fn query<T, F, Fut>(
        &self,
        request: &RequestContext,
        text: impl Into<String>,
        work: F,
    ) -> Result<T>
    where
        T: Delivered,
        F: FnOnce(SessionContext) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.gate
            .run(QueryInfo::new(request, text), async {
                work(self.scoped_session(&request.projects).await?).await
            })
            .await
    }

    /// Runs `work` as one admitted query of `request`, recorded under `text`:
    /// for work that reads through several sessions or none of its own (a
    /// report, a console page).
    pub async fn admitted<T: Delivered>(
        &self,
        request: &RequestContext,
        text: impl Into<String>,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.gate.run(QueryInfo::new(request, text), work).await
    }

    /// As [`Engine::query`], for a query whose rows are streamed to the
    /// caller: `plan` builds it on the scoped session, and the stream holds
    /// the slot until it ends and records the query then.
    pub async fn query_stream<F, Fut>(
        &self,
        request: &RequestContext,
        text: impl Into<String>,
        plan: F,
    ) -> Result<SendableRecordBatchStream>
    where
        F: FnOnce(SessionContext) -> Fut,
        Fut: Future<Output = Result<DataFrame>>,
    {
        self.gate
            .stream(QueryInfo::new(request, text), async {
                plan(self.scoped_session(&request.projects).await?).await
            })
            .await
    }

    /// Plans a client's SQL text for `request` as one admitted query,
    /// recorded only if planning fails (Flight plans a statement in one call
    /// and runs it in another, which records it).
    pub async fn plan_sql(&self, request: &RequestContext, sql: &str) -> Result<DataFrame> {
        self.gate
            .run(QueryInfo::new(request, sql).failures_only(), async {
                self.scoped_sql(sql, &request.projects).await
            })
            .await
    }
}

//! Recent activity of this process — the queries it answered and the
//! compactions it ran — kept in memory in bounded rings, read by
//! `system.queries` and `system.compactions`. Lost on restart by design:
//! the durable history of a table is its Delta log (`system.commits`).

use crate::error::ErrorKind;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::request::{Interface, RequestContext, RequestId};
use crate::scope::Projects;

/// Compactions kept in `system.compactions`.
pub const COMPACTION_HISTORY: usize = 1_000;

/// Who asks what through which door: the gate records a query under it.
#[derive(Debug, Clone)]
pub struct QueryInfo {
    /// The front door.
    pub interface: Interface,
    /// The SQL text, or a description of the request for interfaces that
    /// plan without SQL (export, report).
    pub text: String,
    /// The caller's projects: who may read this record back.
    pub projects: Projects,
    /// The caller's key id, `None` without keys.
    pub key_id: Option<String>,
    /// The id of the request the query serves.
    pub request_id: RequestId,
    /// Whether a success is recorded. Flight plans a statement in one call
    /// and fetches it in another: the plan is recorded only when it fails,
    /// so each statement is one record.
    pub record_success: bool,
}

impl QueryInfo {
    /// A query serving `request`.
    pub fn new(request: &RequestContext, text: impl Into<String>) -> Self {
        Self {
            interface: request.interface,
            text: text.into(),
            projects: request.scope.projects.clone(),
            key_id: request.scope.key_id.clone(),
            request_id: request.id.clone(),
            record_success: true,
        }
    }

    /// The same query, recorded only if it fails (Flight's planning call).
    pub fn failures_only(mut self) -> Self {
        self.record_success = false;
        self
    }
}

/// How a query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every row delivered.
    Ok,
    /// The client went away before the last row.
    Cancelled,
    /// Refused or failed, with the error's kind (a timeout and a refusal for
    /// lack of a slot are kinds too).
    Failed(ErrorKind),
}

impl Outcome {
    /// The name in `system.queries` and the `outcome` label of the metrics:
    /// `ok`, `cancelled` or the error kind's name (`invalid_input`, `timed_out`, …).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Cancelled => "cancelled",
            Outcome::Failed(kind) => kind.as_str(),
        }
    }

    /// The outcome of a query that failed with `e`.
    pub fn of(e: &crate::error::Error) -> Self {
        Outcome::Failed(e.kind())
    }
}

/// One finished query.
#[derive(Debug, Clone)]
pub struct QueryRecord {
    /// What was asked, by whom.
    pub info: QueryInfo,
    /// Arrival at the gate (waiting for a slot counts).
    pub start: DateTime<Utc>,
    /// Arrival to the last row, error or cancellation.
    pub duration: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// Rows delivered.
    pub rows: u64,
    /// Arrow bytes delivered (in-memory size of the batches).
    pub bytes: u64,
    /// The error, when it failed.
    pub error: Option<String>,
}

impl QueryRecord {
    /// Whether a caller of `projects` may read this record: a key restricted
    /// to some projects sees only queries of keys with exactly its scope, so
    /// no SQL text that may name another project's runs reaches it; a key of
    /// every project sees all.
    pub fn visible_to(&self, projects: &Projects) -> bool {
        *projects == Projects::All || self.info.projects == *projects
    }
}

/// One compaction this process ran (or tried to).
#[derive(Debug, Clone)]
pub struct CompactionRecord {
    /// The table compacted (`metrics`, or `runs` when its files were merged).
    pub table: &'static str,
    /// When it started.
    pub start: DateTime<Utc>,
    /// Wall time.
    pub duration: Duration,
    /// Files rewritten.
    pub files_in: u64,
    /// Files written.
    pub files_out: u64,
    /// Bytes of the files rewritten.
    pub bytes_in: u64,
    /// Bytes of the files written.
    pub bytes_out: u64,
    /// Rows rewritten.
    pub rows: u64,
    /// Table version of its commit, `None` when it failed.
    pub version: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A ring of the latest `capacity` items.
#[derive(Debug)]
pub struct Ring<T> {
    capacity: usize,
    items: Mutex<VecDeque<T>>,
}

impl<T: Clone> Ring<T> {
    /// An empty ring keeping at most `capacity` items (none when 0).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            items: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    /// Adds `item`, dropping the oldest when full.
    pub fn push(&self, item: T) {
        if self.capacity == 0 {
            return;
        }
        let mut items = self.items.lock().expect("activity ring poisoned");
        if items.len() == self.capacity {
            items.pop_front();
        }
        items.push_back(item);
    }

    /// The items kept, oldest first, that `keep` accepts.
    pub fn snapshot(&self, keep: impl Fn(&T) -> bool) -> Vec<T> {
        let items = self.items.lock().expect("activity ring poisoned");
        items.iter().filter(|i| keep(i)).cloned().collect()
    }
}

/// The recent activity of one engine.
#[derive(Debug)]
pub struct Activity {
    /// Finished queries, newest last.
    pub queries: Ring<QueryRecord>,
    /// Compactions, newest last.
    pub compactions: Ring<CompactionRecord>,
}

impl Activity {
    /// Rings keeping `query_history` queries and [`COMPACTION_HISTORY`] compactions.
    pub fn new(query_history: usize) -> Self {
        Self {
            queries: Ring::new(query_history),
            compactions: Ring::new(COMPACTION_HISTORY),
        }
    }

    /// Records a finished query, in the ring and the metrics.
    pub fn record_query(&self, record: QueryRecord) {
        let r = &record;
        let (interface, outcome) = (r.info.interface.name(), r.outcome.name());
        super::metrics::query(interface, outcome, r.duration, (r.rows, r.bytes));
        self.queries.push(record);
    }

    /// Records a compaction, in the ring and the metrics.
    pub fn record_compaction(&self, record: CompactionRecord) {
        let r = &record;
        let (files, bytes) = ((r.files_in, r.files_out), (r.bytes_in, r.bytes_out));
        super::metrics::compaction(r.table, r.error.is_none(), r.duration, files, bytes);
        self.compactions.push(record);
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new(crate::options::QueryArgs::default().query_history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scope;

    #[test]
    fn a_ring_keeps_the_latest() {
        let ring = Ring::new(3);
        for i in 0..5 {
            ring.push(i);
        }
        assert_eq!(ring.snapshot(|_| true), vec![2, 3, 4]);
        assert_eq!(ring.snapshot(|i| i % 2 == 0), vec![2, 4]);
        let off = Ring::new(0);
        off.push(1);
        assert!(off.snapshot(|_| true).is_empty());
    }

    #[test]
    fn a_scoped_key_sees_only_queries_of_its_exact_scope() {
        let scope = |p: &[&str]| Scope {
            projects: Projects::from_patterns(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap(),
            read_only: true,
            key_id: None,
            can_delete: false,
        };
        let record = |s: &Scope| QueryRecord {
            info: QueryInfo::new(
                &RequestContext::new(s.clone(), Interface::Http, RequestId::new()),
                "SELECT 1",
            ),
            start: Utc::now(),
            duration: Duration::ZERO,
            outcome: Outcome::Ok,
            rows: 1,
            bytes: 8,
            error: None,
        };
        let (a, ab, all) = (scope(&["a"]), scope(&["a", "b"]), scope(&[]));
        assert!(record(&a).visible_to(&a.projects));
        assert!(!record(&ab).visible_to(&a.projects));
        assert!(!record(&a).visible_to(&ab.projects));
        assert!(!record(&all).visible_to(&a.projects));
        assert!(record(&a).visible_to(&all.projects));
    }
}

//! The run record and its encoding as rows of the `runs` table.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::store::TableKind;
use crate::store::schema::{arrow_schema, timestamps};

pub use crate::store::RunId;

/// Lifecycle state of a run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Still logging.
    Running,
    /// Finished normally.
    Completed,
    /// Finished with an error.
    Failed,
    /// Stopped from outside (a signal, or the stale-run monitor).
    Terminated,
    /// Cancelled by a user; the SDK's heartbeat exits when it sees it.
    Cancelled,
}

impl RunStatus {
    /// The canonical upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Completed => "COMPLETED",
            RunStatus::Failed => "FAILED",
            RunStatus::Terminated => "TERMINATED",
            RunStatus::Cancelled => "CANCELLED",
        }
    }

    /// Whether the run has ended (every status but RUNNING).
    pub fn is_terminal(self) -> bool {
        self != RunStatus::Running
    }

    /// Rank of a terminal status when several are reported for one run (the
    /// ranks of a multi-process run finishing at once): FAILED > CANCELLED >
    /// TERMINATED > COMPLETED, as Pluto's server ranks them. A client never
    /// replaces a terminal status with a lower one.
    fn severity(self) -> u8 {
        match self {
            RunStatus::Running => 0,
            RunStatus::Completed => 1,
            RunStatus::Terminated => 2,
            RunStatus::Cancelled => 3,
            RunStatus::Failed => 4,
        }
    }

    /// Whether a client (source [`StatusSource::Api`]) may move a run from
    /// `self` to `to`: anything but a terminal status replacing a higher one.
    pub fn client_may_become(self, to: RunStatus) -> bool {
        !(self.is_terminal() && to.is_terminal() && to.severity() < self.severity())
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "RUNNING" => Ok(RunStatus::Running),
            "COMPLETED" => Ok(RunStatus::Completed),
            "FAILED" => Ok(RunStatus::Failed),
            "TERMINATED" => Ok(RunStatus::Terminated),
            "CANCELLED" => Ok(RunStatus::Cancelled),
            _ => Err(Error::invalid(format!(
                "unknown run status `{s}` (expected RUNNING, COMPLETED, FAILED, TERMINATED or CANCELLED)"
            ))),
        }
    }
}

/// What changed a run's status: the `source` of a `run_status_events` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusSource {
    /// The run was created (or forked): no status before, RUNNING after.
    Create,
    /// A client set it (`/api/runs/status/update`, `forkline run status`);
    /// subject to the precedence of terminal statuses.
    Api,
    /// The run was re-opened (`/api/runs/resume`, a create with an existing
    /// external id, `forkline run resume`).
    Resume,
    /// The stale-run monitor found it silent for `--stale-after`.
    StaleMonitor,
    /// A run the stale-run monitor had terminated logged or sent a heartbeat again.
    Activity,
}

impl StatusSource {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusSource::Create => "create",
            StatusSource::Api => "api",
            StatusSource::Resume => "resume",
            StatusSource::StaleMonitor => "stale-monitor",
            StatusSource::Activity => "activity",
        }
    }
}

impl fmt::Display for StatusSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StatusSource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        [
            StatusSource::Create,
            StatusSource::Api,
            StatusSource::Resume,
            StatusSource::StaleMonitor,
            StatusSource::Activity,
        ]
        .into_iter()
        .find(|source| source.as_str() == s)
        .ok_or_else(|| Error::invalid(format!("unknown status source `{s}`")))
    }
}

/// The latest change of a run's status. Every revision carries the one that
/// set its status; the revision whose `rev` it names is the change itself,
/// so the `runs` log holds one row per change — written in the same
/// conditional commit as the new status, hence exactly one per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// The status before (`None` at creation).
    pub from: Option<RunStatus>,
    /// What made the change.
    pub source: StatusSource,
    /// The API key of the request (`Scope::key_id`); `None` for the backend
    /// and for servers without keys.
    pub key_id: Option<String>,
    /// The revision that made it.
    pub rev: i64,
}

/// The deletion of a run: its last revision. A deleted run is gone from every
/// read path at once; its rows stay in the store until purged, and its id
/// and display id are never given again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// When it was deleted.
    pub at: DateTime<Utc>,
    /// The API key that deleted it (`None` for the CLI and servers without keys).
    pub key_id: Option<String>,
    /// Whether it went as part of a cascade (a parent's subtree or a project).
    pub cascade: bool,
    /// Whether its rows are gone from the store: the revision is then a
    /// tombstone holding no data of the run's but its ids and project.
    pub purged: bool,
}

/// A run as the catalog knows it (its latest revision).
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Numeric id.
    pub id: RunId,
    /// Revision of this record; each mutation appends `rev + 1`.
    pub rev: i64,
    /// Project the run belongs to.
    pub project: String,
    /// Sequence number inside the project (the `n` of `PREFIX-n`).
    pub seq: u64,
    /// `PREFIX-n`, unique across the store.
    pub display_id: String,
    /// The run's own name.
    pub name: String,
    /// The family's name: the name of the root run.
    pub experiment: String,
    /// Run this one was forked from (the resolved parent).
    pub parent_id: Option<RunId>,
    /// Last step inherited from the parent.
    pub fork_step: Option<u64>,
    /// Configuration, always a JSON object.
    pub config: Map<String, Value>,
    /// Tags, kept sorted and unique.
    pub tags: BTreeSet<String>,
    /// Lifecycle state.
    pub status: RunStatus,
    /// Client-chosen id used by SDKs to resume a run.
    pub external_id: Option<String>,
    /// When the run was created.
    pub created_at: DateTime<Utc>,
    /// When this revision was written.
    pub updated_at: DateTime<Utc>,
    /// How the current status was set; `None` on revisions written before
    /// status changes were recorded.
    pub status_change: Option<StatusChange>,
    /// Set on the revision that deleted the run (see [`Deletion`]).
    pub deleted: Option<Deletion>,
}

impl Run {
    /// Whether this revision is the one that changed the status.
    pub fn changed_status(&self) -> bool {
        self.status_change
            .as_ref()
            .is_some_and(|c| c.rev == self.rev)
    }
}

fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Encodes runs as one batch of the `runs` Delta table.
pub fn runs_to_batch(runs: &[Run]) -> Result<RecordBatch> {
    let i64s = |f: &dyn Fn(&Run) -> i64| -> ArrayRef {
        Arc::new(runs.iter().map(f).collect::<Int64Array>())
    };
    let opt_i64s = |f: &dyn Fn(&Run) -> Option<i64>| -> ArrayRef {
        Arc::new(runs.iter().map(f).collect::<Int64Array>())
    };
    let strs = |f: &dyn Fn(&Run) -> Option<String>| -> ArrayRef {
        Arc::new(runs.iter().map(f).collect::<StringArray>())
    };
    let times = |f: &dyn Fn(&Run) -> i64| -> ArrayRef {
        Arc::new(timestamps(runs.iter().map(f).collect()))
    };
    let columns = vec![
        i64s(&|r| to_i64(r.id)),
        i64s(&|r| r.rev),
        strs(&|r| Some(r.project.clone())),
        i64s(&|r| to_i64(r.seq)),
        strs(&|r| Some(r.display_id.clone())),
        strs(&|r| Some(r.name.clone())),
        strs(&|r| Some(r.experiment.clone())),
        opt_i64s(&|r| r.parent_id.map(to_i64)),
        opt_i64s(&|r| r.fork_step.map(to_i64)),
        strs(&|r| Some(Value::Object(r.config.clone()).to_string())),
        strs(&|r| Some(serde_json::to_string(&r.tags).unwrap_or_else(|_| "[]".into()))),
        strs(&|r| Some(r.status.as_str().to_string())),
        strs(&|r| r.external_id.clone()),
        times(&|r| micros(&r.created_at)),
        times(&|r| micros(&r.updated_at)),
        strs(&|r| {
            let change = r.status_change.as_ref()?;
            Some(change.from?.as_str().to_string())
        }),
        strs(&|r| Some(r.status_change.as_ref()?.source.as_str().to_string())),
        strs(&|r| r.status_change.as_ref()?.key_id.clone()),
        opt_i64s(&|r| Some(r.status_change.as_ref()?.rev)),
        Arc::new(
            runs.iter()
                .map(|r| r.deleted.as_ref().map(|d| micros(&d.at)))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        strs(&|r| r.deleted.as_ref()?.key_id.clone()),
        Arc::new(
            runs.iter()
                .map(|r| r.deleted.as_ref().map(|d| d.cascade))
                .collect::<BooleanArray>(),
        ),
        Arc::new(
            runs.iter()
                .map(|r| r.deleted.as_ref().map(|d| d.purged))
                .collect::<BooleanArray>(),
        ),
    ];
    Ok(RecordBatch::try_new(
        arrow_schema(TableKind::Runs),
        columns,
    )?)
}

/// Decodes rows of the `runs` Delta table (any revision order).
pub fn runs_from_batch(batch: &RecordBatch) -> Result<Vec<Run>> {
    let col = |name: &str| -> Result<&ArrayRef> {
        batch
            .column_by_name(name)
            .ok_or_else(|| Error::invalid(format!("runs table lacks column `{name}`")))
    };
    let int = |name: &str| -> Result<&arrow::array::PrimitiveArray<Int64Type>> {
        col(name)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| Error::invalid(format!("runs.{name} is not BIGINT")))
    };
    let text = |name: &str| -> Result<StringArray> {
        let a = arrow::compute::cast(col(name)?, &arrow::datatypes::DataType::Utf8)?;
        Ok(a.as_string::<i32>().clone())
    };
    let time = |name: &str| -> Result<arrow::array::PrimitiveArray<TimestampMicrosecondType>> {
        let a = arrow::compute::cast(col(name)?, &crate::store::schema::timestamp_type())?;
        Ok(a.as_primitive::<TimestampMicrosecondType>().clone())
    };
    let (id, rev, seq, parent, fork) = (
        int("id")?,
        int("rev")?,
        int("seq")?,
        int("parent_id")?,
        int("fork_step")?,
    );
    let (project, display, name, experiment, config, tags, status, external) = (
        text("project")?,
        text("display_id")?,
        text("name")?,
        text("experiment")?,
        text("config")?,
        text("tags")?,
        text("status")?,
        text("external_id")?,
    );
    let (created, updated) = (time("created_at")?, time("updated_at")?);
    // Columns that runs tables written before status history lack: all null.
    let optional_text = |name: &str| -> Result<StringArray> {
        match batch.column_by_name(name) {
            Some(_) => text(name),
            None => Ok(StringArray::new_null(batch.num_rows())),
        }
    };
    let (change_from, change_source, change_key) = (
        optional_text("status_from")?,
        optional_text("status_source")?,
        optional_text("status_key_id")?,
    );
    let change_rev = match batch.column_by_name("status_rev") {
        Some(_) => int("status_rev")?.clone(),
        None => Int64Array::new_null(batch.num_rows()),
    };
    let deleted_at = match batch.column_by_name("deleted_at") {
        Some(_) => Some(time("deleted_at")?),
        None => None,
    };
    let deleted_key = optional_text("deleted_key_id")?;
    let flag = |name: &str| -> Result<BooleanArray> {
        match batch.column_by_name(name) {
            Some(c) => Ok(c
                .as_boolean_opt()
                .ok_or_else(|| Error::invalid(format!("runs.{name} is not BOOLEAN")))?
                .clone()),
            None => Ok(BooleanArray::new_null(batch.num_rows())),
        }
    };
    let (cascade, purged) = (flag("deleted_cascade")?, flag("purged")?);
    let mut runs = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let config = match serde_json::from_str(config.value(i)) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        runs.push(Run {
            id: id.value(i) as u64,
            rev: rev.value(i),
            project: project.value(i).to_string(),
            seq: seq.value(i) as u64,
            display_id: display.value(i).to_string(),
            name: name.value(i).to_string(),
            experiment: experiment.value(i).to_string(),
            parent_id: parent.is_valid(i).then(|| parent.value(i) as u64),
            fork_step: fork.is_valid(i).then(|| fork.value(i) as u64),
            config,
            tags: serde_json::from_str(tags.value(i)).unwrap_or_default(),
            status: status.value(i).parse()?,
            external_id: external.is_valid(i).then(|| external.value(i).to_string()),
            created_at: from_micros(created.value(i)),
            updated_at: from_micros(updated.value(i)),
            status_change: match (change_source.is_valid(i), change_rev.is_valid(i)) {
                (true, true) => Some(StatusChange {
                    from: change_from
                        .is_valid(i)
                        .then(|| change_from.value(i).parse())
                        .transpose()?,
                    source: change_source.value(i).parse()?,
                    key_id: change_key
                        .is_valid(i)
                        .then(|| change_key.value(i).to_string()),
                    rev: change_rev.value(i),
                }),
                _ => None,
            },
            deleted: deleted_at
                .as_ref()
                .filter(|at| at.is_valid(i))
                .map(|at| Deletion {
                    at: from_micros(at.value(i)),
                    key_id: deleted_key
                        .is_valid(i)
                        .then(|| deleted_key.value(i).to_string()),
                    cascade: cascade.is_valid(i) && cascade.value(i),
                    purged: purged.is_valid(i) && purged.value(i),
                }),
        });
    }
    Ok(runs)
}

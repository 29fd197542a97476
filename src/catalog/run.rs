//! The run record and its encoding as rows of the `runs` table.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::store::TableKind;
use crate::store::schema::{arrow_schema, timestamps};

/// Numeric run id: unique, sequential across the store, never reused.
pub type RunId = u64;

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
    /// Stopped from outside.
    Terminated,
}

impl RunStatus {
    /// The canonical upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Completed => "COMPLETED",
            RunStatus::Failed => "FAILED",
            RunStatus::Terminated => "TERMINATED",
        }
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
            _ => Err(Error::invalid(format!(
                "unknown run status `{s}` (expected RUNNING, COMPLETED, FAILED or TERMINATED)"
            ))),
        }
    }
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
        });
    }
    Ok(runs)
}

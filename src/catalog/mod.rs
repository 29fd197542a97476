//! The run catalog: run records, lineage, and the pure planning of every mutation.
//!
//! Planners here take a snapshot and a request and return the new run record;
//! the engine commits it and retries on a lost race, so every rule lives in one place.
//! That includes the status rules: the precedence of terminal statuses a
//! client reports, resume, and the stale-run monitor's transitions, each
//! recorded on the revision that makes it (see [`run::StatusChange`]).

pub mod deletion;
pub mod lineage;
pub mod merge;
pub mod run;
pub mod snapshot;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

pub use deletion::{Deleter, plan_delete, plan_delete_project};
pub use lineage::{SYSTEM_METRIC_PREFIX, Segment, inheritable, sees};
pub use run::{Run, RunId, RunStatus, StatusChange, StatusSource};
pub use snapshot::{CatalogSnapshot, FamilyMember};

use crate::error::{Error, Result};
use crate::ingest::limits::{MAX_CONFIG_BYTES, MAX_NAME_BYTES, MAX_TAGS};

/// A request to create a root run.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    /// Project; created on first use.
    pub project: String,
    /// Run name.
    pub name: String,
    /// Configuration object.
    pub config: Map<String, Value>,
    /// Tags.
    pub tags: Vec<String>,
    /// Client-chosen id for later resumes.
    pub external_id: Option<String>,
}

/// A request to fork a run at a step.
#[derive(Debug, Clone)]
pub struct ForkRequest {
    /// The run to fork, by id or display id (the parent is resolved from its view).
    pub run: String,
    /// Last step the fork inherits.
    pub step: u64,
    /// Name of the new run (default: the forked run's name with `-fork@<step>`
    /// in place of any such suffix it has).
    pub name: Option<String>,
    /// Project, if the caller states one; must be the parent's.
    pub project: Option<String>,
    /// Config of the new run; merged onto the parent's when `inherit_config`.
    pub config: Map<String, Value>,
    /// Tags of the new run; unioned with the parent's when `inherit_tags`.
    pub tags: Vec<String>,
    /// Deep-merge the parent's config under the new one (default true).
    pub inherit_config: bool,
    /// Union the parent's tags into the new run's (default false).
    pub inherit_tags: bool,
    /// Client-chosen id for later resumes.
    pub external_id: Option<String>,
}

impl ForkRequest {
    /// A fork of `run` at `step` with the documented defaults.
    pub fn new(run: impl Into<String>, step: u64) -> Self {
        Self {
            run: run.into(),
            step,
            name: None,
            project: None,
            config: Map::new(),
            tags: Vec::new(),
            inherit_config: true,
            inherit_tags: false,
            external_id: None,
        }
    }
}

/// A change to an existing run.
#[derive(Debug, Clone)]
pub enum RunUpdate {
    /// Set the lifecycle status, as a client asks: a terminal status never
    /// replaces a higher one (see [`RunStatus::client_may_become`]).
    Status(RunStatus),
    /// Back to RUNNING, for a client that continues logging.
    Resume,
    /// The stale-run monitor's TERMINATED, only if the run is still RUNNING
    /// at revision `rev`, the one it judged silent (any later revision is
    /// activity, and another monitor may have been first).
    StaleTerminate {
        /// The revision judged silent.
        rev: i64,
    },
    /// Back to RUNNING after activity, only if the stale-run monitor is what
    /// terminated the run (a run a client finished stays finished).
    Revive,
    /// Deep-merge keys into the config.
    MergeConfig(Map<String, Value>),
    /// Add tags.
    AddTags(Vec<String>),
    /// Remove tags.
    RemoveTags(Vec<String>),
    /// Replace the whole tag set.
    SetTags(Vec<String>),
}

fn check_name(what: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(format!(
            "{what} is longer than the limit of {MAX_NAME_BYTES} bytes"
        )));
    }
    Ok(())
}

fn check_tags(tags: &[String]) -> Result<BTreeSet<String>> {
    let set = tags
        .iter()
        .map(|t| {
            check_name("a tag", t)?;
            Ok(t.trim().to_string())
        })
        .collect::<Result<BTreeSet<String>>>()?;
    check_tag_count(&set)?;
    Ok(set)
}

fn check_tag_count(tags: &BTreeSet<String>) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid(format!(
            "a run may carry at most {MAX_TAGS} tags, this one would carry {}",
            tags.len()
        )));
    }
    Ok(())
}

/// Refuses a config whose serialized JSON would exceed [`MAX_CONFIG_BYTES`];
/// checked on the config a plan would store, so merges obey it too.
fn check_config(config: &Map<String, Value>) -> Result<()> {
    /// Counts bytes and stops the serializer once past the limit.
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            if self.0 > MAX_CONFIG_BYTES {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    if serde_json::to_writer(&mut counter, config).is_err() {
        return Err(Error::TooLarge(format!(
            "the run's config would be over the limit of {MAX_CONFIG_BYTES} bytes of JSON (1 MiB); nothing was changed"
        )));
    }
    Ok(())
}

fn check_external_id(snap: &CatalogSnapshot, project: &str, ext: &Option<String>) -> Result<()> {
    if let Some(ext) = ext {
        check_name("external id", ext)?;
        if snap.find_external(project, ext).is_some() {
            return Err(Error::invalid(format!(
                "project `{project}` already has a run with external id `{ext}`"
            )));
        }
    }
    Ok(())
}

/// The status change that creates a run.
fn created(key_id: Option<&str>) -> Option<StatusChange> {
    Some(StatusChange {
        from: None,
        source: StatusSource::Create,
        key_id: key_id.map(str::to_string),
        rev: 1,
    })
}

/// Plans a new root run; `key_id` is the API key of the request, if any.
pub fn plan_create(
    snap: &CatalogSnapshot,
    req: &NewRun,
    key_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Run> {
    check_name("project", &req.project)?;
    check_name("run name", &req.name)?;
    check_external_id(snap, &req.project, &req.external_id)?;
    check_config(&req.config)?;
    let seq = snap.next_seq(&req.project);
    Ok(Run {
        id: snap.next_id(),
        rev: 1,
        project: req.project.clone(),
        seq,
        display_id: format!("{}-{seq}", snap.prefix_for(&req.project)),
        name: req.name.clone(),
        experiment: req.name.clone(),
        parent_id: None,
        fork_step: None,
        config: req.config.clone(),
        tags: check_tags(&req.tags)?,
        status: RunStatus::Running,
        external_id: req.external_id.clone(),
        created_at: now,
        updated_at: now,
        status_change: created(key_id),
        deleted: None,
    })
}

/// `name-fork@step`, where a default suffix the forked run already carries is
/// replaced rather than extended: a chain of unnamed forks would otherwise
/// outgrow the name limit after a few dozen levels and refuse the next fork.
fn default_fork_name(forked: &str, step: u64) -> String {
    let base = match forked.rsplit_once("-fork@") {
        Some((base, old)) if !old.is_empty() && old.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => forked,
    };
    let suffix = format!("-fork@{step}");
    let mut end = base.len().min(MAX_NAME_BYTES.saturating_sub(suffix.len()));
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &base[..end])
}

/// Plans a fork; `stitched_max_step` is the highest step of the forked run's view.
pub fn plan_fork(
    snap: &CatalogSnapshot,
    req: &ForkRequest,
    stitched_max_step: Option<u64>,
    key_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Run> {
    let forked = snap.lookup(&req.run)?;
    if let Some(project) = &req.project
        && project != &forked.project
    {
        return Err(Error::invalid(format!(
            "run {} belongs to project `{}`, not `{project}`",
            forked.display_id, forked.project
        )));
    }
    let segments = snap.segments(forked.id)?;
    let parent_id =
        lineage::resolve_fork_parent(&segments, req.step, stitched_max_step, &forked.display_id)?;
    let parent = snap.require(parent_id)?;
    let name = match &req.name {
        Some(name) => name.clone(),
        None => default_fork_name(&forked.name, req.step),
    };
    check_name("run name", &name)?;
    check_external_id(snap, &parent.project, &req.external_id)?;
    let config = if req.inherit_config {
        merge::deep_merge(&parent.config, &req.config)
    } else {
        req.config.clone()
    };
    check_config(&config)?;
    let mut tags = check_tags(&req.tags)?;
    if req.inherit_tags {
        tags.extend(parent.tags.iter().cloned());
        check_tag_count(&tags)?;
    }
    let seq = snap.next_seq(&parent.project);
    Ok(Run {
        id: snap.next_id(),
        rev: 1,
        project: parent.project.clone(),
        seq,
        display_id: format!("{}-{seq}", snap.prefix_for(&parent.project)),
        name,
        experiment: parent.experiment.clone(),
        parent_id: Some(parent.id),
        fork_step: Some(req.step),
        config,
        tags,
        status: RunStatus::Running,
        external_id: req.external_id.clone(),
        created_at: now,
        updated_at: now,
        status_change: created(key_id),
        deleted: None,
    })
}

/// Moves `next` (a copy of the run's latest revision, not yet bumped) to
/// status `to`, recording the change; nothing when it has that status already.
fn set_status(next: &mut Run, to: RunStatus, source: StatusSource, key_id: Option<&str>) {
    if next.status == to {
        return;
    }
    next.status_change = Some(StatusChange {
        from: Some(next.status),
        source,
        key_id: key_id.map(str::to_string),
        rev: next.rev + 1,
    });
    next.status = to;
}

/// Plans the next revision of a run, on behalf of the API key `key_id` (if
/// any). A plan that changes nothing returns the run's latest revision as it
/// is, which the engine does not commit: a refused or repeated status writes
/// nothing, so the eight ranks of a run reporting COMPLETED make one change.
pub fn plan_update(
    snap: &CatalogSnapshot,
    run: &str,
    update: &RunUpdate,
    key_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Run> {
    let current = snap.lookup(run)?;
    let mut next = Run::clone(current);
    match update {
        RunUpdate::Status(status) => {
            if next.status.client_may_become(*status) {
                set_status(&mut next, *status, StatusSource::Api, key_id);
            }
        }
        RunUpdate::Resume => {
            set_status(&mut next, RunStatus::Running, StatusSource::Resume, key_id)
        }
        RunUpdate::StaleTerminate { rev } => {
            if next.rev == *rev && next.status == RunStatus::Running {
                set_status(
                    &mut next,
                    RunStatus::Terminated,
                    StatusSource::StaleMonitor,
                    None,
                );
            }
        }
        RunUpdate::Revive => {
            let stale = next
                .status_change
                .as_ref()
                .is_some_and(|c| c.source == StatusSource::StaleMonitor);
            if next.status == RunStatus::Terminated && stale {
                set_status(
                    &mut next,
                    RunStatus::Running,
                    StatusSource::Activity,
                    key_id,
                );
            }
        }
        RunUpdate::MergeConfig(config) => {
            next.config = merge::deep_merge(&next.config, config);
            check_config(&next.config)?;
        }
        RunUpdate::AddTags(tags) => {
            next.tags.extend(check_tags(tags)?);
            check_tag_count(&next.tags)?;
        }
        RunUpdate::RemoveTags(tags) => {
            for tag in tags {
                next.tags.remove(tag.trim());
            }
        }
        RunUpdate::SetTags(tags) => next.tags = check_tags(tags)?,
    }
    if next == **current {
        return Ok(next);
    }
    next.rev += 1;
    next.updated_at = now;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_fork_names_stay_within_the_limit() {
        assert_eq!(default_fork_name("base", 7), "base-fork@7");
        assert_eq!(default_fork_name("base-fork@7", 12), "base-fork@12");
        // Only a default suffix is replaced, not a name that merely contains one.
        assert_eq!(default_fork_name("a-fork@x", 3), "a-fork@x-fork@3");
        assert_eq!(default_fork_name("a-fork@", 3), "a-fork@-fork@3");
        let long = "é".repeat(MAX_NAME_BYTES);
        let name = default_fork_name(&long, u64::MAX);
        assert!(name.len() <= MAX_NAME_BYTES && name.ends_with(&format!("-fork@{}", u64::MAX)));
        check_name("run name", &name).unwrap();
    }

    const ALL: [RunStatus; 5] = [
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Terminated,
        RunStatus::Cancelled,
        RunStatus::Failed,
    ];

    fn one_run() -> CatalogSnapshot {
        let req = NewRun {
            project: "p".into(),
            name: "r".into(),
            ..Default::default()
        };
        let run = plan_create(&CatalogSnapshot::default(), &req, Some("k1"), Utc::now()).unwrap();
        CatalogSnapshot::from_revisions(Some(0), vec![run])
    }

    fn apply(snap: &CatalogSnapshot, update: RunUpdate) -> (CatalogSnapshot, Run) {
        let run = plan_update(snap, "1", &update, Some("k2"), Utc::now()).unwrap();
        let next = snap.with_revisions(snap.version().map(|v| v + 1), vec![run.clone()]);
        (next, run)
    }

    /// Every pair of statuses a client may send, against the documented
    /// order written out as a list (later is higher).
    #[test]
    fn clients_never_lower_a_terminal_status() {
        let order = ["COMPLETED", "TERMINATED", "CANCELLED", "FAILED"];
        let rank = |s: RunStatus| order.iter().position(|o| *o == s.as_str());
        for from in ALL {
            for to in ALL {
                let (snap, held) = apply(&one_run(), RunUpdate::Status(from));
                let (_, run) = apply(&snap, RunUpdate::Status(to));
                let refused = matches!((rank(from), rank(to)), (Some(f), Some(t)) if t < f);
                let want = if refused { from } else { to };
                assert_eq!(run.status, want, "{from} → {to}");
                // A change is a revision that records it; no change, no revision.
                if want == from {
                    assert_eq!(run, held, "{from} → {to}");
                } else {
                    assert_eq!(run.rev, held.rev + 1);
                    let change = StatusChange {
                        from: Some(from),
                        source: StatusSource::Api,
                        key_id: Some("k2".into()),
                        rev: run.rev,
                    };
                    assert_eq!(run.status_change, Some(change), "{from} → {to}");
                }
            }
        }
    }

    #[test]
    fn backend_transitions_are_conditional() {
        let snap = one_run();
        let created = snap.require(1).unwrap().clone();
        assert!(created.changed_status());
        assert_eq!(
            created.status_change.as_ref().unwrap().key_id.as_deref(),
            Some("k1")
        );
        // The monitor judged an older revision: the run was active since.
        let (snap, tagged) = apply(&snap, RunUpdate::AddTags(vec!["t".into()]));
        assert!(!tagged.changed_status());
        let (snap, run) = apply(&snap, RunUpdate::StaleTerminate { rev: 1 });
        assert_eq!((run.status, run.rev), (RunStatus::Running, 2));
        let (snap, run) = apply(&snap, RunUpdate::StaleTerminate { rev: 2 });
        assert_eq!(run.status, RunStatus::Terminated);
        let change = run.status_change.clone().unwrap();
        assert_eq!(
            (change.source, change.key_id),
            (StatusSource::StaleMonitor, None)
        );
        // A second monitor finds nothing to do.
        let (snap, again) = apply(&snap, RunUpdate::StaleTerminate { rev: 2 });
        assert_eq!(again, run);
        // Activity revives what the monitor terminated, and only that.
        let (snap, run) = apply(&snap, RunUpdate::Revive);
        assert_eq!(run.status, RunStatus::Running);
        assert_eq!(
            run.status_change.as_ref().unwrap().source,
            StatusSource::Activity
        );
        let (snap, done) = apply(&snap, RunUpdate::Status(RunStatus::Completed));
        let (snap, run) = apply(&snap, RunUpdate::Revive);
        assert_eq!(run, done);
        // Resume is exempt from precedence; repeated, it records nothing.
        let (snap, run) = apply(&snap, RunUpdate::Resume);
        assert_eq!(
            run.status_change.as_ref().unwrap().source,
            StatusSource::Resume
        );
        let (_, again) = apply(&snap, RunUpdate::Resume);
        assert_eq!(again, run);
    }
}

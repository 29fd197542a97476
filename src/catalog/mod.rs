//! The run catalog: run records, lineage, and the pure planning of every mutation.
//!
//! Planners here take a snapshot and a request and return the new run record;
//! the engine commits it and retries on a lost race, so every rule lives in one place.

pub mod lineage;
pub mod merge;
pub mod run;
pub mod snapshot;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

pub use lineage::Segment;
pub use run::{Run, RunId, RunStatus};
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
    /// Set the lifecycle status.
    Status(RunStatus),
    /// Back to RUNNING, for a client that continues logging.
    Resume,
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
        return Err(Error::invalid(format!(
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

/// Plans a new root run.
pub fn plan_create(snap: &CatalogSnapshot, req: &NewRun, now: DateTime<Utc>) -> Result<Run> {
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
    })
}

/// Plans the next revision of a run.
pub fn plan_update(
    snap: &CatalogSnapshot,
    run: &str,
    update: &RunUpdate,
    now: DateTime<Utc>,
) -> Result<Run> {
    let mut next = Run::clone(snap.lookup(run)?);
    match update {
        RunUpdate::Status(status) => next.status = *status,
        RunUpdate::Resume => next.status = RunStatus::Running,
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
}

//! Planning a deletion: which runs go, and the revisions that delete them.
//!
//! A fork inherits its parent's points up to its fork step, so a run with
//! forks is deleted only with its whole subtree (`cascade`), and a fork is
//! never left pointing at a missing parent. The plan runs on the catalog
//! the commit is conditional on, like every mutation: a fork and a deletion
//! of its parent racing in one batch, or across processes, are ordered,
//! and whichever comes second is refused (the fork's parent is unknown, or
//! the deletion finds a fork).

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::run::{Deletion, Run, RunId};
use super::snapshot::CatalogSnapshot;
use crate::error::{Error, Result};

/// How many descendants a refusal names before it only counts them.
const NAMED_DESCENDANTS: usize = 20;

/// Who asks for a deletion, and how far it may reach.
pub struct Deleter<'a> {
    /// Whether the caller sees a project: a run outside is unknown.
    pub sees: &'a dyn Fn(&str) -> bool,
    /// The caller's API key, recorded on each deletion.
    pub key_id: Option<&'a str>,
    /// When.
    pub now: DateTime<Utc>,
}

/// Plans the deletion of the runs `references` name (ids or display ids),
/// all or nothing: an unknown run refuses the whole request, as does a run
/// with forks unless `cascade` takes its subtree along.
pub fn plan_delete(
    snap: &CatalogSnapshot,
    references: &[String],
    cascade: bool,
    by: &Deleter,
) -> Result<Vec<Run>> {
    if references.is_empty() {
        return Err(Error::invalid("name at least one run to delete"));
    }
    let mut named = BTreeSet::new();
    for reference in references {
        let run = visible(snap, reference, by.sees)?;
        named.insert(run.id);
    }
    let mut doomed: Vec<RunId> = Vec::new();
    let mut seen = BTreeSet::new();
    for id in &named {
        for member in snap.subtree(*id) {
            if seen.insert(member) {
                doomed.push(member);
            }
        }
    }
    if !cascade {
        let forks: Vec<&Arc<Run>> = doomed
            .iter()
            .filter(|id| !named.contains(id))
            .filter_map(|id| snap.get(*id))
            .collect();
        if !forks.is_empty() {
            return Err(Error::Conflict(refusal(snap, &named, &forks)));
        }
    }
    Ok(doomed
        .iter()
        .filter_map(|id| snap.get(*id))
        .map(|run| deletion(run, cascade && !named.contains(&run.id), by))
        .collect())
}

/// Plans the deletion of every run of `project`.
pub fn plan_delete_project(
    snap: &CatalogSnapshot,
    project: &str,
    by: &Deleter,
) -> Result<Vec<Run>> {
    let runs = snap.project_runs(project);
    if runs.is_empty() || !(by.sees)(project) {
        return Err(Error::NotFound(format!("unknown project `{project}`")));
    }
    Ok(runs.iter().map(|run| deletion(run, true, by)).collect())
}

/// A run the caller can see, by reference.
fn visible<'s>(
    snap: &'s CatalogSnapshot,
    reference: &str,
    sees: &dyn Fn(&str) -> bool,
) -> Result<&'s Arc<Run>> {
    let run = snap.lookup(reference)?;
    if sees(&run.project) {
        Ok(run)
    } else {
        Err(Error::NotFound(format!(
            "unknown run `{}`",
            reference.trim()
        )))
    }
}

/// The revision deleting `run`.
fn deletion(run: &Run, cascade: bool, by: &Deleter) -> Run {
    let mut next = run.clone();
    next.rev += 1;
    next.updated_at = by.now;
    next.deleted = Some(Deletion {
        at: by.now,
        key_id: by.key_id.map(str::to_string),
        cascade,
        purged: false,
    });
    next
}

/// The 409's message: which runs have forks, and the forks.
fn refusal(snap: &CatalogSnapshot, named: &BTreeSet<RunId>, forks: &[&Arc<Run>]) -> String {
    let parents: Vec<String> = named
        .iter()
        .filter(|id| forks.iter().any(|f| f.parent_id == Some(**id)))
        .filter_map(|id| snap.get(*id))
        .map(|r| r.display_id.clone())
        .collect();
    let listed: Vec<&str> = forks
        .iter()
        .take(NAMED_DESCENDANTS)
        .map(|f| f.display_id.as_str())
        .collect();
    let more = forks.len().saturating_sub(NAMED_DESCENDANTS);
    let mut text = listed.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    format!(
        "run {} has forks that inherit its points: {text}; delete them first or ask for the cascade",
        parents.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ForkRequest, NewRun, plan_create, plan_fork};

    fn tree() -> CatalogSnapshot {
        let mut snap = CatalogSnapshot::default();
        let now = Utc::now();
        for name in ["a", "b"] {
            let req = NewRun {
                project: "p".into(),
                name: name.into(),
                ..Default::default()
            };
            let run = plan_create(&snap, &req, None, now).unwrap();
            snap.add(run);
        }
        // 3 forks 1; 4 forks 3.
        for forked in ["1", "3"] {
            let run = plan_fork(&snap, &ForkRequest::new(forked, 0), Some(5), None, now).unwrap();
            snap.add(run);
        }
        snap
    }

    fn by(sees: &dyn Fn(&str) -> bool) -> Deleter<'_> {
        Deleter {
            sees,
            key_id: Some("k"),
            now: Utc::now(),
        }
    }

    #[test]
    fn parents_need_the_cascade_and_ids_stay_taken() {
        let mut snap = tree();
        let all = |_: &str| true;
        let refused = plan_delete(&snap, &["P-1".into()], false, &by(&all)).unwrap_err();
        assert!(
            matches!(&refused, Error::Conflict(m) if m.contains("P-3") && m.contains("P-4")),
            "{refused}"
        );
        let leaf = plan_delete(&snap, &["4".into()], false, &by(&all)).unwrap();
        assert_eq!(leaf.len(), 1);
        let gone = plan_delete(&snap, &["1".into()], true, &by(&all)).unwrap();
        assert_eq!(gone.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 3, 4]);
        assert!(!gone[0].deleted.as_ref().unwrap().cascade);
        assert!(gone[1].deleted.as_ref().unwrap().cascade);
        for run in gone {
            snap.add(run);
        }
        assert!(snap.lookup("P-1").is_err() && snap.get(3).is_none());
        assert_eq!(snap.runs().count(), 1);
        assert_eq!(snap.deleted().count(), 3);
        assert_eq!(snap.next_id(), 5);
        assert_eq!(snap.next_seq("p"), 5);
        assert_eq!(snap.unpurged(), [1, 3, 4]);
        // All or nothing: one unknown run refuses the request.
        assert!(plan_delete(&snap, &["2".into(), "1".into()], false, &by(&all)).is_err());
        let last = plan_delete_project(&snap, "p", &by(&all)).unwrap();
        for run in last {
            snap.add(run);
        }
        assert!(snap.projects().is_empty());
        assert_eq!(snap.prefix_for("p"), "P");
        assert_eq!(snap.next_seq("p"), 5);
    }

    #[test]
    fn other_projects_are_unknown() {
        let snap = tree();
        let other = |p: &str| p == "q";
        let refused = plan_delete(&snap, &["1".into()], true, &by(&other)).unwrap_err();
        assert!(matches!(refused, Error::NotFound(_)));
        assert!(matches!(
            plan_delete_project(&snap, "p", &by(&other)).unwrap_err(),
            Error::NotFound(_)
        ));
    }
}

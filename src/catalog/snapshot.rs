//! An immutable in-memory view of the run catalog at one version of the `runs` table.
//!
//! Table functions plan synchronously, so lineage is answered from this
//! snapshot; it is rebuilt only when the `runs` table version moves.
//!
//! Its maps are persistent (`imbl`): a copy shares every node with the
//! original, so a writer that plans a batch of changes on a copy and
//! publishes it pays for the runs it changed, not for the runs of the store
//! (with `std` maps each catalog commit copied every run: 95 ms a create at
//! 100,000 runs, debug build).

use std::collections::BTreeMap;
use std::sync::Arc;

use imbl::{HashMap, OrdMap, OrdSet, Vector};

mod restrict;

use super::lineage::{self, Segment};
use super::run::{Run, RunId};
use crate::error::{Error, Result};

/// The catalog as of one version of the `runs` table.
#[derive(Debug, Default, Clone)]
pub struct CatalogSnapshot {
    version: Option<u64>,
    runs: OrdMap<RunId, Arc<Run>>,
    by_display: HashMap<String, RunId>,
    children: HashMap<RunId, Vec<RunId>>,
    prefixes: HashMap<String, String>,
    next_seq: HashMap<String, u64>,
    /// `(project, external id)` of the runs created with one.
    externals: HashMap<(String, String), RunId>,
    /// Each project's runs by creation time (milliseconds) and id: a runs
    /// list's first page, newest first, without a look at every run.
    by_creation: HashMap<String, OrdSet<(i64, RunId)>>,
    /// Deleted runs by id (their last revision): in no other index, so no
    /// read path finds them, but their ids and display ids stay taken.
    deleted: OrdMap<RunId, Arc<Run>>,
    /// The runs each commit since `changes_since` changed, by version: what a
    /// copy restricted to some projects at an older version needs to catch
    /// up (see [`CatalogSnapshot::restricted_after`]).
    changes: Vector<(u64, RunId)>,
    /// `changes` holds every change after this version (`None`: every change
    /// since the table began).
    changes_since: Option<u64>,
}

/// The most changes a catalog remembers for restricted copies to catch up with.
const MAX_CHANGES: usize = 65_536;

/// A member of a family with its distance from the root.
#[derive(Debug, Clone)]
pub struct FamilyMember {
    /// The run.
    pub run: Arc<Run>,
    /// Number of forks between the root and this run.
    pub depth: usize,
}

impl CatalogSnapshot {
    /// Builds a snapshot from run revisions in any order; the highest `rev` of each id wins.
    pub fn from_revisions(version: Option<u64>, revisions: Vec<Run>) -> Self {
        let mut latest: BTreeMap<RunId, Run> = BTreeMap::new();
        for run in revisions {
            match latest.get(&run.id) {
                Some(existing) if existing.rev >= run.rev => {}
                _ => {
                    latest.insert(run.id, run);
                }
            }
        }
        let mut snap = CatalogSnapshot {
            version,
            changes_since: version,
            ..Default::default()
        };
        for run in latest.into_values() {
            snap.insert(run);
        }
        snap
    }

    /// This catalog with `revisions` added, as of `version`: what
    /// [`CatalogSnapshot::from_revisions`] builds from all of them, without
    /// re-reading the runs the catalog already holds (a writer's own commit
    /// would otherwise cost a read of the whole `runs` table).
    pub fn with_revisions(&self, version: Option<u64>, revisions: Vec<Run>) -> Self {
        let mut snap = self.clone();
        snap.version = version;
        snap.remember(version, revisions.iter().map(|r| r.id));
        for run in revisions {
            snap.insert(run);
        }
        snap
    }

    /// Adds a revision, as a writer planning several changes on one catalog
    /// does so that each sees the ones before it.
    pub fn add(&mut self, run: Run) {
        self.insert(run);
    }

    /// This catalog as of `version`, with `stored` (revisions it holds, as
    /// read back from the rows a commit wrote) in place of its own copies.
    pub fn committed(mut self, version: Option<u64>, stored: Vec<Run>) -> Self {
        self.version = version;
        self.remember(version, stored.iter().map(|r| r.id));
        for run in stored {
            match self.runs.get(&run.id) {
                Some(held) if held.rev > run.rev => {}
                Some(_) if run.deleted.is_none() => {
                    self.runs.insert(run.id, Arc::new(run));
                }
                _ => self.insert(run),
            }
        }
        self
    }

    /// Moves a run's deletion (a revision carrying [`Run::deleted`]) out of
    /// every index into `deleted`. A deletion is final: later revisions of a
    /// deleted run (a purge's tombstone) only replace the deletion.
    fn remove(&mut self, run: Run) {
        let id = run.id;
        if let Some(held) = self.runs.remove(&id) {
            self.by_display
                .remove(&held.display_id.to_ascii_uppercase());
            if let Some(parent) = held.parent_id
                && let Some(kids) = self.children.get_mut(&parent)
            {
                kids.retain(|k| *k != id);
            }
            self.children.remove(&id);
            if let Some(ext) = &held.external_id {
                self.externals.remove(&(held.project.clone(), ext.clone()));
            }
            if let Some(set) = self.by_creation.get_mut(&held.project) {
                set.remove(&(held.created_at.timestamp_millis(), id));
                if set.is_empty() {
                    self.by_creation.remove(&held.project);
                }
            }
        }
        // The project's prefix and next sequence number stay: a display id
        // is never given twice, even once a project is gone and named again.
        let prefix = run.display_id.rsplit_once('-').map(|(p, _)| p.to_string());
        if let Some(prefix) = prefix {
            self.prefixes.entry(run.project.clone()).or_insert(prefix);
        }
        let next = self.next_seq.entry(run.project.clone()).or_insert(1);
        *next = (*next).max(run.seq + 1);
        self.deleted.insert(id, Arc::new(run));
    }

    /// Adds a revision unless one at least as recent is held.
    fn insert(&mut self, run: Run) {
        let id = run.id;
        if let Some(gone) = self.deleted.get(&id) {
            if gone.rev < run.rev && run.deleted.is_some() {
                self.deleted.insert(id, Arc::new(run));
            }
            return;
        }
        if run.deleted.is_some() {
            return self.remove(run);
        }
        match self.runs.get(&id) {
            Some(held) if held.rev >= run.rev => return,
            Some(_) => {}
            // Parent, display id and project are fixed when a run is created,
            // so only its first revision adds to the indexes.
            None => {
                self.by_display
                    .insert(run.display_id.to_ascii_uppercase(), id);
                if let Some(parent) = run.parent_id {
                    self.children.entry(parent).or_default().push(id);
                }
                if let Some(ext) = &run.external_id {
                    self.externals
                        .insert((run.project.clone(), ext.clone()), id);
                }
                self.by_creation
                    .entry(run.project.clone())
                    .or_default()
                    .insert((run.created_at.timestamp_millis(), id));
                let prefix = run.display_id.rsplit_once('-').map(|(p, _)| p.to_string());
                if let Some(prefix) = prefix {
                    self.prefixes.entry(run.project.clone()).or_insert(prefix);
                }
                let next = self.next_seq.entry(run.project.clone()).or_insert(1);
                *next = (*next).max(run.seq + 1);
            }
        }
        self.runs.insert(id, Arc::new(run));
    }

    /// Version of the `runs` table this snapshot reflects (`None` before the first commit).
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// All runs, by id.
    pub fn runs(&self) -> impl Iterator<Item = &Arc<Run>> {
        self.runs.values()
    }

    /// A run by numeric id.
    pub fn get(&self, id: RunId) -> Option<&Arc<Run>> {
        self.runs.get(&id)
    }

    /// A run by numeric id or display id (case-insensitive).
    pub fn lookup(&self, reference: &str) -> Result<&Arc<Run>> {
        let reference = reference.trim();
        let found = match reference.parse::<RunId>() {
            Ok(id) => self.runs.get(&id),
            Err(_) => self
                .by_display
                .get(&reference.to_ascii_uppercase())
                .and_then(|id| self.runs.get(id)),
        };
        found.ok_or_else(|| Error::NotFound(format!("unknown run `{reference}`")))
    }

    /// A run's latest revision, deleted or not.
    pub fn revision(&self, id: RunId) -> Result<&Arc<Run>> {
        self.runs
            .get(&id)
            .or_else(|| self.deleted.get(&id))
            .ok_or_else(|| Error::NotFound(format!("unknown run `{id}`")))
    }

    /// A run by numeric id, as an error when missing.
    pub fn require(&self, id: RunId) -> Result<&Arc<Run>> {
        self.runs
            .get(&id)
            .ok_or_else(|| Error::NotFound(format!("unknown run `{id}`")))
    }

    /// The chain from the root down to `id`, as `(run, fork_step)` pairs.
    pub fn chain(&self, id: RunId) -> Result<Vec<(RunId, Option<u64>)>> {
        let mut chain = Vec::new();
        let mut current = Some(id);
        while let Some(cur) = current {
            let run = self.require(cur)?;
            chain.push((run.id, run.fork_step));
            if chain.len() > self.runs.len() {
                return Err(Error::invalid(format!("lineage of run {id} has a cycle")));
            }
            current = run.parent_id;
        }
        chain.reverse();
        Ok(chain)
    }

    /// Segments of the stitched view of `id`, root first.
    pub fn segments(&self, id: RunId) -> Result<Vec<Segment>> {
        Ok(lineage::segments(&self.chain(id)?))
    }

    /// The root of the family `id` belongs to.
    pub fn root(&self, id: RunId) -> Result<RunId> {
        Ok(self.chain(id)?[0].0)
    }

    /// Every run of the family of `id`, root first, then breadth-first by id.
    pub fn family(&self, id: RunId) -> Result<Vec<FamilyMember>> {
        let root = self.root(id)?;
        let mut out = Vec::new();
        let mut queue = std::collections::VecDeque::from([(root, 0usize)]);
        while let Some((cur, depth)) = queue.pop_front() {
            out.push(FamilyMember {
                run: self.require(cur)?.clone(),
                depth,
            });
            let mut kids = self.children.get(&cur).cloned().unwrap_or_default();
            kids.sort_unstable();
            queue.extend(kids.into_iter().map(|k| (k, depth + 1)));
        }
        Ok(out)
    }

    /// The id the next created run gets: never one a deleted run had.
    pub fn next_id(&self) -> RunId {
        let live = self.runs.get_max().map_or(0, |(id, _)| *id);
        let gone = self.deleted.get_max().map_or(0, |(id, _)| *id);
        live.max(gone) + 1
    }

    /// The deleted runs, by id (their deleting revision, or a purge's tombstone).
    pub fn deleted(&self) -> impl Iterator<Item = &Arc<Run>> {
        self.deleted.values()
    }

    /// Ids of deleted runs whose rows are still in the store: every scan
    /// leaves them out until a purge removes them.
    pub fn unpurged(&self) -> Vec<RunId> {
        self.deleted
            .values()
            .filter(|r| r.deleted.as_ref().is_some_and(|d| !d.purged))
            .map(|r| r.id)
            .collect()
    }

    /// `id` and every run forked from it, directly or not, parents first.
    pub fn subtree(&self, id: RunId) -> Vec<RunId> {
        let mut out = vec![id];
        let mut at = 0;
        while at < out.len() {
            let mut kids = self.children.get(&out[at]).cloned().unwrap_or_default();
            kids.sort_unstable();
            out.extend(kids);
            at += 1;
        }
        out
    }

    /// The runs of `project`, by creation.
    pub fn project_runs(&self, project: &str) -> Vec<&Arc<Run>> {
        self.by_creation
            .get(project)
            .into_iter()
            .flatten()
            .filter_map(|(_, id)| self.runs.get(id))
            .collect()
    }

    /// The display-id prefix of `project`: kept if the project exists, else derived.
    pub fn prefix_for(&self, project: &str) -> String {
        if let Some(prefix) = self.prefixes.get(project) {
            return prefix.clone();
        }
        let base = derive_prefix(project);
        let taken = |p: &str| self.prefixes.values().any(|q| q == p);
        if !taken(&base) {
            return base;
        }
        (2..)
            .map(|n| format!("{base}{n}"))
            .find(|p| !taken(p))
            .expect("an unbounded range finds a free prefix")
    }

    /// The sequence number the next run of `project` gets.
    pub fn next_seq(&self, project: &str) -> u64 {
        self.next_seq.get(project).copied().unwrap_or(1)
    }

    /// The runs of `project` by creation time to the millisecond, then id:
    /// oldest first, or newest first when `newest` (ties by id either way);
    /// at most `wanted` of them.
    pub fn by_creation(&self, project: &str, newest: bool, wanted: usize) -> Vec<&Arc<Run>> {
        let Some(set) = self.by_creation.get(project) else {
            return Vec::new();
        };
        // Newest first walks the set backwards, which puts ties by id
        // backwards too: take the whole millisecond the page ends in, then
        // order it.
        let mut keys: Vec<(i64, RunId)> = Vec::new();
        let keys_of = |walk: &mut dyn Iterator<Item = &(i64, RunId)>, keys: &mut Vec<_>| {
            for key in walk {
                if keys.len() >= wanted
                    && keys
                        .last()
                        .is_none_or(|last: &(i64, RunId)| last.0 != key.0)
                {
                    break;
                }
                keys.push(*key);
            }
        };
        if newest {
            keys_of(&mut set.iter().rev(), &mut keys);
            keys.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        } else {
            keys_of(&mut set.iter(), &mut keys);
        }
        keys.truncate(wanted);
        keys.iter()
            .filter_map(|(_, id)| self.runs.get(id))
            .collect()
    }

    /// Names of all projects with at least one run (not deleted).
    pub fn projects(&self) -> Vec<String> {
        let mut p: Vec<String> = self.by_creation.keys().cloned().collect();
        p.sort();
        p
    }
}

/// Display-id prefix rule: the upper-cased initials of the project name's
/// words (split on anything not alphanumeric, at most 4) when it has two or
/// more words, else its first three alphanumeric characters; `RUN` if empty.
/// A prefix already held by another project gets a number appended (`MS2`).
pub fn derive_prefix(project: &str) -> String {
    let words: Vec<&str> = project
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let prefix: String = if words.len() >= 2 {
        words
            .iter()
            .take(4)
            .filter_map(|w| w.chars().next())
            .collect()
    } else {
        words
            .first()
            .map(|w| w.chars().take(3).collect())
            .unwrap_or_default()
    };
    if prefix.is_empty() {
        "RUN".into()
    } else {
        prefix.to_ascii_uppercase()
    }
}

impl CatalogSnapshot {
    /// The run of `project` created with external id `ext`, if any.
    pub fn find_external(&self, project: &str, ext: &str) -> Option<&Arc<Run>> {
        let id = self
            .externals
            .get(&(project.to_string(), ext.to_string()))?;
        self.runs.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a caller can observe of a snapshot.
    fn observed(snap: &CatalogSnapshot) -> Vec<String> {
        let mut out: Vec<String> = snap.runs().map(|r| format!("{r:?}")).collect();
        for run in snap.runs() {
            let family: Vec<u64> = snap
                .family(run.id)
                .unwrap()
                .iter()
                .map(|m| m.run.id)
                .collect();
            out.push(format!(
                "{} {:?} {family:?}",
                run.id,
                snap.segments(run.id).unwrap()
            ));
            out.push(snap.lookup(&run.display_id).unwrap().id.to_string());
        }
        for project in snap.projects() {
            out.push(format!(
                "{project} {} {}",
                snap.prefix_for(&project),
                snap.next_seq(&project)
            ));
        }
        out.push(format!("{:?} {}", snap.version(), snap.next_id()));
        out
    }

    #[test]
    fn revisions_added_one_by_one_build_the_same_catalog() {
        use crate::catalog::{ForkRequest, NewRun, RunUpdate, plan_create, plan_fork, plan_update};
        let now = chrono::Utc::now();
        let mut revisions = Vec::new();
        let mut incremental = CatalogSnapshot::default();
        let mut commit = |snap: &mut CatalogSnapshot, run: Run| {
            revisions.push(run.clone());
            let version = Some(revisions.len() as u64);
            *snap = snap.with_revisions(version, vec![run]);
            assert_eq!(
                observed(snap),
                observed(&CatalogSnapshot::from_revisions(version, revisions.clone()))
            );
        };
        for (project, name) in [("vision", "a"), ("mnist-sweep", "b"), ("vision", "c")] {
            let req = NewRun {
                project: project.into(),
                name: name.into(),
                ..Default::default()
            };
            let run = plan_create(&incremental, &req, None, now).unwrap();
            commit(&mut incremental, run);
        }
        for (forked, step) in [("1", 5), ("4", 3), ("4", 9), ("2", 0)] {
            let run = plan_fork(
                &incremental,
                &ForkRequest::new(forked, step),
                Some(10),
                None,
                now,
            )
            .unwrap();
            commit(&mut incremental, run);
        }
        let update = RunUpdate::AddTags(vec!["best".into()]);
        let run = plan_update(&incremental, "5", &update, None, now).unwrap();
        commit(&mut incremental, run);
        // An older revision arriving late changes nothing.
        let stale = Run::clone(incremental.get(5).unwrap());
        let stale = Run { rev: 1, ..stale };
        commit(&mut incremental, stale);
    }

    #[test]
    fn prefixes() {
        assert_eq!(derive_prefix("mnist-sweep"), "MS");
        assert_eq!(derive_prefix("vision"), "VIS");
        assert_eq!(derive_prefix("a b c d e"), "ABCD");
        assert_eq!(derive_prefix("--"), "RUN");
    }

    #[test]
    fn by_creation_orders_as_the_runs_list_sorts() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let mut snap = CatalogSnapshot::default();
        // Ids 1..=40 over 12 milliseconds, out of id order, many ties.
        for id in 1..=40u64 {
            let mut run = crate::catalog::plan_create(
                &snap,
                &crate::catalog::NewRun {
                    project: "p".into(),
                    name: format!("r{id}"),
                    ..Default::default()
                },
                None,
                t0,
            )
            .unwrap();
            let micros = ((id * 7) % 12) as i64 * 1000 + (id % 3) as i64 * 10;
            run.created_at = t0 + chrono::Duration::microseconds(micros);
            snap.add(run);
        }
        let key = |r: &Arc<Run>| (r.created_at.timestamp_millis(), r.id);
        for newest in [true, false] {
            let mut all: Vec<&Arc<Run>> = snap.runs().collect();
            all.sort_by(|a, b| {
                let (ka, kb) = (key(a), key(b));
                let by_time = if newest {
                    kb.0.cmp(&ka.0)
                } else {
                    ka.0.cmp(&kb.0)
                };
                by_time.then(ka.1.cmp(&kb.1))
            });
            for wanted in [0, 1, 3, 7, 10, 39, 40, 50] {
                let got: Vec<u64> = snap
                    .by_creation("p", newest, wanted)
                    .iter()
                    .map(|r| r.id)
                    .collect();
                let expected: Vec<u64> = all.iter().take(wanted).map(|r| r.id).collect();
                assert_eq!(got, expected, "newest {newest}, {wanted} wanted");
            }
        }
        assert!(snap.by_creation("other", true, 5).is_empty());
    }

    #[test]
    fn a_restriction_caught_up_equals_a_fresh_one() {
        use crate::catalog::{Deleter, ForkRequest, NewRun, plan_create, plan_delete, plan_fork};
        let now = chrono::Utc::now();
        let keep = |p: &str| p == "vision";
        let mut full = CatalogSnapshot::default();
        let mut history = vec![full.restricted(keep)];
        let mut commit = |full: &mut CatalogSnapshot, runs: Vec<Run>| {
            let mut working = full.clone();
            for run in &runs {
                working.add(run.clone());
            }
            let version = Some(full.version().map_or(0, |v| v + 1));
            *full = working.committed(version, runs);
            let fresh = full.restricted(keep);
            for back in [1, 2, 5] {
                let Some(older) = history.len().checked_sub(back).map(|i| &history[i]) else {
                    continue;
                };
                let caught = full.restricted_after(older, keep);
                assert_eq!(observed(&caught), observed(&fresh), "{back} back");
                assert_eq!(caught.unpurged(), fresh.unpurged());
            }
            history.push(fresh);
        };
        for (project, name) in [("vision", "a"), ("nlp", "b"), ("vision", "c"), ("nlp", "d")] {
            let req = NewRun {
                project: project.into(),
                name: name.into(),
                ..Default::default()
            };
            let run = plan_create(&full, &req, None, now).unwrap();
            commit(&mut full, vec![run]);
        }
        for (forked, step) in [("1", 5), ("5", 3), ("2", 1), ("3", 9)] {
            let run =
                plan_fork(&full, &ForkRequest::new(forked, step), Some(10), None, now).unwrap();
            commit(&mut full, vec![run]);
        }
        let by = Deleter {
            sees: &|_| true,
            key_id: None,
            now,
        };
        let gone = plan_delete(&full, &["1".into()], true, &by).unwrap();
        commit(&mut full, gone);
        let req = NewRun {
            project: "vision".into(),
            name: "e".into(),
            ..Default::default()
        };
        let run = plan_create(&full, &req, None, now).unwrap();
        commit(&mut full, vec![run]);
        // A catalog read whole (another process committed) knows no changes
        // before it: a catch-up from older falls back to a fresh restriction.
        let reread = CatalogSnapshot::from_revisions(
            full.version(),
            full.runs()
                .chain(full.deleted())
                .map(|r| Run::clone(r))
                .collect(),
        );
        let caught = reread.restricted_after(&history[1], keep);
        assert_eq!(observed(&caught), observed(&full.restricted(keep)));
    }
}

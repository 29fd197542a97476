//! Restricted copies of the catalog (what a key scoped to some projects
//! reads), and the change log that lets a copy catch up with newer versions
//! without a look at every run.

use imbl::Vector;

use super::{CatalogSnapshot, MAX_CHANGES, Run, RunId};

impl CatalogSnapshot {
    /// Records that the commit of `version` changed `ids`, forgetting the
    /// oldest versions past [`MAX_CHANGES`] (whole versions at a time, so the
    /// log stays complete after `changes_since`).
    pub(super) fn remember(&mut self, version: Option<u64>, ids: impl Iterator<Item = RunId>) {
        let Some(version) = version else {
            return;
        };
        self.changes.extend(ids.map(|id| (version, id)));
        while self.changes.len() > MAX_CHANGES {
            let Some((forgotten, _)) = self.changes.pop_front() else {
                break;
            };
            while self.changes.front().is_some_and(|(v, _)| *v == forgotten) {
                self.changes.pop_front();
            }
            self.changes_since = Some(forgotten);
        }
    }

    /// This catalog restricted to the projects `keep` accepts, made from
    /// `older` (the same restriction of an older version of this catalog) by
    /// replaying only the runs changed since: a scoped reader pays for the
    /// commits since it last looked, not for every run of the store (with a
    /// sweep committing runs all the time, each request of a key scoped to
    /// projects rebuilt its catalog from all of them). Falls back to
    /// [`CatalogSnapshot::restricted`] when the changes are not all known.
    pub fn restricted_after(
        &self,
        older: &CatalogSnapshot,
        keep: impl Fn(&str) -> bool,
    ) -> CatalogSnapshot {
        let (Some(from), Some(to)) = (older.version, self.version) else {
            return self.restricted(keep);
        };
        if from > to || self.changes_since.is_some_and(|since| since > from) {
            return self.restricted(keep);
        }
        let mut out = older.clone();
        out.version = self.version;
        out.changes = Vector::new();
        out.changes_since = self.version;
        // Versions only grow along the log: the first change after `from`.
        let start = self
            .changes
            .binary_search_by(|(v, _)| {
                if *v <= from {
                    std::cmp::Ordering::Less
                } else {
                    std::cmp::Ordering::Greater
                }
            })
            .unwrap_or_else(|at| at);
        for (_, id) in self.changes.iter().skip(start) {
            if let Ok(run) = self.revision(*id)
                && keep(&run.project)
            {
                out.insert(Run::clone(run));
            }
        }
        out
    }

    /// The same catalog with only the runs of projects `keep` accepts (forks
    /// never leave their parent's project, so every lineage stays whole).
    pub fn restricted(&self, keep: impl Fn(&str) -> bool) -> CatalogSnapshot {
        let runs = self
            .runs
            .values()
            .chain(self.deleted.values())
            .filter(|r| keep(&r.project))
            .map(|r| Run::clone(r))
            .collect();
        Self::from_revisions(self.version, runs)
    }
}

//! Deleting runs and projects: one more kind of catalog mutation, committed
//! with the others (see [`super::catalog_commit`]), so a deletion and a fork
//! of the same parent are ordered and never leave a fork without its parent.
//! A deleted run's rows stay in the store, hidden from every scan, until a
//! purge rewrites them away.

use std::sync::Arc;

use chrono::Utc;

use super::Engine;
use crate::catalog::{self, CatalogSnapshot, Deleter, Run};
use crate::error::Result;
use crate::scope::Scope;

impl Engine {
    /// Deletes the runs `references` name (ids or display ids), all or none,
    /// as `scope`'s caller: a run with forks only with `cascade`, which takes
    /// its whole subtree. Returns the deleted runs' last revisions, named
    /// runs and descendants alike.
    pub async fn delete_runs(
        &self,
        references: Vec<String>,
        cascade: bool,
        scope: &Scope,
    ) -> Result<Vec<Arc<Run>>> {
        self.delete(scope, move |snap, by| {
            catalog::plan_delete(snap, &references, cascade, by)
        })
        .await
    }

    /// Deletes every run of `project`, as `scope`'s caller.
    pub async fn delete_project(&self, project: &str, scope: &Scope) -> Result<Vec<Arc<Run>>> {
        scope.require_project(project)?;
        let project = project.to_string();
        self.delete(scope, move |snap, by| {
            catalog::plan_delete_project(snap, &project, by)
        })
        .await
    }

    /// Commits the deletion `plan` makes on the latest catalog, as `scope`'s caller.
    async fn delete(
        &self,
        scope: &Scope,
        plan: impl Fn(&CatalogSnapshot, &Deleter) -> Result<Vec<Run>> + Send + 'static,
    ) -> Result<Vec<Arc<Run>>> {
        scope.require_delete()?;
        let (projects, key_id) = (scope.projects.clone(), scope.key_id.clone());
        let (runs, _) = self
            .catalog
            .commit_many(Box::new(move |snap| {
                let by = Deleter {
                    sees: &|p| projects.allows(p),
                    key_id: key_id.as_deref(),
                    now: Utc::now(),
                };
                plan(snap, &by)
            }))
            .await?;
        Ok(runs)
    }
}

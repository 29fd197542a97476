//! Where metric points are read from: the latest write of every point, planned
//! so that only runs that may hold repeated writes pay for last-write-wins.
//!
//! Compaction leaves "latest" files that hold each key once and share no run
//! (see `store::table_files`). A run that no ingest file has touched since is read
//! from them as a plain filtered scan; a run that an ingest file may hold is
//! read from the latest and ingest files together, keeping the highest `seq`
//! of each `(run_id, metric, step)`.

use std::ops::Not;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::provider_as_source;
use datafusion::error::Result as DFResult;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::functions_aggregate::expr_fn::last_value;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
use datafusion::prelude::{col, lit};

use super::file_set::FileSetTable;
use crate::error::Result;
use crate::store::schema::arrow_schema;
use crate::store::{FileClass, TableFiles, TableKind};

/// Most `BETWEEN` ranges a "may hold repeated writes" predicate is spelled with;
/// beyond it neighbouring ranges are merged (covering more runs is still correct).
const MAX_RANGES: usize = 32;

/// A restriction applied to every provider (e.g. a project scope).
pub type Wrap<'a> = &'a dyn Fn(Arc<dyn TableProvider>) -> Result<Arc<dyn TableProvider>>;

/// The metrics table of one snapshot, seen three ways.
#[derive(Debug)]
pub struct PointSource {
    /// Compaction's latest files only.
    latest: Arc<dyn TableProvider>,
    /// Latest and ingest files: every write that can still be the newest.
    live: Arc<dyn TableProvider>,
    /// Every file, superseded writes included.
    writes: Arc<dyn TableProvider>,
    /// Run ranges that ingest files may hold.
    ingest_runs: Vec<(i64, i64)>,
}

impl PointSource {
    /// The point source of `files`, each provider passed through `wrap`.
    pub fn new(files: &TableFiles, store: &ObjectStoreUrl, wrap: Wrap<'_>) -> Result<Self> {
        let schema = nullable_values(arrow_schema(TableKind::Metrics));
        let table = |keep: &dyn Fn(FileClass) -> bool| {
            let chosen = files
                .files
                .iter()
                .filter(|f| keep(f.class))
                .cloned()
                .collect();
            wrap(Arc::new(FileSetTable::new(
                schema.clone(),
                store.clone(),
                chosen,
            )))
        };
        Ok(Self {
            latest: table(&|c| c == FileClass::Latest)?,
            live: table(&|c| c != FileClass::Superseded)?,
            writes: table(&|_| true)?,
            ingest_runs: coarsen(files.ingest_runs()),
        })
    }

    /// Every stored write, superseded ones included (`metric_writes`).
    pub fn writes(&self) -> Arc<dyn TableProvider> {
        self.writes.clone()
    }

    fn may_repeat(&self, run: i64) -> bool {
        self.ingest_runs
            .iter()
            .any(|&(lo, hi)| lo <= run && run <= hi)
    }

    /// The latest write of every point of `runs` (all runs when `None`), as
    /// `run_id, metric, step, value, time` under the qualifier `alias`.
    /// Filters on the key columns above it reach the scans.
    pub fn latest(&self, runs: Option<&[i64]>, alias: &str) -> DFResult<LogicalPlanBuilder> {
        let (plain, repeated) = match runs {
            Some(runs) => {
                let (repeated, plain): (Vec<i64>, Vec<i64>) =
                    runs.iter().partition(|r| self.may_repeat(**r));
                (
                    (!plain.is_empty()).then(|| in_runs(&plain)),
                    (!repeated.is_empty()).then(|| in_runs(&repeated)),
                )
            }
            None if self.ingest_runs.is_empty() => (Some(lit(true)), None),
            None => {
                let touched = self
                    .ingest_runs
                    .iter()
                    .map(|&(lo, hi)| col("run_id").between(lit(lo), lit(hi)))
                    .reduce(Expr::or)
                    .expect("ranges are not empty");
                (Some(touched.clone().not()), Some(touched))
            }
        };
        let mut branches = Vec::new();
        if let Some(predicate) = plain {
            branches.push(
                scan(&self.latest)?
                    .filter(predicate)?
                    .project(["run_id", "metric", "step", "value", "time"].map(col))?
                    .build()?,
            );
        }
        if let Some(predicate) = repeated {
            // Ascending `seq`: the last value is the newest write.
            let by_seq = || vec![col("seq").sort(true, false)];
            branches.push(
                scan(&self.live)?
                    .filter(predicate)?
                    .aggregate(
                        vec![col("run_id"), col("metric"), col("step")],
                        vec![
                            last_value(col("value"), by_seq()).alias("value"),
                            last_value(col("time"), by_seq()).alias("time"),
                        ],
                    )?
                    .build()?,
            );
        }
        let mut branches = branches.into_iter();
        let first = match branches.next() {
            Some(first) => first,
            // An empty run list: no rows, with the right columns.
            None => scan(&self.latest)?
                .filter(lit(false))?
                .project(["run_id", "metric", "step", "value", "time"].map(col))?
                .build()?,
        };
        branches
            .try_fold(LogicalPlanBuilder::from(first), |b, plan| b.union(plan))?
            .alias(alias)
    }
}

/// `schema` with `value` and `time` nullable, as last-write-wins (an
/// aggregate) gives them: the branches of [`PointSource::latest`] then agree
/// without a cast. A cast that only widens nullability does not survive
/// DataFusion's plan wire format (its target field is not carried), so a
/// cluster decoding the plan would rebuild it with one more node at each hop.
fn nullable_values(schema: SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "value" | "time" => f.as_ref().clone().with_nullable(true),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn scan(provider: &Arc<dyn TableProvider>) -> DFResult<LogicalPlanBuilder> {
    LogicalPlanBuilder::scan("points", provider_as_source(provider.clone()), None)
}

/// `run_id` among `runs`: ranges of consecutive ids where they are few (a
/// project's runs usually are one range), which prune files, row groups and
/// pages and cost nothing per row; else an IN list.
fn in_runs(runs: &[i64]) -> Expr {
    let mut ranges: Vec<(i64, i64)> = runs.iter().map(|r| (*r, *r)).collect();
    crate::store::table_files::merge_ranges(&mut ranges);
    if ranges.len() <= MAX_RANGES {
        return ranges
            .into_iter()
            .map(|(lo, hi)| match lo == hi {
                true => col("run_id").eq(lit(lo)),
                false => col("run_id").between(lit(lo), lit(hi)),
            })
            .reduce(Expr::or)
            .unwrap_or(lit(false));
    }
    col("run_id").in_list(runs.iter().map(|r| lit(*r)).collect(), false)
}

/// Merges the closest neighbours until at most [`MAX_RANGES`] remain.
fn coarsen(mut ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    while ranges.len() > MAX_RANGES {
        let closest = (1..ranges.len())
            .min_by_key(|&i| ranges[i].0.saturating_sub(ranges[i - 1].1))
            .expect("more than one range");
        ranges[closest - 1].1 = ranges[closest].1;
        ranges.remove(closest);
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::coarsen;

    #[test]
    fn coarsening_covers_every_run_it_was_given() {
        let ranges: Vec<(i64, i64)> = (0..100).map(|i| (i * 10, i * 10 + 2)).collect();
        let merged = coarsen(ranges.clone());
        assert!(merged.len() <= super::MAX_RANGES);
        for (lo, hi) in ranges {
            assert!(merged.iter().any(|&(a, b)| a <= lo && hi <= b));
        }
    }
}

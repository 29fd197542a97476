//! Works around a DataFusion 55 bug that gives wrong answers for natural ways
//! to read `downsample` / `lttb` results.
//!
//! `Unnest` copies its input's functional dependencies, so after
//! `SELECT run_id, unnest(lttb(..)) FROM .. GROUP BY run_id` the plan still
//! claims `run_id` is a unique key. Two optimizer rules act on that alone:
//! `ORDER BY run_id, step` loses its `step` key (eliminate_duplicated_expr)
//! and a join with `family_runs` that reads only `family_runs` columns becomes
//! a semi join keeping one row per run (eliminate_join); replace_distinct_aggregate
//! reads the same claim. [`guard`] hides the dependencies of `Unnest` nodes
//! from these three rules and puts them back afterwards, exactly as `Unnest`
//! derives them. Upstream fix: apache/datafusion#24787 (open at the time of
//! writing); remove this module once the DataFusion we use includes it.
//!
//! The dependencies cannot simply be deleted. The SQL planner has already used
//! them to append every input column to the keys of a `GROUP BY run_id`
//! written over the unnested rows, and only optimize_projections, reading the
//! same dependencies, takes those keys out again. The price of leaving it
//! alone: a `GROUP BY run_id, <unnested field>` (or `DISTINCT`) over those
//! rows still collapses to one group per run, as in stock DataFusion 55.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, FunctionalDependencies};
use datafusion::error::Result;
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

/// The DataFusion 55 optimizer rules misled by the copied dependencies.
const MISLED: [&str; 3] = [
    "replace_distinct_aggregate",
    "eliminate_join",
    "eliminate_duplicated_expr",
];

type Rule = Arc<dyn OptimizerRule + Send + Sync>;

/// `rules` with every rule in [`MISLED`] wrapped so it does not see `Unnest` dependencies.
pub fn guard(rules: Vec<Rule>) -> Vec<Rule> {
    rules
        .into_iter()
        .map(|rule| -> Rule {
            if MISLED.contains(&rule.name()) {
                Arc::new(WithoutUnnestKeys(rule))
            } else {
                rule
            }
        })
        .collect()
}

/// Runs the inner rule on a plan whose `Unnest` nodes carry no functional dependencies.
#[derive(Debug)]
struct WithoutUnnestKeys(Rule);

impl OptimizerRule for WithoutUnnestKeys {
    // The inner name, so `EXPLAIN VERBOSE` and `remove_optimizer_rule` still find it.
    fn name(&self) -> &str {
        self.0.name()
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        self.0.apply_order()
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let hidden = rebuild(plan, Keys::Hide)?;
        if !hidden.transformed {
            return self.0.rewrite(hidden.data, config);
        }
        let out = self.0.rewrite(hidden.data, config)?;
        let transformed = out.transformed;
        let restored = rebuild(out.data, Keys::Restore)?.data;
        Ok(Transformed::new_transformed(restored, transformed))
    }
}

#[derive(Debug, Clone, Copy)]
enum Keys {
    Hide,
    /// As `Unnest::try_new` derives them: a copy of the input's.
    Restore,
}

/// Sets the dependencies of every `Unnest` per `keys` and recomputes the
/// schemas above the ones that changed; everything else is left as it is.
fn rebuild(plan: LogicalPlan, keys: Keys) -> Result<Transformed<LogicalPlan>> {
    let plan = plan
        .map_subqueries(|p| rebuild(p, keys))?
        .transform_data(|p| p.map_children(|c| rebuild(c, keys)))?;
    let (plan, changed) = if plan.transformed {
        (plan.data.recompute_schema()?, true)
    } else {
        (plan.data, false)
    };
    let LogicalPlan::Unnest(mut unnest) = plan else {
        return Ok(Transformed::new_transformed(plan, changed));
    };
    let wanted = match keys {
        Keys::Hide => FunctionalDependencies::empty(),
        Keys::Restore => unnest.input.schema().functional_dependencies().clone(),
    };
    if *unnest.schema.functional_dependencies() == wanted {
        return Ok(Transformed::new_transformed(
            LogicalPlan::Unnest(unnest),
            changed,
        ));
    }
    unnest.schema = Arc::new(DFSchema::clone(&unnest.schema).with_functional_dependencies(wanted)?);
    Ok(Transformed::yes(LogicalPlan::Unnest(unnest)))
}

#[cfg(test)]
mod tests {
    use datafusion::optimizer::Optimizer;

    use super::*;

    #[test]
    fn every_misled_rule_is_wrapped() {
        // Fails when a DataFusion upgrade renames or drops one: recheck the list then.
        let rules = guard(Optimizer::new().rules);
        for name in MISLED {
            let rule = rules.iter().find(|r| r.name() == name);
            let rule = rule.unwrap_or_else(|| panic!("no optimizer rule named {name}"));
            assert!(
                format!("{rule:?}").starts_with("WithoutUnnestKeys"),
                "{name}"
            );
        }
    }
}

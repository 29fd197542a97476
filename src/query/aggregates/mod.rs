//! forkline's aggregates and the physical rules that plan them: the
//! run-at-a-time partial aggregate for sorted string keys ([`run`]), the
//! group-after-group aggregate for ordered input ([`sorted`]), and
//! `first_value` / `last_value` that use the order their input has
//! ([`ordered_first_last`]).

pub mod ordered_first_last;
pub mod run;
pub mod sorted;

use std::sync::Arc;

use datafusion::physical_optimizer::PhysicalOptimizerRule;

/// DataFusion's physical rules with forkline's aggregate rules in place.
pub fn with_rules(
    rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>>,
) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    run::with_rule(sorted::with_rule(rules))
}

/// `rules` with `rule` inserted before DataFusion's final sanity check, so
/// the plan it leaves is checked too.
fn before_sanity_check(
    mut rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>>,
    rule: Arc<dyn PhysicalOptimizerRule + Send + Sync>,
) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let at = rules
        .iter()
        .position(|r| r.name() == "SanityCheckPlan")
        .unwrap_or(rules.len());
    rules.insert(at, rule);
    rules
}

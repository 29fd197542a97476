//! The SQL functions forkline adds to DataFusion's: the `downsample` / `lttb`
//! aggregates (with the rule that keeps reading their results correct) and
//! the output-bounded string functions.

pub mod bounded;
pub mod downsample;
pub mod unnest_keys;

use datafusion::prelude::SessionContext;

use super::aggregates::ordered_first_last;

/// Registers forkline's functions on `ctx`. Plans name them, so every
/// process that decodes a plan (a cluster's scheduler and executors)
/// registers them too.
pub fn register(ctx: &SessionContext) {
    ctx.register_udaf(downsample::downsample_udaf());
    ctx.register_udaf(downsample::lttb_udaf());
    ctx.register_udaf(ordered_first_last::udaf(false));
    ctx.register_udaf(ordered_first_last::udaf(true));
    bounded::register(ctx);
}

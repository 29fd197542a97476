//! The read path, a room per job:
//!
//! - [`session`]: the one place a DataFusion session is built (tables,
//!   functions, rules, limits); [`system`]: the `system` schema.
//! - [`lineage`]: stitched series of runs, families and projects — the
//!   [`Lineage`](lineage::Lineage) handle every reader asks, the SQL table
//!   functions over it, and the stitching operator.
//! - [`scan`]: where stored points are read from, and which metrics a
//!   request selects.
//! - [`aggregates`]: forkline's aggregates for ordered input and their
//!   physical rules.
//! - [`functions`]: the SQL functions forkline adds (`downsample`, `lttb`,
//!   output-bounded string functions).
//! - [`admission`]: statement limits, the query gate, where plans run.
//! - [`sql`]: planning SQL text, read-only.

pub mod admission;
pub mod aggregates;
pub mod functions;
pub mod lineage;
pub mod scan;
pub mod session;
pub mod sql;
pub mod system;

pub use sql::read_only_sql;

//! Store maintenance: `compact` merges small files and clusters them by run,
//! `check` verifies that every file the current snapshots
//! reference is there and readable, `vacuum` deletes the files no snapshot
//! within the retention period needs.

pub mod check;
pub mod compact;
pub mod vacuum;

pub use check::{CheckReport, TableCheck, check};
pub use vacuum::{TableVacuum, VacuumOptions, VacuumReport, vacuum};

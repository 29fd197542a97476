//! Store maintenance: `check` verifies that every file the current snapshots
//! reference is there and readable, `vacuum` deletes the files no snapshot
//! within the retention period needs.

pub mod check;
pub mod vacuum;

pub use check::{CheckReport, TableCheck, check};
pub use vacuum::{TableVacuum, VacuumOptions, VacuumReport, vacuum};

//! Admission: which statements may run ([`limits`]), how many at once and for
//! how long ([`gate`]), and where an admitted plan runs ([`runner`]).

pub mod gate;
pub mod limits;
pub mod runner;

pub use gate::{Delivered, QueryGate, QueryLimits};
pub use runner::{InProcess, PlanRunner};

//! Where stored points are read from: the latest write of every point
//! ([`points`]), over explicit file lists of a Delta snapshot ([`file_set`]),
//! narrowed to the metrics a request selects ([`metric_selection`]).

pub mod file_set;
pub mod metric_selection;
pub mod points;

pub use file_set::FileSetTable;
pub use metric_selection::{MetricFilter, MetricSelection};
pub use points::PointSource;

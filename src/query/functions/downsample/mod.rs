//! Downsampling: shrinking a series for a chart, one module for every reader.
//!
//! The strategies, each a function of [`series`] on plain slices:
//! - [`min_max_last`](series::min_max_last): per step bucket, min / max /
//!   last / count — the `downsample(step, value, n)` aggregate;
//! - [`lttb`](series::lttb): Largest-Triangle-Three-Buckets — the
//!   `lttb(step, value, n)` aggregate;
//! - [`drawn_extremes`](series::drawn_extremes): per step bucket, the first,
//!   lowest, highest and last points — what a report draws (about
//!   `max_points` per series part);
//! - [`count_extremes`](series::count_extremes): per bucket of equal point
//!   count, the lowest and highest points — the SDK's `GET /api/runs/metrics`.
//!
//! [`udaf`] makes the first two aggregate functions of every session.
//!
//! LTTB is our own ~40 lines rather than the `minmaxlttb` crate: that crate
//! takes and returns `Point { x: f64, y: f64 }` copies, so steps would come
//! back through f64 (lossy past 2^53), and it requires strictly increasing x
//! behind a `debug_assert!`, which duplicate steps (e.g. several metrics in
//! one group) would trip. Ours returns indices and handles duplicates.

pub mod series;
pub mod udaf;

pub use udaf::{downsample_udaf, lttb_udaf};

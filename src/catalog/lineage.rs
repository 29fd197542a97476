//! The one lineage resolver: segments of a stitched view, fork-parent
//! resolution, and the inheritance rules every reader of a stitched series
//! applies (which points a segment takes, and which metrics are inherited).

use std::ops::Range;

use super::run::RunId;
use crate::error::{Error, Result};

/// A contiguous step range of a stitched view, owned by one run of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Run whose own points fill this range.
    pub owner: RunId,
    /// Position of the owner in the chain; the root is 0.
    pub depth: usize,
    /// First step of the range.
    pub from_step: u64,
    /// Last step of the range; `None` for the open end of the viewed run.
    pub to_step: Option<u64>,
}

impl Segment {
    /// Whether `step` falls in this segment.
    pub fn contains(&self, step: u64) -> bool {
        step >= self.from_step && self.to_step.is_none_or(|to| step <= to)
    }

    /// The rows of `rows` (ascending by `step`) this segment covers: the one
    /// cut a stitched series is made of, for the stitching operator and for
    /// callers that read the owners' series in place (the report).
    pub fn rows<T>(&self, rows: &[T], step: impl Fn(&T) -> i64) -> Range<usize> {
        self.range(rows.len(), |before| {
            rows.partition_point(|r| before(step(r)))
        })
    }

    /// [`Segment::rows`] of `len` rows ascending by step, found through
    /// `first_failing`: the first row whose step fails a test that holds for
    /// a prefix of the rows (a partition point).
    pub fn range(
        &self,
        len: usize,
        first_failing: impl Fn(&dyn Fn(i64) -> bool) -> usize,
    ) -> Range<usize> {
        let from = first_failing(&|s| s < self.from_step as i64);
        let to = match self.to_step {
            Some(to) => first_failing(&|s| s <= to as i64),
            None => len,
        };
        from..to.max(from)
    }
}

/// Metrics named with this prefix are system metrics (`sys/gpu/util`): they
/// describe the host a run ran on, so forks never inherit them.
pub const SYSTEM_METRIC_PREFIX: &str = "sys/";

/// Whether a fork inherits its ancestors' points of `metric`: every metric
/// but the system metrics.
pub fn inheritable(metric: &str) -> bool {
    !metric.starts_with(SYSTEM_METRIC_PREFIX)
}

/// Whether `viewer`'s stitched series of `metric` takes `owner`'s points in
/// a segment of `owner`'s: its own always, an ancestor's unless a system metric.
pub fn sees(viewer: RunId, owner: RunId, metric: &str) -> bool {
    owner == viewer || inheritable(metric)
}

/// Segments of the stitched view of the last run of `chain`.
///
/// `chain` runs from the root to the viewed run as `(run, fork_step)` pairs,
/// where `fork_step` is the step at which that run forked from its predecessor
/// (ignored for the root). Empty ranges are dropped, so the result is always
/// a list of non-overlapping, increasing ranges.
pub fn segments(chain: &[(RunId, Option<u64>)]) -> Vec<Segment> {
    let mut out = Vec::with_capacity(chain.len());
    let mut from = 0u64;
    for (depth, &(owner, _)) in chain.iter().enumerate() {
        let to = chain.get(depth + 1).map(|&(_, fork)| fork.unwrap_or(0));
        match to {
            Some(to) if to < from => continue,
            _ => {}
        }
        out.push(Segment {
            owner,
            depth,
            from_step: from,
            to_step: to,
        });
        if let Some(to) = to {
            from = to.saturating_add(1);
        }
    }
    out
}

/// Resolves the parent of a fork of the view `segments` at `step`.
///
/// `max_step` is the highest step of the stitched view over all metrics
/// (`None` when the view has no points). The step must lie in `0..=max_step`;
/// the parent is the owner of the segment that contains it.
pub fn resolve_fork_parent(
    segments: &[Segment],
    step: u64,
    max_step: Option<u64>,
    run_label: &str,
) -> Result<RunId> {
    let Some(max) = max_step else {
        return Err(Error::invalid(format!(
            "cannot fork {run_label} at step {step}: it has no logged steps"
        )));
    };
    if step > max {
        return Err(Error::invalid(format!(
            "cannot fork {run_label} at step {step}: its logged steps are 0..={max}"
        )));
    }
    segments
        .iter()
        .find(|s| s.contains(step))
        .map(|s| s.owner)
        .ok_or_else(|| {
            Error::invalid(format!(
                "cannot fork {run_label} at step {step}: no run of its lineage owns that step"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(owner: RunId, depth: usize, from: u64, to: Option<u64>) -> Segment {
        Segment {
            owner,
            depth,
            from_step: from,
            to_step: to,
        }
    }

    #[test]
    fn product_docs_chain() {
        let s = segments(&[(1, None), (2, Some(50)), (3, Some(150))]);
        assert_eq!(
            s,
            vec![
                seg(1, 0, 0, Some(50)),
                seg(2, 1, 51, Some(150)),
                seg(3, 2, 151, None)
            ]
        );
        assert_eq!(resolve_fork_parent(&s, 75, Some(200), "C").unwrap(), 2);
        assert_eq!(resolve_fork_parent(&s, 30, Some(200), "C").unwrap(), 1);
        assert_eq!(resolve_fork_parent(&s, 151, Some(200), "C").unwrap(), 3);
        assert!(resolve_fork_parent(&s, 201, Some(200), "C").is_err());
        assert!(resolve_fork_parent(&s, 0, None, "C").is_err());
    }

    #[test]
    fn fork_at_zero_owns_nothing_before() {
        let s = segments(&[(1, None), (2, Some(0))]);
        assert_eq!(s, vec![seg(1, 0, 0, Some(0)), seg(2, 1, 1, None)]);
    }
}

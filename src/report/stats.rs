//! Per-run numbers of a report, from stitched series already in memory.
//!
//! Pure functions: no I/O, no catalog; the orchestration in `report/mod.rs`
//! gathers the series, these turn them into the table's numbers.
//!
//! Conventions (also in `docs/reports.md`, "Reports"):
//! - Non-finite values (NaN, ±Infinity) are ignored everywhere: they are
//!   counted in `non_finite` but take part in no number and are not drawn.
//!   NaN is what a diverged loss logs; letting it win a `min` or poison a sum
//!   would hide every real result.
//! - `delta_*` and `area_after_fork` are signed child − parent. With goal `min`
//!   a negative number means the child is better; with `max` a positive one.
//! - A run with no finite point of a metric has every number null and no rank.

use serde::Serialize;

use super::series::{Pieces, Point};
use crate::query::functions::downsample::series::drawn_extremes;

/// Whether smaller or larger values of a metric are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    /// Smaller is better (losses).
    Min,
    /// Larger is better (accuracies).
    Max,
}

impl Goal {
    /// The name used on the command line and in outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Goal::Min => "min",
            Goal::Max => "max",
        }
    }

    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Goal::Min => a < b,
            Goal::Max => a > b,
        }
    }
}

impl std::str::FromStr for Goal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "min" => Ok(Goal::Min),
            "max" => Ok(Goal::Max),
            other => Err(format!("goal must be `min` or `max`, got `{other}`")),
        }
    }
}

/// The numbers of one run's row for one metric.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunStats {
    /// Finite points in the stitched series.
    pub points: usize,
    /// Non-finite points ignored.
    pub non_finite: usize,
    /// Last step with a finite value.
    pub last_step: Option<u64>,
    /// Value at `last_step`.
    pub last_value: Option<f64>,
    /// Best value by the goal (earliest step on ties).
    pub best_value: Option<f64>,
    /// Step of `best_value`.
    pub best_step: Option<u64>,
    /// Largest step with a finite value in both the run's and its parent's series.
    pub last_common_step: Option<u64>,
    /// Child − parent at `last_common_step`.
    pub delta_last_common: Option<f64>,
    /// Child's last value − the parent's value at the child's last step, or at
    /// the parent's last step before it.
    pub delta_at_last: Option<f64>,
    /// Signed area (child − parent) by the trapezoid rule over the steps after
    /// the fork present in both series; null with fewer than two such steps.
    pub area_after_fork: Option<f64>,
}

/// A stitched series' finite points, in step order, and which of them are
/// inherited, built from its points one by one ([`run_stats`]).
#[derive(Debug, Clone, Default)]
pub struct FiniteSeries {
    points: Vec<(u64, f64)>,
    inherited: Vec<bool>,
    non_finite: usize,
}

impl FiniteSeries {
    /// The finite points of `series`, in step order (a stable sort, should
    /// points have come out of order).
    pub fn new(series: &[Point]) -> Self {
        let mut finite: Vec<&Point> = series.iter().filter(|p| p.value.is_finite()).collect();
        finite.sort_by_key(|p| p.step);
        Self {
            points: finite.iter().map(|p| (p.step, p.value)).collect(),
            inherited: finite.iter().map(|p| p.inherited).collect(),
            non_finite: series.len() - finite.len(),
        }
    }

    /// The series as slices of one flag each.
    pub fn pieces(&self) -> Pieces<'_> {
        let mut pieces = Pieces::default();
        let mut start = 0;
        for end in 1..=self.points.len() {
            if end == self.points.len() || self.inherited[end] != self.inherited[start] {
                pieces.push(&self.points[start..end], self.inherited[start], 0);
                start = end;
            }
        }
        pieces.push(&[], false, self.non_finite);
        pieces
    }

    /// What a chart draws of the series ([`Pieces::drawn`]).
    pub fn drawn(&self, max_points: usize, inherited: bool) -> Vec<Point> {
        self.pieces().drawn(max_points, inherited)
    }
}

/// Computes a run's numbers; `parent` is the resolved parent's stitched series
/// and the run's fork step, `None` for a root.
pub fn run_stats(series: &[Point], parent: Option<(&[Point], u64)>, goal: Goal) -> RunStats {
    let parent = parent.map(|(p, fork)| (FiniteSeries::new(p), fork));
    let parent = parent.as_ref().map(|(p, fork)| (p.pieces(), *fork));
    finite_stats(
        &FiniteSeries::new(series).pieces(),
        parent.as_ref().map(|(p, fork)| (p, *fork)),
        goal,
    )
}

/// [`run_stats`] of series already reduced to their finite points.
pub fn finite_stats(series: &Pieces, parent: Option<(&Pieces, u64)>, goal: Goal) -> RunStats {
    let mut stats = RunStats {
        non_finite: series.non_finite(),
        points: series.len(),
        ..RunStats::default()
    };
    let Some((last_step, last_value)) = series.last() else {
        return stats;
    };
    stats.last_step = Some(last_step);
    stats.last_value = Some(last_value);
    // Slice by slice: a loop over one slice is what the compiler makes fast.
    let mut best = series.get(0);
    for slice in series.slices() {
        for &(step, value) in slice {
            if goal.better(value, best.1) {
                best = (step, value);
            }
        }
    }
    stats.best_step = Some(best.0);
    stats.best_value = Some(best.1);

    let Some((theirs, fork_step)) = parent else {
        return stats;
    };
    // Only steps after the fork make the area; before it only the last step
    // in both series can matter, and only when none comes after the fork
    // (a stitched series holds a step once, so that step has one pair).
    // So the two tails are walked forwards and the heads, if need be,
    // backwards from their ends until they meet.
    let own_head = series.partition_point(|s| s <= fork_step);
    let their_head = theirs.partition_point(|s| s <= fork_step);
    let mut previous: Option<(u64, f64)> = None;
    // -0.0, as `Iterator::sum` starts: an all-zero area keeps its sign.
    let mut area = -0.0;
    let mut after = 0usize;
    let tails = common_steps(
        series.iter_from(own_head),
        theirs.iter_from(their_head),
        true,
    );
    for (step, x, y) in tails {
        let difference = x - y;
        if let Some((s0, d0)) = previous {
            area += (d0 + difference) / 2.0 * (step - s0) as f64;
        }
        previous = Some((step, difference));
        after += 1;
    }
    let last_common = previous.or_else(|| {
        common_steps(
            series.rev_before(own_head),
            theirs.rev_before(their_head),
            false,
        )
        .next()
        .map(|(step, x, y)| (step, x - y))
    });
    if let Some((step, difference)) = last_common {
        stats.last_common_step = Some(step);
        stats.delta_last_common = Some(difference);
    }
    let at_or_before = theirs.partition_point(|s| s <= last_step);
    if at_or_before > 0 {
        stats.delta_at_last = Some(last_value - theirs.get(at_or_before - 1).1);
    }
    if after >= 2 {
        stats.area_after_fork = Some(area);
    }
    stats
}

/// The points of two step-ordered series at the steps both hold, as
/// `(step, own value, other value)`, walked in their order (`ascending`, or
/// descending).
fn common_steps(
    own: impl Iterator<Item = (u64, f64)>,
    other: impl Iterator<Item = (u64, f64)>,
    ascending: bool,
) -> impl Iterator<Item = (u64, f64, f64)> {
    let (mut own, mut other) = (own.peekable(), other.peekable());
    std::iter::from_fn(move || {
        while let (Some(&(a, x)), Some(&(b, y))) = (own.peek(), other.peek()) {
            let behind = if ascending { a.cmp(&b) } else { b.cmp(&a) };
            match behind {
                std::cmp::Ordering::Less => {
                    own.next();
                }
                std::cmp::Ordering::Greater => {
                    other.next();
                }
                std::cmp::Ordering::Equal => {
                    own.next();
                    other.next();
                    return Some((a, x, y));
                }
            }
        }
        None
    })
}

/// Competition ranks ("1224") by best value per goal; `None` for runs without a value.
pub fn ranks(best: &[Option<f64>], goal: Goal) -> Vec<Option<usize>> {
    best.iter()
        .map(|b| {
            b.map(|v| {
                1 + best
                    .iter()
                    .filter(|o| o.is_some_and(|o| goal.better(o, v)))
                    .count()
            })
        })
        .collect()
}

/// Index of the winning run: the best value, the first in the given order on ties.
pub fn winner(best: &[Option<f64>], goal: Goal) -> Option<usize> {
    let mut win: Option<(usize, f64)> = None;
    for (i, b) in best.iter().enumerate() {
        if let Some(v) = *b
            && win.is_none_or(|(_, w)| goal.better(v, w))
        {
            win = Some((i, v));
        }
    }
    win.map(|(i, _)| i)
}

/// The inherited or the own part of a stitched series, finite points only,
/// reduced for drawing by the report's strategy
/// ([`drawn_extremes`](crate::query::functions::downsample::series::drawn_extremes)).
pub fn drawn_part(series: &[Point], inherited: bool, max_points: usize) -> Vec<(u64, f64)> {
    let part: Vec<(u64, f64)> = series
        .iter()
        .filter(|p| p.inherited == inherited && p.value.is_finite())
        .map(|p| (p.step, p.value))
        .collect();
    drawn_extremes(&part, max_points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(u64, f64)], fork: Option<u64>) -> Vec<Point> {
        points
            .iter()
            .map(|&(step, value)| Point {
                step,
                value,
                inherited: fork.is_some_and(|f| step <= f),
            })
            .collect()
    }

    #[test]
    fn root_has_last_and_best_but_no_deltas() {
        let s = series(&[(0, 5.0), (1, 3.0), (2, 3.0), (3, 4.0)], None);
        let st = run_stats(&s, None, Goal::Min);
        assert_eq!(st.points, 4);
        assert_eq!((st.last_step, st.last_value), (Some(3), Some(4.0)));
        assert_eq!((st.best_step, st.best_value), (Some(1), Some(3.0)));
        assert_eq!(st.delta_last_common, None);
        assert_eq!(st.area_after_fork, None);
        let st = run_stats(&s, None, Goal::Max);
        assert_eq!((st.best_step, st.best_value), (Some(0), Some(5.0)));
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let s = series(
            &[
                (0, f64::NAN),
                (1, 2.0),
                (2, f64::NEG_INFINITY),
                (3, f64::NAN),
            ],
            None,
        );
        let st = run_stats(&s, None, Goal::Min);
        assert_eq!((st.points, st.non_finite), (1, 3));
        assert_eq!((st.last_step, st.last_value), (Some(1), Some(2.0)));
        assert_eq!(st.best_value, Some(2.0));
        let empty = run_stats(&series(&[(0, f64::NAN)], None), None, Goal::Min);
        assert_eq!(empty.last_value, None);
        assert_eq!(empty.best_value, None);
    }

    #[test]
    fn deltas_and_area_against_the_parent() {
        // Parent: value = step on 0..=10. Child forks at 4 and runs to 12 with value = step + 2.
        let parent = series(&(0..=10).map(|s| (s, s as f64)).collect::<Vec<_>>(), None);
        let mut child_points: Vec<(u64, f64)> = (0..=4).map(|s| (s, s as f64)).collect();
        child_points.extend((5..=12).map(|s| (s, s as f64 + 2.0)));
        let child = series(&child_points, Some(4));
        let st = run_stats(&child, Some((&parent, 4)), Goal::Min);
        assert_eq!(st.last_common_step, Some(10));
        assert_eq!(st.delta_last_common, Some(2.0));
        // Child's last step 12 is past the parent's end: compare with the parent's step 10.
        assert_eq!(st.delta_at_last, Some(14.0 - 10.0));
        // Steps 5..=10 in both, difference 2 throughout: 2 × 5 step-units.
        assert_eq!(st.area_after_fork, Some(10.0));
    }

    #[test]
    fn area_uses_only_steps_in_both_series() {
        let parent = series(&[(0, 0.0), (5, 0.0), (10, 0.0), (20, 0.0)], None);
        let child = series(&[(0, 0.0), (5, -1.0), (15, -9.0), (20, -3.0)], Some(0));
        let st = run_stats(&child, Some((&parent, 0)), Goal::Min);
        // Common after the fork: 5 (−1) and 20 (−3): trapezoid (−1 − 3) / 2 × 15.
        assert_eq!(st.area_after_fork, Some(-30.0));
        assert_eq!(st.last_common_step, Some(20));
        assert_eq!(st.delta_last_common, Some(-3.0));
        let one = series(&[(0, 0.0), (5, -1.0)], Some(0));
        assert_eq!(
            run_stats(&one, Some((&parent, 0)), Goal::Min).area_after_fork,
            None
        );
    }

    #[test]
    fn ranks_share_ties_and_skip_missing() {
        let best = [Some(3.0), Some(1.0), None, Some(1.0), Some(2.0)];
        assert_eq!(
            ranks(&best, Goal::Min),
            vec![Some(4), Some(1), None, Some(1), Some(3)]
        );
        assert_eq!(
            ranks(&best, Goal::Max),
            vec![Some(1), Some(3), None, Some(3), Some(2)]
        );
        assert_eq!(winner(&best, Goal::Min), Some(1));
        assert_eq!(winner(&best, Goal::Max), Some(0));
        assert_eq!(winner(&[None, None], Goal::Max), None);
    }

    /// The numbers and the drawing as they were computed before
    /// [`FiniteSeries`]: the reference the faster path must reproduce.
    mod reference {
        use super::super::*;

        fn finite(series: &[Point]) -> Vec<(u64, f64)> {
            series
                .iter()
                .filter(|p| p.value.is_finite())
                .map(|p| (p.step, p.value))
                .collect()
        }

        pub fn run_stats(
            series: &[Point],
            parent: Option<(&[Point], u64)>,
            goal: Goal,
        ) -> RunStats {
            let mut stats = RunStats {
                non_finite: series.iter().filter(|p| !p.value.is_finite()).count(),
                ..RunStats::default()
            };
            let own = finite(series);
            stats.points = own.len();
            let Some(&(last_step, last_value)) = own.last() else {
                return stats;
            };
            stats.last_step = Some(last_step);
            stats.last_value = Some(last_value);
            let mut best = own[0];
            for &(step, value) in &own[1..] {
                if goal.better(value, best.1) {
                    best = (step, value);
                }
            }
            stats.best_step = Some(best.0);
            stats.best_value = Some(best.1);
            let Some((parent, fork_step)) = parent else {
                return stats;
            };
            let theirs = finite(parent);
            let mut common = Vec::new();
            let (mut i, mut j) = (0, 0);
            while i < own.len() && j < theirs.len() {
                match own[i].0.cmp(&theirs[j].0) {
                    std::cmp::Ordering::Less => i += 1,
                    std::cmp::Ordering::Greater => j += 1,
                    std::cmp::Ordering::Equal => {
                        common.push((own[i].0, own[i].1, theirs[j].1));
                        i += 1;
                        j += 1;
                    }
                }
            }
            if let Some(&(step, c, p)) = common.last() {
                stats.last_common_step = Some(step);
                stats.delta_last_common = Some(c - p);
            }
            let at_or_before = theirs.partition_point(|&(s, _)| s <= last_step);
            if at_or_before > 0 {
                stats.delta_at_last = Some(last_value - theirs[at_or_before - 1].1);
            }
            let after: Vec<_> = common.iter().filter(|(s, ..)| *s > fork_step).collect();
            if after.len() >= 2 {
                let area = after
                    .windows(2)
                    .map(|w| {
                        let (s0, c0, p0) = *w[0];
                        let (s1, c1, p1) = *w[1];
                        ((c0 - p0) + (c1 - p1)) / 2.0 * (s1 - s0) as f64
                    })
                    .sum();
                stats.area_after_fork = Some(area);
            }
            stats
        }

        pub fn downsample_series(series: &[Point], max_points: usize) -> Vec<Point> {
            [true, false]
                .into_iter()
                .flat_map(|inherited| {
                    drawn_part(series, inherited, max_points).into_iter().map(
                        move |(step, value)| Point {
                            step,
                            value,
                            inherited,
                        },
                    )
                })
                .collect()
        }
    }

    /// A series in step order: values from a few exact ones and
    /// non-finite ones (so ties and zero differences happen), inherited
    /// flags a prefix or, when `interleave`, anything.
    fn arbitrary_series() -> impl proptest::strategy::Strategy<Value = Vec<Point>> {
        use proptest::prelude::*;
        let value = prop_oneof![
            (-3i32..4).prop_map(f64::from),
            Just(-0.0),
            Just(f64::NAN),
            Just(f64::INFINITY),
            (-1e6f64..1e6),
        ];
        (
            proptest::collection::vec((1u64..4, value, any::<bool>()), 0..120),
            0usize..130,
            any::<bool>(),
        )
            .prop_map(|(points, fork, interleave)| {
                let mut step = 0;
                points
                    .into_iter()
                    .enumerate()
                    .map(|(i, (gap, value, flag))| {
                        step += gap;
                        Point {
                            step,
                            value,
                            inherited: if interleave { flag } else { i < fork },
                        }
                    })
                    .collect()
            })
    }

    proptest::proptest! {
        #[test]
        fn numbers_and_drawing_match_the_reference(
            child in arbitrary_series(),
            parent in arbitrary_series(),
            fork in 0u64..200,
            max in proptest::bool::ANY,
            budget in 0usize..64,
        ) {
            let goal = if max { Goal::Max } else { Goal::Min };
            for parent in [None, Some((parent.as_slice(), fork))] {
                // Debug text tells -0.0 from 0.0, which `==` does not.
                proptest::prop_assert_eq!(
                    format!("{:?}", run_stats(&child, parent, goal)),
                    format!("{:?}", reference::run_stats(&child, parent, goal))
                );
            }
            let drawn = FiniteSeries::new(&child).drawn(budget, true);
            let expected = reference::downsample_series(&child, budget);
            proptest::prop_assert_eq!(format!("{drawn:?}"), format!("{expected:?}"));
            let own: Vec<Point> = expected.into_iter().filter(|p| !p.inherited).collect();
            let drawn = FiniteSeries::new(&child).drawn(budget, false);
            proptest::prop_assert_eq!(format!("{drawn:?}"), format!("{own:?}"));
        }
    }
}

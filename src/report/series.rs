//! A run's stitched series as the report reads it: slices of its owners'
//! series, cut by the stitching operator's own cut, never copied.
//!
//! A family's descendants inherit their ancestors' points: stitched out
//! whole, a scale-1 bench project's 48M owner points became 165M rows, each
//! copied by the operator and again by the report. Here every owner's series
//! is held once and a run's series is the list of its segments' slices.

use std::borrow::Cow;

use crate::catalog::Segment;
use crate::query::functions::downsample::series::drawn_extremes;

/// One point of a stitched series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Step.
    pub step: u64,
    /// Value as logged (may be non-finite).
    pub value: f64,
    /// Whether an ancestor owns the point.
    pub inherited: bool,
}

/// One owner's points of one metric as a scan hands them over: the finite
/// ones, and the steps of the others (counted, never drawn). Steps below
/// zero are in no segment and are left out.
#[derive(Debug, Default)]
pub struct OwnerSeries {
    finite: Vec<(u64, f64)>,
    non_finite: Vec<u64>,
    /// The last step added, and whether a step came below the one before.
    last: Option<u64>,
    unsorted: bool,
}

impl OwnerSeries {
    /// Adds the next points, `steps` and `values` side by side.
    pub fn extend(&mut self, steps: &[i64], values: &[f64]) {
        let n = steps.len().min(values.len());
        self.finite.reserve(n);
        let mut last = self.last;
        let mut unsorted = false;
        for (&step, &value) in steps[..n].iter().zip(&values[..n]) {
            if step < 0 {
                continue;
            }
            let step = step as u64;
            unsorted |= last.is_some_and(|l| step < l);
            last = Some(step);
            match value.is_finite() {
                true => self.finite.push((step, value)),
                false => self.non_finite.push(step),
            }
        }
        self.last = last;
        self.unsorted |= unsorted;
    }

    /// Bytes a point takes in the series (about: the vectors grow by doubling).
    pub const BYTES_PER_POINT: usize = std::mem::size_of::<(u64, f64)>();

    /// The series in step order (should points have come out of order).
    pub fn sorted(mut self) -> Self {
        if self.unsorted {
            self.finite.sort_by_key(|p| p.0);
            self.non_finite.sort_unstable();
            self.unsorted = false;
        }
        self
    }

    /// The finite points `segment` covers, and how many non-finite ones it does.
    fn cut(&self, segment: &Segment) -> (&[(u64, f64)], usize) {
        let finite = segment.rows(&self.finite, |p| p.0 as i64);
        let other = segment.rows(&self.non_finite, |&s| s as i64);
        (&self.finite[finite], other.len())
    }
}

/// A stitched series' finite points as slices in step order, each
/// inherited or the run's own.
#[derive(Debug, Clone, Default)]
pub struct Pieces<'a> {
    /// Non-empty slices.
    parts: Vec<(&'a [(u64, f64)], bool)>,
    /// Where each part ends in the whole.
    ends: Vec<usize>,
    non_finite: usize,
}

impl<'a> Pieces<'a> {
    /// Appends `points`, which come after every point so far.
    pub fn push(&mut self, points: &'a [(u64, f64)], inherited: bool, non_finite: usize) {
        self.non_finite += non_finite;
        if !points.is_empty() {
            self.ends.push(self.len() + points.len());
            self.parts.push((points, inherited));
        }
    }

    /// Appends what `segment` covers of `owner`.
    pub fn push_segment(&mut self, owner: &'a OwnerSeries, segment: &Segment, inherited: bool) {
        let (points, non_finite) = owner.cut(segment);
        self.push(points, inherited, non_finite);
    }

    /// Finite points.
    pub fn len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Non-finite points left out.
    pub fn non_finite(&self) -> usize {
        self.non_finite
    }

    pub fn last(&self) -> Option<(u64, f64)> {
        self.parts.last().and_then(|(p, _)| p.last().copied())
    }

    /// Point `i`.
    pub fn get(&self, i: usize) -> (u64, f64) {
        let (part, at) = self.locate(i);
        self.parts[part].0[at]
    }

    /// The part holding point `i` (or the end) and the point's index in it.
    fn locate(&self, i: usize) -> (usize, usize) {
        let part = self.ends.partition_point(|&e| e <= i);
        let start = match part {
            0 => 0,
            k => self.ends[k - 1],
        };
        (part, i - start)
    }

    /// The points, a slice at a time.
    pub fn slices(&self) -> impl Iterator<Item = &'a [(u64, f64)]> + '_ {
        self.parts.iter().map(|(p, _)| *p)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, f64)> + '_ {
        self.iter_from(0)
    }

    /// Points `i..`, in order.
    pub fn iter_from(&self, i: usize) -> impl Iterator<Item = (u64, f64)> + '_ {
        let (part, at) = self.locate(i);
        self.parts
            .get(part)
            .map(|(p, _)| &p[at..])
            .into_iter()
            .chain(self.parts.iter().skip(part + 1).map(|(p, _)| *p))
            .flatten()
            .copied()
    }

    /// Points `..i`, last first.
    pub fn rev_before(&self, i: usize) -> impl Iterator<Item = (u64, f64)> + '_ {
        let (part, at) = self.locate(i);
        self.parts
            .get(part)
            .map(|(p, _)| &p[..at])
            .into_iter()
            .chain(
                self.parts[..part.min(self.parts.len())]
                    .iter()
                    .rev()
                    .map(|(p, _)| *p),
            )
            .flat_map(|p| p.iter().rev())
            .copied()
    }

    /// How many points come before the first whose step fails `before`
    /// (which holds for a prefix of the steps).
    pub fn partition_point(&self, before: impl Fn(u64) -> bool) -> usize {
        for (k, (points, _)) in self.parts.iter().enumerate() {
            let in_part = points.partition_point(|p| before(p.0));
            if in_part < points.len() {
                return self.ends[k] - points.len() + in_part;
            }
        }
        self.len()
    }

    /// The inherited or the own points, borrowed where they are one slice.
    fn part(&self, inherited: bool) -> Cow<'a, [(u64, f64)]> {
        let mut chosen = self.parts.iter().filter(|(_, i)| *i == inherited);
        match (chosen.next(), chosen.next()) {
            (None, _) => Cow::Borrowed(&[]),
            (Some((one, _)), None) => Cow::Borrowed(one),
            _ => Cow::Owned(
                self.parts
                    .iter()
                    .filter(|(_, i)| *i == inherited)
                    .flat_map(|(p, _)| p.iter().copied())
                    .collect(),
            ),
        }
    }

    /// What a chart draws of the series: each part reduced by the report's
    /// strategy ([`drawn_extremes`]), the inherited one only when `inherited`.
    pub fn drawn(&self, max_points: usize, inherited: bool) -> Vec<Point> {
        let parts: &[bool] = if inherited { &[true, false] } else { &[false] };
        parts
            .iter()
            .flat_map(|&inherited| {
                drawn_extremes(&self.part(inherited), max_points)
                    .into_iter()
                    .map(move |(step, value)| Point {
                        step,
                        value,
                        inherited,
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Cut anywhere into parts, a series answers as it does whole.
        #[test]
        fn parts_answer_as_the_whole(
            gaps in proptest::collection::vec(1u64..4, 0..60),
            cuts in proptest::collection::vec(0usize..60, 0..6),
            probe in 0u64..200,
        ) {
            let mut step = 0;
            let points: Vec<(u64, f64)> = gaps.iter().map(|g| { step += g; (step, step as f64) }).collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(points.len())).collect();
            cuts.push(0);
            cuts.push(points.len());
            cuts.sort_unstable();
            let mut pieces = Pieces::default();
            for w in cuts.windows(2) {
                pieces.push(&points[w[0]..w[1]], false, 1);
            }
            prop_assert_eq!(pieces.len(), points.len());
            prop_assert_eq!(pieces.last(), points.last().copied());
            prop_assert_eq!(pieces.iter().collect::<Vec<_>>(), points.clone());
            let at = points.partition_point(|p| p.0 <= probe);
            prop_assert_eq!(pieces.partition_point(|s| s <= probe), at);
            prop_assert_eq!(pieces.iter_from(at).collect::<Vec<_>>(), points[at..].to_vec());
            let mut before: Vec<_> = points[..at].to_vec();
            before.reverse();
            prop_assert_eq!(pieces.rev_before(at).collect::<Vec<_>>(), before);
            for (i, p) in points.iter().enumerate() {
                prop_assert_eq!(pieces.get(i), *p);
            }
            prop_assert_eq!(&*pieces.part(false), points.as_slice());
        }

        /// An owner's series cut by a segment holds the points in its range.
        #[test]
        fn segments_cut_owner_series(
            points in proptest::collection::vec((-3i64..80, prop_oneof![Just(f64::NAN), Just(1.0), Just(f64::INFINITY)]), 0..80),
            from in 0u64..90,
            len in proptest::option::of(0u64..90),
        ) {
            let mut points = points;
            points.sort_by_key(|p| p.0);
            points.dedup_by_key(|p| p.0);
            // Two stretches, as batches hand them over.
            let (a, b) = points.split_at(points.len() / 2);
            let mut owner = OwnerSeries::default();
            for half in [b, a] {
                let steps: Vec<i64> = half.iter().map(|p| p.0).collect();
                let values: Vec<f64> = half.iter().map(|p| p.1).collect();
                owner.extend(&steps, &values);
            }
            let owner = owner.sorted();
            let segment = Segment { owner: 1, depth: 0, from_step: from, to_step: len.map(|l| from + l) };
            let inside = |s: i64| s >= 0 && segment.contains(s as u64);
            let expected: Vec<(u64, f64)> = points.iter().filter(|p| inside(p.0) && p.1.is_finite()).map(|p| (p.0 as u64, p.1)).collect();
            let others = points.iter().filter(|p| inside(p.0) && !p.1.is_finite()).count();
            let (finite, non_finite) = owner.cut(&segment);
            prop_assert_eq!(finite.to_vec(), expected);
            prop_assert_eq!(non_finite, others);
        }
    }
}

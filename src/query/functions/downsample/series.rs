//! The downsampling strategies, on plain slices of points sorted by step
//! (see the module above for which reader uses which).
//!
//! The aggregates' points are `(step, Option<value>)`, sorted with
//! [`sort_points`] so that results never depend on the order partitions
//! were merged in.

use std::cmp::Ordering;

/// A point as buffered by the accumulators: NULL values are kept as `None`.
pub type Point = (i64, Option<f64>);

/// One non-empty bucket of `downsample`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// First step of the bucket (`min_step + k * width`), not of its first point.
    pub step: i64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub last: Option<f64>,
    pub count: i64,
}

impl Bucket {
    fn new(step: i64) -> Self {
        Bucket {
            step,
            min: None,
            max: None,
            last: None,
            count: 0,
        }
    }

    fn add(&mut self, value: Option<f64>) {
        self.count += 1;
        let Some(v) = value else { return };
        self.last = Some(v);
        if !v.is_nan() {
            self.min = Some(self.min.map_or(v, |m| m.min(v)));
            self.max = Some(self.max.map_or(v, |m| m.max(v)));
        }
    }
}

/// Sorts by step, then value (NULL first, then IEEE total order), so that
/// duplicate steps come out the same way whatever order they were read in.
pub fn sort_points(points: &mut [Point]) {
    points.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| cmp_value(a.1, b.1)));
}

fn cmp_value(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

/// Splits `[min_step, max_step]` into `n` buckets of equal integer width and
/// summarises the non-empty ones. `points` must be sorted by [`sort_points`];
/// `n` must be positive.
pub fn min_max_last(points: &[Point], n: u64) -> Vec<Bucket> {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Vec::new();
    };
    // i128: a series spanning most of the i64 range must not overflow.
    let lo = i128::from(first.0);
    let span = (i128::from(last.0) - lo + 1) as u128;
    let width = span.div_ceil(u128::from(n.max(1))).max(1) as i128;
    let mut out: Vec<Bucket> = Vec::new();
    for &(step, value) in points {
        // Lies in [lo, step], so it fits in an i64.
        let start = (lo + (i128::from(step) - lo) / width * width) as i64;
        match out.last_mut() {
            Some(bucket) if bucket.step == start => bucket.add(value),
            _ => {
                let mut bucket = Bucket::new(start);
                bucket.add(value);
                out.push(bucket);
            }
        }
    }
    out
}

/// Largest-Triangle-Three-Buckets (Steinarsson 2013, equal-count buckets):
/// indices of at most `n` points, first and last included, in input order.
/// `points` must be sorted by step and free of NaN. A series of at most `n`
/// points is returned whole; `None` if it is longer and `n < 3`, since LTTB
/// always keeps both ends and needs a third point to choose anything.
pub fn lttb(points: &[(i64, f64)], n: usize) -> Option<Vec<usize>> {
    let len = points.len();
    if len <= n {
        return Some((0..len).collect());
    }
    if n < 3 {
        return None;
    }
    // Relative steps keep the f64 areas precise for large absolute steps.
    let x = |i: usize| (i128::from(points[i].0) - i128::from(points[0].0)) as f64;
    let y = |i: usize| points[i].1;
    // The inner points 1..len-1 are cut into n-2 buckets of near-equal count;
    // len > n makes every bucket non-empty.
    let (inner, slots) = ((len - 2) as u128, (n - 2) as u128);
    let bound = |k: usize| 1 + (k as u128 * inner / slots) as usize;
    let mut picked = Vec::with_capacity(n);
    picked.push(0);
    let mut a = 0;
    for k in 0..n - 2 {
        let (start, end) = (bound(k), bound(k + 1));
        let next = if k + 1 < n - 2 {
            end..bound(k + 2)
        } else {
            len - 1..len
        };
        let count = next.len() as f64;
        let avg_x = next.clone().map(x).sum::<f64>() / count;
        let avg_y = next.map(y).sum::<f64>() / count;
        let (ax, ay) = (x(a), y(a));
        let mut best = (start, f64::NEG_INFINITY);
        for i in start..end {
            let area = ((ax - avg_x) * (y(i) - ay) - (ax - x(i)) * (avg_y - ay)).abs();
            if area > best.1 {
                best = (i, area);
            }
        }
        picked.push(best.0);
        a = best.0;
    }
    picked.push(len - 1);
    Some(picked)
}

/// A report's drawing of a series: its step range cut into `max_points / 4`
/// buckets of equal width, each kept as its first, lowest, highest and last
/// points (fewer where they coincide), in step order. Series of at most
/// `max_points` points, and budgets under 8, keep every point.
pub fn drawn_extremes(points: &[(u64, f64)], max_points: usize) -> Vec<(u64, f64)> {
    if points.len() <= max_points || max_points < 8 {
        return points.to_vec();
    }
    let buckets = max_points / 4;
    let (lo, hi) = (points[0].0, points[points.len() - 1].0);
    let width = ((hi - lo) / buckets as u64).max(1);
    let mut out = Vec::with_capacity(max_points);
    let mut start = 0;
    while start < points.len() {
        let bucket = (points[start].0 - lo) / width;
        let end = start + points[start..].partition_point(|p| (p.0 - lo) / width == bucket);
        let slice = &points[start..end];
        let (mut min_i, mut max_i) = (0, 0);
        let (mut min, mut max) = (slice[0].1, slice[0].1);
        for (i, p) in slice.iter().enumerate() {
            if p.1 < min {
                (min, min_i) = (p.1, i);
            }
            if p.1 > max {
                (max, max_i) = (p.1, i);
            }
        }
        let mut picks = [0, min_i, max_i, slice.len() - 1];
        picks.sort_unstable();
        for (k, &i) in picks.iter().enumerate() {
            if k == 0 || picks[k - 1] != i {
                out.push(slice[i]);
            }
        }
        start = end;
    }
    out
}

/// Which of `values` (a series in step order) to keep within `budget`: the
/// lowest and highest of each of `budget / 2` buckets of equal point count,
/// by IEEE total order. A series within the budget, or a budget under 2,
/// keeps every point.
pub fn count_extremes(values: &[f64], budget: usize) -> Vec<bool> {
    let n = values.len();
    if n <= budget || budget < 2 {
        return vec![true; n];
    }
    let buckets = budget / 2;
    let mut keep = vec![false; n];
    for b in 0..buckets {
        let (lo, hi) = (
            b * n / buckets,
            ((b + 1) * n / buckets).max(b * n / buckets + 1),
        );
        let range = lo..hi.min(n);
        let by_value = |i: &usize, j: &usize| values[*i].total_cmp(&values[*j]);
        if let (Some(min), Some(max)) = (range.clone().min_by(by_value), range.max_by(by_value)) {
            keep[min] = true;
            keep[max] = true;
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[f64]) -> Vec<(i64, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as i64, v))
            .collect()
    }

    #[test]
    fn lttb_keeps_ends_and_bounds_the_count() {
        let points = series(
            &(0..1000)
                .map(|i| (i as f64 / 7.0).sin())
                .collect::<Vec<_>>(),
        );
        for n in [3, 4, 10, 99, 999] {
            let picked = lttb(&points, n).unwrap();
            assert_eq!(picked.len(), n);
            assert_eq!(picked.first(), Some(&0));
            assert_eq!(picked.last(), Some(&999));
            assert!(picked.windows(2).all(|w| w[0] < w[1]), "{picked:?}");
        }
    }

    #[test]
    fn lttb_returns_short_series_whole() {
        let points = series(&[1.0, 5.0, 2.0]);
        assert_eq!(lttb(&points, 3), Some(vec![0, 1, 2]));
        assert_eq!(lttb(&points, 100), Some(vec![0, 1, 2]));
        assert_eq!(lttb(&points, 2), None);
        assert_eq!(lttb(&points[..2], 2), Some(vec![0, 1]));
        assert_eq!(lttb(&[], 1), Some(vec![]));
    }

    #[test]
    fn lttb_picks_the_spike() {
        let mut values = vec![1.0; 1000];
        values[437] = 50.0;
        let picked = lttb(&series(&values), 10).unwrap();
        assert!(picked.contains(&437), "{picked:?}");
        values[437] = -50.0;
        let picked = lttb(&series(&values), 10).unwrap();
        assert!(picked.contains(&437), "{picked:?}");
    }

    #[test]
    fn lttb_survives_huge_steps_and_infinities() {
        let points = vec![
            (i64::MIN, 0.0),
            (-1, f64::INFINITY),
            (0, 1.0),
            (1, f64::NEG_INFINITY),
            (i64::MAX, 2.0),
        ];
        let picked = lttb(&points, 3).unwrap();
        assert_eq!((picked.len(), picked[0], picked[2]), (3, 0, 4));
    }

    fn bucket(step: i64, min: f64, max: f64, last: f64, count: i64) -> Bucket {
        Bucket {
            step,
            min: Some(min),
            max: Some(max),
            last: Some(last),
            count,
        }
    }

    #[test]
    fn bucket_boundaries_follow_the_group_range() {
        // Steps 10..=19 in 3 buckets: width ceil(10/3) = 4 → [10,14), [14,18), [18,20).
        let points: Vec<Point> = (10..20).map(|s| (s, Some(s as f64))).collect();
        assert_eq!(
            min_max_last(&points, 3),
            vec![
                bucket(10, 10.0, 13.0, 13.0, 4),
                bucket(14, 14.0, 17.0, 17.0, 4),
                bucket(18, 18.0, 19.0, 19.0, 2),
            ]
        );
        // More buckets than steps: width 1, one bucket per step.
        assert_eq!(min_max_last(&points, 1000).len(), 10);
        // Empty buckets are left out; the bucket step is its start, not its first point.
        let sparse = [(0, Some(1.0)), (9, Some(2.0)), (10, Some(3.0))];
        assert_eq!(
            min_max_last(&sparse, 4),
            vec![bucket(0, 1.0, 1.0, 1.0, 1), bucket(9, 2.0, 3.0, 3.0, 2)]
        );
        let extreme = [(i64::MIN, Some(0.0)), (i64::MAX, Some(1.0))];
        assert_eq!(min_max_last(&extreme, 2).len(), 2);
        assert_eq!(min_max_last(&extreme, 1).len(), 1);
    }

    #[test]
    fn buckets_ignore_nan_and_null_but_count_them() {
        let mut points = vec![
            (0, Some(f64::NAN)),
            (1, None),
            (2, Some(5.0)),
            (3, Some(-1.0)),
            (4, Some(f64::NAN)),
            (5, None),
        ];
        sort_points(&mut points);
        let got = min_max_last(&points, 3);
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].min, got[0].max, got[0].count), (None, None, 2));
        assert!(got[0].last.unwrap().is_nan());
        assert_eq!(got[1], bucket(2, -1.0, 5.0, -1.0, 2));
        // The last non-NULL value is NaN: `last` reports it, min/max do not.
        assert_eq!((got[2].min, got[2].max, got[2].count), (None, None, 2));
        assert!(got[2].last.unwrap().is_nan());
    }

    #[test]
    fn last_is_the_value_at_the_highest_step() {
        let mut points = vec![(7, Some(70.0)), (3, Some(30.0)), (5, None), (1, Some(10.0))];
        sort_points(&mut points);
        assert_eq!(
            min_max_last(&points, 1),
            vec![bucket(1, 10.0, 70.0, 70.0, 4)]
        );
        // Duplicate steps sort by value, so the larger one is "last" either way round.
        let mut a = vec![(2, Some(1.0)), (2, Some(9.0)), (2, None)];
        let mut b = vec![(2, None), (2, Some(9.0)), (2, Some(1.0))];
        sort_points(&mut a);
        sort_points(&mut b);
        assert_eq!(min_max_last(&a, 1), min_max_last(&b, 1));
        assert_eq!(min_max_last(&a, 1)[0].last, Some(9.0));
    }

    #[test]
    fn drawn_extremes_keep_extremes_and_ends() {
        let points: Vec<(u64, f64)> = (0..100_000u64)
            .map(|s| (s, if s == 54_321 { 1e9 } else { (s % 7) as f64 }))
            .collect();
        let small = drawn_extremes(&points, 1000);
        assert!(small.len() <= 1000 + 4, "{}", small.len());
        assert_eq!(small.first(), points.first());
        assert_eq!(small.last(), points.last());
        assert!(small.contains(&(54_321, 1e9)));
        assert!(small.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(drawn_extremes(&points[..10], 1000).len(), 10);
        assert_eq!(drawn_extremes(&points[..100], 7).len(), 100);
    }

    #[test]
    fn count_extremes_keep_each_buckets_min_and_max() {
        // 12 points, budget 6: 3 buckets of 4 points.
        let values = [
            5.0,
            1.0,
            9.0,
            3.0,
            2.0,
            2.0,
            8.0,
            7.0,
            f64::NAN,
            0.0,
            4.0,
            -1.0,
        ];
        let keep = count_extremes(&values, 6);
        let kept: Vec<usize> = (0..values.len()).filter(|&i| keep[i]).collect();
        // NaN sorts above every number in IEEE total order, so it is a maximum.
        assert_eq!(kept, vec![1, 2, 4, 6, 8, 11]);
        assert_eq!(count_extremes(&values, 12), vec![true; 12]);
        assert_eq!(count_extremes(&values, 1), vec![true; 12]);
        // A budget above the bucket count of points still keeps at most two per bucket.
        assert!(count_extremes(&values, 11).iter().filter(|k| **k).count() <= 11);
    }
}

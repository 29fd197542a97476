//! The per-group state of `count`, `sum`, `min` and `max`, updated one run of
//! equal keys at a time.
//!
//! Every fold applies DataFusion 55's own groups-accumulator step to the rows
//! in row order, so a partial state is bit for bit the one DataFusion would
//! build: `sum` adds from 0 (`add_wrapping`, so integers wrap), `min`/`max`
//! start from the type's `MIN`/`MAX` and replace the current value when
//! `partial_cmp` says Less/Greater *or* cannot compare (a NaN on either side).
//! That last rule makes float min/max depend on row order around NaNs and
//! never lets `max` go below `f64::MIN` (max of only `-inf` is `f64::MIN`);
//! the final aggregate above applies the same rule to the partial states
//! anyway, so doing anything else here would change answers, not fix them.

use std::cmp::Ordering;
use std::marker::PhantomData;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, PrimitiveArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{ArrowNativeTypeOp, ArrowPrimitiveType, DataType};
use datafusion::common::internal_datafusion_err;
use datafusion::error::Result;
use datafusion::logical_expr::ColumnarValue;

/// Rows `start..start + len` of a batch, all of one group.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub group: u32,
    pub start: usize,
    pub len: usize,
}

/// One aggregate's state for every group of a partition.
pub trait RunAccumulator: Send {
    /// Folds the argument's rows of every run into the run's group; `groups`
    /// is the number of groups so far, `rows` the batch's.
    fn update(
        &mut self,
        value: &ColumnarValue,
        runs: &[Run],
        groups: usize,
        rows: usize,
    ) -> Result<()>;

    /// The partial state of every group, in group order, and a fresh start.
    fn take_state(&mut self) -> Vec<ArrayRef>;

    /// Bytes held for the groups' state (allocated capacity).
    fn size(&self) -> usize;
}

/// `count(x)`: the rows where `x` is not null (all of them for `count(*)`).
#[derive(Default)]
pub struct Count {
    counts: Vec<i64>,
}

impl RunAccumulator for Count {
    fn update(
        &mut self,
        value: &ColumnarValue,
        runs: &[Run],
        groups: usize,
        _rows: usize,
    ) -> Result<()> {
        self.counts.resize(groups, 0);
        let nulls = match value {
            ColumnarValue::Scalar(s) if s.is_null() => return Ok(()),
            ColumnarValue::Scalar(_) => None,
            // Logical nulls: a dictionary or null-typed argument has no null buffer.
            ColumnarValue::Array(a) => a.logical_nulls().filter(|n| n.null_count() > 0),
        };
        for run in runs {
            let nulls = nulls
                .as_ref()
                .map_or(0, |n| n.slice(run.start, run.len).null_count());
            self.counts[run.group as usize] += (run.len - nulls) as i64;
        }
        Ok(())
    }

    fn take_state(&mut self) -> Vec<ArrayRef> {
        vec![Arc::new(Int64Array::from(std::mem::take(&mut self.counts)))]
    }

    fn size(&self) -> usize {
        self.counts.capacity() * size_of::<i64>()
    }
}

/// How one aggregate folds values into a group's state.
pub trait FoldOp<N: Copy>: Send + Sync + 'static {
    /// The state of a group before its first value.
    fn start() -> N;
    /// The state after `x`.
    fn step(cur: N, x: N) -> N;
    /// The state after every value of `xs` in order; the same as repeated
    /// [`FoldOp::step`], possibly faster.
    fn fold(cur: N, xs: &[N]) -> N {
        xs.iter().fold(cur, |cur, &x| Self::step(cur, x))
    }
}

/// `sum`, as DataFusion's groups accumulator: from 0, `add_wrapping`.
pub struct Sum;

impl<N: ArrowNativeTypeOp> FoldOp<N> for Sum {
    fn start() -> N {
        N::ZERO
    }
    fn step(cur: N, x: N) -> N {
        cur.add_wrapping(x)
    }
}

/// `max`: from the type's `MIN`, replaced by a greater or incomparable value.
pub struct Max;
/// `min`: from the type's `MAX`, replaced by a lesser or incomparable value.
pub struct Min;

impl<N: Bounded> FoldOp<N> for Max {
    fn start() -> N {
        N::MIN
    }
    fn step(cur: N, x: N) -> N {
        match x.partial_cmp(&cur) {
            Some(Ordering::Greater) | None => x,
            _ => cur,
        }
    }
    fn fold(cur: N, xs: &[N]) -> N {
        N::fold_max(cur, xs)
    }
}

impl<N: Bounded> FoldOp<N> for Min {
    fn start() -> N {
        N::MAX
    }
    fn step(cur: N, x: N) -> N {
        match x.partial_cmp(&cur) {
            Some(Ordering::Less) | None => x,
            _ => cur,
        }
    }
    fn fold(cur: N, xs: &[N]) -> N {
        N::fold_min(cur, xs)
    }
}

/// A native type `min`/`max` can fold: its bounds (DataFusion's starting
/// values) and, for floats, a faster fold over a slice.
pub trait Bounded: PartialOrd + Copy + Send + Sync + 'static {
    const MIN: Self;
    const MAX: Self;
    fn fold_max(cur: Self, xs: &[Self]) -> Self {
        xs.iter().fold(cur, |cur, &x| Max::step(cur, x))
    }
    fn fold_min(cur: Self, xs: &[Self]) -> Self {
        xs.iter().fold(cur, |cur, &x| Min::step(cur, x))
    }
}

macro_rules! bounded_int {
    ($($t:ty),*) => {$(
        impl Bounded for $t {
            const MIN: Self = <$t>::MIN;
            const MAX: Self = <$t>::MAX;
        }
    )*};
}
bounded_int!(i8, i16, i32, i64, u8, u16, u32, u64);

/// Lanes of the float fast path: independent comparisons the compiler can
/// turn into SIMD, where the row-by-row fold is one long dependency chain.
const LANES: usize = 8;

macro_rules! bounded_float {
    ($($t:ty),*) => {$(
        impl Bounded for $t {
            const MIN: Self = <$t>::MIN;
            const MAX: Self = <$t>::MAX;
            fn fold_max(cur: Self, xs: &[Self]) -> Self {
                let (best, nan) = lanes(xs, <$t>::NEG_INFINITY, |x, m| x > m);
                let best = if best > cur { best } else { cur };
                // Without NaNs the fold is the greatest value, except that of
                // equal values the first is kept: only ±0 tell equal values apart.
                if nan || cur.is_nan() || best == 0.0 {
                    return xs.iter().fold(cur, |cur, &x| Max::step(cur, x));
                }
                best
            }
            fn fold_min(cur: Self, xs: &[Self]) -> Self {
                let (best, nan) = lanes(xs, <$t>::INFINITY, |x, m| x < m);
                let best = if best < cur { best } else { cur };
                if nan || cur.is_nan() || best == 0.0 {
                    return xs.iter().fold(cur, |cur, &x| Min::step(cur, x));
                }
                best
            }
        }
    )*};
}
bounded_float!(f32, f64);

/// The best of `xs` by `better` (not NaN-aware) and whether `xs` holds a NaN.
#[inline(always)]
fn lanes<T: Copy + PartialEq>(xs: &[T], init: T, better: impl Fn(T, T) -> bool) -> (T, bool) {
    let mut best = [init; LANES];
    let mut nan = [false; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for l in 0..LANES {
            let x = chunk[l];
            best[l] = if better(x, best[l]) { x } else { best[l] };
            #[allow(clippy::eq_op)] // x != x is NaN.
            {
                nan[l] |= x != x;
            }
        }
    }
    let mut out = init;
    let mut any_nan = false;
    for &x in best.iter().chain(tail) {
        out = if better(x, out) { x } else { out };
        #[allow(clippy::eq_op)]
        {
            any_nan |= x != x;
        }
    }
    (out, any_nan || nan.iter().any(|&n| n))
}

/// `sum`, `min` or `max` of a primitive column: a value per group, null
/// while the group has seen no non-null value.
pub struct Fold<T: ArrowPrimitiveType, O> {
    values: Vec<T::Native>,
    seen: Vec<bool>,
    data_type: DataType,
    op: PhantomData<O>,
}

impl<T: ArrowPrimitiveType, O> Fold<T, O> {
    pub fn new(data_type: DataType) -> Self {
        Self {
            values: Vec::new(),
            seen: Vec::new(),
            data_type,
            op: PhantomData,
        }
    }
}

impl<T, O> RunAccumulator for Fold<T, O>
where
    T: ArrowPrimitiveType + Send,
    O: FoldOp<T::Native>,
{
    fn update(
        &mut self,
        value: &ColumnarValue,
        runs: &[Run],
        groups: usize,
        rows: usize,
    ) -> Result<()> {
        self.values.resize(groups, O::start());
        self.seen.resize(groups, false);
        let array = value.to_array(rows)?;
        let array = array.as_primitive_opt::<T>().ok_or_else(|| {
            internal_datafusion_err!("run aggregate: unexpected {} argument", array.data_type())
        })?;
        let xs = array.values();
        let nulls = array.nulls().filter(|n| n.null_count() > 0);
        for run in runs {
            let g = run.group as usize;
            let part = &xs[run.start..run.start + run.len];
            let nulls = nulls.map(|n| n.slice(run.start, run.len));
            match nulls {
                None => {
                    self.values[g] = O::fold(self.values[g], part);
                    self.seen[g] = true;
                }
                Some(n) if n.null_count() == run.len => {}
                Some(n) if n.null_count() == 0 => {
                    self.values[g] = O::fold(self.values[g], part);
                    self.seen[g] = true;
                }
                Some(n) => {
                    let mut cur = self.values[g];
                    for i in n.valid_indices() {
                        cur = O::step(cur, part[i]);
                    }
                    self.values[g] = cur;
                    self.seen[g] = true;
                }
            }
        }
        Ok(())
    }

    fn take_state(&mut self) -> Vec<ArrayRef> {
        let values = std::mem::take(&mut self.values);
        let nulls = NullBuffer::from(std::mem::take(&mut self.seen));
        let array = PrimitiveArray::<T>::new(values.into(), Some(nulls))
            .with_data_type(self.data_type.clone());
        vec![Arc::new(array)]
    }

    fn size(&self) -> usize {
        self.values.capacity() * size_of::<T::Native>() + self.seen.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step_max(cur: f64, xs: &[f64]) -> f64 {
        xs.iter().fold(cur, |c, &x| Max::step(c, x))
    }
    fn step_min(cur: f64, xs: &[f64]) -> f64 {
        xs.iter().fold(cur, |c, &x| Min::step(c, x))
    }

    #[test]
    fn float_fast_path_is_the_row_by_row_fold() {
        let specials = [
            0.0,
            -0.0,
            1.5,
            -2.5,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -f64::NAN,
            f64::MIN,
            f64::MAX,
        ];
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..20_000 {
            let len = next() % 40;
            let xs: Vec<f64> = (0..len)
                .map(|_| match next() % 4 {
                    0 => specials[next() % specials.len()],
                    _ => (next() % 7) as f64 - 3.0,
                })
                .collect();
            for cur in [f64::MIN, f64::MAX, 0.0, -0.0, f64::NAN, 1.0] {
                let fast = <f64 as Bounded>::fold_max(cur, &xs);
                assert_eq!(
                    fast.to_bits(),
                    step_max(cur, &xs).to_bits(),
                    "max {cur} {xs:?}"
                );
                let fast = <f64 as Bounded>::fold_min(cur, &xs);
                assert_eq!(
                    fast.to_bits(),
                    step_min(cur, &xs).to_bits(),
                    "min {cur} {xs:?}"
                );
            }
        }
    }
}

//! Filters pushed into a lineage view, sorted by what they constrain.
//!
//! A stitched row is an owner's point seen through one segment of one
//! viewer. A filter on the point's own columns (`source_run_id`, `metric`,
//! `step`, `value`, `time`) holds of the owner's row as stored, so it filters
//! the owners' scan; a filter on the segment's columns (`run_id`,
//! `source_run_id`, `inherited`) holds of the `(viewer, owner)` pair, so it is
//! evaluated on the segment list and drops segments (and owners no segment
//! keeps) before anything is read. Either way a filter is applied whole, so
//! the pushdown is exact; a filter mixing both kinds stays with DataFusion.
//!
//! On top of that, the step range the point filters allow (interval
//! analysis) clips every segment, so a segment outside it is not scanned.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::{AnalysisContext, ExprBoundaries, analyze};

use crate::catalog::{RunId, Segment};

/// Columns of the owner's point; `source_run_id` is the owner's `run_id`.
const POINT_COLUMNS: [&str; 5] = ["source_run_id", "metric", "step", "value", "time"];
/// Columns of the `(viewer, owner)` pair a segment is.
const SEGMENT_COLUMNS: [&str; 3] = ["run_id", "source_run_id", "inherited"];

/// Where a pushed filter applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Segments,
    Points,
}

fn place(filter: &Expr) -> Option<Place> {
    let opaque = filter.is_volatile()
        || filter.contains_outer()
        || filter
            .exists(|e| {
                Ok(matches!(
                    e,
                    Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
                ))
            })
            .unwrap_or(true);
    if opaque {
        return None;
    }
    let names: HashSet<&str> = filter
        .column_refs()
        .into_iter()
        .map(|c| c.name.as_str())
        .collect();
    let within = |set: &[&str]| names.iter().all(|n| set.contains(n));
    // Both kinds take `source_run_id` alone: on the segments it prunes owners.
    if !names.is_empty() && within(&SEGMENT_COLUMNS) {
        Some(Place::Segments)
    } else if within(&POINT_COLUMNS) {
        Some(Place::Points)
    } else {
        None
    }
}

/// What a lineage view answers to `supports_filters_pushdown`.
pub fn support(filters: &[&Expr]) -> Vec<TableProviderFilterPushDown> {
    filters
        .iter()
        .map(|f| match place(f) {
            Some(_) => TableProviderFilterPushDown::Exact,
            None => TableProviderFilterPushDown::Unsupported,
        })
        .collect()
}

/// The pushed filters of one scan, unqualified.
#[derive(Debug, Default)]
pub struct Pushed {
    /// Over `run_id`, `source_run_id`, `inherited`.
    segments: Vec<Expr>,
    /// Over the owners' columns (`source_run_id` renamed `run_id`).
    pub points: Vec<Expr>,
}

impl Pushed {
    /// Sorts `filters` (those [`support`] accepted; others are ignored, as
    /// DataFusion applies them above the scan).
    pub fn new(filters: &[Expr]) -> DFResult<Self> {
        let mut pushed = Self::default();
        for filter in filters {
            match place(filter) {
                Some(Place::Segments) => pushed.segments.push(renamed(filter, |n| n)?),
                Some(Place::Points) => pushed.points.push(renamed(filter, |n| match n {
                    "source_run_id" => "run_id",
                    other => other,
                })?),
                None => {}
            }
        }
        Ok(pushed)
    }

    /// The `(viewer, segment)` pairs of `views` the filters keep, each
    /// clipped to the step range the point filters allow.
    pub fn narrow(
        &self,
        views: &[(RunId, Segment)],
        session: &dyn Session,
    ) -> DFResult<Vec<(RunId, Segment)>> {
        let keep = self.kept_segments(views, session)?;
        let Some((lo, hi)) = self.step_range(session)? else {
            return Ok(Vec::new());
        };
        Ok(views
            .iter()
            .zip(keep)
            .filter(|(_, keep)| *keep)
            .filter_map(|((viewer, s), _)| {
                let from = s.from_step.max(lo);
                let to = match (s.to_step, hi) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                match to {
                    Some(to) if to < from => None,
                    _ => Some((
                        *viewer,
                        Segment {
                            from_step: from,
                            to_step: to,
                            ..*s
                        },
                    )),
                }
            })
            .collect())
    }

    /// Which pairs of `views` every segment filter holds of.
    fn kept_segments(
        &self,
        views: &[(RunId, Segment)],
        session: &dyn Session,
    ) -> DFResult<Vec<bool>> {
        let mut keep = vec![true; views.len()];
        if self.segments.is_empty() || views.is_empty() {
            return Ok(keep);
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("run_id", DataType::Int64, false),
            Field::new("source_run_id", DataType::Int64, false),
            Field::new("inherited", DataType::Boolean, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(
                    views.iter().map(|(v, _)| *v as i64),
                )),
                Arc::new(Int64Array::from_iter_values(
                    views.iter().map(|(_, s)| s.owner as i64),
                )),
                Arc::new(BooleanArray::from_iter(
                    views.iter().map(|(v, s)| Some(*v != s.owner)),
                )),
            ],
        )?;
        let df_schema = DFSchema::try_from(schema)?;
        for filter in &self.segments {
            let holds = session
                .create_physical_expr(filter.clone(), &df_schema)?
                .evaluate(&batch)?
                .into_array(batch.num_rows())?;
            let holds = holds.as_boolean();
            for (i, keep) in keep.iter_mut().enumerate() {
                *keep &= holds.is_valid(i) && holds.value(i);
            }
        }
        Ok(keep)
    }

    /// The steps the point filters on `step` alone allow, as `(from, to)`
    /// (`to` open when `None`), or `None` when they allow none. A filter
    /// interval analysis cannot bound leaves the range as it is.
    fn step_range(&self, session: &dyn Session) -> DFResult<Option<(u64, Option<u64>)>> {
        let schema = Schema::new(vec![Field::new("step", DataType::Int64, false)]);
        let df_schema = DFSchema::try_from(schema.clone())?;
        let (mut lo, mut hi) = (0u64, None::<u64>);
        for filter in &self.points {
            let on_step = filter.column_refs().iter().all(|c| c.name == "step");
            if !on_step || filter.column_refs().is_empty() {
                continue;
            }
            let Ok(expr) = session.create_physical_expr(filter.clone(), &df_schema) else {
                continue;
            };
            let context = AnalysisContext::new(ExprBoundaries::try_new_unbounded(&schema)?);
            let Ok(analysed) = analyze(&expr, context, &schema) else {
                continue;
            };
            let Some(interval) = &analysed.boundaries[0].interval else {
                return Ok(None);
            };
            if let ScalarValue::Int64(Some(low)) = interval.lower() {
                lo = lo.max(u64::try_from(*low).unwrap_or(0));
            }
            if let ScalarValue::Int64(Some(high)) = interval.upper() {
                let Ok(high) = u64::try_from(*high) else {
                    return Ok(None);
                };
                hi = Some(hi.map_or(high, |h| h.min(high)));
            }
        }
        Ok(match hi {
            Some(hi) if hi < lo => None,
            _ => Some((lo, hi)),
        })
    }

    /// The one metric a point filter `metric = '…'` pins, if any.
    pub fn named_metric(&self) -> Option<String> {
        self.points.iter().find_map(|f| match f {
            Expr::BinaryExpr(b) if b.op == Operator::Eq => match (&*b.left, &*b.right) {
                (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c))
                    if c.name == "metric" =>
                {
                    match v {
                        ScalarValue::Utf8(Some(s))
                        | ScalarValue::Utf8View(Some(s))
                        | ScalarValue::LargeUtf8(Some(s)) => Some(s.clone()),
                        _ => None,
                    }
                }
                _ => None,
            },
            _ => None,
        })
    }
}

/// `filter` with its columns unqualified and renamed by `rename`.
fn renamed(filter: &Expr, rename: impl Fn(&str) -> &str) -> DFResult<Expr> {
    filter
        .clone()
        .transform(|e| {
            Ok(match e {
                Expr::Column(c) => {
                    Transformed::yes(Expr::Column(Column::new_unqualified(rename(&c.name))))
                }
                other => Transformed::no(other),
            })
        })
        .map(|t| t.data)
}

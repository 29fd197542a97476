//! The read API behind `pluto.query`: projects, runs, metric names and
//! points, answered from the catalog snapshot and query plans built from the
//! request's typed fields; statistics, comparisons and leaderboards are in
//! `stats`, files and logs in `records`.

pub(super) mod records;
mod selectors;
pub(super) mod stats;

pub(super) use records::{files, logs};
pub(super) use stats::{compare, leaderboard, statistics};

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMicrosecondType};
use axum::Json;
use axum::extract::{Path, Query, State};
use datafusion::functions::expr_fn::{lower, strpos};
use datafusion::logical_expr::SortExpr;
use datafusion::prelude::{Expr, col, lit};
use serde::Deserialize;
use serde_json::Value;

use super::{catalog, collect, filters, shapes};
use crate::catalog::{CatalogSnapshot, Run, RunId};
use crate::error::{Error, Result};
use crate::interfaces::http::{ApiError, AppState};
use crate::observe::RequestContext;
use crate::query::functions::downsample::series::count_extremes;
use crate::query::lineage::Lineage;
use crate::query::scan::MetricFilter;
use crate::scope::Scope;

type Scoped = axum::Extension<RequestContext>;
use crate::store::schema::timestamp_type;

type Reply<T> = std::result::Result<Json<T>, ApiError>;

/// A result column as UTF-8 strings (DataFusion may hand back views or large strings).
fn strings(column: &ArrayRef) -> Result<StringArray> {
    Ok(cast(column, &DataType::Utf8)?.as_string::<i32>().clone())
}

/// A result column as UTC microsecond timestamps.
fn micros(column: &ArrayRef) -> Result<PrimitiveArray<TimestampMicrosecondType>> {
    Ok(cast(column, &timestamp_type())?
        .as_primitive::<TimestampMicrosecondType>()
        .clone())
}

/// `run_id IN (runs)`.
fn run_ids(runs: &[RunId]) -> Expr {
    let ids = runs.iter().map(|r| lit(*r as i64)).collect();
    col("run_id").in_list(ids, false)
}

/// Ascending, NULLs last (SQL's default order).
fn ascending_by(column: &str) -> SortExpr {
    col(column).sort(true, false)
}

/// A step bound as the `step` column's type where it fits.
fn step_lit(step: u64) -> Expr {
    i64::try_from(step).map_or_else(|_| lit(step), lit)
}

fn iso(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn run_info(run: &Run) -> shapes::RunInfo {
    shapes::RunInfo {
        id: run.id,
        name: run.name.clone(),
        number: run.seq,
        display_id: run.display_id.clone(),
        project_name: run.project.clone(),
        experiment: run.experiment.clone(),
        status: run.status,
        tags: run.tags.iter().cloned().collect(),
        config: run.config.clone(),
        external_id: run.external_id.clone(),
        parent_id: run.parent_id,
        fork_step: run.fork_step,
        created_at: iso(&run.created_at),
        updated_at: iso(&run.updated_at),
    }
}

/// A run as the list's filter and sort read it: its answer as JSON.
fn run_json(run: &Run) -> Result<Value> {
    serde_json::to_value(run_info(run))
        .map_err(|e| Error::Internal(format!("run {} as JSON: {e}", run.id)))
}

/// A run's value of the list's sort field. The fields a front page sorts
/// by are read from the run itself, ordered as their JSON would be (times
/// to the millisecond the answer shows); building every run's JSON answer to
/// sort on it cost the list time in the project's runs (75 ms at 11,000).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum SortKey<'r> {
    Millis(i64),
    Number(u64),
    Text(&'r str),
    Json(JsonKey),
}

/// Any other field, ordered as the SDK's filter compares values.
struct JsonKey(Value);

impl PartialEq for JsonKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for JsonKey {}
impl PartialOrd for JsonKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for JsonKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        filters::compare(&self.0, &other.0)
    }
}

impl<'r> SortKey<'r> {
    fn of(run: &'r Run, field: &str) -> Result<Self> {
        Ok(match field {
            "createdAt" => Self::Millis(run.created_at.timestamp_millis()),
            "updatedAt" => Self::Millis(run.updated_at.timestamp_millis()),
            "id" => Self::Number(run.id),
            "number" => Self::Number(run.seq),
            "name" => Self::Text(&run.name),
            "displayId" => Self::Text(&run.display_id),
            _ => Self::Json(JsonKey(
                run_json(run)?.get(field).cloned().unwrap_or(Value::Null),
            )),
        })
    }
}

/// A run named in a query parameter, which must belong to `project` when one is given.
fn project_run<'s>(
    snapshot: &'s CatalogSnapshot,
    project: Option<&str>,
    reference: &str,
) -> Result<&'s Arc<Run>> {
    let run = snapshot.lookup(reference)?;
    if let Some(p) = project.filter(|p| !p.is_empty())
        && run.project != p
    {
        return Err(Error::NotFound(format!(
            "run `{reference}` is not in project `{p}`"
        )));
    }
    Ok(run)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct Params {
    project_name: Option<String>,
    run_id: Option<String>,
    run_ids: Option<String>,
    log_name: Option<String>,
    search: Option<String>,
    tags: Option<String>,
    filter: Option<String>,
    sort: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
    step_min: Option<u64>,
    step_max: Option<u64>,
    stitched: Option<bool>,
    aggregation: Option<String>,
    direction: Option<String>,
    log_type: Option<String>,
}

impl Params {
    fn project(&self) -> Option<&str> {
        self.project_name.as_deref()
    }

    fn required_project(&self) -> Result<&str> {
        self.project()
            .ok_or_else(|| Error::invalid("projectName is required"))
    }

    /// The `runId` run, looked up in the key's scope and checked against
    /// `projectName` when given.
    async fn run(&self, state: &AppState, scope: &Scope) -> Result<Arc<Run>> {
        let id = self
            .run_id
            .as_deref()
            .ok_or_else(|| Error::invalid("runId is required"))?;
        let snapshot = catalog(state, scope).await?;
        Ok(project_run(&snapshot, self.project(), id)?.clone())
    }

    fn metric(&self) -> Result<&str> {
        self.log_name
            .as_deref()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| Error::invalid("logName is required"))
    }
}

/// The projects the key can see, with their run counts.
#[utoipa::path(
    get,
    path = "/api/runs/projects",
    tag = "query",
    responses((status = 200, description = "The projects", body = shapes::ProjectList))
)]
pub(super) async fn projects(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
) -> Reply<shapes::ProjectList> {
    let snapshot = catalog(&state, &scope).await?;
    let mut projects: BTreeMap<&str, (usize, &Run, &Run)> = BTreeMap::new();
    for run in snapshot.runs() {
        let entry = projects.entry(&run.project).or_insert((0, run, run));
        entry.0 += 1;
        if run.created_at < entry.1.created_at {
            entry.1 = run;
        }
        if run.updated_at > entry.2.updated_at {
            entry.2 = run;
        }
    }
    let projects = projects
        .into_iter()
        .map(|(name, (count, first, last))| shapes::ProjectInfo {
            id: name.to_string(),
            name: name.to_string(),
            run_count: count as u64,
            created_at: iso(&first.created_at),
            updated_at: iso(&last.updated_at),
        })
        .collect();
    Ok(Json(shapes::ProjectList { projects }))
}

/// Runs of a project, with search, tags, the SDK's filter grammar, sort and paging.
#[utoipa::path(
    get,
    path = "/api/runs/list",
    tag = "query",
    params(
        selectors::ProjectSelector,
        selectors::Page,
        ("search" = Option<String>, Query, description = "A case-insensitive substring"),
        ("tags" = Option<String>, Query, description = "Comma-separated tags a run must all have"),
        ("filter" = Option<String>, Query, description = "The SDK's filter: a JSON object of field conditions (`$eq`, `$gt`, `$in`, `$regex`, `$and`, `$or`, …)"),
        ("sort" = Option<String>, Query, description = "A run field, `-` first for descending; default `-createdAt`"),
    ),
    responses((status = 200, description = "A page of runs", body = shapes::RunList))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Query(p): Query<Params>,
) -> Reply<shapes::RunList> {
    let project = p.required_project()?;
    let filter = p
        .filter
        .as_deref()
        .map(|f| {
            serde_json::from_str::<Value>(f)
                .map_err(|e| Error::invalid(format!("filter is not JSON: {e}")))
        })
        .transpose()?;
    let filter = filter.map(|f| filters::Filter::parse(&f)).transpose()?;
    let wanted_tags: Vec<&str> = p
        .tags
        .as_deref()
        .map(|t| t.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let (field, descending) = match p.sort.as_deref() {
        Some(s) if s.starts_with('-') => (&s[1..], true),
        Some(s) => (s.trim_start_matches('+'), false),
        None => ("createdAt", true),
    };
    let limit = p.limit.unwrap_or(50).min(200);
    let offset = p.offset.unwrap_or(0);
    let end = offset.saturating_add(limit);
    let snapshot = catalog(&state, &scope).await?;
    // The front page: a project's newest (or oldest) runs, unfiltered, read
    // from the catalog's index by creation time.
    let unfiltered = filter.is_none()
        && p.search.as_deref().is_none_or(str::is_empty)
        && wanted_tags.iter().all(|t| t.is_empty());
    if unfiltered && field == "createdAt" {
        let runs = snapshot
            .by_creation(project, descending, end)
            .into_iter()
            .skip(offset)
            .map(|run| run_info(run))
            .collect();
        return Ok(Json(shapes::RunList { runs }));
    }
    let mut runs: Vec<(SortKey, &Run)> = Vec::new();
    for run in snapshot
        .runs()
        .map(|r| r.as_ref())
        .filter(|r| r.project == project)
        .filter(|r| {
            p.search.as_deref().is_none_or(|s| {
                let s = s.to_lowercase();
                r.name.to_lowercase().contains(&s) || r.display_id.to_lowercase().contains(&s)
            })
        })
        .filter(|r| {
            wanted_tags
                .iter()
                .all(|t| t.is_empty() || r.tags.contains(*t))
        })
    {
        if let Some(f) = &filter
            && !f.matches(&run_json(run)?)
        {
            continue;
        }
        runs.push((SortKey::of(run, field)?, run));
    }
    // Ties in the sort field keep the catalog's order (by id). Only the
    // requested page is sorted: a front page of 50 out of 100,000 runs.
    let order = |a: &(SortKey, &Run), b: &(SortKey, &Run)| {
        let ord = a.0.cmp(&b.0);
        let ord = if descending { ord.reverse() } else { ord };
        ord.then(a.1.id.cmp(&b.1.id))
    };
    if end == 0 {
        runs.clear();
    } else if end < runs.len() {
        runs.select_nth_unstable_by(end - 1, order);
        runs.truncate(end);
    }
    runs.sort_unstable_by(order);
    let runs = runs
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|(_, run)| run_info(run))
        .collect();
    Ok(Json(shapes::RunList { runs }))
}

async fn details_of(
    state: &AppState,
    scope: &RequestContext,
    project: Option<&str>,
    reference: &str,
) -> Reply<shapes::RunDetails> {
    let snapshot = catalog(state, scope).await?;
    let run = project_run(&snapshot, project, reference)?;
    let log_names = metric_names(state, scope, &[run.id], None, 10_000).await?;
    Ok(Json(shapes::RunDetails {
        run: run_info(run),
        log_names,
    }))
}

/// A run by numeric id, with the names of its metrics.
#[utoipa::path(
    get,
    path = "/api/runs/details/{id}",
    tag = "query",
    params(
        ("id" = u64, Path, description = "The run's numeric id"),
        selectors::ProjectCheck,
    ),
    responses((status = 200, description = "The run", body = shapes::RunDetails))
)]
pub(super) async fn details(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Path(id): Path<String>,
    Query(p): Query<Params>,
) -> Reply<shapes::RunDetails> {
    if id.parse::<RunId>().is_err() {
        return Err(Error::invalid(format!("`{id}` is not a numeric run id")).into());
    }
    details_of(&state, &scope, p.project(), &id).await
}

/// A run by display id, with the names of its metrics.
#[utoipa::path(
    get,
    path = "/api/runs/details/by-display-id/{display_id}",
    tag = "query",
    params(
        ("display_id" = String, Path, description = "The run's display id (`VS-6`)"),
        selectors::ProjectCheck,
    ),
    responses((status = 200, description = "The run", body = shapes::RunDetails))
)]
pub(super) async fn details_by_display(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Path(display): Path<String>,
    Query(p): Query<Params>,
) -> Reply<shapes::RunDetails> {
    details_of(&state, &scope, p.project(), &display).await
}

async fn metric_names(
    state: &AppState,
    scope: &RequestContext,
    runs: &[RunId],
    search: Option<&str>,
    limit: usize,
) -> Result<Vec<String>> {
    let search = search.filter(|s| !s.is_empty()).map(str::to_string);
    let what = format!("metric names of runs {runs:?} matching {search:?}");
    let runs = run_ids(runs);
    let batches = collect(state, scope, what, |ctx| async move {
        let mut df = ctx.table("metrics").await?.filter(runs)?;
        if let Some(s) = search {
            df = df.filter(strpos(lower(col("metric")), lower(lit(s))).gt(lit(0)))?;
        }
        Ok(df
            .select(vec![col("metric")])?
            .distinct()?
            .sort(vec![ascending_by("metric")])?
            .limit(0, Some(limit))?)
    })
    .await?;
    let mut names = Vec::new();
    for b in &batches {
        let col = strings(b.column(0))?;
        names.extend((0..col.len()).map(|i| col.value(i).to_string()));
    }
    Ok(names)
}

fn run_id_list(snapshot: &CatalogSnapshot, project: Option<&str>, ids: &str) -> Result<Vec<RunId>> {
    ids.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| project_run(snapshot, project, s).map(|r| r.id))
        .collect()
}

/// The metric names of a project's runs (or of `runIds`).
#[utoipa::path(
    get,
    path = "/api/runs/metric-names",
    tag = "query",
    params(
        selectors::ProjectSelector,
        ("runIds" = Option<String>, Query, description = "Comma-separated runs, by numeric or display id"),
        ("search" = Option<String>, Query, description = "A case-insensitive substring"),
        ("limit" = Option<u64>, Query, description = "Most items answered"),
    ),
    responses((status = 200, description = "The names, sorted (at most 500)", body = shapes::MetricNames))
)]
pub(super) async fn names(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Query(p): Query<Params>,
) -> Reply<shapes::MetricNames> {
    let project = p.required_project()?;
    let snapshot = catalog(&state, &scope).await?;
    let runs = match p.run_ids.as_deref() {
        Some(ids) => run_id_list(&snapshot, Some(project), ids)?,
        None => snapshot
            .runs()
            .filter(|r| r.project == project)
            .map(|r| r.id)
            .collect(),
    };
    let names = if runs.is_empty() {
        Vec::new()
    } else {
        metric_names(
            &state,
            &scope,
            &runs,
            p.search.as_deref(),
            p.limit.unwrap_or(500).min(500),
        )
        .await?
    };
    Ok(Json(shapes::MetricNames {
        metric_names: names,
    }))
}

/// One metric point read back for the API.
struct Point {
    metric: String,
    step: i64,
    value: f64,
    time_us: i64,
}

fn points(batches: &[RecordBatch]) -> Result<Vec<Point>> {
    let mut out = Vec::new();
    for b in batches {
        let metric = strings(b.column(0))?;
        let step = b.column(1).as_primitive::<Int64Type>();
        let value = b.column(2).as_primitive::<Float64Type>();
        let time = micros(b.column(3))?;
        for i in 0..b.num_rows() {
            out.push(Point {
                metric: metric.value(i).to_string(),
                step: step.value(i),
                value: value.value(i),
                time_us: time.value(i),
            });
        }
    }
    Ok(out)
}

/// Keeps the shape of a long series in `budget` points (the `count_extremes`
/// strategy of `query::functions::downsample`).
fn min_max_downsample(series: Vec<Point>, budget: usize) -> Vec<Point> {
    let values: Vec<f64> = series.iter().map(|p| p.value).collect();
    let keep = count_extremes(&values, budget);
    series
        .into_iter()
        .zip(keep)
        .filter_map(|(p, k)| k.then_some(p))
        .collect()
}

/// A run's points (own, or `stitched=true` for the lineage-stitched series),
/// shape-preserving downsampled to `limit`.
#[utoipa::path(
    get,
    path = "/api/runs/metrics",
    operation_id = "run_metrics",
    tag = "query",
    params(
        selectors::RunSelector,
        ("logName" = Option<String>, Query, description = "A metric name"),
        ("stitched" = Option<bool>, Query, description = "The series along the run's lineage (default false: own points)"),
        ("stepMin" = Option<u64>, Query, description = "First step"),
        ("stepMax" = Option<u64>, Query, description = "Last step"),
        ("limit" = Option<u64>, Query, description = "Most points answered, over all metrics (default 10,000)"),
    ),
    responses((status = 200, description = "The points, by metric then step", body = shapes::MetricPoints))
)]
pub(super) async fn metrics(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Query(p): Query<Params>,
) -> std::result::Result<shapes::MetricPoints, ApiError> {
    let run = p.run(&state, &scope).await?;
    let stitched = p.stitched.unwrap_or(false);
    let (id, metric, steps) = (run.id, p.log_name.clone(), (p.step_min, p.step_max));
    let what = format!(
        "points of run {id}, metric {metric:?}, steps {steps:?}{}",
        if stitched { ", stitched" } else { "" }
    );
    let batches = collect(&state, &scope, what, |ctx| async move {
        let mut df = if stitched {
            // The table function's reading of the name (a `%` makes a pattern).
            let metric = metric.as_deref().map(MetricFilter::sql);
            ctx.read_table(Lineage::of(&ctx)?.stitched(id, metric)?)?
        } else {
            let mut df = ctx
                .table("metrics")
                .await?
                .filter(col("run_id").eq(lit(id as i64)))?;
            if let Some(m) = metric {
                df = df.filter(col("metric").eq(lit(m)))?;
            }
            df
        };
        if let Some(min) = steps.0 {
            df = df.filter(col("step").gt_eq(step_lit(min)))?;
        }
        if let Some(max) = steps.1 {
            df = df.filter(col("step").lt_eq(step_lit(max)))?;
        }
        Ok(df
            .select_columns(&["metric", "step", "value", "time"])?
            .sort(vec![ascending_by("metric"), ascending_by("step")])?)
    })
    .await?;
    let mut by_metric: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for point in points(&batches)? {
        by_metric
            .entry(point.metric.clone())
            .or_default()
            .push(point);
    }
    let limit = p.limit.unwrap_or(10_000).clamp(2, 100_000);
    let budget = (limit / by_metric.len().max(1)).max(2);
    let mut metrics = Vec::new();
    for (_, series) in by_metric {
        for point in min_max_downsample(series, budget) {
            let time = chrono::DateTime::from_timestamp_micros(point.time_us).unwrap_or_default();
            metrics.push(shapes::MetricPoint {
                log_name: point.metric,
                step: point.step,
                value: point.value,
                time: iso(&time),
            });
        }
    }
    // Through `MetricPoints`' own writer: non-finite values as Python's tokens.
    Ok(shapes::MetricPoints { metrics })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{CatalogSnapshot, NewRun, plan_create};

    #[test]
    fn native_sort_keys_order_runs_as_their_json_answers_do() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00.000100Z")
            .unwrap()
            .to_utc();
        let mut snap = CatalogSnapshot::default();
        let mut runs = Vec::new();
        // Times apart by less than a millisecond compare equal, as shown.
        for (name, micros) in [("b", 100), ("a", 900), ("c", 1500), ("a", 2_000_000)] {
            let req = NewRun {
                project: "p".into(),
                name: name.into(),
                ..Default::default()
            };
            let mut run = plan_create(&snap, &req, None, t0).unwrap();
            run.created_at = t0 + chrono::Duration::microseconds(micros);
            run.updated_at = t0 - chrono::Duration::microseconds(micros);
            run.seq = 10 - run.id;
            snap.add(run.clone());
            runs.push(run);
        }
        for field in [
            "createdAt",
            "updatedAt",
            "id",
            "number",
            "name",
            "displayId",
            "status",
        ] {
            for a in &runs {
                for b in &runs {
                    let native = SortKey::of(a, field)
                        .unwrap()
                        .cmp(&SortKey::of(b, field).unwrap());
                    let json = filters::compare(
                        &run_json(a).unwrap()[field],
                        &run_json(b).unwrap()[field],
                    );
                    assert_eq!(native, json, "{field}: run {} vs run {}", a.id, b.id);
                }
            }
        }
    }
}

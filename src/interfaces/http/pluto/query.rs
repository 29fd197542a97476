//! The read API behind `pluto.query`: projects, runs, metrics, statistics,
//! comparisons, leaderboards and logs, answered from the catalog snapshot and SQL.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMicrosecondType};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{catalog, collect, filters};
use crate::catalog::{CatalogSnapshot, Run, RunId};
use crate::error::{Error, Result};
use crate::interfaces::http::{ApiError, AppState};
use crate::query::downsample::series::count_extremes;
use crate::scope::Scope;

type Scoped = axum::Extension<Scope>;
use crate::store::schema::timestamp_type;

type Reply = std::result::Result<Json<Value>, ApiError>;

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

/// A SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn iso(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn run_json(run: &Run) -> Value {
    json!({
        "id": run.id,
        "name": run.name,
        "number": run.seq,
        "displayId": run.display_id,
        "projectName": run.project,
        "experiment": run.experiment,
        "status": run.status,
        "tags": run.tags,
        "config": run.config,
        "externalId": run.external_id,
        "parentId": run.parent_id,
        "forkStep": run.fork_step,
        "createdAt": iso(&run.created_at),
        "updatedAt": iso(&run.updated_at),
    })
}

/// A run named in a query parameter, which must belong to `project` when one is given.
fn project_run<'s>(
    snapshot: &'s CatalogSnapshot,
    project: Option<&str>,
    reference: &str,
) -> Result<&'s Run> {
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

    fn run<'s>(&self, snapshot: &'s CatalogSnapshot) -> Result<&'s Run> {
        let id = self
            .run_id
            .as_deref()
            .ok_or_else(|| Error::invalid("runId is required"))?;
        project_run(snapshot, self.project(), id)
    }

    fn metric(&self) -> Result<&str> {
        self.log_name
            .as_deref()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| Error::invalid("logName is required"))
    }
}

/// `GET /api/runs/projects`.
pub(super) async fn projects(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
) -> Reply {
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
    let list: Vec<Value> = projects
        .into_iter()
        .map(|(name, (count, first, last))| {
            json!({"id": name, "name": name, "runCount": count,
                   "createdAt": iso(&first.created_at), "updatedAt": iso(&last.updated_at)})
        })
        .collect();
    Ok(Json(json!({ "projects": list })))
}

/// `GET /api/runs/list`: runs of a project, with search, tags, the SDK's filter grammar, sort and paging.
pub(super) async fn list(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Query(p): Query<Params>,
) -> Reply {
    let project = p
        .project()
        .ok_or_else(|| Error::invalid("projectName is required"))?;
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
    let snapshot = catalog(&state, &scope).await?;
    let mut runs: Vec<&Run> = snapshot
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
        .filter(|r| filter.as_ref().is_none_or(|f| f.matches(&run_json(r))))
        .collect();
    let (field, descending) = match p.sort.as_deref() {
        Some(s) if s.starts_with('-') => (&s[1..], true),
        Some(s) => (s.trim_start_matches('+'), false),
        None => ("createdAt", true),
    };
    runs.sort_by(|a, b| {
        let (a, b) = (run_json(a), run_json(b));
        let ord = filters::compare(&a[field], &b[field]);
        if descending { ord.reverse() } else { ord }
    });
    let limit = p.limit.unwrap_or(50).min(200);
    let offset = p.offset.unwrap_or(0);
    let page: Vec<Value> = runs
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(run_json)
        .collect();
    Ok(Json(json!({ "runs": page })))
}

async fn details_of(
    state: &AppState,
    scope: &Scope,
    project: Option<&str>,
    reference: &str,
) -> Reply {
    let snapshot = catalog(state, scope).await?;
    let run = project_run(&snapshot, project, reference)?;
    let mut body = run_json(run);
    let names = metric_names(state, scope, &[run.id], None, 10_000).await?;
    body["logNames"] = json!(names);
    Ok(Json(body))
}

/// `GET /api/runs/details/{id}`.
pub(super) async fn details(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Path(id): Path<String>,
    Query(p): Query<Params>,
) -> Reply {
    if id.parse::<RunId>().is_err() {
        return Err(Error::invalid(format!("`{id}` is not a numeric run id")).into());
    }
    details_of(&state, &scope, p.project(), &id).await
}

/// `GET /api/runs/details/by-display-id/{display_id}`.
pub(super) async fn details_by_display(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Path(display): Path<String>,
    Query(p): Query<Params>,
) -> Reply {
    details_of(&state, &scope, p.project(), &display).await
}

async fn metric_names(
    state: &AppState,
    scope: &Scope,
    runs: &[RunId],
    search: Option<&str>,
    limit: usize,
) -> Result<Vec<String>> {
    let ids: Vec<String> = runs.iter().map(|r| r.to_string()).collect();
    let mut sql = format!(
        "SELECT DISTINCT metric FROM metrics WHERE run_id IN ({})",
        ids.join(",")
    );
    if let Some(s) = search.filter(|s| !s.is_empty()) {
        sql.push_str(&format!(
            " AND strpos(lower(metric), lower({})) > 0",
            lit(s)
        ));
    }
    sql.push_str(&format!(" ORDER BY metric LIMIT {limit}"));
    let batches = collect(state, scope, &sql).await?;
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

/// `GET /api/runs/metric-names`.
pub(super) async fn names(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Query(p): Query<Params>,
) -> Reply {
    let project = p
        .project()
        .ok_or_else(|| Error::invalid("projectName is required"))?;
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
    Ok(Json(json!({ "metricNames": names })))
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
/// strategy of `query::downsample`).
fn min_max_downsample(series: Vec<Point>, budget: usize) -> Vec<Point> {
    let values: Vec<f64> = series.iter().map(|p| p.value).collect();
    let keep = count_extremes(&values, budget);
    series
        .into_iter()
        .zip(keep)
        .filter_map(|(p, k)| k.then_some(p))
        .collect()
}

/// A JSON number as Python writes it: non-finite values as `NaN` / `Infinity` tokens.
fn py_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        serde_json::Number::from_f64(v).map_or_else(|| "null".into(), |n| n.to_string())
    }
}

/// `GET /api/runs/metrics`: a run's points (own, or `stitched=true` for the
/// lineage-stitched series), shape-preserving downsampled to `limit`.
pub(super) async fn metrics(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Query(p): Query<Params>,
) -> std::result::Result<Response, ApiError> {
    let snapshot = catalog(&state, &scope).await?;
    let run = p.run(&snapshot)?;
    let stitched = p.stitched.unwrap_or(false);
    let mut sql = if stitched {
        let metric = p
            .log_name
            .as_deref()
            .map(|m| format!(", {}", lit(m)))
            .unwrap_or_default();
        format!(
            "SELECT metric, step, value, time FROM stitched_metrics({}{metric}) WHERE true",
            run.id
        )
    } else {
        let mut s = format!(
            "SELECT metric, step, value, time FROM metrics WHERE run_id = {}",
            run.id
        );
        if let Some(m) = p.log_name.as_deref() {
            s.push_str(&format!(" AND metric = {}", lit(m)));
        }
        s
    };
    if let Some(min) = p.step_min {
        sql.push_str(&format!(" AND step >= {min}"));
    }
    if let Some(max) = p.step_max {
        sql.push_str(&format!(" AND step <= {max}"));
    }
    sql.push_str(" ORDER BY metric, step");
    let batches = collect(&state, &scope, &sql).await?;
    let mut by_metric: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for point in points(&batches)? {
        by_metric
            .entry(point.metric.clone())
            .or_default()
            .push(point);
    }
    let limit = p.limit.unwrap_or(10_000).clamp(2, 100_000);
    let budget = (limit / by_metric.len().max(1)).max(2);
    let mut body = String::from("{\"metrics\": [");
    let mut first = true;
    for (_, series) in by_metric {
        for point in min_max_downsample(series, budget) {
            if !first {
                body.push_str(", ");
            }
            first = false;
            let time = chrono::DateTime::from_timestamp_micros(point.time_us).unwrap_or_default();
            let _ = write!(
                body,
                "{{\"logName\": {}, \"step\": {}, \"value\": {}, \"time\": {}}}",
                Value::String(point.metric),
                point.step,
                py_float(point.value),
                Value::String(iso(&time))
            );
        }
    }
    body.push_str("]}");
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Per-metric statistics of the given runs' own points.
async fn stats(
    state: &AppState,
    scope: &Scope,
    runs: &[RunId],
    metric: Option<&str>,
) -> Result<Vec<Value>> {
    let ids: Vec<String> = runs.iter().map(|r| r.to_string()).collect();
    let filter = metric
        .map(|m| format!(" AND metric = {}", lit(m)))
        .unwrap_or_default();
    let sql = format!(
        "SELECT run_id, metric, count(*) AS count, min(value) AS min, max(value) AS max, avg(value) AS mean, \
         var_samp(value) AS variance, last_value(value ORDER BY step) AS last, max(step) AS last_step, min(step) AS first_step \
         FROM metrics WHERE run_id IN ({}){filter} AND NOT isnan(value) GROUP BY run_id, metric ORDER BY run_id, metric",
        ids.join(",")
    );
    let batches = collect(state, scope, &sql).await?;
    let mut out = Vec::new();
    for b in &batches {
        let f = |i: usize, row: usize| {
            let a = b.column(i).as_primitive::<Float64Type>();
            if a.is_null(row) {
                Value::Null
            } else {
                json!(a.value(row))
            }
        };
        let n = |i: usize, row: usize| b.column(i).as_primitive::<Int64Type>().value(row);
        let metric = strings(b.column(1))?;
        for row in 0..b.num_rows() {
            out.push(json!({
                "runId": n(0, row), "logName": metric.value(row), "count": n(2, row),
                "min": f(3, row), "max": f(4, row), "mean": f(5, row), "variance": f(6, row),
                "last": f(7, row), "lastStep": n(8, row), "firstStep": n(9, row),
            }));
        }
    }
    Ok(out)
}

/// `GET /api/runs/statistics`.
pub(super) async fn statistics(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Query(p): Query<Params>,
) -> Reply {
    let snapshot = catalog(&state, &scope).await?;
    let run = p.run(&snapshot)?;
    let stats = stats(&state, &scope, &[run.id], p.log_name.as_deref()).await?;
    Ok(Json(
        json!({ "runId": run.id, "displayId": run.display_id, "statistics": stats }),
    ))
}

/// Orders statistics rows by the number under `key`, best first.
fn rank_order(a: &Value, b: &Value, key: &str, ascending: bool) -> std::cmp::Ordering {
    let (x, y) = (
        a[key].as_f64().unwrap_or(0.0),
        b[key].as_f64().unwrap_or(0.0),
    );
    if ascending {
        x.total_cmp(&y)
    } else {
        y.total_cmp(&x)
    }
}

fn ascending(direction: Option<&str>) -> Result<bool> {
    match direction.map(str::to_ascii_uppercase).as_deref() {
        None | Some("ASC") => Ok(true),
        Some("DESC") => Ok(false),
        Some(other) => Err(Error::invalid(format!(
            "direction must be ASC or DESC, got `{other}`"
        ))),
    }
}

/// `GET /api/runs/compare`: statistics of one metric across runs, and the best run by last value.
pub(super) async fn compare(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Query(p): Query<Params>,
) -> Reply {
    let snapshot = catalog(&state, &scope).await?;
    let ids = run_id_list(&snapshot, p.project(), p.run_ids.as_deref().unwrap_or(""))?;
    if ids.is_empty() {
        return Err(Error::invalid("runIds is required").into());
    }
    let metric = p.metric()?;
    let mut runs = stats(&state, &scope, &ids, Some(metric)).await?;
    for r in &mut runs {
        if let Some(run) = r["runId"].as_u64().and_then(|id| snapshot.get(id)) {
            r["displayId"] = json!(run.display_id);
            r["name"] = json!(run.name);
        }
    }
    let asc = ascending(p.direction.as_deref())?;
    let best = runs
        .iter()
        .filter(|r| r["last"].is_number())
        .min_by(|a, b| rank_order(a, b, "last", asc))
        .cloned();
    Ok(Json(
        json!({ "logName": metric, "runs": runs, "bestRun": best }),
    ))
}

/// `GET /api/runs/leaderboard`: runs of a project ranked by an aggregate of one metric.
pub(super) async fn leaderboard(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Query(p): Query<Params>,
) -> Reply {
    let project = p
        .project()
        .ok_or_else(|| Error::invalid("projectName is required"))?;
    let metric = p.metric()?;
    let key = match p
        .aggregation
        .as_deref()
        .unwrap_or("LAST")
        .to_ascii_uppercase()
        .as_str()
    {
        "MIN" => "min",
        "MAX" => "max",
        "AVG" => "mean",
        "LAST" => "last",
        "VARIANCE" => "variance",
        other => {
            return Err(Error::invalid(format!(
                "aggregation must be MIN, MAX, AVG, LAST or VARIANCE, got `{other}`"
            ))
            .into());
        }
    };
    let asc = ascending(p.direction.as_deref())?;
    let snapshot = catalog(&state, &scope).await?;
    let ids: Vec<RunId> = snapshot
        .runs()
        .filter(|r| r.project == project)
        .map(|r| r.id)
        .collect();
    let mut rows = if ids.is_empty() {
        Vec::new()
    } else {
        stats(&state, &scope, &ids, Some(metric)).await?
    };
    rows.retain(|r| r[key].is_number());
    rows.sort_by(|a, b| rank_order(a, b, key, asc));
    let offset = p.offset.unwrap_or(0);
    let limit = p.limit.unwrap_or(50).min(100);
    let ranked: Vec<Value> = rows
        .into_iter()
        .enumerate()
        .skip(offset)
        .take(limit)
        .map(|(i, r)| {
            let run = r["runId"].as_u64().and_then(|id| snapshot.get(id));
            json!({
                "rank": i + 1, "runId": r["runId"], "displayId": run.map(|r| r.display_id.clone()),
                "name": run.map(|r| r.name.clone()), "status": run.map(|r| r.status),
                "value": r[key], "logName": metric, "aggregation": key.to_uppercase(),
            })
        })
        .collect();
    Ok(Json(json!({ "leaderboard": ranked, "logName": metric })))
}

/// `GET /api/runs/files`: a run's uploaded files with signed download URLs;
/// `logName` matches either the key or the file name.
pub(super) async fn files(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Query(p): Query<Params>,
) -> Reply {
    let snapshot = catalog(&state, &scope).await?;
    let run = p.run(&snapshot)?;
    let mut sql = format!(
        "SELECT file_name, file_type, file_size, log_name, step, time FROM files WHERE run_id = {}",
        run.id
    );
    if let Some(name) = p.log_name.as_deref().filter(|n| !n.is_empty()) {
        sql.push_str(&format!(
            " AND (log_name = {0} OR file_name = {0})",
            lit(name)
        ));
    }
    sql.push_str(" ORDER BY time, file_name");
    let batches = collect(&state, &scope, &sql).await?;
    let mut files = Vec::new();
    for b in &batches {
        let (name, kind, log) = (
            strings(b.column(0))?,
            strings(b.column(1))?,
            strings(b.column(3))?,
        );
        let size = b.column(2).as_primitive::<Int64Type>();
        let step = b.column(4).as_primitive::<Int64Type>();
        let time = micros(b.column(5))?;
        for i in 0..b.num_rows() {
            let t = chrono::DateTime::from_timestamp_micros(time.value(i)).unwrap_or_default();
            files.push(json!({
                "fileName": name.value(i), "fileType": kind.value(i), "fileSize": size.value(i),
                "logName": log.value(i), "step": if step.is_null(i) { Value::Null } else { json!(step.value(i)) },
                "time": iso(&t), "downloadUrl": super::files::download_url(&state, run.id, name.value(i)),
            }));
        }
    }
    Ok(Json(json!({ "files": files })))
}

/// `GET /api/runs/logs`: a run's console lines (never inherited).
pub(super) async fn logs(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Query(p): Query<Params>,
) -> Reply {
    let snapshot = catalog(&state, &scope).await?;
    let run = p.run(&snapshot)?;
    let mut sql = format!(
        "SELECT message, log_type, time, line_number FROM logs WHERE run_id = {}",
        run.id
    );
    if let Some(t) = p.log_type.as_deref().filter(|t| !t.is_empty()) {
        sql.push_str(&format!(" AND log_type = {}", lit(&t.to_ascii_uppercase())));
    }
    let limit = p.limit.unwrap_or(10_000).min(10_000);
    sql.push_str(&format!(
        " ORDER BY time, line_number LIMIT {limit} OFFSET {}",
        p.offset.unwrap_or(0)
    ));
    let batches = collect(&state, &scope, &sql).await?;
    let mut logs = Vec::new();
    for b in &batches {
        let message = strings(b.column(0))?;
        let kind = strings(b.column(1))?;
        let time = micros(b.column(2))?;
        let line = b.column(3).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let t = chrono::DateTime::from_timestamp_micros(time.value(i)).unwrap_or_default();
            logs.push(json!({
                "message": message.value(i), "logType": kind.value(i), "time": iso(&t),
                "lineNumber": if line.is_null(i) { Value::Null } else { json!(line.value(i)) },
            }));
        }
    }
    Ok(Json(json!({ "logs": logs })))
}

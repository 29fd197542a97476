//! Statistics of runs' own points for the read API: per run and metric
//! (`/api/runs/statistics`), across runs (`/api/runs/compare`) and ranked
//! over a project (`/api/runs/leaderboard`), as one aggregate plan.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use axum::Json;
use axum::extract::{Query, State};
use datafusion::functions::expr_fn::isnan;
use datafusion::functions_aggregate::expr_fn::{avg, count, last_value, max, min, var_sample};
use datafusion::prelude::{col, lit, not};

use super::{
    Params, Reply, Scoped, ascending_by, catalog, collect, run_id_list, run_ids, selectors, shapes,
    strings,
};
use crate::catalog::RunId;
use crate::error::{Error, Result};
use crate::interfaces::http::AppState;
use crate::observe::RequestContext;

/// Per-metric statistics of the given runs' own points.
async fn stats(
    state: &AppState,
    scope: &RequestContext,
    runs: &[RunId],
    metric: Option<&str>,
) -> Result<Vec<shapes::MetricStatistics>> {
    let metric = metric.map(str::to_string);
    let what = format!("statistics of runs {runs:?}, metric {metric:?}");
    let runs = run_ids(runs);
    let batches = collect(state, scope, what, |ctx| async move {
        let mut df = ctx.table("metrics").await?.filter(runs)?;
        if let Some(m) = metric {
            df = df.filter(col("metric").eq(lit(m)))?;
        }
        let value = || col("value");
        Ok(df
            .filter(not(isnan(value())))?
            .aggregate(
                vec![col("run_id"), col("metric")],
                vec![
                    count(lit(1)).alias("count"),
                    min(value()).alias("min"),
                    max(value()).alias("max"),
                    avg(value()).alias("mean"),
                    var_sample(value()).alias("variance"),
                    last_value(value(), vec![ascending_by("step")]).alias("last"),
                    max(col("step")).alias("last_step"),
                    min(col("step")).alias("first_step"),
                ],
            )?
            .sort(vec![ascending_by("run_id"), ascending_by("metric")])?)
    })
    .await?;
    let mut out = Vec::new();
    for b in &batches {
        // None where there is no statistic, or it is not finite (±Infinity
        // among the points): JSON has no number for it, so it is null.
        let f = |i: usize, row: usize| {
            let a = b.column(i).as_primitive::<Float64Type>();
            (!a.is_null(row))
                .then(|| a.value(row))
                .filter(|v| v.is_finite())
        };
        let n = |i: usize, row: usize| b.column(i).as_primitive::<Int64Type>().value(row);
        let metric = strings(b.column(1))?;
        for row in 0..b.num_rows() {
            out.push(shapes::MetricStatistics {
                run_id: n(0, row) as RunId,
                log_name: metric.value(row).to_string(),
                count: n(2, row),
                min: f(3, row),
                max: f(4, row),
                mean: f(5, row),
                variance: f(6, row),
                last: f(7, row),
                last_step: n(8, row),
                first_step: n(9, row),
                display_id: None,
                name: None,
            });
        }
    }
    Ok(out)
}

/// Per-metric statistics of a run's own points.
#[utoipa::path(
    get,
    path = "/api/runs/statistics",
    tag = "query",
    params(
        selectors::RunSelector,
        ("logName" = Option<String>, Query, description = "A metric name"),
    ),
    responses((status = 200, description = "The statistics", body = shapes::RunStatistics))
)]
pub(in super::super) async fn statistics(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Query(p): Query<Params>,
) -> Reply<shapes::RunStatistics> {
    let run = p.run(&state, &scope).await?;
    let statistics = stats(&state, &scope, &[run.id], p.log_name.as_deref()).await?;
    Ok(Json(shapes::RunStatistics {
        run_id: run.id,
        display_id: run.display_id.clone(),
        statistics,
    }))
}

/// Orders two statistics, best first.
fn rank_order(x: f64, y: f64, ascending: bool) -> std::cmp::Ordering {
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

/// Statistics of one metric across runs, and the best run by last value.
#[utoipa::path(
    get,
    path = "/api/runs/compare",
    tag = "query",
    params(
        ("runIds" = String, Query, description = "Comma-separated runs, by numeric or display id"),
        ("logName" = String, Query, description = "A metric name"),
        selectors::ProjectCheck,
        ("direction" = Option<String>, Query, description = "`ASC` (default: lower is better) or `DESC`"),
    ),
    responses((status = 200, description = "The comparison", body = shapes::Comparison))
)]
pub(in super::super) async fn compare(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Query(p): Query<Params>,
) -> Reply<shapes::Comparison> {
    let snapshot = catalog(&state, &scope).await?;
    let ids = run_id_list(&snapshot, p.project(), p.run_ids.as_deref().unwrap_or(""))?;
    if ids.is_empty() {
        return Err(Error::invalid("runIds is required").into());
    }
    let metric = p.metric()?;
    let mut runs = stats(&state, &scope, &ids, Some(metric)).await?;
    for r in &mut runs {
        if let Some(run) = snapshot.get(r.run_id) {
            r.display_id = Some(run.display_id.clone());
            r.name = Some(run.name.clone());
        }
    }
    let asc = ascending(p.direction.as_deref())?;
    let best_run = runs
        .iter()
        .filter_map(|r| Some((r.last?, r)))
        .min_by(|(x, _), (y, _)| rank_order(*x, *y, asc))
        .map(|(_, r)| r.clone());
    Ok(Json(shapes::Comparison {
        log_name: metric.to_string(),
        runs,
        best_run,
    }))
}

/// The statistic a leaderboard ranks by.
type Statistic = fn(&shapes::MetricStatistics) -> Option<f64>;

/// Runs of a project ranked by an aggregate of one metric.
#[utoipa::path(
    get,
    path = "/api/runs/leaderboard",
    tag = "query",
    params(
        selectors::ProjectSelector,
        selectors::Page,
        ("logName" = String, Query, description = "A metric name"),
        ("aggregation" = Option<String>, Query, description = "`MIN`, `MAX`, `AVG`, `LAST` (default) or `VARIANCE`"),
        ("direction" = Option<String>, Query, description = "`ASC` (default: lower is better) or `DESC`"),
    ),
    responses((status = 200, description = "The ranking", body = shapes::Leaderboard))
)]
pub(in super::super) async fn leaderboard(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Query(p): Query<Params>,
) -> Reply<shapes::Leaderboard> {
    let project = p.required_project()?;
    let metric = p.metric()?;
    let (key, aggregation): (Statistic, &str) = match p
        .aggregation
        .as_deref()
        .unwrap_or("LAST")
        .to_ascii_uppercase()
        .as_str()
    {
        "MIN" => (|s| s.min, "MIN"),
        "MAX" => (|s| s.max, "MAX"),
        "AVG" => (|s| s.mean, "MEAN"),
        "LAST" => (|s| s.last, "LAST"),
        "VARIANCE" => (|s| s.variance, "VARIANCE"),
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
    let stats = if ids.is_empty() {
        Vec::new()
    } else {
        stats(&state, &scope, &ids, Some(metric)).await?
    };
    // The runs that have the statistic, with it.
    let mut rows: Vec<(f64, RunId)> = stats
        .iter()
        .filter_map(|r| Some((key(r)?, r.run_id)))
        .collect();
    rows.sort_by(|(x, _), (y, _)| rank_order(*x, *y, asc));
    let offset = p.offset.unwrap_or(0);
    let limit = p.limit.unwrap_or(50).min(100);
    let leaderboard = rows
        .into_iter()
        .enumerate()
        .skip(offset)
        .take(limit)
        .map(|(i, (value, run_id))| {
            let run = snapshot.get(run_id);
            shapes::LeaderboardRow {
                rank: i as u64 + 1,
                run_id,
                display_id: run.map(|r| r.display_id.clone()),
                name: run.map(|r| r.name.clone()),
                status: run.map(|r| r.status),
                value,
                log_name: metric.to_string(),
                aggregation: aggregation.to_string(),
            }
        })
        .collect();
    Ok(Json(shapes::Leaderboard {
        leaderboard,
        log_name: metric.to_string(),
    }))
}

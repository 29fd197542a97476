//! The family page's handler, and the chart drawing it shares with the
//! compare page: the metrics the runs logged, then one downsampled chart per
//! metric asked, side by side in the page's width.

use axum::extract::{Path, RawQuery, State};
use axum::http::Uri;
use datafusion::prelude::{SessionContext, col, lit};

use super::chart::{self, ChartRequest, Line};
use super::panel::{self, Drawn, Panel};
use super::params::ChartParams;
use super::{ApiError, AppState, Fragment, catalog_of, pages, render, run_of};
use crate::catalog::{RunId, Segment};
use crate::engine::Engine;
use crate::error::Result;
use crate::observe::RequestContext;

/// Horizontal space between charts side by side, in CSS pixels.
const GAP: u32 = 16;

/// The metric names of `runs`, sorted.
pub(super) async fn metric_names(
    engine: &Engine,
    ctx: &SessionContext,
    runs: &[RunId],
) -> Result<Vec<String>> {
    let ids: Vec<_> = runs.iter().map(|r| lit(*r as i64)).collect();
    let names = ctx
        .table("metrics")
        .await?
        .filter(col("run_id").in_list(ids, false))?
        .select(vec![col("metric")])?
        .distinct()?
        .sort(vec![col("metric").sort(true, false)])?;
    let mut metrics = Vec::new();
    for batch in engine.gate().collect(names).await? {
        let column = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)?;
        let column = arrow::array::AsArray::as_string::<i32>(&column);
        metrics.extend(column.iter().flatten().map(str::to_string));
    }
    Ok(metrics)
}

/// Fills in the metric drawn when the URL names none: the first one that is
/// not a system metric.
pub(super) fn with_default_metric(params: &ChartParams, metrics: &[String]) -> ChartParams {
    let mut out = params.clone();
    if out.metrics.is_empty()
        && let Some(first) = metrics
            .iter()
            .find(|m| crate::catalog::inheritable(m))
            .or(metrics.first())
    {
        out.metrics.push(first.clone());
    }
    out
}

/// One chart per metric of `params`, each its share of the page's width.
pub(super) async fn draw(
    engine: &Engine,
    ctx: &SessionContext,
    views: &[(RunId, Segment)],
    lines: &[Line<'_>],
    params: &ChartParams,
) -> Result<Vec<Drawn>> {
    let count = params.metrics.len().max(1) as u32;
    let page = params.width.unwrap_or(chart::DEFAULT_WIDTH);
    let width = page.saturating_sub(GAP * (count - 1)) / count;
    let mut out = Vec::new();
    for metric in &params.metrics {
        let request = ChartRequest {
            metric: metric.clone(),
            from: params.from,
            to: params.to,
            width,
            axis: params.axis,
            inherited: params.inherited,
        };
        let answer = engine
            .gate()
            .collect(chart::plan(ctx, views, &request)?)
            .await?;
        let (svg, frame) = chart::svg(lines, &chart::parts(&answer)?, &request);
        out.push(Drawn {
            metric: metric.clone(),
            svg,
            frame,
        });
    }
    Ok(out)
}

pub(super) async fn family_page(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<RequestContext>,
    Path((project, run)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    uri: Uri,
) -> std::result::Result<Fragment, ApiError> {
    let params = ChartParams::parse(query.as_deref())?;
    let engine = &state.engine;
    render(&state, &scope, &uri, async {
        let catalog = catalog_of(engine, &scope, &project).await?;
        let root = catalog.root(run_of(&catalog, &project, &run)?.id)?;
        let family = catalog.family(root)?;
        let ctx = engine.scoped_session(&scope.projects).await?;
        let ids: Vec<RunId> = family.iter().map(|m| m.run.id).collect();
        let metrics = metric_names(engine, &ctx, &ids).await?;
        let params = with_default_metric(&params, &metrics);
        let mut views = Vec::new();
        for id in &ids {
            views.extend(catalog.segments(*id)?.into_iter().map(|s| (*id, s)));
        }
        let lines: Vec<Line> = family
            .iter()
            .enumerate()
            .map(|(color, m)| Line {
                run: m.run.id,
                label: &m.run.display_id,
                fork_step: m.run.fork_step,
                color,
            })
            .collect();
        let charts = draw(engine, &ctx, &views, &lines, &params).await?;
        let base = format!(
            "/p/{}/f/{}",
            pages::enc(&project),
            pages::enc(&family[0].run.display_id)
        );
        let panel = panel::panel(&Panel {
            base: &base,
            params: &params,
            metrics: &metrics,
            charts: &charts,
            lines: &lines,
        });
        Ok(pages::family(&project, &family, &panel))
    })
    .await
}

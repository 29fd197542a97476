//! The compare page: runs picked from any families of a project, their
//! stitched metrics on one chart per metric, and the report's per-run table
//! of each metric (computed by the report's own code, `report::build`).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use axum::extract::{Path, RawQuery, State};
use axum::http::Uri;

use super::chart::Line;
use super::family::{draw, metric_names, with_default_metric};
use super::panel::{self, Panel};
use super::params::ChartParams;
use super::{ApiError, AppState, Fragment, catalog_of, render, run_of};
use crate::catalog::{CatalogSnapshot, Run, RunId};
use crate::observe::RequestContext;
use crate::report::render::{esc, html_run_table};
use crate::report::{Goals, Report, ReportRequest, RunRow};

use super::pages::enc;

pub(super) async fn compare_page(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<RequestContext>,
    Path(project): Path<String>,
    RawQuery(query): RawQuery,
    uri: Uri,
) -> std::result::Result<Fragment, ApiError> {
    let params = ChartParams::parse(query.as_deref())?;
    let engine = &state.engine;
    render(&state, &scope, &uri, async {
        let catalog = catalog_of(engine, &scope, &project).await?;
        let mut runs: Vec<&Run> = Vec::new();
        for reference in &params.runs {
            let run = run_of(&catalog, &project, reference)?;
            if !runs.iter().any(|r| r.id == run.id) {
                runs.push(run);
            }
        }
        let base = format!("/p/{}/compare", enc(&project));
        let mut out = picker(&catalog, &project, &runs, &params, &base);
        if runs.is_empty() {
            out.push_str("<p class=\"empty\">Pick runs to compare.</p>");
            return Ok(out);
        }
        let ctx = engine.scoped_session(&scope.projects).await?;
        let mut views = Vec::new();
        for run in &runs {
            views.extend(catalog.segments(run.id)?.into_iter().map(|s| (run.id, s)));
        }
        // Inherited metrics count too: the owners of every view logged them.
        let owners: Vec<RunId> = views
            .iter()
            .map(|(_, s)| s.owner)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let metrics = metric_names(engine, &ctx, &owners).await?;
        let mut params = with_default_metric(&params, &metrics);
        params.runs = runs.iter().map(|r| r.display_id.clone()).collect();
        let lines: Vec<Line> = runs
            .iter()
            .enumerate()
            .map(|(color, r)| Line {
                run: r.id,
                label: &r.display_id,
                fork_step: r.fork_step,
                color,
            })
            .collect();
        let charts = draw(engine, &ctx, &views, &lines, &params).await?;
        out.push_str(&panel::panel(&Panel {
            base: &base,
            params: &params,
            metrics: &metrics,
            charts: &charts,
            lines: &lines,
        }));
        if !params.metrics.is_empty() {
            let request = ReportRequest {
                project: project.clone(),
                families: params.runs.clone(),
                all_families: false,
                metrics: params.metrics.clone(),
                goals: Goals::default(),
            };
            let report = crate::report::build(engine, &request, &scope.projects, &|_| {}).await?;
            out.push_str(&tables(&report, &runs));
        }
        Ok(out)
    })
    .await
}

/// The heading and the run picker: every run of the project by family, the
/// picked ones checked; submitting it loads the page with those runs.
fn picker(
    catalog: &CatalogSnapshot,
    project: &str,
    picked: &[&Run],
    params: &ChartParams,
    base: &str,
) -> String {
    let mut out = format!(
        "<nav class=\"crumbs\"><a href=\"/\">projects</a> / <a href=\"/p/{}\">{}</a> / compare</nav>\
         <h1>Compare <small>{} runs</small></h1><details class=\"picker\"{}><summary>Pick runs</summary>\
         <form method=\"get\" action=\"{base}\">",
        enc(project),
        esc(project),
        picked.len(),
        if picked.is_empty() { " open" } else { "" }
    );
    for metric in &params.metrics {
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"metric\" value=\"{}\">",
            esc(metric)
        );
    }
    let mut roots: Vec<&Run> = catalog
        .runs()
        .filter(|r| r.project == project && r.parent_id.is_none())
        .map(|r| &**r)
        .collect();
    roots.sort_by_key(|r| r.id);
    for root in roots {
        let _ = write!(
            out,
            "<fieldset><legend>{} <small>{}</small></legend>",
            esc(&root.display_id),
            esc(&root.experiment)
        );
        for member in catalog.family(root.id).unwrap_or_default() {
            let run = &member.run;
            let _ = write!(
                out,
                "<label><input type=\"checkbox\" name=\"runs\" value=\"{0}\"{1}>{0}</label>",
                esc(&run.display_id),
                if picked.iter().any(|p| p.id == run.id) {
                    " checked"
                } else {
                    ""
                }
            );
        }
        out.push_str("</fieldset>");
    }
    out.push_str("<button type=\"submit\">compare</button></form></details>");
    out
}

/// The report's per-run table of each metric, with the picked runs' rows in
/// the order picked (rank and winner are the report's, within each family).
fn tables(report: &Report, runs: &[&Run]) -> String {
    let mut out = String::new();
    for metric in &report.metrics {
        let sections: Vec<_> = report
            .families
            .iter()
            .flat_map(|f| f.metrics.iter().filter(|m| m.metric == metric.name))
            .collect();
        let rows: Vec<(usize, &RunRow)> = runs
            .iter()
            .enumerate()
            .filter_map(|(color, run)| {
                sections
                    .iter()
                    .flat_map(|s| s.runs.iter())
                    .find(|r| r.run_id == run.id)
                    .map(|r| (color, r))
            })
            .collect();
        let _ = write!(
            out,
            "<section class=\"report\" data-metric=\"{}\"><h2>{} <small>({}; rank and winner within each family)</small></h2>",
            esc(&metric.name),
            esc(&metric.name),
            metric.goal.as_str()
        );
        html_run_table(&mut out, &rows);
        out.push_str("</section>");
    }
    out
}

//! `GET /api/report`: a report over the caller's project, in any report format.

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::error::Error;
use crate::observe::{Interface, QueryInfo};
use crate::report::{self, Goals, ReportFormat, ReportRequest};
use crate::scope::Scope;

fn flag(value: &str) -> Result<bool, Error> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(Error::invalid(format!(
            "all_families must be true or false, got `{other}`"
        ))),
    }
}

/// Parameters as the CLI's: `project`, `family` (repeatable or comma-separated),
/// `all_families`, `metrics`, `goal`, `format` (default html).
pub async fn report(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<Scope>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut project = None;
    let mut families = Vec::new();
    let mut all_families = false;
    let mut metrics = Vec::new();
    let mut goal: Option<String> = None;
    let mut format = ReportFormat::Html;
    let query = query.unwrap_or_default();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "project" => project = Some(value.into_owned()),
            "family" | "families" => families.push(value.into_owned()),
            "all_families" => all_families = flag(&value)?,
            "metrics" | "metric" => metrics.push(value.into_owned()),
            "goal" => {
                goal = Some(match goal {
                    Some(g) => format!("{g},{value}"),
                    None => value.into_owned(),
                })
            }
            "format" => format = value.parse()?,
            other => {
                return Err(Error::invalid(format!("unknown report parameter `{other}`")).into());
            }
        }
    }
    let request = ReportRequest {
        project: project.ok_or_else(|| Error::invalid("missing `project` parameter"))?,
        families: ReportRequest::split_list(&families),
        all_families,
        metrics: ReportRequest::split_list(&metrics),
        goals: Goals::parse(goal.as_deref())?,
    };
    scope.require_project(request.project.trim())?;
    let engine = &state.engine;
    // A report runs a query per metric: one admitted query, with one deadline.
    let recorded = QueryInfo::new(
        Interface::Report,
        format!("GET /api/report?{query}"),
        &scope,
    );
    let built = engine
        .gate()
        .run(
            recorded,
            report::build(engine, &request, &scope.projects, &|_| {}),
        )
        .await?;
    let bytes = report::render::render(&built, format)?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        bytes,
    )
        .into_response())
}

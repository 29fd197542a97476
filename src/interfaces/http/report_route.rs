//! `GET /api/report`: a report over the caller's project, in any report format.

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::error::Error;
use crate::observe::RequestContext;
use crate::report::{self, Goals, ReportFormat, ReportRequest};

fn flag(value: &str) -> Result<bool, Error> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(Error::invalid(format!(
            "all_families must be true or false, got `{other}`"
        ))),
    }
}

/// The parameters `/api/report` reads, as the CLI's: the handler parses the
/// query itself since `family`, `metrics` and `goal` repeat.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Never built: it describes the query string for the OpenAPI document.
struct ReportParams {
    /// The project (required; it must lie in the key's scope).
    #[param(example = "vision-sweep")]
    project: String,
    /// A family, by any of its runs; repeatable or comma-separated.
    #[param(style = Form, explode)]
    family: Option<Vec<String>>,
    /// The same as `family`.
    #[param(style = Form, explode)]
    families: Option<Vec<String>>,
    /// Every family of the project.
    all_families: Option<bool>,
    /// Metric names or `*` patterns; repeatable or comma-separated.
    #[param(style = Form, explode, example = json!(["train/loss"]))]
    metrics: Option<Vec<String>>,
    /// The same as `metrics`.
    #[param(style = Form, explode)]
    metric: Option<Vec<String>>,
    /// `min` or `max` for every metric, or `metric=min|max,…`; default `min`.
    #[param(example = "train/loss=min,val/acc=max")]
    goal: Option<String>,
    /// The report's format.
    #[param(inline)]
    format: Option<ReportFormatName>,
}

/// The formats of a report, as `format` names them.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Never built: it describes the query string for the OpenAPI document.
enum ReportFormatName {
    Html,
    Md,
    Json,
    Csv,
}

/// Which branch of each family won, by how much and from where it diverged,
/// over the caller's project.
#[utoipa::path(
    get,
    path = "/api/report",
    tag = "sql",
    params(ReportParams),
    responses(
        (status = 200, description = "The report in the chosen format", content(
            (String = "text/html"),
            (String = "text/markdown"),
            (serde_json::Value = "application/json"),
            (String = "text/csv"),
        )),
        (status = 504, description = "The report's queries ran past `--query-timeout-s`", body = super::ErrorBody),
    )
)]
pub async fn report(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<RequestContext>,
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
    let built = engine
        .admitted(
            &scope,
            format!("GET /api/report?{query}"),
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

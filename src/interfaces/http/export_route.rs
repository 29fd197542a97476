//! `GET /api/export`: a run's or a family's series as a file download.

use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{ApiError, AppState, stream_response};
use crate::error::Error;
use crate::interfaces::format::Format;
use crate::observe::RequestContext;
use crate::query::lineage::SeriesExport;

/// Query parameters of `/api/export`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// The run, by display id (`VS-6`) or numeric id.
    #[param(required = true, example = "VS-6")]
    run: Option<String>,
    /// Comma-separated names or patterns; all metrics when absent.
    #[param(example = "train/loss,val/*")]
    metrics: Option<String>,
    /// Stitched view (default) or each run's own points.
    stitched: Option<bool>,
    /// Whole family rather than one run.
    family: Option<bool>,
    /// parquet (default), arrow, csv or json.
    #[param(example = "parquet")]
    format: Option<String>,
}

/// A run's series (stitched along its lineage by default) or its whole
/// family's, as a file download.
#[utoipa::path(
    get,
    path = "/api/export",
    tag = "sql",
    params(ExportParams),
    responses(
        (status = 200, description = "The series, streamed; `Content-Disposition` names the file", content(
            ("application/vnd.apache.parquet"),
            ("application/vnd.apache.arrow.stream"),
            (String = "text/csv"),
            (Vec<std::collections::HashMap<String, serde_json::Value>> = "application/json"),
        )),
        (status = 504, description = "The export ran past `--query-timeout-s` and was cancelled", body = super::ErrorBody),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    axum::Extension(request): axum::Extension<RequestContext>,
    uri: axum::http::Uri,
    params: Result<Query<ExportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) =
        params.map_err(|e| Error::invalid(format!("bad export parameters: {}", e.body_text())))?;
    let format: Format = params.format.as_deref().unwrap_or("parquet").parse()?;
    if format == Format::Table {
        return Err(Error::invalid("export formats are parquet, arrow, csv and json").into());
    }
    let export = SeriesExport {
        run: params
            .run
            .ok_or_else(|| Error::invalid("missing `run` parameter"))?,
        metrics: SeriesExport::parse_metrics(params.metrics.as_deref()),
        stitched: params.stitched.unwrap_or(true),
        family: params.family.unwrap_or(false),
    };
    let mut stem = String::new();
    let (engine, named, projects) = (&state.engine, &mut stem, &request.projects);
    let batches = engine
        .query_stream(&request, format!("GET {uri}"), |ctx| async move {
            let catalog = engine.scoped_catalog(projects).await?;
            let (df, stem) = export.plan(&catalog, &ctx).await?;
            *named = stem;
            Ok(df)
        })
        .await?;
    let filename = format!("{stem}.{}", format.extension());
    stream_response(batches, format, Some(filename)).await
}

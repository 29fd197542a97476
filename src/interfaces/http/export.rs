//! `GET /api/export`: a run's or a family's series as a file download.

use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{ApiError, AppState, stream_response};
use crate::error::Error;
use crate::interfaces::format::Format;
use crate::observe::{Interface, QueryInfo};
use crate::query::export::SeriesExport;
use crate::scope::Scope;

/// Query parameters of `/api/export`.
#[derive(Debug, Deserialize)]
pub struct ExportParams {
    run: Option<String>,
    /// Comma-separated names or patterns; all metrics when absent.
    metrics: Option<String>,
    /// Stitched view (default) or each run's own points.
    stitched: Option<bool>,
    /// Whole family rather than one run.
    family: Option<bool>,
    /// parquet (default), arrow, csv or json.
    format: Option<String>,
}

pub async fn export(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<Scope>,
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
    let engine = &state.engine;
    let recorded = QueryInfo::new(Interface::Export, format!("GET {uri}"), &scope);
    let batches = engine
        .gate()
        .stream(recorded, async {
            let (df, named) = export.plan(engine, &scope.projects).await?;
            stem = named;
            Ok(df)
        })
        .await?;
    let filename = format!("{stem}.{}", format.extension());
    stream_response(batches, format, Some(filename)).await
}

//! `POST /api/sql` and the streamed answers it shares with exports.

use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;

use super::{ApiError, AppState, ErrorBody, MAX_TABLE_BYTES, MAX_TABLE_ROWS};
use crate::error::Error;
use crate::interfaces::format::{Encoder, Format, encode_stream};
use crate::observe::RequestContext;
use crate::query::read_only_sql;

/// The body of `POST /api/sql`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct SqlRequest {
    /// One read-only statement (`SELECT`, `WITH`, `EXPLAIN`, `SHOW`, `DESCRIBE`)
    /// over `runs`, `metrics`, `logs`, `data`, `files` and the lineage table functions.
    #[schema(example = "SELECT * FROM lineage('VS-6')")]
    sql: String,
}

/// A SQL query over the key's projects, its result streamed in the format the
/// `Accept` header names (JSON rows by default).
///
/// DDL, DML, `COPY` and `SET` are refused with 400.
#[utoipa::path(
    post,
    path = "/api/sql",
    tag = "sql",
    request_body = SqlRequest,
    params(
        ("Accept" = Option<String>, Header,
            description = "`application/json` (default), `text/csv`, `text/plain` (an aligned table of at most 10,000 rows), `application/vnd.apache.arrow.stream` or `application/vnd.apache.parquet`")
    ),
    responses(
        (status = 200, description = "The result, streamed batch by batch", content(
            (Vec<HashMap<String, serde_json::Value>> = "application/json"),
            (String = "text/csv"),
            (String = "text/plain"),
            ("application/vnd.apache.arrow.stream"),
            ("application/vnd.apache.parquet"),
        )),
        (status = 504, description = "The query ran past `--query-timeout-s` and was cancelled", body = ErrorBody),
    )
)]
pub(super) async fn sql(
    State(state): State<AppState>,
    axum::Extension(request): axum::Extension<RequestContext>,
    headers: HeaderMap,
    body: Result<axum::Json<SqlRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let axum::Json(req) =
        body.map_err(|e| Error::invalid(format!("bad request body: {}", e.body_text())))?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let sql = &req.sql;
    let batches = state
        .engine
        .query_stream(&request, sql, |ctx| async move {
            let df = read_only_sql(&ctx, sql).await?;
            Ok(match format {
                // One row past the cap tells a result that is too long.
                Format::Table => df.limit(0, Some(MAX_TABLE_ROWS + 1))?,
                _ => df,
            })
        })
        .await?;
    stream_response(batches, format, None).await
}

/// Streams a query's result in `format`, as a download named `filename` when given.
///
/// The first chunk is computed before answering, so errors found early still get
/// a proper status; later ones cut the chunked body short, which clients see.
pub(super) async fn stream_response(
    batches: datafusion::execution::SendableRecordBatchStream,
    format: Format,
    filename: Option<String>,
) -> Result<Response, ApiError> {
    if format == Format::Table {
        return table_response(batches).await;
    }
    let mut chunks = Box::pin(encode_stream(format, batches)?);
    let first = chunks.next().await.transpose()?;
    let body = futures::stream::iter(first.map(Ok))
        .chain(chunks)
        .map(|chunk| {
            chunk.map_err(|e| {
                tracing::error!(error = %e, "query failed while streaming");
                std::io::Error::other(e.to_string())
            })
        });
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, format.content_type());
    if let Some(name) = filename {
        response = response.header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        );
    }
    Ok(response
        .body(Body::from_stream(body))
        .map_err(|e| Error::invalid(e.to_string()))?)
}

/// A `text/plain` answer: an aligned table, so built whole, and only for
/// results within [`MAX_TABLE_ROWS`] and [`MAX_TABLE_BYTES`] (refused before
/// anything is sent, and before more than that is held).
async fn table_response(
    mut batches: datafusion::execution::SendableRecordBatchStream,
) -> Result<Response, ApiError> {
    let mut encoder = Encoder::new(Format::Table, &batches.schema())?;
    let (mut rows, mut bytes) = (0, 0);
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(Error::from)?;
        rows += batch.num_rows();
        bytes += batch.get_array_memory_size();
        if rows > MAX_TABLE_ROWS || bytes > MAX_TABLE_BYTES {
            return Err(Error::invalid(format!(
                "a text/plain answer holds at most {MAX_TABLE_ROWS} rows and {} MiB, and this \
                 result is larger: add a LIMIT, or ask for text/csv, application/json, Arrow or \
                 Parquet in the Accept header, which stream any size",
                MAX_TABLE_BYTES >> 20
            ))
            .into());
        }
        encoder.write(&batch)?;
    }
    let text = encoder.finish()?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, Format::Table.content_type())],
        text,
    )
        .into_response())
}

//! Deleting runs and projects: `DELETE /api/runs/{id}`, `POST
//! /api/runs/delete` (several runs, all or nothing) and `DELETE
//! /api/projects/{name}`. Write routes, and the key must also carry the
//! delete right (`keys create --can-delete`); a run or project outside the
//! key's scope does not exist for it.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::catalog::{Run, RunId};
use crate::error::{Error, Result};
use crate::ingest::limits::MAX_RUN_BODY_BYTES;
use crate::observe::RequestContext;

type Reply = std::result::Result<Json<DeleteReply>, ApiError>;

/// Most runs one bulk request names.
const MAX_RUNS_PER_REQUEST: usize = 10_000;

/// The runs a deletion removed: those named and, with the cascade, their forks.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteReply {
    deleted: Vec<DeletedRun>,
}

/// One deleted run.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct DeletedRun {
    run_id: RunId,
    #[schema(example = "VS-6")]
    display_id: String,
    project: String,
    /// Deleted as a descendant of a named run, or with its project.
    cascade: bool,
}

fn reply(runs: Vec<Arc<Run>>) -> Reply {
    Ok(Json(DeleteReply {
        deleted: runs
            .iter()
            .map(|run| DeletedRun {
                run_id: run.id,
                display_id: run.display_id.clone(),
                project: run.project.clone(),
                cascade: run.deleted.as_ref().is_some_and(|d| d.cascade),
            })
            .collect(),
    }))
}

/// A run reference as a client may write it: a numeric id, or a display id
/// (`PREFIX-n`, letters and digits before the dash).
fn reference(text: &str) -> Result<String> {
    let text = text.trim();
    let numeric = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if numeric {
        text.parse::<RunId>()
            .map_err(|_| Error::invalid(format!("run id `{text}` is out of range")))?;
        return Ok(text.to_string());
    }
    let display = text.rsplit_once('-').is_some_and(|(prefix, n)| {
        !prefix.is_empty()
            && prefix.len() <= 32
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric())
            && !n.is_empty()
            && n.len() <= 20
            && n.bytes().all(|b| b.is_ascii_digit())
    });
    if display {
        Ok(text.to_string())
    } else {
        let shown: String = text.chars().take(64).collect();
        Err(Error::invalid(format!(
            "`{shown}` is not a run id (a number, or a display id such as VS-6)"
        )))
    }
}

/// `cascade` of the query string: absent is false; anything but a boolean is refused.
fn cascade_param(query: Option<&str>) -> Result<bool> {
    let mut cascade = None;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if name != "cascade" {
            continue;
        }
        let parsed = match value.to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(Error::invalid(format!(
                    "cascade must be true or false, got `{value}`"
                )));
            }
        };
        if cascade.is_some_and(|c| c != parsed) {
            return Err(Error::invalid("cascade is given twice, differently"));
        }
        cascade = Some(parsed);
    }
    Ok(cascade.unwrap_or(false))
}

/// Deletes one run. A run with forks is refused (409, naming them) unless
/// `cascade=true`, which deletes its whole subtree.
#[utoipa::path(
    delete,
    path = "/api/runs/{id}",
    tag = "runs",
    params(
        ("id" = String, Path, description = "The run: numeric id or display id", example = "VS-6"),
        ("cascade" = Option<bool>, Query, description = "Also delete every run forked from it, directly or not"),
    ),
    responses(
        (status = 200, description = "The deleted runs", body = DeleteReply),
        (status = 409, description = "The run has forks and no cascade was asked for", body = super::ErrorBody),
    )
)]
pub async fn delete_run(
    State(state): State<AppState>,
    axum::Extension(request): axum::Extension<RequestContext>,
    Path(id): Path<String>,
    uri: axum::http::Uri,
) -> Reply {
    let cascade = cascade_param(uri.query())?;
    let run = reference(&id)?;
    reply(
        state
            .engine
            .delete_runs(vec![run], cascade, &request)
            .await?,
    )
}

/// The body of `/api/runs/delete`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkDelete {
    /// Numeric ids or display ids.
    #[schema(schema_with = run_references, example = json!([42, "VS-7"]))]
    run_ids: Vec<Value>,
    /// Also delete every run forked from them (default false).
    #[serde(default)]
    cascade: bool,
}

fn run_references() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(utoipa::openapi::RefOr::T(super::pluto::run_reference()))
        .build()
        .into()
}

/// Deletes several runs, all or none: one unknown run, or one with forks
/// without `cascade`, refuses the whole request and deletes nothing.
#[utoipa::path(
    post,
    path = "/api/runs/delete",
    tag = "runs",
    request_body = BulkDelete,
    responses(
        (status = 200, description = "The deleted runs", body = DeleteReply),
        (status = 409, description = "A run has forks and no cascade was asked for", body = super::ErrorBody),
    )
)]
pub async fn delete_runs(
    State(state): State<AppState>,
    axum::Extension(request): axum::Extension<RequestContext>,
    body: Bytes,
) -> Reply {
    if body.len() > MAX_RUN_BODY_BYTES {
        return Err(Error::TooLarge(format!(
            "request body is {} bytes, over the limit of {MAX_RUN_BODY_BYTES} bytes",
            body.len()
        ))
        .into());
    }
    let body: BulkDelete = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid(format!("bad request body: {e}")))?;
    if body.run_ids.len() > MAX_RUNS_PER_REQUEST {
        return Err(Error::invalid(format!(
            "at most {MAX_RUNS_PER_REQUEST} runs per request, got {}",
            body.run_ids.len()
        ))
        .into());
    }
    let runs = body
        .run_ids
        .iter()
        .map(|value| match value {
            Value::Number(n) => reference(&n.to_string()),
            Value::String(s) => reference(s),
            other => Err(Error::invalid(format!("`{other}` is not a run id"))),
        })
        .collect::<Result<Vec<_>>>()?;
    reply(
        state
            .engine
            .delete_runs(runs, body.cascade, &request)
            .await?,
    )
}

/// Deletes a project: every run of it.
#[utoipa::path(
    delete,
    path = "/api/projects/{name}",
    tag = "runs",
    params(("name" = String, Path, description = "The project", example = "vision-sweep")),
    responses((status = 200, description = "The deleted runs", body = DeleteReply))
)]
pub async fn delete_project(
    State(state): State<AppState>,
    axum::Extension(request): axum::Extension<RequestContext>,
    Path(name): Path<String>,
) -> Reply {
    reply(state.engine.delete_project(&name, &request).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_cascade() {
        assert_eq!(reference(" 42 ").unwrap(), "42");
        assert_eq!(reference("VS-6").unwrap(), "VS-6");
        for bad in [
            "",
            "-",
            "VS-",
            "-6",
            "../x",
            "VS-6x",
            "99999999999999999999999",
            "a b-1",
        ] {
            assert!(reference(bad).is_err(), "{bad}");
        }
        assert!(!cascade_param(None).unwrap());
        assert!(cascade_param(Some("cascade=true")).unwrap());
        assert!(!cascade_param(Some("cascade=FALSE&x=1")).unwrap());
        for bad in [
            "cascade=yes",
            "cascade=",
            "cascade=1",
            "cascade=true&cascade=false",
        ] {
            assert!(cascade_param(Some(bad)).is_err(), "{bad}");
        }
    }
}

//! Run lifecycle requests of the SDK: key check, create (and fork), resume,
//! heartbeat, log names, status, tags, config.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{catalog, check_project, json_body, shapes};
use crate::catalog::{ForkRequest, NewRun, Run, RunId, RunStatus, RunUpdate};
use crate::error::{Error, Result};
use crate::ingest::limits::MAX_RUN_BODY_BYTES;
use crate::interfaces::http::{ApiError, AppState, lenient_json};
use crate::observe::RequestContext;
use crate::scope::Scope;

type Scoped = axum::Extension<RequestContext>;

type Reply<T> = std::result::Result<Json<T>, ApiError>;

/// A lifecycle request's body, refused before parsing when over
/// [`MAX_RUN_BODY_BYTES`] (parsing costs several times the text in memory).
fn run_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.len() > MAX_RUN_BODY_BYTES {
        return Err(Error::TooLarge(format!(
            "request body is {} bytes, over the limit of {MAX_RUN_BODY_BYTES} bytes for run requests",
            bytes.len()
        )));
    }
    json_body(bytes)
}

/// The answer of the key check.
#[derive(Serialize, ToSchema)]
pub(super) struct SlugReply {
    organization: Organization,
}

/// The one organization of an installation.
#[derive(Serialize, ToSchema)]
pub(super) struct Organization {
    #[schema(example = "forkline")]
    slug: &'static str,
}

/// The SDK's key check at `init`: any valid key passes.
#[utoipa::path(
    post,
    path = "/api/slug",
    tag = "runs",
    responses((status = 200, description = "The key is valid", body = SlugReply))
)]
pub(super) async fn slug() -> Json<SlugReply> {
    Json(SlugReply {
        organization: Organization { slug: "forkline" },
    })
}

/// The body of `/api/runs/create`; other fields the SDK sends
/// (`loggerSettings`, `systemMetadata`, …) are ignored.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreateBody {
    /// `run` when absent.
    #[schema(example = "resnet-lr3e-4")]
    run_name: Option<String>,
    /// Required; it must lie in the key's scope.
    #[schema(required = true, example = "vision-sweep")]
    project_name: Option<String>,
    /// The caller's own id: a second create with the same one (in the project)
    /// answers the existing run, with `resumed: true`.
    external_id: Option<String>,
    #[schema(schema_with = shapes::config)]
    config: Option<Value>,
    tags: Option<Vec<String>>,
    /// The run to fork (with `forkStep`).
    #[schema(schema_with = shapes::run_reference)]
    fork_run_id: Option<Value>,
    /// The parent's last step the fork inherits (with `forkRunId`).
    #[schema(schema_with = shapes::non_negative)]
    fork_step: Option<Value>,
    /// A fork starts from its parent's config (default true).
    inherit_config: Option<bool>,
    /// A fork starts with its parent's tags (default false).
    inherit_tags: Option<bool>,
}

/// A `config` field: a JSON object, or (as the SDK sends it) a string holding one.
fn config_object(value: Option<Value>) -> Result<Map<String, Value>> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(Value::String(text)) => match lenient_json::parse(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(Value::Null) => Ok(Map::new()),
            Ok(_) => Err(Error::invalid("config must be a JSON object")),
            Err(e) => Err(Error::invalid(format!("config is not valid JSON: {e}"))),
        },
        Some(_) => Err(Error::invalid("config must be a JSON object")),
    }
}

fn non_negative(name: &str, value: &Value) -> Result<u64> {
    value
        .as_u64()
        .ok_or_else(|| Error::invalid(format!("{name} must be an integer ≥ 0, got {value}")))
}

/// A run as the lifecycle routes answer it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunReply {
    run_id: RunId,
    #[schema(example = "VS-6")]
    display_id: String,
    /// Sequential number within the project.
    number: u64,
    project_name: String,
    url: String,
    /// Whether the run existed already.
    resumed: bool,
    forked_from_run_id: Option<RunId>,
    fork_step: Option<u64>,
}

fn run_reply(state: &AppState, run: &Run, resumed: bool) -> Json<RunReply> {
    Json(RunReply {
        run_id: run.id,
        display_id: run.display_id.clone(),
        number: run.seq,
        project_name: run.project.clone(),
        url: format!("{}/runs/{}", state.public_url, run.display_id),
        resumed,
        forked_from_run_id: run.parent_id,
        fork_step: run.fork_step,
    })
}

/// A new run, a fork (`forkRunId` + `forkStep`), or the existing run of the
/// project with the same `externalId`.
#[utoipa::path(
    post,
    path = "/api/runs/create",
    tag = "runs",
    request_body = CreateBody,
    responses((status = 200, description = "The run", body = RunReply))
)]
pub(super) async fn create(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    headers: HeaderMap,
    body: Bytes,
) -> Reply<RunReply> {
    let body: CreateBody = run_body(&body)?;
    let project = body
        .project_name
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| Error::invalid("projectName is required"))?;
    scope.require_project(&project)?;
    check_named_project(&headers, &project)?;
    let name = body.run_name.unwrap_or_else(|| "run".into());
    let config = config_object(body.config)?;
    let tags = body.tags.unwrap_or_default();
    let engine = &state.engine;
    let key = scope.key_id.as_deref();
    let external = body.external_id.clone().filter(|e| !e.is_empty());
    if let Some(ext) = &external
        && let Some(run) = attach_external(&state, &scope, &project, ext, &config).await?
    {
        return Ok(run_reply(&state, &run, true));
    }
    let run = match (body.fork_run_id, body.fork_step) {
        (None, None) => {
            let created = engine
                .create_run_by(
                    NewRun {
                        project: project.clone(),
                        name,
                        config: config.clone(),
                        tags,
                        external_id: body.external_id,
                    },
                    key,
                )
                .await;
            match (created, &external) {
                // Another rank created the run with this external id after
                // the look-up above (in the same catalog commit, even): attach.
                (Err(e), Some(ext)) => {
                    match attach_external(&state, &scope, &project, ext, &config).await? {
                        Some(run) => return Ok(run_reply(&state, &run, true)),
                        None => return Err(e.into()),
                    }
                }
                (created, _) => created?,
            }
        }
        (Some(parent), Some(step)) => {
            let parent = match &parent {
                Value::String(s) => s.clone(),
                other => non_negative("forkRunId", other)?.to_string(),
            };
            // A run the key cannot see does not exist for it, even as a parent.
            let parent = catalog(&state, &scope)
                .await?
                .lookup(&parent)?
                .id
                .to_string();
            let mut req = ForkRequest::new(parent, non_negative("forkStep", &step)?);
            req.name = Some(name);
            req.project = Some(project);
            req.config = config;
            req.tags = tags;
            req.inherit_config = body.inherit_config.unwrap_or(true);
            req.inherit_tags = body.inherit_tags.unwrap_or(false);
            req.external_id = body.external_id;
            engine.fork_run_by(req, key).await?.run
        }
        _ => return Err(Error::invalid("a fork needs both forkRunId and forkStep").into()),
    };
    Ok(run_reply(&state, &run, false))
}

/// The run of `project` with external id `ext`, re-opened with `config`
/// merged into its own; `None` when the project has no such run.
async fn attach_external(
    state: &AppState,
    scope: &RequestContext,
    project: &str,
    ext: &str,
    config: &serde_json::Map<String, Value>,
) -> Result<Option<Arc<Run>>> {
    let snapshot = catalog(state, scope).await?;
    let Some(existing) = snapshot.find_external(project, ext) else {
        return Ok(None);
    };
    let key = scope.key_id.as_deref();
    let id = existing.id.to_string();
    if !config.is_empty() {
        state
            .engine
            .update_run_by(&id, RunUpdate::MergeConfig(config.clone()), key)
            .await?;
    }
    // Another rank or a restart attaching by external id re-opens a
    // finished run, as Pluto's server does (and as `resume` does).
    Ok(Some(reopen(state, existing, key).await?))
}

/// A run by numeric id (`runId`) or display id; one of them is required.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunRef {
    #[schema(schema_with = shapes::run_id)]
    run_id: Option<Value>,
    #[schema(example = "VS-6")]
    display_id: Option<String>,
}

impl RunRef {
    fn reference(&self) -> Result<String> {
        match (&self.run_id, &self.display_id) {
            (Some(Value::Number(n)), _) => Ok(n.to_string()),
            (Some(Value::String(s)), _) => Ok(s.clone()),
            (_, Some(d)) => Ok(d.clone()),
            _ => Err(Error::invalid("runId or displayId is required")),
        }
    }
}

/// Attaches a client to an existing run, by numeric or display id, and
/// re-opens it: a finished run is RUNNING again (source `resume`), as Pluto's
/// server does. The SDK's `close()` sends no status, so a resumed client that
/// closes leaves the run RUNNING; `finish()` ends it.
#[utoipa::path(
    post,
    path = "/api/runs/resume",
    tag = "runs",
    request_body = RunRef,
    responses((status = 200, description = "The run, RUNNING, with `resumed: true`", body = RunReply))
)]
pub(super) async fn resume(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    headers: HeaderMap,
    body: Bytes,
) -> Reply<RunReply> {
    let reference = run_body::<RunRef>(&body)?.reference()?;
    let run = catalog(&state, &scope).await?.lookup(&reference)?.clone();
    check_project(&headers, &run)?;
    let run = reopen(&state, &run, scope.key_id.as_deref()).await?;
    Ok(run_reply(&state, &run, true))
}

/// `run` RUNNING again (source `resume`). The ranks of a running run all
/// attach at once: for them, nothing is committed and no lock is taken.
async fn reopen(state: &AppState, run: &Arc<Run>, key: Option<&str>) -> Result<Arc<Run>> {
    if run.status == RunStatus::Running {
        return Ok(run.clone());
    }
    state
        .engine
        .update_run_by(&run.id.to_string(), RunUpdate::Resume, key)
        .await
}

/// A run's status.
#[derive(Serialize, ToSchema)]
pub(super) struct StatusReply {
    status: RunStatus,
}

/// The heartbeat, which is activity of the run (see [`crate::liveness`]);
/// answers the run's status.
#[utoipa::path(
    post,
    path = "/api/runs/trigger",
    tag = "runs",
    request_body = RunRef,
    responses((status = 200, description = "The run's status", body = StatusReply))
)]
pub(super) async fn trigger(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    body: Bytes,
) -> Reply<StatusReply> {
    let reference = run_body::<RunRef>(&body)?.reference()?;
    let run = catalog(&state, &scope).await?.lookup(&reference)?.clone();
    let run = super::active(&state, &scope, &run).await?;
    Ok(Json(StatusReply { status: run.status }))
}

/// An empty JSON object.
#[derive(Serialize, ToSchema)]
pub(super) struct Empty {}

/// Registers log names; names come from the data itself, so this only checks the run.
#[utoipa::path(
    post,
    path = "/api/runs/logName/add",
    tag = "runs",
    request_body = RunRef,
    responses((status = 200, description = "The run exists", body = Empty))
)]
pub(super) async fn log_names(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    body: Bytes,
) -> Reply<Empty> {
    let reference = run_body::<RunRef>(&body)?.reference()?;
    catalog(&state, &scope).await?.lookup(&reference)?;
    Ok(Json(Empty {}))
}

/// The body of `/api/runs/status/update`; other fields the SDK sends are ignored.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct StatusBody {
    #[schema(schema_with = shapes::run_id)]
    run_id: Value,
    /// Upper or lower case.
    #[schema(value_type = RunStatus)]
    status: String,
}

/// A run's id and status after a change.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunStatusReply {
    run_id: RunId,
    status: RunStatus,
    /// Whether the status asked for was applied: a terminal status never
    /// replaces a higher one (FAILED > CANCELLED > TERMINATED > COMPLETED).
    applied: bool,
}

/// Sets a run's status. A terminal status never replaces a higher one
/// (FAILED > CANCELLED > TERMINATED > COMPLETED): such a request is answered
/// 200 with the run's status unchanged and `applied: false` (Pluto's server
/// answers 200 too). The call is activity first, so a run the stale-run
/// monitor terminated that now reports COMPLETED ends COMPLETED.
#[utoipa::path(
    post,
    path = "/api/runs/status/update",
    tag = "runs",
    request_body = StatusBody,
    responses((status = 200, description = "The run's status now", body = RunStatusReply))
)]
pub(super) async fn status(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    body: Bytes,
) -> Reply<RunStatusReply> {
    let body: StatusBody = run_body(&body)?;
    let status: RunStatus = body.status.parse()?;
    let run = scoped_run(&state, &scope, &body.run_id).await?;
    let run = super::active(&state, &scope, &run).await?;
    let run = update(&state, &scope, run.id, RunUpdate::Status(status)).await?;
    Ok(Json(RunStatusReply {
        run_id: run.id,
        status: run.status,
        applied: run.status == status,
    }))
}

/// The body of `/api/runs/tags/update`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct TagsBody {
    #[schema(schema_with = shapes::run_id)]
    run_id: Value,
    /// The whole new tag set.
    tags: Vec<String>,
}

/// A run's id and tags after a change.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct TagsReply {
    run_id: RunId,
    tags: Vec<String>,
}

/// Replaces a run's whole tag set.
#[utoipa::path(
    post,
    path = "/api/runs/tags/update",
    tag = "runs",
    request_body = TagsBody,
    responses((status = 200, description = "The run's tags now", body = TagsReply))
)]
pub(super) async fn tags(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    body: Bytes,
) -> Reply<TagsReply> {
    let body: TagsBody = run_body(&body)?;
    let id = scoped_run(&state, &scope, &body.run_id).await?.id;
    let run = update(&state, &scope, id, RunUpdate::SetTags(body.tags)).await?;
    Ok(Json(TagsReply {
        run_id: run.id,
        tags: run.tags.iter().cloned().collect(),
    }))
}

/// The body of `/api/runs/config/update`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConfigBody {
    #[schema(schema_with = shapes::run_id)]
    run_id: Value,
    /// The delta, deep-merged into the stored config.
    #[schema(schema_with = shapes::config)]
    config: Option<Value>,
}

/// A run's id and config after a change.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConfigReply {
    run_id: RunId,
    #[schema(value_type = Object)]
    config: Map<String, Value>,
}

/// Deep-merges a delta into a run's stored config.
#[utoipa::path(
    post,
    path = "/api/runs/config/update",
    tag = "runs",
    request_body = ConfigBody,
    responses((status = 200, description = "The run's config now", body = ConfigReply))
)]
pub(super) async fn config(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    body: Bytes,
) -> Reply<ConfigReply> {
    let body: ConfigBody = run_body(&body)?;
    let run = scoped_run(&state, &scope, &body.run_id).await?;
    let delta = config_object(body.config)?;
    // The scoped catalog was just read: an empty delta needs no second lookup.
    let run = if delta.is_empty() {
        run
    } else {
        update(&state, &scope, run.id, RunUpdate::MergeConfig(delta)).await?
    };
    Ok(Json(ConfigReply {
        run_id: run.id,
        config: run.config.clone(),
    }))
}

/// Applies `change` to run `id` as the request's key.
async fn update(state: &AppState, scope: &Scope, id: RunId, change: RunUpdate) -> Result<Arc<Run>> {
    let key = scope.key_id.as_deref();
    state
        .engine
        .update_run_by(&id.to_string(), change, key)
        .await
}

/// A run the request's key can see (else "unknown run").
async fn scoped_run(state: &AppState, scope: &Scope, value: &Value) -> Result<Arc<Run>> {
    let id = run_id(value)?;
    Ok(catalog(state, scope).await?.require(id)?.clone())
}

/// `X-Project-Name`, when sent, must be the project the body names.
fn check_named_project(headers: &HeaderMap, project: &str) -> Result<()> {
    match headers.get("x-project-name").map(|v| v.to_str()) {
        Some(Ok(named)) if !named.trim().is_empty() && named.trim() != project => {
            Err(Error::invalid(format!(
                "X-Project-Name `{}` and projectName `{project}` disagree",
                named.trim()
            )))
        }
        _ => Ok(()),
    }
}

fn run_id(value: &Value) -> Result<RunId> {
    match value {
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| Error::invalid(format!("runId `{s}` is not a run id"))),
        other => non_negative("runId", other),
    }
}

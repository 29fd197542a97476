//! The OpenAPI 3.1 description of the HTTP API, served at `/api/openapi.json`.
//!
//! Each handler describes itself (`#[utoipa::path]` over its own types). What
//! follows from a route's [`RouteAccess`] — the key, `X-Project-Name`, the
//! error answers — is added here from the route table, so the document says
//! what the router enforces.

use std::sync::LazyLock;

use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{HttpMethod, Operation, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Components, Ref, RefOr, Required};

use super::{ErrorBody, RouteAccess, console, export_route, pluto, report_route, route_specs};

/// The name of the API-key security scheme.
const BEARER: &str = "apiKey";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "forkline",
        description = "ML experiment tracking with run forking: the pluto-ml SDK's wire \
            protocol, SQL over HTTP, series exports and reports. Keyed routes take \
            `Authorization: Bearer <key>`; without any key in the store the server \
            listens on loopback only and needs none. Every error is a JSON `ErrorBody`."
    ),
    paths(
        super::health,
        super::metrics,
        serve,
        super::sql_route::sql,
        export_route::export,
        report_route::report,
        super::delete_route::delete_run,
        super::delete_route::delete_runs,
        super::delete_route::delete_project
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "server", description = "Health, metrics and this document: no key"),
        (name = "sql", description = "SQL over the runs, metrics, logs, data and files tables; exports and reports"),
        (name = "runs", description = "The SDK's run lifecycle"),
        (name = "ingest", description = "The SDK's ingest of metrics, console logs and structured data, as NDJSON"),
        (name = "files", description = "File uploads and downloads through signed URLs"),
        (name = "query", description = "The read API behind `pluto.query`"),
        (name = "console", description = "The web console: public page shells and assets, keyed HTML fragments"),
    )
)]
struct ApiDoc;

/// The whole document: the handlers' descriptions, then what each route's
/// access implies.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(pluto::ApiDoc::openapi());
    for (path, op) in console::openapi_operations() {
        doc.paths
            .add_path_operation(path, vec![HttpMethod::Get], op);
    }
    let components = doc.components.get_or_insert_with(Components::new);
    components.security_schemes.insert(
        BEARER.into(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API key (`forkline keys create`); its scope (projects, read-only) \
                     decides what the request sees and may change",
                ))
                .build(),
        ),
    );
    for (name, response) in error_responses() {
        components.responses.insert(name.into(), RefOr::T(response));
    }
    doc.security = Some(vec![bearer()]);
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        ops.into_iter().flatten().for_each(parameters_never_null);
    }
    for spec in route_specs() {
        let item = doc.paths.paths.get_mut(spec.path);
        if let Some(op) = item.and_then(|item| operation_mut(item, &spec.method)) {
            describe_access(op, spec.access, spec.method != Method::GET);
        }
    }
    doc
}

fn bearer() -> SecurityRequirement {
    SecurityRequirement::new(BEARER, Vec::<String>::new())
}

/// A parameter is sent or not, never `null`: utoipa types an optional one
/// `[T, "null"]`, which validators that pick a parameter's style by its one
/// type (openapi-core) cannot read.
fn parameters_never_null(op: &mut Operation) {
    for parameter in op.parameters.iter_mut().flatten() {
        let schema_type = match &mut parameter.schema {
            Some(RefOr::T(Schema::Object(o))) => &mut o.schema_type,
            Some(RefOr::T(Schema::Array(a))) => &mut a.schema_type,
            _ => continue,
        };
        let single = match schema_type {
            SchemaType::Array(types) => {
                types.retain(|t| *t != Type::Null);
                (types.len() == 1).then(|| types[0].clone())
            }
            _ => None,
        };
        if let Some(t) = single {
            *schema_type = SchemaType::Type(t);
        }
    }
}

fn operation_mut<'a>(item: &'a mut PathItem, method: &Method) -> Option<&'a mut Operation> {
    match method.as_str() {
        "GET" => item.get.as_mut(),
        "POST" => item.post.as_mut(),
        "PUT" => item.put.as_mut(),
        "DELETE" => item.delete.as_mut(),
        "PATCH" => item.patch.as_mut(),
        "HEAD" => item.head.as_mut(),
        "OPTIONS" => item.options.as_mut(),
        _ => None,
    }
}

/// The error answers every route of an access may give, by status, as
/// `#/components/responses/…` names.
fn errors_of(access: RouteAccess, has_body: bool) -> Vec<(&'static str, &'static str)> {
    let mut errors = match access {
        RouteAccess::Public => return Vec::new(),
        RouteAccess::Monitoring => vec![("401", "Unauthorized")],
        RouteAccess::Read => vec![
            ("400", "BadRequest"),
            ("401", "Unauthorized"),
            ("403", "Forbidden"),
            ("404", "NotFound"),
        ],
        RouteAccess::Write => vec![
            ("400", "BadRequest"),
            ("401", "Unauthorized"),
            ("403", "ForbiddenWrite"),
            ("404", "NotFound"),
        ],
        RouteAccess::Signed => vec![
            ("400", "BadSignature"),
            ("403", "UsedUrl"),
            ("404", "NotFound"),
        ],
    };
    if has_body {
        errors.push(("413", "TooLarge"));
    }
    errors.push(("503", "Unavailable"));
    errors
}

fn describe_access(op: &mut Operation, access: RouteAccess, has_body: bool) {
    for (status, name) in errors_of(access, has_body) {
        op.responses
            .responses
            .entry(status.into())
            .or_insert_with(|| RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))));
    }
    match access {
        // No key is read: the document says so rather than inherit the global requirement.
        RouteAccess::Public | RouteAccess::Signed => op.security = Some(Vec::new()),
        // No key on a loopback listener, any key otherwise.
        RouteAccess::Monitoring => {
            op.security = Some(vec![SecurityRequirement::default(), bearer()]);
        }
        RouteAccess::Read | RouteAccess::Write => {
            let project = ParameterBuilder::new()
                .name("X-Project-Name")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "A project the request is for (the SDK sends it): it must lie in the \
                     key's scope (else 403) and agree with `projectName` in the query (else 400)",
                ))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)));
            op.parameters
                .get_or_insert_with(Vec::new)
                .push(project.build());
        }
    }
}

fn error_responses() -> Vec<(&'static str, utoipa::openapi::Response)> {
    let error = |description: &str| {
        ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
    };
    vec![
        (
            "BadRequest",
            error(
                "Bad input: a malformed body, line or parameter, or two different projects \
                 named in `X-Project-Name` and `projectName`",
            ),
        ),
        (
            "Unauthorized",
            error(
                "No API key, or one the server does not know: \
                 `{\"error\": \"Unauthorized\", \"message\": …}`",
            ),
        ),
        (
            "Forbidden",
            error("A project named in the header, query or body lies outside the key's scope"),
        ),
        (
            "ForbiddenWrite",
            error(
                "A project named lies outside the key's scope, or the key or the server \
                 is read-only",
            ),
        ),
        (
            "NotFound",
            error("A run or file the key cannot see (runs of other projects do not exist for it)"),
        ),
        (
            "TooLarge",
            error("The body is over `--max-body` (or a run request over 4 MiB, an upload over its signed size)"),
        ),
        (
            "Unavailable",
            error(
                "The store cannot be reached, or the query queue is full (then with \
                 `Retry-After`): retry later",
            )
            .header(
                "Retry-After",
                Header::new(ObjectBuilder::new().schema_type(Type::Integer)),
            ),
        ),
        (
            "BadSignature",
            error("The URL's signature is invalid or expired, or the upload is not what it was signed for"),
        ),
        (
            "UsedUrl",
            error("The upload URL has been used already; request a new one"),
        ),
    ]
    .into_iter()
    .map(|(name, response)| (name, response.build()))
    .collect()
}

/// The document as served: built once, on first request.
static DOCUMENT: LazyLock<Result<String, String>> =
    LazyLock::new(|| document().to_json().map_err(|e| e.to_string()));

/// This document: the OpenAPI 3.1 description of every route, without a key.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi",
    tag = "server",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub(super) async fn serve() -> Response {
    match &*DOCUMENT {
        Ok(json) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json.clone(),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(ErrorBody::new(format!(
                "the OpenAPI document failed to encode: {e}"
            ))),
        )
            .into_response(),
    }
}

//! File uploads in the SDK's presigned-URL flow, served by forkline itself:
//! `POST /files` hands out signed upload URLs, `PUT` stores the bytes under the
//! store URL and records the file, and downloads use signed URLs too (the SDK
//! sends no API key with either).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use ring::hmac;
use serde::{Deserialize, Serialize};

use super::{header_run, json_body, shapes};
use crate::catalog::RunId;
use crate::engine::uploads::{NONCE_LEN, Upload, check_file_name};
use crate::error::{Error, Result};
use crate::ingest::limits;
use crate::interfaces::http::{ApiError, AppState};
use crate::observe::RequestContext;
use crate::store::Store;

/// How long a signed upload or download URL stays valid.
const URL_LIFETIME_S: u64 = 3600;
/// Largest file accepted.
const MAX_FILE: u64 = 1 << 30;

/// Where under the store root the shared URL-signing secret lives.
pub const SECRET_PATH: &str = "_forkline/file-url-secret";
/// Length of the secret in bytes (stored hex-encoded).
const SECRET_LEN: usize = 32;

/// Signs URLs with a key shared by every server of the store (see [`Signer::shared`]).
pub struct Signer(hmac::Key);

impl Signer {
    /// A signer with a fresh random key, known only to this process.
    pub fn random() -> Self {
        Self::from_secret(&random_bytes::<SECRET_LEN>())
    }

    fn from_secret(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The signer of every server on `store`, so that a URL one process signs
    /// is honoured by all of them (behind one load balancer, say).
    ///
    /// The key is the object [`SECRET_PATH`] under the store root. The first
    /// writer to start creates it with put-if-absent; one that loses that race
    /// reads the winner's. With `may_write` false (a read replica) a missing
    /// secret is not created: the signer falls back to a key of this process
    /// alone and says so in a warning.
    pub async fn shared(store: &Store, may_write: bool) -> Result<Self> {
        let path = store.location().path(SECRET_PATH)?;
        let objects = &store.location().object_store;
        if let Some(secret) = read_secret(store, &path).await? {
            return Ok(Self::from_secret(&secret));
        }
        if !may_write || store.is_read_only() {
            tracing::warn!(
                store = %store.location().root,
                "no file-URL signing secret ({SECRET_PATH}) in the store yet and a read-only \
                 server does not create one: file URLs this server signs work only on this \
                 process; start a writer on the store once to create the shared secret"
            );
            return Ok(Self::random());
        }
        let secret = random_bytes::<SECRET_LEN>();
        let put = objects
            .put_opts(
                &path,
                PutPayload::from(hex::encode(secret)),
                PutOptions::from(PutMode::Create),
            )
            .await;
        match put {
            Ok(_) => Ok(Self::from_secret(&secret)),
            // Another process created it first: use theirs.
            Err(object_store::Error::AlreadyExists { .. }) => read_secret(store, &path)
                .await?
                .map(|s| Self::from_secret(&s))
                .ok_or_else(|| {
                    Error::Unavailable(format!(
                        "{path} was created by another process but cannot be read"
                    ))
                }),
            Err(e) => Err(e.into()),
        }
    }

    fn sign(&self, method: &str, path: &str, query: &str) -> String {
        hex::encode(hmac::sign(
            &self.0,
            format!("{method}\n{path}\n{query}").as_bytes(),
        ))
    }

    /// `path?query&expires=…&sig=…`, valid for [`URL_LIFETIME_S`].
    fn url(&self, method: &str, path: &str, params: &[(&str, String)]) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            query.append_pair(k, v);
        }
        query.append_pair("expires", &(now_s() + URL_LIFETIME_S).to_string());
        let query = query.finish();
        let sig = self.sign(method, path, &query);
        format!("{path}?{query}&sig={sig}")
    }

    /// Checks the signature and expiry of a signed request.
    fn verify(&self, method: &str, path: &str, raw_query: Option<&str>) -> Result<()> {
        let denied = || Error::invalid("invalid or expired file URL signature");
        let raw = raw_query.ok_or_else(denied)?;
        let (query, sig) = raw.rsplit_once("&sig=").ok_or_else(denied)?;
        let sig = hex::decode(sig).map_err(|_| denied())?;
        hmac::verify(
            &self.0,
            format!("{method}\n{path}\n{query}").as_bytes(),
            &sig,
        )
        .map_err(|_| denied())?;
        let expires = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "expires")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .ok_or_else(denied)?;
        if expires < now_s() {
            return Err(denied());
        }
        Ok(())
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut key = [0u8; N];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    key
}

/// The shared secret, or `None` where no process has created it yet.
async fn read_secret(store: &Store, path: &StorePath) -> Result<Option<Vec<u8>>> {
    let bytes = match store.location().object_store.get(path).await {
        Ok(found) => found.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| hex::decode(text.trim()).ok())
    {
        Some(secret) if secret.len() >= SECRET_LEN => Ok(Some(secret)),
        _ => Err(Error::Damaged(format!(
            "the file-URL signing secret {path} is not {SECRET_LEN} hex-encoded bytes; \
             delete it and restart the servers to have a new one made"
        ))),
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A file the client is about to upload.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct FileSpec {
    /// One path segment (no `/`), at most 255 bytes.
    #[schema(example = "sample.png")]
    file_name: String,
    /// Bytes; when given, the upload must have exactly this many (at most 1 GiB).
    file_size: Option<i64>,
    #[schema(example = "png")]
    file_type: Option<String>,
    /// Epoch milliseconds.
    time: Option<f64>,
    /// The name the file is logged under.
    log_name: String,
    step: Option<i64>,
    caption: Option<String>,
    /// Hex SHA-256 of the content; when given, the upload must match it.
    sha256: Option<String>,
}

/// The body of `POST /files`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct PresignBody {
    files: Vec<FileSpec>,
}

/// One signed upload URL per requested file, grouped by `logName`.
///
/// Each URL is single-use, valid for an hour, and bound to the declared size
/// (and content hash, when given).
#[utoipa::path(
    post,
    path = "/files",
    tag = "files",
    params(super::RunHeader),
    request_body = PresignBody,
    responses((status = 200, description = "Per `logName`, one `{fileName: URL}` per file", body = shapes::UploadUrls))
)]
pub(super) async fn presign(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<RequestContext>,
    headers: HeaderMap,
    body: Bytes,
) -> std::result::Result<Json<shapes::UploadUrls>, ApiError> {
    let run = header_run(&headers, &*super::catalog(&state, &scope).await?)?;
    let body: PresignBody = json_body(&body)?;
    let mut grouped: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for f in body.files {
        check_file_name(&f.file_name)?;
        let size = match f.file_size {
            Some(s) if s >= 0 && s as u64 <= MAX_FILE => s as u64,
            None => MAX_FILE,
            Some(_) => {
                return Err(Error::invalid(format!(
                    "file `{}` has a bad size (at most {MAX_FILE} bytes)",
                    f.file_name
                ))
                .into());
            }
        };
        if let Some(t) = f.time.filter(|t| limits::ms_in_window(*t).is_none()) {
            let window = limits::TIME_WINDOW;
            return Err(Error::invalid(format!(
                "file `{}`: time {t} (epoch milliseconds) is outside {window}",
                f.file_name
            ))
            .into());
        }
        let mut params = vec![("logName", f.log_name.clone())];
        if let Some(step) = f.step {
            params.push(("step", step.max(0).to_string()));
        }
        params.push(("fileType", f.file_type.clone().unwrap_or_default()));
        params.push(("timeMs", f.time.map_or(0, |t| t as i64).to_string()));
        if let Some(caption) = &f.caption {
            params.push(("caption", caption.clone()));
        }
        params.push(("size", size.to_string()));
        // An exact size is enforced only where the client declared one.
        params.push(("exact", f.file_size.is_some().to_string()));
        if let Some(sha) = &f.sha256 {
            let sha = sha.trim().to_ascii_lowercase();
            if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::invalid(format!(
                    "file `{}`: sha256 must be 64 hex digits",
                    f.file_name
                ))
                .into());
            }
            params.push(("sha256", sha));
        }
        params.push(("nonce", hex::encode(random_bytes::<NONCE_LEN>())));
        let path = format!("/files/upload/{run}/{}", encode_segment(&f.file_name));
        let url = format!(
            "{}{}",
            state.public_url,
            state.signer.url("PUT", &path, &params)
        );
        grouped
            .entry(f.log_name)
            .or_default()
            .push(BTreeMap::from([(f.file_name, url)]));
    }
    Ok(Json(shapes::UploadUrls(grouped)))
}

/// A file name as one URL path segment (`?`, `#`, `/`, `%` and spaces escaped).
fn encode_segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The query of a signed upload URL, as `POST /files` wrote it (with
/// `expires` and `sig`, which the signature check reads from the raw query).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub(super) struct UploadParams {
    log_name: String,
    step: Option<u64>,
    file_type: Option<String>,
    time_ms: Option<i64>,
    caption: Option<String>,
    size: u64,
    exact: bool,
    sha256: Option<String>,
    nonce: String,
}

/// The signature of a signed URL: it covers the path and the whole query before it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Never built: `Signer::verify` reads these from the raw query.
struct Signature {
    /// Epoch seconds after which the URL is refused.
    expires: u64,
    /// Hex HMAC-SHA256 of the method, path and query.
    sig: String,
}

/// The file a signed URL names.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Never built: the handlers take `Path<(RunId, String)>`.
struct FilePath {
    /// The run's numeric id.
    run: u64,
    /// The file name.
    file: String,
}

/// An upload's answer.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Uploaded {
    file_name: String,
    file_size: u64,
}

/// Stores a file's bytes, at a signed URL from `POST /files` (no API key).
///
/// Streams the bytes to the store (never more than the URL allows), checks
/// size and hash, claims the URL's nonce, then records the file. A refused
/// upload leaves the URL usable.
#[utoipa::path(
    put,
    path = "/files/upload/{run}/{file}",
    tag = "files",
    params(
        FilePath,
        UploadParams,
        Signature,
    ),
    request_body(content_type = "*/*", description = "The file's bytes, stored as sent whatever their type"),
    responses((status = 200, description = "The file is stored", body = Uploaded))
)]
pub(super) async fn upload(
    State(state): State<AppState>,
    Path((run, file_name)): Path<(RunId, String)>,
    RawQuery(raw): RawQuery,
    Query(params): Query<UploadParams>,
    body: Body,
) -> std::result::Result<Json<Uploaded>, ApiError> {
    check_file_name(&file_name)?;
    state.engine.store().ensure_writable()?;
    state.signer.verify(
        "PUT",
        &format!("/files/upload/{run}/{}", encode_segment(&file_name)),
        raw.as_deref(),
    )?;
    let upload = Upload {
        run,
        file_name: file_name.clone(),
        size: params.size,
        exact: params.exact,
        sha256: params.sha256,
        nonce: params.nonce,
        log_name: params.log_name,
        file_type: params.file_type.unwrap_or_default(),
        step: params.step,
        time_us: params.time_ms.filter(|t| *t > 0).map(|t| t * 1000),
        caption: params.caption,
    };
    let file_size = state
        .engine
        .store_upload(upload, body.into_data_stream())
        .await?;
    Ok(Json(Uploaded {
        file_name,
        file_size,
    }))
}

/// The bytes of an uploaded file, at a signed URL (no API key).
#[utoipa::path(
    get,
    path = "/files/download/{run}/{file}",
    tag = "files",
    params(
        FilePath,
        Signature,
    ),
    responses((status = 200, description = "The file", content(("application/octet-stream"))))
)]
pub(super) async fn download(
    State(state): State<AppState>,
    Path((run, file_name)): Path<(RunId, String)>,
    RawQuery(raw): RawQuery,
) -> std::result::Result<Response, ApiError> {
    check_file_name(&file_name)?;
    state.signer.verify(
        "GET",
        &format!("/files/download/{run}/{}", encode_segment(&file_name)),
        raw.as_deref(),
    )?;
    let bytes = state.engine.read_upload(run, &file_name).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from(bytes),
    )
        .into_response())
}

/// A signed download URL for `file_name` of `run`.
pub(super) fn download_url(state: &AppState, run: RunId, file_name: &str) -> String {
    let path = format!("/files/download/{run}/{}", encode_segment(file_name));
    format!(
        "{}{}",
        state.public_url,
        state.signer.url("GET", &path, &[])
    )
}

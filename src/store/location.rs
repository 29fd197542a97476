//! Turning a store URL (`./data/warehouse`, `memory://`, `s3://bucket/prefix`,
//! `gs://bucket/prefix`, `az://container/prefix`) into an object store: the one
//! place that builds object stores.

use std::sync::{Arc, Once};
use std::time::Duration;

use deltalake::logstore::{
    LogStore, LogStoreFactory, StorageConfig, default_logstore, logstore_factories,
};
use object_store::ClientConfigKey;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use url::Url;

use super::durable_local::DurableLocalFileSystem;
use crate::error::{Error, Result};

/// Settings a store URL does not carry. Each one left `None` falls back to the
/// object store's own variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
/// `AWS_ALLOW_HTTP`, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// S3 endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`.
    pub s3_endpoint: Option<String>,
    /// S3 region (signing region of an S3-compatible server).
    pub s3_region: Option<String>,
    /// Permit plain-HTTP S3 endpoints.
    pub s3_allow_http: Option<bool>,
    /// Path-style requests (`endpoint/bucket/key`, what most S3-compatible
    /// servers want) rather than virtual-hosted ones (`bucket.endpoint/key`).
    pub s3_path_style: Option<bool>,
    /// How long one request to a network store is retried (connection
    /// refused, 5xx, throttling) before the operation fails; `None` means
    /// [`DEFAULT_RETRY_TIMEOUT`].
    pub retry_timeout: Option<Duration>,
}

/// A store outage longer than this fails requests (HTTP 503) instead of
/// holding them: the SDK gives up on a request after 32 s and sends it again,
/// so retrying much longer on the server would only pile up duplicate work.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(15);

impl StoreOptions {
    /// Retries of network-store requests: exponential backoff capped at 2 s,
    /// bounded by the retry timeout rather than by a count.
    fn retry_config(&self) -> RetryConfig {
        let timeout = self.retry_timeout.unwrap_or(DEFAULT_RETRY_TIMEOUT);
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2).min(timeout),
                base: 2.0,
            },
            max_retries: usize::MAX,
            retry_timeout: timeout,
        }
    }
}

/// Where every durable byte of a forkline store lives.
#[derive(Debug, Clone)]
pub struct StoreLocation {
    /// URL of the store root, always ending in `/`.
    pub root: Url,
    /// Object store whose `/` is the root of the URL's bucket or file system.
    pub object_store: Arc<dyn ObjectStore>,
}

impl StoreLocation {
    /// As [`StoreLocation::parse_with`] with default options: S3, GCS and Azure
    /// settings come from their standard variables alone.
    pub fn parse(spec: &str) -> Result<Self> {
        Self::parse_with(spec, &StoreOptions::default())
    }

    /// Parses a store URL or local path; local directories are created if missing.
    ///
    /// S3 reads the standard `AWS_*` variables (`AWS_ENDPOINT_URL` overrides the
    /// endpoint, `AWS_ALLOW_HTTP=true` permits a plain-HTTP test server), then
    /// applies `options` over them. `gs://` reads `GOOGLE_*` and `az://` the
    /// `AZURE_*` variables.
    pub fn parse_with(spec: &str, options: &StoreOptions) -> Result<Self> {
        Self::parse_inner(spec, options, true)
    }

    /// As [`StoreLocation::parse_with`], but a local directory that does not
    /// exist is refused ([`Error::NotFound`]) rather than created.
    pub fn parse_existing(spec: &str, options: &StoreOptions) -> Result<Self> {
        Self::parse_inner(spec, options, false)
    }

    fn parse_inner(spec: &str, options: &StoreOptions, create_local: bool) -> Result<Self> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(Error::invalid("store URL is empty"));
        }
        let url = match Url::parse(spec) {
            Ok(url) if url.scheme().len() > 1 => url,
            _ => return Self::local(spec, create_local),
        };
        let root = with_trailing_slash(url.clone());
        let object_store: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|_| Error::invalid(format!("store URL {url} is not a local path")))?;
                return Self::local(&path.to_string_lossy(), create_local);
            }
            "memory" => Arc::new(InMemory::new()),
            "s3" | "s3a" => {
                register_conditional_put_logstore();
                let bucket = bucket_of(&url)?;
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(options.retry_config());
                if let Some(endpoint) = options
                    .s3_endpoint
                    .clone()
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
                {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(region) = &options.s3_region {
                    builder = builder.with_region(region);
                }
                if let Some(allow_http) = options.s3_allow_http {
                    builder = builder.with_allow_http(allow_http);
                }
                if let Some(path_style) = options.s3_path_style {
                    builder = builder.with_virtual_hosted_style_request(!path_style);
                }
                refuse_plain_http_unless_allowed(&builder)?;
                Arc::new(builder.build()?)
            }
            "gs" => {
                register_conditional_put_logstore();
                let builder = GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket_of(&url)?)
                    .with_retry(options.retry_config());
                Arc::new(builder.build()?)
            }
            "az" => {
                register_conditional_put_logstore();
                let builder = MicrosoftAzureBuilder::from_env()
                    .with_container_name(bucket_of(&url)?)
                    .with_retry(options.retry_config());
                Arc::new(builder.build()?)
            }
            other => {
                return Err(Error::invalid(format!(
                    "store scheme `{other}://` is not supported \
                     (use a local path, memory://, s3://, gs:// or az://)"
                )));
            }
        };
        Ok(Self { root, object_store })
    }

    fn local(path: &str, create: bool) -> Result<Self> {
        if create {
            std::fs::create_dir_all(path)?;
        } else if !std::path::Path::new(path).is_dir() {
            return Err(Error::NotFound(format!(
                "no forkline store at {path} (no such directory)"
            )));
        }
        let abs = std::fs::canonicalize(path)?;
        let root = Url::from_directory_path(&abs)
            .map_err(|_| Error::invalid(format!("cannot use {path} as a store path")))?;
        Ok(Self {
            root,
            // Every write synced before it is reported (see `durable_local`).
            object_store: Arc::new(DurableLocalFileSystem::new()),
        })
    }

    /// The object-store path of `relative` (slash-separated, not
    /// percent-encoded) under the store root.
    pub fn path(&self, relative: &str) -> Result<ObjectPath> {
        let root = ObjectPath::from_url_path(self.root.path())
            .map_err(|e| Error::invalid(format!("bad store location {}: {e}", self.root)))?;
        Ok(relative
            .split('/')
            .filter(|part| !part.is_empty())
            .fold(root, |path, part| path.join(part)))
    }

    /// Whether the store is shared through a network object store, where other
    /// processes may commit concurrently and commits rely on conditional puts.
    pub fn is_remote(&self) -> bool {
        !matches!(self.root.scheme(), "file" | "memory")
    }

    /// Refuses a store where two writers could overwrite each other's commit.
    ///
    /// Delta commits `_delta_log/N.json` with put-if-absent; a store that
    /// ignores `If-None-Match` (or has conditional puts disabled) would let a
    /// second writer silently replace the first one's commit. Writes a probe
    /// object under `_forkline/` twice with put-if-absent, expects the second
    /// to be refused, then deletes it.
    pub async fn check_conditional_put(&self) -> Result<()> {
        let suffix: u64 = rand::random();
        let probe = self.path(&format!(
            "_forkline/put-if-absent-probe-{}-{suffix:016x}",
            std::process::id()
        ))?;
        let create = || PutOptions::from(PutMode::Create);
        let unsafe_store = |why: String| {
            Error::Unavailable(format!(
                "store {} cannot make commits atomic: {why}; two forkline writers \
                 (or a writer and a compaction) could overwrite each other's Delta \
                 commits. Use a store with conditional puts (AWS S3, MinIO, R2, GCS, Azure)",
                self.root
            ))
        };
        match self
            .object_store
            .put_opts(&probe, PutPayload::from_static(b"1"), create())
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::NotImplemented { .. }) => {
                return Err(unsafe_store(
                    "conditional puts are disabled (AWS_CONDITIONAL_PUT?)".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let second = self
            .object_store
            .put_opts(&probe, PutPayload::from_static(b"2"), create())
            .await;
        let _ = self.object_store.delete(&probe).await;
        match second {
            Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Ok(_) => Err(unsafe_store(
                "it let a put with `If-None-Match: *` replace an existing object".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The `scheme://authority` URL DataFusion knows the object store by.
    pub fn object_store_url(&self) -> datafusion::execution::object_store::ObjectStoreUrl {
        let url = format!("{}://{}", self.root.scheme(), self.root.authority());
        datafusion::execution::object_store::ObjectStoreUrl::parse(url)
            .expect("a scheme and an authority form an object store URL")
    }

    /// URL of a table (a directory) under the store root.
    pub fn table_url(&self, name: &str) -> Url {
        self.root
            .join(&format!("{name}/"))
            .expect("table names are plain path segments")
    }
}

/// object_store reports a plain-HTTP endpoint without `allow_http` only as an
/// opaque "builder error" on the first request; say what to do instead.
fn refuse_plain_http_unless_allowed(builder: &AmazonS3Builder) -> Result<()> {
    let value = |key| builder.get_config_value(&key);
    let endpoint = value(AmazonS3ConfigKey::Endpoint).unwrap_or_default();
    let allowed = value(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)).is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "true" | "1" | "on" | "yes" | "y"
        )
    });
    if endpoint.trim().to_ascii_lowercase().starts_with("http://") && !allowed {
        return Err(Error::invalid(format!(
            "S3 endpoint {endpoint} is plain HTTP: pass --s3-allow-http \
             (or FORKLINE_S3_ALLOW_HTTP=true / AWS_ALLOW_HTTP=true)"
        )));
    }
    Ok(())
}

fn bucket_of(url: &Url) -> Result<&str> {
    url.host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| Error::invalid(format!("store URL {url} names no bucket")))
}

fn with_trailing_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

/// delta-rs only knows `file://` and `memory://` without its cloud crates. S3
/// (since 2024), GCS and Azure all support conditional puts, so the default
/// log store (put-if-absent commits) is safe there and spares us the DynamoDB
/// lock client; [`StoreLocation::check_conditional_put`] checks it at start-up.
fn register_conditional_put_logstore() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3://", "s3a://", "gs://", "az://"] {
            logstore_factories().insert(
                Url::parse(scheme).expect("static scheme"),
                Arc::new(ConditionalPutLogStore),
            );
        }
    });
}

struct ConditionalPutLogStore;

impl LogStoreFactory for ConditionalPutLogStore {
    fn with_options(
        &self,
        prefixed_store: Arc<dyn ObjectStore>,
        root_store: Arc<dyn ObjectStore>,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(endpoint: &str, allow_http: Option<bool>) -> Result<StoreLocation> {
        StoreLocation::parse_with(
            "s3://bucket/prefix",
            &StoreOptions {
                s3_endpoint: Some(endpoint.into()),
                s3_region: Some("us-east-1".into()),
                s3_allow_http: allow_http,
                s3_path_style: Some(true),
                ..Default::default()
            },
        )
    }

    #[test]
    fn plain_http_endpoint_needs_allow_http() {
        if std::env::var("AWS_ALLOW_HTTP").is_ok() {
            return; // the variable would allow it
        }
        let err = s3("http://127.0.0.1:1", None).unwrap_err().to_string();
        assert!(err.contains("--s3-allow-http"), "{err}");
        let location = s3("http://127.0.0.1:1", Some(true)).unwrap();
        assert_eq!(location.root.as_str(), "s3://bucket/prefix/");
        assert!(location.is_remote());
        assert!(s3("https://example.com", None).is_ok());
    }

    #[test]
    fn unknown_schemes_name_the_supported_ones() {
        let err = StoreLocation::parse("ftp://host/x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("s3://, gs:// or az://"), "{err}");
        assert!(StoreLocation::parse("s3:///nobucket").is_err());
        assert!(!StoreLocation::parse("memory://").unwrap().is_remote());
    }
}

//! Turning a store URL (`./data/warehouse`, `memory://`, `s3://bucket/prefix`) into an object store.

use std::sync::{Arc, Once};

use deltalake::logstore::{
    LogStore, LogStoreFactory, StorageConfig, default_logstore, logstore_factories,
};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use url::Url;

use crate::error::{Error, Result};

/// Where every durable byte of a forkline store lives.
#[derive(Debug, Clone)]
pub struct StoreLocation {
    /// URL of the store root, always ending in `/`.
    pub root: Url,
    /// Object store whose `/` is the root of the URL's bucket or file system.
    pub object_store: Arc<dyn ObjectStore>,
}

impl StoreLocation {
    /// Parses a store URL or local path; local directories are created if missing.
    ///
    /// S3 reads the standard `AWS_*` variables (`AWS_ENDPOINT_URL` overrides the
    /// endpoint, `AWS_ALLOW_HTTP=true` permits a plain-HTTP test server).
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(Error::invalid("store URL is empty"));
        }
        let url = match Url::parse(spec) {
            Ok(url) if url.scheme().len() > 1 => url,
            _ => return Self::local(spec),
        };
        let root = with_trailing_slash(url.clone());
        let object_store: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|_| Error::invalid(format!("store URL {url} is not a local path")))?;
                return Self::local(&path.to_string_lossy());
            }
            "memory" => Arc::new(InMemory::new()),
            "s3" | "s3a" => {
                register_s3_logstore();
                let bucket = url
                    .host_str()
                    .ok_or_else(|| Error::invalid(format!("store URL {url} names no bucket")))?;
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                    builder = builder.with_endpoint(endpoint);
                }
                Arc::new(builder.build()?)
            }
            other => {
                return Err(Error::invalid(format!(
                    "store scheme `{other}://` is not supported (use a local path, memory:// or s3://)"
                )));
            }
        };
        Ok(Self { root, object_store })
    }

    fn local(path: &str) -> Result<Self> {
        std::fs::create_dir_all(path)?;
        let abs = std::fs::canonicalize(path)?;
        let root = Url::from_directory_path(&abs)
            .map_err(|_| Error::invalid(format!("cannot use {path} as a store path")))?;
        Ok(Self {
            root,
            object_store: Arc::new(LocalFileSystem::new()),
        })
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

fn with_trailing_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

/// delta-rs only knows `file://` and `memory://` without its AWS crate; S3 now
/// supports conditional puts, so the default log store (put-if-absent commits)
/// is safe there and spares us the DynamoDB lock client.
fn register_s3_logstore() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3://", "s3a://"] {
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

//! Uploaded files: their bytes streamed under the store root, the single-use
//! claim of the URL they came with, and their record in `files`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::Engine;
use crate::catalog::RunId;
use crate::error::{Error, Result};
use crate::store::TableKind;
use crate::store::records::FileRecord;

/// Where under the store root the nonce of each used upload URL is claimed:
/// a put-if-absent there makes every URL single-use across all servers.
const USED_UPLOADS: &str = "_forkline/used-upload-urls";

/// Length of an upload nonce in bytes (hex-encoded in URLs).
pub const NONCE_LEN: usize = 32;

/// One upload: what its URL was signed for, and the record it becomes.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The run the file belongs to.
    pub run: RunId,
    /// One path segment (see [`check_file_name`]).
    pub file_name: String,
    /// Most bytes accepted; with `exact`, the bytes expected.
    pub size: u64,
    /// Whether the upload must have exactly `size` bytes.
    pub exact: bool,
    /// Hex SHA-256 the content must have, when the client declared one.
    pub sha256: Option<String>,
    /// The URL's single-use nonce, hex.
    pub nonce: String,
    /// The name the file is logged under.
    pub log_name: String,
    pub file_type: String,
    pub step: Option<u64>,
    pub time_us: Option<i64>,
    pub caption: Option<String>,
}

/// Refuses a file name that is not one plain path segment of at most 255 bytes.
pub fn check_file_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0']);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("bad file name `{name}`")))
    }
}

impl Engine {
    /// Stores `upload`'s bytes from `body` and records the file; returns its size.
    ///
    /// The bytes go to a staging object first (never more than the URL
    /// allows), size and hash are checked, the URL's nonce is claimed, and
    /// only then is the object moved into place and recorded. A refused
    /// upload leaves the URL usable and no object behind.
    pub async fn store_upload<E: std::fmt::Display>(
        &self,
        upload: Upload,
        body: impl Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    ) -> Result<u64> {
        check_file_name(&upload.file_name)?;
        self.store.ensure_writable()?;
        self.catalog().await?.require(upload.run)?;
        let objects = &self.store.location().object_store;
        let staging = self.upload_path(
            upload.run,
            &format!(".upload-{}", uuid::Uuid::new_v4().simple()),
        )?;
        let received = receive(objects, &staging, body, &upload).await;
        let size = match received {
            Ok(size) => size,
            Err(e) => {
                let _ = objects.delete(&staging).await;
                return Err(e);
            }
        };
        if let Err(e) = self.claim_nonce(&upload.nonce).await {
            let _ = objects.delete(&staging).await;
            return Err(e);
        }
        let path = self.upload_path(upload.run, &upload.file_name)?;
        objects.rename(&staging, &path).await?;
        let record = FileRecord {
            run_id: upload.run,
            log_name: upload.log_name,
            file_name: upload.file_name,
            file_type: upload.file_type,
            file_size: size as i64,
            step: upload.step,
            time_us: upload.time_us,
            caption: upload.caption,
            path: path.to_string(),
        };
        self.append_records(TableKind::Uploads, vec![FileRecord::batch(&[record])?])
            .await?;
        Ok(size)
    }

    /// The bytes of `file_name` of `run`, as uploaded.
    pub async fn read_upload(&self, run: RunId, file_name: &str) -> Result<Bytes> {
        check_file_name(file_name)?;
        // A URL signed before its run was deleted opens nothing. The cached
        // catalog suffices (this process's deletions are in it at once): a
        // download needs no fresh read of the runs table.
        self.read_catalog().await?.require(run)?;
        let path = self.upload_path(run, file_name)?;
        match self.store.location().object_store.get(&path).await {
            Ok(found) => Ok(found.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Err(Error::NotFound(format!(
                "file `{file_name}` of run {run} was never uploaded"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    fn upload_path(&self, run: RunId, file_name: &str) -> Result<StorePath> {
        Ok(self.upload_dir(run)?.join(file_name))
    }

    /// Where the uploaded objects of `run` live.
    pub fn upload_dir(&self, run: RunId) -> Result<StorePath> {
        let root = StorePath::from_url_path(self.store.location().root.path())
            .map_err(|e| Error::invalid(format!("bad store path: {e}")))?;
        Ok(root.join("files").join(run.to_string().as_str()))
    }

    /// Marks an upload URL used; a second use, on any server of the store, is refused.
    async fn claim_nonce(&self, nonce: &str) -> Result<()> {
        if nonce.len() != 2 * NONCE_LEN || !nonce.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::invalid("invalid upload URL nonce"));
        }
        let location = self.store.location();
        let path = location.path(&format!("{USED_UPLOADS}/{nonce}"))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let put = location
            .object_store
            .put_opts(
                &path,
                PutPayload::from(now.to_string()),
                PutOptions::from(PutMode::Create),
            )
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(Error::Forbidden(
                "this upload URL has been used already; request a new one".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }
}

/// Streams `body` to `path` in parts, refusing it once it passes the signed
/// size, and checks the exact size and hash at the end.
async fn receive<E: std::fmt::Display>(
    objects: &std::sync::Arc<dyn object_store::ObjectStore>,
    path: &StorePath,
    mut body: impl Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    upload: &Upload,
) -> Result<u64> {
    use sha2::Digest;
    let mut writer = object_store::WriteMultipart::new(objects.put_multipart(path).await?);
    let (mut size, mut hasher) = (0u64, sha2::Sha256::new());
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(Error::invalid(format!("upload interrupted: {e}")));
            }
        };
        size += chunk.len() as u64;
        if size > upload.size {
            let _ = writer.abort().await;
            return Err(Error::TooLarge(format!(
                "the upload is larger than the {} bytes its URL was signed for",
                upload.size
            )));
        }
        hasher.update(&chunk);
        writer.write(&chunk);
    }
    let refused = if upload.exact && size != upload.size {
        Some(format!(
            "the upload has {size} bytes, not the {} its URL was signed for",
            upload.size
        ))
    } else if upload
        .sha256
        .as_ref()
        .is_some_and(|sha| *sha != hex::encode(hasher.finalize()))
    {
        Some("the upload does not match the sha256 its URL was signed for".into())
    } else {
        None
    };
    if let Some(why) = refused {
        let _ = writer.abort().await;
        return Err(Error::invalid(why));
    }
    writer.finish().await?;
    Ok(size)
}

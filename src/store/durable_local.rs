//! A local store whose completed writes are on stable storage.
//!
//! object_store 0.13's `LocalFileSystem` writes a staging file and renames
//! (or hard-links) it into place without `fsync` of the file or of its
//! directory. After an OS crash or a power loss the page cache is gone: an
//! acknowledged point can vanish, and a Delta log entry can exist with no
//! bytes, which breaks the table for every reader. object_store 0.14 syncs
//! on request (`with_fsync`), but the DataFusion / delta-rs stack forkline
//! pins is on 0.13, so every local store forkline opens is this wrapper
//! around `LocalFileSystem`, which keeps its paths and errors and adds:
//!
//! - `put`: the bytes are written to a staging file and synced *before*
//!   the file takes its name, so a name never points at bytes that are not
//!   durable (a log entry is whole or absent); then its directory is synced,
//!   and every directory the write created, up to one already known synced.
//! - multipart uploads (uploaded artifacts): the file and its directory are
//!   synced when the upload completes, before it is reported complete.
//! - `rename` and `copy`: the target (for a copy) and the directories whose
//!   entries changed are synced.
//!
//! S3, GCS and Azure are durable when a PUT completes; they are not wrapped.

use std::collections::HashSet;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
    UploadPart,
};

/// `LocalFileSystem` with every completed write synced (see the module docs).
#[derive(Debug)]
pub struct DurableLocalFileSystem {
    inner: Arc<LocalFileSystem>,
    dirs: Arc<SyncedDirs>,
}

impl DurableLocalFileSystem {
    /// The local file system, rooted at `/` like `LocalFileSystem::new()`.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(LocalFileSystem::new()),
            dirs: Arc::default(),
        }
    }
}

impl Default for DurableLocalFileSystem {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for DurableLocalFileSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Durable{}", self.inner)
    }
}

/// Directories whose own entry is known to be on stable storage: a new
/// file's directory is synced every time, its parents only until one of
/// these is reached.
#[derive(Debug, Default)]
struct SyncedDirs(Mutex<HashSet<PathBuf>>);

impl SyncedDirs {
    /// Syncs `dir` (a child was added or removed), and each of its parents
    /// whose entry for it may not be on stable storage yet.
    fn sync_entries_of(&self, dir: &FsPath) -> std::io::Result<()> {
        let mut current = Some(dir);
        while let Some(dir) = current {
            sync_dir(dir)?;
            let mut known = self.0.lock().expect("synced dirs poisoned");
            if !known.insert(dir.to_path_buf()) {
                break;
            }
            drop(known);
            current = dir.parent();
        }
        Ok(())
    }

    /// Syncs the directory holding `file`, as [`SyncedDirs::sync_entries_of`].
    fn sync_parent_of(&self, file: &FsPath) -> std::io::Result<()> {
        match file.parent() {
            Some(dir) => self.sync_entries_of(dir),
            None => Ok(()),
        }
    }
}

fn sync_dir(dir: &FsPath) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An object-store error for a failed sync of `path`: the write is not
/// durable, so it is reported failed, never acknowledged.
fn not_synced(path: &FsPath, source: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "DurableLocalFileSystem",
        source: format!("could not sync {}: {source}", path.display()).into(),
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "DurableLocalFileSystem",
            source: Box::new(e),
        })?
}

/// Writes `payload` to a new staging file beside `path` and syncs it;
/// returns the open file and the staging path.
fn write_staged(path: &FsPath, payload: &PutPayload) -> std::io::Result<(File, PathBuf)> {
    let dir = path.parent().unwrap_or(FsPath::new("/"));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_owned());
    loop {
        let mut staging = name.clone();
        // `#` and digits: the suffix `LocalFileSystem` gives its own staging
        // files, which its listings skip, so no reader sees a half-made object.
        staging.push(format!("#{}", rand::random::<u64>()));
        let staging = dir.join(staging);
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&staging)
        {
            Ok(mut file) => {
                let written = payload
                    .iter()
                    .try_for_each(|chunk| file.write_all(chunk))
                    .and_then(|()| file.sync_all());
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&staging);
                    return Err(e);
                }
                return Ok((file, staging));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The e-tag `LocalFileSystem` gives a file: inode, modification time and size.
fn etag(file: &File) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    Some(format!("{:x}-{:x}-{:x}", meta.ino(), mtime, meta.len()))
}

#[async_trait]
impl ObjectStore for DurableLocalFileSystem {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        if matches!(opts.mode, PutMode::Update(_)) || !opts.attributes.is_empty() {
            // What `LocalFileSystem` refuses, it refuses with its own error.
            return self.inner.put_opts(location, payload, opts).await;
        }
        let path = self.inner.path_to_filesystem(location)?;
        let dirs = self.dirs.clone();
        blocking(move || {
            let (file, staging) =
                write_staged(&path, &payload).map_err(|source| object_store::Error::Generic {
                    store: "DurableLocalFileSystem",
                    source: format!("could not write and sync {}: {source}", path.display()).into(),
                })?;
            let placed = match opts.mode {
                PutMode::Create => std::fs::hard_link(&staging, &path),
                _ => std::fs::rename(&staging, &path),
            };
            let _ = std::fs::remove_file(&staging);
            if let Err(source) = placed {
                let path = path.to_string_lossy().into_owned();
                return Err(match source.kind() {
                    std::io::ErrorKind::AlreadyExists => object_store::Error::AlreadyExists {
                        path,
                        source: Box::new(source),
                    },
                    _ => object_store::Error::Generic {
                        store: "DurableLocalFileSystem",
                        source: format!("could not name {path}: {source}").into(),
                    },
                });
            }
            dirs.sync_parent_of(&path)
                .map_err(|e| not_synced(&path, e))?;
            Ok(PutResult {
                e_tag: etag(&file),
                version: None,
            })
        })
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let path = self.inner.path_to_filesystem(location)?;
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(DurableUpload {
            upload,
            path,
            dirs: self.dirs.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        let path = self.inner.path_to_filesystem(to)?;
        let dirs = self.dirs.clone();
        blocking(move || {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .and_then(|()| dirs.sync_parent_of(&path))
                .map_err(|e| not_synced(&path, e))
        })
        .await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await?;
        let (from, to) = (
            self.inner.path_to_filesystem(from)?,
            self.inner.path_to_filesystem(to)?,
        );
        let dirs = self.dirs.clone();
        blocking(move || {
            // The bytes were synced when they were written here.
            dirs.sync_parent_of(&to)
                .and_then(|()| dirs.sync_parent_of(&from))
                .map_err(|e| not_synced(&to, e))
        })
        .await
    }
}

/// A `LocalFileSystem` multipart upload whose completion syncs the file and
/// its directory before it is reported.
#[derive(Debug)]
struct DurableUpload {
    upload: Box<dyn MultipartUpload>,
    path: PathBuf,
    dirs: Arc<SyncedDirs>,
}

#[async_trait]
impl MultipartUpload for DurableUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.upload.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let done = self.upload.complete().await?;
        let (path, dirs) = (self.path.clone(), self.dirs.clone());
        blocking(move || {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .and_then(|()| dirs.sync_parent_of(&path))
                .map_err(|e| not_synced(&path, e))
        })
        .await?;
        Ok(done)
    }

    async fn abort(&mut self) -> Result<()> {
        self.upload.abort().await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;

    use super::*;

    #[tokio::test]
    async fn puts_land_whole_and_create_refuses_an_existing_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = DurableLocalFileSystem::new();
        let root = Path::from_filesystem_path(dir.path()).unwrap();
        let log = root.clone().join("t").join("_delta_log").join("0.json");
        store
            .put_opts(&log, PutPayload::from("first"), PutMode::Create.into())
            .await
            .unwrap();
        let again = store
            .put_opts(&log, PutPayload::from("second"), PutMode::Create.into())
            .await
            .unwrap_err();
        assert!(
            matches!(again, object_store::Error::AlreadyExists { .. }),
            "{again}"
        );
        store
            .put(&root.clone().join("o"), PutPayload::from("a"))
            .await
            .unwrap();
        store
            .put(&root.clone().join("o"), PutPayload::from("bb"))
            .await
            .unwrap();
        let read = |p: Path| {
            let store = &store;
            async move { store.get(&p).await.unwrap().bytes().await.unwrap() }
        };
        assert_eq!(read(log).await, "first");
        assert_eq!(read(root.clone().join("o")).await, "bb");
        // No staging file is left behind.
        let mut names: Vec<String> = walk(dir.path());
        names.sort();
        assert_eq!(names, ["o", "t/_delta_log/0.json"]);
    }

    fn walk(dir: &FsPath) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(dir).unwrap();
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out
    }
}

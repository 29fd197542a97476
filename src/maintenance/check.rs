//! `forkline check`: every data file of every table's current snapshot must
//! exist, have the size the Delta log gives, open as Parquet (its footer is
//! read through the object store) and hold the row count of its statistics.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::file::FOOTER_SIZE;
use parquet::file::metadata::{FooterTail, ParquetMetaData, ParquetMetaDataReader};

use crate::error::Result;
use crate::store::{DataFile, Store, TableKind};

/// Bytes fetched from the end of a file at first: most footers fit.
const TAIL_GUESS: u64 = 64 << 10;

/// Files whose footers are read at once.
const CONCURRENCY: usize = 16;

/// What `check` found in one table.
#[derive(Debug, Clone)]
pub struct TableCheck {
    /// The table.
    pub kind: TableKind,
    /// Delta version checked.
    pub version: Option<u64>,
    /// Data files the snapshot references.
    pub files: usize,
    /// Their bytes, as the Delta log gives them.
    pub bytes: u64,
    /// Rows, from the Parquet footers of the files that could be read.
    pub rows: u64,
    /// One line per bad file, naming it (path from the store root).
    pub problems: Vec<String>,
}

/// What `check` found in the store.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// One entry per table, in [`TableKind::ALL`] order.
    pub tables: Vec<TableCheck>,
}

impl CheckReport {
    /// Whether no table has a problem.
    pub fn ok(&self) -> bool {
        self.tables.iter().all(|t| t.problems.is_empty())
    }

    /// Every problem, prefixed by its table.
    pub fn problems(&self) -> Vec<String> {
        self.tables
            .iter()
            .flat_map(|t| {
                t.problems
                    .iter()
                    .map(move |p| format!("{}: {p}", t.kind.dir()))
            })
            .collect()
    }

    /// The entry of one table.
    pub fn table(&self, kind: TableKind) -> Option<&TableCheck> {
        self.tables.iter().find(|t| t.kind == kind)
    }
}

impl std::fmt::Display for TableCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows = match self.kind {
            TableKind::Metrics => "points",
            _ => "rows",
        };
        let version = self.version.map_or("-".to_string(), |v| v.to_string());
        write!(
            f,
            "{:<8} version {version}: {} file(s), {} byte(s), {} {rows}, ",
            self.kind.dir(),
            self.files,
            self.bytes,
            self.rows
        )?;
        match self.problems.len() {
            0 => write!(f, "ok"),
            n => write!(f, "{n} problem(s): {}", self.problems.join("; ")),
        }
    }
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for t in &self.tables {
            writeln!(f, "{t}")?;
        }
        Ok(())
    }
}

/// Checks the latest snapshot of every table of `store`.
pub async fn check(store: &Store) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    for kind in TableKind::ALL {
        report.tables.push(check_table(store, kind).await?);
    }
    Ok(report)
}

async fn check_table(store: &Store, kind: TableKind) -> Result<TableCheck> {
    store.refresh(kind).await?;
    let files = store.files(kind).await?;
    let object_store = store.location().object_store.clone();
    let results: Vec<(u64, Option<String>)> = futures::stream::iter(files.files.iter().cloned())
        .map(|file| check_file(object_store.clone(), file))
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut table = TableCheck {
        kind,
        version: files.version,
        files: files.files.len(),
        bytes: files.files.iter().map(|f| f.size).sum(),
        rows: 0,
        problems: Vec::new(),
    };
    for (rows, problem) in results {
        table.rows += rows;
        table.problems.extend(problem);
    }
    Ok(table)
}

/// The file's row count from its footer, and what is wrong with it if anything.
/// Errors are only those that are not the file's fault (none so far).
async fn check_file(
    object_store: Arc<dyn ObjectStore>,
    file: DataFile,
) -> Result<(u64, Option<String>)> {
    let name = file.location.to_string();
    let meta = match object_store.head(&file.location).await {
        Ok(meta) => meta,
        Err(object_store::Error::NotFound { .. }) => {
            return Ok((0, Some(format!("missing file {name}"))));
        }
        Err(e) => return Ok((0, Some(format!("cannot stat {name}: {e}")))),
    };
    let mut problems = Vec::new();
    if meta.size != file.size {
        problems.push(format!(
            "{name} has {} byte(s), the Delta log says {}",
            meta.size, file.size
        ));
    }
    let rows = match read_footer(object_store.as_ref(), &file.location, meta.size).await {
        Ok(metadata) => metadata.file_metadata().num_rows().max(0) as u64,
        Err(e) => {
            problems.push(format!("unreadable file {name}: {e}"));
            return Ok((0, Some(problems.join("; "))));
        }
    };
    if let Some(expected) = file.rows
        && expected != rows
    {
        problems.push(format!(
            "{name} holds {rows} row(s), its Delta statistics say {expected}"
        ));
    }
    let problem = (!problems.is_empty()).then(|| problems.join("; "));
    Ok((rows, problem))
}

/// Reads and decodes the Parquet footer of the `size`-byte object at `location`.
async fn read_footer(
    object_store: &dyn ObjectStore,
    location: &Path,
    size: u64,
) -> std::result::Result<ParquetMetaData, String> {
    let footer = FOOTER_SIZE as u64;
    if size < footer + 4 {
        return Err(format!("{size} byte(s) is too short for Parquet"));
    }
    let start = size.saturating_sub(TAIL_GUESS);
    let mut tail = object_store
        .get_range(location, start..size)
        .await
        .map_err(|e| e.to_string())?;
    let last: [u8; FOOTER_SIZE] = tail[tail.len() - FOOTER_SIZE..]
        .try_into()
        .expect("the tail ends with a whole footer");
    let footer_tail = FooterTail::try_new(&last).map_err(|e| e.to_string())?;
    let metadata_len = footer_tail.metadata_length() as u64;
    if metadata_len + footer + 4 > size {
        return Err(format!(
            "its footer claims {metadata_len} byte(s) of metadata in a {size}-byte file"
        ));
    }
    let metadata_start = size - footer - metadata_len;
    if metadata_start < start {
        tail = object_store
            .get_range(location, metadata_start..size)
            .await
            .map_err(|e| e.to_string())?;
    }
    // The tail ends where the file does, so the metadata sits just before the footer.
    let offset = tail.len() - FOOTER_SIZE - metadata_len as usize;
    ParquetMetaDataReader::decode_metadata(&tail[offset..tail.len() - FOOTER_SIZE])
        .map_err(|e| e.to_string())
}

//! The data files of a table's current Delta snapshot, with what the read path
//! needs to choose among them: where each file is, its size, the range of runs
//! it holds, and whether compaction wrote it.

use object_store::path::Path;
use serde_json::Value;

use crate::error::{Error, Result};

/// Compaction writes the latest write of every point it saw into files named
/// with this prefix; among them no two share a run, and none holds a key twice.
pub const LATEST_PREFIX: &str = "compacted-latest-";
/// Superseded writes set aside by compaction, kept so `metric_writes` stays whole.
pub const SUPERSEDED_PREFIX: &str = "compacted-superseded-";

/// What a data file may contain, told by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileClass {
    /// Written by ingest or by any other writer: keys may repeat within and across files.
    Ingest,
    /// Written by compaction: the newest write of each key of its runs, run-disjoint.
    Latest,
    /// Written by compaction: older writes that a `Latest` file supersedes.
    Superseded,
}

impl FileClass {
    fn of(path: &str) -> Self {
        let name = path.rsplit('/').next().unwrap_or(path);
        if name.starts_with(LATEST_PREFIX) {
            FileClass::Latest
        } else if name.starts_with(SUPERSEDED_PREFIX) {
            FileClass::Superseded
        } else {
            FileClass::Ingest
        }
    }
}

/// One Parquet file of a table snapshot.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Location from the root of the store's object store.
    pub location: Path,
    /// Path relative to the table directory, as the Delta log names it.
    pub relative: String,
    /// Size in bytes.
    pub size: u64,
    /// Row count from the Delta statistics.
    pub rows: Option<u64>,
    /// Lowest and highest `run_id`, when the statistics carry them.
    pub runs: Option<(i64, i64)>,
    /// Who wrote it, and so what it may contain.
    pub class: FileClass,
}

/// The row count and `run_id` range an add action's statistics (its JSON
/// `stats`) carry; `None` where they are missing or unreadable.
pub fn add_stats(stats: Option<&str>) -> (Option<u64>, Option<(i64, i64)>) {
    let stats: Option<Value> = stats.and_then(|s| serde_json::from_str(s).ok());
    let rows = stats
        .as_ref()
        .and_then(|s| s.get("numRecords"))
        .and_then(Value::as_u64);
    let bound = |key: &str| {
        stats
            .as_ref()
            .and_then(|s| s.get(key))
            .and_then(|v| v.get("run_id"))
            .and_then(Value::as_i64)
    };
    (rows, bound("minValues").zip(bound("maxValues")))
}

impl DataFile {
    /// Parses one entry of a Delta snapshot; `table` is the table directory's location.
    pub fn from_log(table: &Path, relative: &str, size: i64, stats: Option<&str>) -> Result<Self> {
        let location = Path::parse(format!("{table}/{relative}")).map_err(|e| {
            Error::invalid(format!("bad file path {relative} in the Delta log: {e}"))
        })?;
        let (rows, runs) = add_stats(stats);
        Ok(Self {
            location,
            relative: relative.to_string(),
            size: size.max(0) as u64,
            rows,
            runs,
            class: FileClass::of(relative),
        })
    }

    /// Whether the file may hold rows of a run in `from..=to` (unknown ranges may).
    pub fn overlaps(&self, from: i64, to: i64) -> bool {
        self.runs.is_none_or(|(lo, hi)| lo <= to && from <= hi)
    }
}

/// The data files of one table version.
#[derive(Debug, Clone, Default)]
pub struct TableFiles {
    /// Delta version these files are the snapshot of.
    pub version: Option<deltalake::kernel::Version>,
    /// Every active file.
    pub files: Vec<DataFile>,
}

impl TableFiles {
    /// Files of one class.
    pub fn of_class(&self, class: FileClass) -> impl Iterator<Item = &DataFile> {
        self.files.iter().filter(move |f| f.class == class)
    }

    /// Run ranges of the ingest files, merged where they touch: only these runs
    /// may have a key written twice, so only they need last-write-wins.
    pub fn ingest_runs(&self) -> Vec<(i64, i64)> {
        let mut ranges: Vec<(i64, i64)> = self
            .of_class(FileClass::Ingest)
            .map(|f| f.runs.unwrap_or((i64::MIN, i64::MAX)))
            .collect();
        merge_ranges(&mut ranges);
        ranges
    }
}

/// Sorts and merges overlapping or adjacent ranges in place.
pub fn merge_ranges(ranges: &mut Vec<(i64, i64)>) {
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    *ranges = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_come_from_the_file_name() {
        let table = Path::from("store/metrics");
        let stats = r#"{"numRecords":3,"minValues":{"run_id":4},"maxValues":{"run_id":9}}"#;
        let f =
            DataFile::from_log(&table, "compacted-latest-1-0.parquet", 10, Some(stats)).unwrap();
        assert_eq!(f.class, FileClass::Latest);
        assert_eq!((f.rows, f.runs), (Some(3), Some((4, 9))));
        assert_eq!(
            f.location.as_ref(),
            "store/metrics/compacted-latest-1-0.parquet"
        );
        let f = DataFile::from_log(&table, "part-00000-x.zstd.parquet", 10, None).unwrap();
        assert_eq!((f.class, f.runs), (FileClass::Ingest, None));
        assert!(f.overlaps(1, 1));
    }

    #[test]
    fn ranges_merge_when_they_touch() {
        let mut r = vec![(5, 6), (1, 2), (3, 3), (10, 12), (11, 20)];
        merge_ranges(&mut r);
        assert_eq!(r, vec![(1, 3), (5, 6), (10, 20)]);
    }
}

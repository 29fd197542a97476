//! Options of compaction: `forkline compact`'s, and the background
//! compaction of `forkline serve`.

use clap::Args;

/// Arguments of `forkline compact`.
#[derive(Debug, Clone, Args)]
pub struct CompactArgs {
    /// Rows per output file (runs are never split across files).
    #[arg(long, default_value_t = 4_000_000)]
    pub target_rows: u64,
    /// Rewrite every file, already compacted ones included (after a layout change).
    #[arg(long)]
    pub full: bool,
}

impl Default for CompactArgs {
    fn default() -> Self {
        super::defaults()
    }
}

/// When `forkline serve` compacts by itself.
#[derive(Debug, Clone, Args)]
pub struct AutoCompactArgs {
    /// Check for small metric files this often and compact them (0 turns it off).
    #[arg(long, env = "FORKLINE_COMPACT_EVERY_S", default_value_t = 60)]
    pub compact_every_s: u64,
    /// Compact once at least this many ingest files have gathered.
    #[arg(long, env = "FORKLINE_COMPACT_MIN_FILES", default_value_t = 16)]
    pub compact_min_files: usize,
}

impl Default for AutoCompactArgs {
    fn default() -> Self {
        super::defaults()
    }
}

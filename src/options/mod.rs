//! Command-line options, declared once per group.
//!
//! Each group is one struct deriving clap's `Args`, flattened into the
//! commands of the CLI; the group a `--config-file` may
//! hold ([`GlobalArgs`]) derives serde's `Deserialize` too, keyed by the long
//! flag names. Defaults are written only in the `#[arg]` attributes:
//! [`defaults`] parses an empty command line for them, and the settings the
//! engine and the servers run with (`EngineOptions`, `QueryLimits`,
//! `ServerOptions`, `ConnectionLimits`, `CompactOptions`) build their
//! `Default` from it, so a library user starts where the binary does.
//! The option tables of `docs/operations.md` are checked against these
//! definitions by the CLI's `option_tables` test.

mod cluster;
mod compaction;
mod global;
mod query;
mod server;
mod values;

use clap::{Args, FromArgMatches};

pub use cluster::{ClusterArgs, ExecutorArgs, SchedulerArgs};
pub use compaction::{AutoCompactArgs, CompactArgs};
pub use global::GlobalArgs;
pub use query::QueryArgs;
pub use server::{ConnectionArgs, ServerArgs};
pub use values::parse_duration;

/// The values a group of options takes when the command line and the
/// environment give none: its `#[arg]` defaults (variables are ignored, so
/// a library user's defaults do not depend on `FORKLINE_*`).
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults").no_binary_name(true))
        .mut_args(|arg| arg.env(None));
    // Only our own `#[arg]` attributes are parsed here; the unit tests parse
    // every group, so a default that does not parse fails them, not a user.
    let matches = command
        .try_get_matches_from(std::iter::empty::<String>())
        .expect("option defaults parse");
    T::from_arg_matches(&matches).expect("option defaults fill their group")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_has_defaults() {
        let global: GlobalArgs = defaults();
        assert_eq!(global.store, "./data/warehouse");
        assert_eq!(global.memory_mb, 2048);
        let query: QueryArgs = defaults();
        assert_eq!(query.query_timeout_s, 300.0);
        let server: ServerArgs = defaults();
        assert_eq!(server.stale_after, std::time::Duration::from_secs(15 * 60));
        let connections: ConnectionArgs = defaults();
        assert_eq!(connections.max_connections, 1024);
        let auto: AutoCompactArgs = defaults();
        assert_eq!(auto.compact_min_files, 16);
        let compact: CompactArgs = defaults();
        assert_eq!(compact.target_rows, 4_000_000);
    }

    /// `FORKLINE_*` variables are the command line's, not the library's defaults.
    #[test]
    fn defaults_ignore_the_environment() {
        let command = <GlobalArgs as clap::Args>::augment_args(clap::Command::new("x"));
        let envs: Vec<_> = command
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        assert!(envs.contains(&"FORKLINE_MEMORY_MB".to_string()), "{envs:?}");
        let cleared = <GlobalArgs as clap::Args>::augment_args(clap::Command::new("x"))
            .mut_args(|a| a.env(None));
        assert!(cleared.get_arguments().all(|a| a.get_env().is_none()));
    }
}

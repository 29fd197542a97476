//! `--config-file`: the global options ([`GlobalArgs`]: store, S3 settings,
//! engine limits) from a TOML file, for deployments that would rather not
//! repeat them per command.
//!
//! Keys are the long flag names (`s3-endpoint = "http://…"`). The file is
//! read as the very struct the flags fill (serde refuses unknown keys and
//! values of the wrong type), and then each of its keys that neither a flag
//! nor its `FORKLINE_*` variable set is handed to clap as `--key=value`, so
//! the file's values pass the flags' own checks, and a flag or variable beats
//! the file, which beats the defaults.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::cli::Cli;
use crate::error::{Error, Result};
use crate::options::GlobalArgs;

/// Reads `path` as a table of global options, refusing unknown keys and
/// values of the wrong type.
fn load(path: &Path) -> Result<toml::Table> {
    let invalid = |why: String| Error::invalid(format!("config file {}: {why}", path.display()));
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str::<GlobalArgs>(&text).map_err(|e| invalid(e.to_string()))?;
    toml::from_str(&text).map_err(|e| invalid(e.to_string()))
}

/// The file's entries as flags, for the options `matches` did not get from
/// the command line or the environment.
fn file_flags(file: toml::Table, matches: &ArgMatches) -> Vec<OsString> {
    file.into_iter()
        .filter(|(key, _)| {
            !matches!(
                matches.value_source(&key.replace('-', "_")),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        })
        .map(|(key, value)| {
            let value = match value {
                toml::Value::String(text) => text,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(x) => x.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                // GlobalArgs took the file, and it has no field of these types.
                other @ (toml::Value::Datetime(_)
                | toml::Value::Array(_)
                | toml::Value::Table(_)) => {
                    format!("{other:?}")
                }
            };
            format!("--{key}={value}").into()
        })
        .collect()
}

impl Cli {
    /// Parses the command line (exiting on a usage error, as clap does) and
    /// applies `--config-file`, if one is named.
    pub fn parse_with_config_file() -> Result<Self> {
        Self::parse_from_with_config_file(std::env::args_os().collect())
    }

    /// [`Cli::parse_with_config_file`] over the given arguments (the binary's
    /// name first).
    pub fn parse_from_with_config_file(args: Vec<OsString>) -> Result<Self> {
        let matches = Cli::command().get_matches_from(&args);
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        let Some(path) = cli.config_file.clone() else {
            return Ok(cli);
        };
        let mut args = args;
        let flags = file_flags(load(&path)?, &matches);
        // Global options may come before the command: right after the binary's name.
        args.splice(1.min(args.len())..1.min(args.len()), flags);
        let matches = Cli::command().try_get_matches_from(&args).map_err(|e| {
            let why = e.to_string();
            let why = why.lines().next().unwrap_or_default();
            Error::invalid(format!(
                "config file {}: {}",
                path.display(),
                why.trim_start_matches("error: ")
            ))
        })?;
        Cli::from_arg_matches(&matches).map_err(|e| Error::invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(file: &str, args: &[&str]) -> Result<Cli> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("forkline.toml");
        std::fs::write(&path, file).unwrap();
        let mut argv: Vec<OsString> = vec!["forkline".into(), "--config-file".into(), path.into()];
        argv.extend(args.iter().map(OsString::from));
        Cli::parse_from_with_config_file(argv)
    }

    #[test]
    fn the_file_fills_what_flags_leave_unset() {
        let file = "store = \"/from/file\"\nmemory-mb = 512\nthreads = 3\ns3-allow-http = true\nstore-retry-s = 2.5\n";
        let cli = parse(file, &["sql", "SELECT 1"]).unwrap();
        assert_eq!(cli.global.store, "/from/file");
        assert_eq!(cli.global.memory_mb, 512);
        assert_eq!(cli.global.threads, Some(3));
        assert_eq!(cli.global.s3_allow_http, Some(true));
        assert_eq!(cli.global.store_retry_s, 2.5);
        assert_eq!(cli.global.refresh_interval_ms, 250, "default");
        // A flag before or after the command beats the file.
        let cli = parse(
            file,
            &["--memory-mb", "64", "sql", "--threads=5", "SELECT 1"],
        )
        .unwrap();
        assert_eq!((cli.global.memory_mb, cli.global.threads), (64, Some(5)));
        assert_eq!(cli.global.store, "/from/file");
    }

    #[test]
    fn the_file_is_checked_as_the_flags_are() {
        for (file, says) in [
            ("store-retry-s = 0\n", "store-retry-s"),
            ("store-retry-s = 3601\n", "store-retry-s"),
            ("memory-mb = -1\n", "memory-mb"),
            ("s3-allow-http = \"yes\"\n", "s3-allow-http"),
            ("threads = 1.5\n", "threads"),
            ("listen = \"0.0.0.0:1\"\n", "listen"),
            ("config-file = \"x\"\n", "config-file"),
        ] {
            let err = parse(file, &["sql", "SELECT 1"]).unwrap_err().to_string();
            assert!(
                err.contains("forkline.toml") && err.contains(says),
                "{file}: {err}"
            );
        }
    }
}

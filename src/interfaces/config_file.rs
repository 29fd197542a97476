//! `--config-file`: the global options (store, S3 settings, engine limits) from
//! a TOML file, for deployments that would rather not repeat them per command.
//!
//! Keys are the long flag names (`s3-endpoint = "http://…"`). A flag or its
//! `FORKLINE_*` variable beats the file, and the file beats the defaults.

use std::path::Path;

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

use super::cli::Cli;
use crate::error::{Error, Result};

/// The keys a config file may hold; anything else is refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    store: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_allow_http: Option<bool>,
    s3_path_style: Option<bool>,
    store_retry_s: Option<f64>,
    refresh_interval_ms: Option<u64>,
    memory_mb: Option<usize>,
    threads: Option<usize>,
}

impl ConfigFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(format!("cannot read config file {}: {e}", path.display()))
        })?;
        let file: ConfigFile = toml::from_str(&text)
            .map_err(|e| Error::invalid(format!("config file {}: {e}", path.display())))?;
        if let Some(s) = file.store_retry_s {
            super::cli::check_retry_seconds(s).map_err(|why| {
                Error::invalid(format!(
                    "config file {}: store-retry-s: {why}",
                    path.display()
                ))
            })?;
        }
        Ok(file)
    }

    /// Fills every option of `cli` that neither the command line nor the
    /// environment set (`matches` tells which did).
    pub fn apply(self, cli: &mut Cli, matches: &ArgMatches) {
        let unset = |id: &str| {
            !matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        if let Some(v) = self.store.filter(|_| unset("store")) {
            cli.store = v;
        }
        if let Some(v) = self.s3_endpoint.filter(|_| unset("s3_endpoint")) {
            cli.s3_endpoint = Some(v);
        }
        if let Some(v) = self.s3_region.filter(|_| unset("s3_region")) {
            cli.s3_region = Some(v);
        }
        if let Some(v) = self.s3_allow_http.filter(|_| unset("s3_allow_http")) {
            cli.s3_allow_http = Some(v);
        }
        if let Some(v) = self.s3_path_style.filter(|_| unset("s3_path_style")) {
            cli.s3_path_style = Some(v);
        }
        if let Some(v) = self.store_retry_s.filter(|_| unset("store_retry_s")) {
            cli.store_retry_s = v;
        }
        if let Some(v) = self
            .refresh_interval_ms
            .filter(|_| unset("refresh_interval_ms"))
        {
            cli.refresh_interval_ms = v;
        }
        if let Some(v) = self.memory_mb.filter(|_| unset("memory_mb")) {
            cli.memory_mb = v;
        }
        if let Some(v) = self.threads.filter(|_| unset("threads")) {
            cli.threads = Some(v);
        }
    }
}

impl Cli {
    /// Parses the command line (exiting on a usage error, as clap does) and
    /// applies `--config-file`, if one is named.
    pub fn parse_with_config_file() -> Result<Self> {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().get_matches();
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if let Some(path) = cli.config_file.clone() {
            ConfigFile::load(&path)?.apply(&mut cli, &matches);
        }
        Ok(cli)
    }
}

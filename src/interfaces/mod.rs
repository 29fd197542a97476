//! Front doors over the engine: result formats, the HTTP server, the CLI.

pub mod cli;
pub mod config_file;
pub mod export;
pub mod flight;
pub mod format;
pub mod http;
pub mod report;

//! Front doors over the engine: result formats, the HTTP server, the CLI.

pub mod cli;
pub mod format;
pub mod http;

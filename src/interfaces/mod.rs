//! Front doors over the engine: result formats, the HTTP server, the CLI.

pub mod cli;
pub mod config_file;
mod connection_limits;
pub mod flight;
pub mod format;
pub mod http;
mod request_id;

pub use connection_limits::ConnectionLimits;

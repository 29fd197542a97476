//! How long a client may take and how many may be connected at once, on
//! every listener.

use std::time::Duration;

/// Limits on client connections, the same for the HTTP and Flight SQL listeners.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Longest wait for a complete request head, on a new or an idle kept-alive connection.
    pub header_timeout: Duration,
    /// Longest a request body may take to arrive.
    pub body_timeout: Duration,
    /// Connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        (&crate::options::ConnectionArgs::default()).into()
    }
}

impl From<&crate::options::ConnectionArgs> for ConnectionLimits {
    fn from(args: &crate::options::ConnectionArgs) -> Self {
        Self {
            header_timeout: Duration::from_secs_f64(args.http_header_timeout_s),
            body_timeout: Duration::from_secs_f64(args.http_body_timeout_s),
            max_connections: args.max_connections as usize,
        }
    }
}

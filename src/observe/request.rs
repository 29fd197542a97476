//! One context per request, from authentication to the query log: who asks
//! (the key's [`Scope`]), through which door ([`Interface`]) and under which
//! id, so a slow query in `system.queries`, the log lines of its request and
//! the client's own logs can be tied together.

use std::fmt;
use std::ops::Deref;

use crate::scope::Scope;

/// Longest request id accepted from a client, in bytes.
pub const MAX_REQUEST_ID: usize = 128;

/// The header (HTTP) and metadata key (Flight) a request id travels in.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The front door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// `POST /api/sql`.
    Http,
    /// Arrow Flight SQL.
    Flight,
    /// `GET /api/report` (one query per metric, admitted as one).
    Report,
    /// `GET /api/export`.
    Export,
    /// The read API of the pluto SDK (`/api/runs/...`), whose SQL forkline writes.
    Sdk,
    /// The web console's pages (`/api/console/...`), whose queries forkline plans.
    Console,
    /// In-process callers: the CLI, benches, tests.
    Cli,
}

impl Interface {
    /// The name in `system.queries` and the `interface` label of the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Interface::Http => "http",
            Interface::Flight => "flight",
            Interface::Report => "report",
            Interface::Export => "export",
            Interface::Sdk => "sdk",
            Interface::Cli => "cli",
            Interface::Console => "console",
        }
    }
}

/// A request's id: the client's `x-request-id` where it is sane, else a new one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// A new random id (32 hex digits).
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The client's id when it is 1 to [`MAX_REQUEST_ID`] bytes of printable
    /// ASCII (no spaces or controls, so it cannot forge a log line or a
    /// header), else a new one.
    pub fn from_client(sent: Option<&[u8]>) -> Self {
        match sent {
            Some(id)
                if !id.is_empty()
                    && id.len() <= MAX_REQUEST_ID
                    && id.iter().all(|b| b.is_ascii_graphic()) =>
            {
                Self(String::from_utf8_lossy(id).into_owned())
            }
            _ => Self::new(),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who asks, through which door, under which id. Authentication attaches it
/// to every keyed request; handlers take it as a required extractor, so no
/// handler runs without its scope, and queries are recorded under it.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// What the request's key opens.
    pub scope: Scope,
    /// The front door it came through.
    pub interface: Interface,
    /// Its id, echoed to the client and written on its log lines and queries.
    pub id: RequestId,
}

impl RequestContext {
    /// The context of a request with `scope` through `interface`.
    pub fn new(scope: Scope, interface: Interface, id: RequestId) -> Self {
        Self {
            scope,
            interface,
            id,
        }
    }

    /// An in-process caller (the CLI, benches, tests): every project, a new id.
    pub fn local(interface: Interface) -> Self {
        Self::new(Scope::unrestricted(), interface, RequestId::new())
    }
}

/// A request is used where its scope is asked for (`request.projects`).
impl Deref for RequestContext {
    type Target = Scope;

    fn deref(&self) -> &Scope {
        &self.scope
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_client_id_is_kept_and_any_other_replaced() {
        assert_eq!(RequestId::from_client(Some(b"abc-123")).as_str(), "abc-123");
        let longest = vec![b'a'; MAX_REQUEST_ID];
        assert_eq!(
            RequestId::from_client(Some(&longest)).as_str().len(),
            MAX_REQUEST_ID
        );
        for bad in [
            &b""[..],
            &b"has space"[..],
            &b"line\nbreak"[..],
            "caf\u{e9}".as_bytes(),
            &[b'a'; MAX_REQUEST_ID + 1][..],
        ] {
            let made = RequestId::from_client(Some(bad));
            assert_ne!(made.as_str().as_bytes(), bad);
            assert_eq!(made.as_str().len(), 32, "{bad:?}");
        }
        assert_ne!(RequestId::from_client(None), RequestId::from_client(None));
    }
}

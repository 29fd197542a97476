//! One error type for the crate, and the one classification of it,
//! [`ErrorKind`], which each interface maps with an exhaustive `match` (HTTP
//! statuses, Flight codes, metric labels), so a new kind cannot be forgotten.

use arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// How DataFusion displays an object-store error inside its own.
const OBJECT_STORE_ERROR: &str = "Object Store error: ";

/// Crate-wide result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in forkline, split by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent something we refuse (bad argument, out-of-range step, …).
    #[error("{0}")]
    InvalidInput(String),
    /// The caller's key is missing or not a key of this installation.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's key does not open what the request names, or cannot write.
    #[error("{0}")]
    Forbidden(String),
    /// The request is larger than a documented limit allows.
    #[error("{0}")]
    TooLarge(String),
    /// The caller named a run (or other object) that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A concurrent writer won the commit race more often than we retry.
    #[error("{0}")]
    Conflict(String),
    /// The store could not take the write now; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    /// The store is damaged: a file a table snapshot references is missing or unreadable.
    #[error("{0}")]
    Damaged(String),
    /// A fault of this server that no retry of the request mends.
    #[error("{0}")]
    Internal(String),
    /// A commit shared by several requests failed; each request is answered
    /// with the one cause, whose kind it keeps (a store outage stays
    /// `Unavailable`, anything else of the server's is `Internal`). The
    /// first field names what was not committed ("points", "run changes").
    #[error("{0} were not committed: {1}")]
    Commit(&'static str, std::sync::Arc<Error>),
    /// SQL planning or execution failed.
    #[error("{0}")]
    Query(#[source] DataFusionError),
    /// The Delta layer (transaction log, object store underneath) failed.
    #[error("storage error: {0}")]
    Storage(#[from] deltalake::DeltaTableError),
    /// The object store failed outside of a Delta operation.
    #[error("object store error: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// Arrow encoding or decoding failed.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet encoding or decoding failed.
    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Local I/O failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A query ran past the server's time limit and was cancelled.
    #[error("{0}")]
    TimedOut(String),
    /// The server runs and queues as many queries as it may; the caller may retry.
    #[error("{0}")]
    Busy(String),
}

impl From<DataFusionError> for Error {
    /// Our own errors travel through DataFusion wrapped as `External`; they
    /// come out as they went in, so their kind (and HTTP status) survives.
    fn from(e: DataFusionError) -> Self {
        match e {
            DataFusionError::External(inner) if inner.is::<Error>() => {
                *inner.downcast::<Error>().expect("checked by is")
            }
            other => Error::Query(other),
        }
    }
}

/// Who is at fault and what the caller can do about it: derived once, by
/// [`Error::kind`], from an error however deep it was wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is wrong (bad argument, SQL that does not plan); resending it fails again.
    InvalidInput,
    /// No key, or not a key of this installation.
    Unauthenticated,
    /// The key does not open what the request names, or may not write.
    Forbidden,
    /// What the request names does not exist (for this key).
    NotFound,
    /// A concurrent writer won the commit race more often than forkline retries.
    Conflict,
    /// The request, or what it asks to produce, is over a documented size limit.
    TooLarge,
    /// The query needs more memory than the server's pool may give one query.
    ResourcesExhausted,
    /// The query ran past the server's time limit and was cancelled.
    TimedOut,
    /// Every query slot and queue place is taken; retry shortly.
    Busy,
    /// The store could not be reached or refused service; retry.
    Unavailable,
    /// forkline's fault, or a damaged store.
    Internal,
}

impl ErrorKind {
    /// Every kind, for tables that must cover them all.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::InvalidInput,
        ErrorKind::Unauthenticated,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::TooLarge,
        ErrorKind::ResourcesExhausted,
        ErrorKind::TimedOut,
        ErrorKind::Busy,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
    ];

    /// A stable snake_case name (metric labels, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::ResourcesExhausted => "resources_exhausted",
            ErrorKind::TimedOut => "timed_out",
            ErrorKind::Busy => "busy",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

impl From<Error> for DataFusionError {
    /// How our errors cross DataFusion's APIs (a UDF, a stream) keeping their kind.
    fn from(e: Error) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

impl Error {
    /// Shorthand for an [`Error::InvalidInput`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }

    /// Whether the store could not be reached or refused service: the
    /// operation may succeed if retried (HTTP 503). A failed object-store
    /// request deep inside a query or a Parquet read counts too; a missing
    /// object does not, as a table that references one is damaged.
    pub fn is_unavailable(&self) -> bool {
        if let Error::Commit(_, cause) = self {
            return cause.is_unavailable();
        }
        if matches!(
            self,
            Error::Storage(_) | Error::ObjectStore(_) | Error::Unavailable(_) | Error::Busy(_)
        ) {
            return true;
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        let mut last = None;
        while let Some(e) = cause {
            if let Some(e) = e.downcast_ref::<object_store::Error>() {
                return !matches!(e, object_store::Error::NotFound { .. });
            }
            last = Some(e);
            cause = e.source();
        }
        // DataFusion's Parquet reader flattens a failed metadata fetch into a
        // string ("Failed to fetch metadata for file …: Object Store error: …"),
        // so the chain ends in text; object_store says "not found" for a
        // missing object.
        last.is_some_and(|e| {
            let text = e.to_string();
            text.contains(OBJECT_STORE_ERROR) && !text.contains(" not found")
        })
    }

    /// Whether the store (or a commit to it) failed: unavailable, but not
    /// because the server is busy with queries.
    pub fn is_store_failure(&self) -> bool {
        !matches!(self, Error::Busy(_)) && self.is_unavailable()
    }

    /// What kind of failure this is; see [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Error::Forbidden(_) => ErrorKind::Forbidden,
            Error::TooLarge(_) => ErrorKind::TooLarge,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::TimedOut(_) => ErrorKind::TimedOut,
            Error::Busy(_) => ErrorKind::Busy,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Damaged(_) | Error::Internal(_) => ErrorKind::Internal,
            Error::Commit(_, cause) => cause.kind(),
            Error::Query(e) => query_error_kind(e, self),
            Error::Storage(_)
            | Error::ObjectStore(_)
            | Error::Arrow(_)
            | Error::Parquet(_)
            | Error::Io(_) => {
                if self.is_unavailable() {
                    ErrorKind::Unavailable
                } else {
                    ErrorKind::Internal
                }
            }
        }
    }
}

/// The kind of a DataFusion error: ours travel inside it and keep their
/// kind; a store failure anywhere in its chain is `Unavailable`; plan, SQL
/// and value errors are the caller's; the rest (execution, I/O, internal
/// errors, a panicked operator) are the server's.
fn query_error_kind(e: &DataFusionError, whole: &Error) -> ErrorKind {
    if whole.is_unavailable() {
        return ErrorKind::Unavailable;
    }
    match e.find_root() {
        DataFusionError::Plan(_)
        | DataFusionError::SQL(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => ErrorKind::InvalidInput,
        // Casts, overflows and division by zero: the values the query asked for.
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            ArrowError::IoError(..) | ArrowError::ExternalError(_) => ErrorKind::Internal,
            _ => ErrorKind::InvalidInput,
        },
        DataFusionError::ResourcesExhausted(_) => ErrorKind::ResourcesExhausted,
        DataFusionError::External(inner) => match inner.downcast_ref::<Error>() {
            Some(ours) => ours.kind(),
            None => ErrorKind::Internal,
        },
        _ => ErrorKind::Internal,
    }
}

/// The table of error kinds in `docs/http-api.md`, `(kind, HTTP, Flight)` per
/// row, so the interfaces' tests can hold their mappings to what users read.
#[cfg(test)]
pub(crate) fn documented_error_table() -> Vec<(ErrorKind, String, String)> {
    let doc = include_str!("../docs/http-api.md");
    let section = doc
        .split("\n## Errors\n")
        .nth(1)
        .expect("docs/http-api.md has an Errors section");
    let rows: Vec<_> = section
        .lines()
        .skip_while(|l| !l.starts_with("| kind"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`');
            let kind = ErrorKind::ALL
                .into_iter()
                .find(|k| k.as_str() == name)
                .unwrap_or_else(|| panic!("docs/http-api.md names an unknown kind `{name}`"));
            (
                kind,
                cells[2].to_string(),
                cells[3].trim_matches('`').to_string(),
            )
        })
        .collect();
    let mut kinds: Vec<_> = rows.iter().map(|r| r.0.as_str()).collect();
    kinds.sort();
    let mut all: Vec<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
    all.sort();
    assert_eq!(
        kinds, all,
        "the error table of docs/http-api.md lists every kind once"
    );
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::errors::ParquetError;

    fn store_error(not_found: bool) -> object_store::Error {
        let source = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        if not_found {
            object_store::Error::NotFound {
                path: "t/part-0.parquet".into(),
                source,
            }
        } else {
            object_store::Error::Generic {
                store: "S3",
                source,
            }
        }
    }

    /// How a failed GET reaches us from a query: DataFusion → Parquet → object store.
    fn inside_a_query(e: object_store::Error) -> Error {
        let parquet = ParquetError::External(Box::new(e));
        Error::Query(DataFusionError::ParquetError(Box::new(parquet)).context("scanning metrics"))
    }

    /// As DataFusion's Parquet reader reports a failed footer fetch: as text.
    fn flattened(e: object_store::Error) -> Error {
        let e = DataFusionError::ObjectStore(Box::new(e));
        let parquet = ParquetError::General(format!("Failed to fetch metadata for file x: {e}"));
        Error::Query(DataFusionError::ParquetError(Box::new(parquet)))
    }

    #[test]
    fn a_store_failure_anywhere_in_the_chain_is_unavailable() {
        assert!(flattened(store_error(false)).is_unavailable());
        assert!(!flattened(store_error(true)).is_unavailable());
        assert!(inside_a_query(store_error(false)).is_unavailable());
        assert!(Error::ObjectStore(store_error(false)).is_unavailable());
        assert!(!inside_a_query(store_error(true)).is_unavailable());
        assert_eq!(
            inside_a_query(store_error(false)).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(flattened(store_error(false)).kind(), ErrorKind::Unavailable);
        let plan = Error::Query(DataFusionError::Plan("no such column".into()));
        assert!(!plan.is_unavailable());
        assert_eq!(plan.kind(), ErrorKind::InvalidInput);
        assert!(!Error::Damaged("missing file".into()).is_unavailable());
        assert_eq!(
            Error::Damaged("missing file".into()).kind(),
            ErrorKind::Internal
        );
    }

    #[test]
    fn kinds_survive_wrapping_and_execution_errors_are_the_servers() {
        let ours = DataFusionError::External(Box::new(Error::TooLarge("big".into())));
        let wrapped = Error::Query(ours.context("in a stream").context("and again"));
        assert_eq!(wrapped.kind(), ErrorKind::TooLarge);
        let exec = Error::Query(DataFusionError::Execution("join state lost".into()));
        assert_eq!(exec.kind(), ErrorKind::Internal);
        let memory = Error::Query(DataFusionError::ResourcesExhausted("pool".into()));
        assert_eq!(memory.kind(), ErrorKind::ResourcesExhausted);
        let divide = Error::Query(DataFusionError::ArrowError(
            Box::new(ArrowError::DivideByZero),
            None,
        ));
        assert_eq!(divide.kind(), ErrorKind::InvalidInput);
        let names: std::collections::HashSet<_> =
            ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
    }
}

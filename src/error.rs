//! One error type for the crate; interfaces map it to HTTP statuses and exit codes.

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

    /// Whether the caller, not the server, is at fault.
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::InvalidInput(_)
            | Error::NotFound(_)
            | Error::Unauthenticated(_)
            | Error::Forbidden(_)
            | Error::TooLarge(_) => true,
            Error::Query(e) => is_user_query_error(e),
            _ => false,
        }
    }
}

/// Plan, SQL and schema errors are the caller's; I/O and internal errors are ours.
pub fn is_user_query_error(e: &DataFusionError) -> bool {
    match e.find_root() {
        DataFusionError::Plan(_)
        | DataFusionError::SQL(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Execution(_)
        | DataFusionError::ArrowError(..) => true,
        DataFusionError::External(inner) => inner
            .downcast_ref::<Error>()
            .is_some_and(Error::is_user_error),
        _ => false,
    }
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
        assert!(!inside_a_query(store_error(false)).is_user_error());
        let plan = Error::Query(DataFusionError::Plan("no such column".into()));
        assert!(!plan.is_unavailable() && plan.is_user_error());
        assert!(!Error::Damaged("missing file".into()).is_unavailable());
    }
}

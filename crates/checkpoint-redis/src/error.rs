//! The one place native `redis` errors become [`checkpoint_core::Error`].

use checkpoint_core::Error;
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// The backend name used in errors.
pub(crate) const STORE: &str = "redis";

/// Maps a `redis` error.
///
/// Retryable: I/O errors (a dropped or refused connection, a response timeout), and the server
/// states that pass (`LOADING`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `READONLY` during a
/// failover, `MOVED` and `ASK` that the cluster client could not follow within its own
/// retries (a slot moving), no connection to the node owning a slot (a cluster node down), `BUSY` while another script runs, `NOSCRIPT` when the script cache was flushed
/// between the client's reload and its call: the script did not run). A script that ran but
/// whose reply was lost is resolved by running it again: every script, run again after it ran,
/// re-reads the record and returns the same success.
///
/// Not retryable: authentication, configuration and protocol errors, script errors, and
/// `WRONGTYPE` (a key of this store's layout holding another type: a schema mismatch).
pub(crate) fn from_redis(err: RedisError) -> Error {
    if has_code(&err, "WRONGTYPE") {
        return Error::SchemaMismatch {
            store: STORE,
            detail: format!("a key of this app holds another type: {err}"),
        };
    }
    let retryable = err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.kind() == ErrorKind::ClusterConnectionNotFound
        || matches!(
            err.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::NoScript
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
            )
        )
        || has_code(&err, "BUSY");
    tracing::debug!(retryable, error = %err, "redis error");
    Error::backend(STORE, retryable, err)
}

/// Whether `err`, or one of the server errors of a failed pipeline, carries `code` (a code
/// the redis crate has no kind for, such as `WRONGTYPE`, is only readable this way).
pub(crate) fn has_code(err: &RedisError, code: &str) -> bool {
    err.code() == Some(code)
        || err
            .clone()
            .into_server_errors()
            .is_some_and(|items| items.iter().any(|(_, e)| e.code() == code))
}

/// Whether `err`, or one of the server errors of a failed pipeline, has a message starting with
/// `prefix` (the text after the code: `Function not found` of `ERR Function not found`).
pub(crate) fn has_detail(err: &RedisError, prefix: &str) -> bool {
    err.detail().is_some_and(|d| d.starts_with(prefix))
        || err.clone().into_server_errors().is_some_and(|items| {
            items
                .iter()
                .any(|(_, e)| e.details().is_some_and(|d| d.starts_with(prefix)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_retry_and_script_errors_do_not() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(from_redis(io).is_retryable());
        let script = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "ERR",
            "boom".to_owned(),
        ));
        assert!(!from_redis(script).is_retryable());
        let loading =
            RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "loading"));
        assert!(from_redis(loading).is_retryable());
    }
}

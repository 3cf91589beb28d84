//! The one place sqlx errors become [`checkpoint_core::Error`].

use checkpoint_core::Error;
use sqlx::mysql::MySqlDatabaseError;

/// The backend name in errors and capabilities.
pub(crate) const STORE: &str = "mysql";

/// `ER_DUP_ENTRY`: a duplicate primary key. Never retried blindly: the store decides what a
/// duplicate means where it can happen (a racing insert of the same lease).
pub(crate) const ER_DUP_ENTRY: u16 = 1062;
/// `ER_LOCK_WAIT_TIMEOUT`: a row lock was not granted within `innodb_lock_wait_timeout`.
pub(crate) const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
/// `ER_LOCK_DEADLOCK`: InnoDB chose this transaction as a deadlock victim and rolled it back.
pub(crate) const ER_LOCK_DEADLOCK: u16 = 1213;
/// `ER_CON_COUNT_ERROR`: too many connections.
pub(crate) const ER_CON_COUNT_ERROR: u16 = 1040;
/// `ER_SERVER_SHUTDOWN`: the server is shutting down.
pub(crate) const ER_SERVER_SHUTDOWN: u16 = 1053;
/// `ER_QUERY_INTERRUPTED`: the statement was killed (`KILL QUERY`, a shutdown).
pub(crate) const ER_QUERY_INTERRUPTED: u16 = 1317;
/// `ER_CONNECTION_KILLED` (MariaDB): the connection was killed (`KILL CONNECTION`).
pub(crate) const ER_CONNECTION_KILLED: u16 = 1927;
/// `ER_CLIENT_INTERACTION_TIMEOUT` (MySQL 8.0.24+): the server closed an idle connection.
pub(crate) const ER_CLIENT_INTERACTION_TIMEOUT: u16 = 4031;
/// `ER_BAD_FIELD_ERROR`: an existing table lacks a column a migration expects.
pub(crate) const ER_BAD_FIELD_ERROR: u16 = 1054;
/// `ER_DUP_FIELDNAME`: an existing table already has a column a migration adds.
pub(crate) const ER_DUP_FIELDNAME: u16 = 1060;

/// Server error numbers of conditions that may clear by themselves.
const TRANSIENT: &[u16] = &[
    ER_LOCK_DEADLOCK,
    ER_LOCK_WAIT_TIMEOUT,
    ER_CON_COUNT_ERROR,
    ER_SERVER_SHUTDOWN,
    ER_QUERY_INTERRUPTED,
    ER_CONNECTION_KILLED,
    ER_CLIENT_INTERACTION_TIMEOUT,
];

/// Maps a sqlx error, deciding whether retrying can help.
///
/// Retryable: I/O errors (a dropped, reset or refused connection, including one closed by
/// `KILL CONNECTION`), pool acquire timeouts, a crashed pool worker, and the server errors of
/// transient conditions: 1213 deadlock (the transaction was rolled back), 1205 lock wait
/// timeout, 1040 too many connections, 1053 server shutdown, 1317 query interrupted, 1927
/// connection killed (MariaDB), 4031 idle connection closed (MySQL). Everything else is not:
/// 1062 duplicate key and other constraint violations, syntax or unknown-object errors,
/// decoding errors, a closed pool, bad configuration. A failed lease condition never reaches
/// this function: it is a statement that matched no row, classified by the store from a
/// re-read.
pub(crate) fn from_sqlx(err: sqlx::Error) -> Error {
    let retryable = is_retryable(&err);
    Error::backend(STORE, retryable, err)
}

fn is_retryable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(_) => error_number(err).is_some_and(is_transient_number),
        _ => false,
    }
}

/// Whether a server error number names a condition that may clear by itself.
pub(crate) fn is_transient_number(number: u16) -> bool {
    TRANSIENT.contains(&number)
}

/// The server's error number of a database error, if `err` is one.
pub(crate) fn error_number(err: &sqlx::Error) -> Option<u16> {
    match err {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_numbers_are_retryable_and_others_are_not() {
        for number in [1213, 1205, 1040, 1053, 1317, 1927, 4031] {
            assert!(is_transient_number(number), "{number}");
        }
        for number in [1062, 1054, 1064, 1146, 1406, 1690, 3819] {
            assert!(!is_transient_number(number), "{number}");
        }
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(from_sqlx(sqlx::Error::Io(io)).is_retryable());
        assert!(from_sqlx(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!from_sqlx(sqlx::Error::PoolClosed).is_retryable());
        assert!(!from_sqlx(sqlx::Error::RowNotFound).is_retryable());
        assert!(!from_sqlx(sqlx::Error::Protocol("garbage".into())).is_retryable());
    }
}

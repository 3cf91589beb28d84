//! The one place sqlx errors become [`checkpoint_core::Error`].

use checkpoint_core::Error;

/// The backend name in errors and capabilities.
pub(crate) const STORE: &str = "postgres";

/// SQLSTATE numeric_value_out_of_range.
const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";

/// Maps a sqlx error, deciding whether retrying can help.
///
/// Retryable: I/O errors (a dropped or refused connection), pool acquire timeouts, a crashed
/// pool worker, and the server codes of transient conditions: class 08 (connection exception),
/// `40001` serialization_failure, `40P01` deadlock_detected, `55P03` lock_not_available, `57P01`
/// admin_shutdown (`pg_terminate_backend`, a restart), `57P02` crash_shutdown, `57P03`
/// cannot_connect_now, `53300` too_many_connections. Everything else is not: constraint
/// violations, syntax or undefined-object errors, decoding errors, a closed pool, bad
/// configuration. A failed lease condition never reaches this function: it is a statement that
/// matched no row, classified by the store from a re-read.
///
/// `22003` numeric_value_out_of_range can only come from a counter passing `i64::MAX`, the
/// largest a `bigint` column holds: in practice the fencing token of a record imported or
/// edited with a token near it, which a grant or steal would bump. That is
/// [`Error::InvalidInput`] naming `token` (nothing was written), never an overflow or a
/// generic backend error.
pub(crate) fn from_sqlx(err: sqlx::Error) -> Error {
    if sqlstate(&err).as_deref() == Some(NUMERIC_VALUE_OUT_OF_RANGE) {
        return Error::invalid(
            "token",
            "the fencing token would pass i64::MAX, the largest a PostgreSQL bigint holds; \
             nothing was written",
        );
    }
    let retryable = is_retryable(&err);
    Error::backend(STORE, retryable, err)
}

fn is_retryable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_transient_sqlstate(&code)),
        _ => false,
    }
}

/// Whether a SQLSTATE names a condition that may clear by itself.
pub(crate) fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03" | "53300"
        )
}

/// The SQLSTATE of a database error, if `err` is one.
pub(crate) fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes_are_retryable_and_others_are_not() {
        for code in [
            "40001", "40P01", "57P01", "08006", "08003", "53300", "55P03",
        ] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "23514", "42601", "42P01", "22003", "XX000"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(from_sqlx(sqlx::Error::Io(io)).is_retryable());
        assert!(from_sqlx(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!from_sqlx(sqlx::Error::PoolClosed).is_retryable());
        assert!(!from_sqlx(sqlx::Error::RowNotFound).is_retryable());
        assert!(!from_sqlx(sqlx::Error::Protocol("garbage".into())).is_retryable());
    }
}

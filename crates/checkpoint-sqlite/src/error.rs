//! The one mapping from native SQLite errors into [`checkpoint_core::Error`].

use checkpoint_core::Error;
use rusqlite::ErrorCode;

/// The backend name used in errors.
pub(crate) const STORE: &str = "sqlite";

/// Maps a rusqlite error to [`Error::Backend`].
///
/// Retryable: `SQLITE_BUSY` (another connection or process held the write lock for longer than
/// the busy timeout, or a WAL recovery was running) and `SQLITE_LOCKED`. In both cases the
/// statement did nothing and the transaction it belonged to is rolled back, so running the whole
/// operation again re-reads the record and re-applies the rule: never a guess. Everything else
/// (I/O errors, a full disk, a corrupt file, misuse) is not retryable.
pub(crate) fn from_sqlite(e: rusqlite::Error) -> Error {
    let retryable = matches!(
        &e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    );
    Error::backend(STORE, retryable, e)
}

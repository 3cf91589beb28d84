//! The lease/checkpoint contract on SQLite: the embedded default backend.
//!
//! One database file holds the leases, checkpoints and live workers of any number of apps
//! (rows are keyed by app), and may be shared by any number of store handles and processes on
//! one host. Open it with [`SqliteStore::open`] from a [`SqliteConfig`] (a URL such as
//! `sqlite://data/leases.db?synchronous=full`, or the builder), then use it as any
//! [`checkpoint_core::Store`].
//!
//! ```
//! use std::time::Duration;
//! use checkpoint_core::{AppName, Checkpointer, LeaseManager, LeaseDuration, LeaseKey, Position, WorkerId};
//! use checkpoint_sqlite::{SqliteConfig, SqliteStore};
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let store = SqliteStore::open(SqliteConfig::memory(), AppName::new("billing")?).await?;
//! let key = LeaseKey::parse("orders", "shardId-000000000000")?;
//! let me = WorkerId::new("worker-1")?;
//! let lease = store.get_lease(&key, &me, LeaseDuration::new(Duration::from_secs(10))?).await?;
//! store.checkpoint_sequence(&key, &me, lease.token, &Position::sequence("4959033827149025660855969")?).await?;
//! # Ok::<(), checkpoint_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Atomicity
//!
//! Every write operation runs inside one SQLite transaction begun with `BEGIN IMMEDIATE`: it
//! takes the database's single write lock, reads the row, applies the matching
//! [`checkpoint_core::rules`] function and writes back what the rule changed (the deadline
//! alone for a renewal, the checkpoint columns alone for a checkpoint, else the whole row), so
//! its results are exactly the reference store's. Writes waiting at the same moment
//! share one transaction, each inside a savepoint of its own (group commit): an operation that
//! fails is rolled back alone, and every reply is sent after `COMMIT` returned. Writers in other
//! processes wait for the lock (up to the busy timeout, default 5 s) and then see the committed
//! row. A busy database is a retryable error, retried inside with [`checkpoint_core::Backoff`];
//! a retry re-reads the row and re-applies the rule, so it can neither double-apply nor report
//! a write that did not happen.
//!
//! # Clock
//!
//! Expiry is judged by the host's clock ([`checkpoint_core::ClockSource::Host`]), read inside
//! each transaction while the write lock is held, at millisecond precision (deadlines are stored
//! as milliseconds since the Unix epoch). Every process sharing a file runs on the same host and
//! so on the same clock. Tests inject a [`checkpoint_core::ManualClock`] with
//! [`SqliteConfig::with_clock`].
//!
//! # Durability
//!
//! The database runs in WAL mode. A checkpoint that returned `Ok` is committed:
//!
//! - with [`Synchronous::Normal`] (default) it survives the process being killed or crashing;
//!   an operating-system crash or power loss may lose the last commits (the file stays
//!   consistent);
//! - with [`Synchronous::Full`] the log is flushed on every commit, so it also survives a power
//!   loss, at a cost: one `fsync` per commit (concurrent writers share one commit, and so one
//!   `fsync`).
//!
//! Measured rates (checkpoints per second, one task and eight tasks, next to SQLite driven
//! directly) are in `BENCHMARKS.md` at the repository root.
//!
//! An in-memory database ([`SqliteConfig::memory`]) lives as long as the store.
//!
//! # Blocking
//!
//! SQLite calls block, so they never run on the async executor: every connection lives on an
//! OS thread of its own and receives its work over a channel. One writer thread runs every
//! write (SQLite admits one writer at a time anyway, and within one process this avoids the
//! busy handler's sleeps); reads run on the other connections (default 4 in all,
//! [`SqliteConfig::with_max_connections`]), which WAL lets read beside the writer. Idle threads
//! and waiting tasks poll briefly before they sleep, because waking a sleeping thread costs more
//! than a whole operation. A tokio runtime is required.
//!
//! A file database has one more thread and connection: the WAL checkpointer, which copies the
//! write-ahead log into the database file in the background (`PASSIVE`, blocking no reader or
//! writer) whenever the writer has added [`SqliteConfig::with_wal_checkpoint_pages`] pages, so
//! no write waits for that copy and its `fsync`s. The frames committed while a background pass
//! ran are copied by the writer after its next commit (a few frames, but with the checkpoint's
//! two `fsync`s, which the writes of that one commit wait for: once per pass), so the log starts
//! over; a log that keeps growing regardless (ten times that many pages) is checkpointed by the
//! writer itself, as SQLite would do.
//!
//! # Transactional checkpoint
//!
//! [`SqliteStore::checkpoint_in_transaction`] writes the fenced checkpoint inside the caller's
//! own transaction (on a connection from [`SqliteStore::open_connection`]), so application state
//! and position commit or roll back together: exactly-once processing.
//!
//! # Capabilities
//!
//! | backend | expiry clock | transactional checkpoint | renew many | durability | multi-process |
//! | --- | --- | --- | --- | --- | --- |
//! | sqlite | host | yes | 1 round trip | Disk | yes |
//! | sqlite (memory) | host | no | 1 round trip | Process | no |
//!
//! # Schema
//!
//! See [`schema`]: versioned migrations recorded in the database; an incompatible existing table
//! is [`checkpoint_core::Error::SchemaMismatch`]. Where the schema is managed outside the
//! application, [`ddl`] returns it as one script and `migrate=false`
//! ([`SqliteConfig::with_migrations`]) opens the store without running any DDL.

mod config;
mod connections;
mod error;
mod rows;
pub mod schema;
mod store;
mod workers;

pub use config::{
    DEFAULT_BUSY_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_TABLE_PREFIX,
    DEFAULT_WAL_CHECKPOINT_PAGES, Location, MAX_CONNECTIONS, MAX_TABLE_PREFIX_BYTES,
    MAX_WAL_CHECKPOINT_PAGES, SqliteConfig, Synchronous,
};
pub use store::SqliteStore;

/// The DDL of the store's tables for `config`'s table prefix, as one SQL script (one
/// transaction) to run where the schema is managed outside the application: the version
/// table, every migration this crate knows and its version record. Open the store afterwards
/// with [`SqliteConfig::with_migrations`] off (`migrate=false`) and it runs no DDL.
///
/// ```
/// use checkpoint_sqlite::SqliteConfig;
///
/// let sql = checkpoint_sqlite::ddl(&SqliteConfig::memory().with_table_prefix("orders_"))?;
/// assert!(sql.contains(r#"CREATE TABLE "orders_leases""#));
/// # Ok::<(), checkpoint_core::Error>(())
/// ```
///
/// [`checkpoint_core::Error::InvalidInput`] naming `table_prefix` when it is not valid.
pub fn ddl(config: &SqliteConfig) -> checkpoint_core::Result<String> {
    config.validate()?;
    Ok(schema::ddl(&schema::Sql::new(config.table_prefix())))
}

/// The rusqlite version this crate is built on, for [`SqliteStore::checkpoint_in_transaction`].
pub use rusqlite;

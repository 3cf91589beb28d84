//! The lease/checkpoint contract on MySQL 8 and MariaDB (10.6 or newer), through sqlx.
//!
//! One pair of tables (`<prefix>_leases`, `<prefix>_workers`, in the URL's database) holds the
//! leases, checkpoints and live workers of any number of apps (rows are keyed by app), shared by
//! any number of workers on any number of hosts. Open it with [`MySqlStore::connect`] from a URL
//! (`mysql://user:password@host:3306/db?table=checkpoint`, or `mariadb://…`, the same driver),
//! [`MySqlStore::open`] from a [`MySqlConfig`] built by hand, or [`MySqlStore::from_pool`] on an
//! existing `MySqlPool`, then use it as any [`checkpoint_core::Store`]. Queries are checked at
//! run time (no compile-time macros), so building never needs a database.
//!
//! ```no_run
//! use std::time::Duration;
//! use checkpoint_core::{AppName, Checkpointer, LeaseManager, LeaseDuration, LeaseKey, Position, WorkerId};
//! use checkpoint_mysql::MySqlStore;
//!
//! # async fn demo() -> checkpoint_core::Result<()> {
//! let store = MySqlStore::connect(
//!     "mysql://root@127.0.0.1:3306/test?table=streaming",
//!     AppName::new("billing")?,
//! )
//! .await?;
//! let key = LeaseKey::parse("orders", "shardId-000000000000")?;
//! let me = WorkerId::new("worker-1")?;
//! let lease = store.get_lease(&key, &me, LeaseDuration::new(Duration::from_secs(10))?).await?;
//! store.checkpoint_sequence(&key, &me, lease.token, &Position::sequence("4959033827149025660855969")?).await?;
//! # Ok(()) }
//! ```
//!
//! # Atomicity
//!
//! Every operation is one atomic step: one statement, or one short transaction. MySQL and
//! MariaDB have no `RETURNING` on `UPDATE`, so a fenced write (renew, checkpoint, release,
//! steal, claim, reset) is a transaction of a conditional `UPDATE … WHERE owner = ? AND token =
//! ? …`, whose affected-rows count says whether the condition held, and a `SELECT` of the
//! record it wrote, under the row lock the `UPDATE` took. InnoDB evaluates the condition under
//! an exclusive row lock against the newest committed row, so of any number of racing writers
//! at most one passes it. `get_lease`, whose record may be absent, locks it with
//! `SELECT … FOR UPDATE`, applies the contract's rule ([`checkpoint_core::rules`]) and writes
//! the result (`UPDATE`, or `INSERT` when absent; a racing insert fails on the primary key and
//! runs again). `create_lease_if_absent` is one `INSERT` carrying a random nonce, so it answers
//! exactly whether this call created the record even when a reply was lost. Renew-many is one
//! `UPDATE … JOIN JSON_TABLE(?) …` per chunk of up to 2,500 leases
//! ([`MySqlConfig::with_renew_chunk`]), up to four chunks at once on separate connections, each
//! row matched on owner and its own token. When a statement matches no row, nothing was
//! written; the store re-reads the record and applies the contract's rule to it to name the
//! failed condition, so results are exactly the reference store's (the conformance suite's
//! model test holds it to that).
//!
//! Transient faults (a dropped connection, `KILL CONNECTION`, a server restart, a pool
//! timeout, deadlock 1213, lock wait timeout 1205) are retried with
//! [`checkpoint_core::Backoff`] ([`MySqlConfig::with_backoff`]); once it is spent the error is
//! a retryable [`checkpoint_core::Error::Backend`]. A retry runs the same conditional
//! transaction again, so a write whose reply was lost is resolved against the stored record,
//! never guessed.
//!
//! # Clock
//!
//! Expiry is judged by the server's clock ([`checkpoint_core::ClockSource::Server`]):
//! `UTC_TIMESTAMP(6)` inside the statement that grants, renews or tests a lease or heartbeat
//! (it is fixed at the start of each statement). Client clocks are never read, so workers on
//! hosts with skewed clocks still agree. Deadlines are `DATETIME(6)` in UTC (microseconds),
//! independent of the session's `time_zone`.
//!
//! # Durability
//!
//! A checkpoint that returned `Ok` was committed by InnoDB; it is as durable as the server's
//! settings make a commit (`innodb_flush_log_at_trx_commit = 1`, the default: it survives a
//! server crash; with semi-synchronous or Galera replication, a primary failover too).
//!
//! # Transactional checkpoint
//!
//! [`MySqlStore::checkpoint_in_transaction`] writes the fenced checkpoint inside the caller's
//! own `sqlx::Transaction<MySql>` (or any `&mut MySqlConnection` inside a transaction), so
//! application state and position commit or roll back together: exactly-once processing.
//!
//! # Capabilities
//!
//! | backend | expiry clock | transactional checkpoint | renew many | durability | multi-process |
//! | --- | --- | --- | --- | --- | --- |
//! | mysql | server | yes | chunks of 2500 | Disk | yes |
//!
//! Measured numbers are in the repository's `BENCHMARKS.md`.
//!
//! # Schema
//!
//! The tables are created by embedded, versioned migrations (`migrations/*.sql`, recorded in
//! `<prefix>_migrations`) run by [`checkpoint_core::LeaseManager::init`] (and so by
//! [`MySqlStore::open`]) under the server-wide named lock `GET_LOCK('ckpt-mysql:<prefix>')`
//! (MySQL commits each DDL statement on its own, so the lock, not a transaction, serialises
//! them), so any number of workers may call it at once. An existing table with other columns,
//! types, collations or primary key, or a schema version newer than this crate knows, is
//! [`checkpoint_core::Error::SchemaMismatch`] naming the difference. The table prefix is
//! validated (ASCII letters, digits and `_`, not starting with a digit) and always backquoted:
//! it is the only text ever pasted into a statement, every value is a bind parameter.
//!
//! App, stream and shard ids are `utf8mb4` with the binary collation `utf8mb4_bin`, so they
//! compare byte for byte (the identifier rule admits no spaces, so its PAD SPACE attribute
//! never matters). Worker ids (owner, claim, members) are `VARBINARY`: under `utf8mb4_bin`,
//! a PAD SPACE collation on both servers, `w` and `w ` would be one worker. Sequence numbers of
//! up to 128 digits are compared as numbers through a generated, zero-padded `checkpoint_order`
//! column.
//!
//! # MySQL 8 and MariaDB
//!
//! The statements keep to what both servers have: `UTC_TIMESTAMP(6)`, `TIMESTAMPADD` and
//! `TIMESTAMPDIFF` in microseconds, `SELECT … FOR UPDATE`, `INSERT … ON DUPLICATE KEY UPDATE`
//! (without the `VALUES()` function MySQL deprecates or the row alias MariaDB lacks),
//! `JSON_TABLE` (MySQL 8.0.4, MariaDB 10.6), stored generated columns with `REGEXP` and `LPAD`,
//! row-constructor comparison, `<=>`, `GET_LOCK`, and `CLIENT_FOUND_ROWS` (set by sqlx). None of
//! `RETURNING` (MariaDB only, and not on `UPDATE`), `SKIP LOCKED` or a `NO PAD` collation
//! (`utf8mb4_0900_bin` is MySQL's, `utf8mb4_nopad_bin` MariaDB's) is used. Where the servers
//! differ: a killed connection is error 1927 on MariaDB and a closed socket on MySQL (both
//! retryable); MySQL 8.0.24+ closes idle connections with error 4031 (retryable); with
//! `binlog_format = STATEMENT` MySQL refuses writes at `READ COMMITTED` (the pools of
//! [`MySqlStore::open`] use it; `ROW`, MySQL's default, and `MIXED`, MariaDB's, are fine).
//! The test suite runs against MariaDB 10.11.
//!
//! # Security
//!
//! The password is never shown by `Debug` of [`MySqlConfig`] or [`MySqlStore`] and never
//! appears in this crate's errors or logs. TLS is available with the `tls` feature; select
//! it with `ssl-mode=required` (or `verify_ca`, `verify_identity`) in the URL.

mod checkpoints;
mod config;
mod error;
mod renew;
mod row;
mod schema;
mod store;

pub use config::{DEFAULT_URL, MySqlConfig};
pub use store::MySqlStore;

/// The sqlx version this crate is built on, for [`MySqlStore::checkpoint_in_transaction`],
/// [`MySqlStore::from_pool`] and [`MySqlStore::pool`].
pub use sqlx;

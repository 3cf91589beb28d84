//! The lease/checkpoint contract on PostgreSQL, through sqlx.
//!
//! One pair of tables (`<prefix>_leases`, `<prefix>_workers`, in a configurable schema) holds the
//! leases, checkpoints and live workers of any number of apps (rows are keyed by app), shared by
//! any number of workers on any number of hosts. Open it with [`PostgresStore::connect`] from a
//! URL (`postgres://user:password@host:5432/db?schema=streaming&table=checkpoint`) or
//! [`PostgresStore::open`] from a [`PostgresConfig`] built by hand, then use it as any
//! [`checkpoint_core::Store`]. Queries are checked at run time (no compile-time macros), so
//! building never needs a database.
//!
//! ```no_run
//! use std::time::Duration;
//! use checkpoint_core::{AppName, Checkpointer, LeaseManager, LeaseDuration, LeaseKey, Position, WorkerId};
//! use checkpoint_postgres::PostgresStore;
//!
//! # async fn demo() -> checkpoint_core::Result<()> {
//! let store = PostgresStore::connect(
//!     "postgres://postgres@127.0.0.1:5432/test?schema=streaming",
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
//! Every write is one SQL statement, atomic on its own: a conditional
//! `UPDATE … WHERE owner = $worker AND token = $token … RETURNING`, for `get_lease` a
//! conditional `UPDATE … WHERE … RETURNING` of the existing record followed, only when that
//! matches no row, by an `INSERT … ON CONFLICT … DO UPDATE … WHERE … RETURNING` with the same
//! condition (which creates an absent record), or a `DELETE`.
//! PostgreSQL re-checks the condition under the row lock against the newest committed version,
//! so of any number of racing writers at most one passes it. Renew-many is one
//! `UPDATE … FROM unnest($streams, $shards, $tokens) … RETURNING` per chunk of up to 2,500
//! leases ([`PostgresConfig::with_renew_chunk`]), up to four chunks at once on separate
//! connections, each row matched on owner and its own token: the keys returned were renewed,
//! the others are lost. When a statement matches no row, nothing was
//! written; the store re-reads the record and applies the contract's rule
//! ([`checkpoint_core::rules`]) to it to name the failed condition, so results are exactly the
//! reference store's (the conformance suite's model test holds it to that).
//!
//! Transient faults (a dropped connection, `pg_terminate_backend`, a server restart, a pool
//! timeout, a serialization failure or deadlock) are retried with [`checkpoint_core::Backoff`]
//! ([`PostgresConfig::with_backoff`]); once it is spent the error is a retryable
//! [`checkpoint_core::Error::Backend`]. A retry runs the same conditional statement again, so a
//! write whose reply was lost is resolved against the stored record, never guessed: a repeated
//! grant, renewal, checkpoint (an equal position is accepted), release or steal finds its own
//! result already there and reports the same success.
//!
//! # Clock
//!
//! Expiry is judged by the server's clock ([`checkpoint_core::ClockSource::Server`]):
//! `clock_timestamp()` inside the statement that grants, renews or tests a lease or heartbeat.
//! Client clocks are never read, so workers on hosts with skewed clocks still agree. Deadlines
//! are `timestamptz` (microseconds).
//!
//! # Durability
//!
//! A checkpoint that returned `Ok` was committed by the server; it is as durable as the
//! server's settings make a commit (`fsync = on` and `synchronous_commit = on`, the defaults: it
//! survives a server crash; with synchronous replication, a primary failover too).
//!
//! # Transactional checkpoint
//!
//! [`PostgresStore::checkpoint_in_transaction`] writes the fenced checkpoint inside the
//! caller's own `sqlx::Transaction<Postgres>` (or any `&mut PgConnection` inside a
//! transaction), so application state and position commit or roll back together: exactly-once
//! processing.
//!
//! # Capabilities
//!
//! | backend | expiry clock | transactional checkpoint | renew many | durability | multi-process |
//! | --- | --- | --- | --- | --- | --- |
//! | postgres | server | yes | chunks of 2500 | Disk | yes |
//!
//! Measured on the development machine (release build, one task, PostgreSQL 15 on localhost
//! with `fsync` and `synchronous_commit` on, a 2-core machine under other load, so the numbers
//! varied by up to 3x between runs; `tests/throughput.rs`:
//! `cargo test --release -p checkpoint-postgres --test throughput -- --ignored --nocapture`):
//!
//! | measurement | result |
//! | --- | --- |
//! | `SELECT 1` through the pool (baseline round trip) | about 3,800/s |
//! | checkpoints, one task | 290 to 1,000/s (each commit waits for the WAL flush) |
//! | checkpoints, one task, `synchronous_commit=off` | 1,200 to 2,100/s |
//! | renews, one task | 260 to 710/s |
//! | renew-many of 1,000 leases (one statement) | 16 to 26 ms median |
//! | renew-many of 10,000 leases (4 chunks of 2,500 at once) | 69 to 155 ms median |
//!
//! The renew-many times are from `tests/timing.rs` (fresh schema, 10,000 leases of one worker):
//! before schema version 2 (fillfactor 100) and chunking, 10,000 leases took 150 to 250 ms under
//! the same load. With half of every page free (migration 2) a renewal is a heap-only update
//! that writes no index entry; the chunks use both cores of the server.
//!
//! # Schema
//!
//! The tables are created by embedded, versioned migrations (`migrations/*.sql`, recorded in
//! `<prefix>_migrations`) run by [`checkpoint_core::LeaseManager::init`] (and so by
//! [`PostgresStore::open`] and [`PostgresStore::from_pool`]) in one transaction under a transaction-scoped advisory lock, so any
//! number of workers may call it at once. An existing table with other columns, types or
//! primary key, or a schema version newer than this crate knows, is
//! [`checkpoint_core::Error::SchemaMismatch`] naming the difference. The schema and table
//! prefix are validated (ASCII letters, digits and `_`, not starting with a digit) and always
//! quoted: they are the only text ever pasted into a statement, every value is a bind
//! parameter.
//!
//! Where the application's role may not create tables, a DBA runs the script [`ddl`] returns
//! once, and the store is opened with [`PostgresConfig::with_migrations`] off (URL parameter
//! `migrate=false`): opening then sends no DDL and only checks the tables, so the role needs
//! only `USAGE` on the schema and `SELECT, INSERT, UPDATE, DELETE` on the tables
//! (`tests/privileges.rs` opens a store as such a role).
//!
//! # Bring your own pool
//!
//! [`PostgresStore::from_pool`] wraps a `sqlx::PgPool` the application already has (its
//! connection settings, TLS and size), with this crate's layout settings from a
//! [`PostgresConfig`].
//!
//! # Security
//!
//! The password is never shown by `Debug` of [`PostgresConfig`] or [`PostgresStore`] and never
//! appears in this crate's errors or logs. TLS is available with the `tls` feature (sqlx's
//! rustls with the platform's root certificates); select it with `sslmode=require` (or
//! `verify-ca`, `verify-full`, with `sslrootcert=<CA file>` for a private authority) in the
//! URL. `tests/tls.rs` runs against a TLS-only server with a private CA.

mod checkpoints;
mod config;
mod error;
mod membership;
mod renew;
mod row;
mod schema;
mod store;

pub use config::{DEFAULT_LIST_PAGE_SIZE, DEFAULT_URL, PostgresConfig};
pub use store::PostgresStore;

/// The DDL of the store's tables for `config`'s schema and table prefix, as one SQL script a
/// DBA can review and run (in one transaction; idempotent): the schema, the version table, every
/// migration this crate knows and its version record. A store opened afterwards with
/// [`PostgresConfig::with_migrations`] off (`migrate=false`) then needs no `CREATE` privilege:
/// only `USAGE` on the schema and `SELECT, INSERT, UPDATE, DELETE` on the three tables.
///
/// ```
/// use checkpoint_postgres::PostgresConfig;
///
/// let config = PostgresConfig::from_url("postgres://db.example/orders?schema=streaming")?;
/// let sql = checkpoint_postgres::ddl(&config)?;
/// assert!(sql.contains(r#"CREATE TABLE IF NOT EXISTS "streaming"."checkpoint_leases""#));
/// # Ok::<(), checkpoint_core::Error>(())
/// ```
///
/// [`checkpoint_core::Error::InvalidInput`] naming `schema` or `table_prefix` when they are not
/// valid identifiers.
pub fn ddl(config: &PostgresConfig) -> checkpoint_core::Result<String> {
    config.validate()?;
    let tables = schema::Tables::new(config.schema(), config.table_prefix())?;
    Ok(schema::ddl(&tables))
}

/// The sqlx version this crate is built on, for [`PostgresStore::checkpoint_in_transaction`]
/// and [`PostgresStore::pool`].
pub use sqlx;

//! Tables, migrations and the statements that use them.
//!
//! Three tables, named from a validated prefix (default `checkpoint_`) and always quoted:
//!
//! - `<prefix>leases`: one row per lease, keyed by `(app, stream, shard)`, so many apps share one
//!   file without seeing each other's rows. `token`, `owner_switches` and the sub-sequences are
//!   `u64` values stored as canonical decimal TEXT (SQLite's INTEGER is an `i64` and cannot hold
//!   every `u64`); `checkpoint`/`pending` hold [`checkpoint_core::Position::encode`];
//!   `deadline_ms` is milliseconds since the Unix epoch by the host clock; `parents` is a
//!   comma-separated list of shard ids (a shard id cannot contain `,`).
//! - `<prefix>workers`: one row per registered worker, keyed by `(app, worker)`, with
//!   `expires_ms` and `instance`, the [`checkpoint_core::InstanceId`] of the handle that
//!   registered it (migration 2; rows written before it carry `''`, no handle's nonce).
//! - `<prefix>schema_migrations`: `(version, description, applied_at_ms)`, one row per applied
//!   migration.
//!
//! `init` applies missing migrations in one `BEGIN IMMEDIATE` transaction, so any number of
//! handles and processes may run it at once: the first applies, the others find the versions
//! recorded. A table of the same name that migrations did not create, a table whose columns
//! differ, or a database at a newer version than this code knows is
//! [`checkpoint_core::Error::SchemaMismatch`], never silently reused.

use checkpoint_core::{Error, Result};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::{STORE, from_sqlite};

/// One column as `PRAGMA table_info` reports it: name, declared type, NOT NULL, primary-key
/// position (0 when not part of the key).
type Column = (&'static str, &'static str, bool, i64);

const LEASE_COLUMNS: &[Column] = &[
    ("app", "TEXT", true, 1),
    ("stream", "TEXT", true, 2),
    ("shard", "TEXT", true, 3),
    ("owner", "TEXT", false, 0),
    ("token", "TEXT", true, 0),
    ("deadline_ms", "INTEGER", false, 0),
    ("checkpoint", "TEXT", false, 0),
    ("checkpoint_sub", "TEXT", false, 0),
    ("pending", "TEXT", false, 0),
    ("pending_sub", "TEXT", false, 0),
    ("parents", "TEXT", true, 0),
    ("claim", "TEXT", false, 0),
    ("owner_switches", "TEXT", true, 0),
];

const WORKER_COLUMNS: &[Column] = &[
    ("app", "TEXT", true, 1),
    ("worker", "TEXT", true, 2),
    ("expires_ms", "INTEGER", true, 0),
    ("instance", "TEXT", true, 0),
];

const MIGRATION_COLUMNS: &[Column] = &[
    ("version", "INTEGER", false, 1),
    ("description", "TEXT", true, 0),
    ("applied_at_ms", "INTEGER", true, 0),
];

/// A migration: version, description, statements (with `{leases}` and `{workers}` standing for
/// the quoted table names), and the tables it creates.
struct Migration {
    version: i64,
    description: &'static str,
    sql: &'static str,
    creates: &'static [Table],
}

#[derive(Clone, Copy, Debug)]
enum Table {
    Leases,
    Workers,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "lease and worker tables",
        sql: "CREATE TABLE {leases} (
            app TEXT NOT NULL,
            stream TEXT NOT NULL,
            shard TEXT NOT NULL,
            owner TEXT,
            token TEXT NOT NULL,
            deadline_ms INTEGER,
            checkpoint TEXT,
            checkpoint_sub TEXT,
            pending TEXT,
            pending_sub TEXT,
            parents TEXT NOT NULL,
            claim TEXT,
            owner_switches TEXT NOT NULL,
            PRIMARY KEY (app, stream, shard)
        ) WITHOUT ROWID;
        CREATE TABLE {workers} (
            app TEXT NOT NULL,
            worker TEXT NOT NULL,
            expires_ms INTEGER NOT NULL,
            PRIMARY KEY (app, worker)
        ) WITHOUT ROWID;",
        creates: &[Table::Leases, Table::Workers],
    },
    Migration {
        version: 2,
        description: "worker instance nonce",
        sql: "ALTER TABLE {workers} ADD COLUMN instance TEXT NOT NULL DEFAULT '';",
        creates: &[],
    },
];

/// The newest schema version this code knows.
pub const SCHEMA_VERSION: i64 = 2;

/// The table names of one store, and the statements over them.
#[derive(Debug)]
pub(crate) struct Sql {
    leases: String,
    workers: String,
    migrations: String,
    pub(crate) select_lease: String,
    pub(crate) upsert_lease: String,
    pub(crate) update_deadline: String,
    pub(crate) update_checkpoint: String,
    pub(crate) delete_lease: String,
    pub(crate) list_leases: String,
    pub(crate) list_stream_leases: String,
    pub(crate) upsert_worker: String,
    pub(crate) heartbeat: String,
    pub(crate) worker_exists: String,
    pub(crate) live_workers: String,
    pub(crate) delete_worker: String,
    pub(crate) prune_workers: String,
    pub(crate) list_apps: String,
}

/// Quotes an identifier. The prefix was validated to `[A-Za-z_][A-Za-z0-9_]*`, so it holds no
/// quote; quoting anyway keeps any name from being read as a keyword.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The lease columns read by [`Sql::select_lease`] (which finds the row by its key) and, after
/// `stream, shard`, by the list statements, in the order `rows::read_lease` reads them.
const SELECT_COLUMNS: &str = "owner, token, deadline_ms, checkpoint, checkpoint_sub, pending, \
                              pending_sub, parents, claim, owner_switches";

impl Sql {
    /// Statements for tables named with `prefix` (already validated).
    pub(crate) fn new(prefix: &str) -> Self {
        let leases_name = format!("{prefix}leases");
        let leases = quote(&leases_name);
        let workers = quote(&format!("{prefix}workers"));
        Self {
            select_lease: format!(
                "SELECT {SELECT_COLUMNS} FROM {leases} WHERE app = ?1 AND stream = ?2 AND shard = ?3"
            ),
            upsert_lease: format!(
                "INSERT INTO {leases} (app, stream, shard, owner, token, deadline_ms, checkpoint, \
                 checkpoint_sub, pending, pending_sub, parents, claim, owner_switches) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
                 ON CONFLICT (app, stream, shard) DO UPDATE SET owner = excluded.owner, \
                 token = excluded.token, deadline_ms = excluded.deadline_ms, \
                 checkpoint = excluded.checkpoint, checkpoint_sub = excluded.checkpoint_sub, \
                 pending = excluded.pending, pending_sub = excluded.pending_sub, \
                 parents = excluded.parents, claim = excluded.claim, \
                 owner_switches = excluded.owner_switches"
            ),
            // The narrow writes of `rows::write_lease`, after the row was read in the same
            // write transaction: the deadline alone (?4), and the checkpoint columns alone (?4
            // checkpoint, ?5 its sub-sequence, ?6 pending, ?7 its sub-sequence, ?8 the
            // owner-switch count).
            update_deadline: format!(
                "UPDATE {leases} SET deadline_ms = ?4 WHERE app = ?1 AND stream = ?2 AND shard = ?3"
            ),
            update_checkpoint: format!(
                "UPDATE {leases} SET checkpoint = ?4, checkpoint_sub = ?5, pending = ?6, \
                 pending_sub = ?7, owner_switches = ?8 WHERE app = ?1 AND stream = ?2 AND shard = ?3"
            ),
            delete_lease: format!(
                "DELETE FROM {leases} WHERE app = ?1 AND stream = ?2 AND shard = ?3"
            ),
            list_leases: format!(
                "SELECT stream, shard, {SELECT_COLUMNS} FROM {leases} WHERE app = ?1 \
                 ORDER BY stream, shard"
            ),
            list_stream_leases: format!(
                "SELECT stream, shard, {SELECT_COLUMNS} FROM {leases} WHERE app = ?1 AND stream = ?2 \
                 ORDER BY shard"
            ),
            upsert_worker: format!(
                "INSERT INTO {workers} (app, worker, expires_ms, instance) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (app, worker) DO UPDATE SET expires_ms = excluded.expires_ms, \
                 instance = excluded.instance \
                 WHERE {workers}.instance = excluded.instance OR {workers}.expires_ms <= ?5"
            ),
            heartbeat: format!(
                "UPDATE {workers} SET expires_ms = ?3 WHERE app = ?1 AND worker = ?2 AND instance = ?4"
            ),
            worker_exists: format!("SELECT 1 FROM {workers} WHERE app = ?1 AND worker = ?2"),
            live_workers: format!(
                "SELECT worker FROM {workers} WHERE app = ?1 AND expires_ms > ?2 ORDER BY worker"
            ),
            delete_worker: format!("DELETE FROM {workers} WHERE app = ?1 AND worker = ?2"),
            prune_workers: format!("DELETE FROM {workers} WHERE app = ?1 AND expires_ms <= ?2"),
            // `app` compares with SQLite's default BINARY collation: byte order, the order of
            // `AppName`. The primary key's index serves the DISTINCT.
            list_apps: format!("SELECT DISTINCT app FROM {leases} ORDER BY app"),
            leases: leases_name,
            workers: format!("{prefix}workers"),
            migrations: format!("{prefix}schema_migrations"),
        }
    }

    fn table_name(&self, table: Table) -> &str {
        match table {
            Table::Leases => &self.leases,
            Table::Workers => &self.workers,
        }
    }
}

fn mismatch(detail: impl Into<String>) -> Error {
    Error::SchemaMismatch {
        store: STORE,
        detail: detail.into(),
    }
}

/// Operation 1: creates or upgrades the schema in one `BEGIN IMMEDIATE` transaction, then checks
/// every table's columns. Safe to run from many handles and processes at once.
pub(crate) fn init(conn: &mut Connection, sql: &Sql, now_ms: i64) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(from_sqlite)?;
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {} (
            version INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at_ms INTEGER NOT NULL
        )",
        quote(&sql.migrations)
    ))
    .map_err(from_sqlite)?;
    verify_columns(&tx, &sql.migrations, MIGRATION_COLUMNS)?;
    let current: i64 = tx
        .query_row(
            &format!(
                "SELECT COALESCE(MAX(version), 0) FROM {}",
                quote(&sql.migrations)
            ),
            [],
            |r| r.get(0),
        )
        .map_err(from_sqlite)?;
    if current > SCHEMA_VERSION {
        return Err(mismatch(format!(
            "table {} records schema version {current}, newer than the {SCHEMA_VERSION} this code knows; \
             upgrade checkpoint-sqlite",
            sql.migrations
        )));
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        for table in migration.creates {
            let name = sql.table_name(*table);
            let exists = tx
                .query_row(
                    "SELECT 1 FROM sqlite_master WHERE name = ?1",
                    [name],
                    |_| Ok(()),
                )
                .optional()
                .map_err(from_sqlite)?
                .is_some();
            if exists {
                return Err(mismatch(format!(
                    "table {name} already exists but {} does not record migration {} ({}); \
                     it was not created by this store and is not reused",
                    sql.migrations, migration.version, migration.description
                )));
            }
        }
        let statements = migration
            .sql
            .replace("{leases}", &quote(&sql.leases))
            .replace("{workers}", &quote(&sql.workers));
        tx.execute_batch(&statements).map_err(from_sqlite)?;
        tx.execute(
            &format!(
                "INSERT INTO {} (version, description, applied_at_ms) VALUES (?1, ?2, ?3)",
                quote(&sql.migrations)
            ),
            rusqlite::params![migration.version, migration.description, now_ms],
        )
        .map_err(from_sqlite)?;
    }
    verify_columns(&tx, &sql.leases, LEASE_COLUMNS)?;
    verify_columns(&tx, &sql.workers, WORKER_COLUMNS)?;
    tx.commit().map_err(from_sqlite)
}

/// Operation 1 without DDL ([`crate::SqliteConfig::with_migrations`] off): checks, with reads
/// only, that the version table records exactly the migrations this code knows and that every
/// table has the expected columns. [`Error::SchemaMismatch`] naming what is missing otherwise.
pub(crate) fn verify(conn: &Connection, sql: &Sql) -> Result<()> {
    let recorded = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [&sql.migrations],
            |_| Ok(()),
        )
        .optional()
        .map_err(from_sqlite)?
        .is_some();
    if !recorded {
        return Err(mismatch(format!(
            "table {} is missing and migrations are off: run checkpoint_sqlite::ddl's \
             statements, or open with migrations on",
            sql.migrations
        )));
    }
    verify_columns(conn, &sql.migrations, MIGRATION_COLUMNS)?;
    let current: i64 = conn
        .query_row(
            &format!(
                "SELECT COALESCE(MAX(version), 0) FROM {}",
                quote(&sql.migrations)
            ),
            [],
            |r| r.get(0),
        )
        .map_err(from_sqlite)?;
    if current != SCHEMA_VERSION {
        return Err(mismatch(format!(
            "table {} records schema version {current}, this code needs {SCHEMA_VERSION} and \
             migrations are off",
            sql.migrations
        )));
    }
    verify_columns(conn, &sql.leases, LEASE_COLUMNS)?;
    verify_columns(conn, &sql.workers, WORKER_COLUMNS)
}

/// The whole schema as one SQL script (the tables of every migration and their version
/// records), for [`crate::ddl`].
pub(crate) fn ddl(sql: &Sql) -> String {
    let mut out = format!(
        "-- checkpoint-sqlite schema version {SCHEMA_VERSION}.\nBEGIN IMMEDIATE;\n\
         CREATE TABLE IF NOT EXISTS {} (\n    version INTEGER PRIMARY KEY,\n    \
         description TEXT NOT NULL,\n    applied_at_ms INTEGER NOT NULL\n);\n",
        quote(&sql.migrations)
    );
    for migration in MIGRATIONS {
        out.push_str(&format!(
            "\n-- Migration {}: {}\n",
            migration.version, migration.description
        ));
        let statements = migration
            .sql
            .replace("{leases}", &quote(&sql.leases))
            .replace("{workers}", &quote(&sql.workers));
        out.push_str(statements.trim_end());
        out.push('\n');
        out.push_str(&format!(
            "INSERT INTO {} (version, description, applied_at_ms) VALUES ({}, '{}', \
             CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));\n",
            quote(&sql.migrations),
            migration.version,
            migration.description.replace('\'', "''")
        ));
    }
    out.push_str("COMMIT;\n");
    out
}

/// Compares a table's columns with the expected ones: names, declared types, NOT NULL and
/// primary-key positions. The table name is bound as a parameter of `pragma_table_info`.
fn verify_columns(conn: &Connection, table: &str, expected: &[Column]) -> Result<()> {
    let mut stmt = conn
        .prepare("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1) ORDER BY cid")
        .map_err(from_sqlite)?;
    let actual = stmt
        .query_map([table], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .map_err(from_sqlite)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(from_sqlite)?;
    if actual.is_empty() {
        return Err(mismatch(format!(
            "table {table} is missing although its migration is recorded"
        )));
    }
    for (name, ty, not_null, pk) in expected {
        match actual.iter().find(|(n, ..)| n.eq_ignore_ascii_case(name)) {
            None => return Err(mismatch(format!("table {table} has no column {name}"))),
            Some((_, t, nn, p)) => {
                if !t.eq_ignore_ascii_case(ty) {
                    return Err(mismatch(format!(
                        "column {table}.{name} has type {t:?}, expected {ty}"
                    )));
                }
                if nn != not_null {
                    return Err(mismatch(format!(
                        "column {table}.{name} is {}, expected {}",
                        if *nn { "NOT NULL" } else { "nullable" },
                        if *not_null { "NOT NULL" } else { "nullable" },
                    )));
                }
                if p != pk {
                    return Err(mismatch(format!(
                        "column {table}.{name} has primary-key position {p}, expected {pk}"
                    )));
                }
            }
        }
    }
    if let Some((extra, ..)) = actual
        .iter()
        .find(|(n, ..)| !expected.iter().any(|(e, ..)| n.eq_ignore_ascii_case(e)))
    {
        return Err(mismatch(format!(
            "table {table} has an unexpected column {extra}"
        )));
    }
    Ok(())
}

//! Table names, the embedded migrations, the layout check, and every SQL statement the store
//! runs.
//!
//! The table prefix is the only text ever pasted into SQL: it is validated to ASCII letters,
//! digits and `_` and always backquoted. Every value is a bind parameter (`?`).

use std::sync::Arc;

use checkpoint_core::{Error, Result};
use sqlx::{AssertSqlSafe, MySqlConnection, Row, SqlStr};

use crate::error::{ER_BAD_FIELD_ERROR, ER_DUP_FIELDNAME, STORE, error_number, from_sqlx};

/// Longest table prefix: MySQL's identifier limit is 64 characters; this leaves room for the
/// longest suffix, `_migrations`.
pub(crate) const MAX_PREFIX_BYTES: usize = 48;

/// How long `init` waits for another worker's `init` to finish, in seconds.
const INIT_LOCK_WAIT_SECONDS: i64 = 60;

/// Checks a table-name part: 1 to `max` bytes of ASCII letters, digits and `_`, not starting
/// with a digit.
pub(crate) fn validate_identifier(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(
            field,
            format!("is {} bytes long; at most {max} are allowed", value.len()),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(Error::invalid(
            field,
            format!("contains {bad:?}; only ASCII letters, digits and '_' are allowed"),
        ));
    }
    if value.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(Error::invalid(field, "must not start with a digit"));
    }
    Ok(())
}

/// One embedded migration.
struct Migration {
    version: i32,
    description: &'static str,
    sql: &'static str,
}

/// The migrations, in order. A released migration is never edited: changes are new versions.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "create the lease and membership tables",
        sql: include_str!("../migrations/0001_create_tables.sql"),
    },
    Migration {
        version: 2,
        description: "membership records carry the registering instance's nonce",
        sql: include_str!("../migrations/0002_worker_instance.sql"),
    },
];

/// The newest schema version this crate knows.
pub(crate) const LATEST_VERSION: i32 = 2;

/// Expected columns: name, type (`information_schema.columns.data_type`, plus ` unsigned` for
/// unsigned integers), nullable, collation (`None` for columns without one).
type ColumnSpec = (&'static str, &'static str, bool, Option<&'static str>);

const BIN: Option<&str> = Some("utf8mb4_bin");

const LEASE_COLUMNS: &[ColumnSpec] = &[
    ("app", "varchar", false, BIN),
    ("stream", "varchar", false, BIN),
    ("shard", "varchar", false, BIN),
    ("owner", "varbinary", true, None),
    ("token", "bigint unsigned", false, None),
    ("deadline", "datetime", true, None),
    ("checkpoint", "varchar", true, BIN),
    ("checkpoint_sub", "bigint unsigned", false, None),
    ("checkpoint_order", "varchar", true, Some("ascii_bin")),
    ("pending_checkpoint", "varchar", true, BIN),
    ("pending_checkpoint_sub", "bigint unsigned", false, None),
    ("parents", "text", false, BIN),
    ("claim", "varbinary", true, None),
    ("owner_switches", "bigint unsigned", false, None),
    ("create_nonce", "bigint unsigned", true, None),
];
const LEASE_KEY: &[&str] = &["app", "stream", "shard"];

const WORKER_COLUMNS: &[ColumnSpec] = &[
    ("app", "varchar", false, BIN),
    ("worker", "varbinary", false, None),
    ("expires_at", "datetime", false, None),
    ("instance", "varchar", false, Some("ascii_bin")),
];
const WORKER_KEY: &[&str] = &["app", "worker"];

const MIGRATION_COLUMNS: &[ColumnSpec] = &[
    ("version", "int", false, None),
    ("description", "varchar", false, BIN),
    ("applied_at", "datetime", false, None),
];
const MIGRATION_KEY: &[&str] = &["version"];

/// The backquoted names of the store's tables, in the connection's database.
#[derive(Clone, Debug)]
pub(crate) struct Tables {
    pub(crate) prefix: String,
    pub(crate) leases: String,
    pub(crate) workers: String,
    pub(crate) migrations: String,
    /// The unquoted table names, for catalog look-ups.
    leases_name: String,
    workers_name: String,
    migrations_name: String,
}

impl Tables {
    /// Names from a validated prefix.
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        validate_identifier("table_prefix", prefix, MAX_PREFIX_BYTES)?;
        let (leases_name, workers_name, migrations_name) = (
            format!("{prefix}_leases"),
            format!("{prefix}_workers"),
            format!("{prefix}_migrations"),
        );
        Ok(Self {
            prefix: prefix.to_owned(),
            leases: format!("`{leases_name}`"),
            workers: format!("`{workers_name}`"),
            migrations: format!("`{migrations_name}`"),
            leases_name,
            workers_name,
            migrations_name,
        })
    }

    fn substitute(&self, sql: &str) -> String {
        sql.replace("{leases}", &self.leases)
            .replace("{workers}", &self.workers)
    }

    /// The `GET_LOCK` name of this table set (at most 64 characters: the prefix is at most
    /// 48 bytes): `init` of one table set runs one at a time, server-wide.
    fn lock_name(&self) -> String {
        format!("ckpt-mysql:{}", self.prefix)
    }
}

fn sql(text: String) -> SqlStr {
    // Safe: `text` is a constant statement with only the validated, quoted prefix pasted in.
    sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(Arc::<str>::from(text)))
}

/// The statements of a migration file: split at a `;` that ends a line, comments dropped.
fn statements(migration: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in migration.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            out.push(current.trim().trim_end_matches(';').to_owned());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

/// Operation 1: applies the missing migrations and checks the layout under the server-wide
/// named lock `GET_LOCK('ckpt-mysql:<prefix>')`, so any number of workers may call it at
/// once. MySQL commits every DDL statement on its own (there are no transactional migrations),
/// so the lock, not a transaction, keeps two workers from applying one migration twice; it is
/// released at the end, and by the server if the connection dies.
pub(crate) async fn migrate(conn: &mut MySqlConnection, tables: &Tables) -> Result<()> {
    let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
        .bind(tables.lock_name())
        .bind(INIT_LOCK_WAIT_SECONDS)
        .fetch_one(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    if locked != Some(1) {
        return Err(Error::backend_message(
            STORE,
            true,
            format!(
                "another worker's init of {} held the lock for {INIT_LOCK_WAIT_SECONDS} s",
                tables.leases
            ),
        ));
    }
    let result = migrate_locked(conn, tables).await;
    let released = sqlx::query("SELECT RELEASE_LOCK(?)")
        .bind(tables.lock_name())
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx);
    result.and(released.map(|_| ()))
}

async fn migrate_locked(conn: &mut MySqlConnection, tables: &Tables) -> Result<()> {
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {migrations} (
             version     INT NOT NULL PRIMARY KEY,
             description VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
             applied_at  DATETIME(6) NOT NULL
         ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
        migrations = tables.migrations,
    );
    sqlx::raw_sql(sql(create))
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    check_columns(
        conn,
        &tables.migrations_name,
        MIGRATION_COLUMNS,
        MIGRATION_KEY,
    )
    .await?;
    let applied: Vec<i32> = sqlx::query_scalar(sql(format!(
        "SELECT version FROM {} ORDER BY version",
        tables.migrations
    )))
    .fetch_all(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    if let Some(newer) = applied.iter().find(|v| **v > LATEST_VERSION) {
        return Err(Error::SchemaMismatch {
            store: STORE,
            detail: format!(
                "{} records schema version {newer}, newer than the {LATEST_VERSION} this version \
                 of checkpoint-mysql knows",
                tables.migrations
            ),
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tracing::info!(version = migration.version, tables = %tables.leases, "applying migration");
        for statement in statements(&tables.substitute(migration.sql)) {
            sqlx::raw_sql(sql(statement))
                .execute(&mut *conn)
                .await
                .map_err(|e| migration_error(tables, migration, e))?;
        }
        sqlx::query(sql(format!(
            "INSERT INTO {} (version, description, applied_at) VALUES (?, ?, UTC_TIMESTAMP(6))",
            tables.migrations
        )))
        .bind(migration.version)
        .bind(migration.description)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    }
    check_columns(conn, &tables.leases_name, LEASE_COLUMNS, LEASE_KEY).await?;
    check_columns(conn, &tables.workers_name, WORKER_COLUMNS, WORKER_KEY).await
}

fn migration_error(tables: &Tables, migration: &Migration, err: sqlx::Error) -> Error {
    match error_number(&err) {
        // Unknown or duplicate column: an existing table is not the one the migration expects.
        Some(ER_BAD_FIELD_ERROR | ER_DUP_FIELDNAME) => Error::SchemaMismatch {
            store: STORE,
            detail: format!(
                "migration {} on {} failed against an existing table: {err}",
                migration.version, tables.leases
            ),
        },
        _ => from_sqlx(err),
    }
}

/// Checks that `table` (in the connection's database) has every expected column with the
/// expected type, nullability and collation, and the expected primary key in order;
/// [`Error::SchemaMismatch`] naming the first difference otherwise.
async fn check_columns(
    conn: &mut MySqlConnection,
    table: &str,
    expected: &[ColumnSpec],
    key: &[&str],
) -> Result<()> {
    let rows = sqlx::query(
        "SELECT CAST(column_name AS CHAR) AS name,
                CAST(CONCAT(data_type, IF(column_type LIKE '%unsigned%', ' unsigned', ''))
                     AS CHAR) AS type_name,
                CAST(is_nullable = 'YES' AS SIGNED) AS nullable,
                CAST(collation_name AS CHAR) AS collation
         FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ?",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    let mismatch = |detail: String| Error::SchemaMismatch {
        store: STORE,
        detail,
    };
    let mut found = Vec::with_capacity(rows.len());
    for row in &rows {
        let name: String = row.try_get("name").map_err(from_sqlx)?;
        let data_type: String = row.try_get("type_name").map_err(from_sqlx)?;
        let nullable: i64 = row.try_get("nullable").map_err(from_sqlx)?;
        let collation: Option<String> = row.try_get("collation").map_err(from_sqlx)?;
        found.push((name, data_type, nullable != 0, collation));
    }
    if found.is_empty() {
        return Err(mismatch(format!(
            "table `{table}` does not exist or is not visible"
        )));
    }
    for (name, data_type, nullable, collation) in expected {
        let Some((_, t, n, c)) = found.iter().find(|(n, ..)| n == name) else {
            return Err(mismatch(format!("table `{table}` has no column {name}")));
        };
        if t != data_type {
            return Err(mismatch(format!(
                "column {name} of `{table}` is {t}, expected {data_type}"
            )));
        }
        if n != nullable {
            return Err(mismatch(format!(
                "column {name} of `{table}` is {}, expected {}",
                if *n { "nullable" } else { "NOT NULL" },
                if *nullable { "nullable" } else { "NOT NULL" },
            )));
        }
        if c.as_deref() != *collation {
            return Err(mismatch(format!(
                "column {name} of `{table}` has collation {}, expected {} (ids must compare \
                 byte for byte)",
                c.as_deref().unwrap_or("none"),
                collation.unwrap_or("none"),
            )));
        }
    }
    let primary: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(column_name AS CHAR) FROM information_schema.key_column_usage
         WHERE table_schema = DATABASE() AND table_name = ? AND constraint_name = 'PRIMARY'
         ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    if primary != key {
        return Err(mismatch(format!(
            "primary key of `{table}` is ({}), expected ({})",
            primary.join(", "),
            key.join(", ")
        )));
    }
    Ok(())
}

/// The columns every statement returns for a lease, in the order [`crate::store`] decodes them.
/// The deadline travels as microseconds since the Unix epoch.
const LEASE_COLUMNS_SQL: &str = "l.stream, l.shard, l.owner, l.token, \
     TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', l.deadline) AS deadline_us, \
     l.checkpoint, l.checkpoint_sub, l.pending_checkpoint, l.pending_checkpoint_sub, \
     l.parents, l.claim, l.owner_switches";

/// The key condition of one lease: app, stream, shard (three `?`).
const KEY: &str = "l.app = ? AND l.stream = ? AND l.shard = ?";

/// The server clock as microseconds since the Unix epoch.
const NOW_US: &str = "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6))";

/// A `DATETIME(6)` from microseconds since the Unix epoch (one `?`).
const FROM_US: &str = "TIMESTAMPADD(MICROSECOND, ?, '1970-01-01 00:00:00')";

/// The server clock plus a duration in microseconds (one `?`).
const NOW_PLUS: &str = "TIMESTAMPADD(MICROSECOND, ?, UTC_TIMESTAMP(6))";

/// A renew-many batch as a table: one JSON parameter `[[stream, shard, token], ...]`.
const BATCH: &str = "JSON_TABLE(?, '$[*]' COLUMNS (
         stream VARCHAR(256) CHARACTER SET utf8mb4 PATH '$[0]',
         shard  VARCHAR(256) CHARACTER SET utf8mb4 PATH '$[1]',
         token  BIGINT UNSIGNED PATH '$[2]')) AS b";

/// The join of a batch row to its lease.
const BATCH_KEY: &str =
    "l.stream = b.stream COLLATE utf8mb4_bin AND l.shard = b.shard COLLATE utf8mb4_bin";

/// Every statement of the store, built once per store from its table names. The comment on each
/// lists its parameters in order.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) create_if_absent: SqlStr,
    pub(crate) create_nonce: SqlStr,
    pub(crate) grant_insert: SqlStr,
    pub(crate) grant_update: SqlStr,
    pub(crate) renew: SqlStr,
    pub(crate) renew_many: SqlStr,
    pub(crate) renewed_many: SqlStr,
    pub(crate) checkpoint: SqlStr,
    pub(crate) prepare_checkpoint: SqlStr,
    pub(crate) fetch: SqlStr,
    pub(crate) reread: SqlStr,
    pub(crate) reread_for_update: SqlStr,
    pub(crate) release: SqlStr,
    pub(crate) import: SqlStr,
    pub(crate) now: SqlStr,
    pub(crate) force_release: SqlStr,
    pub(crate) delete: SqlStr,
    pub(crate) list_page: SqlStr,
    pub(crate) list_apps_page: SqlStr,
    pub(crate) steal: SqlStr,
    pub(crate) claim: SqlStr,
    pub(crate) reset_checkpoint: SqlStr,
    pub(crate) register_worker: SqlStr,
    pub(crate) worker_instance: SqlStr,
    pub(crate) heartbeat: SqlStr,
    pub(crate) live_workers: SqlStr,
    pub(crate) deregister_worker: SqlStr,
    pub(crate) prune_workers: SqlStr,
}

impl Statements {
    pub(crate) fn new(tables: &Tables) -> Self {
        let leases = &tables.leases;
        let workers = &tables.workers;
        let cols = LEASE_COLUMNS_SQL;
        // The fenced condition: key, then worker and token.
        let held = format!("{KEY} AND l.owner = ? AND l.token = ?");
        // The monotonic condition: the new position's progress key.
        // A stored checkpoint that is no position (its `checkpoint_order` is '0' like the
        // initial positions') matches nothing: the re-read reports it `Corrupt`, never
        // overwritten.
        let progress = "(l.checkpoint IS NULL OR (l.checkpoint_order <= ? \
             AND (l.checkpoint_order <> '0' OR l.checkpoint IN ('TRIM_HORIZON', 'LATEST') \
             OR l.checkpoint REGEXP '^AT_TIMESTAMP:[0-9]{1,20}$')))";
        Self {
            // app, stream, shard, parents, checkpoint, checkpoint sub-sequence, nonce.
            create_if_absent: sql(format!(
                "INSERT INTO {leases}
                     (app, stream, shard, parents, checkpoint, checkpoint_sub, create_nonce)
                 VALUES (?, ?, ?, ?, ?, ?, ?)"
            )),
            // key.
            create_nonce: sql(format!(
                "SELECT l.create_nonce FROM {leases} AS l WHERE {KEY}"
            )),
            // app, stream, shard, owner, token, deadline (us), owner switches.
            grant_insert: sql(format!(
                "INSERT INTO {leases} (app, stream, shard, owner, token, deadline, parents,
                     owner_switches)
                 VALUES (?, ?, ?, ?, ?, {FROM_US}, '', ?)"
            )),
            // owner, token, deadline (us), claim, owner switches, key.
            grant_update: sql(format!(
                "UPDATE {leases} AS l SET l.owner = ?, l.token = ?, l.deadline = {FROM_US},
                     l.claim = ?, l.owner_switches = ?
                 WHERE {KEY}"
            )),
            // duration (us), key, worker, token.
            renew: sql(format!(
                "UPDATE {leases} AS l SET l.deadline = {NOW_PLUS} WHERE {held}"
            )),
            // batch, duration (us), app, worker.
            renew_many: sql(format!(
                "UPDATE {leases} AS l JOIN {BATCH} ON {BATCH_KEY}
                 SET l.deadline = {NOW_PLUS}
                 WHERE l.app = ? AND l.owner = ? AND l.token = b.token"
            )),
            // batch, app, worker.
            renewed_many: sql(format!(
                "SELECT {cols} FROM {leases} AS l JOIN {BATCH} ON {BATCH_KEY}
                 WHERE l.app = ? AND l.owner = ? AND l.token = b.token"
            )),
            // position, sub-sequence, key, worker, token, progress key.
            checkpoint: sql(format!(
                "UPDATE {leases} AS l SET l.checkpoint = ?, l.checkpoint_sub = ?,
                     l.pending_checkpoint = NULL, l.pending_checkpoint_sub = 0,
                     l.owner_switches = 0
                 WHERE {held} AND {progress}"
            )),
            // position, sub-sequence, key, worker, token, progress key.
            prepare_checkpoint: sql(format!(
                "UPDATE {leases} AS l SET l.pending_checkpoint = ?, l.pending_checkpoint_sub = ?
                 WHERE {held} AND {progress}"
            )),
            // key.
            fetch: sql(format!("SELECT {cols} FROM {leases} AS l WHERE {KEY}")),
            // key. Always one row: the server's clock, and the record's columns (NULL when
            // absent).
            reread: sql(format!(
                "SELECT n.now_us, {cols}
                 FROM (SELECT {NOW_US} AS now_us) AS n LEFT JOIN {leases} AS l ON {KEY}"
            )),
            // key. The same, locking the record (if any) until the transaction ends.
            reread_for_update: sql(format!(
                "SELECT n.now_us, {cols}
                 FROM (SELECT {NOW_US} AS now_us) AS n LEFT JOIN {leases} AS l ON {KEY}
                 FOR UPDATE"
            )),
            // key, worker, token.
            // A release keeps the deadline of a claimed lease: the claimant's reservation
            // (contract, "Claim honoured"; `rules::remove_lease_owner`).
            release: sql(format!(
                "UPDATE {leases} AS l SET l.owner = NULL,
                     l.deadline = CASE WHEN l.claim IS NULL THEN NULL ELSE l.deadline END
                 WHERE {held}"
            )),
            // app, stream, shard, owner, token, deadline (us or NULL), checkpoint, its sub,
            // pending, its sub, parents, claim, owner switches.
            import: sql(format!(
                "INSERT INTO {leases} (app, stream, shard, owner, token, deadline, checkpoint,
                     checkpoint_sub, pending_checkpoint, pending_checkpoint_sub, parents, claim,
                     owner_switches)
                 VALUES (?, ?, ?, ?, ?, {FROM_US}, ?, ?, ?, ?, ?, ?, ?)"
            )),
            now: sql(format!("SELECT {NOW_US} AS now_us")),
            // key.
            force_release: sql(format!(
                "UPDATE {leases} AS l SET l.owner = NULL, l.deadline = NULL WHERE {KEY}"
            )),
            // app, stream, shard.
            delete: sql(format!(
                "DELETE FROM {leases} WHERE app = ? AND stream = ? AND shard = ?"
            )),
            // app, stream or NULL, stream or NULL, last stream, last shard, limit.
            list_page: sql(format!(
                "SELECT {cols} FROM {leases} AS l
                 WHERE l.app = ? AND (? IS NULL OR l.stream = ?)
                       AND (l.stream, l.shard) > (?, ?)
                 ORDER BY l.stream, l.shard LIMIT ?"
            )),
            // The last app of the previous page ('' first), the page size. `app` is
            // `utf8mb4_bin`: byte order, the order of `AppName`.
            list_apps_page: sql(format!(
                "SELECT DISTINCT l.app FROM {leases} AS l WHERE l.app > ?
                 ORDER BY l.app LIMIT ?"
            )),
            // thief, duration (us), key, expected owner, expected token. MySQL assigns left to
            // right; no assignment reads a column assigned before it.
            steal: sql(format!(
                "UPDATE {leases} AS l SET l.owner = ?, l.token = l.token + 1,
                     l.deadline = {NOW_PLUS}, l.claim = NULL,
                     l.owner_switches = l.owner_switches + 1
                 WHERE {held}"
            )),
            // claimant, key, claimant, claimant.
            claim: sql(format!(
                "UPDATE {leases} AS l SET l.claim = ?
                 WHERE {KEY} AND NOT (l.owner <=> ?) AND NOT (l.claim <=> ?)"
            )),
            // position or NULL, sub-sequence, key.
            reset_checkpoint: sql(format!(
                "UPDATE {leases} AS l SET l.checkpoint = ?, l.checkpoint_sub = ?,
                     l.pending_checkpoint = NULL, l.pending_checkpoint_sub = 0,
                     l.owner_switches = 0
                 WHERE {KEY}"
            )),
            // app, worker, ttl (us), instance; instance, instance, instance, ttl (us). The
            // instance is assigned first (MySQL assigns left to right, each seeing the ones
            // before): it becomes this handle's when the row is this instance's or expired by
            // the server's clock, and the expiry moves only when it is this instance's then.
            register_worker: sql(format!(
                "INSERT INTO {workers} (app, worker, expires_at, instance)
                 VALUES (?, ?, {NOW_PLUS}, ?)
                 ON DUPLICATE KEY UPDATE
                     instance = IF(instance = ? OR expires_at <= UTC_TIMESTAMP(6), ?, instance),
                     expires_at = IF(instance = ?, {NOW_PLUS}, expires_at)"
            )),
            // app, worker: the instance holding the id, read in the register's transaction.
            worker_instance: sql(format!(
                "SELECT instance FROM {workers} WHERE app = ? AND worker = ?"
            )),
            // ttl (us), app, worker, instance.
            heartbeat: sql(format!(
                "UPDATE {workers} SET expires_at = {NOW_PLUS}
                 WHERE app = ? AND worker = ? AND instance = ?"
            )),
            // app.
            live_workers: sql(format!(
                "SELECT worker FROM {workers}
                 WHERE app = ? AND expires_at > UTC_TIMESTAMP(6) ORDER BY worker"
            )),
            // app, worker.
            deregister_worker: sql(format!(
                "DELETE FROM {workers} WHERE app = ? AND worker = ?"
            )),
            // app.
            prune_workers: sql(format!(
                "DELETE FROM {workers} WHERE app = ? AND expires_at <= UTC_TIMESTAMP(6)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated_and_quoted() {
        let tables = Tables::new("orders").unwrap();
        assert_eq!(tables.leases, "`orders_leases`");
        assert_eq!(tables.workers, "`orders_workers`");
        assert_eq!(tables.migrations, "`orders_migrations`");
        for bad in [
            "",
            "a`b",
            "a.b",
            "a b",
            "x;DROP TABLE y",
            "9lives",
            "ünï",
            "a-b",
        ] {
            assert_eq!(
                Tables::new(bad).unwrap_err().field(),
                Some("table_prefix"),
                "{bad:?}"
            );
        }
        assert!(Tables::new(&"p".repeat(48)).is_ok());
        assert!(Tables::new(&"p".repeat(49)).is_err());
        assert!(tables.lock_name().len() <= 64);
        assert!(Tables::new(&"p".repeat(48)).unwrap().lock_name().len() <= 64);
    }

    #[test]
    fn migrations_are_numbered_in_order_and_split_into_statements() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(LATEST_VERSION));
        let first = statements(MIGRATIONS[0].sql);
        assert_eq!(first.len(), 2, "{first:#?}");
        assert!(first[0].starts_with("CREATE TABLE IF NOT EXISTS {leases}"));
        assert!(first[1].starts_with("CREATE TABLE IF NOT EXISTS {workers}"));
        assert!(first.iter().all(|s| !s.ends_with(';')));
    }
}

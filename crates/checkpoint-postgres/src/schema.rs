//! Table names, the embedded migrations, the layout check, and every SQL statement the store
//! runs.
//!
//! Identifiers (schema and table prefix) are the only text ever pasted into SQL: they are
//! validated to ASCII letters, digits and `_` and always double-quoted. Every value is a bind
//! parameter.

use std::sync::Arc;

use checkpoint_core::{Error, Result};
use sqlx::{AssertSqlSafe, PgConnection, Row, SqlStr};

use crate::error::{STORE, from_sqlx, sqlstate};

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
pub(crate) const MAX_IDENTIFIER_BYTES: usize = 63;
/// Longest table prefix: leaves room for the longest suffix, `_migrations`, and more.
pub(crate) const MAX_PREFIX_BYTES: usize = 48;

/// Checks a schema or table-name part: 1 to `max` bytes of ASCII letters, digits and `_`, not
/// starting with a digit.
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
        description: "lease table fillfactor 50, for heap-only updates",
        sql: include_str!("../migrations/0002_lease_fillfactor.sql"),
    },
    Migration {
        version: 3,
        description: "membership records carry the registering instance's nonce",
        sql: include_str!("../migrations/0003_worker_instance.sql"),
    },
];

/// The newest schema version this crate knows.
pub(crate) const LATEST_VERSION: i32 = 3;

/// Expected columns: name, `information_schema.columns.data_type`, nullable.
type ColumnSpec = (&'static str, &'static str, bool);

const LEASE_COLUMNS: &[ColumnSpec] = &[
    ("app", "text", false),
    ("stream", "text", false),
    ("shard", "text", false),
    ("owner", "text", true),
    ("token", "bigint", false),
    ("deadline", "timestamp with time zone", true),
    ("checkpoint", "text", true),
    ("checkpoint_sub", "numeric", false),
    ("checkpoint_order", "text", true),
    ("pending_checkpoint", "text", true),
    ("pending_checkpoint_sub", "numeric", false),
    ("parents", "ARRAY", false),
    ("claim", "text", true),
    ("owner_switches", "bigint", false),
];
const LEASE_KEY: &[&str] = &["app", "stream", "shard"];

const WORKER_COLUMNS: &[ColumnSpec] = &[
    ("app", "text", false),
    ("worker", "text", false),
    ("expires_at", "timestamp with time zone", false),
    ("instance", "text", false),
];
const WORKER_KEY: &[&str] = &["app", "worker"];

const MIGRATION_COLUMNS: &[ColumnSpec] = &[
    ("version", "integer", false),
    ("description", "text", false),
];
const MIGRATION_KEY: &[&str] = &["version"];

/// The quoted, schema-qualified names of the store's tables.
#[derive(Clone, Debug)]
pub(crate) struct Tables {
    pub(crate) schema: String,
    pub(crate) leases: String,
    pub(crate) workers: String,
    pub(crate) migrations: String,
    /// The unquoted table names, for catalog look-ups.
    leases_name: String,
    workers_name: String,
    migrations_name: String,
}

impl Tables {
    /// Names from a validated schema and prefix.
    pub(crate) fn new(schema: &str, prefix: &str) -> Result<Self> {
        validate_identifier("schema", schema, MAX_IDENTIFIER_BYTES)?;
        validate_identifier("table_prefix", prefix, MAX_PREFIX_BYTES)?;
        let qualified = |table: &str| format!("\"{schema}\".\"{table}\"");
        let (leases_name, workers_name, migrations_name) = (
            format!("{prefix}_leases"),
            format!("{prefix}_workers"),
            format!("{prefix}_migrations"),
        );
        Ok(Self {
            schema: schema.to_owned(),
            leases: qualified(&leases_name),
            workers: qualified(&workers_name),
            migrations: qualified(&migrations_name),
            leases_name,
            workers_name,
            migrations_name,
        })
    }

    fn substitute(&self, sql: &str) -> String {
        sql.replace("{leases}", &self.leases)
            .replace("{workers}", &self.workers)
    }

    /// The advisory lock key of this schema: `init` of every table set in one schema runs one
    /// at a time, so two sets cannot race to create the schema either.
    fn lock_name(&self) -> String {
        format!("checkpoint-postgres init {}", self.schema)
    }
}

fn sql(text: String) -> SqlStr {
    // Safe: `text` is a constant statement with only validated, quoted identifiers pasted in.
    sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(Arc::<str>::from(text)))
}

/// Operation 1: applies the missing migrations and checks the layout, in one transaction under
/// `pg_advisory_xact_lock`, so any number of workers may call it at once; the lock is released
/// by the commit or rollback, even if the client dies.
pub(crate) async fn migrate(conn: &mut PgConnection, tables: &Tables) -> Result<()> {
    use sqlx::Connection;
    let mut tx = conn.begin().await.map_err(from_sqlx)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(tables.lock_name())
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
    // CREATE SCHEMA needs the CREATE privilege on the database even when the schema exists, so
    // it only runs when the schema is missing.
    let schema_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(&tables.schema)
            .fetch_one(&mut *tx)
            .await
            .map_err(from_sqlx)?;
    if !schema_exists {
        sqlx::raw_sql(sql(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{}\"",
            tables.schema
        )))
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
    }
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {migrations} (
             version     integer PRIMARY KEY,
             description text NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
         )",
        migrations = tables.migrations,
    );
    sqlx::raw_sql(sql(create))
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
    check_columns(
        &mut tx,
        tables,
        &tables.migrations_name,
        MIGRATION_COLUMNS,
        MIGRATION_KEY,
    )
    .await?;
    let applied: Vec<i32> = sqlx::query_scalar(sql(format!(
        "SELECT version FROM {} ORDER BY version",
        tables.migrations
    )))
    .fetch_all(&mut *tx)
    .await
    .map_err(from_sqlx)?;
    check_not_newer(tables, &applied)?;
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tracing::info!(version = migration.version, tables = %tables.leases, "applying migration");
        sqlx::raw_sql(sql(tables.substitute(migration.sql)))
            .execute(&mut *tx)
            .await
            .map_err(|e| migration_error(tables, migration, e))?;
        sqlx::query(sql(format!(
            "INSERT INTO {} (version, description) VALUES ($1, $2)",
            tables.migrations
        )))
        .bind(migration.version)
        .bind(migration.description)
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
    }
    check_columns(
        &mut tx,
        tables,
        &tables.leases_name,
        LEASE_COLUMNS,
        LEASE_KEY,
    )
    .await?;
    check_columns(
        &mut tx,
        tables,
        &tables.workers_name,
        WORKER_COLUMNS,
        WORKER_KEY,
    )
    .await?;
    check_definitions(&mut tx, tables).await?;
    tx.commit().await.map_err(from_sqlx)
}

/// Operation 1 without DDL ([`crate::PostgresConfig::with_migrations`] off): checks, with
/// reads only, that every migration this crate knows is recorded, none newer, and that the
/// tables have the expected columns and keys. [`Error::SchemaMismatch`] naming what is missing
/// otherwise (for example: run the statements of [`crate::ddl`] first).
pub(crate) async fn verify(conn: &mut PgConnection, tables: &Tables) -> Result<()> {
    check_columns(
        conn,
        tables,
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
    check_not_newer(tables, &applied)?;
    if let Some(missing) = MIGRATIONS.iter().find(|m| !applied.contains(&m.version)) {
        return Err(Error::SchemaMismatch {
            store: STORE,
            detail: format!(
                "{} does not record migration {} ({}) and migrations are off: run \
                 checkpoint_postgres::ddl's statements, or open with migrations on",
                tables.migrations, missing.version, missing.description
            ),
        });
    }
    check_columns(conn, tables, &tables.leases_name, LEASE_COLUMNS, LEASE_KEY).await?;
    check_columns(
        conn,
        tables,
        &tables.workers_name,
        WORKER_COLUMNS,
        WORKER_KEY,
    )
    .await
}

/// [`Error::SchemaMismatch`] when `applied` holds a version newer than this crate knows.
fn check_not_newer(tables: &Tables, applied: &[i32]) -> Result<()> {
    match applied.iter().find(|v| **v > LATEST_VERSION) {
        Some(newer) => Err(Error::SchemaMismatch {
            store: STORE,
            detail: format!(
                "{} records schema version {newer}, newer than the {LATEST_VERSION} this version \
                 of checkpoint-postgres knows",
                tables.migrations
            ),
        }),
        None => Ok(()),
    }
}

/// The whole schema as one SQL script: what [`migrate`] runs on an empty schema, with the
/// version records, for [`crate::ddl`].
pub(crate) fn ddl(tables: &Tables) -> String {
    let mut out = format!(
        "-- checkpoint-postgres schema version {LATEST_VERSION}: tables {leases}, {workers}, {migrations}.\n\
         BEGIN;\n\
         CREATE SCHEMA IF NOT EXISTS \"{schema}\";\n\
         CREATE TABLE IF NOT EXISTS {migrations} (\n    \
             version     integer PRIMARY KEY,\n    \
             description text NOT NULL,\n    \
             applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()\n\
         );\n",
        leases = tables.leases,
        workers = tables.workers,
        migrations = tables.migrations,
        schema = tables.schema,
    );
    for migration in MIGRATIONS {
        out.push_str(&format!(
            "\n-- Migration {}: {}\n",
            migration.version, migration.description
        ));
        out.push_str(tables.substitute(migration.sql).trim_end());
        out.push('\n');
        out.push_str(&format!(
            "INSERT INTO {} (version, description) VALUES ({}, '{}') ON CONFLICT (version) DO NOTHING;\n",
            tables.migrations,
            migration.version,
            migration.description.replace('\'', "''")
        ));
    }
    out.push_str("COMMIT;\n");
    out
}

/// Checks what [`check_columns`] cannot see by name and type: each column's collation (ids
/// compare byte-wise, `COLLATE "C"`), the expression of the generated `checkpoint_order`
/// (progress order of positions), and the `CHECK` constraints. The reference is the migrations
/// themselves, applied to temporary tables in this transaction (`pg_temp`, dropped before it
/// ends), and compared through the catalog as PostgreSQL renders them, so the check follows the
/// migrations and the server's own spelling. [`Error::SchemaMismatch`] naming the first
/// difference.
async fn check_definitions(conn: &mut PgConnection, tables: &Tables) -> Result<()> {
    let reference = Tables::new("pg_temp", "checkpoint_reference")?;
    for migration in MIGRATIONS {
        sqlx::raw_sql(sql(reference.substitute(migration.sql)))
            .execute(&mut *conn)
            .await
            .map_err(from_sqlx)?;
    }
    let pairs = [
        (&reference.leases, &tables.leases),
        (&reference.workers, &tables.workers),
    ];
    let mut result = Ok(());
    for (expected, actual) in pairs {
        let want = definitions(conn, expected).await?;
        let got = definitions(conn, actual).await?;
        if let Some(detail) = first_difference(&want, &got, actual) {
            result = Err(Error::SchemaMismatch {
                store: STORE,
                detail,
            });
            break;
        }
    }
    sqlx::raw_sql(sql(format!(
        "DROP TABLE IF EXISTS {}, {}",
        reference.leases, reference.workers
    )))
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    result
}

/// A table's definitions as the catalog renders them: per column (name, collation, generation
/// expression), and the sorted `CHECK` constraints.
type Definitions = (Vec<(String, String, String)>, Vec<String>);

async fn definitions(conn: &mut PgConnection, table: &str) -> Result<Definitions> {
    let columns = sqlx::query(
        "SELECT a.attname::text,
                COALESCE((SELECT c.collname::text FROM pg_collation c WHERE c.oid = a.attcollation), ''),
                COALESCE((SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
                          WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum
                            AND a.attgenerated <> ''), '')
         FROM pg_attribute a
         WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attname",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(from_sqlx)?
    .iter()
    .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
    .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
    .map_err(from_sqlx)?;
    let checks: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
         WHERE c.conrelid = to_regclass($1) AND c.contype = 'c' ORDER BY 1",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    Ok((columns, checks))
}

/// The first way `got` differs from `want` for the expected columns, or `None`.
fn first_difference(want: &Definitions, got: &Definitions, table: &str) -> Option<String> {
    for (name, collation, generated) in &want.0 {
        let Some((_, got_collation, got_generated)) = got.0.iter().find(|(n, _, _)| n == name)
        else {
            return Some(format!("table {table} has no column {name}"));
        };
        if got_collation != collation {
            return Some(format!(
                "column {name} of {table} has collation {got_collation:?}, expected {collation:?}"
            ));
        }
        if got_generated != generated {
            return Some(format!(
                "column {name} of {table} is generated as {got_generated:?}, expected {generated:?}"
            ));
        }
    }
    if got.1 != want.1 {
        return Some(format!(
            "the CHECK constraints of {table} are {:?}, expected {:?}",
            got.1, want.1
        ));
    }
    None
}

fn migration_error(tables: &Tables, migration: &Migration, err: sqlx::Error) -> Error {
    match sqlstate(&err).as_deref() {
        // Undefined column, datatype mismatch, wrong object type: an existing object is not
        // the one the migration expects.
        Some("42703" | "42804" | "42809" | "42P16") => Error::SchemaMismatch {
            store: STORE,
            detail: format!(
                "migration {} on {} failed against an existing object: {err}",
                migration.version, tables.leases
            ),
        },
        _ => from_sqlx(err),
    }
}

/// Checks that `table` has every expected column with the expected type and nullability, and
/// the expected primary key; [`Error::SchemaMismatch`] naming the first difference otherwise.
async fn check_columns(
    conn: &mut PgConnection,
    tables: &Tables,
    table: &str,
    expected: &[ColumnSpec],
    key: &[&str],
) -> Result<()> {
    let rows = sqlx::query(
        "SELECT column_name::text, data_type::text, is_nullable = 'YES'
         FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
    )
    .bind(&tables.schema)
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    let qualified = format!("\"{}\".\"{}\"", tables.schema, table);
    let mismatch = |detail: String| Error::SchemaMismatch {
        store: STORE,
        detail,
    };
    let mut found = Vec::with_capacity(rows.len());
    for row in &rows {
        let name: String = row.try_get(0).map_err(from_sqlx)?;
        let data_type: String = row.try_get(1).map_err(from_sqlx)?;
        let nullable: bool = row.try_get(2).map_err(from_sqlx)?;
        found.push((name, data_type, nullable));
    }
    if found.is_empty() {
        return Err(mismatch(format!(
            "table {qualified} does not exist or is not visible"
        )));
    }
    for (name, data_type, nullable) in expected {
        match found.iter().find(|(n, _, _)| n == name) {
            None => return Err(mismatch(format!("table {qualified} has no column {name}"))),
            Some((_, t, _)) if t != data_type => {
                return Err(mismatch(format!(
                    "column {name} of {qualified} is {t}, expected {data_type}"
                )));
            }
            Some((_, _, n)) if n != nullable => {
                return Err(mismatch(format!(
                    "column {name} of {qualified} is {}, expected {}",
                    if *n { "nullable" } else { "NOT NULL" },
                    if *nullable { "nullable" } else { "NOT NULL" },
                )));
            }
            Some(_) => {}
        }
    }
    let mut primary: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text
         FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
         WHERE i.indrelid = to_regclass($1) AND i.indisprimary",
    )
    .bind(&qualified)
    .fetch_all(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    primary.sort();
    let mut wanted: Vec<&str> = key.to_vec();
    wanted.sort_unstable();
    if primary != wanted {
        return Err(mismatch(format!(
            "primary key of {qualified} is ({}), expected ({})",
            primary.join(", "),
            key.join(", ")
        )));
    }
    Ok(())
}

/// The columns every statement returns for a lease, in the order [`crate::store`] decodes them.
/// The deadline travels as microseconds since the Unix epoch, the numerics as text.
const LEASE_COLUMNS_SQL: &str = "l.stream, l.shard, l.owner, l.token, \
     (extract(epoch FROM l.deadline) * 1000000)::bigint AS deadline_us, \
     l.checkpoint, l.checkpoint_sub::text AS checkpoint_sub, \
     l.pending_checkpoint, l.pending_checkpoint_sub::text AS pending_checkpoint_sub, \
     l.parents, l.claim, l.owner_switches";

/// The stored checkpoint is a position this code can read, as far as its progress key can
/// tell: a sequence or `SHARD_END` (keys `1…` and `2`), or an initial position (key `0`, which
/// any other text also gets). The conditional checkpoint writes require it, so a hand-edited
/// checkpoint is reported `Corrupt` by the re-read instead of being overwritten.
const READABLE: &str = "(l.checkpoint_order <> '0' OR l.checkpoint IN ('TRIM_HORIZON', 'LATEST') \
     OR l.checkpoint ~ '^AT_TIMESTAMP:[0-9]{1,20}$')";

/// The key condition of one lease: `$1` app, `$2` stream, `$3` shard.
const KEY: &str = "l.app = $1 AND l.stream = $2 AND l.shard = $3";

/// Every statement of the store, built once per store from its table names.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) create_if_absent: SqlStr,
    pub(crate) grant_existing: SqlStr,
    pub(crate) get_lease: SqlStr,
    pub(crate) renew: SqlStr,
    pub(crate) renew_many: SqlStr,
    pub(crate) checkpoint: SqlStr,
    pub(crate) prepare_checkpoint: SqlStr,
    pub(crate) fetch: SqlStr,
    pub(crate) reread: SqlStr,
    pub(crate) release: SqlStr,
    pub(crate) force_release: SqlStr,
    pub(crate) delete: SqlStr,
    pub(crate) list_page: SqlStr,
    pub(crate) list_apps_page: SqlStr,
    pub(crate) steal: SqlStr,
    pub(crate) claim: SqlStr,
    pub(crate) reset_checkpoint: SqlStr,
    pub(crate) register_worker: SqlStr,
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
        let ms = "* interval '1 millisecond'";
        Self {
            // $4 parents, $5 checkpoint, $6 checkpoint sub-sequence.
            create_if_absent: sql(format!(
                "INSERT INTO {leases} AS l (app, stream, shard, parents, checkpoint, checkpoint_sub)
                 VALUES ($1, $2, $3, $4::text[], $5::text, $6::numeric)
                 ON CONFLICT (app, stream, shard) DO NOTHING"
            )),
            // $4 worker, $5 duration in ms. The grant of an existing record: the same SET and
            // the same condition as `get_lease`'s `DO UPDATE` below, as a plain `UPDATE` (no
            // speculative insertion); no row when the record is absent or the grant is refused.
            grant_existing: sql(format!(
                "WITH now AS (SELECT clock_timestamp() AS t)
                 UPDATE {leases} AS l SET
                     token = CASE WHEN l.owner = $4::text THEN l.token ELSE l.token + 1 END,
                     owner_switches = CASE WHEN l.owner = $4::text THEN l.owner_switches
                                           ELSE l.owner_switches + 1 END,
                     claim = CASE WHEN l.owner = $4::text THEN l.claim ELSE NULL END,
                     owner = $4::text,
                     deadline = now.t + $5::bigint {ms}
                 FROM now
                 WHERE {KEY} AND (l.owner = $4::text OR l.deadline IS NULL
                       OR l.deadline <= now.t
                       OR (l.owner IS NULL AND (l.claim IS NULL OR l.claim = $4::text)))
                 RETURNING {cols}"
            )),
            // $4 worker, $5 duration in ms. A free lease released while claimed stays reserved for
            // the claimant until its deadline (rules::get_lease).
            get_lease: sql(format!(
                "WITH now AS (SELECT clock_timestamp() AS t)
                 INSERT INTO {leases} AS l (app, stream, shard, owner, token, deadline, owner_switches)
                 SELECT $1::text, $2::text, $3::text, $4::text, 1, now.t + $5::bigint {ms}, 1 FROM now
                 ON CONFLICT (app, stream, shard) DO UPDATE SET
                     token = CASE WHEN l.owner = $4::text THEN l.token ELSE l.token + 1 END,
                     owner_switches = CASE WHEN l.owner = $4::text THEN l.owner_switches
                                           ELSE l.owner_switches + 1 END,
                     claim = CASE WHEN l.owner = $4::text THEN l.claim ELSE NULL END,
                     owner = $4::text,
                     deadline = EXCLUDED.deadline
                 WHERE l.owner = $4::text OR l.deadline IS NULL
                       OR l.deadline <= (SELECT t FROM now)
                       OR (l.owner IS NULL AND (l.claim IS NULL OR l.claim = $4::text))
                 RETURNING {cols}"
            )),
            // $4 worker, $5 token, $6 duration in ms.
            renew: sql(format!(
                "UPDATE {leases} AS l SET deadline = clock_timestamp() + $6::bigint {ms}
                 WHERE {KEY} AND l.owner = $4::text AND l.token = $5::bigint
                 RETURNING {cols}"
            )),
            // $1 app, $2 worker, $3 streams, $4 shards, $5 tokens, $6 duration in ms.
            renew_many: sql(format!(
                "WITH now AS (SELECT clock_timestamp() AS t)
                 UPDATE {leases} AS l SET deadline = now.t + $6::bigint {ms}
                 FROM now, unnest($3::text[], $4::text[], $5::bigint[]) AS b(stream, shard, token)
                 WHERE l.app = $1 AND l.owner = $2::text
                       AND l.stream = b.stream AND l.shard = b.shard AND l.token = b.token
                 RETURNING {cols}"
            )),
            // $4 worker, $5 token, $6 position, $7 sub-sequence, $8 progress key. A stored
            // checkpoint that is no position (its `checkpoint_order` is '0' like the initial
            // positions') matches nothing: the re-read reports it `Corrupt`, never overwritten.
            checkpoint: sql(format!(
                "UPDATE {leases} AS l SET checkpoint = $6::text, checkpoint_sub = $7::numeric,
                     pending_checkpoint = NULL, pending_checkpoint_sub = 0, owner_switches = 0
                 WHERE {KEY} AND l.owner = $4::text AND l.token = $5::bigint
                       AND (l.checkpoint IS NULL OR (l.checkpoint_order <= $8::text AND {READABLE}))
                 RETURNING {cols}"
            )),
            prepare_checkpoint: sql(format!(
                "UPDATE {leases} AS l SET pending_checkpoint = $6::text,
                     pending_checkpoint_sub = $7::numeric
                 WHERE {KEY} AND l.owner = $4::text AND l.token = $5::bigint
                       AND (l.checkpoint IS NULL OR (l.checkpoint_order <= $8::text AND {READABLE}))
                 RETURNING {cols}"
            )),
            fetch: sql(format!("SELECT {cols} FROM {leases} AS l WHERE {KEY}")),
            // Always one row: the server's clock, and the record's columns (NULL when absent).
            reread: sql(format!(
                "SELECT {cols}, (extract(epoch FROM n.t) * 1000000)::bigint AS now_us
                 FROM (SELECT clock_timestamp() AS t) AS n
                 LEFT JOIN {leases} AS l ON {KEY}"
            )),
            // $4 worker, $5 token. A claimed lease keeps its deadline: the claimant's reservation.
            release: sql(format!(
                "UPDATE {leases} AS l SET owner = NULL,
                     deadline = CASE WHEN l.claim IS NULL THEN NULL ELSE l.deadline END
                 WHERE {KEY} AND l.owner = $4::text AND l.token = $5::bigint
                 RETURNING {cols}"
            )),
            force_release: sql(format!(
                "UPDATE {leases} AS l SET owner = NULL, deadline = NULL WHERE {KEY} RETURNING {cols}"
            )),
            delete: sql(format!("DELETE FROM {leases} AS l WHERE {KEY}")),
            // $1 app, $2 stream or NULL, ($3, $4) the last key of the previous page, $5 limit.
            list_page: sql(format!(
                "SELECT {cols} FROM {leases} AS l
                 WHERE l.app = $1 AND ($2::text IS NULL OR l.stream = $2::text)
                       AND (l.stream, l.shard) > ($3::text, $4::text)
                 ORDER BY l.stream, l.shard LIMIT $5"
            )),
            // $1 the last app of the previous page ('' first), $2 the page size. `app` is
            // `COLLATE "C"`: byte order, the order of `AppName`.
            list_apps_page: sql(format!(
                "SELECT DISTINCT l.app FROM {leases} AS l WHERE l.app > $1::text
                 ORDER BY l.app LIMIT $2"
            )),
            // $4 thief, $5 expected owner, $6 expected token, $7 duration in ms.
            steal: sql(format!(
                "UPDATE {leases} AS l SET owner = $4::text, token = l.token + 1,
                     deadline = clock_timestamp() + $7::bigint {ms}, claim = NULL,
                     owner_switches = l.owner_switches + 1
                 WHERE {KEY} AND l.owner = $5::text AND l.token = $6::bigint
                 RETURNING {cols}"
            )),
            // $4 claimant.
            claim: sql(format!(
                "UPDATE {leases} AS l SET claim = $4::text
                 WHERE {KEY} AND l.owner IS DISTINCT FROM $4::text
                       AND l.claim IS DISTINCT FROM $4::text
                 RETURNING {cols}"
            )),
            // $4 position or NULL, $5 sub-sequence.
            reset_checkpoint: sql(format!(
                "UPDATE {leases} AS l SET checkpoint = $4::text, checkpoint_sub = $5::numeric,
                     pending_checkpoint = NULL, pending_checkpoint_sub = 0, owner_switches = 0
                 WHERE {KEY} RETURNING {cols}"
            )),
            // $1 app, $2 worker, $3 ttl in ms, $4 this handle's instance nonce. An existing row
            // is replaced only when it is this instance's or expired by the server's clock;
            // no row affected: another instance holds the id live.
            register_worker: sql(format!(
                "INSERT INTO {workers} AS w (app, worker, expires_at, instance)
                 VALUES ($1, $2, clock_timestamp() + $3::bigint {ms}, $4)
                 ON CONFLICT (app, worker) DO UPDATE
                     SET expires_at = EXCLUDED.expires_at, instance = EXCLUDED.instance
                     WHERE w.instance = EXCLUDED.instance OR w.expires_at <= clock_timestamp()"
            )),
            // $1 app, $2 worker, $3 ttl in ms, $4 instance. Returns whether this instance's row
            // was extended and whether any row of the id exists, judged in one snapshot.
            heartbeat: sql(format!(
                "WITH beat AS (
                     UPDATE {workers} AS w SET expires_at = clock_timestamp() + $3::bigint {ms}
                     WHERE w.app = $1 AND w.worker = $2 AND w.instance = $4 RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM beat),
                        EXISTS (SELECT 1 FROM {workers} AS o WHERE o.app = $1 AND o.worker = $2)"
            )),
            live_workers: sql(format!(
                "SELECT w.worker FROM {workers} AS w
                 WHERE w.app = $1 AND w.expires_at > clock_timestamp() ORDER BY w.worker"
            )),
            deregister_worker: sql(format!(
                "DELETE FROM {workers} AS w WHERE w.app = $1 AND w.worker = $2"
            )),
            prune_workers: sql(format!(
                "DELETE FROM {workers} AS w WHERE w.app = $1 AND w.expires_at <= clock_timestamp()"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated_and_quoted() {
        let tables = Tables::new("my_schema", "orders").unwrap();
        assert_eq!(tables.leases, "\"my_schema\".\"orders_leases\"");
        assert_eq!(tables.workers, "\"my_schema\".\"orders_workers\"");
        assert_eq!(tables.migrations, "\"my_schema\".\"orders_migrations\"");
        for bad in [
            "",
            "a\"b",
            "a.b",
            "a b",
            "x;DROP TABLE y",
            "9lives",
            "ünï",
            "a-b",
        ] {
            assert_eq!(
                Tables::new(bad, "p").unwrap_err().field(),
                Some("schema"),
                "{bad:?}"
            );
            assert_eq!(
                Tables::new("s", bad).unwrap_err().field(),
                Some("table_prefix"),
                "{bad:?}"
            );
        }
        assert!(Tables::new(&"s".repeat(63), "p").is_ok());
        assert!(Tables::new(&"s".repeat(64), "p").is_err());
        assert!(Tables::new("s", &"p".repeat(48)).is_ok());
        assert!(Tables::new("s", &"p".repeat(49)).is_err());
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(LATEST_VERSION));
    }
}

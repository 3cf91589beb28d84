//! Layout and configuration: incompatible existing tables, concurrent `init`, the upgrade from
//! schema version 1, identifier validation, redaction, URL parameters and corrupt rows. Against
//! `CHECKPOINT_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`); each test uses
//! its own random app, and the tests that need their own tables use their own random schema and
//! drop only that.

mod common;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Backoff, Checkpointer, Error, ErrorKind, FencingToken, LeaseKey, LeaseManager, Position,
};
use checkpoint_postgres::sqlx::{self, Connection};
use checkpoint_postgres::{PostgresConfig, PostgresStore};
use common::{config, drop_schema, key, long, open, random_schema, seq, url, worker};

async fn an_incompatible_existing_table_is_a_schema_mismatch() {
    let Some(store) = open(config()).await else {
        return;
    };
    let cases: [(&str, &str); 4] = [
        (
            "missing columns",
            "CREATE TABLE {s}.ck_leases (app text, stream text, shard text, PRIMARY KEY (app, stream, shard))",
        ),
        (
            "wrong type",
            "CREATE TABLE {s}.ck_workers (app text NOT NULL, worker text NOT NULL, expires_at bigint NOT NULL, PRIMARY KEY (app, worker))",
        ),
        (
            "wrong primary key",
            "CREATE TABLE {s}.ck_workers (app text NOT NULL, worker text NOT NULL, expires_at timestamptz NOT NULL, PRIMARY KEY (worker))",
        ),
        (
            "newer schema version",
            "CREATE TABLE {s}.ck_migrations (version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now()); \
             INSERT INTO {s}.ck_migrations VALUES (99, 'from the future')",
        ),
    ];
    for (what, ddl) in cases {
        let schema = random_schema();
        let quoted = format!("\"{schema}\"");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA {quoted}; {}",
            ddl.replace("{s}", &quoted)
        )))
        .execute(store.pool())
        .await
        .expect("incompatible table");
        let err = PostgresStore::open(
            config().with_schema(schema.clone()).with_table_prefix("ck"),
            random_app("mismatch"),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SchemaMismatch, "{what}: {err}");
        println!("{what}: {err}");
        drop_schema(&store, &schema).await;
    }
}

/// Tables with the right column names, types and keys but a wrong collation, a wrong
/// generated `checkpoint_order` or a missing `CHECK` are a schema mismatch naming what differs:
/// byte-wise id order, progress order and the token's sign are part of the layout.
async fn a_wrong_collation_expression_or_check_is_a_schema_mismatch() {
    let Some(store) = open(config()).await else {
        return;
    };
    let layout = include_str!("../migrations/0001_create_tables.sql");
    let cases: [(&str, &str, &str, &str); 4] = [
        (
            "owner without COLLATE \"C\"",
            "owner                  text COLLATE \"C\",",
            "owner                  text,",
            "collation",
        ),
        (
            "checkpoint_order padded to 64 digits",
            "lpad(checkpoint, 128, '0')",
            "lpad(checkpoint, 64, '0')",
            "generated",
        ),
        (
            "token without its CHECK",
            "token                  bigint NOT NULL DEFAULT 0 CHECK (token >= 0),",
            "token                  bigint NOT NULL DEFAULT 0,",
            "CHECK",
        ),
        (
            "worker without COLLATE \"C\"",
            "worker     text COLLATE \"C\" NOT NULL,",
            "worker     text NOT NULL,",
            "collation",
        ),
    ];
    for (what, from, to, named) in cases {
        assert!(
            layout.contains(from),
            "{what}: the migration no longer says {from}"
        );
        let schema = random_schema();
        let quoted = format!("\"{schema}\"");
        let ddl = layout
            .replace(from, to)
            .replace("{leases}", &format!("{quoted}.\"ck_leases\""))
            .replace("{workers}", &format!("{quoted}.\"ck_workers\""));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA {quoted}; {ddl}"
        )))
        .execute(store.pool())
        .await
        .expect("altered layout");
        let err = PostgresStore::open(
            config().with_schema(schema.clone()).with_table_prefix("ck"),
            random_app("mismatch"),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SchemaMismatch, "{what}: {err}");
        assert!(err.to_string().contains(named), "{what}: {err}");
        println!("{what}: {err}");
        drop_schema(&store, &schema).await;
    }
    // The unaltered layout, created by hand, passes.
    let schema = random_schema();
    let quoted = format!("\"{schema}\"");
    let ddl = layout
        .replace("{leases}", &format!("{quoted}.\"ck_leases\""))
        .replace("{workers}", &format!("{quoted}.\"ck_workers\""));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA {quoted}; {ddl}"
    )))
    .execute(store.pool())
    .await
    .expect("layout");
    PostgresStore::open(
        config().with_schema(schema.clone()).with_table_prefix("ck"),
        random_app("matching"),
    )
    .await
    .expect("the migrations' own layout is accepted");
    drop_schema(&store, &schema).await;
}

async fn many_workers_initialise_a_new_schema_at_once() {
    let Some(store) = open(config()).await else {
        return;
    };
    let schema = random_schema();
    let opens = (0..12).map(|i| {
        let prefix = if i % 2 == 0 { "left" } else { "right" };
        PostgresStore::open(
            config()
                .with_schema(schema.clone())
                .with_table_prefix(prefix)
                .with_max_connections(1),
            random_app("init"),
        )
    });
    let stores = futures_join_all(opens).await;
    for s in &stores {
        let s = s.as_ref().expect("concurrent init");
        s.init().await.expect("init again");
        assert!(
            s.create_lease_if_absent(&key(), &[], None)
                .await
                .expect("create")
        );
    }
    let versions: Vec<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM \"{schema}\".left_migrations"
    )))
    .fetch_all(store.pool())
    .await
    .expect("migrations");
    assert_eq!(versions, vec![1, 2, 3], "each migration is recorded once");
    drop_schema(&store, &schema).await;
}

/// `join_all` without a dependency on the futures crate.
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

async fn identifiers_are_validated_before_any_sql() {
    let bad = [
        "",
        "a\"b",
        "x\";DROP TABLE y;--",
        "a.b",
        "a b",
        "9lives",
        "zürich",
        "a-b",
        "semi;colon",
    ];
    for value in bad {
        let e = PostgresStore::open(config().with_schema(value), random_app("bad"))
            .await
            .unwrap_err();
        assert_eq!(e.field(), Some("schema"), "{value:?}: {e}");
        let e = PostgresStore::open(config().with_table_prefix(value), random_app("bad"))
            .await
            .unwrap_err();
        assert_eq!(e.field(), Some("table_prefix"), "{value:?}: {e}");
        let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
        let e =
            PostgresConfig::from_url(&format!("postgres://u@h/db?table={encoded}")).unwrap_err();
        assert_eq!(e.field(), Some("table_prefix"), "{value:?}: {e}");
    }
    let e = PostgresConfig::from_url(&format!("postgres://u@h/db?schema={}", "s".repeat(64)))
        .unwrap_err();
    assert_eq!(e.field(), Some("schema"));
    let e = PostgresConfig::from_url("redis://h/").unwrap_err();
    assert_eq!(e.field(), Some("url"));
}

async fn the_password_never_shows() {
    let secret = "hunter2-very-secret";
    let mut with_password = url::Url::parse(&url()).expect("url");
    with_password.set_password(Some(secret)).expect("password");
    let config = PostgresConfig::from_url(with_password.as_str()).expect("config");
    assert!(!format!("{config:?}{config:#?}").contains(secret));
    // The test server trusts local connections, so the password is sent but not needed.
    let Some(store) = open(config.clone()).await else {
        return;
    };
    assert!(!format!("{store:?}{store:#?}").contains(secret));
    let bad = PostgresConfig::from_url(&with_password.as_str().replace("postgres://", "mysql://"))
        .unwrap_err();
    assert!(!bad.to_string().contains(secret));
    // A refused connection names the server, not the password.
    let mut refused = with_password.clone();
    refused.set_port(Some(1)).expect("port");
    let e = PostgresStore::open(
        PostgresConfig::from_url(refused.as_str())
            .expect("config")
            .with_backoff(Backoff::none()),
        random_app("refused"),
    )
    .await
    .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(!format!("{e} {e:?}").contains(secret), "{e:?}");
}

async fn url_parameters_reach_the_connection() {
    let mut u = url::Url::parse(&url()).expect("url");
    let name = format!("appname{}", random_schema());
    u.query_pairs_mut()
        .append_pair("application_name", &name)
        .append_pair("max_connections", "3");
    let Some(store) = open(PostgresConfig::from_url(u.as_str()).expect("config")).await else {
        return;
    };
    assert_eq!(store.config().max_connections(), 3);
    let mut conn = store.pool().acquire().await.expect("connection");
    let shown: String = sqlx::query_scalar("SELECT current_setting('application_name')")
        .fetch_one(&mut *conn)
        .await
        .expect("application_name");
    assert_eq!(shown, name);
    conn.ping().await.expect("ping");
}

async fn a_corrupt_row_is_reported_naming_the_field() {
    let Some(store) = open(config()).await else {
        return;
    };
    let (k, me) = (key(), worker("w"));
    store.get_lease(&k, &me, long()).await.expect("acquire");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {} SET checkpoint = 'not a position' WHERE app = $1",
        store.lease_table()
    )))
    .bind(store.app().as_str())
    .execute(store.pool())
    .await
    .expect("corrupt the row");
    let e = store.fetch_checkpoint(&k).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Corrupt {
                field: "checkpoint",
                ..
            }
        ),
        "{e:?}"
    );
}

/// A database at schema version 1 (as the first release created it) is brought to the latest
/// version by `init`, and its records survive.
async fn init_upgrades_a_version_1_database_and_keeps_its_data() {
    let Some(store) = open(config()).await else {
        return;
    };
    let schema = random_schema();
    let table = |name: &str| format!("\"{schema}\".\"up_{name}\"");
    let version_1 = include_str!("../migrations/0001_create_tables.sql")
        .replace("{leases}", &table("leases"))
        .replace("{workers}", &table("workers"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA \"{schema}\";
         {version_1};
         CREATE TABLE {migrations} (
             version     integer PRIMARY KEY,
             description text NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
         );
         INSERT INTO {migrations} (version, description)
             VALUES (1, 'create the lease and membership tables');",
        migrations = table("migrations"),
    )))
    .execute(store.pool())
    .await
    .expect("a version 1 schema");
    let app = random_app("upgrade");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {} (app, stream, shard, owner, token, deadline, checkpoint, checkpoint_sub,
             parents, owner_switches)
         VALUES ($1, 'orders', 'shard-1', 'w', 3, clock_timestamp() + interval '1 hour',
             '12345', 7, ARRAY['shard-0'], 0)",
        table("leases")
    )))
    .bind(app.as_str())
    .execute(store.pool())
    .await
    .expect("a version 1 record");

    let upgraded = PostgresStore::open(
        config().with_schema(schema.clone()).with_table_prefix("up"),
        app,
    )
    .await
    .expect("init upgrades");
    let versions: Vec<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM {} ORDER BY version",
        table("migrations")
    )))
    .fetch_all(store.pool())
    .await
    .expect("versions");
    assert_eq!(versions, vec![1, 2, 3]);
    let options: Vec<String> =
        sqlx::query_scalar("SELECT unnest(reloptions) FROM pg_class WHERE oid = to_regclass($1)")
            .bind(table("leases"))
            .fetch_all(store.pool())
            .await
            .expect("reloptions");
    assert_eq!(options, vec!["fillfactor=50".to_owned()]);

    let k = LeaseKey::parse("orders", "shard-1").expect("key");
    let lease = upgraded
        .fetch_checkpoint(&k)
        .await
        .expect("fetch")
        .expect("the record survived");
    assert_eq!(lease.owner, Some(worker("w")));
    assert_eq!(lease.token, FencingToken(3));
    assert_eq!(
        lease.checkpoint,
        Some(Position::sequence_with_sub("12345", 7).expect("position"))
    );
    assert_eq!(lease.parents.len(), 1);
    // Still fenced and monotonic after the upgrade.
    let me = worker("w");
    upgraded
        .renew(&k, &me, FencingToken(3), long())
        .await
        .expect("renew");
    let err = upgraded
        .checkpoint_sequence(&k, &me, FencingToken(3), &seq(12_344))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CheckpointRegression, "{err}");
    upgraded
        .checkpoint_sequence(&k, &me, FencingToken(3), &seq(12_346))
        .await
        .expect("checkpoint");
    upgraded.init().await.expect("init again is a no-op");
    drop_schema(&store, &schema).await;
}

// The tests of this file, registered with the shared harness (`harness = false`): a
// `#[test]` attribute would not run here. An unreachable server leaves them ignored.
checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Postgres,
    tests: [an_incompatible_existing_table_is_a_schema_mismatch, a_wrong_collation_expression_or_check_is_a_schema_mismatch, many_workers_initialise_a_new_schema_at_once, the_password_never_shows, url_parameters_reach_the_connection, a_corrupt_row_is_reported_naming_the_field, init_upgrades_a_version_1_database_and_keeps_its_data],
    offline_async: [identifiers_are_validated_before_any_sql],
}

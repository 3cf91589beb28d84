//! A role without the `CREATE` privilege opens a store on tables a DBA created from
//! [`checkpoint_postgres::ddl`], through its own `sqlx::PgPool` and with migrations off; with
//! migrations on, the same role cannot open it (so the test would fail if opening ran DDL).
//! Against `CHECKPOINT_POSTGRES_URL` as a role that may create roles; the test's role and
//! schema have random names and are dropped at the end. An unreachable server leaves the test
//! ignored (see `checkpoint_test_support`).

use std::time::Duration;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Checkpointer, Error, LeaseDuration, LeaseKey, LeaseManager, Position, WorkerId,
};
use checkpoint_postgres::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use checkpoint_postgres::sqlx::{self, PgPool};
use checkpoint_postgres::{DEFAULT_URL, PostgresConfig, PostgresStore};

fn url() -> String {
    std::env::var("CHECKPOINT_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

async fn exec(pool: &PgPool, statement: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

async fn a_role_without_create_opens_tables_made_from_the_ddl() {
    let admin_config = PostgresConfig::from_url(&url()).expect("CHECKPOINT_POSTGRES_URL");
    let admin = PgPool::connect(&url())
        .await
        .expect("the server listens, so a connection opens");
    let name = random_app("p").as_str().replace('-', "_");
    let (schema, role) = (format!("s_{name}"), format!("r_{name}"));
    let config = admin_config.with_schema(&schema).with_table_prefix("ckpt");

    // The DBA's part: the script, run once as the administrator.
    let ddl = checkpoint_postgres::ddl(&config).expect("ddl");
    exec(&admin, ddl.clone()).await;
    exec(&admin, ddl).await; // idempotent
    exec(
        &admin,
        format!(
            "CREATE ROLE \"{role}\" LOGIN PASSWORD 'pw';
             GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\";
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{schema}\" TO \"{role}\";"
        ),
    )
    .await;

    let outcome = {
        let (schema, role) = (schema.clone(), role.clone());
        async move {
            let options: PgConnectOptions = url().parse().expect("connect options");
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .connect_lazy_with(options.username(&role).password("pw"));
            let can_create: bool = sqlx::query_scalar("SELECT has_schema_privilege($1, 'CREATE')")
                .bind(&schema)
                .fetch_one(&pool)
                .await
                .expect("privilege check");
            assert!(
                !can_create,
                "the test role must not have CREATE on its schema"
            );

            // Migrations on: the first DDL statement is refused, so opening fails.
            let refused =
                PostgresStore::from_pool(pool.clone(), config.clone(), random_app("p")).await;
            assert!(
                refused.is_err(),
                "opening with migrations on ran no DDL, so the privileges are not what this test needs"
            );

            // Migrations off: reads only.
            let store = PostgresStore::from_pool(
                pool.clone(),
                config.clone().with_migrations(false),
                random_app("p"),
            )
            .await
            .expect("open without DDL");
            let key = LeaseKey::parse("orders", "shard-0").expect("key");
            let me = WorkerId::new("w").expect("worker");
            let duration = LeaseDuration::new(Duration::from_secs(30)).expect("duration");
            let lease = store.get_lease(&key, &me, duration).await.expect("acquire");
            let position = Position::sequence("42").expect("position");
            store
                .checkpoint_sequence(&key, &me, lease.token, &position)
                .await
                .expect("checkpoint");
            let fetched = store
                .fetch_checkpoint(&key)
                .await
                .expect("fetch")
                .expect("record");
            assert_eq!(fetched.checkpoint, Some(position));

            // Migrations off on a schema without the tables: a schema mismatch, nothing created.
            let empty = config
                .clone()
                .with_table_prefix("absent")
                .with_migrations(false);
            let err = PostgresStore::from_pool(pool.clone(), empty, random_app("p"))
                .await
                .expect_err("no tables");
            assert!(matches!(err, Error::SchemaMismatch { .. }), "{err:?}");
            pool.close().await;
        }
    };
    // Drop the schema and the role whatever happened, then report.
    let result = tokio::spawn(outcome).await;
    exec(
        &admin,
        format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE; DROP ROLE IF EXISTS \"{role}\";"),
    )
    .await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic.into_panic());
    }
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Postgres,
    tests: [a_role_without_create_opens_tables_made_from_the_ddl],
}

//! Helpers shared by the test files: the server's URL, opening a store, random schemas, and
//! small constructors. Every file runs under `checkpoint_test_support::server_tests!`, which
//! leaves the tests ignored when nothing listens at the server's address.
#![allow(dead_code)]

use std::time::Duration;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{LeaseDuration, LeaseKey, Position, WorkerId};
use checkpoint_postgres::sqlx;
use checkpoint_postgres::{DEFAULT_URL, PostgresConfig, PostgresStore};

pub(crate) fn url() -> String {
    std::env::var("CHECKPOINT_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

pub(crate) fn config() -> PostgresConfig {
    PostgresConfig::from_url(&url()).expect("CHECKPOINT_POSTGRES_URL is a valid URL")
}

/// Opens a store. The harness (`checkpoint_test_support`) runs these tests only when the
/// server listens, so any error fails the test; `None` is never returned.
pub(crate) async fn open(config: PostgresConfig) -> Option<PostgresStore> {
    match PostgresStore::open(config, random_app("pg")).await {
        Ok(store) => Some(store),
        Err(e) => panic!("opening the store failed although the server listens: {e}"),
    }
}

/// A schema name of this test's own: `t_<random hex>`.
pub(crate) fn random_schema() -> String {
    let app = random_app("t");
    app.as_str().replace('-', "_")
}

pub(crate) async fn drop_schema(store: &PostgresStore, schema: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(store.pool())
    .await
    .expect("drop the test's own schema");
}

pub(crate) fn key() -> LeaseKey {
    LeaseKey::parse("orders", "shardId-000000000001").expect("key")
}

pub(crate) fn worker(name: &str) -> WorkerId {
    WorkerId::new(name).expect("worker")
}

pub(crate) fn long() -> LeaseDuration {
    LeaseDuration::new(Duration::from_secs(120)).expect("duration")
}

pub(crate) fn seq(n: u64) -> Position {
    Position::sequence(&n.to_string()).expect("sequence")
}

//! Helpers shared by the test files: the server's URL, opening a store, random table prefixes,
//! and small constructors. Every file runs under `checkpoint_test_support::server_tests!`,
//! which leaves the tests ignored when nothing listens at the server's address.
#![allow(dead_code)]

use std::time::Duration;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{Checkpointer, LeaseDuration, LeaseKey, Position, WorkerId};
use checkpoint_mysql::sqlx;
use checkpoint_mysql::{DEFAULT_URL, MySqlConfig, MySqlStore};

pub(crate) fn url() -> String {
    std::env::var("CHECKPOINT_MYSQL_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

pub(crate) fn config() -> MySqlConfig {
    MySqlConfig::from_url(&url()).expect("CHECKPOINT_MYSQL_URL is a valid URL")
}

/// Opens a store for a random app. The harness runs the tests only when the server listens,
/// so any error fails the test.
pub(crate) async fn open(config: MySqlConfig) -> MySqlStore {
    match MySqlStore::open(config, random_app("my")).await {
        Ok(store) => store,
        Err(e) => panic!("opening the store failed although the server listens: {e}"),
    }
}

/// A table prefix of this test's own: `t_<random hex>`.
pub(crate) fn random_prefix() -> String {
    random_app("t").as_str().replace('-', "_")
}

/// Drops the tables of `prefix` (and the application table `<prefix>_totals`).
pub(crate) async fn drop_tables(store: &MySqlStore, prefix: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS `{prefix}_leases`, `{prefix}_workers`, `{prefix}_migrations`, `{prefix}_totals`"
    )))
    .execute(store.pool())
    .await
    .expect("drop the test's own tables");
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

pub(crate) async fn stored_checkpoint(store: &MySqlStore, k: &LeaseKey) -> Option<Position> {
    store
        .fetch_checkpoint(k)
        .await
        .expect("fetch")
        .expect("record")
        .checkpoint
}

//! The conformance suite (with the model test) against a Redis Cluster
//! (`CHECKPOINT_REDIS_CLUSTER_URL`, for example `redis+cluster://127.0.0.1:7000,127.0.0.1:7001/`;
//! `scripts/test` starts a local cluster of three masters and three replicas), twice: with a new
//! store handle and cluster connection for every factory call, sending the function library
//! (loaded on every master at open), and with handles sharing one cluster connection
//! ([`RedisStore::for_app`]) that send one script per operation (`ScriptMode::Scripts`). Lists are read 7 rows a page. A random app for
//! every scenario, so the apps hash to slots spread over the masters, and the scenarios run in
//! parallel with any other test on the same cluster. An unset variable or an unreachable first
//! node leaves the tests ignored (failed in strict mode; see `checkpoint_test_support`).

use std::sync::Arc;

use checkpoint_core::conformance::{self, Configured, random_app};
use checkpoint_core::{AppName, LeaseManager, Store};
use checkpoint_redis::{RedisConfig, RedisStore, ScriptMode};
use conformance_tests::print_capability_table;

/// Rows per page of a listing in these runs.
const PAGE: usize = 7;

fn config() -> RedisConfig {
    let url = std::env::var("CHECKPOINT_REDIS_CLUSTER_URL")
        .expect("the harness runs these tests only when CHECKPOINT_REDIS_CLUSTER_URL is set");
    let config = RedisConfig::from_url(&url)
        .expect("CHECKPOINT_REDIS_CLUSTER_URL is a valid redis+cluster:// URL")
        .with_list_page_size(PAGE);
    assert!(
        config.is_cluster(),
        "CHECKPOINT_REDIS_CLUSTER_URL is not a redis+cluster:// URL"
    );
    config
}

async fn factory(app: AppName) -> checkpoint_core::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = Arc::new(RedisStore::open(config(), app).await?);
    Ok(store)
}

async fn redis_cluster_conforms() {
    let store = RedisStore::open(config(), random_app("caps"))
        .await
        .expect("the cluster listens, so the store opens");
    print_capability_table(&[store.capabilities()]);
    println!(
        "redis cluster suite: the store sends {:?}",
        store.script_mode()
    );
    let report = conformance::run_all(&Configured::new(factory).with_list_page_size(PAGE)).await;
    println!("redis cluster scenarios passed: {:?}", report.passed);
    report.assert_passed();
}

/// The whole suite again on handles that share one cluster connection
/// ([`RedisStore::for_app`]): apps on different masters through one client, sending scripts.
async fn redis_cluster_conforms_on_a_shared_connection_with_scripts() {
    let base = RedisStore::open(
        config().with_script_mode(ScriptMode::Scripts),
        random_app("shared"),
    )
    .await
    .expect("the cluster listens, so the store opens");
    assert_eq!(base.script_mode(), ScriptMode::Scripts);
    let factory = Configured::new(move |app: AppName| {
        let store: Arc<dyn Store> = Arc::new(base.for_app(app));
        std::future::ready(Ok(store))
    })
    .with_list_page_size(PAGE);
    conformance::run_all(&factory).await.assert_passed();
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::RedisCluster,
    tests: [
        redis_cluster_conforms,
        redis_cluster_conforms_on_a_shared_connection_with_scripts,
    ],
}

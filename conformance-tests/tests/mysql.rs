//! The conformance suite (with the model test) against MySQL or MariaDB: the server named by
//! `CHECKPOINT_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`). Every factory
//! call opens a new store with its own connection pool (and runs `init`), so every scenario also
//! exercises independent handles and reconnection; every scenario uses its own random app, so
//! runs in parallel share the tables without seeing each other. The first run passes MySQL's
//! hooks ([`MySqlHooks`]) for the backend scenarios. An unreachable server leaves the tests
//! ignored (see `checkpoint_test_support`).

use std::sync::Arc;

use checkpoint_core::conformance::{self, random_app};
use checkpoint_core::{AppName, LeaseManager, Store};
use checkpoint_mysql::{DEFAULT_URL, MySqlConfig, MySqlStore};
use conformance_tests::hooks::mysql::MySqlHooks;
use conformance_tests::print_capability_rows;

fn url() -> String {
    std::env::var("CHECKPOINT_MYSQL_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn config() -> MySqlConfig {
    config_for(&url())
}

/// The run's config for the server at `url` (the hooks' lossy handle passes a proxy's URL).
fn config_for(url: &str) -> MySqlConfig {
    MySqlConfig::from_url(url)
        .expect("CHECKPOINT_MYSQL_URL is a valid mysql:// URL")
        .with_max_connections(4)
}

async fn mysql_conforms() {
    let probe = MySqlStore::open(config(), random_app("caps"))
        .await
        .expect("the server listens, so the store opens");
    let factory = |app: AppName| async move {
        let store: Arc<dyn Store> = Arc::new(MySqlStore::open(config(), app).await?);
        Ok(store)
    };
    let hooks = MySqlHooks::open(
        &url(),
        config_for,
        Some(env!("CARGO_BIN_EXE_checkpoint-loop").into()),
    )
    .await
    .expect("the hooks' store opens");
    let started = std::time::Instant::now();
    let report = conformance::run_all_with(&factory, &hooks).await;
    println!("mysql suite: {:?}", started.elapsed());
    print_capability_rows(&[(probe.capabilities(), &report)]);
    report.assert_passed();
}

/// The model test again on handles that share one pool ([`MySqlStore::for_app`]), the way
/// a consumer with many apps would open them.
async fn mysql_model_on_a_shared_pool() {
    let base = MySqlStore::open(config(), random_app("shared"))
        .await
        .expect("the server listens, so the store opens");
    let factory = move |app: AppName| {
        let store: Arc<dyn Store> = Arc::new(base.for_app(app));
        std::future::ready(Ok(store))
    };
    if let Err(failure) = conformance::model_test(&factory).await {
        panic!("model test on mysql (shared pool): {failure}");
    }
    println!("model test on mysql (shared pool): passed");
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Mysql,
    tests: [mysql_conforms, mysql_model_on_a_shared_pool],
}

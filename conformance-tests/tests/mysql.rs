//! The conformance suite (with the model test) against MySQL or MariaDB: the server named by
//! `CHECKPOINT_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`). Every factory
//! call opens a new store with its own connection pool (and runs `init`), so every scenario also
//! exercises independent handles and reconnection; every scenario uses its own random app, so
//! runs in parallel share the tables without seeing each other.
#![cfg(feature = "mysql")]

use std::sync::Arc;

use checkpoint_core::conformance::{self, random_app};
use checkpoint_core::{AppName, LeaseManager, Store};
use checkpoint_mysql::{DEFAULT_URL, MySqlConfig, MySqlStore};
use conformance_tests::print_capability_table;

const HOW_TO_PROVIDE: &str = "start MariaDB or MySQL on 127.0.0.1:3306 or set CHECKPOINT_MYSQL_URL=mysql://user@host:port/db";

fn url() -> String {
    std::env::var("CHECKPOINT_MYSQL_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn config() -> MySqlConfig {
    MySqlConfig::from_url(&url())
        .expect("CHECKPOINT_MYSQL_URL is a valid mysql:// URL")
        .with_max_connections(4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_conforms() {
    let probe = match MySqlStore::open(config(), random_app("caps")).await {
        Ok(store) => store,
        Err(e) if e.is_retryable() => {
            conformance::backend_unavailable("mysql", HOW_TO_PROVIDE, &e);
            return;
        }
        Err(e) => panic!("opening the MySQL store failed: {e}"),
    };
    print_capability_table(&[probe.capabilities()]);
    let factory = |app: AppName| async move {
        let store: Arc<dyn Store> = Arc::new(MySqlStore::open(config(), app).await?);
        Ok(store)
    };
    conformance::run_all(&factory).await.assert_passed();
}

/// The model test again on handles that share one pool ([`MySqlStore::for_app`]), the way
/// a consumer with many apps would open them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_model_on_a_shared_pool() {
    let base = match MySqlStore::open(config(), random_app("shared")).await {
        Ok(store) => store,
        Err(e) if e.is_retryable() => {
            conformance::backend_unavailable("mysql", HOW_TO_PROVIDE, &e);
            return;
        }
        Err(e) => panic!("opening the MySQL store failed: {e}"),
    };
    let factory = move |app: AppName| {
        let store: Arc<dyn Store> = Arc::new(base.for_app(app));
        std::future::ready(Ok(store))
    };
    if let Err(failure) = conformance::model_test(&factory).await {
        panic!("model test on mysql (shared pool): {failure}");
    }
    println!("model test on mysql (shared pool): passed");
}

//! The conformance suite (with the model test) against PostgreSQL: the server named by
//! `CHECKPOINT_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`), twice: with a
//! new store and connection pool for every factory call (so every scenario also exercises
//! independent handles and reconnection), and with handles that share one pool
//! ([`PostgresStore::for_app`]). Lists are fetched 7 rows a page, so the listing scenario
//! crosses page boundaries. Every scenario uses its own random app, so runs in parallel share
//! the tables without seeing each other. An unreachable server leaves the tests ignored (see
//! `checkpoint_test_support`).

use std::sync::Arc;

use checkpoint_core::conformance::{self, Configured, random_app};
use checkpoint_core::{AppName, LeaseManager, Store};
use checkpoint_postgres::{DEFAULT_URL, PostgresConfig, PostgresStore};
use conformance_tests::hooks::postgres::PostgresHooks;
use conformance_tests::print_capability_rows;

/// Rows per page of a listing in these runs.
const PAGE: usize = 7;

fn url() -> String {
    std::env::var("CHECKPOINT_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn config() -> PostgresConfig {
    config_for(&url())
}

/// The run's config for the server at `url` (the hooks' lossy handle passes a proxy's URL).
fn config_for(url: &str) -> PostgresConfig {
    PostgresConfig::from_url(url)
        .expect("CHECKPOINT_POSTGRES_URL is a valid postgres:// URL")
        .with_max_connections(4)
        .with_list_page_size(PAGE)
}

async fn postgres_conforms() {
    let probe = PostgresStore::open(config(), random_app("caps"))
        .await
        .expect("the server listens, so the store opens");
    let factory = Configured::new(|app: AppName| async move {
        let store: Arc<dyn Store> = Arc::new(PostgresStore::open(config(), app).await?);
        Ok(store)
    })
    .with_list_page_size(PAGE);
    let hooks = PostgresHooks::open(
        &url(),
        config_for,
        Some(env!("CARGO_BIN_EXE_checkpoint-loop").into()),
    )
    .await
    .expect("the hooks' store opens");
    let started = std::time::Instant::now();
    let report = conformance::run_all_with(&factory, &hooks).await;
    println!("postgres suite: {:?}", started.elapsed());
    print_capability_rows(&[(probe.capabilities(), &report)]);
    report.assert_passed();
}

/// The whole suite again on handles that share one pool ([`PostgresStore::for_app`]), the way
/// a consumer with many apps would open them. Sixteen connections: the exact-count race runs
/// sixteen contenders on it, and a smaller pool starves the holder behind their retries.
async fn postgres_conforms_on_a_shared_pool() {
    let base = PostgresStore::open(config().with_max_connections(16), random_app("shared"))
        .await
        .expect("the server listens, so the store opens");
    let factory = Configured::new(move |app: AppName| {
        let store: Arc<dyn Store> = Arc::new(base.for_app(app));
        std::future::ready(Ok(store))
    })
    .with_list_page_size(PAGE);
    conformance::run_all(&factory).await.assert_passed();
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Postgres,
    tests: [postgres_conforms, postgres_conforms_on_a_shared_pool],
}

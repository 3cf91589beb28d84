//! The conformance suite against Redis (`CHECKPOINT_REDIS_URL`, default
//! `redis://127.0.0.1:6379/`), twice: with a new store handle and connection for every factory
//! call, sending the function library where the server has it (`ScriptMode::Auto`: on Redis 7.0
//! or later, `FCALL`), and with handles sharing one connection ([`RedisStore::for_app`]) that
//! send one script per operation (`ScriptMode::Scripts`: `EVALSHA`, what a server before 7.0
//! gets), so both forms of every operation pass the suite. Lists are read 7
//! rows a page, so the listing scenario crosses page boundaries. A random app (so its own hash
//! tag) for every scenario, so the scenarios run in parallel with any other test on the same
//! server and never flush the database. An unreachable server leaves the tests ignored (see
//! `checkpoint_test_support`).

use std::sync::Arc;

use checkpoint_core::conformance::{self, Configured, random_app};
use checkpoint_core::{AppName, LeaseManager, Store};
use checkpoint_redis::{RedisConfig, RedisStore, ScriptMode};
use conformance_tests::hooks::redis::RedisHooks;
use conformance_tests::print_capability_rows;

/// Rows per page of a listing in these runs.
const PAGE: usize = 7;

fn url() -> String {
    std::env::var("CHECKPOINT_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn config() -> RedisConfig {
    config_for(&url())
}

/// The run's config for the server at `url` (the hooks' lossy handle passes a proxy's URL).
fn config_for(url: &str) -> RedisConfig {
    RedisConfig::from_url(url)
        .expect("CHECKPOINT_REDIS_URL is a valid redis:// URL")
        .with_list_page_size(PAGE)
}

async fn factory(app: AppName) -> checkpoint_core::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = Arc::new(RedisStore::open(config(), app).await?);
    Ok(store)
}

async fn redis_conforms() {
    let store = RedisStore::open(config(), random_app("caps"))
        .await
        .expect("the server listens, so the store opens");
    let hooks = RedisHooks::open(
        &url(),
        config_for,
        Some(env!("CARGO_BIN_EXE_checkpoint-loop").into()),
    )
    .await
    .expect("the hooks' store opens");
    println!("redis suite: the store sends {:?}", store.script_mode());
    let started = std::time::Instant::now();
    let report =
        conformance::run_all_with(&Configured::new(factory).with_list_page_size(PAGE), &hooks)
            .await;
    println!("redis suite: {:?}", started.elapsed());
    print_capability_rows(&[(store.capabilities(), &report)]);
    report.assert_passed();
}

/// The whole suite again on handles that share one connection ([`RedisStore::for_app`]), sending
/// scripts instead of functions.
async fn redis_conforms_on_a_shared_connection_with_scripts() {
    let base = RedisStore::open(
        config().with_script_mode(ScriptMode::Scripts),
        random_app("shared"),
    )
    .await
    .expect("the server listens, so the store opens");
    assert_eq!(base.script_mode(), ScriptMode::Scripts);
    let factory = Configured::new(move |app: AppName| {
        let store: Arc<dyn Store> = Arc::new(base.for_app(app));
        std::future::ready(Ok(store))
    })
    .with_list_page_size(PAGE);
    conformance::run_all(&factory).await.assert_passed();
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Redis,
    tests: [redis_conforms, redis_conforms_on_a_shared_connection_with_scripts],
}

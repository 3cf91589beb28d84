//! The conformance suite against Redis (`CHECKPOINT_REDIS_URL`, default
//! `redis://127.0.0.1:6379/`): a new store handle, with its own connection, for every factory
//! call, and a random app (so its own hash tag) for every scenario, so the scenarios run in
//! parallel with any other test on the same server and never flush the database.
#![cfg(feature = "redis")]

use std::sync::Arc;

use checkpoint_core::conformance::{self, backend_unavailable, random_app};
use checkpoint_core::{AppName, LeaseManager, Store};
use checkpoint_redis::RedisStore;
use conformance_tests::print_capability_table;

const HOW: &str = "start one with `redis-server --port 6379` or set CHECKPOINT_REDIS_URL";

fn url() -> String {
    std::env::var("CHECKPOINT_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// A store for a probe app, or `None` (after reporting why) when no server can be reached.
async fn probe() -> Option<RedisStore> {
    match RedisStore::connect(&url(), random_app("caps")).await {
        Ok(store) => Some(store),
        Err(e) => {
            backend_unavailable("redis", HOW, &e);
            None
        }
    }
}

async fn factory(app: AppName) -> checkpoint_core::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&url(), app).await?);
    Ok(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_conforms() {
    let Some(store) = probe().await else { return };
    print_capability_table(&[store.capabilities()]);
    let report = conformance::run_all(&factory).await;
    println!("redis scenarios passed: {:?}", report.passed);
    report.assert_passed();
}

/// The proptest model test on its own (a second, independent seed besides the run inside
/// `run_all`): random operation sequences must match the memory reference store exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_matches_the_reference_model() {
    if probe().await.is_none() {
        return;
    }
    if let Err(failure) = conformance::model_test(&factory).await {
        panic!("redis differs from the reference model: {failure}");
    }
    println!("redis model test: passed");
}

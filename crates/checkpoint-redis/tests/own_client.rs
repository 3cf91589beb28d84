//! A store around a `redis::aio::ConnectionManager` the application built itself: the
//! configuration's key prefix is used, the manager's connection is. Registered under the
//! server's reachability (`CHECKPOINT_REDIS_URL`): ignored when nothing listens there.

mod common;

use std::time::Duration;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{Checkpointer, LeaseDuration, LeaseKey, LeaseManager, Position, WorkerId};
use checkpoint_redis::redis::{self, AsyncCommands};
use checkpoint_redis::{RedisConfig, RedisStore};

async fn a_store_on_the_applications_connection_manager() {
    let client = redis::Client::open(common::url()).expect("client");
    let manager = redis::aio::ConnectionManager::new(client)
        .await
        .expect("the server listens, so the manager connects");
    // The configuration's address is never dialled: only its prefix and backoff are used.
    let config =
        RedisConfig::from_url("redis://unreachable.invalid:1/?prefix=own").expect("config");
    let app = random_app("own");
    let store = RedisStore::from_connection_manager(manager.clone(), config, app)
        .await
        .expect("store on the given connection");
    let key = LeaseKey::parse("orders", "shard-0").expect("key");
    let me = WorkerId::new("w").expect("worker");
    let duration = LeaseDuration::new(Duration::from_secs(30)).expect("duration");
    let lease = store.get_lease(&key, &me, duration).await.expect("acquire");
    let position = Position::sequence("7").expect("position");
    store
        .checkpoint_sequence(&key, &me, lease.token, &position)
        .await
        .expect("checkpoint");
    let fetched = store.fetch_checkpoint(&key).await.expect("fetch");
    assert_eq!(fetched.and_then(|l| l.checkpoint), Some(position));

    // The record is where the configured prefix puts it, on the application's connection.
    let lease_key = store.key_layout().lease(&key);
    assert!(lease_key.starts_with("own:"), "{lease_key}");
    let mut conn = manager;
    let exists: bool = conn.exists(&lease_key).await.expect("EXISTS");
    assert!(exists, "{lease_key} was not written");
    store.remove_lease_info(&key).await.expect("clean up");
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Redis,
    tests: [a_store_on_the_applications_connection_manager],
}

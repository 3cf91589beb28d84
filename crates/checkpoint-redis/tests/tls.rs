//! `rediss://` against a TLS-only server whose certificate comes from a private CA. Needs the
//! `tls` feature and a server: `CHECKPOINT_REDIS_TLS_URL` (for example
//! `rediss://localhost:16390/`) and `CHECKPOINT_REDIS_TLS_CA` (the CA's PEM file), both set by
//! `scripts/test`, which starts such a server. Without them the test is skipped with a message,
//! or fails in strict mode (`CHECKPOINT_REQUIRE_ALL=1`).
#![cfg(feature = "tls")]

use std::time::Duration;

use checkpoint_core::conformance::{backend_unavailable, random_app};
use checkpoint_core::{Checkpointer, LeaseDuration, LeaseKey, LeaseManager, Position, WorkerId};
use checkpoint_redis::{RedisConfig, RedisStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    let (Ok(url), Ok(ca)) = (
        std::env::var("CHECKPOINT_REDIS_TLS_URL"),
        std::env::var("CHECKPOINT_REDIS_TLS_CA"),
    ) else {
        return backend_unavailable(
            "redis TLS",
            "run scripts/test (it starts a TLS-only redis-server with a private CA), or set \
             CHECKPOINT_REDIS_TLS_URL and CHECKPOINT_REDIS_TLS_CA",
            &"variables unset",
        );
    };
    let pem = std::fs::read(&ca).expect("read the CA file");
    let config = RedisConfig::from_url(&url)
        .expect("TLS URL")
        .with_tls_root_certificate(pem);
    assert!(config.tls());
    let store = RedisStore::open(config, random_app("tls"))
        .await
        .expect("connect over TLS");
    let key = LeaseKey::parse("s", "shard-0").unwrap();
    let me = WorkerId::new("w").unwrap();
    let lease = store
        .get_lease(
            &key,
            &me,
            LeaseDuration::new(Duration::from_secs(30)).unwrap(),
        )
        .await
        .unwrap();
    store
        .checkpoint_sequence(&key, &me, lease.token, &Position::sequence("42").unwrap())
        .await
        .unwrap();
    let fetched = store.fetch_checkpoint(&key).await.unwrap().unwrap();
    assert_eq!(fetched.checkpoint, Some(Position::sequence("42").unwrap()));

    // Without the CA the server's certificate is not trusted: a connection error.
    let untrusted = RedisStore::connect(&url, random_app("tls")).await;
    assert!(
        untrusted.is_err(),
        "a certificate from an unknown CA was accepted"
    );
}

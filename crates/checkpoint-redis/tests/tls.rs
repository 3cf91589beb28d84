//! `rediss://` against a TLS-only server whose certificate comes from a private CA. Needs the
//! `tls` feature and a server: `CHECKPOINT_REDIS_TLS_URL` (for example
//! `rediss://localhost:16390/`) and `CHECKPOINT_REDIS_TLS_CA` (the CA's PEM file), both set by
//! `scripts/test`, which starts such a server. Without them the test is reported ignored, or
//! fails in strict mode (`CHECKPOINT_REQUIRE_ALL=1`). Without the `tls` feature, the offline
//! test checks that a `rediss://` URL is refused naming `tls`.

#[cfg(feature = "tls")]
use std::time::Duration;

#[cfg(feature = "tls")]
use checkpoint_core::conformance::random_app;
#[cfg(feature = "tls")]
use checkpoint_core::{Checkpointer, LeaseDuration, LeaseKey, LeaseManager, Position, WorkerId};
use checkpoint_redis::RedisConfig;
#[cfg(feature = "tls")]
use checkpoint_redis::RedisStore;

#[cfg(feature = "tls")]
async fn rediss_with_a_private_ca() {
    let url = std::env::var("CHECKPOINT_REDIS_TLS_URL").expect("the harness checked it is set");
    let ca = std::env::var("CHECKPOINT_REDIS_TLS_CA")
        .expect("CHECKPOINT_REDIS_TLS_CA names the CA of CHECKPOINT_REDIS_TLS_URL");
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

/// The cluster form over TLS as well: `rediss+cluster://` parses with the feature, and is
/// refused naming `tls` without it.
fn rediss_urls_need_the_tls_feature() {
    for url in [
        "rediss://localhost:6380/",
        "rediss+cluster://localhost:7000,localhost:7001/",
    ] {
        let parsed = RedisConfig::from_url(url);
        if cfg!(feature = "tls") {
            assert!(parsed.expect("a TLS URL").tls());
        } else {
            assert_eq!(parsed.unwrap_err().field(), Some("tls"));
        }
    }
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::RedisTls,
    tests: [#[cfg(feature = "tls")] rediss_with_a_private_ca],
    offline: [rediss_urls_need_the_tls_feature],
}

//! TLS with a private certificate authority, against a server that accepts only TLS
//! connections: `CHECKPOINT_POSTGRES_TLS_URL` (for example
//! `postgres://postgres@localhost:54330/test`) and `CHECKPOINT_POSTGRES_TLS_CA` (the CA's PEM
//! file), both set by `scripts/test`, which starts such a server. Needs the `tls` feature.
//! Without the URL, or with nothing listening there, the test is ignored (a failure in strict
//! mode, `CHECKPOINT_REQUIRE_ALL=1`; see `checkpoint_test_support`); the URL without the CA is
//! a failure.

use std::time::Duration;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Backoff, Checkpointer, LeaseDuration, LeaseKey, LeaseManager, Position, WorkerId,
};
use checkpoint_postgres::sqlx;
use checkpoint_postgres::{PostgresConfig, PostgresStore};

fn with_params(url: &str, params: &[(&str, &str)]) -> String {
    let mut u = url::Url::parse(url).expect("CHECKPOINT_POSTGRES_TLS_URL is a URL");
    u.query_pairs_mut().extend_pairs(params);
    u.to_string()
}

async fn verify_full_with_a_private_ca() {
    let url = std::env::var("CHECKPOINT_POSTGRES_TLS_URL")
        .expect("the harness runs this test only with CHECKPOINT_POSTGRES_TLS_URL set");
    let ca = std::env::var("CHECKPOINT_POSTGRES_TLS_CA")
        .expect("CHECKPOINT_POSTGRES_TLS_CA names the CA of CHECKPOINT_POSTGRES_TLS_URL's server");
    let trusted = with_params(&url, &[("sslmode", "verify-full"), ("sslrootcert", &ca)]);
    let store = PostgresStore::connect(&trusted, random_app("tls"))
        .await
        .expect("connect over TLS, verifying the server against the CA");
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .expect("pg_stat_ssl");
    assert!(encrypted, "the connection is not encrypted");
    let key = LeaseKey::parse("s", "shard-0").expect("key");
    let me = WorkerId::new("w").expect("worker");
    let duration = LeaseDuration::new(Duration::from_secs(30)).expect("duration");
    let lease = store.get_lease(&key, &me, duration).await.expect("acquire");
    let position = Position::sequence("42").expect("position");
    store
        .checkpoint_sequence(&key, &me, lease.token, &position)
        .await
        .expect("checkpoint");
    let fetched = store.fetch_checkpoint(&key).await.expect("fetch");
    assert_eq!(fetched.and_then(|l| l.checkpoint), Some(position));

    // Without the CA the server's certificate is not trusted; without TLS the server refuses.
    for params in [
        &[("sslmode", "verify-full")][..],
        &[("sslmode", "disable")][..],
    ] {
        let config = PostgresConfig::from_url(&with_params(&url, params))
            .expect("config")
            .with_backoff(Backoff::none());
        let refused = PostgresStore::open(config, random_app("tls")).await;
        assert!(refused.is_err(), "{params:?} was accepted");
    }
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::PostgresTls,
    tests: [verify_full_with_a_private_ca],
}

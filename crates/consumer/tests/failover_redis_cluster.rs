//! The failover scenario (`failover.rs`) on a Redis Cluster at `CHECKPOINT_REDIS_CLUSTER_URL`
//! (a `redis+cluster://host:port,host:port/` URL; `scripts/test` starts a local cluster of three
//! masters and three replicas). Unset or unreachable, it is reported ignored by the
//! `server_tests!` harness (a failure when `CHECKPOINT_REQUIRE_ALL=1`).

mod failover_support;

use checkpoint_core::conformance::random_app;
use checkpoint_test_support::Backend;
use failover_support::{check, open_four};

async fn failover_on_redis_cluster() {
    let url = Backend::RedisCluster
        .url()
        .expect("the harness runs this test only with the cluster's URL set");
    let app = random_app("failover");
    let stores = open_four(&url, &app)
        .await
        .expect("the cluster listens, so the stores open");
    check(stores).await;
}

checkpoint_test_support::server_tests! {
    backend: Backend::RedisCluster,
    tests: [failover_on_redis_cluster],
}

//! Single-task checkpoint and renew rates, and the time of one `renew_many` over 1,000 and
//! 10,000 leases, for information (the benchmark program measures properly). Not run by
//! default: `cargo test --release -p checkpoint-redis --test throughput -- --ignored --nocapture`.
//! Uses its own random app and deletes its leases afterwards.

mod common;

use std::time::{Duration, Instant};

use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Checkpointer, FencingToken, LeaseDuration, LeaseKey, LeaseManager, Position, RenewOutcome,
    WorkerId,
};
use checkpoint_redis::RedisStore;
use futures::{StreamExt, TryStreamExt};

fn duration() -> LeaseDuration {
    LeaseDuration::new(Duration::from_secs(600)).expect("duration")
}

/// Acquires `count` leases, 64 requests in flight at a time.
async fn acquire(store: &RedisStore, me: &WorkerId, count: usize) -> Vec<(LeaseKey, FencingToken)> {
    let mut leases: Vec<(LeaseKey, FencingToken)> = futures::stream::iter(0..count)
        .map(|i| async move {
            let key = LeaseKey::parse("s", &format!("shard-{i:06}"))?;
            let lease = store.get_lease(&key, me, duration()).await?;
            Ok::<_, checkpoint_core::Error>((key, lease.token))
        })
        .buffer_unordered(64)
        .try_collect()
        .await
        .expect("acquire");
    leases.sort();
    leases
}

async fn delete_all(store: &RedisStore, leases: &[(LeaseKey, FencingToken)]) {
    futures::stream::iter(leases)
        .map(|(key, _)| store.remove_lease_info(key))
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await
        .expect("clean up");
}

/// The best of three `renew_many` calls over `count` leases.
async fn renew_many_time(store: &RedisStore, me: &WorkerId, count: usize) -> Duration {
    let leases = acquire(store, me, count).await;
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let outcome: RenewOutcome = store
            .renew_many(me, &leases, duration())
            .await
            .expect("renew_many");
        best = best.min(started.elapsed());
        assert_eq!(outcome.renewed.len(), count);
        assert!(outcome.lost.is_empty());
    }
    delete_all(store, &leases).await;
    best
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a test"]
async fn single_task_rates_and_renew_many() {
    let Some(store) = common::open(common::config(), random_app("throughput")).await else {
        return;
    };
    let me = WorkerId::new("w").expect("worker");
    let key = LeaseKey::parse("s", "hot").expect("key");
    let lease = store
        .get_lease(&key, &me, duration())
        .await
        .expect("acquire");

    const CHECKPOINTS: u64 = 20_000;
    let started = Instant::now();
    for i in 1..=CHECKPOINTS {
        let position = Position::sequence(&i.to_string()).expect("sequence");
        store
            .checkpoint_sequence(&key, &me, lease.token, &position)
            .await
            .expect("checkpoint");
    }
    let checkpoints = CHECKPOINTS as f64 / started.elapsed().as_secs_f64();

    const RENEWS: u64 = 20_000;
    let started = Instant::now();
    for _ in 0..RENEWS {
        store
            .renew(&key, &me, lease.token, duration())
            .await
            .expect("renew");
    }
    let renews = RENEWS as f64 / started.elapsed().as_secs_f64();
    store.remove_lease_info(&key).await.expect("clean up");

    let many_1k = renew_many_time(&store, &me, 1_000).await;
    let many_10k = renew_many_time(&store, &me, 10_000).await;
    println!(
        "redis from one task: {checkpoints:.0} checkpoints/s, {renews:.0} renews/s; \
         renew_many of 1,000 leases {many_1k:?}, of 10,000 leases {many_10k:?} (best of 3)"
    );
}

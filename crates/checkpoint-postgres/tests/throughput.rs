//! Rates from one task, and the time of one renew-many, for information (the benchmark program
//! measures properly). Not run by default:
//! `cargo test --release -p checkpoint-postgres --test throughput -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use checkpoint_core::conformance::{backend_unavailable, random_app};
use checkpoint_core::{
    Checkpointer, FencingToken, LeaseDuration, LeaseKey, LeaseManager, Position, ShardId,
    StreamName, WorkerId,
};
use checkpoint_postgres::{DEFAULT_URL, PostgresConfig, PostgresStore};

fn duration() -> LeaseDuration {
    LeaseDuration::new(Duration::from_secs(600)).expect("duration")
}

fn url() -> String {
    std::env::var("CHECKPOINT_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

async fn open_url(url: &str) -> Option<PostgresStore> {
    let config = PostgresConfig::from_url(url)
        .expect("url")
        .with_max_connections(16);
    match PostgresStore::open(config, random_app("throughput")).await {
        Ok(store) => Some(store),
        Err(e) => {
            backend_unavailable("postgres", "start PostgreSQL on 127.0.0.1:5432", &e);
            None
        }
    }
}

/// Acquires `count` leases for `me`, 16 tasks at a time.
async fn open() -> Option<PostgresStore> {
    open_url(&url()).await
}

/// Checkpoints per second from one task.
async fn checkpoint_rate(store: &PostgresStore, count: u64) -> f64 {
    let key = LeaseKey::parse("rate", "shard-0").expect("key");
    let me = WorkerId::new("w").expect("worker");
    let lease = store
        .get_lease(&key, &me, duration())
        .await
        .expect("acquire");
    let started = Instant::now();
    for i in 1..=count {
        let position = Position::sequence(&i.to_string()).expect("sequence");
        store
            .checkpoint_sequence(&key, &me, lease.token, &position)
            .await
            .expect("checkpoint");
    }
    count as f64 / started.elapsed().as_secs_f64()
}

async fn acquire_many(
    store: &PostgresStore,
    me: &WorkerId,
    count: usize,
) -> Vec<(LeaseKey, FencingToken)> {
    let stream = StreamName::new(format!("s{count}")).expect("stream");
    let keys: Vec<LeaseKey> = (0..count)
        .map(|i| {
            LeaseKey::new(
                stream.clone(),
                ShardId::new(format!("shard-{i:06}")).expect("shard"),
            )
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in keys.chunks(count.div_ceil(16)) {
        let (store, me, chunk) = (store.clone(), me.clone(), chunk.to_vec());
        tasks.spawn(async move {
            let mut held = Vec::with_capacity(chunk.len());
            for key in chunk {
                let lease = store
                    .get_lease(&key, &me, duration())
                    .await
                    .expect("acquire");
                held.push((key, lease.token));
            }
            held
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(held) = tasks.join_next().await {
        all.extend(held.expect("task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a test"]
async fn checkpoint_renew_and_renew_many_rates() {
    let Some(store) = open().await else {
        return;
    };
    let key = LeaseKey::parse("s", "shard-0").expect("key");
    let me = WorkerId::new("w").expect("worker");
    let lease = store
        .get_lease(&key, &me, duration())
        .await
        .expect("acquire");

    let count = 5_000u64;
    // Baseline: the same pool's round trips for a statement that writes nothing.
    let started = Instant::now();
    for _ in 0..count {
        checkpoint_postgres::sqlx::query("SELECT 1")
            .execute(store.pool())
            .await
            .expect("select");
    }
    let selects = count as f64 / started.elapsed().as_secs_f64();
    println!("postgres baseline from one task: {selects:.0} `SELECT 1`/s through the pool");

    let started = Instant::now();
    for i in 1..=count {
        let position = Position::sequence(&i.to_string()).expect("sequence");
        store
            .checkpoint_sequence(&key, &me, lease.token, &position)
            .await
            .expect("checkpoint");
    }
    let checkpoints = count as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    for _ in 0..count {
        store
            .renew(&key, &me, lease.token, duration())
            .await
            .expect("renew");
    }
    let renews = count as f64 / started.elapsed().as_secs_f64();
    println!("postgres from one task: {checkpoints:.0} checkpoints/s, {renews:.0} renews/s");

    for n in [1_000usize, 10_000] {
        let held = acquire_many(&store, &me, n).await;
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let outcome = store
                .renew_many(&me, &held, duration())
                .await
                .expect("renew_many");
            times.push(started.elapsed());
            assert_eq!(outcome.renewed.len(), n);
            assert!(outcome.lost.is_empty());
        }
        times.sort();
        println!(
            "postgres renew_many of {n} leases (default chunks): median {:?}, best {:?}, worst {:?}",
            times[times.len() / 2],
            times[0],
            times[times.len() - 1]
        );
    }
    let removed = checkpoint_postgres::sqlx::query(checkpoint_postgres::sqlx::AssertSqlSafe(
        format!("DELETE FROM {} WHERE app = $1", store.lease_table()),
    ))
    .bind(store.app().as_str())
    .execute(store.pool())
    .await
    .expect("remove the measurement leases")
    .rows_affected();
    // For comparison: the same checkpoints when commits do not wait for the WAL flush (a
    // session setting passed in the URL; a crash may then lose the last commits).
    let mut relaxed = url::Url::parse(&url()).expect("url");
    relaxed
        .query_pairs_mut()
        .append_pair("options", "-c synchronous_commit=off");
    if let Some(relaxed) = open_url(relaxed.as_str()).await {
        let rate = checkpoint_rate(&relaxed, count).await;
        println!("postgres from one task with synchronous_commit=off: {rate:.0} checkpoints/s");
    }
    println!("removed the {removed} measurement leases");
}

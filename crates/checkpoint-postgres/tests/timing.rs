//! Wall times of `renew_many` and `renew` on a fresh schema of the test's own, for comparing
//! versions of this crate (the benchmark program measures properly). Not run by default:
//! `cargo test --release -p checkpoint-postgres --test timing -- --ignored --nocapture`.
//! `CHECKPOINT_POSTGRES_URL` may carry `renew_chunk=N` to compare chunk sizes; `TIMING_NO_RENEW`
//! skips the 3 × 20,000 single renewals; `TIMING_FILLFACTOR_100` measures the table layout
//! before migration 2.

use std::time::{Duration, Instant};

use checkpoint_core::conformance::{backend_unavailable, random_app};
use checkpoint_core::{
    FencingToken, LeaseDuration, LeaseKey, LeaseManager, ShardId, StreamName, WorkerId,
};
use checkpoint_postgres::{DEFAULT_URL, PostgresConfig, PostgresStore};

fn duration() -> LeaseDuration {
    LeaseDuration::new(Duration::from_secs(600)).expect("duration")
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn renew_many_and_renew_wall_times() {
    let url = std::env::var("CHECKPOINT_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let schema = random_app("timing").as_str().replace('-', "_");
    let config = PostgresConfig::from_url(&url)
        .expect("url")
        .with_schema(schema.clone());
    let store = match PostgresStore::open(config, random_app("timing")).await {
        Ok(store) => store,
        Err(e) => {
            backend_unavailable("postgres", "start PostgreSQL on 127.0.0.1:5432", &e);
            return;
        }
    };
    if std::env::var_os("TIMING_FILLFACTOR_100").is_some() {
        // The layout before migration 2, for comparison.
        checkpoint_postgres::sqlx::raw_sql(checkpoint_postgres::sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {} RESET (fillfactor)",
            store.lease_table()
        )))
        .execute(store.pool())
        .await
        .expect("reset fillfactor");
    }
    let me = WorkerId::new("w").expect("worker");
    let stream = StreamName::new("s").expect("stream");
    let keys: Vec<LeaseKey> = (0..10_000)
        .map(|i| {
            LeaseKey::new(
                stream.clone(),
                ShardId::new(format!("shard-{i:06}")).unwrap(),
            )
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in keys.chunks(1_000) {
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
    let mut held: Vec<(LeaseKey, FencingToken)> = Vec::new();
    while let Some(part) = tasks.join_next().await {
        held.extend(part.expect("task"));
    }
    held.sort();

    for n in [1_000usize, 10_000] {
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let outcome = store
                .renew_many(&me, &held[..n], duration())
                .await
                .expect("renew_many");
            times.push(started.elapsed());
            assert_eq!(outcome.renewed.len(), n);
            assert!(outcome.lost.is_empty());
        }
        println!(
            "renew_many of {n}: median {:?} of {times:?}",
            median(times.clone())
        );
    }

    let (key, token) = held[0].clone();
    let mut rates = Vec::new();
    let runs = if std::env::var_os("TIMING_NO_RENEW").is_some() {
        0
    } else {
        3
    };
    for _ in 0..runs {
        let count = 20_000;
        let started = Instant::now();
        for _ in 0..count {
            store
                .renew(&key, &me, token, duration())
                .await
                .expect("renew");
        }
        rates.push(count as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    if let Some(median) = rates.get(rates.len() / 2) {
        println!("renew from one task: median {median:.0}/s of {rates:.0?}");
    }

    checkpoint_postgres::sqlx::raw_sql(checkpoint_postgres::sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(store.pool())
    .await
    .expect("drop the schema");
}

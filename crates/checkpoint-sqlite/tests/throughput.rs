//! Checkpoints per second from one task, for information (the benchmark program measures
//! properly). Not run by default:
//! `cargo test --release -p checkpoint-sqlite --test throughput -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use checkpoint_core::conformance::random_app;
use checkpoint_core::{Checkpointer, LeaseDuration, LeaseKey, Position, WorkerId};
use checkpoint_sqlite::{SqliteConfig, SqliteStore, Synchronous};

async fn checkpoints_per_second(synchronous: Synchronous, count: u64) -> f64 {
    let path = std::env::temp_dir().join(format!("checkpoint-throughput-{}.db", random_app("t")));
    let store = SqliteStore::open(
        SqliteConfig::file(&path).with_synchronous(synchronous),
        random_app("app"),
    )
    .await
    .expect("open");
    let key = LeaseKey::parse("s", "shard-0").expect("key");
    let me = WorkerId::new("w").expect("worker");
    let lease = store
        .get_lease(
            &key,
            &me,
            LeaseDuration::new(Duration::from_secs(600)).expect("duration"),
        )
        .await
        .expect("acquire");
    let started = Instant::now();
    for i in 1..=count {
        let position = Position::sequence(&i.to_string()).expect("sequence");
        store
            .checkpoint(&key, &me, lease.token, &position)
            .await
            .expect("checkpoint");
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    rate
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a test"]
async fn checkpoint_throughput_one_task() {
    let normal = checkpoints_per_second(Synchronous::Normal, 20_000).await;
    let full = checkpoints_per_second(Synchronous::Full, 1_000).await;
    println!(
        "sqlite checkpoints/s from one task: synchronous=NORMAL {normal:.0}, synchronous=FULL {full:.0}"
    );
}

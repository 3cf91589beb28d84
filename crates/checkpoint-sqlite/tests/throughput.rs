//! Checkpoints per second from one task, for information (the benchmark program measures
//! properly). Not run by default:
//! `cargo test --release -p checkpoint-sqlite --test throughput -- --ignored --nocapture`.
//!
//! `checkpoint_throughput_one_task` prints the store's rate with `synchronous=NORMAL` and
//! `FULL`. `checkpoint_throughput_matrix` takes `THROUGHPUT_RUNS` (comma-separated, each run
//! once in that order; default `store,raw:1000,raw:0`) and `THROUGHPUT_COUNT` (default
//! 100000), all with `synchronous=NORMAL` on a fresh file in the temp dir:
//!
//! - `store`: [`Checkpointer::checkpoint_sequence`] with increasing sequence numbers, one lease;
//! - `store:<pages>`: the same with `SqliteConfig::with_wal_checkpoint_pages(<pages>)`;
//! - `raw:<pages>`: `BEGIN IMMEDIATE; UPDATE … WHERE owner = ? AND token = ?; COMMIT` on one
//!   rusqlite connection in this thread, with `wal_autocheckpoint=<pages>` (0: never);
//! - `store-hop`: the store's own round trip from the task to its writer thread and back, with
//!   no SQLite call (`SqliteStore::writer_round_trip`).

use std::time::{Duration, Instant};

use checkpoint_core::conformance::random_app;
use checkpoint_core::{Checkpointer, LeaseDuration, LeaseKey, LeaseManager, Position, WorkerId};
use checkpoint_sqlite::{SqliteConfig, SqliteStore, Synchronous, rusqlite};

struct TempDb(std::path::PathBuf);

impl TempDb {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("checkpoint-throughput-{}.db", random_app("t"))))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

async fn store_rate(synchronous: Synchronous, count: u64, wal_pages: Option<u32>) -> f64 {
    let db = TempDb::new();
    let mut config = SqliteConfig::file(&db.0).with_synchronous(synchronous);
    if let Some(pages) = wal_pages {
        config = config.with_wal_checkpoint_pages(pages);
    }
    let store = SqliteStore::open(config, random_app("app"))
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
            .checkpoint_sequence(&key, &me, lease.token, &position)
            .await
            .expect("checkpoint");
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// A connection with a one-row table, set up as the store's (WAL, `synchronous=NORMAL`).
fn raw_connection(db: &TempDb, autocheckpoint: u32) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(&db.0).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("synchronous");
    conn.pragma_update(None, "wal_autocheckpoint", autocheckpoint)
        .expect("autocheckpoint");
    conn.execute_batch(
        "CREATE TABLE leases (app TEXT, stream TEXT, shard TEXT, owner TEXT, token TEXT,
             checkpoint TEXT, PRIMARY KEY (app, stream, shard)) WITHOUT ROWID;
         INSERT INTO leases VALUES ('a', 's', 'shard-0', 'w', '1', '0');",
    )
    .expect("table");
    conn
}

/// One checkpoint as a bare SQLite transaction.
fn raw_checkpoint(conn: &rusqlite::Connection, i: u64) {
    conn.prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut s| s.execute([]))
        .expect("begin");
    let changed = conn
        .prepare_cached(
            "UPDATE leases SET checkpoint = ?1 WHERE app = 'a' AND stream = 's' \
             AND shard = 'shard-0' AND owner = ?2 AND token = ?3",
        )
        .and_then(|mut s| s.execute(rusqlite::params![i.to_string(), "w", "1"]))
        .expect("update");
    assert_eq!(changed, 1);
    conn.prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]))
        .expect("commit");
}

fn raw_rate(autocheckpoint: u32, count: u64) -> f64 {
    let db = TempDb::new();
    let conn = raw_connection(&db, autocheckpoint);
    let started = Instant::now();
    for i in 1..=count {
        raw_checkpoint(&conn, i);
    }
    count as f64 / started.elapsed().as_secs_f64()
}

async fn store_hop_rate(count: u64) -> f64 {
    let db = TempDb::new();
    let store = SqliteStore::open(SqliteConfig::file(&db.0), random_app("app"))
        .await
        .expect("open");
    let started = Instant::now();
    for _ in 0..count {
        store.writer_round_trip().await.expect("round trip");
    }
    count as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a test"]
async fn checkpoint_throughput_one_task() {
    let normal = store_rate(Synchronous::Normal, 20_000, None).await;
    let full = store_rate(Synchronous::Full, 1_000, None).await;
    println!(
        "sqlite checkpoints/s from one task: synchronous=NORMAL {normal:.0}, synchronous=FULL {full:.0}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a test"]
async fn checkpoint_throughput_matrix() {
    let runs = std::env::var("THROUGHPUT_RUNS").unwrap_or_else(|_| "store,raw:1000,raw:0".into());
    let count = std::env::var("THROUGHPUT_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100_000u64);
    for run in runs.split(',') {
        let pages = |p: &str| p.parse::<u32>().expect("pages");
        let rate = match run.split_once(':') {
            None if run == "store" => store_rate(Synchronous::Normal, count, None).await,
            Some(("store", p)) => store_rate(Synchronous::Normal, count, Some(pages(p))).await,
            None if run == "store-hop" => store_hop_rate(count).await,
            Some(("raw", p)) => raw_rate(pages(p), count),
            _ => panic!("unknown run {run:?}"),
        };
        println!("RATE {run} {rate:.0}/s ({count} checkpoints, synchronous=NORMAL)");
    }
}

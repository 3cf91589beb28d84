//! Exactly-once through the runtime on SQLite: the processor writes its own rows and the
//! checkpoint in one transaction of its own, through the fencing triple its checkpointer gives.
//! A crash between the application write and the checkpoint leaves neither, so the records are
//! delivered again and applied exactly once.
#![cfg(feature = "sqlite")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use checkpoint_consumer::{
    InitializeInput, MemoryStream, ProcessorError, Record, RecordProcessor, ShardCheckpointer,
    ShutdownReason, Worker, WorkerConfig,
};
use checkpoint_core::conformance::random_app;
use checkpoint_core::{LeaseKey, StreamName, WorkerId};
use checkpoint_sqlite::rusqlite::{Connection, TransactionBehavior};
use checkpoint_sqlite::{SqliteConfig, SqliteStore};

struct Applier {
    store: SqliteStore,
    conn: Arc<Mutex<Connection>>,
    /// Set until the first batch: that batch is written, then the "process" crashes before
    /// the checkpoint.
    crash: Arc<AtomicBool>,
}

#[async_trait]
impl RecordProcessor for Applier {
    async fn initialize(&mut self, _: &InitializeInput) -> Result<(), ProcessorError> {
        Ok(())
    }

    async fn process_records(
        &mut self,
        records: &[Record],
        cp: &ShardCheckpointer,
    ) -> Result<(), ProcessorError> {
        let ids: Vec<i64> = records
            .iter()
            .map(|r| i64::from_le_bytes(r.data.as_slice().try_into().unwrap()))
            .collect();
        let Some(last) = records.last().map(Record::position) else {
            return Ok(());
        };
        let (store, conn, crash) = (self.store.clone(), self.conn.clone(), self.crash.clone());
        let (key, worker, token) = (cp.key().clone(), cp.worker().clone(), cp.token());
        let outcome = tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for id in &ids {
                tx.execute("INSERT INTO applied (id) VALUES (?1)", [id])?;
            }
            if crash.swap(false, Ordering::SeqCst) {
                // Dropping the transaction rolls the rows back, as a process crash would.
                return Ok::<_, ProcessorError>(None);
            }
            let lease = store.checkpoint_in_transaction(&tx, &key, &worker, token, &last);
            if lease.is_ok() {
                tx.commit()?;
            }
            Ok(Some(lease))
        })
        .await??;
        match outcome {
            None => Err("crashed between the application write and the checkpoint".into()),
            Some(lease) => {
                cp.record_transactional(&lease);
                lease?;
                Ok(())
            }
        }
    }

    async fn shutdown(
        &mut self,
        _: ShutdownReason,
        _: &ShardCheckpointer,
    ) -> Result<(), ProcessorError> {
        Ok(())
    }
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_write_and_the_checkpoint_leaves_neither() {
    let dir = std::env::temp_dir().join(format!("exactly-once-{}", random_app("eo")));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.db");
    let app = random_app("eo");
    let store = SqliteStore::open(SqliteConfig::file(&path), app)
        .await
        .unwrap();
    let conn = store.open_connection().unwrap();
    conn.execute_batch("CREATE TABLE applied (id INTEGER NOT NULL)")
        .unwrap();
    let conn = Arc::new(Mutex::new(conn));
    let stream = MemoryStream::new(StreamName::new("s").unwrap(), 1).unwrap();
    for i in 0..50i64 {
        stream
            .put(&format!("pk-{i}"), i.to_le_bytes().to_vec())
            .unwrap();
    }
    let crash = Arc::new(AtomicBool::new(true));
    let factory = {
        let (store, conn, crash) = (store.clone(), conn.clone(), crash.clone());
        move |_: &LeaseKey| Applier {
            store: store.clone(),
            conn: conn.clone(),
            crash: crash.clone(),
        }
    };
    let config = WorkerConfig::builder()
        .with_lease_duration(Duration::from_millis(800))
        .with_renew_interval(Duration::from_millis(100))
        .with_poll_interval(Duration::from_millis(20))
        .with_batch_size(10)
        .build()
        .unwrap();
    let worker = Worker::new(
        WorkerId::new("w").unwrap(),
        Arc::new(store.clone()),
        Arc::new(stream),
        factory,
        config,
    )
    .spawn();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let applied = count(&conn.lock().unwrap(), "SELECT COUNT(*) FROM applied");
        if applied >= 50 {
            break;
        }
        assert!(Instant::now() < deadline, "{applied} of 50 applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown().await.unwrap();
    assert!(!crash.load(Ordering::SeqCst), "the crash happened");
    let conn = conn.lock().unwrap();
    // Had the crashed batch's rows survived without the checkpoint, its redelivery would have
    // doubled them; had the checkpoint survived without the rows, they would be missing.
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM applied"), 50);
    assert_eq!(count(&conn, "SELECT COUNT(DISTINCT id) FROM applied"), 50);
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
}

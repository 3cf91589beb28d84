//! Exactly-once through the runtime on PostgreSQL: the processor writes its own rows and the
//! checkpoint in one `sqlx::Transaction<Postgres>` of its own, begun on the store's pool, with
//! the fencing triple (key, worker, token) its [`ShardCheckpointer`] gives, and tells the
//! checkpointer the outcome (`record_transactional`). A crash between the application write and
//! the checkpoint (the transaction dropped without a commit, as a killed process's connection
//! is) leaves neither, so the batch is delivered again and applied exactly once.
//!
//! The server is `CHECKPOINT_POSTGRES_URL`; when nothing listens there the `server_tests!`
//! harness reports the test ignored (a failure when `CHECKPOINT_REQUIRE_ALL=1`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use checkpoint_consumer::{
    InitializeInput, MemoryStream, ProcessorError, Record, RecordProcessor, ShardCheckpointer,
    ShutdownReason, Worker, WorkerConfig,
};
use checkpoint_core::conformance::random_app;
use checkpoint_core::{LeaseKey, LeaseManager, Position, StreamName, WorkerId};
use checkpoint_postgres::sqlx::{self, AssertSqlSafe};
use checkpoint_postgres::{PostgresConfig, PostgresStore};
use checkpoint_test_support::Backend;

struct Applier {
    store: PostgresStore,
    /// The application's table, `"eo_<random>"`.
    table: String,
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
        let Some(last) = records.last().map(Record::position) else {
            return Ok(());
        };
        let mut tx = self.store.pool().begin().await?;
        for record in records {
            let id = i64::from_le_bytes(record.data.as_slice().try_into()?);
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {} (id) VALUES ($1)",
                self.table
            )))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        if self.crash.swap(false, Ordering::SeqCst) {
            // Dropping the transaction rolls the rows back, as a crashed process's would be.
            drop(tx);
            return Err("crashed between the application write and the checkpoint".into());
        }
        let lease = self
            .store
            .checkpoint_in_transaction(&mut tx, cp.key(), cp.worker(), cp.token(), &last)
            .await;
        if lease.is_ok() {
            tx.commit().await?;
        }
        cp.record_transactional(&lease);
        lease?;
        Ok(())
    }

    async fn shutdown(
        &mut self,
        _: ShutdownReason,
        _: &ShardCheckpointer,
    ) -> Result<(), ProcessorError> {
        Ok(())
    }
}

async fn count(store: &PostgresStore, sql: String) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(store.pool())
        .await
        .expect("count")
}

async fn a_crash_between_the_write_and_the_checkpoint_leaves_neither() {
    let url = Backend::Postgres
        .url()
        .expect("PostgreSQL has a default URL");
    let app = random_app("eo");
    let store = PostgresStore::open(
        PostgresConfig::from_url(&url).expect("a valid URL"),
        app.clone(),
    )
    .await
    .expect("the server listens, so the store opens");
    let table = format!("\"{}\"", app.as_str().replace('-', "_"));
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {table} (id bigint NOT NULL)"
    )))
    .execute(store.pool())
    .await
    .expect("the application's table");
    let stream = MemoryStream::new(StreamName::new("s").unwrap(), 1).unwrap();
    for i in 0..50i64 {
        stream
            .put(&format!("pk-{i}"), i.to_le_bytes().to_vec())
            .unwrap();
    }
    let crash = Arc::new(AtomicBool::new(true));
    let factory = {
        let (store, table, crash) = (store.clone(), table.clone(), crash.clone());
        move |_: &LeaseKey| Applier {
            store: store.clone(),
            table: table.clone(),
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
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let applied = count(&store, format!("SELECT COUNT(*) FROM {table}")).await;
        if applied >= 50 {
            break;
        }
        assert!(Instant::now() < deadline, "{applied} of 50 applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await.unwrap();
    assert!(!crash.load(Ordering::SeqCst), "the crash happened");
    // Had the crashed batch's rows survived without the checkpoint, its redelivery would have
    // doubled them; had the checkpoint survived without the rows, they would be missing.
    assert_eq!(
        count(&store, format!("SELECT COUNT(*) FROM {table}")).await,
        50
    );
    assert_eq!(
        count(&store, format!("SELECT COUNT(DISTINCT id) FROM {table}")).await,
        50
    );
    let leases = store.list_leases(None).await.expect("list");
    assert!(
        matches!(
            leases.as_slice(),
            [lease] if matches!(lease.checkpoint, Some(Position::Sequence { .. }))
        ),
        "the last batch's position is checkpointed: {leases:?}"
    );
    sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(store.pool())
        .await
        .expect("drop the application's table");
}

checkpoint_test_support::server_tests! {
    backend: Backend::Postgres,
    tests: [a_crash_between_the_write_and_the_checkpoint_leaves_neither],
}

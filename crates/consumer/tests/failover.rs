//! The demo's scenario as a test on the stores that need no server (memory, SQLite): 8 shards,
//! one split midway, 3 workers, one killed abruptly and one shut down gracefully. Every record
//! must be processed, every duplicate explained by a lease move, every child started only after
//! its parents ended, and the killed worker's leases taken over within lease duration + one
//! renew interval (plus the store's clock-skew allowance where it has one).
//!
//! The same scenario runs on the server backends in `failover_postgres.rs`,
//! `failover_mysql.rs`, `failover_redis.rs`, `failover_redis_cluster.rs` and
//! `failover_dynamodb.rs`, each under the
//! `server_tests!` harness: an unreachable server is reported ignored, never passed.

mod failover_support;

use std::sync::Arc;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{MemoryDatabase, Store};
use failover_support::check;
#[cfg(feature = "sqlite")]
use failover_support::open_four;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_on_memory() {
    let db = MemoryDatabase::new();
    let app = random_app("failover");
    check([0, 1, 2, 3].map(|_| Arc::new(db.open(app.clone())) as Arc<dyn Store>)).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("consumer-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let app = random_app("failover");
    let url = format!("sqlite://{}", dir.join(format!("{app}.db")).display());
    let stores = open_four(&url, &app).await.expect("sqlite opens");
    check(stores).await;
    let _ = std::fs::remove_dir_all(&dir);
}

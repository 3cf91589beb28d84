//! The demo's scenario as a test, on every backend compiled in and reachable: 8 shards, one
//! split midway, 3 workers, one killed abruptly and one shut down gracefully. Every record must
//! be processed, every duplicate explained by a lease move, every child started only after its
//! parents ended, and the killed worker's leases taken over within lease duration + one renew
//! interval.
//!
//! The server backends are enabled with the crate's features and reached through
//! `CHECKPOINT_POSTGRES_URL`, `CHECKPOINT_REDIS_URL` and `CHECKPOINT_DYNAMO_ENDPOINT`; an
//! unreachable server is reported with `backend_unavailable` (a failure when
//! `CHECKPOINT_REQUIRE_ALL=1`).

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/support/scenario.rs"]
mod scenario;

use std::sync::Arc;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{AppName, MemoryDatabase, Result, Store};

/// Opens the four handles the scenario uses (three workers and an observer), each its own
/// connection, as separate processes would have.
async fn open_four(url: &str, app: &AppName) -> Result<[Arc<dyn Store>; 4]> {
    Ok([
        consumer::connect(url, app.clone()).await?,
        consumer::connect(url, app.clone()).await?,
        consumer::connect(url, app.clone()).await?,
        consumer::connect(url, app.clone()).await?,
    ])
}

async fn check(stores: [Arc<dyn Store>; 4]) {
    let backend = stores[0].capabilities().backend;
    let plan = scenario::Plan::quick();
    let report = scenario::run(stores, &plan)
        .await
        .expect("the scenario ran");
    println!("failover scenario on {backend}:\n{}", report.table());
    let bound = plan.worker_config().expect("valid plan").failover_bound();
    assert_eq!(report.lost, 0, "records lost on {backend}");
    assert_eq!(report.processed, report.produced, "on {backend}");
    assert_eq!(
        report.unexplained_duplicates, 0,
        "duplicates under one lease token on {backend}"
    );
    assert!(
        report.duplicates <= report.deliveries,
        "accounting on {backend}"
    );
    assert!(
        report.order_violations.is_empty(),
        "children before parents on {backend}: {:?}",
        report.order_violations
    );
    assert_eq!(
        report.fenced_writes_accepted, 0,
        "a processor whose lease was lost wrote a checkpoint on {backend}"
    );
    assert!(report.split.is_some(), "the shard split happened");
    assert!(
        report.killed_leases > 0,
        "the killed worker held leases on {backend}"
    );
    let failover = report
        .failover
        .expect("every orphaned lease was taken over");
    assert!(
        failover <= bound,
        "failover took {failover:?} on {backend}, more than lease duration + renew interval {bound:?}"
    );
    assert!(
        report.lease_moves >= report.killed_leases as u64,
        "lease moves on {backend}"
    );
}

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

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_on_postgres() {
    let url = std::env::var("CHECKPOINT_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let app = random_app("failover");
    match open_four(&url, &app).await {
        Ok(stores) => check(stores).await,
        Err(e) => checkpoint_core::conformance::backend_unavailable(
            "postgres",
            "set CHECKPOINT_POSTGRES_URL to a reachable server",
            &e,
        ),
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_on_redis() {
    let url = std::env::var("CHECKPOINT_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
    let app = random_app("failover");
    match open_four(&url, &app).await {
        Ok(stores) => check(stores).await,
        Err(e) => checkpoint_core::conformance::backend_unavailable(
            "redis",
            "set CHECKPOINT_REDIS_URL to a reachable server",
            &e,
        ),
    }
}

#[cfg(feature = "dynamodb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_on_dynamodb() {
    let how = "set CHECKPOINT_DYNAMO_ENDPOINT to a DynamoDB endpoint such as a moto server";
    let Ok(endpoint) = std::env::var("CHECKPOINT_DYNAMO_ENDPOINT") else {
        checkpoint_core::conformance::backend_unavailable(
            "dynamodb",
            how,
            &"CHECKPOINT_DYNAMO_ENDPOINT is not set",
        );
        return;
    };
    let app = random_app("failover");
    let endpoint: String = url::form_urlencoded::byte_serialize(endpoint.as_bytes()).collect();
    let url = format!(
        "dynamodb://consumer-failover?region=us-east-1&endpoint={endpoint}&access_key_id=testing&secret_access_key=testing"
    );
    match open_four(&url, &app).await {
        Ok(stores) => check(stores).await,
        Err(e) => checkpoint_core::conformance::backend_unavailable("dynamodb", how, &e),
    }
}

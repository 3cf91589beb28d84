//! The demo's scenario as a test, on every backend compiled in and reachable: 8 shards, one
//! split midway, 3 workers, one killed abruptly and one shut down gracefully. Every record must
//! be processed, every duplicate explained by a lease move, every child started only after its
//! parents ended, and the killed worker's leases taken over within lease duration + one renew
//! interval (plus the store's clock-skew allowance where it has one; on DynamoDB, where a
//! worker takes a lease only after observing it unchanged for the lease duration, plus one
//! observation interval: the workers list the leases once per renew interval).
//!
//! The DynamoDB test needs an emulator that applies conditional writes atomically: moto's own
//! threaded server does not (two concurrent steals of one lease can both succeed), so point
//! `CHECKPOINT_DYNAMO_ENDPOINT` at `crates/checkpoint-dynamo/tests/moto_serial.py PORT`.
//!
//! The server backends are enabled with the crate's features and reached through
//! `CHECKPOINT_POSTGRES_URL`, `CHECKPOINT_MYSQL_URL`, `CHECKPOINT_REDIS_URL` and
//! `CHECKPOINT_DYNAMO_ENDPOINT`; an
//! unreachable server is reported with `backend_unavailable` (a failure when
//! `CHECKPOINT_REQUIRE_ALL=1`).

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/support/scenario.rs"]
mod scenario;

use std::sync::Arc;
use std::time::Duration;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{AppName, MemoryDatabase, Result, Store};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Opens the four handles the scenario uses (three workers and an observer), each its own
/// connection, as separate processes would have.
#[cfg_attr(
    not(any(
        feature = "sqlite",
        feature = "postgres",
        feature = "mysql",
        feature = "redis",
        feature = "dynamodb"
    )),
    allow(dead_code)
)]
async fn open_four(url: &str, app: &AppName) -> Result<[Arc<dyn Store>; 4]> {
    Ok([
        checkpoint_consumer::connect(url, app.clone()).await?,
        checkpoint_consumer::connect(url, app.clone()).await?,
        checkpoint_consumer::connect(url, app.clone()).await?,
        checkpoint_consumer::connect(url, app.clone()).await?,
    ])
}

async fn check(stores: [Arc<dyn Store>; 4]) {
    check_with(stores, scenario::Plan::quick(), Duration::ZERO).await;
}

/// Runs the scenario and checks it; `slack` is added to the failover bound for a store whose
/// own round trips are slow enough to count (an emulator serving one request at a time).
async fn check_with(stores: [Arc<dyn Store>; 4], plan: scenario::Plan, slack: Duration) {
    // One scenario at a time: each measures a failover time, which other scenarios competing
    // for the same cores would distort.
    let _turn = SERIAL.lock().await;
    let capabilities = stores[0].capabilities();
    let backend = capabilities.backend;
    // A store on client clocks keeps an expired lease for its skew allowance more.
    let skew = capabilities.clock.skew_allowance();
    let report = scenario::run(stores, &plan)
        .await
        .expect("the scenario ran");
    println!("failover scenario on {backend}:\n{}", report.table());
    let bound = plan.worker_config().expect("valid plan").failover_bound() + skew + slack;
    assert_eq!(report.lost, 0, "records lost on {backend}");
    assert_eq!(report.processed, report.produced, "on {backend}");
    assert_eq!(
        report.unexplained_duplicates, 0,
        "duplicates under one lease token on {backend}: {:?}",
        report.unexplained
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
        "failover took {failover:?} on {backend}, more than lease duration + renew interval (+ skew allowance, or observation interval) {bound:?}"
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

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_on_mysql() {
    let url = std::env::var("CHECKPOINT_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
    let app = random_app("failover");
    match open_four(&url, &app).await {
        Ok(stores) => check(stores).await,
        // Only an unreachable server (a retryable error) is a skip; anything else fails.
        Err(e) if e.is_retryable() => checkpoint_core::conformance::backend_unavailable(
            "mysql",
            "set CHECKPOINT_MYSQL_URL to a reachable MySQL or MariaDB server",
            &e,
        ),
        Err(e) => panic!("opening the MySQL store failed: {e}"),
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
    let url = format!("dynamodb://consumer-failover?region=us-east-1&endpoint={endpoint}");
    match open_four(&url, &app).await {
        // The emulator serves one request at a time, milliseconds each: the same scenario,
        // three times slower, checkpointing twice a second rather than after every batch.
        // Expiry is by observation (the last renewal's `leaseCounter` seen unchanged for the
        // lease duration), and a worker observes at each listing, once per renew interval:
        // the bound is lease duration + renew interval + one observation interval.
        Ok(stores) => {
            let plan = scenario::Plan {
                checkpoint_every: Duration::from_millis(500),
                ..scenario::Plan::quick().slowed(3)
            };
            let observation_interval = plan.renew_interval;
            let slack = observation_interval;
            check_with(stores, plan, slack).await;
        }
        Err(e) => checkpoint_core::conformance::backend_unavailable("dynamodb", how, &e),
    }
}

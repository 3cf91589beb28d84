//! What the failover test files share: the demo's scenario (`examples/support/scenario.rs`),
//! opening the four handles it runs on, and the checks of its report.
#![allow(dead_code, unreachable_pub)]

#[path = "../../examples/support/scenario.rs"]
pub mod scenario;

use std::sync::Arc;
use std::time::Duration;

use checkpoint_core::{AppName, Result, Store};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Opens the four handles the scenario uses (three workers and an observer), each its own
/// connection, as separate processes would have.
pub async fn open_four(url: &str, app: &AppName) -> Result<[Arc<dyn Store>; 4]> {
    Ok([
        checkpoint_consumer::connect(url, app.clone()).await?,
        checkpoint_consumer::connect(url, app.clone()).await?,
        checkpoint_consumer::connect(url, app.clone()).await?,
        checkpoint_consumer::connect(url, app.clone()).await?,
    ])
}

pub async fn check(stores: [Arc<dyn Store>; 4]) {
    check_with(stores, scenario::Plan::quick(), Duration::ZERO).await;
}

/// Runs the scenario and checks it; `slack` is added to the failover bound for a store whose
/// own round trips are slow enough to count (an emulator serving one request at a time).
pub async fn check_with(stores: [Arc<dyn Store>; 4], plan: scenario::Plan, slack: Duration) {
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

//! The conformance suite against the memory reference store, on the system clock (expiry
//! waited for) and on a manual clock (expiry moved to, checked to the millisecond). The
//! memory store has no raw records, layout, transactions, process or network: its backend
//! scenarios are reported not covered, in its capability row.

use std::sync::Arc;

use checkpoint_core::conformance::{Configured, StoreFactory, random_app, run_all};
use checkpoint_core::{ManualClock, MemoryDatabase, Store};
use conformance_tests::{memory_factory, print_capability_rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    let factory = memory_factory();
    let report = run_all(&factory).await;
    let store = factory
        .open(&random_app("caps"))
        .await
        .expect("memory store opens");
    print_capability_rows(&[(store.capabilities(), &report)]);
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms_on_a_manual_clock() {
    let clock = Arc::new(ManualClock::default());
    let db = MemoryDatabase::with_clock(clock.clone());
    let factory = Configured::new(move |app| {
        std::future::ready(Ok(Arc::new(db.open(app)) as Arc<dyn Store>))
    })
    .with_manual_clock(clock);
    run_all(&factory).await.assert_passed();
}

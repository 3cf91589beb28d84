//! The conformance suite on the memory reference store, inside this crate so mutation testing
//! of the rules and the memory store (`scripts/mutants`) can run it as the crate's own test:
//! on the system clock and on a manual clock.
#![cfg(feature = "conformance")]

use std::sync::Arc;

use checkpoint_core::conformance::{Configured, run_all};
use checkpoint_core::{ManualClock, MemoryDatabase, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    let db = MemoryDatabase::new();
    let factory = move |app| std::future::ready(Ok(Arc::new(db.open(app)) as Arc<dyn Store>));
    run_all(&factory).await.assert_passed();
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

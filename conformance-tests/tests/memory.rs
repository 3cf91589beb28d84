//! The conformance suite against the memory reference store.

use checkpoint_core::conformance::{StoreFactory, random_app, run_all};
use conformance_tests::{memory_factory, print_capability_table};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    let factory = memory_factory();
    let report = run_all(&factory).await;
    let store = factory
        .open(&random_app("caps"))
        .await
        .expect("memory store opens");
    print_capability_table(&[store.capabilities()]);
    report.assert_passed();
}

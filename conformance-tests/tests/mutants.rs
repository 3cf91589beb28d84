//! Proves the conformance suite can fail: every deliberately broken store is rejected by at
//! least one of the scenarios that guard the rule it breaks.
//!
//! Each mutant runs only the scenarios listed in [`Mutation::caught_by`] (running all of them
//! against a store that never expires leases would spend minutes in expiry waits); the mutants
//! run concurrently.

use checkpoint_core::conformance::run_selected;
use conformance_tests::mutants::{Mutation, mutant_factory};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suite_rejects_every_mutant() {
    let runs = Mutation::ALL.map(|mutation| async move {
        let factory = mutant_factory(mutation);
        let started = std::time::Instant::now();
        let report = run_selected(&factory, |name| mutation.caught_by().contains(&name)).await;
        println!("mutant {mutation:?} checked in {:?}", started.elapsed());
        (mutation, report)
    });
    let mut escaped = Vec::new();
    for (mutation, report) in futures::future::join_all(runs).await {
        let failed: Vec<&str> = report.failed.iter().map(|(name, _)| *name).collect();
        println!("mutant {mutation:?}: rejected by {failed:?}");
        if failed.is_empty() {
            escaped.push(format!("{mutation:?} passed {:?}", report.passed));
        }
    }
    assert!(escaped.is_empty(), "the suite did not reject: {escaped:#?}");
    println!("suite rejected all {} mutants", Mutation::ALL.len());
}

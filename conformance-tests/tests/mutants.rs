//! Proves the conformance suite can fail, for the right reason: every deliberately broken
//! store is rejected by each scenario [`Mutation::caught_by`] names, with a failure naming the
//! clause it lists. A mutant rejected only by an unexpected error, or by another clause, is not
//! counted as caught: that would be the suite failing by accident.
//!
//! Each mutant runs only its listed scenarios, on a manual clock, concurrently, with the
//! mutants' hooks (a simulated lossy link) for the backend scenarios.

use checkpoint_core::conformance::run_selected_with;
use conformance_tests::mutants::{Mutation, mutant_factory_and_hooks};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suite_rejects_every_mutant_for_its_clause() {
    let runs = Mutation::ALL.map(|mutation| async move {
        let (factory, hooks) = mutant_factory_and_hooks(mutation);
        let started = std::time::Instant::now();
        let expected = mutation.caught_by();
        let report = run_selected_with(&factory, &hooks, |name| {
            expected.iter().any(|(scenario, _)| *scenario == name)
        })
        .await;
        println!("mutant {mutation:?} checked in {:?}", started.elapsed());
        (mutation, report)
    });
    let mut escaped = Vec::new();
    for (mutation, report) in futures::future::join_all(runs).await {
        for (scenario, clause) in mutation.caught_by() {
            match report.failed.iter().find(|(name, _)| name == scenario) {
                Some((_, failure)) if failure.clause == *clause => {
                    println!("mutant {mutation:?}: rejected by {scenario}: {failure}");
                }
                Some((_, failure)) => escaped.push(format!(
                    "{mutation:?}: {scenario} failed for the wrong clause (expected {clause:?}): {failure}"
                )),
                None => escaped.push(format!("{mutation:?}: {scenario} passed")),
            }
        }
    }
    assert!(
        escaped.is_empty(),
        "the suite did not reject these mutants for their clause: {escaped:#?}"
    );
    println!(
        "suite rejected all {} mutants, each for its clause",
        Mutation::ALL.len()
    );
}

/// Every mutation is listed once in `Mutation::ALL` and names at least one scenario.
#[test]
fn every_mutation_is_listed_once() {
    for (i, m) in Mutation::ALL.iter().enumerate() {
        assert!(!Mutation::ALL[..i].contains(m), "{m:?} listed twice");
        assert!(!m.caught_by().is_empty(), "{m:?} names no scenario");
    }
}

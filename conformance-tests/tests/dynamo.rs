//! The conformance suite against DynamoDB (in practice a moto server): the server's URL comes
//! from `CHECKPOINT_DYNAMO_ENDPOINT` (for example `http://127.0.0.1:5000`); unset or refusing
//! connections, the tests are ignored (a failure under `CHECKPOINT_REQUIRE_ALL=1`; see
//! `checkpoint_test_support`). Every run uses a table of its own, and every factory call
//! builds a new client (a new connection), so the scenarios also exercise independent handles;
//! a second run opens every handle with [`DynamoStore::for_app`] on one client. Listings scan
//! 7 items a page in a third run of the listing scenarios alone, so they cross pages; the
//! first run passes DynamoDB's hooks ([`DynamoHooks`]) for the backend scenarios.
//! `run_all` includes the proptest model test (`model_matches_reference`,
//! `CHECKPOINT_MODEL_CASES`, default 256).
//!
//! moto's stock `moto_server` does not make conditional writes atomic under concurrent requests
//! (it serves them on threads without locking its tables). The suite passes on it (one process
//! sends at most one take per item at a time), but `crates/checkpoint-dynamo/tests/moto_serial.py
//! PORT`, which serves one request at a time, behaves as DynamoDB does for any client. The
//! whole suite takes two to three minutes on either.
//!
//! ```text
//! CHECKPOINT_DYNAMO_ENDPOINT=http://127.0.0.1:5000 \
//!   cargo test -p conformance-tests --no-default-features --features dynamo --test dynamo -- --nocapture
//! ```
use std::sync::Arc;
use std::time::Duration;

use checkpoint_core::conformance::{self, Configured, random_app};
use checkpoint_core::{AppName, Backoff, LeaseManager, Store};
use checkpoint_dynamo::{DynamoConfig, DynamoStore};
use conformance_tests::hooks::dynamo::DynamoHooks;
use conformance_tests::print_capability_rows;

/// The suite's config: its own table and a patient retry policy: moto on a busy two-core
/// machine can take seconds to answer, which is a timeout to retry, not a failure.
fn config(endpoint: &str, table: &str) -> checkpoint_core::Result<DynamoConfig> {
    Ok(DynamoConfig::new(table)?
        .with_endpoint(endpoint)
        .with_request_timeout(Duration::from_secs(10))
        .with_backoff(Backoff {
            max_attempts: 10,
            budget: Duration::from_secs(60),
            ..Backoff::default()
        }))
}

fn endpoint() -> String {
    std::env::var("CHECKPOINT_DYNAMO_ENDPOINT")
        .expect("the harness runs these tests only with CHECKPOINT_DYNAMO_ENDPOINT set")
}

async fn dynamo_conforms() {
    let endpoint = endpoint();
    let table = format!("conformance-{}", random_app("t"));
    let first = DynamoStore::open(
        config(&endpoint, &table).expect("valid config"),
        random_app("caps"),
    )
    .await
    .expect("the server listens, so the store opens");
    let hooks = DynamoHooks::open(
        &endpoint,
        &table,
        config,
        Some(env!("CARGO_BIN_EXE_checkpoint-loop").into()),
    )
    .await
    .expect("the hooks' store opens");
    let factory = move |app: AppName| {
        let config = config(&endpoint, &table);
        async move {
            let store: Arc<dyn Store> = Arc::new(DynamoStore::open(config?, app).await?);
            Ok(store)
        }
    };
    let started = std::time::Instant::now();
    let report = conformance::run_all_with(&factory, &hooks).await;
    println!("dynamodb suite: {:?}", started.elapsed());
    print_capability_rows(&[(first.capabilities(), &report)]);
    report.assert_passed();
    println!(
        "requests sent by the capability probe's client: {}",
        first.requests_sent()
    );
}

/// The whole suite again on handles of one client ([`DynamoStore::for_app`]).
async fn dynamo_conforms_on_a_shared_client() {
    let table = format!("conformance-{}", random_app("t"));
    let base = DynamoStore::open(
        config(&endpoint(), &table).expect("valid config"),
        random_app("shared"),
    )
    .await
    .expect("the server listens, so the store opens");
    let factory = move |app: AppName| {
        let store: Arc<dyn Store> = Arc::new(base.for_app(app));
        std::future::ready(Ok(store))
    };
    conformance::run_all(&factory).await.assert_passed();
}

/// The listing scenarios on a table of their own, 7 items a `Scan` page
/// ([`DynamoConfig::with_list_page_size`]): the listing scenario's rows span several pages (the
/// limit counts items before the app filter, so a page holds at most 7 rows). The whole-suite
/// runs keep DynamoDB's 1 MB pages: every listing scans the whole shared table, and the model
/// test lists often.
async fn dynamo_lists_across_scan_pages() {
    const PAGE: usize = 7;
    let endpoint = endpoint();
    let table = format!("conformance-{}", random_app("pages"));
    let factory = Configured::new(move |app: AppName| {
        let config = config(&endpoint, &table).and_then(|c| c.with_list_page_size(PAGE));
        async move {
            let store: Arc<dyn Store> = Arc::new(DynamoStore::open(config?, app).await?);
            Ok(store)
        }
    })
    .with_list_page_size(PAGE);
    let report = conformance::run_selected(&factory, |name| {
        matches!(
            name,
            "list_leases_paginated" | "listing_carries_store_clock"
        )
    })
    .await;
    assert_eq!(report.passed.len() + report.failed.len(), 2, "{report:?}");
    report.assert_passed();
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Dynamo,
    tests: [
        dynamo_conforms,
        dynamo_conforms_on_a_shared_client,
        dynamo_lists_across_scan_pages,
    ],
}

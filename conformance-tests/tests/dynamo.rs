//! The conformance suite against DynamoDB (in practice a moto server): the server's URL comes
//! from `CHECKPOINT_DYNAMO_ENDPOINT` (for example `http://127.0.0.1:5000`); unset or
//! unreachable, the test reports the backend as unavailable (a failure under
//! `CHECKPOINT_REQUIRE_ALL=1`). Every run uses a table of its own, and every factory call
//! builds a new client (a new connection), so the scenarios also exercise independent handles.
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
#![cfg(feature = "dynamo")]

use std::sync::Arc;
use std::time::Duration;

use checkpoint_core::conformance::{self, backend_unavailable, random_app};
use checkpoint_core::{AppName, Backoff, LeaseManager, Store};
use checkpoint_dynamo::{DynamoConfig, DynamoStore};
use conformance_tests::print_capability_table;

const HOW: &str = "start a moto server (moto_server -p 5000) and set \
                   CHECKPOINT_DYNAMO_ENDPOINT=http://127.0.0.1:5000";

/// The suite's config: its own table and a patient retry policy: moto on a busy two-core machine can take seconds to
/// answer, which is a timeout to retry, not a failure.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamo_conforms() {
    let Ok(endpoint) = std::env::var("CHECKPOINT_DYNAMO_ENDPOINT") else {
        backend_unavailable("dynamodb", HOW, &"CHECKPOINT_DYNAMO_ENDPOINT is not set");
        return;
    };
    let table = format!("conformance-{}", random_app("t"));
    let probe = config(&endpoint, &table)
        .expect("valid config")
        .with_backoff(Backoff {
            max_attempts: 2,
            ..Backoff::default()
        });
    let first = match DynamoStore::open(probe, random_app("caps")).await {
        Ok(store) => store,
        Err(e) => {
            backend_unavailable("dynamodb", HOW, &e);
            return;
        }
    };
    print_capability_table(&[first.capabilities()]);
    let factory = move |app: AppName| {
        let config = config(&endpoint, &table);
        async move {
            let store: Arc<dyn Store> = Arc::new(DynamoStore::open(config?, app).await?);
            Ok(store)
        }
    };
    conformance::run_all(&factory).await.assert_passed();
    println!(
        "requests sent by the capability probe's client: {}",
        first.requests_sent()
    );
}

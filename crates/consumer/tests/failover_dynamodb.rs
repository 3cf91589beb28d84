//! The failover scenario (`failover.rs`) on DynamoDB at `CHECKPOINT_DYNAMO_ENDPOINT`. An unset
//! or unreachable endpoint is reported ignored by the `server_tests!` harness (a failure when
//! `CHECKPOINT_REQUIRE_ALL=1`).
//!
//! It needs an emulator that applies conditional writes atomically: moto's own threaded server
//! does not (two concurrent steals of one lease can both succeed), so point
//! `CHECKPOINT_DYNAMO_ENDPOINT` at `crates/checkpoint-dynamo/tests/moto_serial.py PORT`.

mod failover_support;

use std::time::Duration;

use checkpoint_core::conformance::random_app;
use checkpoint_test_support::Backend;
use failover_support::{check_with, open_four, scenario};

async fn failover_on_dynamodb() {
    let endpoint = Backend::Dynamo
        .url()
        .expect("the harness runs this only with an endpoint");
    let app = random_app("failover");
    let endpoint: String = url::form_urlencoded::byte_serialize(endpoint.as_bytes()).collect();
    let url = format!("dynamodb://consumer-failover?region=us-east-1&endpoint={endpoint}");
    let stores = open_four(&url, &app)
        .await
        .expect("the endpoint listens, so the stores open");
    // The emulator serves one request at a time, milliseconds each: the same scenario, three
    // times slower, checkpointing twice a second rather than after every batch. Expiry is by
    // observation (the last renewal's `leaseCounter` seen unchanged for the lease duration),
    // and a worker observes at each listing, once per renew interval: the bound is lease
    // duration + renew interval + one observation interval.
    let plan = scenario::Plan {
        checkpoint_every: Duration::from_millis(500),
        ..scenario::Plan::quick().slowed(3)
    };
    let observation_interval = plan.renew_interval;
    check_with(stores, plan, observation_interval).await;
}

checkpoint_test_support::server_tests! {
    backend: Backend::Dynamo,
    tests: [failover_on_dynamodb],
}

//! The worker's metrics through the `metrics` facade: names, units, descriptions and labels in
//! one place. Labels: `app`, `stream`, `worker`, and `shard` only on the per-shard lag gauge
//! (bounded by the shards a worker holds); store calls carry `operation` (one of the store
//! trait's method names) and failed ones `kind` (an `ErrorKind`).

use std::sync::Once;
use std::time::Instant;

use checkpoint_core::{AppName, Result};
use metrics::Unit;

/// Counter: leases taken (free or expired) with `get_lease`.
pub(crate) const LEASES_TAKEN: &str = "consumer_leases_taken_total";
/// Counter: lease renewals that succeeded.
pub(crate) const LEASES_RENEWED: &str = "consumer_leases_renewed_total";
/// Counter: leases lost (not renewed in time, or fenced).
pub(crate) const LEASES_LOST: &str = "consumer_leases_lost_total";
/// Counter: leases stolen from a more loaded worker.
pub(crate) const LEASES_STOLEN: &str = "consumer_leases_stolen_total";
/// Counter: hand-offs asked for with `claim`.
pub(crate) const LEASES_CLAIMED: &str = "consumer_leases_claimed_total";
/// Counter: leases released.
pub(crate) const LEASES_RELEASED: &str = "consumer_leases_released_total";
/// Counter: processors cancelled when the shutdown grace period ran out.
pub(crate) const PROCESSORS_CANCELLED: &str = "consumer_processors_cancelled_total";
/// Counter: checkpoints written.
pub(crate) const CHECKPOINTS: &str = "consumer_checkpoints_total";
/// Counter: records handed to processors.
pub(crate) const RECORDS: &str = "consumer_records_processed_total";
/// Counter: dead workers pruned from membership.
pub(crate) const WORKERS_PRUNED: &str = "consumer_workers_pruned_total";
/// Counter: signs that another process runs with this worker's id.
pub(crate) const WORKER_ID_CONFLICTS: &str = "consumer_worker_id_conflicts_total";
/// Gauge: leases this worker holds, per stream.
pub(crate) const LEASES_HELD: &str = "consumer_leases_held";
/// Gauge: per shard, milliseconds between the newest processed record's arrival and its
/// processing.
pub(crate) const SHARD_LAG: &str = "consumer_shard_lag_milliseconds";
/// Histogram: store call latency, per operation.
pub(crate) const STORE_CALL: &str = "consumer_store_call_seconds";
/// Counter: store calls that failed, per operation and error kind.
pub(crate) const STORE_ERRORS: &str = "consumer_store_errors_total";

/// Describes every metric once per process (with its unit), for the installed recorder.
pub(crate) fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use metrics::{describe_counter, describe_gauge, describe_histogram};
        describe_counter!(LEASES_TAKEN, Unit::Count, "Leases taken free or expired");
        describe_counter!(LEASES_RENEWED, Unit::Count, "Lease renewals that succeeded");
        describe_counter!(
            LEASES_LOST,
            Unit::Count,
            "Leases lost: not renewed in time, or fenced"
        );
        describe_counter!(
            LEASES_STOLEN,
            Unit::Count,
            "Leases stolen from a more loaded worker"
        );
        describe_counter!(
            LEASES_CLAIMED,
            Unit::Count,
            "Hand-offs asked for with claim"
        );
        describe_counter!(LEASES_RELEASED, Unit::Count, "Leases released");
        describe_counter!(
            PROCESSORS_CANCELLED,
            Unit::Count,
            "Processors cancelled when the shutdown grace period ran out"
        );
        describe_counter!(CHECKPOINTS, Unit::Count, "Checkpoints written");
        describe_counter!(RECORDS, Unit::Count, "Records handed to processors");
        describe_counter!(
            WORKERS_PRUNED,
            Unit::Count,
            "Dead workers pruned from membership"
        );
        describe_counter!(
            WORKER_ID_CONFLICTS,
            Unit::Count,
            "Signs that another process runs with this worker's id"
        );
        describe_gauge!(
            LEASES_HELD,
            Unit::Count,
            "Leases this worker holds, per stream"
        );
        describe_gauge!(
            SHARD_LAG,
            Unit::Milliseconds,
            "Time between the newest processed record's arrival and its processing, per shard"
        );
        describe_histogram!(
            STORE_CALL,
            Unit::Seconds,
            "Store call latency, per operation"
        );
        describe_counter!(
            STORE_ERRORS,
            Unit::Count,
            "Store calls that failed, per operation and kind"
        );
    });
}

/// Records one store call: its latency under `operation`, and its failure under its kind.
pub(crate) fn store_call<T>(
    app: &AppName,
    operation: &'static str,
    started: Instant,
    result: &Result<T>,
) {
    metrics::histogram!(STORE_CALL, "app" => app.to_string(), "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = result {
        metrics::counter!(
            STORE_ERRORS,
            "app" => app.to_string(),
            "operation" => operation,
            "kind" => format!("{:?}", e.kind())
        )
        .increment(1);
    }
}

//! The consumer benchmark (`bench --consumer [--consumer-part throughput|idle|failover]`): the
//! worker runtime's whole path on each backend.
//!
//! - **Throughput** ([`throughput`]): records per second through one worker, and through 4
//!   workers (at most 2 leases each), consuming 8 shards of a pre-filled
//!   [`MemoryStream`](checkpoint_consumer::MemoryStream) in
//!   batches of 100, the processor doing nothing but checkpointing the last record of every
//!   batch; against a raw loop of 8 tasks (one per shard) that reads the same stream in batches
//!   of 100 and writes one raw conditional checkpoint returning the record per batch with the
//!   backend's raw client ([`crate::Raw::checkpoint`]). Each run is timed from the first batch
//!   handed to a processor to the last record processed, so lease taking at start-up is not
//!   counted. The three alternate in rounds (3, after a warm-up round of a tenth of the records;
//!   1 with `--quick`), each run on a stream of its own in an app emptied after every run, so a
//!   change of load on the machine hits all three and no run sees another's leases; the table
//!   gives each one's median round and the ratios of the medians, library / raw.
//! - **Idle cost** ([`child::idle`]): one worker in a child process (this program with
//!   `--consumer-child`) holding 1,000 and 10,000 leases of an empty stream with the default
//!   timing (lease 10 s, renew interval 3 s; 10,000 is skipped on moto and MariaDB, where taking
//!   them one grant each takes many minutes): its peak resident memory (`VmHWM` of
//!   `/proc/<pid>/status`) and the store requests it sends per second once it holds them all,
//!   counted by a wrapper store ([`counting::Counting`]).
//! - **Failover** ([`failover`]): a child process holding 8 leases (lease 2 s, renew interval
//!   0.5 s) and a worker in this process, balanced to 4 leases each; the child is killed with
//!   `SIGKILL`, and the time until this worker holds all 8 is measured, 10 times: median and
//!   worst, split into the expiry of the killed worker's leases by the store's clock and what
//!   the surviving worker adds after it, against the bound lease duration + renew interval (+
//!   the store's clock-skew allowance; on DynamoDB + one more renew interval, the
//!   lease-observation period); see [`failover`] for why that bound holds from the kill.

#[path = "consumer/child.rs"]
mod child;
#[path = "consumer/counting.rs"]
mod counting;
#[path = "consumer/failover.rs"]
mod failover;
#[path = "consumer/throughput.rs"]
mod throughput;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use checkpoint_consumer::{
    InitializeInput, ProcessorError, Record, RecordProcessor, ShardCheckpointer, ShutdownReason,
};

pub(crate) use child::{ChildArgs, child};

use crate::measure::BoxError;
use crate::{Backend, Settings};

/// Records per checkpoint, and per read.
const BATCH: usize = 100;
/// Shards of the throughput and failover streams.
const SHARDS: usize = 8;

/// Which parts of the consumer benchmark run (`--consumer-part`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    Throughput,
    Idle,
    Failover,
}

impl Part {
    /// The parts `--consumer-part` names: one of them, or `all`.
    pub(crate) fn parse(value: &str) -> Result<Vec<Part>, String> {
        match value {
            "all" => Ok(vec![Part::Throughput, Part::Idle, Part::Failover]),
            "throughput" => Ok(vec![Part::Throughput]),
            "idle" => Ok(vec![Part::Idle]),
            "failover" => Ok(vec![Part::Failover]),
            other => Err(format!(
                "unknown --consumer-part {other:?} (throughput, idle, failover or all)"
            )),
        }
    }
}

/// Progress of a throughput run: records processed, and when the first batch arrived.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) records: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
}

impl Progress {
    fn add(&self, n: usize) {
        let now = Instant::now();
        self.first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(now);
        self.records.fetch_add(n as u64, Ordering::SeqCst);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
    }

    pub(crate) fn elapsed(&self) -> Duration {
        let first = *self.first.lock().unwrap_or_else(|e| e.into_inner());
        let last = *self.last.lock().unwrap_or_else(|e| e.into_inner());
        match (first, last) {
            (Some(a), Some(b)) => b - a,
            _ => Duration::ZERO,
        }
    }
}

/// The benchmark's processor: checkpoints the last record of every batch, nothing else.
pub(crate) struct Checkpointing(pub(crate) Arc<Progress>);

#[async_trait]
impl RecordProcessor for Checkpointing {
    async fn initialize(&mut self, _: &InitializeInput) -> Result<(), ProcessorError> {
        Ok(())
    }
    async fn process_records(
        &mut self,
        records: &[Record],
        cp: &ShardCheckpointer,
    ) -> Result<(), ProcessorError> {
        if let Some(last) = records.last() {
            cp.checkpoint_record(last).await?;
        }
        self.0.add(records.len());
        Ok(())
    }
    async fn shutdown(
        &mut self,
        _: ShutdownReason,
        _: &ShardCheckpointer,
    ) -> Result<(), ProcessorError> {
        Ok(())
    }
}

/// Polls `done` every 5 ms until it holds or `limit` passes.
pub(crate) async fn wait_for(
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<(), BoxError> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return Err(format!("not reached within {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Runs the parts of the consumer benchmark `settings` names on the backends and prints their
/// tables.
pub(crate) async fn run(backends: &[Backend], settings: &Settings) -> Result<(), BoxError> {
    if settings.consumer_parts.contains(&Part::Throughput) {
        throughput::table(backends, settings).await?;
    }
    if settings.consumer_parts.contains(&Part::Idle) {
        idle_table(backends, settings).await?;
    }
    if settings.consumer_parts.contains(&Part::Failover) {
        failover::table(backends, settings).await?;
    }
    Ok(())
}

/// Measures and prints the idle table.
async fn idle_table(backends: &[Backend], settings: &Settings) -> Result<(), BoxError> {
    let (sizes, timing, window) = if settings.quick {
        let timing = (Duration::from_secs(2), Duration::from_millis(500));
        (vec![50], timing, Duration::from_secs(2))
    } else {
        let timing = (Duration::from_secs(10), Duration::from_secs(3));
        (vec![1_000, 10_000], timing, Duration::from_secs(12))
    };
    println!(
        "\nIdle worker (child process, lease {:?}, renew interval {:?}, empty stream): peak RSS (VmHWM) and store requests per second over {window:?} once it holds every lease.\n",
        timing.0, timing.1
    );
    println!("| backend | leases | peak RSS MiB | requests/s |");
    println!("| --- | ---: | ---: | ---: |");
    for b in backends.iter().filter(|b| b.consumer) {
        let Some(url) = &b.url else { continue };
        for &n in &sizes {
            // Taking 10,000 leases one request each on moto (one request at a time) or on
            // MariaDB (a log flush per grant) takes many minutes: 1,000 there.
            if n > 1_000 && (b.name.contains("moto") || b.name == "mysql") {
                continue;
            }
            let (rss, rate) = child::idle(url, b.store.app(), n, timing, window)
                .await
                .map_err(|e| format!("{} idle {n}: {e}", b.name))?;
            println!(
                "| {} | {n} | {:.1} | {rate:.1} |",
                b.name,
                rss as f64 / 1024.0
            );
        }
    }
    Ok(())
}

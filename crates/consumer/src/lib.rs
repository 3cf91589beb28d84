//! A thin worker runtime that shares the shards of a stream between workers through any
//! checkpoint store, shaped as the Kinesis Client Library.
//!
//! - [`connect`] opens a store from a URL (`sqlite://`, `postgres://`, `redis://`,
//!   `dynamodb://`, `memory://`); any `Arc<dyn Store>` works too, custom stores included.
//! - [`ShardSource`] is where records come from; [`MemoryStream`] is an in-process stream that
//!   can split and merge shards, for tests and demos; `KinesisSource` (feature `kinesis`) reads
//!   Amazon Kinesis Data Streams through `aws-sdk-kinesis` as the KCL does: KPL aggregated
//!   records de-aggregated (`kpl`), the KCL's defaults (`KinesisConfig`, with a table of the
//!   KCL's names beside these), paced reads, `MillisBehindLatest` on every batch.
//! - [`RecordProcessor`] is the application's logic, one per shard lease; it checkpoints through
//!   a [`ShardCheckpointer`] fenced by the lease's token, so a processor whose lease was lost can
//!   never write.
//! - [`Worker`] registers in membership, discovers shards, takes and balances leases, renews
//!   them, and runs the processors ([`WorkerConfig`] sets its pace). One worker consumes one
//!   stream ([`Worker::new`]) or several ([`Worker::with_sources`]), with a fair share per
//!   stream among the workers consuming it; liveness is judged on the store's clock;
//!   [`WorkerHandle::shutdown_with_timeout`] bounds shutdown, cancelling stuck processors.
//!
//! Delivery is at least once: after a lease moves (expiry after a crash, or a steal), the new
//! owner starts from the last checkpoint, so records processed after it are delivered again.
//! [`Balance::Claim`] moves leases by hand-off instead of stealing, which checkpoints first and
//! so delivers nothing twice. A child shard is processed only after every parent reached
//! `SHARD_END`. Each processor runs under its own fencing token, so every write of a stale
//! processor is refused by the store.
//!
//! Cargo features: `sqlite` (default), `postgres`, `mysql`, `redis`, `dynamodb` compile in the backends
//! [`connect`] can open; `tls` turns on TLS (rustls) in the PostgreSQL, MySQL and Redis
//! backends that are compiled in (`sslmode=require`, `ssl-mode=required` or stricter,
//! `rediss://`); `kinesis` adds
//! `KinesisSource`.
//!
//! Observability: `tracing` events for lease taken / renewed (trace) / lost / stolen / claimed
//! / released (info) and checkpoint written (debug), each inside a `worker{worker}` span and,
//! where a processor is involved, a `shard{key, token}` span, so a subscriber sees the
//! lease's whole life under one span; store retries are `WARN` events of
//! `checkpoint_core::Backoff` (operation, attempt, delay, error kind). Metrics go through the
//! `metrics` facade, described once with their units, labelled `app`, `stream` and `worker`:
//! gauges `consumer_leases_held` and `consumer_shard_lag_milliseconds` (also labelled `shard`),
//! the histogram `consumer_store_call_seconds` and counter `consumer_store_errors_total` (by
//! `operation`, and `kind` for errors), and counters `consumer_leases_taken_total`,
//! `consumer_leases_renewed_total`, `consumer_leases_lost_total`, `consumer_leases_stolen_total`,
//! `consumer_leases_claimed_total`, `consumer_leases_released_total`,
//! `consumer_processors_cancelled_total`, `consumer_checkpoints_total`,
//! `consumer_records_processed_total`, `consumer_workers_pruned_total`,
//! `consumer_worker_id_conflicts_total`; with `KinesisSource`, also the gauge
//! `consumer_millis_behind_latest{stream, shard}` (ms) and the counters
//! `consumer_read_retries_total{stream, shard, reason}` and
//! `consumer_iterators_expired_total{stream, shard}`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use checkpoint_core::{AppName, LeaseKey, StreamName, WorkerId};
//! use checkpoint_consumer::{
//!     InitializeInput, MemoryStream, ProcessorError, Record, RecordProcessor, ShardCheckpointer,
//!     ShutdownReason, Worker, WorkerConfig,
//! };
//!
//! struct Printer;
//!
//! #[async_trait]
//! impl RecordProcessor for Printer {
//!     async fn initialize(&mut self, _: &InitializeInput) -> Result<(), ProcessorError> {
//!         Ok(())
//!     }
//!     async fn process_records(&mut self, records: &[Record], cp: &ShardCheckpointer) -> Result<(), ProcessorError> {
//!         for r in records {
//!             println!("{}: {} bytes", r.sequence, r.data.len());
//!         }
//!         if let Some(last) = records.last() {
//!             cp.checkpoint_record(last).await?;
//!         }
//!         Ok(())
//!     }
//!     async fn shutdown(&mut self, reason: ShutdownReason, cp: &ShardCheckpointer) -> Result<(), ProcessorError> {
//!         if reason == ShutdownReason::ShardEnd {
//!             cp.checkpoint_shard_end().await?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> checkpoint_core::Result<()> {
//! let store = checkpoint_consumer::connect("sqlite://checkpoints.db", AppName::new("printer")?).await?;
//! let stream = Arc::new(MemoryStream::new(StreamName::new("orders")?, 4)?);
//! let config = WorkerConfig::builder().build()?;
//! let worker = Worker::new(WorkerId::new("worker-1")?, store, stream, |_: &LeaseKey| Printer, config);
//! let handle = worker.spawn();
//! // …
//! handle.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod balance;
mod config;
mod connect;
#[cfg(feature = "kinesis")]
mod kinesis;
mod memory_stream;
mod metrics;
mod processor;
mod shard;
mod source;
mod worker;

pub use config::{Balance, WorkerConfig, WorkerConfigBuilder};
pub use connect::connect;
#[cfg(feature = "kinesis")]
pub use kinesis::{InitialPosition, KinesisConfig, KinesisConfigBuilder, KinesisSource, kpl};
pub use memory_stream::MemoryStream;
pub use processor::{
    InitializeInput, ProcessorError, ProcessorFactory, RecordProcessor, ShardCheckpointer,
    ShutdownReason,
};
pub use source::{Cursor, ReadBatch, Record, ShardInfo, ShardSource};
pub use worker::{Worker, WorkerHandle};
/// The AWS SDK versions `KinesisSource` is built on, for [`KinesisSource::new`] and
/// [`KinesisSource::from_sdk_config`].
#[cfg(feature = "kinesis")]
pub use {aws_config, aws_sdk_kinesis};

//! Helpers of the Kinesis tests: a fresh stream on the emulator, producers of plain and KPL
//! aggregated records, a client probe that times `GetRecords` calls and injects faults, and a
//! processor that tallies what it was given.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_kinesis::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_kinesis::error::BoxError;
use aws_sdk_kinesis::primitives::Blob;
use checkpoint_consumer::kpl::{UserRecord, aggregate};
use checkpoint_consumer::{
    InitialPosition, InitializeInput, KinesisConfig, KinesisSource, ProcessorError, ReadBatch,
    RecordProcessor, ShardCheckpointer, ShardSource, ShutdownReason, WorkerConfig,
};
use checkpoint_core::StreamName;
use checkpoint_core::conformance::random_app;

/// The emulator's endpoint (`CHECKPOINT_KINESIS_ENDPOINT`, else `CHECKPOINT_DYNAMO_ENDPOINT`):
/// the harness runs the tests only when one is set and listening.
pub(crate) fn endpoint() -> String {
    checkpoint_test_support::Backend::Kinesis
        .url()
        .expect("the harness runs these tests only with an endpoint")
}

/// The test pace: reads of one shard 200 ms apart (the least allowed), from `TRIM_HORIZON`.
pub(crate) fn fast_config() -> KinesisConfig {
    KinesisConfig::builder()
        .with_initial_position(InitialPosition::TrimHorizon)
        .with_idle_time_between_reads(Duration::from_millis(200))
        .with_max_throttle_delay(Duration::from_millis(400))
        .build()
        .expect("valid config")
}

/// A fresh stream of `shards` shards on the emulator (which the harness found listening).
pub(crate) async fn fresh_stream(shards: i32) -> KinesisSource {
    let name = StreamName::new(random_app("kinesis").as_str()).expect("valid stream name");
    let source = KinesisSource::connect(name.clone(), Some(&endpoint()))
        .await
        .expect("a valid endpoint")
        .with_config(fast_config());
    if let Err(e) = source
        .client()
        .create_stream()
        .stream_name(name.as_str())
        .shard_count(shards)
        .send()
        .await
    {
        panic!(
            "creating a stream on the listening emulator failed: {}",
            aws_sdk_kinesis::error::DisplayErrorContext(e)
        );
    }
    source
}

/// The same stream read through a client that also runs `probe`.
pub(crate) fn probed(
    source: &KinesisSource,
    probe: &Arc<Probe>,
    config: KinesisConfig,
) -> KinesisSource {
    let conf = source
        .client()
        .config()
        .to_builder()
        .interceptor(ProbeInterceptor(Arc::clone(probe)))
        .build();
    KinesisSource::new(Client::from_conf(conf), source.stream().clone()).with_config(config)
}

/// The payload of record `id`.
pub(crate) fn payload(id: u64) -> Vec<u8> {
    id.to_le_bytes().to_vec()
}

pub(crate) fn id_of(data: &[u8]) -> u64 {
    u64::from_le_bytes(data.try_into().expect("an 8-byte payload"))
}

pub(crate) async fn put_plain(source: &KinesisSource, id: u64) {
    source
        .client()
        .put_record()
        .stream_name(source.stream().as_str())
        .partition_key(format!("pk-{id}"))
        .data(Blob::new(payload(id)))
        .send()
        .await
        .expect("put_record");
}

/// Puts one KPL aggregated record of the user records `ids`, as a KPL producer would.
pub(crate) async fn put_aggregate(source: &KinesisSource, ids: &[u64]) {
    let users: Vec<UserRecord> = ids
        .iter()
        .map(|id| UserRecord {
            partition_key: format!("pk-{id}"),
            explicit_hash_key: None,
            data: payload(*id),
        })
        .collect();
    source
        .client()
        .put_record()
        .stream_name(source.stream().as_str())
        .partition_key(users[0].partition_key.clone())
        .data(Blob::new(aggregate(&users)))
        .send()
        .await
        .expect("put_record");
}

/// A worker pace for tests: fast renewals and polls, small batches.
pub(crate) fn worker_config(batch: usize) -> WorkerConfig {
    WorkerConfig::builder()
        .with_lease_duration(Duration::from_secs(2))
        .with_renew_interval(Duration::from_millis(200))
        .with_poll_interval(Duration::from_millis(10))
        .with_shard_sync_interval(Duration::from_millis(400))
        .with_batch_size(batch)
        .build()
        .expect("valid config")
}

/// Polls `done` every 20 ms until it holds or `limit` passes; returns whether it held.
pub(crate) async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// What the client saw: when each `GetRecords` was sent, and which to answer with an error.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    pub(crate) get_records: Mutex<Vec<Instant>>,
    /// By 0-based `GetRecords` call: the Kinesis error code to answer with instead.
    pub(crate) faults: Mutex<BTreeMap<usize, &'static str>>,
    answered: AtomicUsize,
    pub(crate) injected: AtomicUsize,
}

impl Probe {
    pub(crate) fn with_faults(faults: &[(usize, &'static str)]) -> Arc<Self> {
        let probe = Self::default();
        probe.faults.lock().unwrap().extend(faults.iter().copied());
        Arc::new(probe)
    }

    pub(crate) fn calls(&self) -> usize {
        self.get_records.lock().unwrap().len()
    }
}

#[derive(Debug)]
struct ProbeInterceptor(Arc<Probe>);

impl Intercept for ProbeInterceptor {
    fn name(&self) -> &'static str {
        "kinesis-test-probe"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = context.request().headers().get("x-amz-target");
        if target == Some("Kinesis_20131202.GetRecords") {
            self.0.get_records.lock().unwrap().push(Instant::now());
        }
        Ok(())
    }

    /// Replaces the emulator's answer to a chosen `GetRecords` by a Kinesis error, as Kinesis
    /// sends it (HTTP 400, the code in `__type`).
    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>();
        if operation.map(|m| m.name()) != Some("GetRecords") {
            return Ok(());
        }
        let call = self.0.answered.fetch_add(1, Ordering::SeqCst);
        let Some(code) = self.0.faults.lock().unwrap().remove(&call) else {
            return Ok(());
        };
        self.0.injected.fetch_add(1, Ordering::SeqCst);
        let response = context.response_mut();
        *response.status_mut() = 400u16.try_into()?;
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.1");
        *response.body_mut() = aws_smithy_types::body::SdkBody::from(format!(
            r#"{{"__type":"{code}","message":"injected by the test"}}"#
        ));
        Ok(())
    }
}

/// What a [`Tally`] processor was given, across every processor sharing it.
#[derive(Debug, Default)]
pub(crate) struct Log {
    /// Ids processed (and, when checkpointing, checkpointed), in order.
    pub(crate) ids: Vec<u64>,
    pub(crate) inits: usize,
    pub(crate) lags: Vec<Option<u64>>,
    /// Set once the processor reached its `stop_after` id: later records are ignored, as if the
    /// process had crashed right after that checkpoint.
    pub(crate) stopped: bool,
}

pub(crate) struct Tally {
    pub(crate) log: Arc<Mutex<Log>>,
    pub(crate) checkpoint: bool,
    pub(crate) stop_after: Option<u64>,
}

#[async_trait]
impl RecordProcessor for Tally {
    async fn initialize(&mut self, _: &InitializeInput) -> Result<(), ProcessorError> {
        self.log.lock().unwrap().inits += 1;
        Ok(())
    }

    async fn process_records(
        &mut self,
        _: &[checkpoint_consumer::Record],
        _: &ShardCheckpointer,
    ) -> Result<(), ProcessorError> {
        Err("the worker calls process_batch".into())
    }

    async fn process_batch(
        &mut self,
        batch: &ReadBatch,
        checkpointer: &ShardCheckpointer,
    ) -> Result<(), ProcessorError> {
        self.log
            .lock()
            .unwrap()
            .lags
            .push(batch.millis_behind_latest);
        for record in &batch.records {
            let id = id_of(&record.data);
            {
                let mut log = self.log.lock().unwrap();
                if log.stopped {
                    return Ok(());
                }
                log.ids.push(id);
                log.stopped = self.stop_after == Some(id);
            }
            if self.checkpoint {
                checkpointer.checkpoint_record(record).await?;
            }
        }
        Ok(())
    }

    async fn shutdown(
        &mut self,
        reason: ShutdownReason,
        checkpointer: &ShardCheckpointer,
    ) -> Result<(), ProcessorError> {
        if reason == ShutdownReason::ShardEnd {
            checkpointer.checkpoint_shard_end().await?;
        }
        Ok(())
    }
}

/// Every id in `ids` exactly once, and nothing else.
pub(crate) fn exactly_once(ids: &[u64], expected: &[u64]) {
    let mut counts = BTreeMap::new();
    for id in ids {
        *counts.entry(*id).or_insert(0) += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let seen: Vec<u64> = counts.keys().copied().collect();
    let mut expected = expected.to_vec();
    expected.sort_unstable();
    assert_eq!(seen, expected, "every record, nothing else");
}

/// A metrics recorder that keeps every gauge's last value, by name and labels
/// (`name{k=v,...}`), for [`metrics::set_default_local_recorder`].
#[derive(Debug, Default)]
pub(crate) struct Gauges(Mutex<BTreeMap<String, Arc<GaugeCell>>>);

#[derive(Debug, Default)]
pub(crate) struct GaugeCell(Mutex<f64>);

impl metrics::GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        *self.0.lock().unwrap() += value;
    }

    fn decrement(&self, value: f64) {
        *self.0.lock().unwrap() -= value;
    }

    fn set(&self, value: f64) {
        *self.0.lock().unwrap() = value;
    }
}

impl Gauges {
    pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let key = format!("{name}{{{}}}", labels.join(","));
        self.0
            .lock()
            .unwrap()
            .get(&key)
            .map(|c| *c.0.lock().unwrap())
    }
}

impl metrics::Recorder for Gauges {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }

    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let cell = Arc::clone(self.0.lock().unwrap().entry(name).or_default());
        metrics::Gauge::from_arc(cell)
    }

    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

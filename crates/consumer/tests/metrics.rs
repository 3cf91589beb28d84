//! The worker's metrics, recorded by a test recorder installed for this test binary: names,
//! units, labels and values after a scenario.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use checkpoint_consumer::{
    InitializeInput, MemoryStream, ProcessorError, Record, RecordProcessor, ShardCheckpointer,
    ShutdownReason, Worker, WorkerConfig,
};
use checkpoint_core::conformance::random_app;
use checkpoint_core::{LeaseKey, MemoryStore, StreamName, WorkerId};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// One metric's name and sorted labels.
type Id = (String, Vec<(String, String)>);

fn id(key: &Key) -> Id {
    let mut labels: Vec<(String, String)> = key
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect();
    labels.sort();
    (key.name().to_owned(), labels)
}

#[derive(Debug, Default)]
struct Value {
    counter: AtomicU64,
    /// f64 bits of the last gauge value.
    gauge: AtomicU64,
    samples: Mutex<Vec<f64>>,
}

impl CounterFn for Value {
    fn increment(&self, value: u64) {
        self.counter.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.counter.store(value, Ordering::SeqCst);
    }
}

impl GaugeFn for Value {
    fn increment(&self, value: f64) {
        self.set(f64::from_bits(self.gauge.load(Ordering::SeqCst)) + value);
    }
    fn decrement(&self, value: f64) {
        self.set(f64::from_bits(self.gauge.load(Ordering::SeqCst)) - value);
    }
    fn set(&self, value: f64) {
        self.gauge.store(value.to_bits(), Ordering::SeqCst);
    }
}

impl HistogramFn for Value {
    fn record(&self, value: f64) {
        self.samples.lock().unwrap().push(value);
    }
}

#[derive(Debug, Default)]
struct TestRecorder {
    values: Mutex<HashMap<Id, Arc<Value>>>,
    units: Mutex<HashMap<String, Option<Unit>>>,
}

impl TestRecorder {
    fn value(&self, key: &Key) -> Arc<Value> {
        Arc::clone(self.values.lock().unwrap().entry(id(key)).or_default())
    }
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<Arc<Value>> {
        self.values
            .lock()
            .unwrap()
            .iter()
            .filter(|((n, ls), _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, v)| Arc::clone(v))
            .collect()
    }
    fn describe(&self, name: KeyName, unit: Option<Unit>) {
        self.units
            .lock()
            .unwrap()
            .insert(name.as_str().to_owned(), unit);
    }
}

impl Recorder for &'static TestRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.value(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.value(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.value(key))
    }
}

struct Checkpointing;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_labels_units_and_values() {
    let recorder: &'static TestRecorder = Box::leak(Box::default());
    metrics::set_global_recorder(recorder).expect("the only recorder of this binary");
    let app = random_app("metrics");
    let store = Arc::new(MemoryStore::new(app.clone()));
    let stream = MemoryStream::new(StreamName::new("orders").unwrap(), 3).unwrap();
    for i in 0..30u64 {
        stream
            .put(&format!("pk-{i}"), i.to_le_bytes().to_vec())
            .unwrap();
    }
    let config = WorkerConfig::builder()
        .with_lease_duration(Duration::from_millis(800))
        .with_renew_interval(Duration::from_millis(100))
        .with_poll_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let worker = Worker::new(
        WorkerId::new("w1").unwrap(),
        store,
        Arc::new(stream),
        |_: &LeaseKey| Checkpointing,
        config,
    )
    .spawn();
    let labels = [
        ("app", app.as_str()),
        ("stream", "orders"),
        ("worker", "w1"),
    ];
    let records = || {
        recorder
            .find("consumer_records_processed_total", &labels)
            .iter()
            .map(|v| v.counter.load(Ordering::SeqCst))
            .sum::<u64>()
    };
    let held = || {
        recorder
            .find("consumer_leases_held", &labels)
            .first()
            .map(|v| f64::from_bits(v.gauge.load(Ordering::SeqCst)))
    };
    let renewals = || {
        recorder.find(
            "consumer_store_call_seconds",
            &[("app", app.as_str()), ("operation", "renew_many")],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while records() < 30 || held() != Some(3.0) || renewals().is_empty() {
        assert!(
            Instant::now() < deadline,
            "records {} held {:?}",
            records(),
            held()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(records(), 30);
    let taken: u64 = recorder
        .find("consumer_leases_taken_total", &labels)
        .iter()
        .map(|v| v.counter.load(Ordering::SeqCst))
        .sum();
    assert_eq!(taken, 3);
    let checkpoints: u64 = recorder
        .find("consumer_checkpoints_total", &labels)
        .iter()
        .map(|v| v.counter.load(Ordering::SeqCst))
        .sum();
    assert!(checkpoints >= 3, "{checkpoints} checkpoints for 3 shards");
    let lags = recorder.find("consumer_shard_lag_milliseconds", &labels);
    assert_eq!(lags.len(), 3, "one lag gauge per shard");
    let calls = renewals();
    assert_eq!(calls.len(), 1);
    assert!(!calls[0].samples.lock().unwrap().is_empty());
    worker.shutdown().await.unwrap();
    assert_eq!(held(), Some(0.0), "held gauge after shutdown");
    let released: u64 = recorder
        .find("consumer_leases_released_total", &labels)
        .iter()
        .map(|v| v.counter.load(Ordering::SeqCst))
        .sum();
    assert_eq!(released, 3);
    let units = recorder.units.lock().unwrap();
    assert_eq!(
        units.get("consumer_store_call_seconds"),
        Some(&Some(Unit::Seconds))
    );
    assert_eq!(
        units.get("consumer_shard_lag_milliseconds"),
        Some(&Some(Unit::Milliseconds))
    );
    assert_eq!(units.get("consumer_leases_held"), Some(&Some(Unit::Count)));
}

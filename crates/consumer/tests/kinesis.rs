//! `KinesisSource` against a Kinesis emulator (the moto server): shard listing with parents
//! after a split, reading from every position, shard end, a worker consuming a resharded
//! stream to the end, children only after their parent; KPL aggregated records counted exactly
//! once across a restart inside an aggregate; the read pace of a busy shard; expired iterators
//! and throttling survived without losing the lease or a record.
//!
//! moto never expires a shard iterator (its iterator is the stream, shard and last sequence
//! number, with no time in it) and never throttles, so those faults are injected: the source
//! reads through a client with an interceptor ([`kinesis_support::Probe`]) that replaces the
//! emulator's answer to chosen `GetRecords` calls with the error Kinesis sends (HTTP 400,
//! `__type` = `ExpiredIteratorException` or `ProvisionedThroughputExceededException`). The same
//! interceptor timestamps every `GetRecords` call for the pace test.
//!
//! The endpoint comes from `CHECKPOINT_KINESIS_ENDPOINT`, else `CHECKPOINT_DYNAMO_ENDPOINT` (one
//! moto server serves both); when neither is set or nothing listens there, the `server_tests!`
//! harness reports every test ignored (a failure when `CHECKPOINT_REQUIRE_ALL=1`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use checkpoint_consumer::{
    InitializeInput, KinesisSource, ProcessorError, Record, RecordProcessor, ShardCheckpointer,
    ShardSource, ShutdownReason, Worker, WorkerConfig,
};
use checkpoint_core::conformance::random_app;
use checkpoint_core::{LeaseKey, MemoryStore, Position, ShardId, WorkerId};

mod kinesis_support;

use kinesis_support::*;

async fn put(source: &KinesisSource, ids: std::ops::Range<u64>) {
    for id in ids {
        put_plain(source, id).await;
    }
}

/// Splits `shard` in the middle of its hash-key range; returns the two children.
async fn split(source: &KinesisSource, shard: &ShardId) -> Vec<ShardId> {
    let listed = source
        .client()
        .list_shards()
        .stream_name(source.stream().as_str())
        .send()
        .await
        .expect("list_shards");
    let range = listed
        .shards()
        .iter()
        .find(|s| s.shard_id() == shard.as_str())
        .and_then(|s| s.hash_key_range())
        .expect("the shard has a hash-key range");
    let start: u128 = range.starting_hash_key().parse().expect("decimal key");
    let end: u128 = range.ending_hash_key().parse().expect("decimal key");
    source
        .client()
        .split_shard()
        .stream_name(source.stream().as_str())
        .shard_to_split(shard.as_str())
        .new_starting_hash_key((start + (end - start) / 2 + 1).to_string())
        .send()
        .await
        .expect("split_shard");
    let after = source.list_shards().await.expect("list after split");
    after
        .into_iter()
        .filter(|s| s.parents.contains(shard))
        .map(|s| s.id)
        .collect()
}

async fn read_all(
    source: &KinesisSource,
    shard: &ShardId,
    start: &Position,
) -> (Vec<Record>, bool) {
    let mut cursor = source.cursor(shard, start).await.expect("cursor");
    let mut records = Vec::new();
    for _ in 0..50 {
        let batch = source.read(shard, &cursor, 7).await.expect("read");
        let empty = batch.records.is_empty();
        records.extend(batch.records);
        match batch.next {
            None => return (records, true),
            Some(next) => cursor = next,
        }
        if empty {
            break;
        }
    }
    (records, false)
}

fn ids(records: &[Record]) -> BTreeSet<u64> {
    records
        .iter()
        .map(|r| u64::from_le_bytes(r.data.as_slice().try_into().expect("8 bytes")))
        .collect()
}

async fn lists_reads_and_ends_shards_after_a_split() {
    let source = fresh_stream(2).await;
    put(&source, 0..30).await;
    let shards = source.list_shards().await.expect("list");
    assert_eq!(shards.len(), 2);
    assert!(shards.iter().all(|s| s.parents.is_empty() && !s.closed));
    let parent = shards[0].id.clone();

    // An open shard: every position, in batches of 7, and no end.
    let (before, ended) = read_all(&source, &parent, &Position::TrimHorizon).await;
    assert!(!ended, "an open shard does not end");
    assert!(before.len() > 1, "records were routed to {parent}");
    let (rest, _) = read_all(&source, &parent, &before[0].position()).await;
    assert_eq!(
        rest,
        before[1..].to_vec(),
        "AFTER_SEQUENCE_NUMBER skips the record"
    );
    let (latest, ended) = read_all(&source, &parent, &Position::Latest).await;
    assert!(
        latest.is_empty() && !ended,
        "LATEST starts after the last record"
    );

    // After a split the parent is listed closed, the children name it, and the parent reads
    // to its end. (moto re-sequences a split shard's records and keeps routing new records to
    // it, so nothing is put after the split and records are compared by content.)
    let children = split(&source, &parent).await;
    assert_eq!(children.len(), 2, "a split makes two children of {parent}");
    let listed = source.list_shards().await.expect("list");
    assert!(listed.iter().any(|s| s.id == parent && s.closed));
    let (all, ended) = read_all(&source, &parent, &Position::TrimHorizon).await;
    assert!(ended, "a closed shard read to the end reports its end");
    assert_eq!(ids(&all), ids(&before));
    let (none, ended) = read_all(&source, &parent, &Position::ShardEnd).await;
    assert!(ended && none.is_empty());
    for child in &children {
        let (records, ended) = read_all(&source, child, &Position::TrimHorizon).await;
        assert!(records.is_empty() && !ended, "{child} is open and empty");
    }

    // Every record put is in exactly one shard.
    let mut seen = BTreeSet::new();
    for shard in source.list_shards().await.expect("list") {
        for id in ids(&read_all(&source, &shard.id, &Position::TrimHorizon).await.0) {
            assert!(seen.insert(id), "record {id} read twice");
        }
    }
    assert_eq!(seen, (0..30).collect::<BTreeSet<u64>>());
}

#[derive(Debug, Default)]
struct Seen {
    ids: BTreeSet<u64>,
    /// (shard, event) in order: "init" or "end".
    order: Vec<(ShardId, &'static str)>,
}

struct Collect(Arc<Mutex<Seen>>, ShardId);

#[async_trait]
impl RecordProcessor for Collect {
    async fn initialize(&mut self, _: &InitializeInput) -> Result<(), ProcessorError> {
        self.0.lock().unwrap().order.push((self.1.clone(), "init"));
        Ok(())
    }

    async fn process_records(
        &mut self,
        records: &[Record],
        checkpointer: &ShardCheckpointer,
    ) -> Result<(), ProcessorError> {
        {
            let mut seen = self.0.lock().unwrap();
            for r in records {
                seen.ids
                    .insert(u64::from_le_bytes(r.data.as_slice().try_into()?));
            }
        }
        if let Some(last) = records.last() {
            checkpointer.checkpoint_record(last).await?;
        }
        Ok(())
    }

    async fn shutdown(
        &mut self,
        reason: ShutdownReason,
        checkpointer: &ShardCheckpointer,
    ) -> Result<(), ProcessorError> {
        if reason == ShutdownReason::ShardEnd {
            self.0.lock().unwrap().order.push((self.1.clone(), "end"));
            checkpointer.checkpoint_shard_end().await?;
        }
        Ok(())
    }
}

async fn a_worker_consumes_a_resharded_stream_in_order() {
    let source = fresh_stream(2).await;
    put(&source, 0..20).await;
    let parent = source.list_shards().await.expect("list")[1].id.clone();
    put(&source, 20..40).await;
    let children = split(&source, &parent).await;

    let store = Arc::new(MemoryStore::new(random_app("kinesis-worker")));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let factory = {
        let seen = Arc::clone(&seen);
        move |key: &LeaseKey| Collect(Arc::clone(&seen), key.shard.clone())
    };
    let config = WorkerConfig::builder()
        .with_lease_duration(Duration::from_secs(2))
        .with_renew_interval(Duration::from_millis(200))
        .with_poll_interval(Duration::from_millis(100))
        .with_shard_sync_interval(Duration::from_millis(400))
        .build()
        .expect("valid config");
    let worker = Worker::new(
        WorkerId::new("kinesis-worker").expect("valid id"),
        store.clone(),
        Arc::new(source.clone()),
        factory,
        config,
    )
    .spawn();

    let deadline = Instant::now() + Duration::from_secs(20);
    let done = |seen: &Seen| {
        seen.ids.len() == 40
            && children
                .iter()
                .all(|c| seen.order.iter().any(|(s, w)| s == c && *w == "init"))
    };
    while !done(&seen.lock().unwrap()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await.expect("graceful shutdown");

    let key = LeaseKey::new(source.stream().clone(), parent.clone());
    let lease = checkpoint_core::Checkpointer::fetch_checkpoint(store.as_ref(), &key)
        .await
        .expect("fetch")
        .expect("the parent has a lease");
    assert_eq!(lease.checkpoint, Some(Position::ShardEnd));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.ids, (0..40).collect::<BTreeSet<u64>>());
    let position = |shard: &ShardId, what: &str| {
        seen.order
            .iter()
            .position(|(s, w)| s == shard && *w == what)
    };
    let parent_end = position(&parent, "end").expect("the split parent reached its end");
    for child in &children {
        let start = position(child, "init").expect("every child was started");
        assert!(start > parent_end, "{child} started before {parent} ended");
    }
}

/// Layout of the aggregate tests: five aggregates of four user records (ids `10a..10a+3`), each
/// followed by one plain record (`100 + a`).
async fn put_aggregates(source: &KinesisSource) -> Vec<u64> {
    let mut all = Vec::new();
    for a in 0..5u64 {
        let ids: Vec<u64> = (a * 10..a * 10 + 4).collect();
        put_aggregate(source, &ids).await;
        put_plain(source, 100 + a).await;
        all.extend(ids);
        all.push(100 + a);
    }
    all
}

fn tally(
    log: &Arc<Mutex<Log>>,
    checkpoint: bool,
    stop_after: Option<u64>,
) -> impl Fn(&LeaseKey) -> Tally + Send + Sync + 'static {
    let log = Arc::clone(log);
    move |_: &LeaseKey| Tally {
        log: Arc::clone(&log),
        checkpoint,
        stop_after,
    }
}

async fn aggregated_records_are_counted_once_across_a_restart_inside_an_aggregate() {
    let source = fresh_stream(1).await;
    let all = put_aggregates(&source).await;
    let store = Arc::new(MemoryStore::new(random_app("kinesis-kpl")));
    let shard = source.list_shards().await.expect("list")[0].id.clone();
    let key = LeaseKey::new(source.stream().clone(), shard);

    // The first worker checkpoints after every record and "crashes" right after checkpointing
    // id 21: the second user record of the third aggregate.
    let first = Arc::new(Mutex::new(Log::default()));
    let worker = Worker::new(
        WorkerId::new("kpl-first").unwrap(),
        store.clone(),
        Arc::new(source.clone()),
        tally(&first, true, Some(21)),
        worker_config(3),
    )
    .spawn();
    assert!(
        eventually(Duration::from_secs(20), || first.lock().unwrap().stopped).await,
        "the first worker reached id 21: {:?}",
        first.lock().unwrap()
    );
    worker.shutdown().await.expect("graceful shutdown");
    let lease = checkpoint_core::Checkpointer::fetch_checkpoint(store.as_ref(), &key)
        .await
        .expect("fetch")
        .expect("a lease");
    match &lease.checkpoint {
        Some(Position::Sequence { sub_sequence, .. }) => {
            assert_eq!(*sub_sequence, 1, "the checkpoint is inside the aggregate")
        }
        other => panic!("unexpected checkpoint {other:?}"),
    }

    // The second worker starts from that checkpoint; its first GetRecords meets an expired
    // iterator, so the resumption point is also requested a second time.
    let second = Arc::new(Mutex::new(Log::default()));
    let probe = Probe::with_faults(&[(0, "ExpiredIteratorException")]);
    let worker = Worker::new(
        WorkerId::new("kpl-second").unwrap(),
        store.clone(),
        Arc::new(probed(&source, &probe, fast_config())),
        tally(&second, true, None),
        worker_config(3),
    )
    .spawn();
    let expected = all.len();
    let done = || first.lock().unwrap().ids.len() + second.lock().unwrap().ids.len() >= expected;
    let finished = eventually(Duration::from_secs(20), done).await;
    worker.shutdown().await.expect("graceful shutdown");
    assert!(finished, "every record was processed");

    let first = first.lock().unwrap();
    let second = second.lock().unwrap();
    assert_eq!(first.ids.last(), Some(&21));
    assert_eq!(
        second.ids.first(),
        Some(&22),
        "resumes at the aggregate's next user record"
    );
    let ids: Vec<u64> = first.ids.iter().chain(&second.ids).copied().collect();
    exactly_once(&ids, &all);
    assert_eq!(probe.injected.load(std::sync::atomic::Ordering::SeqCst), 1);
}

async fn reads_of_a_busy_shard_stay_within_the_configured_pace() {
    let source = fresh_stream(1).await;
    for id in 0..40 {
        put_plain(&source, id).await;
    }
    let idle = Duration::from_millis(250);
    let probe = Probe::with_faults(&[]);
    let config = checkpoint_consumer::KinesisConfig::builder()
        .with_initial_position(checkpoint_consumer::InitialPosition::TrimHorizon)
        .with_idle_time_between_reads(idle)
        .build()
        .unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let store = Arc::new(MemoryStore::new(random_app("kinesis-pace")));
    // Four records per read: every read but the last is full, and the worker reads again at
    // once; after the last, empty reads follow with a 10 ms poll interval.
    let worker = Worker::new(
        WorkerId::new("pace").unwrap(),
        store,
        Arc::new(probed(&source, &probe, config)),
        tally(&log, true, None),
        worker_config(4),
    )
    .spawn();
    let full = eventually(Duration::from_secs(20), || {
        log.lock().unwrap().ids.len() == 40
    })
    .await;
    let busy_calls = probe.calls();
    // And a few empty reads.
    let empty = eventually(Duration::from_secs(10), || probe.calls() >= busy_calls + 4).await;
    worker.shutdown().await.expect("graceful shutdown");
    assert!(full && empty, "read everything, then polled");

    let calls = probe.get_records.lock().unwrap().clone();
    assert!(
        busy_calls >= 10,
        "40 records, 4 per read: {busy_calls} reads"
    );
    // Each call starts at its slot; the request leaves after a little preparation, so allow
    // that much jitter between two sends.
    let slack = Duration::from_millis(25);
    for (n, pair) in calls.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        assert!(
            gap + slack >= idle,
            "GetRecords {n} and {} were {gap:?} apart (pace {idle:?})",
            n + 1
        );
    }
    let span = *calls.last().unwrap() - calls[0];
    let per_second = (calls.len() - 1) as f64 / span.as_secs_f64();
    assert!(
        per_second <= 4.0 + 0.5,
        "{per_second:.2} reads/s for a pace of 4/s"
    );
    let lags = log.lock().unwrap().lags.clone();
    assert!(
        lags.iter().all(Option::is_some),
        "every batch carries MillisBehindLatest: {lags:?}"
    );
}

async fn expired_iterators_and_throttling_keep_the_lease_and_lose_nothing() {
    let source = fresh_stream(1).await;
    let mut all: Vec<u64> = Vec::new();
    for id in 0..6 {
        put_plain(&source, id).await;
        all.push(id);
    }
    put_aggregate(&source, &[10, 11, 12]).await;
    all.extend([10, 11, 12]);
    for id in 30..36 {
        put_plain(&source, id).await;
        all.push(id);
    }
    put_aggregate(&source, &[20, 21, 22]).await;
    all.extend([20, 21, 22]);
    let probe = Probe::with_faults(&[
        (0, "ExpiredIteratorException"),
        (2, "ExpiredIteratorException"),
        (4, "ProvisionedThroughputExceededException"),
        (5, "ProvisionedThroughputExceededException"),
        (6, "ProvisionedThroughputExceededException"),
        (8, "ExpiredIteratorException"),
    ]);
    let log = Arc::new(Mutex::new(Log::default()));
    let store = Arc::new(MemoryStore::new(random_app("kinesis-expired")));
    // The processor never checkpoints: an iterator renewed from the last checkpoint (none, so
    // TRIM_HORIZON) instead of after the last delivered record would deliver records again.
    let worker = Worker::new(
        WorkerId::new("expired").unwrap(),
        store,
        Arc::new(probed(&source, &probe, fast_config())),
        tally(&log, false, None),
        worker_config(2),
    )
    .spawn();
    let expected = all.len();
    let done = eventually(Duration::from_secs(30), || {
        log.lock().unwrap().ids.len() >= expected
    })
    .await;
    // Let a few more reads pass, so a late duplicate would show.
    let calls = probe.calls();
    let more = eventually(Duration::from_secs(10), || probe.calls() >= calls + 3).await;
    let held = worker.held_leases();
    worker.shutdown().await.expect("graceful shutdown");
    assert!(
        done && more,
        "every record delivered: {:?}",
        log.lock().unwrap()
    );
    let log = log.lock().unwrap();
    exactly_once(&log.ids, &all);
    assert_eq!(log.inits, 1, "one processor: the lease was never given up");
    assert_eq!(held.len(), 1, "the lease is still held");
    assert_eq!(probe.injected.load(std::sync::atomic::Ordering::SeqCst), 6);
}

async fn the_default_initial_position_is_latest() {
    let source = fresh_stream(1).await;
    let latest = source
        .clone()
        .with_config(checkpoint_consumer::KinesisConfig::default());
    assert_eq!(latest.initial_position(), Position::Latest);
    put(&source, 0..3).await;
    let shard = source.list_shards().await.expect("list")[0].id.clone();
    let cursor = latest
        .cursor(&shard, &latest.initial_position())
        .await
        .expect("cursor");
    let batch = latest.read(&shard, &cursor, 100).await.expect("read");
    assert!(batch.records.is_empty(), "LATEST skips what was there");
    put(&source, 3..4).await;
    let next = batch.next.expect("an open shard");
    let batch = latest.read(&shard, &next, 100).await.expect("read");
    assert_eq!(ids(&batch.records), BTreeSet::from([3]));
}

/// One thread, so the local recorder sees what the read records.
async fn each_batch_carries_its_lag_and_the_gauge_follows_it() {
    let source = fresh_stream(1).await;
    put(&source, 0..6).await;
    let shard = source.list_shards().await.expect("list")[0].id.clone();
    let gauges = Gauges::default();
    let _recording = metrics::set_default_local_recorder(&gauges);
    let labels = [
        ("stream", source.stream().as_str()),
        ("shard", shard.as_str()),
    ];
    let mut cursor = source
        .cursor(&shard, &Position::TrimHorizon)
        .await
        .expect("cursor");
    let mut read = 0;
    while read < 6 {
        let batch = source.read(&shard, &cursor, 2).await.expect("read");
        read += batch.records.len();
        let lag = batch.millis_behind_latest.expect("Kinesis reports the lag");
        assert_eq!(
            gauges.get("consumer_millis_behind_latest", &labels),
            Some(lag as f64),
            "the gauge is the last batch's lag"
        );
        cursor = batch.next.expect("an open shard");
    }
    // At the tip the lag is 0.
    let batch = source.read(&shard, &cursor, 2).await.expect("read");
    assert!(batch.records.is_empty());
    assert_eq!(batch.millis_behind_latest, Some(0));
    assert_eq!(
        gauges.get("consumer_millis_behind_latest", &labels),
        Some(0.0)
    );
}

async fn a_source_from_shared_sdk_settings_reads_the_stream() {
    use checkpoint_consumer::aws_config::{BehaviorVersion, Region, SdkConfig};
    use checkpoint_consumer::aws_sdk_kinesis::config::{Credentials, SharedCredentialsProvider};
    let source = fresh_stream(1).await;
    put(&source, 0..3).await;
    let endpoint = endpoint();
    // Settings as `aws_config::defaults(..).load()` would give them, without an HTTP client:
    // the source brings its own.
    let sdk = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "emulator", "emulator", None, None, "test",
        )))
        .build();
    let shared =
        KinesisSource::from_sdk_config(&sdk, source.stream().clone()).with_config(fast_config());
    let shard = shared.list_shards().await.expect("list")[0].id.clone();
    let (records, ended) = read_all(&shared, &shard, &Position::TrimHorizon).await;
    assert!(!ended);
    assert_eq!(ids(&records), BTreeSet::from([0, 1, 2]));
}

async fn a_worker_without_an_initial_position_starts_kinesis_shards_at_latest() {
    let source = fresh_stream(1).await;
    put(&source, 0..3).await;
    let probe = Probe::with_faults(&[]);
    let config = fast_config();
    let latest = checkpoint_consumer::KinesisConfig::builder()
        .with_idle_time_between_reads(config.idle_time_between_reads())
        .build()
        .unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let worker = Worker::new(
        WorkerId::new("latest").unwrap(),
        Arc::new(MemoryStore::new(random_app("kinesis-latest"))),
        Arc::new(probed(&source, &probe, latest)),
        tally(&log, true, None),
        worker_config(10),
    )
    .spawn();
    // The first GetRecords leaves after its LATEST iterator was handed out: what is put from
    // then on is new.
    let reading = eventually(Duration::from_secs(10), || probe.calls() >= 1).await;
    put(&source, 3..5).await;
    let done = eventually(Duration::from_secs(10), || {
        log.lock().unwrap().ids.len() >= 2
    })
    .await;
    worker.shutdown().await.expect("graceful shutdown");
    assert!(reading && done, "{:?}", log.lock().unwrap());
    assert_eq!(log.lock().unwrap().ids, [3, 4]);
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Kinesis,
    tests: [
        lists_reads_and_ends_shards_after_a_split,
        a_worker_consumes_a_resharded_stream_in_order,
        aggregated_records_are_counted_once_across_a_restart_inside_an_aggregate,
        reads_of_a_busy_shard_stay_within_the_configured_pace,
        expired_iterators_and_throttling_keep_the_lease_and_lose_nothing,
        the_default_initial_position_is_latest,
        each_batch_carries_its_lag_and_the_gauge_follows_it,
        a_source_from_shared_sdk_settings_reads_the_stream,
        a_worker_without_an_initial_position_starts_kinesis_shards_at_latest,
    ],
}

//! `KinesisSource` against a Kinesis emulator (the moto server): shard listing with parents
//! after a split, reading from every position, shard end, and a worker consuming a resharded
//! stream to the end, children only after their parent.
//!
//! The endpoint comes from `CHECKPOINT_KINESIS_ENDPOINT`, else `CHECKPOINT_DYNAMO_ENDPOINT` (one
//! moto server serves both); when neither is set or the server cannot be reached, the test
//! reports `backend_unavailable` (a failure when `CHECKPOINT_REQUIRE_ALL=1`).
#![cfg(feature = "kinesis")]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use checkpoint_consumer::{
    InitializeInput, KinesisSource, ProcessorError, Record, RecordProcessor, ShardCheckpointer,
    ShardSource, ShutdownReason, Worker, WorkerConfig,
};
use checkpoint_core::conformance::{backend_unavailable, random_app};
use checkpoint_core::{LeaseKey, MemoryStore, Position, ShardId, StreamName, WorkerId};

const HOW: &str = "set CHECKPOINT_KINESIS_ENDPOINT (or CHECKPOINT_DYNAMO_ENDPOINT) to a moto server, \
                   e.g. `moto_server -p 5055` and http://127.0.0.1:5055";

fn endpoint() -> Option<String> {
    ["CHECKPOINT_KINESIS_ENDPOINT", "CHECKPOINT_DYNAMO_ENDPOINT"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
}

/// A fresh stream of `shards` shards on the emulator, or `None` (reported) when unreachable.
async fn fresh_stream(shards: i32) -> Option<KinesisSource> {
    let Some(endpoint) = endpoint() else {
        backend_unavailable("kinesis", HOW, &"no endpoint variable is set");
        return None;
    };
    let name = StreamName::new(random_app("kinesis").as_str()).expect("valid stream name");
    let source = KinesisSource::connect(name.clone(), Some(&endpoint))
        .await
        .expect("a valid endpoint");
    let created = source
        .client()
        .create_stream()
        .stream_name(name.as_str())
        .shard_count(shards)
        .send()
        .await;
    if let Err(e) = created {
        backend_unavailable(
            "kinesis",
            HOW,
            &aws_sdk_kinesis::error::DisplayErrorContext(e),
        );
        return None;
    }
    Some(source)
}

async fn put(source: &KinesisSource, ids: std::ops::Range<u64>) {
    for id in ids {
        source
            .client()
            .put_record()
            .stream_name(source.stream().as_str())
            .partition_key(format!("pk-{id}"))
            .data(Blob::new(id.to_le_bytes().to_vec()))
            .send()
            .await
            .expect("put_record");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_reads_and_ends_shards_after_a_split() {
    let Some(source) = fresh_stream(2).await else {
        return;
    };
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_consumes_a_resharded_stream_in_order() {
    let Some(source) = fresh_stream(2).await else {
        return;
    };
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

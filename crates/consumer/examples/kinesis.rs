//! A KPL-style producer and a KCL-style consumer on one Kinesis stream: the producer packs user
//! records into KPL aggregated records (one aggregate per predicted shard, put with the first
//! record's hash key as the KPL does); a worker de-aggregates and processes them, printing each
//! shard's lag (`MillisBehindLatest`) as it goes, and checks every user record arrived exactly
//! once.
//!
//! ```text
//! # the moto emulator scripts/test starts (or any Kinesis emulator)
//! CHECKPOINT_KINESIS_ENDPOINT=http://127.0.0.1:5055 \
//!     cargo run -p checkpoint-consumer --features kinesis --example kinesis
//! cargo run -p checkpoint-consumer --features kinesis --example kinesis -- --endpoint http://127.0.0.1:5055
//! # real Kinesis through the AWS default chains (profile, role, environment): creates the
//! # stream when missing (2 shards, on-demand billing applies) and leaves it in place
//! cargo run -p checkpoint-consumer --features kinesis --example kinesis -- --region eu-west-1 --stream kpl-demo
//! ```
//!
//! Options: `--records N` user records (default 2000), `--per-aggregate N` (default 50),
//! `--store URL` a checkpoint store (default `memory://`).

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use checkpoint_consumer::aws_sdk_kinesis::primitives::Blob;
use checkpoint_consumer::kpl::{UserRecord, aggregate};
use checkpoint_consumer::{
    InitialPosition, InitializeInput, KinesisConfig, KinesisSource, ProcessorError, ReadBatch,
    Record, RecordProcessor, ShardCheckpointer, ShardSource, ShutdownReason, Worker, WorkerConfig,
};
use checkpoint_core::{AppName, LeaseKey, StreamName, WorkerId};
use md5::{Digest, Md5};

struct Options {
    endpoint: Option<String>,
    region: Option<String>,
    stream: Option<String>,
    records: u64,
    per_aggregate: usize,
    store: String,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        endpoint: std::env::var("CHECKPOINT_KINESIS_ENDPOINT")
            .ok()
            .filter(|s| !s.is_empty()),
        region: None,
        stream: None,
        records: 2000,
        per_aggregate: 50,
        store: "memory://".to_owned(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--endpoint" => o.endpoint = Some(value()?),
            "--region" => o.region = Some(value()?),
            "--stream" => o.stream = Some(value()?),
            "--store" => o.store = value()?,
            "--records" => o.records = value()?.parse().map_err(|e| format!("--records: {e}"))?,
            "--per-aggregate" => {
                o.per_aggregate = value()?
                    .parse()
                    .map_err(|e| format!("--per-aggregate: {e}"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.endpoint.is_none() && o.region.is_none() {
        return Err("give --endpoint URL (an emulator) or --region NAME (real Kinesis)".into());
    }
    if o.per_aggregate == 0 {
        return Err("--per-aggregate must be at least 1".into());
    }
    Ok(o)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let options = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("kinesis example failed: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run(o: Options) -> Result<bool, BoxError> {
    let suffix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let stream = StreamName::new(o.stream.clone().unwrap_or(format!("kpl-demo-{suffix}")))?;
    let source = match (&o.endpoint, &o.region) {
        (Some(endpoint), _) => KinesisSource::connect(stream.clone(), Some(endpoint)).await?,
        (None, region) => {
            let mut loader = checkpoint_consumer::aws_config::defaults(
                checkpoint_consumer::aws_config::BehaviorVersion::latest(),
            );
            if let Some(region) = region {
                loader =
                    loader.region(checkpoint_consumer::aws_config::Region::new(region.clone()));
            }
            KinesisSource::from_sdk_config(&loader.load().await, stream.clone())
        }
    };
    // A fresh stream is read from its start; the KCL's (and this crate's) default is LATEST.
    let source = source.with_config(
        KinesisConfig::builder()
            .with_initial_position(InitialPosition::TrimHorizon)
            .build()?,
    );
    ensure_stream(&source).await?;
    let produced = produce(&source, o.records, o.per_aggregate).await?;
    println!(
        "produced {} user records in {produced} aggregated records",
        o.records
    );

    let seen = Arc::new(Mutex::new(Seen::default()));
    let store =
        checkpoint_consumer::connect(&o.store, AppName::new(format!("kpl-demo-{suffix}"))?).await?;
    let factory = {
        let seen = Arc::clone(&seen);
        move |key: &LeaseKey| Printer {
            seen: Arc::clone(&seen),
            shard: key.shard.to_string(),
        }
    };
    let config = WorkerConfig::builder().with_batch_size(10_000).build()?;
    let worker = Worker::new(
        WorkerId::new("kpl-demo-worker")?,
        store,
        Arc::new(source.clone()),
        factory,
        config,
    )
    .spawn();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let lags: Vec<String> = seen
            .lag
            .iter()
            .map(|(shard, lag)| format!("{shard}: {lag:?} ms behind"))
            .collect();
        println!(
            "{} of {} user records; {}",
            seen.count.len(),
            o.records,
            lags.join(", ")
        );
        if seen.count.len() as u64 >= o.records || Instant::now() >= deadline {
            break;
        }
    }
    worker.shutdown().await?;
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let missing = (0..o.records)
        .filter(|id| !seen.count.contains_key(id))
        .count();
    let twice = seen.count.values().filter(|n| **n > 1).count();
    println!("missing {missing}, delivered twice {twice}");
    Ok(missing == 0 && twice == 0)
}

/// Creates the stream with 2 shards unless it exists, and waits until it is active.
async fn ensure_stream(source: &KinesisSource) -> Result<(), BoxError> {
    let client = source.client();
    let name = source.stream().as_str();
    if client
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .is_err()
    {
        client
            .create_stream()
            .stream_name(name)
            .shard_count(2)
            .send()
            .await?;
    }
    for _ in 0..120 {
        let summary = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await?;
        let status = summary
            .stream_description_summary()
            .map(|s| s.stream_status().as_str().to_owned());
        if status.as_deref() == Some("ACTIVE") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err("the stream did not become active within 2 minutes".into())
}

/// The 128-bit hash key Kinesis derives from a partition key: MD5, big-endian.
fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// Puts `records` user records (payload: the id, 8 bytes little-endian) as aggregates of at
/// most `per_aggregate`, grouped by the open shard each partition key hashes to; returns the
/// number of aggregates put.
async fn produce(
    source: &KinesisSource,
    records: u64,
    per_aggregate: usize,
) -> Result<usize, BoxError> {
    let ranges: Vec<(u128, u128)> = source
        .client()
        .list_shards()
        .stream_name(source.stream().as_str())
        .send()
        .await?
        .shards()
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_none()
        })
        .filter_map(|s| s.hash_key_range())
        .map(|r| Ok((r.starting_hash_key().parse()?, r.ending_hash_key().parse()?)))
        .collect::<Result<_, std::num::ParseIntError>>()?;
    let mut pending: HashMap<usize, Vec<UserRecord>> = HashMap::new();
    let mut put = 0;
    for id in 0..records {
        let partition_key = format!("user-{}", id % 97);
        let hash = hash_key(&partition_key);
        let shard = ranges
            .iter()
            .position(|(s, e)| *s <= hash && hash <= *e)
            .unwrap_or(0);
        let group = pending.entry(shard).or_default();
        group.push(UserRecord {
            partition_key,
            explicit_hash_key: None,
            data: id.to_le_bytes().to_vec(),
        });
        if group.len() == per_aggregate {
            let group = std::mem::take(group);
            put_aggregate(source, &group).await?;
            put += 1;
        }
    }
    for group in pending.into_values().filter(|g| !g.is_empty()) {
        put_aggregate(source, &group).await?;
        put += 1;
    }
    Ok(put)
}

/// One `PutRecord` of the aggregate, with the first user record's hash key as its explicit
/// hash key, so it lands on that record's shard.
async fn put_aggregate(source: &KinesisSource, group: &[UserRecord]) -> Result<(), BoxError> {
    let first = &group[0].partition_key;
    source
        .client()
        .put_record()
        .stream_name(source.stream().as_str())
        .partition_key(first)
        .explicit_hash_key(hash_key(first).to_string())
        .data(Blob::new(aggregate(group)))
        .send()
        .await?;
    Ok(())
}

#[derive(Debug, Default)]
struct Seen {
    count: BTreeMap<u64, u32>,
    lag: BTreeMap<String, Option<u64>>,
}

struct Printer {
    seen: Arc<Mutex<Seen>>,
    shard: String,
}

#[async_trait]
impl RecordProcessor for Printer {
    async fn initialize(&mut self, input: &InitializeInput) -> Result<(), ProcessorError> {
        println!("{}: starting at {}", self.shard, input.start);
        Ok(())
    }

    async fn process_records(
        &mut self,
        records: &[Record],
        checkpointer: &ShardCheckpointer,
    ) -> Result<(), ProcessorError> {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            for record in records {
                let id = u64::from_le_bytes(record.data.as_slice().try_into()?);
                *seen.count.entry(id).or_insert(0) += 1;
            }
        }
        if let Some(last) = records.last() {
            checkpointer.checkpoint_record(last).await?;
        }
        Ok(())
    }

    async fn process_batch(
        &mut self,
        batch: &ReadBatch,
        checkpointer: &ShardCheckpointer,
    ) -> Result<(), ProcessorError> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lag
            .insert(self.shard.clone(), batch.millis_behind_latest);
        self.process_records(&batch.records, checkpointer).await
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

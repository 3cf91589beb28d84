//! Consumer throughput: 1 worker, 4 workers and the raw loop, in alternating rounds.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use checkpoint_consumer::{MemoryStream, ShardSource, Worker, WorkerConfig, WorkerHandle};
use checkpoint_core::{LeaseKey, Position, Store, StreamName, WorkerId};

use super::{BATCH, Checkpointing, Progress, SHARDS, wait_for};
use crate::measure::{BoxError, Stats, median_throughput};
use crate::{Backend, Held, Settings};

/// A stream of [`SHARDS`] shards holding `records` records (spread by partition key).
fn filled_stream(name: &str, records: usize) -> Result<MemoryStream, BoxError> {
    let stream = MemoryStream::new(StreamName::new(name)?, SHARDS)?;
    for i in 0..records {
        stream.put(&format!("key-{i}"), vec![0; 16])?;
    }
    Ok(stream)
}

fn throughput_config(max_leases: usize) -> Result<WorkerConfig, BoxError> {
    Ok(WorkerConfig::builder()
        .with_batch_size(BATCH)
        .with_max_leases(max_leases)
        .with_max_leases_per_tick(SHARDS)
        .with_poll_interval(Duration::from_millis(50))
        .build()?)
}

/// `records` records through `workers` workers sharing the store, timed from the first batch
/// handed to a processor to the last record processed.
async fn library_throughput(
    store: &Arc<dyn Store>,
    workers: usize,
    records: usize,
    run: &str,
) -> Result<Stats, BoxError> {
    let stream = Arc::new(filled_stream(run, records)?);
    let progress = Arc::new(Progress::default());
    let max = SHARDS.div_ceil(workers);
    let handles: Vec<WorkerHandle> = (0..workers)
        .map(|w| {
            let progress = progress.clone();
            Ok::<_, BoxError>(
                Worker::new(
                    WorkerId::new(format!("{run}-w{w}"))?,
                    store.clone(),
                    stream.clone(),
                    move |_: &LeaseKey| Checkpointing(progress.clone()),
                    throughput_config(max)?,
                )
                .spawn(),
            )
        })
        .collect::<Result<_, _>>()?;
    let limit = Duration::from_secs(600);
    let outcome = wait_for(limit, || {
        progress.records.load(Ordering::SeqCst) >= records as u64
    })
    .await;
    for h in handles {
        h.shutdown_with_timeout(Duration::from_secs(10)).await?;
    }
    outcome.map_err(|e| format!("{workers} worker(s) processed too little: {e}"))?;
    Ok(Stats {
        ops: records as u64,
        elapsed: progress.elapsed(),
        latencies: Vec::new(),
    })
}

/// `records` records through the raw loop: one task per shard reading batches of [`BATCH`]
/// and writing one raw checkpoint per batch on a lease `store` granted it.
async fn raw_throughput(
    store: &Arc<dyn Store>,
    raw: &Arc<dyn crate::Raw>,
    records: usize,
    run: &str,
) -> Result<Stats, BoxError> {
    let stream = Arc::new(filled_stream(run, records)?);
    let worker = WorkerId::new(format!("{run}-raw"))?;
    let mut held = Vec::new();
    for shard in stream.list_shards().await? {
        let key = LeaseKey::new(stream.stream().clone(), shard.id.clone());
        store.create_lease_if_absent(&key, &[], None).await?;
        let lease = store.get_lease(&key, &worker, crate::duration()).await?;
        held.push(Held {
            key,
            worker: worker.clone(),
            token: lease.token,
        });
    }
    let start = Instant::now();
    let tasks = held.into_iter().enumerate().map(|(t, h)| {
        let (stream, raw) = (stream.clone(), raw.clone());
        tokio::spawn(async move {
            let mut cursor = stream.cursor(&h.key.shard, &Position::TrimHorizon).await?;
            let mut seq = 1;
            let mut done = 0;
            loop {
                let batch = stream.read(&h.key.shard, &cursor, BATCH).await?;
                if batch.records.is_empty() {
                    break;
                }
                raw.checkpoint(t, &h, seq).await?;
                seq += 1;
                done += batch.records.len();
                match batch.next {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
            Ok::<usize, BoxError>(done)
        })
    });
    let mut total = 0;
    for task in tasks.collect::<Vec<_>>() {
        total += task.await??;
    }
    let elapsed = start.elapsed();
    if total != records {
        return Err(format!("the raw loop read {total} of {records} records").into());
    }
    Ok(Stats {
        ops: records as u64,
        elapsed,
        latencies: Vec::new(),
    })
}

/// Each measure's rounds.
#[derive(Default)]
struct Rounds {
    one: Vec<Stats>,
    four: Vec<Stats>,
    raw: Vec<Stats>,
}

/// One round of 1 worker, 4 workers and the raw loop, each on a stream of its own; after each
/// run every lease of the app is deleted (and the workers left the membership at shutdown),
/// so every run starts from an empty app.
async fn round(b: &Backend, records: usize, run: &str, into: &mut Rounds) -> Result<(), BoxError> {
    into.one
        .push(library_throughput(&b.store, 1, records, &format!("{run}-one")).await?);
    crate::delete_all(b.store.clone()).await;
    into.four
        .push(library_throughput(&b.store, 4, records, &format!("{run}-four")).await?);
    crate::delete_all(b.store.clone()).await;
    if let Some(raw) = &b.raw {
        into.raw
            .push(raw_throughput(&b.store, raw, records, &format!("{run}-raw")).await?);
        crate::delete_all(b.store.clone()).await;
    }
    Ok(())
}

/// Measures and prints the throughput table.
pub(crate) async fn table(backends: &[Backend], settings: &Settings) -> Result<(), BoxError> {
    let records = if settings.quick { 4_000 } else { 800_000 };
    let rounds = settings.rounds;
    println!(
        "\nConsumer throughput: {records} records in 8 shards of a MemoryStream, batches of {BATCH}, one checkpoint per batch; 4 workers hold at most 2 leases each; the raw loop is 8 tasks reading the same stream and writing one raw checkpoint returning the record per batch. {rounds} round(s) of 1 worker, 4 workers, raw loop, alternating{}, each run on an empty app; the median round of each, and the ratios of the medians.\n",
        if settings.quick {
            ""
        } else {
            ", after a warm-up round of a tenth of the records"
        }
    );
    println!(
        "| backend | 1 worker, median records/s | 4 workers, median records/s | raw loop, median records/s | 1 worker / raw | 4 workers / raw |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (i, b) in backends.iter().filter(|b| b.consumer).enumerate() {
        // Moto serves one request at a time, MariaDB flushes its log per commit: a tenth.
        let records = if b.name.contains("moto") || b.name == "mysql" {
            records / 10
        } else {
            records
        };
        if !settings.quick {
            round(
                b,
                records / 10,
                &format!("c{i}-warm"),
                &mut Rounds::default(),
            )
            .await?;
        }
        let mut measured = Rounds::default();
        for r in 0..rounds {
            round(b, records, &format!("c{i}-r{r}"), &mut measured).await?;
        }
        let one = median_throughput(&measured.one);
        let four = median_throughput(&measured.four);
        let raw = (!measured.raw.is_empty()).then(|| median_throughput(&measured.raw));
        let show = |x: Option<f64>| x.map_or("—".to_owned(), |x| format!("{x:.0}"));
        let ratio = |x: f64| raw.map_or("—".to_owned(), |r| format!("{:.2}", x / r));
        println!(
            "| {} | {one:.0} | {four:.0} | {} | {} | {} |",
            b.name,
            show(raw),
            ratio(one),
            ratio(four)
        );
    }
    Ok(())
}

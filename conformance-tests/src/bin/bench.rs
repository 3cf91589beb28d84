//! The benchmark: what the library costs over each database's own round trip, and what batched
//! renewal saves over one request per lease.
//!
//! ```text
//! cargo run --release -p conformance-tests --bin bench -- [--backend sqlite|postgres|mysql|redis|dynamo|memory|all] [--op get_lease|renew|checkpoint|fetch|renew_many|all] [--consumer [--consumer-part throughput|idle|failover|all]] [--quick] [--seconds S]
//! ```
//!
//! For every reachable backend, in one run:
//!
//! - `get_lease`, `renew`, `checkpoint_sequence` and `fetch_checkpoint` through the library:
//!   throughput and p50/p99 latency from 1 task and from 8 concurrent tasks (each task on its
//!   own lease);
//! - the raw baseline of each: the equivalent single conditional write (or read) sent directly
//!   with the same client library and connection settings, returning the record as the library
//!   does, and the ratio library / raw; and the same write returning nothing (*bare*), and the
//!   ratio library / bare;
//! - `renew_many` of 1,000 and 10,000 leases held by one worker (wall time), against renewing
//!   the same leases with one raw conditional request each, one at a time and 20 at a time
//!   (the KCL's default renewal thread pool).
//!
//! - with `--consumer`, instead: the consumer runtime's throughput, idle cost and failover time
//!   (see `src/bench/consumer.rs`); `--consumer-part` runs one of the three (and implies
//!   `--consumer`).
//!
//! Library and raw rounds alternate, so a change of load on the machine hits both. Server URLs
//! come from `CHECKPOINT_POSTGRES_URL`, `CHECKPOINT_MYSQL_URL`, `CHECKPOINT_REDIS_URL` and `CHECKPOINT_DYNAMO_ENDPOINT`
//! (as for the tests); an unreachable backend is reported in one line and skipped. An error
//! from a reachable backend fails the run (exit status 1). `--quick` runs a few iterations of
//! everything, with small batches: a smoke test, not a measurement.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use checkpoint_core::{
    CheckpointerExt, FencingToken, LeaseDuration, LeaseKey, Position, Store, WorkerId,
};
use futures::stream::{self, StreamExt, TryStreamExt};

#[path = "../bench/consumer.rs"]
mod consumer;
#[cfg(feature = "dynamo")]
#[path = "../bench/dynamo.rs"]
mod dynamo;
#[path = "../bench/measure.rs"]
mod measure;
#[path = "../bench/memory.rs"]
mod memory;
#[cfg(feature = "mysql")]
#[path = "../bench/mysql.rs"]
mod mysql;
#[cfg(feature = "postgres")]
#[path = "../bench/postgres.rs"]
mod postgres;
#[cfg(feature = "redis")]
#[path = "../bench/redis.rs"]
mod redis;
#[cfg(feature = "sqlite")]
#[path = "../bench/sqlite.rs"]
mod sqlite;

use measure::{BoxError, Budget, Stats, measure_async};

/// Leases used by the single-operation measurements: one per task.
const TASKS: [usize; 2] = [1, 8];
/// Raw renewal loop concurrency matching the KCL's default `maxLeaseRenewalThreads`.
const KCL_RENEWAL_THREADS: usize = 20;

/// One lease the benchmark holds.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub(crate) key: LeaseKey,
    pub(crate) worker: WorkerId,
    pub(crate) token: FencingToken,
}

/// A single operation measured through the library and raw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `get_lease` of a lease the worker already holds (the grant path that only moves the
    /// deadline).
    GetLease,
    /// `renew` with the current token.
    Renew,
    /// `checkpoint_sequence` with an increasing sequence number.
    Checkpoint,
    /// `fetch_checkpoint`.
    Fetch,
}

impl Op {
    const ALL: [Op; 4] = [Op::GetLease, Op::Renew, Op::Checkpoint, Op::Fetch];

    fn name(self) -> &'static str {
        match self {
            Op::GetLease => "get_lease",
            Op::Renew => "renew",
            Op::Checkpoint => "checkpoint",
            Op::Fetch => "fetch",
        }
    }
}

/// Per-lease sequence counters shared by the library and raw checkpoints, so positions only
/// ever grow and every checkpoint passes the monotonicity rule.
#[derive(Debug)]
pub(crate) struct Seqs(Vec<AtomicU64>);

impl Seqs {
    fn new(n: usize) -> Self {
        Self((0..n).map(|_| AtomicU64::new(1)).collect())
    }

    /// The next sequence number for lease `i`.
    pub(crate) fn next(&self, i: usize) -> u64 {
        self.0[i].fetch_add(1, Ordering::Relaxed)
    }
}

/// What a raw single operation returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The record as it stands after the write (or the whole record, for a read), as the
    /// library returns it: `RETURNING` every column, every field of the hash, `ALL_NEW`, received
    /// by the client but not decoded.
    Record,
    /// Nothing: the bare conditional write (for a read, the checkpoint column or field alone).
    Bare,
}

/// The raw baseline of one backend: the operations done directly with the client library.
#[async_trait]
pub(crate) trait Raw: Send + Sync {
    /// Measures `op` replying `reply`, task `t` working on `leases[t]`, from `leases.len()`
    /// tasks.
    async fn measure(
        &self,
        op: Op,
        reply: Reply,
        leases: Arc<Vec<Held>>,
        seqs: Arc<Seqs>,
        budget: Budget,
    ) -> Result<Stats, BoxError>;

    /// Renews every lease with one conditional request each, `concurrency` at a time.
    async fn renew_each(&self, leases: Arc<Vec<Held>>, concurrency: usize) -> Result<(), BoxError>;

    /// Renews every lease in one minimal request (statement, script or transaction) that
    /// returns no records; `false` when the backend has no such request.
    async fn renew_batch(&self, leases: Arc<Vec<Held>>) -> Result<bool, BoxError>;

    /// One raw conditional checkpoint of `h` at sequence `seq`, returning the record, from task
    /// `t` (0 – 7: which of the baseline's connections a thread-based baseline uses).
    async fn checkpoint(&self, t: usize, h: &Held, seq: u64) -> Result<(), BoxError>;
}

/// A raw baseline that sends one request per operation from async tasks (PostgreSQL, Redis,
/// DynamoDB); [`measure_each`] and [`renew_each_with`] implement [`Raw`]'s loops for it.
pub(crate) trait OneRequest: Clone + Send + Sync + 'static {
    /// One raw operation on lease `h` (`seq`: the sequence number of a checkpoint).
    fn op(
        &self,
        op: Op,
        reply: Reply,
        h: &Held,
        seq: u64,
    ) -> impl std::future::Future<Output = Result<(), BoxError>> + Send;
}

/// [`Raw::measure`] for a [`OneRequest`] baseline: task `t` works on `leases[t]`.
pub(crate) async fn measure_each<R: OneRequest>(
    raw: &R,
    op: Op,
    reply: Reply,
    leases: Arc<Vec<Held>>,
    seqs: Arc<Seqs>,
    budget: Budget,
) -> Result<Stats, BoxError> {
    let raw = raw.clone();
    measure_async(leases.len(), budget, move |t, _| {
        let (raw, leases, seqs) = (raw.clone(), leases.clone(), seqs.clone());
        async move {
            let seq = if op == Op::Checkpoint {
                seqs.next(t)
            } else {
                0
            };
            raw.op(op, reply, &leases[t], seq).await
        }
    })
    .await
}

/// [`Raw::renew_each`] for a [`OneRequest`] baseline.
pub(crate) async fn renew_each_with<R: OneRequest>(
    raw: &R,
    leases: Arc<Vec<Held>>,
    concurrency: usize,
) -> Result<(), BoxError> {
    let raw = raw.clone();
    each_concurrently(leases.len(), concurrency, move |i| {
        let (raw, leases) = (raw.clone(), leases.clone());
        async move { raw.op(Op::Renew, Reply::Bare, &leases[i], 0).await }
    })
    .await
}

/// A backend ready to measure.
pub(crate) struct Backend {
    /// The name in the table.
    pub(crate) name: String,
    /// The library's store.
    pub(crate) store: Arc<dyn Store>,
    /// The raw baseline, when there is one.
    pub(crate) raw: Option<Arc<dyn Raw>>,
    /// Which single operations to measure.
    pub(crate) ops: Vec<Op>,
    /// Batch sizes for `renew_many` (empty: not measured).
    pub(crate) renew_sizes: Vec<usize>,
    /// Requests the library has sent so far, where the backend counts them.
    pub(crate) requests: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
    /// The URL `checkpoint_consumer::connect` opens the same database with (for the consumer
    /// benchmark's child processes); `None` when another process cannot reach it.
    pub(crate) url: Option<String>,
    /// Whether the consumer benchmark (`--consumer`) runs on this backend.
    pub(crate) consumer: bool,
    /// Removes what the run wrote (files, tables); run at the end.
    pub(crate) cleanup: Option<Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>>,
}

/// Command-line settings.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) backends: Vec<String>,
    /// The single operations to measure (`--op`); `renew_many` is measured only with `all`.
    pub(crate) ops: Vec<Op>,
    pub(crate) renew_many: bool,
    /// `--consumer`: the consumer benchmark instead of the single operations.
    pub(crate) consumer: bool,
    /// `--consumer-part`: which parts of the consumer benchmark run (default all).
    pub(crate) consumer_parts: Vec<consumer::Part>,
    /// `--consumer-child …`: this process is a worker the consumer benchmark started.
    pub(crate) child: Option<consumer::ChildArgs>,
    pub(crate) quick: bool,
    pub(crate) budget: Budget,
    pub(crate) rounds: usize,
}

impl Settings {
    fn parse() -> Result<Self, String> {
        let mut backend = "all".to_owned();
        let mut op = "all".to_owned();
        let mut quick = false;
        let mut consumer = false;
        let mut consumer_parts = consumer::Part::parse("all")?;
        let mut child = None;
        let mut seconds: Option<f64> = None;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--backend" => backend = args.next().ok_or("--backend needs a value")?,
                "--op" => op = args.next().ok_or("--op needs a value")?,
                "--quick" => quick = true,
                "--consumer" => consumer = true,
                "--consumer-part" => {
                    let value = args.next().ok_or("--consumer-part needs a value")?;
                    consumer_parts = consumer::Part::parse(&value)?;
                    consumer = true;
                }
                "--consumer-child" => child = Some(consumer::ChildArgs::parse(&mut args)?),
                "--seconds" => {
                    let value = args.next().ok_or("--seconds needs a value")?;
                    seconds = Some(
                        value
                            .parse()
                            .map_err(|_| format!("--seconds: {value:?} is not a number"))?,
                    );
                }
                "-h" | "--help" => {
                    return Err(
                        "usage: bench [--backend sqlite|postgres|mysql|redis|dynamo|memory|all] \
                                [--op get_lease|renew|checkpoint|fetch|renew_many|all] \
                                [--consumer [--consumer-part throughput|idle|failover|all]] \
                                [--quick] [--seconds S]"
                            .to_owned(),
                    );
                }
                other => return Err(format!("unknown argument {other:?} (try --help)")),
            }
        }
        let known = ["memory", "sqlite", "postgres", "mysql", "redis", "dynamo"];
        let backends = match backend.as_str() {
            "all" => known.iter().map(|s| (*s).to_owned()).collect(),
            one if known.contains(&one) => vec![one.to_owned()],
            other => return Err(format!("unknown backend {other:?}")),
        };
        let (ops, renew_many) = match op.as_str() {
            "all" => (Op::ALL.to_vec(), true),
            "renew_many" => (Vec::new(), true),
            one => match Op::ALL.iter().find(|o| o.name() == one) {
                Some(o) => (vec![*o], false),
                None => return Err(format!("unknown operation {one:?}")),
            },
        };
        let budget = if quick {
            Budget {
                time: Duration::from_secs(2),
                max_ops: 20,
            }
        } else {
            Budget {
                time: Duration::from_secs_f64(seconds.unwrap_or(1.0)),
                max_ops: u64::MAX,
            }
        };
        Ok(Self {
            backends,
            ops,
            renew_many,
            consumer,
            consumer_parts,
            child,
            quick,
            budget,
            rounds: if quick { 1 } else { 3 },
        })
    }

    /// `renew_many` batch sizes.
    pub(crate) fn renew_sizes(&self) -> Vec<usize> {
        if !self.renew_many {
            Vec::new()
        } else if self.quick {
            vec![20, 100]
        } else {
            vec![1_000, 10_000]
        }
    }
}

/// The lease duration of every grant and renewal.
pub(crate) fn duration() -> LeaseDuration {
    LeaseDuration::new(Duration::from_secs(600)).unwrap_or_else(|_| unreachable!("600 s is valid"))
}

/// Takes `count` leases `<stream>/shard-<i>` for `worker`, 16 requests at a time.
async fn take_leases(
    store: &Arc<dyn Store>,
    stream: &str,
    worker: &WorkerId,
    count: usize,
) -> Result<Vec<Held>, BoxError> {
    let keys = (0..count)
        .map(|i| LeaseKey::parse(stream, &format!("shard-{i:06}")))
        .collect::<checkpoint_core::Result<Vec<_>>>()?;
    let mut held = stream::iter(keys)
        .map(|key| {
            let store = store.clone();
            let worker = worker.clone();
            async move {
                let lease = store.get_lease(&key, &worker, duration()).await?;
                Ok::<_, BoxError>(Held {
                    key,
                    worker,
                    token: lease.token,
                })
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    held.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(held)
}

/// Deletes every lease of the store's app (each run uses a random app, so nothing else is
/// touched).
pub(crate) async fn delete_all(store: Arc<dyn Store>) {
    let Ok(leases) = store.list_leases(None).await else {
        return;
    };
    let _ = stream::iter(leases)
        .map(|l| {
            let store = store.clone();
            async move { store.remove_lease_info(&l.key).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await;
}

/// Runs `f(0..n)`, `concurrency` at a time; the first error stops it.
pub(crate) async fn each_concurrently<F, Fut>(
    n: usize,
    concurrency: usize,
    f: F,
) -> Result<(), BoxError>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send + 'static,
{
    stream::iter(0..n)
        .map(f)
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Measures `op` through the library, task `t` on `leases[t]`.
async fn measure_library(
    store: Arc<dyn Store>,
    op: Op,
    leases: Arc<Vec<Held>>,
    seqs: Arc<Seqs>,
    budget: Budget,
) -> Result<Stats, BoxError> {
    measure_async(leases.len(), budget, move |t, _| {
        let (store, leases, seqs) = (store.clone(), leases.clone(), seqs.clone());
        async move {
            let h = &leases[t];
            match op {
                Op::GetLease => {
                    store.get_lease(&h.key, &h.worker, duration()).await?;
                }
                Op::Renew => {
                    store.renew(&h.key, &h.worker, h.token, duration()).await?;
                }
                Op::Checkpoint => {
                    let seq = seqs.next(t).to_string();
                    store
                        .checkpoint_sequence(&h.key, &h.worker, h.token, &Position::sequence(&seq)?)
                        .await?;
                }
                Op::Fetch => {
                    if store.fetch_position(&h.key).await?.is_none() {
                        return Err(format!("no checkpoint stored for {}", h.key).into());
                    }
                }
            }
            Ok(())
        }
    })
    .await
}

fn micros(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn rate(x: f64) -> String {
    format!("{x:.0}")
}

fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.0}")
    }
}

/// Measures one backend and prints its rows; returns notes to print after the table.
async fn run_backend(backend: &Backend, settings: &Settings) -> Result<Vec<String>, BoxError> {
    let mut notes = Vec::new();
    let worker = WorkerId::new("bench-worker")?;
    let leases = Arc::new(take_leases(&backend.store, "ops", &worker, 8).await?);
    let seqs = Arc::new(Seqs::new(leases.len()));
    // Every fetch finds a checkpoint.
    for (i, h) in leases.iter().enumerate() {
        let seq = seqs.next(i).to_string();
        backend
            .store
            .checkpoint_sequence(&h.key, &h.worker, h.token, &Position::sequence(&seq)?)
            .await?;
    }
    for &op in backend.ops.iter().filter(|o| settings.ops.contains(o)) {
        for tasks in TASKS {
            let subset = Arc::new(leases[..tasks].to_vec());
            let mut lib = Stats::default();
            let mut raw = Stats::default();
            let mut bare = Stats::default();
            // Warm-up, then alternating rounds.
            measure_library(
                backend.store.clone(),
                op,
                subset.clone(),
                seqs.clone(),
                settings.budget.warmup(),
            )
            .await?;
            if let Some(r) = &backend.raw {
                for reply in [Reply::Record, Reply::Bare] {
                    r.measure(
                        op,
                        reply,
                        subset.clone(),
                        seqs.clone(),
                        settings.budget.warmup(),
                    )
                    .await?;
                }
            }
            let mut sent = 0;
            for _ in 0..settings.rounds {
                let before = backend.requests.as_ref().map_or(0, |r| r());
                lib.merge(
                    measure_library(
                        backend.store.clone(),
                        op,
                        subset.clone(),
                        seqs.clone(),
                        settings.budget,
                    )
                    .await?,
                );
                sent += backend.requests.as_ref().map_or(0, |r| r()) - before;
                if let Some(r) = &backend.raw {
                    raw.merge(
                        r.measure(
                            op,
                            Reply::Record,
                            subset.clone(),
                            seqs.clone(),
                            settings.budget,
                        )
                        .await?,
                    );
                    bare.merge(
                        r.measure(
                            op,
                            Reply::Bare,
                            subset.clone(),
                            seqs.clone(),
                            settings.budget,
                        )
                        .await?,
                    );
                }
            }
            if backend.requests.is_some() && lib.ops > 0 {
                notes.push(format!(
                    "{}: {} from {tasks} task(s) sent {:.2} requests per operation",
                    backend.name,
                    op.name(),
                    sent as f64 / lib.ops as f64
                ));
            }
            let (raw_rate, raw_p50, raw_p99, ratio, bare_rate, bare_ratio) =
                if backend.raw.is_some() {
                    (
                        rate(raw.throughput()),
                        micros(raw.percentile(50.0)),
                        micros(raw.percentile(99.0)),
                        format!("{:.2}", lib.throughput() / raw.throughput()),
                        rate(bare.throughput()),
                        format!("{:.2}", lib.throughput() / bare.throughput()),
                    )
                } else {
                    let none = || "—".to_owned();
                    (none(), none(), none(), none(), none(), none())
                };
            println!(
                "| {} | {} | {tasks} | {} | {} | {} | {raw_rate} | {raw_p50} | {raw_p99} | {ratio} | {bare_rate} | {bare_ratio} |",
                backend.name,
                op.name(),
                rate(lib.throughput()),
                micros(lib.percentile(50.0)),
                micros(lib.percentile(99.0)),
            );
        }
    }
    Ok(notes)
}

/// Measures `renew_many` of one backend and prints its rows.
async fn run_renew_many(backend: &Backend, settings: &Settings) -> Result<(), BoxError> {
    let worker = WorkerId::new("bench-batch-worker")?;
    for &n in &backend.renew_sizes {
        let leases = take_leases(&backend.store, &format!("batch-{n}"), &worker, n).await?;
        let batch: Vec<(LeaseKey, FencingToken)> =
            leases.iter().map(|h| (h.key.clone(), h.token)).collect();
        let reps = if settings.quick { 1 } else { 5 };
        let mut times = Vec::new();
        // One untimed call first (statement caches, script loading).
        backend
            .store
            .renew_many(&worker, &batch, duration())
            .await?;
        for _ in 0..reps {
            let t = Instant::now();
            let outcome = backend
                .store
                .renew_many(&worker, &batch, duration())
                .await?;
            times.push(t.elapsed());
            if outcome.renewed.len() != n || !outcome.lost.is_empty() {
                return Err(format!(
                    "renew_many of {n} renewed {} and lost {}",
                    outcome.renewed.len(),
                    outcome.lost.len()
                )
                .into());
            }
        }
        times.sort();
        let lib = times[times.len() / 2];
        let (batch, seq, conc) = match &backend.raw {
            Some(raw) => {
                let leases = Arc::new(leases);
                let mut batch = Vec::new();
                for _ in 0..reps {
                    let t = Instant::now();
                    if !raw.renew_batch(leases.clone()).await? {
                        break;
                    }
                    batch.push(t.elapsed());
                }
                batch.sort();
                let t = Instant::now();
                raw.renew_each(leases.clone(), 1).await?;
                let seq = t.elapsed();
                let t = Instant::now();
                raw.renew_each(leases, KCL_RENEWAL_THREADS).await?;
                (
                    batch.get(batch.len() / 2).copied(),
                    Some(seq),
                    Some(t.elapsed()),
                )
            }
            None => (None, None, None),
        };
        let show = |d: Option<Duration>| d.map_or("—".to_owned(), millis);
        let ratio = |d: Option<Duration>| {
            d.map_or("—".to_owned(), |d| {
                format!("{:.2}", lib.as_secs_f64() / d.as_secs_f64())
            })
        };
        println!(
            "| {} | {n} | {} | {} | {} | {} | {} | {} | {} |",
            backend.name,
            millis(lib),
            show(batch),
            ratio(batch),
            show(seq),
            ratio(seq),
            show(conc),
            ratio(conc),
        );
    }
    Ok(())
}

async fn open_backends(name: &str, settings: &Settings) -> Result<Vec<Backend>, String> {
    match name {
        "memory" => memory::open(settings).await,
        #[cfg(feature = "sqlite")]
        "sqlite" => sqlite::open(settings).await,
        #[cfg(feature = "postgres")]
        "postgres" => postgres::open(settings).await,
        #[cfg(feature = "mysql")]
        "mysql" => mysql::open(settings).await,
        #[cfg(feature = "redis")]
        "redis" => redis::open(settings).await,
        #[cfg(feature = "dynamo")]
        "dynamo" => dynamo::open(settings).await,
        other => Err(format!(
            "{other}: not built into this binary (enable the conformance-tests feature {other:?})"
        )),
    }
}

async fn run(settings: Settings) -> Result<(), BoxError> {
    let mut backends = Vec::new();
    for name in &settings.backends {
        match open_backends(name, &settings).await {
            Ok(mut opened) => backends.append(&mut opened),
            Err(why) => println!("skipped {name}: {why}"),
        }
    }
    if settings.consumer {
        let outcome = consumer::run(&backends, &settings).await;
        for backend in backends {
            if let Some(cleanup) = backend.cleanup {
                cleanup().await;
            }
        }
        return outcome;
    }
    let budget = settings.budget;
    let cap = if budget.max_ops == u64::MAX {
        String::new()
    } else {
        format!(", at most {} operations per task", budget.max_ops)
    };
    println!(
        "\nSingle operations: {} round(s) of {:?}{cap} for the library, the raw baseline returning the record and the bare raw write, alternating, after a warm-up.\n",
        settings.rounds, budget.time,
    );
    println!(
        "| backend | operation | tasks | library ops/s | p50 µs | p99 µs | raw ops/s | raw p50 µs | raw p99 µs | library / raw | bare ops/s | library / bare |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut notes = Vec::new();
    for backend in &backends {
        notes.extend(
            run_backend(backend, &settings)
                .await
                .map_err(|e| format!("{}: {e}", backend.name))?,
        );
    }
    if !notes.is_empty() {
        println!();
        for note in notes {
            println!("- {note}");
        }
    }
    println!(
        "\nrenew_many: median of {} call(s) (wall time), against the same renewal as one minimal raw request (median) and as one raw conditional request per lease.\n",
        if settings.quick { 1 } else { 5 }
    );
    println!(
        "| backend | leases | renew_many ms | raw batch ms | library / batch | raw loop, 1 at a time, ms | library / loop | raw loop, {KCL_RENEWAL_THREADS} at a time, ms | library / loop |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for backend in &backends {
        run_renew_many(backend, &settings)
            .await
            .map_err(|e| format!("{}: {e}", backend.name))?;
    }
    for backend in backends {
        if let Some(cleanup) = backend.cleanup {
            cleanup().await;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let settings = match Settings::parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match settings.child.clone() {
        Some(args) => runtime.block_on(consumer::child(args)),
        None => runtime.block_on(run(settings)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

//! The consumer benchmark (`bench --consumer`): the worker runtime's whole path on each backend.
//!
//! - **Throughput**: records per second through one worker, and through 4 workers (at most 2
//!   leases each), consuming 8 shards of a pre-filled [`MemoryStream`] in batches of 100, the
//!   processor doing nothing but checkpointing the last record of every batch; against a raw
//!   loop of 8 tasks (one per shard) that reads the same stream in batches of 100 and writes one
//!   raw conditional checkpoint returning the record per batch with the backend's raw client
//!   ([`crate::Raw::checkpoint`]). Timed from the first batch handed to a processor to the last
//!   record processed, so lease taking at start-up is not counted.
//! - **Idle cost**: one worker in a child process (this program with `--consumer-child`)
//!   holding 1,000 and 10,000 leases of an empty stream with the default timing (lease 10 s,
//!   renew interval 3 s; 10,000 is skipped on moto and MariaDB, where taking them one grant
//!   each takes many minutes): its peak resident memory (`VmHWM` of `/proc/<pid>/status`) and the
//!   store requests it sends per second once it holds them all, counted by a wrapper store.
//! - **Failover**: a child process holding 8 leases (lease 2 s, renew interval 0.5 s) and a
//!   worker in this process, balanced to 4 leases each; the child is killed with `SIGKILL`,
//!   and the time until this worker holds all 8 is measured, 10 times: median and worst against
//!   the bound lease duration + renew interval (+ the store's clock-skew allowance; on DynamoDB
//!   + one more renew interval, the lease-observation period).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use checkpoint_consumer::{
    InitializeInput, MemoryStream, ProcessorError, Record, RecordProcessor, ShardCheckpointer,
    ShardSource, ShutdownReason, Worker, WorkerConfig, WorkerHandle,
};
use checkpoint_core::{
    AppName, Capabilities, Checkpointer, FencingToken, HeartbeatTtl, Lease, LeaseDuration,
    LeaseKey, LeaseManager, Listing, Membership, Position, RenewOutcome, Result as CoreResult,
    ShardId, Store, StreamName, WorkerId,
};

use crate::measure::BoxError;
use crate::{Backend, Held, Settings};

/// Records per checkpoint, and per read.
const BATCH: usize = 100;
/// Shards of the throughput stream.
const SHARDS: usize = 8;

/// What `--consumer-child` is told: a worker on `url` for `app`, consuming an empty
/// `MemoryStream` named `stream` of `shards` shards.
#[derive(Clone, Debug)]
pub(crate) struct ChildArgs {
    url: String,
    app: String,
    worker: String,
    stream: String,
    shards: usize,
    lease_ms: u64,
    renew_ms: u64,
}

impl ChildArgs {
    /// Parses the seven values after `--consumer-child`.
    pub(crate) fn parse(args: &mut impl Iterator<Item = String>) -> Result<Self, String> {
        let mut next = |what: &str| {
            args.next()
                .ok_or_else(|| format!("--consumer-child needs {what}"))
        };
        let (url, app, worker, stream) =
            (next("url")?, next("app")?, next("worker")?, next("stream")?);
        let number = |what: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("--consumer-child: {what} {v:?} is not a number"))
        };
        let shards = number("shards", next("shards")?)? as usize;
        let lease_ms = number("lease_ms", next("lease_ms")?)?;
        let renew_ms = number("renew_ms", next("renew_ms")?)?;
        Ok(Self {
            url,
            app,
            worker,
            stream,
            shards,
            lease_ms,
            renew_ms,
        })
    }

    fn to_args(&self) -> Vec<String> {
        vec![
            "--consumer-child".to_owned(),
            self.url.clone(),
            self.app.clone(),
            self.worker.clone(),
            self.stream.clone(),
            self.shards.to_string(),
            self.lease_ms.to_string(),
            self.renew_ms.to_string(),
        ]
    }
}

/// A store that counts the requests sent through it (every trait call is one).
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Store>,
    calls: Arc<AtomicU64>,
}

impl Counting {
    fn hit(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl LeaseManager for Counting {
    fn app(&self) -> &AppName {
        self.inner.app()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn init(&self) -> CoreResult<()> {
        self.hit();
        self.inner.init().await
    }
    async fn create_lease_if_absent(
        &self,
        key: &LeaseKey,
        parents: &[ShardId],
        initial: Option<&Position>,
    ) -> CoreResult<bool> {
        self.hit();
        self.inner
            .create_lease_if_absent(key, parents, initial)
            .await
    }
    async fn get_lease(&self, k: &LeaseKey, w: &WorkerId, d: LeaseDuration) -> CoreResult<Lease> {
        self.hit();
        self.inner.get_lease(k, w, d).await
    }
    async fn renew(
        &self,
        k: &LeaseKey,
        w: &WorkerId,
        t: FencingToken,
        d: LeaseDuration,
    ) -> CoreResult<Lease> {
        self.hit();
        self.inner.renew(k, w, t, d).await
    }
    async fn renew_many(
        &self,
        w: &WorkerId,
        leases: &[(LeaseKey, FencingToken)],
        d: LeaseDuration,
    ) -> CoreResult<RenewOutcome> {
        self.hit();
        self.inner.renew_many(w, leases, d).await
    }
    async fn remove_lease_owner(
        &self,
        k: &LeaseKey,
        w: &WorkerId,
        t: FencingToken,
    ) -> CoreResult<Lease> {
        self.hit();
        self.inner.remove_lease_owner(k, w, t).await
    }
    async fn evict_lease(&self, k: &LeaseKey) -> CoreResult<Lease> {
        self.hit();
        self.inner.evict_lease(k).await
    }
    async fn remove_lease_info(&self, k: &LeaseKey) -> CoreResult<()> {
        self.hit();
        self.inner.remove_lease_info(k).await
    }
    async fn list_leases(&self, s: Option<&StreamName>) -> CoreResult<Vec<Lease>> {
        self.hit();
        self.inner.list_leases(s).await
    }
    async fn list_leases_timed(&self, s: Option<&StreamName>) -> CoreResult<Listing> {
        self.hit();
        self.inner.list_leases_timed(s).await
    }
    async fn list_apps(&self) -> CoreResult<Vec<AppName>> {
        self.hit();
        self.inner.list_apps().await
    }
    async fn steal(
        &self,
        k: &LeaseKey,
        thief: &WorkerId,
        owner: &WorkerId,
        t: FencingToken,
        d: LeaseDuration,
    ) -> CoreResult<Lease> {
        self.hit();
        self.inner.steal(k, thief, owner, t, d).await
    }
    async fn claim(&self, k: &LeaseKey, claimant: &WorkerId) -> CoreResult<Lease> {
        self.hit();
        self.inner.claim(k, claimant).await
    }
    async fn import_lease(&self, record: &Lease) -> CoreResult<bool> {
        self.hit();
        self.inner.import_lease(record).await
    }
}

#[async_trait]
impl Checkpointer for Counting {
    async fn checkpoint_sequence(
        &self,
        k: &LeaseKey,
        w: &WorkerId,
        t: FencingToken,
        p: &Position,
    ) -> CoreResult<Lease> {
        self.hit();
        self.inner.checkpoint_sequence(k, w, t, p).await
    }
    async fn prepare_checkpoint(
        &self,
        k: &LeaseKey,
        w: &WorkerId,
        t: FencingToken,
        p: &Position,
    ) -> CoreResult<Lease> {
        self.hit();
        self.inner.prepare_checkpoint(k, w, t, p).await
    }
    async fn fetch_checkpoint(&self, k: &LeaseKey) -> CoreResult<Option<Lease>> {
        self.hit();
        self.inner.fetch_checkpoint(k).await
    }
    async fn reset_checkpoint(&self, k: &LeaseKey, p: Option<&Position>) -> CoreResult<Lease> {
        self.hit();
        self.inner.reset_checkpoint(k, p).await
    }
}

#[async_trait]
impl Membership for Counting {
    async fn register_worker(&self, w: &WorkerId, ttl: HeartbeatTtl) -> CoreResult<()> {
        self.hit();
        self.inner.register_worker(w, ttl).await
    }
    async fn heartbeat(&self, w: &WorkerId, ttl: HeartbeatTtl) -> CoreResult<()> {
        self.hit();
        self.inner.heartbeat(w, ttl).await
    }
    async fn live_workers(&self) -> CoreResult<Vec<WorkerId>> {
        self.hit();
        self.inner.live_workers().await
    }
    async fn deregister_worker(&self, w: &WorkerId) -> CoreResult<()> {
        self.hit();
        self.inner.deregister_worker(w).await
    }
    async fn prune_dead_workers(&self) -> CoreResult<usize> {
        self.hit();
        self.inner.prune_dead_workers().await
    }
}

/// Progress of a throughput run: records processed, and when the first batch arrived.
#[derive(Debug, Default)]
struct Progress {
    records: AtomicU64,
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

    fn elapsed(&self) -> Duration {
        let first = *self.first.lock().unwrap_or_else(|e| e.into_inner());
        let last = *self.last.lock().unwrap_or_else(|e| e.into_inner());
        match (first, last) {
            (Some(a), Some(b)) => b - a,
            _ => Duration::ZERO,
        }
    }
}

/// The benchmark's processor: checkpoints the last record of every batch, nothing else.
struct Checkpointing(Arc<Progress>);

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

/// Polls `done` every 5 ms until it holds or `limit` passes.
async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> Result<(), BoxError> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return Err(format!("not reached within {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Records per second through `workers` workers sharing the store.
async fn library_throughput(
    store: &Arc<dyn Store>,
    workers: usize,
    records: usize,
    run: &str,
) -> Result<f64, BoxError> {
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
    Ok(records as f64 / progress.elapsed().as_secs_f64())
}

/// Records per second through the raw loop: one task per shard reading batches of [`BATCH`]
/// and writing one raw checkpoint per batch on a lease `store` granted it.
async fn raw_throughput(
    store: &Arc<dyn Store>,
    raw: &Arc<dyn crate::Raw>,
    records: usize,
    run: &str,
) -> Result<f64, BoxError> {
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
    Ok(records as f64 / elapsed.as_secs_f64())
}

/// A running `--consumer-child` process and the last line it printed.
struct ChildWorker {
    child: Child,
    state: Arc<Mutex<(usize, u64)>>,
}

impl ChildWorker {
    fn spawn(args: &ChildArgs) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args.to_args())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("the child has no stdout")?;
        let state = Arc::new(Mutex::new((0, 0)));
        let seen = state.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut parts = line.split_whitespace();
                if let (Some("held"), Some(h), Some("requests"), Some(r)) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                    && let (Ok(h), Ok(r)) = (h.parse(), r.parse())
                {
                    *seen.lock().unwrap_or_else(|e| e.into_inner()) = (h, r);
                }
            }
        });
        Ok(Self { child, state })
    }

    /// (leases held, requests sent) as the child last reported.
    fn state(&self) -> (usize, u64) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `VmHWM` (peak resident set) of the child, in KiB.
    fn peak_rss_kib(&self) -> Result<u64, BoxError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| "no VmHWM in /proc/<pid>/status".into())
    }

    /// `SIGKILL`, then reaps the process.
    fn kill(mut self) -> Result<(), BoxError> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// The child process's body: a worker on `args.url`, printing `held H requests R` every 100 ms.
pub(crate) async fn child(args: ChildArgs) -> Result<(), BoxError> {
    let app = AppName::new(&args.app)?;
    let inner = checkpoint_consumer::connect(&args.url, app).await?;
    let calls = Arc::new(AtomicU64::new(0));
    let store: Arc<dyn Store> = Arc::new(Counting {
        inner,
        calls: calls.clone(),
    });
    let stream = Arc::new(MemoryStream::new(
        StreamName::new(&args.stream)?,
        args.shards,
    )?);
    let config = WorkerConfig::builder()
        .with_lease_duration(Duration::from_millis(args.lease_ms))
        .with_renew_interval(Duration::from_millis(args.renew_ms))
        .with_max_leases_per_tick(args.shards)
        .with_shard_sync_interval(Duration::from_secs(3_600))
        .build()?;
    let handle = Worker::new(
        WorkerId::new(&args.worker)?,
        store,
        stream,
        |_: &LeaseKey| Checkpointing(Arc::new(Progress::default())),
        config,
    )
    .spawn();
    loop {
        println!(
            "held {} requests {}",
            handle.held_leases().len(),
            calls.load(Ordering::Relaxed)
        );
        if handle.is_finished() {
            return Err("the worker stopped".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One idle measurement: (peak RSS KiB, requests per second once all `n` leases are held).
async fn idle(
    url: &str,
    app: &AppName,
    n: usize,
    (lease, renew): (Duration, Duration),
    window: Duration,
) -> Result<(u64, f64), BoxError> {
    let args = ChildArgs {
        url: url.to_owned(),
        app: app.to_string(),
        worker: format!("idle-{n}"),
        stream: format!("idle-{n}"),
        shards: n,
        lease_ms: lease.as_millis() as u64,
        renew_ms: renew.as_millis() as u64,
    };
    let child = ChildWorker::spawn(&args)?;
    let held = wait_for(Duration::from_secs(900), || child.state().0 >= n).await;
    if let Err(e) = held {
        child.kill()?;
        return Err(format!("the child did not take {n} leases: {e}").into());
    }
    let (_, r0) = child.state();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let (_, r1) = child.state();
    let rate = (r1 - r0) as f64 / t0.elapsed().as_secs_f64();
    let rss = child.peak_rss_kib();
    child.kill()?;
    Ok((rss?, rate))
}

/// One failover: the time from `SIGKILL` of the child until this process's worker holds all 8.
async fn failover_once(
    url: &str,
    store: &Arc<dyn Store>,
    trial: usize,
    lease: Duration,
    renew: Duration,
) -> Result<Duration, BoxError> {
    let stream = format!("failover-{trial}");
    let args = ChildArgs {
        url: url.to_owned(),
        app: store.app().to_string(),
        worker: format!("victim-{trial}"),
        stream: stream.clone(),
        shards: SHARDS,
        lease_ms: lease.as_millis() as u64,
        renew_ms: renew.as_millis() as u64,
    };
    let child = ChildWorker::spawn(&args)?;
    if let Err(e) = wait_for(Duration::from_secs(120), || child.state().0 >= SHARDS).await {
        child.kill()?;
        return Err(format!("the victim did not take {SHARDS} leases: {e}").into());
    }
    let survivor = Worker::new(
        WorkerId::new(format!("survivor-{trial}"))?,
        store.clone(),
        Arc::new(MemoryStream::new(StreamName::new(&stream)?, SHARDS)?),
        |_: &LeaseKey| Checkpointing(Arc::new(Progress::default())),
        WorkerConfig::builder()
            .with_lease_duration(lease)
            .with_renew_interval(renew)
            .with_max_leases_per_tick(SHARDS)
            .build()?,
    )
    .spawn();
    let balanced = wait_for(Duration::from_secs(120), || {
        survivor.held_leases().len() >= SHARDS / 2
    })
    .await;
    let killed = Instant::now();
    child.kill()?;
    let outcome = match balanced {
        Ok(()) => wait_for(Duration::from_secs(120), || {
            survivor.held_leases().len() >= SHARDS
        })
        .await
        .map(|()| killed.elapsed()),
        Err(e) => Err(format!("the survivor never held half the leases: {e}").into()),
    };
    survivor.abort().await;
    outcome
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs the consumer benchmark on the backends and prints its tables.
pub(crate) async fn run(backends: &[Backend], settings: &Settings) -> Result<(), BoxError> {
    let records = if settings.quick { 4_000 } else { 800_000 };
    println!(
        "\nConsumer throughput: {records} records in 8 shards of a MemoryStream, batches of {BATCH}, one checkpoint per batch; 4 workers hold at most 2 leases each; the raw loop is 8 tasks reading the same stream and writing one raw checkpoint returning the record per batch.\n"
    );
    println!(
        "| backend | 1 worker, records/s | 4 workers, records/s | raw loop, records/s | 1 worker / raw | 4 workers / raw |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (i, b) in backends.iter().filter(|b| b.consumer).enumerate() {
        // Moto serves one request at a time, MariaDB flushes its log per commit: a tenth.
        let records = if b.name.contains("moto") || b.name == "mysql" {
            records / 10
        } else {
            records
        };
        let run = |w: &str| format!("c{i}-{w}");
        let one = library_throughput(&b.store, 1, records, &run("one")).await?;
        let four = library_throughput(&b.store, 4, records, &run("four")).await?;
        let raw = match &b.raw {
            Some(raw) => Some(raw_throughput(&b.store, raw, records, &run("raw")).await?),
            None => None,
        };
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
            let (rss, rate) = idle(url, b.store.app(), n, timing, window)
                .await
                .map_err(|e| format!("{} idle {n}: {e}", b.name))?;
            println!(
                "| {} | {n} | {:.1} | {rate:.1} |",
                b.name,
                rss as f64 / 1024.0
            );
        }
    }
    let (trials, lease, renew) = if settings.quick {
        (2, Duration::from_millis(1_000), Duration::from_millis(250))
    } else {
        (10, Duration::from_millis(2_000), Duration::from_millis(500))
    };
    println!(
        "\nFailover after SIGKILL of a worker process holding 4 of 8 leases (lease {lease:?}, renew interval {renew:?}), {trials} trials: time until the surviving worker holds all 8.\n"
    );
    println!("| backend | median ms | worst ms | bound ms | within bound |");
    println!("| --- | ---: | ---: | ---: | --- |");
    for b in backends.iter().filter(|b| b.consumer) {
        let Some(url) = &b.url else { continue };
        let caps = b.store.capabilities();
        let mut bound = lease + renew + caps.clock.skew_allowance();
        if caps.backend == "dynamodb" {
            bound += renew;
        }
        let mut times = Vec::new();
        for trial in 0..trials {
            times.push(
                failover_once(url, &b.store, trial, lease, renew)
                    .await
                    .map_err(|e| format!("{} failover {trial}: {e}", b.name))?,
            );
        }
        let worst = times.iter().max().copied().unwrap_or_default();
        let med = median(&mut times);
        println!(
            "| {} | {} | {} | {} | {} |",
            b.name,
            med.as_millis(),
            worst.as_millis(),
            bound.as_millis(),
            if worst <= bound { "yes" } else { "no" }
        );
    }
    Ok(())
}

//! The runtime in the situations production meets: several streams in one app, a store whose
//! clock is ahead of the worker's, stuck processors at shutdown, dead workers in membership,
//! store faults, a parent lease deleted after it finished or missing before it started, and
//! two processes started with one worker id. Every wait is for a condition, with a deadline.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use checkpoint_consumer::{
    InitializeInput, MemoryStream, ProcessorError, Record, RecordProcessor, ShardCheckpointer,
    ShardSource, ShutdownReason, Worker, WorkerConfig, WorkerHandle,
};
use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    AppName, Capabilities, Checkpointer, Clock, Error, FencingToken, HeartbeatTtl, Lease,
    LeaseDuration, LeaseKey, LeaseManager, Listing, Membership, MemoryDatabase, MemoryStore,
    Position, RenewOutcome, Result, ShardId, Store, StreamName, WorkerId,
};

/// What processors saw, in order: `(shard, record id)` per record, and each shard end.
#[derive(Debug, Default)]
struct Log(Mutex<Vec<(ShardId, Option<u64>)>>);

impl Log {
    fn push(&self, shard: &ShardId, id: Option<u64>) {
        self.0.lock().unwrap().push((shard.clone(), id));
    }
    fn entries(&self) -> Vec<(ShardId, Option<u64>)> {
        self.0.lock().unwrap().clone()
    }
    fn records_of(&self, shard: &ShardId) -> usize {
        self.entries()
            .iter()
            .filter(|(s, id)| s == shard && id.is_some())
            .count()
    }
    fn distinct(&self) -> usize {
        self.entries()
            .iter()
            .filter_map(|(_, id)| *id)
            .collect::<HashSet<_>>()
            .len()
    }
}

/// Logs and checkpoints every batch; checkpoints `SHARD_END` at shard end. With `stuck`, the
/// first `process_records` call never returns.
struct Recorder {
    log: Arc<Log>,
    shard: ShardId,
    stuck: Option<Arc<AtomicBool>>,
}

#[async_trait]
impl RecordProcessor for Recorder {
    async fn initialize(&mut self, _: &InitializeInput) -> Result<(), ProcessorError> {
        Ok(())
    }

    async fn process_records(
        &mut self,
        records: &[Record],
        cp: &ShardCheckpointer,
    ) -> Result<(), ProcessorError> {
        if let Some(entered) = &self.stuck {
            entered.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        for r in records {
            self.log.push(
                &self.shard,
                Some(u64::from_le_bytes(r.data.as_slice().try_into()?)),
            );
        }
        if let Some(last) = records.last() {
            cp.checkpoint_record(last).await?;
        }
        Ok(())
    }

    async fn shutdown(
        &mut self,
        reason: ShutdownReason,
        cp: &ShardCheckpointer,
    ) -> Result<(), ProcessorError> {
        if reason == ShutdownReason::ShardEnd {
            self.log.push(&self.shard, None);
            cp.checkpoint_shard_end().await?;
        }
        Ok(())
    }
}

fn id(name: &str) -> WorkerId {
    WorkerId::new(name).unwrap()
}

fn config() -> checkpoint_consumer::WorkerConfigBuilder {
    WorkerConfig::builder()
        .with_lease_duration(Duration::from_millis(800))
        .with_renew_interval(Duration::from_millis(100))
        .with_poll_interval(Duration::from_millis(20))
        .with_shard_sync_interval(Duration::from_millis(200))
}

fn spawn(
    name: &str,
    store: Arc<dyn Store>,
    stream: &MemoryStream,
    log: &Arc<Log>,
    config: WorkerConfig,
) -> WorkerHandle {
    let log = Arc::clone(log);
    let factory = move |key: &LeaseKey| Recorder {
        log: Arc::clone(&log),
        shard: key.shard.clone(),
        stuck: None,
    };
    Worker::new(id(name), store, Arc::new(stream.clone()), factory, config).spawn()
}

fn stream(name: &str, shards: usize) -> MemoryStream {
    MemoryStream::new(StreamName::new(name).unwrap(), shards).unwrap()
}

fn put(stream: &MemoryStream, ids: std::ops::Range<u64>) {
    for i in ids {
        stream
            .put(&format!("pk-{i}"), i.to_le_bytes().to_vec())
            .unwrap();
    }
}

fn key(stream: &MemoryStream, shard: &ShardId) -> LeaseKey {
    LeaseKey::new(stream.stream().clone(), shard.clone())
}

/// Waits until `cond` holds; panics with `what` after `within`.
async fn wait_until(within: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A store that counts calls and can be told to fail some with a retryable fault, standing for
/// a backend having trouble.
#[derive(Debug)]
struct Probe {
    inner: MemoryStore,
    register_calls: AtomicU64,
    /// `register_worker` calls the store accepted.
    registered: AtomicU64,
    fail_register: AtomicBool,
    /// `create_lease_if_absent` of this shard fails while set.
    fail_create: Mutex<Option<ShardId>>,
    failed_creates: AtomicU64,
    /// Calls of either listing.
    list_calls: AtomicU64,
}

impl Probe {
    fn new(inner: MemoryStore) -> Self {
        Self {
            inner,
            register_calls: AtomicU64::new(0),
            registered: AtomicU64::new(0),
            fail_register: AtomicBool::new(false),
            fail_create: Mutex::new(None),
            failed_creates: AtomicU64::new(0),
            list_calls: AtomicU64::new(0),
        }
    }
}

fn fault() -> Error {
    Error::backend_message("probe", true, "connection reset")
}

#[async_trait]
impl LeaseManager for Probe {
    fn app(&self) -> &AppName {
        self.inner.app()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities().with_backend("probe")
    }
    async fn init(&self) -> Result<()> {
        self.inner.init().await
    }
    async fn create_lease_if_absent(
        &self,
        key: &LeaseKey,
        parents: &[ShardId],
        initial: Option<&Position>,
    ) -> Result<bool> {
        if self.fail_create.lock().unwrap().as_ref() == Some(&key.shard) {
            self.failed_creates.fetch_add(1, Ordering::SeqCst);
            return Err(fault());
        }
        self.inner
            .create_lease_if_absent(key, parents, initial)
            .await
    }
    async fn get_lease(&self, k: &LeaseKey, w: &WorkerId, d: LeaseDuration) -> Result<Lease> {
        self.inner.get_lease(k, w, d).await
    }
    async fn renew(
        &self,
        k: &LeaseKey,
        w: &WorkerId,
        t: FencingToken,
        d: LeaseDuration,
    ) -> Result<Lease> {
        self.inner.renew(k, w, t, d).await
    }
    async fn renew_many(
        &self,
        w: &WorkerId,
        leases: &[(LeaseKey, FencingToken)],
        d: LeaseDuration,
    ) -> Result<RenewOutcome> {
        self.inner.renew_many(w, leases, d).await
    }
    async fn remove_lease_owner(
        &self,
        k: &LeaseKey,
        w: &WorkerId,
        t: FencingToken,
    ) -> Result<Lease> {
        self.inner.remove_lease_owner(k, w, t).await
    }
    async fn evict_lease(&self, k: &LeaseKey) -> Result<Lease> {
        self.inner.evict_lease(k).await
    }
    async fn remove_lease_info(&self, k: &LeaseKey) -> Result<()> {
        self.inner.remove_lease_info(k).await
    }
    async fn list_leases(&self, s: Option<&StreamName>) -> Result<Vec<Lease>> {
        self.list_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.list_leases(s).await
    }
    async fn list_leases_timed(&self, s: Option<&StreamName>) -> Result<Listing> {
        self.list_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.list_leases_timed(s).await
    }
    async fn steal(
        &self,
        k: &LeaseKey,
        thief: &WorkerId,
        owner: &WorkerId,
        t: FencingToken,
        d: LeaseDuration,
    ) -> Result<Lease> {
        self.inner.steal(k, thief, owner, t, d).await
    }
    async fn claim(&self, k: &LeaseKey, claimant: &WorkerId) -> Result<Lease> {
        self.inner.claim(k, claimant).await
    }

    async fn import_lease(&self, record: &Lease) -> Result<bool> {
        self.inner.import_lease(record).await
    }
    async fn list_apps(&self) -> Result<Vec<AppName>> {
        self.inner.list_apps().await
    }
}

#[async_trait]
impl Checkpointer for Probe {
    async fn checkpoint_sequence(
        &self,
        k: &LeaseKey,
        w: &WorkerId,
        t: FencingToken,
        p: &Position,
    ) -> Result<Lease> {
        self.inner.checkpoint_sequence(k, w, t, p).await
    }
    async fn prepare_checkpoint(
        &self,
        k: &LeaseKey,
        w: &WorkerId,
        t: FencingToken,
        p: &Position,
    ) -> Result<Lease> {
        self.inner.prepare_checkpoint(k, w, t, p).await
    }
    async fn fetch_checkpoint(&self, k: &LeaseKey) -> Result<Option<Lease>> {
        self.inner.fetch_checkpoint(k).await
    }
    async fn reset_checkpoint(&self, k: &LeaseKey, p: Option<&Position>) -> Result<Lease> {
        self.inner.reset_checkpoint(k, p).await
    }
}

#[async_trait]
impl Membership for Probe {
    async fn register_worker(&self, w: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        self.register_calls.fetch_add(1, Ordering::SeqCst);
        if self.fail_register.load(Ordering::SeqCst) {
            return Err(fault());
        }
        let result = self.inner.register_worker(w, ttl).await;
        if result.is_ok() {
            self.registered.fetch_add(1, Ordering::SeqCst);
        }
        result
    }
    async fn heartbeat(&self, w: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        self.inner.heartbeat(w, ttl).await
    }
    async fn live_workers(&self) -> Result<Vec<WorkerId>> {
        self.inner.live_workers().await
    }
    async fn deregister_worker(&self, w: &WorkerId) -> Result<()> {
        self.inner.deregister_worker(w).await
    }
    async fn prune_dead_workers(&self) -> Result<usize> {
        self.inner.prune_dead_workers().await
    }
}

/// A database server whose clock runs a minute ahead of this host's.
#[derive(Debug)]
struct AheadClock(Duration);

impl Clock for AheadClock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + self.0
    }
}

/// Item 1: the fair share of a stream counts only the workers consuming it. Three workers on
/// stream A must not shrink the share of the one worker on stream B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_worker_on_one_stream_takes_all_its_shards_while_others_consume_another() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(random_app("multi")));
    let (a, b) = (stream("a", 3), stream("b", 8));
    let log = Arc::new(Log::default());
    let cfg = config().build().unwrap();
    let on_a: Vec<WorkerHandle> = (0..3)
        .map(|i| spawn(&format!("a{i}"), store.clone(), &a, &log, cfg.clone()))
        .collect();
    let on_b = spawn("b0", store.clone(), &b, &log, cfg);
    wait_until(
        Duration::from_secs(10),
        "b0 holds all 8 shards of b",
        async || on_b.held_leases().len() == 8,
    )
    .await;
    put(&b, 0..80);
    wait_until(
        Duration::from_secs(10),
        "every record of b is read",
        async || log.distinct() == 80,
    )
    .await;
    on_b.shutdown().await.unwrap();
    for w in on_a {
        w.shutdown().await.unwrap();
    }
}

/// Item 2: liveness is judged on the store's clock. With the store 60 s ahead of the worker, a
/// crashed worker's leases are taken within one lease duration, not a minute later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_workers_leases_fail_over_on_the_stores_clock_when_it_runs_ahead() {
    let db = MemoryDatabase::with_clock(Arc::new(AheadClock(Duration::from_secs(60))));
    let store: Arc<dyn Store> = Arc::new(db.open(random_app("skew")));
    let s = stream("s", 4);
    let log = Arc::new(Log::default());
    let cfg = config().build().unwrap();
    let first = spawn("first", store.clone(), &s, &log, cfg.clone());
    wait_until(Duration::from_secs(5), "first holds all 4", async || {
        first.held_leases().len() == 4
    })
    .await;
    first.abort().await;
    let crashed_at = Instant::now();
    let second = spawn("second", store.clone(), &s, &log, cfg.clone());
    // One lease duration after the crash, plus a renew interval and generous slack.
    wait_until(Duration::from_secs(5), "second holds all 4", async || {
        second.held_leases().len() == 4
    })
    .await;
    assert!(crashed_at.elapsed() < cfg.failover_bound() + Duration::from_secs(4));
    second.shutdown().await.unwrap();
}

/// Item 3: a processor stuck in `process_records` does not block shutdown: after the grace
/// period it is cancelled, its lease released without a checkpoint, the worker deregistered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_timeout_cancels_a_stuck_processor_and_releases_its_lease() {
    let store = Arc::new(MemoryStore::new(random_app("stuck")));
    let s = stream("s", 1);
    put(&s, 0..5);
    let log = Arc::new(Log::default());
    let entered = Arc::new(AtomicBool::new(false));
    let factory = {
        let (log, entered) = (Arc::clone(&log), Arc::clone(&entered));
        move |key: &LeaseKey| Recorder {
            log: Arc::clone(&log),
            shard: key.shard.clone(),
            stuck: Some(Arc::clone(&entered)),
        }
    };
    let worker = Worker::new(
        id("w"),
        store.clone(),
        Arc::new(s.clone()),
        factory,
        config().build().unwrap(),
    )
    .spawn();
    wait_until(
        Duration::from_secs(5),
        "the processor is stuck",
        async || entered.load(Ordering::SeqCst),
    )
    .await;
    let started = Instant::now();
    let stopped = tokio::time::timeout(
        Duration::from_secs(5),
        worker.shutdown_with_timeout(Duration::from_millis(300)),
    )
    .await;
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "shutdown did not return: {stopped:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let lease = store
        .fetch_checkpoint(&key(&s, &s.open_shards()[0]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        lease.owner, None,
        "the stuck processor's lease was not released"
    );
    assert_eq!(lease.checkpoint, None, "a cancelled processor checkpointed");
    assert!(store.live_workers().await.unwrap().is_empty());
}

/// Item 4: workers that died stay in membership until pruned; a running worker prunes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_workers_are_pruned_from_membership() {
    let store = Arc::new(MemoryStore::new(random_app("prune")));
    let ghost = id("ghost");
    let instant = HeartbeatTtl::new(Duration::from_millis(1)).unwrap();
    store.register_worker(&ghost, instant).await.unwrap();
    let s = stream("s", 1);
    let log = Arc::new(Log::default());
    let worker = spawn("w", store.clone(), &s, &log, config().build().unwrap());
    // A heartbeat only fails once the record is gone (an expired one is extended by 1 ms).
    wait_until(
        Duration::from_secs(5),
        "the dead worker is pruned",
        async || {
            matches!(
                store.heartbeat(&ghost, instant).await,
                Err(Error::NotFound { .. })
            )
        },
    )
    .await;
    worker.shutdown().await.unwrap();
}

/// Item 5: store calls are retried once, inside the store: the worker adds no second layer.
/// A registration that keeps failing is tried exactly once by the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_call_is_not_retried_again_by_the_worker() {
    let probe = Arc::new(Probe::new(MemoryStore::new(random_app("retry"))));
    probe.fail_register.store(true, Ordering::SeqCst);
    let s = stream("s", 1);
    let log = Arc::new(Log::default());
    let worker = spawn("w", probe.clone(), &s, &log, config().build().unwrap());
    wait_until(Duration::from_secs(10), "the worker gives up", async || {
        worker.is_finished()
    })
    .await;
    let result = worker.shutdown().await;
    assert!(
        matches!(&result, Err(e) if e.is_retryable()),
        "start: {result:?}"
    );
    assert_eq!(probe.register_calls.load(Ordering::SeqCst), 1);
}

/// Item 6: a parent whose lease was deleted after `SHARD_END` (KCL cleanup) while the source
/// still lists it is not read again: its started children prove it finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_parent_whose_lease_was_deleted_is_not_replayed() {
    let store = Arc::new(MemoryStore::new(random_app("replay")));
    let s = stream("s", 1);
    let parent = s.open_shards()[0].clone();
    put(&s, 0..20);
    let children = s.split(&parent).unwrap();
    put(&s, 20..40);
    let log = Arc::new(Log::default());
    let cfg = config().build().unwrap();
    let first = spawn("first", store.clone(), &s, &log, cfg.clone());
    wait_until(Duration::from_secs(10), "all 40 are read", async || {
        log.distinct() == 40
    })
    .await;
    first.shutdown().await.unwrap();
    // Both children progressed past TRIM_HORIZON (the records after the split reached both).
    for child in &children {
        let c = store
            .fetch_checkpoint(&key(&s, child))
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(c.checkpoint, Some(Position::Sequence { .. })),
            "{c:?}"
        );
    }
    store.remove_lease_info(&key(&s, &parent)).await.unwrap();
    let second_log = Arc::new(Log::default());
    let second = spawn("second", store.clone(), &s, &second_log, cfg);
    put(&s, 40..60);
    let new_records = || {
        second_log
            .entries()
            .iter()
            .filter_map(|(_, id)| *id)
            .filter(|id| (40..60).contains(id))
            .collect::<HashSet<_>>()
            .len()
    };
    wait_until(
        Duration::from_secs(10),
        "the new records are read",
        async || new_records() == 20,
    )
    .await;
    // Two more shard syncs, so a re-created parent lease would have been taken and read.
    let syncs = Instant::now();
    wait_until(Duration::from_secs(5), "two sync intervals", async || {
        syncs.elapsed() > Duration::from_millis(500)
    })
    .await;
    second.shutdown().await.unwrap();
    assert_eq!(
        second_log.records_of(&parent),
        0,
        "the finished parent was read again"
    );
    assert!(
        store
            .fetch_checkpoint(&key(&s, &parent))
            .await
            .unwrap()
            .is_none(),
        "the finished parent's lease was created again"
    );
}

/// Item 9: a parent whose lease does not exist yet is not finished: its children wait until it
/// was read to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_wait_for_a_parent_whose_lease_is_missing() {
    let probe = Arc::new(Probe::new(MemoryStore::new(random_app("missing"))));
    let s = stream("s", 1);
    let parent = s.open_shards()[0].clone();
    put(&s, 0..20);
    let children = s.split(&parent).unwrap();
    put(&s, 20..40);
    // The children's leases exist (created by an earlier sync), the parent's does not yet: its
    // creation keeps failing.
    for child in &children {
        probe
            .create_lease_if_absent(
                &key(&s, child),
                std::slice::from_ref(&parent),
                Some(&Position::TrimHorizon),
            )
            .await
            .unwrap();
    }
    *probe.fail_create.lock().unwrap() = Some(parent.clone());
    let log = Arc::new(Log::default());
    let worker = spawn("w", probe.clone(), &s, &log, config().build().unwrap());
    // Each tick lists once to sync and once to take: after six listings and three failed
    // creations the worker has looked at the children's leases several times.
    wait_until(
        Duration::from_secs(10),
        "three failed syncs and takes",
        async || {
            probe.failed_creates.load(Ordering::SeqCst) >= 3
                && probe.list_calls.load(Ordering::SeqCst) >= 6
        },
    )
    .await;
    assert!(
        log.entries().is_empty(),
        "children were read before their parent: {:?}",
        log.entries()
    );
    *probe.fail_create.lock().unwrap() = None;
    wait_until(Duration::from_secs(10), "all 40 are read", async || {
        log.distinct() == 40
    })
    .await;
    worker.shutdown().await.unwrap();
    let entries = log.entries();
    let parent_end = entries
        .iter()
        .position(|(sh, id)| sh == &parent && id.is_none())
        .expect("the parent ended");
    let first_child = entries
        .iter()
        .position(|(sh, _)| children.contains(sh))
        .expect("a child was read");
    assert!(
        first_child > parent_end,
        "a child was read before its parent ended"
    );
}

/// Item 7: a second process started with a worker id that a live process holds fails at start
/// with `WorkerIdInUse`, at once, instead of fighting over the leases. Each worker has its own
/// store handle (its own instance nonce), as two processes have; without the store's nonce
/// check the second would register and start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_a_live_worker_id_is_refused() {
    let db = MemoryDatabase::new();
    let app = random_app("twin");
    let store: Arc<dyn Store> = Arc::new(db.open(app.clone()));
    let s = stream("s", 2);
    let log = Arc::new(Log::default());
    let cfg = config().build().unwrap();
    let first = spawn("twin", store.clone(), &s, &log, cfg.clone());
    wait_until(Duration::from_secs(5), "the first holds both", async || {
        first.held_leases().len() == 2
    })
    .await;
    let tokens = |leases: Vec<Lease>| leases.into_iter().map(|l| l.token).collect::<Vec<_>>();
    let before = tokens(store.list_leases(None).await.unwrap());
    let started = Instant::now();
    let second = spawn("twin", Arc::new(db.open(app)), &s, &log, cfg.clone());
    wait_until(Duration::from_secs(5), "the second gives up", async || {
        second.is_finished()
    })
    .await;
    assert!(
        started.elapsed() < cfg.heartbeat_ttl().get(),
        "the refusal waited {:?}, not immediate",
        started.elapsed()
    );
    let refused = second.shutdown().await;
    assert!(
        matches!(&refused, Err(Error::WorkerIdInUse { worker }) if worker.as_str() == "twin"),
        "second start: {refused:?}"
    );
    assert_eq!(first.held_leases().len(), 2);
    assert_eq!(
        tokens(store.list_leases(None).await.unwrap()),
        before,
        "ownership moved"
    );
    first.shutdown().await.unwrap();
}

/// Item 7, at the same instant: two processes (two store handles) started together with one
/// worker id. Registration is one atomic store operation, so in every round the store accepts
/// exactly one registration, the other process stops with `WorkerIdInUse` without ever having
/// registered, and the one that started holds every lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_started_at_once_with_one_worker_id_one_runs() {
    let s = stream("s", 2);
    let log = Arc::new(Log::default());
    let cfg = config().build().unwrap();
    for round in 0..10 {
        let db = MemoryDatabase::new();
        let app = random_app("same-instant");
        let one = Arc::new(Probe::new(db.open(app.clone())));
        let two = Arc::new(Probe::new(db.open(app)));
        let a = spawn("twin", one.clone(), &s, &log, cfg.clone());
        let b = spawn("twin", two.clone(), &s, &log, cfg.clone());
        wait_until(Duration::from_secs(5), "one of them gives up", async || {
            a.is_finished() || b.is_finished()
        })
        .await;
        let (refused, running, refused_store) = if a.is_finished() {
            (a, b, &one)
        } else {
            (b, a, &two)
        };
        let result = refused.shutdown().await;
        assert!(
            matches!(&result, Err(Error::WorkerIdInUse { .. })),
            "round {round}: {result:?}"
        );
        wait_until(Duration::from_secs(5), "the other holds both", async || {
            running.held_leases().len() == 2
        })
        .await;
        assert!(!running.is_finished(), "round {round}: both stopped");
        assert_eq!(
            refused_store.registered.load(Ordering::SeqCst),
            0,
            "round {round}: the refused process had registered"
        );
        assert_eq!(
            one.registered.load(Ordering::SeqCst) + two.registered.load(Ordering::SeqCst),
            1,
            "round {round}: the store accepted both registrations"
        );
        assert_eq!(one.live_workers().await.unwrap(), vec![id("twin")]);
        running.shutdown().await.unwrap();
    }
}

/// One worker consumes several streams; two such workers split each stream evenly (a fair
/// share per stream), and every record of both streams is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_with_several_sources_share_each_stream_evenly() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(random_app("sources")));
    let (a, b) = (stream("a", 4), stream("b", 2));
    put(&a, 0..40);
    put(&b, 40..60);
    let log = Arc::new(Log::default());
    let start = |name: &str| {
        let log = Arc::clone(&log);
        let factory = move |key: &LeaseKey| Recorder {
            log: Arc::clone(&log),
            shard: key.shard.clone(),
            stuck: None,
        };
        let sources: Vec<Arc<dyn ShardSource>> = vec![Arc::new(a.clone()), Arc::new(b.clone())];
        Worker::with_sources(
            id(name),
            store.clone(),
            sources,
            factory,
            config().build().unwrap(),
        )
        .unwrap()
        .spawn()
    };
    let (one, two) = (start("one"), start("two"));
    let split = |w: &WorkerHandle| {
        let held = w.held_leases();
        let on = |s: &MemoryStream| held.iter().filter(|k| &k.stream == s.stream()).count();
        (on(&a), on(&b))
    };
    wait_until(
        Duration::from_secs(10),
        "2 of a and 1 of b each",
        async || split(&one) == (2, 1) && split(&two) == (2, 1),
    )
    .await;
    wait_until(Duration::from_secs(10), "all 60 are read", async || {
        log.distinct() == 60
    })
    .await;
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}

/// A list of sources must name at least one stream, each once.
#[test]
fn a_bad_list_of_sources_is_refused_naming_the_field() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(random_app("bad")));
    let factory = |key: &LeaseKey| Recorder {
        log: Arc::default(),
        shard: key.shard.clone(),
        stuck: None,
    };
    let none = Worker::with_sources(
        id("w"),
        store.clone(),
        Vec::new(),
        factory,
        WorkerConfig::default(),
    );
    assert_eq!(none.err().and_then(|e| e.field()), Some("sources"));
    let a = stream("a", 1);
    let twice: Vec<Arc<dyn ShardSource>> = vec![Arc::new(a.clone()), Arc::new(a)];
    let dup = Worker::with_sources(id("w"), store, twice, factory, WorkerConfig::default());
    assert_eq!(dup.err().and_then(|e| e.field()), Some("sources"));
}

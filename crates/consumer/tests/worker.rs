//! The worker's lease rules one at a time, on the in-memory store and stream: fencing of a
//! lost lease, graceful hand-over, claim-based balancing, the lease cap, membership, and a
//! custom `Store` implementation. Every wait is for a condition, with a deadline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use checkpoint_consumer::{
    Balance, InitializeInput, MemoryStream, ProcessorError, Record, RecordProcessor,
    ShardCheckpointer, ShutdownReason, Worker, WorkerConfig, WorkerHandle,
};
use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    AppName, Capabilities, Checkpointer, Error, FencingToken, HeartbeatTtl, Lease, LeaseDuration,
    LeaseKey, LeaseManager, Listing, Membership, MemoryStore, Position, RenewOutcome, Result,
    ShardId, Store, StreamName, WorkerId,
};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Init(ShardId, FencingToken),
    Batch(ShardId, FencingToken, Vec<u64>),
    Shutdown(ShardId, FencingToken, ShutdownReason),
    /// A checkpoint attempted after `LeaseLost`: whether it was refused.
    LostWrite(ShardId, bool),
}

#[derive(Debug, Default)]
struct Log(Mutex<Vec<Event>>);

impl Log {
    fn push(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }

    fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    /// Record ids delivered, with repeats.
    fn delivered(&self) -> Vec<u64> {
        self.events()
            .into_iter()
            .flat_map(|e| match e {
                Event::Batch(_, _, ids) => ids,
                _ => Vec::new(),
            })
            .collect()
    }
}

struct Recording {
    log: Arc<Log>,
    shard: ShardId,
    token: FencingToken,
    last: Option<Position>,
}

#[async_trait]
impl RecordProcessor for Recording {
    async fn initialize(&mut self, input: &InitializeInput) -> Result<(), ProcessorError> {
        self.token = input.token;
        self.log.push(Event::Init(self.shard.clone(), input.token));
        Ok(())
    }

    async fn process_records(
        &mut self,
        records: &[Record],
        checkpointer: &ShardCheckpointer,
    ) -> Result<(), ProcessorError> {
        let mut ids = Vec::new();
        for r in records {
            ids.push(u64::from_le_bytes(r.data.as_slice().try_into()?));
        }
        self.log
            .push(Event::Batch(self.shard.clone(), self.token, ids));
        if let Some(last) = records.last() {
            checkpointer.checkpoint_record(last).await?;
            self.last = Some(last.position());
        }
        Ok(())
    }

    async fn shutdown(
        &mut self,
        reason: ShutdownReason,
        checkpointer: &ShardCheckpointer,
    ) -> Result<(), ProcessorError> {
        self.log
            .push(Event::Shutdown(self.shard.clone(), self.token, reason));
        match reason {
            ShutdownReason::ShardEnd => checkpointer.checkpoint_shard_end().await?,
            ShutdownReason::Requested => {
                if let Some(last) = &self.last {
                    checkpointer.checkpoint(last).await?;
                }
            }
            ShutdownReason::LeaseLost => {
                let attempt = self.last.clone().unwrap_or(Position::TrimHorizon);
                let refused = matches!(
                    checkpointer.checkpoint(&attempt).await,
                    Err(Error::LeaseLost { .. })
                );
                self.log.push(Event::LostWrite(self.shard.clone(), refused));
            }
            // A reason added in a later version: nothing to checkpoint.
            _ => {}
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
        .with_shard_sync_interval(Duration::from_millis(300))
}

fn spawn(
    name: &str,
    store: Arc<dyn Store>,
    stream: &MemoryStream,
    log: &Arc<Log>,
    config: WorkerConfig,
) -> WorkerHandle {
    let log = Arc::clone(log);
    let factory = move |key: &LeaseKey| Recording {
        log: Arc::clone(&log),
        shard: key.shard.clone(),
        token: FencingToken(0),
        last: None,
    };
    Worker::new(id(name), store, Arc::new(stream.clone()), factory, config).spawn()
}

fn put(stream: &MemoryStream, ids: std::ops::Range<u64>) {
    for i in ids {
        stream
            .put(&format!("pk-{i}"), i.to_le_bytes().to_vec())
            .unwrap();
    }
}

/// Waits until `cond` holds; panics with `what` after `within`.
async fn wait_until(within: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn stream(shards: usize) -> MemoryStream {
    MemoryStream::new(StreamName::new("s").unwrap(), shards).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_its_processor_and_fences_its_writes() {
    let store = Arc::new(MemoryStore::new(random_app("lost")));
    let stream = stream(1);
    let log = Arc::new(Log::default());
    let worker = spawn("w", store.clone(), &stream, &log, config().build().unwrap());
    put(&stream, 0..10);
    wait_until(
        Duration::from_secs(5),
        "the batch is processed",
        async || log.delivered().len() == 10,
    )
    .await;
    let key = LeaseKey::new(stream_name(&stream), stream.open_shards()[0].clone());
    let held = store.fetch_checkpoint(&key).await.unwrap().unwrap();
    // Another worker takes the lease (as a balancer's steal would).
    let intruder = id("intruder");
    let long = LeaseDuration::new(Duration::from_secs(60)).unwrap();
    let stolen = store
        .steal(&key, &intruder, &id("w"), held.token, long)
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(5),
        "the processor is shut down",
        async || {
            log.events()
                .contains(&Event::LostWrite(key.shard.clone(), true))
        },
    )
    .await;
    let events = log.events();
    let shutdown = events
        .iter()
        .position(|e| matches!(e, Event::Shutdown(_, _, ShutdownReason::LeaseLost)))
        .expect("shut down with LeaseLost");
    put(&stream, 10..20);
    wait_until(Duration::from_secs(5), "the worker lets go", async || {
        worker.held_leases().is_empty()
    })
    .await;
    let after = store.fetch_checkpoint(&key).await.unwrap().unwrap();
    assert_eq!(after.owner, Some(intruder));
    assert_eq!(after.token, stolen.token);
    assert_eq!(
        after.checkpoint, stolen.checkpoint,
        "nothing written after the steal"
    );
    assert!(
        !log.events()[shutdown..]
            .iter()
            .any(|e| matches!(e, Event::Batch(..))),
        "no batch after the loss"
    );
    worker.shutdown().await.unwrap();
}

fn stream_name(stream: &MemoryStream) -> StreamName {
    checkpoint_consumer::ShardSource::stream(stream).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_checkpoints_and_releases_so_the_next_worker_starts_at_once() {
    let store = Arc::new(MemoryStore::new(random_app("graceful")));
    let stream = stream(4);
    let log = Arc::new(Log::default());
    // Leases far longer than the test: a hand-over that waited for expiry would time out.
    let slow = || {
        config()
            .with_lease_duration(Duration::from_secs(60))
            .with_renew_interval(Duration::from_millis(100))
            .build()
            .unwrap()
    };
    let first = spawn("first", store.clone(), &stream, &log, slow());
    put(&stream, 0..100);
    wait_until(Duration::from_secs(5), "all is processed", async || {
        log.delivered().len() == 100
    })
    .await;
    assert_eq!(store.live_workers().await.unwrap(), vec![id("first")]);
    first.shutdown().await.unwrap();
    assert!(
        store.live_workers().await.unwrap().is_empty(),
        "deregistered"
    );
    for lease in store.list_leases(None).await.unwrap() {
        assert_eq!(lease.owner, None, "{} released", lease.key);
        assert!(
            matches!(lease.checkpoint, Some(Position::Sequence { .. })),
            "{} checkpointed",
            lease.key
        );
    }
    let shutdowns = log
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Shutdown(_, _, ShutdownReason::Requested)))
        .count();
    assert_eq!(shutdowns, 4);

    put(&stream, 100..150);
    let second = spawn("second", store.clone(), &stream, &log, slow());
    wait_until(
        Duration::from_secs(5),
        "the second worker takes over",
        async || second.held_leases().len() == 4 && log.delivered().len() == 150,
    )
    .await;
    let mut delivered = log.delivered();
    delivered.sort_unstable();
    assert_eq!(delivered, (0..150).collect::<Vec<u64>>(), "no duplicates");
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_balancing_hands_leases_over_without_duplicates() {
    let store = Arc::new(MemoryStore::new(random_app("claim")));
    let stream = stream(6);
    let log = Arc::new(Log::default());
    let cfg = || config().with_balance(Balance::Claim).build().unwrap();
    let a = spawn("a", store.clone(), &stream, &log, cfg());
    put(&stream, 0..300);
    wait_until(Duration::from_secs(5), "a holds every lease", async || {
        a.held_leases().len() == 6
    })
    .await;
    let b = spawn("b", store.clone(), &stream, &log, cfg());
    wait_until(
        Duration::from_secs(10),
        "b claimed its fair share",
        async || a.held_leases().len() == 3 && b.held_leases().len() == 3,
    )
    .await;
    put(&stream, 300..600);
    wait_until(
        Duration::from_secs(5),
        "everything is processed",
        async || log.delivered().len() >= 600,
    )
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let mut delivered = log.delivered();
    delivered.sort_unstable();
    assert_eq!(delivered, (0..600).collect::<Vec<u64>>(), "no duplicates");
    let events = log.events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Shutdown(_, _, ShutdownReason::LeaseLost))),
        "a hand-over is a requested shutdown, never a loss"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_alone_takes_at_most_max_leases() {
    let store = Arc::new(MemoryStore::new(random_app("cap")));
    let stream = stream(8);
    let log = Arc::new(Log::default());
    let worker = spawn(
        "w",
        store.clone(),
        &stream,
        &log,
        config().with_max_leases(5).build().unwrap(),
    );
    wait_until(Duration::from_secs(5), "five leases", async || {
        worker.held_leases().len() == 5
    })
    .await;
    // Two renewals later (the held leases' deadlines moved twice), still five.
    let deadline_of = async || {
        store
            .list_leases(None)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|l| l.deadline)
            .max()
    };
    let first = deadline_of().await;
    wait_until(Duration::from_secs(5), "a renewal", async || {
        deadline_of().await > first
    })
    .await;
    let second = deadline_of().await;
    wait_until(Duration::from_secs(5), "another renewal", async || {
        deadline_of().await > second
    })
    .await;
    assert_eq!(worker.held_leases().len(), 5);
    let owned = store
        .list_leases(None)
        .await
        .unwrap()
        .iter()
        .filter(|l| l.owner.is_some())
        .count();
    assert_eq!(owned, 5);
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_of_a_merge_wait_for_both_parents() {
    let store = Arc::new(MemoryStore::new(random_app("merge")));
    let stream = stream(2);
    put(&stream, 0..50);
    let [a, b] = [
        stream.open_shards()[0].clone(),
        stream.open_shards()[1].clone(),
    ];
    let child = stream.merge(&a, &b).unwrap();
    put(&stream, 50..100);
    let log = Arc::new(Log::default());
    let worker = spawn("w", store.clone(), &stream, &log, config().build().unwrap());
    wait_until(Duration::from_secs(5), "all is processed", async || {
        log.delivered().len() == 100
    })
    .await;
    worker.shutdown().await.unwrap();
    let events = log.events();
    let end = |s: &ShardId| {
        events
            .iter()
            .position(|e| matches!(e, Event::Shutdown(x, _, ShutdownReason::ShardEnd) if x == s))
            .expect("parent ended")
    };
    let start = events
        .iter()
        .position(|e| matches!(e, Event::Init(x, _) if x == &child))
        .expect("child started");
    assert!(start > end(&a) && start > end(&b));
}

/// A user's own store: here a wrapper that counts renew-many calls and can be told to fail
/// them, standing for any custom backend passed as `Arc<dyn Store>`.
#[derive(Debug)]
struct FlakyStore {
    inner: MemoryStore,
    fail_renewals: Mutex<bool>,
    renewals: Mutex<u64>,
}

#[async_trait]
impl LeaseManager for FlakyStore {
    fn app(&self) -> &AppName {
        self.inner.app()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities().with_backend("flaky")
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
        *self.renewals.lock().unwrap() += 1;
        if *self.fail_renewals.lock().unwrap() {
            return Err(Error::backend_message(
                "flaky",
                false,
                "renewals switched off",
            ));
        }
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
        self.inner.list_leases(s).await
    }
    async fn list_leases_timed(&self, s: Option<&StreamName>) -> Result<Listing> {
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
impl Checkpointer for FlakyStore {
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
impl Membership for FlakyStore {
    async fn register_worker(&self, w: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        self.inner.register_worker(w, ttl).await
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_store_works_and_unrenewed_leases_stop_at_their_local_deadline() {
    let store = Arc::new(FlakyStore {
        inner: MemoryStore::new(random_app("custom")),
        fail_renewals: Mutex::new(false),
        renewals: Mutex::new(0),
    });
    let stream = stream(2);
    let log = Arc::new(Log::default());
    let worker = spawn("w", store.clone(), &stream, &log, config().build().unwrap());
    put(&stream, 0..20);
    wait_until(Duration::from_secs(5), "all is processed", async || {
        log.delivered().len() == 20 && *store.renewals.lock().unwrap() > 0
    })
    .await;
    // The store stops answering renewals: within one lease duration the worker must presume
    // its leases lost and stop their processors, whose writes are then refused.
    *store.fail_renewals.lock().unwrap() = true;
    let cut = Instant::now();
    wait_until(
        Duration::from_secs(5),
        "both processors stopped",
        async || {
            log.events()
                .iter()
                .filter(|e| matches!(e, Event::LostWrite(_, true)))
                .count()
                >= 2
        },
    )
    .await;
    assert!(
        cut.elapsed() <= Duration::from_millis(800 + 100),
        "stopped {:?} after renewals failed",
        cut.elapsed()
    );
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_of_an_ended_shard_is_deleted_when_the_stream_drops_it() {
    let store = Arc::new(MemoryStore::new(random_app("trim")));
    let stream = stream(1);
    put(&stream, 0..10);
    let parent = stream.open_shards()[0].clone();
    stream.split(&parent).unwrap();
    put(&stream, 10..20);
    let log = Arc::new(Log::default());
    let worker = spawn("w", store.clone(), &stream, &log, config().build().unwrap());
    let key = LeaseKey::new(stream_name(&stream), parent.clone());
    wait_until(Duration::from_secs(5), "the parent ended", async || {
        store
            .fetch_checkpoint(&key)
            .await
            .unwrap()
            .is_some_and(|l| l.checkpoint == Some(Position::ShardEnd))
    })
    .await;
    stream.remove_closed(&parent).unwrap();
    wait_until(
        Duration::from_secs(5),
        "the parent's lease is deleted",
        async || store.fetch_checkpoint(&key).await.unwrap().is_none(),
    )
    .await;
    wait_until(
        Duration::from_secs(5),
        "the children are processed",
        async || log.delivered().len() == 20,
    )
    .await;
    worker.shutdown().await.unwrap();
    assert_eq!(
        store.list_leases(None).await.unwrap().len(),
        2,
        "the two children remain"
    );
}

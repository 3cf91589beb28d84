//! [`Worker`]: membership, the tick loop (heartbeat, renewal, shard sync, lease taking), and
//! shutdown. Lease taking and balancing live in `balance`, the processor tasks in `shard`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use checkpoint_core::{
    Error, FencingToken, LeaseKey, Result, ShardId, Store, StreamName, WorkerId,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::balance::{sync_shards, take_leases_logged};
use crate::config::WorkerConfig;
use crate::metrics as m;
use crate::processor::{LeaseSignal, LeaseState, ProcessorFactory};
use crate::shard::release;
use crate::source::ShardSource;

/// One lease this worker holds and the task processing it.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) token: FencingToken,
    pub(crate) signal: LeaseSignal,
    /// Local instant after which the lease must be presumed lost: the start of the last
    /// successful grant or renewal request plus the lease duration.
    pub(crate) valid_until: Instant,
    pub(crate) task: Option<JoinHandle<()>>,
}

pub(crate) struct Shared {
    pub(crate) id: WorkerId,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) sources: BTreeMap<StreamName, Arc<dyn ShardSource>>,
    pub(crate) factory: Arc<dyn ProcessorFactory>,
    pub(crate) config: WorkerConfig,
    pub(crate) held: Mutex<BTreeMap<LeaseKey, Held>>,
    /// Per stream, the shards the source listed at the last sync (absent before the first).
    pub(crate) listed: Mutex<HashMap<StreamName, BTreeSet<ShardId>>>,
    /// The newest token a processor of this worker ran under, per lease.
    pub(crate) used_tokens: Mutex<HashMap<LeaseKey, FencingToken>>,
    /// Set when a lease names a shard the last sync did not list: sync again at the next tick.
    pub(crate) resync: AtomicBool,
    pub(crate) sync_requested: Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("id", &self.id)
            .field("store", &self.store)
            .field("sources", &self.sources)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A consumer worker: shares the shards of one or more streams with the other workers of the
/// same app through a [`Store`], running one [`RecordProcessor`](crate::RecordProcessor) per
/// lease it holds.
///
/// Each tick (every [`renew interval`](crate::WorkerConfigBuilder::with_renew_interval)) the
/// worker:
/// 1. heartbeats its membership (registering again if it was pruned);
/// 2. renews every held lease in one `renew_many`; a lease reported lost, or not renewed
///    before its local deadline, is stopped at once: its processor's pending call is dropped,
///    its checkpointer refuses to write, and it is shut down with
///    [`ShutdownReason::LeaseLost`](crate::ShutdownReason::LeaseLost); a lease carrying
///    another worker's claim is handed over (shut down with
///    [`ShutdownReason::Requested`](crate::ShutdownReason::Requested), then released);
/// 3. syncs each source's shards into leases (every shard sync interval, or at once after a
///    shard it held ended), creating missing leases with their parents, and prunes dead
///    workers from membership;
/// 4. per stream, takes free and expired leases up to its fair share `ceil(eligible shards /
///    workers of the stream)` (at most `max_leases_per_tick` per pass, their grants sent
///    together). The workers of a
///    stream are this one, the holders of a live lease of that stream, and the registered
///    workers that hold no lease at all yet (starting); a worker busy with other streams of
///    the app does not count. A shard is eligible once it has not ended and every parent
///    finished (see below). When none are free and the most loaded worker of the stream holds
///    at least 2 more than this one, takes from it at most `max_steals_per_tick` with a
///    conditional `steal` or, with [`Balance::Claim`](crate::Balance::Claim), asks for a
///    hand-off with `claim`.
///
/// Liveness is judged on the store's clock: the listing carries the store-clock instant it was
/// judged at ([`checkpoint_core::Listing`]), and the time a lease has left is computed from
/// it, never from this host's wall clock. Between ticks the worker also wakes at the earliest
/// local deadline of its own leases (to stop a processor whose renewal did not come back in
/// time) and when the earliest live lease of another worker runs out, to take a crashed
/// worker's lease the moment it expires: within one lease duration after its last renewal,
/// plus one renew interval at worst ([`WorkerConfig::failover_bound`]).
///
/// A parent shard is finished when its lease reached `SHARD_END`, or its lease is gone and
/// either a child's checkpoint moved past its initial position (a child only starts after its
/// parents finished, so that proves it; the KCL deletes a parent lease only then) or the
/// source no longer lists the parent. A listed shard whose lease is gone but whose child
/// started is not given a new lease: it is not read again.
///
/// Shutdown ([`WorkerHandle::shutdown_with_timeout`], [`WorkerHandle::shutdown`] with the
/// configured grace period, or dropping the handle) shuts every processor down with
/// [`ShutdownReason::Requested`](crate::ShutdownReason::Requested), renewing meanwhile; when
/// the grace period runs out, processors still running are cancelled (their futures dropped),
/// their leases released without a checkpoint. Then the worker leaves the membership.
///
/// At start a worker refuses an id that another live process holds: it waits up to one
/// heartbeat TTL (plus one renew interval) for that registration to lapse (a crashed
/// predecessor's does) and fails with [`Error::InvalidInput`] naming `worker_id` if it does
/// not.
///
/// The worker only decides *when to try* (on the store's clock, from
/// [`LeaseManager::list_leases_timed`](checkpoint_core::LeaseManager::list_leases_timed));
/// whether a take succeeds is the store's decision alone, so mutual exclusion is as strong as
/// the store's expiry clock ([`checkpoint_core::ClockSource`]): on PostgreSQL, MySQL and Redis
/// the server's clock, so worker clock skew cannot break it; on SQLite and the memory store the
/// one host's clock; on DynamoDB no clock is trusted across hosts (a handle takes another
/// worker's lease only after observing it unchanged for the lease duration on its own monotonic
/// clock), so skew cannot break it either; a store on client clocks with a skew allowance
/// ([`checkpoint_core::ClockSource::Client`]) is safe only while the workers' clocks differ by
/// less than that allowance.
pub struct Worker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.shared.id)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker named `id` consuming `source` with processors from `factory`, coordinating
    /// through `store` (any backend, or a custom [`Store`]).
    pub fn new(
        id: WorkerId,
        store: Arc<dyn Store>,
        source: Arc<dyn ShardSource>,
        factory: impl ProcessorFactory,
        config: WorkerConfig,
    ) -> Self {
        let sources = BTreeMap::from([(source.stream().clone(), source)]);
        Self::build(id, store, sources, Arc::new(factory), config)
    }

    /// A worker named `id` consuming every stream of `sources` (as the KCL's multi-stream
    /// tracker), with one fair share per stream among the workers consuming it.
    /// [`Error::InvalidInput`] naming `sources` when the list is empty or names a stream twice.
    pub fn with_sources(
        id: WorkerId,
        store: Arc<dyn Store>,
        sources: Vec<Arc<dyn ShardSource>>,
        factory: impl ProcessorFactory,
        config: WorkerConfig,
    ) -> Result<Self> {
        if sources.is_empty() {
            return Err(Error::invalid("sources", "must name at least one stream"));
        }
        let mut by_stream = BTreeMap::new();
        for source in sources {
            let stream = source.stream().clone();
            if by_stream.insert(stream.clone(), source).is_some() {
                return Err(Error::invalid(
                    "sources",
                    format!("stream {stream} appears more than once"),
                ));
            }
        }
        Ok(Self::build(id, store, by_stream, Arc::new(factory), config))
    }

    fn build(
        id: WorkerId,
        store: Arc<dyn Store>,
        sources: BTreeMap<StreamName, Arc<dyn ShardSource>>,
        factory: Arc<dyn ProcessorFactory>,
        config: WorkerConfig,
    ) -> Self {
        m::describe();
        Self {
            shared: Arc::new(Shared {
                id,
                store,
                sources,
                factory,
                config,
                held: Mutex::new(BTreeMap::new()),
                listed: Mutex::new(HashMap::new()),
                used_tokens: Mutex::new(HashMap::new()),
                resync: AtomicBool::new(false),
                sync_requested: Notify::new(),
            }),
        }
    }

    /// Starts the worker on the current Tokio runtime.
    pub fn spawn(self) -> WorkerHandle {
        let (stop_tx, stop_rx) = watch::channel(None);
        let shared = Arc::clone(&self.shared);
        let span = tracing::info_span!("worker", worker = %shared.id);
        let main = tokio::spawn(run(Arc::clone(&shared), stop_rx).instrument(span));
        WorkerHandle {
            shared,
            main,
            stop_tx,
        }
    }
}

/// A running [`Worker`]. Dropping it stops the worker in the background as
/// [`WorkerHandle::shutdown`] would (with the configured grace period).
#[derive(Debug)]
pub struct WorkerHandle {
    shared: Arc<Shared>,
    main: JoinHandle<Result<()>>,
    /// `Some(grace)` once a shutdown was asked for.
    stop_tx: watch::Sender<Option<Duration>>,
}

impl WorkerHandle {
    /// The worker's id.
    pub fn id(&self) -> &WorkerId {
        &self.shared.id
    }

    /// The leases this worker currently holds (and processes), sorted.
    pub fn held_leases(&self) -> Vec<LeaseKey> {
        self.shared.held().keys().cloned().collect()
    }

    /// Whether the worker's loop has ended (after a shutdown, or a fatal error).
    pub fn is_finished(&self) -> bool {
        self.main.is_finished()
    }

    /// Graceful shutdown with the configured grace period
    /// ([`WorkerConfigBuilder::with_shutdown_grace`](crate::WorkerConfigBuilder::with_shutdown_grace),
    /// default 30 s): see [`WorkerHandle::shutdown_with_timeout`].
    pub async fn shutdown(self) -> Result<()> {
        let grace = self.shared.config.shutdown_grace;
        self.shutdown_with_timeout(grace).await
    }

    /// Graceful shutdown bounded by `grace`: every processor is shut down with
    /// [`ShutdownReason::Requested`](crate::ShutdownReason::Requested) (it checkpoints what it
    /// finished) and its lease released, while the worker keeps renewing. Processors still
    /// running after `grace` (stuck in `process_records` or `shutdown`) are cancelled: their
    /// futures are dropped and their leases released without a checkpoint. Then the worker
    /// leaves the membership and this returns, within `grace` plus one store round trip per
    /// cancelled lease. Returns the loop's error if it had stopped on one.
    pub async fn shutdown_with_timeout(self, grace: Duration) -> Result<()> {
        self.stop_tx.send_replace(Some(grace));
        match self.main.await {
            Ok(result) => result,
            Err(e) => Err(Error::backend_message(
                "consumer",
                false,
                format!("worker task failed: {e}"),
            )),
        }
    }

    /// Stops the worker the way a crash would: every task is aborted where it stands, no
    /// processor is shut down, no lease released, no membership removed. Other workers take the
    /// leases once they expire. For failover tests and demos.
    pub async fn abort(self) {
        self.main.abort();
        let _ = self.main.await;
        let tasks: Vec<JoinHandle<()>> = self
            .shared
            .held()
            .values_mut()
            .filter_map(|h| h.task.take())
            .collect();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        tracing::warn!(worker = %self.shared.id, "worker aborted");
    }
}

impl Shared {
    pub(crate) fn held(&self) -> MutexGuard<'_, BTreeMap<LeaseKey, Held>> {
        // Map updates are single inserts/removes; a poisoned lock holds a consistent map.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One store call, timed for the `consumer_store_call_seconds` histogram. Not retried
    /// here: every store retries transient faults inside with its own backoff (one retry
    /// layer), and the next tick tries again.
    pub(crate) async fn call<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let result = call.await;
        m::store_call(self.store.app(), operation, started, &result);
        result
    }

    /// The earliest local deadline of a lease not yet known lost.
    fn next_expiry(&self) -> Option<Instant> {
        self.held()
            .values()
            .filter(|h| h.signal.get() != LeaseState::Lost)
            .map(|h| h.valid_until)
            .min()
    }

    /// Sets the `consumer_leases_held` gauge of every stream.
    pub(crate) fn report_held(&self) {
        let held = self.held();
        for stream in self.sources.keys() {
            let count = held.keys().filter(|k| &k.stream == stream).count();
            metrics::gauge!(
                m::LEASES_HELD,
                "app" => self.store.app().to_string(),
                "stream" => stream.to_string(),
                "worker" => self.id.to_string()
            )
            .set(count as f64);
        }
    }

    /// Labels `app`, `stream`, `worker` for a counter about `key`.
    pub(crate) fn count(&self, name: &'static str, key: &LeaseKey) {
        metrics::counter!(
            name,
            "app" => self.store.app().to_string(),
            "stream" => key.stream.to_string(),
            "worker" => self.id.to_string()
        )
        .increment(1);
    }
}

/// Registers `shared.id` with one atomic `register_worker`: the store refuses an id whose live
/// membership record another instance (another store handle, normally another process) holds
/// with [`Error::WorkerIdInUse`], returned here at once and counted in
/// `consumer_worker_id_conflicts_total`. Of two processes starting at the same instant with one
/// id, exactly one registers.
async fn register(shared: &Shared) -> Result<()> {
    let ttl = shared.config.heartbeat_ttl;
    let result = shared
        .call(
            "register_worker",
            shared.store.register_worker(&shared.id, ttl),
        )
        .await;
    if let Err(e @ Error::WorkerIdInUse { .. }) = &result {
        count_conflict(shared);
        tracing::error!(error = %e, "worker id registered by another live instance: not starting");
    }
    result
}

/// Counts one sign that another instance runs with this worker's id.
fn count_conflict(shared: &Shared) {
    metrics::counter!(
        m::WORKER_ID_CONFLICTS,
        "app" => shared.store.app().to_string(),
        "worker" => shared.id.to_string()
    )
    .increment(1);
}

async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<Option<Duration>>) -> Result<()> {
    register(&shared).await?;
    tracing::info!(streams = ?shared.sources.keys().collect::<Vec<_>>(), "worker registered");
    let mut last_sync: Option<Instant> = None;
    // Set when another instance took this worker's id over: the worker stops.
    let mut taken_over: Option<Error> = None;
    // Ticks every renew interval from the start of the previous tick, whatever a tick's work
    // took, so a lease is renewed and a free lease looked at least once per interval.
    let mut ticks = tokio::time::interval(shared.config.renew_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        // A dropped handle stops the worker as `shutdown` would.
        if stop.borrow().is_some() || stop.has_changed().is_err() {
            break;
        }
        if let Err(e) = heartbeat(&shared).await {
            taken_over = Some(e);
            break;
        }
        renew(&shared).await;
        let sync_due = shared.resync.swap(false, Ordering::Relaxed)
            || last_sync.is_none_or(|t| t.elapsed() >= shared.config.shard_sync_interval);
        if sync_due {
            if sync_shards(&shared).await {
                last_sync = Some(Instant::now());
            }
            prune(&shared).await;
        }
        let mut next_takeover = take_leases_logged(&shared).await;
        shared.report_held();
        // Between ticks, wake at the earliest local deadline of a lease held here, so a lease
        // whose renewal did not come back in time is stopped at that instant; and when the
        // earliest live lease of another worker runs out, so a crashed worker's leases are
        // taken the moment they expire rather than at the next tick.
        loop {
            let next_expiry = shared.next_expiry();
            tokio::select! {
                _ = ticks.tick() => break,
                _ = stop.changed() => break,
                _ = shared.sync_requested.notified() => {
                    last_sync = None;
                    break;
                }
                _ = sleep_until_opt(next_expiry) => expire_overdue(&shared),
                _ = sleep_until_opt(next_takeover) => {
                    next_takeover = take_leases_logged(&shared).await;
                }
            }
        }
    }
    let grace = (*stop.borrow()).unwrap_or(shared.config.shutdown_grace);
    graceful_stop(&shared, grace).await;
    shared.report_held();
    if let Some(e) = taken_over {
        // The membership record is the other instance's now: leave it alone.
        tracing::error!(error = %e, "worker stopped: its id was taken over by another instance");
        return Err(e);
    }
    shared
        .call(
            "deregister_worker",
            shared.store.deregister_worker(&shared.id),
        )
        .await?;
    tracing::info!("worker stopped");
    Ok(())
}

/// Asks every processor to stop, keeps renewing while they checkpoint and release, and waits
/// until every shard task has ended (each removes its own entry from the held map) or `grace`
/// has passed; then cancels the rest.
async fn graceful_stop(shared: &Shared, grace: Duration) {
    for held in shared.held().values() {
        held.signal.request_stop();
    }
    let deadline = Instant::now() + grace;
    let mut last_renewal = Instant::now();
    loop {
        if shared.held().is_empty() {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let nap = Duration::from_millis(10)
            .min(shared.config.renew_interval)
            .min(deadline - now);
        tokio::time::sleep(nap).await;
        if last_renewal.elapsed() >= shared.config.renew_interval {
            renew(shared).await;
            last_renewal = Instant::now();
        }
    }
    cancel_remaining(shared).await;
}

/// Cancels every processor still running (its future is dropped where it stands) and releases
/// its lease without a checkpoint, so other workers take it at once.
async fn cancel_remaining(shared: &Shared) {
    let stuck: Vec<(LeaseKey, FencingToken, Option<JoinHandle<()>>)> = shared
        .held()
        .iter_mut()
        .map(|(k, h)| (k.clone(), h.token, h.task.take()))
        .collect();
    for (key, token, task) in stuck {
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        tracing::warn!(%key, %token, "shutdown grace period over: processor cancelled");
        shared.count(m::PROCESSORS_CANCELLED, &key);
        release(shared, &key, token).await;
        let mut held = shared.held();
        if held.get(&key).is_some_and(|h| h.token == token) {
            held.remove(&key);
        }
    }
}

/// Heartbeats this worker's membership, registering again when it was pruned. Transient
/// failures are logged and tried again at the next tick; [`Error::WorkerIdInUse`] (this
/// instance's registration expired and another instance took the id over) is returned: the
/// worker must stop, as two instances with one id would fight over every lease.
async fn heartbeat(shared: &Shared) -> Result<()> {
    let ttl = shared.config.heartbeat_ttl;
    let result = shared
        .call("heartbeat", shared.store.heartbeat(&shared.id, ttl))
        .await;
    let result = match result {
        Err(Error::NotFound { .. }) => {
            tracing::info!("membership expired: registering again");
            shared
                .call(
                    "register_worker",
                    shared.store.register_worker(&shared.id, ttl),
                )
                .await
        }
        other => other,
    };
    match result {
        Ok(()) => Ok(()),
        Err(e @ Error::WorkerIdInUse { .. }) => {
            count_conflict(shared);
            Err(e)
        }
        Err(e) => {
            tracing::warn!(error = %e, "heartbeat failed");
            Ok(())
        }
    }
}

/// Removes expired workers from membership, so dead workers do not pile up.
async fn prune(shared: &Shared) {
    match shared
        .call("prune_dead_workers", shared.store.prune_dead_workers())
        .await
    {
        Ok(0) => {}
        Ok(n) => {
            metrics::counter!(
                m::WORKERS_PRUNED,
                "app" => shared.store.app().to_string(),
                "worker" => shared.id.to_string()
            )
            .increment(n as u64);
            tracing::info!(pruned = n, "dead workers pruned from membership");
        }
        Err(e) => tracing::warn!(error = %e, "pruning dead workers failed"),
    }
}

/// Renews every held lease in one `renew_many`, stops lost ones, and hands over claimed ones.
pub(crate) async fn renew(shared: &Shared) {
    let batch: Vec<(LeaseKey, FencingToken)> = shared
        .held()
        .iter()
        .filter(|(_, h)| h.signal.get() != LeaseState::Lost)
        .map(|(k, h)| (k.clone(), h.token))
        .collect();
    if !batch.is_empty() {
        let started = Instant::now();
        let duration = shared.config.lease_duration;
        match shared
            .call(
                "renew_many",
                shared.store.renew_many(&shared.id, &batch, duration),
            )
            .await
        {
            Ok(outcome) => {
                let mut held = shared.held();
                for lease in &outcome.renewed {
                    let Some(h) = held.get_mut(&lease.key) else {
                        continue;
                    };
                    if h.token != lease.token {
                        continue;
                    }
                    h.valid_until = started + duration.get();
                    shared.count(m::LEASES_RENEWED, &lease.key);
                    tracing::trace!(key = %lease.key, token = %lease.token, "lease renewed");
                    if let Some(claimant) = &lease.claim
                        && claimant != &shared.id
                        && h.signal.get() == LeaseState::Held
                    {
                        tracing::info!(key = %lease.key, %claimant, "lease claimed: handing over");
                        h.signal.request_stop();
                    }
                }
                for key in &outcome.lost {
                    if let Some(h) = held.get(key)
                        && h.signal.mark_lost()
                    {
                        shared.count(m::LEASES_LOST, key);
                        tracing::info!(%key, token = %h.token, "lease lost: not renewed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "renewal failed"),
        }
    }
    expire_overdue(shared);
}

/// Stops every lease whose local deadline passed without a renewal: it may already belong to
/// someone else, so its processor must stop before it can write again.
fn expire_overdue(shared: &Shared) {
    let now = Instant::now();
    for (key, h) in shared.held().iter() {
        if now >= h.valid_until && h.signal.mark_lost() {
            shared.count(m::LEASES_LOST, key);
            tracing::info!(%key, token = %h.token, "lease lost: expired before renewal");
        }
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

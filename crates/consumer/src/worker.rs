//! [`Worker`]: membership, shard discovery, lease taking and balancing, renewal, and one
//! processor task per held lease.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use checkpoint_core::{
    ClockSource, Error, FencingToken, Lease, LeaseKey, Position, Result, ShardId, Store, WorkerId,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::{Balance, WorkerConfig};
use crate::processor::{
    InitializeInput, LeaseSignal, LeaseState, ProcessorFactory, ShardCheckpointer, ShutdownReason,
};
use crate::source::ShardSource;

/// How long after another worker's lease deadline this worker tries to take it: a little slack
/// so the store, judging expiry on its own clock, already sees it expired.
const TAKEOVER_MARGIN: Duration = Duration::from_millis(5);

/// One lease this worker holds and the task processing it.
#[derive(Debug)]
struct Held {
    token: FencingToken,
    signal: LeaseSignal,
    /// Local instant after which the lease must be presumed lost: the start of the last
    /// successful grant or renewal request plus the lease duration.
    valid_until: Instant,
    task: Option<JoinHandle<()>>,
}

struct Shared {
    id: WorkerId,
    store: Arc<dyn Store>,
    source: Arc<dyn ShardSource>,
    factory: Arc<dyn ProcessorFactory>,
    config: WorkerConfig,
    held: Mutex<BTreeMap<LeaseKey, Held>>,
    /// The shards the source listed at the last sync (`None` before the first).
    listed: Mutex<Option<BTreeSet<ShardId>>>,
    /// The newest token a processor of this worker ran under, per lease.
    used_tokens: Mutex<HashMap<LeaseKey, FencingToken>>,
    /// Set when a lease names a shard the last sync did not list: sync again at the next tick.
    resync: AtomicBool,
    sync_requested: Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("id", &self.id)
            .field("store", &self.store)
            .field("source", &self.source)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A consumer worker: shares the shards of one stream with the other workers of the same app
/// through a [`Store`], running one [`RecordProcessor`](crate::RecordProcessor) per lease it
/// holds.
///
/// Each tick (every [`renew interval`](crate::WorkerConfigBuilder::with_renew_interval)) the
/// worker:
/// 1. heartbeats its membership (registering again if it was pruned);
/// 2. renews every held lease in one `renew_many`; a lease reported lost, or not renewed
///    before its local deadline, is stopped at once: its processor's pending call is dropped,
///    its checkpointer refuses to write, and it is shut down with
///    [`ShutdownReason::LeaseLost`]; a lease carrying another worker's claim is handed over
///    (shut down with [`ShutdownReason::Requested`], then released);
/// 3. syncs the source's shards into leases (every shard sync interval, or at once after a
///    shard it held ended), creating missing leases with their parents;
/// 4. takes free and expired leases up to its fair share `ceil(eligible shards / live
///    workers)` (at most `max_leases_per_tick` per tick), where a shard is eligible once it
///    has not ended and every parent reached `SHARD_END` or was deleted, and live workers are
///    the registered ones minus those whose every lease expired (evidently dead); when none
///    are free and the most loaded worker holds at least 2 more than it, takes from that
///    worker at most `max_steals_per_tick` with a conditional `steal` or, with
///    [`Balance::Claim`], asks for a hand-off with `claim`.
///
/// Between ticks the worker also wakes at the earliest local deadline of its own leases (to
/// stop a processor whose renewal did not come back in time) and at the earliest deadline of
/// another worker's lease (plus the store's skew allowance), to take a crashed worker's lease
/// the moment it expires. A crashed worker's shards are therefore processed again within one
/// lease duration after its last renewal, plus one renew interval at worst
/// ([`WorkerConfig::failover_bound`]).
///
/// Graceful shutdown ([`WorkerHandle::shutdown`], or dropping the handle) shuts every processor
/// down with [`ShutdownReason::Requested`], releases every lease and leaves the membership, so
/// other workers take the shards at their next tick instead of after expiry.
///
/// The worker only decides *when to try*: it compares the deadlines the store reports with the
/// local clock, and a lease that only looks expired is refused by the store (`LeaseHeld`) and
/// skipped. Whether a take succeeds is the store's decision alone, so mutual exclusion is as
/// strong as the store's expiry clock ([`checkpoint_core::ClockSource`]): on PostgreSQL and
/// Redis the server's clock, so worker clock skew cannot break it; on SQLite and the memory
/// store the one host's clock; on DynamoDB no clock is trusted across hosts (a handle takes
/// another worker's lease only after observing it unchanged for the lease duration on its own
/// monotonic clock, and reports deadlines in its own clock), so skew cannot break it either,
/// while a store on client clocks with a skew allowance ([`checkpoint_core::ClockSource::Client`])
/// is safe only while the workers' clocks differ by less than that allowance.
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
        Self {
            shared: Arc::new(Shared {
                id,
                store,
                source,
                factory: Arc::new(factory),
                config,
                held: Mutex::new(BTreeMap::new()),
                listed: Mutex::new(None),
                used_tokens: Mutex::new(HashMap::new()),
                resync: AtomicBool::new(false),
                sync_requested: Notify::new(),
            }),
        }
    }

    /// Starts the worker on the current Tokio runtime.
    pub fn spawn(self) -> WorkerHandle {
        let (stop_tx, stop_rx) = watch::channel(false);
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

/// A running [`Worker`].
#[derive(Debug)]
pub struct WorkerHandle {
    shared: Arc<Shared>,
    main: JoinHandle<Result<()>>,
    stop_tx: watch::Sender<bool>,
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

    /// Whether the worker's loop has ended (after [`WorkerHandle::shutdown`], or a fatal error).
    pub fn is_finished(&self) -> bool {
        self.main.is_finished()
    }

    /// Graceful shutdown: every processor is shut down with [`ShutdownReason::Requested`] (it
    /// checkpoints what it finished), every lease is released, and the worker leaves the
    /// membership. Returns the loop's error if it had stopped on one.
    pub async fn shutdown(self) -> Result<()> {
        self.stop_tx.send_replace(true);
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
    fn held(&self) -> MutexGuard<'_, BTreeMap<LeaseKey, Held>> {
        // Map updates are single inserts/removes; a poisoned lock holds a consistent map.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn retry<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut + Send,
        Fut: std::future::Future<Output = Result<T>> + Send,
    {
        self.config.backoff.retry(op).await
    }

    /// The earliest local deadline of a lease not yet known lost.
    fn next_expiry(&self) -> Option<Instant> {
        self.held()
            .values()
            .filter(|h| h.signal.get() != LeaseState::Lost)
            .map(|h| h.valid_until)
            .min()
    }

    fn key(&self, shard: &ShardId) -> LeaseKey {
        LeaseKey::new(self.source.stream().clone(), shard.clone())
    }
}

async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) -> Result<()> {
    let ttl = shared.config.heartbeat_ttl;
    shared
        .retry(|_| shared.store.register_worker(&shared.id, ttl))
        .await?;
    tracing::info!("worker registered");
    let mut last_sync: Option<Instant> = None;
    // Ticks every renew interval from the start of the previous tick, whatever a tick's work
    // took, so a lease is renewed and a free lease looked at least once per interval.
    let mut ticks = tokio::time::interval(shared.config.renew_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        // A dropped handle stops the worker as `shutdown` would.
        if *stop.borrow() || stop.has_changed().is_err() {
            break;
        }
        heartbeat(&shared).await;
        renew(&shared).await;
        let sync_due = shared.resync.swap(false, Ordering::Relaxed)
            || last_sync.is_none_or(|t| t.elapsed() >= shared.config.shard_sync_interval);
        if sync_due {
            match sync_shards(&shared).await {
                Ok(()) => last_sync = Some(Instant::now()),
                Err(e) => tracing::warn!(error = %e, "shard sync failed"),
            }
        }
        let mut next_takeover = take_leases_logged(&shared).await;
        // Between ticks, wake at the earliest local deadline of a lease held here, so a lease
        // whose renewal did not come back in time is stopped at that instant; and at the
        // earliest deadline of another worker's lease, so a crashed worker's leases are taken
        // the moment they expire rather than at the next tick.
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
    graceful_stop(&shared).await;
    shared
        .retry(|_| shared.store.deregister_worker(&shared.id))
        .await?;
    tracing::info!("worker stopped");
    Ok(())
}

/// Asks every processor to stop, keeps renewing while they checkpoint and release, and waits
/// until every shard task has ended (each removes its own entry from the held map).
async fn graceful_stop(shared: &Shared) {
    for held in shared.held().values() {
        held.signal.request_stop();
    }
    let mut last_renewal = Instant::now();
    while !shared.held().is_empty() {
        tokio::time::sleep(Duration::from_millis(10).min(shared.config.renew_interval)).await;
        if last_renewal.elapsed() >= shared.config.renew_interval {
            renew(shared).await;
            last_renewal = Instant::now();
        }
    }
}

async fn heartbeat(shared: &Shared) {
    let ttl = shared.config.heartbeat_ttl;
    let result = shared
        .retry(|_| shared.store.heartbeat(&shared.id, ttl))
        .await;
    let result = match result {
        Err(Error::NotFound { .. }) => {
            tracing::info!("membership expired: registering again");
            shared
                .retry(|_| shared.store.register_worker(&shared.id, ttl))
                .await
        }
        other => other,
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "heartbeat failed");
    }
}

/// Renews every held lease in one `renew_many`, stops lost ones, and hands over claimed ones.
async fn renew(shared: &Shared) {
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
            .retry(|_| shared.store.renew_many(&shared.id, &batch, duration))
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
                    metrics::counter!("consumer_leases_renewed_total").increment(1);
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
                        metrics::counter!("consumer_leases_lost_total").increment(1);
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
            metrics::counter!("consumer_leases_lost_total").increment(1);
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

/// Creates a lease (with its parents) for every shard of the source that has none. A child
/// shard starts at `TRIM_HORIZON` so nothing written after the split is skipped. Deletes the
/// lease of a shard that ended (`SHARD_END`) and is no longer listed by the source (trimmed
/// after its retention period); a deleted parent counts as finished for its children.
async fn sync_shards(shared: &Shared) -> Result<()> {
    let shards = shared.retry(|_| shared.source.list_shards()).await?;
    let stream = shared.source.stream();
    let leases = shared
        .retry(|_| shared.store.list_leases(Some(stream)))
        .await?;
    let known: BTreeSet<&ShardId> = leases.iter().map(|l| &l.key.shard).collect();
    for shard in shards.iter().filter(|s| !known.contains(&s.id)) {
        let key = shared.key(&shard.id);
        let initial = (!shard.parents.is_empty()).then_some(Position::TrimHorizon);
        let created = shared
            .retry(|_| {
                shared
                    .store
                    .create_lease_if_absent(&key, &shard.parents, initial.as_ref())
            })
            .await?;
        if created {
            tracing::info!(%key, parents = ?shard.parents, "lease created for new shard");
        }
    }
    let listed: BTreeSet<ShardId> = shards.into_iter().map(|s| s.id).collect();
    for lease in &leases {
        if !listed.contains(&lease.key.shard) && lease.checkpoint == Some(Position::ShardEnd) {
            shared
                .retry(|_| shared.store.remove_lease_info(&lease.key))
                .await?;
            tracing::info!(key = %lease.key, "lease deleted: shard ended and left the stream");
        }
    }
    *shared.listed.lock().unwrap_or_else(|e| e.into_inner()) = Some(listed);
    Ok(())
}

/// Whether every parent of `lease` reached `SHARD_END` or was deleted, judged on `leases`.
fn parents_done(lease: &Lease, by_shard: &HashMap<&ShardId, &Lease>) -> bool {
    lease.parents.iter().all(|p| {
        by_shard
            .get(p)
            .is_none_or(|l| l.checkpoint == Some(Position::ShardEnd))
    })
}

/// [`take_leases`], logging a failure (the next tick tries again).
async fn take_leases_logged(shared: &Arc<Shared>) -> Option<Instant> {
    match take_leases(shared).await {
        Ok(next) => next,
        Err(e) => {
            tracing::warn!(error = %e, "lease taking failed");
            None
        }
    }
}

/// Takes free and expired leases up to the fair share, then steals when the imbalance is at
/// least 2. Returns when the earliest live lease of another worker expires (a little after, on
/// the local clock), if this worker could take more leases.
async fn take_leases(shared: &Arc<Shared>) -> Result<Option<Instant>> {
    let stream = shared.source.stream();
    let leases = shared
        .retry(|_| shared.store.list_leases(Some(stream)))
        .await?;
    let now = SystemTime::now();
    // A member whose every lease expired has evidently died (or stalled) even if its
    // membership has not lapsed yet: not counting it lets the others take its leases as soon
    // as they expire instead of one heartbeat TTL later.
    let holders: BTreeSet<&WorkerId> = leases.iter().filter_map(|l| l.owner.as_ref()).collect();
    let active: BTreeSet<&WorkerId> = leases
        .iter()
        .filter(|l| l.is_live_at(now))
        .filter_map(|l| l.owner.as_ref())
        .collect();
    let mut live: BTreeSet<WorkerId> = shared
        .retry(|_| shared.store.live_workers())
        .await?
        .into_iter()
        .filter(|w| !holders.contains(w) || active.contains(w))
        .collect();
    live.insert(shared.id.clone());
    let by_shard: HashMap<&ShardId, &Lease> = leases.iter().map(|l| (&l.key.shard, l)).collect();
    // A lease of a shard the last sync did not list is either newer than that sync (created by
    // another worker: sync again at the next tick) or of a shard that left the stream unread,
    // which cannot be read: leave it alone until the source lists it.
    let listed = shared
        .listed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let readable = |l: &Lease| {
        let known = listed.as_ref().is_none_or(|s| s.contains(&l.key.shard));
        if !known {
            shared.resync.store(true, Ordering::Relaxed);
        }
        known
    };
    let eligible: Vec<&Lease> = leases
        .iter()
        .filter(|l| {
            l.checkpoint != Some(Position::ShardEnd) && parents_done(l, &by_shard) && readable(l)
        })
        .collect();
    // A store judging expiry on client clocks keeps a lease for its skew allowance past the
    // deadline: try to take it only then.
    let skew = match shared.store.capabilities().clock {
        ClockSource::Client { skew_allowance } => skew_allowance,
        ClockSource::Server | ClockSource::Host | ClockSource::Observed => Duration::ZERO,
    };
    let next_takeover = if shared.held().len() < shared.config.max_leases {
        eligible
            .iter()
            .filter(|l| l.owner.as_ref().is_some_and(|o| o != &shared.id) && l.is_live_at(now))
            .filter_map(|l| l.deadline)
            .min()
            .map(|d| {
                Instant::now() + d.duration_since(now).unwrap_or_default() + skew + TAKEOVER_MARGIN
            })
    } else {
        None
    };
    if eligible.is_empty() {
        return Ok(next_takeover);
    }
    let target = eligible
        .len()
        .div_ceil(live.len())
        .min(shared.config.max_leases);
    let mut mine = shared.held().len();
    if mine >= target {
        return Ok(next_takeover);
    }
    let held_keys: BTreeSet<LeaseKey> = shared.held().keys().cloned().collect();
    let mut free: Vec<&Lease> = eligible
        .iter()
        .copied()
        .filter(|l| {
            !held_keys.contains(&l.key)
                && (!l.is_live_at(now) || l.owner.as_ref() == Some(&shared.id))
        })
        .collect();
    // Start at a worker-specific offset so workers taking at the same moment rarely collide.
    if !free.is_empty() {
        let offset = stable_hash(shared.id.as_str()) as usize % free.len();
        free.rotate_left(offset);
    }
    let duration = shared.config.lease_duration;
    let mut taken = 0;
    for lease in &free {
        if mine >= target || taken >= shared.config.max_leases_per_tick {
            break;
        }
        if lease.owner.as_ref() == Some(&shared.id) {
            // Still ours in the store but no longer processed here (a processor stopped when
            // its renewal came back too late): free it first, so the new processor runs under
            // a new token and nothing from the old one can pass as its own.
            release(shared, &lease.key, lease.token).await;
        }
        let started = Instant::now();
        match shared
            .retry(|_| shared.store.get_lease(&lease.key, &shared.id, duration))
            .await
        {
            Ok(granted) => {
                metrics::counter!("consumer_leases_taken_total").increment(1);
                let expired = lease.owner.as_ref().filter(|o| *o != &shared.id);
                tracing::info!(key = %granted.key, token = %granted.token, previous_owner = ?expired, "lease taken");
                if start_shard(shared, granted, started).await {
                    mine += 1;
                    taken += 1;
                }
            }
            Err(Error::LeaseHeld { .. }) => {}
            Err(e) => tracing::warn!(key = %lease.key, error = %e, "taking lease failed"),
        }
    }
    if !free.is_empty() || mine >= target || shared.config.max_steals_per_tick == 0 {
        return Ok(next_takeover);
    }
    // Steal from the most loaded worker when it holds at least 2 more than this one.
    let mut loads: BTreeMap<&WorkerId, Vec<&Lease>> = BTreeMap::new();
    for lease in &eligible {
        if let Some(owner) = &lease.owner
            && owner != &shared.id
            && lease.is_live_at(now)
        {
            loads.entry(owner).or_default().push(lease);
        }
    }
    let Some((victim, victim_leases)) = loads
        .iter()
        .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(a.0)))
    else {
        return Ok(next_takeover);
    };
    let imbalance = victim_leases.len().saturating_sub(mine);
    if imbalance < 2 {
        return Ok(next_takeover);
    }
    let steals = shared
        .config
        .max_steals_per_tick
        .min(imbalance / 2)
        .min(target - mine);
    for lease in victim_leases.iter().rev().take(steals) {
        if shared.config.balance == Balance::Claim {
            match shared
                .retry(|_| shared.store.claim(&lease.key, &shared.id))
                .await
            {
                Ok(_) => {
                    metrics::counter!("consumer_leases_claimed_total").increment(1);
                    tracing::info!(key = %lease.key, from = %victim, "lease claimed for hand-off");
                }
                Err(e) => tracing::warn!(key = %lease.key, error = %e, "claiming lease failed"),
            }
            continue;
        }
        let started = Instant::now();
        let result = shared
            .retry(|_| {
                shared
                    .store
                    .steal(&lease.key, &shared.id, victim, lease.token, duration)
            })
            .await;
        match result {
            Ok(granted) => {
                metrics::counter!("consumer_leases_stolen_total").increment(1);
                tracing::info!(key = %granted.key, token = %granted.token, from = %victim, "lease stolen");
                start_shard(shared, granted, started).await;
            }
            Err(Error::LeaseChanged { .. }) => {}
            Err(e) => tracing::warn!(key = %lease.key, error = %e, "stealing lease failed"),
        }
    }
    Ok(next_takeover)
}

fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Registers the lease as held and spawns its processor task.
///
/// One token, one processor: a grant that kept a token an earlier processor of this worker
/// already ran under (the store still named this worker as owner, so the token did not move)
/// is released instead, and taken again with a new token on a later tick. So every processor's
/// deliveries and writes are told apart by its token, and a stale processor could never pass
/// for a new one. Returns whether a processor was started.
async fn start_shard(shared: &Arc<Shared>, lease: Lease, granted_at: Instant) -> bool {
    let key = lease.key.clone();
    let token = lease.token;
    let reused = {
        let mut used = shared.used_tokens.lock().unwrap_or_else(|e| e.into_inner());
        match used.get(&key) {
            Some(last) if *last >= token => true,
            _ => {
                used.insert(key.clone(), token);
                false
            }
        }
    };
    if reused {
        tracing::info!(%key, %token, "granted a token already used here: releasing it for a new one");
        release(shared, &key, token).await;
        return false;
    }
    let signal = LeaseSignal::new();
    let span = tracing::info_span!("shard", key = %key, token = %token);
    let mut held = shared.held();
    let task = tokio::spawn(run_shard(Arc::clone(shared), lease, signal.clone()).instrument(span));
    held.insert(
        key,
        Held {
            token,
            signal,
            valid_until: granted_at + shared.config.lease_duration.get(),
            task: Some(task),
        },
    );
    true
}

/// How a shard task ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Shutdown(ShutdownReason),
    /// Parents not finished yet, or the shard already ended: release without processing.
    NotReady,
    /// The processor or the source failed: release so it is processed again later.
    Failed,
}

async fn run_shard(shared: Arc<Shared>, lease: Lease, signal: LeaseSignal) {
    let key = lease.key.clone();
    let token = lease.token;
    let end = process_shard(&shared, &lease, &signal).await;
    match end {
        End::Shutdown(ShutdownReason::LeaseLost) => {
            // Usually the store already gave the lease to someone else and this release is
            // refused; when the loss was only presumed locally (a renewal came back late), it
            // frees the lease at once instead of at expiry. It is fenced by the token either way.
            release(&shared, &key, token).await;
        }
        End::Shutdown(ShutdownReason::ShardEnd) => {
            release(&shared, &key, token).await;
            shared.sync_requested.notify_one();
        }
        End::Shutdown(ShutdownReason::Requested) | End::NotReady | End::Failed => {
            release(&shared, &key, token).await;
        }
    }
    let mut held = shared.held();
    if held.get(&key).is_some_and(|h| h.token == token) {
        held.remove(&key);
    }
}

async fn release(shared: &Shared, key: &LeaseKey, token: FencingToken) {
    match shared
        .retry(|_| shared.store.remove_lease_owner(key, &shared.id, token))
        .await
    {
        Ok(_) => {
            metrics::counter!("consumer_leases_released_total").increment(1);
            tracing::info!(%key, %token, "lease released");
        }
        Err(Error::LeaseLost { .. }) => {
            tracing::info!(%key, %token, "lease already lost at release")
        }
        Err(e) => tracing::warn!(%key, %token, error = %e, "release failed; the lease will expire"),
    }
}

/// Runs one processor from `initialize` to `shutdown`.
async fn process_shard(shared: &Shared, lease: &Lease, signal: &LeaseSignal) -> End {
    let key = &lease.key;
    // The taker checked the parents on a listing; check again on fresh reads before starting.
    for parent in &lease.parents {
        let parent_key = shared.key(parent);
        match shared
            .retry(|_| shared.store.fetch_checkpoint(&parent_key))
            .await
        {
            Ok(Some(p)) if p.checkpoint != Some(Position::ShardEnd) => return End::NotReady,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%parent_key, error = %e, "reading parent lease failed");
                return End::NotReady;
            }
        }
    }
    let start = lease
        .checkpoint
        .clone()
        .unwrap_or_else(|| shared.config.initial_position.clone());
    if start == Position::ShardEnd {
        return End::NotReady;
    }
    let checkpointer = ShardCheckpointer::new(
        Arc::clone(&shared.store),
        key.clone(),
        shared.id.clone(),
        lease.token,
        signal.clone(),
        shared.config.backoff,
        lease.checkpoint.clone(),
    );
    let mut processor = shared.factory.create(key);
    let input = InitializeInput {
        key: key.clone(),
        token: lease.token,
        start: start.clone(),
        pending_checkpoint: lease.pending_checkpoint.clone(),
    };
    let reason = tokio::select! {
        biased;
        _ = signal.lost() => Some(ShutdownReason::LeaseLost),
        r = processor.initialize(&input) => match r {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(error = %e, "processor initialize failed");
                return End::Failed;
            }
        },
    };
    let reason = match reason {
        Some(r) => r,
        None => match read_loop(
            shared,
            key,
            &start,
            signal,
            &checkpointer,
            processor.as_mut(),
        )
        .await
        {
            Ok(r) => r,
            Err(end) => return end,
        },
    };
    let shutdown = tokio::select! {
        biased;
        _ = signal.lost(), if reason != ShutdownReason::LeaseLost => Err("lease lost during shutdown".into()),
        r = processor.shutdown(reason, &checkpointer) => r,
    };
    if let Err(e) = shutdown {
        tracing::warn!(?reason, error = %e, "processor shutdown failed");
    }
    if reason == ShutdownReason::ShardEnd
        && checkpointer.last_checkpoint() != Some(Position::ShardEnd)
    {
        tracing::error!(
            "processor did not checkpoint SHARD_END at shard end; the shard will be processed again"
        );
        return End::Failed;
    }
    End::Shutdown(reason)
}

async fn read_loop(
    shared: &Shared,
    key: &LeaseKey,
    start: &Position,
    signal: &LeaseSignal,
    checkpointer: &ShardCheckpointer,
    processor: &mut dyn crate::RecordProcessor,
) -> std::result::Result<ShutdownReason, End> {
    let source = &shared.source;
    let mut cursor = match shared.retry(|_| source.cursor(&key.shard, start)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "opening the shard failed");
            return Err(End::Failed);
        }
    };
    loop {
        match signal.get() {
            LeaseState::Lost => return Ok(ShutdownReason::LeaseLost),
            LeaseState::StopRequested => return Ok(ShutdownReason::Requested),
            LeaseState::Held => {}
        }
        let limit = shared.config.batch_size;
        let batch = tokio::select! {
            biased;
            _ = signal.changed_from_held() => continue,
            b = shared.retry(|_| source.read(&key.shard, &cursor, limit)) => match b {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the shard failed");
                    return Err(End::Failed);
                }
            },
        };
        if !batch.records.is_empty() {
            let count = batch.records.len() as u64;
            let result = tokio::select! {
                biased;
                _ = signal.lost() => return Ok(ShutdownReason::LeaseLost),
                r = processor.process_records(&batch.records, checkpointer) => r,
            };
            if let Err(e) = result {
                if checkpointer.is_lost() {
                    return Ok(ShutdownReason::LeaseLost);
                }
                tracing::warn!(error = %e, "process_records failed; the shard will be processed again");
                return Err(End::Failed);
            }
            metrics::counter!("consumer_records_processed_total").increment(count);
        }
        match batch.next {
            None => return Ok(ShutdownReason::ShardEnd),
            Some(next) => cursor = next,
        }
        if batch.records.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(shared.config.poll_interval) => {}
                _ = signal.changed_from_held() => {}
            }
        }
    }
}

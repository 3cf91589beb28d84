//! A store wrapper that counts (and can log) the requests sent through it: the idle child's
//! request rate, and the failover survivor's take passes.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use checkpoint_core::{
    AppName, Capabilities, Checkpointer, FencingToken, HeartbeatTtl, Lease, LeaseDuration,
    LeaseKey, LeaseManager, Listing, Membership, Position, RenewOutcome, Result as CoreResult,
    ShardId, Store, StreamName, WorkerId,
};

/// The requests a [`Counting`] store sent: how many, and (when asked) each one's operation and
/// start instant.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    total: AtomicU64,
    log: Option<Mutex<Vec<Call>>>,
}

/// One logged call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call {
    pub(crate) start: Instant,
    pub(crate) took: Duration,
    pub(crate) operation: &'static str,
}

impl Calls {
    /// A counter that also keeps every call's operation and start instant.
    pub(crate) fn logged() -> Self {
        Self {
            total: AtomicU64::new(0),
            log: Some(Mutex::new(Vec::new())),
        }
    }

    /// Requests sent so far.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The start instants of the logged calls of `operation` (empty when not logging).
    pub(crate) fn times_of(&self, operation: &str) -> Vec<Instant> {
        self.log.as_ref().map_or_else(Vec::new, |log| {
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|c| c.operation == operation)
                .map(|c| c.start)
                .collect()
        })
    }

    /// Every logged call, in the order they ended.
    pub(crate) fn log(&self) -> Vec<Call> {
        self.log.as_ref().map_or_else(Vec::new, |log| {
            log.lock().unwrap_or_else(|e| e.into_inner()).clone()
        })
    }
}

/// A store that counts the requests sent through it (every trait call is one).
#[derive(Debug)]
pub(crate) struct Counting {
    pub(crate) inner: Arc<dyn Store>,
    pub(crate) calls: Arc<Calls>,
}

impl Counting {
    /// Counts one call of `operation`, logging its start and duration when asked to.
    async fn timed<T>(&self, operation: &'static str, call: impl Future<Output = T>) -> T {
        self.calls.total.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let out = call.await;
        if let Some(log) = &self.calls.log {
            log.lock().unwrap_or_else(|e| e.into_inner()).push(Call {
                start,
                took: start.elapsed(),
                operation,
            });
        }
        out
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
        self.timed("init", self.inner.init()).await
    }
    async fn create_lease_if_absent(
        &self,
        key: &LeaseKey,
        parents: &[ShardId],
        initial: Option<&Position>,
    ) -> CoreResult<bool> {
        self.timed(
            "create_lease_if_absent",
            self.inner.create_lease_if_absent(key, parents, initial),
        )
        .await
    }
    async fn get_lease(&self, k: &LeaseKey, w: &WorkerId, d: LeaseDuration) -> CoreResult<Lease> {
        self.timed("get_lease", self.inner.get_lease(k, w, d)).await
    }
    async fn renew(
        &self,
        k: &LeaseKey,
        w: &WorkerId,
        t: FencingToken,
        d: LeaseDuration,
    ) -> CoreResult<Lease> {
        self.timed("renew", self.inner.renew(k, w, t, d)).await
    }
    async fn renew_many(
        &self,
        w: &WorkerId,
        leases: &[(LeaseKey, FencingToken)],
        d: LeaseDuration,
    ) -> CoreResult<RenewOutcome> {
        self.timed("renew_many", self.inner.renew_many(w, leases, d))
            .await
    }
    async fn remove_lease_owner(
        &self,
        k: &LeaseKey,
        w: &WorkerId,
        t: FencingToken,
    ) -> CoreResult<Lease> {
        self.timed("remove_lease_owner", self.inner.remove_lease_owner(k, w, t))
            .await
    }
    async fn evict_lease(&self, k: &LeaseKey) -> CoreResult<Lease> {
        self.timed("evict_lease", self.inner.evict_lease(k)).await
    }
    async fn remove_lease_info(&self, k: &LeaseKey) -> CoreResult<()> {
        self.timed("remove_lease_info", self.inner.remove_lease_info(k))
            .await
    }
    async fn list_leases(&self, s: Option<&StreamName>) -> CoreResult<Vec<Lease>> {
        self.timed("list_leases", self.inner.list_leases(s)).await
    }
    async fn list_leases_timed(&self, s: Option<&StreamName>) -> CoreResult<Listing> {
        self.timed("list_leases_timed", self.inner.list_leases_timed(s))
            .await
    }
    async fn list_apps(&self) -> CoreResult<Vec<AppName>> {
        self.timed("list_apps", self.inner.list_apps()).await
    }
    async fn steal(
        &self,
        k: &LeaseKey,
        thief: &WorkerId,
        owner: &WorkerId,
        t: FencingToken,
        d: LeaseDuration,
    ) -> CoreResult<Lease> {
        self.timed("steal", self.inner.steal(k, thief, owner, t, d))
            .await
    }
    async fn claim(&self, k: &LeaseKey, claimant: &WorkerId) -> CoreResult<Lease> {
        self.timed("claim", self.inner.claim(k, claimant)).await
    }
    async fn import_lease(&self, record: &Lease) -> CoreResult<bool> {
        self.timed("import_lease", self.inner.import_lease(record))
            .await
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
        self.timed(
            "checkpoint_sequence",
            self.inner.checkpoint_sequence(k, w, t, p),
        )
        .await
    }
    async fn prepare_checkpoint(
        &self,
        k: &LeaseKey,
        w: &WorkerId,
        t: FencingToken,
        p: &Position,
    ) -> CoreResult<Lease> {
        self.timed(
            "prepare_checkpoint",
            self.inner.prepare_checkpoint(k, w, t, p),
        )
        .await
    }
    async fn fetch_checkpoint(&self, k: &LeaseKey) -> CoreResult<Option<Lease>> {
        self.timed("fetch_checkpoint", self.inner.fetch_checkpoint(k))
            .await
    }
    async fn reset_checkpoint(&self, k: &LeaseKey, p: Option<&Position>) -> CoreResult<Lease> {
        self.timed("reset_checkpoint", self.inner.reset_checkpoint(k, p))
            .await
    }
}

#[async_trait]
impl Membership for Counting {
    async fn register_worker(&self, w: &WorkerId, ttl: HeartbeatTtl) -> CoreResult<()> {
        self.timed("register_worker", self.inner.register_worker(w, ttl))
            .await
    }
    async fn heartbeat(&self, w: &WorkerId, ttl: HeartbeatTtl) -> CoreResult<()> {
        self.timed("heartbeat", self.inner.heartbeat(w, ttl)).await
    }
    async fn live_workers(&self) -> CoreResult<Vec<WorkerId>> {
        self.timed("live_workers", self.inner.live_workers()).await
    }
    async fn deregister_worker(&self, w: &WorkerId) -> CoreResult<()> {
        self.timed("deregister_worker", self.inner.deregister_worker(w))
            .await
    }
    async fn prune_dead_workers(&self) -> CoreResult<usize> {
        self.timed("prune_dead_workers", self.inner.prune_dead_workers())
            .await
    }
}

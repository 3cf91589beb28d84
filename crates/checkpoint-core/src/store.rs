//! The store traits: [`LeaseManager`] (leases), [`Checkpointer`] (positions, fenced by the
//! lease), [`Membership`] (live workers), and [`Store`], all three together, which is what a
//! consumer takes as `Arc<dyn Store>`.
//!
//! Every required method is one atomic operation of the contract ([`crate::contract`]) and
//! cannot be derived from the others; conveniences live in [`CheckpointerExt`].

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::types::{
    AppName, FencingToken, HeartbeatTtl, Lease, LeaseDuration, LeaseKey, Position, RenewOutcome,
    ShardId, StreamName, WorkerId,
};

/// Whose clock decides expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockSource {
    /// The database server's clock, read inside the atomic operation.
    Server,
    /// The clock of the one host that runs the store (memory, SQLite).
    Host,
    /// The client's clock; deadlines carry a skew allowance (DynamoDB has no server clock).
    Client {
        /// Extra time a lease is considered live past its deadline before another worker may
        /// take it.
        skew_allowance: Duration,
    },
    /// No host's clock is trusted by another: a handle treats another worker's lease (or
    /// membership) as expired only after it has itself observed the record's version counter
    /// unchanged for the lease duration (or heartbeat TTL) on its own monotonic clock, as the
    /// KCL does. A fresh handle therefore watches a lease for one duration before taking it.
    /// DynamoDB, which has no server clock.
    Observed,
}

/// How a checkpoint survives failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Process memory only: lost when the process exits.
    Process,
    /// Written to a local file or database with the configured sync policy.
    Disk,
    /// As durable as the server's own persistence settings (Redis).
    ServerConfigured,
    /// Replicated by a managed service (DynamoDB).
    Replicated,
}

/// How renew-many reaches the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchMode {
    /// One statement, script or transaction for the whole batch.
    OneRoundTrip,
    /// Batches of at most this many leases per request.
    Chunked(usize),
    /// One request per lease, this many at once.
    Concurrent(usize),
}

/// What a backend supports and how it behaves, declared by the backend and shown in the
/// capability table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Backend name, for example `"sqlite"`.
    pub backend: &'static str,
    /// Whose clock decides expiry.
    pub clock: ClockSource,
    /// Whether the backend can write a checkpoint inside the caller's own transaction.
    pub transactional_checkpoint: bool,
    /// How renew-many reaches the store.
    pub renew_many: BatchMode,
    /// How a checkpoint survives failures.
    pub durability: Durability,
    /// Whether two processes can share the store.
    pub multi_process: bool,
}

impl Capabilities {
    /// One row of the capability table in the README.
    pub fn table_row(&self) -> String {
        let clock = match self.clock {
            ClockSource::Server => "server".to_owned(),
            ClockSource::Host => "host".to_owned(),
            ClockSource::Client { skew_allowance } => format!("client + {skew_allowance:?} skew"),
            ClockSource::Observed => "observed version, own monotonic clock".to_owned(),
        };
        let batch = match self.renew_many {
            BatchMode::OneRoundTrip => "1 round trip".to_owned(),
            BatchMode::Chunked(n) => format!("chunks of {n}"),
            BatchMode::Concurrent(n) => format!("{n} concurrent"),
        };
        format!(
            "| {} | {} | {} | {} | {:?} | {} |",
            self.backend,
            clock,
            if self.transactional_checkpoint {
                "yes"
            } else {
                "no"
            },
            batch,
            self.durability,
            if self.multi_process { "yes" } else { "no" },
        )
    }

    /// The header of [`Capabilities::table_row`].
    pub fn table_header() -> &'static str {
        "| backend | expiry clock | transactional checkpoint | renew many | durability | multi-process |\n\
         | --- | --- | --- | --- | --- | --- |"
    }
}

/// The lease table of one app: exclusive, expiring ownership of each shard with a fencing
/// token. Each method is one atomic operation of the contract (`CONTRACT.md`, included as
/// [`crate::contract`]); the operation numbers below are the contract's.
///
/// The names follow the KCL's lease manager and vmware-go-kcl's `Checkpointer`
/// (`GetLease`, `RemoveLeaseOwner`, `RemoveLeaseInfo`); `evict_lease` is the KCL's admin
/// `evictLease`.
///
/// Errors are [`crate::Error`]: a failed condition is a typed kind (held, lost, changed,
/// regression, not found), never a backend error, and is never retried blindly.
#[async_trait]
pub trait LeaseManager: Send + Sync + fmt::Debug {
    /// The app this handle was opened for.
    fn app(&self) -> &AppName;

    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Operation 1: create tables, indexes or scripts if absent. Idempotent and safe to call
    /// from many workers at once; an existing incompatible layout is
    /// [`crate::Error::SchemaMismatch`].
    async fn init(&self) -> Result<()>;

    /// Operation 2: create a free record (token 0) with these parents and initial checkpoint
    /// unless one exists. Returns whether this call created it.
    async fn create_lease_if_absent(
        &self,
        key: &LeaseKey,
        parents: &[ShardId],
        initial: Option<&Position>,
    ) -> Result<bool>;

    /// Operation 3: grant the lease to `worker` when free, expired, or already held by it;
    /// creates an absent record. A grant to a new owner bumps the token. Otherwise
    /// [`crate::Error::LeaseHeld`].
    async fn get_lease(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        duration: LeaseDuration,
    ) -> Result<Lease>;

    /// Operation 4: extend the deadline iff owner and token match (even past the deadline when
    /// nobody took it). Otherwise [`crate::Error::LeaseLost`].
    async fn renew(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        duration: LeaseDuration,
    ) -> Result<Lease>;

    /// Operation 4, batched: renew each `(key, token)` held by `worker`, in as few round trips as
    /// the backend allows. Lost leases are reported, not errors.
    async fn renew_many(
        &self,
        worker: &WorkerId,
        leases: &[(LeaseKey, FencingToken)],
        duration: LeaseDuration,
    ) -> Result<RenewOutcome>;

    /// Operation 7: release the lease iff owner and token match; owner and deadline are cleared,
    /// token and checkpoint kept. Repeating a completed release is not an error. Otherwise
    /// [`crate::Error::LeaseLost`].
    async fn remove_lease_owner(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
    ) -> Result<Lease>;

    /// Operation 7, admin form (the KCL's `evictLease`): release whoever holds it.
    /// [`crate::Error::NotFound`] when there is no record.
    async fn evict_lease(&self, key: &LeaseKey) -> Result<Lease>;

    /// Operation 8: delete the record (shard gone). Deleting an absent record is not an error.
    async fn remove_lease_info(&self, key: &LeaseKey) -> Result<()>;

    /// Operation 9: every record of the app, or of one stream, sorted by key.
    async fn list_leases(&self, stream: Option<&StreamName>) -> Result<Vec<Lease>>;

    /// Operation 10: take a live lease only if it is still held by `expected_owner` with
    /// `expected_token`; bumps the token. Otherwise [`crate::Error::LeaseChanged`].
    async fn steal(
        &self,
        key: &LeaseKey,
        thief: &WorkerId,
        expected_owner: &WorkerId,
        expected_token: FencingToken,
        duration: LeaseDuration,
    ) -> Result<Lease>;

    /// Operation 11: ask the holder to hand the lease over to `claimant`; the holder sees the
    /// claim on its next renew or fetch.
    async fn claim(&self, key: &LeaseKey, claimant: &WorkerId) -> Result<Lease>;
}

/// The positions of one app's shards, fenced by the lease: what a record processor
/// checkpoints through. Each method is one atomic operation of the contract.
#[async_trait]
pub trait Checkpointer: LeaseManager {
    /// Operation 5: store `position` iff owner and token match (fencing, else
    /// [`crate::Error::LeaseLost`] and nothing written), and it is not behind the stored one
    /// ([`crate::Error::CheckpointRegression`]). Clears the pending position and the
    /// owner-switch count.
    async fn checkpoint_sequence(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease>;

    /// Operation 14: store a pending position (the KCL's `prepareCheckpoint`), fenced and
    /// checked like a checkpoint.
    async fn prepare_checkpoint(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease>;

    /// Operation 6: the record holding the checkpoint (its `checkpoint`, pending checkpoint,
    /// owner and token), or `None`. Always a strongly consistent read.
    async fn fetch_checkpoint(&self, key: &LeaseKey) -> Result<Option<Lease>>;

    /// Admin reset of the checkpoint, the one way to move it backwards (or clear it).
    async fn reset_checkpoint(&self, key: &LeaseKey, position: Option<&Position>) -> Result<Lease>;
}

/// Operation 12: the live workers of an app (the kinesumer state store).
#[async_trait]
pub trait Membership: Send + Sync + fmt::Debug {
    /// Register (or re-register) `worker`, live for `ttl`.
    async fn register_worker(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()>;

    /// Extend a registered worker's life; [`crate::Error::NotFound`] when it is not registered
    /// (deregistered or pruned), so it knows to register again.
    async fn heartbeat(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()>;

    /// Workers whose heartbeat has not expired, sorted.
    async fn live_workers(&self) -> Result<Vec<WorkerId>>;

    /// Remove `worker`; absent is not an error.
    async fn deregister_worker(&self, worker: &WorkerId) -> Result<()>;

    /// Remove every expired worker; returns how many.
    async fn prune_dead_workers(&self) -> Result<usize>;
}

/// A complete store: leases, checkpoints and membership.
pub trait Store: LeaseManager + Checkpointer + Membership {}

impl<T: Checkpointer + Membership + ?Sized> Store for T {}

/// Conveniences over any [`Checkpointer`].
#[async_trait]
pub trait CheckpointerExt: Checkpointer {
    /// The stored checkpoint position of `key`, or `None` (absent record or no checkpoint).
    async fn fetch_position(&self, key: &LeaseKey) -> Result<Option<Position>> {
        Ok(self.fetch_checkpoint(key).await?.and_then(|l| l.checkpoint))
    }
}

impl<T: Checkpointer + ?Sized> CheckpointerExt for T {}

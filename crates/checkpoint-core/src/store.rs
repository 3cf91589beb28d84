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
    AppName, FencingToken, HeartbeatTtl, Lease, LeaseDuration, LeaseKey, Listing, Position,
    RenewOutcome, ShardId, StreamName, WorkerId,
};

/// Whose clock decides expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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

impl ClockSource {
    /// How long past its deadline a lease still counts as live for another worker: the skew
    /// allowance of [`ClockSource::Client`], zero for every other clock (a server's or host's
    /// clock is one clock; an observing handle already waits a whole lease duration).
    ///
    /// ```
    /// use std::time::Duration;
    /// use checkpoint_core::ClockSource;
    ///
    /// let skew_allowance = Duration::from_secs(1);
    /// assert_eq!(ClockSource::Client { skew_allowance }.skew_allowance(), skew_allowance);
    /// assert_eq!(ClockSource::Server.skew_allowance(), Duration::ZERO);
    /// ```
    pub fn skew_allowance(&self) -> Duration {
        match *self {
            ClockSource::Client { skew_allowance } => skew_allowance,
            ClockSource::Server | ClockSource::Host | ClockSource::Observed => Duration::ZERO,
        }
    }
}

/// How a checkpoint survives failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
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
///
/// Built with [`Capabilities::new`] and the `with_*` setters: the struct is `#[non_exhaustive]`
/// so that a capability added later is not a breaking change for stores written outside this
/// workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
    /// The capabilities of a store named `backend` judging expiry by `clock` with `durability`,
    /// and otherwise the least a store can offer: no transactional checkpoint, renew-many as
    /// one request per lease at a time, one process. Adjust with the `with_*` setters.
    ///
    /// ```
    /// use checkpoint_core::{BatchMode, Capabilities, ClockSource, Durability};
    ///
    /// let capabilities = Capabilities::new("my-kv", ClockSource::Server, Durability::Disk)
    ///     .with_renew_many(BatchMode::OneRoundTrip)
    ///     .with_multi_process(true);
    /// assert!(!capabilities.transactional_checkpoint);
    /// ```
    pub fn new(backend: &'static str, clock: ClockSource, durability: Durability) -> Self {
        Self {
            backend,
            clock,
            transactional_checkpoint: false,
            renew_many: BatchMode::Concurrent(1),
            durability,
            multi_process: false,
        }
    }

    /// The same capabilities under another backend name: for a wrapper (a test double, a
    /// metrics or fault-injection layer) around another store.
    ///
    /// ```
    /// use checkpoint_core::{AppName, LeaseManager, MemoryStore};
    ///
    /// let inner = MemoryStore::new(AppName::new("billing")?);
    /// let wrapped = inner.capabilities().with_backend("memory (traced)");
    /// assert_eq!(wrapped.backend, "memory (traced)");
    /// assert_eq!(wrapped.clock, inner.capabilities().clock);
    /// # Ok::<(), checkpoint_core::Error>(())
    /// ```
    pub fn with_backend(mut self, backend: &'static str) -> Self {
        self.backend = backend;
        self
    }

    /// Whether the store can write a checkpoint inside the caller's transaction. Default: no.
    pub fn with_transactional_checkpoint(mut self, yes: bool) -> Self {
        self.transactional_checkpoint = yes;
        self
    }

    /// How renew-many reaches the store. Default: [`BatchMode::Concurrent`]`(1)`.
    pub fn with_renew_many(mut self, mode: BatchMode) -> Self {
        self.renew_many = mode;
        self
    }

    /// Whether two processes can share the store. Default: no.
    pub fn with_multi_process(mut self, yes: bool) -> Self {
        self.multi_process = yes;
        self
    }

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
    ///
    /// ```
    /// use checkpoint_core::{AppName, LeaseManager, MemoryStore};
    ///
    /// let store = MemoryStore::new(AppName::new("billing")?);
    /// assert_eq!(store.app().as_str(), "billing");
    /// # Ok::<(), checkpoint_core::Error>(())
    /// ```
    fn app(&self) -> &AppName;

    /// What this backend supports.
    ///
    /// ```
    /// use checkpoint_core::{AppName, ClockSource, LeaseManager, MemoryStore};
    ///
    /// let store = MemoryStore::new(AppName::new("billing")?);
    /// let capabilities = store.capabilities();
    /// assert_eq!(capabilities.clock, ClockSource::Host);
    /// assert!(!capabilities.multi_process);
    /// # Ok::<(), checkpoint_core::Error>(())
    /// ```
    fn capabilities(&self) -> Capabilities;

    /// Operation 1: create tables, indexes or scripts if absent. Idempotent and safe to call
    /// from many workers at once; an existing incompatible layout is
    /// [`crate::Error::SchemaMismatch`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// store.init().await?;
    /// store.init().await?; // idempotent
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn init(&self) -> Result<()>;

    /// Operation 2: create a free record (token 0) with these parents and initial checkpoint
    /// unless one exists. Returns whether this call created it.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// let parents = [ShardId::new("shard-parent")?];
    /// assert!(store.create_lease_if_absent(&key, &parents, Some(&Position::TrimHorizon)).await?);
    /// assert!(!store.create_lease_if_absent(&key, &[], None).await?); // exists: unchanged
    /// let record = store.fetch_checkpoint(&key).await?.unwrap();
    /// assert_eq!((record.token, record.checkpoint), (FencingToken(0), Some(Position::TrimHorizon)));
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn create_lease_if_absent(
        &self,
        key: &LeaseKey,
        parents: &[ShardId],
        initial: Option<&Position>,
    ) -> Result<bool>;

    /// Operation 3: grant the lease to `worker` when free, expired, or already held by it;
    /// creates an absent record. A grant to a new owner bumps the token. Otherwise
    /// [`crate::Error::LeaseHeld`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// let lease = store.get_lease(&key, &me, ten_s).await?;
    /// assert_eq!(lease.token, FencingToken(1));
    /// assert_eq!(store.get_lease(&key, &me, ten_s).await?.token, lease.token); // re-take keeps it
    /// let refused = store.get_lease(&key, &other, ten_s).await.unwrap_err();
    /// assert!(matches!(refused, Error::LeaseHeld { ref holder, .. } if *holder == me));
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn get_lease(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        duration: LeaseDuration,
    ) -> Result<Lease>;

    /// Operation 4: extend the deadline iff owner and token match (even past the deadline when
    /// nobody took it). Otherwise [`crate::Error::LeaseLost`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// let lease = store.get_lease(&key, &me, ten_s).await?;
    /// let renewed = store.renew(&key, &me, lease.token, ten_s).await?;
    /// assert_eq!(renewed.token, lease.token);
    /// let stale = store.renew(&key, &me, FencingToken(99), ten_s).await.unwrap_err();
    /// assert_eq!(stale.kind(), ErrorKind::LeaseLost);
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn renew(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        duration: LeaseDuration,
    ) -> Result<Lease>;

    /// Operation 4, batched: renew each `(key, token)` held by `worker`, in as few round trips as
    /// the backend allows. Lost leases are reported, not errors.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// let other_key = LeaseKey::parse("orders", "shard-1")?;
    /// let a = store.get_lease(&key, &me, ten_s).await?;
    /// let b = store.get_lease(&other_key, &me, ten_s).await?;
    /// store.evict_lease(&other_key).await?; // an administrator frees shard-1
    /// let outcome = store.renew_many(&me, &[(key.clone(), a.token), (other_key.clone(), b.token)], ten_s).await?;
    /// assert_eq!(outcome.renewed.len(), 1);
    /// assert_eq!(outcome.lost, vec![other_key]);
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn renew_many(
        &self,
        worker: &WorkerId,
        leases: &[(LeaseKey, FencingToken)],
        duration: LeaseDuration,
    ) -> Result<RenewOutcome>;

    /// Operation 7: release the lease iff owner and token match; owner and deadline are cleared,
    /// token and checkpoint kept. Repeating a completed release is not an error. Otherwise
    /// [`crate::Error::LeaseLost`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// let lease = store.get_lease(&key, &me, ten_s).await?;
    /// store.checkpoint_sequence(&key, &me, lease.token, &Position::sequence("7")?).await?;
    /// let released = store.remove_lease_owner(&key, &me, lease.token).await?;
    /// assert_eq!((released.owner, released.token), (None, lease.token));
    /// assert_eq!(released.checkpoint, Some(Position::sequence("7")?)); // kept
    /// assert_eq!(store.get_lease(&key, &other, ten_s).await?.token, lease.token.next());
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn remove_lease_owner(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
    ) -> Result<Lease>;

    /// Operation 7, admin form (the KCL's `evictLease`): release whoever holds it.
    /// [`crate::Error::NotFound`] when there is no record.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// let lease = store.get_lease(&key, &me, ten_s).await?;
    /// assert_eq!(store.evict_lease(&key).await?.owner, None);
    /// // The evicted holder's writes are refused from now on.
    /// let err = store.renew(&key, &me, lease.token, ten_s).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::LeaseLost);
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn evict_lease(&self, key: &LeaseKey) -> Result<Lease>;

    /// Operation 8: delete the record (shard gone). Deleting an absent record is not an error.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// store.get_lease(&key, &me, ten_s).await?;
    /// store.remove_lease_info(&key).await?;
    /// store.remove_lease_info(&key).await?; // absent: not an error
    /// assert!(store.fetch_checkpoint(&key).await?.is_none());
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn remove_lease_info(&self, key: &LeaseKey) -> Result<()>;

    /// Operation 9: every record of the app, or of one stream, sorted by key.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// for shard in ["shard-1", "shard-0"] {
    ///     store.create_lease_if_absent(&LeaseKey::parse("orders", shard)?, &[], None).await?;
    /// }
    /// store.create_lease_if_absent(&LeaseKey::parse("refunds", "shard-0")?, &[], None).await?;
    /// let orders = store.list_leases(Some(&StreamName::new("orders")?)).await?;
    /// let shards: Vec<&str> = orders.iter().map(|l| l.key.shard.as_str()).collect();
    /// assert_eq!(shards, ["shard-0", "shard-1"]);
    /// assert_eq!(store.list_leases(None).await?.len(), 3);
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn list_leases(&self, stream: Option<&StreamName>) -> Result<Vec<Lease>>;

    /// Operation 9 with the store's clock: the records of [`LeaseManager::list_leases`] and the
    /// store-clock instant they were judged at, read before the records (the contract's operation 9). A runtime judges another worker's liveness with [`Listing::is_live`] and
    /// [`Listing::remaining`], never against its own wall clock.
    async fn list_leases_timed(&self, stream: Option<&StreamName>) -> Result<Listing>;

    /// Operation 10: take a live lease only if it is still held by `expected_owner` with
    /// `expected_token`; bumps the token. Otherwise [`crate::Error::LeaseChanged`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// let seen = store.get_lease(&key, &other, ten_s).await?; // what the balancer saw
    /// let stolen = store.steal(&key, &me, &other, seen.token, ten_s).await?;
    /// assert_eq!((stolen.owner, stolen.token), (Some(me.clone()), seen.token.next()));
    /// // The record changed since: a second steal with the old view is refused.
    /// let err = store.steal(&key, &other, &me, seen.token, ten_s).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::LeaseChanged);
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
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
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// let lease = store.get_lease(&key, &other, ten_s).await?;
    /// store.claim(&key, &me).await?;
    /// // The holder sees the claim when it renews, then checkpoints and releases.
    /// let renewed = store.renew(&key, &other, lease.token, ten_s).await?;
    /// assert_eq!(renewed.claim, Some(me.clone()));
    /// store.remove_lease_owner(&key, &other, lease.token).await?;
    /// let mine = store.get_lease(&key, &me, ten_s).await?;
    /// assert_eq!((mine.claim, mine.token), (None, lease.token.next()));
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn claim(&self, key: &LeaseKey, claimant: &WorkerId) -> Result<Lease>;

    /// Admin import (the contract's operation 15): write `record` exactly as given
    /// (owner, token, deadline, checkpoint, pending checkpoint, parents, claim, owner-switch
    /// count) only when no record with its key exists; an existing record is left untouched.
    /// Returns whether this call wrote it. For moving a lease table between stores with its
    /// tokens, so fencing stays monotonic across the move. A record no operation could have
    /// produced is [`crate::Error::InvalidInput`] naming the field, checked by
    /// [`crate::rules::check_import`] before anything is sent.
    async fn import_lease(&self, record: &Lease) -> Result<bool>;

    /// Operation 16, admin (the contract's "List the apps of a namespace"): the names of every
    /// app holding at least one lease record in the namespace this handle's store reads (the
    /// tables of its SQL prefix or schema, the Redis database and key prefix, the DynamoDB
    /// table), sorted by their bytes, each once, whichever app the handle was opened for. An
    /// app whose records were all deleted, or that only has membership records, is not listed:
    /// the listing names what `checkpointctl migrate --all-apps` has to move. The backend pages
    /// through the namespace itself; the result is not one snapshot, so an app created or
    /// emptied during the call may or may not appear. A stored app name that is not a valid
    /// [`AppName`] is [`crate::Error::Corrupt`] naming `app`.
    ///
    /// It lives on `LeaseManager`, not on a separate admin trait, because tools reach a store
    /// only as `Arc<dyn Store>` (opened by URL), and a required method cannot be silently lost
    /// by a wrapper store, as a default or an optional trait could.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let db = MemoryDatabase::new();
    /// let (billing, audit) = (db.open(AppName::new("billing")?), db.open(AppName::new("audit")?));
    /// let key = LeaseKey::parse("orders", "shard-0")?;
    /// billing.create_lease_if_absent(&key, &[], None).await?;
    /// audit.create_lease_if_absent(&key, &[], None).await?;
    /// assert_eq!(billing.list_apps().await?, vec![AppName::new("audit")?, AppName::new("billing")?]);
    /// audit.remove_lease_info(&key).await?; // no record left: no longer listed
    /// assert_eq!(audit.list_apps().await?, vec![AppName::new("billing")?]);
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn list_apps(&self) -> Result<Vec<AppName>>;
}

/// The positions of one app's shards, fenced by the lease: what a record processor
/// checkpoints through. Each method is one atomic operation of the contract.
#[async_trait]
pub trait Checkpointer: LeaseManager {
    /// Operation 5: store `position` iff owner and token match (fencing, else
    /// [`crate::Error::LeaseLost`] and nothing written), and it is not behind the stored one
    /// ([`crate::Error::CheckpointRegression`]). Clears the pending position and the
    /// owner-switch count.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// let lease = store.get_lease(&key, &me, ten_s).await?;
    /// store.checkpoint_sequence(&key, &me, lease.token, &Position::sequence("100")?).await?;
    /// let behind = store.checkpoint_sequence(&key, &me, lease.token, &Position::sequence("99")?).await;
    /// assert_eq!(behind.unwrap_err().kind(), ErrorKind::CheckpointRegression);
    /// let fenced = store.checkpoint_sequence(&key, &other, lease.token, &Position::sequence("101")?).await;
    /// assert_eq!(fenced.unwrap_err().kind(), ErrorKind::LeaseLost);
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn checkpoint_sequence(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease>;

    /// Operation 14: store a pending position (the KCL's `prepareCheckpoint`), fenced and
    /// checked like a checkpoint.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// let lease = store.get_lease(&key, &me, ten_s).await?;
    /// let prepared = store.prepare_checkpoint(&key, &me, lease.token, &Position::sequence("5")?).await?;
    /// assert_eq!(prepared.pending_checkpoint, Some(Position::sequence("5")?));
    /// let done = store.checkpoint_sequence(&key, &me, lease.token, &Position::sequence("5")?).await?;
    /// assert_eq!(done.pending_checkpoint, None);
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn prepare_checkpoint(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease>;

    /// Operation 6: the record holding the checkpoint (its `checkpoint`, pending checkpoint,
    /// owner and token), or `None`. Always a strongly consistent read.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// assert!(store.fetch_checkpoint(&key).await?.is_none());
    /// let lease = store.get_lease(&key, &me, ten_s).await?;
    /// store.checkpoint_sequence(&key, &me, lease.token, &Position::sequence("42")?).await?;
    /// let record = store.fetch_checkpoint(&key).await?.unwrap();
    /// assert_eq!((record.checkpoint, record.owner), (Some(Position::sequence("42")?), Some(me)));
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn fetch_checkpoint(&self, key: &LeaseKey) -> Result<Option<Lease>>;

    /// Admin reset of the checkpoint, the one way to move it backwards (or clear it).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// let lease = store.get_lease(&key, &me, ten_s).await?;
    /// store.checkpoint_sequence(&key, &me, lease.token, &Position::sequence("42")?).await?;
    /// let reset = store.reset_checkpoint(&key, Some(&Position::TrimHorizon)).await?;
    /// assert_eq!((reset.checkpoint, reset.token), (Some(Position::TrimHorizon), lease.token));
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn reset_checkpoint(&self, key: &LeaseKey, position: Option<&Position>) -> Result<Lease>;
}

/// Operation 12: the live workers of an app (the kinesumer state store).
#[async_trait]
pub trait Membership: Send + Sync + fmt::Debug {
    /// Register (or re-register) `worker`, live for `ttl`, as this handle's instance.
    ///
    /// Atomic in the store (contract, operation 12; [`crate::rules::register_worker`]): the
    /// record carries this handle's [`crate::InstanceId`]. Registering succeeds when no record
    /// exists, when the record is this instance's, or when another instance's record has
    /// expired by the store's clock (a takeover); while another instance's record is live it
    /// fails with [`crate::Error::WorkerIdInUse`] and writes nothing, so of two processes
    /// started at once with one id exactly one registers.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// let ttl = HeartbeatTtl::new(Duration::from_secs(30))?;
    /// store.register_worker(&other, ttl).await?;
    /// store.register_worker(&me, ttl).await?;
    /// assert_eq!(store.live_workers().await?, vec![me.clone(), other.clone()]); // sorted
    ///
    /// // A second process with the same id (here a second handle: another instance).
    /// let db = MemoryDatabase::new();
    /// let (first, second) = (db.open(AppName::new("billing")?), db.open(AppName::new("billing")?));
    /// first.register_worker(&me, ttl).await?;
    /// let refused = second.register_worker(&me, ttl).await.unwrap_err();
    /// assert_eq!(refused.kind(), ErrorKind::WorkerIdInUse);
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn register_worker(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()>;

    /// Extend a registered worker's life; [`crate::Error::NotFound`] when it is not registered
    /// (deregistered or pruned), so it knows to register again;
    /// [`crate::Error::WorkerIdInUse`] when the record is another instance's (this instance's
    /// registration expired and another took the id over), and nothing is written.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// let ttl = HeartbeatTtl::new(Duration::from_secs(30))?;
    /// store.register_worker(&me, ttl).await?;
    /// store.heartbeat(&me, ttl).await?;
    /// let unknown = store.heartbeat(&other, ttl).await.unwrap_err();
    /// assert_eq!(unknown.kind(), ErrorKind::NotFound); // register again
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn heartbeat(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()>;

    /// Workers whose heartbeat has not expired, sorted.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// store.register_worker(&me, HeartbeatTtl::new(Duration::from_secs(30))?).await?;
    /// assert_eq!(store.live_workers().await?, vec![me]);
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn live_workers(&self) -> Result<Vec<WorkerId>>;

    /// Remove `worker`; absent is not an error.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// store.register_worker(&me, HeartbeatTtl::new(Duration::from_secs(30))?).await?;
    /// store.deregister_worker(&me).await?;
    /// store.deregister_worker(&me).await?; // absent: not an error
    /// assert!(store.live_workers().await?.is_empty());
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn deregister_worker(&self, worker: &WorkerId) -> Result<()>;

    /// Remove every expired worker; returns how many.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// let clock = std::sync::Arc::new(ManualClock::default());
    /// let store = MemoryDatabase::with_clock(clock.clone()).open(AppName::new("billing")?);
    /// store.register_worker(&me, HeartbeatTtl::new(Duration::from_secs(30))?).await?;
    /// clock.advance(Duration::from_secs(31));
    /// assert_eq!(store.prune_dead_workers().await?, 1);
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn prune_dead_workers(&self) -> Result<usize>;
}

/// A complete store: leases, checkpoints and membership.
pub trait Store: LeaseManager + Checkpointer + Membership {}

impl<T: Checkpointer + Membership + ?Sized> Store for T {}

/// Conveniences over any [`Checkpointer`].
#[async_trait]
pub trait CheckpointerExt: Checkpointer {
    /// The stored checkpoint position of `key`, or `None` (absent record or no checkpoint).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new(AppName::new("billing")?);
    /// # let key = LeaseKey::parse("orders", "shard-0")?;
    /// # let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    /// # let ten_s = LeaseDuration::new(Duration::from_secs(10))?;
    /// assert_eq!(store.fetch_position(&key).await?, None);
    /// store.create_lease_if_absent(&key, &[], Some(&Position::Latest)).await?;
    /// assert_eq!(store.fetch_position(&key).await?, Some(Position::Latest));
    /// # Ok::<(), Error>(()) }).unwrap();
    /// ```
    async fn fetch_position(&self, key: &LeaseKey) -> Result<Option<Position>> {
        Ok(self.fetch_checkpoint(key).await?.and_then(|l| l.checkpoint))
    }
}

impl<T: Checkpointer + ?Sized> CheckpointerExt for T {}

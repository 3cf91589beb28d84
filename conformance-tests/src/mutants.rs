//! Deliberately broken stores. Each wraps the memory reference store and breaks one rule of
//! the contract (`checkpoint_core::contract`) the way real backends have broken it; `tests/mutants.rs` proves the conformance
//! suite rejects every one. A suite that passes a broken store is a bug in the suite.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use checkpoint_core::Listing;
use checkpoint_core::{
    AppName, Capabilities, Checkpointer, Error, FencingToken, HeartbeatTtl, Lease, LeaseDuration,
    LeaseKey, LeaseManager, Membership, MemoryDatabase, MemoryStore, Position, RenewOutcome,
    Result, ShardId, Store, StreamName, WorkerId,
};

/// The ways a mutant is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Checkpoint ignores owner and token (vmware-go-kcl's unconditional checkpoint write).
    NoFencingOnCheckpoint,
    /// Acquire grants a live lease held by someone else: two winners.
    TwoWinners,
    /// Checkpoint accepts a position lower than the stored one.
    AcceptsRegressions,
    /// Every fifth checkpoint is dropped while reporting success.
    LosesWrites,
    /// Renew succeeds (taking the lease back) after another worker took it.
    RenewsTakenLease,
    /// A conditional write whose condition failed is reported as a success, as a client that
    /// assumes success when the reply is lost would.
    FakeSuccessOnDroppedReply,
    /// Expired leases are never granted to another worker.
    NeverExpires,
    /// Every app shares one namespace.
    SharedAcrossApps,
    /// Listing returns only the first page of 100.
    TruncatedList,
    /// A steal or grant to a new owner does not bump the token.
    NoTokenBump,
}

impl Mutation {
    /// Every mutation.
    pub const ALL: [Mutation; 10] = [
        Self::NoFencingOnCheckpoint,
        Self::TwoWinners,
        Self::AcceptsRegressions,
        Self::LosesWrites,
        Self::RenewsTakenLease,
        Self::FakeSuccessOnDroppedReply,
        Self::NeverExpires,
        Self::SharedAcrossApps,
        Self::TruncatedList,
        Self::NoTokenBump,
    ];

    /// Scenarios that must catch this mutation (at least one of them must fail).
    pub fn caught_by(self) -> &'static [&'static str] {
        match self {
            Self::NoFencingOnCheckpoint => &[
                "fencing_after_steal",
                "fencing_after_expiry_takeover",
                "fencing_after_out_of_band_bump",
            ],
            Self::TwoWinners => &[
                "mutual_exclusion_one_winner",
                "get_lease_grants_and_reports_holder",
            ],
            Self::AcceptsRegressions => &["monotonic_positions", "shard_end_is_terminal"],
            Self::LosesWrites => &[
                "mutual_exclusion_exact_count",
                "monotonic_positions",
                "model_matches_reference",
            ],
            Self::RenewsTakenLease => &["fencing_after_steal", "fencing_after_expiry_takeover"],
            Self::FakeSuccessOnDroppedReply => &["fencing_after_steal", "monotonic_positions"],
            Self::NeverExpires => &[
                "fencing_after_expiry_takeover",
                "renew_past_deadline_when_not_taken",
            ],
            Self::SharedAcrossApps => &["isolation_between_apps"],
            Self::TruncatedList => &["list_leases_paginated"],
            Self::NoTokenBump => &[
                "get_lease_grants_and_reports_holder",
                "fencing_after_steal",
                "mutual_exclusion_exact_count",
            ],
        }
    }
}

/// A memory store broken in one way.
#[derive(Debug)]
pub struct Mutant {
    inner: MemoryStore,
    mutation: Mutation,
    checkpoints: AtomicU64,
}

/// A factory of mutants sharing one memory database, for [`checkpoint_core::conformance::run_all`].
pub fn mutant_factory(
    mutation: Mutation,
) -> impl Fn(AppName) -> std::future::Ready<Result<Arc<dyn Store>>> + Send + Sync {
    let db = MemoryDatabase::new();
    move |app| {
        let app = if mutation == Mutation::SharedAcrossApps {
            AppName::new("everyone").expect("valid")
        } else {
            app
        };
        std::future::ready(Ok(Arc::new(Mutant {
            inner: db.open(app),
            mutation,
            checkpoints: AtomicU64::new(0),
        }) as Arc<dyn Store>))
    }
}

impl Mutant {
    fn is(&self, m: Mutation) -> bool {
        self.mutation == m
    }

    /// Writes `position` unconditionally, the way a store without a WHERE clause would.
    async fn overwrite_checkpoint(&self, key: &LeaseKey, position: &Position) -> Result<Lease> {
        self.inner.reset_checkpoint(key, Some(position)).await
    }

    /// Puts `worker` in as owner, keeping the token if `keep_token`.
    async fn force_grant(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        duration: LeaseDuration,
        keep_token: bool,
    ) -> Result<Lease> {
        let before = self.inner.fetch_checkpoint(key).await?;
        self.inner.evict_lease(key).await?;
        let granted = self.inner.get_lease(key, worker, duration).await?;
        if keep_token && let Some(before) = before {
            return Ok(Lease {
                token: before.token,
                ..granted
            });
        }
        Ok(granted)
    }
}

#[async_trait]
impl LeaseManager for Mutant {
    fn app(&self) -> &AppName {
        self.inner.app()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: "mutant",
            ..self.inner.capabilities()
        }
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

    async fn get_lease(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        let current = self.inner.fetch_checkpoint(key).await?;
        if self.is(Mutation::NeverExpires)
            && let Some(l) = &current
            && let Some(owner) = l.owner.as_ref().filter(|o| *o != worker)
        {
            return Err(Error::LeaseHeld {
                key: key.clone(),
                holder: owner.clone(),
                remaining: Default::default(),
            });
        }
        match self.inner.get_lease(key, worker, duration).await {
            Err(Error::LeaseHeld { .. }) if self.is(Mutation::TwoWinners) => {
                self.force_grant(key, worker, duration, false).await
            }
            Ok(l)
                if self.is(Mutation::NoTokenBump)
                    && current
                        .as_ref()
                        .is_some_and(|c| c.owner.as_ref() != Some(worker)) =>
            {
                Ok(Lease {
                    token: current.map_or(l.token, |c| c.token),
                    ..l
                })
            }
            other => other,
        }
    }

    async fn renew(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        match self.inner.renew(key, worker, token, duration).await {
            Err(Error::LeaseLost { .. }) if self.is(Mutation::RenewsTakenLease) => {
                if self.inner.fetch_checkpoint(key).await?.is_some() {
                    return self.force_grant(key, worker, duration, true).await;
                }
                Err(Error::LeaseLost {
                    key: key.clone(),
                    worker: worker.clone(),
                    token,
                })
            }
            other => other,
        }
    }

    async fn renew_many(
        &self,
        worker: &WorkerId,
        leases: &[(LeaseKey, FencingToken)],
        duration: LeaseDuration,
    ) -> Result<RenewOutcome> {
        self.inner.renew_many(worker, leases, duration).await
    }

    async fn remove_lease_owner(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
    ) -> Result<Lease> {
        self.inner.remove_lease_owner(key, worker, token).await
    }

    async fn evict_lease(&self, key: &LeaseKey) -> Result<Lease> {
        self.inner.evict_lease(key).await
    }

    async fn remove_lease_info(&self, key: &LeaseKey) -> Result<()> {
        self.inner.remove_lease_info(key).await
    }

    async fn list_leases(&self, stream: Option<&StreamName>) -> Result<Vec<Lease>> {
        let mut all = self.inner.list_leases(stream).await?;
        if self.is(Mutation::TruncatedList) {
            all.truncate(100);
        }
        Ok(all)
    }

    async fn list_leases_timed(&self, stream: Option<&StreamName>) -> Result<Listing> {
        let mut listing = self.inner.list_leases_timed(stream).await?;
        if self.is(Mutation::TruncatedList) {
            listing.leases.truncate(100);
        }
        Ok(listing)
    }

    async fn steal(
        &self,
        key: &LeaseKey,
        thief: &WorkerId,
        expected_owner: &WorkerId,
        expected_token: FencingToken,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        let stolen = self
            .inner
            .steal(key, thief, expected_owner, expected_token, duration)
            .await?;
        if self.is(Mutation::NoTokenBump) {
            return Ok(Lease {
                token: expected_token,
                ..stolen
            });
        }
        Ok(stolen)
    }

    async fn claim(&self, key: &LeaseKey, claimant: &WorkerId) -> Result<Lease> {
        self.inner.claim(key, claimant).await
    }
}

#[async_trait]
impl Checkpointer for Mutant {
    async fn checkpoint_sequence(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        let n = self.checkpoints.fetch_add(1, Ordering::Relaxed);
        if self.is(Mutation::LosesWrites) && n % 5 == 4 {
            let current = self
                .inner
                .fetch_checkpoint(key)
                .await?
                .ok_or_else(|| Error::lease_not_found(key))?;
            return Ok(Lease {
                checkpoint: Some(position.clone()),
                ..current
            });
        }
        match self
            .inner
            .checkpoint_sequence(key, worker, token, position)
            .await
        {
            Err(Error::LeaseLost { .. }) if self.is(Mutation::NoFencingOnCheckpoint) => {
                self.overwrite_checkpoint(key, position).await
            }
            Err(Error::CheckpointRegression { .. }) if self.is(Mutation::AcceptsRegressions) => {
                self.overwrite_checkpoint(key, position).await
            }
            Err(e) if self.is(Mutation::FakeSuccessOnDroppedReply) && !e.is_retryable() => {
                let current = self
                    .inner
                    .fetch_checkpoint(key)
                    .await?
                    .unwrap_or_else(|| Lease::new(key.clone(), Vec::new(), None));
                Ok(Lease {
                    checkpoint: Some(position.clone()),
                    ..current
                })
            }
            other => other,
        }
    }

    async fn prepare_checkpoint(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        self.inner
            .prepare_checkpoint(key, worker, token, position)
            .await
    }

    async fn fetch_checkpoint(&self, key: &LeaseKey) -> Result<Option<Lease>> {
        self.inner.fetch_checkpoint(key).await
    }

    async fn reset_checkpoint(&self, key: &LeaseKey, position: Option<&Position>) -> Result<Lease> {
        self.inner.reset_checkpoint(key, position).await
    }
}

#[async_trait]
impl Membership for Mutant {
    async fn register_worker(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        self.inner.register_worker(worker, ttl).await
    }

    async fn heartbeat(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        self.inner.heartbeat(worker, ttl).await
    }

    async fn live_workers(&self) -> Result<Vec<WorkerId>> {
        self.inner.live_workers().await
    }

    async fn deregister_worker(&self, worker: &WorkerId) -> Result<()> {
        self.inner.deregister_worker(worker).await
    }

    async fn prune_dead_workers(&self) -> Result<usize> {
        self.inner.prune_dead_workers().await
    }
}

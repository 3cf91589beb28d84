//! The broken store: the memory reference store with one [`Mutation`] applied.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use checkpoint_core::{
    AppName, Capabilities, Checkpointer, Clock, Error, FencingToken, HeartbeatTtl, Lease,
    LeaseDuration, LeaseKey, LeaseManager, Listing, ManualClock, Membership, MemoryStore, Position,
    RenewOutcome, Result, ShardId, StreamName, WorkerId,
};

use super::{MUTANT_LIST_PAGE, Mutation, SimulatedLink};

/// A memory store broken in one way.
#[derive(Debug)]
pub struct Mutant {
    inner: MemoryStore,
    mutation: Mutation,
    clock: Arc<ManualClock>,
    checkpoints: AtomicU64,
    /// The app index of [`Mutation::ListAppsKeepsEmptied`], shared by every handle of one
    /// database: apps whose lease records were deleted, never pruned.
    app_index: Arc<Mutex<BTreeSet<AppName>>>,
    link: Option<Arc<SimulatedLink>>,
}

impl Mutant {
    /// `inner` broken by `mutation`; `clock` is the clock `inner` judges expiry by;
    /// `app_index` is shared by every handle of `inner`'s database (used by
    /// [`Mutation::ListAppsKeepsEmptied`] only).
    pub fn new(
        inner: MemoryStore,
        mutation: Mutation,
        clock: Arc<ManualClock>,
        app_index: Arc<Mutex<BTreeSet<AppName>>>,
    ) -> Self {
        Self {
            inner,
            mutation,
            clock,
            checkpoints: AtomicU64::new(0),
            app_index,
            link: None,
        }
    }

    /// This mutant with its requests over `link`: once armed, the next write executes and its
    /// reply is lost (a retryable error), except where the mutation breaks that.
    pub fn with_link(mut self, link: Arc<SimulatedLink>) -> Self {
        self.link = Some(link);
        self
    }

    /// Whether this write's reply is lost.
    fn link_fires(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.fires())
    }

    fn is(&self, m: Mutation) -> bool {
        self.mutation == m
    }

    /// The key the broken store files a record under: the shard alone when streams share rows.
    fn filed<'k>(&self, key: &'k LeaseKey) -> Cow<'k, LeaseKey> {
        if self.is(Mutation::StreamsShareRows) {
            let stream = StreamName::new("all-streams").expect("valid");
            Cow::Owned(LeaseKey::new(stream, key.shard.clone()))
        } else {
            Cow::Borrowed(key)
        }
    }

    /// The duration the broken store really grants.
    fn granted(&self, duration: LeaseDuration) -> LeaseDuration {
        let ms = Duration::from_millis(1);
        let skewed = match self.mutation {
            Mutation::ExpiresEarly => duration.get() - ms,
            Mutation::ExpiresLate => duration.get() + ms,
            _ => return duration,
        };
        LeaseDuration::new(skewed).unwrap_or(duration)
    }

    fn lost(key: &LeaseKey, worker: &WorkerId, token: FencingToken) -> Error {
        Error::LeaseLost {
            key: key.clone(),
            worker: worker.clone(),
            token,
        }
    }

    /// Writes `position` unconditionally, the way a store without a WHERE clause would.
    async fn overwrite_checkpoint(&self, key: &LeaseKey, position: &Position) -> Result<Lease> {
        self.inner.reset_checkpoint(key, Some(position)).await
    }

    /// Writes `worker`'s membership record as this handle's whatever instance held it, the way
    /// an upsert without the nonce condition would.
    async fn overwrite_member(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        self.inner.deregister_worker(worker).await?;
        self.inner.register_worker(worker, ttl).await
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

    /// Keyset pagination over the reference listing, `MUTANT_LIST_PAGE` rows a page, with the
    /// cursor mistakes of the list mutations.
    fn paginate(&self, all: Vec<Lease>) -> Vec<Lease> {
        let mut out: Vec<Lease> = Vec::new();
        let mut cursor: Option<LeaseKey> = None;
        loop {
            let start = match &cursor {
                None => 0,
                Some(last) => {
                    let after = all.partition_point(|l| &l.key <= last);
                    match self.mutation {
                        Mutation::ListDropsAtPageBoundary => after + 1,
                        Mutation::ListRepeatsAtPageBoundary => after - 1,
                        _ => after,
                    }
                }
            };
            let page: Vec<Lease> = all
                .iter()
                .skip(start)
                .take(MUTANT_LIST_PAGE)
                .cloned()
                .collect();
            let full = page.len() == MUTANT_LIST_PAGE;
            cursor = page.last().map(|l| l.key.clone());
            out.extend(page);
            if !full {
                return out;
            }
        }
    }
}

#[async_trait]
impl LeaseManager for Mutant {
    fn app(&self) -> &AppName {
        self.inner.app()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities().with_backend("mutant")
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
        if self.link_fires() {
            self.inner
                .create_lease_if_absent(key, parents, initial)
                .await?;
            if self.is(Mutation::RetryMisreadsOwnWrite) {
                return self
                    .inner
                    .create_lease_if_absent(key, parents, initial)
                    .await;
            }
            return Err(SimulatedLink::lost_reply());
        }
        if self.is(Mutation::CreateOverwrites) {
            let absent = self.inner.fetch_checkpoint(key).await?.is_none();
            self.inner.remove_lease_info(key).await?;
            self.inner
                .create_lease_if_absent(key, parents, initial)
                .await?;
            return Ok(absent);
        }
        let created = self
            .inner
            .create_lease_if_absent(key, parents, initial)
            .await?;
        Ok(created && !self.is(Mutation::CreateAnswersWrongly))
    }

    async fn get_lease(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        if self.link_fires() {
            self.inner.get_lease(key, worker, duration).await?;
            return Err(SimulatedLink::lost_reply());
        }
        let caller_key = key;
        let key = &*self.filed(key);
        let duration = self.granted(duration);
        let current = self.inner.fetch_checkpoint(key).await?;
        if self.is(Mutation::NeverExpires)
            && let Some(l) = &current
            && let Some(owner) = l.owner.as_ref().filter(|o| *o != worker)
        {
            return Err(Error::LeaseHeld {
                key: caller_key.clone(),
                holder: owner.clone(),
                remaining: Default::default(),
            });
        }
        if self.is(Mutation::RetakeKeepsDeadline)
            && let Some(l) = &current
            && l.owner.as_ref() == Some(worker)
            && l.is_live_at(self.clock.now())
        {
            return Ok(Lease {
                key: caller_key.clone(),
                ..l.clone()
            });
        }
        if self.is(Mutation::RetakeBumpsToken)
            && let Some(l) = &current
            && l.owner.as_ref() == Some(worker)
            && !l.is_live_at(self.clock.now())
        {
            return self.force_grant(key, worker, duration, false).await;
        }
        let result = match self.inner.get_lease(key, worker, duration).await {
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
        };
        result.map(|l| Lease {
            key: caller_key.clone(),
            ..l
        })
    }

    async fn renew(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        if self.link_fires() {
            self.inner.renew(key, worker, token, duration).await?;
            return Err(SimulatedLink::lost_reply());
        }
        let duration = self.granted(duration);
        match self.inner.renew(key, worker, token, duration).await {
            Err(Error::LeaseLost { .. }) if self.is(Mutation::RenewsTakenLease) => {
                if self.inner.fetch_checkpoint(key).await?.is_some() {
                    return self.force_grant(key, worker, duration, true).await;
                }
                Err(Self::lost(key, worker, token))
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
        let duration = self.granted(duration);
        match self.mutation {
            Mutation::RenewManyDoesNotWrite => {
                let mut outcome = RenewOutcome::default();
                for (key, token) in leases {
                    match self.inner.fetch_checkpoint(key).await? {
                        Some(l) if l.is_held_by(worker, *token) => outcome.renewed.push(Lease {
                            deadline: Some(self.clock.now() + duration.get()),
                            ..l
                        }),
                        _ => outcome.lost.push(key.clone()),
                    }
                }
                outcome.renewed.sort_by(|a, b| a.key.cmp(&b.key));
                outcome.lost.sort();
                Ok(outcome)
            }
            Mutation::RenewManyIgnoresToken => {
                let mut outcome = RenewOutcome::default();
                for (key, _) in leases {
                    match self.inner.fetch_checkpoint(key).await? {
                        Some(l) => {
                            let renewed = self.force_grant(key, worker, duration, true).await?;
                            outcome.renewed.push(Lease {
                                token: l.token,
                                ..renewed
                            });
                        }
                        None => outcome.lost.push(key.clone()),
                    }
                }
                outcome.renewed.sort_by(|a, b| a.key.cmp(&b.key));
                outcome.lost.sort();
                Ok(outcome)
            }
            _ => self.inner.renew_many(worker, leases, duration).await,
        }
    }

    async fn remove_lease_owner(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
    ) -> Result<Lease> {
        match self.inner.remove_lease_owner(key, worker, token).await {
            Err(Error::LeaseLost { .. })
                if self.is(Mutation::UnfencedRelease)
                    && self.inner.fetch_checkpoint(key).await?.is_some() =>
            {
                self.inner.evict_lease(key).await
            }
            Ok(l) if self.is(Mutation::ReleaseDropsCheckpoint) => {
                self.inner.reset_checkpoint(key, None).await?;
                Ok(Lease {
                    checkpoint: None,
                    ..l
                })
            }
            other => other,
        }
    }

    async fn evict_lease(&self, key: &LeaseKey) -> Result<Lease> {
        self.inner.evict_lease(key).await
    }

    async fn remove_lease_info(&self, key: &LeaseKey) -> Result<()> {
        if self.is(Mutation::DeleteDoesNothing) {
            return Ok(());
        }
        if self.is(Mutation::ListAppsKeepsEmptied) {
            self.app_index
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(self.inner.app().clone());
        }
        self.inner.remove_lease_info(key).await
    }

    async fn list_apps(&self) -> Result<Vec<AppName>> {
        let mut apps = self.inner.list_apps().await?;
        if self.is(Mutation::ListAppsKeepsEmptied) {
            let index = self.app_index.lock().unwrap_or_else(|e| e.into_inner());
            apps.extend(index.iter().cloned());
            apps.sort();
            apps.dedup();
        }
        Ok(apps)
    }

    async fn list_leases(&self, stream: Option<&StreamName>) -> Result<Vec<Lease>> {
        let mut all = self.paginate(self.inner.list_leases(stream).await?);
        if self.is(Mutation::TruncatedList) {
            all.truncate(100);
        }
        Ok(all)
    }

    async fn list_leases_timed(&self, stream: Option<&StreamName>) -> Result<Listing> {
        let mut listing = self.inner.list_leases_timed(stream).await?;
        listing.leases = self.paginate(listing.leases);
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
        let duration = self.granted(duration);
        if self.is(Mutation::StealIgnoresExpected)
            && thief != expected_owner
            && self.inner.fetch_checkpoint(key).await?.is_some()
        {
            return self.force_grant(key, thief, duration, false).await;
        }
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
        if self.is(Mutation::ClaimNotStored) {
            let current = self
                .inner
                .fetch_checkpoint(key)
                .await?
                .ok_or_else(|| Error::lease_not_found(key))?;
            if current.owner.as_ref() == Some(claimant) {
                return Ok(current);
            }
            return Ok(Lease {
                claim: Some(claimant.clone()),
                ..current
            });
        }
        self.inner.claim(key, claimant).await
    }

    async fn import_lease(&self, record: &Lease) -> Result<bool> {
        if self.is(Mutation::ImportOverwrites) {
            checkpoint_core::rules::check_import(record)?;
            self.inner.remove_lease_info(&record.key).await?;
        }
        self.inner.import_lease(record).await
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
        if self.link_fires() {
            if self.is(Mutation::SuccessOnLostWrite) {
                // The request never reached the store, yet the answer is a success.
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
            self.inner
                .checkpoint_sequence(key, worker, token, position)
                .await?;
            return Err(SimulatedLink::lost_reply());
        }
        let caller_key = key;
        let key = &*self.filed(key);
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
        let result = match self
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
            Err(e @ Error::LeaseLost { .. })
                if self.is(Mutation::WritesDespiteLost)
                    && self.inner.fetch_checkpoint(key).await?.is_some() =>
            {
                self.overwrite_checkpoint(key, position).await?;
                Err(e)
            }
            Err(e @ Error::CheckpointRegression { .. })
                if self.is(Mutation::WritesDespiteRegression) =>
            {
                self.overwrite_checkpoint(key, position).await?;
                Err(e)
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
        };
        result.map(|l| Lease {
            key: caller_key.clone(),
            ..l
        })
    }

    async fn prepare_checkpoint(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        match self
            .inner
            .prepare_checkpoint(key, worker, token, position)
            .await
        {
            Err(Error::LeaseLost { .. })
                if self.is(Mutation::UnfencedPrepare)
                    && self.inner.fetch_checkpoint(key).await?.is_some() =>
            {
                // Write the pending position as the reference would for the holder.
                let current = self
                    .inner
                    .fetch_checkpoint(key)
                    .await?
                    .ok_or_else(|| Error::lease_not_found(key))?;
                let holder = current
                    .owner
                    .clone()
                    .unwrap_or_else(|| WorkerId::new("nobody").expect("valid"));
                self.inner
                    .prepare_checkpoint(key, &holder, current.token, position)
                    .await
            }
            other => other,
        }
    }

    async fn fetch_checkpoint(&self, key: &LeaseKey) -> Result<Option<Lease>> {
        let found = self.inner.fetch_checkpoint(&self.filed(key)).await?;
        Ok(found.map(|l| Lease {
            key: key.clone(),
            ..l
        }))
    }

    async fn reset_checkpoint(&self, key: &LeaseKey, position: Option<&Position>) -> Result<Lease> {
        self.inner.reset_checkpoint(key, position).await
    }
}

#[async_trait]
impl Membership for Mutant {
    async fn register_worker(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        if self.is(Mutation::WorkerIdsCollide) {
            let filed = worker.as_str().split(':').next().unwrap_or_default();
            let filed = WorkerId::new(if filed.is_empty() { "-" } else { filed })?;
            return self.inner.register_worker(&filed, ttl).await;
        }
        match self.inner.register_worker(worker, ttl).await {
            Err(Error::WorkerIdInUse { .. }) if self.is(Mutation::IgnoresInstance) => {
                self.overwrite_member(worker, ttl).await
            }
            other => other,
        }
    }

    async fn heartbeat(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        match self.mutation {
            Mutation::HeartbeatDoesNotExtend => {
                if self.inner.live_workers().await?.contains(worker) {
                    Ok(())
                } else {
                    self.inner.heartbeat(worker, ttl).await
                }
            }
            Mutation::HeartbeatRevivesPruned => self.inner.register_worker(worker, ttl).await,
            Mutation::IgnoresInstance => match self.inner.heartbeat(worker, ttl).await {
                Err(Error::WorkerIdInUse { .. }) => self.overwrite_member(worker, ttl).await,
                other => other,
            },
            _ => self.inner.heartbeat(worker, ttl).await,
        }
    }

    async fn live_workers(&self) -> Result<Vec<WorkerId>> {
        let mut live = self.inner.live_workers().await?;
        if self.is(Mutation::LiveWorkersUnsorted) {
            live.reverse();
        }
        Ok(live)
    }

    async fn deregister_worker(&self, worker: &WorkerId) -> Result<()> {
        self.inner.deregister_worker(worker).await
    }

    async fn prune_dead_workers(&self) -> Result<usize> {
        self.inner.prune_dead_workers().await
    }
}

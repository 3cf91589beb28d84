//! The in-memory reference store: the contract's [`rules`](crate::rules) applied under one
//! mutex, with an injectable [`Clock`]. It is the model the conformance suite compares every
//! other store against, and a handy store for unit tests of a consumer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;

use crate::clock::{Clock, SystemClock};
use crate::error::Result;
use crate::rules::{self, Member, Outcome};
use crate::store::{
    BatchMode, Capabilities, Checkpointer, ClockSource, Durability, LeaseManager, Membership,
};
use crate::types::{
    AppName, FencingToken, HeartbeatTtl, InstanceId, Lease, LeaseDuration, LeaseKey, Listing,
    Position, RenewOutcome, ShardId, StreamName, WorkerId,
};

#[derive(Debug, Default)]
struct AppData {
    leases: BTreeMap<LeaseKey, Lease>,
    workers: BTreeMap<WorkerId, Member>,
}

/// A process-local database holding any number of apps. Handles opened from one database share
/// its data, as two connections to one server would.
#[derive(Clone, Debug)]
pub struct MemoryDatabase {
    apps: Arc<Mutex<HashMap<AppName, AppData>>>,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryDatabase {
    /// An empty database on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty database on `clock` (a [`crate::ManualClock`] lets tests move time).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            apps: Arc::default(),
            clock,
        }
    }

    /// A store handle for `app`, with an instance nonce of its own ([`InstanceId`]): two
    /// handles registering one worker id are two instances, as two processes would be.
    pub fn open(&self, app: AppName) -> MemoryStore {
        MemoryStore {
            app,
            db: self.clone(),
            instance: InstanceId::random(),
        }
    }
}

/// A store handle for one app of a [`MemoryDatabase`].
///
/// Handles of one database share its records, as handles of one real database do; a
/// [`crate::ManualClock`] lets a test move time instead of sleeping.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use checkpoint_core::{AppName, LeaseDuration, LeaseKey, LeaseManager, ManualClock, MemoryDatabase, WorkerId};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let clock = Arc::new(ManualClock::default());
/// let db = MemoryDatabase::with_clock(clock.clone());
/// let (one, two) = (db.open(AppName::new("billing")?), db.open(AppName::new("billing")?));
/// let key = LeaseKey::parse("orders", "shard-0")?;
/// let duration = LeaseDuration::new(Duration::from_secs(10))?;
/// let first = one.get_lease(&key, &WorkerId::new("a")?, duration).await?;
/// assert!(two.get_lease(&key, &WorkerId::new("b")?, duration).await.is_err());
/// clock.advance(Duration::from_secs(11)); // a's lease expires
/// let second = two.get_lease(&key, &WorkerId::new("b")?, duration).await?;
/// assert_eq!(second.token, first.token.next());
/// # Ok::<(), checkpoint_core::Error>(()) }).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct MemoryStore {
    app: AppName,
    db: MemoryDatabase,
    instance: InstanceId,
}

impl MemoryStore {
    /// A store for `app` in a database of its own, on the system clock.
    pub fn new(app: AppName) -> Self {
        MemoryDatabase::new().open(app)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<AppName, AppData>> {
        // A panic while holding the lock cannot leave a half-applied record: every rule builds
        // the new record first and stores it with one insert.
        self.db.apps.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_app<T>(&self, f: impl FnOnce(&mut AppData, SystemTime) -> T) -> T {
        let now = self.db.clock.now();
        let mut apps = self.lock();
        f(apps.entry(self.app.clone()).or_default(), now)
    }

    /// Applies a rule that always writes its result.
    fn apply(
        &self,
        key: &LeaseKey,
        rule: impl FnOnce(Option<Lease>, SystemTime) -> Result<Lease>,
    ) -> Result<Lease> {
        self.apply_outcome(key, |current, now| rule(current, now).map(Outcome::Write))
    }

    /// Applies a rule that may decide to write nothing.
    fn apply_outcome(
        &self,
        key: &LeaseKey,
        rule: impl FnOnce(Option<Lease>, SystemTime) -> Result<Outcome>,
    ) -> Result<Lease> {
        self.with_app(|data, now| {
            let outcome = rule(data.leases.get(key).cloned(), now)?;
            if let Outcome::Write(lease) = &outcome {
                data.leases.insert(key.clone(), lease.clone());
            }
            Ok(outcome.into_lease())
        })
    }
}

#[async_trait]
impl LeaseManager for MemoryStore {
    fn app(&self) -> &AppName {
        &self.app
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new("memory", ClockSource::Host, Durability::Process)
            .with_renew_many(BatchMode::OneRoundTrip)
    }

    async fn init(&self) -> Result<()> {
        Ok(())
    }

    async fn create_lease_if_absent(
        &self,
        key: &LeaseKey,
        parents: &[ShardId],
        initial: Option<&Position>,
    ) -> Result<bool> {
        self.with_app(|data, _| {
            match rules::create_if_absent(data.leases.get(key), key, parents, initial) {
                Some(lease) => {
                    data.leases.insert(key.clone(), lease);
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    async fn get_lease(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        self.apply(key, |cur, now| {
            rules::get_lease(cur, key, worker, duration, now)
        })
    }

    async fn renew(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        self.apply(key, |cur, now| {
            rules::renew(cur, key, worker, token, duration, now)
        })
    }

    async fn renew_many(
        &self,
        worker: &WorkerId,
        leases: &[(LeaseKey, FencingToken)],
        duration: LeaseDuration,
    ) -> Result<RenewOutcome> {
        rules::check_renew_batch(leases)?;
        self.with_app(|data, now| {
            let mut outcome = RenewOutcome::default();
            for (key, token) in leases {
                match rules::renew(
                    data.leases.get(key).cloned(),
                    key,
                    worker,
                    *token,
                    duration,
                    now,
                ) {
                    Ok(lease) => {
                        data.leases.insert(key.clone(), lease.clone());
                        outcome.renewed.push(lease);
                    }
                    Err(_) => outcome.lost.push(key.clone()),
                }
            }
            outcome.renewed.sort_by(|a, b| a.key.cmp(&b.key));
            outcome.lost.sort();
            Ok(outcome)
        })
    }

    async fn remove_lease_owner(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
    ) -> Result<Lease> {
        self.apply_outcome(key, |cur, _| {
            rules::remove_lease_owner(cur, key, worker, token)
        })
    }

    async fn evict_lease(&self, key: &LeaseKey) -> Result<Lease> {
        self.apply(key, |cur, _| rules::evict_lease(cur, key))
    }

    async fn remove_lease_info(&self, key: &LeaseKey) -> Result<()> {
        self.with_app(|data, _| {
            data.leases.remove(key);
            Ok(())
        })
    }

    /// Operation 16: the apps of this database with at least one lease record, sorted.
    async fn list_apps(&self) -> Result<Vec<AppName>> {
        let apps = self.lock();
        rules::stored_apps(
            apps.iter()
                .filter(|(_, data)| !data.leases.is_empty())
                .map(|(app, _)| app.as_str().to_owned()),
        )
    }

    async fn list_leases(&self, stream: Option<&StreamName>) -> Result<Vec<Lease>> {
        self.with_app(|data, _| {
            Ok(data
                .leases
                .values()
                .filter(|l| stream.is_none_or(|s| &l.key.stream == s))
                .cloned()
                .collect())
        })
    }

    async fn list_leases_timed(&self, stream: Option<&StreamName>) -> Result<Listing> {
        self.with_app(|data, now| {
            Ok(Listing {
                leases: data
                    .leases
                    .values()
                    .filter(|l| stream.is_none_or(|s| &l.key.stream == s))
                    .cloned()
                    .collect(),
                store_now: now,
            })
        })
    }

    async fn steal(
        &self,
        key: &LeaseKey,
        thief: &WorkerId,
        expected_owner: &WorkerId,
        expected_token: FencingToken,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        self.apply_outcome(key, |cur, now| {
            rules::steal(
                cur,
                key,
                thief,
                expected_owner,
                expected_token,
                duration,
                now,
            )
        })
    }

    async fn claim(&self, key: &LeaseKey, claimant: &WorkerId) -> Result<Lease> {
        self.apply_outcome(key, |cur, _| rules::claim(cur, key, claimant))
    }

    /// Admin import: [`rules::import_lease`] under the database mutex, so "absent" is still true
    /// when the record is inserted.
    async fn import_lease(&self, record: &Lease) -> Result<bool> {
        self.with_app(
            |data, _| match rules::import_lease(data.leases.get(&record.key), record)? {
                Some(lease) => {
                    data.leases.insert(lease.key.clone(), lease);
                    Ok(true)
                }
                None => Ok(false),
            },
        )
    }
}

#[async_trait]
impl Checkpointer for MemoryStore {
    async fn checkpoint_sequence(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        self.apply(key, |cur, _| {
            rules::checkpoint(cur, key, worker, token, position)
        })
    }

    async fn prepare_checkpoint(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        self.apply(key, |cur, _| {
            rules::prepare_checkpoint(cur, key, worker, token, position)
        })
    }

    async fn fetch_checkpoint(&self, key: &LeaseKey) -> Result<Option<Lease>> {
        self.with_app(|data, _| Ok(data.leases.get(key).cloned()))
    }

    async fn reset_checkpoint(&self, key: &LeaseKey, position: Option<&Position>) -> Result<Lease> {
        self.apply(key, |cur, _| rules::reset_checkpoint(cur, key, position))
    }
}

#[async_trait]
impl Membership for MemoryStore {
    /// [`rules::register_worker`] under the database mutex with this handle's nonce.
    async fn register_worker(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        self.with_app(|data, now| {
            let member =
                rules::register_worker(data.workers.get(worker), worker, &self.instance, now, ttl)?;
            data.workers.insert(worker.clone(), member);
            Ok(())
        })
    }

    /// [`rules::heartbeat`] under the database mutex with this handle's nonce.
    async fn heartbeat(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        self.with_app(|data, now| {
            let member =
                rules::heartbeat(data.workers.get(worker), worker, &self.instance, now, ttl)?;
            data.workers.insert(worker.clone(), member);
            Ok(())
        })
    }

    async fn live_workers(&self) -> Result<Vec<WorkerId>> {
        self.with_app(|data, now| {
            Ok(data
                .workers
                .iter()
                .filter(|(_, m)| m.expires > now)
                .map(|(w, _)| w.clone())
                .collect())
        })
    }

    async fn deregister_worker(&self, worker: &WorkerId) -> Result<()> {
        self.with_app(|data, _| {
            data.workers.remove(worker);
            Ok(())
        })
    }

    async fn prune_dead_workers(&self) -> Result<usize> {
        self.with_app(|data, now| {
            let before = data.workers.len();
            data.workers.retain(|_, m| m.expires > now);
            Ok(before - data.workers.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::error::Error;

    fn key() -> LeaseKey {
        LeaseKey::parse("orders", "shardId-0001").unwrap()
    }

    #[tokio::test]
    async fn manual_clock_expires_a_lease_without_sleeping() {
        let clock = Arc::new(ManualClock::default());
        let store = MemoryDatabase::with_clock(clock.clone()).open(AppName::new("app").unwrap());
        let (a, b) = (WorkerId::new("a").unwrap(), WorkerId::new("b").unwrap());
        let d = LeaseDuration::new(Duration::from_secs(10)).unwrap();
        let lease = store.get_lease(&key(), &a, d).await.unwrap();
        assert_eq!(lease.token, FencingToken(1));
        clock.advance(Duration::from_secs(9));
        let held = store.get_lease(&key(), &b, d).await.unwrap_err();
        match held {
            Error::LeaseHeld {
                holder, remaining, ..
            } => {
                assert_eq!(holder, a);
                assert_eq!(remaining, Duration::from_secs(1));
            }
            other => panic!("expected LeaseHeld, got {other:?}"),
        }
        clock.advance(Duration::from_secs(1));
        let taken = store.get_lease(&key(), &b, d).await.unwrap();
        assert_eq!(taken.token, FencingToken(2));
        assert_eq!(taken.owner_switches_since_checkpoint, 2);
        assert!(store.renew(&key(), &a, FencingToken(1), d).await.is_err());
    }

    #[tokio::test]
    async fn heartbeat_ttl_follows_the_clock() {
        let clock = Arc::new(ManualClock::default());
        let store = MemoryDatabase::with_clock(clock.clone()).open(AppName::new("app").unwrap());
        let w = WorkerId::new("w").unwrap();
        store
            .register_worker(&w, HeartbeatTtl::from_millis(100).unwrap())
            .await
            .unwrap();
        assert_eq!(store.live_workers().await.unwrap(), vec![w.clone()]);
        clock.advance(Duration::from_millis(100));
        assert!(store.live_workers().await.unwrap().is_empty());
        assert_eq!(store.prune_dead_workers().await.unwrap(), 1);
        assert!(
            store
                .heartbeat(&w, HeartbeatTtl::from_millis(100).unwrap())
                .await
                .is_err()
        );
    }
}

//! How to test your own store: implement [`LeaseManager`], [`Checkpointer`] and [`Membership`]
//! for it, then run the whole conformance suite in one `#[tokio::test]`.
//!
//! The store here stands for a user's key-value database with compare-and-set (etcd, Consul,
//! FoundationDB, a table with a version column): each lease is one value with a version, and
//! every write is "read value and version, apply the contract's rule, write if the version is
//! unchanged, else start again". The pure functions of [`checkpoint_core::rules`] decide every
//! transition, so the store only has to supply an atomic compare-and-set; the suite then checks
//! that it really is atomic (races, fencing, expiry) and that every result matches the memory
//! reference store (the proptest model test).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use checkpoint_core::Listing;
use checkpoint_core::rules::{self, Member, Outcome};
use checkpoint_core::{
    AppName, BatchMode, Capabilities, Checkpointer, ClockSource, Durability, Error, FencingToken,
    HeartbeatTtl, InstanceId, Lease, LeaseDuration, LeaseKey, LeaseManager, Membership, Position,
    RenewOutcome, Result, ShardId, Store, StreamName, WorkerId,
};

/// The user's database: versioned values under string keys, with compare-and-set.
#[derive(Debug, Default)]
struct KvDatabase {
    values: Mutex<HashMap<String, (u64, Lease)>>,
    workers: Mutex<HashMap<String, Member>>,
}

impl KvDatabase {
    /// The value under `key` and its version (0 when absent).
    fn get(&self, key: &str) -> (u64, Option<Lease>) {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values
            .get(key)
            .map_or((0, None), |(v, l)| (*v, Some(l.clone())))
    }

    /// Stores `lease` under `key` if its version is still `version`; false otherwise.
    fn compare_and_set(&self, key: &str, version: u64, lease: Lease) -> bool {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let current = values.get(key).map_or(0, |(v, _)| *v);
        if current != version {
            return false;
        }
        values.insert(key.to_owned(), (version + 1, lease));
        true
    }
}

/// The user's store: one app's leases in a [`KvDatabase`], under keys `app/stream/shard`;
/// `instance` is this handle's nonce, written with every membership record it registers.
#[derive(Debug)]
struct KvStore {
    app: AppName,
    db: Arc<KvDatabase>,
    instance: InstanceId,
}

impl KvStore {
    fn key(&self, key: &LeaseKey) -> String {
        format!("{}/{key}", self.app)
    }

    /// Read, apply `rule`, compare-and-set; again from the read when another writer won.
    fn apply(
        &self,
        key: &LeaseKey,
        rule: impl Fn(Option<Lease>, SystemTime) -> Result<Outcome>,
    ) -> Result<Lease> {
        let kv_key = self.key(key);
        loop {
            let (version, current) = self.db.get(&kv_key);
            match rule(current, SystemTime::now())? {
                Outcome::Write(lease) => {
                    if self.db.compare_and_set(&kv_key, version, lease.clone()) {
                        return Ok(lease);
                    }
                }
                unchanged => return Ok(unchanged.into_lease()),
            }
        }
    }

    fn write(
        &self,
        key: &LeaseKey,
        rule: impl Fn(Option<Lease>, SystemTime) -> Result<Lease>,
    ) -> Result<Lease> {
        self.apply(key, |cur, now| rule(cur, now).map(Outcome::Write))
    }
}

#[async_trait]
impl LeaseManager for KvStore {
    fn app(&self) -> &AppName {
        &self.app
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(
            "custom kv (example)",
            ClockSource::Host,
            Durability::Process,
        )
        .with_renew_many(BatchMode::Chunked(1))
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
        let kv_key = self.key(key);
        let (version, current) = self.db.get(&kv_key);
        match rules::create_if_absent(current.as_ref(), key, parents, initial) {
            Some(lease) => Ok(self.db.compare_and_set(&kv_key, version, lease)),
            None => Ok(false),
        }
    }

    async fn get_lease(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        self.write(key, |cur, now| {
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
        self.write(key, |cur, now| {
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
        let mut outcome = RenewOutcome::default();
        for (key, token) in leases {
            match self.renew(key, worker, *token, duration).await {
                Ok(lease) => outcome.renewed.push(lease),
                Err(Error::LeaseLost { .. }) => outcome.lost.push(key.clone()),
                Err(e) => return Err(e),
            }
        }
        outcome.renewed.sort_by(|a, b| a.key.cmp(&b.key));
        outcome.lost.sort();
        Ok(outcome)
    }

    async fn remove_lease_owner(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
    ) -> Result<Lease> {
        self.apply(key, |cur, _| {
            rules::remove_lease_owner(cur, key, worker, token)
        })
    }

    async fn evict_lease(&self, key: &LeaseKey) -> Result<Lease> {
        self.write(key, |cur, _| rules::evict_lease(cur, key))
    }

    async fn remove_lease_info(&self, key: &LeaseKey) -> Result<()> {
        self.db
            .values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key(key));
        Ok(())
    }

    async fn list_leases(&self, stream: Option<&StreamName>) -> Result<Vec<Lease>> {
        let prefix = format!("{}/", self.app);
        let values = self.db.values.lock().unwrap_or_else(|e| e.into_inner());
        let mut leases: Vec<Lease> = values
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, (_, lease))| lease.clone())
            .filter(|lease| stream.is_none_or(|s| &lease.key.stream == s))
            .collect();
        leases.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(leases)
    }

    async fn list_leases_timed(&self, stream: Option<&StreamName>) -> Result<Listing> {
        let store_now = SystemTime::now();
        let leases = self.list_leases(stream).await?;
        Ok(Listing { leases, store_now })
    }

    async fn steal(
        &self,
        key: &LeaseKey,
        thief: &WorkerId,
        expected_owner: &WorkerId,
        expected_token: FencingToken,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        self.apply(key, |cur, now| {
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
        self.apply(key, |cur, _| rules::claim(cur, key, claimant))
    }
    async fn import_lease(&self, record: &Lease) -> Result<bool> {
        let kv_key = self.key(&record.key);
        let (version, current) = self.db.get(&kv_key);
        match rules::import_lease(current.as_ref(), record)? {
            Some(lease) => Ok(self.db.compare_and_set(&kv_key, version, lease)),
            None => Ok(false),
        }
    }

    /// The apps of the database with a lease record: the part of each key before its `/`.
    async fn list_apps(&self) -> Result<Vec<AppName>> {
        let values = self.db.values.lock().unwrap_or_else(|e| e.into_inner());
        let mut apps = values
            .keys()
            .filter_map(|k| k.split_once('/'))
            .map(|(app, _)| AppName::new(app))
            .collect::<Result<Vec<_>>>()?;
        apps.sort();
        apps.dedup();
        Ok(apps)
    }
}

#[async_trait]
impl Checkpointer for KvStore {
    async fn checkpoint_sequence(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        self.write(key, |cur, _| {
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
        self.write(key, |cur, _| {
            rules::prepare_checkpoint(cur, key, worker, token, position)
        })
    }

    async fn fetch_checkpoint(&self, key: &LeaseKey) -> Result<Option<Lease>> {
        Ok(self.db.get(&self.key(key)).1)
    }

    async fn reset_checkpoint(&self, key: &LeaseKey, position: Option<&Position>) -> Result<Lease> {
        self.write(key, |cur, _| rules::reset_checkpoint(cur, key, position))
    }
}

#[async_trait]
impl Membership for KvStore {
    async fn register_worker(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        let key = format!("{}/{worker}", self.app);
        let mut workers = self.db.workers.lock().unwrap_or_else(|e| e.into_inner());
        let member = rules::register_worker(
            workers.get(&key),
            worker,
            &self.instance,
            SystemTime::now(),
            ttl,
        )?;
        workers.insert(key, member);
        Ok(())
    }

    async fn heartbeat(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        let key = format!("{}/{worker}", self.app);
        let mut workers = self.db.workers.lock().unwrap_or_else(|e| e.into_inner());
        let member = rules::heartbeat(
            workers.get(&key),
            worker,
            &self.instance,
            SystemTime::now(),
            ttl,
        )?;
        workers.insert(key, member);
        Ok(())
    }

    async fn live_workers(&self) -> Result<Vec<WorkerId>> {
        let prefix = format!("{}/", self.app);
        let now = SystemTime::now();
        let workers = self.db.workers.lock().unwrap_or_else(|e| e.into_inner());
        let mut live = workers
            .iter()
            .filter(|(_, m)| m.expires > now)
            .filter_map(|(k, _)| k.strip_prefix(&prefix))
            .map(WorkerId::new)
            .collect::<Result<Vec<_>>>()?;
        live.sort();
        Ok(live)
    }

    async fn deregister_worker(&self, worker: &WorkerId) -> Result<()> {
        let mut workers = self.db.workers.lock().unwrap_or_else(|e| e.into_inner());
        workers.remove(&format!("{}/{worker}", self.app));
        Ok(())
    }

    async fn prune_dead_workers(&self) -> Result<usize> {
        let prefix = format!("{}/", self.app);
        let now = SystemTime::now();
        let mut workers = self.db.workers.lock().unwrap_or_else(|e| e.into_inner());
        let before = workers.len();
        workers.retain(|k, m| !k.starts_with(&prefix) || m.expires > now);
        Ok(before - workers.len())
    }
}

/// The one test a user writes: a factory that opens their store for an app, and the suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn custom_store_conforms() {
    let db = Arc::new(KvDatabase::default());
    let factory = move |app: AppName| {
        let db = db.clone();
        async move {
            let instance = InstanceId::random();
            Ok(Arc::new(KvStore { app, db, instance }) as Arc<dyn Store>)
        }
    };
    checkpoint_core::conformance::run_all(&factory)
        .await
        .assert_passed();
}

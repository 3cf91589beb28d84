//! [`DynamoStore`]: the handle, its constructors, and the [`LeaseManager`] and
//! [`Checkpointer`] implementations (each a rule of [`checkpoint_core::rules`] sent through the
//! conditional write protocol of `protocol.rs`).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use checkpoint_core::rules::{self, Outcome};
use checkpoint_core::{
    AppName, BatchMode, Capabilities, Checkpointer, ClockSource, Durability, Error, ErrorKind,
    FencingToken, InstanceId, Lease, LeaseDuration, LeaseKey, LeaseManager, Listing, Position,
    RenewOutcome, Result, ShardId, StreamName, WorkerId,
};
use futures::stream::{self, StreamExt};

use crate::client::{self, Shared};
use crate::config::DynamoConfig;
use crate::error::STORE;
use crate::protocol::{Probe, Reply, Start, Written, lease_of, nonce};
use crate::schema::{
    self, Expr, KeyLayout, LEASE_COUNTER, LEASE_DEADLINE_MILLIS, LEASE_DURATION_MILLIS, LEASE_KEY,
    decode, n, s,
};

/// A lease and checkpoint store for one app on one DynamoDB table.
///
/// Cloning is cheap; clones share the client, the request counter, the observations and the
/// record cache. [`DynamoStore::for_app`] gives a handle for another app on the same client
/// and table.
#[derive(Clone)]
pub struct DynamoStore {
    pub(crate) shared: Arc<Shared>,
    pub(crate) app: AppName,
    pub(crate) cache: Arc<Mutex<HashMap<LeaseKey, schema::Stored>>>,
    /// This handle's nonce, written with the membership records it registers.
    pub(crate) instance: InstanceId,
}

impl fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.shared.table)
            .field("app", &self.app)
            .field("layout", &self.shared.layout)
            .finish_non_exhaustive()
    }
}

impl DynamoStore {
    /// Parses `url` ([`DynamoConfig::from_url`]), connects and runs
    /// [`LeaseManager::init`] (creating the table if absent).
    pub async fn connect(url: &str, app: AppName) -> Result<Self> {
        Self::open(DynamoConfig::from_url(url)?, app).await
    }

    /// Builds the client from `config` and runs [`LeaseManager::init`].
    ///
    /// Region and credentials come from the config, else from the AWS default chains. With a
    /// custom endpoint (DynamoDB Local, moto) and nothing in the config or the environment,
    /// the region defaults to `us-east-1` and the credentials to a dummy static pair, since
    /// emulators accept any.
    pub async fn open(config: DynamoConfig, app: AppName) -> Result<Self> {
        let sdk = client::sdk_config(&config).await;
        let scope = client::scope(&config, &sdk);
        Self::from_shared(
            client::shared(
                aws_sdk_dynamodb::config::Builder::from(&sdk),
                &config,
                scope,
            ),
            app,
        )
        .await
    }

    /// Builds the client from an AWS SDK configuration (so profiles, assumed roles, SSO and
    /// any credentials provider work as everywhere else in the SDK) and runs
    /// [`LeaseManager::init`]. From `config` come the table, layout, billing, timeouts, retry
    /// policy, clock and, when set, the endpoint; its region and credentials are not used.
    ///
    /// ```no_run
    /// use checkpoint_core::AppName;
    /// use checkpoint_dynamo::{DynamoConfig, DynamoStore};
    ///
    /// # async fn run() -> checkpoint_core::Result<()> {
    /// // The profile's role is assumed by the SDK's default chain.
    /// let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
    ///     .profile_name("billing-prod")
    ///     .load()
    ///     .await;
    /// let store =
    ///     DynamoStore::from_sdk_config(&sdk, DynamoConfig::new("leases")?, AppName::new("billing")?)
    ///         .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn from_sdk_config(
        sdk: &aws_config::SdkConfig,
        config: DynamoConfig,
        app: AppName,
    ) -> Result<Self> {
        Self::from_shared(
            client::shared(aws_sdk_dynamodb::config::Builder::from(sdk), &config, None),
            app,
        )
        .await
    }

    /// Uses the configuration of an existing DynamoDB client (its credentials, region, HTTP
    /// client and interceptors) and runs [`LeaseManager::init`]. The store sends through its
    /// own copy of that configuration, with the SDK's retries turned off (the store's retry
    /// policy replaces them), the request timeout of `config` and a request counter added;
    /// table, layout and the other settings come from `config` as in
    /// [`DynamoStore::from_sdk_config`].
    ///
    /// ```no_run
    /// use checkpoint_core::AppName;
    /// use checkpoint_dynamo::{DynamoConfig, DynamoStore, aws_sdk_dynamodb};
    ///
    /// # async fn run(client: aws_sdk_dynamodb::Client) -> checkpoint_core::Result<()> {
    /// let store =
    ///     DynamoStore::from_client(&client, DynamoConfig::new("leases")?, AppName::new("billing")?)
    ///         .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn from_client(client: &Client, config: DynamoConfig, app: AppName) -> Result<Self> {
        Self::from_shared(
            client::shared(client.config().to_builder(), &config, None),
            app,
        )
        .await
    }

    async fn from_shared(shared: Shared, app: AppName) -> Result<Self> {
        let store = Self {
            shared: Arc::new(shared),
            app,
            cache: Arc::default(),
            instance: InstanceId::random(),
        };
        store.init().await?;
        Ok(store)
    }

    /// A handle for `app` on the same client, table and settings (no request is sent; the
    /// table was initialised when this handle was opened). Its record cache and its instance
    /// nonce are its own.
    pub fn for_app(&self, app: AppName) -> Self {
        Self {
            shared: self.shared.clone(),
            app,
            cache: Arc::default(),
            instance: InstanceId::random(),
        }
    }

    /// How many DynamoDB requests (attempts, retries included) the handles sharing this
    /// client have sent.
    pub fn requests_sent(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// The underlying SDK client, for administration outside the contract.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.shared.table
    }

    /// The lease stored under `key`, with the typed error of its item when the item cannot be
    /// read as a lease ([`Error::Corrupt`] naming the key and the attribute), as
    /// [`Checkpointer::fetch_checkpoint`] returns it. [`LeaseManager::list_leases`] skips such
    /// items (with a warning naming them); this is how to ask about one.
    pub async fn lease_item(&self, key: &LeaseKey) -> Result<Option<Lease>> {
        Ok(self.read(key).await?.map(|s| s.lease))
    }
}

#[async_trait]
impl LeaseManager for DynamoStore {
    fn app(&self) -> &AppName {
        &self.app
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(STORE, ClockSource::Observed, Durability::Replicated)
            .with_renew_many(BatchMode::Concurrent(self.shared.renew_concurrency))
            .with_multi_process(true)
    }

    /// Creates the table when absent (on-demand or provisioned, as configured) and waits, at
    /// most the configured time, until it is `ACTIVE`. Many callers at once are safe: a
    /// `ResourceInUseException` means another one is creating it, and this one waits too. An
    /// existing table with another key schema is [`Error::SchemaMismatch`]. In the KCL
    /// single-stream layout, the table is then claimed for this app (see
    /// [`crate::schema::APP_MARKER`]); a table another app adopted is
    /// [`Error::SchemaMismatch`] naming both apps.
    async fn init(&self) -> Result<()> {
        self.shared.init_table().await?;
        self.claim_table().await
    }

    /// Operation 2: one `UpdateItem` conditioned on `attribute_not_exists(leaseKey)`, so of
    /// racing creators exactly one creates, and an existing record (a KCL-written one
    /// included) is never overwritten. The record carries a fresh `createNonce`; when the
    /// condition fails, the record it returns tells whether this call created it (a first
    /// attempt whose reply was lost), so the answer is exact even after a retry.
    async fn create_lease_if_absent(
        &self,
        key: &LeaseKey,
        parents: &[ShardId],
        initial: Option<&Position>,
    ) -> Result<bool> {
        let nonce = nonce();
        for _ in 0..crate::protocol::MAX_ROUNDS {
            let Some(new) = rules::create_if_absent(None, key, parents, initial) else {
                break;
            };
            match self
                .write(key, None, &new, None, None, Some(&nonce))
                .await?
            {
                Written::Done(_) => return Ok(true),
                Written::Conflict(Some(current)) => {
                    return Ok(current.nonce.as_deref() == Some(nonce.as_str()));
                }
                // Deleted between the failed condition and the read: try again.
                Written::Conflict(None) => {}
            }
        }
        Err(Error::backend_message(
            STORE,
            true,
            format!("lease {key}: create kept racing with delete"),
        ))
    }

    /// Mutual exclusion: the rule grants only a free, expired or own lease, and the write is
    /// conditioned on the record the rule saw (`leaseCounter`, or absence), so of many workers
    /// deciding on one record exactly one write lands; the others' failed conditions return the
    /// winner's record and they report [`Error::LeaseHeld`] from it without another read.
    ///
    /// Expiry trusts no wall clock: another worker's lease is expired once this handle has
    /// seen its `leaseCounter` unchanged for the holder's lease duration (the requested one on
    /// a KCL-written item) on its own clock, so `LeaseHeld::remaining` is the time left by
    /// that rule, and a fresh process waits one full duration before taking a lease whose
    /// holder died. The caller's own lease, live or expired, from any handle, is re-granted
    /// with its token (only a grant to a different worker bumps it).
    async fn get_lease(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        self.pk(key)?;
        let mine = self
            .cached(key)
            .is_some_and(|s| s.lease.owner.as_ref() == Some(worker));
        let start = if mine {
            Start::Read
        } else {
            let arrived = Instant::now();
            let gate = self.gate(key)?;
            let mut last = gate.lock().await;
            match &*last {
                // A take that began after this call did saw a record that was current during
                // this call: if it says "held by another", so may this call.
                Some(probe) if probe.started >= arrived => {
                    self.grant_rule(probe.observed.as_ref(), key, worker, duration, probe.at)?;
                    Start::Known(Box::new(probe.observed.clone()))
                }
                _ => {
                    let (started, at) = (Instant::now(), self.now());
                    let written = match self.take(key, worker, duration).await {
                        Ok(written) => written,
                        // A take the server rejected as invalid (an attribute of the wrong
                        // type): report the corrupt attribute if that is why.
                        Err(e) if e.kind() == ErrorKind::Backend && !e.is_retryable() => {
                            self.read(key).await?;
                            return Err(e);
                        }
                        Err(e) => return Err(e),
                    };
                    let observed = match &written {
                        Written::Done(stored) => Some(stored.clone()),
                        Written::Conflict(current) => current.clone(),
                    };
                    *last = Some(Probe {
                        started,
                        at,
                        observed,
                    });
                    drop(last);
                    match written {
                        Written::Done(stored) => return Ok(stored.lease),
                        Written::Conflict(current) => Start::Known(Box::new(current)),
                    }
                }
            }
        };
        self.apply(key, start, None, Some(duration), |current, now| {
            self.grant_rule(current, key, worker, duration, now)
        })
        .await
    }

    /// Fencing: one `UpdateItem` conditioned on the worker holding the lease (`leaseOwner`, or
    /// `checkpointOwner` during a hand-off) and `fencingToken = :token` (a record without
    /// `fencingToken` reads as token 0), storing the duration (and, as information, the
    /// writer's deadline) and bumping `leaseCounter`, which is what every observer times
    /// expiry by; anything else, an absent record included, fails the condition and is
    /// [`Error::LeaseLost`]. Valid past the deadline, as the rule says. No read is needed, and
    /// repeating it after a lost reply is harmless.
    async fn renew(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        let pk = self.pk(key)?;
        let deadline = self.now() + duration.get();
        let mut expr = Expr::default();
        expr.set(LEASE_DEADLINE_MILLIS, n(schema::to_millis(deadline)));
        expr.set(
            LEASE_DURATION_MILLIS,
            n(schema::duration_millis(duration.get())),
        );
        let counter = expr.name(LEASE_COUNTER);
        let one = expr.value(n(1));
        let condition = format!(
            "{} AND {}",
            schema::owner_condition(&mut expr, worker),
            schema::token_condition(&mut expr, token)
        );
        let update = format!("{} ADD {counter} {one}", expr.update_expression());
        let req = self
            .shared
            .client
            .update_item()
            .table_name(&self.shared.table)
            .key(LEASE_KEY, s(pk.clone()))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(expr.names))
            .set_expression_attribute_values(Some(expr.values))
            .return_values(ReturnValue::AllNew);
        match self
            .send_conditional("UpdateItem", || req.clone().send())
            .await?
        {
            Reply::Done(out) => Ok(self
                .learn(key, &pk, &out.attributes.unwrap_or_default())?
                .lease),
            Reply::Failed(_) => Err(Self::lost(key, worker, token)),
        }
    }

    /// Concurrent single renewals (see [`DynamoStore::renew`]), at most the configured number
    /// in flight. A lease that is no longer held is reported in `lost`; a backend fault fails
    /// the call.
    async fn renew_many(
        &self,
        worker: &WorkerId,
        leases: &[(LeaseKey, FencingToken)],
        duration: LeaseDuration,
    ) -> Result<RenewOutcome> {
        rules::check_renew_batch(leases)?;
        for (key, _) in leases {
            self.pk(key)?;
        }
        let results: Vec<(LeaseKey, Result<Lease>)> = stream::iter(leases.iter().cloned())
            .map(|(key, token)| async move {
                let result = self.renew(&key, worker, token, duration).await;
                (key, result)
            })
            .buffer_unordered(self.shared.renew_concurrency)
            .collect()
            .await;
        let mut outcome = RenewOutcome::default();
        for (key, result) in results {
            match result {
                Ok(lease) => outcome.renewed.push(lease),
                Err(Error::LeaseLost { .. }) => outcome.lost.push(key),
                Err(e) => return Err(e),
            }
        }
        outcome.renewed.sort_by(|a, b| a.key.cmp(&b.key));
        outcome.lost.sort();
        Ok(outcome)
    }

    /// Fencing: released only by the holder with its token, conditioned on the record it saw.
    async fn remove_lease_owner(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
    ) -> Result<Lease> {
        self.pk(key)?;
        self.apply(
            key,
            Start::Read,
            Some((worker, token)),
            None,
            |current, _| rules::remove_lease_owner(lease_of(current), key, worker, token),
        )
        .await
    }

    /// Admin release, conditioned on the `leaseCounter` of the record it saw, so it clears
    /// only the owner it saw and never undoes a grant it did not see; token and checkpoint are
    /// kept (fencing: the released holder's token stays superseded by the next grant).
    async fn evict_lease(&self, key: &LeaseKey) -> Result<Lease> {
        self.pk(key)?;
        self.apply(key, Start::Read, None, None, |current, _| {
            rules::evict_lease(lease_of(current), key).map(Outcome::Write)
        })
        .await
    }

    /// Operation 8: `DeleteItem` conditioned on `attribute_exists(leaseKey)`; a failed
    /// condition means it was already absent, which the contract accepts. The key is the app's
    /// own (isolation); deleting a held lease fences its holder (every later write of it fails).
    async fn remove_lease_info(&self, key: &LeaseKey) -> Result<()> {
        let pk = self.pk(key)?;
        let req = self
            .shared
            .client
            .delete_item()
            .table_name(&self.shared.table)
            .key(LEASE_KEY, s(pk.clone()))
            .condition_expression("attribute_exists(#k)")
            .expression_attribute_names("#k", LEASE_KEY);
        self.send_conditional("DeleteItem", || req.clone().send())
            .await?;
        self.shared.tracking.observations.forget(&pk);
        self.remember(key, None);
        Ok(())
    }

    /// Every lease of the app (or of `stream`), from a consistent paginated `Scan`. An item
    /// that cannot be read as a lease (a key or attribute another writer encoded otherwise)
    /// never fails the listing: it is left out and reported with a `tracing` warning naming
    /// its key and the reason; [`DynamoStore::lease_item`] returns its typed error.
    async fn list_leases(&self, stream: Option<&StreamName>) -> Result<Vec<Lease>> {
        if let (Some(own), Some(asked)) = (self.shared.layout.bound_stream(), stream)
            && own != asked
        {
            return Ok(Vec::new());
        }
        let items = self
            .scan(self.shared.layout.prefix(&self.app, stream))
            .await?;
        let mut leases = Vec::with_capacity(items.len());
        for item in &items {
            let Some(AttributeValue::S(pk)) = item.get(LEASE_KEY) else {
                continue;
            };
            if pk.starts_with('~') {
                continue;
            }
            let stored = match self.shared.layout.parse(&self.app, pk) {
                Ok(None) => continue,
                Ok(Some(key)) => {
                    decode(&key, item, self.shared.kcl_at_timestamp).map(|stored| (key, stored))
                }
                Err(e) => Err(e),
            };
            match stored {
                Ok((key, stored)) => {
                    let stored = self.observed(pk, stored);
                    self.remember(&key, Some(&stored));
                    leases.push(stored.lease);
                }
                Err(e) => tracing::warn!(
                    table = %self.shared.table,
                    lease_key = %pk,
                    error = %e,
                    "skipping an item that is not a readable lease"
                ),
            }
        }
        leases.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(leases)
    }

    /// Fencing: taken only if owner and token are still what the balancer saw, conditioned on
    /// the record the rule checked; the grant bumps the token.
    async fn steal(
        &self,
        key: &LeaseKey,
        thief: &WorkerId,
        expected_owner: &WorkerId,
        expected_token: FencingToken,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        self.pk(key)?;
        if thief == expected_owner {
            return Err(Error::invalid(
                "thief",
                "a worker cannot steal a lease from itself",
            ));
        }
        self.apply(
            key,
            Start::Read,
            Some((expected_owner, expected_token)),
            Some(duration),
            |current, now| {
                rules::steal(
                    lease_of(current),
                    key,
                    thief,
                    expected_owner,
                    expected_token,
                    duration,
                    now,
                )
            },
        )
        .await
    }

    /// Records the claim (on a held lease as a KCL 3 hand-off: `checkpointOwner` = holder,
    /// `leaseOwner` = claimant; on a free one in `leaseClaimant`), conditioned on the
    /// `leaseCounter` of the record it saw, so it never overwrites a grant it did not see;
    /// ownership and token are untouched (mutual exclusion, fencing).
    async fn claim(&self, key: &LeaseKey, claimant: &WorkerId) -> Result<Lease> {
        self.pk(key)?;
        self.apply(key, Start::Read, None, None, |current, _| {
            rules::claim(lease_of(current), key, claimant)
        })
        .await
    }

    /// Operation 16. Shared layout: one `Scan` of the table projected on `leaseKey` (every
    /// page), the app being the first part of each `<app>:<stream>:<shardId>` key; items of
    /// another shape (membership records, a KCL lease) name no app. A KCL layout's table is
    /// one app's, the one this handle was opened for (the table's marker holds it to that):
    /// listed when the handle sees at least one of its leases.
    async fn list_apps(&self) -> Result<Vec<AppName>> {
        if !matches!(self.shared.layout, KeyLayout::Shared) {
            let leases = self.list_leases(None).await?;
            return Ok(if leases.is_empty() {
                Vec::new()
            } else {
                vec![self.app.clone()]
            });
        }
        let keys = self.scan_keys().await?;
        rules::stored_apps(keys.iter().filter_map(|k| {
            let mut parts = k.split(':');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(app), Some(_), Some(_), None) => Some(app.to_owned()),
                _ => None,
            }
        }))
    }

    /// Operation 9 with the instant its records were judged at: deadlines in a listing are
    /// this handle's judgement on its own clock (observed-unchanged expiry), so `store_now` is
    /// this handle's clock, read before the records.
    async fn list_leases_timed(&self, stream: Option<&StreamName>) -> Result<Listing> {
        let store_now = self.now();
        let leases = self.list_leases(stream).await?;
        Ok(Listing { leases, store_now })
    }

    /// Operation 15 (admin import): [`rules::check_import`], then one write conditioned on
    /// `attribute_not_exists(leaseKey)` (no record seen); an existing record fails the
    /// condition and is left untouched, answering `false`. A held record's deadline is
    /// carried as its time left by this handle's clock (stored as `leaseDurationMillis`), so
    /// every handle judges it live that long from its first sighting (observed expiry).
    async fn import_lease(&self, record: &Lease) -> Result<bool> {
        rules::check_import(record)?;
        let left = record
            .owner
            .as_ref()
            .and(record.deadline)
            .and_then(|d| d.duration_since(self.now()).ok())
            .and_then(|d| LeaseDuration::new(d).ok());
        Ok(matches!(
            self.write(&record.key, None, record, None, left, None)
                .await?,
            Written::Done(_)
        ))
    }
}

#[async_trait]
impl Checkpointer for DynamoStore {
    /// Fencing and monotonic positions: the rule checks owner, token and progress on the
    /// record, and the write is conditioned on `leaseCounter` being that record's, so a stale
    /// holder (whose token was superseded by a grant, which bumps `leaseCounter`) never writes.
    /// Clearing the pending checkpoint removes the KCL's `pendingCheckpointState` with it.
    async fn checkpoint_sequence(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        self.pk(key)?;
        self.apply(
            key,
            Start::Read,
            Some((worker, token)),
            None,
            |current, _| {
                rules::checkpoint(lease_of(current), key, worker, token, position)
                    .map(Outcome::Write)
            },
        )
        .await
    }

    /// Fenced and checked like [`DynamoStore::checkpoint_sequence`], with the same conditional write.
    async fn prepare_checkpoint(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        self.pk(key)?;
        self.apply(
            key,
            Start::Read,
            Some((worker, token)),
            None,
            |current, _| {
                rules::prepare_checkpoint(lease_of(current), key, worker, token, position)
                    .map(Outcome::Write)
            },
        )
        .await
    }

    async fn fetch_checkpoint(&self, key: &LeaseKey) -> Result<Option<Lease>> {
        Ok(self.read(key).await?.map(|s| s.lease))
    }

    /// The one exception to monotonic positions, explicit and admin-only; conditioned on the
    /// `leaseCounter` of the record it saw, ownership and token untouched (fencing).
    async fn reset_checkpoint(&self, key: &LeaseKey, position: Option<&Position>) -> Result<Lease> {
        self.pk(key)?;
        self.apply(key, Start::Read, None, None, |current, _| {
            rules::reset_checkpoint(lease_of(current), key, position).map(Outcome::Write)
        })
        .await
    }
}

impl DynamoStore {
    /// In the KCL single-stream layout, records in the table which app adopted it: a
    /// `PutItem` of the marker item conditioned on its absence or on naming this app; a marker
    /// naming another app is [`Error::SchemaMismatch`] naming both (two apps on one KCL
    /// single-stream table would share every lease). Other layouts key leases by app or by
    /// stream identifier and need no marker.
    async fn claim_table(&self) -> Result<()> {
        if !matches!(self.shared.layout, KeyLayout::KclSingleStream { .. }) {
            return Ok(());
        }
        let req = self
            .shared
            .client
            .put_item()
            .table_name(&self.shared.table)
            .item(LEASE_KEY, s(schema::APP_MARKER))
            .item(schema::APP_NAME, s(self.app.as_str()))
            .condition_expression("attribute_not_exists(#k) OR #a = :a")
            .expression_attribute_names("#k", LEASE_KEY)
            .expression_attribute_names("#a", schema::APP_NAME)
            .expression_attribute_values(":a", s(self.app.as_str()))
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            );
        match self
            .send_conditional("PutItem", || req.clone().send())
            .await?
        {
            Reply::Done(_) => Ok(()),
            Reply::Failed(item) => {
                let other = item
                    .as_ref()
                    .and_then(|i| crate::protocol::string_of(i, schema::APP_NAME))
                    .unwrap_or_else(|| "an unnamed app".to_owned());
                Err(Error::SchemaMismatch {
                    store: STORE,
                    detail: format!(
                        "table {} is the KCL single-stream lease table of app {other:?}; app {:?} \
                         cannot share it (give it a table of its own)",
                        self.shared.table, self.app
                    ),
                })
            }
        }
    }
}

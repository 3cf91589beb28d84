//! [`DynamoStore`]: the [`Checkpointer`] and [`Membership`] implementations.
//!
//! # The write protocol
//!
//! Every lease operation is one conditional `UpdateItem` (or `DeleteItem`); nothing is ever
//! written unconditionally. Three kinds:
//!
//! - **Take** (`get_lease` of a lease the caller does not hold): one `UpdateItem` that is the
//!   rule's grant, conditioned on the lease being absent, free or expired. It costs one request
//!   whether it wins or not: a failed condition carries the current record
//!   (`ReturnValuesOnConditionCheckFailure = ALL_OLD`), from which [`Error::LeaseHeld`] names the
//!   holder without a second read.
//! - **Fenced renewal** (`renew`, `renew_many`): one `UpdateItem` conditioned on owner and
//!   fencing token, the rule's only condition.
//! - **Versioned rule** (everything else): the matching function of [`checkpoint_core::rules`]
//!   applied to a record, then one `UpdateItem` conditioned on that record being the stored one:
//!   `leaseCounter = :seen` (or `attribute_not_exists(leaseKey)`), plus owner and token for the
//!   fenced writes (checkpoint, prepare, release, steal). Every write bumps `leaseCounter`, so
//!   the condition holds iff nothing was written since the record the rule saw, and the rule's
//!   result is exactly what the contract returns. When the condition fails, `ALL_OLD` returns
//!   the current record: the rule is applied again to it, without a second read, and either
//!   reports its typed error (held, lost, changed, regression) or writes again.
//!
//! Which record a versioned rule first sees: the last record this handle wrote or read for the
//! key (a per-handle cache), otherwise a consistent `GetItem`. A cached record can be stale, so
//! an error or a no-op decided on it is never reported: the store reads the record
//! (consistently) and applies the rule again. Errors are only ever decided on a record that was
//! current at an instant inside the call: a consistent read or a failed condition's `ALL_OLD`.
//!
//! Concurrent `get_lease` calls on one item from one process share their takes (see
//! `Probe`): a call may answer "held" from a take that *began after the call did*, which saw a
//! record current inside the call, so many workers polling one lease keep one request in
//! flight instead of one each.
//!
//! If a failed condition came back without the item (an emulator that does not implement
//! `ReturnValuesOnConditionCheckFailure`), the store falls back to a consistent `GetItem`.
//!
//! # Retries and lost replies
//!
//! Throttling and transient faults are retried with [`checkpoint_core::Backoff::retry`] (the
//! SDK's own retries are off). A conditional write whose reply was lost is resolved by reading
//! the record back: it is re-issued, and if the first one had been applied the re-issued
//! condition fails and returns (`ALL_OLD`) the record it wrote; the rule, applied to that
//! record, returns the same success (the contract's rules are idempotent: the same worker's
//! grant, an equal checkpoint, a repeated release or steal). Success is never guessed, and a
//! failure is never reported without the record that proves it. The one visible effect:
//! `create_lease_if_absent` whose reply was lost reports `false` (the record exists, created by
//! this call).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{ConfigBag, Credentials, Intercept, Region, RuntimeComponents};
use aws_sdk_dynamodb::error::{BoxError, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ProvisionedThroughput, ReturnValue, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    TableStatus,
};
use checkpoint_core::Listing;
use checkpoint_core::rules::{self, Outcome};
use checkpoint_core::{
    AppName, Backoff, BatchMode, Capabilities, Checkpointer, Clock, ClockSource, Durability, Error,
    ErrorKind, FencingToken, HeartbeatTtl, Lease, LeaseDuration, LeaseKey, LeaseManager,
    Membership, Position, RenewOutcome, Result, ShardId, StreamName, WorkerId,
};
use futures::stream::{self, StreamExt};

use crate::config::{Billing, DynamoConfig};
use crate::error::{STORE, map_error};
use crate::schema::{
    self, APP_NAME, CHECKPOINT_OWNER, Expr, FENCING_TOKEN, Item, KeyLayout, LEASE_CLAIMANT,
    LEASE_COUNTER, LEASE_DEADLINE_MILLIS, LEASE_KEY, LEASE_OWNER, OWNER_SWITCHES, SHARD_ID,
    STREAM_NAME, Stored, WORKER_EXPIRY_MILLIS, WORKER_ID, decode, encode_update, n, s, worker_key,
    worker_prefix,
};

/// How many times one operation re-applies its rule after losing a race before giving up with
/// a retryable error.
const MAX_ROUNDS: usize = 32;

/// Counts every request attempt the DynamoDB client sends.
#[derive(Debug)]
struct CountRequests(Arc<AtomicU64>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Where a rule's first record comes from.
#[derive(Debug)]
enum Start {
    /// The handle's cached record, else a consistent read.
    Read,
    /// A record known to be current (a failed condition's `ALL_OLD`).
    Known(Box<Option<Stored>>),
}

/// The result of one conditional write.
enum Written {
    /// The write happened; this is the stored record now.
    Done(Stored),
    /// The condition failed; this is the current record (`None`: absent).
    Conflict(Option<Stored>),
}

/// A lease and checkpoint store for one app on one DynamoDB table.
///
/// Cloning is cheap; clones share the client, the request counter and the record cache.
/// [`DynamoStore::for_app`] gives a handle for another app on the same client and table.
#[derive(Clone)]
pub struct DynamoStore {
    shared: Arc<Shared>,
    app: AppName,
    cache: Arc<Mutex<HashMap<LeaseKey, Stored>>>,
    /// KCL expiry rule: when this handle first saw each `(lease, leaseCounter)` of a lease
    /// held by a KCL worker (no `leaseDeadlineMillis`).
    observed: Arc<Mutex<Observed>>,
}

/// Per lease, the `leaseCounter` seen and since when (KCL expiry rule).
type Observed = HashMap<LeaseKey, (Option<u64>, SystemTime)>;

/// The last take `get_lease` sent for one item (see [`Probe`]).
type Gate = Arc<tokio::sync::Mutex<Option<Probe>>>;

/// A take sent by `get_lease`, and the record it saw. Concurrent `get_lease` calls of one
/// process on one lease queue behind one gate; a call that finds a probe which *started after
/// the call began* may decide "held" from that probe's record, since the record was current at
/// an instant inside the call (linearizable), instead of sending a request of its own. Many
/// workers of one process polling one lease so cost one request in flight, not one each.
#[derive(Debug)]
struct Probe {
    started: Instant,
    at: SystemTime,
    observed: Option<Stored>,
}

/// What every app's handle on one client shares.
struct Shared {
    client: Client,
    /// The endpoint (or region) and table, naming the table across handles.
    scope: String,
    table: String,
    layout: KeyLayout,
    billing: Billing,
    skew: Duration,
    backoff: Backoff,
    renew_concurrency: usize,
    table_active_timeout: Duration,
    clock: Arc<dyn Clock>,
    requests: Arc<AtomicU64>,
}

impl fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.shared.table)
            .field("app", &self.app)
            .field("layout", &self.shared.layout)
            .field("skew_allowance", &self.shared.skew)
            .finish_non_exhaustive()
    }
}

/// Whether the environment names credentials of its own (so a custom endpoint should use the
/// default chain rather than the dummy credentials).
fn environment_has_credentials() -> bool {
    const VARS: [&str; 5] = [
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ];
    VARS.iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

fn environment_has_region() -> bool {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
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
        let store = Self::build(&config, app).await;
        store.init().await?;
        Ok(store)
    }

    async fn build(config: &DynamoConfig, app: AppName) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http.clone());
        let emulator = config.endpoint.is_some();
        match &config.region {
            Some(region) => loader = loader.region(Region::new(region.clone())),
            None if emulator && !environment_has_region() => {
                loader = loader.region(Region::new("us-east-1"));
            }
            None => {}
        }
        let credentials = match &config.credentials {
            Some(c) => Some(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                c.session_token.clone(),
                None,
                "checkpoint-dynamo-static",
            )),
            None if emulator && !environment_has_credentials() => Some(Credentials::new(
                "emulator",
                "emulator",
                None,
                None,
                "checkpoint-dynamo-emulator",
            )),
            None => None,
        };
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let shared = loader.load().await;
        let requests = Arc::new(AtomicU64::new(0));
        let mut builder = aws_sdk_dynamodb::config::Builder::from(&shared)
            .http_client(http)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(config.request_timeout)
                    .connect_timeout(config.request_timeout)
                    .build(),
            )
            .interceptor(CountRequests(requests.clone()));
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint.clone());
        }
        Self {
            shared: Arc::new(Shared {
                client: Client::from_conf(builder.build()),
                scope: format!(
                    "{} {}",
                    config
                        .endpoint
                        .as_deref()
                        .or(config.region.as_deref())
                        .unwrap_or_default(),
                    config.table
                ),
                table: config.table.clone(),
                layout: config.layout.clone(),
                billing: config.billing,
                skew: config.skew_allowance,
                backoff: config.backoff,
                renew_concurrency: config.renew_concurrency,
                table_active_timeout: config.table_active_timeout,
                clock: config.clock.clone(),
                requests,
            }),
            app,
            cache: Arc::default(),
            observed: Arc::default(),
        }
    }

    /// A handle for `app` on the same client, table and settings (no request is sent; the
    /// table was initialised when this handle was opened). Its record cache is its own.
    pub fn for_app(&self, app: AppName) -> Self {
        Self {
            shared: self.shared.clone(),
            app,
            cache: Arc::default(),
            observed: Arc::default(),
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

    /// "Now" in whole milliseconds, the precision deadlines are stored with.
    fn now(&self) -> SystemTime {
        schema::from_millis(schema::to_millis(self.shared.clock.now()))
    }

    fn pk(&self, key: &LeaseKey) -> Result<String> {
        self.shared.layout.key(&self.app, key)
    }

    fn cached(&self, key: &LeaseKey) -> Option<Stored> {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn remember(&self, key: &LeaseKey, stored: Option<&Stored>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match stored {
            Some(s) => {
                cache.insert(key.clone(), s.clone());
            }
            None => {
                cache.remove(key);
            }
        }
    }

    /// Runs one request builder through the retry policy.
    async fn send<T, E, Fut, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: std::future::Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>> + Send,
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        self.shared
            .backoff
            .retry(|_| async { f().await.map_err(|e| map_error(op, e)) })
            .await
    }

    /// Operation 6's read: a strongly consistent `GetItem`.
    async fn read(&self, key: &LeaseKey) -> Result<Option<Stored>> {
        let pk = self.pk(key)?;
        let req = self
            .shared
            .client
            .get_item()
            .table_name(&self.shared.table)
            .key(LEASE_KEY, s(pk))
            .consistent_read(true);
        let out = self.send("GetItem", || req.clone().send()).await?;
        let stored = out.item().map(|item| decode(key, item)).transpose()?;
        self.remember(key, stored.as_ref());
        Ok(stored)
    }

    /// The one conditional write every lease operation but `renew` ends in.
    ///
    /// Mutual exclusion and fencing: the condition `leaseCounter = :seen` (or
    /// `attribute_not_exists(leaseKey)`) makes the write happen only if the stored record is the
    /// one `new` was computed from by the rules, so a decision taken on a record another worker
    /// has since changed is never written; the failure returns that worker's record instead.
    /// A fenced write (`fence = Some((worker, token))`: checkpoint, prepare, release, steal)
    /// also names owner and token in its condition, so the store itself rejects a holder whose
    /// token was superseded even if the versions were to agree.
    async fn write(
        &self,
        key: &LeaseKey,
        current: Option<&Stored>,
        new: &Lease,
        fence: Option<(&WorkerId, FencingToken)>,
    ) -> Result<Written> {
        let pk = self.pk(key)?;
        let version = Stored::next_version(current);
        let mut expr = Expr::default();
        encode_update(&mut expr, &self.shared.layout, &self.app, new, version);
        let condition = match current {
            None => format!("attribute_not_exists({})", expr.name(LEASE_KEY)),
            Some(Stored {
                version: Some(seen),
                ..
            }) => {
                let counter = expr.name(LEASE_COUNTER);
                let seen = expr.value(n(*seen));
                format!("{counter} = {seen}")
            }
            Some(Stored { version: None, .. }) => {
                let (key_name, counter) = (expr.name(LEASE_KEY), expr.name(LEASE_COUNTER));
                format!("attribute_exists({key_name}) AND attribute_not_exists({counter})")
            }
        };
        let condition = match fence {
            Some((worker, token)) => format!(
                "{condition} AND {} AND {}",
                schema::owner_condition(&mut expr, worker),
                schema::token_condition(&mut expr, token)
            ),
            None => condition,
        };
        let req = self
            .shared
            .client
            .update_item()
            .table_name(&self.shared.table)
            .key(LEASE_KEY, s(pk))
            .update_expression(expr.update_expression())
            .condition_expression(condition)
            .set_expression_attribute_names(Some(expr.names))
            .set_expression_attribute_values(Some(expr.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let result = self
            .shared
            .backoff
            .retry(|_| async {
                match req.clone().send().await {
                    Ok(_) => Ok(None),
                    Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                        Ok(Some(match e.into_err() {
                            aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => c.item,
                            _ => None,
                        }))
                    }
                    Err(e) => Err(map_error("UpdateItem", e)),
                }
            })
            .await?;
        match result {
            None => {
                let stored = Stored {
                    lease: new.clone(),
                    version: Some(version),
                };
                self.remember(key, Some(&stored));
                Ok(Written::Done(stored))
            }
            Some(Some(item)) => {
                let stored = decode(key, &item)?;
                self.remember(key, Some(&stored));
                Ok(Written::Conflict(Some(stored)))
            }
            // The failure did not carry the item (absent, or an emulator without
            // ReturnValuesOnConditionCheckFailure): read it.
            Some(None) => Ok(Written::Conflict(self.read(key).await?)),
        }
    }

    /// `get_lease`'s first request: the grant to a new owner as one `UpdateItem` conditioned
    /// on the lease being absent, free (no `leaseOwner`, no `checkpointOwner`) or expired
    /// (`leaseDeadlineMillis <= now - skew_allowance`). It sets owner and deadline, clears any
    /// claim, and adds 1 to `fencingToken`, `ownerSwitchesSinceCheckpoint` and `leaseCounter`:
    /// exactly the rule's grant. Mutual exclusion: DynamoDB evaluates the condition and applies
    /// the update atomically, so of many workers taking one free lease exactly one succeeds; the
    /// others' failures return the winner's record (`ALL_OLD`) for [`Error::LeaseHeld`],
    /// without a second read. A lease the caller already holds, or one held by a KCL worker, fails
    /// the condition too and goes through the rule.
    async fn take(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        duration: LeaseDuration,
    ) -> Result<Written> {
        let pk = self.pk(key)?;
        let now = self.now();
        let judged_at = now.checked_sub(self.shared.skew).unwrap_or(now);
        let mut expr = Expr::default();
        expr.set(LEASE_OWNER, s(worker.as_str()));
        expr.set(
            LEASE_DEADLINE_MILLIS,
            n(schema::to_millis(now + duration.get())),
        );
        expr.set_or_remove(CHECKPOINT_OWNER, None);
        expr.set_or_remove(LEASE_CLAIMANT, None);
        if self.shared.layout == KeyLayout::Shared {
            expr.set(APP_NAME, s(self.app.as_str()));
            expr.set(STREAM_NAME, s(key.stream.as_str()));
            expr.set(SHARD_ID, s(key.shard.as_str()));
        }
        let (token, switches, counter) = (
            expr.name(FENCING_TOKEN),
            expr.name(OWNER_SWITCHES),
            expr.name(LEASE_COUNTER),
        );
        let one = expr.value(n(1));
        let update = format!(
            "{} ADD {token} {one}, {switches} {one}, {counter} {one}",
            expr.update_expression()
        );
        let (owner, holder, deadline) = (
            expr.name(LEASE_OWNER),
            expr.name(CHECKPOINT_OWNER),
            expr.name(LEASE_DEADLINE_MILLIS),
        );
        let judged = expr.value(n(schema::to_millis(judged_at)));
        // A free lease released while claimed is reserved for the claimant until its deadline
        // (a claim is honoured, `rules::get_lease`).
        let (claimant, me) = (expr.name(LEASE_CLAIMANT), expr.value(s(worker.as_str())));
        let condition = format!(
            "(attribute_not_exists({owner}) AND attribute_not_exists({holder}) AND \
              (attribute_not_exists({claimant}) OR {claimant} = {me} OR \
               attribute_not_exists({deadline}))) OR \
             (attribute_exists({deadline}) AND {deadline} <= {judged})"
        );
        let req = self
            .shared
            .client
            .update_item()
            .table_name(&self.shared.table)
            .key(LEASE_KEY, s(pk))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(expr.names))
            .set_expression_attribute_values(Some(expr.values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        self.conditional_update(key, req).await
    }

    /// Sends a conditional `UpdateItem` that returns `ALL_NEW` on success and `ALL_OLD` on a
    /// failed condition, through the retry policy, and caches what it learns.
    async fn conditional_update(
        &self,
        key: &LeaseKey,
        req: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    ) -> Result<Written> {
        let result = self
            .shared
            .backoff
            .retry(|_| async {
                match req.clone().send().await {
                    Ok(out) => Ok(Ok(out.attributes.unwrap_or_default())),
                    Err(SdkError::ServiceError(e))
                        if e.err().is_conditional_check_failed_exception() =>
                    {
                        Ok(Err(match e.into_err() {
                            UpdateItemError::ConditionalCheckFailedException(c) => c.item,
                            _ => None,
                        }))
                    }
                    Err(e) => Err(map_error("UpdateItem", e)),
                }
            })
            .await?;
        match result {
            Ok(item) => {
                let stored = decode(key, &item)?;
                self.remember(key, Some(&stored));
                Ok(Written::Done(stored))
            }
            Err(Some(item)) => {
                let stored = decode(key, &item)?;
                self.remember(key, Some(&stored));
                Ok(Written::Conflict(Some(stored)))
            }
            Err(None) => Ok(Written::Conflict(self.read(key).await?)),
        }
    }

    /// Applies `rule` atomically: see the module docs. `fence` is passed to
    /// [`DynamoStore::write`].
    async fn apply<F>(
        &self,
        key: &LeaseKey,
        start: Start,
        fence: Option<(&WorkerId, FencingToken)>,
        rule: F,
    ) -> Result<Lease>
    where
        F: Fn(Option<&Stored>, SystemTime) -> Result<Outcome> + Send + Sync,
    {
        let (mut state, mut fresh) = match start {
            Start::Known(current) => (*current, true),
            Start::Read => match self.cached(key) {
                Some(stored) => (Some(stored), false),
                None => (self.read(key).await?, true),
            },
        };
        for _ in 0..MAX_ROUNDS {
            let outcome = rule(state.as_ref(), self.now());
            match outcome {
                Ok(Outcome::Write(new)) => {
                    match self.write(key, state.as_ref(), &new, fence).await? {
                        Written::Done(stored) => return Ok(stored.lease),
                        Written::Conflict(current) => {
                            state = current;
                            fresh = true;
                        }
                    }
                }
                // Only a record known to be current may decide an error or a no-op.
                _ if !fresh => {
                    state = self.read(key).await?;
                    fresh = true;
                }
                Ok(Outcome::Unchanged(lease)) => return Ok(lease),
                Err(e) => return Err(e),
            }
        }
        Err(Error::backend_message(
            STORE,
            true,
            format!("lease {key}: the record kept changing during {MAX_ROUNDS} attempts"),
        ))
    }

    /// One scan of the table's items whose `leaseKey` begins with `prefix` (or, with `None`,
    /// contains no `:`), every page, strongly consistent.
    async fn scan(&self, prefix: Option<String>) -> Result<Vec<Item>> {
        let mut names = HashMap::new();
        names.insert("#k".to_owned(), LEASE_KEY.to_owned());
        let mut values = HashMap::new();
        let filter = match prefix {
            Some(p) => {
                values.insert(":p".to_owned(), s(p));
                "begins_with(#k, :p)"
            }
            None => {
                values.insert(":p".to_owned(), s(":"));
                "NOT contains(#k, :p)"
            }
        };
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let req = self
                .shared
                .client
                .scan()
                .table_name(&self.shared.table)
                .consistent_read(true)
                .filter_expression(filter)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .set_exclusive_start_key(start.take());
            let out = self.send("Scan", || req.clone().send()).await?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(items),
            }
        }
    }

    async fn describe(&self) -> Result<Option<aws_sdk_dynamodb::types::TableDescription>> {
        let req = self
            .shared
            .client
            .describe_table()
            .table_name(&self.shared.table);
        let out = self
            .shared
            .backoff
            .retry(|_| async {
                match req.clone().send().await {
                    Ok(out) => Ok(out.table),
                    Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => {
                        Ok(None)
                    }
                    Err(e) => Err(map_error("DescribeTable", e)),
                }
            })
            .await?;
        Ok(out)
    }

    /// Creates the table; `Ok(())` also when someone else is creating it at the same moment.
    async fn create_table(&self) -> Result<()> {
        let build = |e: aws_sdk_dynamodb::error::BuildError| {
            Error::backend_message(STORE, false, format!("CreateTable request: {e}"))
        };
        let mut req = self
            .shared
            .client
            .create_table()
            .table_name(&self.shared.table)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(LEASE_KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(build)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(LEASE_KEY)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(build)?,
            );
        req = match self.shared.billing {
            Billing::OnDemand => req.billing_mode(BillingMode::PayPerRequest),
            Billing::Provisioned { read, write } => req
                .billing_mode(BillingMode::Provisioned)
                .provisioned_throughput(
                    ProvisionedThroughput::builder()
                        .read_capacity_units(read)
                        .write_capacity_units(write)
                        .build()
                        .map_err(build)?,
                ),
        };
        self.shared
            .backoff
            .retry(|_| async {
                match req.clone().send().await {
                    Ok(_) => Ok(()),
                    Err(SdkError::ServiceError(e)) if e.err().is_resource_in_use_exception() => {
                        Ok(())
                    }
                    Err(e) => Err(map_error("CreateTable", e)),
                }
            })
            .await
    }

    /// The rule of `get_lease` on `current` at `now`: another worker's lease is live until
    /// `deadline + skew_allowance`; a KCL-held lease (no deadline) until this handle has seen
    /// its `leaseCounter` unchanged for `duration`. The granted deadline is `now + duration`.
    fn grant_rule(
        &self,
        current: Option<&Stored>,
        key: &LeaseKey,
        worker: &WorkerId,
        duration: LeaseDuration,
        now: SystemTime,
    ) -> Result<Outcome> {
        let mut lease = current.map(|s| s.lease.clone());
        if let (Some(l), Some(stored)) = (lease.as_mut(), current)
            && l.deadline.is_none()
            && l.owner.as_ref().is_some_and(|o| o != worker)
        {
            l.deadline = Some(self.kcl_seen_since(key, stored.version, now) + duration.get());
        }
        let judged_at = now.checked_sub(self.shared.skew).unwrap_or(now);
        let mut lease = rules::get_lease(lease, key, worker, duration, judged_at)?;
        lease.deadline = Some(now + duration.get());
        Ok(Outcome::Write(lease))
    }

    /// The gate that lets concurrent `get_lease` calls on one item share one take: one per
    /// item (endpoint or region, table, `leaseKey`) in the whole process, so that handles with
    /// separate clients share it too.
    fn gate(&self, key: &LeaseKey) -> Result<Arc<tokio::sync::Mutex<Option<Probe>>>> {
        static GATES: LazyLock<Mutex<HashMap<(String, String), Gate>>> =
            LazyLock::new(Mutex::default);
        let item = (self.shared.scope.clone(), self.pk(key)?);
        let mut gates = GATES.lock().unwrap_or_else(|e| e.into_inner());
        Ok(gates.entry(item).or_default().clone())
    }

    /// When this handle first saw `key` at `version` (KCL expiry rule): `now` the first time,
    /// the recorded instant while the version stays the same.
    fn kcl_seen_since(&self, key: &LeaseKey, version: Option<u64>, now: SystemTime) -> SystemTime {
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        match observed.get(key) {
            Some((seen, since)) if *seen == version => *since,
            _ => {
                observed.insert(key.clone(), (version, now));
                now
            }
        }
    }

    fn lost(key: &LeaseKey, worker: &WorkerId, token: FencingToken) -> Error {
        Error::LeaseLost {
            key: key.clone(),
            worker: worker.clone(),
            token,
        }
    }
}

/// The lease of a stored record, for a rule.
fn lease_of(current: Option<&Stored>) -> Option<Lease> {
    current.map(|s| s.lease.clone())
}

/// Checks that an existing table has the key schema this crate writes.
fn check_schema(table: &str, desc: &aws_sdk_dynamodb::types::TableDescription) -> Result<()> {
    let mismatch = |detail: String| Error::SchemaMismatch {
        store: STORE,
        detail: format!("table {table}: {detail}"),
    };
    let keys: Vec<(&str, &KeyType)> = desc
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name(), k.key_type()))
        .collect();
    if keys != [(LEASE_KEY, &KeyType::Hash)] {
        return Err(mismatch(format!(
            "the key schema is {keys:?}; expected one hash key {LEASE_KEY:?} and no sort key"
        )));
    }
    let key_type = desc
        .attribute_definitions()
        .iter()
        .find(|a| a.attribute_name() == LEASE_KEY)
        .map(|a| a.attribute_type());
    if key_type != Some(&ScalarAttributeType::S) {
        return Err(mismatch(format!(
            "{LEASE_KEY} has type {key_type:?}; expected a string (S)"
        )));
    }
    Ok(())
}

#[async_trait]
impl LeaseManager for DynamoStore {
    fn app(&self) -> &AppName {
        &self.app
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: STORE,
            clock: ClockSource::Client {
                skew_allowance: self.shared.skew,
            },
            transactional_checkpoint: false,
            renew_many: BatchMode::Concurrent(self.shared.renew_concurrency),
            durability: Durability::Replicated,
            multi_process: true,
        }
    }

    /// Creates the table when absent (on-demand or provisioned, as configured) and waits, at
    /// most the configured time, until it is `ACTIVE`. Many callers at once are safe: a
    /// `ResourceInUseException` means another one is creating it, and this one waits too. An
    /// existing table with another key schema is [`Error::SchemaMismatch`].
    async fn init(&self) -> Result<()> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            match self.describe().await? {
                None => self.create_table().await?,
                Some(desc) => {
                    check_schema(&self.shared.table, &desc)?;
                    match desc.table_status() {
                        Some(TableStatus::Active) | Some(TableStatus::Updating) => return Ok(()),
                        Some(TableStatus::Creating) | None => {}
                        Some(other) => {
                            return Err(Error::backend_message(
                                STORE,
                                false,
                                format!("table {} is {other:?}", self.shared.table),
                            ));
                        }
                    }
                }
            }
            if started.elapsed() + pause > self.shared.table_active_timeout {
                return Err(Error::backend_message(
                    STORE,
                    true,
                    format!(
                        "table {} did not become ACTIVE within {:?}",
                        self.shared.table, self.shared.table_active_timeout
                    ),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Operation 2: one `UpdateItem` conditioned on `attribute_not_exists(leaseKey)`, so of
    /// racing creators exactly one creates (and returns `true`), and an existing record (a
    /// KCL-written one included) is never overwritten.
    async fn create_lease_if_absent(
        &self,
        key: &LeaseKey,
        parents: &[ShardId],
        initial: Option<&Position>,
    ) -> Result<bool> {
        for _ in 0..MAX_ROUNDS {
            let Some(new) = rules::create_if_absent(None, key, parents, initial) else {
                break;
            };
            match self.write(key, None, &new, None).await? {
                Written::Done(_) => return Ok(true),
                Written::Conflict(Some(_)) => return Ok(false),
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
    /// Expiry uses the client clock: another worker's lease counts as live until `deadline +
    /// skew_allowance` (so `LeaseHeld::remaining` includes the allowance); the granted deadline
    /// is `now + duration`. A lease held by a KCL worker (no `leaseDeadlineMillis`) expires by
    /// the KCL's rule: once this handle has seen the same `leaseCounter` for `duration`.
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
        self.apply(key, start, None, |current, now| {
            self.grant_rule(current, key, worker, duration, now)
        })
        .await
    }

    /// Fencing: one `UpdateItem` conditioned on the worker holding the lease (`leaseOwner`, or
    /// `checkpointOwner` during a hand-off) and `fencingToken = :token` (a record without
    /// `fencingToken` reads as token 0), setting the deadline and bumping `leaseCounter`;
    /// anything else, an absent record included, fails the condition and is
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
            .key(LEASE_KEY, s(pk))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(expr.names))
            .set_expression_attribute_values(Some(expr.values))
            .return_values(ReturnValue::AllNew);
        let result = self
            .shared
            .backoff
            .retry(|_| async {
                match req.clone().send().await {
                    Ok(out) => Ok(Some(out.attributes.unwrap_or_default())),
                    Err(SdkError::ServiceError(e))
                        if e.err().is_conditional_check_failed_exception() =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(map_error("UpdateItem", e)),
                }
            })
            .await?;
        match result {
            Some(item) => {
                let stored = decode(key, &item)?;
                self.remember(key, Some(&stored));
                Ok(stored.lease)
            }
            None => Err(Self::lost(key, worker, token)),
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
        self.apply(key, Start::Read, Some((worker, token)), |current, _| {
            rules::remove_lease_owner(lease_of(current), key, worker, token)
        })
        .await
    }

    /// Admin release, conditioned on the `leaseCounter` of the record it saw, so it clears
    /// only the owner it saw and never undoes a grant it did not see; token and checkpoint are
    /// kept (fencing: the released holder's token stays superseded by the next grant).
    async fn evict_lease(&self, key: &LeaseKey) -> Result<Lease> {
        self.pk(key)?;
        self.apply(key, Start::Read, None, |current, _| {
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
            .key(LEASE_KEY, s(pk))
            .condition_expression("attribute_exists(#k)")
            .expression_attribute_names("#k", LEASE_KEY);
        self.shared
            .backoff
            .retry(|_| async {
                match req.clone().send().await {
                    Ok(_) => Ok(()),
                    Err(SdkError::ServiceError(e))
                        if e.err().is_conditional_check_failed_exception() =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(map_error("DeleteItem", e)),
                }
            })
            .await?;
        self.remember(key, None);
        Ok(())
    }

    /// Operation 9 judged as `get_lease` judges: the handle's clock minus the skew allowance.
    async fn list_leases_timed(&self, stream: Option<&StreamName>) -> Result<Listing> {
        let now = self.now();
        let store_now = now.checked_sub(self.shared.skew).unwrap_or(now);
        let leases = self.list_leases(stream).await?;
        Ok(Listing { leases, store_now })
    }

    async fn list_leases(&self, stream: Option<&StreamName>) -> Result<Vec<Lease>> {
        if let (KeyLayout::KclSingleStream { stream: own }, Some(asked)) =
            (&self.shared.layout, stream)
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
            let Some(key) = self.shared.layout.parse(&self.app, pk)? else {
                continue;
            };
            let stored = decode(&key, item)?;
            self.remember(&key, Some(&stored));
            leases.push(stored.lease);
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
        self.apply(key, Start::Read, None, |current, _| {
            rules::claim(lease_of(current), key, claimant)
        })
        .await
    }
}

#[async_trait]
impl Checkpointer for DynamoStore {
    /// Fencing and monotonic positions: the rule checks owner, token and progress on the
    /// record, and the write is conditioned on `leaseCounter` being that record's, so a stale
    /// holder (whose token was superseded by a grant, which bumps `leaseCounter`) never writes.
    async fn checkpoint_sequence(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        self.pk(key)?;
        self.apply(key, Start::Read, Some((worker, token)), |current, _| {
            rules::checkpoint(lease_of(current), key, worker, token, position).map(Outcome::Write)
        })
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
        self.apply(key, Start::Read, Some((worker, token)), |current, _| {
            rules::prepare_checkpoint(lease_of(current), key, worker, token, position)
                .map(Outcome::Write)
        })
        .await
    }

    async fn fetch_checkpoint(&self, key: &LeaseKey) -> Result<Option<Lease>> {
        Ok(self.read(key).await?.map(|s| s.lease))
    }

    /// The one exception to monotonic positions, explicit and admin-only; conditioned on the
    /// `leaseCounter` of the record it saw, ownership and token untouched (fencing).
    async fn reset_checkpoint(&self, key: &LeaseKey, position: Option<&Position>) -> Result<Lease> {
        self.pk(key)?;
        self.apply(key, Start::Read, None, |current, _| {
            rules::reset_checkpoint(lease_of(current), key, position).map(Outcome::Write)
        })
        .await
    }
}

impl DynamoStore {
    fn worker_expiry(item: &Item, id: &str) -> Result<Option<u64>> {
        schema::number(item, id, WORKER_EXPIRY_MILLIS)
    }
}

#[async_trait]
impl Membership for DynamoStore {
    /// A `PutItem` of the membership record (registering again just moves the expiry),
    /// conditioned on the key being absent or this worker's membership record, so it can never
    /// replace another kind of item (isolation).
    async fn register_worker(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        let expiry = schema::to_millis(self.now() + ttl.get());
        let pk = worker_key(&self.app, worker);
        let req = self
            .shared
            .client
            .put_item()
            .table_name(&self.shared.table)
            .item(LEASE_KEY, s(pk.clone()))
            .item(APP_NAME, s(self.app.as_str()))
            .item(WORKER_ID, s(worker.as_str()))
            .item(WORKER_EXPIRY_MILLIS, n(expiry))
            .condition_expression("attribute_not_exists(#k) OR #w = :w")
            .expression_attribute_names("#k", LEASE_KEY)
            .expression_attribute_names("#w", WORKER_ID)
            .expression_attribute_values(":w", s(worker.as_str()));
        let written = self
            .shared
            .backoff
            .retry(|_| async {
                match req.clone().send().await {
                    Ok(_) => Ok(true),
                    Err(SdkError::ServiceError(e))
                        if e.err().is_conditional_check_failed_exception() =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(map_error("PutItem", e)),
                }
            })
            .await?;
        if written {
            Ok(())
        } else {
            Err(Error::corrupt(
                pk,
                WORKER_ID,
                "the item is not this worker's membership record",
            ))
        }
    }

    /// `UpdateItem` conditioned on `attribute_exists(leaseKey)`: a deregistered or pruned worker
    /// gets [`Error::NotFound`] and must register again.
    async fn heartbeat(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        let expiry = schema::to_millis(self.now() + ttl.get());
        let req = self
            .shared
            .client
            .update_item()
            .table_name(&self.shared.table)
            .key(LEASE_KEY, s(worker_key(&self.app, worker)))
            .update_expression("SET #e = :e")
            .condition_expression("attribute_exists(#k)")
            .expression_attribute_names("#e", WORKER_EXPIRY_MILLIS)
            .expression_attribute_names("#k", LEASE_KEY)
            .expression_attribute_values(":e", n(expiry));
        let found = self
            .shared
            .backoff
            .retry(|_| async {
                match req.clone().send().await {
                    Ok(_) => Ok(true),
                    Err(SdkError::ServiceError(e))
                        if e.err().is_conditional_check_failed_exception() =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(map_error("UpdateItem", e)),
                }
            })
            .await?;
        if found {
            Ok(())
        } else {
            Err(Error::NotFound {
                entity: "worker",
                id: worker.to_string(),
            })
        }
    }

    async fn live_workers(&self) -> Result<Vec<WorkerId>> {
        let now = schema::to_millis(self.now());
        let mut live = Vec::new();
        for item in self.scan(Some(worker_prefix(&self.app))).await? {
            let Some(AttributeValue::S(pk)) = item.get(LEASE_KEY) else {
                continue;
            };
            let id = match item.get(WORKER_ID) {
                Some(AttributeValue::S(w)) => {
                    WorkerId::new(w).map_err(|e| Error::corrupt(pk, WORKER_ID, e.to_string()))?
                }
                _ => return Err(Error::corrupt(pk, WORKER_ID, "missing or not a string")),
            };
            if Self::worker_expiry(&item, pk)?.is_some_and(|e| e > now) {
                live.push(id);
            }
        }
        live.sort();
        Ok(live)
    }

    /// A `DeleteItem` conditioned on the key being absent (deregistering twice is not an
    /// error) or this worker's membership record, so it never removes another kind of item.
    async fn deregister_worker(&self, worker: &WorkerId) -> Result<()> {
        let pk = worker_key(&self.app, worker);
        let req = self
            .shared
            .client
            .delete_item()
            .table_name(&self.shared.table)
            .key(LEASE_KEY, s(pk.clone()))
            .condition_expression("attribute_not_exists(#k) OR #w = :w")
            .expression_attribute_names("#k", LEASE_KEY)
            .expression_attribute_names("#w", WORKER_ID)
            .expression_attribute_values(":w", s(worker.as_str()));
        let deleted = self
            .shared
            .backoff
            .retry(|_| async {
                match req.clone().send().await {
                    Ok(_) => Ok(true),
                    Err(SdkError::ServiceError(e))
                        if e.err().is_conditional_check_failed_exception() =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(map_error("DeleteItem", e)),
                }
            })
            .await?;
        if deleted {
            Ok(())
        } else {
            Err(Error::corrupt(
                pk,
                WORKER_ID,
                "the item is not this worker's membership record",
            ))
        }
    }

    /// Scans the app's membership records and deletes each expired one with a `DeleteItem`
    /// conditioned on `workerExpiryMillis` still being the expired value seen, so a worker that
    /// heartbeats meanwhile is not removed.
    async fn prune_dead_workers(&self) -> Result<usize> {
        let now = schema::to_millis(self.now());
        let mut pruned = 0;
        for item in self.scan(Some(worker_prefix(&self.app))).await? {
            let Some(AttributeValue::S(pk)) = item.get(LEASE_KEY) else {
                continue;
            };
            let Some(expiry) = Self::worker_expiry(&item, pk)? else {
                continue;
            };
            if expiry > now {
                continue;
            }
            let req = self
                .shared
                .client
                .delete_item()
                .table_name(&self.shared.table)
                .key(LEASE_KEY, s(pk.clone()))
                .condition_expression("#e = :e")
                .expression_attribute_names("#e", WORKER_EXPIRY_MILLIS)
                .expression_attribute_values(":e", n(expiry));
            let deleted = self
                .shared
                .backoff
                .retry(|_| async {
                    match req.clone().send().await {
                        Ok(_) => Ok(true),
                        Err(SdkError::ServiceError(e))
                            if e.err().is_conditional_check_failed_exception() =>
                        {
                            Ok(false)
                        }
                        Err(e) => Err(map_error("DeleteItem", e)),
                    }
                })
                .await?;
            if deleted {
                pruned += 1;
            }
        }
        Ok(pruned)
    }
}

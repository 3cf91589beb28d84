//! The conditional write protocol: every request a lease operation sends, and how a failed
//! condition becomes a typed answer.
//!
//! # The write protocol
//!
//! Every lease operation is one conditional `UpdateItem` (or `DeleteItem`); nothing is ever
//! written unconditionally. Three kinds:
//!
//! - **Take** (`get_lease` of a lease the caller does not hold): one `UpdateItem` that is the
//!   rule's grant, conditioned on the lease being absent or free, or on `leaseCounter` being a
//!   value this handle has observed unchanged for the lease duration (expired, see
//!   `observe.rs`) under another owner. It costs one request whether it wins or not: a failed
//!   condition carries the current record (`ReturnValuesOnConditionCheckFailure = ALL_OLD`),
//!   from which [`Error::LeaseHeld`] names the holder without a second read.
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
//! Expiry is never decided by a wall clock: the rules see, as the deadline of a lease held by
//! another worker, the instant this handle first saw its current `leaseCounter` plus the
//! holder's lease duration (`leaseDurationMillis`, or the requested duration on a KCL-written
//! item), on this handle's clock (`observe.rs`).
//!
//! Concurrent `get_lease` calls on one item through one client share their takes (see
//! [`Probe`]): a call may answer "held" from a take that *began after the call did*, which saw
//! a record current inside the call, so many workers polling one lease keep one request in
//! flight instead of one each.
//!
//! If a failed condition came back without the item (an emulator that does not implement
//! `ReturnValuesOnConditionCheckFailure`), the store falls back to a consistent `GetItem`.
//!
//! # Retries and lost replies
//!
//! Throttling and transient faults are retried with [`checkpoint_core::Backoff::retry`] (the
//! SDK's own retries are off), all through [`DynamoStore::send_conditional`] or
//! [`DynamoStore::send`]. A conditional write whose reply was lost is resolved by the record:
//! it is re-issued, and if the first one had been applied the re-issued condition fails and
//! returns (`ALL_OLD`) the record it wrote; the rule, applied to that record, returns the same
//! success (the contract's rules are idempotent: the same worker's grant, an equal checkpoint,
//! a repeated release or steal). `create_lease_if_absent` recognises its own record by the
//! `createNonce` it wrote. Success is never guessed, and a failure is never reported without
//! the record that proves it.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use checkpoint_core::rules::{self, Outcome};
use checkpoint_core::{Error, FencingToken, Lease, LeaseDuration, LeaseKey, Result, WorkerId};

use crate::error::{STORE, map_error};
use crate::observe::left;
use crate::schema::{
    self, CHECKPOINT_OWNER, CREATE_NONCE, Expr, FENCING_TOKEN, Item, LEASE_CLAIMANT, LEASE_COUNTER,
    LEASE_DEADLINE_MILLIS, LEASE_DURATION_MILLIS, LEASE_KEY, LEASE_OWNER, OWNER_SWITCHES, Stored,
    decode, encode_update, n, s,
};
use crate::store::DynamoStore;

/// How many times one operation re-applies its rule after losing a race before giving up with
/// a retryable error.
pub(crate) const MAX_ROUNDS: usize = 32;

/// Where a rule's first record comes from.
#[derive(Debug)]
pub(crate) enum Start {
    /// The handle's cached record, else a consistent read.
    Read,
    /// A record known to be current (a failed condition's `ALL_OLD`).
    Known(Box<Option<Stored>>),
}

/// The result of one conditional write.
pub(crate) enum Written {
    /// The write happened; this is the stored record now.
    Done(Stored),
    /// The condition failed; this is the current record (`None`: absent).
    Conflict(Option<Stored>),
}

/// The reply to a conditional request.
pub(crate) enum Reply<T> {
    /// The condition held and the request was applied.
    Done(T),
    /// The condition failed; the item as it is, when the request asked for it (`ALL_OLD`).
    Failed(Option<Item>),
}

/// An operation error that can be a failed condition.
pub(crate) trait Conditional:
    ProvideErrorMetadata + StdError + Send + Sync + 'static
{
    /// Whether this is `ConditionalCheckFailedException`.
    fn is_condition_failed(&self) -> bool;
    /// The item a failed condition returned.
    fn into_item(self) -> Option<Item>;
}

macro_rules! conditional {
    ($($error:ty),*) => {$(
        impl Conditional for $error {
            fn is_condition_failed(&self) -> bool {
                self.is_conditional_check_failed_exception()
            }
            fn into_item(self) -> Option<Item> {
                match self {
                    Self::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                }
            }
        }
    )*};
}
conditional!(UpdateItemError, PutItemError, DeleteItemError);

/// The last take `get_lease` sent for one item (see [`Probe`]).
pub(crate) type Gate = Arc<tokio::sync::Mutex<Option<Probe>>>;

/// A take sent by `get_lease`, and the record it saw. Concurrent `get_lease` calls through one
/// client on one lease queue behind one gate; a call that finds a probe which *started after
/// the call began* may decide "held" from that probe's record, since the record was current at
/// an instant inside the call (linearizable), instead of sending a request of its own.
#[derive(Debug)]
pub(crate) struct Probe {
    pub(crate) started: Instant,
    pub(crate) at: SystemTime,
    pub(crate) observed: Option<Stored>,
}

/// The lease of a stored record, for a rule.
pub(crate) fn lease_of(current: Option<&Stored>) -> Option<Lease> {
    current.map(|s| s.lease.clone())
}

impl DynamoStore {
    /// Runs one request through the retry policy; any error is mapped by `map_error`.
    pub(crate) async fn send<T, E, Fut, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>> + Send,
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        self.shared
            .backoff
            .retry(|_| async { f().await.map_err(|e| map_error(op, e)) })
            .await
    }

    /// Runs one conditional request through the retry policy: a failed condition is an
    /// answer ([`Reply::Failed`], never retried), any other error is mapped by `map_error`.
    pub(crate) async fn send_conditional<T, E, Fut, F>(
        &self,
        op: &'static str,
        f: F,
    ) -> Result<Reply<T>>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>> + Send,
        E: Conditional,
    {
        self.shared
            .backoff
            .retry(|_| async {
                match f().await {
                    Ok(out) => Ok(Reply::Done(out)),
                    Err(SdkError::ServiceError(e)) if e.err().is_condition_failed() => {
                        Ok(Reply::Failed(e.into_err().into_item()))
                    }
                    Err(e) => Err(map_error(op, e)),
                }
            })
            .await
    }

    /// "Now" on this handle's clock, in whole milliseconds.
    pub(crate) fn now(&self) -> SystemTime {
        schema::from_millis(schema::to_millis(self.shared.clock.now()))
    }

    pub(crate) fn pk(&self, key: &LeaseKey) -> Result<String> {
        self.shared.layout.key(&self.app, key)
    }

    pub(crate) fn cached(&self, key: &LeaseKey) -> Option<Stored> {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    pub(crate) fn remember(&self, key: &LeaseKey, stored: Option<&Stored>) {
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

    /// Records an observation of the item `pk` and returns the record with this handle's
    /// judgement as its deadline: for a held lease (or a released one reserved for its
    /// claimant), the first sighting of its `leaseCounter` plus the holder's lease duration
    /// (the KCL's default failover time, 10 s, when the item does not say); none for a free
    /// one.
    pub(crate) fn observed(&self, pk: &str, mut stored: Stored) -> Stored {
        stored.since = self
            .shared
            .tracking
            .observations
            .since(pk, stored.version, self.now());
        // A held lease, or a released one that keeps a deadline because it is reserved for
        // its claimant (a claim is honoured, `rules::get_lease`), is judged the same way.
        let judged = stored.lease.owner.is_some()
            || (stored.lease.claim.is_some() && stored.lease.deadline.is_some());
        stored.lease.deadline =
            judged.then(|| stored.since + stored.held_for.unwrap_or(crate::KCL_DEFAULT_FAILOVER));
        stored
    }

    /// Decodes an item read for `key`, observes it and caches it.
    pub(crate) fn learn(&self, key: &LeaseKey, pk: &str, item: &Item) -> Result<Stored> {
        let stored = self.observed(pk, decode(key, item, self.shared.kcl_at_timestamp)?);
        self.remember(key, Some(&stored));
        Ok(stored)
    }

    /// Operation 6's read: a strongly consistent `GetItem`.
    pub(crate) async fn read(&self, key: &LeaseKey) -> Result<Option<Stored>> {
        let pk = self.pk(key)?;
        let req = self
            .shared
            .client
            .get_item()
            .table_name(&self.shared.table)
            .key(LEASE_KEY, s(pk.clone()))
            .consistent_read(true);
        let out = self.send("GetItem", || req.clone().send()).await?;
        match out.item() {
            Some(item) => Ok(Some(self.learn(key, &pk, item)?)),
            None => {
                self.shared.tracking.observations.forget(&pk);
                self.remember(key, None);
                Ok(None)
            }
        }
    }

    /// The one conditional write every lease operation but `renew` and the take ends in.
    ///
    /// Mutual exclusion and fencing: the condition `leaseCounter = :seen` (or
    /// `attribute_not_exists(leaseKey)`) makes the write happen only if the stored record is the
    /// one `new` was computed from by the rules, so a decision taken on a record another worker
    /// has since changed is never written; the failure returns that worker's record instead.
    /// A fenced write (`fence = Some((worker, token))`: checkpoint, prepare, release, steal)
    /// also names owner and token in its condition, so the store itself rejects a holder whose
    /// token was superseded even if the versions were to agree. `duration` (a grant) is stored
    /// as `leaseDurationMillis`; `nonce` (a creation) as `createNonce`.
    pub(crate) async fn write(
        &self,
        key: &LeaseKey,
        current: Option<&Stored>,
        new: &Lease,
        fence: Option<(&WorkerId, FencingToken)>,
        duration: Option<LeaseDuration>,
        nonce: Option<&str>,
    ) -> Result<Written> {
        let pk = self.pk(key)?;
        let version = Stored::next_version(current);
        let mut expr = Expr::default();
        encode_update(
            &mut expr,
            &self.shared.layout,
            &self.app,
            new,
            version,
            self.shared.kcl_at_timestamp,
        );
        if let Some(d) = duration {
            expr.set(LEASE_DURATION_MILLIS, n(schema::duration_millis(d.get())));
        }
        if let Some(nonce) = nonce {
            expr.set(CREATE_NONCE, s(nonce));
        }
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
            .key(LEASE_KEY, s(pk.clone()))
            .update_expression(expr.update_expression())
            .condition_expression(condition)
            .set_expression_attribute_names(Some(expr.names))
            .set_expression_attribute_values(Some(expr.values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        // A write that grants or renews nothing (a claim, a checkpoint) does not extend the
        // holder's life: this handle keeps judging it from its sighting of the version before.
        let carried = current
            .filter(|c| duration.is_none() && c.lease.owner.is_some() && c.lease.owner == new.owner)
            .map(|c| c.since);
        match self.updated(key, &pk, req).await? {
            Written::Done(stored) => match carried {
                Some(since) => {
                    self.shared
                        .tracking
                        .observations
                        .carry(&pk, stored.version, since);
                    let stored = self.observed(&pk, stored);
                    self.remember(key, Some(&stored));
                    Ok(Written::Done(stored))
                }
                None => Ok(Written::Done(stored)),
            },
            conflict => Ok(conflict),
        }
    }

    /// Sends a conditional `UpdateItem` that returns `ALL_NEW` on success and `ALL_OLD` on a
    /// failed condition, and observes and caches what it learns.
    async fn updated(
        &self,
        key: &LeaseKey,
        pk: &str,
        req: UpdateItemFluentBuilder,
    ) -> Result<Written> {
        match self
            .send_conditional("UpdateItem", || req.clone().send())
            .await?
        {
            Reply::Done(out) => Ok(Written::Done(self.learn(
                key,
                pk,
                &out.attributes.unwrap_or_default(),
            )?)),
            Reply::Failed(Some(item)) => Ok(Written::Conflict(Some(self.learn(key, pk, &item)?))),
            // The failure did not carry the item (absent, or an emulator without
            // ReturnValuesOnConditionCheckFailure): read it.
            Reply::Failed(None) => Ok(Written::Conflict(self.read(key).await?)),
        }
    }

    /// `get_lease`'s first request: the grant to a new owner as one `UpdateItem` conditioned
    /// on the lease being absent, free (no `leaseOwner`, no `checkpointOwner`), or, when this
    /// handle has observed another worker's lease unchanged for its duration, on
    /// `leaseCounter` still being the value observed (expired by the KCL's rule; no clock is
    /// compared). It sets owner, duration and (information only) the writer's deadline, clears
    /// any claim, and adds 1 to `fencingToken`, `ownerSwitchesSinceCheckpoint` and
    /// `leaseCounter`: exactly the rule's grant to a new owner. Mutual exclusion: DynamoDB
    /// evaluates the condition and applies the update atomically, so of many workers taking
    /// one lease exactly one succeeds; the others' failures return the winner's record
    /// (`ALL_OLD`) for [`Error::LeaseHeld`], without a second read. A lease the caller already
    /// holds (whose token it keeps) fails the condition and goes through the rule.
    pub(crate) async fn take(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        duration: LeaseDuration,
    ) -> Result<Written> {
        let pk = self.pk(key)?;
        let now = self.now();
        let expired = self.cached(key).and_then(|seen| {
            let other = seen.lease.owner.as_ref().is_some_and(|o| o != worker);
            let period = seen.held_for.unwrap_or(duration.get());
            (other && left(seen.since, period, now).is_none())
                .then_some(seen.version)
                .flatten()
        });
        let mut expr = Expr::default();
        expr.set(LEASE_OWNER, s(worker.as_str()));
        expr.set(
            LEASE_DEADLINE_MILLIS,
            n(schema::to_millis(now + duration.get())),
        );
        expr.set(
            LEASE_DURATION_MILLIS,
            n(schema::duration_millis(duration.get())),
        );
        expr.set_or_remove(CHECKPOINT_OWNER, None);
        expr.set_or_remove(LEASE_CLAIMANT, None);
        for (attr, value) in self.shared.layout.key_attributes(&self.app, key) {
            expr.set(attr, value);
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
        let (owner, holder) = (expr.name(LEASE_OWNER), expr.name(CHECKPOINT_OWNER));
        // A free lease released while claimed is reserved for the claimant (a claim is
        // honoured, `rules::get_lease`): anyone else goes through the rule, which judges the
        // reservation on this handle's observations.
        let (claimant, me) = (expr.name(LEASE_CLAIMANT), expr.value(s(worker.as_str())));
        let mut condition = format!(
            "(attribute_not_exists({owner}) AND attribute_not_exists({holder}) AND \
              (attribute_not_exists({claimant}) OR {claimant} = {me}))"
        );
        if let Some(seen) = expired {
            let seen = expr.value(n(seen));
            condition = format!("{condition} OR {counter} = {seen}");
        }
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
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        self.updated(key, &pk, req).await
    }

    /// Applies `rule` atomically: see the module docs. `fence`, `duration` and `nonce` are
    /// passed to [`DynamoStore::write`].
    pub(crate) async fn apply<F>(
        &self,
        key: &LeaseKey,
        start: Start,
        fence: Option<(&WorkerId, FencingToken)>,
        duration: Option<LeaseDuration>,
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
                    match self
                        .write(key, state.as_ref(), &new, fence, duration, None)
                        .await?
                    {
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

    /// The `leaseKey` of every item of the table but the ones beginning with `~` (membership
    /// records, the KCL app marker): one scan projected on the key, every page, strongly
    /// consistent.
    pub(crate) async fn scan_keys(&self) -> Result<Vec<String>> {
        let req = self
            .shared
            .client
            .scan()
            .table_name(&self.shared.table)
            .consistent_read(true)
            .projection_expression("#k")
            .filter_expression("NOT begins_with(#k, :t)")
            .expression_attribute_names("#k", LEASE_KEY)
            .expression_attribute_values(":t", s("~"));
        let mut keys = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let req = req.clone().set_exclusive_start_key(start.take());
            let out = self.send("Scan", || req.clone().send()).await?;
            keys.extend(
                out.items()
                    .iter()
                    .filter_map(|item| match item.get(LEASE_KEY) {
                        Some(AttributeValue::S(k)) => Some(k.clone()),
                        _ => None,
                    }),
            );
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(keys),
            }
        }
    }

    /// One scan of the table's items whose `leaseKey` begins with `prefix` (or, with `None`,
    /// contains no `:`), every page, strongly consistent.
    pub(crate) async fn scan(&self, prefix: Option<String>) -> Result<Vec<Item>> {
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
                .set_limit(self.shared.list_page_size)
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

    /// The rule of `get_lease` on `current` at `now`: another worker's lease is live until
    /// this handle has seen its `leaseCounter` unchanged for the holder's lease duration (the
    /// requested `duration` when the item does not carry one, as the KCL uses its own
    /// failover time); the caller's own lease is re-granted with its token.
    pub(crate) fn grant_rule(
        &self,
        current: Option<&Stored>,
        key: &LeaseKey,
        worker: &WorkerId,
        duration: LeaseDuration,
        now: SystemTime,
    ) -> Result<Outcome> {
        let mut lease = lease_of(current);
        if let (Some(l), Some(stored)) = (lease.as_mut(), current)
            && l.owner.as_ref().is_some_and(|o| o != worker)
        {
            l.deadline = Some(stored.since + stored.held_for.unwrap_or(duration.get()));
        }
        rules::get_lease(lease, key, worker, duration, now).map(Outcome::Write)
    }

    /// The gate that lets concurrent `get_lease` calls on one item share one take: one per
    /// item of this client's table.
    pub(crate) fn gate(&self, key: &LeaseKey) -> Result<Gate> {
        let pk = self.pk(key)?;
        let mut gates = self
            .shared
            .tracking
            .gates
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Ok(gates.entry(pk).or_default().clone())
    }

    pub(crate) fn lost(key: &LeaseKey, worker: &WorkerId, token: FencingToken) -> Error {
        Error::LeaseLost {
            key: key.clone(),
            worker: worker.clone(),
            token,
        }
    }
}

/// A value no other call writes: the process id, a process-wide counter and the time, mixed
/// by the standard library's randomly keyed hasher.
pub(crate) fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!(
        "{}-{:016x}",
        std::process::id(),
        hasher.finish() ^ COUNTER.load(Ordering::Relaxed)
    )
}

/// An attribute value that is a string, for membership items.
pub(crate) fn string_of(item: &Item, attr: &str) -> Option<String> {
    match item.get(attr) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

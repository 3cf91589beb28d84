//! The [`Membership`] implementation: membership records in the lease table, judged dead by
//! observation, never by a wall clock.
//!
//! A record is `leaseKey = ~worker:<app>:<workerId>` with `appName`, `workerId`, `instanceId`
//! (the nonce of the handle that registered it), `heartbeatCounter` (bumped by every
//! registration and heartbeat), `heartbeatTtlMillis` and, as information only,
//! `workerExpiryMillis` (the writer's wall clock). A worker is dead when this handle has seen
//! its `heartbeatCounter` unchanged for its TTL on its own clock (the rule of `observe.rs`), so
//! a fresh process counts every registered worker live for one TTL, and a handle takes another
//! instance's record over only once it has judged it dead that way.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use checkpoint_core::{Error, HeartbeatTtl, Membership, Result, WorkerId};

use crate::observe::left;
use crate::protocol::Reply;
use crate::schema::{
    self, APP_NAME, HEARTBEAT_COUNTER, HEARTBEAT_TTL_MILLIS, INSTANCE_ID, Item, LEASE_KEY,
    WORKER_EXPIRY_MILLIS, WORKER_ID, n, s, worker_key, worker_prefix,
};
use crate::store::DynamoStore;

/// A membership record as this handle judges it.
struct Member {
    pk: String,
    id: WorkerId,
    counter: Option<u64>,
    /// Time left before this handle counts the worker dead; `None`: dead.
    left: Option<Duration>,
}

impl DynamoStore {
    /// Scans the app's membership records and judges each by observation. A record whose
    /// worker id cannot be read is skipped with a warning naming it.
    async fn members(&self) -> Result<Vec<Member>> {
        let now = self.now();
        let mut members = Vec::new();
        for item in self.scan(Some(worker_prefix(&self.app))).await? {
            let Some(AttributeValue::S(pk)) = item.get(LEASE_KEY) else {
                continue;
            };
            match self.member(pk, &item, now) {
                Ok(member) => members.push(member),
                Err(e) => tracing::warn!(
                    table = %self.shared.table,
                    lease_key = %pk,
                    error = %e,
                    "skipping an unreadable membership record"
                ),
            }
        }
        Ok(members)
    }

    fn member(&self, pk: &str, item: &Item, now: std::time::SystemTime) -> Result<Member> {
        let id = match item.get(WORKER_ID) {
            Some(AttributeValue::S(w)) => {
                WorkerId::new(w).map_err(|e| Error::corrupt(pk, WORKER_ID, e.to_string()))?
            }
            _ => return Err(Error::corrupt(pk, WORKER_ID, "missing or not a string")),
        };
        let counter = schema::number(item, pk, HEARTBEAT_COUNTER)?;
        let ttl = schema::number(item, pk, HEARTBEAT_TTL_MILLIS)?
            .map(Duration::from_millis)
            .unwrap_or(crate::KCL_DEFAULT_FAILOVER);
        let since = self.shared.tracking.observations.since(pk, counter, now);
        Ok(Member {
            pk: pk.to_owned(),
            id,
            counter,
            left: left(since, ttl, now),
        })
    }

    /// The registration and heartbeat write: `heartbeatCounter + 1`, this handle's
    /// `instanceId`, the TTL, and the information-only expiry, under `condition` (which may
    /// name `#k`, `#w`/`:w`, `#i`/`:i`, `#c`, and `:c` = `counter` when given). A failed
    /// condition returns the item as it was (`ALL_OLD`).
    async fn beat(
        &self,
        worker: &WorkerId,
        ttl: HeartbeatTtl,
        condition: &str,
        counter: Option<u64>,
    ) -> Result<Reply<()>> {
        let expiry = schema::to_millis(self.now() + ttl.get());
        let mut req = self
            .shared
            .client
            .update_item()
            .table_name(&self.shared.table)
            .key(LEASE_KEY, s(worker_key(&self.app, worker)))
            .update_expression("SET #a = :a, #w = :w, #i = :i, #t = :t, #e = :e ADD #c :one")
            .condition_expression(condition)
            .expression_attribute_names("#k", LEASE_KEY)
            .expression_attribute_names("#a", APP_NAME)
            .expression_attribute_names("#w", WORKER_ID)
            .expression_attribute_names("#i", INSTANCE_ID)
            .expression_attribute_names("#t", HEARTBEAT_TTL_MILLIS)
            .expression_attribute_names("#e", WORKER_EXPIRY_MILLIS)
            .expression_attribute_names("#c", HEARTBEAT_COUNTER)
            .expression_attribute_values(":a", s(self.app.as_str()))
            .expression_attribute_values(":w", s(worker.as_str()))
            .expression_attribute_values(":i", s(self.instance.as_str()))
            .expression_attribute_values(":t", n(schema::duration_millis(ttl.get())))
            .expression_attribute_values(":e", n(expiry))
            .expression_attribute_values(":one", n(1))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(c) = counter {
            req = req.expression_attribute_values(":c", n(c));
        }
        let reply = self
            .send_conditional("UpdateItem", || req.clone().send())
            .await?;
        Ok(match reply {
            Reply::Done(_) => Reply::Done(()),
            Reply::Failed(item) => Reply::Failed(item),
        })
    }

    /// Whether `item` is `worker`'s membership record.
    fn is_record_of(item: &Item, worker: &WorkerId) -> bool {
        matches!(item.get(WORKER_ID), Some(AttributeValue::S(w)) if w == worker.as_str())
    }
}

#[async_trait]
impl Membership for DynamoStore {
    /// Operation 12, register ([`checkpoint_core::rules::register_worker`]), judged by
    /// observation. An `UpdateItem` conditioned on the key being absent or this instance's
    /// record of this worker (registering again is a heartbeat). When another instance's record
    /// stands there, this handle judges it by observation: still live (its `heartbeatCounter`
    /// not yet seen unchanged for its TTL) is [`Error::WorkerIdInUse`]; dead, it is taken over
    /// by an `UpdateItem` conditioned on the counter still being the value observed, so a
    /// heartbeat of the old instance meanwhile wins and the takeover is refused
    /// (`WorkerIdInUse`). An item of another kind under the key is [`Error::Corrupt`]; no
    /// condition lets a write replace it (isolation).
    async fn register_worker(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        let pk = worker_key(&self.app, worker);
        let not_this = || {
            Error::corrupt(
                worker_key(&self.app, worker),
                WORKER_ID,
                "the item is not this worker's membership record",
            )
        };
        let item = match self
            .beat(
                worker,
                ttl,
                "attribute_not_exists(#k) OR (#w = :w AND #i = :i)",
                None,
            )
            .await?
        {
            Reply::Done(()) => return Ok(()),
            Reply::Failed(None) => return Err(Error::worker_id_in_use(worker)),
            Reply::Failed(Some(item)) => item,
        };
        if !Self::is_record_of(&item, worker) {
            return Err(not_this());
        }
        let member = self.member(&pk, &item, self.now())?;
        if member.left.is_some() {
            return Err(Error::worker_id_in_use(worker));
        }
        let condition = match member.counter {
            Some(_) => "attribute_exists(#k) AND #w = :w AND #c = :c",
            None => "attribute_exists(#k) AND #w = :w AND attribute_not_exists(#c)",
        };
        match self.beat(worker, ttl, condition, member.counter).await? {
            Reply::Done(()) => Ok(()),
            Reply::Failed(_) => Err(Error::worker_id_in_use(worker)),
        }
    }

    /// Operation 12, heartbeat ([`checkpoint_core::rules::heartbeat`]): `UpdateItem`
    /// conditioned on this instance's record of this worker existing; it bumps
    /// `heartbeatCounter`, which is what observers time liveness by. Another instance's record
    /// is [`Error::WorkerIdInUse`]; a deregistered or pruned worker gets [`Error::NotFound`]
    /// and must register again.
    async fn heartbeat(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        match self
            .beat(
                worker,
                ttl,
                "attribute_exists(#k) AND #w = :w AND #i = :i",
                None,
            )
            .await?
        {
            Reply::Done(()) => Ok(()),
            Reply::Failed(Some(item)) if Self::is_record_of(&item, worker) => {
                Err(Error::worker_id_in_use(worker))
            }
            Reply::Failed(_) => Err(Error::worker_not_found(worker)),
        }
    }

    /// The workers whose `heartbeatCounter` this handle has not seen unchanged for their TTL,
    /// sorted.
    async fn live_workers(&self) -> Result<Vec<WorkerId>> {
        let mut live: Vec<WorkerId> = self
            .members()
            .await?
            .into_iter()
            .filter(|m| m.left.is_some())
            .map(|m| m.id)
            .collect();
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
        match self
            .send_conditional("DeleteItem", || req.clone().send())
            .await?
        {
            Reply::Done(_) => {
                self.shared.tracking.observations.forget(&pk);
                Ok(())
            }
            Reply::Failed(_) => Err(Error::corrupt(
                pk,
                WORKER_ID,
                "the item is not this worker's membership record",
            )),
        }
    }

    /// Scans the app's membership records and deletes each this handle judges dead with a
    /// `DeleteItem` conditioned on `heartbeatCounter` still being the value observed, so a
    /// worker that heartbeats meanwhile is not removed.
    async fn prune_dead_workers(&self) -> Result<usize> {
        let mut pruned = 0;
        for member in self.members().await? {
            if member.left.is_some() {
                continue;
            }
            let mut req = self
                .shared
                .client
                .delete_item()
                .table_name(&self.shared.table)
                .key(LEASE_KEY, s(member.pk.clone()))
                .expression_attribute_names("#c", HEARTBEAT_COUNTER);
            req = match member.counter {
                Some(c) => req
                    .condition_expression("#c = :c")
                    .expression_attribute_values(":c", n(c)),
                None => req
                    .condition_expression("attribute_exists(#k) AND attribute_not_exists(#c)")
                    .expression_attribute_names("#k", LEASE_KEY),
            };
            if let Reply::Done(_) = self
                .send_conditional("DeleteItem", || req.clone().send())
                .await?
            {
                self.shared.tracking.observations.forget(&member.pk);
                pruned += 1;
            }
        }
        Ok(pruned)
    }
}

//! The table layout: key schema, attribute names, how apps and streams map to keys, and the
//! conversion between a DynamoDB item and a [`Lease`].
//!
//! # Key schema
//!
//! One hash key, `leaseKey` (S), no sort key: the layout of a Kinesis Client Library (KCL) lease
//! table, so a KCL table can be adopted and a table made here can be read by KCL tooling.
//!
//! # Apps and streams
//!
//! The KCL keeps one table per application; its single-stream lease key is the shard id, its
//! multi-stream key `account:stream:epoch:shardId`. Our identifiers cannot contain `:`, so a
//! `:`-joined key is never ambiguous. Two layouts ([`KeyLayout`]):
//!
//! - [`KeyLayout::Shared`] (default): any number of apps and streams in one table, lease key
//!   `<app>:<stream>:<shardId>`. Listing an app scans the table with a `begins_with(leaseKey,
//!   "<app>:")` filter (`"<app>:<stream>:"` for one stream). The attributes `appName`,
//!   `streamName` and `shardId` repeat the key's parts for people reading the table; the key
//!   is authoritative.
//! - [`KeyLayout::KclSingleStream`]: the table belongs to one app and one stream, as a KCL
//!   single-stream table does; lease key = shard id. Items whose key contains `:` (membership
//!   records, KCL multi-stream leases) are not leases of this layout and are skipped by listing.
//! - [`KeyLayout::KclMultiStream`]: one stream of a KCL 2.x/3.x multi-stream table; lease key
//!   `<account>:<stream>:<epoch>:<shardId>`, the stream identifier being the handle's.
//!
//! Membership records live in the same table under `~worker:<app>:<workerId>` (`~` is not an
//! identifier character, so no lease key of either layout can collide with one).
//!
//! # Lease attributes
//!
//! Named as the KCL for Java names them where the meaning is the same:
//!
//! | attribute | type | meaning |
//! | --- | --- | --- |
//! | `leaseKey` | S | hash key, see above |
//! | `leaseOwner` | S | the holder; absent when free (the KCL removes it on eviction too). During a hand-off, the worker the lease goes to, as in KCL 3 (see `checkpointOwner`) |
//! | `leaseCounter` | N | the record version: bumped by every write, renewals included, as the KCL bumps it; every versioned write (all but the take of a free lease and the fenced renewal) is conditioned on it |
//! | `checkpoint` | S | `TRIM_HORIZON`, `LATEST`, `SHARD_END`, the sequence number's digits, or (ours, KCL has no such value) `AT_TIMESTAMP:<ms>` |
//! | `checkpointSubSequenceNumber` | N | sub-sequence of `checkpoint` (0 otherwise) |
//! | `pendingCheckpoint` | S | prepared (two-phase) position, same encoding |
//! | `pendingCheckpointSubSequenceNumber` | N | its sub-sequence |
//! | `ownerSwitchesSinceCheckpoint` | N | grants to a new owner since the last checkpoint |
//! | `parentShardId` | SS | parent shards; absent when none (a string set cannot be empty) |
//! | `checkpointOwner` | S | graceful hand-off, with KCL 3's meaning: present while a hand-off is pending, naming the worker that still holds the lease and must checkpoint; `leaseOwner` then names the claimant |
//!
//! So a held lease with a pending claim (our `owner = A, claim = B`) is stored exactly as KCL 3
//! stores a hand-off from A to B: `checkpointOwner = A, leaseOwner = B`. Attributes the KCL
//! writes that this crate does not use (`childShardIds`, `startingHashKey`, `endingHashKey`,
//! `throughputKBps`, `pendingCheckpointState`) are never touched: every write is an
//! `UpdateItem` naming only the attributes below.
//!
//! Ours, which the KCL lacks:
//!
//! | attribute | type | meaning |
//! | --- | --- | --- |
//! | `fencingToken` | N | the fencing token. Bumped only when ownership is granted, never on renewal, so it cannot be `leaseCounter`. Absent (a KCL-written item) reads as 0; the first grant makes it 1 |
//! | `leaseDeadlineMillis` | N | the writer's deadline on its own clock, ms since the Unix epoch, written by the worker that was granted or renewed the lease. Information only: no handle reads it as a deadline (expiry is by observation, see the crate docs) |
//! | `leaseDurationMillis` | N | the holder's lease duration, written with every grant and renewal: how long an observer must see `leaseCounter` unchanged before the lease counts as expired. Absent on a KCL-written item (the observer's requested duration is used) |
//! | `createNonce` | S | a random value of the `create_lease_if_absent` call that created the record, so a call whose reply was lost answers exactly |
//! | `parentShardList` | L of S | the parents in the order given (the set above loses order and duplicates) |
//! | `leaseClaimant` | S | a claim on a lease nobody holds (the KCL cannot express it: a `leaseOwner` without `checkpointOwner` means held) |
//! | `appName`, `streamName`, `shardId` | S | the key's parts, shared layout only |
//!
//! Membership records: `leaseKey` = `~worker:<app>:<workerId>`, `appName`, `workerId` (S),
//! `heartbeatCounter` (N, bumped by every heartbeat), `heartbeatTtlMillis` (N) and, as
//! information only, `workerExpiryMillis` (N, the writer's clock).
//!
//! The KCL single-stream layout adds one item, [`APP_MARKER`], naming the app that adopted
//! the table.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use checkpoint_core::{
    AppName, Error, FencingToken, Lease, LeaseKey, Position, Result, ShardId, StreamName, WorkerId,
};

/// The hash key.
pub const LEASE_KEY: &str = "leaseKey";
/// The holder (KCL).
pub const LEASE_OWNER: &str = "leaseOwner";
/// The record version, bumped on every write (KCL).
pub const LEASE_COUNTER: &str = "leaseCounter";
/// The checkpoint (KCL).
pub const CHECKPOINT: &str = "checkpoint";
/// The checkpoint's sub-sequence (KCL).
pub const CHECKPOINT_SUB: &str = "checkpointSubSequenceNumber";
/// The prepared checkpoint (KCL).
pub const PENDING_CHECKPOINT: &str = "pendingCheckpoint";
/// The prepared checkpoint's sub-sequence (KCL).
pub const PENDING_CHECKPOINT_SUB: &str = "pendingCheckpointSubSequenceNumber";
/// Grants to a new owner since the last checkpoint (KCL).
pub const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
/// Parent shards as a string set (KCL).
pub const PARENT_SHARD_ID: &str = "parentShardId";
/// During a hand-off, the holder that must still checkpoint (KCL 3).
pub const CHECKPOINT_OWNER: &str = "checkpointOwner";
/// A claim on a lease nobody holds (ours).
pub const LEASE_CLAIMANT: &str = "leaseClaimant";
/// Our fencing token.
pub const FENCING_TOKEN: &str = "fencingToken";
/// Our client-clock deadline, ms since the Unix epoch.
pub const LEASE_DEADLINE_MILLIS: &str = "leaseDeadlineMillis";
/// Parents in the order given.
pub const PARENT_SHARD_LIST: &str = "parentShardList";
/// The app (shared layout, informational).
pub const APP_NAME: &str = "appName";
/// The stream (shared layout, informational).
pub const STREAM_NAME: &str = "streamName";
/// The shard (shared layout, informational).
pub const SHARD_ID: &str = "shardId";
/// A membership record's worker.
pub const WORKER_ID: &str = "workerId";
/// A membership record's expiry on the writer's wall clock, ms since the Unix epoch
/// (information only: expiry is judged by observation, see `observe.rs`).
pub const WORKER_EXPIRY_MILLIS: &str = "workerExpiryMillis";
/// A membership record's instance: the [`checkpoint_core::InstanceId`] of the handle that
/// registered it (absent on records written before nonces: no handle's nonce).
pub const INSTANCE_ID: &str = "instanceId";
/// A membership record's version, bumped by every registration and heartbeat.
pub const HEARTBEAT_COUNTER: &str = "heartbeatCounter";
/// A membership record's heartbeat TTL in ms: how long an observer waits for the counter to
/// move before it counts the worker dead.
pub const HEARTBEAT_TTL_MILLIS: &str = "heartbeatTtlMillis";
/// The lease duration the holder asked for, in ms: how long an observer waits for
/// `leaseCounter` to move before it counts the lease expired (ours).
pub const LEASE_DURATION_MILLIS: &str = "leaseDurationMillis";
/// A random value written by the `create_lease_if_absent` call that created the record, so a
/// call whose reply was lost can tell that it created it (ours).
pub const CREATE_NONCE: &str = "createNonce";
/// The application state of the KCL's pending checkpoint (binary, KCL 2+); removed with the
/// pending checkpoint it belongs to, never written otherwise.
pub const PENDING_CHECKPOINT_STATE: &str = "pendingCheckpointState";

/// The `leaseKey` of the item that records which app adopted a KCL single-stream table
/// (attribute `appName`). `~` is no identifier character, so no lease key collides with it,
/// and listing skips it.
pub const APP_MARKER: &str = "~app";

/// How leases of apps and streams map to `leaseKey` values.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyLayout {
    /// `<app>:<stream>:<shardId>`: many apps and streams share one table.
    Shared,
    /// `<shardId>`: the table is one app's, for one stream, as a KCL single-stream table.
    KclSingleStream {
        /// The stream every lease of the table belongs to.
        stream: StreamName,
    },
    /// `<account>:<stream>:<epoch>:<shardId>`: one stream's leases in a KCL 2.x/3.x
    /// multi-stream table (one app's, many streams); this handle reads and writes the leases
    /// whose key carries its stream identifier and leaves every other item alone.
    KclMultiStream {
        /// The stream of the leases, the second part of the identifier.
        stream: StreamName,
        /// The KCL stream identifier, `account:stream:epoch`.
        identifier: String,
    },
}

impl KeyLayout {
    /// The layout of one stream of a KCL multi-stream table, from its KCL stream identifier
    /// `<account id>:<stream name>:<creation epoch seconds>` (as the KCL's
    /// `StreamIdentifier.multiStreamInstance` parses it). Fails naming `kcl_multi_stream` when
    /// the identifier has another shape.
    pub fn kcl_multi_stream(identifier: &str) -> Result<Self> {
        let bad = |reason: &str| Error::invalid("kcl_multi_stream", reason.to_owned());
        let parts: Vec<&str> = identifier.split(':').collect();
        let [account, stream, epoch] = parts[..] else {
            return Err(bad("expected <account id>:<stream name>:<creation epoch>"));
        };
        if account.is_empty() || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the account id must be digits"));
        }
        if epoch.is_empty() || epoch.len() > 20 || !epoch.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the creation epoch must be digits"));
        }
        let stream = StreamName::new(stream).map_err(|e| bad(&e.to_string()))?;
        Ok(Self::KclMultiStream {
            stream,
            identifier: identifier.to_owned(),
        })
    }

    /// The stream a KCL layout is bound to (`None` for the shared layout).
    pub(crate) fn bound_stream(&self) -> Option<&StreamName> {
        match self {
            Self::Shared => None,
            Self::KclSingleStream { stream } | Self::KclMultiStream { stream, .. } => Some(stream),
        }
    }

    /// The informational attributes written with a lease: the key's parts in the shared
    /// layout; `streamName` (the stream identifier) and `shardId` as a KCL multi-stream lease
    /// carries them; none in the single-stream layout.
    pub(crate) fn key_attributes(
        &self,
        app: &AppName,
        key: &LeaseKey,
    ) -> Vec<(&'static str, AttributeValue)> {
        match self {
            Self::Shared => vec![
                (APP_NAME, s(app.as_str())),
                (STREAM_NAME, s(key.stream.as_str())),
                (SHARD_ID, s(key.shard.as_str())),
            ],
            Self::KclSingleStream { .. } => Vec::new(),
            Self::KclMultiStream { identifier, .. } => vec![
                (STREAM_NAME, s(identifier.as_str())),
                (SHARD_ID, s(key.shard.as_str())),
            ],
        }
    }

    /// The `leaseKey` of `key` for `app`. Fails when a KCL single-stream table is asked for
    /// another stream.
    pub(crate) fn key(&self, app: &AppName, key: &LeaseKey) -> Result<String> {
        match self {
            Self::Shared => Ok(format!("{app}:{}:{}", key.stream, key.shard)),
            Self::KclSingleStream { stream } => {
                if &key.stream != stream {
                    return Err(Error::invalid(
                        "stream",
                        format!("this KCL single-stream table holds only stream {stream:?}"),
                    ));
                }
                Ok(key.shard.as_str().to_owned())
            }
            Self::KclMultiStream { stream, identifier } => {
                if &key.stream != stream {
                    return Err(Error::invalid(
                        "stream",
                        format!("this handle reads only stream {identifier:?} of the KCL table"),
                    ));
                }
                Ok(format!("{identifier}:{}", key.shard))
            }
        }
    }

    /// The key prefix every lease of `app` (and `stream`, when given) starts with, or `None` in
    /// the KCL layout, where any key without `:` is a lease.
    pub(crate) fn prefix(&self, app: &AppName, stream: Option<&StreamName>) -> Option<String> {
        match (self, stream) {
            (Self::Shared, None) => Some(format!("{app}:")),
            (Self::Shared, Some(s)) => Some(format!("{app}:{s}:")),
            (Self::KclSingleStream { .. }, _) => None,
            (Self::KclMultiStream { identifier, .. }, _) => Some(format!("{identifier}:")),
        }
    }

    /// The lease key a stored `leaseKey` stands for, `None` when the item is not a lease of
    /// `app` in this layout.
    pub(crate) fn parse(&self, app: &AppName, stored: &str) -> Result<Option<LeaseKey>> {
        let corrupt = |reason: String| Error::corrupt(stored, LEASE_KEY, reason);
        match self {
            Self::Shared => {
                let mut parts = stored.split(':');
                let (Some(a), Some(s), Some(shard), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Ok(None);
                };
                if a != app.as_str() {
                    return Ok(None);
                }
                let stream = StreamName::new(s).map_err(|e| corrupt(e.to_string()))?;
                let shard = ShardId::new(shard).map_err(|e| corrupt(e.to_string()))?;
                Ok(Some(LeaseKey::new(stream, shard)))
            }
            Self::KclSingleStream { stream } => {
                if stored.contains(':') {
                    return Ok(None);
                }
                let shard = ShardId::new(stored).map_err(|e| corrupt(e.to_string()))?;
                Ok(Some(LeaseKey::new(stream.clone(), shard)))
            }
            Self::KclMultiStream { stream, identifier } => {
                let Some(shard) = stored
                    .strip_prefix(identifier.as_str())
                    .and_then(|rest| rest.strip_prefix(':'))
                else {
                    return Ok(None);
                };
                if shard.contains(':') {
                    return Ok(None);
                }
                let shard = ShardId::new(shard).map_err(|e| corrupt(e.to_string()))?;
                Ok(Some(LeaseKey::new(stream.clone(), shard)))
            }
        }
    }
}

/// The `leaseKey` of a membership record.
pub(crate) fn worker_key(app: &AppName, worker: &WorkerId) -> String {
    format!("~worker:{app}:{worker}")
}

/// The `leaseKey` prefix of the membership records of `app`.
pub(crate) fn worker_prefix(app: &AppName) -> String {
    format!("~worker:{app}:")
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn to_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A duration in whole milliseconds (at least 1).
pub(crate) fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The instant `ms` milliseconds after the Unix epoch.
pub(crate) fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A stored record: the lease and its version (`leaseCounter`; `None` when the attribute is
/// absent, as on a hand-made item).
///
/// `lease.deadline` is *this handle's* judgement (see `observe.rs`): for a held lease,
/// `since + held_for` on the handle's clock; the stored `leaseDeadlineMillis` is information
/// only and never read back as a deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) lease: Lease,
    pub(crate) version: Option<u64>,
    /// Since when this handle has seen `version` (set by the store when it observes the
    /// record; the Unix epoch straight out of [`decode`]).
    pub(crate) since: SystemTime,
    /// The holder's lease duration (`leaseDurationMillis`), absent on a KCL-written item.
    pub(crate) held_for: Option<Duration>,
    /// The nonce of the call that created the record (`createNonce`).
    pub(crate) nonce: Option<String>,
}

impl Stored {
    /// The version the next write stores.
    pub(crate) fn next_version(current: Option<&Stored>) -> u64 {
        match current {
            None => 0,
            Some(Stored { version: None, .. }) => 1,
            Some(Stored {
                version: Some(v), ..
            }) => v.saturating_add(1),
        }
    }
}

pub(crate) type Item = HashMap<String, AttributeValue>;

fn string<'a>(item: &'a Item, id: &str, field: &'static str) -> Result<Option<&'a str>> {
    match item.get(field) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(s)) => Ok(Some(s)),
        Some(_) => Err(Error::corrupt(id, field, "expected a string (S)")),
    }
}

pub(crate) fn number(item: &Item, id: &str, field: &'static str) -> Result<Option<u64>> {
    match item.get(field) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(n)) => n
            .parse::<u64>()
            .map(Some)
            .map_err(|_| Error::corrupt(id, field, format!("{n:?} is not a non-negative integer"))),
        Some(_) => Err(Error::corrupt(id, field, "expected a number (N)")),
    }
}

/// The KCL's checkpoint sentinel for "the app's initial timestamp": the KCL keeps the instant
/// in its configuration, not in the lease.
pub const KCL_AT_TIMESTAMP: &str = "AT_TIMESTAMP";

fn position(
    item: &Item,
    id: &str,
    field: &'static str,
    sub_field: &'static str,
    at_timestamp: Option<u64>,
) -> Result<Option<Position>> {
    let Some(text) = string(item, id, field)? else {
        return Ok(None);
    };
    let sub = number(item, id, sub_field)?.unwrap_or(0);
    if text == KCL_AT_TIMESTAMP {
        return match at_timestamp {
            Some(ms) if sub == 0 => Ok(Some(Position::AtTimestamp(ms))),
            Some(_) => Err(Error::corrupt(
                id,
                sub_field,
                "a sub-sequence is only allowed on a sequence number",
            )),
            None => Err(Error::corrupt(
                id,
                field,
                "the KCL's AT_TIMESTAMP sentinel; the instant is the KCL app's configuration: \
                 set it with DynamoConfig::with_kcl_at_timestamp (URL option kcl_at_timestamp_ms)",
            )),
        };
    }
    Position::decode(field, text, sub).map(Some).map_err(|e| {
        let reason = match e {
            Error::InvalidInput { reason, .. } => reason,
            other => other.to_string(),
        };
        Error::corrupt(id, field, reason)
    })
}

fn parents(item: &Item, id: &str) -> Result<Vec<ShardId>> {
    let corrupt = |field, e: Error| Error::corrupt(id, field, e.to_string());
    match item.get(PARENT_SHARD_LIST) {
        None | Some(AttributeValue::Null(_)) => {}
        Some(AttributeValue::L(list)) => {
            return list
                .iter()
                .map(|v| match v {
                    AttributeValue::S(s) => {
                        ShardId::new(s).map_err(|e| corrupt(PARENT_SHARD_LIST, e))
                    }
                    _ => Err(Error::corrupt(
                        id,
                        PARENT_SHARD_LIST,
                        "expected a list of strings",
                    )),
                })
                .collect();
        }
        Some(_) => return Err(Error::corrupt(id, PARENT_SHARD_LIST, "expected a list (L)")),
    }
    match item.get(PARENT_SHARD_ID) {
        None | Some(AttributeValue::Null(_)) => Ok(Vec::new()),
        Some(AttributeValue::Ss(set)) => {
            let mut out = set
                .iter()
                .map(|s| ShardId::new(s).map_err(|e| corrupt(PARENT_SHARD_ID, e)))
                .collect::<Result<Vec<_>>>()?;
            out.sort();
            Ok(out)
        }
        // Some KCL ports write a single parent as a plain string.
        Some(AttributeValue::S(s)) => Ok(vec![
            ShardId::new(s).map_err(|e| corrupt(PARENT_SHARD_ID, e))?,
        ]),
        Some(_) => Err(Error::corrupt(
            id,
            PARENT_SHARD_ID,
            "expected a string set (SS)",
        )),
    }
}

fn worker(item: &Item, id: &str, field: &'static str) -> Result<Option<WorkerId>> {
    string(item, id, field)?
        .map(|s| WorkerId::new(s).map_err(|e| Error::corrupt(id, field, e.to_string())))
        .transpose()
}

/// Reads a lease item. `key` is the lease the item was read for (or parsed from its key);
/// `at_timestamp` is the instant (ms since the Unix epoch) the KCL's plain `AT_TIMESTAMP`
/// sentinel stands for, when configured.
pub(crate) fn decode(key: &LeaseKey, item: &Item, at_timestamp: Option<u64>) -> Result<Stored> {
    let id = key.to_string();
    let id = id.as_str();
    let lease_owner = worker(item, id, LEASE_OWNER)?;
    let claimant = worker(item, id, LEASE_CLAIMANT)?;
    let (owner, claim) = match (worker(item, id, CHECKPOINT_OWNER)?, lease_owner) {
        // A hand-off in progress, as KCL 3 writes it: the holder still checkpoints, the lease
        // goes to `leaseOwner`.
        (Some(holder), Some(next)) if holder != next => (Some(holder), Some(next)),
        (Some(holder), _) => (Some(holder), claimant),
        (None, owner) => (owner, claimant),
    };
    let lease = Lease {
        key: key.clone(),
        owner,
        token: FencingToken(number(item, id, FENCING_TOKEN)?.unwrap_or(0)),
        deadline: number(item, id, LEASE_DEADLINE_MILLIS)?.map(from_millis),
        checkpoint: position(item, id, CHECKPOINT, CHECKPOINT_SUB, at_timestamp)?,
        pending_checkpoint: position(
            item,
            id,
            PENDING_CHECKPOINT,
            PENDING_CHECKPOINT_SUB,
            at_timestamp,
        )?,
        parents: parents(item, id)?,
        claim,
        owner_switches_since_checkpoint: number(item, id, OWNER_SWITCHES)?.unwrap_or(0),
    };
    Ok(Stored {
        lease,
        version: number(item, id, LEASE_COUNTER)?,
        since: UNIX_EPOCH,
        held_for: number(item, id, LEASE_DURATION_MILLIS)?
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis),
        nonce: string(item, id, CREATE_NONCE)?.map(str::to_owned),
    })
}

/// An update expression with its attribute names and values. Only placeholders (`#n0`, `:v0`)
/// are ever written into the expression text; names and values travel separately.
#[derive(Debug, Default)]
pub(crate) struct Expr {
    pub(crate) names: HashMap<String, String>,
    pub(crate) values: HashMap<String, AttributeValue>,
    set: Vec<String>,
    remove: Vec<String>,
}

impl Expr {
    /// The placeholder of attribute `attr` (a constant of this module).
    pub(crate) fn name(&mut self, attr: &'static str) -> String {
        if let Some((k, _)) = self.names.iter().find(|(_, v)| v.as_str() == attr) {
            return k.clone();
        }
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), attr.to_owned());
        placeholder
    }

    /// The placeholder of a new value.
    pub(crate) fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    /// `SET attr = value`.
    pub(crate) fn set(&mut self, attr: &'static str, value: AttributeValue) {
        let (n, v) = (self.name(attr), self.value(value));
        self.set.push(format!("{n} = {v}"));
    }

    /// `SET attr = value` when `Some`, `REMOVE attr` when `None`.
    pub(crate) fn set_or_remove(&mut self, attr: &'static str, value: Option<AttributeValue>) {
        match value {
            Some(v) => self.set(attr, v),
            None => {
                let n = self.name(attr);
                self.remove.push(n);
            }
        }
    }

    /// The update expression text.
    pub(crate) fn update_expression(&self) -> String {
        let mut out = String::new();
        if !self.set.is_empty() {
            out.push_str("SET ");
            out.push_str(&self.set.join(", "));
        }
        if !self.remove.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("REMOVE ");
            out.push_str(&self.remove.join(", "));
        }
        out
    }
}

/// The condition "`worker` holds the lease": `checkpointOwner` names it during a hand-off,
/// `leaseOwner` otherwise (see the attribute table).
pub(crate) fn owner_condition(expr: &mut Expr, worker: &WorkerId) -> String {
    let (holder, owner) = (expr.name(CHECKPOINT_OWNER), expr.name(LEASE_OWNER));
    let w = expr.value(s(worker.as_str()));
    format!("({holder} = {w} OR (attribute_not_exists({holder}) AND {owner} = {w}))")
}

/// The condition "the fencing token is `token`" (an absent `fencingToken`, on a KCL-written
/// item, is token 0).
pub(crate) fn token_condition(expr: &mut Expr, token: FencingToken) -> String {
    let (name, value) = (expr.name(FENCING_TOKEN), expr.value(n(token.0)));
    if token.0 == 0 {
        format!("(attribute_not_exists({name}) OR {name} = {value})")
    } else {
        format!("{name} = {value}")
    }
}

pub(crate) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// Adds to `expr` every attribute of `lease` (with `version` as `leaseCounter`): SET what is
/// present, REMOVE what is absent. Attributes this crate does not know (a KCL item's
/// `childShardIds`, hash key range, ...) are left as they are.
/// The stored text of `p`: the KCL's plain `AT_TIMESTAMP` sentinel for the configured
/// instant `at_timestamp`, so a KCL reading the item back understands it; [`Position::encode`]
/// otherwise.
fn encode_position(p: &Position, at_timestamp: Option<u64>) -> String {
    match p {
        Position::AtTimestamp(ms) if Some(*ms) == at_timestamp => KCL_AT_TIMESTAMP.to_owned(),
        other => other.encode(),
    }
}

pub(crate) fn encode_update(
    expr: &mut Expr,
    layout: &KeyLayout,
    app: &AppName,
    lease: &Lease,
    version: u64,
    at_timestamp: Option<u64>,
) {
    expr.set(LEASE_COUNTER, n(version));
    expr.set(FENCING_TOKEN, n(lease.token.0));
    let (lease_owner, checkpoint_owner, claimant) = match (&lease.owner, &lease.claim) {
        (Some(holder), Some(next)) => (Some(next), Some(holder), None),
        (Some(holder), None) => (Some(holder), None, None),
        (None, claim) => (None, None, claim.as_ref()),
    };
    expr.set_or_remove(LEASE_OWNER, lease_owner.map(|w| s(w.as_str())));
    expr.set_or_remove(CHECKPOINT_OWNER, checkpoint_owner.map(|w| s(w.as_str())));
    expr.set_or_remove(LEASE_CLAIMANT, claimant.map(|w| s(w.as_str())));
    expr.set_or_remove(
        LEASE_DEADLINE_MILLIS,
        lease.deadline.map(|d| n(to_millis(d))),
    );
    expr.set_or_remove(
        CHECKPOINT,
        lease
            .checkpoint
            .as_ref()
            .map(|p| s(encode_position(p, at_timestamp))),
    );
    expr.set_or_remove(
        CHECKPOINT_SUB,
        lease.checkpoint.as_ref().map(|p| n(p.sub_sequence())),
    );
    expr.set_or_remove(
        PENDING_CHECKPOINT,
        lease
            .pending_checkpoint
            .as_ref()
            .map(|p| s(encode_position(p, at_timestamp))),
    );
    expr.set_or_remove(
        PENDING_CHECKPOINT_SUB,
        lease
            .pending_checkpoint
            .as_ref()
            .map(|p| n(p.sub_sequence())),
    );
    if lease.pending_checkpoint.is_none() {
        // The KCL's state of a pending checkpoint goes with it.
        expr.set_or_remove(PENDING_CHECKPOINT_STATE, None);
    }
    expr.set(OWNER_SWITCHES, n(lease.owner_switches_since_checkpoint));
    if lease.parents.is_empty() {
        expr.set_or_remove(PARENT_SHARD_ID, None);
        expr.set_or_remove(PARENT_SHARD_LIST, None);
    } else {
        let mut set: Vec<String> = lease
            .parents
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect();
        set.sort();
        set.dedup();
        expr.set(PARENT_SHARD_ID, AttributeValue::Ss(set));
        expr.set(
            PARENT_SHARD_LIST,
            AttributeValue::L(lease.parents.iter().map(|p| s(p.as_str())).collect()),
        );
    }
    for (attr, value) in layout.key_attributes(app, &lease.key) {
        expr.set(attr, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_in_both_layouts() {
        let app = AppName::new("billing").unwrap();
        let key = LeaseKey::parse("orders", "shardId-000000000001").unwrap();
        let shared = KeyLayout::Shared;
        let k = shared.key(&app, &key).unwrap();
        assert_eq!(k, "billing:orders:shardId-000000000001");
        assert_eq!(shared.parse(&app, &k).unwrap(), Some(key.clone()));
        assert_eq!(
            shared.parse(&AppName::new("other").unwrap(), &k).unwrap(),
            None
        );
        assert_eq!(
            shared
                .parse(&app, &worker_key(&app, &WorkerId::new("w").unwrap()))
                .unwrap(),
            None
        );
        let kcl = KeyLayout::KclSingleStream {
            stream: StreamName::new("orders").unwrap(),
        };
        assert_eq!(kcl.key(&app, &key).unwrap(), "shardId-000000000001");
        assert_eq!(kcl.parse(&app, "shardId-000000000001").unwrap(), Some(key));
        assert_eq!(kcl.parse(&app, "acct:orders:1:shardId-1").unwrap(), None);
        let other = LeaseKey::parse("payments", "s").unwrap();
        assert_eq!(kcl.key(&app, &other).unwrap_err().field(), Some("stream"));
    }

    #[test]
    fn corrupt_attributes_name_the_field() {
        let key = LeaseKey::parse("orders", "s1").unwrap();
        for (attr, value) in [
            (LEASE_OWNER, AttributeValue::N("1".into())),
            (LEASE_OWNER, s("bad\u{1}owner")),
            (FENCING_TOKEN, n_text("-1")),
            (CHECKPOINT, s("12x")),
            (LEASE_COUNTER, s("1")),
            (PARENT_SHARD_ID, AttributeValue::Ss(vec!["a:b".into()])),
        ] {
            let mut item = Item::new();
            item.insert(attr.to_owned(), value);
            let err = decode(&key, &item, None).unwrap_err();
            assert_eq!(err.field(), Some(attr), "{err}");
        }
    }

    #[test]
    fn the_kcl_at_timestamp_sentinel_is_the_configured_instant() {
        let key = LeaseKey::parse("orders", "s1").unwrap();
        let mut item = Item::new();
        item.insert(CHECKPOINT.to_owned(), s(KCL_AT_TIMESTAMP));
        item.insert(CHECKPOINT_SUB.to_owned(), n(0));
        let err = decode(&key, &item, None).unwrap_err();
        assert_eq!(err.field(), Some(CHECKPOINT), "{err}");
        let stored = decode(&key, &item, Some(1_700_000_000_000)).unwrap();
        assert_eq!(
            stored.lease.checkpoint,
            Some(Position::AtTimestamp(1_700_000_000_000))
        );
        assert_eq!(
            encode_position(
                &Position::AtTimestamp(1_700_000_000_000),
                Some(1_700_000_000_000)
            ),
            KCL_AT_TIMESTAMP
        );
        assert_eq!(
            encode_position(&Position::AtTimestamp(5), Some(1_700_000_000_000)),
            "AT_TIMESTAMP:5"
        );
    }

    fn n_text(t: &str) -> AttributeValue {
        AttributeValue::N(t.into())
    }

    #[test]
    fn expressions_hold_only_placeholders() {
        let app = AppName::new("a").unwrap();
        let mut lease = Lease::new(LeaseKey::parse("s", "x").unwrap(), vec![], None);
        lease.owner = Some(WorkerId::new("w").unwrap());
        let mut expr = Expr::default();
        encode_update(&mut expr, &KeyLayout::Shared, &app, &lease, 3, None);
        let text = expr.update_expression();
        assert!(
            !text.contains("w\"") && !text.contains(LEASE_OWNER),
            "{text}"
        );
        assert!(
            text.starts_with("SET ") && text.contains(" REMOVE "),
            "{text}"
        );
    }
}

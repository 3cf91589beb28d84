//! The lease/checkpoint contract on Amazon DynamoDB, in a table laid out as the Kinesis Client
//! Library (KCL) lays out its lease table.
//!
//! One table holds the leases, checkpoints and live workers of any number of apps and streams
//! (or, in the KCL single-stream layout, of one app's one stream, so an existing KCL table can
//! be adopted). Open it with [`DynamoStore::connect`] from a URL such as
//! `dynamodb://leases?region=eu-west-1`, with [`DynamoStore::open`] from a [`DynamoConfig`]
//! built with `with_*` setters, or with your own AWS configuration
//! ([`DynamoStore::from_sdk_config`], [`DynamoStore::from_client`]: profiles, assumed roles,
//! SSO); all create the table if it is absent. Then use it as any [`checkpoint_core::Store`].
//!
//! # Files
//!
//! As every backend crate: `config.rs` (URL and builder), `error.rs` (SDK errors mapped in one
//! place), `schema.rs` (table layout, attributes, item conversion), `store.rs` (the handle and
//! the lease and checkpoint traits). DynamoDB needs a few more, one job each: `client.rs`
//! (building the SDK client, creating and checking the table), `protocol.rs` (the conditional
//! write protocol and the one send helper), `observe.rs` (expiry by observation) and
//! `membership.rs` (the membership trait).
//!
//! ```no_run
//! use std::time::Duration;
//! use checkpoint_core::{AppName, Checkpointer, LeaseManager, LeaseDuration, LeaseKey, Position, WorkerId};
//! use checkpoint_dynamo::DynamoStore;
//!
//! # async fn run() -> checkpoint_core::Result<()> {
//! let store = DynamoStore::connect("dynamodb://leases?region=eu-west-1", AppName::new("billing")?).await?;
//! let key = LeaseKey::parse("orders", "shardId-000000000000")?;
//! let me = WorkerId::new("worker-1")?;
//! let lease = store.get_lease(&key, &me, LeaseDuration::new(Duration::from_secs(10))?).await?;
//! store.checkpoint_sequence(&key, &me, lease.token, &Position::sequence("4959033827149025660855969")?).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Table layout
//!
//! One hash key, `leaseKey` (S), no sort key, as a KCL lease table. Attributes are named as the
//! KCL for Java names them where the meaning is the same; what the KCL has no attribute for has
//! its own name:
//!
//! | attribute | type | KCL | meaning |
//! | --- | --- | --- | --- |
//! | `leaseKey` | S | yes | hash key: `<app>:<stream>:<shardId>` (shared layout) or `<shardId>` (KCL single-stream layout) |
//! | `leaseOwner` | S | yes | the holder; absent when free. During a hand-off, the worker the lease goes to (KCL 3) |
//! | `leaseCounter` | N | yes | record version, bumped by every write (renewals too, as the KCL does); the condition of versioned writes |
//! | `checkpoint` | S | yes | a sequence number's digits, `TRIM_HORIZON`, `LATEST` or `SHARD_END`; `AT_TIMESTAMP:<ms>` is ours |
//! | `checkpointSubSequenceNumber` | N | yes | the sub-sequence (0 unless a sequence of an aggregated record) |
//! | `ownerSwitchesSinceCheckpoint` | N | yes | grants to a new owner since the last checkpoint |
//! | `parentShardId` | SS | yes | parent shards (absent when none) |
//! | `pendingCheckpoint` | S | yes | prepared (two-phase) position |
//! | `pendingCheckpointSubSequenceNumber` | N | yes | its sub-sequence |
//! | `checkpointOwner` | S | yes | during a hand-off, the holder that must still checkpoint (KCL 3's meaning) |
//! | `fencingToken` | N | no | the fencing token: bumped on every grant of ownership, never on renewal (absent = 0) |
//! | `leaseDurationMillis` | N | no | the holder's lease duration: how long an observer waits for `leaseCounter` to move |
//! | `leaseDeadlineMillis` | N | no | the writer's deadline on its own clock, ms since the Unix epoch; information only, never read as a deadline |
//! | `createNonce` | S | no | written by the `create_lease_if_absent` call that created the record |
//! | `parentShardList` | L | no | the parents in the order given (a set has none) |
//! | `leaseClaimant` | S | no | a hand-off claim on a lease nobody holds (the KCL cannot express it) |
//! | `appName`, `streamName`, `shardId` | S | no | the key's parts, shared layout only, for people reading the table (KCL multi-stream layout: `streamName` and `shardId` as the KCL writes them) |
//! | `heartbeatCounter`, `heartbeatTtlMillis` | N | no | membership records: bumped by every heartbeat; the TTL an observer waits for it to move |
//! | `instanceId` | S | no | membership records: the nonce of the store handle that registered the worker |
//!
//! A claim on a held lease (`owner = A, claim = B`) is stored exactly as KCL 3 stores a graceful
//! hand-off from A to B: `checkpointOwner = A, leaseOwner = B`. Attributes of the KCL this crate
//! does not use (`childShardIds`, `startingHashKey`, `endingHashKey`, `throughputKBps`) are
//! never touched; `pendingCheckpointState` is removed together with the pending
//! checkpoint it belongs to (a checkpoint clears both). Details and the conversion: [`schema`].
//!
//! ## Apps and streams
//!
//! - **Shared layout** (default): any number of apps and streams share one table; the lease
//!   key is `<app>:<stream>:<shardId>` (identifiers cannot contain `:`, so it is unambiguous).
//!   Listing an app (or one of its streams) is a consistent `Scan` filtered on the key prefix,
//!   paginated; its cost grows with the whole table, so give apps with many leases a table of
//!   their own (a table per app is also how the KCL does it).
//! - **KCL single-stream layout** ([`DynamoConfig::with_kcl_single_stream`], URL option
//!   `kcl_stream=<stream>`): the table belongs to one app and one stream, the lease key is the
//!   shard id, exactly as a KCL single-stream application's table. Use it to adopt a KCL table.
//!   The table is claimed for the first app that opens it so (the item `~app`, see
//!   [`schema::APP_MARKER`]); another app opening it gets [`checkpoint_core::Error::SchemaMismatch`]
//!   naming both apps.
//! - **KCL multi-stream layout** ([`DynamoConfig::with_kcl_multi_stream`], URL option
//!   `kcl_multi_stream=<account>:<stream>:<epoch>`): one stream of a KCL 2.x/3.x multi-stream
//!   table, whose lease keys are `<account>:<stream>:<epoch>:<shardId>`; the handle lists,
//!   reads and writes only the items whose key carries its stream identifier, and writes
//!   `streamName` (the identifier) and `shardId` as the KCL's multi-stream serializer does.
//! - Listing never fails as a whole because of one unusable item (an attribute another writer
//!   encoded otherwise, a key that is no identifier): the item is left out and reported with a
//!   `tracing` warning naming its key; [`DynamoStore::lease_item`] gives its typed error.
//! - Membership records (live workers) live in the same table under
//!   `~worker:<app>:<workerId>` (`~` is no identifier character, so they cannot collide with a
//!   lease); a KCL worker sharing the table would see them as odd leases, so do not run KCL
//!   workers on a table this crate keeps membership in.
//!
//! ## Adopting a KCL table
//!
//! Stop the KCL application (or let it release its leases), then open the table in the KCL
//! single-stream layout: every lease's position, sub-sequence, parents and pending checkpoint
//! are read as the KCL wrote them, and checkpoints are written back in the KCL's encoding. A
//! lease a KCL worker still holds expires by the KCL's own rule, once this handle has seen its `leaseCounter` unchanged for the requested lease
//! duration (the same rule as every lease, see Clock). Fencing tokens start at 1 with the
//! first grant.
//!
//! # Atomicity
//!
//! Every operation is one conditional write (`ConditionExpression` on the state the operation
//! expects), and a failed condition returns the current item (`ALL_OLD`), from which the typed
//! error (lease held, naming the holder; lost; changed; regression) is decided without a second
//! read. The protocol, operation by operation, is in the `store` module's source documentation:
//! the take of a free or expired lease is one request; renewals are conditioned on owner and
//! token; every other write is the reference rule applied to the record and conditioned on its
//! `leaseCounter`, checkpoints additionally on owner and token (fencing).
//!
//! # Clock
//!
//! DynamoDB has no server clock, and no worker trusts another's wall clock
//! ([`checkpoint_core::ClockSource::Observed`]). As the KCL does: a handle treats a lease held
//! by another worker as expired only after it has itself seen the lease's `leaseCounter`
//! unchanged for the lease duration (`leaseDurationMillis` as the holder wrote it; the
//! requested duration for a KCL-written item) on its own monotonic clock. Every read, listing,
//! write and failed condition is an observation; every write of the holder (a renewal above
//! all) bumps the counter and restarts it. `LeaseHeld::remaining` is the time left by this
//! rule, and the deadlines this handle reports are its own judgement on its own clock, so a
//! caller may compare them with its local clock. Membership is judged the same way: a worker
//! is dead once this handle has seen its `heartbeatCounter` unchanged for its TTL, and only
//! then may it take over the record another instance (`instanceId`) registered.
//!
//! Consequences, stated as the KCL states them: a worker whose clock is 30 s or an hour off
//! takes no live lease early, since only clock *rates* matter; but a fresh process (a
//! restarted worker) must watch a lease for one full duration before taking it, even if its
//! holder died long ago (handles of one process on the same table, with the same static or
//! emulator credentials and the default clock, share what they observed; a handle built from
//! a client or SDK configuration of the caller's, or with its own clock, observes alone), and the takeover of a dead worker's lease comes up to one observation
//! interval (the time between two listings) after the lease duration, so a consumer's failover
//! is at most lease duration + one renew interval + one observation interval.
//! `leaseDeadlineMillis` is still written, as information for people reading the table. Tests
//! inject a [`checkpoint_core::ManualClock`] with [`DynamoConfig::with_clock`].
//!
//! # Durability
//!
//! A write that returned `Ok` was acknowledged by DynamoDB, which stores it durably across
//! availability zones ([`checkpoint_core::Durability::Replicated`]); `fetch` and `list_leases`
//! use strongly consistent reads, so every later fetch from any worker sees it.
//!
//! # Retries
//!
//! Throttling (`ProvisionedThroughputExceededException`, `ThrottlingException`,
//! `RequestLimitExceeded`), 5xx errors, timeouts (per attempt,
//! [`DynamoConfig::with_request_timeout`]) and dropped connections are retried with the
//! bounded, jittered exponential [`checkpoint_core::Backoff`]
//! ([`DynamoConfig::with_backoff`]; the SDK's own retries are off). A failed condition is never
//! retried blindly; a conditional write whose reply was lost is re-issued and resolved by the
//! record its failed condition returns. Errors are mapped in one place, `error.rs`.
//!
//! # Requests per operation
//!
//! Counted with the client's interceptor ([`DynamoStore::requests_sent`]) against moto by the
//! `requests_per_operation` test:
//!
//! | operation | requests |
//! | --- | --- |
//! | `open` / `connect` (table exists and is ACTIVE) | 1 (`DescribeTable`) |
//! | `create_lease_if_absent` | 1 |
//! | `get_lease` of a free or absent lease, or one this handle saw expire | 1 |
//! | `get_lease` of a lease another worker holds | 1 (the holder comes back with the failed condition) |
//! | `get_lease` of one's own lease | 1 |
//! | `renew` | 1; `renew_many` of n leases: n, at most 16 in flight (configurable) |
//! | `checkpoint_sequence`, `prepare_checkpoint`, `remove_lease_owner` after a read or write of the record by this handle | 1 |
//! | the same on a record this handle has not seen, or that changed since | 2 |
//! | `fetch_checkpoint`, `remove_lease_info` | 1 |
//! | `evict_lease`, `reset_checkpoint`, `steal`, `claim` | 1 on a record this handle has seen, else 2 |
//! | any write whose reply was lost | 1 more for the retry, and 1 more when the rule must write again (measured: take 3, checkpoint 3, renew 2, release 2) |
//! | `list_leases`, `live_workers` | 1 per 1 MB page of the `Scan` |
//! | `register_worker`, `heartbeat`, `deregister_worker` | 1 |
//! | `prune_dead_workers` | 1 per page + 1 per dead worker |
//! | `open` of a KCL single-stream table | 2 (`DescribeTable`, the app marker's `PutItem`) |
//!
//! # Credentials and endpoints
//!
//! Region and credentials come from the URL or builder, else from the AWS default chains
//! (environment, profile, web identity, container, instance metadata). With a custom endpoint
//! (moto, DynamoDB Local) and none configured, the region defaults to `us-east-1` and the
//! credentials to a dummy static pair. Credentials never appear in `Debug` output or errors.
//! HTTPS uses rustls with the ring provider.
//!
//! moto's own `moto_server` serves requests on many threads without locking its tables, so two
//! concurrent conditional writes from different processes can both succeed there (real DynamoDB
//! never does this); `tests/moto_serial.py` serves one request at a time and is the faithful
//! emulator for tests.
//!
//! # Capabilities
//!
//! | backend | expiry clock | transactional checkpoint | renew many | durability | multi-process |
//! | --- | --- | --- | --- | --- | --- |
//! | dynamodb | observed version, own monotonic clock | no | 16 concurrent | Replicated | yes |

mod client;
mod config;
mod error;
mod membership;
mod observe;
mod protocol;
pub mod schema;
mod store;

pub use config::{Billing, DynamoConfig, StaticCredentials};
pub use schema::KeyLayout;
pub use store::DynamoStore;

/// How long a lease or membership record without a stated duration (as the KCL writes them)
/// must be seen unchanged before it counts as expired when no duration is asked for (listing);
/// the KCL's default failover time. `get_lease` uses the duration it is given instead.
pub const KCL_DEFAULT_FAILOVER: std::time::Duration = std::time::Duration::from_secs(10);

/// The AWS config loader this crate is built on, for [`DynamoStore::from_sdk_config`].
pub use aws_config;
/// The AWS SDK version this crate is built on, for [`DynamoStore::client`].
pub use aws_sdk_dynamodb;

//! The lease/checkpoint contract on Amazon DynamoDB, in a table laid out as the Kinesis Client
//! Library (KCL) lays out its lease table.
//!
//! One table holds the leases, checkpoints and live workers of any number of apps and streams
//! (or, in the KCL single-stream layout, of one app's one stream, so an existing KCL table can
//! be adopted). Open it with [`DynamoStore::connect`] from a URL such as
//! `dynamodb://leases?region=eu-west-1`, or with [`DynamoStore::open`] from a [`DynamoConfig`]
//! built with `with_*` setters; both create the table if it is absent. Then use it as any
//! [`checkpoint_core::Store`].
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
//! | `leaseDeadlineMillis` | N | no | the holder's client-clock deadline, ms since the Unix epoch |
//! | `parentShardList` | L | no | the parents in the order given (a set has none) |
//! | `leaseClaimant` | S | no | a hand-off claim on a lease nobody holds (the KCL cannot express it) |
//! | `appName`, `streamName`, `shardId` | S | no | the key's parts, shared layout only, for people reading the table |
//!
//! A claim on a held lease (`owner = A, claim = B`) is stored exactly as KCL 3 stores a graceful
//! hand-off from A to B: `checkpointOwner = A, leaseOwner = B`. Attributes of the KCL this crate
//! does not use (`childShardIds`, `startingHashKey`, `endingHashKey`, `throughputKBps`,
//! `pendingCheckpointState`) are never touched. Details and the conversion: [`schema`].
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
//!   KCL multi-stream tables (`account:stream:epoch:shardId` keys) are not read; their items
//!   are skipped by listing.
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
//! lease a KCL worker still holds has no `leaseDeadlineMillis`; it expires by the KCL's own
//! rule, once this handle has seen its `leaseCounter` unchanged for the requested lease
//! duration. Fencing tokens start at 1 with the first grant.
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
//! DynamoDB has no server clock, so expiry is judged by the worker's wall clock with a skew
//! allowance ([`checkpoint_core::ClockSource::Client`]): a worker granted or renewing a lease
//! writes `leaseDeadlineMillis = its now + duration`; another worker treats the lease as live
//! until its own clock passes `deadline + skew_allowance` (default 1 s,
//! [`DynamoConfig::with_skew_allowance`]), and [`checkpoint_core::Error::LeaseHeld`] reports the
//! time left including the allowance. Mutual exclusion therefore holds as long as no two
//! workers' clocks differ by more than the allowance; keep hosts on NTP (or Amazon Time Sync)
//! and choose the allowance above the worst offset you expect. Renewal never depends on the
//! clock (owner and token only). Membership TTLs use the same client clock. Tests inject a
//! [`checkpoint_core::ManualClock`] with [`DynamoConfig::with_clock`].
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
//! | `get_lease` of a free, expired or absent lease | 1 |
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
//! | dynamodb | client + 1s skew | no | 16 concurrent | Replicated | yes |

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

//! The lease/checkpoint contract on Redis: one Lua script per conditional operation, expiry
//! judged by the server's clock.
//!
//! One Redis database, or one Redis Cluster, holds the leases, checkpoints and live workers of
//! any number of apps, each app under its own hash tag. Open a store with
//! [`RedisStore::connect`] (a URL such as `redis://:password@127.0.0.1:6379/0?prefix=ckpt`, or
//! `redis+cluster://10.0.0.1:7000,10.0.0.2:7000/` for a cluster) or [`RedisStore::open`] with a
//! [`RedisConfig`] built with its `with_*` setters, then use it as any
//! [`checkpoint_core::Store`]. Both connect and run [`checkpoint_core::LeaseManager::init`].
//!
//! ```no_run
//! use std::time::Duration;
//! use checkpoint_core::{AppName, Checkpointer, LeaseManager, LeaseDuration, LeaseKey, Position, WorkerId};
//! use checkpoint_redis::RedisStore;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let store = RedisStore::connect("redis://127.0.0.1:6379/", AppName::new("billing")?).await?;
//! let key = LeaseKey::parse("orders", "shardId-000000000000")?;
//! let me = WorkerId::new("worker-1")?;
//! let lease = store.get_lease(&key, &me, LeaseDuration::new(Duration::from_secs(10))?).await?;
//! store.checkpoint_sequence(&key, &me, lease.token, &Position::sequence("4959033827149025660855969")?).await?;
//! # Ok::<(), checkpoint_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Atomicity
//!
//! Every conditional operation (create, get, renew, renew-many, checkpoint, prepare, release,
//! steal, claim, reset, register, heartbeat, prune) is one Lua script, a line-by-line
//! transcription of the matching [`checkpoint_core::rules`] function, with the same error kinds
//! and token rules. Redis runs a script to completion with no command of any other client in
//! between, so each operation is atomic on the server. On Redis 7.0 or later the operations are
//! the functions of one library ([`scripts::LIBRARY`]), loaded once with `FUNCTION LOAD` at open
//! (on every master of a cluster) and called with `FCALL`; the library defines its helper
//! functions once, so a call runs only its operation's body. A server that forgot the library
//! (a restart without persistence, `FUNCTION FLUSH`, a master that joined a cluster later)
//! answers `Function not found`; the store loads the library on that node and sends the call
//! again. On a server without functions (before 7.0, or a user who may not load them) the
//! store sends one script per operation instead: loaded with `SCRIPT LOAD` at open and called
//! by hash (`EVALSHA`), and after a restart, `SCRIPT FLUSH`, or a failover or resharding that
//! moved the slot to a node without them, sent again as `EVAL` with the script's source,
//! routed (and redirected) like the `EVALSHA`. [`RedisConfig::with_script_mode`] forces either
//! form; both run the same Lua text and pass the same conformance suite. Fetch is one `HMGET`;
//! deregister one `ZREM`. See [`scripts`]. A
//! renew-many batch above [`RENEW_MANY_CHUNK`] leases is several scripts in one pipeline, each
//! atomic over its chunk.
//!
//! # Clock
//!
//! Expiry is judged by the server's clock ([`checkpoint_core::ClockSource::Server`]): each
//! script reads `TIME` and compares deadlines (stored as server milliseconds since the Unix
//! epoch) with it. Client clocks never matter, so workers on hosts with skewed clocks still
//! agree on who holds a lease. (Redis 5 or later: scripts replicate their effects, so reading
//! `TIME` before writing is allowed.) On a cluster, the clock is that of the master owning the
//! app's slot, read inside the script as on a single node; after a failover it is the promoted
//! replica's clock, so the masters' clocks should be synchronised (NTP) as on any cluster.
//!
//! # Key layout and Redis Cluster
//!
//! Every key of one app carries the app as its hash tag: `<prefix>:{<app>}:lease:<stream>:<shard>`
//! (a hash per lease), `<prefix>:{<app>}:leases` (the lease index, a sorted set read by lexical
//! range), `<prefix>:{<app>}:workers` (live workers, a sorted set scored by heartbeat expiry),
//! `<prefix>:{<app>}:worker_instances` (the instance nonce each worker was registered by) and
//! `<prefix>:{<app>}:meta`. All keys of an app therefore hash to one Cluster slot, and every
//! script declares every key it touches in `KEYS`, so every script and pipeline of an app runs
//! on the one master owning that slot (see Redis Cluster below).
//! Listing reads the per-app index page by page, never `KEYS` or `SCAN`. Identifiers admit
//! only ASCII letters, digits, `-`, `_` and `.` (validated by [`checkpoint_core::types`]), so no
//! input can forge another app's key or hash tag. See [`KeyLayout`].
//!
//! # Redis Cluster
//!
//! `redis+cluster://[user][:password@]host1[:port][,host2[:port]...][/][?...]` (or
//! `rediss+cluster://` for TLS, with the same `tls` feature and root-certificate setting as a
//! single node), or [`RedisConfig::with_cluster_nodes`], selects the redis crate's
//! asynchronous cluster client (`redis::cluster_async`; its `cluster-async` feature is always
//! on in this crate: it adds only the small `crc16` crate to a build that already has
//! `rand`, `log` and `futures-channel`). The listed nodes are seeds; the client reads the slot
//! map from them, keeps one multiplexed connection per node, sends every command and pipeline
//! to the master owning its first key's slot, follows `MOVED` and `ASK` redirections (a
//! resharding), and refreshes the slot map after a redirection or a failed node. Query
//! parameters are those of a single-node URL; a cluster has only database 0. The same
//! conformance suite, model test included, runs against a local cluster of three masters and
//! three replicas (`conformance-tests/tests/redis_cluster.rs`), and `tests/cluster.rs` runs a
//! checkpoint loop through a `CLUSTER FAILOVER`, a master killed with `SIGKILL`, and the app's
//! slot migrated to another master (`MIGRATING`/`IMPORTING`, `MIGRATE`, `SETSLOT NODE`).
//!
//! # Faults and retries
//!
//! The store keeps one multiplexed connection ([`redis::aio::ConnectionManager`]) that
//! reconnects after the connection drops, or on a cluster one per node. An I/O error, a
//! response timeout, `LOADING`, `TRYAGAIN` (a multi-key script during a slot migration),
//! `CLUSTERDOWN`, `MASTERDOWN`, `READONLY` (failover), a `MOVED` or `ASK` the cluster client
//! could not follow within its own retries, no connection to a slot's node, or `BUSY` is
//! retryable: the operation is
//! retried with [`checkpoint_core::Backoff`] (bounded, jittered, exponential;
//! [`RedisConfig::with_backoff`]) and, once the retries are spent, returned as a retryable
//! [`checkpoint_core::Error::Backend`]. A fault may hide whether a script ran (its reply was
//! lost); the retry runs the script again and it re-reads the record: a repeated grant to the
//! same worker, renewal, equal checkpoint, release, steal or claim returns the same success,
//! and a repeated create recognises its own nonce. So a write is never reported as done when
//! it was not, nor as failed because the reply was lost. Failed conditions (held, lost,
//! regression) are never retried.
//!
//! # Durability
//!
//! A checkpoint that returned `Ok` has been applied in the server's memory and is returned by
//! every later fetch from any worker, over any connection, as long as the server keeps its
//! data. What it survives beyond that is set by the server's persistence, not by this crate
//! ([`checkpoint_core::Durability::ServerConfigured`]):
//!
//! - **No AOF** (RDB snapshots only, or no persistence at all): a server restart or crash loses
//!   every write since the last snapshot (with `save ""`, everything). Worker crashes and client
//!   reconnects lose nothing.
//! - **`appendonly yes`, `appendfsync everysec`** (the usual setting): the write is in the
//!   append-only file before the reply; a crash of the Redis process loses nothing, an
//!   operating-system crash or power loss may lose about the last second of acknowledged
//!   checkpoints (and lease grants).
//! - **`appendonly yes`, `appendfsync always`**: the file is fsynced before the reply, so an
//!   acknowledged checkpoint also survives a power loss; every write then waits for the disk.
//! - **Replication and failover, without `WAIT`** (the default): replication is asynchronous. A
//!   failover to a replica (Sentinel, Cluster, a managed service) can lose any acknowledged
//!   write the replica had not received, whatever the AOF setting: a checkpoint may go back to
//!   an earlier position (records get processed again: at-least-once), and a lease grant may be
//!   lost, which can hand the *same* fencing token to a second worker after the failover. A
//!   coordinated failover (`CLUSTER FAILOVER`, which waits for the replica to catch up) loses
//!   nothing; a master that dies (`SIGKILL`, a host lost) loses what was in flight to its
//!   replica.
//! - **Replication and failover, with `WAIT`** ([`RedisConfig::with_wait_for_replicas`], URL
//!   `wait_replicas=N&wait_timeout_ms=T`): every script call is followed by `WAIT N T` on the
//!   node that ran it (in the same pipeline on a single node; on a cluster as the next command
//!   to the master owning the app's slot), and the call returns `Ok` only when N replicas
//!   acknowledged the write. (During a slot migration the `WAIT` may reach the slot's old
//!   owner while the script ran on the new one; it then answers for the wrong node.) A failover that promotes one of those replicas then loses no
//!   acknowledged checkpoint or grant. When fewer than N replicas acknowledge within T (a
//!   replica down, or a promoted master without replicas yet), the write stays applied on the
//!   primary and the call fails with a retryable [`checkpoint_core::Error::Backend`] whose
//!   source is a [`ReplicationShortfall`]; the store's backoff retries it first (running the
//!   script again is safe, see above). So with `wait_replicas=1` and one replica per master,
//!   writes stop succeeding while a master has no live replica: availability traded for
//!   durability. `WAIT` is not a consensus protocol: a write that failed with a shortfall may
//!   still survive, and a failover that promotes a replica which did not acknowledge (with
//!   several replicas per master) can still lose it. Each call pays one replication round trip
//!   more (measured by `tests/cluster.rs`, which prints both latencies). Deregistration
//!   (`ZREM`) is not followed by `WAIT`: losing it only keeps a worker listed until its
//!   heartbeat expires.
//!
//! The server used for this crate's tests runs with no persistence (`appendonly no`, `save ""`).
//! `tests/restart.rs` kills (`SIGKILL`) and restarts a private server under a live store: with
//! `appendfsync always` the acknowledged checkpoint is still there; with no persistence the
//! record is gone and the holder's next checkpoint is `LeaseLost`, never a false success.
//!
//! # Performance
//!
//! Measured with `tests/throughput.rs` (release build, one task, Redis 7.0 on localhost, on a
//! 2-core machine shared with other builds, load average 4 to 9, so these are floors; run it
//! with `cargo test --release -p checkpoint-redis --test throughput -- --ignored --nocapture`):
//!
//! | operation | measured |
//! | --- | --- |
//! | `checkpoint`, one task, one round trip each | 3,300 to 6,200 per second |
//! | `renew`, one task, one round trip each | 4,000 to 8,200 per second |
//! | `renew_many`, 1,000 leases, one script call | 10 to 15 ms |
//! | `renew_many`, 10,000 leases, one script call | 150 to 280 ms |
//!
//! `renew_many` runs as one script, so it blocks the server for its duration (about 13 µs per
//! lease, server side): split very large batches if other clients need short latencies.
//!
//! # Capabilities
//!
//! | backend | expiry clock | transactional checkpoint | renew many | durability | multi-process |
//! | --- | --- | --- | --- | --- | --- |
//! | redis | server | no | 1 round trip | ServerConfigured | yes |
//! | redis (cluster) | server (the slot owner's) | no | 1 round trip | ServerConfigured; `WAIT` option | yes |
//!
//! # TLS
//!
//! `rediss://` URLs (or [`RedisConfig::with_tls`]) need the `tls` feature: rustls with the
//! `ring` provider, checking the server's certificate against the platform's root certificates,
//! or only against [`RedisConfig::with_tls_root_certificate`] for a private certificate
//! authority (tested in `tests/tls.rs` against a TLS-only server that `scripts/test` starts).
//!
//! On a cluster (`rediss+cluster://`) every node is reached over TLS with the same root
//! certificate. The client connects to each node by the address the cluster announces
//! (`CLUSTER SLOTS`, `MOVED`), not by the seed names of the URL, and checks the node's
//! certificate against that name: by default the node's IP address, so the certificates must
//! name it, unless the nodes announce a hostname (`cluster-announce-hostname` with
//! `cluster-preferred-endpoint-type hostname`, Redis 7). A node reached by a name its
//! certificate lacks is not connected, and opening the store fails. `tests/cluster_tls.rs` runs
//! both forms against a private TLS-only cluster of three masters.
//!
//! # Bring your own connection
//!
//! [`RedisStore::from_connection_manager`] wraps a `redis::aio::ConnectionManager` the
//! application already has (its address, credentials, TLS and timeouts), with this crate's key
//! prefix and backoff from a [`RedisConfig`].

mod checkpoints;
mod config;
mod connection;
mod error;
mod membership;
mod reply;
pub mod scripts;
mod store;

pub use config::{
    DEFAULT_CONNECTION_TIMEOUT, DEFAULT_HOST, DEFAULT_LIST_PAGE_SIZE, DEFAULT_PORT, DEFAULT_PREFIX,
    DEFAULT_RESPONSE_TIMEOUT, DEFAULT_WAIT_TIMEOUT, MAX_PREFIX_BYTES, RedisConfig, WaitForReplicas,
};
pub use connection::ReplicationShortfall;
pub use scripts::{KeyLayout, ScriptMode};
pub use store::{RENEW_MANY_CHUNK, RedisStore};

/// The redis-rs version this crate is built on, for [`RedisStore::from_connection_manager`].
pub use redis;

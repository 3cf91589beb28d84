//! The lease/checkpoint contract on Redis: one Lua script per conditional operation, expiry
//! judged by the server's clock.
//!
//! One Redis database holds the leases, checkpoints and live workers of any number of apps, each
//! app under its own hash tag. Open a store with [`RedisStore::connect`] (a URL such as
//! `redis://:password@127.0.0.1:6379/0?prefix=ckpt`) or [`RedisStore::open`] with a
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
//! between, so each operation is atomic on the server. Scripts are loaded once
//! (`SCRIPT LOAD` at init) and called by hash (`EVALSHA`); after a server restart or
//! `SCRIPT FLUSH` the `NOSCRIPT` reply makes the client load the script again
//! ([`redis::Script`]). Fetch is one `HMGET`; deregister one `ZREM`. See [`scripts`]. A
//! renew-many batch above [`RENEW_MANY_CHUNK`] leases is several scripts in one pipeline, each
//! atomic over its chunk.
//!
//! # Clock
//!
//! Expiry is judged by the server's clock ([`checkpoint_core::ClockSource::Server`]): each
//! script reads `TIME` and compares deadlines (stored as server milliseconds since the Unix
//! epoch) with it. Client clocks never matter, so workers on hosts with skewed clocks still
//! agree on who holds a lease. (Redis 5 or later: scripts replicate their effects, so reading
//! `TIME` before writing is allowed.)
//!
//! # Key layout and Redis Cluster
//!
//! Every key of one app carries the app as its hash tag: `<prefix>:{<app>}:lease:<stream>:<shard>`
//! (a hash per lease), `<prefix>:{<app>}:leases` (the lease index, a sorted set read by lexical
//! range), `<prefix>:{<app>}:workers` (live workers, a sorted set scored by heartbeat expiry),
//! `<prefix>:{<app>}:worker_instances` (the instance nonce each worker was registered by) and
//! `<prefix>:{<app>}:meta`. All keys of an app therefore hash to one Cluster slot, and every
//! script declares every key it touches in `KEYS`, so the scripts also run on Redis Cluster.
//! (The store itself connects to one node, a standalone server or a primary; it does not follow
//! Cluster redirections.)
//! Listing reads the per-app index page by page, never `KEYS` or `SCAN`. Identifiers admit
//! only ASCII letters, digits, `-`, `_` and `.` (validated by [`checkpoint_core::types`]), so no
//! input can forge another app's key or hash tag. See [`KeyLayout`].
//!
//! # Faults and retries
//!
//! The store keeps one multiplexed connection ([`redis::aio::ConnectionManager`]) that
//! reconnects after the connection drops. An I/O error, a response timeout, `LOADING`,
//! `TRYAGAIN`, `MASTERDOWN`, `READONLY` (failover) or `BUSY` is retryable: the operation is
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
//! - **Replication and failover**: replication is asynchronous. A failover to a replica (Sentinel,
//!   Cluster, a managed service) can lose any acknowledged write the replica had not received,
//!   whatever the AOF setting: a checkpoint may go back to an earlier position (records get
//!   processed again: at-least-once), and a lease grant may be lost, which can hand the *same*
//!   fencing token to a second worker after the failover. Where that matters, run with one
//!   primary and AOF `always`, or use a backend with synchronous replication. This crate does not
//!   issue `WAIT`.
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
//!
//! # TLS
//!
//! `rediss://` URLs (or [`RedisConfig::with_tls`]) need the `tls` feature: rustls with the
//! `ring` provider, checking the server's certificate against the platform's root certificates,
//! or only against [`RedisConfig::with_tls_root_certificate`] for a private certificate
//! authority (tested in `tests/tls.rs` against a TLS-only server that `scripts/test` starts).
//!
//! # Bring your own connection
//!
//! [`RedisStore::from_connection_manager`] wraps a `redis::aio::ConnectionManager` the
//! application already has (its address, credentials, TLS and timeouts), with this crate's key
//! prefix and backoff from a [`RedisConfig`].

mod config;
mod error;
pub mod scripts;
mod store;

pub use config::{
    DEFAULT_CONNECTION_TIMEOUT, DEFAULT_HOST, DEFAULT_LIST_PAGE_SIZE, DEFAULT_PORT, DEFAULT_PREFIX,
    DEFAULT_RESPONSE_TIMEOUT, MAX_PREFIX_BYTES, RedisConfig,
};
pub use scripts::KeyLayout;
pub use store::{RENEW_MANY_CHUNK, RedisStore};

/// The redis-rs version this crate is built on, for [`RedisStore::from_connection_manager`].
pub use redis;

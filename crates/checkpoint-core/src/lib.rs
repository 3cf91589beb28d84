//! Lease and checkpoint storage for stream consumers, behind one contract.
//!
//! Workers that read sharded streams need two things from a store: exclusive, expiring
//! ownership of each shard (a [`Lease`] with a [`FencingToken`], so a paused worker can never
//! write after losing it) and a durable [`Position`] per shard (the checkpoint). This crate holds
//! the contract every backend implements ([`contract`]: operations, invariants, each store's
//! clock and durability, and the scenarios that check each clause):
//!
//! - the domain types, validated in their constructors ([`types`]);
//! - the [`LeaseManager`], [`Checkpointer`] and [`Membership`] traits, together [`Store`],
//!   usable as `Arc<dyn Store>`;
//! - one [`Error`] type whose kinds callers match the same way on every backend;
//! - the contract's transitions as pure functions ([`rules`]);
//! - [`MemoryStore`], the reference model with an injectable [`Clock`];
//! - [`Backoff`], the bounded jittered retry policy the backends share;
//! - with the `conformance` feature, the conformance suite (module `conformance`): the contract as
//!   tests, runnable against any store in one `#[tokio::test]`.
//!
//! ```
//! use std::time::Duration;
//! use checkpoint_core::{AppName, Checkpointer, LeaseManager, LeaseDuration, LeaseKey, MemoryStore, Position, WorkerId};
//!
//! # tokio_test_block_on(async {
//! let store = MemoryStore::new(AppName::new("billing")?);
//! let key = LeaseKey::parse("orders", "shardId-000000000000")?;
//! let me = WorkerId::new("worker-1")?;
//! let lease = store.get_lease(&key, &me, LeaseDuration::new(Duration::from_secs(10))?).await?;
//! store.checkpoint_sequence(&key, &me, lease.token, &Position::sequence("49590338271490256608559692538361571095921575989136588898")?).await?;
//! # Ok::<(), checkpoint_core::Error>(())
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

pub mod contract {
    #![doc = include_str!("../CONTRACT.md")]
}

mod backoff;
mod clock;
mod error;
mod memory;
pub mod rules;
mod store;
pub mod types;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use backoff::Backoff;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, ErrorKind, Result};
pub use memory::{MemoryDatabase, MemoryStore};
pub use store::{
    BatchMode, Capabilities, Checkpointer, CheckpointerExt, ClockSource, Durability, LeaseManager,
    Membership, Store,
};
pub use types::{
    AppName, FencingToken, HeartbeatTtl, InstanceId, Lease, LeaseDuration, LeaseKey, Listing,
    Position, PositionRank, RenewOutcome, SequenceNumber, ShardId, StreamName, WorkerId,
};

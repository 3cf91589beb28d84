//! The scenarios, one public async function per invariant or operation of the contract ([`crate::contract`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;

use super::exclusion::*;
use super::isolation::*;
use super::lifecycle::*;
use super::positions::*;
use super::{Clause, Failure, Outcome, Scenario, StoreFactory, random_app};
use crate::ensure;
use crate::error::{Error, ErrorKind, Result};
use crate::store::Store;
use crate::types::{
    AppName, FencingToken, HeartbeatTtl, Lease, LeaseDuration, LeaseKey, Position, ShardId,
    WorkerId,
};

/// Every scenario with its name, in the order [`super::run_all`] runs them.
pub fn all() -> Vec<Scenario> {
    vec![
        ("init_is_idempotent", |f| Box::pin(init_is_idempotent(f))),
        ("create_if_absent", |f| Box::pin(create_if_absent(f))),
        ("get_lease_grants_and_reports_holder", |f| {
            Box::pin(get_lease_grants_and_reports_holder(f))
        }),
        ("mutual_exclusion_one_winner", |f| {
            Box::pin(mutual_exclusion_one_winner(f))
        }),
        ("mutual_exclusion_exact_count", |f| {
            Box::pin(mutual_exclusion_exact_count(f))
        }),
        ("renew_rules", |f| Box::pin(renew_rules(f))),
        ("renew_past_deadline_when_not_taken", |f| {
            Box::pin(renew_past_deadline_when_not_taken(f))
        }),
        ("expiry_is_exact", |f| Box::pin(super::expiry_is_exact(f))),
        ("retake_own_expired_keeps_token", |f| {
            Box::pin(super::retake_own_expired_keeps_token(f))
        }),
        ("retake_own_live_lease_moves_deadline", |f| {
            Box::pin(super::retake_own_live_lease_moves_deadline(f))
        }),
        ("fencing_after_expiry_takeover", |f| {
            Box::pin(fencing_after_expiry_takeover(f))
        }),
        ("fencing_after_steal", |f| Box::pin(fencing_after_steal(f))),
        ("fencing_after_out_of_band_bump", |f| {
            Box::pin(fencing_after_out_of_band_bump(f))
        }),
        ("steal_rules", |f| Box::pin(steal_rules(f))),
        ("monotonic_positions", |f| Box::pin(monotonic_positions(f))),
        ("shard_end_is_terminal", |f| {
            Box::pin(shard_end_is_terminal(f))
        }),
        ("prepare_checkpoint_two_phase", |f| {
            Box::pin(prepare_checkpoint_two_phase(f))
        }),
        ("release_keeps_checkpoint_and_token", |f| {
            Box::pin(release_keeps_checkpoint_and_token(f))
        }),
        ("remove_lease_info_rules", |f| {
            Box::pin(remove_lease_info_rules(f))
        }),
        ("list_leases_paginated", |f| {
            Box::pin(list_leases_paginated(f))
        }),
        ("claim_hand_off", |f| Box::pin(claim_hand_off(f))),
        ("claim_is_honoured", |f| Box::pin(claim_is_honoured(f))),
        ("listing_carries_store_clock", |f| {
            Box::pin(listing_carries_store_clock(f))
        }),
        ("renew_many_reports_lost", |f| {
            Box::pin(renew_many_reports_lost(f))
        }),
        ("renew_many_moves_deadlines", |f| {
            Box::pin(super::renew_many_moves_deadlines(f))
        }),
        ("admin_reset_checkpoint", |f| {
            Box::pin(admin_reset_checkpoint(f))
        }),
        ("isolation_between_apps", |f| {
            Box::pin(isolation_between_apps(f))
        }),
        ("isolation_between_streams", |f| {
            Box::pin(isolation_between_streams(f))
        }),
        ("membership_lifecycle", |f| {
            Box::pin(membership_lifecycle(f))
        }),
        ("heartbeat_extends_ttl", |f| {
            Box::pin(super::heartbeat_extends_ttl(f))
        }),
        ("worker_id_instances", |f| {
            Box::pin(super::worker_id_instances(f))
        }),
        ("durability_across_handles", |f| {
            Box::pin(durability_across_handles(f))
        }),
        ("bad_input_rejected", |f| {
            Box::pin(super::bad_input_rejected(f))
        }),
        ("edge_ids_round_trip", |f| {
            Box::pin(super::edge_ids_round_trip(f))
        }),
        ("import_whole_records", |f| {
            Box::pin(super::import_whole_records(f))
        }),
        ("list_apps_names_apps_with_leases", |f| {
            Box::pin(super::list_apps_names_apps_with_leases(f))
        }),
        ("model_matches_reference", |f| {
            Box::pin(super::model_test(f))
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// How long a "held" lease lasts in scenarios: long enough never to expire during a run.
pub(super) fn long() -> LeaseDuration {
    LeaseDuration::new(Duration::from_secs(120)).expect("valid")
}

/// A lease meant to expire during the scenario.
pub(super) fn short() -> LeaseDuration {
    LeaseDuration::new(Duration::from_millis(40)).expect("valid")
}

/// Upper bound for polling until a short lease or heartbeat has expired in the store's clock.
pub(super) const EXPIRY_WAIT: Duration = Duration::from_secs(10);

pub(super) fn key(stream: &str, shard: &str) -> LeaseKey {
    LeaseKey::parse(stream, shard).expect("valid key")
}

pub(super) fn worker(name: &str) -> WorkerId {
    WorkerId::new(name).expect("valid worker id")
}

pub(super) fn seq(digits: &str) -> Position {
    Position::sequence(digits).expect("valid sequence")
}

pub(super) async fn open(
    factory: &dyn StoreFactory,
    prefix: &str,
) -> std::result::Result<(AppName, Arc<dyn Store>), Failure> {
    let app = random_app(prefix);
    let store = factory.open(&app).await?;
    Ok((app, store))
}

/// Expects `result` to be an error of `kind`.
pub(super) fn expect_err<T: std::fmt::Debug>(
    clause: Clause,
    result: Result<T>,
    kind: ErrorKind,
    what: &str,
) -> std::result::Result<Error, Failure> {
    match result {
        Err(e) if e.kind() == kind => Ok(e),
        Err(e) => Err(Failure::new(
            clause,
            format!("{what}: expected {kind:?}, got {:?}: {e}", e.kind()),
        )),
        Ok(v) => Err(Failure::new(
            clause,
            format!("{what}: expected {kind:?}, got success {v:?}"),
        )),
    }
}

/// Fetches a record that must exist.
pub(super) async fn fetch(
    store: &dyn Store,
    key: &LeaseKey,
) -> std::result::Result<Lease, Failure> {
    store
        .fetch_checkpoint(key)
        .await?
        .ok_or_else(|| Failure::new(Clause::Checkpoint, format!("lease {key} vanished")))
}

/// Takes `key` for `worker` once the previous holder's lease has expired by the store's clock:
/// on a [manual clock](StoreFactory::manual_clock) by moving it the `remaining` time the
/// refusal reported, otherwise by polling. Waiting for a condition, never sleeping for
/// correctness.
pub(super) async fn acquire_when_expired(
    factory: &dyn StoreFactory,
    store: &dyn Store,
    key: &LeaseKey,
    worker: &WorkerId,
    duration: LeaseDuration,
) -> std::result::Result<Lease, Failure> {
    let clock = factory.manual_clock();
    let start = Instant::now();
    // On a manual clock, moving it by the reported time left must free the lease: one more
    // attempt allows for a grant between the refusal and the move, then it is an expiry fault.
    let mut moves = 0;
    loop {
        match store.get_lease(key, worker, duration).await {
            Ok(lease) => return Ok(lease),
            Err(Error::LeaseHeld { remaining, .. })
                if start.elapsed() < EXPIRY_WAIT && moves < 2 =>
            {
                match &clock {
                    Some(clock) => {
                        clock.advance(remaining.max(Duration::from_millis(1)));
                        moves += 1;
                    }
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
            Err(e) => {
                return Err(Failure::new(
                    Clause::Expiry,
                    format!("waiting for {key} to expire: {e}"),
                ));
            }
        }
    }
}

/// Lets `ttl` pass for a worker registered just now: moves the manual clock, or polls until
/// `probe` (registered with `ttl` after it) is no longer live.
pub(super) async fn let_ttl_pass(
    factory: &dyn StoreFactory,
    store: &dyn Store,
    probe: &WorkerId,
    ttl: HeartbeatTtl,
) -> Outcome {
    if let Some(clock) = factory.manual_clock() {
        clock.advance(ttl.get());
    }
    let start = Instant::now();
    while store.live_workers().await?.contains(probe) {
        ensure!(
            start.elapsed() < EXPIRY_WAIT,
            Membership,
            "a {ttl:?} heartbeat TTL did not expire in {EXPIRY_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Checks that a write carrying a stale token failed with LeaseLost and left the record as it was.
pub(super) async fn expect_fenced<T: std::fmt::Debug>(
    store: &dyn Store,
    key: &LeaseKey,
    before: &Lease,
    result: Result<T>,
    what: &str,
) -> Outcome {
    expect_err(Clause::Fencing, result, ErrorKind::LeaseLost, what)?;
    let after = fetch(store, key).await?;
    ensure!(
        after == *before,
        Fencing,
        "{what} changed the record although it was fenced:\nbefore {before:?}\nafter  {after:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Operations 1 and 2

/// Operation 1: many handles run `init` at once, then again; all succeed.
pub async fn init_is_idempotent(factory: &dyn StoreFactory) -> Outcome {
    let app = random_app("init");
    let handles = join_all((0..8).map(|_| factory.open(&app))).await;
    let mut stores = Vec::new();
    for h in handles {
        stores.push(h?);
    }
    for r in join_all(stores.iter().map(|s| s.init())).await {
        r?;
    }
    let k = key("s", "shard-0");
    ensure!(
        stores[0].create_lease_if_absent(&k, &[], None).await?,
        Init,
        "create after init failed"
    );
    stores[3].init().await?;
    ensure!(
        stores[5].fetch_checkpoint(&k).await?.is_some(),
        Init,
        "init dropped existing records"
    );
    Ok(())
}

/// Operation 2: creates once, reports false after; the record is free with token 0 and keeps
/// parents and the initial position.
pub async fn create_if_absent(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "create").await?;
    let k = key("orders", "shardId-000000000002");
    let parents = vec![
        ShardId::new("shardId-000000000000")?,
        ShardId::new("shardId-000000000001")?,
    ];
    ensure!(
        store
            .create_lease_if_absent(&k, &parents, Some(&Position::TrimHorizon))
            .await?,
        Create,
        "first create reported an existing record"
    );
    ensure!(
        !store
            .create_lease_if_absent(&k, &[], Some(&Position::Latest))
            .await?,
        Create,
        "second create reported it created"
    );
    let lease = fetch(&*store, &k).await?;
    ensure!(
        lease.owner.is_none() && lease.deadline.is_none(),
        Create,
        "new lease is owned: {lease:?}"
    );
    ensure!(
        lease.token == FencingToken(0),
        Create,
        "new lease token is {} not 0",
        lease.token
    );
    ensure!(
        lease.parents == parents,
        Create,
        "parents {:?} != {parents:?}",
        lease.parents
    );
    ensure!(
        lease.checkpoint == Some(Position::TrimHorizon),
        Create,
        "second create overwrote the checkpoint: {:?}",
        lease.checkpoint
    );
    ensure!(
        lease.claim.is_none() && lease.pending_checkpoint.is_none(),
        Create,
        "new lease has a claim or pending: {lease:?}"
    );
    let at = key("orders", "shardId-000000000003");
    store
        .create_lease_if_absent(&at, &[], Some(&Position::AtTimestamp(1_700_000_000_123)))
        .await?;
    ensure!(
        fetch(&*store, &at).await?.checkpoint == Some(Position::AtTimestamp(1_700_000_000_123)),
        Create,
        "AT_TIMESTAMP did not round-trip"
    );
    Ok(())
}

/// Operation 3: grants an absent or free lease (token + 1), re-grants to the holder without a
/// bump, refuses another worker with the holder and time left.
pub async fn get_lease_grants_and_reports_holder(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "get").await?;
    let k = key("s", "shard-1");
    let (a, b) = (worker("worker-a"), worker("worker-b"));
    let first = store.get_lease(&k, &a, long()).await?;
    ensure!(
        first.owner.as_ref() == Some(&a),
        Grant,
        "owner is {:?}",
        first.owner
    );
    ensure!(
        first.token == FencingToken(1),
        TokenBump,
        "first grant token {} not 1",
        first.token
    );
    ensure!(
        first.owner_switches_since_checkpoint == 1,
        Grant,
        "owner switches {} not 1",
        first.owner_switches_since_checkpoint
    );
    let again = store.get_lease(&k, &a, long()).await?;
    ensure!(
        again.token == first.token,
        TokenBump,
        "re-grant to the holder bumped the token {} -> {}",
        first.token,
        again.token
    );
    let err = expect_err(
        Clause::Grant,
        store.get_lease(&k, &b, long()).await,
        ErrorKind::LeaseHeld,
        "get_lease by another worker",
    )?;
    if let Error::LeaseHeld {
        holder,
        remaining,
        key: held_key,
    } = err
    {
        ensure!(holder == a, Grant, "LeaseHeld names {holder}, not {a}");
        ensure!(held_key == k, Grant, "LeaseHeld names key {held_key}");
        ensure!(
            remaining > Duration::from_secs(60)
                && remaining <= long().get() + Duration::from_secs(5),
            Expiry,
            "LeaseHeld time left {remaining:?} is not about {:?}",
            long().get()
        );
    }
    ensure!(
        fetch(&*store, &k).await?.token == FencingToken(1),
        Grant,
        "a refused get_lease changed the token"
    );
    Ok(())
}

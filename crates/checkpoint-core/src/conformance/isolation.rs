//! Scenarios of isolation between apps and streams, membership, and durability across
//! handles (operation 12 and the invariants).

use std::time::Duration;

use super::scenarios::*;
use super::{Clause, Failure, Outcome, StoreFactory, random_app};
use crate::ensure;
use crate::error::ErrorKind;
use crate::types::{FencingToken, HeartbeatTtl, Position};

// ---------------------------------------------------------------------------------------------
// Isolation, membership, durability

/// Isolation between apps: the same keys and worker ids in two apps of one store never meet.
pub async fn isolation_between_apps(factory: &dyn StoreFactory) -> Outcome {
    let (_, one) = open(factory, "iso-a").await?;
    let (_, two) = open(factory, "iso-b").await?;
    let k = key("shared", "shard-0");
    let (a, b) = (worker("a"), worker("b"));
    let la = one.get_lease(&k, &a, long()).await?;
    let lb = two.get_lease(&k, &b, long()).await.map_err(|e| {
        Failure::new(
            Clause::Isolation,
            format!("a lease of one app is held in the other: {e}"),
        )
    })?;
    ensure!(
        la.token == FencingToken(1) && lb.token == FencingToken(1),
        Isolation,
        "apps share tokens: {} / {}",
        la.token,
        lb.token
    );
    one.checkpoint_sequence(&k, &a, la.token, &seq("111"))
        .await?;
    ensure!(
        fetch(&*two, &k).await?.checkpoint.is_none(),
        Isolation,
        "checkpoint leaked into the other app"
    );
    one.create_lease_if_absent(&key("shared", "only-one"), &[], None)
        .await?;
    ensure!(
        two.list_leases(None).await?.len() == 1,
        Isolation,
        "list shows the other app's records"
    );
    two.remove_lease_info(&k).await?;
    ensure!(
        fetch(&*one, &k).await?.checkpoint == Some(seq("111")),
        Isolation,
        "delete in one app removed the other's record"
    );
    one.register_worker(&a, HeartbeatTtl::new(Duration::from_secs(60))?)
        .await?;
    ensure!(
        two.live_workers().await?.is_empty(),
        Isolation,
        "membership leaked into the other app"
    );
    Ok(())
}

/// Isolation between streams: one shard id in two streams is two leases.
pub async fn isolation_between_streams(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "streams").await?;
    let (k1, k2) = (key("left", "shard-0"), key("right", "shard-0"));
    let (a, b) = (worker("a"), worker("b"));
    let l1 = store.get_lease(&k1, &a, long()).await?;
    let l2 = store.get_lease(&k2, &b, long()).await.map_err(|e| {
        Failure::new(
            Clause::Isolation,
            format!("one shard id in another stream is not a separate lease: {e}"),
        )
    })?;
    ensure!(
        l1.token == FencingToken(1) && l2.token == FencingToken(1),
        Isolation,
        "streams share a lease"
    );
    store
        .checkpoint_sequence(&k1, &a, l1.token, &seq("5"))
        .await?;
    ensure!(
        fetch(&*store, &k2).await?.checkpoint.is_none(),
        Isolation,
        "checkpoint leaked across streams"
    );
    expect_err(
        Clause::Isolation,
        store
            .checkpoint_sequence(&k2, &a, l1.token, &seq("5"))
            .await,
        ErrorKind::LeaseLost,
        "write with another stream's lease",
    )?;
    Ok(())
}

/// Operation 12: register, heartbeat, sorted live list, expiry by the store's clock, prune,
/// deregister.
pub async fn membership_lifecycle(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "members").await?;
    let ttl = HeartbeatTtl::new(Duration::from_secs(60))?;
    for name in ["worker-c", "worker-a", "worker-b"] {
        store.register_worker(&worker(name), ttl).await?;
    }
    let live = store.live_workers().await?;
    ensure!(
        live == vec![worker("worker-a"), worker("worker-b"), worker("worker-c")],
        Membership,
        "live workers {live:?}"
    );
    let mortal = worker("worker-d");
    store
        .register_worker(&mortal, HeartbeatTtl::new(Duration::from_millis(30))?)
        .await?;
    let_ttl_pass(
        factory,
        &*store,
        &mortal,
        HeartbeatTtl::new(Duration::from_millis(30))?,
    )
    .await?;
    store.heartbeat(&worker("worker-a"), ttl).await?;
    let pruned = store.prune_dead_workers().await?;
    ensure!(
        pruned == 1,
        Membership,
        "pruned {pruned} workers, expected 1"
    );
    expect_err(
        Clause::Membership,
        store.heartbeat(&mortal, ttl).await,
        ErrorKind::NotFound,
        "heartbeat of a pruned worker",
    )?;
    store.deregister_worker(&worker("worker-b")).await?;
    store.deregister_worker(&worker("never-registered")).await?;
    let live = store.live_workers().await?;
    ensure!(
        live == vec![worker("worker-a"), worker("worker-c")],
        Membership,
        "after deregister: {live:?}"
    );
    store.register_worker(&mortal, ttl).await?;
    ensure!(
        store.live_workers().await?.len() == 3,
        Membership,
        "re-registration did not count"
    );
    ensure!(
        store.prune_dead_workers().await? == 0,
        Membership,
        "pruned live workers"
    );
    Ok(())
}

/// Durability: a checkpoint that returned Ok is returned by a fetch from a new handle (a new
/// connection or process) and from another worker.
pub async fn durability_across_handles(factory: &dyn StoreFactory) -> Outcome {
    let app = random_app("durable");
    let k = key("s", "shard-dur");
    let a = worker("a");
    let token = {
        let store = factory.open(&app).await?;
        let t = store.get_lease(&k, &a, long()).await?.token;
        store
            .checkpoint_sequence(
                &k,
                &a,
                t,
                &Position::sequence_with_sub("123456789012345678901234567890", 7)?,
            )
            .await?;
        t
    };
    let reopened = factory.open(&app).await?;
    let lease = reopened.fetch_checkpoint(&k).await?.ok_or_else(|| {
        Failure::new(
            Clause::Durability,
            format!("a new handle does not see lease {k} at all"),
        )
    })?;
    ensure!(
        lease.checkpoint
            == Some(Position::sequence_with_sub(
                "123456789012345678901234567890",
                7
            )?),
        Durability,
        "checkpoint not durable across handles: {:?}",
        lease.checkpoint
    );
    ensure!(
        lease.token == token && lease.owner.as_ref() == Some(&a),
        Durability,
        "ownership not durable: {lease:?}"
    );
    Ok(())
}

//! Scenarios about time: how long a lease, a renewal and a heartbeat last by the store's clock.
//!
//! On a store with a [manual clock](super::StoreFactory::manual_clock) the checks are exact to
//! the millisecond (a lease granted for `d` is held at `d - 1 ms` and free at `d`). On a
//! store's own clock they allow [`ROUND_TRIP_TOLERANCE`] for the round trips between the
//! operations, and use durations long against it.

use std::time::{Duration, Instant};

use super::scenarios::{
    acquire_when_expired, expect_err, fetch, key, let_ttl_pass, long, open, short, worker,
};
use super::{Clause, Failure, Outcome, StoreFactory};
use crate::clock::Clock;
use crate::ensure;
use crate::error::{Error, ErrorKind};
use crate::store::ClockSource;
use crate::types::{HeartbeatTtl, LeaseDuration};

/// How far a time reported by a store on its own clock (`LeaseHeld.remaining`) may fall short
/// of the duration just granted: the round trips between the grant and the report. Reported
/// times must never exceed the duration.
pub const ROUND_TRIP_TOLERANCE: Duration = Duration::from_secs(2);

/// Extra tolerance on a store whose expiry is observed ([`ClockSource::Observed`], DynamoDB):
/// a handle dates a version by its own sighting after the reply, so a slow request (an
/// emulator serving one request at a time) moves reported deadlines later by its latency.
pub const OBSERVED_LATENCY_ALLOWANCE: Duration = Duration::from_secs(8);

const MS: Duration = Duration::from_millis(1);

/// Expiry by the store's clock: a lease granted or renewed for `d` is held until exactly `d`
/// has passed and free from then on, and `LeaseHeld.remaining` is the time left. With a manual
/// clock: held at `d - 1 ms` with 1 ms left, free at `d`, the record's deadline is exactly
/// now + `d`, and a renewal for a shorter duration moves the deadline to now + that duration.
/// Without one: the time left reported right after a grant or renewal is at most its duration
/// (plus the skew allowance of a client clock) and at least the duration less the time the
/// calls took and [`ROUND_TRIP_TOLERANCE`].
pub async fn expiry_is_exact(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "exact").await?;
    let k = key("s", "exact");
    let (a, b) = (worker("a"), worker("b"));
    let skew = match store.capabilities().clock {
        ClockSource::Client { skew_allowance } => skew_allowance,
        ClockSource::Server | ClockSource::Host => Duration::ZERO,
        // A handle's own sighting after each reply: the request's latency counts.
        ClockSource::Observed => OBSERVED_LATENCY_ALLOWANCE,
    };
    let Some(clock) = factory.manual_clock() else {
        for (i, d) in [long(), LeaseDuration::new(Duration::from_secs(30))?]
            .into_iter()
            .enumerate()
        {
            let started = Instant::now();
            if i == 0 {
                store.get_lease(&k, &a, d).await?;
            } else {
                let t = fetch(&*store, &k).await?.token;
                store.renew(&k, &a, t, d).await?;
            }
            let e = expect_err(
                Clause::Expiry,
                store.get_lease(&k, &b, long()).await,
                ErrorKind::LeaseHeld,
                "get_lease right after a grant",
            )?;
            let took = started.elapsed();
            if let Error::LeaseHeld { remaining, .. } = e {
                ensure!(
                    remaining <= d.get() + skew
                        && remaining + took + ROUND_TRIP_TOLERANCE >= d.get(),
                    Expiry,
                    "{:?} after a {} for {:?} (the calls took {took:?}), {remaining:?} is left",
                    took,
                    if i == 0 { "grant" } else { "renewal" },
                    d.get()
                );
            }
        }
        return Ok(());
    };
    let d = LeaseDuration::new(Duration::from_secs(10))?;
    let granted = store.get_lease(&k, &a, d).await?;
    ensure!(
        granted.deadline == Some(clock.now() + d.get()),
        Expiry,
        "a grant for {:?} at {:?} has deadline {:?}",
        d.get(),
        clock.now(),
        granted.deadline
    );
    clock.advance(d.get() - MS);
    let e = expect_err(
        Clause::Expiry,
        store.get_lease(&k, &b, d).await,
        ErrorKind::LeaseHeld,
        "get_lease 1 ms before the deadline",
    )?;
    if let Error::LeaseHeld { remaining, .. } = e {
        ensure!(
            remaining == MS,
            Expiry,
            "1 ms before the deadline LeaseHeld reports {remaining:?} left"
        );
    }
    let shorter = LeaseDuration::new(Duration::from_secs(5))?;
    let renewed = store.renew(&k, &a, granted.token, shorter).await?;
    ensure!(
        renewed.deadline == Some(clock.now() + shorter.get())
            && fetch(&*store, &k).await?.deadline == renewed.deadline,
        Expiry,
        "a renewal for {:?} gave deadline {:?}, expected now + the duration",
        shorter.get(),
        renewed.deadline
    );
    clock.advance(shorter.get() - MS);
    expect_err(
        Clause::Expiry,
        store.get_lease(&k, &b, d).await,
        ErrorKind::LeaseHeld,
        "get_lease 1 ms before the renewed deadline",
    )?;
    clock.advance(MS);
    let taken = store.get_lease(&k, &b, d).await;
    ensure!(
        taken.is_ok(),
        Expiry,
        "the lease is still held at its deadline: {taken:?}"
    );
    Ok(())
}

/// Operation 4, batched: renew-many moves the stored deadline of every lease it reports
/// renewed, so those leases outlive a lease granted with their old duration after it.
pub async fn renew_many_moves_deadlines(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "many-moves").await?;
    let (a, b) = (worker("a"), worker("b"));
    let mut batch = Vec::new();
    let mut granted = Vec::new();
    for i in 0..3 {
        let k = key("s", &format!("moved-{i}"));
        let l = store.get_lease(&k, &a, short()).await?;
        batch.push((k, l.token));
        granted.push(l);
    }
    let outcome = store.renew_many(&a, &batch, long()).await?;
    ensure!(
        outcome.renewed.len() == 3 && outcome.lost.is_empty(),
        RenewMany,
        "renew_many of three held leases: {outcome:?}"
    );
    for (k, before) in batch.iter().map(|(k, _)| k).zip(&granted) {
        let stored = fetch(&*store, k).await?;
        ensure!(
            stored.deadline > before.deadline,
            RenewMany,
            "renew_many reported {k} renewed, but its stored deadline stayed {:?}",
            stored.deadline
        );
    }
    let probe = key("s", "probe");
    store.get_lease(&probe, &a, short()).await?;
    acquire_when_expired(factory, &*store, &probe, &b, long()).await?;
    for (k, _) in &batch {
        expect_err(
            Clause::RenewMany,
            store.get_lease(k, &b, long()).await,
            ErrorKind::LeaseHeld,
            "a lease renewed by renew_many, once its old duration passed",
        )?;
    }
    Ok(())
}

/// Operation 12: a heartbeat extends a worker's life to its new TTL, and registration and
/// heartbeat TTLs end exactly on a manual clock.
pub async fn heartbeat_extends_ttl(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "beat").await?;
    let brief = HeartbeatTtl::new(Duration::from_millis(50))?;
    let (a, probe) = (worker("beating"), worker("probe"));
    store.register_worker(&a, brief).await?;
    store
        .heartbeat(&a, HeartbeatTtl::new(Duration::from_secs(120))?)
        .await?;
    store.register_worker(&probe, brief).await?;
    let_ttl_pass(factory, &*store, &probe, brief).await?;
    let live = store.live_workers().await?;
    ensure!(
        live == vec![a.clone()],
        Membership,
        "after a heartbeat for 120 s, once 50 ms passed the live workers are {live:?}"
    );
    if let Some(clock) = factory.manual_clock() {
        let c = worker("exact");
        let ttl = HeartbeatTtl::new(Duration::from_secs(10))?;
        store.register_worker(&c, ttl).await?;
        clock.advance(Duration::from_secs(5));
        store.heartbeat(&c, ttl).await?;
        clock.advance(ttl.get() - MS);
        ensure!(
            store.live_workers().await?.contains(&c),
            Membership,
            "a worker is dead 1 ms before its heartbeat TTL ends"
        );
        clock.advance(MS);
        ensure!(
            !store.live_workers().await?.contains(&c),
            Membership,
            "a worker is live when its heartbeat TTL ended"
        );
    }
    Ok(())
}

/// Operation 12, instances: two handles (two instances, as two processes are) registering one
/// worker id. While the first's record is live the second's register and heartbeat are
/// [`Error::WorkerIdInUse`] and change nothing; once the record has expired by the store's
/// clock (on an observed store: once the second handle has seen it unchanged for its TTL) the
/// second registers, taking the id over; then the first's heartbeat and register are
/// `WorkerIdInUse`, and the record stays the second's.
pub async fn worker_id_instances(factory: &dyn StoreFactory) -> Outcome {
    let (app, first) = open(factory, "instances").await?;
    let second = factory.open(&app).await?;
    let id = worker("host:twin");
    let long = HeartbeatTtl::new(Duration::from_secs(60))?;
    let brief = HeartbeatTtl::new(Duration::from_millis(200))?;
    first.register_worker(&id, long).await?;
    expect_err(
        Clause::WorkerInstance,
        second.register_worker(&id, long).await,
        ErrorKind::WorkerIdInUse,
        "register of an id another instance holds live",
    )?;
    expect_err(
        Clause::WorkerInstance,
        second.heartbeat(&id, long).await,
        ErrorKind::WorkerIdInUse,
        "heartbeat of an id another instance registered",
    )?;
    // The first's record is untouched: it still heartbeats (shortening its TTL to `brief`).
    first.heartbeat(&id, brief).await.map_err(|e| {
        Failure::new(
            Clause::WorkerInstance,
            format!("the refused instance's register or heartbeat changed the record: {e}"),
        )
    })?;
    let_ttl_pass(factory, &*second, &id, brief).await?;
    second.register_worker(&id, long).await.map_err(|e| {
        Failure::new(
            Clause::WorkerInstance,
            format!("register of an id whose record expired by the store's clock: {e}"),
        )
    })?;
    expect_err(
        Clause::WorkerInstance,
        first.heartbeat(&id, long).await,
        ErrorKind::WorkerIdInUse,
        "heartbeat of the instance whose id was taken over",
    )?;
    expect_err(
        Clause::WorkerInstance,
        first.register_worker(&id, long).await,
        ErrorKind::WorkerIdInUse,
        "register of the instance whose id was taken over, while the new record lives",
    )?;
    second.heartbeat(&id, long).await.map_err(|e| {
        Failure::new(
            Clause::WorkerInstance,
            format!("the instance that took the id over cannot heartbeat it: {e}"),
        )
    })?;
    let live = second.live_workers().await?;
    ensure!(
        live == vec![id.clone()],
        WorkerInstance,
        "after the takeover the live workers are {live:?}"
    );
    Ok(())
}

/// A worker re-taking its own lease after it expired (nobody took it meanwhile) keeps the
/// token, from any handle: only a grant to a different worker bumps it.
pub async fn retake_own_expired_keeps_token(factory: &dyn StoreFactory) -> Outcome {
    let (app, store) = open(factory, "retake").await?;
    let (a, b) = (worker("a"), worker("b"));
    let (k, probe) = (key("s", "retaken"), key("s", "probe"));
    let first = store.get_lease(&k, &a, short()).await?;
    store.get_lease(&probe, &a, short()).await?;
    acquire_when_expired(factory, &*store, &probe, &b, long()).await?;
    let other = factory.open(&app).await?;
    let again = other.get_lease(&k, &a, long()).await?;
    ensure!(
        again.token == first.token && again.owner.as_ref() == Some(&a),
        TokenBump,
        "re-taking its own expired lease changed token {} -> {} (owner {:?})",
        first.token,
        again.token,
        again.owner
    );
    ensure!(
        again.owner_switches_since_checkpoint == first.owner_switches_since_checkpoint,
        TokenBump,
        "re-taking its own lease counted an owner switch: {} -> {}",
        first.owner_switches_since_checkpoint,
        again.owner_switches_since_checkpoint
    );
    Ok(())
}

/// A worker re-taking its own live lease (operation 3, `get_lease` by the holder) gets the new
/// duration from now, shorter or longer than what was left, with the token kept: the returned
/// and the stored deadline agree, and another worker is refused for at most the new duration.
/// With a manual clock the deadline is exactly now + the new duration.
pub async fn retake_own_live_lease_moves_deadline(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "retake-live").await?;
    let (a, b) = (worker("a"), worker("b"));
    let k = key("s", "retaken-live");
    let first = store.get_lease(&k, &a, long()).await?;
    let shorter = LeaseDuration::new(Duration::from_secs(30))?;
    let started = Instant::now();
    let again = store.get_lease(&k, &a, shorter).await?;
    let stored = fetch(&*store, &k).await?;
    ensure!(
        again.token == first.token && stored.deadline == again.deadline,
        Expiry,
        "re-taking its own live lease: token {} -> {}, returned deadline {:?}, stored {:?}",
        first.token,
        again.token,
        again.deadline,
        stored.deadline
    );
    if let Some(clock) = factory.manual_clock() {
        ensure!(
            again.deadline == Some(clock.now() + shorter.get()),
            Expiry,
            "re-taking its own live lease for {:?} at {:?} gave deadline {:?} (was {:?})",
            shorter.get(),
            clock.now(),
            again.deadline,
            first.deadline
        );
    }
    let skew = match store.capabilities().clock {
        ClockSource::Client { skew_allowance } => skew_allowance,
        ClockSource::Server | ClockSource::Host => Duration::ZERO,
        ClockSource::Observed => OBSERVED_LATENCY_ALLOWANCE,
    };
    let e = expect_err(
        Clause::Expiry,
        store.get_lease(&k, &b, long()).await,
        ErrorKind::LeaseHeld,
        "get_lease by another worker right after the holder re-took its lease",
    )?;
    if let Error::LeaseHeld { remaining, .. } = e {
        let took = started.elapsed();
        ensure!(
            remaining <= shorter.get() + skew
                && remaining + took + ROUND_TRIP_TOLERANCE >= shorter.get(),
            Expiry,
            "the holder re-took its lease for {:?} (after {:?} of a {:?} grant), yet {remaining:?} \
             is left",
            shorter.get(),
            took,
            long().get()
        );
    }
    Ok(())
}

//! Scenarios of mutual exclusion, renewal and fencing: one holder per lease, renewals by the
//! holder only, and no write under a token that lost the lease (operations 3, 4 and 10).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::sync::Barrier;

use super::scenarios::*;
use super::{Clause, Failure, Outcome, StoreFactory, random_app};
use crate::ensure;
use crate::error::{Error, ErrorKind};
use crate::store::Store;
use crate::types::{FencingToken, LeaseKey, Position, WorkerId};

// ---------------------------------------------------------------------------------------------
// Mutual exclusion

/// Mutual exclusion: 16 tasks on 4 handles race for one absent lease; exactly one wins, the
/// others see LeaseHeld naming the winner, and the token is 1.
pub async fn mutual_exclusion_one_winner(factory: &dyn StoreFactory) -> Outcome {
    let app = random_app("race1");
    let mut handles = Vec::new();
    for _ in 0..4 {
        handles.push(factory.open(&app).await?);
    }
    let k = key("s", "contended");
    let barrier = Arc::new(Barrier::new(16));
    let tasks = (0..16).map(|i| {
        let store = handles[i % 4].clone();
        let barrier = barrier.clone();
        let k = k.clone();
        async move {
            let me = worker(&format!("racer-{i:02}"));
            barrier.wait().await;
            (me.clone(), store.get_lease(&k, &me, long()).await)
        }
    });
    let results = join_all(tasks.map(tokio::spawn)).await;
    let mut winners = Vec::new();
    let mut holders = Vec::new();
    for r in results {
        let (me, r) =
            r.map_err(|e| Failure::new(Clause::MutualExclusion, format!("task panicked: {e}")))?;
        match r {
            Ok(lease) => winners.push((me, lease)),
            Err(Error::LeaseHeld { holder, .. }) => holders.push(holder),
            Err(e) => {
                return Err(Failure::new(
                    Clause::MutualExclusion,
                    format!("racer {me} got {e}"),
                ));
            }
        }
    }
    ensure!(
        winners.len() == 1,
        MutualExclusion,
        "{} winners: {:?}",
        winners.len(),
        winners.iter().map(|w| &w.0).collect::<Vec<_>>()
    );
    let (winner, lease) = &winners[0];
    ensure!(
        lease.token == FencingToken(1),
        MutualExclusion,
        "winner token {} not 1",
        lease.token
    );
    ensure!(
        holders.iter().all(|h| h == winner),
        MutualExclusion,
        "a loser was told a different holder: {holders:?} vs {winner}"
    );
    let stored = fetch(&*handles[0], &k).await?;
    ensure!(
        stored.owner.as_ref() == Some(winner) && stored.token == FencingToken(1),
        MutualExclusion,
        "stored {stored:?}"
    );
    Ok(())
}

/// Mutual exclusion and fencing, exact count: 16 tasks × 50 rounds of acquire, read the
/// position, checkpoint position + 1, renew, release. Any two overlapping holders lose an
/// increment, so the final position must be exactly 800 and the token exactly 800.
pub async fn mutual_exclusion_exact_count(factory: &dyn StoreFactory) -> Outcome {
    const TASKS: usize = 16;
    const ROUNDS: u64 = 50;
    let app = random_app("race2");
    let mut handles = Vec::new();
    for _ in 0..4 {
        handles.push(factory.open(&app).await?);
    }
    let k = key("s", "counter");
    handles[0]
        .create_lease_if_absent(&k, &[], Some(&seq("0")))
        .await?;
    // Set by the first task that fails, so the others stop instead of waiting for a lease the
    // failed task still holds.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = (0..TASKS).map(|i| {
        let store = handles[i % 4].clone();
        let k = k.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let me = worker(&format!("counter-{i:02}"));
            let result = exact_count_task(&*store, &k, &me, i as u64, ROUNDS, &stop).await;
            if result.is_err() {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            result
        })
    });
    for r in join_all(tasks).await {
        r.map_err(|e| Failure::new(Clause::MutualExclusion, format!("task panicked: {e}")))??;
    }
    let total = TASKS as u64 * ROUNDS;
    let lease = fetch(&*handles[0], &k).await?;
    ensure!(
        lease.checkpoint == Some(seq(&total.to_string())),
        MutualExclusion,
        "final position {:?}, expected {total}",
        lease.checkpoint
    );
    ensure!(
        lease.token == FencingToken(total),
        MutualExclusion,
        "final token {}, expected {total} (one per grant)",
        lease.token
    );
    ensure!(
        lease.owner.is_none(),
        MutualExclusion,
        "lease still owned by {:?}",
        lease.owner
    );
    Ok(())
}

/// One contender of [`mutual_exclusion_exact_count`]: `rounds` times acquire, read, checkpoint
/// the next value, renew and release.
async fn exact_count_task(
    store: &dyn Store,
    k: &LeaseKey,
    me: &WorkerId,
    i: u64,
    rounds: u64,
    stop: &std::sync::atomic::AtomicBool,
) -> Outcome {
    let mut done = 0;
    let started = Instant::now();
    while done < rounds {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(240) {
            return Err(Failure::new(
                Clause::MutualExclusion,
                format!("{me} made only {done} rounds in 240 s"),
            ));
        }
        let lease = match store.get_lease(k, me, long()).await {
            Ok(lease) => lease,
            Err(Error::LeaseHeld { .. }) => {
                tokio::time::sleep(Duration::from_micros(200 + (i * 37) % 500)).await;
                continue;
            }
            Err(e) => {
                return Err(Failure::new(
                    Clause::MutualExclusion,
                    format!("{me} get_lease: {e}"),
                ));
            }
        };
        let current = match store.fetch_checkpoint(k).await?.and_then(|l| l.checkpoint) {
            Some(Position::Sequence { sequence, .. }) => {
                sequence.as_str().parse::<u64>().unwrap_or(0)
            }
            other => {
                return Err(Failure::new(
                    Clause::MutualExclusion,
                    format!("{me} read position {other:?}"),
                ));
            }
        };
        let next = seq(&(current + 1).to_string());
        store
            .checkpoint_sequence(k, me, lease.token, &next)
            .await
            .map_err(|e| {
                Failure::new(
                    Clause::MutualExclusion,
                    format!("{me} checkpoint {next} with token {}: {e}", lease.token),
                )
            })?;
        store
            .renew(k, me, lease.token, long())
            .await
            .map_err(|e| Failure::new(Clause::MutualExclusion, format!("{me} renew: {e}")))?;
        store
            .remove_lease_owner(k, me, lease.token)
            .await
            .map_err(|e| Failure::new(Clause::MutualExclusion, format!("{me} release: {e}")))?;
        done += 1;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Renewal, expiry, fencing

/// Operation 4: renew keeps the token; a wrong token, a wrong worker or an absent record is
/// LeaseLost and writes nothing.
pub async fn renew_rules(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "renew").await?;
    let k = key("s", "shard-r");
    let (a, b) = (worker("a"), worker("b"));
    let lease = store.get_lease(&k, &a, long()).await?;
    let renewed = store.renew(&k, &a, lease.token, long()).await?;
    ensure!(
        renewed.token == lease.token,
        Renew,
        "renew changed the token {} -> {}",
        lease.token,
        renewed.token
    );
    ensure!(
        renewed.owner.as_ref() == Some(&a),
        Renew,
        "renew changed the owner"
    );
    ensure!(
        renewed.deadline.is_some(),
        Renew,
        "renewed lease has no deadline"
    );
    let before = fetch(&*store, &k).await?;
    expect_fenced(
        &*store,
        &k,
        &before,
        store.renew(&k, &a, lease.token.next(), long()).await,
        "renew with a wrong token",
    )
    .await?;
    expect_fenced(
        &*store,
        &k,
        &before,
        store.renew(&k, &b, lease.token, long()).await,
        "renew by another worker",
    )
    .await?;
    expect_err(
        Clause::Renew,
        store
            .renew(&key("s", "absent"), &a, FencingToken(1), long())
            .await,
        ErrorKind::LeaseLost,
        "renew of an absent lease",
    )?;
    ensure!(
        store.fetch_checkpoint(&key("s", "absent")).await?.is_none(),
        Renew,
        "renew created a record"
    );
    Ok(())
}

/// Operation 4: a holder may renew past its deadline when nobody took the lease meanwhile, and
/// the renewal makes it held again.
pub async fn renew_past_deadline_when_not_taken(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "late").await?;
    let (a, b) = (worker("a"), worker("b"));
    let (kept, probe) = (key("s", "kept"), key("s", "probe"));
    let lease = store.get_lease(&kept, &a, short()).await?;
    store.get_lease(&probe, &a, short()).await?;
    // `probe` was granted after `kept` with the same duration: once B can take `probe`, `kept`
    // has expired by the store's clock too.
    acquire_when_expired(factory, &*store, &probe, &b, long()).await?;
    let renewed = store.renew(&kept, &a, lease.token, long()).await?;
    ensure!(
        renewed.token == lease.token,
        Renew,
        "late renew changed the token"
    );
    expect_err(
        Clause::Renew,
        store.get_lease(&kept, &b, long()).await,
        ErrorKind::LeaseHeld,
        "get_lease after a late renewal",
    )?;
    Ok(())
}

/// Fencing after expiry: once another worker took an expired lease, every write with the old
/// token fails and leaves the record unchanged.
pub async fn fencing_after_expiry_takeover(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "expiry").await?;
    let k = key("s", "shard-e");
    let (a, b) = (worker("a"), worker("b"));
    let old = store.get_lease(&k, &a, short()).await?;
    store
        .checkpoint_sequence(&k, &a, old.token, &seq("100"))
        .await?;
    let new = acquire_when_expired(factory, &*store, &k, &b, long()).await?;
    ensure!(
        new.token > old.token,
        TokenBump,
        "take-over did not bump the token: {} -> {}",
        old.token,
        new.token
    );
    ensure!(
        new.owner_switches_since_checkpoint == 1,
        Fencing,
        "owner switches {} after take-over",
        new.owner_switches_since_checkpoint
    );
    let before = fetch(&*store, &k).await?;
    expect_fenced(
        &*store,
        &k,
        &before,
        store
            .checkpoint_sequence(&k, &a, old.token, &seq("200"))
            .await,
        "stale checkpoint",
    )
    .await?;
    expect_fenced(
        &*store,
        &k,
        &before,
        store
            .prepare_checkpoint(&k, &a, old.token, &seq("200"))
            .await,
        "stale prepare",
    )
    .await?;
    expect_fenced(
        &*store,
        &k,
        &before,
        store.renew(&k, &a, old.token, long()).await,
        "stale renew",
    )
    .await?;
    expect_fenced(
        &*store,
        &k,
        &before,
        store.remove_lease_owner(&k, &a, old.token).await,
        "stale release",
    )
    .await?;
    let outcome = store
        .renew_many(&a, &[(k.clone(), old.token)], long())
        .await?;
    ensure!(
        outcome.renewed.is_empty() && outcome.lost == vec![k.clone()],
        Fencing,
        "stale renew_many: {outcome:?}"
    );
    ensure!(
        fetch(&*store, &k).await? == before,
        Fencing,
        "stale renew_many changed the record"
    );
    ensure!(
        before.checkpoint == Some(seq("100")),
        Fencing,
        "the old holder's last good checkpoint was lost"
    );
    Ok(())
}

/// Fencing after a steal: the thief gets token + 1; the previous holder's writes all fail.
pub async fn fencing_after_steal(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "steal").await?;
    let k = key("s", "shard-s");
    let (a, b) = (worker("a"), worker("b"));
    let old = store.get_lease(&k, &a, long()).await?;
    let stolen = store.steal(&k, &b, &a, old.token, long()).await?;
    ensure!(
        stolen.owner.as_ref() == Some(&b),
        Fencing,
        "thief is not the owner: {stolen:?}"
    );
    ensure!(
        stolen.token == old.token.next(),
        TokenBump,
        "steal token {} is not {}",
        stolen.token,
        old.token.next()
    );
    let before = fetch(&*store, &k).await?;
    expect_fenced(
        &*store,
        &k,
        &before,
        store
            .checkpoint_sequence(&k, &a, old.token, &seq("5"))
            .await,
        "checkpoint after steal",
    )
    .await?;
    expect_fenced(
        &*store,
        &k,
        &before,
        store.prepare_checkpoint(&k, &a, old.token, &seq("5")).await,
        "prepare after steal",
    )
    .await?;
    expect_fenced(
        &*store,
        &k,
        &before,
        store.renew(&k, &a, old.token, long()).await,
        "renew after steal",
    )
    .await?;
    expect_fenced(
        &*store,
        &k,
        &before,
        store.remove_lease_owner(&k, &a, old.token).await,
        "release after steal",
    )
    .await?;
    expect_err(
        Clause::Fencing,
        store.get_lease(&k, &a, long()).await,
        ErrorKind::LeaseHeld,
        "get_lease by the robbed worker",
    )?;
    store
        .checkpoint_sequence(&k, &b, stolen.token, &seq("5"))
        .await?;
    Ok(())
}

/// Fencing by token, not owner name: an administrator releases the lease out of band and the
/// same worker id acquires again (token + 1). A paused incarnation of that worker still carrying
/// the old token must be rejected, as gazette's tests bump the revision under a live session.
pub async fn fencing_after_out_of_band_bump(factory: &dyn StoreFactory) -> Outcome {
    let app = random_app("oob");
    let store = factory.open(&app).await?;
    let admin = factory.open(&app).await?;
    let k = key("s", "shard-o");
    let a = worker("a");
    let zombie = store.get_lease(&k, &a, long()).await?;
    store
        .checkpoint_sequence(&k, &a, zombie.token, &seq("10"))
        .await?;
    admin.evict_lease(&k).await?;
    let fresh = store.get_lease(&k, &a, long()).await?;
    ensure!(
        fresh.token == zombie.token.next(),
        TokenBump,
        "re-grant after a release did not bump the token"
    );
    let before = fetch(&*store, &k).await?;
    expect_fenced(
        &*store,
        &k,
        &before,
        store
            .checkpoint_sequence(&k, &a, zombie.token, &seq("11"))
            .await,
        "zombie checkpoint",
    )
    .await?;
    expect_fenced(
        &*store,
        &k,
        &before,
        store.renew(&k, &a, zombie.token, long()).await,
        "zombie renew",
    )
    .await?;
    expect_fenced(
        &*store,
        &k,
        &before,
        store.remove_lease_owner(&k, &a, zombie.token).await,
        "zombie release",
    )
    .await?;
    store
        .checkpoint_sequence(&k, &a, fresh.token, &seq("11"))
        .await?;
    Ok(())
}

/// Operation 10: a steal succeeds only against exactly the owner and token the balancer saw;
/// repeating a completed steal is not an error; a worker cannot steal from itself.
pub async fn steal_rules(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "steal2").await?;
    let k = key("s", "shard-t");
    let (a, b, c) = (worker("a"), worker("b"), worker("c"));
    let held = store.get_lease(&k, &a, long()).await?;
    let before = fetch(&*store, &k).await?;
    expect_err(
        Clause::Steal,
        store.steal(&k, &b, &c, held.token, long()).await,
        ErrorKind::LeaseChanged,
        "steal with the wrong owner",
    )?;
    expect_err(
        Clause::Steal,
        store.steal(&k, &b, &a, held.token.next(), long()).await,
        ErrorKind::LeaseChanged,
        "steal with the wrong token",
    )?;
    let e = expect_err(
        Clause::Steal,
        store.steal(&k, &a, &a, held.token, long()).await,
        ErrorKind::InvalidInput,
        "steal from oneself",
    )?;
    ensure!(
        e.field() == Some("thief"),
        Steal,
        "steal from oneself names {:?}",
        e.field()
    );
    ensure!(
        fetch(&*store, &k).await? == before,
        Steal,
        "a refused steal changed the record"
    );
    let stolen = store.steal(&k, &b, &a, held.token, long()).await?;
    let repeat = store.steal(&k, &b, &a, held.token, long()).await?;
    ensure!(
        repeat.token == stolen.token && repeat.owner == stolen.owner,
        Steal,
        "repeated steal gave {repeat:?}"
    );
    expect_err(
        Clause::Steal,
        store.steal(&k, &c, &a, held.token, long()).await,
        ErrorKind::LeaseChanged,
        "steal on a stale view",
    )?;
    store.remove_lease_owner(&k, &b, stolen.token).await?;
    expect_err(
        Clause::Steal,
        store.steal(&k, &c, &b, stolen.token, long()).await,
        ErrorKind::LeaseChanged,
        "steal of a free lease",
    )?;
    expect_err(
        Clause::Steal,
        store
            .steal(&key("s", "absent"), &c, &b, FencingToken(1), long())
            .await,
        ErrorKind::LeaseChanged,
        "steal of an absent lease",
    )?;
    ensure!(
        store.fetch_checkpoint(&key("s", "absent")).await?.is_none(),
        Steal,
        "steal created a record"
    );
    Ok(())
}

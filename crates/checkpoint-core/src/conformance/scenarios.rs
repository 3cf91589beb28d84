//! The scenarios, one public async function per invariant or operation of the contract ([`crate::contract`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::sync::Barrier;

use super::{Clause, Failure, Outcome, Scenario, StoreFactory, random_app};
use crate::ensure;
use crate::error::{Error, ErrorKind, Result};
use crate::store::Store;
use crate::types::{
    AppName, FencingToken, HeartbeatTtl, Lease, LeaseDuration, LeaseKey, Position, ShardId,
    StreamName, WorkerId,
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

// ---------------------------------------------------------------------------------------------
// Positions

/// Monotonic positions: numeric (not text) order, leading zeros, sub-sequence order, equal
/// repeats accepted, regressions refused with nothing written, owner-switch count reset.
pub async fn monotonic_positions(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "mono").await?;
    let k = key("s", "shard-m");
    let a = worker("a");
    store
        .create_lease_if_absent(&k, &[], Some(&Position::Latest))
        .await?;
    let t = store.get_lease(&k, &a, long()).await?.token;
    let l = store
        .checkpoint_sequence(&k, &a, t, &Position::TrimHorizon)
        .await?;
    ensure!(
        l.checkpoint == Some(Position::TrimHorizon),
        Monotonic,
        "initial position not replaced"
    );
    let l = store.checkpoint_sequence(&k, &a, t, &seq("9")).await?;
    ensure!(
        l.owner_switches_since_checkpoint == 0,
        Monotonic,
        "checkpoint did not reset owner switches"
    );
    store.checkpoint_sequence(&k, &a, t, &seq("10")).await?;
    let before = fetch(&*store, &k).await?;
    let regressions = [
        (seq("9"), "9 after 10 (compared as text?)"),
        (Position::TrimHorizon, "TRIM_HORIZON after a sequence"),
        (Position::AtTimestamp(1), "AT_TIMESTAMP after a sequence"),
    ];
    for (p, what) in regressions {
        let e = expect_err(
            Clause::Monotonic,
            store.checkpoint_sequence(&k, &a, t, &p).await,
            ErrorKind::CheckpointRegression,
            what,
        )?;
        if let Error::CheckpointRegression {
            stored, attempted, ..
        } = e
        {
            ensure!(
                stored == seq("10") && attempted == p,
                Monotonic,
                "regression error names {stored} / {attempted}"
            );
        }
        ensure!(
            fetch(&*store, &k).await? == before,
            Monotonic,
            "{what} changed the record"
        );
    }
    store.checkpoint_sequence(&k, &a, t, &seq("0010")).await?;
    ensure!(
        fetch(&*store, &k).await?.checkpoint == Some(seq("10")),
        Monotonic,
        "leading zeros changed the value"
    );
    store
        .checkpoint_sequence(&k, &a, t, &Position::sequence_with_sub("10", 5)?)
        .await?;
    let before = fetch(&*store, &k).await?;
    expect_err(
        Clause::Monotonic,
        store
            .checkpoint_sequence(&k, &a, t, &Position::sequence_with_sub("10", 4)?)
            .await,
        ErrorKind::CheckpointRegression,
        "lower sub-sequence",
    )?;
    expect_err(
        Clause::Monotonic,
        store.checkpoint_sequence(&k, &a, t, &seq("10")).await,
        ErrorKind::CheckpointRegression,
        "sub-sequence 0 after 5",
    )?;
    ensure!(
        fetch(&*store, &k).await? == before,
        Monotonic,
        "a refused sub-sequence changed the record"
    );
    store
        .checkpoint_sequence(&k, &a, t, &Position::sequence_with_sub("11", 0)?)
        .await?;
    store
        .checkpoint_sequence(&k, &a, t, &Position::sequence_with_sub("11", u64::MAX)?)
        .await?;
    ensure!(
        fetch(&*store, &k).await?.checkpoint == Some(Position::sequence_with_sub("11", u64::MAX)?),
        Monotonic,
        "u64::MAX sub-sequence did not round-trip"
    );
    let big = "9".repeat(127);
    let bigger = format!("1{}", "0".repeat(127));
    store.checkpoint_sequence(&k, &a, t, &seq(&big)).await?;
    store.checkpoint_sequence(&k, &a, t, &seq(&bigger)).await?;
    expect_err(
        Clause::Monotonic,
        store.checkpoint_sequence(&k, &a, t, &seq(&big)).await,
        ErrorKind::CheckpointRegression,
        "127 nines after 10^127",
    )?;
    let max = "9".repeat(128);
    store.checkpoint_sequence(&k, &a, t, &seq(&max)).await?;
    ensure!(
        fetch(&*store, &k).await?.checkpoint == Some(seq(&max)),
        Monotonic,
        "128-digit sequence did not round-trip"
    );
    Ok(())
}

/// SHARD_END is terminal: repeating it is accepted, anything else after it is a regression,
/// for checkpoints and prepared checkpoints alike.
pub async fn shard_end_is_terminal(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "end").await?;
    let k = key("s", "shard-x");
    let a = worker("a");
    let t = store.get_lease(&k, &a, long()).await?.token;
    store.checkpoint_sequence(&k, &a, t, &seq("42")).await?;
    store
        .checkpoint_sequence(&k, &a, t, &Position::ShardEnd)
        .await?;
    store
        .checkpoint_sequence(&k, &a, t, &Position::ShardEnd)
        .await?;
    let before = fetch(&*store, &k).await?;
    let huge = seq(&"9".repeat(128));
    expect_err(
        Clause::ShardEnd,
        store.checkpoint_sequence(&k, &a, t, &huge).await,
        ErrorKind::CheckpointRegression,
        "sequence after SHARD_END",
    )?;
    expect_err(
        Clause::ShardEnd,
        store
            .checkpoint_sequence(&k, &a, t, &Position::Latest)
            .await,
        ErrorKind::CheckpointRegression,
        "LATEST after SHARD_END",
    )?;
    expect_err(
        Clause::ShardEnd,
        store.prepare_checkpoint(&k, &a, t, &huge).await,
        ErrorKind::CheckpointRegression,
        "prepare after SHARD_END",
    )?;
    ensure!(
        fetch(&*store, &k).await? == before,
        ShardEnd,
        "a refused write after SHARD_END changed the record"
    );
    Ok(())
}

/// Operation 14: a prepared position is fenced and checked like a checkpoint, visible to a new
/// owner on fetch, and cleared by the next checkpoint.
pub async fn prepare_checkpoint_two_phase(factory: &dyn StoreFactory) -> Outcome {
    let app = random_app("prep");
    let store = factory.open(&app).await?;
    let other = factory.open(&app).await?;
    let k = key("s", "shard-p");
    let (a, b) = (worker("a"), worker("b"));
    let t = store.get_lease(&k, &a, long()).await?.token;
    store.checkpoint_sequence(&k, &a, t, &seq("10")).await?;
    expect_err(
        Clause::Prepare,
        store.prepare_checkpoint(&k, &a, t, &seq("9")).await,
        ErrorKind::CheckpointRegression,
        "prepare below the checkpoint",
    )?;
    let l = store.prepare_checkpoint(&k, &a, t, &seq("20")).await?;
    ensure!(
        l.pending_checkpoint == Some(seq("20")) && l.checkpoint == Some(seq("10")),
        Prepare,
        "prepare stored {l:?}"
    );
    let stolen = other.steal(&k, &b, &a, t, long()).await?;
    let seen = fetch(&*other, &k).await?;
    ensure!(
        seen.pending_checkpoint == Some(seq("20")),
        Prepare,
        "new owner does not see the pending position: {seen:?}"
    );
    let before = seen.clone();
    expect_fenced(
        &*other,
        &k,
        &before,
        store.prepare_checkpoint(&k, &a, t, &seq("30")).await,
        "stale prepare",
    )
    .await?;
    let l = other
        .checkpoint_sequence(&k, &b, stolen.token, &seq("20"))
        .await?;
    ensure!(
        l.pending_checkpoint.is_none(),
        Prepare,
        "checkpoint did not clear the pending position"
    );
    ensure!(
        fetch(&*store, &k).await?.pending_checkpoint.is_none(),
        Prepare,
        "pending position came back"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Release, delete, list, claim, renew-many, reset

/// Operation 7: release clears owner and deadline, keeps token and checkpoint, is repeatable;
/// the next grant bumps the token; the admin form releases whoever holds it.
pub async fn release_keeps_checkpoint_and_token(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "release").await?;
    let k = key("s", "shard-l");
    let (a, b) = (worker("a"), worker("b"));
    let t = store.get_lease(&k, &a, long()).await?.token;
    store.checkpoint_sequence(&k, &a, t, &seq("7")).await?;
    let released = store.remove_lease_owner(&k, &a, t).await?;
    ensure!(
        released.owner.is_none() && released.deadline.is_none(),
        Release,
        "release left {released:?}"
    );
    ensure!(
        released.token == t && released.checkpoint == Some(seq("7")),
        Release,
        "release lost token or checkpoint: {released:?}"
    );
    let again = store.remove_lease_owner(&k, &a, t).await?;
    ensure!(
        again == fetch(&*store, &k).await?,
        Release,
        "repeated release returned a different record"
    );
    let taken = store.get_lease(&k, &b, long()).await?;
    ensure!(
        taken.token == t.next(),
        TokenBump,
        "grant after release: token {} not {}",
        taken.token,
        t.next()
    );
    let before = fetch(&*store, &k).await?;
    expect_fenced(
        &*store,
        &k,
        &before,
        store.remove_lease_owner(&k, &a, t).await,
        "release by the previous holder",
    )
    .await?;
    let forced = store.evict_lease(&k).await?;
    ensure!(
        forced.owner.is_none() && forced.token == taken.token,
        Release,
        "force release left {forced:?}"
    );
    expect_err(
        Clause::Release,
        store.evict_lease(&key("s", "absent")).await,
        ErrorKind::NotFound,
        "force release of an absent lease",
    )?;
    Ok(())
}

/// Operation 8: delete removes the record; deleting an absent one is fine; a holder's writes
/// after the delete fail and never recreate the record.
pub async fn remove_lease_info_rules(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "delete").await?;
    let k = key("s", "shard-d");
    let a = worker("a");
    let t = store.get_lease(&k, &a, long()).await?.token;
    store.remove_lease_info(&k).await?;
    ensure!(
        store.fetch_checkpoint(&k).await?.is_none(),
        Delete,
        "deleted lease still fetched"
    );
    store.remove_lease_info(&k).await?;
    expect_err(
        Clause::Delete,
        store.checkpoint_sequence(&k, &a, t, &seq("1")).await,
        ErrorKind::LeaseLost,
        "checkpoint after delete",
    )?;
    expect_err(
        Clause::Delete,
        store.prepare_checkpoint(&k, &a, t, &seq("1")).await,
        ErrorKind::LeaseLost,
        "prepare after delete",
    )?;
    expect_err(
        Clause::Delete,
        store.renew(&k, &a, t, long()).await,
        ErrorKind::LeaseLost,
        "renew after delete",
    )?;
    expect_err(
        Clause::Delete,
        store.remove_lease_owner(&k, &a, t).await,
        ErrorKind::LeaseLost,
        "release after delete",
    )?;
    expect_err(
        Clause::Delete,
        store.claim(&k, &a).await,
        ErrorKind::NotFound,
        "claim after delete",
    )?;
    ensure!(
        store.fetch_checkpoint(&k).await?.is_none(),
        Delete,
        "a write after delete recreated the record"
    );
    ensure!(
        store.create_lease_if_absent(&k, &[], None).await?,
        Delete,
        "create after delete reported existing"
    );
    Ok(())
}

/// Operation 9: lists every record of the app, or of one stream, sorted, each exactly once,
/// across pages: with a declared page size ([`StoreFactory::list_page_size`]) the first stream
/// has two full pages and three rows more, so both page boundaries fall inside it; otherwise
/// 120 rows.
pub async fn list_leases_paginated(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "list").await?;
    let rows = factory.list_page_size().map_or(120, |page| 2 * page + 3);
    let (s1, s2) = (StreamName::new("alpha")?, StreamName::new("beta")?);
    let mut expected1 = Vec::new();
    for i in 0..rows {
        let k = LeaseKey::new(s1.clone(), ShardId::new(format!("shard-{i:05}"))?);
        store.create_lease_if_absent(&k, &[], None).await?;
        expected1.push(k);
    }
    let mut expected2 = Vec::new();
    for i in (0..5).rev() {
        let k = LeaseKey::new(s2.clone(), ShardId::new(format!("shard-{i:05}"))?);
        store.create_lease_if_absent(&k, &[], None).await?;
        expected2.push(k);
    }
    expected2.sort();
    let keys = |ls: Vec<Lease>| ls.into_iter().map(|l| l.key).collect::<Vec<_>>();
    let got1 = keys(store.list_leases(Some(&s1)).await?);
    ensure!(
        got1 == expected1,
        List,
        "list(alpha): {}",
        list_difference(&got1, &expected1)
    );
    let got2 = keys(store.list_leases(Some(&s2)).await?);
    ensure!(got2 == expected2, List, "list(beta) returned {got2:?}");
    let all = keys(store.list_leases(None).await?);
    let mut expected = expected1;
    expected.extend(expected2);
    ensure!(
        all == expected,
        List,
        "list(all): {}",
        list_difference(&all, &expected)
    );
    ensure!(
        store
            .list_leases(Some(&StreamName::new("gamma")?))
            .await?
            .is_empty(),
        List,
        "list of an unknown stream is not empty"
    );
    Ok(())
}

/// Describes how a listing differs from the expected keys: counts, the first row out of
/// place, and rows missing or repeated.
fn list_difference(got: &[LeaseKey], expected: &[LeaseKey]) -> String {
    let first = got
        .iter()
        .zip(expected)
        .position(|(g, e)| g != e)
        .unwrap_or(got.len().min(expected.len()));
    let missing: Vec<&LeaseKey> = expected.iter().filter(|k| !got.contains(k)).collect();
    let mut repeated: Vec<&LeaseKey> = got
        .iter()
        .enumerate()
        .filter(|(i, k)| got[..*i].contains(k))
        .map(|(_, k)| k)
        .collect();
    repeated.dedup();
    format!(
        "{} rows, expected {}; first difference at row {first}; missing {missing:?}; repeated {repeated:?}",
        got.len(),
        expected.len()
    )
}

/// Operation 11: a claim is visible to the holder on renew; the holder checkpoints and releases;
/// the claimant acquires with token + 1 and the claim is cleared.
pub async fn claim_hand_off(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "claim").await?;
    let k = key("s", "shard-c");
    let (a, b) = (worker("a"), worker("b"));
    let t = store.get_lease(&k, &a, long()).await?.token;
    let own = store.claim(&k, &a).await?;
    ensure!(
        own.claim.is_none(),
        Claim,
        "the holder's own claim was recorded"
    );
    let claimed = store.claim(&k, &b).await?;
    ensure!(
        claimed.claim.as_ref() == Some(&b) && claimed.owner.as_ref() == Some(&a),
        Claim,
        "claim stored {claimed:?}"
    );
    let renewed = store.renew(&k, &a, t, long()).await?;
    ensure!(
        renewed.claim.as_ref() == Some(&b),
        Claim,
        "holder does not see the claim on renew"
    );
    let many = store.renew_many(&a, &[(k.clone(), t)], long()).await?;
    ensure!(
        many.renewed.len() == 1 && many.renewed[0].claim.as_ref() == Some(&b),
        Claim,
        "renew_many hides the claim: {many:?}"
    );
    store.checkpoint_sequence(&k, &a, t, &seq("77")).await?;
    store.remove_lease_owner(&k, &a, t).await?;
    let taken = store.get_lease(&k, &b, long()).await?;
    ensure!(
        taken.token == t.next() && taken.claim.is_none(),
        Claim,
        "claimant's grant: {taken:?}"
    );
    ensure!(
        taken.checkpoint == Some(seq("77")),
        Claim,
        "hand-off lost the checkpoint"
    );
    expect_err(
        Clause::Claim,
        store.claim(&key("s", "absent"), &b).await,
        ErrorKind::NotFound,
        "claim of an absent lease",
    )?;
    Ok(())
}

/// A claim is honoured (contract, "Claims"): after the holder releases a claimed lease, only the
/// claimant may take it until the deadline it was released with; then anyone may.
pub async fn claim_is_honoured(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "honour").await?;
    let (a, b, c) = (worker("a"), worker("b"), worker("c"));
    let k = key("s", "shard-h");
    let t = store.get_lease(&k, &a, long()).await?.token;
    store.claim(&k, &b).await?;
    let released = store.remove_lease_owner(&k, &a, t).await?;
    ensure!(
        released.owner.is_none() && released.claim.as_ref() == Some(&b),
        Claim,
        "release of a claimed lease: {released:?}"
    );
    let refused = expect_err(
        Clause::Claim,
        store.get_lease(&k, &c, long()).await,
        ErrorKind::LeaseHeld,
        "a third worker taking a lease reserved for its claimant",
    )?;
    ensure!(
        matches!(&refused, Error::LeaseHeld { holder, .. } if holder == &b),
        Claim,
        "the refusal names {refused:?}, not the claimant"
    );
    let again = store.remove_lease_owner(&k, &a, t).await?;
    ensure!(
        again.owner.is_none(),
        Claim,
        "repeating the release changed the record: {again:?}"
    );
    let taken = store.get_lease(&k, &b, long()).await?;
    ensure!(
        taken.owner.as_ref() == Some(&b) && taken.token == t.next() && taken.claim.is_none(),
        Claim,
        "claimant's grant: {taken:?}"
    );

    // The reservation lasts only until the released deadline: then anyone may take the lease.
    let k2 = key("s", "shard-h2");
    let t2 = store.get_lease(&k2, &a, short()).await?.token;
    store.claim(&k2, &b).await?;
    store.remove_lease_owner(&k2, &a, t2).await?;
    let late = acquire_when_expired(factory, &*store, &k2, &c, long()).await?;
    ensure!(
        late.owner.as_ref() == Some(&c) && late.token == t2.next() && late.claim.is_none(),
        Claim,
        "grant after the reservation lapsed: {late:?}"
    );

    // An unclaimed release reserves nothing.
    let k3 = key("s", "shard-h3");
    let t3 = store.get_lease(&k3, &a, long()).await?.token;
    store.remove_lease_owner(&k3, &a, t3).await?;
    let free = store.get_lease(&k3, &c, long()).await?;
    ensure!(
        free.owner.as_ref() == Some(&c),
        Claim,
        "unclaimed release: {free:?}"
    );
    Ok(())
}

/// Operation 9 with the store's clock: a lease granted for a long duration has about that much
/// time left by the listing's `store_now`, whatever the caller's clock says; a released lease
/// has none.
pub async fn listing_carries_store_clock(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "timed").await?;
    let a = worker("a");
    let (held, free) = (key("s", "shard-l1"), key("s", "shard-l2"));
    store.get_lease(&held, &a, long()).await?;
    let t = store.get_lease(&free, &a, long()).await?.token;
    store.remove_lease_owner(&free, &a, t).await?;
    let listing = store.list_leases_timed(Some(&held.stream)).await?;
    let plain = store.list_leases(Some(&held.stream)).await?;
    ensure!(
        listing.leases.len() == 2 && plain.len() == 2,
        List,
        "listing {listing:?} vs {plain:?}"
    );
    let by_key = |k: &LeaseKey| listing.leases.iter().find(|l| &l.key == k);
    let h = by_key(&held).ok_or_else(|| Failure::new(Clause::List, "held lease missing"))?;
    let left = listing.remaining(h);
    ensure!(
        listing.is_live(h) && left > long().get() - Duration::from_secs(60) && left <= long().get(),
        List,
        "time left {left:?} of a {:?} lease",
        long().get()
    );
    let f = by_key(&free).ok_or_else(|| Failure::new(Clause::List, "free lease missing"))?;
    ensure!(
        !listing.is_live(f) && listing.remaining(f) == Duration::ZERO,
        List,
        "released lease judged live: {f:?}"
    );
    let none = store
        .list_leases_timed(Some(&StreamName::new("other").expect("valid")))
        .await?;
    ensure!(none.leases.is_empty(), List, "other stream listed {none:?}");
    Ok(())
}

/// Operation 4, batched: renews every lease still held with its token and reports the rest as
/// lost without touching them.
pub async fn renew_many_reports_lost(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "many").await?;
    let (a, b) = (worker("a"), worker("b"));
    let mut batch = Vec::new();
    for i in 0..6 {
        let k = key("s", &format!("shard-{i}"));
        let l = store.get_lease(&k, &a, long()).await?;
        batch.push((k, l.token));
    }
    let stolen = store.steal(&batch[4].0, &b, &a, batch[4].1, long()).await?;
    store.remove_lease_info(&batch[5].0).await?;
    batch.push((key("s", "never-existed"), FencingToken(1)));
    batch.reverse();
    let outcome = store.renew_many(&a, &batch, long()).await?;
    let renewed: Vec<LeaseKey> = outcome.renewed.iter().map(|l| l.key.clone()).collect();
    let expected: Vec<LeaseKey> = (0..4).map(|i| key("s", &format!("shard-{i}"))).collect();
    ensure!(renewed == expected, RenewMany, "renewed {renewed:?}");
    let mut lost_expected = vec![
        key("s", "never-existed"),
        key("s", "shard-4"),
        key("s", "shard-5"),
    ];
    lost_expected.sort();
    ensure!(
        outcome.lost == lost_expected,
        RenewMany,
        "lost {:?}",
        outcome.lost
    );
    ensure!(
        outcome
            .renewed
            .iter()
            .all(|l| l.owner.as_ref() == Some(&a) && l.token == FencingToken(1)),
        RenewMany,
        "renewed records wrong: {:?}",
        outcome.renewed
    );
    let after = fetch(
        &*store,
        &batch
            .iter()
            .find(|(k, _)| k.shard.as_str() == "shard-4")
            .expect("present")
            .0,
    )
    .await?;
    ensure!(
        after.owner.as_ref() == Some(&b) && after.token == stolen.token,
        RenewMany,
        "renew_many touched a stolen lease: {after:?}"
    );
    ensure!(
        store
            .fetch_checkpoint(&key("s", "shard-5"))
            .await?
            .is_none()
            && store
                .fetch_checkpoint(&key("s", "never-existed"))
                .await?
                .is_none(),
        RenewMany,
        "renew_many created records"
    );
    let empty = store.renew_many(&a, &[], long()).await?;
    ensure!(
        empty.renewed.is_empty() && empty.lost.is_empty(),
        RenewMany,
        "empty batch: {empty:?}"
    );
    Ok(())
}

/// Monotonic positions "unless an explicit admin reset": the reset moves a position back or
/// clears it, without touching ownership.
pub async fn admin_reset_checkpoint(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "reset").await?;
    let k = key("s", "shard-z");
    let a = worker("a");
    let t = store.get_lease(&k, &a, long()).await?.token;
    store
        .checkpoint_sequence(&k, &a, t, &Position::ShardEnd)
        .await?;
    let l = store.reset_checkpoint(&k, Some(&seq("5"))).await?;
    ensure!(
        l.checkpoint == Some(seq("5")) && l.owner.as_ref() == Some(&a) && l.token == t,
        Reset,
        "reset gave {l:?}"
    );
    store.checkpoint_sequence(&k, &a, t, &seq("6")).await?;
    let l = store.reset_checkpoint(&k, None).await?;
    ensure!(
        l.checkpoint.is_none(),
        Reset,
        "reset to none left {:?}",
        l.checkpoint
    );
    expect_err(
        Clause::Reset,
        store.reset_checkpoint(&key("s", "absent"), None).await,
        ErrorKind::NotFound,
        "reset of an absent lease",
    )?;
    Ok(())
}

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

//! Shard discovery (leases for the source's shards, with their parents) and lease taking:
//! the fair share per stream, free and expired leases, stealing or claiming from the most
//! loaded worker. Every liveness judgement uses the listing's store-clock instant.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use checkpoint_core::{
    Error, FencingToken, Lease, LeaseDuration, LeaseKey, Listing, Position, PositionRank, Result,
    ShardId, StreamName, WorkerId,
};
use tracing::Instrument;

use crate::config::Balance;
use crate::metrics as m;
use crate::shard::{release, start_shard};
use crate::source::ShardSource;
use crate::worker::Shared;

/// How long after another worker's lease runs out (by the store's clock) this worker tries to
/// take it: a little slack for the time between the listing and the attempt.
const TAKEOVER_MARGIN: Duration = Duration::from_millis(5);

/// Shards whose lease is gone or at `SHARD_END` but proven finished by a child: the parents
/// named by a lease whose checkpoint moved past its initial position. A child starts only
/// after every parent finished, so its progress proves theirs (the KCL deletes a parent lease
/// only once every child has progressed so).
fn proven_finished<'a>(leases: impl Iterator<Item = &'a Lease>) -> BTreeSet<&'a ShardId> {
    leases
        .filter(|l| {
            l.checkpoint
                .as_ref()
                .is_some_and(|c| c.rank() > PositionRank::Initial)
        })
        .flat_map(|l| l.parents.iter())
        .collect()
}

/// Syncs every source; returns whether all succeeded (a failure is logged and the next tick
/// tries again).
pub(crate) async fn sync_shards(shared: &Shared) -> bool {
    let mut ok = true;
    for (stream, source) in &shared.sources {
        if let Err(e) = sync_stream(shared, stream, source.as_ref()).await {
            tracing::warn!(%stream, error = %e, "shard sync failed");
            ok = false;
        }
    }
    ok
}

/// Creates a lease (with its parents) for every shard of the source that has none, except a
/// shard proven finished by a child (its lease was deleted after `SHARD_END`: reading it again
/// would replay it). A child shard starts at `TRIM_HORIZON` so nothing written after the split
/// is skipped. Deletes the lease of a shard that ended (`SHARD_END`) and is no longer listed by
/// the source (trimmed after its retention period).
async fn sync_stream(shared: &Shared, stream: &StreamName, source: &dyn ShardSource) -> Result<()> {
    let shards = shared
        .config
        .backoff
        .retry_named("list_shards", |_| source.list_shards())
        .await?;
    let leases = shared
        .call("list_leases", shared.store.list_leases(Some(stream)))
        .await?;
    let known: BTreeSet<&ShardId> = leases.iter().map(|l| &l.key.shard).collect();
    let finished = proven_finished(leases.iter());
    for shard in shards.iter().filter(|s| !known.contains(&s.id)) {
        let key = LeaseKey::new(stream.clone(), shard.id.clone());
        if finished.contains(&shard.id) {
            tracing::debug!(%key, "no lease for a shard a child proves finished");
            continue;
        }
        let initial = (!shard.parents.is_empty()).then_some(Position::TrimHorizon);
        let created = shared
            .call(
                "create_lease_if_absent",
                shared
                    .store
                    .create_lease_if_absent(&key, &shard.parents, initial.as_ref()),
            )
            .await?;
        if created {
            tracing::info!(%key, parents = ?shard.parents, "lease created for new shard");
        }
    }
    let listed: BTreeSet<ShardId> = shards.into_iter().map(|s| s.id).collect();
    for lease in &leases {
        if !listed.contains(&lease.key.shard) && lease.checkpoint == Some(Position::ShardEnd) {
            shared
                .call(
                    "remove_lease_info",
                    shared.store.remove_lease_info(&lease.key),
                )
                .await?;
            tracing::info!(key = %lease.key, "lease deleted: shard ended and left the stream");
        }
    }
    shared
        .listed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(stream.clone(), listed);
    Ok(())
}

/// Whether every parent of `lease` finished: its lease is at `SHARD_END`, or its lease is gone
/// and a child proves it finished or the source (at the last sync) no longer lists it. A
/// missing parent lease alone proves nothing: it may not have been created yet.
fn parents_done(
    lease: &Lease,
    by_shard: &HashMap<&ShardId, &Lease>,
    finished: &BTreeSet<&ShardId>,
    listed: Option<&BTreeSet<ShardId>>,
) -> bool {
    lease.parents.iter().all(|p| match by_shard.get(p) {
        Some(parent) => parent.checkpoint == Some(Position::ShardEnd),
        None => finished.contains(p) || listed.is_some_and(|s| !s.contains(p)),
    })
}

/// [`take_leases`], logging a failure (the next tick tries again).
pub(crate) async fn take_leases_logged(shared: &Arc<Shared>) -> Option<Instant> {
    match take_leases(shared).await {
        Ok(next) => next,
        Err(e) => {
            tracing::warn!(error = %e, "lease taking failed");
            None
        }
    }
}

/// Takes leases for every stream from one listing judged on the store's clock. Returns when
/// the earliest live lease of another worker runs out (a little after, on the local monotonic
/// clock), if this worker could take more leases.
async fn take_leases(shared: &Arc<Shared>) -> Result<Option<Instant>> {
    let listing = shared
        .call("list_leases_timed", shared.store.list_leases_timed(None))
        .await?;
    let members = shared
        .call("live_workers", shared.store.live_workers())
        .await?;
    // A registered worker named on no lease at all is starting: it counts in every stream's
    // share until it holds leases. A member named only on expired leases has evidently died
    // (or stalled) even if its membership has not lapsed yet.
    let named: BTreeSet<&WorkerId> = listing
        .leases
        .iter()
        .filter_map(|l| l.owner.as_ref())
        .collect();
    let starting: BTreeSet<&WorkerId> = members.iter().filter(|w| !named.contains(w)).collect();
    let mut next: Option<Instant> = None;
    for stream in shared.sources.keys() {
        let leases: Vec<&Lease> = listing
            .leases
            .iter()
            .filter(|l| &l.key.stream == stream)
            .collect();
        let at = take_stream(shared, &listing, stream, &leases, &starting).await;
        next = match (next, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(next)
}

/// Takes free and expired leases of one stream up to the fair share, then steals (or claims)
/// when the imbalance is at least 2.
async fn take_stream(
    shared: &Arc<Shared>,
    listing: &Listing,
    stream: &StreamName,
    leases: &[&Lease],
    starting: &BTreeSet<&WorkerId>,
) -> Option<Instant> {
    let mut workers: BTreeSet<&WorkerId> = leases
        .iter()
        .filter(|l| listing.is_live(l))
        .filter_map(|l| l.owner.as_ref())
        .collect();
    workers.extend(starting.iter().copied());
    workers.insert(&shared.id);
    let by_shard: HashMap<&ShardId, &Lease> = leases.iter().map(|l| (&l.key.shard, *l)).collect();
    let finished = proven_finished(leases.iter().copied());
    // A lease of a shard the last sync did not list is either newer than that sync (created by
    // another worker: sync again at the next tick) or of a shard that left the stream unread,
    // which cannot be read: leave it alone until the source lists it.
    let listed = shared
        .listed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(stream)
        .cloned();
    let readable = |l: &Lease| {
        let known = listed.as_ref().is_none_or(|s| s.contains(&l.key.shard));
        if !known {
            shared.resync.store(true, Ordering::Relaxed);
        }
        known
    };
    let eligible: Vec<&Lease> = leases
        .iter()
        .copied()
        .filter(|l| {
            l.checkpoint != Some(Position::ShardEnd)
                && parents_done(l, &by_shard, &finished, listed.as_ref())
                && readable(l)
        })
        .collect();
    let held_keys: BTreeSet<LeaseKey> = shared.held().keys().cloned().collect();
    let total_held = held_keys.len();
    let used = shared
        .used_tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // A live lease naming this worker's id that no processor here ever ran under belongs to
    // another process started with the same id: never touch it (releasing it would pass the
    // fence), and say so.
    let foreign = |l: &Lease| {
        l.owner.as_ref() == Some(&shared.id)
            && listing.is_live(l)
            && !held_keys.contains(&l.key)
            && used.get(&l.key).is_none_or(|t| *t < l.token)
    };
    for lease in eligible.iter().filter(|l| foreign(l)) {
        metrics::counter!(
            m::WORKER_ID_CONFLICTS,
            "app" => shared.store.app().to_string(),
            "worker" => shared.id.to_string()
        )
        .increment(1);
        tracing::error!(key = %lease.key, token = %lease.token,
            "a live lease names this worker's id but was never processed here: another process runs with the same worker id");
    }
    // When this worker could take more, wake when the earliest lease held by another worker
    // (or reserved for another claimant) runs out by the store's clock.
    let next_takeover = if total_held < shared.config.max_leases {
        eligible
            .iter()
            .filter_map(|l| {
                if listing.is_live(l) && l.owner.as_ref() != Some(&shared.id) {
                    Some(listing.remaining(l))
                } else if listing.reserved_for(l).is_some_and(|c| c != &shared.id) {
                    Some(listing.reservation_remaining(l))
                } else {
                    None
                }
            })
            .min()
            .map(|left| Instant::now() + left + TAKEOVER_MARGIN)
    } else {
        None
    };
    if eligible.is_empty() {
        return next_takeover;
    }
    let target = eligible
        .len()
        .div_ceil(workers.len())
        .min(shared.config.max_leases);
    let mut mine = held_keys.iter().filter(|k| &k.stream == stream).count();
    let mut total = total_held;
    if mine >= target {
        return next_takeover;
    }
    let mut free: Vec<&Lease> = eligible
        .iter()
        .copied()
        .filter(|l| {
            !held_keys.contains(&l.key)
                && !foreign(l)
                && (!listing.is_live(l) || l.owner.as_ref() == Some(&shared.id))
                && listing.reserved_for(l).is_none_or(|c| c == &shared.id)
        })
        .collect();
    // Start at a worker-specific offset so workers taking at the same moment rarely collide.
    if !free.is_empty() {
        let offset = stable_hash(shared.id.as_str()) as usize % free.len();
        free.rotate_left(offset);
    }
    let duration = shared.config.lease_duration;
    let mut taken = 0;
    let mut candidates = free.iter().copied();
    loop {
        // As many as this pass may still take; their grants go out together, so taking a
        // crashed worker's leases costs about one store round trip, not one per lease. A
        // refused grant (another worker was faster) leaves room for the next candidates.
        let want = target
            .saturating_sub(mine)
            .min(shared.config.max_leases.saturating_sub(total))
            .min(shared.config.max_leases_per_tick.saturating_sub(taken));
        let batch: Vec<&Lease> = candidates.by_ref().take(want).collect();
        if batch.is_empty() {
            break;
        }
        let mut pending = tokio::task::JoinSet::new();
        for (i, lease) in batch.iter().enumerate() {
            let ours = (lease.owner.as_ref() == Some(&shared.id)).then_some(lease.token);
            let grant = grant(Arc::clone(shared), i, lease.key.clone(), ours, duration);
            pending.spawn(grant.in_current_span());
        }
        // Each granted lease starts as soon as its grant comes back (held, so renewed), not
        // after the slowest grant of the pass.
        while let Some(done) = pending.join_next().await {
            let (i, started, result) = match done {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "taking lease failed: task ended");
                    continue;
                }
            };
            let lease = batch[i];
            match result {
                Ok(granted) => {
                    shared.count(m::LEASES_TAKEN, &granted.key);
                    let expired = lease.owner.as_ref().filter(|o| *o != &shared.id);
                    tracing::info!(key = %granted.key, token = %granted.token, previous_owner = ?expired, "lease taken");
                    if start_shard(shared, granted, started).await {
                        mine += 1;
                        total += 1;
                        taken += 1;
                    }
                }
                Err(Error::LeaseHeld { .. }) => {}
                Err(e) => tracing::warn!(key = %lease.key, error = %e, "taking lease failed"),
            }
        }
    }
    if !free.is_empty()
        || mine >= target
        || total >= shared.config.max_leases
        || shared.config.max_steals_per_tick == 0
    {
        return next_takeover;
    }
    steal(shared, listing, &eligible, mine, target).await;
    next_takeover
}

/// One grant of a take pass, `i`-th of its batch. A lease the store still names this worker
/// as owner of with token `ours` (a processor here stopped when its renewal came back too late)
/// is freed first, so the new processor runs under a new token and nothing from the old one can
/// pass as its own. Returns `i`, when the `get_lease` request started, and the store's answer.
async fn grant(
    shared: Arc<Shared>,
    i: usize,
    key: LeaseKey,
    ours: Option<FencingToken>,
    duration: LeaseDuration,
) -> (usize, Instant, Result<Lease>) {
    if let Some(token) = ours {
        release(&shared, &key, token).await;
    }
    let started = Instant::now();
    let result = shared
        .call(
            "get_lease",
            shared.store.get_lease(&key, &shared.id, duration),
        )
        .await;
    (i, started, result)
}

/// Steals (or claims) from the most loaded worker of the stream when it holds at least 2 more
/// than this one.
async fn steal(
    shared: &Arc<Shared>,
    listing: &Listing,
    eligible: &[&Lease],
    mine: usize,
    target: usize,
) {
    let mut loads: BTreeMap<&WorkerId, Vec<&Lease>> = BTreeMap::new();
    for lease in eligible {
        if let Some(owner) = &lease.owner
            && owner != &shared.id
            && listing.is_live(lease)
        {
            loads.entry(owner).or_default().push(lease);
        }
    }
    let Some((victim, victim_leases)) = loads
        .iter()
        .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(a.0)))
    else {
        return;
    };
    let imbalance = victim_leases.len().saturating_sub(mine);
    if imbalance < 2 {
        return;
    }
    let steals = shared
        .config
        .max_steals_per_tick
        .min(imbalance / 2)
        .min(target - mine);
    let duration = shared.config.lease_duration;
    for lease in victim_leases.iter().rev().take(steals) {
        if shared.config.balance == Balance::Claim {
            match shared
                .call("claim", shared.store.claim(&lease.key, &shared.id))
                .await
            {
                Ok(_) => {
                    shared.count(m::LEASES_CLAIMED, &lease.key);
                    tracing::info!(key = %lease.key, from = %victim, "lease claimed for hand-off");
                }
                Err(e) => tracing::warn!(key = %lease.key, error = %e, "claiming lease failed"),
            }
            continue;
        }
        let started = Instant::now();
        let result = shared
            .call(
                "steal",
                shared
                    .store
                    .steal(&lease.key, &shared.id, victim, lease.token, duration),
            )
            .await;
        match result {
            Ok(granted) => {
                shared.count(m::LEASES_STOLEN, &granted.key);
                tracing::info!(key = %granted.key, token = %granted.token, from = %victim, "lease stolen");
                start_shard(shared, granted, started).await;
            }
            Err(Error::LeaseChanged { .. }) => {}
            Err(e) => tracing::warn!(key = %lease.key, error = %e, "stealing lease failed"),
        }
    }
}

fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

//! Scenarios of the rest of a lease's life: release, delete, listing, claims, renew-many and
//! the admin reset (operations 7 to 11 and the admin reset).

use std::time::Duration;

use super::scenarios::*;
use super::{Clause, Failure, Outcome, StoreFactory};
use crate::ensure;
use crate::error::{Error, ErrorKind};
use crate::types::{FencingToken, Lease, LeaseKey, Position, ShardId, StreamName};

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
    expect_fenced(
        &*store,
        &k,
        &before,
        store.remove_lease_owner(&k, &a, taken.token).await,
        "release by a worker that is not the holder, with the holder's token",
    )
    .await?;
    let forced = store.evict_lease(&k).await?;
    ensure!(
        forced.owner.is_none() && forced.deadline.is_none() && forced.token == taken.token,
        Release,
        "force release left {forced:?} (expected no owner, no deadline, the same token)"
    );
    // A free lease released again with an older token: lease lost, nothing written.
    expect_fenced(
        &*store,
        &k,
        &forced,
        store.remove_lease_owner(&k, &a, t).await,
        "release of a free lease with an older token",
    )
    .await?;
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
    // A pending checkpoint and an owner switch since the checkpoint, both of which a reset
    // clears: b steals the lease (one switch) and prepares a position.
    let b = worker("b");
    let stolen = store.steal(&k, &b, &a, t, long()).await?;
    store
        .prepare_checkpoint(&k, &b, stolen.token, &seq("7"))
        .await?;
    let l = store.reset_checkpoint(&k, None).await?;
    ensure!(
        l.checkpoint.is_none()
            && l.pending_checkpoint.is_none()
            && l.owner_switches_since_checkpoint == 0
            && l.owner.as_ref() == Some(&b)
            && l.token == stolen.token,
        Reset,
        "reset to none left {l:?} (expected no checkpoint, no pending checkpoint, no owner \
         switch, owner and token untouched)"
    );
    expect_err(
        Clause::Reset,
        store.reset_checkpoint(&key("s", "absent"), None).await,
        ErrorKind::NotFound,
        "reset of an absent lease",
    )?;
    Ok(())
}

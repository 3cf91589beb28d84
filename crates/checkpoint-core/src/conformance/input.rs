//! Scenarios about input: what is refused before anything is written, and what is accepted at
//! the limits and must come back from the store exactly as it went in.

use std::time::Duration;

use super::scenarios::{fetch, key, long, open};
use super::{Clause, Failure, Outcome, StoreFactory};
use crate::ensure;
use crate::error::{Error, Result};
use crate::types::{
    AppName, FencingToken, HeartbeatTtl, LeaseDuration, LeaseKey, Position, SequenceNumber,
    ShardId, StreamName, WorkerId,
};

/// Fewest constructor cases [`bad_input_rejected`] checks.
pub const MIN_CONSTRUCTOR_CASES: usize = 72;

/// Worker ids as users have them (the contract's decision: opaque text without control
/// characters), each with a label: KCL's `host:uuid`, `name@host`, separators that mean
/// something to a key layout (`:`, `{`, `}`, `/`), SQL and glob metacharacters, quotes,
/// non-ASCII text, and the longest (256 bytes of two-byte characters).
pub fn user_worker_ids() -> Vec<(&'static str, String)> {
    vec![
        (
            "KCL host:uuid",
            "ip-10-0-0-1:7f3a9c2e-0b1d-4e5f-8a6b-1c2d3e4f5a6b".into(),
        ),
        ("name@host", "consumer@ip-10-0-0-1.ec2.internal".into()),
        ("slash plus equals", "a/b+c=d".into()),
        ("spaces", "worker with spaces".into()),
        ("SQL", "x'); DROP TABLE leases;--".into()),
        ("hash tag braces", "{app}:slot".into()),
        ("LIKE wildcards", "100%_like".into()),
        ("quotes", "\"quoted\" and 'single'".into()),
        ("glob", "*?[abc]".into()),
        ("non-ASCII", "zürich-東京".into()),
        ("colon prefix", "a".into()),
        ("colon prefix with colon", "a:".into()),
        ("colon prefix longer", "a:b".into()),
        ("backslash", "C:\\workers\\one".into()),
        ("256 bytes", "é".repeat(128)),
    ]
}

/// Bad input: each case is a typed `InvalidInput` naming the field, and nothing is written.
/// Constructor cases (identifiers, sequence numbers, durations; the same for every store) and
/// cases only the store operation can see are counted apart; the failure message and the
/// README report both counts.
pub async fn bad_input_rejected(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "bad").await?;
    let mut cases: Vec<(String, &'static str, Result<()>)> = Vec::new();
    let bad_ids: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("257 bytes", "x".repeat(257)),
        ("single quote", "a'b".into()),
        ("double quote", "a\"b".into()),
        ("percent", "100%".into()),
        ("colon", "stream:shard".into()),
        ("braces", "{app}".into()),
        ("NUL", "a\0b".into()),
        ("RTL override", "\u{202E}abc".into()),
        ("non-ASCII", "zürich".into()),
        ("space", "a b".into()),
        ("SQL", "x'); DROP TABLE leases;--".into()),
    ];
    for (what, id) in &bad_ids {
        cases.push((
            format!("app {what}"),
            "app",
            AppName::new(id.clone()).map(drop),
        ));
        cases.push((
            format!("stream {what}"),
            "stream",
            StreamName::new(id.clone()).map(drop),
        ));
        cases.push((
            format!("shard {what}"),
            "shard_id",
            ShardId::new(id.clone()).map(drop),
        ));
    }
    let bad_workers: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("257 bytes", "x".repeat(257)),
        (
            "257 bytes of two-byte characters",
            format!("{}x", "é".repeat(128)),
        ),
        ("NUL", "a\0b".into()),
        ("newline", "a\nb".into()),
        ("carriage return", "a\rb".into()),
        ("tab", "a\tb".into()),
        ("escape", "a\u{1b}[31m".into()),
        ("DEL", "a\u{7f}".into()),
        ("C1 control", "a\u{85}b".into()),
    ];
    for (what, id) in &bad_workers {
        cases.push((
            format!("worker {what}"),
            "worker_id",
            WorkerId::new(id.clone()).map(drop),
        ));
    }
    let too_long = "1".repeat(129);
    for (what, s) in [
        ("empty", ""),
        ("letters", "12a"),
        ("negative", "-1"),
        ("plus sign", "+1"),
        ("leading space", " 1"),
        ("decimal point", "1.5"),
        ("129 digits", too_long.as_str()),
        ("Arabic-Indic digits", "١٢٣"),
        ("hex", "0x10"),
    ] {
        cases.push((
            format!("sequence {what}"),
            "sequence_number",
            SequenceNumber::new(s).map(drop),
        ));
        cases.push((
            format!("position {what}"),
            "sequence_number",
            Position::sequence(s).map(drop),
        ));
    }
    for (what, d) in [
        ("zero", Duration::ZERO),
        ("sub-millisecond", Duration::from_micros(500)),
        ("25 hours", Duration::from_secs(25 * 3600)),
        ("u64::MAX seconds", Duration::from_secs(u64::MAX)),
    ] {
        cases.push((
            format!("lease duration {what}"),
            "duration",
            LeaseDuration::new(d).map(drop),
        ));
        cases.push((
            format!("heartbeat ttl {what}"),
            "ttl",
            HeartbeatTtl::new(d).map(drop),
        ));
    }
    let constructor_cases = cases.len();
    // Invalid arguments that only the store operation can see.
    let k = key("s", "bad-input");
    let (a, b) = (WorkerId::new("a")?, WorkerId::new("b")?);
    cases.push((
        "steal from oneself".into(),
        "thief",
        store
            .steal(&k, &a, &a, FencingToken(0), long())
            .await
            .map(drop),
    ));
    cases.push((
        "renew_many with a duplicate key".into(),
        "leases",
        store
            .renew_many(
                &b,
                &[(k.clone(), FencingToken(1)), (k.clone(), FencingToken(2))],
                long(),
            )
            .await
            .map(drop),
    ));
    let store_cases = cases.len() - constructor_cases;
    ensure!(
        constructor_cases >= MIN_CONSTRUCTOR_CASES && store_cases >= 2,
        BadInput,
        "only {constructor_cases} constructor and {store_cases} store bad-input cases"
    );
    for (what, field, result) in cases {
        match result {
            Err(Error::InvalidInput { field: got, .. }) if got == field => {}
            Err(e) => {
                return Err(Failure::new(
                    Clause::BadInput,
                    format!("{what}: expected InvalidInput naming {field}, got {e:?}"),
                ));
            }
            Ok(()) => {
                return Err(Failure::new(Clause::BadInput, format!("{what}: accepted")));
            }
        }
    }
    ensure!(
        store.list_leases(None).await?.is_empty(),
        BadInput,
        "rejected input wrote a lease"
    );
    ensure!(
        store.live_workers().await?.is_empty(),
        BadInput,
        "rejected input registered a worker"
    );
    Ok(())
}

/// Identifiers and positions at their limits go through the store's own encoding and come back
/// exactly: 256-byte stream and shard ids, parents, worker ids as users have them
/// ([`user_worker_ids`]) as owner, claimant and member, AT_TIMESTAMP at 0 and in the year 9999,
/// 128-digit sequences with the largest sub-sequence. No id can stand for another (`a`, `a:`
/// and `a:b` are three workers) or change what a statement or key means: every other record is
/// still there and unchanged afterwards.
pub async fn edge_ids_round_trip(factory: &dyn StoreFactory) -> Outcome {
    let (_, store) = open(factory, "edge").await?;
    let longest = "s".repeat(256);
    let k = LeaseKey::parse(&longest, &"d".repeat(256))?;
    let w = WorkerId::new(format!("{}-._09AZaz", "w".repeat(247)))?;
    let parents = vec![ShardId::new("p.1_-X")?, ShardId::new("0")?];
    store.create_lease_if_absent(&k, &parents, None).await?;
    let lease = store.get_lease(&k, &w, long()).await?;
    ensure!(
        lease.owner.as_ref() == Some(&w) && lease.key == k,
        EdgeIds,
        "256-byte ids did not round-trip: {lease:?}"
    );
    ensure!(
        fetch(&*store, &k).await?.parents == parents,
        EdgeIds,
        "parents did not round-trip"
    );
    ensure!(
        store
            .list_leases(Some(&StreamName::new(longest)?))
            .await?
            .len()
            == 1,
        EdgeIds,
        "list by a 256-byte stream failed"
    );
    // Positions at their limits, through the store's encoding.
    let positions = [
        Position::AtTimestamp(0),
        Position::AtTimestamp(253_402_300_799_999),
        Position::sequence_with_sub(&"0".repeat(128), 0)?,
        Position::sequence_with_sub(&format!("1{}", "0".repeat(127)), 0)?,
        Position::sequence_with_sub(&"9".repeat(128), u64::MAX)?,
    ];
    for (i, p) in positions.iter().enumerate() {
        let pk = key("positions", &format!("p-{i}"));
        store.create_lease_if_absent(&pk, &[], Some(p)).await?;
        let got = fetch(&*store, &pk).await?.checkpoint;
        ensure!(
            got.as_ref() == Some(p),
            EdgeIds,
            "initial position {p} came back as {got:?}"
        );
    }
    // Worker ids as users have them: owner, checkpoint writer, claimant, member.
    let workers: Vec<(&str, WorkerId)> = user_worker_ids()
        .into_iter()
        .map(|(what, id)| WorkerId::new(id).map(|w| (what, w)))
        .collect::<Result<_>>()?;
    let ttl = HeartbeatTtl::new(Duration::from_secs(120))?;
    for (i, (what, w)) in workers.iter().enumerate() {
        let wk = key("workers", &format!("w-{i:02}"));
        let granted = store.get_lease(&wk, w, long()).await?;
        ensure!(
            granted.owner.as_ref() == Some(w),
            EdgeIds,
            "worker id ({what}) {w:?} granted as {:?}",
            granted.owner
        );
        store
            .checkpoint_sequence(&wk, w, granted.token, &Position::sequence("42")?)
            .await?;
        let next = &workers[(i + 1) % workers.len()].1;
        let claimed = store.claim(&wk, next).await?;
        ensure!(
            claimed.claim.as_ref() == Some(next),
            EdgeIds,
            "claim by {next:?} stored as {:?}",
            claimed.claim
        );
        store.register_worker(w, ttl).await?;
    }
    for (i, (what, w)) in workers.iter().enumerate() {
        let wk = key("workers", &format!("w-{i:02}"));
        let stored = fetch(&*store, &wk).await?;
        ensure!(
            stored.owner.as_ref() == Some(w)
                && stored.checkpoint == Some(Position::sequence("42")?),
            EdgeIds,
            "after every worker wrote, the lease of ({what}) {w:?} reads {stored:?}"
        );
        for (_, other) in workers.iter().filter(|(_, o)| o != w) {
            match store.get_lease(&wk, other, long()).await {
                Err(Error::LeaseHeld { holder, .. }) if &holder == w => {}
                other_answer => {
                    return Err(Failure::new(
                        Clause::EdgeIds,
                        format!(
                            "{other:?} asking for the lease of {w:?} got {other_answer:?}, \
                             expected LeaseHeld naming {w:?}"
                        ),
                    ));
                }
            }
        }
    }
    let mut expected: Vec<WorkerId> = workers.iter().map(|(_, w)| w.clone()).collect();
    expected.sort();
    let live = store.live_workers().await?;
    ensure!(
        live == expected,
        EdgeIds,
        "live workers (sorted by bytes) {live:?}, expected {expected:?}"
    );
    let listed = store
        .list_leases(Some(&StreamName::new("workers")?))
        .await?;
    ensure!(
        listed.len() == workers.len(),
        EdgeIds,
        "{} leases listed for {} workers",
        listed.len(),
        workers.len()
    );
    for (_, w) in &workers {
        store.deregister_worker(w).await?;
    }
    ensure!(
        store.live_workers().await?.is_empty(),
        EdgeIds,
        "deregistering every worker left {:?}",
        store.live_workers().await?
    );
    Ok(())
}

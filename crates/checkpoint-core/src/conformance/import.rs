//! The admin import scenario (the contract's "Import a whole record").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Clause, Failure, Outcome, ROUND_TRIP_TOLERANCE, StoreFactory, random_app};
use crate::ensure;
use crate::error::{Error, ErrorKind};
use crate::store::ClockSource;
use crate::types::{FencingToken, Lease, LeaseDuration, LeaseKey, Position, ShardId, WorkerId};

/// Whether `got` is `wanted` as the store reports it. On a store whose expiry is observed
/// ([`ClockSource::Observed`], DynamoDB) a held lease's deadline is the reading handle's own
/// judgement (first sighting plus the time left it was given), so it may differ from the
/// imported one by the calls' time, at most [`ROUND_TRIP_TOLERANCE`]; every other field, and
/// every deadline on other stores, must be equal.
fn same_record(observed: bool, got: &Lease, wanted: &Lease) -> bool {
    if !observed {
        return got == wanted;
    }
    let close = match (got.deadline, wanted.deadline) {
        (Some(a), Some(b)) => {
            a.duration_since(b)
                .or_else(|_| b.duration_since(a))
                .unwrap_or_default()
                <= ROUND_TRIP_TOLERANCE
        }
        (a, b) => a == b,
    };
    close
        && Lease {
            deadline: None,
            ..got.clone()
        } == Lease {
            deadline: None,
            ..wanted.clone()
        }
}

fn key(stream: &str, shard: &str) -> LeaseKey {
    LeaseKey::parse(stream, shard).expect("valid key")
}

fn worker(name: &str) -> WorkerId {
    WorkerId::new(name).expect("valid worker id")
}

fn shard(name: &str) -> ShardId {
    ShardId::new(name).expect("valid shard id")
}

/// A store-clock deadline two minutes from now in whole milliseconds, the precision every
/// backend stores (PostgreSQL keeps microseconds, the others milliseconds).
fn deadline_in_two_minutes() -> SystemTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX / 2) + 120_000;
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Admin import: into an absent key it writes every field exactly as given (token, deadline,
/// checkpoint with sub-sequence, pending checkpoint, parents, claim, owner switches) and
/// returns `true`, and the carried token fences as if granted here; into an existing key it
/// returns `false` and changes nothing; a record no operation could have produced is
/// `InvalidInput` naming the field, and nothing is written.
pub async fn import_whole_records(factory: &dyn StoreFactory) -> Outcome {
    let store = factory.open(&random_app("import")).await?;
    let observed = store.capabilities().clock == ClockSource::Observed;
    let (old, next) = (worker("old-host-1"), worker("next-host-2"));
    let held = Lease {
        key: key("s", "shard-held"),
        owner: Some(old.clone()),
        token: FencingToken(7),
        deadline: Some(deadline_in_two_minutes()),
        checkpoint: Some(Position::sequence_with_sub("12345678901234567890123", 4)?),
        pending_checkpoint: Some(Position::sequence_with_sub("12345678901234567890123", 9)?),
        parents: vec![shard("shard-p1"), shard("shard-p2")],
        claim: Some(next.clone()),
        owner_switches_since_checkpoint: 3,
    };
    let free = Lease {
        key: key("s", "shard-free"),
        owner: None,
        token: FencingToken(41),
        deadline: None,
        checkpoint: Some(Position::ShardEnd),
        pending_checkpoint: None,
        parents: vec![],
        claim: None,
        owner_switches_since_checkpoint: 0,
    };
    for record in [&held, &free] {
        ensure!(
            store.import_lease(record).await?,
            Import,
            "import of {} into an absent key answered false",
            record.key
        );
        let stored = store.fetch_checkpoint(&record.key).await?;
        ensure!(
            stored
                .as_ref()
                .is_some_and(|s| same_record(observed, s, record)),
            Import,
            "import did not write the record exactly:\nwanted {record:?}\nstored {stored:?}"
        );
    }
    let listed = store.list_leases(None).await?;
    ensure!(
        listed.len() == 2
            && same_record(observed, &listed[0], &free)
            && same_record(observed, &listed[1], &held),
        Import,
        "list after import gave {listed:?}"
    );

    // The carried token fences: the old holder renews with it, a stale token is lost, and the
    // imported live lease is held against another worker.
    let d = LeaseDuration::new(Duration::from_secs(120))?;
    let renewed = store.renew(&held.key, &old, FencingToken(7), d).await?;
    ensure!(
        renewed.token == FencingToken(7),
        Import,
        "renew gave {renewed:?}"
    );
    match store.renew(&held.key, &old, FencingToken(6), d).await {
        Err(e) if e.kind() == ErrorKind::LeaseLost => {}
        other => {
            return Err(Failure::new(
                Clause::Import,
                format!("renew with a stale token gave {other:?}"),
            ));
        }
    }
    match store.get_lease(&held.key, &worker("third"), d).await {
        Err(e) if e.kind() == ErrorKind::LeaseHeld => {}
        other => {
            return Err(Failure::new(
                Clause::Import,
                format!("get of an imported live lease gave {other:?}"),
            ));
        }
    }
    let taken = store.get_lease(&free.key, &worker("third"), d).await?;
    ensure!(
        taken.token == FencingToken(42),
        Import,
        "a grant after importing token 41 gave token {}",
        taken.token
    );

    // Into an existing record: refused, nothing changed.
    let before = store.fetch_checkpoint(&held.key).await?;
    let other = Lease {
        owner: None,
        token: FencingToken(1),
        deadline: None,
        claim: None,
        ..Lease::new(held.key.clone(), vec![], None)
    };
    ensure!(
        !store.import_lease(&other).await?,
        Import,
        "import over an existing record answered true"
    );
    let after = store.fetch_checkpoint(&held.key).await?;
    ensure!(
        after == before,
        Import,
        "import over an existing record changed it:\nbefore {before:?}\nafter  {after:?}"
    );

    // Invalid records: the field is named and nothing is written.
    let base = Lease::new(key("s", "shard-bad"), vec![], None);
    let invalid = [
        (
            "deadline",
            Lease {
                deadline: Some(deadline_in_two_minutes()),
                ..base.clone()
            },
        ),
        (
            "token",
            Lease {
                owner: Some(old.clone()),
                deadline: Some(deadline_in_two_minutes()),
                ..base.clone()
            },
        ),
        (
            "claim",
            Lease {
                owner: Some(old.clone()),
                token: FencingToken(2),
                deadline: Some(deadline_in_two_minutes()),
                claim: Some(old.clone()),
                ..base.clone()
            },
        ),
        (
            "pending_checkpoint",
            Lease {
                checkpoint: Some(Position::sequence("20")?),
                pending_checkpoint: Some(Position::sequence("19")?),
                ..base.clone()
            },
        ),
        (
            "parents",
            Lease {
                parents: vec![shard("shard-p1"), shard("shard-p1")],
                ..base.clone()
            },
        ),
        (
            "parents",
            Lease {
                parents: vec![shard("shard-bad")],
                ..base.clone()
            },
        ),
    ];
    for (field, record) in invalid {
        match store.import_lease(&record).await {
            Err(Error::InvalidInput { field: f, .. }) if f == field => {}
            other => {
                return Err(Failure::new(
                    Clause::Import,
                    format!("import of a record with a bad {field} gave {other:?}"),
                ));
            }
        }
        let stored = store.fetch_checkpoint(&base.key).await?;
        ensure!(
            stored.is_none(),
            Import,
            "a rejected import (bad {field}) wrote {stored:?}"
        );
    }
    Ok(())
}

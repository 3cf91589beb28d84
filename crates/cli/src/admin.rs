//! Commands that change records: `leases release`, `leases delete`, `checkpoint reset`. Each
//! prints what it will change and asks first ([`crate::confirm`]).

use checkpoint_core::{Error, LeaseKey, Position, Result, Store, WorkerId};

use crate::cli::ConfirmArgs;
use crate::view::Clock;
use crate::{Failure, Outcome, confirm};

/// What `leases release` frees.
pub(crate) enum Release {
    /// One lease: stream, shard.
    One(String, String),
    /// Every lease held by this worker.
    Owner(String),
}

/// `leases release`: the admin force release (`evict_lease`) of one lease or of every lease of
/// a worker; owner and deadline cleared, token and checkpoint kept.
pub(crate) async fn release(store: &dyn Store, target: Release, args: &ConfirmArgs) -> Outcome {
    let (clock, leases) = match target {
        Release::One(stream, shard) => {
            let key = LeaseKey::parse(&stream, &shard)?;
            let (clock, leases) = Clock::listing(store, Some(&key.stream)).await?;
            let lease = leases
                .into_iter()
                .find(|l| l.key == key)
                .ok_or_else(|| Error::lease_not_found(&key))?;
            (clock, vec![lease])
        }
        Release::Owner(owner) => {
            let owner = WorkerId::new(owner)?;
            let (clock, leases) = Clock::listing(store, None).await?;
            let held: Vec<_> = leases
                .into_iter()
                .filter(|l| l.owner.as_ref() == Some(&owner))
                .collect();
            if held.is_empty() {
                println!("{owner} holds no lease: nothing to release");
                return Ok(());
            }
            (clock, held)
        }
    };
    let plan: Vec<String> = leases
        .iter()
        .map(|l| {
            let state = match (&l.owner, clock.live(l)) {
                (None, _) => "free already".to_owned(),
                (Some(o), true) => format!("held by {o} (LIVE)"),
                (Some(o), false) => format!("held by {o} (expired)"),
            };
            format!(
                "release {} ({state}, token {}): owner and deadline cleared, token and checkpoint kept",
                l.key, l.token
            )
        })
        .collect();
    if !confirm(&plan, args)? {
        return Ok(());
    }
    for l in &leases {
        let after = store.evict_lease(&l.key).await?;
        println!("released {} (token {})", after.key, after.token);
    }
    Ok(())
}

/// `leases delete`: removes one record (`remove_lease_info`).
pub(crate) async fn delete(
    store: &dyn Store,
    stream: &str,
    shard: &str,
    args: &ConfirmArgs,
) -> Outcome {
    let key = LeaseKey::parse(stream, shard)?;
    let lease = store
        .fetch_checkpoint(&key)
        .await?
        .ok_or_else(|| Error::lease_not_found(&key))?;
    let plan = vec![format!(
        "delete {} (owner {}, token {}, checkpoint {}): the whole record is removed",
        lease.key,
        lease
            .owner
            .as_ref()
            .map_or("-".to_owned(), ToString::to_string),
        lease.token,
        lease
            .checkpoint
            .as_ref()
            .map_or("-".to_owned(), ToString::to_string)
    )];
    if !confirm(&plan, args)? {
        return Ok(());
    }
    store.remove_lease_info(&key).await?;
    println!("deleted {key}");
    Ok(())
}

/// `checkpoint reset`: the admin reset (`reset_checkpoint`), the one way to move a checkpoint
/// backwards; `None` clears it.
pub(crate) async fn reset(
    store: &dyn Store,
    key: &LeaseKey,
    position: Option<Position>,
    args: &ConfirmArgs,
) -> Outcome {
    let lease = store
        .fetch_checkpoint(key)
        .await?
        .ok_or_else(|| Error::lease_not_found(key))?;
    let show = |p: Option<&Position>| p.map_or("none".to_owned(), ToString::to_string);
    let plan = vec![format!(
        "reset the checkpoint of {key}: {} -> {} (pending checkpoint and owner switches cleared; owner and token kept)",
        show(lease.checkpoint.as_ref()),
        show(position.as_ref())
    )];
    if !confirm(&plan, args)? {
        return Ok(());
    }
    let after = store.reset_checkpoint(key, position.as_ref()).await?;
    println!(
        "checkpoint of {key} is now {}",
        show(after.checkpoint.as_ref())
    );
    Ok(())
}

/// A position as the operator writes it: `TRIM_HORIZON`, `LATEST`, `SHARD_END`,
/// `AT_TIMESTAMP:<ms>`, a sequence number, or `SEQUENCE.SUB` (a sub-sequence, as positions are
/// displayed). Anything else is [`Error::InvalidInput`] on `position`.
pub(crate) fn parse_position(text: &str) -> Result<Position, Failure> {
    let parsed = match text.split_once('.') {
        Some((digits, sub)) => {
            let sub = sub.parse::<u64>().map_err(|_| {
                Error::invalid("position", format!("sub-sequence {sub:?} is not a u64"))
            })?;
            Position::decode("position", digits, sub)
        }
        None => Position::decode("position", text, 0),
    };
    Ok(parsed?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_as_displayed() {
        assert_eq!(
            parse_position("42").unwrap(),
            Position::sequence("42").unwrap()
        );
        assert_eq!(
            parse_position("42.7").unwrap(),
            Position::sequence_with_sub("42", 7).unwrap()
        );
        assert_eq!(parse_position("SHARD_END").unwrap(), Position::ShardEnd);
        for bad in ["12a", "", "42.x", "LATEST.1"] {
            match parse_position(bad) {
                Err(Failure::Store(e)) => assert_eq!(e.field(), Some("position"), "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}

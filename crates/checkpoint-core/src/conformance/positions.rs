//! Scenarios of positions: monotonic checkpoints, `SHARD_END` as the last position, and the
//! two-phase (pending) checkpoint (operations 5, 6 and 14).

use super::scenarios::*;
use super::{Clause, Outcome, StoreFactory, random_app};
use crate::ensure;
use crate::error::{Error, ErrorKind};
use crate::types::Position;

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

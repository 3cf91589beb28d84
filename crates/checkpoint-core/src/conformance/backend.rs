//! Scenarios that need the backend's help, supplied through [`BackendHooks`]: a hand-edited
//! record, an incompatible layout, the caller's own transaction, a killed process, a lost reply.
//!
//! A backend's conformance test passes its hooks to [`super::run_all_with`] beside its
//! factory. Every hook has a default that answers [`Hooked::Unsupported`] with why, never a
//! pass: a scenario whose hooks are unsupported is reported *not covered*
//! ([`super::SuiteReport::not_covered`]), and the backend's capability row prints it.

use std::sync::Arc;

use async_trait::async_trait;

use super::scenarios::{expect_err, fetch, key, long, open, seq, worker};
use super::{Clause, Failure, StoreFactory};
use crate::ensure;
use crate::error::{Error, ErrorKind, Result};
use crate::store::Store;
use crate::types::{AppName, FencingToken, Lease, LeaseKey, Position, WorkerId};

/// What a [`BackendHooks`] method did: the effect asked for, or why this backend cannot
/// provide it (printed in its capability row as not covered).
#[derive(Debug)]
pub enum Hooked<T> {
    /// The hook did what was asked; here is its result.
    Done(T),
    /// This backend cannot provide the hook, and why.
    Unsupported(String),
}

/// A field of a stored record that [`BackendHooks::write_raw_field`] can set by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawField {
    /// The checkpoint in its stored text form ([`Position::encode`]).
    Checkpoint,
    /// The owner's worker id.
    Owner,
}

/// A link between a store handle and its server that can lose one reply, for
/// [`BackendHooks::open_lossy`]: typically a loopback TCP proxy
/// (`checkpoint_test_support::LossyProxy`).
pub trait LossyLink: Send + Sync {
    /// Arms the link: the next request sent through it reaches the server and is executed,
    /// its reply is dropped and that connection closed.
    fn drop_next_reply(&self);
    /// How many replies the link has dropped so far.
    fn dropped(&self) -> usize;
}

/// A store handle whose requests go through a [`LossyLink`].
pub struct LossyStore {
    /// The handle, opened for the app asked for.
    pub store: Arc<dyn Store>,
    /// Its link to the server.
    pub link: Arc<dyn LossyLink>,
}

/// How a backend's test helps the suite where the [`Store`] trait alone cannot: each method
/// reaches under the store (raw records, the layout, the caller's transaction, a child
/// process, the network). Every method defaults to [`Hooked::Unsupported`]; a backend
/// implements those it can. An `Err` is a failure of the hook itself (the scenario fails with
/// [`Clause::UnexpectedError`]).
#[async_trait]
pub trait BackendHooks: Send + Sync {
    /// Sets `field` of the stored record of `key` in `app` (which exists) to the text `raw`
    /// exactly, bypassing the store's encoding, and answers the field name the store reports
    /// in [`Error::Corrupt`] for it (for example `checkpoint`, or `leaseOwner` on DynamoDB).
    /// `Unsupported` when the database cannot hold `raw` (NUL in PostgreSQL text) or the
    /// backend has no raw access.
    async fn write_raw_field(
        &self,
        app: &AppName,
        key: &LeaseKey,
        field: RawField,
        raw: &str,
    ) -> Result<Hooked<&'static str>> {
        let _ = (app, key, field, raw);
        Ok(Hooked::Unsupported("no raw record access given".into()))
    }

    /// Makes the layout (tables, key schema, script version) of a fresh namespace of its own
    /// incompatible with this version of the store, as another program or a newer version
    /// would leave it, then opens a store on it and answers what the open returned.
    async fn open_on_incompatible_layout(&self) -> Result<Hooked<Result<Arc<dyn Store>>>> {
        Ok(Hooked::Unsupported("no layout access given".into()))
    }

    /// Writes the fenced checkpoint of `key` in `app` inside a transaction of the caller's
    /// (the backend's transactional checkpoint, operation 13) and then commits it
    /// (`commit`) or rolls it back; answers the checkpoint call's result.
    async fn checkpoint_in_transaction(
        &self,
        app: &AppName,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
        commit: bool,
    ) -> Result<Hooked<Result<Lease>>> {
        let _ = (app, key, worker, token, position, commit);
        Ok(Hooked::Unsupported("no transactional checkpoint".into()))
    }

    /// Starts a child process that opens a store for `app` and checkpoints `key` (held by
    /// `worker` with `token`) as sequence 1, 2, 3, … in a loop, reporting each acknowledged
    /// position; kills it with `SIGKILL` after some acknowledgements, and answers every
    /// position it acknowledged, in order.
    async fn checkpoint_until_killed(
        &self,
        app: &AppName,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
    ) -> Result<Hooked<Vec<Position>>> {
        let _ = (app, key, worker, token);
        Ok(Hooked::Unsupported("no child process given".into()))
    }

    /// Opens a handle for `app` whose requests go through a [`LossyLink`].
    async fn open_lossy(&self, app: &AppName) -> Result<Hooked<LossyStore>> {
        let _ = app;
        Ok(Hooked::Unsupported("no lossy link given".into()))
    }
}

/// No hooks: every backend scenario is reported not covered.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;

impl BackendHooks for NoHooks {}

/// How much of a backend scenario ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Covered {
    /// Every check ran and passed.
    Fully,
    /// The checks that ran passed; these could not run, with why.
    Partly(Vec<String>),
    /// Nothing ran: why.
    Not(String),
}

/// The result of a backend scenario.
pub type BackendOutcome = std::result::Result<Covered, Failure>;

/// One backend scenario: its name and its function.
pub type BackendScenario = (
    &'static str,
    for<'a> fn(
        &'a dyn StoreFactory,
        &'a dyn BackendHooks,
    ) -> futures::future::LocalBoxFuture<'a, BackendOutcome>,
);

/// Every backend scenario with its name, in the order [`super::run_all_with`] runs them.
pub fn backend_scenarios() -> Vec<BackendScenario> {
    vec![
        ("corrupt_record_is_reported_and_kept", |f, h| {
            Box::pin(corrupt_record_is_reported_and_kept(f, h))
        }),
        ("hostile_records_read_exactly_or_corrupt", |f, h| {
            Box::pin(hostile_records_read_exactly_or_corrupt(f, h))
        }),
        ("incompatible_layout_is_schema_mismatch", |_, h| {
            Box::pin(incompatible_layout_is_schema_mismatch(h))
        }),
        ("transactional_checkpoint_commits_or_rolls_back", |f, h| {
            Box::pin(transactional_checkpoint_commits_or_rolls_back(f, h))
        }),
        ("kill_9_keeps_acknowledged_positions", |f, h| {
            Box::pin(kill_9_keeps_acknowledged_positions(f, h))
        }),
        ("dropped_reply_is_never_a_false_answer", |f, h| {
            Box::pin(dropped_reply_is_never_a_false_answer(f, h))
        }),
    ]
}

/// Expects `result` to be [`Error::Corrupt`] naming `field`.
fn expect_corrupt<T: std::fmt::Debug>(
    result: Result<T>,
    field: &str,
    what: &str,
) -> std::result::Result<(), Failure> {
    match result {
        Err(Error::Corrupt { field: got, .. }) if got == field => Ok(()),
        other => Err(Failure::new(
            Clause::Corrupt,
            format!("{what}: expected Corrupt naming {field}, got {other:?}"),
        )),
    }
}

/// A hand-edited record whose checkpoint, then owner, is invalid: a fetch is
/// [`Error::Corrupt`] naming the field; a following checkpoint, create or grant is refused
/// (never decoded as something else) and overwrites nothing: the record stays corrupt.
pub async fn corrupt_record_is_reported_and_kept(
    factory: &dyn StoreFactory,
    hooks: &dyn BackendHooks,
) -> BackendOutcome {
    let (app, store) = open(factory, "corrupt").await?;
    let (a, b) = (worker("a"), worker("b"));
    for (i, (field, raw)) in [
        (RawField::Checkpoint, "12x'%"),
        (RawField::Owner, "not a worker\n"),
    ]
    .into_iter()
    .enumerate()
    {
        let k = key("s", &format!("corrupt-{i}"));
        let lease = store.get_lease(&k, &a, long()).await?;
        store
            .checkpoint_sequence(&k, &a, lease.token, &seq("7"))
            .await?;
        let name = match hooks.write_raw_field(&app, &k, field, raw).await? {
            Hooked::Done(name) => name,
            Hooked::Unsupported(why) => return Ok(Covered::Not(why)),
        };
        let what = format!("{field:?} set to {raw:?}");
        expect_corrupt(
            store.fetch_checkpoint(&k).await,
            name,
            &format!("fetch, {what}"),
        )?;
        let write = store
            .checkpoint_sequence(&k, &a, lease.token, &seq("8"))
            .await;
        ensure!(
            write.is_err(),
            Corrupt,
            "a checkpoint over a record with {what} succeeded: {write:?}"
        );
        let create = store.create_lease_if_absent(&k, &[], None).await;
        ensure!(
            !matches!(create, Ok(true)),
            Corrupt,
            "create_lease_if_absent over a record with {what} answered created"
        );
        let grant = store.get_lease(&k, &b, long()).await;
        ensure!(
            grant.is_err(),
            Corrupt,
            "get_lease by another worker over a record with {what} succeeded: {grant:?}"
        );
        expect_corrupt(
            store.fetch_checkpoint(&k).await,
            name,
            &format!("fetch after the refused writes, {what} (a write overwrote it)"),
        )?;
    }
    Ok(Covered::Fully)
}

/// Hostile checkpoint texts (quotes, `%`, `_`, a backslash, NUL where the database holds it,
/// 128 and 129 digits, a look-alike of a keyword).
pub const HOSTILE_CHECKPOINTS: &[&str] = &[
    "1'; DROP TABLE leases; --",
    "100%",
    "%",
    "_",
    "\\",
    "\"",
    "1\u{0}2",
    "\u{0}",
    "11111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111",
    "99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999",
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001",
    "111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111",
    "AT_TIMESTAMP:%",
    "AT_TIMESTAMP:18446744073709551616",
    "SHARD_END'",
    "shard_end",
    " 1",
];

/// Hostile owner texts (quotes, `%`, NUL where the database holds it, at and past the length
/// limit).
pub const HOSTILE_OWNERS: &[&str] = &["o'wner", "100%", "a\u{0}b", "a\"b", "a\\b", "%_"];

/// Records written by hand with hostile contents ([`HOSTILE_CHECKPOINTS`],
/// [`HOSTILE_OWNERS`], and owners of 256 and 257 bytes) read back exactly (what
/// [`Position::decode`] or [`WorkerId::new`] makes of the text) or are [`Error::Corrupt`]
/// naming the field, never something else. Values the database cannot hold are listed as
/// not covered.
pub async fn hostile_records_read_exactly_or_corrupt(
    factory: &dyn StoreFactory,
    hooks: &dyn BackendHooks,
) -> BackendOutcome {
    let (app, store) = open(factory, "hostile").await?;
    let a = worker("a");
    let long_owners = ["w".repeat(256), "w".repeat(257)];
    let cases = HOSTILE_CHECKPOINTS
        .iter()
        .map(|raw| (RawField::Checkpoint, *raw))
        .chain(HOSTILE_OWNERS.iter().map(|raw| (RawField::Owner, *raw)))
        .chain(
            long_owners
                .iter()
                .map(|raw| (RawField::Owner, raw.as_str())),
        );
    let (mut skipped, mut ran) = (Vec::new(), 0);
    let mut reason = String::new();
    for (i, (field, raw)) in cases.enumerate() {
        let k = key("s", &format!("hostile-{i}"));
        store.get_lease(&k, &a, long()).await?;
        let name = match hooks.write_raw_field(&app, &k, field, raw).await? {
            Hooked::Done(name) => name,
            Hooked::Unsupported(why) => {
                skipped.push(format!("{field:?} {}: {why}", shown(raw)));
                reason = why;
                continue;
            }
        };
        ran += 1;
        let read = store.fetch_checkpoint(&k).await;
        let what = format!("{field:?} written by hand as {raw:?}");
        match field {
            RawField::Checkpoint => match Position::decode("checkpoint", raw, 0) {
                Ok(expected) => ensure!(
                    matches!(&read, Ok(Some(l)) if l.checkpoint.as_ref() == Some(&expected)),
                    Corrupt,
                    "{what}: expected it read back as {expected:?}, got {read:?}"
                ),
                Err(_) => expect_corrupt(read, name, &what)?,
            },
            RawField::Owner => match WorkerId::new(raw) {
                Ok(expected) => ensure!(
                    matches!(&read, Ok(Some(l)) if l.owner.as_ref() == Some(&expected)),
                    Corrupt,
                    "{what}: expected it read back as {expected:?}, got {read:?}"
                ),
                Err(_) => expect_corrupt(read, name, &what)?,
            },
        }
    }
    Ok(if skipped.is_empty() {
        Covered::Fully
    } else if ran == 0 {
        Covered::Not(reason)
    } else {
        Covered::Partly(skipped)
    })
}

/// An incompatible existing layout is refused with [`Error::SchemaMismatch`] when a store is
/// opened on it, never used.
pub async fn incompatible_layout_is_schema_mismatch(hooks: &dyn BackendHooks) -> BackendOutcome {
    let opened = match hooks.open_on_incompatible_layout().await? {
        Hooked::Done(opened) => opened,
        Hooked::Unsupported(why) => return Ok(Covered::Not(why)),
    };
    match opened {
        Err(e) if e.kind() == ErrorKind::SchemaMismatch => Ok(Covered::Fully),
        Err(e) => Err(Failure::new(
            Clause::Schema,
            format!("opening on an incompatible layout: expected SchemaMismatch, got {e}"),
        )),
        Ok(store) => Err(Failure::new(
            Clause::Schema,
            format!(
                "a store opened on an incompatible layout: {:?}",
                store.capabilities().backend
            ),
        )),
    }
}

/// Operation 13: a checkpoint written in the caller's transaction is visible once it commits;
/// rolled back, it leaves the old position; inside the transaction the usual rules hold (a
/// regression or a stale token is refused).
pub async fn transactional_checkpoint_commits_or_rolls_back(
    factory: &dyn StoreFactory,
    hooks: &dyn BackendHooks,
) -> BackendOutcome {
    let (app, store) = open(factory, "tx").await?;
    let a = worker("a");
    let k = key("s", "tx");
    let lease = store.get_lease(&k, &a, long()).await?;
    store
        .checkpoint_sequence(&k, &a, lease.token, &seq("5"))
        .await?;
    let in_tx = |position: Position, token: FencingToken, commit: bool| {
        let (app, k, a) = (app.clone(), k.clone(), a.clone());
        async move {
            hooks
                .checkpoint_in_transaction(&app, &k, &a, token, &position, commit)
                .await
        }
    };
    let rolled_back = match in_tx(seq("7"), lease.token, false).await? {
        Hooked::Done(result) => result,
        Hooked::Unsupported(why) => return Ok(Covered::Not(why)),
    };
    ensure!(
        rolled_back.is_ok(),
        Transaction,
        "a fenced checkpoint inside a transaction failed: {rolled_back:?}"
    );
    let stored = fetch(&*store, &k).await?.checkpoint;
    ensure!(
        stored == Some(seq("5")),
        Transaction,
        "after a rolled-back transactional checkpoint of 7 the stored position is {stored:?}"
    );
    if let Hooked::Done(result) = in_tx(seq("9"), lease.token, true).await? {
        ensure!(
            result.is_ok(),
            Transaction,
            "a committed transactional checkpoint failed: {result:?}"
        );
    }
    let stored = fetch(&*store, &k).await?.checkpoint;
    ensure!(
        stored == Some(seq("9")),
        Transaction,
        "after a committed transactional checkpoint of 9 the stored position is {stored:?}"
    );
    if let Hooked::Done(result) = in_tx(seq("8"), lease.token, true).await? {
        expect_err(
            Clause::Transaction,
            result,
            ErrorKind::CheckpointRegression,
            "a regressing transactional checkpoint",
        )?;
    }
    if let Hooked::Done(result) = in_tx(seq("10"), lease.token.next(), true).await? {
        expect_err(
            Clause::Transaction,
            result,
            ErrorKind::LeaseLost,
            "a transactional checkpoint with a token the holder never had",
        )?;
    }
    let stored = fetch(&*store, &k).await?.checkpoint;
    ensure!(
        stored == Some(seq("9")),
        Transaction,
        "refused transactional checkpoints changed the position to {stored:?}"
    );
    Ok(Covered::Fully)
}

/// Durability: a child process checkpointing in a loop is killed with `SIGKILL`; every
/// position it acknowledged is durable (the stored position is at least the last one
/// acknowledged, and at most one past it: a write in flight at the kill may have landed).
pub async fn kill_9_keeps_acknowledged_positions(
    factory: &dyn StoreFactory,
    hooks: &dyn BackendHooks,
) -> BackendOutcome {
    let (app, store) = open(factory, "kill").await?;
    let a = worker("a");
    let k = key("s", "killed");
    let lease = store.get_lease(&k, &a, long()).await?;
    let acked = match hooks
        .checkpoint_until_killed(&app, &k, &a, lease.token)
        .await?
    {
        Hooked::Done(acked) => acked,
        Hooked::Unsupported(why) => return Ok(Covered::Not(why)),
    };
    let Some(last) = acked.last() else {
        return Err(Failure::new(
            Clause::Durability,
            "the child process acknowledged no checkpoint before it was killed",
        ));
    };
    let reopened = factory.open(&app).await?;
    let stored = fetch(&*reopened, &k).await?.checkpoint;
    let next = match last {
        Position::Sequence { sequence, .. } => sequence
            .as_str()
            .parse::<u64>()
            .ok()
            .map(|n| seq(&(n + 1).to_string())),
        _ => None,
    };
    ensure!(
        stored.as_ref() == Some(last) || stored.is_some() && stored == next,
        Durability,
        "the child acknowledged {} positions up to {last:?} before kill -9, the store has \
         {stored:?}",
        acked.len()
    );
    Ok(Covered::Fully)
}

/// Backend faults: a request whose reply is lost (the server executed it) is retried by the
/// store or answered with a retryable error; never a success for a write that did not
/// happen, and never a typed condition error (`false` from create, `LeaseHeld` naming the
/// caller, `LeaseLost`, a regression) caused only by the same call's own first attempt.
pub async fn dropped_reply_is_never_a_false_answer(
    factory: &dyn StoreFactory,
    hooks: &dyn BackendHooks,
) -> BackendOutcome {
    let (app, store) = open(factory, "lossy").await?;
    let lossy = match hooks.open_lossy(&app).await? {
        Hooked::Done(lossy) => lossy,
        Hooked::Unsupported(why) => return Ok(Covered::Not(why)),
    };
    let (l, link) = (&*lossy.store, &*lossy.link);
    let a = worker("a");
    for i in 0..3 {
        let k = key("s", &format!("lossy-{i}"));
        link.drop_next_reply();
        match l.create_lease_if_absent(&k, &[], None).await {
            Ok(true) => {
                fetch(&*store, &k).await?;
            }
            Ok(false) => {
                return Err(Failure::new(
                    Clause::Faults,
                    format!(
                        "create_lease_if_absent of a new {k} answered false after a lost reply"
                    ),
                ));
            }
            Err(e) if e.is_retryable() => {
                store.create_lease_if_absent(&k, &[], None).await?;
            }
            Err(e) => return Err(fault(format!("create_lease_if_absent of {k}: {e}"))),
        }
        link.drop_next_reply();
        let lease = match l.get_lease(&k, &a, long()).await {
            Ok(lease) => {
                let stored = fetch(&*store, &k).await?;
                ensure!(
                    stored.owner.as_ref() == Some(&a) && stored.token == lease.token,
                    Faults,
                    "get_lease answered {lease:?} after a lost reply, the store has {stored:?}"
                );
                lease
            }
            Err(e) if e.is_retryable() => store.get_lease(&k, &a, long()).await?,
            Err(e) => return Err(fault(format!("get_lease of {k}: {e}"))),
        };
        let position = seq(&(10 + i).to_string());
        link.drop_next_reply();
        match l.checkpoint_sequence(&k, &a, lease.token, &position).await {
            Ok(_) => {
                let stored = fetch(&*store, &k).await?.checkpoint;
                ensure!(
                    stored.as_ref() == Some(&position),
                    Faults,
                    "a checkpoint of {position:?} answered Ok after a lost reply, the store \
                     has {stored:?}"
                );
            }
            Err(e) if e.is_retryable() => {}
            Err(e) => return Err(fault(format!("checkpoint of {k}: {e}"))),
        }
        link.drop_next_reply();
        match l.renew(&k, &a, lease.token, long()).await {
            Ok(_) => {}
            Err(e) if e.is_retryable() => {}
            Err(e) => return Err(fault(format!("renew of {k}: {e}"))),
        }
    }
    ensure!(
        link.dropped() > 0,
        Faults,
        "the lossy link dropped no reply: the scenario tested nothing"
    );
    Ok(Covered::Fully)
}

/// `raw` for a message: quoted, and shortened to its length past 24 bytes.
fn shown(raw: &str) -> String {
    if raw.len() <= 24 {
        format!("{raw:?}")
    } else {
        let head: String = raw.chars().take(16).collect();
        format!("{head:?}… ({} bytes)", raw.len())
    }
}

fn fault(message: String) -> Failure {
    Failure::new(
        Clause::Faults,
        format!("after a lost reply, a typed error the call itself caused: {message}"),
    )
}

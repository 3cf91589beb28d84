//! The contract's state transitions as pure functions over one record.
//!
//! Each function takes the current record (or `None` when absent), the arguments of the
//! operation and the store-clock instant, and returns either the record to write or the error the
//! operation must report. A store that can apply one of them atomically (a mutex, a write
//! transaction, a compare-and-set on a version) implements the operation exactly as the memory
//! reference store does. Stores that compile the rules into one conditional statement or script
//! instead are held to the same results by the conformance suite's model test.

use std::cmp::Ordering;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::types::{
    AppName, FencingToken, HeartbeatTtl, InstanceId, Lease, LeaseDuration, LeaseKey, Position,
    ShardId, WorkerId,
};

/// What a rule decided: write this record, or leave the store as it is and return it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Store this record, then return it.
    Write(Lease),
    /// Nothing to write (an idempotent repeat); return this record.
    Unchanged(Lease),
}

impl Outcome {
    /// The record the operation returns.
    pub fn lease(&self) -> &Lease {
        match self {
            Self::Write(l) | Self::Unchanged(l) => l,
        }
    }

    /// The record the operation returns, by value.
    pub fn into_lease(self) -> Lease {
        match self {
            Self::Write(l) | Self::Unchanged(l) => l,
        }
    }
}

fn deadline(now: SystemTime, duration: LeaseDuration) -> SystemTime {
    now + duration.get()
}

fn lost(key: &LeaseKey, worker: &WorkerId, token: FencingToken) -> Error {
    Error::LeaseLost {
        key: key.clone(),
        worker: worker.clone(),
        token,
    }
}

/// Grants `lease` to `worker` as a new owner: bumps the token, counts an owner switch, drops
/// any hand-off claim.
fn grant(mut lease: Lease, worker: &WorkerId, until: SystemTime) -> Lease {
    lease.owner = Some(worker.clone());
    lease.token = lease.token.next();
    lease.deadline = Some(until);
    lease.claim = None;
    lease.owner_switches_since_checkpoint = lease.owner_switches_since_checkpoint.saturating_add(1);
    lease
}

/// Operation 2, create if absent: `Some` record to insert, or `None` when one exists.
pub fn create_if_absent(
    current: Option<&Lease>,
    key: &LeaseKey,
    parents: &[ShardId],
    initial: Option<&Position>,
) -> Option<Lease> {
    match current {
        Some(_) => None,
        None => Some(Lease::new(key.clone(), parents.to_vec(), initial.cloned())),
    }
}

/// Operation 3, get_lease: grant when free, expired, or already held by `worker` (then only the
/// deadline moves). A grant to a new owner bumps the token. An absent record is created.
///
/// A claim is honoured (contract, "Claims"): a free lease that its last holder released while
/// it carried a claim stays reserved for the claimant until the deadline the holder last
/// renewed to (at most one lease duration after that renewal); anyone else gets
/// [`Error::LeaseHeld`] naming the claimant as holder. After that instant anyone may take it.
pub fn get_lease(
    current: Option<Lease>,
    key: &LeaseKey,
    worker: &WorkerId,
    duration: LeaseDuration,
    now: SystemTime,
) -> Result<Lease> {
    let lease = current.unwrap_or_else(|| Lease::new(key.clone(), Vec::new(), None));
    let until = deadline(now, duration);
    match &lease.owner {
        Some(owner) if owner == worker => Ok(Lease {
            deadline: Some(until),
            ..lease
        }),
        Some(owner) if lease.is_live_at(now) => Err(Error::LeaseHeld {
            key: key.clone(),
            holder: owner.clone(),
            remaining: remaining(lease.deadline, now),
        }),
        None => match lease.reserved_for(now) {
            Some(claimant) if claimant != worker => Err(Error::LeaseHeld {
                key: key.clone(),
                holder: claimant.clone(),
                remaining: remaining(lease.deadline, now),
            }),
            _ => Ok(grant(lease, worker, until)),
        },
        _ => Ok(grant(lease, worker, until)),
    }
}

/// Time from `now` to `deadline`, zero when past.
pub fn remaining(deadline: Option<SystemTime>, now: SystemTime) -> Duration {
    deadline
        .and_then(|d| d.duration_since(now).ok())
        .unwrap_or_default()
}

/// Operation 4, renew: iff owner and token match, even past the deadline.
pub fn renew(
    current: Option<Lease>,
    key: &LeaseKey,
    worker: &WorkerId,
    token: FencingToken,
    duration: LeaseDuration,
    now: SystemTime,
) -> Result<Lease> {
    match current {
        Some(lease) if lease.is_held_by(worker, token) => Ok(Lease {
            deadline: Some(deadline(now, duration)),
            ..lease
        }),
        _ => Err(lost(key, worker, token)),
    }
}

/// The monotonicity rule: `attempted` must not be behind `stored`, and nothing but `SHARD_END`
/// itself follows `SHARD_END`. Equal positions are accepted (an idempotent repeat).
pub fn check_progress(
    key: &LeaseKey,
    stored: Option<&Position>,
    attempted: &Position,
) -> Result<()> {
    let Some(stored) = stored else { return Ok(()) };
    let regression = attempted.cmp_progress(stored) == Ordering::Less
        || (*stored == Position::ShardEnd && *attempted != Position::ShardEnd);
    if regression {
        return Err(Error::CheckpointRegression {
            key: key.clone(),
            stored: stored.clone(),
            attempted: attempted.clone(),
        });
    }
    Ok(())
}

/// Operation 5, checkpoint: fenced on owner and token, monotonic; clears the pending position
/// and the owner-switch count.
pub fn checkpoint(
    current: Option<Lease>,
    key: &LeaseKey,
    worker: &WorkerId,
    token: FencingToken,
    position: &Position,
) -> Result<Lease> {
    match current {
        Some(lease) if lease.is_held_by(worker, token) => {
            check_progress(key, lease.checkpoint.as_ref(), position)?;
            Ok(Lease {
                checkpoint: Some(position.clone()),
                pending_checkpoint: None,
                owner_switches_since_checkpoint: 0,
                ..lease
            })
        }
        _ => Err(lost(key, worker, token)),
    }
}

/// Operation 14, prepare checkpoint: fenced like a checkpoint and checked against the stored
/// checkpoint; stores the pending position.
pub fn prepare_checkpoint(
    current: Option<Lease>,
    key: &LeaseKey,
    worker: &WorkerId,
    token: FencingToken,
    position: &Position,
) -> Result<Lease> {
    match current {
        Some(lease) if lease.is_held_by(worker, token) => {
            check_progress(key, lease.checkpoint.as_ref(), position)?;
            Ok(Lease {
                pending_checkpoint: Some(position.clone()),
                ..lease
            })
        }
        _ => Err(lost(key, worker, token)),
    }
}

/// Operation 7, release: clears owner and deadline, keeps token and checkpoint. Repeating a
/// release that already happened (free, same token) is not an error and writes nothing.
/// Releasing a lease that carries a claim keeps the deadline: until then the lease is reserved
/// for the claimant ([`get_lease`]).
pub fn remove_lease_owner(
    current: Option<Lease>,
    key: &LeaseKey,
    worker: &WorkerId,
    token: FencingToken,
) -> Result<Outcome> {
    match current {
        Some(lease) if lease.is_held_by(worker, token) => Ok(Outcome::Write(Lease {
            owner: None,
            // A claimed lease keeps its deadline: the claimant's reservation (see `get_lease`).
            deadline: lease.claim.as_ref().and(lease.deadline),
            ..lease
        })),
        Some(lease) if lease.owner.is_none() && lease.token == token => {
            Ok(Outcome::Unchanged(lease))
        }
        _ => Err(lost(key, worker, token)),
    }
}

/// Operation 7, admin form: clears owner and deadline whoever holds it.
pub fn evict_lease(current: Option<Lease>, key: &LeaseKey) -> Result<Lease> {
    match current {
        Some(lease) => Ok(Lease {
            owner: None,
            deadline: None,
            ..lease
        }),
        None => Err(Error::lease_not_found(key)),
    }
}

/// Operation 10, steal: only if owner and token are exactly what the caller saw; bumps the token.
/// Repeating a steal that already happened (thief holds it with the next token) is not an error.
pub fn steal(
    current: Option<Lease>,
    key: &LeaseKey,
    thief: &WorkerId,
    expected_owner: &WorkerId,
    expected_token: FencingToken,
    duration: LeaseDuration,
    now: SystemTime,
) -> Result<Outcome> {
    if thief == expected_owner {
        return Err(Error::invalid(
            "thief",
            "a worker cannot steal a lease from itself",
        ));
    }
    match current {
        Some(lease) if lease.is_held_by(expected_owner, expected_token) => {
            Ok(Outcome::Write(grant(lease, thief, deadline(now, duration))))
        }
        Some(lease) if lease.is_held_by(thief, expected_token.next()) => {
            Ok(Outcome::Unchanged(lease))
        }
        _ => Err(Error::LeaseChanged {
            key: key.clone(),
            expected_owner: expected_owner.clone(),
            expected_token,
        }),
    }
}

/// Operation 11, claim: records that `claimant` asks the holder for a hand-off. A claim by the
/// holder itself writes nothing.
pub fn claim(current: Option<Lease>, key: &LeaseKey, claimant: &WorkerId) -> Result<Outcome> {
    match current {
        Some(lease) if lease.owner.as_ref() == Some(claimant) => Ok(Outcome::Unchanged(lease)),
        Some(lease) if lease.claim.as_ref() == Some(claimant) => Ok(Outcome::Unchanged(lease)),
        Some(lease) => Ok(Outcome::Write(Lease {
            claim: Some(claimant.clone()),
            ..lease
        })),
        None => Err(Error::lease_not_found(key)),
    }
}

/// Admin reset of a checkpoint: the one way to move a position backwards. Clears the pending
/// position and the owner-switch count; ownership and token are untouched.
pub fn reset_checkpoint(
    current: Option<Lease>,
    key: &LeaseKey,
    position: Option<&Position>,
) -> Result<Lease> {
    match current {
        Some(lease) => Ok(Lease {
            checkpoint: position.cloned(),
            pending_checkpoint: None,
            owner_switches_since_checkpoint: 0,
            ..lease
        }),
        None => Err(Error::lease_not_found(key)),
    }
}

/// Renew-many input check: no key twice.
pub fn check_renew_batch(leases: &[(LeaseKey, FencingToken)]) -> Result<()> {
    let mut keys: Vec<&LeaseKey> = leases.iter().map(|(k, _)| k).collect();
    keys.sort();
    if keys.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid(
            "leases",
            "a lease key appears more than once",
        ));
    }
    Ok(())
}

/// The admin import's check of a whole record: it must be one the contract's operations could
/// have produced. A free record has no deadline (release and evict clear it); a held record
/// has a token of at least 1 (every grant bumps it from 0); a claim never names the holder
/// ([`claim`] writes nothing then); the pending checkpoint is not behind the checkpoint (it is
/// checked like one, [`check_progress`]); the parents neither repeat nor name the shard
/// itself. Anything else is [`Error::InvalidInput`] naming the field.
pub fn check_import(record: &Lease) -> Result<()> {
    if record.owner.is_none() && record.deadline.is_some() {
        return Err(Error::invalid("deadline", "a free record has no deadline"));
    }
    if record.owner.is_some() && record.token == FencingToken(0) {
        return Err(Error::invalid(
            "token",
            "a held record has token 1 or more: every grant bumps it",
        ));
    }
    if record.claim.is_some() && record.claim == record.owner {
        return Err(Error::invalid(
            "claim",
            "the holder cannot claim its own lease",
        ));
    }
    if let Some(pending) = &record.pending_checkpoint {
        check_progress(&record.key, record.checkpoint.as_ref(), pending).map_err(|_| {
            Error::invalid(
                "pending_checkpoint",
                "the pending checkpoint is behind the checkpoint",
            )
        })?;
    }
    let mut parents: Vec<&ShardId> = record.parents.iter().collect();
    parents.sort();
    if parents.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid("parents", "a parent appears more than once"));
    }
    if parents.contains(&&record.key.shard) {
        return Err(Error::invalid(
            "parents",
            "a shard cannot be its own parent",
        ));
    }
    Ok(())
}

/// Admin import: `Some(record)` to insert when none exists, `None` when one does (nothing is
/// written then); an invalid record is rejected first ([`check_import`]).
pub fn import_lease(current: Option<&Lease>, record: &Lease) -> Result<Option<Lease>> {
    check_import(record)?;
    Ok(match current {
        Some(_) => None,
        None => Some(record.clone()),
    })
}

/// Operation 16's answer from the app names a backend read (in any order, repeats allowed, as
/// pages or a key scan return them): each validated, sorted by bytes, each once. A name that is
/// not a valid [`AppName`] (a hand-edited row) is [`Error::Corrupt`] naming `app`.
///
/// ```
/// use checkpoint_core::{AppName, rules};
///
/// let apps = rules::stored_apps(["b".to_owned(), "a".to_owned(), "b".to_owned()])?;
/// assert_eq!(apps, vec![AppName::new("a")?, AppName::new("b")?]);
/// assert_eq!(rules::stored_apps(["a b".to_owned()]).unwrap_err().field(), Some("app"));
/// # Ok::<(), checkpoint_core::Error>(())
/// ```
pub fn stored_apps(names: impl IntoIterator<Item = String>) -> Result<Vec<AppName>> {
    let mut apps = names
        .into_iter()
        .map(|name| {
            AppName::new(name.clone()).map_err(|e| Error::corrupt(&name, "app", e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    apps.sort();
    apps.dedup();
    Ok(apps)
}

/// A membership record: the instance that registered the worker id and when the registration
/// expires by the store's clock (operation 12).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The nonce of the handle that registered (or took over) the id.
    pub instance: InstanceId,
    /// The instant the registration expires: live while the store's clock is before it.
    pub expires: SystemTime,
}

/// Operation 12, register: the record to write for `worker` registered by `instance` until
/// `now + ttl`. Granted when no record exists, when the record is this instance's, or when
/// another instance's record has expired by the store's clock (`expires <= now`: a takeover);
/// [`Error::WorkerIdInUse`] while another instance's record is live.
pub fn register_worker(
    current: Option<&Member>,
    worker: &WorkerId,
    instance: &InstanceId,
    now: SystemTime,
    ttl: HeartbeatTtl,
) -> Result<Member> {
    match current {
        Some(m) if m.instance != *instance && m.expires > now => {
            Err(Error::worker_id_in_use(worker))
        }
        _ => Ok(Member {
            instance: instance.clone(),
            expires: now + ttl.get(),
        }),
    }
}

/// Operation 12, heartbeat: the record extended to `now + ttl` when it is `instance`'s (live or
/// expired but not pruned); [`Error::NotFound`] when there is none (register again);
/// [`Error::WorkerIdInUse`] when another instance's record stands there, live or not (this
/// instance was taken over; only a register may take an expired record over).
pub fn heartbeat(
    current: Option<&Member>,
    worker: &WorkerId,
    instance: &InstanceId,
    now: SystemTime,
    ttl: HeartbeatTtl,
) -> Result<Member> {
    match current {
        None => Err(Error::worker_not_found(worker)),
        Some(m) if m.instance != *instance => Err(Error::worker_id_in_use(worker)),
        Some(_) => Ok(Member {
            instance: instance.clone(),
            expires: now + ttl.get(),
        }),
    }
}

//! Model-based test: random sequences of operations from three workers, applied both to the
//! store under test and to the memory reference store, must give identical results (values,
//! error kinds, the holder a refusal names) and identical final state. Failing sequences are
//! shrunk with proptest.
//!
//! Time is part of the model. On a factory with a [manual clock](super::StoreFactory::manual_clock)
//! the reference runs on a manual clock of its own started at the same instant; leases last
//! 100 ms, 1 s or 5 s, heartbeats 100 ms or 1 s, and `Advance` operations move both clocks, so
//! expiry, late renewal, heartbeat TTLs, deadlines and `LeaseHeld.remaining` are compared
//! exactly. On a store's own clock (PostgreSQL, Redis, DynamoDB) every duration is 300 s, long
//! against the round trips, time is not moved, and deadlines and `remaining` must agree with
//! the reference within [`ROUND_TRIP_TOLERANCE`] (plus the skew allowance of a client clock).
//!
//! Cases: 256 by default, `CHECKPOINT_MODEL_CASES` to change; `CHECKPOINT_MODEL_SEED` (hex)
//! replays a reported seed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::{
    Clause, Failure, OBSERVED_LATENCY_ALLOWANCE, Outcome, ROUND_TRIP_TOLERANCE, StoreFactory,
    random_app,
};
use crate::clock::{Clock, ManualClock};
use crate::error::{Error, Result};
use crate::memory::{MemoryDatabase, MemoryStore};
use crate::store::{ClockSource, Store};
use crate::types::{
    FencingToken, HeartbeatTtl, Lease, LeaseDuration, LeaseKey, Position, ShardId, WorkerId,
};

const WORKERS: [&str; 3] = ["w0", "w1", "w2"];
const KEYS: [(&str, &str); 3] = [("s0", "shard-0"), ("s0", "shard-1"), ("s1", "shard-0")];

/// A position drawn from a small space so that ties, regressions and SHARD_END all occur.
#[derive(Clone, Debug)]
enum Pos {
    Trim,
    Latest,
    At(u8),
    Seq(u8, u8),
    End,
}

/// A token relative to the one stored when the operation runs: the current one, or a stale or
/// future one.
#[derive(Clone, Copy, Debug)]
enum Tok {
    Current,
    Offset(i8),
}

#[derive(Clone, Debug)]
enum Op {
    Create {
        key: usize,
        parent: Option<usize>,
        initial: Option<Pos>,
    },
    Get {
        key: usize,
        worker: usize,
        d: usize,
    },
    Renew {
        key: usize,
        worker: usize,
        token: Tok,
        d: usize,
    },
    RenewMany {
        worker: usize,
        keys: Vec<(usize, Tok)>,
        d: usize,
    },
    Checkpoint {
        key: usize,
        worker: usize,
        token: Tok,
        pos: Pos,
    },
    Prepare {
        key: usize,
        worker: usize,
        token: Tok,
        pos: Pos,
    },
    Fetch {
        key: usize,
    },
    Release {
        key: usize,
        worker: usize,
        token: Tok,
    },
    ForceRelease {
        key: usize,
    },
    Delete {
        key: usize,
    },
    List {
        stream: Option<usize>,
    },
    Steal {
        key: usize,
        thief: usize,
        owner: usize,
        token: Tok,
        d: usize,
    },
    Claim {
        key: usize,
        worker: usize,
    },
    Reset {
        key: usize,
        pos: Option<Pos>,
    },
    Register {
        worker: usize,
        ttl: usize,
    },
    Heartbeat {
        worker: usize,
        ttl: usize,
    },
    Deregister {
        worker: usize,
    },
    Live,
    /// Moves time by `STEPS[step]` (manual clocks only).
    Advance {
        step: usize,
    },
}

/// Lease durations on a manual clock.
const DURATIONS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_secs(1),
    Duration::from_secs(5),
];
/// Heartbeat TTLs on a manual clock.
const TTLS: [Duration; 2] = [Duration::from_millis(100), Duration::from_secs(1)];
/// Steps of `Advance`: around the durations, so deadlines are hit exactly, just before and
/// just after.
const STEPS: [Duration; 6] = [
    Duration::from_millis(1),
    Duration::from_millis(99),
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_secs(1),
    Duration::from_secs(5),
];
/// Every duration on a store's own clock: long against the round trips.
const LONG: Duration = Duration::from_secs(300);

fn pos_strategy() -> impl Strategy<Value = Pos> {
    prop_oneof![
        1 => Just(Pos::Trim),
        1 => Just(Pos::Latest),
        1 => (0u8..3).prop_map(Pos::At),
        8 => (0u8..12, 0u8..3).prop_map(|(s, sub)| Pos::Seq(s, sub)),
        1 => Just(Pos::End),
    ]
}

fn tok_strategy() -> impl Strategy<Value = Tok> {
    prop_oneof![4 => Just(Tok::Current), 1 => (-2i8..=1).prop_map(Tok::Offset)]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    let worker = 0..WORKERS.len();
    prop_oneof![
        2 => (key.clone(), proptest::option::of(0..KEYS.len()), proptest::option::of(pos_strategy()))
            .prop_map(|(key, parent, initial)| Op::Create { key, parent, initial }),
        6 => (key.clone(), worker.clone(), 0..DURATIONS.len()).prop_map(|(key, worker, d)| Op::Get { key, worker, d }),
        3 => (key.clone(), worker.clone(), tok_strategy(), 0..DURATIONS.len())
            .prop_map(|(key, worker, token, d)| Op::Renew { key, worker, token, d }),
        2 => (worker.clone(), proptest::collection::vec((0..KEYS.len(), tok_strategy()), 0..4), 0..DURATIONS.len())
            .prop_map(|(worker, keys, d)| Op::RenewMany { worker, keys, d }),
        8 => (key.clone(), worker.clone(), tok_strategy(), pos_strategy())
            .prop_map(|(key, worker, token, pos)| Op::Checkpoint { key, worker, token, pos }),
        3 => (key.clone(), worker.clone(), tok_strategy(), pos_strategy())
            .prop_map(|(key, worker, token, pos)| Op::Prepare { key, worker, token, pos }),
        2 => key.clone().prop_map(|key| Op::Fetch { key }),
        3 => (key.clone(), worker.clone(), tok_strategy()).prop_map(|(key, worker, token)| Op::Release { key, worker, token }),
        1 => key.clone().prop_map(|key| Op::ForceRelease { key }),
        1 => key.clone().prop_map(|key| Op::Delete { key }),
        1 => proptest::option::of(0usize..2).prop_map(|stream| Op::List { stream }),
        3 => (key.clone(), worker.clone(), worker.clone(), tok_strategy(), 0..DURATIONS.len())
            .prop_map(|(key, thief, owner, token, d)| Op::Steal { key, thief, owner, token, d }),
        2 => (key.clone(), worker.clone()).prop_map(|(key, worker)| Op::Claim { key, worker }),
        1 => (key, proptest::option::of(pos_strategy())).prop_map(|(key, pos)| Op::Reset { key, pos }),
        2 => (worker.clone(), 0..TTLS.len()).prop_map(|(worker, ttl)| Op::Register { worker, ttl }),
        3 => (worker.clone(), 0..TTLS.len()).prop_map(|(worker, ttl)| Op::Heartbeat { worker, ttl }),
        1 => worker.prop_map(|worker| Op::Deregister { worker }),
        3 => Just(Op::Live),
        4 => (0..STEPS.len()).prop_map(|step| Op::Advance { step }),
    ]
}

fn position(p: &Pos) -> Position {
    match p {
        Pos::Trim => Position::TrimHorizon,
        Pos::Latest => Position::Latest,
        Pos::At(t) => Position::AtTimestamp(1_700_000_000_000 + u64::from(*t)),
        Pos::Seq(s, sub) => {
            // Mix short and long spellings (with leading zeros) of the same values.
            let digits = if s % 2 == 0 {
                format!("{s}")
            } else {
                format!("000{s}")
            };
            Position::sequence_with_sub(&digits, u64::from(*sub)).expect("valid")
        }
        Pos::End => Position::ShardEnd,
    }
}

fn lease_key(i: usize) -> LeaseKey {
    LeaseKey::parse(KEYS[i].0, KEYS[i].1).expect("valid")
}

fn worker(i: usize) -> WorkerId {
    WorkerId::new(WORKERS[i]).expect("valid")
}

/// A record without its deadline, which goes to `deadlines` to be compared by [`Times`].
fn view(l: &Lease, deadlines: &mut Vec<Option<SystemTime>>) -> String {
    deadlines.push(l.deadline);
    format!(
        "{}: owner={:?} token={} checkpoint={:?} pending={:?} parents={:?} claim={:?} switches={}",
        l.key,
        l.owner.as_ref().map(|w| w.as_str()),
        l.token,
        l.checkpoint.as_ref().map(|p| p.to_string()),
        l.pending_checkpoint.as_ref().map(|p| p.to_string()),
        l.parents.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        l.claim.as_ref().map(|w| w.as_str()),
        l.owner_switches_since_checkpoint,
    )
}

/// What one operation answered: `text` is compared exactly; the deadlines of the records it
/// returned and the time left a refusal reported are compared by [`Times`].
#[derive(Debug, Default, PartialEq)]
struct Seen {
    text: String,
    deadlines: Vec<Option<SystemTime>>,
    remaining: Option<Duration>,
}

/// How the times of two answers are compared.
#[derive(Clone, Copy, Debug)]
enum Times {
    /// Both stores run on manual clocks standing at the same instant.
    Exact,
    /// The store runs on its own clock; times agree within this much.
    Within(Duration),
}

impl Seen {
    fn agrees(&self, other: &Seen, times: Times) -> bool {
        if self.text != other.text || self.deadlines.len() != other.deadlines.len() {
            return false;
        }
        let Times::Within(tolerance) = times else {
            return self == other;
        };
        let close = |a: SystemTime, b: SystemTime| {
            a.duration_since(b)
                .unwrap_or_else(|e| e.duration())
                .le(&tolerance)
        };
        let deadlines = self
            .deadlines
            .iter()
            .zip(&other.deadlines)
            .all(|pair| match pair {
                (Some(a), Some(b)) => close(*a, *b),
                (None, None) => true,
                _ => false,
            });
        let remaining = match (self.remaining, other.remaining) {
            (Some(a), Some(b)) => a.abs_diff(b) <= tolerance,
            (None, None) => true,
            _ => false,
        };
        deadlines && remaining
    }
}

fn observe<T>(r: Result<T>, f: impl FnOnce(T) -> String) -> (String, Option<Duration>) {
    match r {
        Ok(v) => (format!("Ok({})", f(v)), None),
        Err(Error::LeaseHeld {
            holder, remaining, ..
        }) => (format!("Err(LeaseHeld by {holder})"), Some(remaining)),
        Err(e) => (format!("Err({:?})", e.kind()), None),
    }
}

fn duration(manual: bool, i: usize) -> LeaseDuration {
    LeaseDuration::new(if manual { DURATIONS[i] } else { LONG }).expect("valid")
}

fn ttl(manual: bool, i: usize) -> HeartbeatTtl {
    HeartbeatTtl::new(if manual { TTLS[i] } else { LONG }).expect("valid")
}

/// Resolves a relative token against the reference model's record.
async fn token(model: &MemoryStore, key: &LeaseKey, tok: Tok) -> FencingToken {
    use crate::store::Checkpointer;
    let current = model
        .fetch_checkpoint(key)
        .await
        .ok()
        .flatten()
        .map_or(0, |l| l.token.0);
    match tok {
        Tok::Current => FencingToken(current),
        Tok::Offset(o) => FencingToken(current.saturating_add_signed(i64::from(o))),
    }
}

/// Applies one operation and describes its answer. `manual` picks the short durations.
async fn apply(store: &dyn Store, op: &Op, tok: &[FencingToken], manual: bool) -> Seen {
    let mut dl = Vec::new();
    let (text, remaining) = match op {
        Op::Create {
            key,
            parent,
            initial,
        } => {
            let parents: Vec<ShardId> = parent
                .iter()
                .map(|p| ShardId::new(format!("parent-{p}")).expect("valid"))
                .collect();
            let initial = initial.as_ref().map(position);
            observe(
                store
                    .create_lease_if_absent(&lease_key(*key), &parents, initial.as_ref())
                    .await,
                |b| b.to_string(),
            )
        }
        Op::Get { key, worker: w, d } => observe(
            store
                .get_lease(&lease_key(*key), &worker(*w), duration(manual, *d))
                .await,
            |l| view(&l, &mut dl),
        ),
        Op::Renew {
            key, worker: w, d, ..
        } => observe(
            store
                .renew(&lease_key(*key), &worker(*w), tok[0], duration(manual, *d))
                .await,
            |l| view(&l, &mut dl),
        ),
        Op::RenewMany { worker: w, keys, d } => {
            let mut batch: Vec<(LeaseKey, FencingToken)> = Vec::new();
            for (i, (k, _)) in keys.iter().enumerate() {
                if batch.iter().all(|(b, _)| b != &lease_key(*k)) {
                    batch.push((lease_key(*k), tok[i]));
                }
            }
            observe(
                store
                    .renew_many(&worker(*w), &batch, duration(manual, *d))
                    .await,
                |o| {
                    format!(
                        "renewed={:?} lost={:?}",
                        o.renewed
                            .iter()
                            .map(|l| view(l, &mut dl))
                            .collect::<Vec<_>>(),
                        o.lost
                    )
                },
            )
        }
        Op::Checkpoint {
            key,
            worker: w,
            pos,
            ..
        } => observe(
            store
                .checkpoint_sequence(&lease_key(*key), &worker(*w), tok[0], &position(pos))
                .await,
            |l| view(&l, &mut dl),
        ),
        Op::Prepare {
            key,
            worker: w,
            pos,
            ..
        } => observe(
            store
                .prepare_checkpoint(&lease_key(*key), &worker(*w), tok[0], &position(pos))
                .await,
            |l| view(&l, &mut dl),
        ),
        Op::Fetch { key } => observe(store.fetch_checkpoint(&lease_key(*key)).await, |l| {
            format!("{:?}", l.as_ref().map(|l| view(l, &mut dl)))
        }),
        Op::Release { key, worker: w, .. } => observe(
            store
                .remove_lease_owner(&lease_key(*key), &worker(*w), tok[0])
                .await,
            |l| view(&l, &mut dl),
        ),
        Op::ForceRelease { key } => observe(store.evict_lease(&lease_key(*key)).await, |l| {
            view(&l, &mut dl)
        }),
        Op::Delete { key } => observe(store.remove_lease_info(&lease_key(*key)).await, |()| {
            String::new()
        }),
        Op::List { stream } => {
            let stream =
                stream.map(|s| crate::types::StreamName::new(format!("s{s}")).expect("valid"));
            observe(store.list_leases(stream.as_ref()).await, |ls| {
                format!(
                    "{:?}",
                    ls.iter().map(|l| view(l, &mut dl)).collect::<Vec<_>>()
                )
            })
        }
        Op::Steal {
            key,
            thief,
            owner,
            d,
            ..
        } => observe(
            store
                .steal(
                    &lease_key(*key),
                    &worker(*thief),
                    &worker(*owner),
                    tok[0],
                    duration(manual, *d),
                )
                .await,
            |l| view(&l, &mut dl),
        ),
        Op::Claim { key, worker: w } => {
            observe(store.claim(&lease_key(*key), &worker(*w)).await, |l| {
                view(&l, &mut dl)
            })
        }
        Op::Reset { key, pos } => {
            let pos = pos.as_ref().map(position);
            observe(
                store.reset_checkpoint(&lease_key(*key), pos.as_ref()).await,
                |l| view(&l, &mut dl),
            )
        }
        Op::Register { worker: w, ttl: t } => observe(
            store.register_worker(&worker(*w), ttl(manual, *t)).await,
            |()| String::new(),
        ),
        Op::Heartbeat { worker: w, ttl: t } => {
            observe(store.heartbeat(&worker(*w), ttl(manual, *t)).await, |()| {
                String::new()
            })
        }
        Op::Deregister { worker: w } => observe(store.deregister_worker(&worker(*w)).await, |()| {
            String::new()
        }),
        Op::Live => observe(store.live_workers().await, |ws| format!("{ws:?}")),
        Op::Advance { step } => (format!("advanced {:?}", STEPS[*step]), None),
    };
    Seen {
        text,
        deadlines: dl,
        remaining,
    }
}

/// Runs one sequence against a fresh app of the store under test and a fresh reference model
/// (on a manual clock standing where the factory's stands, when it has one).
async fn run_case(factory: &dyn StoreFactory, ops: &[Op]) -> Outcome {
    let app = random_app("model");
    let store = factory.open(&app).await?;
    let clocks = factory.manual_clock().map(|clock| {
        let reference = Arc::new(ManualClock::new(clock.now()));
        (clock, reference)
    });
    let (model, times) = match &clocks {
        Some((_, reference)) => (
            MemoryDatabase::with_clock(reference.clone()).open(app),
            Times::Exact,
        ),
        None => {
            let skew = match store.capabilities().clock {
                ClockSource::Client { skew_allowance } => skew_allowance,
                ClockSource::Server | ClockSource::Host => Duration::ZERO,
                // A handle's own sighting after each reply: the request's latency counts.
                ClockSource::Observed => OBSERVED_LATENCY_ALLOWANCE,
            };
            (
                MemoryStore::new(app),
                Times::Within(ROUND_TRIP_TOLERANCE + skew),
            )
        }
    };
    let manual = clocks.is_some();
    for (i, op) in ops.iter().enumerate() {
        if let (Op::Advance { step }, Some((clock, reference))) = (op, &clocks) {
            clock.advance(STEPS[*step]);
            reference.advance(STEPS[*step]);
        }
        // Tokens are resolved once, against the model, and given to both stores.
        let toks: Vec<FencingToken> = match op {
            Op::Renew { key, token, .. }
            | Op::Checkpoint { key, token, .. }
            | Op::Prepare { key, token, .. }
            | Op::Release { key, token, .. }
            | Op::Steal { key, token, .. } => {
                vec![self::token(&model, &lease_key(*key), *token).await]
            }
            Op::RenewMany { keys, .. } => {
                let mut v = Vec::new();
                for (k, t) in keys {
                    v.push(self::token(&model, &lease_key(*k), *t).await);
                }
                v
            }
            _ => Vec::new(),
        };
        let expected = apply(&model, op, &toks, manual).await;
        let got = apply(&*store, op, &toks, manual).await;
        if !expected.agrees(&got, times) {
            return Err(Failure::new(
                Clause::Model,
                format!(
                    "step {i} {op:?} {toks:?} (times compared {times:?}):\n    reference: {expected:?}\n    store:     {got:?}"
                ),
            ));
        }
    }
    // The final state: every record, then the live workers now and (on a manual clock) just
    // before and at the end of each heartbeat TTL, so a TTL that differs anywhere shows.
    let mut finals = vec![
        (Duration::ZERO, Op::List { stream: None }),
        (Duration::ZERO, Op::Live),
    ];
    if manual {
        for step in [99, 1, 899, 1] {
            finals.push((Duration::from_millis(step), Op::Live));
        }
    }
    for (step, op) in &finals {
        if let Some((clock, reference)) = &clocks {
            clock.advance(*step);
            reference.advance(*step);
        }
        let (expected, got) = (
            apply(&model, op, &[], manual).await,
            apply(&*store, op, &[], manual).await,
        );
        if !expected.agrees(&got, times) {
            return Err(Failure::new(
                Clause::Model,
                format!(
                    "final state, {op:?}:\n    reference: {expected:?}\n    store:     {got:?}"
                ),
            ));
        }
    }
    Ok(())
}

/// The model test: random operation sequences must match the memory reference store exactly.
pub async fn model_test(factory: &dyn StoreFactory) -> Outcome {
    let cases: u32 = std::env::var("CHECKPOINT_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let seed: u64 = std::env::var("CHECKPOINT_MODEL_SEED")
        .ok()
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(rand::random);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = proptest::collection::vec(op_strategy(), 1..40);
    for case in 0..cases {
        let mut tree = strategy
            .new_tree(&mut runner)
            .map_err(|e| Failure::new(Clause::Model, format!("could not generate a case: {e}")))?;
        let Err(first) = run_case(factory, &tree.current()).await else {
            continue;
        };
        let mut best = (tree.current(), first);
        let mut steps = 0;
        if tree.simplify() {
            while steps < 300 {
                steps += 1;
                match run_case(factory, &tree.current()).await {
                    Err(f) => {
                        best = (tree.current(), f);
                        if !tree.simplify() {
                            break;
                        }
                    }
                    Ok(()) => {
                        if !tree.complicate() {
                            break;
                        }
                    }
                }
            }
        }
        return Err(Failure::new(
            Clause::Model,
            format!(
                "case {case} of {cases} (CHECKPOINT_MODEL_SEED={seed:x}) differs from the reference; shrunk to {} ops: {:?}\n  {}",
                best.0.len(),
                best.0,
                best.1
            ),
        ));
    }
    Ok(())
}

//! Model-based test: random sequences of operations from three workers, applied both to the
//! store under test and to the memory reference store, must give identical results (values and
//! error kinds) and identical final state. Failing sequences are shrunk with proptest.
//!
//! Cases: 256 by default, `CHECKPOINT_MODEL_CASES` to change; `CHECKPOINT_MODEL_SEED` (hex)
//! replays a reported seed.

use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::{Clause, Failure, Outcome, StoreFactory, random_app};
use crate::error::Result;
use crate::memory::MemoryStore;
use crate::store::Store;
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
    },
    Renew {
        key: usize,
        worker: usize,
        token: Tok,
    },
    RenewMany {
        worker: usize,
        keys: Vec<(usize, Tok)>,
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
    },
    Heartbeat {
        worker: usize,
    },
    Deregister {
        worker: usize,
    },
    Live,
}

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
        6 => (key.clone(), worker.clone()).prop_map(|(key, worker)| Op::Get { key, worker }),
        3 => (key.clone(), worker.clone(), tok_strategy()).prop_map(|(key, worker, token)| Op::Renew { key, worker, token }),
        2 => (worker.clone(), proptest::collection::vec((0..KEYS.len(), tok_strategy()), 0..4))
            .prop_map(|(worker, keys)| Op::RenewMany { worker, keys }),
        8 => (key.clone(), worker.clone(), tok_strategy(), pos_strategy())
            .prop_map(|(key, worker, token, pos)| Op::Checkpoint { key, worker, token, pos }),
        3 => (key.clone(), worker.clone(), tok_strategy(), pos_strategy())
            .prop_map(|(key, worker, token, pos)| Op::Prepare { key, worker, token, pos }),
        2 => key.clone().prop_map(|key| Op::Fetch { key }),
        3 => (key.clone(), worker.clone(), tok_strategy()).prop_map(|(key, worker, token)| Op::Release { key, worker, token }),
        1 => key.clone().prop_map(|key| Op::ForceRelease { key }),
        1 => key.clone().prop_map(|key| Op::Delete { key }),
        1 => proptest::option::of(0usize..2).prop_map(|stream| Op::List { stream }),
        3 => (key.clone(), worker.clone(), worker.clone(), tok_strategy())
            .prop_map(|(key, thief, owner, token)| Op::Steal { key, thief, owner, token }),
        2 => (key.clone(), worker.clone()).prop_map(|(key, worker)| Op::Claim { key, worker }),
        1 => (key, proptest::option::of(pos_strategy())).prop_map(|(key, pos)| Op::Reset { key, pos }),
        1 => worker.clone().prop_map(|worker| Op::Register { worker }),
        1 => worker.clone().prop_map(|worker| Op::Heartbeat { worker }),
        1 => worker.prop_map(|worker| Op::Deregister { worker }),
        1 => Just(Op::Live),
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

/// A record without its deadline (each store has its own clock).
fn view(l: &Lease) -> String {
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

fn observe<T>(r: Result<T>, f: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => format!("Ok({})", f(v)),
        Err(e) => format!("Err({:?})", e.kind()),
    }
}

fn duration() -> LeaseDuration {
    LeaseDuration::new(Duration::from_secs(300)).expect("valid")
}

fn ttl() -> HeartbeatTtl {
    HeartbeatTtl::new(Duration::from_secs(300)).expect("valid")
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

/// Applies one operation and describes its result.
async fn apply(store: &dyn Store, op: &Op, tok: &[FencingToken]) -> String {
    let d = duration();
    match op {
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
        Op::Get { key, worker: w } => observe(
            store.get_lease(&lease_key(*key), &worker(*w), d).await,
            |l| view(&l),
        ),
        Op::Renew { key, worker: w, .. } => observe(
            store.renew(&lease_key(*key), &worker(*w), tok[0], d).await,
            |l| view(&l),
        ),
        Op::RenewMany { worker: w, keys } => {
            let mut batch: Vec<(LeaseKey, FencingToken)> = Vec::new();
            for (i, (k, _)) in keys.iter().enumerate() {
                if batch.iter().all(|(b, _)| b != &lease_key(*k)) {
                    batch.push((lease_key(*k), tok[i]));
                }
            }
            observe(store.renew_many(&worker(*w), &batch, d).await, |o| {
                format!(
                    "renewed={:?} lost={:?}",
                    o.renewed.iter().map(view).collect::<Vec<_>>(),
                    o.lost
                )
            })
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
            |l| view(&l),
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
            |l| view(&l),
        ),
        Op::Fetch { key } => observe(store.fetch_checkpoint(&lease_key(*key)).await, |l| {
            format!("{:?}", l.as_ref().map(view))
        }),
        Op::Release { key, worker: w, .. } => observe(
            store
                .remove_lease_owner(&lease_key(*key), &worker(*w), tok[0])
                .await,
            |l| view(&l),
        ),
        Op::ForceRelease { key } => {
            observe(store.evict_lease(&lease_key(*key)).await, |l| view(&l))
        }
        Op::Delete { key } => observe(store.remove_lease_info(&lease_key(*key)).await, |()| {
            String::new()
        }),
        Op::List { stream } => {
            let stream =
                stream.map(|s| crate::types::StreamName::new(format!("s{s}")).expect("valid"));
            observe(store.list_leases(stream.as_ref()).await, |ls| {
                format!("{:?}", ls.iter().map(view).collect::<Vec<_>>())
            })
        }
        Op::Steal {
            key, thief, owner, ..
        } => observe(
            store
                .steal(
                    &lease_key(*key),
                    &worker(*thief),
                    &worker(*owner),
                    tok[0],
                    d,
                )
                .await,
            |l| view(&l),
        ),
        Op::Claim { key, worker: w } => {
            observe(store.claim(&lease_key(*key), &worker(*w)).await, |l| {
                view(&l)
            })
        }
        Op::Reset { key, pos } => {
            let pos = pos.as_ref().map(position);
            observe(
                store.reset_checkpoint(&lease_key(*key), pos.as_ref()).await,
                |l| view(&l),
            )
        }
        Op::Register { worker: w } => {
            observe(store.register_worker(&worker(*w), ttl()).await, |()| {
                String::new()
            })
        }
        Op::Heartbeat { worker: w } => observe(store.heartbeat(&worker(*w), ttl()).await, |()| {
            String::new()
        }),
        Op::Deregister { worker: w } => observe(store.deregister_worker(&worker(*w)).await, |()| {
            String::new()
        }),
        Op::Live => observe(store.live_workers().await, |ws| format!("{ws:?}")),
    }
}

/// Runs one sequence against a fresh app of the store under test and a fresh reference model.
async fn run_case(factory: &dyn StoreFactory, ops: &[Op]) -> Outcome {
    let app = random_app("model");
    let store = factory.open(&app).await?;
    let model = MemoryStore::new(app);
    for (i, op) in ops.iter().enumerate() {
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
        let expected = apply(&model, op, &toks).await;
        let got = apply(&*store, op, &toks).await;
        if expected != got {
            return Err(Failure::new(
                Clause::Model,
                format!(
                    "step {i} {op:?} {toks:?}:\n    reference: {expected}\n    store:     {got}"
                ),
            ));
        }
    }
    let all = Op::List { stream: None };
    let (expected, got) = (
        apply(&model, &all, &[]).await,
        apply(&*store, &all, &[]).await,
    );
    if expected != got {
        return Err(Failure::new(
            Clause::Model,
            format!("final state:\n    reference: {expected}\n    store:     {got}"),
        ));
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

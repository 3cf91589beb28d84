//! The cost of one operation from one task, library against raw SQLite, for measurements
//! (instruction counts under `valgrind --tool=callgrind`, or wall time). Not run by default:
//!
//! ```text
//! OP_COST=lib:renew,raw:renew OP_COST_COUNT=20000 \
//!   cargo test --release -p checkpoint-sqlite --test op_cost -- --ignored --nocapture
//! ```
//!
//! `OP_COST` is a comma-separated list of runs, each `lib:<op>` (through [`SqliteStore`]),
//! `raw:<op>` (the benchmark's raw baseline: one conditional `UPDATE … RETURNING *` in a
//! `BEGIN IMMEDIATE` transaction, or one `SELECT *`, on a connection opened as the store opens
//! its own, called in this thread) or `hop` (the store's round trip to its writer thread with
//! no SQLite call), with `<op>` one of `get_lease`, `renew`, `checkpoint`, `fetch`. Every run
//! works on a fresh database file with `synchronous=NORMAL`, does 200 untimed operations, then
//! `OP_COST_COUNT` (default 20,000) timed ones, and prints the mean and median in µs. Runs
//! alternate in the order given, so listing `lib:renew,raw:renew` several times alternates
//! rounds.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Checkpointer, FencingToken, LeaseDuration, LeaseKey, LeaseManager, Position, WorkerId,
};
use checkpoint_sqlite::rusqlite::{Connection, TransactionBehavior, params};
use checkpoint_sqlite::{DEFAULT_TABLE_PREFIX, SqliteConfig, SqliteStore};

const WARMUP: u64 = 200;

struct TempDb(std::path::PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

fn duration() -> LeaseDuration {
    LeaseDuration::new(Duration::from_secs(600)).expect("duration")
}

struct Setup {
    _db: TempDb,
    store: SqliteStore,
    key: LeaseKey,
    me: WorkerId,
    token: FencingToken,
}

async fn setup() -> Setup {
    let db = TempDb(std::env::temp_dir().join(format!("checkpoint-opcost-{}.db", random_app("t"))));
    let store = SqliteStore::open(SqliteConfig::file(&db.0), random_app("app"))
        .await
        .expect("open");
    let key = LeaseKey::parse("ops", "shard-000000").expect("key");
    let me = WorkerId::new("bench-worker").expect("worker");
    let token = store
        .get_lease(&key, &me, duration())
        .await
        .expect("acquire")
        .token;
    store
        .checkpoint_sequence(
            &key,
            &me,
            token,
            &Position::sequence("1").expect("position"),
        )
        .await
        .expect("checkpoint");
    Setup {
        _db: db,
        store,
        key,
        me,
        token,
    }
}

async fn lib_op(s: &Setup, op: &str, seq: u64) {
    match op {
        "get_lease" => {
            s.store
                .get_lease(&s.key, &s.me, duration())
                .await
                .expect("get_lease");
        }
        "renew" => {
            s.store
                .renew(&s.key, &s.me, s.token, duration())
                .await
                .expect("renew");
        }
        "checkpoint" => {
            let position = Position::sequence(&seq.to_string()).expect("position");
            s.store
                .checkpoint_sequence(&s.key, &s.me, s.token, &position)
                .await
                .expect("checkpoint");
        }
        "fetch" => {
            s.store
                .fetch_checkpoint(&s.key)
                .await
                .expect("fetch")
                .expect("record");
        }
        "hop" => s.store.writer_round_trip().await.expect("round trip"),
        other => panic!("unknown operation {other:?}"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The benchmark's raw operation (conformance-tests/src/bench/sqlite.rs, `Reply::Record`).
fn raw_op(conn: &mut Connection, s: &Setup, op: &str, seq: u64) {
    let t = format!("\"{DEFAULT_TABLE_PREFIX}leases\"");
    let key = "app = ?1 AND stream = ?2 AND shard = ?3";
    let app = s.store.app().as_str();
    let (stream, shard, worker) = (s.key.stream.as_str(), s.key.shard.as_str(), s.me.as_str());
    if op == "fetch" {
        let mut stmt = conn
            .prepare_cached(&format!("SELECT * FROM {t} WHERE {key}"))
            .expect("prepare");
        stmt.query_row(params![app, stream, shard], |_| Ok(()))
            .expect("fetch");
        return;
    }
    let sql = match op {
        "get_lease" => format!(
            "UPDATE {t} SET deadline_ms = ?5 WHERE {key} \
             AND (owner IS NULL OR owner = ?4 OR deadline_ms <= ?6) RETURNING *"
        ),
        "renew" => format!(
            "UPDATE {t} SET deadline_ms = ?6 WHERE {key} AND owner = ?4 AND token = ?5 RETURNING *"
        ),
        "checkpoint" => format!(
            "UPDATE {t} SET checkpoint = ?6, checkpoint_sub = '0' \
             WHERE {key} AND owner = ?4 AND token = ?5 RETURNING *"
        ),
        other => panic!("unknown operation {other:?}"),
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .expect("begin");
    let now = now_ms();
    let deadline = now + duration().as_millis() as i64;
    let token = s.token.0.to_string();
    let changed = {
        let mut stmt = tx.prepare_cached(&sql).expect("prepare");
        let seq = seq.to_string();
        let params = match op {
            "get_lease" => params![app, stream, shard, worker, deadline, now],
            "renew" => params![app, stream, shard, worker, token, deadline],
            _ => params![app, stream, shard, worker, token, seq],
        };
        let mut rows = stmt.query(params).expect("query");
        let mut n = 0;
        while rows.next().expect("step").is_some() {
            n += 1;
        }
        n
    };
    tx.commit().expect("commit");
    assert_eq!(changed, 1, "raw {op}");
}

fn report(run: &str, mut times: Vec<Duration>) {
    let n = times.len() as f64;
    let mean = times.iter().sum::<Duration>().as_secs_f64() * 1e6 / n;
    times.sort_unstable();
    let median = times[times.len() / 2].as_secs_f64() * 1e6;
    println!("OPCOST {run} mean {mean:.2} µs median {median:.2} µs ({n} ops)");
}

#[test]
#[ignore = "a measurement, not a test"]
fn op_cost() {
    let runs = std::env::var("OP_COST").unwrap_or_else(|_| "lib:checkpoint,raw:checkpoint".into());
    let count: u64 = std::env::var("OP_COST_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for run in runs.split(',') {
        let (kind, op) = run.split_once(':').unwrap_or((run, "hop"));
        let s = std::sync::Arc::new(runtime.block_on(setup()));
        let times = match kind {
            "lib" | "hop" => {
                // In a spawned task, as the benchmark runs it.
                let (s, op) = (s.clone(), op.to_owned());
                runtime
                    .block_on(runtime.spawn(async move {
                        let mut times = Vec::with_capacity(count as usize);
                        for i in 0..WARMUP + count {
                            let t = Instant::now();
                            lib_op(&s, &op, i + 2).await;
                            if i >= WARMUP {
                                times.push(t.elapsed());
                            }
                        }
                        times
                    }))
                    .expect("task")
            }
            "raw" => {
                let mut conn = s.store.open_connection().expect("connection");
                let mut times = Vec::with_capacity(count as usize);
                for i in 0..WARMUP + count {
                    let t = Instant::now();
                    raw_op(&mut conn, &s, op, i + 2);
                    if i >= WARMUP {
                        times.push(t.elapsed());
                    }
                }
                times
            }
            other => panic!("unknown run kind {other:?}"),
        };
        report(run, times);
    }
}

//! SQLite: the store on a temporary database file, and the raw baseline on connections opened
//! exactly as the store opens its own ([`SqliteStore::open_connection`]: WAL, the same
//! `synchronous`, busy timeout, `temp_store`, `foreign_keys`), each statement in a
//! `BEGIN IMMEDIATE` transaction, called directly on one OS thread per task; with `RETURNING *`
//! (`SELECT *` for a read) for the record, without for the bare write.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use checkpoint_core::conformance::random_app;
use checkpoint_sqlite::rusqlite::{Connection, TransactionBehavior, params};
use checkpoint_sqlite::{DEFAULT_TABLE_PREFIX, SqliteConfig, SqliteStore, Synchronous};

use crate::measure::{BoxError, Budget, Stats, measure_threads};
use crate::{Backend, Held, Op, Raw, Reply, Seqs, Settings, duration};

/// Two backends: the whole set at `synchronous=NORMAL`, and checkpoints at `synchronous=FULL`.
pub(crate) async fn open(settings: &Settings) -> Result<Vec<Backend>, String> {
    let mut backends = Vec::new();
    for (name, sync, ops, sizes) in [
        (
            "sqlite",
            Synchronous::Normal,
            Op::ALL.to_vec(),
            settings.renew_sizes(),
        ),
        (
            "sqlite FULL",
            Synchronous::Full,
            vec![Op::Checkpoint],
            Vec::new(),
        ),
    ] {
        let path = std::env::temp_dir().join(format!("checkpoint-bench-{}.db", random_app("f")));
        let store = SqliteStore::open(
            SqliteConfig::file(&path).with_synchronous(sync),
            random_app("bench"),
        )
        .await
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let raw = SqliteRaw::new(&store).map_err(|e| e.to_string())?;
        let files = path.clone();
        backends.push(Backend {
            name: name.to_owned(),
            store: Arc::new(store),
            raw: Some(Arc::new(raw)),
            ops,
            renew_sizes: sizes,
            requests: None,
            url: Some(format!("sqlite://{}", path.display())),
            consumer: sync == Synchronous::Normal,
            cleanup: Some(Box::new(move || Box::pin(async move { remove(files) }))),
        });
    }
    Ok(backends)
}

fn remove(path: PathBuf) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Raw statements on the store's own lease table.
struct SqliteRaw {
    store: SqliteStore,
    /// One connection per task, opened like the store's.
    conns: Arc<Vec<Mutex<Connection>>>,
    /// Bare statements.
    sql: Arc<Statements>,
    /// The same statements returning the record.
    record: Arc<Statements>,
}

struct Statements {
    get_lease: String,
    renew: String,
    checkpoint: String,
    fetch: String,
}

impl SqliteRaw {
    fn new(store: &SqliteStore) -> Result<Self, BoxError> {
        let conns = (0..8)
            .map(|_| store.open_connection().map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let t = format!("\"{DEFAULT_TABLE_PREFIX}leases\"");
        let key = "app = ?1 AND stream = ?2 AND shard = ?3";
        let statements = |returning: &str, fetched: &str| Statements {
            get_lease: format!(
                "UPDATE {t} SET deadline_ms = ?5 WHERE {key} \
                 AND (owner IS NULL OR owner = ?4 OR deadline_ms <= ?6){returning}"
            ),
            renew: format!(
                "UPDATE {t} SET deadline_ms = ?6 WHERE {key} AND owner = ?4 AND token = ?5{returning}"
            ),
            checkpoint: format!(
                "UPDATE {t} SET checkpoint = ?6, checkpoint_sub = '0' \
                 WHERE {key} AND owner = ?4 AND token = ?5{returning}"
            ),
            fetch: format!("SELECT {fetched} FROM {t} WHERE {key}"),
        };
        Ok(Self {
            store: store.clone(),
            conns: Arc::new(conns),
            sql: Arc::new(statements("", "checkpoint")),
            record: Arc::new(statements(" RETURNING *", "*")),
        })
    }
}

/// One raw operation on `conn`: a conditional `UPDATE` in a `BEGIN IMMEDIATE` transaction that
/// must change exactly one row (with `RETURNING`, the row is stepped to but not decoded), or a
/// single `SELECT`.
fn raw_op(
    conn: &mut Connection,
    sql: &Statements,
    app: &str,
    op: Op,
    h: &Held,
    seq: u64,
) -> Result<(), BoxError> {
    let (stream, shard, worker) = (
        h.key.stream.as_str(),
        h.key.shard.as_str(),
        h.worker.as_str(),
    );
    if op == Op::Fetch {
        let mut stmt = conn.prepare_cached(&sql.fetch)?;
        let found = stmt.query_row(params![app, stream, shard], |_| Ok(()));
        return match found {
            Ok(()) => Ok(()),
            Err(e) => Err(format!("raw fetch found no record: {e}").into()),
        };
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    let deadline = now + duration().as_millis() as i64;
    let token = h.token.0.to_string();
    let changed = {
        let mut stmt = tx.prepare_cached(match op {
            Op::GetLease => &sql.get_lease,
            Op::Renew => &sql.renew,
            _ => &sql.checkpoint,
        })?;
        let seq = seq.to_string();
        let params = match op {
            Op::GetLease => params![app, stream, shard, worker, deadline, now],
            Op::Renew => params![app, stream, shard, worker, token, deadline],
            _ => params![app, stream, shard, worker, token, seq],
        };
        if stmt.column_count() == 0 {
            stmt.execute(params)?
        } else {
            let mut rows = stmt.query(params)?;
            let mut n = 0;
            while rows.next()?.is_some() {
                n += 1;
            }
            n
        }
    };
    tx.commit()?;
    if changed != 1 {
        return Err(format!("raw {} changed {changed} rows", op.name()).into());
    }
    Ok(())
}

#[async_trait]
impl Raw for SqliteRaw {
    /// On the blocking thread pool, with connection `t`: the same hop to a thread as the store.
    async fn checkpoint(&self, t: usize, h: &Held, seq: u64) -> Result<(), BoxError> {
        let (conns, sql, h) = (self.conns.clone(), self.record.clone(), h.clone());
        let app = checkpoint_core::LeaseManager::app(&self.store).to_string();
        tokio::task::spawn_blocking(move || {
            let mut conn = conns[t % conns.len()]
                .lock()
                .map_err(|_| "poisoned connection")?;
            raw_op(&mut conn, &sql, &app, Op::Checkpoint, &h, seq)
        })
        .await?
    }

    async fn measure(
        &self,
        op: Op,
        reply: Reply,
        leases: Arc<Vec<Held>>,
        seqs: Arc<Seqs>,
        budget: Budget,
    ) -> Result<Stats, BoxError> {
        let conns = self.conns.clone();
        let sql = match reply {
            Reply::Record => self.record.clone(),
            Reply::Bare => self.sql.clone(),
        };
        let app = checkpoint_core::LeaseManager::app(&self.store).to_string();
        measure_threads(leases.len(), budget, move |t, _| {
            let mut conn = conns[t].lock().map_err(|_| "poisoned connection")?;
            let seq = if op == Op::Checkpoint {
                seqs.next(t)
            } else {
                0
            };
            raw_op(&mut conn, &sql, &app, op, &leases[t], seq)
        })
        .await
    }

    async fn renew_batch(&self, leases: Arc<Vec<Held>>) -> Result<bool, BoxError> {
        let (conns, sql) = (self.conns.clone(), self.sql.clone());
        let app = checkpoint_core::LeaseManager::app(&self.store).to_string();
        tokio::task::spawn_blocking(move || {
            let mut conn = conns[0].lock().map_err(|_| "poisoned connection")?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let deadline = now_ms() + duration().as_millis() as i64;
            {
                let mut stmt = tx.prepare_cached(&sql.renew)?;
                for h in leases.iter() {
                    let changed = stmt.execute(params![
                        app,
                        h.key.stream.as_str(),
                        h.key.shard.as_str(),
                        h.worker.as_str(),
                        h.token.0.to_string(),
                        deadline
                    ])?;
                    if changed != 1 {
                        return Err(format!("raw batch renewal missed {}", h.key).into());
                    }
                }
            }
            tx.commit()?;
            Ok::<_, BoxError>(true)
        })
        .await?
    }

    async fn renew_each(&self, leases: Arc<Vec<Held>>, concurrency: usize) -> Result<(), BoxError> {
        let threads = concurrency.min(leases.len()).max(1);
        let conns = (0..threads)
            .map(|_| self.store.open_connection().map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let (sql, app) = (
            self.sql.clone(),
            checkpoint_core::LeaseManager::app(&self.store).to_string(),
        );
        tokio::task::spawn_blocking(move || {
            std::thread::scope(|scope| {
                let handles = conns
                    .iter()
                    .enumerate()
                    .map(|(t, conn)| {
                        let (sql, app, leases) = (&sql, &app, &leases);
                        scope.spawn(move || {
                            let mut conn = conn.lock().map_err(|_| "poisoned connection")?;
                            for h in leases.iter().skip(t).step_by(threads) {
                                raw_op(&mut conn, sql, app, Op::Renew, h, 0)?;
                            }
                            Ok::<_, BoxError>(())
                        })
                    })
                    .collect::<Vec<_>>();
                handles.into_iter().try_for_each(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a renewal thread panicked".into()))
                })
            })
        })
        .await?
    }
}

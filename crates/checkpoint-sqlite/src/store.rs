//! [`SqliteStore`]: opening, the connection threads' entry points, and the [`LeaseManager`] and
//! [`Checkpointer`] implementations ([`checkpoint_core::Membership`] is in `workers.rs`).
//!
//! Every lease operation is one `BEGIN IMMEDIATE` transaction on one connection: it takes the
//! database's write lock (waiting up to the busy timeout for another connection or process),
//! reads the row, reads the host clock, applies the matching [`rules`] function and writes back
//! only what the rule changed (the deadline alone, the checkpoint columns alone, or the whole
//! row with one upsert), then commits. Because the write lock is held from the read to the
//! commit, no other writer in any process can interleave: this is what makes each operation
//! atomic, and it gives exactly the reference semantics of [`checkpoint_core::MemoryStore`].

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use checkpoint_core::Listing;
use checkpoint_core::rules::{self, Outcome};
use checkpoint_core::{
    AppName, BatchMode, Capabilities, Checkpointer, ClockSource, Durability, Error, FencingToken,
    InstanceId, Lease, LeaseDuration, LeaseKey, LeaseManager, Position, RenewOutcome, Result,
    ShardId, StreamName, WorkerId,
};
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use crate::config::{Location, SqliteConfig};
use crate::connections::{Connections, Direct, WriteJob, reply};
use crate::error::{STORE, from_sqlite};
use crate::rows::{collect_leases, from_ms, read_lease, to_ms, write_lease};
use crate::schema::{self, Sql};

/// A lease/checkpoint store on one SQLite database, for one app.
///
/// Cheap to clone (clones share the connections). `Send + Sync`, usable as
/// `Arc<dyn checkpoint_core::Store>`.
///
/// Blocking SQLite calls never run on the async executor: every connection lives on a thread
/// of its own (see the `connections` module); writes go to the one writer thread, which commits
/// the writes waiting at that moment together, and single-`SELECT` reads to the reader
/// threads. A caller that drops the future mid-operation loses nothing; the operation then
/// either commits or rolls back as a whole.
///
/// ```
/// use std::time::Duration;
/// use checkpoint_core::{AppName, Checkpointer, LeaseDuration, LeaseKey, LeaseManager, Position, WorkerId};
/// use checkpoint_sqlite::{SqliteConfig, SqliteStore};
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let dir = std::env::temp_dir().join(format!("checkpoint-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).expect("temp dir");
/// let config = SqliteConfig::file(dir.join("leases.db"));
/// let billing = SqliteStore::open(config, AppName::new("billing")?).await?;
/// let audit = billing.for_app(AppName::new("audit")?); // same file, its own rows
/// let key = LeaseKey::parse("orders", "shard-0")?;
/// let me = WorkerId::new("worker-1")?;
/// let lease = billing.get_lease(&key, &me, LeaseDuration::new(Duration::from_secs(10))?).await?;
/// billing.checkpoint_sequence(&key, &me, lease.token, &Position::sequence("42")?).await?;
/// assert!(audit.fetch_checkpoint(&key).await?.is_none());
/// # drop((billing, audit));
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), checkpoint_core::Error>(()) }).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct SqliteStore {
    app: AppName,
    inner: Arc<Inner>,
    conns: Arc<Connections>,
    /// This handle's nonce, written with the membership records it registers.
    pub(crate) instance: InstanceId,
}

/// What every connection thread needs: the configuration and the statements.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: SqliteConfig,
    pub(crate) sql: Sql,
}

impl Inner {
    /// The host-clock instant, truncated to the stored millisecond precision so that a returned
    /// record is exactly what a later fetch reads.
    pub(crate) fn now(&self) -> Result<(SystemTime, i64)> {
        let ms = to_ms(self.config.clock().now())?;
        Ok((from_ms(ms), ms))
    }
}

impl SqliteStore {
    /// Opens the database described by `config` for `app`, and runs [`LeaseManager::init`]
    /// (creating or upgrading the tables). Invalid settings are [`Error::InvalidInput`].
    pub async fn open(config: SqliteConfig, app: AppName) -> Result<Self> {
        config.validate()?;
        let inner = Arc::new(Inner {
            sql: Sql::new(config.table_prefix()),
            config,
        });
        let store = Self {
            app,
            conns: Arc::new(Connections::start(&inner)?),
            inner,
            instance: InstanceId::random(),
        };
        store.init().await?;
        Ok(store)
    }

    /// [`SqliteConfig::from_url`] then [`SqliteStore::open`].
    pub async fn connect(url: &str, app: AppName) -> Result<Self> {
        Self::open(SqliteConfig::from_url(url)?, app).await
    }

    /// A handle for another app on the same database and connections (the same in-memory
    /// database, too), with an instance nonce of its own.
    pub fn for_app(&self, app: AppName) -> Self {
        Self {
            app,
            inner: self.inner.clone(),
            conns: self.conns.clone(),
            instance: InstanceId::random(),
        }
    }

    /// The configuration this store was opened with.
    pub fn config(&self) -> &SqliteConfig {
        &self.inner.config
    }

    /// For tests and measurements: asks the background WAL checkpointer of a file database for
    /// a pass and waits (off the executor) until one that began after this call finished.
    /// Returns how many background passes have finished; 0 for an in-memory database, which
    /// has no log.
    #[doc(hidden)]
    pub async fn wal_checkpoint_pass(&self) -> Result<u64> {
        let Some(checkpointer) = self.conns.checkpointer.clone() else {
            return Ok(0);
        };
        tokio::task::spawn_blocking(move || checkpointer.run_pass())
            .await
            .map_err(|e| Error::backend(STORE, false, e))
    }

    /// For tests and measurements: waits (off the executor) until the background WAL
    /// checkpointer has no pass asked for or running. Returns how many background passes have
    /// finished; 0 for an in-memory database.
    #[doc(hidden)]
    pub async fn wal_checkpointer_idle(&self) -> Result<u64> {
        let Some(checkpointer) = self.conns.checkpointer.clone() else {
            return Ok(0);
        };
        tokio::task::spawn_blocking(move || checkpointer.idle())
            .await
            .map_err(|e| Error::backend(STORE, false, e))
    }

    /// For measurements: one round trip to the writer thread that runs nothing there (no SQLite
    /// call), awaited as every operation's reply is: what an operation pays on top of its
    /// SQLite work for leaving the executor.
    #[doc(hidden)]
    pub async fn writer_round_trip(&self) -> Result<()> {
        self.direct(true, |_, _| Ok(())).await
    }

    /// For tests: a receiver whose `recv` returns an error once every connection thread of
    /// this store (writer, readers, WAL checkpointer) has ended, which happens after the last
    /// handle is dropped. `None` when already taken (once per opened store).
    #[doc(hidden)]
    pub fn threads_ended(&self) -> Option<std::sync::mpsc::Receiver<()>> {
        self.conns
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Opens a new connection to the database file, set up as the store's own (WAL, busy
    /// timeout, `synchronous`), for the caller's own transactions with
    /// [`SqliteStore::checkpoint_in_transaction`]. Blocking (opening a file is quick). An
    /// in-memory database cannot be reached from another connection: that is
    /// [`Error::InvalidInput`].
    pub fn open_connection(&self) -> Result<Connection> {
        match self.inner.config.location() {
            Location::File(_) => self.inner.config.connect(),
            Location::Memory => Err(Error::invalid(
                "location",
                "an in-memory database cannot be opened from another connection",
            )),
        }
    }

    /// Transactional checkpoint (operation 13): writes the fenced checkpoint of `key` inside the
    /// caller's own open transaction on `conn`, so the application's state and the position
    /// commit or roll back together (exactly-once processing).
    ///
    /// Same rules as [`Checkpointer::checkpoint_sequence`]: fencing (the row is read inside the caller's
    /// transaction and written only if `worker` still holds it with `token`, else
    /// [`Error::LeaseLost`]) and monotonicity ([`Error::CheckpointRegression`]). On an error
    /// nothing was written by this call, and the caller should roll back its transaction.
    ///
    /// Begin the transaction with `BEGIN IMMEDIATE`
    /// ([`rusqlite::TransactionBehavior::Immediate`]): it takes the write lock before the read,
    /// so no other writer can change the lease between this check and the commit. Under a
    /// deferred transaction the same guarantee holds (SQLite refuses to upgrade a read snapshot
    /// another writer has moved past, with a `SQLITE_BUSY` backend error), but such a
    /// transaction may have to be retried. `conn` outside any transaction is
    /// [`Error::InvalidInput`]: the write would commit on its own, which is what
    /// [`Checkpointer::checkpoint_sequence`] is for. This call blocks; from async code run it, with the
    /// rest of the transaction, inside `spawn_blocking`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use checkpoint_core::{AppName, Checkpointer, LeaseManager, LeaseDuration, LeaseKey, Position, WorkerId};
    /// # use checkpoint_sqlite::{SqliteConfig, SqliteStore, rusqlite};
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// # let path = std::env::temp_dir().join(format!("doc-{}.db", std::process::id()));
    /// let store = SqliteStore::open(SqliteConfig::file(&path), AppName::new("billing")?).await?;
    /// let key = LeaseKey::parse("orders", "shard-0")?;
    /// let me = WorkerId::new("worker-1")?;
    /// let lease = store.get_lease(&key, &me, LeaseDuration::new(Duration::from_secs(10))?).await?;
    ///
    /// let mut conn = store.open_connection()?;
    /// conn.execute_batch("CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY, amount INTEGER)").unwrap();
    /// let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
    /// tx.execute("INSERT OR REPLACE INTO totals VALUES (1, 42)", []).unwrap();
    /// store.checkpoint_in_transaction(&tx, &key, &me, lease.token, &Position::sequence("1000")?)?;
    /// tx.commit().unwrap(); // the total and the position, or neither
    /// # drop(conn); drop(store);
    /// # for suffix in ["", "-wal", "-shm"] { let _ = std::fs::remove_file(format!("{}{suffix}", path.display())); }
    /// # Ok::<(), checkpoint_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn checkpoint_in_transaction(
        &self,
        conn: &Connection,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        if conn.is_autocommit() {
            return Err(Error::invalid(
                "transaction",
                "the connection is not inside a transaction; begin one first",
            ));
        }
        let sql = &self.inner.sql;
        let current = read_lease(conn, sql, &self.app, key)?;
        let before = current.clone();
        let lease = rules::checkpoint(current, key, worker, token, position)?;
        write_lease(conn, sql, &self.app, before.as_ref(), &lease)?;
        Ok(lease)
    }

    /// Runs `f` alone on a connection thread (a reader, or the writer when `on_writer`),
    /// outside any transaction of the writer. `f` is `'static`: it owns its arguments.
    async fn direct<T, F>(&self, on_writer: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Inner) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Direct = Box::new(move |conn, inner| {
            let _ = tx.send(conn.and_then(|c| f(c, inner)));
        });
        if on_writer {
            self.conns.on_writer(job)?;
            reply(&self.conns.recent_write, rx).await
        } else {
            self.conns.read(job)?;
            reply(&self.conns.recent_read, rx).await
        }
    }

    /// One write operation: `f` with the host-clock instant inside the writer's `BEGIN
    /// IMMEDIATE` transaction (shared with the other writes waiting at the time, each in its
    /// own savepoint), replied to after `COMMIT`; retried with the configured backoff while the
    /// database is busy. `f` returning an error rolls its own changes back. A retry runs `f`
    /// again against the record as it is then, which is how a busy database is resolved: never
    /// by guessing.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection, &Sql, &AppName, SystemTime, i64) -> Result<T> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.inner
            .config
            .backoff()
            .retry(|_| {
                let f = f.clone();
                let app = self.app.clone();
                let (job, rx) = WriteJob::with_reply(move |conn: &Connection, inner: &Inner| {
                    let (now, now_ms) = inner.now()?;
                    f(conn, &inner.sql, &app, now, now_ms)
                });
                let sent = self.conns.write(job);
                let recent = &self.conns.recent_write;
                async move {
                    sent?;
                    reply(recent, rx).await
                }
            })
            .await
    }

    /// One read: a single `SELECT` (atomic by itself) on a reader thread, retried while the
    /// database is busy.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection, &Sql, &AppName, SystemTime, i64) -> Result<T> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.inner
            .config
            .backoff()
            .retry(|_| {
                let f = f.clone();
                let app = self.app.clone();
                self.direct(false, move |conn, inner| {
                    let (now, now_ms) = inner.now()?;
                    f(conn, &inner.sql, &app, now, now_ms)
                })
            })
            .await
    }

    /// Applies a rule that always writes its result, in one write transaction.
    async fn apply<F>(&self, key: &LeaseKey, rule: F) -> Result<Lease>
    where
        F: Fn(Option<Lease>, SystemTime) -> Result<Lease> + Send + Sync + 'static,
    {
        self.apply_outcome(key, move |current, now| {
            rule(current, now).map(Outcome::Write)
        })
        .await
    }

    /// Applies a rule that may decide to write nothing, in one write transaction.
    async fn apply_outcome<F>(&self, key: &LeaseKey, rule: F) -> Result<Lease>
    where
        F: Fn(Option<Lease>, SystemTime) -> Result<Outcome> + Send + Sync + 'static,
    {
        let key = key.clone();
        self.write(move |conn, sql, app, now, _| {
            let current = read_lease(conn, sql, app, &key)?;
            let before = current.clone();
            let outcome = rule(current, now)?;
            if let Outcome::Write(lease) = &outcome {
                write_lease(conn, sql, app, before.as_ref(), lease)?;
            }
            Ok(outcome.into_lease())
        })
        .await
    }
}

/// Renews one lease inside the caller's write transaction: reads the row, applies
/// [`rules::renew`] and writes the new deadline.
#[allow(clippy::too_many_arguments)]
fn renew_one(
    conn: &Connection,
    sql: &Sql,
    app: &AppName,
    key: &LeaseKey,
    worker: &WorkerId,
    token: FencingToken,
    duration: LeaseDuration,
    now: SystemTime,
) -> Result<Lease> {
    let current = read_lease(conn, sql, app, key)?;
    let before = current.clone();
    let lease = rules::renew(current, key, worker, token, duration, now)?;
    write_lease(conn, sql, app, before.as_ref(), &lease)?;
    Ok(lease)
}

#[async_trait]
impl LeaseManager for SqliteStore {
    fn app(&self) -> &AppName {
        &self.app
    }

    fn capabilities(&self) -> Capabilities {
        let file = matches!(self.inner.config.location(), Location::File(_));
        let (backend, durability) = if file {
            ("sqlite", Durability::Disk)
        } else {
            ("sqlite (memory)", Durability::Process)
        };
        Capabilities::new(backend, ClockSource::Host, durability)
            .with_transactional_checkpoint(file)
            .with_renew_many(BatchMode::OneRoundTrip)
            .with_multi_process(file)
    }

    /// Creates or upgrades the tables in one `BEGIN IMMEDIATE` transaction (see
    /// [`crate::schema`]); idempotent, safe from many handles and processes at once. With
    /// [`crate::SqliteConfig::with_migrations`] off, only checks the tables, with reads.
    async fn init(&self) -> Result<()> {
        self.inner
            .config
            .backoff()
            .retry(|_| {
                self.direct(true, |conn, inner| {
                    if !inner.config.migrations() {
                        return schema::verify(conn, &inner.sql);
                    }
                    let (_, now_ms) = inner.now()?;
                    schema::init(conn, &inner.sql, now_ms)
                })
            })
            .await
    }

    /// Operation 2. One transaction: read, [`rules::create_if_absent`], insert. The write lock
    /// held from read to commit makes "absent" still true when the row is inserted.
    async fn create_lease_if_absent(
        &self,
        key: &LeaseKey,
        parents: &[ShardId],
        initial: Option<&Position>,
    ) -> Result<bool> {
        let (key, parents, initial) = (key.clone(), parents.to_vec(), initial.cloned());
        self.write(move |conn, sql, app, _, _| {
            let current = read_lease(conn, sql, app, &key)?;
            match rules::create_if_absent(current.as_ref(), &key, &parents, initial.as_ref()) {
                Some(lease) => {
                    write_lease(conn, sql, app, None, &lease)?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
        .await
    }

    /// Operation 3. Mutual exclusion: under the write lock the row is read, judged by
    /// [`rules::get_lease`] against the host clock read inside the transaction, and written;
    /// racing workers in any process are serialised by the lock, so exactly one sees the lease
    /// free and the others see it held. A grant to a new owner bumps the token (fencing).
    async fn get_lease(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        let (k, worker) = (key.clone(), worker.clone());
        self.apply(key, move |cur, now| {
            rules::get_lease(cur, &k, &worker, duration, now)
        })
        .await
    }

    /// Operation 4. Fencing, in one write transaction: the row is read, [`rules::renew`]
    /// moves the deadline only while owner and token match, and the deadline alone is written
    /// back; otherwise [`Error::LeaseLost`] (or [`Error::Corrupt`]) and nothing written.
    async fn renew(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        let (k, worker) = (key.clone(), worker.clone());
        self.write(move |conn, sql, app, now, _| {
            renew_one(conn, sql, app, &k, &worker, token, duration, now)
        })
        .await
    }

    /// Operation 4, batched: every lease in one transaction (one round trip to the file), each
    /// renewed exactly as [`LeaseManager::renew`] renews one; a lease the rule finds lost is
    /// reported, a corrupt row fails the whole batch (rolled back).
    async fn renew_many(
        &self,
        worker: &WorkerId,
        leases: &[(LeaseKey, FencingToken)],
        duration: LeaseDuration,
    ) -> Result<RenewOutcome> {
        rules::check_renew_batch(leases)?;
        let (worker, leases) = (worker.clone(), leases.to_vec());
        self.write(move |conn, sql, app, now, _| {
            let mut outcome = RenewOutcome::default();
            for (key, token) in &leases {
                match renew_one(conn, sql, app, key, &worker, *token, duration, now) {
                    Ok(lease) => outcome.renewed.push(lease),
                    Err(Error::LeaseLost { .. }) => outcome.lost.push(key.clone()),
                    Err(e) => return Err(e),
                }
            }
            outcome.renewed.sort_by(|a, b| a.key.cmp(&b.key));
            outcome.lost.sort();
            Ok(outcome)
        })
        .await
    }

    /// Operation 7. Fencing: [`rules::remove_lease_owner`] clears owner and deadline only when owner and
    /// token match the row read under the write lock; a completed release repeated writes
    /// nothing.
    async fn remove_lease_owner(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
    ) -> Result<Lease> {
        let (k, worker) = (key.clone(), worker.clone());
        self.apply_outcome(key, move |cur, _| {
            rules::remove_lease_owner(cur, &k, &worker, token)
        })
        .await
    }

    /// Operation 7, admin form ([`rules::evict_lease`]): the token is kept, so the former
    /// holder's writes stay fenced out after the next grant.
    async fn evict_lease(&self, key: &LeaseKey) -> Result<Lease> {
        let k = key.clone();
        self.apply(key, move |cur, _| rules::evict_lease(cur, &k))
            .await
    }

    /// Operation 8: one `DELETE`; deleting an absent row is not an error.
    async fn remove_lease_info(&self, key: &LeaseKey) -> Result<()> {
        let key = key.clone();
        self.write(move |conn, sql, app, _, _| {
            conn.prepare_cached(&sql.delete_lease)
                .and_then(|mut s| {
                    s.execute(params![
                        app.as_str(),
                        key.stream.as_str(),
                        key.shard.as_str()
                    ])
                })
                .map_err(from_sqlite)?;
            Ok(())
        })
        .await
    }

    /// Operation 9: one `SELECT` over the app's rows (one consistent snapshot), sorted by key.
    async fn list_leases(&self, stream: Option<&StreamName>) -> Result<Vec<Lease>> {
        let stream = stream.cloned();
        self.read(move |conn, sql, app, _, _| match &stream {
            Some(s) => {
                let mut stmt = conn
                    .prepare_cached(&sql.list_stream_leases)
                    .map_err(from_sqlite)?;
                collect_leases(stmt.query(params![app.as_str(), s.as_str()]))
            }
            None => {
                let mut stmt = conn.prepare_cached(&sql.list_leases).map_err(from_sqlite)?;
                collect_leases(stmt.query(params![app.as_str()]))
            }
        })
        .await
    }

    /// Operation 16: one `SELECT DISTINCT app` over the lease table of this store's prefix (one
    /// consistent snapshot), validated and sorted by [`rules::stored_apps`].
    async fn list_apps(&self) -> Result<Vec<AppName>> {
        let names = self
            .read(|conn, sql, _, _, _| {
                let mut stmt = conn.prepare_cached(&sql.list_apps).map_err(from_sqlite)?;
                let names = stmt
                    .query_map([], |row| row.get::<_, String>(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
                    .map_err(from_sqlite)?;
                Ok(names)
            })
            .await?;
        rules::stored_apps(names)
    }

    /// Operation 9 with the host clock (the clock this store judges expiry on), read before the
    /// `SELECT`.
    async fn list_leases_timed(&self, stream: Option<&StreamName>) -> Result<Listing> {
        let (store_now, _) = self.inner.now()?;
        let leases = self.list_leases(stream).await?;
        Ok(Listing { leases, store_now })
    }

    /// Operation 10. Fencing: [`rules::steal`] grants (and bumps the token) only when the row read
    /// under the write lock still has exactly the expected owner and token.
    async fn steal(
        &self,
        key: &LeaseKey,
        thief: &WorkerId,
        expected_owner: &WorkerId,
        expected_token: FencingToken,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        let (k, thief, expected_owner) = (key.clone(), thief.clone(), expected_owner.clone());
        self.apply_outcome(key, move |cur, now| {
            rules::steal(
                cur,
                &k,
                &thief,
                &expected_owner,
                expected_token,
                duration,
                now,
            )
        })
        .await
    }

    /// Operation 11 ([`rules::claim`]): records the claimant; ownership and token are untouched.
    async fn claim(&self, key: &LeaseKey, claimant: &WorkerId) -> Result<Lease> {
        let (k, claimant) = (key.clone(), claimant.clone());
        self.apply_outcome(key, move |cur, _| rules::claim(cur, &k, &claimant))
            .await
    }

    /// Admin import. One write transaction: read, [`rules::import_lease`], insert. The write
    /// lock held from read to commit makes "absent" still true when the row is inserted, so an
    /// existing record is never overwritten and the carried token keeps fencing monotonic.
    async fn import_lease(&self, record: &Lease) -> Result<bool> {
        rules::check_import(record)?;
        let record = record.clone();
        self.write(move |conn, sql, app, _, _| {
            let current = read_lease(conn, sql, app, &record.key)?;
            match rules::import_lease(current.as_ref(), &record)? {
                Some(lease) => {
                    write_lease(conn, sql, app, None, &lease)?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
        .await
    }
}

#[async_trait]
impl Checkpointer for SqliteStore {
    /// Operation 5. Fencing and monotonic positions, in one write transaction: the row is
    /// read (a hand-edited column is [`Error::Corrupt`]), [`rules::checkpoint`] decides, and
    /// only the checkpoint columns are written back; a stale holder
    /// ([`Error::LeaseLost`]) or a regression ([`Error::CheckpointRegression`]) writes
    /// nothing. Durable once `COMMIT` returns, to the degree of [`crate::Synchronous`].
    async fn checkpoint_sequence(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        let (k, worker, position) = (key.clone(), worker.clone(), position.clone());
        self.write(move |conn, sql, app, _, _| {
            let current = read_lease(conn, sql, app, &k)?;
            let before = current.clone();
            let lease = rules::checkpoint(current, &k, &worker, token, &position)?;
            write_lease(conn, sql, app, before.as_ref(), &lease)?;
            Ok(lease)
        })
        .await
    }

    /// Operation 14. Fenced and checked like a checkpoint ([`rules::prepare_checkpoint`]).
    async fn prepare_checkpoint(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        let (k, worker, position) = (key.clone(), worker.clone(), position.clone());
        self.apply(key, move |cur, _| {
            rules::prepare_checkpoint(cur, &k, &worker, token, &position)
        })
        .await
    }

    /// Operation 6: one `SELECT`, which sees every committed write of any connection.
    async fn fetch_checkpoint(&self, key: &LeaseKey) -> Result<Option<Lease>> {
        let key = key.clone();
        self.read(move |conn, sql, app, _, _| read_lease(conn, sql, app, &key))
            .await
    }

    /// Admin reset ([`rules::reset_checkpoint`]), the one way a position moves backwards.
    async fn reset_checkpoint(&self, key: &LeaseKey, position: Option<&Position>) -> Result<Lease> {
        let (k, position) = (key.clone(), position.cloned());
        self.apply(key, move |cur, _| {
            rules::reset_checkpoint(cur, &k, position.as_ref())
        })
        .await
    }
}

//! The connection threads. SQLite calls block, so every connection lives on an OS thread of its
//! own and is fed work over a channel; the async side only sends a job and awaits its reply.
//!
//! - **One writer thread** owns the connection that runs every write. SQLite lets one writer at
//!   a time hold a database's write lock, so several writing connections in one process would
//!   only queue on that lock (and sleep in the busy handler while they wait). The writer instead
//!   takes every write job that is waiting, runs them in one `BEGIN IMMEDIATE` transaction, each
//!   inside a savepoint of its own (a job that fails is rolled back alone), and commits once:
//!   group commit. A job's reply is sent only after that commit returned, so a reply of `Ok`
//!   always means committed. If `BEGIN` or `COMMIT` fails, every job of the batch gets that
//!   error (retryable when the database was busy) and nothing of the batch was written.
//! - **Reader threads** (the other [`SqliteConfig::max_connections`] − 1 connections of a file
//!   database) run the single-`SELECT` reads, which WAL lets proceed beside the writer. With one
//!   connection (an in-memory database, or `max_connections = 1`) the writer runs reads too,
//!   outside its transactions, so a read never sees a write that is not committed.
//!
//! A thread opens its connection on its first job (and again after a failure to open), and
//! ends when the store's last handle is dropped. A caller that drops its future loses nothing:
//! the job still runs as a whole, and its reply is discarded.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use checkpoint_core::{Error, Result};
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::config::Location;
use crate::error::{STORE, from_sqlite};
use crate::store::Inner;

/// Most write jobs committed in one transaction.
const MAX_BATCH: usize = 256;
/// How long an idle thread keeps polling its channel before it sleeps on it: a caller that
/// sends its next job right after a reply (a consumer checkpointing in a loop) then finds the
/// thread awake, instead of paying two thread wake-ups per operation.
const SPIN: Duration = Duration::from_micros(50);
/// Prepared statements each connection keeps (the store uses about 20).
const STATEMENT_CACHE: usize = 64;

/// A job that runs alone on a connection, outside any transaction of the writer: a read, or
/// `init` (which runs its own transaction). Gets the connection, or the error opening it.
pub(crate) type Direct = Box<dyn FnOnce(Result<&mut Connection>, &Inner) + Send>;

/// A write job: runs inside the writer's transaction, then learns whether it committed.
pub(crate) trait Pending: Send {
    /// Runs the operation on `conn` inside the open transaction; whether it succeeded (its
    /// changes are kept) or failed (they are rolled back).
    fn run(&mut self, conn: &Connection, inner: &Inner) -> bool;

    /// Sends the reply: the operation's own result, or `failure` when the transaction did not
    /// commit.
    fn finish(self: Box<Self>, failure: Option<Error>);
}

/// A write job over `f`, replying on a oneshot channel.
pub(crate) struct WriteJob<T, F> {
    f: F,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> WriteJob<T, F>
where
    T: Send + 'static,
    F: FnMut(&Connection, &Inner) -> Result<T> + Send + 'static,
{
    /// The job and the receiver of its reply.
    pub(crate) fn with_reply(f: F) -> (Box<dyn Pending>, oneshot::Receiver<Result<T>>) {
        let (reply, rx) = oneshot::channel();
        (
            Box::new(Self {
                f,
                result: None,
                reply,
            }),
            rx,
        )
    }
}

impl<T, F> Pending for WriteJob<T, F>
where
    T: Send + 'static,
    F: FnMut(&Connection, &Inner) -> Result<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection, inner: &Inner) -> bool {
        let result =
            catch_unwind(AssertUnwindSafe(|| (self.f)(conn, inner))).unwrap_or_else(|_| {
                Err(Error::backend_message(
                    STORE,
                    false,
                    "the operation panicked; its changes were rolled back",
                ))
            });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, failure: Option<Error>) {
        let result = match (failure, self.result) {
            (Some(e), _) => Err(e),
            (None, Some(result)) => result,
            (None, None) => Err(Error::backend_message(STORE, false, "write job never ran")),
        };
        // The caller may have gone away; the job ran (or failed) as a whole either way.
        let _ = self.reply.send(result);
    }
}

/// Awaits a connection thread's reply. The reply of a quick operation arrives within
/// microseconds, and waking a parked executor thread costs more than such an operation, so
/// while recent replies came back within [`SPIN`] the task first re-polls for up to [`SPIN`],
/// yielding to the executor's other tasks between polls, and only then sleeps until it is
/// woken. After a slow reply (a synced commit, a busy database) it sleeps at once, so a slow
/// disk never costs a spinning core.
pub(crate) async fn reply<T>(
    recent: &AtomicU64,
    mut rx: oneshot::Receiver<Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    let spin = recent.load(Ordering::Relaxed) <= SPIN.as_micros() as u64;
    let result = loop {
        match rx.try_recv() {
            Ok(result) => break result,
            Err(oneshot::error::TryRecvError::Closed) => break Err(dropped()),
            Err(oneshot::error::TryRecvError::Empty) if spin && started.elapsed() < SPIN => {
                tokio::task::yield_now().await;
            }
            Err(oneshot::error::TryRecvError::Empty) => {
                break rx.await.unwrap_or_else(|_| Err(dropped()));
            }
        }
    };
    let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    recent.store(took, Ordering::Relaxed);
    result
}

fn dropped() -> Error {
    Error::backend_message(STORE, false, "the connection thread dropped the operation")
}

enum Job {
    Direct(Direct),
    Write(Box<dyn Pending>),
}

/// The senders to the connection threads of one store.
pub(crate) struct Connections {
    writer: Sender<Job>,
    readers: Option<Sender<Direct>>,
    /// How long the last write and the last read took to reply, in microseconds (see
    /// [`reply`]).
    pub(crate) recent_write: AtomicU64,
    pub(crate) recent_read: AtomicU64,
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connections")
            .field("readers", &self.readers.is_some())
            .finish_non_exhaustive()
    }
}

fn stopped() -> Error {
    Error::backend_message(STORE, false, "the connection thread has stopped")
}

impl Connections {
    /// Starts the writer and, for a file with `max_connections` above 1, the reader threads.
    pub(crate) fn start(inner: &Arc<Inner>) -> Result<Self> {
        let (writer_tx, writer_rx) = mpsc::channel();
        let writer_inner = inner.clone();
        std::thread::Builder::new()
            .name("checkpoint-sqlite-writer".into())
            .spawn(move || writer_loop(&writer_inner, &writer_rx))
            .map_err(|e| Error::backend(STORE, false, e))?;
        let reader_count = match inner.config.location() {
            Location::File(_) => inner.config.max_connections().saturating_sub(1),
            Location::Memory => 0,
        };
        let readers = if reader_count == 0 {
            None
        } else {
            let (tx, rx) = mpsc::channel::<Direct>();
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..reader_count {
                let (rx, inner) = (rx.clone(), inner.clone());
                std::thread::Builder::new()
                    .name(format!("checkpoint-sqlite-reader-{i}"))
                    .spawn(move || reader_loop(&inner, &rx))
                    .map_err(|e| Error::backend(STORE, false, e))?;
            }
            Some(tx)
        };
        Ok(Self {
            writer: writer_tx,
            readers,
            recent_write: AtomicU64::new(0),
            recent_read: AtomicU64::new(0),
        })
    }

    /// Queues a write job for the writer thread.
    pub(crate) fn write(&self, job: Box<dyn Pending>) -> Result<()> {
        self.writer.send(Job::Write(job)).map_err(|_| stopped())
    }

    /// Queues a job that must run on the writer's connection, outside its transactions.
    pub(crate) fn on_writer(&self, job: Direct) -> Result<()> {
        self.writer.send(Job::Direct(job)).map_err(|_| stopped())
    }

    /// Queues a read for a reader thread (the writer when there is none).
    pub(crate) fn read(&self, job: Direct) -> Result<()> {
        match &self.readers {
            Some(readers) => readers.send(job).map_err(|_| stopped()),
            None => self.on_writer(job),
        }
    }
}

/// Opens the connection if there is none yet.
fn ensure<'c>(conn: &'c mut Option<Connection>, inner: &Inner) -> Result<&'c mut Connection> {
    if conn.is_none() {
        let opened = inner.config.connect()?;
        opened.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        *conn = Some(opened);
    }
    conn.as_mut()
        .ok_or_else(|| Error::backend_message(STORE, false, "connection missing"))
}

/// Waits for the next message: polls for [`SPIN`] first, then sleeps on the channel. `None`
/// when every sender is gone.
fn next<T>(rx: &Receiver<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(job) => return Some(job),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if started.elapsed() < SPIN => std::hint::spin_loop(),
            Err(TryRecvError::Empty) => return rx.recv().ok(),
        }
    }
}

fn run_direct(job: Direct, conn: &mut Option<Connection>, inner: &Inner) {
    let _ = catch_unwind(AssertUnwindSafe(|| match ensure(conn, inner) {
        Ok(c) => job(Ok(c), inner),
        Err(e) => job(Err(e), inner),
    }));
}

fn reader_loop(inner: &Inner, rx: &Mutex<Receiver<Direct>>) {
    let mut conn = None;
    loop {
        let job = {
            let Ok(rx) = rx.lock() else { return };
            match next(&rx) {
                Some(job) => job,
                None => return,
            }
        };
        run_direct(job, &mut conn, inner);
    }
}

fn writer_loop(inner: &Inner, rx: &Receiver<Job>) {
    let mut conn = None;
    let mut writes: Vec<Box<dyn Pending>> = Vec::new();
    while let Some(first) = next(rx) {
        let mut job = Some(first);
        while let Some(j) = job.take() {
            match j {
                // Direct jobs run at once, between transactions.
                Job::Direct(d) => run_direct(d, &mut conn, inner),
                Job::Write(w) => writes.push(w),
            }
            if writes.len() < MAX_BATCH {
                job = rx.try_recv().ok();
            }
        }
        if !writes.is_empty() {
            commit_batch(std::mem::take(&mut writes), &mut conn, inner);
        }
    }
}

/// A copy of `e` for every job of a failed batch (the native error itself goes to one).
fn copy(e: &Error) -> Error {
    Error::backend_message(STORE, e.is_retryable(), e.to_string())
}

fn fail_all(jobs: Vec<Box<dyn Pending>>, e: Error) {
    let mut e = Some(e);
    let n = jobs.len();
    for (i, job) in jobs.into_iter().enumerate() {
        let err = if i + 1 == n {
            e.take()
        } else {
            e.as_ref().map(copy)
        };
        job.finish(err);
    }
}

/// Runs `jobs` in one `BEGIN IMMEDIATE` transaction and replies to each after the commit.
fn commit_batch(mut jobs: Vec<Box<dyn Pending>>, conn: &mut Option<Connection>, inner: &Inner) {
    let c = match ensure(conn, inner) {
        Ok(c) => c,
        Err(e) => return fail_all(jobs, e),
    };
    // Never left open by a batch; a transaction found open is rolled back, not joined.
    rollback(c);
    if let Err(e) = statement(c, "BEGIN IMMEDIATE") {
        return fail_all(jobs, e);
    }
    let alone = jobs.len() == 1;
    for job in &mut jobs {
        if alone {
            if !job.run(c, inner) {
                // The only job failed: nothing to keep.
                let _ = c.execute_batch("ROLLBACK");
                return jobs.into_iter().for_each(|j| j.finish(None));
            }
            continue;
        }
        if let Err(e) = statement(c, "SAVEPOINT op") {
            rollback(c);
            return fail_all(jobs, e);
        }
        let ok = job.run(c, inner);
        if c.is_autocommit() {
            // SQLite rolled the whole transaction back (an I/O error, a full disk, ...): the
            // batch's earlier writes are gone too.
            return fail_all(
                jobs,
                Error::backend_message(
                    STORE,
                    false,
                    "the transaction was rolled back by SQLite after an error; nothing of it was written",
                ),
            );
        }
        let undo = if ok {
            statement(c, "RELEASE op")
        } else {
            statement(c, "ROLLBACK TO op").and_then(|()| statement(c, "RELEASE op"))
        };
        if let Err(e) = undo {
            rollback(c);
            return fail_all(jobs, e);
        }
    }
    match statement(c, "COMMIT") {
        Ok(()) => jobs.into_iter().for_each(|j| j.finish(None)),
        Err(e) => {
            rollback(c);
            fail_all(jobs, e);
        }
    }
}

/// Runs one cached statement that returns no rows.
fn statement(c: &Connection, sql: &str) -> Result<()> {
    c.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(from_sqlite)
}

fn rollback(c: &Connection) {
    if !c.is_autocommit() {
        let _ = c.execute_batch("ROLLBACK");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use checkpoint_core::conformance::random_app;
    use checkpoint_core::{
        Checkpointer, ErrorKind, FencingToken, LeaseDuration, LeaseKey, Position, WorkerId,
    };

    use crate::{SqliteConfig, SqliteStore};

    /// Many tasks writing at once share transactions; the writes that fail (a regression, a
    /// stale token) are rolled back alone and every accepted checkpoint is there afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_commit_together_and_fail_alone() {
        let store = SqliteStore::open(SqliteConfig::memory(), random_app("batch"))
            .await
            .expect("open");
        let me = WorkerId::new("w").expect("worker");
        let duration = LeaseDuration::new(Duration::from_secs(60)).expect("duration");
        let mut tasks = Vec::new();
        for i in 0..32 {
            let (store, me) = (store.clone(), me.clone());
            tasks.push(tokio::spawn(async move {
                let key = LeaseKey::parse("s", &format!("shard-{i}")).expect("key");
                let token = store
                    .get_lease(&key, &me, duration)
                    .await
                    .expect("grant")
                    .token;
                for n in 1..=20u64 {
                    let position = Position::sequence(&(n * 10).to_string()).expect("position");
                    store
                        .checkpoint(&key, &me, token, &position)
                        .await
                        .expect("checkpoint");
                    let behind = Position::sequence(&n.to_string()).expect("position");
                    let regression = store.checkpoint(&key, &me, token, &behind).await;
                    assert_eq!(
                        regression.map(|_| ()).map_err(|e| e.kind()),
                        Err(ErrorKind::CheckpointRegression)
                    );
                    let stale = store
                        .checkpoint(&key, &me, FencingToken(token.0 + 1), &position)
                        .await;
                    assert_eq!(
                        stale.map(|_| ()).map_err(|e| e.kind()),
                        Err(ErrorKind::LeaseLost)
                    );
                }
                key
            }));
        }
        for task in tasks {
            let key = task.await.expect("task");
            let lease = store.fetch(&key).await.expect("fetch").expect("record");
            assert_eq!(
                lease.checkpoint,
                Some(Position::sequence("200").expect("position"))
            );
            assert_eq!(lease.owner.as_ref(), Some(&me));
        }
    }
}

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
//! - **One checkpointer thread** (file databases only) copies the write-ahead log into the
//!   database file, so the log can start over instead of growing. SQLite would do this inside
//!   the commit that crosses `wal_autocheckpoint` pages, on the writer's path; here the writer's
//!   connection has a WAL hook instead, which after each commit nudges the checkpointer every
//!   [`SqliteConfig::with_wal_checkpoint_pages`] new pages. The checkpointer runs
//!   `PRAGMA wal_checkpoint(PASSIVE)` on its own connection, which blocks neither the writer nor
//!   the readers. A passive checkpoint cannot copy frames committed while it runs, and the log
//!   only starts over once every frame was copied, so after a background pass finished the
//!   writer copies what that pass left (a few frames, between its transactions) and its next
//!   write starts the log over: a long log makes every commit slower, since SQLite looks
//!   frames up through hash chains that grow with it. Should that not let the log start over
//!   either (another process reading an old snapshot), the log could grow without end under a
//!   steady stream of writes: when it reaches ten times the threshold the writer checkpoints it
//!   itself inside the hook, as SQLite would have, and its next write starts the log over. (If
//!   a background pass is running then, the writer lets it finish and tries after its next
//!   commits; only at twenty times the threshold does it wait for that pass.)
//!
//! A thread opens its connection on its first job (and again after a failure to open), and
//! ends when the store's last handle is dropped; the writer then stops the checkpointer and
//! waits for it before closing its own connection. A caller that drops its future loses
//! nothing: the job still runs as a whole, and its reply is discarded.
//!
//! [SqliteConfig::with_wal_checkpoint_pages]: crate::SqliteConfig::with_wal_checkpoint_pages

use std::cell::RefCell;
use std::ffi::c_int;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use checkpoint_core::{Error, Result};
use rusqlite::Connection;
use rusqlite::hooks::Wal;
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
/// The writer checkpoints the log itself once it holds this many times
/// [`SqliteConfig::with_wal_checkpoint_pages`] pages.
///
/// [`SqliteConfig::with_wal_checkpoint_pages`]: crate::SqliteConfig::with_wal_checkpoint_pages
pub(crate) const WRITER_CHECKPOINT_FACTOR: u32 = 10;

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

/// What the writer and the checkpointer thread share.
#[derive(Debug, Default)]
struct CheckpointState {
    /// Passes asked for so far (by the writer's nudges and by [`WalCheckpointer::run_pass`]).
    requested: u64,
    /// The value of `requested` when the last finished background pass began: every pass asked
    /// for up to it has been served.
    served: u64,
    /// Background passes finished.
    passes: u64,
    /// A checkpoint is running (the background one, or the writer's own): at most one at a
    /// time, so the writer's never fails for finding the background one in progress.
    running: bool,
    /// The writer wants to checkpoint once the running background pass ends: no new
    /// background pass starts until it has.
    writer_next: bool,
    /// The store is closing: the checkpointer thread ends.
    stop: bool,
}

/// The background WAL checkpointer of a file database: its state and wake-up.
#[derive(Debug, Default)]
pub(crate) struct WalCheckpointer {
    state: Mutex<CheckpointState>,
    changed: Condvar,
}

impl WalCheckpointer {
    fn lock(&self) -> MutexGuard<'_, CheckpointState> {
        // The state is plain counters and flags, valid even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, CheckpointState>) -> MutexGuard<'a, CheckpointState> {
        self.changed.wait(guard).unwrap_or_else(|e| e.into_inner())
    }

    /// Whether every background pass asked for up to number `n` has finished.
    fn served(&self, n: u64) -> bool {
        self.lock().served >= n
    }

    /// Asks for a background pass; returns its number.
    fn request(&self) -> u64 {
        let mut s = self.lock();
        s.requested += 1;
        let n = s.requested;
        drop(s);
        self.changed.notify_all();
        n
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    /// The writer's own checkpoint: runs `checkpoint` unless a background pass is running.
    /// Then, with `wait`, it blocks until that pass ends and runs it; without, it returns
    /// `false` at once and no new background pass starts before the writer's next try.
    fn writer_checkpoint(&self, wait: bool, checkpoint: impl FnOnce()) -> bool {
        let mut s = self.lock();
        if s.running && !wait {
            s.writer_next = true;
            return false;
        }
        while s.running {
            s = self.wait(s);
        }
        s.running = true;
        s.writer_next = false;
        drop(s);
        let _ = catch_unwind(AssertUnwindSafe(checkpoint));
        self.lock().running = false;
        self.changed.notify_all();
        true
    }

    /// Asks for a background pass and blocks until one that began after this call finished
    /// (or the store closed). Returns the number of background passes finished so far.
    pub(crate) fn run_pass(&self) -> u64 {
        self.lock().writer_next = false;
        let n = self.request();
        let mut s = self.lock();
        while s.served < n && !s.stop {
            s = self.wait(s);
        }
        s.passes
    }

    /// Blocks until no background pass is asked for (and allowed to start) or running (or the
    /// store closed). Returns the number of background passes finished so far.
    pub(crate) fn idle(&self) -> u64 {
        let mut s = self.lock();
        while ((s.served < s.requested && !s.writer_next) || s.running) && !s.stop {
            s = self.wait(s);
        }
        s.passes
    }
}

/// The checkpointer thread: waits for a nudge, runs one passive checkpoint, repeats; nudges
/// that arrive during a pass are served by the next one.
fn checkpointer_loop(inner: &Inner, shared: &WalCheckpointer) {
    let mut conn: Option<Connection> = None;
    loop {
        let target = {
            let mut s = shared.lock();
            while !s.stop && (s.served == s.requested || s.running || s.writer_next) {
                s = shared.wait(s);
            }
            if s.stop {
                return;
            }
            s.running = true;
            s.requested
        };
        let _ = catch_unwind(AssertUnwindSafe(|| {
            if conn.is_none() {
                conn = inner.config.connect().ok();
            }
            if let Some(c) = &conn {
                // PASSIVE copies what it can without waiting for any reader or writer. Busy
                // (another process is checkpointing) or failed: the next nudge tries again.
                // An error other than busy may mean a broken connection: open a new one.
                if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    && e.sqlite_error_code() != Some(rusqlite::ErrorCode::DatabaseBusy)
                {
                    conn = None;
                }
            }
        }));
        let mut s = shared.lock();
        s.running = false;
        s.served = target;
        s.passes += 1;
        drop(s);
        shared.changed.notify_all();
    }
}

/// The writer thread's view of the checkpointer, read by [`wal_hook`] (a plain function, so
/// its state lives in the writer thread's local storage).
struct HookState {
    checkpointer: Arc<WalCheckpointer>,
    /// Nudge the checkpointer every this many new pages.
    pages: c_int,
    /// Checkpoint inline at this many pages.
    inline_at: c_int,
    /// The log's size at the last nudge.
    nudged_at: c_int,
    /// The number of the background pass the last nudge asked for, until the writer has
    /// copied what that pass could not.
    awaiting: Option<u64>,
}

thread_local! {
    static HOOK: RefCell<Option<HookState>> = const { RefCell::new(None) };
}

/// The writer connection's WAL hook, called by SQLite after every commit with the number of
/// pages now in the log. It replaces SQLite's automatic checkpoint (which is this same hook
/// running a checkpoint at `wal_autocheckpoint` pages).
fn wal_hook(wal: &Wal, pages: c_int) -> rusqlite::Result<()> {
    HOOK.with_borrow_mut(|hook| {
        let Some(h) = hook.as_mut() else { return };
        if pages < h.nudged_at {
            // The log started over.
            h.nudged_at = 0;
            h.awaiting = None;
        }
        if pages >= h.inline_at {
            // The background checkpointer has not let the log start over: do what SQLite
            // would have. Run by the only writer of this process, between its transactions,
            // it copies every frame, so the next write starts the log over (unless another
            // process is reading an old snapshot, as with SQLite's own checkpoint). Errors
            // (busy) are ignored as SQLite ignores them: the next commit tries again. While a
            // background pass runs, the writer does not wait for it (it only keeps the next
            // one from starting and tries again after its next commit) until the log reaches
            // twice this size.
            let wait = pages >= h.inline_at.saturating_mul(2);
            if h.checkpointer.writer_checkpoint(wait, || {
                let _ = wal.checkpoint();
            }) {
                h.nudged_at = 0;
                h.awaiting = None;
            }
        } else if let Some(n) = h.awaiting
            && h.checkpointer.served(n)
        {
            // The background pass copied the log as it was when the pass began; the frames
            // committed while it ran keep the log from starting over, and under a steady
            // stream of writes every later pass would leave some too, so the log would grow
            // to the inline threshold (and every commit pays for a longer log: SQLite looks
            // frames up through hash chains that grow with it). The writer copies those few
            // frames now, between its transactions, so its next write starts the log over.
            // Busy or running: tried again after the next commit.
            if h.checkpointer.writer_checkpoint(false, || {
                let _ = wal.checkpoint();
            }) {
                h.awaiting = None;
            }
        } else if pages - h.nudged_at >= h.pages {
            h.awaiting = Some(h.checkpointer.request());
            h.nudged_at = pages;
        }
    });
    // The commit has happened whatever the hook does; an error here would only make it look
    // failed.
    Ok(())
}

/// The senders to the connection threads of one store.
pub(crate) struct Connections {
    writer: Sender<Job>,
    readers: Option<Sender<Direct>>,
    /// The background WAL checkpointer (file databases only).
    pub(crate) checkpointer: Option<Arc<WalCheckpointer>>,
    /// Disconnected once every connection thread of the store has ended (each holds a
    /// sender); taken by [`crate::SqliteStore::threads_ended`].
    pub(crate) ended: Mutex<Option<Receiver<()>>>,
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
        let (alive, ended) = mpsc::channel::<()>();
        let file = matches!(inner.config.location(), Location::File(_));
        let checkpointer = if file {
            let shared = Arc::new(WalCheckpointer::default());
            let (thread_shared, thread_inner, alive) =
                (shared.clone(), inner.clone(), alive.clone());
            let handle = std::thread::Builder::new()
                .name("checkpoint-sqlite-wal".into())
                .spawn(move || {
                    let _alive = alive;
                    checkpointer_loop(&thread_inner, &thread_shared);
                })
                .map_err(|e| Error::backend(STORE, false, e))?;
            Some((shared, handle))
        } else {
            None
        };
        let shared = checkpointer.as_ref().map(|(shared, _)| shared.clone());
        let (writer_tx, writer_rx) = mpsc::channel();
        let writer_inner = inner.clone();
        let writer_alive = alive.clone();
        let spawned = std::thread::Builder::new()
            .name("checkpoint-sqlite-writer".into())
            .spawn(move || {
                let _alive = writer_alive;
                writer_thread(&writer_inner, &writer_rx, checkpointer);
            });
        if let Err(e) = spawned {
            if let Some(shared) = &shared {
                shared.stop();
            }
            return Err(Error::backend(STORE, false, e));
        }
        let reader_count = if file {
            inner.config.max_connections().saturating_sub(1)
        } else {
            0
        };
        let readers = if reader_count == 0 {
            None
        } else {
            let (tx, rx) = mpsc::channel::<Direct>();
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..reader_count {
                let (rx, inner, alive) = (rx.clone(), inner.clone(), alive.clone());
                std::thread::Builder::new()
                    .name(format!("checkpoint-sqlite-reader-{i}"))
                    .spawn(move || {
                        let _alive = alive;
                        reader_loop(&inner, &rx);
                    })
                    .map_err(|e| Error::backend(STORE, false, e))?;
            }
            Some(tx)
        };
        Ok(Self {
            writer: writer_tx,
            readers,
            checkpointer: shared,
            ended: Mutex::new(Some(ended)),
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

/// Opens the connection if there is none yet. On the writer's thread of a file database the
/// connection gets [`wal_hook`] (its checkpointer state is already in the thread's storage).
fn ensure<'c>(conn: &'c mut Option<Connection>, inner: &Inner) -> Result<&'c mut Connection> {
    if conn.is_none() {
        let opened = inner.config.connect()?;
        opened.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        if HOOK.with_borrow(Option::is_some) {
            opened.wal_hook(Some(wal_hook));
        }
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

/// The writer thread: installs the hook state, runs [`writer_loop`] until the store is
/// dropped, then stops and joins the checkpointer, and closes its connection last.
fn writer_thread(
    inner: &Inner,
    rx: &Receiver<Job>,
    checkpointer: Option<(Arc<WalCheckpointer>, JoinHandle<()>)>,
) {
    let mut conn = None;
    if let Some((shared, _)) = &checkpointer {
        let pages = c_int::try_from(inner.config.wal_checkpoint_pages()).unwrap_or(c_int::MAX);
        HOOK.set(Some(HookState {
            checkpointer: shared.clone(),
            pages,
            inline_at: pages.saturating_mul(WRITER_CHECKPOINT_FACTOR as c_int),
            nudged_at: 0,
            awaiting: None,
        }));
    }
    writer_loop(inner, rx, &mut conn);
    if let Some((shared, handle)) = checkpointer {
        shared.stop();
        let _ = handle.join();
    }
    // Closed after the checkpointer's: the last connection to close checkpoints the log
    // and removes it.
    drop(conn);
    HOOK.set(None);
}

fn writer_loop(inner: &Inner, rx: &Receiver<Job>, conn: &mut Option<Connection>) {
    let mut writes: Vec<Box<dyn Pending>> = Vec::new();
    while let Some(first) = next(rx) {
        let mut job = Some(first);
        while let Some(j) = job.take() {
            match j {
                // Direct jobs run at once, between transactions.
                Job::Direct(d) => run_direct(d, conn, inner),
                Job::Write(w) => writes.push(w),
            }
            if writes.len() < MAX_BATCH {
                job = rx.try_recv().ok();
            }
        }
        if !writes.is_empty() {
            commit_batch(std::mem::take(&mut writes), conn, inner);
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
        Checkpointer, ErrorKind, FencingToken, LeaseDuration, LeaseKey, LeaseManager, Position,
        WorkerId,
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
                        .checkpoint_sequence(&key, &me, token, &position)
                        .await
                        .expect("checkpoint");
                    let behind = Position::sequence(&n.to_string()).expect("position");
                    let regression = store.checkpoint_sequence(&key, &me, token, &behind).await;
                    assert_eq!(
                        regression.map(|_| ()).map_err(|e| e.kind()),
                        Err(ErrorKind::CheckpointRegression)
                    );
                    let stale = store
                        .checkpoint_sequence(&key, &me, FencingToken(token.0 + 1), &position)
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
            let lease = store
                .fetch_checkpoint(&key)
                .await
                .expect("fetch")
                .expect("record");
            assert_eq!(
                lease.checkpoint,
                Some(Position::sequence("200").expect("position"))
            );
            assert_eq!(lease.owner.as_ref(), Some(&me));
        }
    }
}

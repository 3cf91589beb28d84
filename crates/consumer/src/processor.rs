//! The application's side: [`RecordProcessor`] (one per shard lease, shaped as the KCL's) and
//! the fenced [`ShardCheckpointer`] handle it checkpoints through.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use checkpoint_core::{Error, FencingToken, LeaseKey, Position, Result, Store, WorkerId};
use tokio::sync::watch;

use crate::source::{ReadBatch, Record};

/// What a processor returns when it fails: any error. A failed batch is not checkpointed; the
/// worker releases the lease so the shard is processed again from its last checkpoint.
pub type ProcessorError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a processor is being shut down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShutdownReason {
    /// The shard is closed and every record was delivered. The processor must checkpoint
    /// [`Position::ShardEnd`] (see [`ShardCheckpointer::checkpoint_shard_end`]); until it does,
    /// the shard's children are not processed and the shard is processed again later.
    ShardEnd,
    /// Another worker took the lease (it expired or was stolen). The processor must not
    /// checkpoint: every checkpoint through its handle fails with
    /// [`Error::LeaseLost`](checkpoint_core::Error::LeaseLost) without reaching the store.
    LeaseLost,
    /// The worker is shutting down gracefully, or another worker claimed the lease. The
    /// processor should checkpoint what it finished; the worker then releases the lease.
    Requested,
}

/// What a processor learns when it starts on a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InitializeInput {
    /// The shard's lease key.
    pub key: LeaseKey,
    /// The fencing token of the lease this processor works under.
    pub token: FencingToken,
    /// Where processing starts: the stored checkpoint, or the configured initial position.
    pub start: Position,
    /// A prepared (two-phase) position a previous owner stored and did not commit.
    pub pending_checkpoint: Option<Position>,
}

/// The application's logic for one shard. The worker makes one per lease it takes
/// ([`ProcessorFactory`]) and calls, in order: [`initialize`](RecordProcessor::initialize) once,
/// [`process_records`](RecordProcessor::process_records) for each batch read, and
/// [`shutdown`](RecordProcessor::shutdown) once (except after an abrupt kill).
#[async_trait]
pub trait RecordProcessor: Send {
    /// Called once before the first batch.
    async fn initialize(
        &mut self,
        input: &InitializeInput,
    ) -> std::result::Result<(), ProcessorError>;

    /// Handles one batch (never empty). Checkpoint through `checkpointer` when the records'
    /// effects are durable. When the lease is lost the worker stops this future where it
    /// awaits and calls [`shutdown`](RecordProcessor::shutdown) with
    /// [`ShutdownReason::LeaseLost`].
    async fn process_records(
        &mut self,
        records: &[Record],
        checkpointer: &ShardCheckpointer,
    ) -> std::result::Result<(), ProcessorError>;

    /// Handles one batch with what the read knew about it, such as
    /// [`ReadBatch::millis_behind_latest`] (the KCL's `ProcessRecordsInput`). The worker calls
    /// this; the default passes the records to
    /// [`process_records`](RecordProcessor::process_records), so implement this one instead
    /// only to see the batch's metadata.
    async fn process_batch(
        &mut self,
        batch: &ReadBatch,
        checkpointer: &ShardCheckpointer,
    ) -> std::result::Result<(), ProcessorError> {
        self.process_records(&batch.records, checkpointer).await
    }

    /// Called once when the processor stops; see [`ShutdownReason`] for what it must do.
    async fn shutdown(
        &mut self,
        reason: ShutdownReason,
        checkpointer: &ShardCheckpointer,
    ) -> std::result::Result<(), ProcessorError>;
}

/// Makes one [`RecordProcessor`] per lease. Any `Fn(&LeaseKey) -> P` is one.
pub trait ProcessorFactory: Send + Sync + 'static {
    /// A processor for the shard `key`.
    fn create(&self, key: &LeaseKey) -> Box<dyn RecordProcessor>;
}

impl<F, P> ProcessorFactory for F
where
    F: Fn(&LeaseKey) -> P + Send + Sync + 'static,
    P: RecordProcessor + 'static,
{
    fn create(&self, key: &LeaseKey) -> Box<dyn RecordProcessor> {
        Box::new(self(key))
    }
}

/// What the worker knows about one lease it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeaseState {
    /// Held and renewed.
    Held,
    /// A graceful stop was asked (worker shutdown or a hand-off claim).
    StopRequested,
    /// Lost: expired locally, not renewed, stolen, or a write was fenced. Terminal.
    Lost,
}

/// The shared signal of one lease: the worker's renewer, the shard task and the handle all see
/// the same state, so a loss noticed by any of them stops the others.
#[derive(Clone, Debug)]
pub(crate) struct LeaseSignal(Arc<watch::Sender<LeaseState>>);

impl LeaseSignal {
    pub(crate) fn new() -> Self {
        Self(Arc::new(watch::Sender::new(LeaseState::Held)))
    }

    pub(crate) fn get(&self) -> LeaseState {
        *self.0.borrow()
    }

    /// Marks the lease lost; returns whether it was not lost before.
    pub(crate) fn mark_lost(&self) -> bool {
        self.0.send_if_modified(|s| {
            let changed = *s != LeaseState::Lost;
            *s = LeaseState::Lost;
            changed
        })
    }

    /// Asks for a graceful stop unless the lease is already lost.
    pub(crate) fn request_stop(&self) {
        self.0.send_if_modified(|s| {
            if *s == LeaseState::Held {
                *s = LeaseState::StopRequested;
                true
            } else {
                false
            }
        });
    }

    /// Resolves when the state is no longer [`LeaseState::Held`].
    pub(crate) async fn changed_from_held(&self) -> LeaseState {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail; fall back to the current value.
        match rx.wait_for(|s| *s != LeaseState::Held).await {
            Ok(s) => *s,
            Err(_) => self.get(),
        }
    }

    /// Resolves when the lease is lost.
    pub(crate) async fn lost(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|s| *s == LeaseState::Lost).await;
    }
}

/// A processor's only way to write a checkpoint: the store, the lease key, this worker and the
/// fencing token of the lease it was made for. Once the worker learns the lease is lost (or a
/// write is fenced), every further call fails with
/// [`Error::LeaseLost`](checkpoint_core::Error::LeaseLost) before reaching the store; and because
/// every write carries the token, a stale handle can never overwrite a newer owner's checkpoint
/// even before the worker notices.
pub struct ShardCheckpointer {
    store: Arc<dyn Store>,
    key: LeaseKey,
    worker: WorkerId,
    token: FencingToken,
    signal: LeaseSignal,
    last: Mutex<Option<Position>>,
}

impl fmt::Debug for ShardCheckpointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardCheckpointer")
            .field("key", &self.key)
            .field("worker", &self.worker)
            .field("token", &self.token)
            .field("state", &self.signal.get())
            .finish()
    }
}

impl ShardCheckpointer {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        key: LeaseKey,
        worker: WorkerId,
        token: FencingToken,
        signal: LeaseSignal,
        stored: Option<Position>,
    ) -> Self {
        Self {
            store,
            key,
            worker,
            token,
            signal,
            last: Mutex::new(stored),
        }
    }

    /// The shard's lease key.
    pub fn key(&self) -> &LeaseKey {
        &self.key
    }

    /// The worker this handle writes as.
    pub fn worker(&self) -> &WorkerId {
        &self.worker
    }

    /// The fencing token every write carries.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// Whether the lease is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.signal.get() == LeaseState::Lost
    }

    /// The last position this handle wrote, or the stored checkpoint it started from.
    pub fn last_checkpoint(&self) -> Option<Position> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn lost_error(&self) -> Error {
        Error::LeaseLost {
            key: self.key.clone(),
            worker: self.worker.clone(),
            token: self.token,
        }
    }

    /// Stores `position` as the shard's checkpoint, fenced by the lease token: one store call.
    /// Transient faults are retried inside the store, with its own backoff (the one retry
    /// layer); repeating a checkpoint whose reply was lost re-evaluates it against the stored
    /// record (an equal position is accepted), so a retry never guesses.
    ///
    /// Fails with [`Error::LeaseLost`] when the lease is gone (and marks it lost, stopping the
    /// processor), [`Error::CheckpointRegression`] when `position` is behind the stored one.
    pub async fn checkpoint(&self, position: &Position) -> Result<()> {
        if self.is_lost() {
            return Err(self.lost_error());
        }
        let started = std::time::Instant::now();
        let result = self
            .store
            .checkpoint_sequence(&self.key, &self.worker, self.token, position)
            .await;
        crate::metrics::store_call(self.store.app(), "checkpoint_sequence", started, &result);
        match result {
            Ok(_) => {
                *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(position.clone());
                metrics::counter!(
                    crate::metrics::CHECKPOINTS,
                    "app" => self.store.app().to_string(),
                    "stream" => self.key.stream.to_string(),
                    "worker" => self.worker.to_string()
                )
                .increment(1);
                tracing::debug!(key = %self.key, worker = %self.worker, token = %self.token, %position, "checkpoint written");
                Ok(())
            }
            Err(e) => {
                if matches!(e, Error::LeaseLost { .. }) && self.signal.mark_lost() {
                    tracing::info!(key = %self.key, worker = %self.worker, token = %self.token, "lease lost: checkpoint fenced");
                }
                Err(e)
            }
        }
    }

    /// Tells this handle the outcome of a checkpoint written outside it, inside the
    /// application's own database transaction (exactly-once: for example
    /// `SqliteStore::checkpoint_in_transaction` or the PostgreSQL equivalent, called with this
    /// handle's [`key`](Self::key), [`worker`](Self::worker) and [`token`](Self::token), so the
    /// write is fenced exactly like [`checkpoint`](Self::checkpoint)). Call it once the
    /// transaction committed with the record the store returned, or with the error the write
    /// failed with: a committed position becomes [`last_checkpoint`](Self::last_checkpoint)
    /// (what the worker checks at shard end), and [`Error::LeaseLost`] marks the lease lost so
    /// the worker stops the processor.
    pub fn record_transactional(&self, outcome: &Result<checkpoint_core::Lease>) {
        match outcome {
            Ok(lease) if lease.key == self.key && lease.token == self.token => {
                *self.last.lock().unwrap_or_else(|e| e.into_inner()) = lease.checkpoint.clone();
                metrics::counter!(
                    crate::metrics::CHECKPOINTS,
                    "app" => self.store.app().to_string(),
                    "stream" => self.key.stream.to_string(),
                    "worker" => self.worker.to_string()
                )
                .increment(1);
            }
            Ok(other) => {
                tracing::warn!(key = %self.key, other = %other.key, "a transactional checkpoint of another lease was recorded here; ignored");
            }
            Err(Error::LeaseLost { .. }) => {
                if self.signal.mark_lost() {
                    tracing::info!(key = %self.key, worker = %self.worker, token = %self.token, "lease lost: transactional checkpoint fenced");
                }
            }
            Err(_) => {}
        }
    }

    /// Checkpoints "after this record".
    pub async fn checkpoint_record(&self, record: &Record) -> Result<()> {
        self.checkpoint(&record.position()).await
    }

    /// Checkpoints [`Position::ShardEnd`]: what a processor must do on
    /// [`ShutdownReason::ShardEnd`].
    pub async fn checkpoint_shard_end(&self) -> Result<()> {
        self.checkpoint(&Position::ShardEnd).await
    }

    /// Stores a pending (two-phase) position, fenced like a checkpoint.
    pub async fn prepare_checkpoint(&self, position: &Position) -> Result<()> {
        if self.is_lost() {
            return Err(self.lost_error());
        }
        let started = std::time::Instant::now();
        let result = self
            .store
            .prepare_checkpoint(&self.key, &self.worker, self.token, position)
            .await;
        crate::metrics::store_call(self.store.app(), "prepare_checkpoint", started, &result);
        if let Err(Error::LeaseLost { .. }) = &result {
            self.signal.mark_lost();
        }
        result.map(|_| ())
    }
}

//! The one error type of every store. Callers match on its variants (or on [`ErrorKind`]) the
//! same way whatever the backend; native backend errors stay behind [`Error::Backend`].

use std::time::Duration;

use crate::types::{FencingToken, LeaseKey, Position, WorkerId};

/// Result alias used throughout the crate family.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the lease/checkpoint contract.
///
/// Match on the variant (or on [`Error::kind`]) the same way on every store; ask
/// [`Error::is_retryable`] whether trying again can help.
///
/// ```
/// use std::time::Duration;
/// use checkpoint_core::{AppName, Error, ErrorKind, LeaseDuration, LeaseKey, LeaseManager, MemoryStore, WorkerId};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new(AppName::new("billing")?);
/// let key = LeaseKey::parse("orders", "shard-0")?;
/// let duration = LeaseDuration::new(Duration::from_secs(10))?;
/// store.get_lease(&key, &WorkerId::new("a")?, duration).await?;
/// match store.get_lease(&key, &WorkerId::new("b")?, duration).await {
///     Err(Error::LeaseHeld { holder, remaining, .. }) => {
///         assert_eq!(holder.as_str(), "a");
///         assert!(remaining <= Duration::from_secs(10));
///     }
///     other => panic!("expected LeaseHeld, got {other:?}"),
/// }
/// let err = store.get_lease(&key, &WorkerId::new("b")?, duration).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::LeaseHeld);
/// assert!(!err.is_retryable()); // a failed condition is never retried blindly
/// # Ok::<(), Error>(()) }).unwrap();
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another worker holds a live lease.
    #[error("lease {key} is held by {holder} for another {remaining:?}")]
    LeaseHeld {
        /// The lease.
        key: LeaseKey,
        /// Its current holder.
        holder: WorkerId,
        /// Time left before it expires, by the store's clock.
        remaining: Duration,
    },
    /// The caller no longer holds the lease with this token (taken over, stolen, released,
    /// deleted, or the token is stale). Nothing was written.
    #[error("lease {key} is no longer held by {worker} with token {token}")]
    LeaseLost {
        /// The lease.
        key: LeaseKey,
        /// The worker that attempted the write.
        worker: WorkerId,
        /// The token it carried.
        token: FencingToken,
    },
    /// A steal found the lease no longer as the balancer saw it. Nothing was written.
    #[error("lease {key} is no longer held by {expected_owner} with token {expected_token}")]
    LeaseChanged {
        /// The lease.
        key: LeaseKey,
        /// The owner the caller expected.
        expected_owner: WorkerId,
        /// The token the caller expected.
        expected_token: FencingToken,
    },
    /// The position is lower than the stored checkpoint, or the shard already ended. Nothing
    /// was written.
    #[error("checkpoint regression on {key}: stored {stored}, attempted {attempted}")]
    CheckpointRegression {
        /// The lease.
        key: LeaseKey,
        /// The stored position.
        stored: Position,
        /// The rejected position.
        attempted: Position,
    },
    /// Another instance (another store handle, normally another process) holds a live
    /// membership record of this worker id: a register refused while that record lives, or a
    /// heartbeat of an instance whose record another instance has taken over after it expired.
    /// Nothing was written. Start the second process with another id, or stop the first.
    #[error("worker id {worker} is registered by another live instance")]
    WorkerIdInUse {
        /// The worker id.
        worker: WorkerId,
    },
    /// The record does not exist.
    #[error("{entity} {id} not found")]
    NotFound {
        /// What was looked for: `"lease"` or `"worker"`.
        entity: &'static str,
        /// Its identifier.
        id: String,
    },
    /// An argument was rejected before anything was sent to the store.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The offending argument or field.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// A stored record could not be read (for example a hand-edited row).
    #[error("corrupt record {id}: field {field}: {reason}")]
    Corrupt {
        /// The record.
        id: String,
        /// The offending stored field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An existing table, schema or key layout is not the one this store writes.
    #[error("schema mismatch in {store}: {detail}")]
    SchemaMismatch {
        /// The backend.
        store: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The backend failed: connection, timeout, throttling, server error.
    #[error("{store} backend error: {message}")]
    Backend {
        /// The backend.
        store: &'static str,
        /// Whether the same call may succeed if tried again.
        retryable: bool,
        /// A short description.
        message: String,
        /// The native error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
}

/// The kind of an [`Error`], for comparisons and metrics.
///
/// ```
/// use checkpoint_core::{Error, ErrorKind};
///
/// let err = Error::invalid("worker_id", "must not be empty");
/// assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// assert_eq!(err.field(), Some("worker_id"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::LeaseHeld`].
    LeaseHeld,
    /// [`Error::LeaseLost`].
    LeaseLost,
    /// [`Error::LeaseChanged`].
    LeaseChanged,
    /// [`Error::CheckpointRegression`].
    CheckpointRegression,
    /// [`Error::WorkerIdInUse`].
    WorkerIdInUse,
    /// [`Error::NotFound`].
    NotFound,
    /// [`Error::InvalidInput`].
    InvalidInput,
    /// [`Error::Corrupt`].
    Corrupt,
    /// [`Error::SchemaMismatch`].
    SchemaMismatch,
    /// [`Error::Backend`].
    Backend,
}

impl Error {
    /// An [`Error::InvalidInput`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    /// An [`Error::Corrupt`].
    pub fn corrupt(id: impl ToString, field: &'static str, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            id: id.to_string(),
            field,
            reason: reason.into(),
        }
    }

    /// An [`Error::NotFound`] for a lease.
    pub fn lease_not_found(key: &LeaseKey) -> Self {
        Self::NotFound {
            entity: "lease",
            id: key.to_string(),
        }
    }

    /// An [`Error::WorkerIdInUse`] for `worker`.
    pub fn worker_id_in_use(worker: &WorkerId) -> Self {
        Self::WorkerIdInUse {
            worker: worker.clone(),
        }
    }

    /// An [`Error::NotFound`] for a worker.
    pub fn worker_not_found(worker: &WorkerId) -> Self {
        Self::NotFound {
            entity: "worker",
            id: worker.to_string(),
        }
    }

    /// An [`Error::Backend`] keeping the native error.
    pub fn backend(
        store: &'static str,
        retryable: bool,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Backend {
            store,
            retryable,
            message: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// An [`Error::Backend`] with a message only.
    pub fn backend_message(
        store: &'static str,
        retryable: bool,
        message: impl Into<String>,
    ) -> Self {
        Self::Backend {
            store,
            retryable,
            message: message.into(),
            source: None,
        }
    }

    /// Whether trying the same call again may succeed. Only backend faults are retryable; a
    /// failed condition (held, lost, regression) never is.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Backend {
                retryable: true,
                ..
            }
        )
    }

    /// The kind, without the details.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::LeaseHeld { .. } => ErrorKind::LeaseHeld,
            Self::LeaseLost { .. } => ErrorKind::LeaseLost,
            Self::LeaseChanged { .. } => ErrorKind::LeaseChanged,
            Self::CheckpointRegression { .. } => ErrorKind::CheckpointRegression,
            Self::WorkerIdInUse { .. } => ErrorKind::WorkerIdInUse,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::InvalidInput { .. } => ErrorKind::InvalidInput,
            Self::Corrupt { .. } => ErrorKind::Corrupt,
            Self::SchemaMismatch { .. } => ErrorKind::SchemaMismatch,
            Self::Backend { .. } => ErrorKind::Backend,
        }
    }

    /// The field named by [`Error::InvalidInput`] or [`Error::Corrupt`].
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::InvalidInput { field, .. } | Self::Corrupt { field, .. } => Some(field),
            _ => None,
        }
    }
}

//! One processor task per held lease: start (one token, one processor), the read loop, and the
//! release at the end.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use checkpoint_core::{Error, FencingToken, Lease, LeaseKey, Position};
use tracing::Instrument;

use crate::metrics as m;
use crate::processor::{
    InitializeInput, LeaseSignal, LeaseState, ShardCheckpointer, ShutdownReason,
};
use crate::source::ShardSource;
use crate::worker::{Held, Shared};

/// Registers the lease as held and spawns its processor task.
///
/// One token, one processor: a grant that kept a token an earlier processor of this worker
/// already ran under (the store still named this worker as owner, so the token did not move)
/// is released instead, and taken again with a new token on a later tick. So every processor's
/// deliveries and writes are told apart by its token, and a stale processor could never pass
/// for a new one. Returns whether a processor was started.
pub(crate) async fn start_shard(shared: &Arc<Shared>, lease: Lease, granted_at: Instant) -> bool {
    let key = lease.key.clone();
    let token = lease.token;
    let reused = {
        let mut used = shared.used_tokens.lock().unwrap_or_else(|e| e.into_inner());
        match used.get(&key) {
            Some(last) if *last >= token => true,
            _ => {
                used.insert(key.clone(), token);
                false
            }
        }
    };
    if reused {
        tracing::info!(%key, %token, "granted a token already used here: releasing it for a new one");
        release(shared, &key, token).await;
        return false;
    }
    let Some(source) = shared.sources.get(&key.stream).cloned() else {
        tracing::warn!(%key, "granted a lease of a stream this worker does not consume");
        release(shared, &key, token).await;
        return false;
    };
    let signal = LeaseSignal::new();
    let span = tracing::info_span!("shard", key = %key, token = %token);
    let mut held = shared.held();
    let task =
        tokio::spawn(run_shard(Arc::clone(shared), source, lease, signal.clone()).instrument(span));
    held.insert(
        key,
        Held {
            token,
            signal,
            valid_until: granted_at + shared.config.lease_duration.get(),
            task: Some(task),
        },
    );
    true
}

/// How a shard task ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Shutdown(ShutdownReason),
    /// Parents not finished yet, or the shard already ended: release without processing.
    NotReady,
    /// The processor or the source failed: release so it is processed again later.
    Failed,
}

async fn run_shard(
    shared: Arc<Shared>,
    source: Arc<dyn ShardSource>,
    lease: Lease,
    signal: LeaseSignal,
) {
    let key = lease.key.clone();
    let token = lease.token;
    let end = process_shard(&shared, source.as_ref(), &lease, &signal).await;
    // After a loss the store usually gave the lease to someone else already and this release is
    // refused; when the loss was only presumed locally (a renewal came back late), it frees the
    // lease at once instead of at expiry. It is fenced by the token either way.
    release(&shared, &key, token).await;
    if end == End::Shutdown(ShutdownReason::ShardEnd) {
        shared.sync_requested.notify_one();
    }
    let mut held = shared.held();
    if held.get(&key).is_some_and(|h| h.token == token) {
        held.remove(&key);
    }
}

/// Releases `key` if still held with `token` (one store call; a refusal means it is already
/// someone else's).
pub(crate) async fn release(shared: &Shared, key: &LeaseKey, token: FencingToken) {
    match shared
        .call(
            "remove_lease_owner",
            shared.store.remove_lease_owner(key, &shared.id, token),
        )
        .await
    {
        Ok(_) => {
            shared.count(m::LEASES_RELEASED, key);
            tracing::info!(%key, %token, "lease released");
        }
        Err(Error::LeaseLost { .. }) => {
            tracing::info!(%key, %token, "lease already lost at release")
        }
        Err(e) => tracing::warn!(%key, %token, error = %e, "release failed; the lease will expire"),
    }
}

/// Runs one processor from `initialize` to `shutdown`.
async fn process_shard(
    shared: &Shared,
    source: &dyn ShardSource,
    lease: &Lease,
    signal: &LeaseSignal,
) -> End {
    let key = &lease.key;
    // The taker judged the parents finished on a listing (a parent lease at SHARD_END, or gone
    // after a child started or after it left the source); check the ones still there again on
    // fresh reads before starting. A parent deleted meanwhile was deleted after it finished.
    for parent in &lease.parents {
        let parent_key = LeaseKey::new(key.stream.clone(), parent.clone());
        match shared
            .call(
                "fetch_checkpoint",
                shared.store.fetch_checkpoint(&parent_key),
            )
            .await
        {
            Ok(Some(p)) if p.checkpoint != Some(Position::ShardEnd) => return End::NotReady,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%parent_key, error = %e, "reading parent lease failed");
                return End::NotReady;
            }
        }
    }
    let start = lease
        .checkpoint
        .clone()
        .or_else(|| shared.config.initial_position.clone())
        .unwrap_or_else(|| source.initial_position());
    if start == Position::ShardEnd {
        return End::NotReady;
    }
    let checkpointer = ShardCheckpointer::new(
        Arc::clone(&shared.store),
        key.clone(),
        shared.id.clone(),
        lease.token,
        signal.clone(),
        lease.checkpoint.clone(),
    );
    let mut processor = shared.factory.create(key);
    let input = InitializeInput {
        key: key.clone(),
        token: lease.token,
        start: start.clone(),
        pending_checkpoint: lease.pending_checkpoint.clone(),
    };
    let reason = tokio::select! {
        biased;
        _ = signal.lost() => Some(ShutdownReason::LeaseLost),
        r = processor.initialize(&input) => match r {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(error = %e, "processor initialize failed");
                return End::Failed;
            }
        },
    };
    let reason = match reason {
        Some(r) => r,
        None => match read_loop(
            shared,
            source,
            key,
            &start,
            signal,
            &checkpointer,
            processor.as_mut(),
        )
        .await
        {
            Ok(r) => r,
            Err(end) => return end,
        },
    };
    let shutdown = tokio::select! {
        biased;
        _ = signal.lost(), if reason != ShutdownReason::LeaseLost => Err("lease lost during shutdown".into()),
        r = processor.shutdown(reason, &checkpointer) => r,
    };
    if let Err(e) = shutdown {
        tracing::warn!(?reason, error = %e, "processor shutdown failed");
    }
    if reason == ShutdownReason::ShardEnd
        && checkpointer.last_checkpoint() != Some(Position::ShardEnd)
    {
        tracing::error!(
            "processor did not checkpoint SHARD_END at shard end; the shard will be processed again"
        );
        return End::Failed;
    }
    End::Shutdown(reason)
}

async fn read_loop(
    shared: &Shared,
    source: &dyn ShardSource,
    key: &LeaseKey,
    start: &Position,
    signal: &LeaseSignal,
    checkpointer: &ShardCheckpointer,
    processor: &mut dyn crate::RecordProcessor,
) -> std::result::Result<ShutdownReason, End> {
    let backoff = shared.config.backoff;
    let mut cursor = match backoff
        .retry_named("cursor", |_| source.cursor(&key.shard, start))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "opening the shard failed");
            return Err(End::Failed);
        }
    };
    let app = shared.store.app().to_string();
    loop {
        match signal.get() {
            LeaseState::Lost => return Ok(ShutdownReason::LeaseLost),
            LeaseState::StopRequested => return Ok(ShutdownReason::Requested),
            LeaseState::Held => {}
        }
        let limit = shared.config.batch_size;
        let batch = tokio::select! {
            biased;
            _ = signal.changed_from_held() => continue,
            b = backoff.retry_named("read", |_| source.read(&key.shard, &cursor, limit)) => match b {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the shard failed");
                    return Err(End::Failed);
                }
            },
        };
        if !batch.records.is_empty() {
            let count = batch.records.len() as u64;
            let result = tokio::select! {
                biased;
                _ = signal.lost() => return Ok(ShutdownReason::LeaseLost),
                r = processor.process_batch(&batch, checkpointer) => r,
            };
            if let Err(e) = result {
                if checkpointer.is_lost() {
                    return Ok(ShutdownReason::LeaseLost);
                }
                tracing::warn!(error = %e, "process_records failed; the shard will be processed again");
                return Err(End::Failed);
            }
            metrics::counter!(
                m::RECORDS,
                "app" => app.clone(),
                "stream" => key.stream.to_string(),
                "worker" => shared.id.to_string()
            )
            .increment(count);
            if let Some(last) = batch.records.last() {
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                metrics::gauge!(
                    m::SHARD_LAG,
                    "app" => app.clone(),
                    "stream" => key.stream.to_string(),
                    "shard" => key.shard.to_string(),
                    "worker" => shared.id.to_string()
                )
                .set(now_ms.saturating_sub(last.arrival_ms) as f64);
            }
        }
        match batch.next {
            None => return Ok(ShutdownReason::ShardEnd),
            Some(next) => cursor = next,
        }
        if batch.records.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(shared.config.poll_interval) => {}
                _ = signal.changed_from_held() => {}
            }
        }
    }
}

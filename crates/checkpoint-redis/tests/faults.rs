//! Backend faults: the store's connection is killed (`CLIENT KILL ID`) while operations are in
//! flight, and replies are lost (the server is paused past the response timeout, so the script
//! runs after the client gave up on it). Every operation must succeed after reconnecting or
//! return a retryable error, never report a success that did not happen, and a script whose
//! reply was lost is resolved by running it again against the stored record.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Backoff, Checkpointer, Error, FencingToken, LeaseDuration, LeaseKey, LeaseManager, Position,
    WorkerId,
};
use checkpoint_redis::RedisStore;
use tokio::sync::Notify;

fn long() -> LeaseDuration {
    LeaseDuration::new(Duration::from_secs(120)).expect("duration")
}

fn seq(n: u64) -> Position {
    Position::sequence(&n.to_string()).expect("sequence")
}

fn as_number(position: Option<Position>) -> u64 {
    match position {
        Some(Position::Sequence { sequence, .. }) => sequence.as_str().parse().expect("u64"),
        None => 0,
        other => panic!("unexpected position {other:?}"),
    }
}

struct TaskResult {
    key: LeaseKey,
    last_ok: u64,
    last_attempted: u64,
    retryable_errors: u64,
}

/// Eight tasks checkpoint 1, 2, 3, ... on their own lease through one store (one multiplexed
/// connection) while the store's connection is killed once, mid-run. After every `Ok` an
/// independent handle must already read that position (no false success); every error must be
/// retryable; at the end the stored position lies between the last acknowledged and the last
/// attempted one, and the store works again.
async fn kill_mid_run(backoff: Backoff) {
    const TASKS: u64 = 8;
    const ROUNDS: u64 = 60;
    let app = random_app("kill");
    let Some(store) = common::open(common::config().with_backoff(backoff), app.clone()).await
    else {
        return;
    };
    let observer = common::open(common::config(), app)
        .await
        .expect("second handle");
    let mut admin = common::admin().await;
    let me = WorkerId::new("w").expect("worker");
    let before = store.client_id().await.expect("client id");

    let progress = Arc::new(AtomicU64::new(0));
    let reached = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, observer, me) = (store.clone(), observer.clone(), me.clone());
        let (progress, reached) = (progress.clone(), reached.clone());
        tasks.push(tokio::spawn(async move {
            let key = LeaseKey::parse("s", &format!("shard-{t}")).expect("key");
            let token = store
                .get_lease(&key, &me, long())
                .await
                .expect("acquire")
                .token;
            let mut result = TaskResult {
                key: key.clone(),
                last_ok: 0,
                last_attempted: 0,
                retryable_errors: 0,
            };
            for i in 1..=ROUNDS {
                result.last_attempted = i;
                match store.checkpoint_sequence(&key, &me, token, &seq(i)).await {
                    Ok(lease) => {
                        assert_eq!(lease.checkpoint, Some(seq(i)));
                        let seen = observer
                            .fetch_checkpoint(&key)
                            .await
                            .expect("observe")
                            .expect("record");
                        assert!(
                            as_number(seen.checkpoint) >= i,
                            "checkpoint {i} on {key} returned Ok but is not stored"
                        );
                        result.last_ok = i;
                    }
                    Err(e) if e.is_retryable() => result.retryable_errors += 1,
                    Err(e) => panic!("checkpoint {i} on {key}: non-retryable {e:?}"),
                }
                if progress.fetch_add(1, Ordering::SeqCst) + 1 == TASKS * ROUNDS / 2 {
                    reached.notify_one();
                }
            }
            result
        }));
    }
    // Kill the connection once half the operations are done, while the others are in flight.
    reached.notified().await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(before)
        .query_async(&mut admin)
        .await
        .expect("CLIENT KILL");
    assert_eq!(killed, 1, "the store's connection was not found to kill");

    let mut errors = 0;
    for task in tasks {
        let r = task.await.expect("task");
        errors += r.retryable_errors;
        let stored = as_number(
            observer
                .fetch_checkpoint(&r.key)
                .await
                .expect("fetch")
                .expect("record")
                .checkpoint,
        );
        assert!(
            r.last_ok <= stored && stored <= r.last_attempted,
            "{}: stored {stored}, last Ok {}, last attempted {}",
            r.key,
            r.last_ok,
            r.last_attempted
        );
        // The store works again (at most one more retryable error while reconnecting).
        let next = seq(r.last_attempted + 1);
        let token = observer
            .fetch_checkpoint(&r.key)
            .await
            .expect("fetch")
            .expect("record")
            .token;
        let again = match store.checkpoint_sequence(&r.key, &me, token, &next).await {
            Err(e) if e.is_retryable() => {
                store.checkpoint_sequence(&r.key, &me, token, &next).await
            }
            other => other,
        };
        assert_eq!(
            again.expect("checkpoint after reconnect").checkpoint,
            Some(next)
        );
    }
    let after = store.client_id().await.expect("client id");
    assert_ne!(before, after, "the store did not reconnect");
    println!(
        "CLIENT KILL mid-run with {backoff:?}: {errors} retryable errors surfaced, connection {before} -> {after}"
    );
    if backoff.max_attempts > 1 {
        assert_eq!(
            errors, 0,
            "the default backoff should have hidden one dropped connection"
        );
    }
}

async fn client_kill_mid_run_is_retried_inside() {
    kill_mid_run(Backoff::default()).await;
}

async fn client_kill_mid_run_without_retries_gives_retryable_errors_only() {
    kill_mid_run(Backoff::none()).await;
}

/// Pauses the server's write commands (scripts included) for `ms`: a script sent now runs only
/// when the pause ends, after the store's 100 ms response timeout gave up on its reply.
async fn pause_writes(ms: u64) {
    let mut admin = common::admin().await;
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .expect("CLIENT PAUSE");
}

/// The tests that pause the server's writes take turns: a pause of one would time out the
/// opening of the other's store (100 ms response timeout, possibly no retries).
static PAUSES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn lossy_store(backoff: Backoff) -> Option<RedisStore> {
    let config = common::config()
        .with_response_timeout(Duration::from_millis(100))
        .with_backoff(backoff);
    common::open(config, random_app("lost")).await
}

/// Each write's first reply is lost (the script runs after the client timed out) and the retry
/// re-runs the script, which re-reads the record: the create still reports that it created, the
/// grant and the steal bump the token once, the checkpoint is stored once.
async fn a_lost_script_reply_is_resolved_by_re_reading() {
    let backoff = Backoff {
        base: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_attempts: 30,
        budget: Duration::from_secs(10),
    };
    let _turn = PAUSES.lock().await;
    let Some(store) = lossy_store(backoff).await else {
        return;
    };
    let (a, b) = (WorkerId::new("a").unwrap(), WorkerId::new("b").unwrap());
    let key = LeaseKey::parse("s", "lost-reply").unwrap();

    pause_writes(300).await;
    let created = store
        .create_lease_if_absent(&key, &[], Some(&Position::TrimHorizon))
        .await
        .expect("create");
    assert!(created, "a retried create must recognise its own write");
    assert!(!store.create_lease_if_absent(&key, &[], None).await.unwrap());

    pause_writes(300).await;
    let lease = store.get_lease(&key, &a, long()).await.expect("get_lease");
    assert_eq!(
        lease.token,
        FencingToken(1),
        "the retried grant bumped the token twice"
    );

    pause_writes(300).await;
    let lease = store
        .checkpoint_sequence(&key, &a, lease.token, &seq(42))
        .await
        .expect("checkpoint");
    assert_eq!(lease.checkpoint, Some(seq(42)));

    pause_writes(300).await;
    let stolen = store
        .steal(&key, &b, &a, FencingToken(1), long())
        .await
        .expect("steal");
    assert_eq!(
        (stolen.owner.as_ref(), stolen.token),
        (Some(&b), FencingToken(2)),
        "the retried steal bumped the token twice"
    );

    pause_writes(300).await;
    let released = store
        .remove_lease_owner(&key, &b, stolen.token)
        .await
        .expect("release");
    assert!(released.owner.is_none());

    let stored = store.fetch_checkpoint(&key).await.unwrap().unwrap();
    assert_eq!(stored.token, FencingToken(2));
    assert_eq!(stored.checkpoint, Some(seq(42)));
    assert_eq!(stored.owner_switches_since_checkpoint, 1);
}

/// Without retries a lost reply surfaces as a retryable error, never as a failed condition; the
/// caller's own retry (or a fetch) then finds the write done.
async fn a_lost_reply_without_retries_is_a_retryable_error() {
    let _turn = PAUSES.lock().await;
    let Some(store) = lossy_store(Backoff::none()).await else {
        return;
    };
    let a = WorkerId::new("a").unwrap();
    let key = LeaseKey::parse("s", "lost-reply").unwrap();
    pause_writes(300).await;
    let err = store.get_lease(&key, &a, long()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Backend {
                retryable: true,
                ..
            }
        ),
        "expected a retryable backend error, got {err:?}"
    );
    // The caller retries: the script runs again and finds `a` already holding the lease.
    let lease = loop {
        match store.get_lease(&key, &a, long()).await {
            Err(e) if e.is_retryable() => tokio::task::yield_now().await,
            other => break other.expect("get_lease"),
        }
    };
    assert_eq!(lease.token, FencingToken(1));
    assert_eq!(lease.owner.as_ref(), Some(&a));
}

/// Scripts are called by hash; after the server forgot them (`SCRIPT FLUSH`, as after a restart)
/// the `NOSCRIPT` reply makes the store load the script again and the operation succeeds.
async fn scripts_are_reloaded_after_noscript() {
    // Scripts mode: the function library (the default on this server) has no script cache
    // to flush; `tests/functions.rs` covers a flushed library.
    let config = common::config().with_script_mode(checkpoint_redis::ScriptMode::Scripts);
    let Some(store) = common::open(config, random_app("noscript")).await else {
        return;
    };
    let a = WorkerId::new("a").unwrap();
    let key = LeaseKey::parse("s", "x").unwrap();
    let lease = store.get_lease(&key, &a, long()).await.unwrap();
    let mut admin = common::admin().await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut admin)
        .await
        .expect("SCRIPT FLUSH");
    let lease = store
        .checkpoint_sequence(&key, &a, lease.token, &seq(7))
        .await
        .expect("checkpoint after SCRIPT FLUSH");
    assert_eq!(lease.checkpoint, Some(seq(7)));
    let outcome = store
        .renew_many(&a, &[(key.clone(), lease.token)], long())
        .await
        .expect("renew_many after SCRIPT FLUSH");
    assert_eq!(outcome.renewed.len(), 1);
}

// The tests of this file, registered with the shared harness (`harness = false`): a
// `#[test]` attribute would not run here. An unreachable server leaves them ignored.
checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Redis,
    tests: [client_kill_mid_run_is_retried_inside, client_kill_mid_run_without_retries_gives_retryable_errors_only, a_lost_script_reply_is_resolved_by_re_reading, a_lost_reply_without_retries_is_a_retryable_error, scripts_are_reloaded_after_noscript],
}

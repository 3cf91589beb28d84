//! PostgreSQL-specific store behaviour beyond the conformance suite: the transactional
//! checkpoint, backend faults (`pg_terminate_backend`, a lost reply), the `bigint` token limit
//! and chunked renew-many (`schema.rs` holds the layout and configuration tests). Against
//! `CHECKPOINT_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`); each test uses
//! its own random app, and the tests that need their own tables use their own random schema and
//! drop only that.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use checkpoint_core::{
    Backoff, Checkpointer, ErrorKind, FencingToken, LeaseKey, LeaseManager, Position,
};
use checkpoint_postgres::sqlx;
use checkpoint_postgres::{PostgresConfig, PostgresStore};
use checkpoint_test_support::{DropRule, LossyProxy, Protocol};
use common::{config, drop_schema, key, long, open, random_schema, seq, url, worker};

async fn a_rolled_back_transaction_leaves_the_old_checkpoint() {
    let Some(store) = open(config()).await else {
        return;
    };
    let schema = random_schema();
    let totals = format!("\"{schema}\".totals");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA \"{schema}\"; CREATE TABLE {totals} (id int PRIMARY KEY, amount bigint NOT NULL); \
         INSERT INTO {totals} VALUES (1, 0)"
    )))
    .execute(store.pool())
    .await
    .expect("application table");
    let (k, me) = (key(), worker("w"));
    let lease = store.get_lease(&k, &me, long()).await.expect("acquire");
    store
        .checkpoint_sequence(&k, &me, lease.token, &seq(10))
        .await
        .expect("first checkpoint");
    let add = sqlx::AssertSqlSafe(format!(
        "UPDATE {totals} SET amount = amount + 5 WHERE id = 1"
    ));
    let amount = sqlx::AssertSqlSafe(format!("SELECT amount FROM {totals} WHERE id = 1"));

    // Rolled back: neither the application's write nor the position.
    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(add.0.clone()))
        .execute(&mut *tx)
        .await
        .expect("app write");
    let written = store
        .checkpoint_in_transaction(&mut tx, &k, &me, lease.token, &seq(20))
        .await
        .expect("checkpoint in the transaction");
    assert_eq!(written.checkpoint, Some(seq(20)));
    tx.rollback().await.expect("rollback");
    let fetched = store
        .fetch_checkpoint(&k)
        .await
        .expect("fetch")
        .expect("record");
    assert_eq!(
        fetched.checkpoint,
        Some(seq(10)),
        "rollback must keep the old checkpoint"
    );
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(amount.0.clone()))
        .fetch_one(store.pool())
        .await
        .expect("amount");
    assert_eq!(total, 0);

    // Committed: both.
    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(add.0.clone()))
        .execute(&mut *tx)
        .await
        .expect("app write");
    store
        .checkpoint_in_transaction(&mut tx, &k, &me, lease.token, &seq(20))
        .await
        .expect("checkpoint in the transaction");
    tx.commit().await.expect("commit");
    let fetched = store
        .fetch_checkpoint(&k)
        .await
        .expect("fetch")
        .expect("record");
    assert_eq!(fetched.checkpoint, Some(seq(20)));
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(amount.0.clone()))
        .fetch_one(store.pool())
        .await
        .expect("amount");
    assert_eq!(total, 5);

    // Fenced and monotonic inside a transaction too; nothing written.
    let mut tx = store.pool().begin().await.expect("begin");
    let stale = store
        .checkpoint_in_transaction(&mut tx, &k, &me, FencingToken(lease.token.0 + 1), &seq(30))
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::LeaseLost, "{stale}");
    let back = store
        .checkpoint_in_transaction(&mut tx, &k, &me, lease.token, &seq(15))
        .await
        .unwrap_err();
    assert_eq!(back.kind(), ErrorKind::CheckpointRegression, "{back}");
    tx.commit().await.expect("commit");
    assert_eq!(
        store
            .fetch_checkpoint(&k)
            .await
            .expect("fetch")
            .expect("record")
            .checkpoint,
        Some(seq(20))
    );

    // Outside a transaction: refused, naming the argument.
    let mut conn = store.pool().acquire().await.expect("connection");
    let outside = store
        .checkpoint_in_transaction(&mut conn, &k, &me, lease.token, &seq(40))
        .await
        .unwrap_err();
    assert_eq!(outside.field(), Some("transaction"), "{outside}");
    drop(conn);
    drop_schema(&store, &schema).await;
}

/// While a transaction holding a checkpoint is open, a steal waits for it; the steal then wins
/// and the committed checkpoint (written under the old token, while it was still valid) stays.
async fn a_steal_waits_for_an_open_transactional_checkpoint() {
    let Some(store) = open(config()).await else {
        return;
    };
    let (k, a, b) = (key(), worker("a"), worker("b"));
    let lease = store.get_lease(&k, &a, long()).await.expect("acquire");
    let mut tx = store.pool().begin().await.expect("begin");
    store
        .checkpoint_in_transaction(&mut tx, &k, &a, lease.token, &seq(7))
        .await
        .expect("checkpoint");
    let thief = store.clone();
    let steal = tokio::spawn({
        let (k, a, b) = (k.clone(), a.clone(), b.clone());
        async move { thief.steal(&k, &b, &a, lease.token, long()).await }
    });
    // Wait until the steal's statement is blocked on the row lock of the open transaction.
    let started = std::time::Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(format!("checkpoint:{}", store.app()))
        .fetch_one(store.pool())
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            break;
        }
        assert!(
            !steal.is_finished(),
            "a steal overtook an open transactional checkpoint"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the steal never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !steal.is_finished(),
        "a steal overtook an open transactional checkpoint"
    );
    tx.commit().await.expect("commit");
    let stolen = steal.await.expect("task").expect("steal");
    assert_eq!(stolen.owner, Some(b));
    assert_eq!(stolen.checkpoint, Some(seq(7)));
}

/// Terminates the store's backends between operations and while a run of checkpoints is in
/// flight. Without retries each operation either succeeds or fails with a retryable error; with
/// the default backoff the next operation succeeds on a fresh connection. Every success is
/// visible to a fresh reader: never a false success.
async fn terminated_backends_give_retryable_errors_never_false_success() {
    let Some(admin) = open(config()).await else {
        return;
    };
    let name = format!("fault{}", random_schema());
    let no_retry = open(
        config()
            .with_application_name(name.clone())
            .with_max_connections(2)
            .with_backoff(Backoff::none()),
    )
    .await
    .expect("server reachable");
    let no_retry = no_retry.for_app(admin.app().clone());
    let retrying = PostgresStore::open(
        config()
            .with_application_name(name.clone())
            .with_max_connections(2),
        admin.app().clone(),
    )
    .await
    .expect("open");
    let terminate = || async {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&name)
        .fetch_all(admin.pool())
        .await
        .expect("terminate");
        killed.len()
    };
    let (k, me) = (key(), worker("w"));
    let token = no_retry
        .get_lease(&k, &me, long())
        .await
        .expect("acquire")
        .token;
    retrying
        .renew(&k, &me, token, long())
        .await
        .expect("connect the second pool");
    let stored = |admin: PostgresStore, k: LeaseKey| async move {
        admin
            .fetch_checkpoint(&k)
            .await
            .expect("fetch")
            .expect("record")
            .checkpoint
    };

    // Between operations.
    let mut errors = 0;
    for round in 1..=10u64 {
        assert!(terminate().await > 0, "no backend to terminate");
        match no_retry
            .checkpoint_sequence(&k, &me, token, &seq(round * 2))
            .await
        {
            Ok(_) => assert_eq!(stored(admin.clone(), k.clone()).await, Some(seq(round * 2))),
            Err(e) => {
                assert!(e.is_retryable(), "not retryable: {e:?}");
                errors += 1;
            }
        }
        terminate().await;
        retrying
            .checkpoint_sequence(&k, &me, token, &seq(round * 2 + 1))
            .await
            .expect("with backoff, the next operation succeeds on a fresh connection");
        assert_eq!(
            stored(admin.clone(), k.clone()).await,
            Some(seq(round * 2 + 1))
        );
    }
    println!(
        "terminated between operations: {errors} of 10 unretried checkpoints failed (retryable)"
    );

    // In the middle of a run: a killer terminates the backends every few milliseconds while
    // checkpoints run without retries.
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let killer = tokio::spawn({
        let (admin, name, stop, kills) = (admin.clone(), name.clone(), stop.clone(), kills.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                let n: Vec<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                )
                .bind(&name)
                .fetch_all(admin.pool())
                .await
                .expect("terminate");
                kills.fetch_add(n.len(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
    });
    let (mut ok, mut failed, mut last_ok) = (0, 0, 0);
    let first = 100;
    let last = first + 400;
    for n in first..last {
        match no_retry.checkpoint_sequence(&k, &me, token, &seq(n)).await {
            Ok(lease) => {
                assert_eq!(lease.checkpoint, Some(seq(n)));
                ok += 1;
                last_ok = n;
            }
            Err(e) => {
                assert!(e.is_retryable(), "not retryable: {e:?}");
                failed += 1;
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    killer.await.expect("killer");
    let Some(Position::Sequence { sequence, .. }) = stored(admin.clone(), k.clone()).await else {
        panic!("no sequence stored");
    };
    let final_seq: u64 = sequence.as_str().parse().expect("number");
    assert!(
        final_seq >= last_ok && final_seq < last,
        "stored {final_seq}, last success {last_ok}: a success was not stored"
    );
    println!(
        "terminated mid-run: {} backends killed, {ok} checkpoints ok, {failed} retryable errors, stored {final_seq} >= last ok {last_ok}",
        kills.load(Ordering::SeqCst)
    );
    assert!(
        kills.load(Ordering::SeqCst) > 0,
        "no backend was terminated mid-run"
    );
}

async fn a_lost_reply_is_resolved_by_rereading() {
    let Some(direct) = open(config()).await else {
        return;
    };
    let upstream = {
        let u = url::Url::parse(&url()).expect("url");
        format!(
            "{}:{}",
            u.host_str().unwrap_or("127.0.0.1"),
            u.port().unwrap_or(5432)
        )
    };
    let proxy = LossyProxy::start(upstream, Protocol::Postgres).await;
    let mut proxied_url = url::Url::parse(&url()).expect("url");
    proxied_url.set_host(Some("127.0.0.1")).expect("host");
    proxied_url.set_port(Some(proxy.port())).expect("port");
    proxied_url
        .query_pairs_mut()
        .append_pair("sslmode", "disable");
    let proxied = PostgresStore::open(
        PostgresConfig::from_url(proxied_url.as_str()).expect("proxied url"),
        direct.app().clone(),
    )
    .await
    .expect("open through the proxy");
    let no_retry = PostgresStore::open(
        PostgresConfig::from_url(proxied_url.as_str())
            .expect("proxied url")
            .with_backoff(Backoff::none()),
        direct.app().clone(),
    )
    .await
    .expect("open through the proxy");
    let (k, a, b) = (key(), worker("a"), worker("b"));

    // get_lease: the lost grant is found on retry as "already ours", with the same token.
    proxy.arm(DropRule::PostgresWrite);
    let lease = proxied.get_lease(&k, &a, long()).await.expect("get_lease");
    assert_eq!(proxy.dropped(), 1, "no reply was dropped");
    assert_eq!(
        lease.token,
        FencingToken(1),
        "a retried grant bumped the token twice"
    );

    // checkpoint: the retry finds the equal position and reports the same success.
    proxy.arm(DropRule::PostgresWrite);
    let l = proxied
        .checkpoint_sequence(&k, &a, lease.token, &seq(5))
        .await
        .expect("checkpoint");
    assert_eq!(proxy.dropped(), 2);
    assert_eq!(l.checkpoint, Some(seq(5)));

    // Without retries the lost reply is a retryable error, and the write did happen.
    proxy.arm(DropRule::PostgresWrite);
    let e = no_retry
        .checkpoint_sequence(&k, &a, lease.token, &seq(6))
        .await
        .unwrap_err();
    assert_eq!(proxy.dropped(), 3);
    assert!(e.is_retryable(), "{e:?}");
    let stored = direct
        .fetch_checkpoint(&k)
        .await
        .expect("fetch")
        .expect("record");
    assert_eq!(stored.checkpoint, Some(seq(6)));

    // steal: the retry matches no row (the owner changed), and the re-read finds the steal
    // already done by this thief with the next token.
    proxy.arm(DropRule::PostgresWrite);
    let stolen = proxied
        .steal(&k, &b, &a, lease.token, long())
        .await
        .expect("steal");
    assert_eq!(proxy.dropped(), 4);
    assert_eq!(
        (stolen.owner.as_ref(), stolen.token),
        (Some(&b), lease.token.next())
    );

    // release: the re-read finds the lease free with the same token: the release happened.
    proxy.arm(DropRule::PostgresWrite);
    let released = proxied
        .remove_lease_owner(&k, &b, stolen.token)
        .await
        .expect("release");
    assert_eq!(proxy.dropped(), 5);
    assert!(released.owner.is_none() && released.token == stolen.token);

    // renew_many: the repeat renews again.
    let again = proxied.get_lease(&k, &a, long()).await.expect("get_lease");
    proxy.arm(DropRule::PostgresWrite);
    let outcome = proxied
        .renew_many(&a, &[(k.clone(), again.token)], long())
        .await
        .expect("renew_many");
    assert_eq!(proxy.dropped(), 6);
    assert_eq!(outcome.renewed.len(), 1);
    assert!(outcome.lost.is_empty());
}

/// Create-if-absent answers exactly whether it created the record even when the reply to its
/// `COMMIT` is lost, with retries and without: never "existed" for a record this call created.
async fn a_lost_create_reply_still_answers_created() {
    let Some(direct) = open(config()).await else {
        return;
    };
    let upstream = {
        let u = url::Url::parse(&url()).expect("url");
        format!(
            "{}:{}",
            u.host_str().unwrap_or("127.0.0.1"),
            u.port().unwrap_or(5432)
        )
    };
    let proxy = LossyProxy::start(upstream, Protocol::Postgres).await;
    let mut proxied_url = url::Url::parse(&url()).expect("url");
    proxied_url.set_host(Some("127.0.0.1")).expect("host");
    proxied_url.set_port(Some(proxy.port())).expect("port");
    proxied_url
        .query_pairs_mut()
        .append_pair("sslmode", "disable");
    for (i, backoff) in [Backoff::default(), Backoff::none()]
        .into_iter()
        .enumerate()
    {
        let proxied = PostgresStore::open(
            PostgresConfig::from_url(proxied_url.as_str())
                .expect("proxied url")
                .with_backoff(backoff),
            direct.app().clone(),
        )
        .await
        .expect("open through the proxy");
        let k = LeaseKey::parse("created", &format!("shard-{i}")).expect("key");
        proxy.arm(DropRule::PostgresWrite);
        let created = proxied
            .create_lease_if_absent(&k, &[], Some(&seq(3)))
            .await
            .expect("create");
        assert_eq!(proxy.dropped(), i + 1, "no reply was dropped");
        assert!(
            created,
            "a create whose commit reply was lost answered that it existed"
        );
        assert!(
            !proxied
                .create_lease_if_absent(&k, &[], None)
                .await
                .expect("create again"),
            "a second create answered created"
        );
        let stored = direct
            .fetch_checkpoint(&k)
            .await
            .expect("fetch")
            .expect("record");
        assert_eq!(stored.checkpoint, Some(seq(3)));
    }
}

/// A record whose token is `i64::MAX` (the largest a `bigint` holds, reachable by an import or
/// a hand edit) cannot be granted to another worker or stolen: both are `InvalidInput` naming
/// `token`, and the record is unchanged. Its holder keeps working with it.
async fn a_token_at_the_bigint_limit_is_a_typed_error() {
    let Some(store) = open(config()).await else {
        return;
    };
    let (k, me, thief) = (key(), worker("w"), worker("thief"));
    store.get_lease(&k, &me, long()).await.expect("acquire");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {} SET token = 9223372036854775807 WHERE app = $1",
        store.lease_table()
    )))
    .bind(store.app().as_str())
    .execute(store.pool())
    .await
    .expect("set the token to i64::MAX");
    let max = FencingToken(i64::MAX as u64);
    let before = store.fetch_checkpoint(&k).await.unwrap().expect("record");
    assert_eq!(before.token, max);
    let e = store
        .steal(&k, &thief, &me, max, long())
        .await
        .expect_err("a steal would pass i64::MAX");
    assert_eq!(e.field(), Some("token"), "{e:?}");
    store.evict_lease(&k).await.expect("evict");
    let e = store
        .get_lease(&k, &thief, long())
        .await
        .expect_err("a grant would pass i64::MAX");
    assert_eq!(e.field(), Some("token"), "{e:?}");
    let after = store.fetch_checkpoint(&k).await.unwrap().expect("record");
    assert_eq!((after.token, after.owner), (max, None));
    let e = store
        .checkpoint_sequence(&k, &me, FencingToken(u64::MAX), &seq(1))
        .await
        .expect_err("no record holds a token above i64::MAX");
    assert_eq!(e.kind(), ErrorKind::LeaseLost, "{e:?}");
}

/// A batch larger than one chunk runs as several statements at once; each lease is still fenced
/// on its own owner and token, so the leases taken over, released or renewed with a stale token
/// in any chunk are exactly the ones reported lost, and nothing else changes.
async fn a_chunked_renew_many_reports_exactly_the_lost_leases() {
    let Some(store) = open(config().with_renew_chunk(500).with_max_connections(4)).await else {
        return;
    };
    assert_eq!(
        store.capabilities().renew_many,
        checkpoint_core::BatchMode::Chunked(500)
    );
    let (a, b) = (worker("a"), worker("b"));
    let keys: Vec<LeaseKey> = (0..2_500)
        .map(|i| LeaseKey::parse("orders", &format!("shard-{i:05}")).expect("key"))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for part in keys.chunks(313) {
        let (store, a, part) = (store.clone(), a.clone(), part.to_vec());
        tasks.spawn(async move {
            let mut held = Vec::new();
            for k in part {
                let lease = store.get_lease(&k, &a, long()).await.expect("acquire");
                held.push((k, lease.token));
            }
            held
        });
    }
    let mut held: Vec<(LeaseKey, FencingToken)> = Vec::new();
    while let Some(part) = tasks.join_next().await {
        held.extend(part.expect("task"));
    }
    held.sort();
    // Chunks of 500: 7 and 2,499 in the first and last chunk are stolen, 600 (second chunk) is
    // released, 1,234 (third) is renewed with a stale token, 1,800 (fourth) was taken over by b
    // after a release.
    let (k, t) = held[7].clone();
    store.steal(&k, &b, &a, t, long()).await.expect("steal");
    let (k, t) = held[2_499].clone();
    store.steal(&k, &b, &a, t, long()).await.expect("steal");
    let (k, t) = held[600].clone();
    store.remove_lease_owner(&k, &a, t).await.expect("release");
    held[1_234].1 = FencingToken(held[1_234].1.0 + 1);
    let (k, t) = held[1_800].clone();
    store.remove_lease_owner(&k, &a, t).await.expect("release");
    store.get_lease(&k, &b, long()).await.expect("take over");
    let mut expected_lost: Vec<LeaseKey> = [7, 600, 1_234, 1_800, 2_499]
        .iter()
        .map(|i| held[*i].0.clone())
        .collect();
    expected_lost.sort();

    // Shuffled input: the outcome is sorted whatever the order of the batch.
    let mut batch = held.clone();
    batch.reverse();
    let before = store
        .fetch_checkpoint(&held[0].0)
        .await
        .expect("fetch")
        .expect("lease");
    let stale_before = store
        .fetch_checkpoint(&held[1_234].0)
        .await
        .expect("fetch")
        .expect("lease");
    let outcome = store
        .renew_many(&a, &batch, long())
        .await
        .expect("renew_many");
    assert_eq!(outcome.lost, expected_lost);
    assert_eq!(outcome.renewed.len(), 2_495);
    assert!(outcome.renewed.windows(2).all(|w| w[0].key < w[1].key));
    for lease in &outcome.renewed {
        assert_eq!(lease.owner.as_ref(), Some(&a));
        assert!(expected_lost.binary_search(&lease.key).is_err());
    }
    assert!(outcome.renewed[0].deadline > before.deadline);
    for i in [7, 1_800, 2_499] {
        let lease = store
            .fetch_checkpoint(&held[i].0)
            .await
            .expect("fetch")
            .expect("lease");
        assert_eq!(lease.owner.as_ref(), Some(&b), "lease {i} stays with b");
    }
    let released = store
        .fetch_checkpoint(&held[600].0)
        .await
        .expect("fetch")
        .expect("lease");
    assert_eq!(released.owner, None);
    assert_eq!(released.deadline, None);
    let stale = store
        .fetch_checkpoint(&held[1_234].0)
        .await
        .expect("fetch")
        .expect("lease");
    assert_eq!(stale, stale_before, "a stale token renews nothing");
}

// The tests of this file, registered with the shared harness (`harness = false`): a
// `#[test]` attribute would not run here. An unreachable server leaves them ignored.
checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Postgres,
    tests: [a_rolled_back_transaction_leaves_the_old_checkpoint, a_steal_waits_for_an_open_transactional_checkpoint, terminated_backends_give_retryable_errors_never_false_success, a_lost_reply_is_resolved_by_rereading, a_lost_create_reply_still_answers_created, a_token_at_the_bigint_limit_is_a_typed_error, a_chunked_renew_many_reports_exactly_the_lost_leases],
}

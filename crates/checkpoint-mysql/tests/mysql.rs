//! MySQL/MariaDB-specific behaviour beyond the conformance suite: the transactional
//! checkpoint, backend faults (`KILL CONNECTION`, a lost reply), schema checks, identifier
//! validation and redaction. Against `CHECKPOINT_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`); each test uses its own random app, and the tests that
//! need their own tables use their own random table prefix and drop only those tables.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkpoint_core::{
    AppName, Backoff, Checkpointer, Error, ErrorKind, FencingToken, LeaseKey, LeaseManager,
    Position,
};
use checkpoint_mysql::MySqlStore;
use checkpoint_mysql::sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use checkpoint_mysql::sqlx::{self};
use common::{
    config, drop_tables, key, long, open, random_prefix, seq, stored_checkpoint, url, worker,
};

async fn a_rolled_back_transaction_leaves_the_old_checkpoint() {
    let store = open(config()).await;
    let prefix = random_prefix();
    let totals = format!("`{prefix}_totals`");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {totals} (id INT PRIMARY KEY, amount BIGINT NOT NULL) ENGINE = InnoDB; \
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
    let add = format!("UPDATE {totals} SET amount = amount + 5 WHERE id = 1");
    let amount = format!("SELECT amount FROM {totals} WHERE id = 1");

    // Rolled back: neither the application's write nor the position.
    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(add.clone()))
        .execute(&mut *tx)
        .await
        .expect("app write");
    let written = store
        .checkpoint_in_transaction(&mut tx, &k, &me, lease.token, &seq(20))
        .await
        .expect("checkpoint in the transaction");
    assert_eq!(written.checkpoint, Some(seq(20)));
    tx.rollback().await.expect("rollback");
    assert_eq!(
        stored_checkpoint(&store, &k).await,
        Some(seq(10)),
        "rollback must keep the old checkpoint"
    );
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(amount.clone()))
        .fetch_one(store.pool())
        .await
        .expect("amount");
    assert_eq!(total, 0);

    // Committed: both.
    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(add.clone()))
        .execute(&mut *tx)
        .await
        .expect("app write");
    store
        .checkpoint_in_transaction(&mut tx, &k, &me, lease.token, &seq(20))
        .await
        .expect("checkpoint in the transaction");
    tx.commit().await.expect("commit");
    assert_eq!(stored_checkpoint(&store, &k).await, Some(seq(20)));
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(amount.clone()))
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
    assert_eq!(stored_checkpoint(&store, &k).await, Some(seq(20)));

    // Outside a transaction: refused, naming the argument.
    let mut conn = store.pool().acquire().await.expect("connection");
    let outside = store
        .checkpoint_in_transaction(&mut conn, &k, &me, lease.token, &seq(40))
        .await
        .unwrap_err();
    assert_eq!(outside.field(), Some("transaction"), "{outside}");
    drop(conn);
    drop_tables(&store, &prefix).await;
}

/// While a transaction holding a checkpoint is open, a steal waits for its row lock; the steal
/// then wins and the committed checkpoint (written under the old token, while it was still
/// valid) stays.
async fn a_steal_waits_for_an_open_transactional_checkpoint() {
    let prefix = random_prefix();
    let store = open(config().with_table_prefix(prefix.clone())).await;
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
        // The steal's UPDATE shows in the process list while it runs; it finishes at once
        // unless it waits for the row lock. (`information_schema.innodb_trx` is no help:
        // MariaDB lists a transaction waiting for its first lock there only sometimes.)
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.processlist
             WHERE info LIKE ? AND info LIKE '%token + 1%'",
        )
        .bind(format!("UPDATE `{prefix}_leases`%"))
        .fetch_one(store.pool())
        .await
        .expect("innodb_trx");
        if waiting > 0 {
            break;
        }
        assert!(
            !steal.is_finished(),
            "a steal overtook an open transactional checkpoint"
        );
        if started.elapsed() > Duration::from_secs(10) {
            let transactions: Vec<(String, Option<String>)> = sqlx::query_as(
                "SELECT CAST(trx_state AS CHAR), CAST(trx_query AS CHAR)
                 FROM information_schema.innodb_trx",
            )
            .fetch_all(store.pool())
            .await
            .expect("innodb_trx");
            let processes: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT CAST(state AS CHAR), CAST(info AS CHAR)
                 FROM information_schema.processlist WHERE command <> 'Sleep'",
            )
            .fetch_all(store.pool())
            .await
            .expect("processlist");
            panic!(
                "the steal never waited for the lock; transactions: {transactions:?}; \
                 statements: {processes:?}"
            );
        }
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
    drop_tables(&store, &prefix).await;
}

/// A store on a pool of the test's own whose `after_connect` records every connection id, so
/// `KILL CONNECTION` can reach exactly this store's connections.
async fn store_with_recorded_connections(
    app: AppName,
    backoff: Backoff,
) -> (MySqlStore, Arc<Mutex<Vec<u64>>>) {
    let ids = Arc::new(Mutex::new(Vec::new()));
    let options: MySqlConnectOptions = url().parse().expect("a mysql:// URL");
    let pool = MySqlPoolOptions::new()
        .max_connections(2)
        // As the store's own pools: no ping before each use, so a killed idle connection
        // fails the next statement.
        .test_before_acquire(false)
        .after_connect({
            let ids = ids.clone();
            move |conn, _| {
                let ids = ids.clone();
                Box::pin(async move {
                    // As the store's own pools.
                    sqlx::raw_sql("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                        .execute(&mut *conn)
                        .await?;
                    let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
                        .fetch_one(&mut *conn)
                        .await?;
                    ids.lock().expect("ids").push(id);
                    Ok(())
                })
            }
        })
        .connect_lazy_with(options);
    let store = MySqlStore::from_pool(pool, config().with_backoff(backoff), app)
        .await
        .expect("open on the recorded pool");
    (store, ids)
}

/// Whether one of three tries of `op` succeeded.
async fn futures_first_ok<T, F, Fut>(op: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = checkpoint_core::Result<T>>,
{
    for _ in 0..3 {
        if op().await.is_ok() {
            return true;
        }
    }
    false
}

/// Kills every recorded connection from `admin`'s pool; returns how many were alive.
async fn kill_all(admin: &MySqlStore, ids: &Mutex<Vec<u64>>) -> usize {
    let victims: Vec<u64> = std::mem::take(&mut *ids.lock().expect("ids"));
    let mut killed = 0;
    for id in victims {
        // 1094 "unknown thread id": that connection is already gone.
        if sqlx::query(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}")))
            .execute(admin.pool())
            .await
            .is_ok()
        {
            killed += 1;
        }
    }
    killed
}

/// Kills the store's connections (`KILL CONNECTION` from a second connection) between
/// operations and while a run of checkpoints is in flight. Without retries each operation
/// either succeeds or fails with a retryable error; with the default backoff the next
/// operation succeeds on a fresh connection. Every success is visible to a fresh reader: never
/// a false success.
async fn killed_connections_give_retryable_errors_never_false_success() {
    let admin = open(config()).await;
    let (no_retry, no_retry_ids) =
        store_with_recorded_connections(admin.app().clone(), Backoff::none()).await;
    let (retrying, retrying_ids) =
        store_with_recorded_connections(admin.app().clone(), Backoff::default()).await;
    let (k, me) = (key(), worker("w"));
    let token = retrying
        .get_lease(&k, &me, long())
        .await
        .expect("acquire")
        .token;
    no_retry
        .renew(&k, &me, token, long())
        .await
        .expect("connect the second pool");

    // Between operations.
    let mut errors = 0;
    for round in 1..=10u64 {
        // A live pooled connection to kill: the last round's failure discarded one dead
        // connection, and the pool may still hold another (killed, not yet noticed).
        let live = futures_first_ok(|| no_retry.fetch_checkpoint(&k)).await;
        assert!(live, "no fresh connection after three tries");
        assert!(
            kill_all(&admin, &no_retry_ids).await > 0,
            "no connection to kill"
        );
        match no_retry
            .checkpoint_sequence(&k, &me, token, &seq(round * 2))
            .await
        {
            Ok(_) => assert_eq!(stored_checkpoint(&admin, &k).await, Some(seq(round * 2))),
            Err(e) => {
                assert!(e.is_retryable(), "not retryable: {e:?}");
                errors += 1;
            }
        }
        kill_all(&admin, &retrying_ids).await;
        retrying
            .checkpoint_sequence(&k, &me, token, &seq(round * 2 + 1))
            .await
            .expect("with backoff, the next operation succeeds on a fresh connection");
        assert_eq!(
            stored_checkpoint(&admin, &k).await,
            Some(seq(round * 2 + 1))
        );
    }
    println!("killed between operations: {errors} of 10 unretried checkpoints failed (retryable)");

    // In the middle of a run: a killer kills the connections every few milliseconds while
    // checkpoints run without retries.
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let killer = tokio::spawn({
        let (admin, ids, stop, kills) = (
            admin.clone(),
            no_retry_ids.clone(),
            stop.clone(),
            kills.clone(),
        );
        async move {
            while !stop.load(Ordering::SeqCst) {
                kills.fetch_add(kill_all(&admin, &ids).await, Ordering::SeqCst);
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
    let Some(Position::Sequence { sequence, .. }) = stored_checkpoint(&admin, &k).await else {
        panic!("no sequence stored");
    };
    let final_seq: u64 = sequence.as_str().parse().expect("number");
    assert!(
        final_seq >= last_ok && final_seq < last,
        "stored {final_seq}, last success {last_ok}: a success was not stored"
    );
    println!(
        "killed mid-run: {} connections killed, {ok} checkpoints ok, {failed} retryable errors, stored {final_seq} >= last ok {last_ok}",
        kills.load(Ordering::SeqCst)
    );
    assert!(
        kills.load(Ordering::SeqCst) > 0,
        "no connection was killed mid-run"
    );
}

/// On a pool at the server's default `REPEATABLE READ` (the store's own pools use
/// `READ COMMITTED`), racing first grants of one absent lease meet on gap locks; the deadlock
/// victims are retried, and exactly one worker wins.
async fn racing_first_grants_on_a_repeatable_read_pool_have_one_winner() {
    let probe = open(config()).await;
    let options: MySqlConnectOptions = url().parse().expect("a mysql:// URL");
    let pool = MySqlPoolOptions::new()
        .max_connections(8)
        .connect_lazy_with(options);
    let isolation: String = sqlx::query_scalar("SELECT CAST(@@tx_isolation AS CHAR)")
        .fetch_one(&pool)
        .await
        .or_else(|_| isolation_unknown())
        .expect("isolation");
    println!("pool isolation: {isolation}");
    let store = MySqlStore::from_pool(pool, config(), probe.app().clone())
        .await
        .expect("from_pool");
    for round in 0..5 {
        let k = LeaseKey::parse("race", &format!("shard-{round}")).expect("key");
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8 {
            let (store, k) = (store.clone(), k.clone());
            tasks
                .spawn(async move { store.get_lease(&k, &worker(&format!("w{i}")), long()).await });
        }
        let (mut won, mut held) = (0, 0);
        while let Some(result) = tasks.join_next().await {
            match result.expect("task") {
                Ok(lease) => {
                    won += 1;
                    assert_eq!(lease.token, FencingToken(1));
                }
                Err(Error::LeaseHeld { .. }) => held += 1,
                Err(e) => panic!("round {round}: {e:?}"),
            }
        }
        assert_eq!((won, held), (1, 7), "round {round}");
    }
}

/// `@@tx_isolation` is MariaDB's (and MySQL 5.7's) name; MySQL 8 calls it
/// `@@transaction_isolation`. The isolation is printed only, so an unknown name is not fatal.
fn isolation_unknown() -> Result<String, sqlx::Error> {
    Ok("unknown (MySQL 8 names it @@transaction_isolation)".to_owned())
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Mysql,
    tests: [
        a_rolled_back_transaction_leaves_the_old_checkpoint,
        a_steal_waits_for_an_open_transactional_checkpoint,
        killed_connections_give_retryable_errors_never_false_success,
        racing_first_grants_on_a_repeatable_read_pool_have_one_winner,
    ],
}

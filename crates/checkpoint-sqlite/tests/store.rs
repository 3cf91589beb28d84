//! SQLite-specific behaviour beyond the conformance suite: the transactional checkpoint, two
//! processes on one file, hand-edited corrupt rows, schema mismatches and the table prefix.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Checkpointer, CheckpointerExt, Error, ErrorKind, FencingToken, LeaseDuration, LeaseKey,
    LeaseManager, Position, WorkerId,
};
use checkpoint_sqlite::{SqliteConfig, SqliteStore, rusqlite};

/// A fresh database file under the system temp dir, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("checkpoint-sqlite-{}.db", random_app("t"))))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

fn key(shard: &str) -> LeaseKey {
    LeaseKey::parse("orders", shard).expect("valid key")
}

fn worker(name: &str) -> WorkerId {
    WorkerId::new(name).expect("valid worker")
}

fn long() -> LeaseDuration {
    LeaseDuration::new(Duration::from_secs(60)).expect("valid duration")
}

fn seq(s: &str) -> Position {
    Position::sequence(s).expect("valid sequence")
}

async fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(SqliteConfig::file(path), random_app("app"))
        .await
        .expect("open")
}

#[tokio::test(flavor = "multi_thread")]
async fn transactional_checkpoint_commits_and_rolls_back_with_application_state() {
    let db = TempDb::new();
    let store = open(&db.0).await;
    let (k, me) = (key("shard-0"), worker("w1"));
    let lease = store.get_lease(&k, &me, long()).await.expect("acquire");
    store
        .checkpoint_sequence(&k, &me, lease.token, &seq("10"))
        .await
        .expect("checkpoint 10");

    let mut conn = store.open_connection().expect("connection");
    conn.execute_batch("CREATE TABLE totals (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL)")
        .expect("application table");

    // Rolled back: neither the application row nor the position.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("begin");
    tx.execute("INSERT INTO totals VALUES (1, 100)", [])
        .expect("insert");
    let written = store
        .checkpoint_in_transaction(&tx, &k, &me, lease.token, &seq("20"))
        .expect("checkpoint inside the transaction");
    assert_eq!(written.checkpoint, Some(seq("20")));
    tx.rollback().expect("rollback");
    assert_eq!(
        store.fetch_position(&k).await.expect("fetch"),
        Some(seq("10"))
    );
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM totals", [], |r| r.get(0))
        .expect("count");
    assert_eq!(rows, 0);

    // Committed: both.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("begin");
    tx.execute("INSERT INTO totals VALUES (1, 100)", [])
        .expect("insert");
    store
        .checkpoint_in_transaction(&tx, &k, &me, lease.token, &seq("20"))
        .expect("checkpoint");
    tx.commit().expect("commit");
    assert_eq!(
        store.fetch_position(&k).await.expect("fetch"),
        Some(seq("20"))
    );
    let amount: i64 = conn
        .query_row("SELECT amount FROM totals", [], |r| r.get(0))
        .expect("read");
    assert_eq!(amount, 100);

    // Fenced and monotonic inside the transaction too, and nothing written.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("begin");
    let stale = store.checkpoint_in_transaction(&tx, &k, &me, lease.token.next(), &seq("30"));
    assert_eq!(
        stale.map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::LeaseLost)
    );
    let back = store.checkpoint_in_transaction(&tx, &k, &me, lease.token, &seq("5"));
    assert_eq!(
        back.map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::CheckpointRegression)
    );
    tx.commit().expect("commit");
    assert_eq!(
        store.fetch_position(&k).await.expect("fetch"),
        Some(seq("20"))
    );

    // Outside a transaction the call is refused: it would commit on its own.
    let outside = store.checkpoint_in_transaction(&conn, &k, &me, lease.token, &seq("40"));
    assert_eq!(
        outside.map(|_| ()).map_err(|e| e.field()),
        Err(Some("transaction"))
    );
}

/// Environment variables that turn [`child_process_contender`] on, inside a child process.
const CHILD_DB: &str = "CHECKPOINT_SQLITE_CHILD_DB";
const CHILD_APP: &str = "CHECKPOINT_SQLITE_CHILD_APP";
const ROUNDS: u64 = 100;

/// `ROUNDS` times: acquire the shared counter lease, read it, checkpoint the next value, release.
async fn count_rounds(store: &SqliteStore, me: &WorkerId) {
    let k = key("counter");
    let mut done = 0;
    while done < ROUNDS {
        let lease = match store.get_lease(&k, me, long()).await {
            Ok(lease) => lease,
            Err(Error::LeaseHeld { .. }) => {
                tokio::task::yield_now().await;
                continue;
            }
            Err(e) => panic!("{me}: get_lease: {e}"),
        };
        let current = match store.fetch_position(&k).await.expect("fetch") {
            Some(Position::Sequence { sequence, .. }) => {
                sequence.as_str().parse::<u64>().expect("small")
            }
            other => panic!("unexpected position {other:?}"),
        };
        store
            .checkpoint_sequence(&k, me, lease.token, &seq(&(current + 1).to_string()))
            .await
            .expect("fenced checkpoint while holding the lease");
        store
            .remove_lease_owner(&k, me, lease.token)
            .await
            .expect("release");
        done += 1;
    }
}

/// Runs only as the child of [`two_processes_share_one_file`].
#[tokio::test(flavor = "multi_thread")]
#[ignore = "runs as the child process of two_processes_share_one_file"]
async fn child_process_contender() {
    let (Ok(path), Ok(app)) = (std::env::var(CHILD_DB), std::env::var(CHILD_APP)) else {
        return;
    };
    let app = checkpoint_core::AppName::new(app).expect("app");
    let store = SqliteStore::open(SqliteConfig::file(path), app)
        .await
        .expect("open in child");
    count_rounds(&store, &worker("child")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_share_one_file() {
    let db = TempDb::new();
    let store = open(&db.0).await;
    store
        .create_lease_if_absent(&key("counter"), &[], Some(&seq("0")))
        .await
        .expect("create");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_process_contender", "--ignored", "--quiet"])
        .env(CHILD_DB, &db.0)
        .env(CHILD_APP, store.app().as_str())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the child process");
    count_rounds(&store, &worker("parent")).await;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "child process failed: {status}");
    let lease = store
        .fetch_checkpoint(&key("counter"))
        .await
        .expect("fetch")
        .expect("present");
    assert_eq!(
        lease.checkpoint,
        Some(seq(&(2 * ROUNDS).to_string())),
        "lost or doubled a write"
    );
    assert_eq!(lease.token, FencingToken(2 * ROUNDS), "one token per grant");
}

/// Hand-edits one column of the only lease row of `store`'s app.
fn hand_edit(path: &Path, store: &SqliteStore, set: &str) {
    let conn = rusqlite::Connection::open(path).expect("raw connection");
    let changed = conn
        .execute(
            &format!("UPDATE checkpoint_leases SET {set} WHERE app = ?1"),
            [store.app().as_str()],
        )
        .expect("hand edit");
    assert_eq!(changed, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_rows_are_typed_errors_naming_the_field() {
    let cases = [
        ("token = 'twelve'", "token"),
        ("token = '-1'", "token"),
        ("token = 1.5", "token"),
        ("owner = 'has' || char(10) || 'newline'", "owner"),
        ("checkpoint = 'SEQUENCE:12x'", "checkpoint"),
        ("checkpoint = 'garbage'", "checkpoint"),
        ("checkpoint_sub = 'x'", "checkpoint_sub"),
        ("deadline_ms = 'soon'", "deadline_ms"),
        ("parents = 'a,,b'", "parents"),
        (
            "owner_switches = '99999999999999999999999'",
            "owner_switches",
        ),
        ("claim = ''", "claim"),
    ];
    let db = TempDb::new();
    for (set, field) in cases {
        let store = open(&db.0).await;
        let (k, me) = (key("shard-c"), worker("w"));
        let lease = store.get_lease(&k, &me, long()).await.expect("acquire");
        store
            .checkpoint_sequence(&k, &me, lease.token, &seq("7"))
            .await
            .expect("checkpoint");
        hand_edit(&db.0, &store, set);
        let fetched = store.fetch_checkpoint(&k).await;
        match &fetched {
            Err(Error::Corrupt { field: f, id, .. }) => {
                assert_eq!(*f, field, "{set}: wrong field");
                assert_eq!(id, "orders/shard-c", "{set}: wrong id");
            }
            other => panic!("{set}: expected Corrupt naming {field}, got {other:?}"),
        }
        // A write over a corrupt row refuses too, and leaves the row as it was.
        let write = store
            .checkpoint_sequence(&k, &me, lease.token, &seq("8"))
            .await;
        assert_eq!(
            write.map(|_| ()).map_err(|e| e.kind()),
            Err(ErrorKind::Corrupt),
            "{set}"
        );
        assert!(
            store.list_leases(None).await.is_err(),
            "{set}: list must not skip a corrupt row"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn incompatible_existing_tables_are_schema_mismatch() {
    let cases = [
        // A table of the same name that this crate did not create.
        (
            false,
            "CREATE TABLE checkpoint_leases (id INTEGER PRIMARY KEY, blob BLOB)",
        ),
        // A database migrated by a newer version of this crate.
        (
            true,
            "INSERT INTO checkpoint_schema_migrations VALUES (99, 'from the future', 0)",
        ),
        // A column changed by hand.
        (true, "ALTER TABLE checkpoint_workers ADD COLUMN extra TEXT"),
    ];
    for (initialised, edit) in cases {
        let db = TempDb::new();
        if initialised {
            drop(open(&db.0).await);
        }
        rusqlite::Connection::open(&db.0)
            .expect("raw")
            .execute_batch(edit)
            .expect(edit);
        let err = SqliteStore::open(SqliteConfig::file(&db.0), random_app("app"))
            .await
            .expect_err(edit);
        assert_eq!(err.kind(), ErrorKind::SchemaMismatch, "{edit}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_are_recorded_once_under_concurrent_init() {
    let db = TempDb::new();
    let opens = (0..8).map(|_| SqliteStore::open(SqliteConfig::file(&db.0), random_app("app")));
    for store in futures_join(opens).await {
        store.expect("concurrent open and init");
    }
    let conn = rusqlite::Connection::open(&db.0).expect("raw");
    let versions: i64 = conn
        .query_row(
            "SELECT count(*) FROM checkpoint_schema_migrations",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(versions, checkpoint_sqlite::schema::SCHEMA_VERSION);
}

/// Runs futures concurrently on the runtime and collects their results in order.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn table_prefix_keeps_stores_apart_and_rejects_injection() {
    let db = TempDb::new();
    let app = random_app("app");
    let a = SqliteStore::open(SqliteConfig::file(&db.0), app.clone())
        .await
        .expect("default prefix");
    let b = SqliteStore::open(
        SqliteConfig::file(&db.0).with_table_prefix("other_"),
        app.clone(),
    )
    .await
    .expect("other prefix");
    let (k, me) = (key("shard-p"), worker("w"));
    a.get_lease(&k, &me, long()).await.expect("acquire in a");
    assert!(
        b.fetch_checkpoint(&k).await.expect("fetch in b").is_none(),
        "prefixes share rows"
    );
    for bad in [
        "",
        "x\"; DROP TABLE checkpoint_leases; --",
        "1abc",
        "a b",
        "ünï",
    ] {
        let err = SqliteStore::open(
            SqliteConfig::file(&db.0).with_table_prefix(bad),
            app.clone(),
        )
        .await
        .expect_err(bad);
        assert_eq!(err.field(), Some("table_prefix"), "{bad:?}: {err}");
    }
    assert!(a.fetch_checkpoint(&k).await.expect("still there").is_some());
}

#[tokio::test]
async fn bad_urls_and_settings_name_the_field() {
    let cases = [
        ("postgres://x", "url"),
        ("sqlite://", "url"),
        ("sqlite://a.db?synchronous=sometimes", "synchronous"),
        ("sqlite://a.db?busy_timeout_ms=soon", "busy_timeout_ms"),
        ("sqlite://a.db?max_connections=0", "max_connections"),
        ("sqlite://a.db?unknown=1", "url"),
    ];
    for (url, field) in cases {
        let err = SqliteStore::connect(url, random_app("app"))
            .await
            .expect_err(url);
        assert_eq!(err.field(), Some(field), "{url}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_database_is_a_retryable_error_and_writes_nothing() {
    use checkpoint_core::Backoff;
    let db = TempDb::new();
    let config = SqliteConfig::file(&db.0)
        .with_busy_timeout(Duration::from_millis(20))
        .with_backoff(Backoff {
            base: Duration::from_millis(5),
            max_delay: Duration::from_millis(10),
            max_attempts: 3,
            budget: Duration::from_millis(200),
        });
    let store = SqliteStore::open(config, random_app("app"))
        .await
        .expect("open");
    let (k, me) = (key("shard-busy"), worker("w"));
    let lease = store.get_lease(&k, &me, long()).await.expect("acquire");
    store
        .checkpoint_sequence(&k, &me, lease.token, &seq("1"))
        .await
        .expect("checkpoint");

    // Another process holds the write lock for the whole attempt.
    let mut raw = rusqlite::Connection::open(&db.0).expect("raw");
    let tx = raw
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("take the write lock");
    let err = store
        .checkpoint_sequence(&k, &me, lease.token, &seq("2"))
        .await
        .expect_err("the write lock is held elsewhere");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(
        err.is_retryable(),
        "a busy database must be retryable: {err}"
    );
    tx.rollback().expect("release the lock");

    // Nothing was written, and the same call now succeeds.
    assert_eq!(
        store.fetch_position(&k).await.expect("fetch"),
        Some(seq("1"))
    );
    store
        .checkpoint_sequence(&k, &me, lease.token, &seq("2"))
        .await
        .expect("retry after the fault");
    assert_eq!(
        store.fetch_position(&k).await.expect("fetch"),
        Some(seq("2"))
    );
}

/// The size of the database's `-wal` file, and the size of one frame (a page and its header).
fn wal_size(path: &Path, store: &SqliteStore) -> (u64, u64) {
    let conn = store.open_connection().expect("connection");
    let page: u64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .expect("page size");
    let size = std::fs::metadata(format!("{}-wal", path.display()))
        .map(|m| m.len())
        .unwrap_or(0);
    (size, page + 24)
}

/// Opens a store with a small WAL checkpoint threshold, holding one lease.
async fn with_threshold(
    path: &Path,
    pages: u32,
) -> (SqliteStore, LeaseKey, WorkerId, FencingToken) {
    let config = SqliteConfig::file(path).with_wal_checkpoint_pages(pages);
    let store = SqliteStore::open(config, random_app("app"))
        .await
        .expect("open");
    let (k, me) = (key("shard-wal"), worker("w"));
    let token = store
        .get_lease(&k, &me, long())
        .await
        .expect("acquire")
        .token;
    (store, k, me, token)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_background_checkpointer_keeps_the_log_from_growing() {
    let db = TempDb::new();
    let (store, k, me, token) = with_threshold(&db.0, 100).await;
    let mut n = 0u64;
    let mut largest = 0;
    for _ in 0..20 {
        for _ in 0..250 {
            n += 1;
            store
                .checkpoint_sequence(&k, &me, token, &seq(&n.to_string()))
                .await
                .expect("checkpoint");
        }
        // A pass that starts with no write in flight copies the whole log, so the next write
        // starts it over.
        store.wal_checkpoint_pass().await.expect("pass");
        largest = largest.max(wal_size(&db.0, &store).0);
    }
    // The file keeps its largest size. Without checkpoints the log would hold all 5,000
    // commits; it never held more than a few rounds' worth of the threshold.
    let frame = wal_size(&db.0, &store).1;
    assert!(
        largest < 1000 * frame,
        "the log reached {largest} bytes ({} frames) over 5000 checkpoints",
        largest / frame
    );
    assert!(store.wal_checkpointer_idle().await.expect("idle") >= 20);
    assert_eq!(
        store.fetch_position(&k).await.expect("fetch"),
        Some(seq(&n.to_string()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_writer_checkpoints_a_log_that_keeps_growing() {
    let db = TempDb::new();
    let (store, k, me, token) = with_threshold(&db.0, 50).await;
    // No pauses: a background pass never finds the log still, so only the writer's own
    // checkpoint, from ten times the threshold (and at the latest at twenty, where it waits
    // for a running background pass), lets the log start over.
    for n in 1..=3000u64 {
        store
            .checkpoint_sequence(&k, &me, token, &seq(&n.to_string()))
            .await
            .expect("checkpoint");
    }
    assert!(
        store.wal_checkpointer_idle().await.expect("idle") >= 1,
        "the writer nudged the checkpointer"
    );
    let (size, frame) = wal_size(&db.0, &store);
    assert!(
        size <= 32 + 1010 * frame,
        "the log reached {size} bytes ({} frames) with a threshold of 50 pages",
        size / frame
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_ends_every_thread_and_leaves_a_consistent_file() {
    let db = TempDb::new();
    let (store, k, me, token) = with_threshold(&db.0, 20).await;
    for n in 1..=500u64 {
        store
            .checkpoint_sequence(&k, &me, token, &seq(&n.to_string()))
            .await
            .expect("checkpoint");
    }
    let app = store.app().clone();
    let ended = store.threads_ended().expect("first take");
    assert!(store.threads_ended().is_none(), "taken once");
    let clone = store.clone();
    drop(store);
    drop(clone);
    // Every thread holds a sender until it has ended; the writer ends after joining the
    // checkpointer and closing its connection.
    let received = tokio::task::spawn_blocking(move || ended.recv())
        .await
        .expect("join");
    assert!(received.is_err(), "every sender is gone");
    // The last connection to close checkpointed the log and removed it.
    assert!(!Path::new(&format!("{}-wal", db.0.display())).exists());
    let store = SqliteStore::open(SqliteConfig::file(&db.0), app)
        .await
        .expect("reopen");
    assert_eq!(
        store.fetch_position(&k).await.expect("fetch"),
        Some(seq("500"))
    );
    drop(store);
    let raw = rusqlite::Connection::open(&db.0).expect("raw");
    let check: String = raw
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check");
    assert_eq!(check, "ok");
}

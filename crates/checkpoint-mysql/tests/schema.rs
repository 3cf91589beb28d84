//! Layout and configuration: incompatible existing tables, concurrent `init`, identifier
//! validation, redaction, URL parameters, corrupt rows, and chunked renew-many.

mod common;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Backoff, BatchMode, Checkpointer, Error, ErrorKind, FencingToken, LeaseKey, LeaseManager,
};
use checkpoint_mysql::sqlx;
use checkpoint_mysql::{MySqlConfig, MySqlStore};
use common::{config, drop_tables, key, long, open, random_prefix, url, worker};

const ID: &str = "VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL";

async fn an_incompatible_existing_table_is_a_schema_mismatch() {
    let store = open(config()).await;
    let cases: [(&str, String); 5] = [
        (
            "missing columns",
            format!(
                "CREATE TABLE {{p}}_leases (app {ID}, stream {ID}, shard {ID}, PRIMARY KEY (app, stream, shard))"
            ),
        ),
        (
            "wrong type",
            format!(
                "CREATE TABLE {{p}}_workers (app {ID}, worker VARBINARY(256) NOT NULL, expires_at BIGINT NOT NULL, PRIMARY KEY (app, worker))"
            ),
        ),
        (
            "wrong primary key",
            format!(
                "CREATE TABLE {{p}}_workers (app {ID}, worker VARBINARY(256) NOT NULL, expires_at DATETIME(6) NOT NULL, PRIMARY KEY (worker))"
            ),
        ),
        (
            "case-insensitive collation",
            "CREATE TABLE {p}_workers (app VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL, \
             worker VARBINARY(256) NOT NULL, expires_at DATETIME(6) NOT NULL, PRIMARY KEY (app, worker))"
                .to_owned(),
        ),
        (
            "newer schema version",
            "CREATE TABLE {p}_migrations (version INT NOT NULL PRIMARY KEY, \
             description VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
             applied_at DATETIME(6) NOT NULL); \
             INSERT INTO {p}_migrations VALUES (99, 'from the future', UTC_TIMESTAMP(6))"
                .to_owned(),
        ),
    ];
    for (what, ddl) in cases {
        let prefix = random_prefix();
        sqlx::raw_sql(sqlx::AssertSqlSafe(ddl.replace("{p}", &prefix)))
            .execute(store.pool())
            .await
            .expect("incompatible table");
        let err = MySqlStore::open(
            config().with_table_prefix(prefix.clone()),
            random_app("mismatch"),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SchemaMismatch, "{what}: {err}");
        println!("{what}: {err}");
        drop_tables(&store, &prefix).await;
    }
}

async fn many_workers_initialise_new_tables_at_once() {
    let store = open(config()).await;
    let (left, right) = (random_prefix(), random_prefix());
    let opens = (0..12).map(|i| {
        let prefix = if i % 2 == 0 { &left } else { &right };
        MySqlStore::open(
            config()
                .with_table_prefix(prefix.clone())
                .with_max_connections(1),
            random_app("init"),
        )
    });
    let handles: Vec<_> = opens.map(tokio::spawn).collect();
    for handle in handles {
        let s = handle.await.expect("task").expect("concurrent init");
        s.init().await.expect("init again");
        assert!(
            s.create_lease_if_absent(&key(), &[], None)
                .await
                .expect("create")
        );
    }
    let versions: Vec<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM `{left}_migrations`"
    )))
    .fetch_all(store.pool())
    .await
    .expect("migrations");
    assert_eq!(versions, vec![1, 2], "each migration is recorded once");
    drop_tables(&store, &left).await;
    drop_tables(&store, &right).await;
}

async fn identifiers_are_validated_before_any_sql() {
    let bad = [
        "",
        "a`b",
        "x`;DROP TABLE y;--",
        "a.b",
        "a b",
        "9lives",
        "zürich",
        "a-b",
        "semi;colon",
    ];
    for value in bad {
        let e = MySqlStore::open(config().with_table_prefix(value), random_app("bad"))
            .await
            .unwrap_err();
        assert_eq!(e.field(), Some("table_prefix"), "{value:?}: {e}");
        let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
        let e = MySqlConfig::from_url(&format!("mysql://u@h/db?table={encoded}")).unwrap_err();
        assert_eq!(e.field(), Some("table_prefix"), "{value:?}: {e}");
    }
    let e = MySqlConfig::from_url("redis://h/").unwrap_err();
    assert_eq!(e.field(), Some("url"));
    let e = MySqlConfig::from_url("mysql://h:3306").unwrap_err();
    assert_eq!(e.field(), Some("url"), "{e}");
}

async fn the_password_never_shows() {
    let secret = "hunter2-very-secret";
    let mut with_password = url::Url::parse(&url()).expect("url");
    with_password.set_password(Some(secret)).expect("password");
    let config = MySqlConfig::from_url(with_password.as_str()).expect("config");
    assert!(!format!("{config:?}{config:#?}").contains(secret));
    let store = open(common::config()).await;
    assert!(!format!("{store:?}{store:#?}").contains(secret));
    let bad = MySqlConfig::from_url(&with_password.as_str().replace("mysql://", "postgres://"))
        .unwrap_err();
    assert!(!bad.to_string().contains(secret));
    // A refused connection names the server, not the password.
    let mut refused = with_password.clone();
    refused.set_port(Some(1)).expect("port");
    let e = MySqlStore::open(
        MySqlConfig::from_url(refused.as_str())
            .expect("config")
            .with_backoff(Backoff::none()),
        random_app("refused"),
    )
    .await
    .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(!format!("{e} {e:?}").contains(secret), "{e:?}");
    // A wrong password is refused by the server: not retryable, and not echoed.
    let e = MySqlStore::open(
        config.with_backoff(Backoff::none()),
        random_app("wrong-password"),
    )
    .await
    .unwrap_err();
    assert!(!format!("{e} {e:?}").contains(secret), "{e:?}");
}

/// sqlx's own URL parameters reach the connection: a session time zone far from UTC changes
/// nothing, because deadlines are `UTC_TIMESTAMP(6)` in `DATETIME(6)` columns.
async fn url_parameters_reach_the_connection_and_the_time_zone_does_not_matter() {
    let mut u = url::Url::parse(&url()).expect("url");
    u.query_pairs_mut()
        .append_pair("timezone", "+09:30")
        .append_pair("max_connections", "3");
    let store = open(MySqlConfig::from_url(u.as_str()).expect("config")).await;
    assert_eq!(store.config().max_connections(), 3);
    let zone: String = sqlx::query_scalar("SELECT CAST(@@session.time_zone AS CHAR)")
        .fetch_one(store.pool())
        .await
        .expect("time_zone");
    assert_eq!(zone, "+09:30");
    let utc = open(config()).await;
    let utc = utc.for_app(store.app().clone());
    let (k, me) = (key(), worker("w"));
    let lease = store.get_lease(&k, &me, long()).await.expect("acquire");
    let seen = utc
        .fetch_checkpoint(&k)
        .await
        .expect("fetch")
        .expect("record");
    assert_eq!(seen.deadline, lease.deadline);
    let renewed = utc
        .renew(&k, &me, lease.token, long())
        .await
        .expect("renew");
    let skew = renewed
        .deadline
        .expect("deadline")
        .duration_since(lease.deadline.expect("deadline"))
        .expect("the renewal moved the deadline forward");
    assert!(skew < std::time::Duration::from_secs(60), "{skew:?}");
}

async fn a_corrupt_row_is_reported_naming_the_field() {
    let store = open(config()).await;
    let (k, me) = (key(), worker("w"));
    store.get_lease(&k, &me, long()).await.expect("acquire");
    for (column, value, field) in [
        ("checkpoint", "'not a position'", "checkpoint"),
        ("checkpoint", "NULL", ""),
        ("owner", "X'FF'", "owner"),
        ("owner", "'w'", ""),
        ("parents", "'ok,not ok'", "parents"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {} SET {column} = {value} WHERE app = ?",
            store.lease_table()
        )))
        .bind(store.app().as_str())
        .execute(store.pool())
        .await
        .expect("corrupt the row");
        if field.is_empty() {
            store.fetch_checkpoint(&k).await.expect("a sound row");
            continue;
        }
        let e = store.fetch_checkpoint(&k).await.unwrap_err();
        assert!(
            matches!(&e, Error::Corrupt { field: f, .. } if *f == field),
            "{column} = {value}: {e:?}"
        );
    }
}

/// A batch larger than one chunk runs as several statements at once; each lease is still fenced
/// on its own owner and token, so the leases taken over, released or renewed with a stale token
/// in any chunk are exactly the ones reported lost, and nothing else changes.
async fn a_chunked_renew_many_reports_exactly_the_lost_leases() {
    let store = open(config().with_renew_chunk(500).with_max_connections(4)).await;
    assert_eq!(store.capabilities().renew_many, BatchMode::Chunked(500));
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
    let fetch = |i: usize| {
        let (store, k) = (store.clone(), held[i].0.clone());
        async move {
            store
                .fetch_checkpoint(&k)
                .await
                .expect("fetch")
                .expect("lease")
        }
    };
    let before = fetch(0).await;
    let stale_before = fetch(1_234).await;
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
        assert_eq!(
            fetch(i).await.owner.as_ref(),
            Some(&b),
            "lease {i} stays with b"
        );
    }
    let released = fetch(600).await;
    assert_eq!(released.owner, None);
    assert_eq!(released.deadline, None);
    assert_eq!(
        fetch(1_234).await,
        stale_before,
        "a stale token renews nothing"
    );
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Mysql,
    tests: [
        an_incompatible_existing_table_is_a_schema_mismatch,
        many_workers_initialise_new_tables_at_once,
        the_password_never_shows,
        url_parameters_reach_the_connection_and_the_time_zone_does_not_matter,
        a_corrupt_row_is_reported_naming_the_field,
        a_chunked_renew_many_reports_exactly_the_lost_leases,
    ],
    offline_async: [identifiers_are_validated_before_any_sql],
}

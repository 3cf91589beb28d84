//! `checkpointctl migrate` through every backend: SQLite → PostgreSQL → MySQL → Redis →
//! DynamoDB → SQLite keeps every record identical, one app at a time (`--app`) and every app
//! at once (`--all-apps`). The tests need every server; the shared harness reports them
//! ignored when one is not running (a failure in strict mode), naming it.

mod common;

use checkpoint_core::Lease;
use checkpoint_core::conformance::random_app;
use checkpoint_test_support::Backend;
use common::*;

/// The chain of stores a move goes through, `(name, url)`: a new SQLite file, each server,
/// another new SQLite file. With `fresh`, every server URL is a namespace of its own.
fn chain(fresh: bool) -> Vec<(&'static str, String)> {
    let mut chain = vec![("sqlite", sqlite_url("chain-first"))];
    for backend in [
        Backend::Postgres,
        Backend::Mysql,
        Backend::Redis,
        Backend::Dynamo,
    ] {
        let url = if fresh {
            fresh_namespace(backend)
        } else {
            server_url(backend)
        };
        chain.push((backend.name(), url));
    }
    chain.push(("sqlite", sqlite_url("chain-last")));
    chain
}

async fn migrate_through_every_backend_keeps_every_record() {
    let chain = chain(false);
    let app = random_app("move");
    let records = stopped_table();
    seed(&chain[0].1, &app, &records).await;
    for pair in chain.windows(2) {
        let ((a, from), (b, to)) = (&pair[0], &pair[1]);
        let out = ok(
            &["migrate", "--from", from, "--to", to, "--app", app.as_str()],
            "",
        );
        assert!(out.contains("imported 5 records"), "{a} -> {b}: {out}");
        let target = open(to, &app).await;
        assert_eq!(
            target.list_leases(None).await.unwrap(),
            records,
            "{a} -> {b}"
        );
        eprintln!("migrated {a} -> {b}");
    }
}

async fn migrate_all_apps_through_every_backend_keeps_every_record() {
    let chain = chain(true);
    let mut apps: Vec<(checkpoint_core::AppName, Vec<Lease>)> = [2, 5]
        .into_iter()
        .map(|n| (random_app("all"), stopped_records(n)))
        .collect();
    apps.sort_by(|a, b| a.0.cmp(&b.0));
    for (app, records) in &apps {
        seed(&chain[0].1, app, records).await;
    }
    let names: Vec<&str> = apps.iter().map(|(app, _)| app.as_str()).collect();
    for pair in chain.windows(2) {
        let ((a, from), (b, to)) = (&pair[0], &pair[1]);
        let out = ok(&["migrate", "--from", from, "--to", to, "--all-apps"], "");
        assert!(
            out.contains("migrated 2 apps, 7 records"),
            "{a} -> {b}: {out}"
        );
        let listed = ok(&["apps", "list", "--store", to], "");
        assert_eq!(listed.lines().collect::<Vec<_>>(), names, "{a} -> {b}");
        for (app, records) in &apps {
            let target = open(to, app).await;
            assert_eq!(
                target.list_leases(None).await.unwrap(),
                *records,
                "{a} -> {b}: {app}"
            );
        }
        eprintln!("migrated every app {a} -> {b}");
    }
}

checkpoint_test_support::server_tests! {
    backends: [Backend::Postgres, Backend::Mysql, Backend::Redis, Backend::Dynamo],
    tests: [
        migrate_through_every_backend_keeps_every_record,
        migrate_all_apps_through_every_backend_keeps_every_record,
    ],
}

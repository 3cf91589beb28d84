//! Shared by the end-to-end tests of the `checkpointctl` binary: running it, the records the
//! tests write through the library, and the checks every backend's file runs on its own store
//! (`admin_commands`, `export_then_import`, `migrate_all_apps`). Each test file registers its
//! tests with the shared harness (`checkpoint_test_support::server_tests!`), so a test whose
//! server is missing is reported ignored. Every test uses its own random apps.
#![allow(dead_code)] // each test file uses a part

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    AppName, FencingToken, Lease, LeaseDuration, LeaseKey, Position, ShardId, Store, WorkerId,
};
use checkpoint_test_support::Backend;

/// A store URL of `backend`'s server (the harness has checked it is reachable). DynamoDB gets
/// a table of its own.
pub(crate) fn server_url(backend: Backend) -> String {
    let url = backend
        .url()
        .expect("the harness runs this test only with a server");
    match backend {
        Backend::Dynamo => format!(
            "dynamodb://cli-{}?region=us-east-1&endpoint={url}",
            random_app("t")
        ),
        _ => url,
    }
}

/// A store URL of `backend`'s server in a namespace of its own, which no other test writes
/// to: a random table prefix (PostgreSQL, MySQL), key prefix (Redis) or table (DynamoDB).
/// PostgreSQL and MySQL keep the tables it creates; their names start with `cli_`.
pub(crate) fn fresh_namespace(backend: Backend) -> String {
    let tag = format!("cli_{:016x}", rand_u64());
    let url = server_url(backend);
    let sep = if url.contains('?') { '&' } else { '?' };
    match backend {
        Backend::Postgres | Backend::PostgresTls | Backend::Mysql => {
            format!("{url}{sep}table_prefix={tag}")
        }
        Backend::Redis | Backend::RedisCluster | Backend::RedisTls => {
            format!("{url}{sep}prefix={tag}")
        }
        Backend::Dynamo | Backend::Kinesis => url,
    }
}

fn rand_u64() -> u64 {
    let app = random_app("n");
    let hex = app.as_str().rsplit('-').next().unwrap_or_default();
    u64::from_str_radix(hex, 16).expect("random_app ends in hex")
}

/// A new SQLite file URL under the system temp directory.
pub(crate) fn sqlite_url(tag: &str) -> String {
    let dir = std::env::temp_dir().join(format!("checkpointctl-{tag}-{}", random_app("d")));
    std::fs::create_dir_all(&dir).expect("temp dir");
    format!("sqlite://{}", dir.join(format!("{tag}.db")).display())
}

/// Runs the binary with `args` and `stdin` (no terminal), without the store variables of the
/// caller's environment.
pub(crate) fn ctl(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_checkpointctl"))
        .args(args)
        .env_remove("CHECKPOINT_STORE")
        .env_remove("CHECKPOINT_APP")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("the binary ends")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts success and returns standard output.
pub(crate) fn ok(args: &[&str], stdin: &str) -> String {
    let out = ctl(args, stdin);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Asserts exit code `code` with exactly one line on standard error containing `needle`.
pub(crate) fn fails(args: &[&str], stdin: &str, code: i32, needle: &str) {
    let out = ctl(args, stdin);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    if code == 1 {
        assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    }
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
}

pub(crate) async fn open(url: &str, app: &AppName) -> Arc<dyn Store> {
    checkpoint_consumer::connect(url, app.clone())
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

pub(crate) fn key(shard: &str) -> LeaseKey {
    LeaseKey::parse("orders", shard).expect("key")
}

pub(crate) fn worker(name: &str) -> WorkerId {
    WorkerId::new(name).expect("worker")
}

pub(crate) fn long() -> LeaseDuration {
    LeaseDuration::new(Duration::from_secs(600)).expect("duration")
}

/// Free records with every field set, the way a stopped table looks: tokens, checkpoints,
/// pending checkpoints, parents, a claim, owner switches.
pub(crate) fn stopped_table() -> Vec<Lease> {
    (0..5)
        .map(|i| Lease {
            key: key(&format!("shard-{i}")),
            owner: None,
            token: FencingToken(10 + i),
            deadline: None,
            checkpoint: Some(
                Position::sequence_with_sub(&format!("4959033827149025660855969{i}"), i).unwrap(),
            ),
            pending_checkpoint: (i % 2 == 0)
                .then(|| Position::sequence("49590338271490256608559700").unwrap()),
            parents: if i > 2 {
                vec![
                    ShardId::new("shard-0").unwrap(),
                    ShardId::new("shard-1").unwrap(),
                ]
            } else {
                vec![]
            },
            claim: (i == 1).then(|| worker("next-host")),
            owner_switches_since_checkpoint: i,
        })
        .collect()
}

/// `stopped_table`, cut to its first `n` records: apps of different sizes.
pub(crate) fn stopped_records(n: usize) -> Vec<Lease> {
    stopped_table().into_iter().take(n).collect()
}

/// Imports `records` as `app` into the store at `url`.
pub(crate) async fn seed(url: &str, app: &AppName, records: &[Lease]) -> Arc<dyn Store> {
    let store = open(url, app).await;
    for r in records {
        assert!(store.import_lease(r).await.unwrap(), "seed {url}: {r:?}");
    }
    store
}

/// Asserts that `got` are the `expected` records. On DynamoDB a held lease's deadline is not a
/// stored fact but each handle's own judgement (observed-unchanged expiry, `ClockSource::Observed`
/// in the contract): the importing store carries the time left, so the target's deadline may
/// differ from the source's by the time between the two readings, at most 10 s here; every
/// other field, and every deadline elsewhere, must be equal.
pub(crate) fn assert_same_records(backend: &str, got: Vec<Lease>, expected: Vec<Lease>) {
    if backend != "dynamodb" {
        assert_eq!(got, expected, "{backend}");
        return;
    }
    assert_eq!(got.len(), expected.len(), "{backend}: {got:?}");
    for (g, e) in got.into_iter().zip(expected) {
        match (g.deadline, e.deadline) {
            (Some(a), Some(b)) => {
                let apart = a
                    .duration_since(b)
                    .or_else(|_| b.duration_since(a))
                    .unwrap();
                assert!(
                    apart <= Duration::from_secs(10),
                    "{backend}: {g:?} vs {e:?}"
                );
            }
            (a, b) => assert_eq!(a, b, "{backend}: {g:?} vs {e:?}"),
        }
        assert_eq!(
            Lease {
                deadline: None,
                ..g
            },
            Lease {
                deadline: None,
                ..e
            },
            "{backend}"
        );
    }
}

/// list/show/release/reset/delete on leases written by the library, in the store at `url`.
pub(crate) async fn admin_commands(backend: &str, url: &str) {
    let app = random_app("cli");
    let store = open(url, &app).await;
    let (w1, w2) = (worker("w1"), worker("w2"));
    let a = store.get_lease(&key("a"), &w1, long()).await.unwrap();
    store
        .checkpoint_sequence(&key("a"), &w1, a.token, &Position::sequence("100").unwrap())
        .await
        .unwrap();
    store.get_lease(&key("b"), &w2, long()).await.unwrap();
    store.get_lease(&key("c"), &w2, long()).await.unwrap();
    store
        .create_lease_if_absent(&key("d"), &[], None)
        .await
        .unwrap();
    let s = ["--store", url, "--app", app.as_str()];
    let with = |rest: &[&str]| -> Vec<String> {
        rest.iter().chain(s.iter()).map(|x| x.to_string()).collect()
    };
    let run = |rest: &[&str]| {
        ok(
            &with(rest).iter().map(String::as_str).collect::<Vec<_>>(),
            "",
        )
    };

    // list: one JSON line per lease with owner and token; the table has a summary line.
    let lines = run(&["leases", "list", "--json"]);
    let rows: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(rows.len(), 4, "{backend}: {lines}");
    assert_eq!(rows[0]["owner"], "w1", "{backend}: {lines}");
    assert_eq!(rows[0]["token"], 1, "{backend}: {lines}");
    let table = run(&["leases", "list"]);
    assert!(
        table.contains("4 leases: 3 held, 1 free"),
        "{backend}: {table}"
    );
    assert!(table.contains("w1=1, w2=2"), "{backend}: {table}");
    let only = run(&["leases", "list", "--json", "--owner", "w2"]);
    assert_eq!(only.lines().count(), 2, "{backend}: {only}");

    // show: the whole record.
    let shown = run(&["leases", "show", "orders", "a"]);
    assert!(
        shown.contains("owner        w1") && shown.contains("checkpoint   100.0"),
        "{backend}: {shown}"
    );

    // Without a terminal and without --yes nothing changes; --dry-run changes nothing.
    let args = with(&["leases", "release", "orders", "a"]);
    fails(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "",
        1,
        "--yes",
    );
    run(&["leases", "release", "orders", "a", "--dry-run"]);
    let a = store.fetch_checkpoint(&key("a")).await.unwrap().unwrap();
    assert_eq!(
        a.owner.as_ref(),
        Some(&w1),
        "{backend}: released without --yes"
    );

    // release one lease, then every lease of a worker: owner gone, token kept.
    run(&["leases", "release", "orders", "a", "--yes"]);
    let a = store.fetch_checkpoint(&key("a")).await.unwrap().unwrap();
    assert_eq!(
        (a.owner.clone(), a.token),
        (None, FencingToken(1)),
        "{backend}"
    );
    run(&["leases", "release", "--owner", "w2", "--yes"]);
    let leases = store.list_leases(None).await.unwrap();
    assert!(
        leases.iter().all(|l| l.owner.is_none()),
        "{backend}: {leases:?}"
    );

    // reset moves the checkpoint backwards, then clears it; a bad position changes nothing.
    run(&["checkpoint", "reset", "orders", "a", "5", "--yes"]);
    let a = store.fetch_checkpoint(&key("a")).await.unwrap().unwrap();
    assert_eq!(
        a.checkpoint,
        Some(Position::sequence("5").unwrap()),
        "{backend}"
    );
    let args = with(&["checkpoint", "reset", "orders", "a", "5x", "--yes"]);
    fails(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "",
        1,
        "invalid position",
    );
    run(&["checkpoint", "reset", "orders", "a", "--clear", "--yes"]);
    let a = store.fetch_checkpoint(&key("a")).await.unwrap().unwrap();
    assert_eq!(a.checkpoint, None, "{backend}");

    // delete removes the record.
    run(&["leases", "delete", "orders", "d", "--yes"]);
    assert!(
        store.fetch_checkpoint(&key("d")).await.unwrap().is_none(),
        "{backend}"
    );
    eprintln!("{backend}: list/show/release/reset/delete checked");
}

/// Export then import into an empty app of the store at `url` gives identical records
/// (tokens included); importing again is refused whole and changes nothing.
pub(crate) async fn export_then_import(backend: &str, url: &str) {
    let (from, to) = (random_app("src"), random_app("dst"));
    let records = stopped_table();
    let source = seed(url, &from, &records).await;
    // A lease written by the library, held: carried with owner, token and deadline.
    let held = source
        .get_lease(&key("live"), &worker("w"), long())
        .await
        .unwrap();
    let dump = ok(&["export", "--store", url, "--app", from.as_str()], "");
    assert_eq!(dump.lines().count(), 6, "{backend}: {dump}");
    ok(&["import", "--store", url, "--app", to.as_str()], &dump);
    let target = open(url, &to).await;
    let mut expected = records.clone();
    expected.push(held);
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    assert_same_records(
        backend,
        target.list_leases(None).await.unwrap(),
        expected.clone(),
    );
    // Importing again is refused whole, and changes nothing.
    fails(
        &["import", "--store", url, "--app", to.as_str()],
        &dump,
        1,
        "already exist",
    );
    assert_same_records(backend, target.list_leases(None).await.unwrap(), expected);
    eprintln!("{backend}: export/import checked");
}

/// Three apps of 1, 3 and 5 records (and an app whose records were deleted) in a fresh SQLite
/// file: `migrate --all-apps` into `namespace` (a namespace of its own) moves the three, with
/// one count per app; `apps list` on the target names exactly them; `migrate --all-apps` back
/// into another fresh SQLite file gives identical records; a second move into the same
/// target is refused whole, naming the app.
pub(crate) async fn migrate_all_apps(backend: &str, namespace: &str) {
    let source = sqlite_url("all-apps-src");
    let mut apps: Vec<(AppName, Vec<Lease>)> = [1, 3, 5]
        .into_iter()
        .map(|n| (random_app("every"), stopped_records(n)))
        .collect();
    apps.sort_by(|a, b| a.0.cmp(&b.0));
    for (app, records) in &apps {
        seed(&source, app, records).await;
    }
    let emptied = random_app("emptied");
    let gone = seed(&source, &emptied, &stopped_records(2)).await;
    for r in stopped_records(2) {
        gone.remove_lease_info(&r.key).await.unwrap();
    }

    let out = ok(
        &[
            "migrate",
            "--from",
            &source,
            "--to",
            namespace,
            "--all-apps",
        ],
        "",
    );
    for (app, records) in &apps {
        assert!(
            out.contains(&format!(
                "imported {} records into app {app}",
                records.len()
            )),
            "{backend}: {out}"
        );
    }
    assert!(
        out.contains("migrated 3 apps, 9 records") && !out.contains(emptied.as_str()),
        "{backend}: {out}"
    );
    let listed = ok(&["apps", "list", "--store", namespace], "");
    let names: Vec<&str> = apps.iter().map(|(app, _)| app.as_str()).collect();
    assert_eq!(listed.lines().collect::<Vec<_>>(), names, "{backend}");

    let back = sqlite_url("all-apps-back");
    ok(
        &["migrate", "--from", namespace, "--to", &back, "--all-apps"],
        "",
    );
    for (app, records) in &apps {
        let target = open(namespace, app).await;
        assert_same_records(
            backend,
            target.list_leases(None).await.unwrap(),
            records.clone(),
        );
        let last = open(&back, app).await;
        assert_eq!(
            last.list_leases(None).await.unwrap(),
            *records,
            "{backend} -> sqlite: {app}"
        );
    }

    // Into the same target again: refused before anything is written, naming an app.
    fails(
        &[
            "migrate",
            "--from",
            &source,
            "--to",
            namespace,
            "--all-apps",
        ],
        "",
        1,
        &format!("refusing to import into app {}", apps[0].0),
    );
    eprintln!("{backend}: migrate --all-apps checked");
}

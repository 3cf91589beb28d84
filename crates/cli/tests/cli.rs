//! End-to-end tests of the `checkpointctl` binary on every backend this machine runs: SQLite
//! always; PostgreSQL, Redis and DynamoDB through `CHECKPOINT_POSTGRES_URL`,
//! `CHECKPOINT_REDIS_URL` and `CHECKPOINT_DYNAMO_ENDPOINT` (skipped with a line saying so when
//! unset; a failure in strict mode, `CHECKPOINT_REQUIRE_ALL=1`). Records are written and read
//! back through the library; every test uses its own random app.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use checkpoint_core::conformance::{backend_unavailable, random_app};
use checkpoint_core::{
    AppName, FencingToken, Lease, LeaseDuration, LeaseKey, Position, ShardId, Store, WorkerId,
};

/// The store URLs reachable here: SQLite (a new file under `dir`) and whichever servers are
/// configured.
fn backends(dir: &std::path::Path, tag: &str) -> Vec<(&'static str, String)> {
    let mut urls = vec![(
        "sqlite",
        format!("sqlite://{}", dir.join(format!("{tag}.db")).display()),
    )];
    for (name, var, how) in [
        (
            "postgres",
            "CHECKPOINT_POSTGRES_URL",
            "set CHECKPOINT_POSTGRES_URL",
        ),
        ("redis", "CHECKPOINT_REDIS_URL", "set CHECKPOINT_REDIS_URL"),
        (
            "dynamodb",
            "CHECKPOINT_DYNAMO_ENDPOINT",
            "set CHECKPOINT_DYNAMO_ENDPOINT",
        ),
    ] {
        match std::env::var(var) {
            Ok(value) if name == "dynamodb" => urls.push((
                name,
                format!(
                    "dynamodb://cli-{}?region=us-east-1&endpoint={value}",
                    random_app("t")
                ),
            )),
            Ok(value) => urls.push((name, value)),
            Err(_) => backend_unavailable(name, how, &format!("{var} is not set")),
        }
    }
    urls
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("checkpointctl-{tag}-{}", random_app("d")));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Runs the binary with `args` and `stdin` (no terminal), without the store variables of the
/// caller's environment.
fn ctl(args: &[&str], stdin: &str) -> Output {
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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts success and returns standard output.
fn ok(args: &[&str], stdin: &str) -> String {
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
fn fails(args: &[&str], stdin: &str, code: i32, needle: &str) {
    let out = ctl(args, stdin);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    if code == 1 {
        assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    }
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
}

async fn open(url: &str, app: &AppName) -> Arc<dyn Store> {
    checkpoint_consumer::connect(url, app.clone())
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

fn key(shard: &str) -> LeaseKey {
    LeaseKey::parse("orders", shard).expect("key")
}

fn worker(name: &str) -> WorkerId {
    WorkerId::new(name).expect("worker")
}

fn long() -> LeaseDuration {
    LeaseDuration::new(Duration::from_secs(600)).expect("duration")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Free records with every field set, the way a stopped table looks: tokens, checkpoints,
/// pending checkpoints, parents, a claim, owner switches.
fn stopped_table() -> Vec<Lease> {
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

#[test]
fn list_show_release_reset_delete_on_leases_written_by_the_library() {
    let dir = temp_dir("admin");
    let rt = runtime();
    for (backend, url) in backends(&dir, "admin") {
        let app = random_app("cli");
        let store = rt.block_on(open(&url, &app));
        let (w1, w2) = (worker("w1"), worker("w2"));
        rt.block_on(async {
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
        });
        let s = ["--store", url.as_str(), "--app", app.as_str()];
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
        let a = rt
            .block_on(store.fetch_checkpoint(&key("a")))
            .unwrap()
            .unwrap();
        assert_eq!(
            a.owner.as_ref(),
            Some(&w1),
            "{backend}: released without --yes"
        );

        // release one lease, then every lease of a worker: owner gone, token kept.
        run(&["leases", "release", "orders", "a", "--yes"]);
        let a = rt
            .block_on(store.fetch_checkpoint(&key("a")))
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.owner.clone(), a.token),
            (None, FencingToken(1)),
            "{backend}"
        );
        run(&["leases", "release", "--owner", "w2", "--yes"]);
        let leases = rt.block_on(store.list_leases(None)).unwrap();
        assert!(
            leases.iter().all(|l| l.owner.is_none()),
            "{backend}: {leases:?}"
        );

        // reset moves the checkpoint backwards, then clears it; a bad position changes nothing.
        run(&["checkpoint", "reset", "orders", "a", "5", "--yes"]);
        let a = rt
            .block_on(store.fetch_checkpoint(&key("a")))
            .unwrap()
            .unwrap();
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
        let a = rt
            .block_on(store.fetch_checkpoint(&key("a")))
            .unwrap()
            .unwrap();
        assert_eq!(a.checkpoint, None, "{backend}");

        // delete removes the record.
        run(&["leases", "delete", "orders", "d", "--yes"]);
        assert!(
            rt.block_on(store.fetch_checkpoint(&key("d")))
                .unwrap()
                .is_none(),
            "{backend}"
        );
        eprintln!("{backend}: list/show/release/reset/delete checked");
    }
}

/// Asserts that `got` are the `expected` records. On DynamoDB a held lease's deadline is not a
/// stored fact but each handle's own judgement (observed-unchanged expiry, `ClockSource::Observed`
/// in the contract): the importing store carries the time left, so the target's deadline may
/// differ from the source's by the time between the two readings, at most 10 s here; every
/// other field, and every deadline elsewhere, must be equal.
fn assert_same_records(backend: &str, got: Vec<Lease>, expected: Vec<Lease>) {
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

#[test]
fn export_then_import_gives_identical_records_and_refuses_existing() {
    let dir = temp_dir("export");
    let rt = runtime();
    for (backend, url) in backends(&dir, "export") {
        let (from, to) = (random_app("src"), random_app("dst"));
        let source = rt.block_on(open(&url, &from));
        let records = stopped_table();
        for r in &records {
            assert!(rt.block_on(source.import_lease(r)).unwrap(), "{backend}");
        }
        // A lease written by the library, held: carried with owner, token and deadline.
        let held = rt
            .block_on(source.get_lease(&key("live"), &worker("w"), long()))
            .unwrap();
        let dump = ok(&["export", "--store", &url, "--app", from.as_str()], "");
        assert_eq!(dump.lines().count(), 6, "{backend}: {dump}");
        ok(&["import", "--store", &url, "--app", to.as_str()], &dump);
        let target = rt.block_on(open(&url, &to));
        let mut expected = records.clone();
        expected.push(held);
        expected.sort_by(|a, b| a.key.cmp(&b.key));
        assert_same_records(
            backend,
            rt.block_on(target.list_leases(None)).unwrap(),
            expected.clone(),
        );
        // Importing again is refused whole, and changes nothing.
        fails(
            &["import", "--store", &url, "--app", to.as_str()],
            &dump,
            1,
            "already exist",
        );
        assert_same_records(
            backend,
            rt.block_on(target.list_leases(None)).unwrap(),
            expected,
        );
        eprintln!("{backend}: export/import checked");
    }
}

#[test]
fn migrate_through_every_backend_keeps_every_record() {
    let dir = temp_dir("migrate");
    let rt = runtime();
    let mut chain = backends(&dir, "first");
    chain.push((
        "sqlite",
        format!("sqlite://{}", dir.join("last.db").display()),
    ));
    let app = random_app("move");
    let first = rt.block_on(open(&chain[0].1, &app));
    let records = stopped_table();
    for r in &records {
        assert!(rt.block_on(first.import_lease(r)).unwrap());
    }
    for pair in chain.windows(2) {
        let ((a, from), (b, to)) = (&pair[0], &pair[1]);
        let out = ok(
            &["migrate", "--from", from, "--to", to, "--app", app.as_str()],
            "",
        );
        assert!(out.contains("imported 5 records"), "{a} -> {b}: {out}");
        let target = rt.block_on(open(to, &app));
        assert_eq!(
            rt.block_on(target.list_leases(None)).unwrap(),
            records,
            "{a} -> {b}"
        );
        eprintln!("migrated {a} -> {b}");
    }
}

#[test]
fn migrate_refuses_live_leases_and_writes_nothing() {
    let dir = temp_dir("live");
    let rt = runtime();
    let (from, to) = (
        format!("sqlite://{}", dir.join("from.db").display()),
        format!("sqlite://{}", dir.join("to.db").display()),
    );
    let app = random_app("live");
    let source = rt.block_on(open(&from, &app));
    rt.block_on(source.get_lease(&key("busy"), &worker("w9"), long()))
        .unwrap();
    rt.block_on(source.create_lease_if_absent(&key("idle"), &[], None))
        .unwrap();
    fails(
        &[
            "migrate",
            "--from",
            &from,
            "--to",
            &to,
            "--app",
            app.as_str(),
        ],
        "",
        1,
        "orders/busy held by w9",
    );
    let target = rt.block_on(open(&to, &app));
    assert!(rt.block_on(target.list_leases(None)).unwrap().is_empty());
}

#[test]
fn bad_input_gives_one_line_and_writes_nothing() {
    let dir = temp_dir("bad");
    let rt = runtime();
    let url = format!("sqlite://{}", dir.join("bad.db").display());
    let app = random_app("bad");
    let s = ["--store", url.as_str(), "--app", app.as_str()];
    fails(
        &["leases", "list", "--store", "ftp://h/db", "--app", "x"],
        "",
        1,
        "invalid url: unknown scheme",
    );
    fails(
        &["leases", "list", "--store", &url, "--app", "no spaces"],
        "",
        1,
        "invalid app",
    );
    // A malformed line anywhere: nothing of the file is written.
    let good = ok(&["export", "--store", &url, "--app", app.as_str()], "");
    assert!(good.is_empty());
    let line = r#"{"version":1,"stream":"orders","shard":"shard-1","owner":null,"token":3,"deadline_unix_us":null,"checkpoint":"7","checkpoint_sub":0,"pending_checkpoint":null,"pending_checkpoint_sub":0,"parents":[],"claim":null,"owner_switches_since_checkpoint":0}"#;
    let import = |input: &str, needle: &str| {
        let mut args = vec!["import"];
        args.extend(s);
        fails(&args, input, 1, needle);
    };
    import(
        &format!("{line}\n{{\"version\":1,"),
        "invalid record: line 2",
    );
    import(
        &line.replace("\"7\"", "\"7a\""),
        "invalid checkpoint: line 1",
    );
    import(
        &line.replace("\"version\":1", "\"version\":2"),
        "invalid version: line 1",
    );
    import(
        &line
            .replace("\"owner\":null", "\"owner\":\"w\"")
            .replace("\"token\":3", "\"token\":0"),
        "invalid token: line 1",
    );
    import(&format!("{line}\n{line}"), "appears twice");
    let store = rt.block_on(open(&url, &app));
    assert!(rt.block_on(store.list_leases(None)).unwrap().is_empty());
    // A position that is not one, on an existing lease: refused, unchanged.
    rt.block_on(store.create_lease_if_absent(
        &key("shard-1"),
        &[],
        Some(&Position::sequence("9").unwrap()),
    ))
    .unwrap();
    let mut args = vec!["checkpoint", "reset", "orders", "shard-1", "12-3", "--yes"];
    args.extend(s);
    fails(&args, "", 1, "invalid position");
    let lease = rt
        .block_on(store.fetch_checkpoint(&key("shard-1")))
        .unwrap()
        .unwrap();
    assert_eq!(lease.checkpoint, Some(Position::sequence("9").unwrap()));
    // Usage errors exit 2.
    fails(&["leases", "frobnicate"], "", 2, "unrecognized subcommand");
    fails(
        &[
            "checkpoint",
            "reset",
            "orders",
            "shard-1",
            "--store",
            &url,
            "--app",
            "a",
        ],
        "",
        2,
        "required",
    );
    fails(
        &["migrate", "--from", &url, "--to", &url, "--all-apps"],
        "",
        1,
        "invalid all_apps",
    );
}

/// Built without a backend's feature, its URLs are refused naming the feature.
#[cfg(not(feature = "redis"))]
#[test]
fn a_backend_not_compiled_in_names_its_feature() {
    fails(
        &[
            "leases",
            "list",
            "--store",
            "redis://127.0.0.1/",
            "--app",
            "x",
        ],
        "",
        1,
        "`redis` cargo feature",
    );
}

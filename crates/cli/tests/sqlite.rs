//! End-to-end tests of the `checkpointctl` binary on SQLite (new files under the system temp
//! directory), which every build can run, and of what it refuses before opening any server:
//! live leases, records existing in the target, bad input, a backend not compiled in.

mod common;

use checkpoint_core::conformance::random_app;
use common::*;

async fn admin_commands_on_sqlite() {
    admin_commands("sqlite", &sqlite_url("admin")).await;
}

async fn export_then_import_on_sqlite() {
    export_then_import("sqlite", &sqlite_url("export")).await;
}

async fn migrate_all_apps_into_sqlite() {
    migrate_all_apps("sqlite", &sqlite_url("all-apps-target")).await;
}

async fn migrate_refuses_live_leases_and_writes_nothing() {
    let (from, to) = (sqlite_url("from"), sqlite_url("to"));
    let app = random_app("live");
    let source = open(&from, &app).await;
    source
        .get_lease(&key("busy"), &worker("w9"), long())
        .await
        .unwrap();
    source
        .create_lease_if_absent(&key("idle"), &[], None)
        .await
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
    let target = open(&to, &app).await;
    assert!(target.list_leases(None).await.unwrap().is_empty());
}

/// One live lease in one of two apps refuses the whole `--all-apps` move, naming that app and
/// lease; neither app is written.
async fn migrate_all_apps_refuses_a_live_lease_in_any_app() {
    let (from, to) = (sqlite_url("all-live-from"), sqlite_url("all-live-to"));
    let (idle, busy) = (random_app("idle"), random_app("busy"));
    seed(&from, &idle, &stopped_records(3)).await;
    let source = seed(&from, &busy, &stopped_records(2)).await;
    source
        .get_lease(&key("taken"), &worker("w7"), long())
        .await
        .unwrap();
    fails(
        &["migrate", "--from", &from, "--to", &to, "--all-apps"],
        "",
        1,
        &format!("refusing to migrate app {busy}: 1 lease(s) are live (orders/taken held by w7"),
    );
    for app in [&idle, &busy] {
        let target = open(&to, app).await;
        assert!(target.list_leases(None).await.unwrap().is_empty(), "{app}");
    }
    assert_eq!(ok(&["apps", "list", "--store", &to], ""), "");
}

/// `apps list` of a store without records prints nothing; `migrate --all-apps` from it says
/// there is nothing to move.
fn an_empty_store_lists_no_apps() {
    let url = sqlite_url("empty");
    assert_eq!(ok(&["apps", "list", "--store", &url], ""), "");
    let out = ok(
        &[
            "migrate",
            "--from",
            &url,
            "--to",
            &sqlite_url("none"),
            "--all-apps",
        ],
        "",
    );
    assert!(out.contains("nothing to migrate"), "{out}");
}

/// An app named by `CHECKPOINT_APP` (the operator's environment for the other commands) gives
/// way to `migrate --all-apps`, which moves every app.
async fn migrate_all_apps_ignores_the_app_of_the_environment() {
    let (from, to) = (sqlite_url("env-from"), sqlite_url("env-to"));
    let (one, two) = (random_app("env"), random_app("env"));
    seed(&from, &one, &stopped_records(1)).await;
    seed(&from, &two, &stopped_records(2)).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_checkpointctl"))
        .args(["migrate", "--from", &from, "--to", &to, "--all-apps"])
        .env("CHECKPOINT_APP", one.as_str())
        .env_remove("CHECKPOINT_STORE")
        .output()
        .expect("the binary runs");
    let stdout = text(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("migrated 2 apps, 3 records"),
        "{stdout}{}",
        text(&out.stderr)
    );
    for (app, n) in [(&one, 1), (&two, 2)] {
        let target = open(&to, app).await;
        assert_eq!(target.list_leases(None).await.unwrap().len(), n, "{app}");
    }
}

async fn bad_input_gives_one_line_and_writes_nothing() {
    let url = sqlite_url("bad");
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
    let store = open(&url, &app).await;
    assert!(store.list_leases(None).await.unwrap().is_empty());
    // A position that is not one, on an existing lease: refused, unchanged.
    store
        .create_lease_if_absent(
            &key("shard-1"),
            &[],
            Some(&checkpoint_core::Position::sequence("9").unwrap()),
        )
        .await
        .unwrap();
    let mut args = vec!["checkpoint", "reset", "orders", "shard-1", "12-3", "--yes"];
    args.extend(s);
    fails(&args, "", 1, "invalid position");
    let lease = store
        .fetch_checkpoint(&key("shard-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        lease.checkpoint,
        Some(checkpoint_core::Position::sequence("9").unwrap())
    );
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
        &[
            "migrate",
            "--from",
            &url,
            "--to",
            &url,
            "--app",
            "a",
            "--all-apps",
        ],
        "",
        2,
        "cannot be used with",
    );
    // A KCL table is one app's: listing its apps is refused before it is opened.
    fails(
        &[
            "apps",
            "list",
            "--store",
            "dynamodb://t?region=us-east-1&kcl_stream=orders",
        ],
        "",
        1,
        "invalid store: a KCL table belongs to one app",
    );
}

/// Built without a backend's feature, its URLs are refused naming the feature.
#[cfg(not(feature = "redis"))]
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

checkpoint_test_support::server_tests! {
    backends: [],
    tests: [],
    offline: [
        an_empty_store_lists_no_apps,
        #[cfg(not(feature = "redis"))]
        a_backend_not_compiled_in_names_its_feature,
    ],
    offline_async: [
        admin_commands_on_sqlite,
        export_then_import_on_sqlite,
        migrate_all_apps_into_sqlite,
        migrate_refuses_live_leases_and_writes_nothing,
        migrate_all_apps_refuses_a_live_lease_in_any_app,
        migrate_all_apps_ignores_the_app_of_the_environment,
        bad_input_gives_one_line_and_writes_nothing,
    ],
}

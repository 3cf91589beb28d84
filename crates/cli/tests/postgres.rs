//! End-to-end tests of the `checkpointctl` binary on PostgreSQL, the server the shared harness
//! finds through `CHECKPOINT_POSTGRES_URL` (ignored when it is not running, a failure in strict mode):
//! the admin commands, export and import, and `migrate --all-apps` into a namespace of its own.

mod common;

use checkpoint_test_support::Backend;
use common::*;

async fn admin_commands_on_postgres() {
    admin_commands("postgres", &server_url(Backend::Postgres)).await;
}

async fn export_then_import_on_postgres() {
    export_then_import("postgres", &server_url(Backend::Postgres)).await;
}

async fn migrate_all_apps_into_postgres() {
    migrate_all_apps("postgres", &fresh_namespace(Backend::Postgres)).await;
}

checkpoint_test_support::server_tests! {
    backend: Backend::Postgres,
    tests: [
        admin_commands_on_postgres,
        export_then_import_on_postgres,
        migrate_all_apps_into_postgres,
    ],
}

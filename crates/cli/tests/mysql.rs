//! End-to-end tests of the `checkpointctl` binary on MySQL or MariaDB, the server the shared harness
//! finds through `CHECKPOINT_MYSQL_URL` (ignored when it is not running, a failure in strict mode):
//! the admin commands, export and import, and `migrate --all-apps` into a namespace of its own.

mod common;

use checkpoint_test_support::Backend;
use common::*;

async fn admin_commands_on_mysql() {
    admin_commands("mysql", &server_url(Backend::Mysql)).await;
}

async fn export_then_import_on_mysql() {
    export_then_import("mysql", &server_url(Backend::Mysql)).await;
}

async fn migrate_all_apps_into_mysql() {
    migrate_all_apps("mysql", &fresh_namespace(Backend::Mysql)).await;
}

checkpoint_test_support::server_tests! {
    backend: Backend::Mysql,
    tests: [
        admin_commands_on_mysql,
        export_then_import_on_mysql,
        migrate_all_apps_into_mysql,
    ],
}

//! End-to-end tests of the `checkpointctl` binary on Redis, the server the shared harness
//! finds through `CHECKPOINT_REDIS_URL` (ignored when it is not running, a failure in strict mode):
//! the admin commands, export and import, and `migrate --all-apps` into a namespace of its own.

mod common;

use checkpoint_test_support::Backend;
use common::*;

async fn admin_commands_on_redis() {
    admin_commands("redis", &server_url(Backend::Redis)).await;
}

async fn export_then_import_on_redis() {
    export_then_import("redis", &server_url(Backend::Redis)).await;
}

async fn migrate_all_apps_into_redis() {
    migrate_all_apps("redis", &fresh_namespace(Backend::Redis)).await;
}

checkpoint_test_support::server_tests! {
    backend: Backend::Redis,
    tests: [
        admin_commands_on_redis,
        export_then_import_on_redis,
        migrate_all_apps_into_redis,
    ],
}

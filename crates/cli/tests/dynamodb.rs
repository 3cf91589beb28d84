//! End-to-end tests of the `checkpointctl` binary on DynamoDB (a moto server), the server the shared harness
//! finds through `CHECKPOINT_DYNAMO_ENDPOINT` (ignored when it is not running, a failure in strict mode):
//! the admin commands, export and import, and `migrate --all-apps` into a namespace of its own.

mod common;

use checkpoint_test_support::Backend;
use common::*;

async fn admin_commands_on_dynamodb() {
    admin_commands("dynamodb", &server_url(Backend::Dynamo)).await;
}

async fn export_then_import_on_dynamodb() {
    export_then_import("dynamodb", &server_url(Backend::Dynamo)).await;
}

async fn migrate_all_apps_into_dynamodb() {
    migrate_all_apps("dynamodb", &fresh_namespace(Backend::Dynamo)).await;
}

checkpoint_test_support::server_tests! {
    backend: Backend::Dynamo,
    tests: [
        admin_commands_on_dynamodb,
        export_then_import_on_dynamodb,
        migrate_all_apps_into_dynamodb,
    ],
}

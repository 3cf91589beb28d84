//! The failover scenario (`failover.rs`) on MySQL or MariaDB at `CHECKPOINT_MYSQL_URL`. An
//! unreachable server is reported ignored by the `server_tests!` harness (a failure when
//! `CHECKPOINT_REQUIRE_ALL=1`).

mod failover_support;

use checkpoint_core::conformance::random_app;
use checkpoint_test_support::Backend;
use failover_support::{check, open_four};

async fn failover_on_mysql() {
    let url = Backend::Mysql.url().expect("MySQL has a default URL");
    let app = random_app("failover");
    let stores = open_four(&url, &app)
        .await
        .expect("the server listens, so the stores open");
    check(stores).await;
}

checkpoint_test_support::server_tests! {
    backend: Backend::Mysql,
    tests: [failover_on_mysql],
}

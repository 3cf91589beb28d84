//! Three workers share an 8-shard stream through a checkpoint store; one shard splits midway,
//! one worker is killed abruptly and another shuts down gracefully. Every record is accounted
//! for at the end.
//!
//! ```text
//! cargo run --release -p checkpoint-consumer --example demo                      # SQLite file in the temp dir
//! cargo run --release -p checkpoint-consumer --example demo -- --store memory://
//! cargo run --release -p checkpoint-consumer --features postgres --example demo -- --store postgres://postgres@127.0.0.1:5432/test
//! cargo run --release -p checkpoint-consumer --features redis --example demo -- --store redis://127.0.0.1:6379/
//! cargo run --release -p checkpoint-consumer --features dynamodb --example demo -- \
//!     --store 'dynamodb://consumer-demo?endpoint=http%3A%2F%2F127.0.0.1%3A5055'
//! ```
//!
//! Each run uses a fresh app name, so runs never see each other's leases in a shared store.
//! `CONSUMER_LOG=info` (or `debug`) also prints the workers' tracing events to stderr. The exit
//! code is non-zero when a record was lost, a duplicate is not explained by a lease move, a
//! child shard started before its parent ended, or a stale checkpoint was accepted.

#[path = "support/scenario.rs"]
mod scenario;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use checkpoint_core::{AppName, MemoryDatabase, Store};

fn usage() -> ExitCode {
    eprintln!("usage: demo [--store URL]   (default: sqlite://<temp dir>/consumer-demo.db)");
    ExitCode::from(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut url = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--store" => match args.next() {
                Some(u) => url = Some(u),
                None => return usage(),
            },
            "-h" | "--help" => {
                usage();
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    let url = url.unwrap_or_else(|| {
        let path = std::env::temp_dir().join("consumer-demo.db");
        format!("sqlite://{}", path.display())
    });
    match run(&url).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str) -> checkpoint_core::Result<ExitCode> {
    // A fresh app per run, so runs never see each other's leases in a shared store.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let app = AppName::new(format!("demo-{}-{nanos}", std::process::id()))?;
    println!("store: {url}   app: {app}");
    let stores: [Arc<dyn Store>; 4] = if url.starts_with("memory:") {
        // One in-process database, four handles onto it.
        let db = MemoryDatabase::new();
        [0, 1, 2, 3].map(|_| Arc::new(db.open(app.clone())) as Arc<dyn Store>)
    } else {
        [
            checkpoint_consumer::connect(url, app.clone()).await?,
            checkpoint_consumer::connect(url, app.clone()).await?,
            checkpoint_consumer::connect(url, app.clone()).await?,
            checkpoint_consumer::connect(url, app.clone()).await?,
        ]
    };
    let capabilities = stores[0].capabilities();
    let plan = scenario::Plan::demo();
    println!(
        "8 shards, 3 workers, lease {:?}, renew every {:?}; {} records over {:?}\n",
        plan.lease_duration, plan.renew_interval, plan.records, plan.produce_for
    );
    let report = scenario::run(stores, &plan).await?;
    println!("\n{}", report.table());
    for violation in &report.order_violations {
        println!("order violation: {violation}");
    }
    let bound = plan.worker_config()?.failover_bound();
    let skew_allowance = capabilities.clock.skew_allowance();
    if skew_allowance.is_zero() {
        println!(
            "failover bound (lease duration + renew interval): {} ms",
            bound.as_millis()
        );
    } else {
        println!(
            "failover bound (lease duration + renew interval + {} ms skew allowance): {} ms",
            skew_allowance.as_millis(),
            (bound + skew_allowance).as_millis()
        );
    }
    let ok = report.lost == 0
        && report.unexplained_duplicates == 0
        && report.order_violations.is_empty()
        && report.fenced_writes_accepted == 0;
    if ok {
        println!("OK: no record lost, every duplicate explained by a lease move");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("FAILED: see the table above");
        Ok(ExitCode::FAILURE)
    }
}

//! Across processes: a worker whose wall clock is an hour behind, then an hour ahead, runs as a
//! child process under `faketime` (Debian package `faketime`; `scripts/test` installs it) and
//! holds a lease; this process never takes it while the child renews, and takes it within the
//! lease duration + one renew interval + one observation interval after the child stops.
//!
//! The child is this test binary again, running [`faketime_child`] with its orders in the
//! environment; run alone, that test does nothing.
//!
//! ```text
//! CHECKPOINT_DYNAMO_ENDPOINT=http://127.0.0.1:5000 cargo test -p checkpoint-dynamo --test faketime -- --nocapture
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_dynamodb::types::AttributeValue;
use checkpoint_core::conformance::{backend_unavailable, random_app};
use checkpoint_core::{AppName, Error, LeaseDuration, LeaseKey, LeaseManager, WorkerId};
use checkpoint_dynamo::{DynamoConfig, DynamoStore};

/// The child's orders: `<table> <app> <shard>`.
const ORDERS: &str = "CHECKPOINT_DYNAMO_FAKETIME_CHILD";
const LEASE: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_millis(500);
const OBSERVE: Duration = Duration::from_millis(100);
/// How long the child holds the lease: several lease durations.
const HOLD: Duration = Duration::from_secs(6);

fn duration() -> LeaseDuration {
    LeaseDuration::new(LEASE).expect("valid duration")
}

fn config(endpoint: &str, table: &str) -> DynamoConfig {
    DynamoConfig::new(table)
        .expect("valid table")
        .with_endpoint(endpoint)
}

/// The child: takes the lease, renews it every `RENEW` for `HOLD`, saying so on stdout, then
/// stops renewing and exits (as a crash would leave the lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faketime_child() {
    let Ok(orders) = std::env::var(ORDERS) else {
        return;
    };
    let endpoint = std::env::var("CHECKPOINT_DYNAMO_ENDPOINT").expect("endpoint given");
    let parts: Vec<&str> = orders.split(' ').collect();
    let [table, app, shard] = parts[..] else {
        panic!("orders: {orders}");
    };
    let store = DynamoStore::open(
        config(&endpoint, table),
        AppName::new(app).expect("valid app"),
    )
    .await
    .expect("child opens");
    let key = LeaseKey::parse("s", shard).expect("valid key");
    let me = WorkerId::new("faketime-child").expect("valid worker");
    let lease = store
        .get_lease(&key, &me, duration())
        .await
        .expect("child takes a free lease");
    println!("CHILD-TAKEN {} {:?}", lease.token, SystemTime::now());
    let started = Instant::now();
    while started.elapsed() < HOLD {
        tokio::time::sleep(RENEW).await;
        store
            .renew(&key, &me, lease.token, duration())
            .await
            .expect("child renews");
        println!("CHILD-RENEWED");
    }
    println!("CHILD-STOPPED");
}

/// What the parent saw of the child.
enum Line {
    Taken,
    Renewed(Instant),
    Stopped(Instant),
}

async fn contest(endpoint: &str, faketime: &str, offset: &str, table: &str) {
    let app = random_app("faketime");
    let parent = DynamoStore::open(config(endpoint, table), app.clone())
        .await
        .expect("parent opens");
    let shard = format!("behind{}", offset.replace(['+', '-'], ""));
    let shard = if offset.starts_with('+') {
        shard.replace("behind", "ahead")
    } else {
        shard
    };
    let key = LeaseKey::parse("s", &shard).expect("valid key");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(faketime)
        .arg("-f")
        .arg(offset)
        .arg(exe)
        .args([
            "--exact",
            "faketime_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ORDERS, format!("{table} {app} {shard}"))
        .env("CHECKPOINT_DYNAMO_ENDPOINT", endpoint)
        // Only the wall clock is off, as on a host whose NTP failed; the monotonic clock runs.
        .env("DONT_FAKE_MONOTONIC", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child under faketime");
    let stdout = child.stdout.take().expect("piped");
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The test harness may print its own words before the child's on a line.
            let seen = if line.contains("CHILD-TAKEN") {
                Line::Taken
            } else if line.contains("CHILD-RENEWED") {
                Line::Renewed(Instant::now())
            } else if line.contains("CHILD-STOPPED") {
                Line::Stopped(Instant::now())
            } else {
                continue;
            };
            if send.send(seen).is_err() {
                break;
            }
        }
    });
    let first = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("the child reports");
    assert!(
        matches!(first, Line::Taken),
        "the child took the lease first"
    );

    // The child's clock really is off: the deadline it wrote is an hour from ours.
    let item = parent
        .client()
        .get_item()
        .table_name(table)
        .key("leaseKey", AttributeValue::S(format!("{app}:s:{shard}")))
        .consistent_read(true)
        .send()
        .await
        .expect("raw read")
        .item
        .expect("the child's lease");
    let Some(AttributeValue::N(written)) = item.get("leaseDeadlineMillis") else {
        panic!("no deadline written: {item:?}");
    };
    let ours = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i128;
    let apart = written.parse::<i128>().expect("a number") - ours;
    assert!(
        apart.abs() > 3_000_000,
        "{offset}: the child's deadline is {apart} ms from ours; is faketime working?"
    );

    // While the child renews, every attempt is refused; after it stops, one succeeds within
    // the bound and no sooner than one lease duration after the last renewal it reported.
    let me = WorkerId::new("parent").expect("valid worker");
    let mut last_renewal = Instant::now();
    let mut stopped: Option<Instant> = None;
    let mut attempts = 0;
    let taken_at = loop {
        while let Ok(line) = lines.try_recv() {
            match line {
                Line::Renewed(at) => last_renewal = at,
                Line::Stopped(at) => stopped = Some(at),
                Line::Taken => {}
            }
        }
        attempts += 1;
        match parent.get_lease(&key, &me, duration()).await {
            Ok(_) => break Instant::now(),
            Err(Error::LeaseHeld { .. }) => {
                assert!(
                    last_renewal.elapsed() < Duration::from_secs(60),
                    "{offset}: never taken"
                );
            }
            Err(e) => panic!("{offset}: {e}"),
        }
        tokio::time::sleep(OBSERVE).await;
    };
    let stopped = stopped.unwrap_or(last_renewal);
    let _ = child.wait();
    assert!(
        taken_at >= last_renewal + LEASE - Duration::from_millis(50),
        "{offset}: taken {:?} after the child's last renewal, before the lease duration",
        taken_at - last_renewal
    );
    let failover = taken_at.saturating_duration_since(stopped);
    let bound = LEASE + RENEW + OBSERVE;
    println!(
        "child clock {offset}: {attempts} attempts refused while it renewed; taken {failover:?} \
         after it stopped (bound {bound:?})"
    );
    assert!(
        failover <= bound,
        "{offset}: failover {failover:?} > {bound:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_an_hour_off_keeps_and_loses_its_lease_by_observation() {
    let Ok(endpoint) = std::env::var("CHECKPOINT_DYNAMO_ENDPOINT") else {
        backend_unavailable(
            "dynamodb",
            "set CHECKPOINT_DYNAMO_ENDPOINT to a moto server",
            &"CHECKPOINT_DYNAMO_ENDPOINT is not set",
        );
        return;
    };
    let Some(faketime) = ["/usr/bin/faketime", "/usr/local/bin/faketime"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        backend_unavailable(
            "faketime",
            "install it (apt-get install faketime; scripts/test does)",
            &"faketime not found",
        );
        return;
    };
    let table = format!("faketime-{}", random_app("t"));
    for offset in ["-1h", "+1h"] {
        contest(&endpoint, faketime, offset, &table).await;
    }
}

//! DynamoDB-specific store behaviour, against the server named by `CHECKPOINT_DYNAMO_ENDPOINT`
//! (a moto server; see `tests/moto_serial.py`): the number of requests each operation sends,
//! corrupt items, lost replies, and (without a server) credentials kept out of `Debug` and an
//! unreachable server. Adopting a KCL table and schema checks: `tests/schema.rs`; clocks far
//! apart: `tests/clocks.rs`; across processes: `tests/faketime.rs`; the KCL's own item
//! encodings: `tests/kcl.rs`.
//!
//! ```text
//! CHECKPOINT_DYNAMO_ENDPOINT=http://127.0.0.1:5000 cargo test -p checkpoint-dynamo -- --nocapture
//! ```

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Checkpointer, ErrorKind, FencingToken, HeartbeatTtl, LeaseKey, LeaseManager, Membership,
    Position,
};
use checkpoint_dynamo::{DynamoConfig, DynamoStore};
use common::{config, endpoint, key, n, open, put, s, secs, worker};

/// Counts the requests each operation sends (the client's interceptor counts every attempt)
/// and prints the table; asserts the single-request paths.
async fn requests_per_operation() {
    let Some(endpoint) = endpoint() else { return };
    let base = config(&endpoint, "count");
    let Some(first) = open(base.clone(), "count").await else {
        return;
    };
    let app = random_app("count");
    let a = DynamoStore::open(base.clone(), app.clone())
        .await
        .expect("open a");
    let opened = a.requests_sent();
    let b = DynamoStore::open(base, app).await.expect("open b");
    drop(first);
    let (wa, wb) = (worker("a"), worker("b"));
    let d = secs(60);
    let ttl = HeartbeatTtl::new(Duration::from_secs(60)).expect("valid");
    let k = key("s", "counted");
    let mut rows: Vec<(&str, u64)> = vec![("open (init on an ACTIVE table)", opened)];
    macro_rules! count {
        ($store:expr, $what:expr, $op:expr) => {{
            let before = $store.requests_sent();
            let out = $op.await;
            rows.push(($what, $store.requests_sent() - before));
            out
        }};
    }
    count!(
        a,
        "create_lease_if_absent (new)",
        a.create_lease_if_absent(&k, &[], None)
    )
    .expect("create");
    count!(
        a,
        "create_lease_if_absent (exists)",
        a.create_lease_if_absent(&k, &[], None)
    )
    .expect("create again");
    let lease = count!(a, "get_lease (free)", a.get_lease(&k, &wa, d)).expect("get");
    count!(b, "get_lease (held by another)", b.get_lease(&k, &wb, d)).expect_err("held");
    count!(a, "get_lease (own, cached)", a.get_lease(&k, &wa, d)).expect("own");
    count!(a, "renew", a.renew(&k, &wa, lease.token, d)).expect("renew");
    let seq = |v: &str| Position::sequence(v).expect("valid");
    count!(
        a,
        "checkpoint (cached record)",
        a.checkpoint_sequence(&k, &wa, lease.token, &seq("10"))
    )
    .expect("checkpoint");
    count!(
        b,
        "checkpoint (uncached: read + write)",
        b.checkpoint_sequence(&k, &wa, lease.token, &seq("11"))
    )
    .expect("checkpoint from another handle");
    count!(
        a,
        "checkpoint (stale cache: write, ALL_OLD, write)",
        a.checkpoint_sequence(&k, &wa, lease.token, &seq("12"))
    )
    .expect("checkpoint on a stale cache");
    count!(
        a,
        "prepare_checkpoint",
        a.prepare_checkpoint(&k, &wa, lease.token, &seq("13"))
    )
    .expect("prepare");
    count!(
        a,
        "checkpoint (stale token, fenced)",
        a.checkpoint_sequence(&k, &wa, FencingToken(9), &seq("14"))
    )
    .expect_err("fenced");
    count!(a, "fetch", a.fetch_checkpoint(&k)).expect("fetch");
    count!(b, "claim", b.claim(&k, &wb)).expect("claim");
    count!(
        a,
        "renew (sees the claim)",
        a.renew(&k, &wa, lease.token, d)
    )
    .expect("renew");
    count!(a, "release", a.remove_lease_owner(&k, &wa, lease.token)).expect("release");
    let taken = count!(b, "get_lease (released, claimant)", b.get_lease(&k, &wb, d)).expect("take");
    count!(a, "steal (uncached)", a.steal(&k, &wa, &wb, taken.token, d)).expect("steal");
    count!(a, "force_release", a.evict_lease(&k)).expect("force");
    count!(a, "reset_checkpoint", a.reset_checkpoint(&k, None)).expect("reset");
    let keys: Vec<(LeaseKey, FencingToken)> = {
        let mut v = Vec::new();
        for i in 0..10 {
            let k = key("s", &format!("many-{i}"));
            v.push((k.clone(), a.get_lease(&k, &wa, d).await.expect("get").token));
        }
        v
    };
    let outcome =
        count!(a, "renew_many (10 leases)", a.renew_many(&wa, &keys, d)).expect("renew many");
    assert_eq!(outcome.renewed.len(), 10);
    count!(a, "list_leases (11 leases, 1 page)", a.list_leases(None)).expect("list");
    count!(a, "delete_lease", a.remove_lease_info(&k)).expect("delete");
    count!(a, "register_worker", a.register_worker(&wa, ttl)).expect("register");
    count!(a, "heartbeat", a.heartbeat(&wa, ttl)).expect("heartbeat");
    count!(a, "live_workers", a.live_workers()).expect("live");
    count!(a, "prune_dead_workers (none dead)", a.prune_dead_workers()).expect("prune");
    count!(a, "deregister_worker", a.deregister_worker(&wa)).expect("deregister");

    println!("| operation | DynamoDB requests |\n| --- | --- |");
    for (what, count) in &rows {
        println!("| {what} | {count} |");
    }
    let get = |name: &str| {
        rows.iter()
            .find(|(w, _)| *w == name)
            .map(|(_, c)| *c)
            .expect("row")
    };
    for one in [
        "open (init on an ACTIVE table)",
        "create_lease_if_absent (new)",
        "get_lease (free)",
        "get_lease (held by another)",
        "renew",
        "checkpoint (cached record)",
        "fetch",
        "delete_lease",
        "heartbeat",
    ] {
        assert_eq!(get(one), 1, "{one}");
    }
    assert_eq!(get("renew_many (10 leases)"), 10);
}

/// An item with an unreadable attribute is `Error::Corrupt` naming the attribute, on fetch and
/// on list; the store never panics on it.
async fn corrupt_items_are_reported() {
    let Some(endpoint) = endpoint() else { return };
    let Some(store) = open(config(&endpoint, "corrupt"), "corrupt").await else {
        return;
    };
    let app = store.app().clone();
    for (shard, attr, value) in [
        ("bad-checkpoint", "checkpoint", s("12x")),
        ("bad-token", "fencingToken", s("seven")),
        ("bad-owner", "leaseOwner", s("not\u{7}a worker")),
        (
            "bad-parents",
            "parentShardId",
            AttributeValue::N("1".into()),
        ),
    ] {
        put(
            &store,
            vec![
                ("leaseKey", s(&format!("{app}:s:{shard}"))),
                ("leaseCounter", n(1)),
                (attr, value),
            ],
        )
        .await;
        let err = store
            .fetch_checkpoint(&key("s", shard))
            .await
            .expect_err("corrupt");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert_eq!(err.field(), Some(attr), "{err}");
        assert_eq!(
            store
                .get_lease(&key("s", shard), &worker("w"), secs(5))
                .await
                .map_err(|e| e.kind())
                .err(),
            Some(ErrorKind::Corrupt)
        );
    }
    // One good lease among them: listing reports it and leaves the unreadable ones out
    // (each named in a warning) instead of failing as a whole.
    let good = key("s", "good");
    store
        .create_lease_if_absent(&good, &[], None)
        .await
        .expect("create");
    let listed = store
        .list_leases(None)
        .await
        .expect("list skips, never fails");
    assert_eq!(
        listed.iter().map(|l| l.key.clone()).collect::<Vec<_>>(),
        vec![good]
    );
    assert_eq!(
        store
            .lease_item(&key("s", "bad-token"))
            .await
            .map_err(|e| e.field())
            .err(),
        Some(Some("fencingToken"))
    );
}

/// Credentials given in the URL or the builder never show in `Debug`, and an unknown URL
/// option is named without its value.
fn credentials_are_redacted() {
    let config = DynamoConfig::from_url(
        "dynamodb://leases?region=eu-west-1&access_key_id=AKIAEXAMPLEKEYID&secret_access_key=wJalrXUtnFEMIbPxRfiCYEXAMPLEKEY&session_token=FwoGZXIvYXdzEXAMPLETOKEN",
    )
    .expect("valid url");
    let built = DynamoConfig::new("leases")
        .expect("valid")
        .with_credentials("AKIAEXAMPLEKEYID", "wJalrXUtnFEMIbPxRfiCYEXAMPLEKEY", None);
    let shown = format!("{config:?} {config:#?} {built:?}");
    for secret in [
        "AKIAEXAMPLEKEYID",
        "wJalrXUtnFEMIbPxRfiCYEXAMPLEKEY",
        "FwoGZXIvYXdzEXAMPLETOKEN",
    ] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(shown.contains("redacted"));
    let err = DynamoConfig::from_url("dynamodb://leases?secret=wJalrXUtnFEMIbPxRfiCYEXAMPLEKEY")
        .expect_err("unknown option");
    assert!(!err.to_string().contains("wJalrXUtnFEMIbPxRfiCYEXAMPLEKEY"));
    assert_eq!(err.field(), Some("url"));
}

/// A loopback proxy in front of the server that, when told to, lets one request through to the
/// server and then drops its reply (closes the connection): a write that happened but whose
/// reply was lost.
struct LossyProxy {
    endpoint: String,
    drop_next: Arc<std::sync::atomic::AtomicBool>,
}

impl LossyProxy {
    async fn start(upstream: &str) -> Self {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let drop_next = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = drop_next.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let target = target.clone();
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    });
                    // The server closes each connection after one reply.
                    let mut reply = Vec::new();
                    let _ = server_read.read_to_end(&mut reply).await;
                    if !flag.swap(false, Ordering::SeqCst) {
                        let _ = client_write.write_all(&reply).await;
                    }
                });
            }
        });
        Self {
            endpoint,
            drop_next,
        }
    }

    fn drop_next_reply(&self) {
        self.drop_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A conditional write whose reply was lost is retried and resolved from the record its failed
/// condition returns: the operation reports the success that happened, never a second grant or
/// a spurious failure.
async fn lost_replies_are_resolved_by_rereading() {
    let Some(endpoint) = endpoint() else { return };
    let proxy = LossyProxy::start(&endpoint).await;
    let Some(store) = open(config(&proxy.endpoint, "lossy"), "lossy").await else {
        return;
    };
    let (k, w, d) = (key("s", "lossy"), worker("w"), secs(60));
    let mut sent = Vec::new();
    let mut measure = |store: &DynamoStore, before: u64| sent.push(store.requests_sent() - before);

    proxy.drop_next_reply();
    let created = store
        .create_lease_if_absent(&k, &[], None)
        .await
        .expect("create with a lost reply");
    assert!(
        created,
        "the retried create knows by its nonce that it created the record"
    );
    assert!(
        !store
            .create_lease_if_absent(&k, &[], None)
            .await
            .expect("create again"),
        "a second call did not create it"
    );

    proxy.drop_next_reply();
    let before = store.requests_sent();
    let lease = store
        .get_lease(&k, &w, d)
        .await
        .expect("take with a lost reply");
    measure(&store, before);
    assert_eq!(
        lease.token,
        FencingToken(1),
        "the retried take did not grant twice"
    );

    proxy.drop_next_reply();
    let before = store.requests_sent();
    let position = Position::sequence("500").expect("valid");
    let after = store
        .checkpoint_sequence(&k, &w, lease.token, &position)
        .await
        .expect("checkpoint with a lost reply");
    measure(&store, before);
    assert_eq!(after.checkpoint, Some(position.clone()));

    proxy.drop_next_reply();
    let before = store.requests_sent();
    store
        .renew(&k, &w, lease.token, d)
        .await
        .expect("renew with a lost reply");
    measure(&store, before);

    proxy.drop_next_reply();
    let before = store.requests_sent();
    let released = store
        .remove_lease_owner(&k, &w, lease.token)
        .await
        .expect("release with a lost reply");
    measure(&store, before);
    assert_eq!((released.owner, released.token), (None, FencingToken(1)));

    let stored = store
        .fetch_checkpoint(&k)
        .await
        .expect("fetch")
        .expect("exists");
    assert_eq!(stored.checkpoint, Some(position));
    assert_eq!(stored.token, FencingToken(1));
    println!("requests for take, checkpoint, renew, release with one lost reply each: {sent:?}");
    assert!(sent.iter().all(|n| *n >= 2), "{sent:?}");
}

/// An unreachable server is a retryable backend error after a bounded number of tries.
async fn unreachable_server_gives_up_within_the_budget() {
    let started = std::time::Instant::now();
    let config = DynamoConfig::new("unreachable")
        .expect("valid")
        .with_endpoint("http://127.0.0.1:9")
        .with_backoff(checkpoint_core::Backoff {
            max_attempts: 3,
            budget: Duration::from_secs(2),
            ..checkpoint_core::Backoff::default()
        });
    let err = DynamoStore::open(config, random_app("gone"))
        .await
        .expect_err("nothing listens on port 9");
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(err.is_retryable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

// The tests of this file, registered with the shared harness (`harness = false`): a
// `#[test]` attribute would not run here. An unreachable server leaves them ignored.
checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Dynamo,
    tests: [requests_per_operation, corrupt_items_are_reported, lost_replies_are_resolved_by_rereading],
    offline: [credentials_are_redacted],
    offline_async: [unreachable_server_gives_up_within_the_budget],
}

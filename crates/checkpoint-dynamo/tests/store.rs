//! DynamoDB-specific tests, against the server named by `CHECKPOINT_DYNAMO_ENDPOINT` (a moto
//! server; see `tests/moto_serial.py`): adopting a table written by the KCL for Java, the
//! number of requests each operation sends, schema checks, corrupt items, lost replies, and
//! (without a server) credentials kept out of `Debug`. Clocks far apart: `tests/clocks.rs`;
//! across processes: `tests/faketime.rs`; the KCL's own item encodings: `tests/kcl.rs`.
//!
//! ```text
//! CHECKPOINT_DYNAMO_ENDPOINT=http://127.0.0.1:5000 cargo test -p checkpoint-dynamo -- --nocapture
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Checkpointer, Clock, Error, ErrorKind, FencingToken, HeartbeatTtl, LeaseDuration, LeaseKey,
    LeaseManager, ManualClock, Membership, Position, ShardId, StreamName, WorkerId,
};
use checkpoint_dynamo::{Billing, DynamoConfig, DynamoStore};

/// The endpoint. The harness runs the server tests only when it is set and listening (see
/// `checkpoint_test_support`), so `None` is never returned to them.
fn endpoint() -> Option<String> {
    Some(
        std::env::var("CHECKPOINT_DYNAMO_ENDPOINT")
            .expect("the harness runs server tests only with CHECKPOINT_DYNAMO_ENDPOINT set"),
    )
}

/// A config for a fresh table of this test.
fn config(endpoint: &str, prefix: &str) -> DynamoConfig {
    DynamoConfig::new(format!("{prefix}-{}", random_app("t")))
        .expect("valid table name")
        .with_endpoint(endpoint)
}

/// Opens a store. The harness found the server listening, so any error fails the test.
async fn open(config: DynamoConfig, app: &str) -> Option<DynamoStore> {
    match DynamoStore::open(config, random_app(app)).await {
        Ok(store) => Some(store),
        Err(e) => panic!("opening the store failed although the server listens: {e:?}"),
    }
}

fn key(stream: &str, shard: &str) -> LeaseKey {
    LeaseKey::parse(stream, shard).expect("valid key")
}

fn worker(name: &str) -> WorkerId {
    WorkerId::new(name).expect("valid worker")
}

fn secs(s: u64) -> LeaseDuration {
    LeaseDuration::new(Duration::from_secs(s)).expect("valid duration")
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn ss(v: &[&str]) -> AttributeValue {
    AttributeValue::Ss(v.iter().map(|x| (*x).to_owned()).collect())
}

async fn put(store: &DynamoStore, item: Vec<(&str, AttributeValue)>) {
    let item: HashMap<String, AttributeValue> =
        item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    store
        .client()
        .put_item()
        .table_name(store.table())
        .set_item(Some(item))
        .send()
        .await
        .expect("raw PutItem");
}

async fn raw(store: &DynamoStore, lease_key: &str) -> HashMap<String, AttributeValue> {
    store
        .client()
        .get_item()
        .table_name(store.table())
        .key("leaseKey", s(lease_key))
        .consistent_read(true)
        .send()
        .await
        .expect("raw GetItem")
        .item
        .expect("item exists")
}

async fn create_table(store_like: &DynamoStore, table: &str, key: &str, ty: ScalarAttributeType) {
    store_like
        .client()
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ty)
                .build()
                .expect("definition"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .expect("key schema"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("raw CreateTable");
}

const SEQ_0: &str = "49590338271490256608559692538361571095921575989136588898";
const SEQ_0_NEXT: &str = "49590338271490256608559692538361571095921575989136588999";
const SEQ_3: &str = "49590338271490256608559692538361571095921575989136500000";

/// A lease table written by the KCL for Java (items exactly as its `DynamoDBLeaseSerializer`
/// writes them, KCL 3 hand-off included) is opened in the KCL single-stream layout: the
/// positions, parents, pending checkpoint and hand-off are read; free leases are taken at once,
/// a KCL-held one after its `leaseCounter` stood still for the lease duration; checkpoints are
/// written in the KCL's encoding, and the KCL's own attributes are left alone.
async fn kcl_table_is_adopted() {
    let Some(endpoint) = endpoint() else { return };
    let clock = Arc::new(ManualClock::default());
    let orders = StreamName::new("orders").expect("valid");
    let base = config(&endpoint, "kcl")
        .with_kcl_single_stream(orders.clone())
        .with_clock(clock.clone());
    // The table as the KCL creates it: hash key leaseKey (S), nothing else.
    let Some(admin) = open(config(&endpoint, "kcl-admin"), "admin").await else {
        return;
    };
    let table = base.table().to_owned();
    create_table(&admin, &table, "leaseKey", ScalarAttributeType::S).await;
    let store = DynamoStore::open(base, random_app("kcl-app"))
        .await
        .expect("open the KCL table");
    // Held by a live KCL worker.
    put(
        &store,
        vec![
            ("leaseKey", s("shardId-000000000000")),
            ("leaseCounter", n(42)),
            ("leaseOwner", s("kcl-worker-1")),
            ("ownerSwitchesSinceCheckpoint", n(0)),
            ("checkpoint", s(SEQ_0)),
            ("checkpointSubSequenceNumber", n(0)),
            ("startingHashKey", s("0")),
            (
                "endingHashKey",
                s("170141183460469231731687303715884105727"),
            ),
            ("throughputKBps", AttributeValue::N("12.5".into())),
        ],
    )
    .await;
    // A closed parent, released.
    put(
        &store,
        vec![
            ("leaseKey", s("shardId-000000000001")),
            ("leaseCounter", n(7)),
            ("ownerSwitchesSinceCheckpoint", n(2)),
            ("checkpoint", s("SHARD_END")),
            ("checkpointSubSequenceNumber", n(0)),
            ("childShardIds", ss(&["shardId-000000000002"])),
        ],
    )
    .await;
    // Its child, never processed, with a prepared checkpoint.
    put(
        &store,
        vec![
            ("leaseKey", s("shardId-000000000002")),
            ("leaseCounter", n(0)),
            ("ownerSwitchesSinceCheckpoint", n(0)),
            ("checkpoint", s("TRIM_HORIZON")),
            ("checkpointSubSequenceNumber", n(0)),
            ("parentShardId", ss(&["shardId-000000000001"])),
            ("pendingCheckpoint", s(SEQ_3)),
            ("pendingCheckpointSubSequenceNumber", n(3)),
        ],
    )
    .await;
    // A KCL 3 graceful hand-off from kcl-worker-1 to kcl-worker-2.
    put(
        &store,
        vec![
            ("leaseKey", s("shardId-000000000003")),
            ("leaseCounter", n(9)),
            ("leaseOwner", s("kcl-worker-2")),
            ("checkpointOwner", s("kcl-worker-1")),
            ("ownerSwitchesSinceCheckpoint", n(1)),
            ("checkpoint", s(SEQ_3)),
            ("checkpointSubSequenceNumber", n(5)),
        ],
    )
    .await;

    let leases = store.list_leases(None).await.expect("list");
    assert_eq!(leases.len(), 4, "{leases:#?}");
    let by_shard = |i: usize| &leases[i];
    assert_eq!(
        by_shard(0).checkpoint,
        Some(Position::sequence(SEQ_0).expect("valid"))
    );
    assert_eq!(by_shard(0).owner, Some(worker("kcl-worker-1")));
    assert_eq!(by_shard(0).token, FencingToken(0));
    assert_eq!(
        by_shard(0).deadline,
        Some(clock.now() + checkpoint_dynamo::KCL_DEFAULT_FAILOVER),
        "a KCL-held lease is judged from its first sighting, for the KCL's default failover time"
    );
    assert_eq!(by_shard(1).checkpoint, Some(Position::ShardEnd));
    assert_eq!(by_shard(1).owner, None);
    assert_eq!(by_shard(1).owner_switches_since_checkpoint, 2);
    assert_eq!(by_shard(2).checkpoint, Some(Position::TrimHorizon));
    assert_eq!(
        by_shard(2).parents,
        vec![ShardId::new("shardId-000000000001").expect("valid")]
    );
    assert_eq!(
        by_shard(2).pending_checkpoint,
        Some(Position::sequence_with_sub(SEQ_3, 3).expect("valid"))
    );
    assert_eq!(
        by_shard(3).checkpoint,
        Some(Position::sequence_with_sub(SEQ_3, 5).expect("valid"))
    );
    assert_eq!(by_shard(3).owner, Some(worker("kcl-worker-1")));
    assert_eq!(by_shard(3).claim, Some(worker("kcl-worker-2")));

    let me = worker("rust-worker");
    let d = secs(10);
    // Free leases are taken at once; the child resumes from its KCL position.
    let child = key("orders", "shardId-000000000002");
    let lease = store.get_lease(&child, &me, d).await.expect("take child");
    assert_eq!(lease.token, FencingToken(1));
    assert_eq!(lease.checkpoint, Some(Position::TrimHorizon));
    store
        .checkpoint_sequence(
            &child,
            &me,
            lease.token,
            &Position::sequence(SEQ_3).expect("valid"),
        )
        .await
        .expect("checkpoint child");
    let item = raw(&store, "shardId-000000000002").await;
    assert_eq!(item.get("checkpoint"), Some(&s(SEQ_3)));
    assert_eq!(item.get("checkpointSubSequenceNumber"), Some(&n(0)));
    assert_eq!(item.get("leaseOwner"), Some(&s("rust-worker")));
    assert_eq!(item.get("ownerSwitchesSinceCheckpoint"), Some(&n(0)));
    assert_eq!(
        item.get("pendingCheckpoint"),
        None,
        "the checkpoint clears it"
    );
    assert_eq!(
        item.get("parentShardId"),
        Some(&ss(&["shardId-000000000001"]))
    );
    assert!(
        matches!(item.get("leaseCounter"), Some(AttributeValue::N(c)) if c.parse::<u64>().is_ok_and(|c| c >= 2)),
        "leaseCounter moves on every write: {item:?}"
    );

    // The KCL-held lease: held until its counter stood still for the lease duration, as the KCL
    // decides, then taken with the KCL position kept.
    let held = key("orders", "shardId-000000000000");
    match store.get_lease(&held, &me, d).await {
        Err(Error::LeaseHeld { holder, .. }) => assert_eq!(holder, worker("kcl-worker-1")),
        other => panic!("expected LeaseHeld by the KCL worker, got {other:?}"),
    }
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        store
            .get_lease(&held, &me, d)
            .await
            .map_err(|e| e.kind())
            .err(),
        Some(ErrorKind::LeaseHeld)
    );
    clock.advance(Duration::from_secs(6));
    let lease = store
        .get_lease(&held, &me, d)
        .await
        .expect("take after failover time");
    assert_eq!(lease.token, FencingToken(1));
    assert_eq!(lease.owner_switches_since_checkpoint, 1);
    let behind = Position::sequence(SEQ_3).expect("valid");
    assert_eq!(
        store
            .checkpoint_sequence(&held, &me, lease.token, &behind)
            .await
            .map_err(|e| e.kind())
            .err(),
        Some(ErrorKind::CheckpointRegression),
        "a position behind the KCL checkpoint is a regression"
    );
    store
        .checkpoint_sequence(
            &held,
            &me,
            lease.token,
            &Position::sequence_with_sub(SEQ_0_NEXT, 2).expect("valid"),
        )
        .await
        .expect("checkpoint the adopted lease");
    let item = raw(&store, "shardId-000000000000").await;
    assert_eq!(item.get("checkpoint"), Some(&s(SEQ_0_NEXT)));
    assert_eq!(item.get("checkpointSubSequenceNumber"), Some(&n(2)));
    assert_eq!(
        item.get("startingHashKey"),
        Some(&s("0")),
        "KCL attributes kept"
    );
    assert_eq!(
        item.get("throughputKBps"),
        Some(&AttributeValue::N("12.5".into()))
    );

    // The closed parent: taken and its SHARD_END confirmed, nothing after it.
    let parent = key("orders", "shardId-000000000001");
    let lease = store.get_lease(&parent, &me, d).await.expect("take parent");
    assert_eq!(lease.owner_switches_since_checkpoint, 3);
    store
        .checkpoint_sequence(&parent, &me, lease.token, &Position::ShardEnd)
        .await
        .expect("SHARD_END again");
    assert_eq!(
        raw(&store, "shardId-000000000001")
            .await
            .get("childShardIds"),
        Some(&ss(&["shardId-000000000002"]))
    );

    // The hand-off: the KCL holder checkpoints and releases; the claimant then takes it.
    let handoff = key("orders", "shardId-000000000003");
    let (old, new) = (worker("kcl-worker-1"), worker("kcl-worker-2"));
    store
        .checkpoint_sequence(
            &handoff,
            &old,
            FencingToken(0),
            &Position::sequence_with_sub(SEQ_3, 6).expect("valid"),
        )
        .await
        .expect("the hand-off holder checkpoints");
    let released = store
        .remove_lease_owner(&handoff, &old, FencingToken(0))
        .await
        .expect("the holder releases");
    assert_eq!(released.claim, Some(new.clone()));
    let item = raw(&store, "shardId-000000000003").await;
    assert_eq!(item.get("leaseOwner"), None);
    assert_eq!(item.get("checkpointOwner"), None);
    let taken = store
        .get_lease(&handoff, &new, d)
        .await
        .expect("claimant takes");
    assert_eq!((taken.token, taken.claim), (FencingToken(1), None));

    // A lease of another stream cannot be addressed in a single-stream table.
    let other = key("payments", "shardId-000000000000");
    assert_eq!(
        store
            .fetch_checkpoint(&other)
            .await
            .map_err(|e| e.field())
            .err(),
        Some(Some("stream"))
    );
}

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

/// `init` refuses tables with another key schema; creates a provisioned table when asked, and
/// many handles initialising one new table at once all succeed.
async fn init_checks_and_creates_tables() {
    let Some(endpoint) = endpoint() else { return };
    let Some(admin) = open(config(&endpoint, "admin"), "admin").await else {
        return;
    };
    for (name, attr, ty) in [
        ("other-key", "id", ScalarAttributeType::S),
        ("number-key", "leaseKey", ScalarAttributeType::N),
    ] {
        let bad = config(&endpoint, name);
        create_table(&admin, bad.table(), attr, ty).await;
        match DynamoStore::open(bad, random_app("bad")).await {
            Err(Error::SchemaMismatch { detail, .. }) => {
                assert!(detail.contains("leaseKey"), "{detail}");
            }
            other => panic!("{name}: expected SchemaMismatch, got {other:?}"),
        }
    }
    let fresh =
        config(&endpoint, "provisioned").with_billing(Billing::Provisioned { read: 3, write: 4 });
    let table = fresh.table().to_owned();
    let opens = (0..4).map(|_| DynamoStore::open(fresh.clone(), random_app("init")));
    for result in futures::future::join_all(opens).await {
        result.expect("concurrent init of a new table");
    }
    let described = admin
        .client()
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .expect("describe")
        .table
        .expect("table");
    let throughput = described.provisioned_throughput().expect("provisioned");
    assert_eq!(throughput.read_capacity_units(), Some(3));
    assert_eq!(throughput.write_capacity_units(), Some(4));
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
    tests: [kcl_table_is_adopted, requests_per_operation, init_checks_and_creates_tables, corrupt_items_are_reported, lost_replies_are_resolved_by_rereading],
    offline: [credentials_are_redacted],
    offline_async: [unreachable_server_gives_up_within_the_budget],
}

//! The table layout, against the server named by `CHECKPOINT_DYNAMO_ENDPOINT` (a moto server;
//! see `tests/moto_serial.py`): adopting a table written by the KCL for Java, and `init`'s
//! schema checks and table creation. Store behaviour: `tests/store.rs`; the KCL's own item
//! encodings: `tests/kcl.rs`.
//!
//! ```text
//! CHECKPOINT_DYNAMO_ENDPOINT=http://127.0.0.1:5000 cargo test -p checkpoint-dynamo -- --nocapture
//! ```

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ScalarAttributeType};
use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Checkpointer, Clock, Error, ErrorKind, FencingToken, LeaseManager, ManualClock, Position,
    ShardId, StreamName,
};
use checkpoint_dynamo::{Billing, DynamoStore};
use common::{config, create_table, endpoint, key, n, open, put, raw, s, secs, ss, worker};

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

// The tests of this file, registered with the shared harness (`harness = false`): a
// `#[test]` attribute would not run here. An unreachable server leaves them ignored.
checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Dynamo,
    tests: [kcl_table_is_adopted, init_checks_and_creates_tables],
}

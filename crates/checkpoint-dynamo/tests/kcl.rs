//! Adopting lease tables as the KCL for Java writes them: every item of
//! `tests/fixtures/kcl_items.json` (KCL 1.x, 2.x single- and multi-stream, 3.x; every checkpoint
//! sentinel; real-looking owners) is listed, fetched, taken by the KCL's expiry rule,
//! checkpointed and released, and left readable by the KCL: the attributes it owns keep their
//! encoding, and `pendingCheckpointState` goes with the pending checkpoint.
//!
//! ```text
//! CHECKPOINT_DYNAMO_ENDPOINT=http://127.0.0.1:5000 cargo test -p checkpoint-dynamo --test kcl -- --nocapture
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use checkpoint_core::conformance::{backend_unavailable, random_app};
use checkpoint_core::{
    Checkpointer, Clock, Error, ErrorKind, LeaseDuration, LeaseKey, LeaseManager, ManualClock,
    Position, StreamName, WorkerId,
};
use checkpoint_dynamo::{DynamoConfig, DynamoStore, KeyLayout};

type Item = HashMap<String, AttributeValue>;

/// The instant the KCL app of the fixture was configured to start at (`AT_TIMESTAMP`).
const AT: u64 = 1_700_000_000_000;
/// A sequence number after every one in the fixture.
const AHEAD: &str = "49590338271490256608559692538361571095921575989199999999";
/// The KCL attributes this crate must leave exactly as the KCL wrote them.
const KCL_KEPT: [&str; 7] = [
    "parentShardId",
    "childShardIds",
    "startingHashKey",
    "endingHashKey",
    "throughputKBps",
    "streamName",
    "shardId",
];

/// A fixture item and its markers (`_...` attributes, not stored).
struct Fixture {
    item: Item,
    other_stream: bool,
}

fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn attribute(value: &serde_json::Value) -> AttributeValue {
    let (ty, v) = value
        .as_object()
        .and_then(|o| o.iter().next())
        .expect("one typed value");
    match ty.as_str() {
        "S" => AttributeValue::S(v.as_str().expect("S").to_owned()),
        "N" => AttributeValue::N(v.as_str().expect("N").to_owned()),
        "SS" => AttributeValue::Ss(
            v.as_array()
                .expect("SS")
                .iter()
                .map(|s| s.as_str().expect("S").to_owned())
                .collect(),
        ),
        "B" => AttributeValue::B(Blob::new(decode_base64(v.as_str().expect("B")))),
        "BOOL" => AttributeValue::Bool(v.as_bool().expect("BOOL")),
        other => panic!("type {other} is not in the fixture's vocabulary"),
    }
}

fn fixtures(groups: &[&str]) -> Vec<Fixture> {
    let all: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/kcl_items.json")).expect("fixture JSON");
    let mut out = Vec::new();
    for group in groups {
        for raw in all[group].as_array().expect("group") {
            let mut item = Item::new();
            let mut other_stream = false;
            for (name, value) in raw.as_object().expect("item") {
                match name.as_str() {
                    "_other_stream" => other_stream = true,
                    marker if marker.starts_with('_') => {}
                    _ => {
                        item.insert(name.clone(), attribute(value));
                    }
                }
            }
            out.push(Fixture { item, other_stream });
        }
    }
    out
}

fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s)) | Some(AttributeValue::N(s)) => Some(s),
        _ => None,
    }
}

/// The position a KCL item's checkpoint attributes stand for.
fn kcl_position(item: &Item, field: &str, sub_field: &str) -> Option<Position> {
    let sub = text(item, sub_field).map_or(0, |s| s.parse().expect("sub-sequence"));
    Some(match text(item, field)? {
        "TRIM_HORIZON" => Position::TrimHorizon,
        "LATEST" => Position::Latest,
        "SHARD_END" => Position::ShardEnd,
        "AT_TIMESTAMP" => Position::AtTimestamp(AT),
        digits => Position::sequence_with_sub(digits, sub).expect("sequence"),
    })
}

async fn create_kcl_table(admin: &DynamoStore, table: &str) {
    admin
        .client()
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("leaseKey")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("definition"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("leaseKey")
                .key_type(KeyType::Hash)
                .build()
                .expect("key schema"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("CreateTable as the KCL does");
}

async fn raw(store: &DynamoStore, lease_key: &str) -> Item {
    store
        .client()
        .get_item()
        .table_name(store.table())
        .key("leaseKey", AttributeValue::S(lease_key.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem")
        .item
        .expect("item exists")
}

/// Writes the fixture items into a new KCL-made table and opens it with `layout`.
async fn adopt(
    layout: KeyLayout,
    groups: &[&str],
) -> Option<(DynamoStore, Arc<ManualClock>, Vec<Fixture>)> {
    let how = "start a moto server (tests/moto_serial.py PORT) and set CHECKPOINT_DYNAMO_ENDPOINT";
    let Ok(endpoint) = std::env::var("CHECKPOINT_DYNAMO_ENDPOINT") else {
        backend_unavailable("dynamodb", how, &"CHECKPOINT_DYNAMO_ENDPOINT is not set");
        return None;
    };
    let table = format!("kcl-{}", random_app("t"));
    let admin = match DynamoStore::open(
        DynamoConfig::new(format!("{table}-admin"))
            .expect("valid")
            .with_endpoint(&endpoint),
        random_app("admin"),
    )
    .await
    {
        Ok(store) => store,
        Err(e) => {
            backend_unavailable("dynamodb", how, &e);
            return None;
        }
    };
    create_kcl_table(&admin, &table).await;
    let fixtures = fixtures(groups);
    for f in &fixtures {
        admin
            .client()
            .put_item()
            .table_name(&table)
            .set_item(Some(f.item.clone()))
            .send()
            .await
            .expect("PutItem as the KCL does");
    }
    let clock = Arc::new(ManualClock::default());
    let mut config = DynamoConfig::new(&table)
        .expect("valid")
        .with_endpoint(&endpoint)
        .with_kcl_at_timestamp(AT)
        .with_clock(clock.clone());
    config = match layout {
        KeyLayout::KclSingleStream { stream } => config.with_kcl_single_stream(stream),
        KeyLayout::KclMultiStream { identifier, .. } => config
            .with_kcl_multi_stream(&identifier)
            .expect("valid identifier"),
        other => panic!("not a KCL layout: {other:?}"),
    };
    let store = DynamoStore::open(config, random_app("kcl"))
        .await
        .expect("open the KCL table");
    Some((store, clock, fixtures))
}

/// Takes, checkpoints and releases every lease of `fixtures`, checking each step against the
/// item as the KCL wrote it and the item as it is left.
async fn take_checkpoint_release(
    store: &DynamoStore,
    clock: &ManualClock,
    fixtures: &[Fixture],
    key_of: impl Fn(&str) -> Option<LeaseKey>,
) {
    let me = WorkerId::new("adopter").expect("valid");
    let d = LeaseDuration::new(Duration::from_secs(10)).expect("valid");
    let listed_at = clock.now();
    let listed = store.list_leases(None).await.expect("list never fails");
    let mut readable = 0;
    for f in fixtures.iter().filter(|f| !f.other_stream) {
        let pk = text(&f.item, "leaseKey").expect("key");
        let key = key_of(pk).expect("a lease of this layout");
        let owner = text(&f.item, "checkpointOwner").or(text(&f.item, "leaseOwner"));
        if let Some(owner) = owner
            && WorkerId::new(owner).is_err()
        {
            // A KCL owner the core's WorkerId rule still rejects: listed as unreadable (a
            // warning), and a fetch names the attribute.
            let err = store
                .lease_item(&key)
                .await
                .expect_err("owner rejected by core");
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
            println!("{pk}: KCL owner {owner:?} is rejected by WorkerId: {err}");
            assert!(!listed.iter().any(|l| l.key == key), "{pk} left out");
            continue;
        }
        readable += 1;
        let lease = store
            .fetch_checkpoint(&key)
            .await
            .expect("fetch")
            .expect("exists");
        assert!(
            listed.contains(&lease) || listed.iter().any(|l| l.key == key),
            "{pk} listed"
        );
        assert_eq!(
            lease.checkpoint,
            kcl_position(&f.item, "checkpoint", "checkpointSubSequenceNumber"),
            "{pk}"
        );
        assert_eq!(
            lease.pending_checkpoint,
            kcl_position(
                &f.item,
                "pendingCheckpoint",
                "pendingCheckpointSubSequenceNumber"
            ),
            "{pk}"
        );
        assert_eq!(lease.owner.as_ref().map(|o| o.as_str()), owner, "{pk}");
        // Taken by the KCL's rule: a held lease only once seen unchanged for the duration.
        let taken = match store.get_lease(&key, &me, d).await {
            Ok(taken) => {
                // Free, or held but unchanged since the listing a whole duration ago.
                assert!(
                    owner.is_none() || clock.now() >= listed_at + Duration::from_secs(10),
                    "{pk}: a held lease was taken before it was seen unchanged for the duration"
                );
                taken
            }
            Err(Error::LeaseHeld {
                holder, remaining, ..
            }) => {
                assert_eq!(Some(holder.as_str()), owner, "{pk}");
                assert_eq!(remaining, Duration::from_secs(10), "{pk}");
                clock.advance(Duration::from_secs(10));
                store
                    .get_lease(&key, &me, d)
                    .await
                    .expect("taken after the duration")
            }
            Err(e) => panic!("{pk}: {e}"),
        };
        assert_eq!(
            taken.checkpoint, lease.checkpoint,
            "{pk}: the KCL position is kept"
        );
        // A sub-sequence checkpoint resumes exactly there: one sub-record back is a
        // regression, the next one is progress.
        if let Some(Position::Sequence {
            sequence,
            sub_sequence,
        }) = &lease.checkpoint
            && *sub_sequence > 0
        {
            let back =
                Position::sequence_with_sub(sequence.as_str(), sub_sequence - 1).expect("valid");
            assert_eq!(
                store
                    .checkpoint_sequence(&key, &me, taken.token, &back)
                    .await
                    .map_err(|e| e.kind())
                    .err(),
                Some(ErrorKind::CheckpointRegression),
                "{pk}"
            );
        }
        let at_timestamp = lease.checkpoint == Some(Position::AtTimestamp(AT));
        if !at_timestamp {
            let next = match lease.checkpoint {
                Some(Position::ShardEnd) => Position::ShardEnd,
                _ => Position::sequence_with_sub(AHEAD, 1).expect("valid"),
            };
            store
                .checkpoint_sequence(&key, &me, taken.token, &next)
                .await
                .expect("checkpoint");
        }
        store
            .remove_lease_owner(&key, &me, taken.token)
            .await
            .expect("release");
        let after = raw(store, pk).await;
        assert_eq!(after.get("leaseOwner"), None, "{pk}: released");
        assert_eq!(after.get("checkpointOwner"), None, "{pk}");
        for kept in KCL_KEPT {
            assert_eq!(
                after.get(kept),
                f.item.get(kept),
                "{pk}: {kept} kept as the KCL wrote it"
            );
        }
        let counter = |i: &Item| text(i, "leaseCounter").and_then(|c| c.parse::<u64>().ok());
        assert!(
            counter(&after) > counter(&f.item),
            "{pk}: leaseCounter moved on"
        );
        assert!(matches!(
            after.get("ownerSwitchesSinceCheckpoint"),
            Some(AttributeValue::N(_))
        ));
        if at_timestamp {
            assert_eq!(
                text(&after, "checkpoint"),
                Some("AT_TIMESTAMP"),
                "{pk}: the sentinel"
            );
        } else {
            assert_eq!(
                text(&after, "checkpoint"),
                Some(if lease.checkpoint == Some(Position::ShardEnd) {
                    "SHARD_END"
                } else {
                    AHEAD
                }),
                "{pk}"
            );
            let sub = if lease.checkpoint == Some(Position::ShardEnd) {
                "0"
            } else {
                "1"
            };
            assert_eq!(
                text(&after, "checkpointSubSequenceNumber"),
                Some(sub),
                "{pk}"
            );
            for pending in [
                "pendingCheckpoint",
                "pendingCheckpointSubSequenceNumber",
                "pendingCheckpointState",
            ] {
                assert_eq!(
                    after.get(pending),
                    None,
                    "{pk}: {pending} cleared with the checkpoint"
                );
            }
        }
    }
    assert_eq!(listed.len(), readable, "{listed:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcl_single_stream_items_are_adopted() {
    let stream = StreamName::new("orders").expect("valid");
    let layout = KeyLayout::KclSingleStream {
        stream: stream.clone(),
    };
    let Some((store, clock, fixtures)) =
        adopt(layout, &["kcl1_single_stream", "kcl2_single_stream"]).await
    else {
        return;
    };
    take_checkpoint_release(&store, &clock, &fixtures, |pk| {
        LeaseKey::parse(stream.as_str(), pk).ok()
    })
    .await;
    // The table now belongs to this app: another app opening it is refused, naming both.
    let other = random_app("intruder");
    let config = DynamoConfig::new(store.table())
        .expect("valid")
        .with_endpoint(std::env::var("CHECKPOINT_DYNAMO_ENDPOINT").expect("set"))
        .with_kcl_single_stream(stream);
    match DynamoStore::open(config.clone(), other.clone()).await {
        Err(Error::SchemaMismatch { detail, .. }) => {
            assert!(detail.contains(store.app().as_str()), "{detail}");
            assert!(detail.contains(other.as_str()), "{detail}");
        }
        other => panic!("expected SchemaMismatch, got {other:?}"),
    }
    DynamoStore::open(config, store.app().clone())
        .await
        .expect("the adopting app opens it again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcl_multi_stream_items_are_adopted() {
    let identifier = "123456789012:orders:1700000000";
    let layout = KeyLayout::kcl_multi_stream(identifier).expect("valid");
    let Some((store, clock, fixtures)) =
        adopt(layout, &["kcl2_multi_stream", "kcl3_multi_stream"]).await
    else {
        return;
    };
    take_checkpoint_release(&store, &clock, &fixtures, |pk| {
        let shard = pk.strip_prefix(identifier)?.strip_prefix(':')?;
        LeaseKey::parse("orders", shard).ok()
    })
    .await;
    // The other stream's lease is untouched.
    let other = fixtures.iter().find(|f| f.other_stream).expect("fixture");
    let pk = text(&other.item, "leaseKey").expect("key");
    assert_eq!(raw(&store, pk).await, other.item);
    // A lease this handle creates carries the KCL's multi-stream attributes.
    let key = LeaseKey::parse("orders", "shardId-000000000010").expect("valid");
    assert!(
        store
            .create_lease_if_absent(&key, &[], None)
            .await
            .expect("create")
    );
    let made = raw(&store, &format!("{identifier}:shardId-000000000010")).await;
    assert_eq!(text(&made, "streamName"), Some(identifier));
    assert_eq!(text(&made, "shardId"), Some("shardId-000000000010"));
}

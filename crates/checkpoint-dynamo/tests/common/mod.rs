//! Helpers shared by the test files: the emulator's endpoint, a fresh table a test, opening a
//! store, attribute values, and raw items written and read past the store. Every file runs
//! under `checkpoint_test_support::server_tests!`, which leaves the server tests ignored when
//! `CHECKPOINT_DYNAMO_ENDPOINT` is unset or nothing listens there.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use checkpoint_core::conformance::random_app;
use checkpoint_core::{LeaseDuration, LeaseKey, WorkerId};
use checkpoint_dynamo::{DynamoConfig, DynamoStore};

/// The endpoint. The harness runs the server tests only when it is set and listening (see
/// `checkpoint_test_support`), so `None` is never returned to them.
pub(crate) fn endpoint() -> Option<String> {
    Some(
        std::env::var("CHECKPOINT_DYNAMO_ENDPOINT")
            .expect("the harness runs server tests only with CHECKPOINT_DYNAMO_ENDPOINT set"),
    )
}

/// A config for a fresh table of this test.
pub(crate) fn config(endpoint: &str, prefix: &str) -> DynamoConfig {
    DynamoConfig::new(format!("{prefix}-{}", random_app("t")))
        .expect("valid table name")
        .with_endpoint(endpoint)
}

/// Opens a store. The harness found the server listening, so any error fails the test.
pub(crate) async fn open(config: DynamoConfig, app: &str) -> Option<DynamoStore> {
    match DynamoStore::open(config, random_app(app)).await {
        Ok(store) => Some(store),
        Err(e) => panic!("opening the store failed although the server listens: {e:?}"),
    }
}

pub(crate) fn key(stream: &str, shard: &str) -> LeaseKey {
    LeaseKey::parse(stream, shard).expect("valid key")
}

pub(crate) fn worker(name: &str) -> WorkerId {
    WorkerId::new(name).expect("valid worker")
}

pub(crate) fn secs(s: u64) -> LeaseDuration {
    LeaseDuration::new(Duration::from_secs(s)).expect("valid duration")
}

pub(crate) fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

pub(crate) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn ss(v: &[&str]) -> AttributeValue {
    AttributeValue::Ss(v.iter().map(|x| (*x).to_owned()).collect())
}

pub(crate) async fn put(store: &DynamoStore, item: Vec<(&str, AttributeValue)>) {
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

pub(crate) async fn raw(store: &DynamoStore, lease_key: &str) -> HashMap<String, AttributeValue> {
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

pub(crate) async fn create_table(
    store_like: &DynamoStore,
    table: &str,
    key: &str,
    ty: ScalarAttributeType,
) {
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

//! DynamoDB (in practice the moto emulator at `CHECKPOINT_DYNAMO_ENDPOINT`): the store on a
//! table of its own, and the raw baseline on the store's own SDK client (the same HTTP client,
//! timeouts and retry settings): one `UpdateItem` with a condition per write, one consistent
//! `GetItem` per fetch. Figures are bound by the emulator, not by DynamoDB.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use checkpoint_core::LeaseManager;
use checkpoint_core::conformance::random_app;
use checkpoint_dynamo::{DynamoConfig, DynamoStore};

use crate::measure::{BoxError, Budget, Stats};
use crate::{Backend, Held, Op, Raw, Reply, Seqs, Settings, duration};

pub(crate) async fn open(settings: &Settings) -> Result<Vec<Backend>, String> {
    let endpoint = std::env::var("CHECKPOINT_DYNAMO_ENDPOINT")
        .map_err(|_| "CHECKPOINT_DYNAMO_ENDPOINT is not set (a moto server URL)".to_owned())?;
    let table = format!("bench-{}", random_app("t"));
    let config = DynamoConfig::new(&table)
        .map_err(|e| e.to_string())?
        .with_endpoint(&endpoint);
    let store = DynamoStore::open(config, random_app("bench"))
        .await
        .map_err(|e| format!("unreachable at {endpoint} ({e})"))?;
    let raw = DynamoRaw {
        client: store.client().clone(),
        table: table.clone(),
        app: store.app().to_string(),
    };
    let client = store.client().clone();
    let counter = store.clone();
    // The library renews one request per lease (16 at a time); 10,000 leases on the emulator
    // take minutes, so the full run measures 1,000.
    let renew_sizes = if settings.quick {
        settings.renew_sizes()
    } else {
        vec![1_000]
    };
    Ok(vec![Backend {
        name: "dynamo (moto)".to_owned(),
        store: Arc::new(store),
        raw: Some(Arc::new(raw)),
        ops: Op::ALL.to_vec(),
        renew_sizes,
        requests: Some(Arc::new(move || counter.requests_sent())),
        url: Some(format!(
            "dynamodb://{table}?region=us-east-1&endpoint={}",
            endpoint.replace(':', "%3A").replace('/', "%2F")
        )),
        consumer: true,
        cleanup: Some(Box::new(move || {
            Box::pin(async move {
                let _ = client.delete_table().table_name(table).send().await;
            })
        })),
    }])
}

#[derive(Clone)]
struct DynamoRaw {
    client: Client,
    table: String,
    app: String,
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

impl crate::OneRequest for DynamoRaw {
    /// One raw request: for [`Reply::Record`] the write asks for `ALL_NEW` (the read gets the
    /// whole item); for [`Reply::Bare`] it returns nothing (the read projects `checkpoint`).
    async fn op(&self, op: Op, reply: Reply, h: &Held, seq: u64) -> Result<(), BoxError> {
        let pk = format!("{}:{}:{}", self.app, h.key.stream, h.key.shard);
        if op == Op::Fetch {
            let projection = match reply {
                Reply::Record => None,
                Reply::Bare => Some("checkpoint".to_owned()),
            };
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("leaseKey", s(&pk))
                .consistent_read(true)
                .set_projection_expression(projection)
                .send()
                .await?;
            return match out.item.as_ref().and_then(|i| i.get("checkpoint")) {
                Some(_) => Ok(()),
                None => Err("raw fetch found no checkpoint".into()),
            };
        }
        let now = now_ms();
        let deadline = now + u128::from(duration().as_millis());
        let mut values = HashMap::from([
            (":w".to_owned(), s(h.worker.as_str())),
            (":one".to_owned(), n(1)),
        ]);
        let (update, condition) = match op {
            Op::GetLease => {
                values.insert(":d".into(), n(deadline));
                values.insert(":now".into(), n(now));
                (
                    "SET leaseOwner = :w, leaseDeadlineMillis = :d ADD leaseCounter :one",
                    "attribute_not_exists(leaseOwner) OR leaseOwner = :w OR leaseDeadlineMillis < :now",
                )
            }
            Op::Renew => {
                values.insert(":d".into(), n(deadline));
                values.insert(":t".into(), n(h.token.0));
                (
                    "SET leaseDeadlineMillis = :d ADD leaseCounter :one",
                    "leaseOwner = :w AND fencingToken = :t",
                )
            }
            Op::Checkpoint => {
                values.insert(":c".into(), s(&seq.to_string()));
                values.insert(":zero".into(), n(0));
                values.insert(":t".into(), n(h.token.0));
                (
                    "SET checkpoint = :c, checkpointSubSequenceNumber = :zero ADD leaseCounter :one",
                    "leaseOwner = :w AND fencingToken = :t",
                )
            }
            Op::Fetch => unreachable!("handled above"),
        };
        self.client
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", s(&pk))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .return_values(match reply {
                Reply::Record => ReturnValue::AllNew,
                Reply::Bare => ReturnValue::None,
            })
            .send()
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Raw for DynamoRaw {
    async fn checkpoint(&self, _t: usize, h: &Held, seq: u64) -> Result<(), BoxError> {
        crate::OneRequest::op(self, Op::Checkpoint, Reply::Record, h, seq).await
    }

    async fn measure(
        &self,
        op: Op,
        reply: Reply,
        leases: Arc<Vec<Held>>,
        seqs: Arc<Seqs>,
        budget: Budget,
    ) -> Result<Stats, BoxError> {
        crate::measure_each(self, op, reply, leases, seqs, budget).await
    }

    /// DynamoDB has no batched conditional write that reports each item on its own
    /// (`TransactWriteItems` fails as a whole when one condition fails).
    async fn renew_batch(&self, _leases: Arc<Vec<Held>>) -> Result<bool, BoxError> {
        Ok(false)
    }

    async fn renew_each(&self, leases: Arc<Vec<Held>>, concurrency: usize) -> Result<(), BoxError> {
        crate::renew_each_with(self, leases, concurrency).await
    }
}

//! DynamoDB's hooks: raw attributes with `UpdateItem`, a table of another key schema, a
//! child process, and a lossy proxy that drops the HTTP reply to the next request.
//! DynamoDB has no transaction a caller's own writes can share with a checkpoint through this
//! store: not covered.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use checkpoint_core::conformance::{BackendHooks, Hooked, LossyStore, RawField, random_app};
use checkpoint_core::{AppName, Error, FencingToken, LeaseKey, Position, Result, Store, WorkerId};
use checkpoint_dynamo::aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use checkpoint_dynamo::{DynamoConfig, DynamoStore};
use checkpoint_test_support::{Backend, DropRule, LossyProxy, Protocol};

use super::ProxyLink;

/// Makes the run's store config from an endpoint and a table name.
pub type ConfigFn = fn(&str, &str) -> Result<DynamoConfig>;

/// Hooks over the emulator or service at `endpoint`, on the run's table.
pub struct DynamoHooks {
    endpoint: String,
    table: String,
    config: ConfigFn,
    admin: DynamoStore,
    child: Option<PathBuf>,
}

impl DynamoHooks {
    /// Hooks for `table` at `endpoint`; `config` makes the run's store config; `child` is the
    /// `checkpoint-loop` binary for the kill -9 scenario.
    pub async fn open(
        endpoint: &str,
        table: &str,
        config: ConfigFn,
        child: Option<PathBuf>,
    ) -> Result<Self> {
        let admin = DynamoStore::open(config(endpoint, table)?, random_app("hooks")).await?;
        Ok(Self {
            endpoint: endpoint.to_owned(),
            table: table.to_owned(),
            config,
            admin,
            child,
        })
    }
}

fn failed(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::backend("dynamodb", false, e)
}

#[async_trait]
impl BackendHooks for DynamoHooks {
    /// Edits the attribute as every writer of this layout must, bumping `leaseCounter` (the
    /// record's version): a handle that cached the record notices the edit only through it.
    /// An edit that leaves `leaseCounter` alone is not noticed by such a handle, whose next
    /// versioned write then overwrites it (a limit of the layout, stated in TESTING.md).
    async fn write_raw_field(
        &self,
        app: &AppName,
        key: &LeaseKey,
        field: RawField,
        raw: &str,
    ) -> Result<Hooked<&'static str>> {
        let name = match field {
            RawField::Checkpoint => "checkpoint",
            RawField::Owner => "leaseOwner",
        };
        self.admin
            .client()
            .update_item()
            .table_name(self.admin.table())
            .key(
                "leaseKey",
                AttributeValue::S(format!("{app}:{}:{}", key.stream, key.shard)),
            )
            .update_expression("SET #f = :v, leaseCounter = leaseCounter + :one")
            .condition_expression("attribute_exists(leaseKey)")
            .expression_attribute_names("#f", name)
            .expression_attribute_values(":v", AttributeValue::S(raw.to_owned()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .send()
            .await
            .map_err(failed)?;
        Ok(Hooked::Done(name))
    }

    async fn open_on_incompatible_layout(&self) -> Result<Hooked<Result<Arc<dyn Store>>>> {
        let table = format!("layout-{}", random_app("t"));
        self.admin
            .client()
            .create_table()
            .table_name(&table)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("id")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(failed)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("id")
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(failed)?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(failed)?;
        let opened = DynamoStore::open((self.config)(&self.endpoint, &table)?, random_app("l"))
            .await
            .map(|s| Arc::new(s) as Arc<dyn Store>);
        self.admin
            .client()
            .delete_table()
            .table_name(&table)
            .send()
            .await
            .map_err(failed)?;
        Ok(Hooked::Done(opened))
    }

    async fn checkpoint_in_transaction(
        &self,
        _app: &AppName,
        _key: &LeaseKey,
        _worker: &WorkerId,
        _token: FencingToken,
        _position: &Position,
        _commit: bool,
    ) -> Result<Hooked<Result<checkpoint_core::Lease>>> {
        Ok(Hooked::Unsupported(
            "DynamoDB has no transaction a caller's own writes can share with a checkpoint".into(),
        ))
    }

    async fn checkpoint_until_killed(
        &self,
        app: &AppName,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
    ) -> Result<Hooked<Vec<Position>>> {
        let Some(exe) = &self.child else {
            return Ok(Hooked::Unsupported("no child binary given".into()));
        };
        let location = format!("{}|{}", self.endpoint, self.table);
        super::checkpoint_until_killed(exe, "dynamo", &location, app, key, worker, token).await
    }

    async fn open_lossy(&self, app: &AppName) -> Result<Hooked<LossyStore>> {
        let upstream = checkpoint_test_support::server_address(Backend::Dynamo, &self.endpoint)
            .map_err(|e| Error::invalid("endpoint", e))?;
        let Some(upstream) = upstream else {
            return Ok(Hooked::Unsupported("no TCP endpoint to proxy".into()));
        };
        if self.endpoint.starts_with("https") {
            return Ok(Hooked::Unsupported(
                "TLS: the proxy cannot read the link".into(),
            ));
        }
        let proxy = LossyProxy::start(upstream, Protocol::Stream).await;
        let endpoint = checkpoint_test_support::replace_address(
            &self.endpoint,
            &format!("127.0.0.1:{}", proxy.port()),
        );
        let store = DynamoStore::open((self.config)(&endpoint, &self.table)?, app.clone()).await?;
        Ok(Hooked::Done(LossyStore {
            store: Arc::new(store),
            link: Arc::new(ProxyLink {
                proxy,
                rule: DropRule::NextRequest,
            }),
        }))
    }
}

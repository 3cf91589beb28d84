//! Client and table setup: building the SDK client (from a [`DynamoConfig`], an existing
//! [`Client`] or an [`aws_config::SdkConfig`]), counting its requests, and creating or checking
//! the table.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{ConfigBag, Credentials, Intercept, Region, RuntimeComponents};
use aws_sdk_dynamodb::error::{BoxError, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ProvisionedThroughput,
    ScalarAttributeType, TableDescription, TableStatus,
};
use checkpoint_core::{Backoff, Clock, Error, Result};

use crate::config::{Billing, DynamoConfig};
use crate::error::{STORE, map_error};
use crate::observe::Observations;
use crate::protocol::Gate;
use crate::schema::{KeyLayout, LEASE_KEY};

/// Counts every request attempt the DynamoDB client sends.
#[derive(Debug)]
struct CountRequests(Arc<AtomicU64>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// What every app's handle on one client shares.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) table: String,
    pub(crate) layout: KeyLayout,
    /// The instant (ms) the KCL's plain `AT_TIMESTAMP` checkpoint stands for.
    pub(crate) kcl_at_timestamp: Option<u64>,
    pub(crate) billing: Billing,
    pub(crate) backoff: Backoff,
    pub(crate) renew_concurrency: usize,
    pub(crate) table_active_timeout: Duration,
    /// The `Limit` of a listing's `Scan` pages ([`crate::DynamoConfig::with_list_page_size`]).
    pub(crate) list_page_size: Option<i32>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) requests: Arc<AtomicU64>,
    /// The `get_lease` gates and the observations, shared by every handle on the same table
    /// (see [`Tracking`]).
    pub(crate) tracking: Arc<Tracking>,
}

/// What handles on one table share in a process: the `get_lease` gates (see
/// `protocol::Probe`) and the observations (`observe.rs`), both per `leaseKey`.
///
/// Handles share them only when they provably name the same table on the same clock: the same
/// endpoint, region, static or emulator credentials (so the same account) and table name, and
/// the process's default clock. Anything else (the default credentials chain, a client or SDK
/// configuration brought by the caller, an injected clock) gets its own, because one table
/// name in two accounts, regions or endpoints is two tables, and observations timed on two
/// clocks cannot be compared.
#[derive(Default)]
pub(crate) struct Tracking {
    pub(crate) gates: Mutex<HashMap<String, Gate>>,
    pub(crate) observations: Observations,
}

/// The tracking of `scope` (shared in the process), or a private one.
fn tracking(scope: Option<String>) -> Arc<Tracking> {
    static SCOPES: LazyLock<Mutex<HashMap<String, Arc<Tracking>>>> = LazyLock::new(Mutex::default);
    match scope {
        Some(scope) => SCOPES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(scope)
            .or_default()
            .clone(),
        None => Arc::default(),
    }
}

/// The identity of the table `config` names through `sdk`, when it is certain (see
/// [`Tracking`]): endpoint, region, the access key (static or emulator credentials) and
/// table; `None` otherwise.
pub(crate) fn scope(config: &DynamoConfig, sdk: &aws_config::SdkConfig) -> Option<String> {
    if !config.default_clock {
        return None;
    }
    let key = match &config.credentials {
        Some(c) => c.access_key_id.clone(),
        None if config.endpoint.is_some() && !environment_has_credentials() => {
            "emulator".to_owned()
        }
        None => return None,
    };
    Some(format!(
        "{}\n{}\n{key}\n{}",
        config.endpoint.as_deref().unwrap_or("aws"),
        sdk.region().map(|r| r.as_ref()).unwrap_or_default(),
        config.table
    ))
}

/// Whether the environment names credentials of its own (so a custom endpoint should use the
/// default chain rather than the dummy credentials).
fn environment_has_credentials() -> bool {
    const VARS: [&str; 5] = [
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ];
    VARS.iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

fn environment_has_region() -> bool {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// The rustls (ring) HTTPS client.
fn https() -> aws_sdk_dynamodb::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// The SDK configuration `config` describes: region and credentials from it, else the AWS
/// default chains; with a custom endpoint and nothing found, `us-east-1` and dummy credentials.
pub(crate) async fn sdk_config(config: &DynamoConfig) -> aws_config::SdkConfig {
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(https());
    let emulator = config.endpoint.is_some();
    match &config.region {
        Some(region) => loader = loader.region(Region::new(region.clone())),
        None if emulator && !environment_has_region() => {
            loader = loader.region(Region::new("us-east-1"));
        }
        None => {}
    }
    let credentials = match &config.credentials {
        Some(c) => Some(Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            c.session_token.clone(),
            None,
            "checkpoint-dynamo-static",
        )),
        None if emulator && !environment_has_credentials() => Some(Credentials::new(
            "emulator",
            "emulator",
            None,
            None,
            "checkpoint-dynamo-emulator",
        )),
        None => None,
    };
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    loader.load().await
}

/// The handle state from an SDK client configuration: this crate's retry policy replaces the
/// SDK's (turned off), the per-attempt timeout and the endpoint come from `config`, and a
/// request counter is added.
pub(crate) fn shared(
    builder: aws_sdk_dynamodb::config::Builder,
    config: &DynamoConfig,
    scope: Option<String>,
) -> Shared {
    let requests = Arc::new(AtomicU64::new(0));
    let mut builder = builder
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(config.request_timeout)
                .connect_timeout(config.request_timeout)
                .build(),
        )
        .interceptor(CountRequests(requests.clone()));
    if let Some(endpoint) = &config.endpoint {
        builder = builder.endpoint_url(endpoint.clone());
    }
    Shared {
        client: Client::from_conf(builder.build()),
        table: config.table.clone(),
        layout: config.layout.clone(),
        kcl_at_timestamp: config.kcl_at_timestamp,
        billing: config.billing,
        backoff: config.backoff,
        renew_concurrency: config.renew_concurrency,
        table_active_timeout: config.table_active_timeout,
        list_page_size: config.list_page_size,
        clock: config.clock.clone(),
        requests,
        tracking: tracking(scope),
    }
}

impl Shared {
    async fn describe(&self) -> Result<Option<TableDescription>> {
        let req = self.client.describe_table().table_name(&self.table);
        self.backoff
            .retry(|_| async {
                match req.clone().send().await {
                    Ok(out) => Ok(out.table),
                    Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => {
                        Ok(None)
                    }
                    Err(e) => Err(map_error("DescribeTable", e)),
                }
            })
            .await
    }

    /// Creates the table; `Ok(())` also when someone else is creating it at the same moment.
    async fn create_table(&self) -> Result<()> {
        let build = |e: aws_sdk_dynamodb::error::BuildError| {
            Error::backend_message(STORE, false, format!("CreateTable request: {e}"))
        };
        let mut req = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(LEASE_KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(build)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(LEASE_KEY)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(build)?,
            );
        req = match self.billing {
            Billing::OnDemand => req.billing_mode(BillingMode::PayPerRequest),
            Billing::Provisioned { read, write } => req
                .billing_mode(BillingMode::Provisioned)
                .provisioned_throughput(
                    ProvisionedThroughput::builder()
                        .read_capacity_units(read)
                        .write_capacity_units(write)
                        .build()
                        .map_err(build)?,
                ),
        };
        self.backoff
            .retry(|_| async {
                match req.clone().send().await {
                    Ok(_) => Ok(()),
                    Err(SdkError::ServiceError(e)) if e.err().is_resource_in_use_exception() => {
                        Ok(())
                    }
                    Err(e) => Err(map_error("CreateTable", e)),
                }
            })
            .await
    }

    /// Creates the table when absent and waits, at most the configured time, until it is
    /// `ACTIVE` (see `LeaseManager::init` on the store).
    pub(crate) async fn init_table(&self) -> Result<()> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            match self.describe().await? {
                None => self.create_table().await?,
                Some(desc) => {
                    check_schema(&self.table, &desc)?;
                    match desc.table_status() {
                        Some(TableStatus::Active) | Some(TableStatus::Updating) => return Ok(()),
                        Some(TableStatus::Creating) | None => {}
                        Some(other) => {
                            return Err(Error::backend_message(
                                STORE,
                                false,
                                format!("table {} is {other:?}", self.table),
                            ));
                        }
                    }
                }
            }
            if started.elapsed() + pause > self.table_active_timeout {
                return Err(Error::backend_message(
                    STORE,
                    true,
                    format!(
                        "table {} did not become ACTIVE within {:?}",
                        self.table, self.table_active_timeout
                    ),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

/// Checks that an existing table has the key schema this crate writes.
fn check_schema(table: &str, desc: &TableDescription) -> Result<()> {
    let mismatch = |detail: String| Error::SchemaMismatch {
        store: STORE,
        detail: format!("table {table}: {detail}"),
    };
    let keys: Vec<(&str, &KeyType)> = desc
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name(), k.key_type()))
        .collect();
    if keys != [(LEASE_KEY, &KeyType::Hash)] {
        return Err(mismatch(format!(
            "the key schema is {keys:?}; expected one hash key {LEASE_KEY:?} and no sort key"
        )));
    }
    let key_type = desc
        .attribute_definitions()
        .iter()
        .find(|a| a.attribute_name() == LEASE_KEY)
        .map(|a| a.attribute_type());
    if key_type != Some(&ScalarAttributeType::S) {
        return Err(mismatch(format!(
            "{LEASE_KEY} has type {key_type:?}; expected a string (S)"
        )));
    }
    Ok(())
}

//! [`KinesisSource`]: Amazon Kinesis Data Streams as a [`ShardSource`](crate::ShardSource),
//! through `aws-sdk-kinesis` (`ListShards`, `GetShardIterator`, `GetRecords`), read as the
//! Kinesis Client Library reads it. Behind the `kinesis` feature.

mod config;
mod cursor;
pub mod kpl;
mod pace;
mod read;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{Credentials, Region};
use checkpoint_core::{Error, Result, SequenceNumber, ShardId, StreamName};

pub use config::{InitialPosition, KinesisConfig, KinesisConfigBuilder};
use pace::Pace;

/// One stream of Amazon Kinesis Data Streams (or an emulator such as moto or LocalStack), read
/// the way the KCL's polling retrieval reads it.
///
/// # Reading
/// - [`ShardSource::list_shards`](crate::ShardSource::list_shards) pages through `ListShards`;
///   a shard is closed once Kinesis reports its ending sequence number, and its parents are
///   `ParentShardId` and `AdjacentParentShardId` (a merge).
/// - [`ShardSource::cursor`](crate::ShardSource::cursor) calls nothing: the shard iterator is
///   requested by the first read. An initial position maps to `TRIM_HORIZON`, `LATEST` or
///   `AT_TIMESTAMP`; a checkpoint (`sequence`, `sub_sequence`) to `AT_SEQUENCE_NUMBER` of the
///   sequence, and the user records at or before the checkpoint are skipped, as the KCL does
///   (its `IteratorBuilder` and `ProcessTask`): so a restart from a checkpoint inside a KPL
///   aggregated record resumes at the aggregate's next user record, never delivering a
///   checkpointed one again and never skipping the rest.
/// - [`ShardSource::read`](crate::ShardSource::read) is `GetRecords`. Each Kinesis record that
///   is a KPL aggregate ([`kpl`]) is delivered as its user records, each with the outer
///   sequence number, its index as sub-sequence, and its own partition key and explicit hash
///   key; any other record is delivered as it is, with sub-sequence 0. A read delivers whole
///   aggregates, so it may return more user records than the limit it was given, which counts
///   Kinesis records (as the KCL's `maxRecords` does).
/// - Lag: each batch carries Kinesis' `MillisBehindLatest`
///   ([`ReadBatch::millis_behind_latest`](crate::ReadBatch::millis_behind_latest)), which is
///   also the gauge `consumer_millis_behind_latest{stream, shard}` (milliseconds).
/// - Shard end: at the end of a closed shard Kinesis returns no next iterator, which is the
///   shard-end marker (the processor is shut down with `SHARD_END`). Emulators that keep
///   returning an iterator (moto) are handled too: an empty read of a shard listed as closed, at
///   or past its ending sequence number, is the end as well.
///
/// # Pacing and faults, without giving up the lease
/// - Every shard is read at most once per
///   [idle time between reads](KinesisConfigBuilder::with_idle_time_between_reads) (default
///   1.5 s), empty or full: Kinesis serves 5 `GetRecords` per second per shard to all
///   applications together. The SDK's own retries are off for `GetRecords`, so every attempt is
///   one paced call.
/// - A throttled read (`ProvisionedThroughputExceededException`, `KMSThrottlingException`,
///   `LimitExceededException` from `GetShardIterator`) or a transient failure (timeout,
///   connection, `InternalFailure`, `ServiceUnavailable`, HTTP 5xx) is tried again inside the
///   same read after a growing wait ([`KinesisConfigBuilder::with_max_throttle_delay`]), for as
///   long as the worker keeps the lease: the worker sees no error and keeps renewing. Each is
///   counted in `consumer_read_retries_total{stream, shard, reason}`.
/// - An expired iterator (`ExpiredIteratorException`: Kinesis expires iterators after 5
///   minutes, e.g. when a batch took that long to process) is replaced within the same read by
///   one after the last record this source delivered (`AFTER_SEQUENCE_NUMBER` of its
///   sequence), or at the starting checkpoint when nothing was delivered yet — not at the last
///   checkpoint, which may be older — and counted in `consumer_iterators_expired_total`.
/// - A missing stream or shard is [`Error::NotFound`]; any other error is a non-retryable
///   [`Error::Backend`], after which the worker releases the lease.
///
/// # Client
/// [`KinesisSource::new`] takes any [`Client`] (interceptors, custom HTTP client, test doubles);
/// [`KinesisSource::from_sdk_config`] one [`aws_config::SdkConfig`] (profiles, assumed roles,
/// regions as the AWS default chains resolve them); [`KinesisSource::connect`] loads the
/// default chains itself. Both SDK crates are re-exported at the crate root.
#[derive(Clone)]
pub struct KinesisSource {
    client: Client,
    stream: StreamName,
    config: KinesisConfig,
    pace: Arc<Pace>,
    /// Ending sequence numbers of the shards the last listings reported closed.
    closed: Arc<Mutex<HashMap<ShardId, SequenceNumber>>>,
}

impl fmt::Debug for KinesisSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KinesisSource")
            .field("stream", &self.stream)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KinesisSource {
    /// A source reading `stream` through a client the caller configured, with
    /// [`KinesisConfig::default`] (the KCL's defaults).
    pub fn new(client: Client, stream: StreamName) -> Self {
        describe_metrics();
        let config = KinesisConfig::default();
        Self {
            client,
            stream,
            pace: Arc::new(Pace::new(
                config.idle_time_between_reads,
                config.max_throttle_delay,
            )),
            config,
            closed: Arc::default(),
        }
    }

    /// A source reading `stream` with a client made from shared AWS settings, as
    /// `aws_config::defaults(..).profile_name(..).load()` returns them (assumed roles and
    /// profiles included). When the settings carry no HTTP client, the rustls one this crate
    /// is built with is used.
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, stream: StreamName) -> Self {
        let mut builder = aws_sdk_kinesis::config::Builder::from(sdk);
        if sdk.http_client().is_none() {
            builder = builder.http_client(rustls_http_client());
        }
        Self::new(Client::from_conf(builder.build()), stream)
    }

    /// A source reading `stream` with a client built from the AWS default chains (environment,
    /// profile, instance role) over rustls, with a 10 s attempt timeout and a 5 s connect
    /// timeout. With an `endpoint` (an emulator) and no region or credentials in the
    /// environment, the region is `us-east-1` and the credentials a dummy static pair, which
    /// emulators accept. A malformed `endpoint` is [`Error::InvalidInput`] naming `endpoint`.
    pub async fn connect(stream: StreamName, endpoint: Option<&str>) -> Result<Self> {
        if let Some(endpoint) = endpoint {
            url::Url::parse(endpoint)
                .map_err(|e| Error::invalid("endpoint", format!("{endpoint:?}: {e}")))?;
        }
        let http = rustls_http_client();
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http.clone());
        if endpoint.is_some() {
            if !env_set(&["AWS_REGION", "AWS_DEFAULT_REGION"]) {
                loader = loader.region(Region::new("us-east-1"));
            }
            if !env_set(&["AWS_ACCESS_KEY_ID", "AWS_PROFILE"]) {
                loader = loader.credentials_provider(Credentials::new(
                    "emulator",
                    "emulator",
                    None,
                    None,
                    "consumer-kinesis-emulator",
                ));
            }
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_kinesis::config::Builder::from(&shared)
            .http_client(http)
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .connect_timeout(Duration::from_secs(5))
                    .build(),
            );
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(Self::new(Client::from_conf(builder.build()), stream))
    }

    /// The same source reading with `config` (its initial position, records per read, pace).
    pub fn with_config(mut self, config: KinesisConfig) -> Self {
        self.pace = Arc::new(Pace::new(
            config.idle_time_between_reads,
            config.max_throttle_delay,
        ));
        self.config = config;
        self
    }

    /// How this source reads.
    pub fn config(&self) -> &KinesisConfig {
        &self.config
    }

    /// The client, for producing records or administering the stream.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// The HTTP client over rustls (ring) the `kinesis` feature is built with.
fn rustls_http_client() -> aws_sdk_kinesis::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

fn env_set(vars: &[&str]) -> bool {
    vars.iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Names of the metrics this source records, described once per process.
pub(crate) const LAG_GAUGE: &str = "consumer_millis_behind_latest";
pub(crate) const RETRIES_COUNTER: &str = "consumer_read_retries_total";
pub(crate) const EXPIRED_COUNTER: &str = "consumer_iterators_expired_total";

fn describe_metrics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        metrics::describe_gauge!(
            LAG_GAUGE,
            metrics::Unit::Milliseconds,
            "How far the last read of a Kinesis shard was behind its newest record (MillisBehindLatest), by stream and shard."
        );
        metrics::describe_counter!(
            RETRIES_COUNTER,
            metrics::Unit::Count,
            "Kinesis reads tried again after throttling or a transient failure, by stream, shard and reason."
        );
        metrics::describe_counter!(
            EXPIRED_COUNTER,
            metrics::Unit::Count,
            "Kinesis shard iterators that expired and were replaced, by stream and shard."
        );
    });
}

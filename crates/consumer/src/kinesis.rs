//! [`KinesisSource`]: Amazon Kinesis Data Streams as a [`ShardSource`], through
//! `aws-sdk-kinesis` (`ListShards`, `GetShardIterator`, `GetRecords`). Behind the `kinesis`
//! feature.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{Credentials, Region};
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use checkpoint_core::{Error, Position, Result, SequenceNumber, ShardId, StreamName};

use crate::source::{Cursor, ReadBatch, Record, ShardInfo, ShardSource};

const SOURCE: &str = "kinesis";

/// The most records one `GetRecords` call may return.
const MAX_GET_RECORDS: usize = 10_000;

/// One stream of Amazon Kinesis Data Streams (or an emulator such as moto or LocalStack).
///
/// - [`ShardSource::list_shards`] pages through `ListShards`; a shard is closed once Kinesis
///   reports its ending sequence number, and its parents are `ParentShardId` and
///   `AdjacentParentShardId` (a merge).
/// - [`ShardSource::cursor`] is `GetShardIterator`: `TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`,
///   or `AFTER_SEQUENCE_NUMBER` for a checkpointed sequence. The cursor is the shard iterator,
///   which Kinesis expires after 5 minutes: a processor stalled that long fails its next read
///   (not retryable), the worker releases the lease, and the shard is read again from its last
///   checkpoint.
/// - [`ShardSource::read`] is `GetRecords`; at the end of a closed shard Kinesis returns no next
///   iterator, which is the shard-end marker. Emulators that keep returning an iterator (moto)
///   are handled too: an empty read of a shard listed as closed, at or past its ending
///   sequence number, is the end as well. For that the cursor carries the last sequence number
///   read beside the shard iterator.
///
/// Aggregated (KPL) records are delivered as they are stored, not de-aggregated; every record
/// has sub-sequence 0. Throttling (`ProvisionedThroughputExceededException`,
/// `LimitExceededException`), timeouts and connection failures are retryable errors the worker
/// retries with its backoff; a missing stream is [`Error::NotFound`].
#[derive(Clone)]
pub struct KinesisSource {
    client: Client,
    stream: StreamName,
    /// Ending sequence numbers of the shards the last listings reported closed.
    closed: Arc<Mutex<HashMap<ShardId, SequenceNumber>>>,
}

impl fmt::Debug for KinesisSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KinesisSource")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl KinesisSource {
    /// A source reading `stream` through a client the caller configured.
    pub fn new(client: Client, stream: StreamName) -> Self {
        Self {
            client,
            stream,
            closed: Arc::default(),
        }
    }

    /// A source reading `stream` with a client built from the AWS default chains (environment,
    /// profile, instance role) over rustls. With an `endpoint` (an emulator) and no region or
    /// credentials in the environment, the region is `us-east-1` and the credentials a dummy
    /// static pair, which emulators accept.
    pub async fn connect(stream: StreamName, endpoint: Option<&str>) -> Result<Self> {
        if let Some(endpoint) = endpoint {
            url::Url::parse(endpoint)
                .map_err(|e| Error::invalid("endpoint", format!("{endpoint:?}: {e}")))?;
        }
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
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

    /// The client, for producing records or administering the stream.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn env_set(vars: &[&str]) -> bool {
    vars.iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Maps an SDK error: throttling, timeouts and transport failures are retryable; a missing
/// stream or shard is [`Error::NotFound`]; everything else is a non-retryable backend error.
fn map_sdk<E, R>(what: &str, id: &str, error: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let retryable = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => match service.err().code() {
            Some("ResourceNotFoundException") => {
                return Error::NotFound {
                    entity: "kinesis stream or shard",
                    id: id.to_owned(),
                };
            }
            Some(
                "ProvisionedThroughputExceededException"
                | "LimitExceededException"
                | "KMSThrottlingException"
                | "InternalFailure"
                | "ServiceUnavailable",
            ) => true,
            _ => false,
        },
        _ => false,
    };
    Error::Backend {
        store: SOURCE,
        retryable,
        message: format!("{what} {id}: {}", DisplayErrorContext(&error)),
        source: Some(Box::new(error)),
    }
}

/// The cursor's text: the last sequence number read (`0` when none yet) and the iterator.
fn encode_cursor(last: &str, iterator: &str) -> Cursor {
    Cursor(format!("{last} {iterator}"))
}

fn decode_cursor(cursor: &Cursor) -> Result<(SequenceNumber, &str)> {
    let bad = || {
        Error::invalid(
            "cursor",
            format!("{cursor:?} was not made by KinesisSource"),
        )
    };
    let (last, iterator) = cursor.0.split_once(' ').ok_or_else(bad)?;
    Ok((SequenceNumber::new(last).map_err(|_| bad())?, iterator))
}

fn shard_id(field: &'static str, text: &str) -> Result<ShardId> {
    ShardId::new(text).map_err(|e| Error::corrupt(text, field, e.to_string()))
}

#[async_trait]
impl ShardSource for KinesisSource {
    fn stream(&self) -> &StreamName {
        &self.stream
    }

    async fn list_shards(&self) -> Result<Vec<ShardInfo>> {
        let stream = self.stream.as_str();
        let mut shards = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            // With a next token, ListShards must not name the stream.
            let request = match &next_token {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(stream),
            };
            let page = request
                .send()
                .await
                .map_err(|e| map_sdk("ListShards", stream, e))?;
            for shard in page.shards() {
                let id = shard_id("shard_id", shard.shard_id())?;
                let ending = shard
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number());
                if let Some(ending) = ending {
                    let ending = SequenceNumber::new(ending).map_err(|e| {
                        Error::corrupt(&id, "ending_sequence_number", e.to_string())
                    })?;
                    self.closed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id.clone(), ending);
                }
                let mut parents = Vec::new();
                for parent in [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                {
                    parents.push(shard_id("parent_shard_id", parent)?);
                }
                shards.push(ShardInfo {
                    id,
                    parents,
                    closed: ending.is_some(),
                });
            }
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => break,
            }
        }
        Ok(shards)
    }

    async fn cursor(&self, shard: &ShardId, start: &Position) -> Result<Cursor> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(self.stream.as_str())
            .shard_id(shard.as_str());
        let last = match start {
            Position::Sequence { sequence, .. } => sequence.as_str(),
            _ => "0",
        }
        .to_owned();
        let request = match start {
            Position::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            Position::AtTimestamp(ms) => {
                let ms = i64::try_from(*ms)
                    .map_err(|_| Error::invalid("position", "timestamp out of range"))?;
                request
                    .shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(DateTime::from_millis(ms))
            }
            Position::Sequence { sequence, .. } => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence.as_str()),
            // Nothing follows SHARD_END: the empty cursor reads as the end of the shard.
            Position::ShardEnd => return Ok(Cursor(String::new())),
        };
        let answer = request
            .send()
            .await
            .map_err(|e| map_sdk("GetShardIterator", shard.as_str(), e))?;
        // No iterator: the shard is closed and there is nothing at or after `start`.
        match answer.shard_iterator().filter(|it| !it.is_empty()) {
            Some(iterator) => Ok(encode_cursor(&last, iterator)),
            None => Ok(Cursor(String::new())),
        }
    }

    async fn read(&self, shard: &ShardId, cursor: &Cursor, limit: usize) -> Result<ReadBatch> {
        if cursor.0.is_empty() {
            return Ok(ReadBatch {
                records: Vec::new(),
                next: None,
            });
        }
        let (mut last, iterator) = decode_cursor(cursor)?;
        let limit = i32::try_from(limit.clamp(1, MAX_GET_RECORDS)).unwrap_or(10_000);
        let answer = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(|e| map_sdk("GetRecords", shard.as_str(), e))?;
        let mut records = Vec::with_capacity(answer.records().len());
        for record in answer.records() {
            let sequence = SequenceNumber::new(record.sequence_number())
                .map_err(|e| Error::corrupt(shard, "sequence_number", e.to_string()))?;
            let arrival_ms = record
                .approximate_arrival_timestamp()
                .and_then(|t| t.to_millis().ok())
                .and_then(|ms| u64::try_from(ms).ok())
                .unwrap_or(0);
            records.push(Record {
                sequence,
                sub_sequence: 0,
                arrival_ms,
                partition_key: record.partition_key().to_owned(),
                data: record.data().as_ref().to_vec(),
            });
        }
        if let Some(record) = records.last() {
            last = record.sequence.clone();
        }
        let past_end = records.is_empty()
            && self
                .closed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(shard)
                .is_some_and(|ending| &last >= ending);
        let next = match answer.next_shard_iterator() {
            Some(it) if !it.is_empty() && !past_end => Some(encode_cursor(last.as_str(), it)),
            _ => None,
        };
        Ok(ReadBatch { records, next })
    }
}

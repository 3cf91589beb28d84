//! The [`ShardSource`] side of [`KinesisSource`]: listing shards, and the paced `GetRecords`
//! loop that de-aggregates, survives throttling and replaces expired iterators.

use std::fmt;

use async_trait::async_trait;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::get_records::{GetRecordsError, GetRecordsOutput};
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use checkpoint_core::{Error, Position, Result, SequenceNumber, ShardId, StreamName};

use super::cursor::{self, Resume};
use super::{EXPIRED_COUNTER, KinesisSource, LAG_GAUGE, RETRIES_COUNTER, kpl};
use crate::source::{Cursor, ReadBatch, Record, ShardInfo, ShardSource};

const SOURCE: &str = "kinesis";

/// Replacing an expired iterator more often than this within one read (each replacement is
/// fresh, so this means something else is wrong) fails the read, as a retryable error.
const MAX_RENEWALS_PER_READ: u32 = 3;

/// What an SDK error means for the read loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// `ExpiredIteratorException`: request a new iterator.
    Expired,
    /// Throttled: wait longer, keep the lease.
    Throttled,
    /// Timeout, connection or server failure: wait, keep the lease.
    Transient,
    /// Anything else: fail the read.
    Fatal,
}

fn fault<E>(error: &SdkError<E, HttpResponse>) -> Fault
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Fault::Transient
        }
        SdkError::ServiceError(service) => match service.err().code() {
            Some("ExpiredIteratorException") => Fault::Expired,
            Some(
                "ProvisionedThroughputExceededException"
                | "KMSThrottlingException"
                | "LimitExceededException",
            ) => Fault::Throttled,
            Some("InternalFailure" | "ServiceUnavailable") => Fault::Transient,
            _ if service.raw().status().is_server_error() => Fault::Transient,
            _ => Fault::Fatal,
        },
        _ => Fault::Fatal,
    }
}

/// Maps an SDK error: a missing stream or shard is [`Error::NotFound`]; throttling, timeouts and
/// transport failures are retryable backend errors; everything else is non-retryable.
fn map_sdk<E>(what: &str, id: &str, error: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(service) = &error
        && service.err().code() == Some("ResourceNotFoundException")
    {
        return Error::NotFound {
            entity: "kinesis stream or shard",
            id: id.to_owned(),
        };
    }
    let retryable = fault(&error) != Fault::Fatal;
    Error::Backend {
        store: SOURCE,
        retryable,
        message: format!("{what} {id}: {}", DisplayErrorContext(&error)),
        source: Some(Box::new(error)),
    }
}

fn shard_id(field: &'static str, text: &str) -> Result<ShardId> {
    ShardId::new(text).map_err(|e| Error::corrupt(text, field, e.to_string()))
}

fn shard_end() -> ReadBatch {
    ReadBatch {
        records: Vec::new(),
        next: None,
        millis_behind_latest: None,
    }
}

impl KinesisSource {
    /// `GetShardIterator` for `resume`; `None` when the shard is closed and holds nothing there.
    async fn iterator(&self, shard: &ShardId, resume: &Resume) -> Result<Option<String>> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(self.stream.as_str())
            .shard_id(shard.as_str());
        let request = match resume {
            Resume::Start(Position::Latest) => {
                request.shard_iterator_type(ShardIteratorType::Latest)
            }
            Resume::Start(Position::AtTimestamp(ms)) => {
                let ms = i64::try_from(*ms)
                    .map_err(|_| Error::invalid("position", "timestamp out of range"))?;
                request
                    .shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(DateTime::from_millis(ms))
            }
            Resume::Start(_) => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Resume::At { sequence, .. } => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(sequence.as_str()),
            Resume::After(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence.as_str()),
        };
        let answer = request
            .send()
            .await
            .map_err(|e| map_sdk("GetShardIterator", shard.as_str(), e))?;
        Ok(answer
            .shard_iterator()
            .filter(|it| !it.is_empty())
            .map(str::to_owned))
    }

    /// One `GetRecords` attempt: the SDK's retries are off, so each is one paced call.
    async fn get_records(
        &self,
        iterator: &str,
        limit: i32,
    ) -> std::result::Result<GetRecordsOutput, SdkError<GetRecordsError, HttpResponse>> {
        self.client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .customize()
            .config_override(
                aws_sdk_kinesis::config::Builder::default().retry_config(RetryConfig::disabled()),
            )
            .send()
            .await
    }

    /// Logs and counts a throttled or transiently failed call, and pushes the shard's next
    /// `GetRecords` out; returns how long until then.
    fn retry_later(
        &self,
        shard: &ShardId,
        reason: &'static str,
        error: &dyn fmt::Display,
    ) -> std::time::Duration {
        let delay = self.pace.failed(shard);
        metrics::counter!(RETRIES_COUNTER, "stream" => self.stream.to_string(), "shard" => shard.to_string(), "reason" => reason)
            .increment(1);
        tracing::warn!(%shard, reason, ?delay, error = %error, "kinesis read retried later; the lease is kept");
        self.config.idle_time_between_reads + delay
    }

    /// Turns one `GetRecords` answer into user records, skipping those `resume` says were
    /// checkpointed; returns them and where reading would resume after them.
    fn deliver(
        &self,
        shard: &ShardId,
        answer: &GetRecordsOutput,
        resume: Resume,
    ) -> Result<(Vec<Record>, Resume)> {
        let mut records = Vec::with_capacity(answer.records().len());
        let mut last = None;
        for raw in answer.records() {
            let sequence = SequenceNumber::new(raw.sequence_number())
                .map_err(|e| Error::corrupt(shard, "sequence_number", e.to_string()))?;
            let arrival_ms = raw
                .approximate_arrival_timestamp()
                .and_then(|t| t.to_millis().ok())
                .and_then(|ms| u64::try_from(ms).ok())
                .unwrap_or(0);
            match kpl::deaggregate(raw.data().as_ref()) {
                Some(users) => {
                    for (sub_sequence, user) in (0u64..).zip(users) {
                        if resume.skips(&sequence, sub_sequence) {
                            continue;
                        }
                        records.push(Record {
                            sequence: sequence.clone(),
                            sub_sequence,
                            arrival_ms,
                            partition_key: user.partition_key,
                            explicit_hash_key: user.explicit_hash_key,
                            data: user.data,
                        });
                    }
                }
                None if resume.skips(&sequence, 0) => {}
                None => records.push(Record {
                    sequence: sequence.clone(),
                    sub_sequence: 0,
                    arrival_ms,
                    partition_key: raw.partition_key().to_owned(),
                    explicit_hash_key: None,
                    data: raw.data().as_ref().to_vec(),
                }),
            }
            last = Some(sequence);
        }
        Ok((records, last.map_or(resume, Resume::After)))
    }
}

#[async_trait]
impl ShardSource for KinesisSource {
    fn stream(&self) -> &StreamName {
        &self.stream
    }

    fn initial_position(&self) -> Position {
        self.config.initial_position.clone()
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

    /// No call: the cursor names where to start, and the first read requests the iterator
    /// (paced, and tried again when throttled).
    async fn cursor(&self, _shard: &ShardId, start: &Position) -> Result<Cursor> {
        let resume = match start {
            Position::TrimHorizon | Position::Latest | Position::AtTimestamp(_) => {
                Resume::Start(start.clone())
            }
            Position::Sequence {
                sequence,
                sub_sequence,
            } => Resume::At {
                sequence: sequence.clone(),
                sub_sequence: *sub_sequence,
            },
            // Nothing follows SHARD_END: the empty cursor reads as the end of the shard.
            Position::ShardEnd => return Ok(Cursor(String::new())),
        };
        Ok(cursor::encode(&resume, None))
    }

    async fn read(&self, shard: &ShardId, cursor: &Cursor, limit: usize) -> Result<ReadBatch> {
        if cursor.0.is_empty() {
            return Ok(shard_end());
        }
        let (resume, iterator) = cursor::decode(cursor)?;
        let mut iterator = iterator.map(str::to_owned);
        let limit = i32::try_from(limit.clamp(1, self.config.max_records)).unwrap_or(10_000);
        let mut renewals = 0;
        let answer = loop {
            let current = match &iterator {
                Some(it) => it.clone(),
                None => match self.iterator(shard, &resume).await {
                    Ok(Some(it)) => {
                        iterator = Some(it.clone());
                        it
                    }
                    // A closed shard with nothing at or after the position: its end.
                    Ok(None) => {
                        self.pace.forget(shard);
                        return Ok(shard_end());
                    }
                    Err(e) if e.is_retryable() => {
                        let wait = self.retry_later(shard, "get_shard_iterator", &e);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            // Only `GetRecords` takes a slot: its sends are the idle time apart, whatever
            // `GetShardIterator` calls came between.
            self.pace.turn(shard).await;
            match self.get_records(&current, limit).await {
                Ok(answer) => {
                    self.pace.succeeded(shard);
                    break answer;
                }
                Err(e) => match fault(&e) {
                    Fault::Expired => {
                        renewals += 1;
                        metrics::counter!(EXPIRED_COUNTER, "stream" => self.stream.to_string(), "shard" => shard.to_string())
                            .increment(1);
                        if renewals > MAX_RENEWALS_PER_READ {
                            return Err(map_sdk("GetRecords", shard.as_str(), e));
                        }
                        tracing::info!(%shard, ?resume, "shard iterator expired: requesting a new one; the lease is kept");
                        iterator = None;
                    }
                    Fault::Throttled => {
                        self.retry_later(shard, "throttled", &DisplayErrorContext(&e));
                    }
                    Fault::Transient => {
                        self.retry_later(shard, "transient", &DisplayErrorContext(&e));
                    }
                    Fault::Fatal => return Err(map_sdk("GetRecords", shard.as_str(), e)),
                },
            }
        };
        let (records, resume) = self.deliver(shard, &answer, resume)?;
        let millis_behind_latest = answer
            .millis_behind_latest()
            .and_then(|ms| u64::try_from(ms).ok());
        if let Some(ms) = millis_behind_latest {
            metrics::gauge!(LAG_GAUGE, "stream" => self.stream.to_string(), "shard" => shard.to_string())
                .set(ms as f64);
        }
        let past_end = answer.records().is_empty()
            && resume.last_sequence().is_some_and(|last| {
                self.closed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(shard)
                    .is_some_and(|ending| last >= ending)
            });
        let next = match answer.next_shard_iterator() {
            Some(it) if !it.is_empty() && !past_end => Some(cursor::encode(&resume, Some(it))),
            _ => {
                self.pace.forget(shard);
                None
            }
        };
        Ok(ReadBatch {
            records,
            next,
            millis_behind_latest,
        })
    }
}

//! Where records come from: the [`ShardSource`] trait (the shape of Kinesis `ListShards`,
//! `GetShardIterator` and `GetRecords`) and the types it returns.

use std::fmt;

use async_trait::async_trait;
use checkpoint_core::{Position, Result, SequenceNumber, ShardId, StreamName};

/// One shard of a stream as the source lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard.
    pub id: ShardId,
    /// Its parents after a split (one parent) or a merge (two parents); empty for an original
    /// shard. A worker processes the shard only after every parent reached `SHARD_END`.
    pub parents: Vec<ShardId>,
    /// Whether the shard is closed to new records (it was split or merged). A closed shard
    /// still holds its records until they are read to the end.
    pub closed: bool,
}

/// One record read from a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The record's sequence number: increasing within a shard.
    pub sequence: SequenceNumber,
    /// The sub-sequence within an aggregated record; 0 otherwise.
    pub sub_sequence: u64,
    /// When the source accepted the record, in milliseconds since the Unix epoch.
    pub arrival_ms: u64,
    /// The partition key the producer gave.
    pub partition_key: String,
    /// The explicit hash key the producer gave instead of hashing the partition key (a decimal
    /// 128-bit integer), when the source knows it: a user record of a KPL aggregated record
    /// carries its own; `None` otherwise.
    pub explicit_hash_key: Option<String>,
    /// The payload.
    pub data: Vec<u8>,
}

impl Record {
    /// The checkpoint position "after this record".
    pub fn position(&self) -> Position {
        Position::Sequence {
            sequence: self.sequence.clone(),
            sub_sequence: self.sub_sequence,
        }
    }
}

/// Where the next read of a shard continues: opaque to the worker, meaningful to the source
/// that made it (a Kinesis shard iterator, an offset).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Cursor(pub String);

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({})", self.0)
    }
}

/// The answer to one [`ShardSource::read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadBatch {
    /// The records, in shard order; possibly empty.
    pub records: Vec<Record>,
    /// Where to read next, or `None` when the shard is closed and these were its last records
    /// (the shard-end marker: the processor is then shut down with
    /// [`ShutdownReason::ShardEnd`](crate::ShutdownReason::ShardEnd)).
    pub next: Option<Cursor>,
    /// How far this read was behind the newest record of the shard, in milliseconds, when the
    /// source reports it (Kinesis `MillisBehindLatest`; 0 means the read reached the tip).
    /// `None` when the source does not know.
    pub millis_behind_latest: Option<u64>,
}

/// A sharded stream the worker reads from.
///
/// The worker calls [`ShardSource::list_shards`] to discover shards (and create their leases
/// with their parents), [`ShardSource::cursor`] once per lease it takes, starting from the
/// lease's checkpoint, and then [`ShardSource::read`] in a loop.
#[async_trait]
pub trait ShardSource: Send + Sync + fmt::Debug {
    /// The stream's name: the `stream` part of every lease key.
    fn stream(&self) -> &StreamName;

    /// Every shard the stream still has records for, open or closed, with its parents.
    async fn list_shards(&self) -> Result<Vec<ShardInfo>>;

    /// A cursor reading `shard` from `start`: the first record for `TRIM_HORIZON`, new records
    /// only for `LATEST`, the first record at or after the instant for `AT_TIMESTAMP`, the
    /// record after the given one for a sequence, and the end for `SHARD_END`.
    async fn cursor(&self, shard: &ShardId, start: &Position) -> Result<Cursor>;

    /// At most `limit` records from `cursor`, and where to continue.
    async fn read(&self, shard: &ShardId, cursor: &Cursor, limit: usize) -> Result<ReadBatch>;

    /// Where a shard without a checkpoint starts when the worker's configuration does not say
    /// ([`WorkerConfigBuilder::with_initial_position`](crate::WorkerConfigBuilder::with_initial_position)):
    /// `TRIM_HORIZON` unless the source overrides it (`KinesisSource` starts at `LATEST`, as
    /// the KCL does).
    fn initial_position(&self) -> Position {
        Position::TrimHorizon
    }
}

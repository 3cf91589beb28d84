//! [`MemoryStream`]: an in-process sharded stream with Kinesis semantics (hash-key ranges,
//! split and merge, closed parents), for tests and demos.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use checkpoint_core::{Error, Position, Result, SequenceNumber, ShardId, StreamName};

use crate::source::{Cursor, ReadBatch, Record, ShardInfo, ShardSource};

#[derive(Debug)]
struct Shard {
    id: ShardId,
    parents: Vec<ShardId>,
    /// Inclusive hash-key range.
    range: (u64, u64),
    closed: bool,
    records: Vec<Record>,
}

#[derive(Debug)]
struct Inner {
    shards: Vec<Shard>,
    next_shard: u64,
    next_sequence: u128,
}

impl Inner {
    fn new_shard_id(&mut self) -> Result<ShardId> {
        let id = ShardId::new(format!("shardId-{:012}", self.next_shard))?;
        self.next_shard += 1;
        Ok(id)
    }

    fn find(&self, shard: &ShardId) -> Result<usize> {
        self.shards
            .iter()
            .position(|s| &s.id == shard)
            .ok_or_else(|| Error::NotFound {
                entity: "shard",
                id: shard.to_string(),
            })
    }

    fn open_shard(&self, shard: &ShardId) -> Result<usize> {
        let index = self.find(shard)?;
        if self.shards[index].closed {
            return Err(Error::invalid(
                "shard_id",
                format!("shard {shard} is already closed"),
            ));
        }
        Ok(index)
    }
}

/// An in-memory sharded stream. Records are routed by a 64-bit hash of their
/// partition key to the open shard whose hash-key range holds it, as Kinesis does with MD5.
/// [`MemoryStream::split`] and [`MemoryStream::merge`] close shards and open children whose
/// parents are listed by [`ShardSource::list_shards`]. Clones share the stream.
#[derive(Clone, Debug)]
pub struct MemoryStream {
    stream: StreamName,
    inner: Arc<Mutex<Inner>>,
}

impl MemoryStream {
    /// A stream of `shards` open shards (at least 1) splitting the hash-key space evenly.
    pub fn new(stream: StreamName, shards: usize) -> Result<Self> {
        if shards == 0 || shards > 10_000 {
            return Err(Error::invalid(
                "shards",
                format!("{shards} is not between 1 and 10000"),
            ));
        }
        let mut inner = Inner {
            shards: Vec::new(),
            next_shard: 0,
            next_sequence: 0,
        };
        let width = u64::MAX / shards as u64;
        for i in 0..shards as u64 {
            let start = i * width;
            let end = if i + 1 == shards as u64 {
                u64::MAX
            } else {
                start + width - 1
            };
            let id = inner.new_shard_id()?;
            inner.shards.push(Shard {
                id,
                parents: Vec::new(),
                range: (start, end),
                closed: false,
                records: Vec::new(),
            });
        }
        Ok(Self {
            stream,
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation below is complete before the guard drops; a poisoned lock holds a
        // consistent stream.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a record to the open shard owning the partition key's hash; returns the shard and
    /// the record's sequence number (increasing across the whole stream).
    pub fn put(&self, partition_key: &str, data: Vec<u8>) -> Result<(ShardId, SequenceNumber)> {
        if partition_key.is_empty() || partition_key.len() > 256 {
            return Err(Error::invalid("partition_key", "must be 1 to 256 bytes"));
        }
        let hash = hash_key(partition_key.as_bytes());
        let mut inner = self.lock();
        inner.next_sequence += 1;
        // Kinesis-like long sequence numbers, to exercise the 128-digit comparison.
        let sequence = SequenceNumber::new(&format!("4959{:036}", inner.next_sequence))?;
        let arrival_ms = now_ms();
        let shard = inner
            .shards
            .iter_mut()
            .find(|s| !s.closed && s.range.0 <= hash && hash <= s.range.1)
            .ok_or_else(|| Error::invalid("partition_key", "no open shard owns its hash key"))?;
        shard.records.push(Record {
            sequence: sequence.clone(),
            sub_sequence: 0,
            arrival_ms,
            partition_key: partition_key.to_owned(),
            explicit_hash_key: None,
            data,
        });
        Ok((shard.id.clone(), sequence))
    }

    /// Closes an open shard and opens two children splitting its hash-key range in half.
    pub fn split(&self, shard: &ShardId) -> Result<[ShardId; 2]> {
        let mut inner = self.lock();
        let index = inner.open_shard(shard)?;
        let (start, end) = inner.shards[index].range;
        if start == end {
            return Err(Error::invalid(
                "shard_id",
                "a one-key shard cannot be split",
            ));
        }
        let middle = start + (end - start) / 2;
        let left = inner.new_shard_id()?;
        let right = inner.new_shard_id()?;
        inner.shards[index].closed = true;
        for (id, range) in [
            (left.clone(), (start, middle)),
            (right.clone(), (middle + 1, end)),
        ] {
            inner.shards.push(Shard {
                id,
                parents: vec![shard.clone()],
                range,
                closed: false,
                records: Vec::new(),
            });
        }
        Ok([left, right])
    }

    /// Closes two open shards with adjacent hash-key ranges and opens one child covering both.
    pub fn merge(&self, a: &ShardId, b: &ShardId) -> Result<ShardId> {
        let mut inner = self.lock();
        let ia = inner.open_shard(a)?;
        let ib = inner.open_shard(b)?;
        let (ra, rb) = (inner.shards[ia].range, inner.shards[ib].range);
        let range = if ra.1.checked_add(1) == Some(rb.0) {
            (ra.0, rb.1)
        } else if rb.1.checked_add(1) == Some(ra.0) {
            (rb.0, ra.1)
        } else {
            return Err(Error::invalid(
                "shard_id",
                format!("shards {a} and {b} are not adjacent"),
            ));
        };
        let child = inner.new_shard_id()?;
        inner.shards[ia].closed = true;
        inner.shards[ib].closed = true;
        inner.shards.push(Shard {
            id: child.clone(),
            parents: vec![a.clone(), b.clone()],
            range,
            closed: false,
            records: Vec::new(),
        });
        Ok(child)
    }

    /// Removes a closed shard, as Kinesis does once its records passed the retention period:
    /// it is no longer listed nor readable. An open shard cannot be removed.
    pub fn remove_closed(&self, shard: &ShardId) -> Result<()> {
        let mut inner = self.lock();
        let index = inner.find(shard)?;
        if !inner.shards[index].closed {
            return Err(Error::invalid(
                "shard_id",
                format!("shard {shard} is open; only a closed shard can be removed"),
            ));
        }
        inner.shards.remove(index);
        Ok(())
    }

    /// The ids of the open shards.
    pub fn open_shards(&self) -> Vec<ShardId> {
        self.lock()
            .shards
            .iter()
            .filter(|s| !s.closed)
            .map(|s| s.id.clone())
            .collect()
    }

    /// How many records the listed shards hold.
    pub fn record_count(&self) -> usize {
        self.lock().shards.iter().map(|s| s.records.len()).sum()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The hash key of a partition key: 64-bit FNV-1a, finalised with MurmurHash3's `fmix64` so
/// that short keys differing in their last characters still spread over the whole range.
fn hash_key(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

fn parse_cursor(cursor: &Cursor) -> Result<usize> {
    cursor
        .0
        .parse::<usize>()
        .map_err(|_| Error::invalid("cursor", format!("{cursor:?} was not made by this stream")))
}

#[async_trait]
impl ShardSource for MemoryStream {
    fn stream(&self) -> &StreamName {
        &self.stream
    }

    async fn list_shards(&self) -> Result<Vec<ShardInfo>> {
        Ok(self
            .lock()
            .shards
            .iter()
            .map(|s| ShardInfo {
                id: s.id.clone(),
                parents: s.parents.clone(),
                closed: s.closed,
            })
            .collect())
    }

    async fn cursor(&self, shard: &ShardId, start: &Position) -> Result<Cursor> {
        let inner = self.lock();
        let shard = &inner.shards[inner.find(shard)?];
        let index = match start {
            Position::TrimHorizon => 0,
            Position::Latest | Position::ShardEnd => shard.records.len(),
            Position::AtTimestamp(ms) => shard
                .records
                .iter()
                .position(|r| r.arrival_ms >= *ms)
                .unwrap_or(shard.records.len()),
            Position::Sequence {
                sequence,
                sub_sequence,
            } => shard
                .records
                .iter()
                .position(|r| (&r.sequence, r.sub_sequence) > (sequence, *sub_sequence))
                .unwrap_or(shard.records.len()),
        };
        Ok(Cursor(index.to_string()))
    }

    async fn read(&self, shard: &ShardId, cursor: &Cursor, limit: usize) -> Result<ReadBatch> {
        let from = parse_cursor(cursor)?;
        let inner = self.lock();
        let shard = &inner.shards[inner.find(shard)?];
        if from > shard.records.len() {
            return Err(Error::invalid(
                "cursor",
                format!("{cursor:?} is past the shard's end"),
            ));
        }
        let to = from.saturating_add(limit.max(1)).min(shard.records.len());
        let records = shard.records[from..to].to_vec();
        let next = if shard.closed && to == shard.records.len() {
            None
        } else {
            Some(Cursor(to.to_string()))
        };
        Ok(ReadBatch {
            records,
            next,
            millis_behind_latest: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(shards: usize) -> MemoryStream {
        MemoryStream::new(StreamName::new("s").unwrap(), shards).unwrap()
    }

    async fn read_to_end(s: &MemoryStream, shard: &ShardId, start: &Position) -> (usize, bool) {
        let mut cursor = s.cursor(shard, start).await.unwrap();
        let mut n = 0;
        loop {
            let batch = s.read(shard, &cursor, 3).await.unwrap();
            n += batch.records.len();
            match batch.next {
                None => return (n, true),
                Some(_) if batch.records.is_empty() => return (n, false),
                Some(next) => cursor = next,
            }
        }
    }

    #[tokio::test]
    async fn split_closes_the_parent_and_routes_to_children() {
        let s = stream(2);
        for i in 0..40 {
            s.put(&format!("k{i}"), vec![]).unwrap();
        }
        let parent = s.open_shards()[0].clone();
        let [left, right] = s.split(&parent).unwrap();
        for i in 40..80 {
            s.put(&format!("k{i}"), vec![]).unwrap();
        }
        let shards = s.list_shards().await.unwrap();
        let info = |id: &ShardId| shards.iter().find(|i| &i.id == id).unwrap().clone();
        assert!(info(&parent).closed);
        assert_eq!(info(&left).parents, vec![parent.clone()]);
        assert_eq!(info(&right).parents, vec![parent.clone()]);
        let (before, ended) = read_to_end(&s, &parent, &Position::TrimHorizon).await;
        assert!(ended, "a closed shard ends");
        let mut total = before;
        for shard in s.open_shards() {
            let (n, ended) = read_to_end(&s, &shard, &Position::TrimHorizon).await;
            assert!(!ended);
            total += n;
        }
        assert_eq!(total, 80);
        assert_eq!(s.record_count(), 80);
        assert!(s.split(&parent).is_err(), "a closed shard cannot split");
    }

    #[tokio::test]
    async fn positions_read_from_the_right_record() {
        let s = stream(1);
        let shard = s.open_shards()[0].clone();
        let (_, first) = s.put("a", vec![1]).unwrap();
        s.put("b", vec![2]).unwrap();
        let after = Position::Sequence {
            sequence: first,
            sub_sequence: 0,
        };
        assert_eq!(read_to_end(&s, &shard, &after).await, (1, false));
        assert_eq!(read_to_end(&s, &shard, &Position::Latest).await, (0, false));
        assert_eq!(
            read_to_end(&s, &shard, &Position::TrimHorizon).await,
            (2, false)
        );
        assert_eq!(
            read_to_end(&s, &shard, &Position::AtTimestamp(0)).await,
            (2, false)
        );
    }

    #[tokio::test]
    async fn merge_needs_adjacent_open_shards() {
        let s = stream(3);
        let ids = s.open_shards();
        assert!(s.merge(&ids[0], &ids[2]).is_err(), "not adjacent");
        let child = s.merge(&ids[1], &ids[0]).unwrap();
        let shards = s.list_shards().await.unwrap();
        let child_info = shards.iter().find(|i| i.id == child).unwrap();
        assert_eq!(child_info.parents, vec![ids[1].clone(), ids[0].clone()]);
        assert!(s.merge(&ids[0], &ids[1]).is_err(), "already closed");
    }

    #[test]
    fn bad_arguments_are_invalid_input() {
        let name = StreamName::new("s").unwrap();
        assert_eq!(
            MemoryStream::new(name, 0).unwrap_err().field(),
            Some("shards")
        );
        assert_eq!(
            stream(1).put("", vec![]).unwrap_err().field(),
            Some("partition_key")
        );
    }
}

//! The Kinesis Producer Library's aggregated record format: many user records in one Kinesis
//! record, which the KCL de-aggregates before the application sees them.
//!
//! A blob is an aggregate when it is, byte for byte:
//!
//! | bytes | content |
//! | --- | --- |
//! | 4 | the magic `F3 89 9A C2` |
//! | n ≥ 1 | a protobuf (proto2) `AggregatedRecord` message |
//! | 16 | the MD5 digest of those n bytes |
//!
//! where the message is (field numbers from the KPL's `messages.proto`, which the KCL copies):
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! message Tag { required string key = 1; optional string value = 2; }
//! ```
//!
//! [`deaggregate`] follows the KCL's `AggregatorUtil`: a blob without the magic, too short to
//! hold a message and a digest, with a digest that does not match, or whose message does not
//! decode (a required field missing included) is not an aggregate, and is delivered as one plain
//! record. One departure: a message whose record names a partition key or explicit hash key
//! index outside its table is not an aggregate either (the KCL delivers the user records before
//! that one and drops the rest), so no byte of a malformed blob is lost. The KCL also drops
//! every user record of an aggregate when one of them hashes outside the shard's hash-key range
//! (possible only when a producer aggregated against a stale shard map); here every user record
//! is delivered on the shard its aggregate landed on.

use md5::{Digest, Md5};
use prost::Message;

/// The first four bytes of every KPL aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// The length of the MD5 digest that ends an aggregated record.
const DIGEST_LEN: usize = 16;

/// One user record inside (or for) an aggregated record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// The user record's own partition key.
    pub partition_key: String,
    /// Its explicit hash key (a decimal 128-bit integer), when the producer gave one.
    pub explicit_hash_key: Option<String>,
    /// Its payload.
    pub data: Vec<u8>,
}

/// `AggregatedRecord`, field for field.
#[derive(Clone, PartialEq, Message)]
struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<KplRecord>,
}

/// `Record`. Its `required` fields are decoded as optional so that a message missing one is
/// recognised as malformed, as a protobuf `parseFrom` does; encoded, `Some` writes the same
/// bytes as `required`.
#[derive(Clone, PartialEq, Message)]
struct KplRecord {
    #[prost(uint64, optional, tag = "1")]
    partition_key_index: Option<u64>,
    #[prost(uint64, optional, tag = "2")]
    explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", optional, tag = "3")]
    data: Option<Vec<u8>>,
    #[prost(message, repeated, tag = "4")]
    tags: Vec<Tag>,
}

/// `Tag`: carried by the format, not delivered (the KCL does not deliver tags either).
#[derive(Clone, PartialEq, Message)]
struct Tag {
    #[prost(string, optional, tag = "1")]
    key: Option<String>,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

/// The user records of a KPL aggregated record, in order (their sub-sequence numbers are their
/// indexes), or `None` when `blob` is not a well-formed aggregate and is a plain record (see the
/// module docs for the rules). An aggregate of no user records is `Some(vec![])`, as in the KCL.
pub fn deaggregate(blob: &[u8]) -> Option<Vec<UserRecord>> {
    let body = blob.strip_prefix(&MAGIC)?;
    // The KCL requires more than the digest after the magic: at least one message byte.
    if body.len() <= DIGEST_LEN {
        return None;
    }
    let (message, digest) = body.split_at(body.len() - DIGEST_LEN);
    if Md5::digest(message).as_slice() != digest {
        return None;
    }
    let aggregate = AggregatedRecord::decode(message).ok()?;
    if aggregate
        .records
        .iter()
        .flat_map(|r| &r.tags)
        .any(|t| t.key.is_none())
    {
        return None;
    }
    let table = |table: &[String], index: u64| -> Option<String> {
        usize::try_from(index)
            .ok()
            .and_then(|i| table.get(i))
            .cloned()
    };
    aggregate
        .records
        .into_iter()
        .map(|record| {
            let partition_key = table(&aggregate.partition_key_table, record.partition_key_index?)?;
            let explicit_hash_key = match record.explicit_hash_key_index {
                Some(index) => Some(table(&aggregate.explicit_hash_key_table, index)?),
                None => None,
            };
            Some(UserRecord {
                partition_key,
                explicit_hash_key,
                data: record.data?,
            })
        })
        .collect()
}

/// One KPL aggregated record holding `records`, in order: what a KPL producer puts (the magic,
/// the message with each distinct partition key and explicit hash key stored once, and the
/// digest). Put it with the first user record's partition key (or explicit hash key), as the
/// KPL does, so it lands on that record's shard. Kinesis accepts records up to 1 MiB; keeping
/// the aggregate under that is the caller's part.
pub fn aggregate(records: &[UserRecord]) -> Vec<u8> {
    let mut message = AggregatedRecord {
        partition_key_table: Vec::new(),
        explicit_hash_key_table: Vec::new(),
        records: Vec::with_capacity(records.len()),
    };
    for record in records {
        let partition_key_index = index_of(&mut message.partition_key_table, &record.partition_key);
        let explicit_hash_key_index = record
            .explicit_hash_key
            .as_ref()
            .map(|key| index_of(&mut message.explicit_hash_key_table, key));
        message.records.push(KplRecord {
            partition_key_index: Some(partition_key_index),
            explicit_hash_key_index,
            data: Some(record.data.clone()),
            tags: Vec::new(),
        });
    }
    frame(&message.encode_to_vec())
}

/// The magic, `message`, and its digest.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(MAGIC.len() + message.len() + DIGEST_LEN);
    blob.extend_from_slice(&MAGIC);
    blob.extend_from_slice(message);
    blob.extend_from_slice(&Md5::digest(message));
    blob
}

/// The index of `key` in `table`, appending it when absent.
fn index_of(table: &mut Vec<String>, key: &str) -> u64 {
    let index = match table.iter().position(|k| k == key) {
        Some(index) => index,
        None => {
            table.push(key.to_owned());
            table.len() - 1
        }
    };
    index as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(pk: &str, ehk: Option<&str>, data: &[u8]) -> UserRecord {
        UserRecord {
            partition_key: pk.to_owned(),
            explicit_hash_key: ehk.map(str::to_owned),
            data: data.to_vec(),
        }
    }

    /// A message built with prost directly, tags included, as a KPL would send it.
    fn kpl_message() -> AggregatedRecord {
        AggregatedRecord {
            partition_key_table: vec!["p0".into(), "p1".into()],
            explicit_hash_key_table: vec!["170141183460469231731687303715884105728".into()],
            records: vec![
                KplRecord {
                    partition_key_index: Some(0),
                    explicit_hash_key_index: None,
                    data: Some(b"first".to_vec()),
                    tags: vec![Tag {
                        key: Some("k".into()),
                        value: None,
                    }],
                },
                KplRecord {
                    partition_key_index: Some(1),
                    explicit_hash_key_index: Some(0),
                    data: Some(Vec::new()),
                    tags: Vec::new(),
                },
                KplRecord {
                    partition_key_index: Some(0),
                    explicit_hash_key_index: None,
                    data: Some(vec![0xF3, 0x89, 0x9A, 0xC2, 0]),
                    tags: Vec::new(),
                },
            ],
        }
    }

    #[test]
    fn round_trip_of_a_prost_encoded_message() {
        let blob = frame(&kpl_message().encode_to_vec());
        let records = deaggregate(&blob).expect("an aggregate");
        assert_eq!(
            records,
            vec![
                user("p0", None, b"first"),
                user("p1", Some("170141183460469231731687303715884105728"), b""),
                user("p0", None, &[0xF3, 0x89, 0x9A, 0xC2, 0]),
            ]
        );
        // And the encoder writes what the decoder reads, each key stored once.
        let encoded = aggregate(&records);
        assert_eq!(deaggregate(&encoded), Some(records.clone()));
        let message = AggregatedRecord::decode(&encoded[MAGIC.len()..encoded.len() - DIGEST_LEN])
            .expect("a message");
        assert_eq!(message.partition_key_table, ["p0", "p1"]);
        assert_eq!(message.explicit_hash_key_table.len(), 1);
    }

    #[test]
    fn golden_bytes_written_by_hand_from_the_proto() {
        // partition_key_table = ["a"] (field 1), explicit_hash_key_table = ["42"] (field 2),
        // records = [{pk 0, data "x"}, {pk 0, ehk 0, data "y"}] (field 3), then the MD5 of the
        // message computed independently (`hashlib.md5`).
        let message = [
            0x0A, 0x01, b'a', 0x12, 0x02, b'4', b'2', 0x1A, 0x05, 0x08, 0x00, 0x1A, 0x01, b'x',
            0x1A, 0x07, 0x08, 0x00, 0x10, 0x00, 0x1A, 0x01, b'y',
        ];
        let digest = [
            0xb6, 0xa4, 0x8f, 0xd4, 0x04, 0x59, 0x00, 0x8d, 0x5f, 0x1b, 0x98, 0xbb, 0x66, 0xaf,
            0x2d, 0x52,
        ];
        let blob = [&MAGIC[..], &message, &digest].concat();
        let expected = vec![user("a", None, b"x"), user("a", Some("42"), b"y")];
        assert_eq!(deaggregate(&blob), Some(expected.clone()));
        assert_eq!(
            aggregate(&expected),
            blob,
            "the encoder writes the same bytes"
        );
    }

    #[test]
    fn a_wrong_digest_is_a_plain_record() {
        let mut blob = frame(&kpl_message().encode_to_vec());
        let last = blob.len() - 1;
        blob[last] ^= 1;
        assert_eq!(deaggregate(&blob), None);
        // A changed message byte under the old digest too.
        let mut blob = frame(&kpl_message().encode_to_vec());
        blob[6] ^= 0x40;
        assert_eq!(deaggregate(&blob), None);
    }

    #[test]
    fn truncated_or_undecodable_blobs_are_plain_records() {
        let blob = frame(&kpl_message().encode_to_vec());
        for len in 0..blob.len() {
            assert_eq!(deaggregate(&blob[..len]), None, "truncated to {len} bytes");
        }
        // The magic and a digest with no message between them.
        assert_eq!(deaggregate(&frame(&[])), None);
        // A digest that matches bytes that are not a message (a length past the end).
        assert_eq!(deaggregate(&frame(&[0x0A, 0x7F, b'a'])), None);
        // A record missing its required partition key index or data.
        for broken in [
            KplRecord {
                partition_key_index: None,
                explicit_hash_key_index: None,
                data: Some(b"d".to_vec()),
                tags: Vec::new(),
            },
            KplRecord {
                partition_key_index: Some(0),
                explicit_hash_key_index: None,
                data: None,
                tags: Vec::new(),
            },
        ] {
            let mut message = kpl_message();
            message.records.push(broken);
            assert_eq!(deaggregate(&frame(&message.encode_to_vec())), None);
        }
        // An index outside its table.
        for (pk, ehk) in [(Some(2), None), (Some(0), Some(1))] {
            let mut message = kpl_message();
            message.records[1].partition_key_index = pk;
            message.records[1].explicit_hash_key_index = ehk;
            assert_eq!(deaggregate(&frame(&message.encode_to_vec())), None);
        }
        // A tag without its required key.
        let mut message = kpl_message();
        message.records[0].tags[0].key = None;
        assert_eq!(deaggregate(&frame(&message.encode_to_vec())), None);
    }

    #[test]
    fn blobs_without_the_magic_are_plain_records() {
        let message = kpl_message().encode_to_vec();
        assert_eq!(deaggregate(&message), None);
        let mut blob = frame(&message);
        blob[0] = 0xF2;
        assert_eq!(deaggregate(&blob), None);
        assert_eq!(deaggregate(b"plain text payload"), None);
        assert_eq!(deaggregate(&MAGIC), None);
    }

    #[test]
    fn an_aggregate_of_nothing_holds_no_records() {
        // The empty message is 0 bytes, which the KCL does not take for an aggregate; an
        // aggregate with empty tables but an unknown field is one, holding nothing.
        let blob = frame(&[0x20, 0x01]);
        assert_eq!(deaggregate(&blob), Some(Vec::new()));
    }
}

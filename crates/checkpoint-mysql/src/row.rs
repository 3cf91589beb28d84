//! Values between Rust and the tables: decoding a lease row, and the parameters the statements
//! take (durations and instants in microseconds, progress keys, renew-many batches, nonces).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use checkpoint_core::{
    Error, FencingToken, Lease, LeaseKey, Position, Result, ShardId, StreamName, WorkerId,
};
use sqlx::Row;
use sqlx::mysql::MySqlRow;

use crate::error::from_sqlx;

/// Whole microseconds of a duration (durations are validated to at most 24 h).
pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// An instant as microseconds since the Unix epoch (instants come from the server's clock).
pub(crate) fn to_micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, micros)
}

/// An instant from microseconds since the Unix epoch; `None` before 1970.
pub(crate) fn from_micros(us: i64) -> Option<SystemTime> {
    u64::try_from(us)
        .ok()
        .map(|us| UNIX_EPOCH + Duration::from_micros(us))
}

/// The progress key of a position, the same text the table's generated `checkpoint_order`
/// column computes from a stored one: `0` for the initial positions (all equal), `1` then the
/// sequence number zero-padded to 128 digits and the sub-sequence to 20 for a sequence, `2` for
/// `SHARD_END`. Byte order of these keys is [`Position::cmp_progress`] order, so a sequence
/// number of up to 128 digits is compared as a number, not as text.
pub(crate) fn progress_key(position: &Position) -> String {
    match position {
        Position::Sequence {
            sequence,
            sub_sequence,
        } => format!("1{}{sub_sequence:020}", sequence.padded()),
        Position::ShardEnd => "2".to_owned(),
        Position::TrimHorizon | Position::Latest | Position::AtTimestamp(_) => "0".to_owned(),
    }
}

/// Parent shard ids as the `parents` column stores them: joined by `,` (the identifier rule
/// allows no comma in a shard id), empty for none.
pub(crate) fn encode_parents(parents: &[ShardId]) -> String {
    parents
        .iter()
        .map(ShardId::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// A renew-many chunk as the JSON array `[[stream, shard, token], ...]` the statements read
/// with `JSON_TABLE`. Ids are escaped as JSON strings (the identifier rule admits nothing that
/// needs it, but the text never depends on that).
pub(crate) fn batch_json(chunk: &[(LeaseKey, FencingToken)]) -> String {
    let mut out = String::with_capacity(chunk.len() * 48 + 2);
    out.push('[');
    for (i, (key, token)) in chunk.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        json_string(&mut out, key.stream.as_str());
        out.push(',');
        json_string(&mut out, key.shard.as_str());
        out.push(',');
        out.push_str(&token.0.to_string());
        out.push(']');
    }
    out.push(']');
    out
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A fresh random nonce for one `create_lease_if_absent` call: the process's random hash keys
/// over a counter and the clock, so no two calls of one process, and with 64 random bits no two
/// processes in practice, share one.
pub(crate) fn nonce() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Decodes a row with the columns of `schema::LEASE_COLUMNS_SQL`. A stored value this crate
/// would never write is [`Error::Corrupt`] naming the record and the column.
pub(crate) fn decode_lease(row: &MySqlRow) -> Result<Lease> {
    let stream: String = row.try_get("stream").map_err(from_sqlx)?;
    let shard: String = row.try_get("shard").map_err(from_sqlx)?;
    let id = format!("{stream}/{shard}");
    let corrupt = |field: &'static str, e: Error| Error::corrupt(&id, field, e.to_string());
    let key = LeaseKey::new(
        StreamName::new(stream.clone()).map_err(|e| corrupt("stream", e))?,
        ShardId::new(shard.clone()).map_err(|e| corrupt("shard", e))?,
    );
    let worker = |field: &'static str| -> Result<Option<WorkerId>> {
        let bytes: Option<Vec<u8>> = row.try_get(field).map_err(from_sqlx)?;
        bytes
            .map(|b| {
                let name =
                    String::from_utf8(b).map_err(|_| Error::corrupt(&id, field, "is not UTF-8"))?;
                WorkerId::new(name).map_err(|e| corrupt(field, e))
            })
            .transpose()
    };
    let position = |field: &'static str, sub_field: &'static str| -> Result<Option<Position>> {
        let text: Option<String> = row.try_get(field).map_err(from_sqlx)?;
        let sub: u64 = row.try_get(sub_field).map_err(from_sqlx)?;
        let Some(text) = text else { return Ok(None) };
        Position::decode(field, &text, sub)
            .map(Some)
            .map_err(|e| corrupt(field, e))
    };
    let token: u64 = row.try_get("token").map_err(from_sqlx)?;
    let deadline: Option<i64> = row.try_get("deadline_us").map_err(from_sqlx)?;
    let deadline = deadline
        .map(|us| from_micros(us).ok_or_else(|| Error::corrupt(&id, "deadline", "is before 1970")))
        .transpose()?;
    let parents: String = row.try_get("parents").map_err(from_sqlx)?;
    let parents = parents
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| ShardId::new(p).map_err(|e| corrupt("parents", e)))
        .collect::<Result<Vec<_>>>()?;
    let switches: u64 = row.try_get("owner_switches").map_err(from_sqlx)?;
    Ok(Lease {
        key,
        owner: worker("owner")?,
        token: FencingToken(token),
        deadline,
        checkpoint: position("checkpoint", "checkpoint_sub")?,
        pending_checkpoint: position("pending_checkpoint", "pending_checkpoint_sub")?,
        parents,
        claim: worker("claim")?,
        owner_switches_since_checkpoint: switches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_keys_sort_in_progress_order() {
        let positions = [
            Position::TrimHorizon,
            Position::sequence("0").unwrap(),
            Position::sequence_with_sub("0", 1).unwrap(),
            Position::sequence("9").unwrap(),
            Position::sequence("10").unwrap(),
            Position::sequence_with_sub("10", u64::MAX).unwrap(),
            Position::sequence(&"9".repeat(128)).unwrap(),
            Position::ShardEnd,
        ];
        for pair in positions.windows(2) {
            assert!(progress_key(&pair[0]) < progress_key(&pair[1]), "{pair:?}");
            assert_eq!(
                pair[0].cmp_progress(&pair[1]),
                std::cmp::Ordering::Less,
                "{pair:?}"
            );
        }
        assert_eq!(
            progress_key(&Position::Latest),
            progress_key(&Position::AtTimestamp(5))
        );
        assert_eq!(
            progress_key(&Position::sequence("0010").unwrap()),
            progress_key(&Position::sequence("10").unwrap())
        );
    }

    #[test]
    fn batches_are_json_arrays_and_nonces_differ() {
        let k = LeaseKey::parse("orders", "shard-1").unwrap();
        assert_eq!(
            batch_json(&[(k.clone(), FencingToken(u64::MAX)), (k, FencingToken(0))]),
            format!(
                "[[\"orders\",\"shard-1\",{}],[\"orders\",\"shard-1\",0]]",
                u64::MAX
            )
        );
        assert_eq!(batch_json(&[]), "[]");
        let mut escaped = String::new();
        json_string(&mut escaped, "a\"b\\c\u{1}");
        assert_eq!(escaped, "\"a\\\"b\\\\c\\u0001\"");
        let nonces: std::collections::HashSet<u64> = (0..1000).map(|_| nonce()).collect();
        assert_eq!(nonces.len(), 1000);
    }

    #[test]
    fn micros_round_trip() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_980_259_680_797);
        assert_eq!(from_micros(to_micros(t)), Some(t));
        assert_eq!(from_micros(-1), None);
        assert_eq!(micros(Duration::from_millis(1500)), 1_500_000);
    }
}

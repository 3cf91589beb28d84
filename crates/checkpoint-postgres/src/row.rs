//! Values between Rust and the tables: decoding a lease row, and the parameters the statements
//! take (tokens as `bigint`, durations in milliseconds, progress keys, instants in microseconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use checkpoint_core::{
    Error, FencingToken, Lease, LeaseKey, Position, Result, ShardId, StreamName, WorkerId,
};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::error::from_sqlx;

/// A token as the `bigint` column stores it. Tokens beyond `i64::MAX` cannot be stored, so no
/// record holds one: they become -1, which the `token >= 0` check keeps out of every row, and the
/// fenced statement matches nothing.
pub(crate) fn token_param(token: FencingToken) -> i64 {
    i64::try_from(token.0).unwrap_or(-1)
}

/// Whole milliseconds (durations are validated to at most 24 h).
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The progress key of a position, the same text the table's generated `checkpoint_order`
/// column computes from a stored one: `0` for the initial positions (all equal), `1` then the
/// sequence number zero-padded to 128 digits and the sub-sequence to 20 for a sequence, `2` for
/// `SHARD_END`. Byte order of these keys is [`Position::cmp_progress`] order.
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

pub(crate) fn from_micros(us: i64) -> Option<SystemTime> {
    u64::try_from(us)
        .ok()
        .map(|us| UNIX_EPOCH + Duration::from_micros(us))
}

/// Decodes a row with the columns of `schema::LEASE_COLUMNS_SQL`. A stored value this crate
/// would never write is [`Error::Corrupt`] naming the record and the column.
pub(crate) fn decode_lease(row: &PgRow) -> Result<Lease> {
    let stream: String = row.try_get("stream").map_err(from_sqlx)?;
    let shard: String = row.try_get("shard").map_err(from_sqlx)?;
    let id = format!("{stream}/{shard}");
    let corrupt = |field: &'static str, e: Error| Error::corrupt(&id, field, e.to_string());
    let key = LeaseKey::new(
        StreamName::new(stream.clone()).map_err(|e| corrupt("stream", e))?,
        ShardId::new(shard.clone()).map_err(|e| corrupt("shard", e))?,
    );
    let worker = |field: &'static str| -> Result<Option<WorkerId>> {
        let name: Option<String> = row.try_get(field).map_err(from_sqlx)?;
        name.map(|n| WorkerId::new(n).map_err(|e| corrupt(field, e)))
            .transpose()
    };
    let position = |field: &'static str, sub_field: &'static str| -> Result<Option<Position>> {
        let text: Option<String> = row.try_get(field).map_err(from_sqlx)?;
        let sub: String = row.try_get(sub_field).map_err(from_sqlx)?;
        let Some(text) = text else { return Ok(None) };
        let sub: u64 = sub
            .parse()
            .map_err(|_| Error::corrupt(&id, sub_field, format!("{sub:?} is not a u64")))?;
        Position::decode(field, &text, sub)
            .map(Some)
            .map_err(|e| corrupt(field, e))
    };
    let token: i64 = row.try_get("token").map_err(from_sqlx)?;
    let token = u64::try_from(token)
        .map_err(|_| Error::corrupt(&id, "token", format!("{token} is negative")))?;
    let deadline: Option<i64> = row.try_get("deadline_us").map_err(from_sqlx)?;
    let deadline = deadline
        .map(|us| from_micros(us).ok_or_else(|| Error::corrupt(&id, "deadline", "is before 1970")))
        .transpose()?;
    let parents: Vec<String> = row.try_get("parents").map_err(from_sqlx)?;
    let parents = parents
        .into_iter()
        .map(|p| ShardId::new(p).map_err(|e| corrupt("parents", e)))
        .collect::<Result<Vec<_>>>()?;
    let switches: i64 = row.try_get("owner_switches").map_err(from_sqlx)?;
    let switches = u64::try_from(switches)
        .map_err(|_| Error::corrupt(&id, "owner_switches", format!("{switches} is negative")))?;
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
    fn huge_tokens_never_match_a_stored_one() {
        assert_eq!(token_param(FencingToken(7)), 7);
        assert_eq!(token_param(FencingToken(u64::MAX)), -1);
    }
}

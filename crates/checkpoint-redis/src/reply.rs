//! Script replies decoded into records and verdicts, and records and positions encoded as
//! script arguments. The Lua side of both is in [`crate::scripts`]; a value the client cannot
//! decode is [`Error::Corrupt`] naming its stored field, never a panic.

use std::time::{Duration, SystemTime};

use checkpoint_core::{
    Error, FencingToken, Lease, LeaseKey, Position, RenewOutcome, Result, ShardId, WorkerId,
};
use redis::Value;

use crate::scripts::{FIELDS, field};

/// The verdict of a lease script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    Held,
    Lost,
    Changed,
    Regression,
    NotFound,
    Corrupt,
}

/// A decoded lease-script reply.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: Status,
    /// The server clock the script judged by; `None` from a script that does not read it.
    pub(crate) now: Option<SystemTime>,
    /// The corrupt field's name, for [`Status::Corrupt`].
    pub(crate) detail: String,
    /// The record after the operation, or `None` when absent.
    pub(crate) lease: Option<Lease>,
}

pub(crate) fn protocol_error(what: impl Into<String>) -> Error {
    Error::backend_message(
        "redis",
        false,
        format!("unexpected script reply: {}", what.into()),
    )
}

pub(crate) fn text(value: &Value) -> Result<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone())
            .map_err(|_| protocol_error("a reply string is not UTF-8")),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        Value::Okay => Ok("OK".to_owned()),
        other => Err(protocol_error(format!("expected a string, got {other:?}"))),
    }
}

pub(crate) fn items(value: Value) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(protocol_error(format!("expected an array, got {other:?}"))),
    }
}

fn status(s: &str) -> Result<Status> {
    Ok(match s {
        "OK" => Status::Ok,
        "HELD" => Status::Held,
        "LOST" => Status::Lost,
        "CHANGED" => Status::Changed,
        "REGRESSION" => Status::Regression,
        "NOTFOUND" => Status::NotFound,
        "CORRUPT" => Status::Corrupt,
        other => return Err(protocol_error(format!("unknown status {other:?}"))),
    })
}

fn millis(ms: &str) -> Result<SystemTime> {
    let ms: u64 = ms
        .parse()
        .map_err(|_| protocol_error(format!("bad server time {ms:?}")))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

/// Decodes `[status, now, detail]` (no record) or `[value × FIELDS, status, now, detail]` (the
/// record, then the verdict: the script appends the verdict to the record it read). `now` is
/// the server clock in milliseconds, an integer, or empty from a script that reads no clock.
pub(crate) fn decode_reply(key: &LeaseKey, value: Value) -> Result<Reply> {
    let items = items(value)?;
    let (record, verdict) = match items.len() {
        3 => (None, &items[..]),
        n if n == FIELDS.len() + 3 => (Some(&items[..FIELDS.len()]), &items[FIELDS.len()..]),
        n => {
            return Err(protocol_error(format!(
                "{n} items, expected 3 or {}",
                FIELDS.len() + 3
            )));
        }
    };
    let status = status(&text(&verdict[0])?)?;
    let now = match text(&verdict[1])?.as_str() {
        "" => None,
        ms => Some(millis(ms)?),
    };
    let detail = text(&verdict[2])?;
    let lease = record
        .map(|values| decode_values(key, values))
        .transpose()?;
    Ok(Reply {
        status,
        now,
        detail,
        lease,
    })
}

/// Decodes the reply of an `HMGET` of [`FIELDS`]: `None` when no field exists (no record).
pub(crate) fn decode_hmget(key: &LeaseKey, value: Value) -> Result<Option<Lease>> {
    let values = items(value)?;
    if values.iter().all(|v| matches!(v, Value::Nil)) {
        return Ok(None);
    }
    decode_values(key, &values).map(Some)
}

/// A reply value that is a string or nil, borrowed.
fn optional_str(value: &Value) -> Result<Option<&str>> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| protocol_error("a reply string is not UTF-8")),
        Value::SimpleString(s) => Ok(Some(s)),
        other => Err(protocol_error(format!(
            "expected a string or nil, got {other:?}"
        ))),
    }
}

/// Decodes a record given as the values of [`FIELDS`] in order (nil: absent).
fn decode_values(key: &LeaseKey, values: &[Value]) -> Result<Lease> {
    if values.len() != FIELDS.len() {
        return Err(protocol_error(format!(
            "{} record values, expected {}",
            values.len(),
            FIELDS.len()
        )));
    }
    let mut fields = [None; FIELDS.len()];
    for ((slot, value), name) in fields.iter_mut().zip(values).zip(FIELDS) {
        *slot = match value {
            Value::BulkString(bytes) if std::str::from_utf8(bytes).is_err() => {
                return Err(Error::corrupt(key, name, "is not valid UTF-8"));
            }
            other => optional_str(other)?,
        };
    }
    decode_fields(key, &fields)
}

/// Decodes renew-many's reply for one chunk of `keys` (in the order they were sent) into
/// `outcome` (unsorted): `[OK, now, entry...]` with each entry one string, `OK` then the values
/// of [`FIELDS`] each after a newline (empty: absent), or `LOST`; or `[CORRUPT, index, field]`.
pub(crate) fn decode_renew_many(
    keys: &[(LeaseKey, FencingToken)],
    value: Value,
    outcome: &mut RenewOutcome,
) -> Result<()> {
    let mut items = items(value)?.into_iter();
    let head = items
        .next()
        .ok_or_else(|| protocol_error("empty renew-many reply"))?;
    match text(&head)?.as_str() {
        "OK" => {}
        "CORRUPT" => {
            let index = items
                .next()
                .map(|v| text(&v))
                .transpose()?
                .unwrap_or_default();
            let name = items
                .next()
                .map(|v| text(&v))
                .transpose()?
                .unwrap_or_default();
            let key = index
                .parse::<usize>()
                .ok()
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| keys.get(i))
                .ok_or_else(|| protocol_error(format!("bad corrupt index {index:?}")))?;
            return Err(corrupt_field(&key.0, &name));
        }
        other => return Err(protocol_error(format!("renew-many status {other:?}"))),
    }
    let _now = items
        .next()
        .ok_or_else(|| protocol_error("renew-many reply without server time"))?;
    if items.len() != keys.len() {
        return Err(protocol_error(format!(
            "{} renew-many entries for {} keys",
            items.len(),
            keys.len()
        )));
    }
    for ((key, _), entry) in keys.iter().zip(items) {
        let entry =
            optional_str(&entry)?.ok_or_else(|| protocol_error("a nil renew-many entry"))?;
        let mut parts = entry.split('\n');
        match status(parts.next().unwrap_or_default())? {
            Status::Ok => {
                let mut fields = [None; FIELDS.len()];
                for slot in &mut fields {
                    let part = parts
                        .next()
                        .ok_or_else(|| protocol_error("a renew-many entry is short"))?;
                    *slot = (!part.is_empty()).then_some(part);
                }
                if parts.next().is_some() {
                    return Err(protocol_error("a renew-many entry is long"));
                }
                outcome.renewed.push(decode_fields(key, &fields)?);
            }
            Status::Lost => outcome.lost.push(key.clone()),
            other => return Err(protocol_error(format!("renew-many entry status {other:?}"))),
        }
    }
    Ok(())
}

/// The [`Error::Corrupt`] for a field a script found bad.
pub(crate) fn corrupt_field(key: &LeaseKey, name: &str) -> Error {
    let field = FIELDS.into_iter().find(|f| *f == name).unwrap_or("record");
    Error::corrupt(key, field, "the stored value does not decode")
}

/// A canonical decimal u64 (no sign, no leading zero), as the scripts write and check it.
fn parse_u64(key: &LeaseKey, name: &'static str, value: &str) -> Result<u64> {
    let canonical = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value == "0" || !value.starts_with('0'));
    let parsed = if canonical {
        value.parse::<u64>().ok()
    } else {
        None
    };
    parsed.ok_or_else(|| Error::corrupt(key, name, format!("{value:?} is not a decimal u64")))
}

fn parse_id(key: &LeaseKey, name: &'static str, value: &str) -> Result<WorkerId> {
    WorkerId::new(value).map_err(|e| Error::corrupt(key, name, e.to_string()))
}

fn parse_position(
    key: &LeaseKey,
    name: &'static str,
    sub_name: &'static str,
    text: &str,
    sub: Option<&str>,
) -> Result<Position> {
    let sub = match sub {
        Some(s) => parse_u64(key, sub_name, s)?,
        None => 0,
    };
    Position::decode(name, text, sub).map_err(|e| Error::corrupt(key, name, e.to_string()))
}

/// Decodes the values of [`FIELDS`], in order (`None`: absent); a field that does not decode
/// is [`Error::Corrupt`] naming it.
fn decode_fields(key: &LeaseKey, fields: &[Option<&str>; FIELDS.len()]) -> Result<Lease> {
    let [
        owner,
        token,
        deadline,
        checkpoint,
        checkpoint_sub,
        pending,
        pending_sub,
        parents,
        claim,
        owner_switches,
    ] = *fields;
    let owner = owner.map(|v| parse_id(key, field::OWNER, v)).transpose()?;
    let token = match token {
        Some(v) => FencingToken(parse_u64(key, field::TOKEN, v)?),
        None => return Err(Error::corrupt(key, field::TOKEN, "missing")),
    };
    let deadline = deadline
        .map(|v| {
            parse_u64(key, field::DEADLINE, v)
                .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
        })
        .transpose()?;
    let checkpoint = checkpoint
        .map(|v| {
            parse_position(
                key,
                field::CHECKPOINT,
                field::CHECKPOINT_SUB,
                v,
                checkpoint_sub,
            )
        })
        .transpose()?;
    let pending_checkpoint = pending
        .map(|v| parse_position(key, field::PENDING, field::PENDING_SUB, v, pending_sub))
        .transpose()?;
    let parents = match parents {
        None | Some("") => Vec::new(),
        Some(v) => v
            .split(',')
            .map(|p| {
                ShardId::new(p).map_err(|e| Error::corrupt(key, field::PARENTS, e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let claim = claim.map(|v| parse_id(key, field::CLAIM, v)).transpose()?;
    let owner_switches_since_checkpoint = match owner_switches {
        Some(v) => parse_u64(key, field::OWNER_SWITCHES, v)?,
        None => return Err(Error::corrupt(key, field::OWNER_SWITCHES, "missing")),
    };
    Ok(Lease {
        key: key.clone(),
        owner,
        token,
        deadline,
        checkpoint,
        pending_checkpoint,
        parents,
        claim,
        owner_switches_since_checkpoint,
    })
}

/// The script arguments of a position: its text ([`Position::encode`], a sequence number
/// without leading zeros) and its sub-sequence in decimal, the forms the Lua progress check
/// compares (`src/lua/progress.lua`: by length, then as text).
pub(crate) fn position_args(position: &Position) -> [String; 2] {
    [position.encode(), position.sub_sequence().to_string()]
}

/// The [`IMPORT`](crate::scripts::IMPORT) values of `lease`, in [`FIELDS`] order (`''` for an absent field).
pub(crate) fn import_values(lease: &Lease) -> [String; 10] {
    let id = |w: &Option<WorkerId>| w.as_ref().map_or(String::new(), |w| w.to_string());
    let position = |p: &Option<Position>| match p {
        Some(p) => (p.encode(), p.sub_sequence().to_string()),
        None => (String::new(), String::new()),
    };
    let (checkpoint, checkpoint_sub) = position(&lease.checkpoint);
    let (pending, pending_sub) = position(&lease.pending_checkpoint);
    let deadline = lease.deadline.map_or(String::new(), |d| {
        d.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            .to_string()
    });
    let parents: Vec<&str> = lease.parents.iter().map(ShardId::as_str).collect();
    [
        id(&lease.owner),
        lease.token.0.to_string(),
        deadline,
        checkpoint,
        checkpoint_sub,
        pending,
        pending_sub,
        parents.join(","),
        id(&lease.claim),
        lease.owner_switches_since_checkpoint.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LeaseKey {
        LeaseKey::parse("s", "x").unwrap()
    }

    /// The record values in [`FIELDS`] order, as a script or `HMGET` replies with them.
    fn values(pairs: &[(&str, &str)]) -> Vec<Value> {
        FIELDS
            .iter()
            .map(|f| match pairs.iter().rev().find(|(name, _)| name == f) {
                Some((_, v)) => Value::BulkString(v.as_bytes().to_vec()),
                None => Value::Nil,
            })
            .collect()
    }

    #[test]
    fn decodes_a_full_record() {
        let lease = decode_values(
            &key(),
            &values(&[
                ("owner", "w"),
                ("token", "18446744073709551615"),
                ("deadline", "1700000000123"),
                ("checkpoint", "12345678901234567890123"),
                ("checkpoint_sub", "7"),
                ("pending", "SHARD_END"),
                ("pending_sub", "0"),
                ("parents", "a,b"),
                ("claim", "c"),
                ("owner_switches", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(lease.token, FencingToken(u64::MAX));
        assert_eq!(
            lease.checkpoint,
            Some(Position::sequence_with_sub("12345678901234567890123", 7).unwrap())
        );
        assert_eq!(lease.pending_checkpoint, Some(Position::ShardEnd));
        assert_eq!(lease.parents.len(), 2);
    }

    #[test]
    fn a_corrupt_field_is_named() {
        let base = [("token", "1"), ("owner_switches", "0")];
        let cases: &[(&str, &str, &str)] = &[
            ("token", "abc", "token"),
            ("token", "01", "token"),
            ("token", "18446744073709551616", "token"),
            ("owner", "a\tb", "owner"),
            ("deadline", "-5", "deadline"),
            ("checkpoint", "NOPE", "checkpoint"),
            ("checkpoint_sub", "x", "checkpoint_sub"),
            ("parents", "a,,b", "parents"),
            ("claim", "", "claim"),
            ("owner_switches", "1.5", "owner_switches"),
        ];
        for (name, value, expected) in cases {
            let mut pairs: Vec<(&str, &str)> =
                base.iter().filter(|(f, _)| f != name).copied().collect();
            pairs.push((name, value));
            if *name == "checkpoint_sub" {
                pairs.push(("checkpoint", "5"));
            }
            let err = decode_values(&key(), &values(&pairs)).unwrap_err();
            assert_eq!(err.field(), Some(*expected), "{name}={value}: {err}");
        }
        let err = decode_values(&key(), &values(&[("owner_switches", "0")])).unwrap_err();
        assert_eq!(err.field(), Some("token"));
    }

    #[test]
    fn replies_carry_the_record_positionally() {
        let verdict = |status: &str| {
            vec![
                Value::SimpleString(status.to_owned()),
                Value::Int(1_700_000_000_000),
                Value::BulkString(Vec::new()),
            ]
        };
        let reply = decode_reply(&key(), Value::Array(verdict("LOST"))).unwrap();
        assert_eq!((reply.status, reply.lease), (Status::Lost, None));
        assert_eq!(
            reply.now,
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000))
        );
        let mut full = values(&[("owner", "w"), ("token", "3"), ("owner_switches", "1")]);
        full.extend(verdict("OK"));
        let lease = decode_reply(&key(), Value::Array(full))
            .unwrap()
            .lease
            .unwrap();
        assert_eq!(lease.token, FencingToken(3));
        assert_eq!(lease.owner, Some(WorkerId::new("w").unwrap()));
        assert_eq!((lease.checkpoint, lease.deadline), (None, None));
        let mut clockless = verdict("OK");
        clockless[1] = Value::BulkString(Vec::new());
        assert_eq!(
            decode_reply(&key(), Value::Array(clockless)).unwrap().now,
            None
        );
        let mut short = verdict("OK");
        short.push(Value::Nil);
        assert!(decode_reply(&key(), Value::Array(short)).is_err());

        assert_eq!(
            decode_hmget(&key(), Value::Array(vec![Value::Nil; FIELDS.len()])).unwrap(),
            None
        );
        let err = decode_hmget(&key(), Value::Array(values(&[("owner", "w")]))).unwrap_err();
        assert_eq!(err.field(), Some("token"));
    }

    #[test]
    fn renew_many_entries_decode_in_field_order() {
        let keys = [
            (LeaseKey::parse("s", "a").unwrap(), FencingToken(1)),
            (LeaseKey::parse("s", "b").unwrap(), FencingToken(2)),
        ];
        let entry = |text: &str| Value::BulkString(text.as_bytes().to_vec());
        let ok = "OK\nw\n1\n1700000000000\n42\n0\n\n\na,b\n\n0";
        let reply = Value::Array(vec![entry("OK"), entry("1"), entry(ok), entry("LOST")]);
        let mut outcome = RenewOutcome::default();
        decode_renew_many(&keys, reply, &mut outcome).unwrap();
        assert_eq!(outcome.lost, vec![keys[1].0.clone()]);
        let lease = &outcome.renewed[0];
        assert_eq!(lease.checkpoint, Some(Position::sequence("42").unwrap()));
        assert_eq!(lease.parents.len(), 2);
        assert_eq!(
            (lease.pending_checkpoint.as_ref(), lease.claim.as_ref()),
            (None, None)
        );

        for bad in ["OK\nw\n1", &format!("{ok}\nextra")] {
            let reply = Value::Array(vec![entry("OK"), entry("1"), entry(bad), entry("LOST")]);
            assert!(decode_renew_many(&keys, reply, &mut RenewOutcome::default()).is_err());
        }
        let corrupt = Value::Array(vec![entry("CORRUPT"), entry("2"), entry("claim")]);
        let err = decode_renew_many(&keys, corrupt, &mut RenewOutcome::default()).unwrap_err();
        assert_eq!(err.field(), Some("claim"));
        assert!(err.to_string().contains("s/b"), "{err}");
    }

    #[test]
    fn position_args_are_canonical_decimal_text() {
        let [text, sub] = position_args(&Position::sequence_with_sub("0042", 9).unwrap());
        assert_eq!((text.as_str(), sub.as_str()), ("42", "9"));
        let [text, sub] = position_args(&Position::AtTimestamp(5));
        assert_eq!((text.as_str(), sub.as_str()), ("AT_TIMESTAMP:5", "0"));
    }
}

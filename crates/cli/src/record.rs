//! The export format: one JSON object per line, one lease record each, with a `version` field.
//!
//! ```json
//! {"version":1,"stream":"orders","shard":"shard-0","owner":"w1","token":7,
//!  "deadline_unix_us":1764440000123000,"checkpoint":"4959","checkpoint_sub":0,
//!  "pending_checkpoint":null,"pending_checkpoint_sub":0,"parents":["shard-p"],
//!  "claim":null,"owner_switches_since_checkpoint":2}
//! ```
//!
//! Positions are in their stored text form (`TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP:<ms>`,
//! `SHARD_END`, or a sequence number's digits) with the sub-sequence beside them; the deadline
//! is the store-clock instant as stored, in microseconds since the Unix epoch (null when free).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use checkpoint_core::{
    Error, FencingToken, Lease, LeaseKey, Position, Result, ShardId, StreamName, WorkerId,
};
use serde::{Deserialize, Serialize};

/// The format version this build writes and the newest it reads.
pub(crate) const VERSION: u32 = 1;

/// One line of an export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    version: u32,
    stream: String,
    shard: String,
    owner: Option<String>,
    token: u64,
    deadline_unix_us: Option<u64>,
    checkpoint: Option<String>,
    #[serde(default)]
    checkpoint_sub: u64,
    pending_checkpoint: Option<String>,
    #[serde(default)]
    pending_checkpoint_sub: u64,
    #[serde(default)]
    parents: Vec<String>,
    claim: Option<String>,
    #[serde(default)]
    owner_switches_since_checkpoint: u64,
}

impl Record {
    /// The line of `lease`.
    pub(crate) fn from_lease(lease: &Lease) -> Self {
        let position = |p: &Option<Position>| {
            (
                p.as_ref().map(Position::encode),
                p.as_ref().map_or(0, Position::sub_sequence),
            )
        };
        let (checkpoint, checkpoint_sub) = position(&lease.checkpoint);
        let (pending_checkpoint, pending_checkpoint_sub) = position(&lease.pending_checkpoint);
        Self {
            version: VERSION,
            stream: lease.key.stream.to_string(),
            shard: lease.key.shard.to_string(),
            owner: lease.owner.as_ref().map(ToString::to_string),
            token: lease.token.0,
            deadline_unix_us: lease.deadline.map(|d| {
                u64::try_from(d.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros())
                    .unwrap_or(u64::MAX)
            }),
            checkpoint,
            checkpoint_sub,
            pending_checkpoint,
            pending_checkpoint_sub,
            parents: lease.parents.iter().map(ToString::to_string).collect(),
            claim: lease.claim.as_ref().map(ToString::to_string),
            owner_switches_since_checkpoint: lease.owner_switches_since_checkpoint,
        }
    }

    /// The record as a [`Lease`]; a field the contract's types reject is
    /// [`Error::InvalidInput`] naming it.
    pub(crate) fn into_lease(self) -> Result<Lease> {
        let worker = |w: Option<String>| w.map(WorkerId::new).transpose();
        let position = |field, text: Option<String>, sub| {
            text.map(|t| Position::decode(field, &t, sub)).transpose()
        };
        Ok(Lease {
            key: LeaseKey::new(StreamName::new(self.stream)?, ShardId::new(self.shard)?),
            owner: worker(self.owner)?,
            token: FencingToken(self.token),
            deadline: self
                .deadline_unix_us
                .map(|us| UNIX_EPOCH + Duration::from_micros(us)),
            checkpoint: position("checkpoint", self.checkpoint, self.checkpoint_sub)?,
            pending_checkpoint: position(
                "pending_checkpoint",
                self.pending_checkpoint,
                self.pending_checkpoint_sub,
            )?,
            parents: self
                .parents
                .into_iter()
                .map(ShardId::new)
                .collect::<Result<_>>()?,
            claim: worker(self.claim)?,
            owner_switches_since_checkpoint: self.owner_switches_since_checkpoint,
        })
    }
}

/// One JSON line of `lease`.
pub(crate) fn to_line(lease: &Lease) -> String {
    serde_json::to_string(&Record::from_lease(lease)).expect("a record always serialises")
}

/// Parses line `number` (1-based) of an export. A line that is not a record of a version this
/// build reads is [`Error::InvalidInput`] on `record`, naming the line.
pub(crate) fn parse_line(number: usize, line: &str) -> Result<Lease> {
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let version: Versioned = serde_json::from_str(line)
        .map_err(|e| Error::invalid("record", format!("line {number}: {e}")))?;
    if version.version > VERSION {
        return Err(Error::invalid(
            "version",
            format!(
                "line {number}: format version {} is newer than this build reads ({VERSION}); \
                 use a newer checkpointctl",
                version.version
            ),
        ));
    }
    let record: Record = serde_json::from_str(line)
        .map_err(|e| Error::invalid("record", format!("line {number}: {e}")))?;
    record.into_lease().map_err(|e| match e {
        Error::InvalidInput { field, reason } => {
            Error::invalid(field, format!("line {number}: {reason}"))
        }
        other => other,
    })
}

/// A stored deadline as text: RFC 3339 UTC with milliseconds.
pub(crate) fn deadline_text(deadline: SystemTime) -> String {
    humantime::format_rfc3339_millis(deadline).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            key: LeaseKey::parse("orders", "shard-1").unwrap(),
            owner: Some(WorkerId::new("w1").unwrap()),
            token: FencingToken(u64::MAX),
            deadline: Some(UNIX_EPOCH + Duration::from_micros(1_764_440_000_123_456)),
            checkpoint: Some(
                Position::sequence_with_sub("123456789012345678901234567890", 3).unwrap(),
            ),
            pending_checkpoint: Some(Position::ShardEnd),
            parents: vec![ShardId::new("shard-0").unwrap()],
            claim: Some(WorkerId::new("w2").unwrap()),
            owner_switches_since_checkpoint: 9,
        }
    }

    #[test]
    fn a_record_round_trips_exactly() {
        let line = to_line(&lease());
        assert_eq!(parse_line(1, &line).unwrap(), lease());
    }

    #[test]
    fn a_newer_version_is_refused() {
        let line = to_line(&lease()).replace("\"version\":1", "\"version\":2");
        let err = parse_line(4, &line).unwrap_err();
        assert_eq!(err.field(), Some("version"));
        assert!(err.to_string().contains("line 4"), "{err}");
    }

    #[test]
    fn a_bad_field_is_named_with_its_line() {
        let line = to_line(&lease()).replace("\"123456789012345678901234567890\"", "\"12x\"");
        let err = parse_line(2, &line).unwrap_err();
        assert_eq!(err.field(), Some("checkpoint"));
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse_line(3, "{not json").unwrap_err();
        assert_eq!(err.field(), Some("record"));
    }
}

//! The text of a [`KinesisSource`](crate::KinesisSource) cursor: the shard iterator, and where to
//! get a new one if it expires.

use checkpoint_core::{Error, Position, Result, SequenceNumber};

use crate::source::Cursor;

/// Where reading continues when an iterator has to be requested again: what was delivered so
/// far decides it, never the last checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// Nothing read yet from an initial position (`TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`).
    Start(Position),
    /// Nothing read yet from a checkpoint: `AT_SEQUENCE_NUMBER` of `sequence`, skipping the
    /// user records at or before (`sequence`, `sub_sequence`), which were checkpointed. A
    /// checkpoint inside an aggregated record so resumes at the aggregate's next user record.
    At {
        sequence: SequenceNumber,
        sub_sequence: u64,
    },
    /// `AFTER_SEQUENCE_NUMBER` of the last Kinesis record read: every user record of it was
    /// delivered (a read delivers whole aggregates).
    After(SequenceNumber),
}

impl Resume {
    /// The Kinesis record reading left off at (`None` before any), for judging the end of a
    /// closed shard.
    pub(crate) fn last_sequence(&self) -> Option<&SequenceNumber> {
        match self {
            Self::Start(_) => None,
            Self::At { sequence, .. } | Self::After(sequence) => Some(sequence),
        }
    }

    /// Whether the user record (`sequence`, `sub_sequence`) was already checkpointed and must
    /// be skipped.
    pub(crate) fn skips(&self, sequence: &SequenceNumber, sub_sequence: u64) -> bool {
        match self {
            Self::At {
                sequence: at,
                sub_sequence: through,
            } => (sequence, sub_sequence) <= (at, *through),
            Self::Start(_) | Self::After(_) => false,
        }
    }

    fn encode(&self) -> String {
        match self {
            Self::Start(position) => format!("start:{position}"),
            Self::At {
                sequence,
                sub_sequence,
            } => format!("at:{sequence}:{sub_sequence}"),
            Self::After(sequence) => format!("after:{sequence}"),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        let (kind, rest) = text.split_once(':')?;
        match kind {
            "start" => {
                let position = Position::decode("cursor", rest, 0).ok()?;
                matches!(
                    position,
                    Position::TrimHorizon | Position::Latest | Position::AtTimestamp(_)
                )
                .then_some(Self::Start(position))
            }
            "at" => {
                let (sequence, sub) = rest.split_once(':')?;
                Some(Self::At {
                    sequence: SequenceNumber::new(sequence).ok()?,
                    sub_sequence: sub.parse().ok()?,
                })
            }
            "after" => Some(Self::After(SequenceNumber::new(rest).ok()?)),
            _ => None,
        }
    }
}

/// A cursor: `Resume` and the live shard iterator, if one was requested yet (`resume` alone,
/// or `resume iterator`). The empty cursor is the end of the shard.
pub(crate) fn encode(resume: &Resume, iterator: Option<&str>) -> Cursor {
    match iterator {
        Some(iterator) => Cursor(format!("{} {iterator}", resume.encode())),
        None => Cursor(resume.encode()),
    }
}

/// The parts of a cursor [`encode`] made; anything else is [`Error::InvalidInput`] naming
/// `cursor`.
pub(crate) fn decode(cursor: &Cursor) -> Result<(Resume, Option<&str>)> {
    let bad = || {
        Error::invalid(
            "cursor",
            format!("{cursor:?} was not made by KinesisSource"),
        )
    };
    let (resume, iterator) = match cursor.0.split_once(' ') {
        Some((_, "")) => return Err(bad()),
        Some((resume, iterator)) => (resume, Some(iterator)),
        None => (cursor.0.as_str(), None),
    };
    Ok((Resume::decode(resume).ok_or_else(bad)?, iterator))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(digits: &str) -> SequenceNumber {
        SequenceNumber::new(digits).unwrap()
    }

    #[test]
    fn every_resume_round_trips() {
        for resume in [
            Resume::Start(Position::TrimHorizon),
            Resume::Start(Position::Latest),
            Resume::Start(Position::AtTimestamp(1_700_000_000_000)),
            Resume::At {
                sequence: seq("49590338271490256608559692538361571095921575989136588898"),
                sub_sequence: 3,
            },
            Resume::After(seq("7")),
        ] {
            let cursor = encode(&resume, Some("AAAA/iterator=="));
            assert_eq!(
                decode(&cursor).unwrap(),
                (resume.clone(), Some("AAAA/iterator=="))
            );
            assert_eq!(decode(&encode(&resume, None)).unwrap(), (resume, None));
        }
    }

    #[test]
    fn foreign_cursors_are_refused_naming_the_field() {
        for text in [
            "",
            "7",
            "after:7 ",
            "after:x it",
            "at:7 it",
            "at:7:x it",
            "start:SHARD_END it",
            "start:12 it",
            "later:7 it",
        ] {
            let err = decode(&Cursor(text.to_owned())).unwrap_err();
            assert_eq!(err.field(), Some("cursor"), "{text:?}");
        }
    }

    #[test]
    fn at_skips_what_was_checkpointed_and_nothing_else() {
        let at = Resume::At {
            sequence: seq("100"),
            sub_sequence: 2,
        };
        assert!(at.skips(&seq("100"), 0));
        assert!(at.skips(&seq("100"), 2));
        assert!(!at.skips(&seq("100"), 3));
        assert!(!at.skips(&seq("101"), 0));
        assert!(!Resume::After(seq("100")).skips(&seq("100"), 0));
    }
}

//! The domain types of the contract. Every constructor validates, so an invalid identifier,
//! sequence number or duration cannot exist as a value, and a store never sees one.

use std::cmp::Ordering;
use std::fmt;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};

/// Longest identifier accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest sequence number accepted, in decimal digits.
pub const MAX_SEQUENCE_DIGITS: usize = 128;
/// Shortest lease duration or heartbeat TTL accepted.
pub const MIN_DURATION: Duration = Duration::from_millis(1);
/// Longest lease duration or heartbeat TTL accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

fn validate_id(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "is {} bytes long; at most {MAX_ID_BYTES} are allowed",
                value.len()
            ),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(Error::invalid(
            field,
            format!("contains {bad:?}; only ASCII letters, digits, '-', '_' and '.' are allowed"),
        ));
    }
    Ok(())
}

/// Validates a worker id: opaque text of 1 to 256 bytes without control characters (the
/// contract's decision on worker ids, so KCL ids such as `host:uuid` or `name@host` work).
fn validate_worker_id(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "is {} bytes long; at most {MAX_ID_BYTES} are allowed",
                value.len()
            ),
        ));
    }
    if let Some(bad) = value.chars().find(|c| c.is_control()) {
        return Err(Error::invalid(
            field,
            format!("contains the control character {bad:?}"),
        ));
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        identifier!(
            $(#[$doc])* $name,
            $field,
            validate_id,
            "1 to 256 bytes of ASCII letters, digits, `-`, `_` and `.`: the characters Kinesis \
             and Kafka allow in stream names, and none that a SQL statement, a Redis key layout \
             or a DynamoDB key could give a meaning to."
        );
    };
    ($(#[$doc:meta])* $name:ident, $field:literal, $validate:ident, $rule:literal) => {
        $(#[$doc])*
        ///
        #[doc = $rule]
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The field name used in [`Error::InvalidInput`] for this identifier.
            pub const FIELD: &'static str = $field;

            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self> {
                let value = value.into();
                $validate($field, &value)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }
    };
}

identifier!(
    /// The consumer application. A store handle is opened for one app; two apps never see each
    /// other's records.
    ///
    /// ```
    /// use checkpoint_core::AppName;
    ///
    /// let app = AppName::new("billing")?;
    /// assert_eq!(app.to_string(), "billing");
    /// let err = AppName::new("x'; DROP TABLE leases;--").unwrap_err();
    /// assert_eq!(err.field(), Some("app")); // typed, names the field
    /// # Ok::<(), checkpoint_core::Error>(())
    /// ```
    AppName,
    "app"
);
identifier!(
    /// A stream (Kinesis stream, Kafka topic, journal) of one app.
    StreamName,
    "stream"
);
identifier!(
    /// A shard (partition) of a stream.
    ShardId,
    "shard_id"
);
identifier!(
    /// A worker: a process or task that holds leases. Ordered (and listed) by its bytes.
    ///
    /// ```
    /// use checkpoint_core::WorkerId;
    ///
    /// let me = WorkerId::new("ip-10-0-0-1.ec2.internal:4f3c9a2e-6b1d-4c55-9d0e-1b2c3d4e5f60")?;
    /// assert_eq!(me.as_str(), "ip-10-0-0-1.ec2.internal:4f3c9a2e-6b1d-4c55-9d0e-1b2c3d4e5f60");
    /// assert_eq!(WorkerId::new("").unwrap_err().field(), Some("worker_id"));
    /// assert_eq!(WorkerId::new("a\nb").unwrap_err().field(), Some("worker_id"));
    /// # Ok::<(), checkpoint_core::Error>(())
    /// ```
    WorkerId,
    "worker_id",
    validate_worker_id,
    "Opaque text of 1 to 256 bytes without control characters (`char::is_control`): KCL ids \
     such as `host:uuid` or `name@host` work unchanged. Stores bind it as a value (a SQL \
     parameter, a Lua argument, a DynamoDB attribute value), never as part of a statement or of \
     a key name that another id could collide with."
);

/// The key of a lease: one shard of one stream.
///
/// ```
/// use checkpoint_core::LeaseKey;
///
/// let key = LeaseKey::parse("orders", "shardId-000000000000")?;
/// assert_eq!(key.to_string(), "orders/shardId-000000000000");
/// assert_eq!(LeaseKey::parse("orders", "a:b").unwrap_err().field(), Some("shard_id"));
/// # Ok::<(), checkpoint_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseKey {
    /// The stream.
    pub stream: StreamName,
    /// The shard of that stream.
    pub shard: ShardId,
}

impl LeaseKey {
    /// A key from already validated parts.
    pub fn new(stream: StreamName, shard: ShardId) -> Self {
        Self { stream, shard }
    }

    /// Validates both parts.
    pub fn parse(stream: &str, shard: &str) -> Result<Self> {
        Ok(Self::new(StreamName::new(stream)?, ShardId::new(shard)?))
    }
}

impl fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stream, self.shard)
    }
}

/// The fencing token of a lease. It strictly increases every time ownership is granted and never
/// decreases; a write carrying an older token is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FencingToken(pub u64);

impl FencingToken {
    /// The token after the next grant.
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A sequence number: 1 to 128 decimal digits compared as an unsigned integer. Leading zeros do
/// not change the value; the canonical form has none (`"0"` for zero).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SequenceNumber(String);

impl SequenceNumber {
    /// The field name used in [`Error::InvalidInput`].
    pub const FIELD: &'static str = "sequence_number";

    /// Validates and normalises `digits`.
    pub fn new(digits: &str) -> Result<Self> {
        if digits.is_empty() {
            return Err(Error::invalid(Self::FIELD, "must not be empty"));
        }
        if digits.len() > MAX_SEQUENCE_DIGITS {
            return Err(Error::invalid(
                Self::FIELD,
                format!(
                    "is {} characters long; at most {MAX_SEQUENCE_DIGITS} digits are allowed",
                    digits.len()
                ),
            ));
        }
        if let Some(bad) = digits.chars().find(|c| !c.is_ascii_digit()) {
            return Err(Error::invalid(
                Self::FIELD,
                format!("contains {bad:?}; only the digits 0-9 are allowed"),
            ));
        }
        let trimmed = digits.trim_start_matches('0');
        Ok(Self(if trimmed.is_empty() {
            "0".to_owned()
        } else {
            trimmed.to_owned()
        }))
    }

    /// The canonical digits, without leading zeros.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits left-padded with zeros to 128 characters: byte-wise order of padded strings is
    /// numeric order, which lets a store compare sequence numbers as plain text.
    pub fn padded(&self) -> String {
        format!("{:0>width$}", self.0, width = MAX_SEQUENCE_DIGITS)
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SequenceNumber {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// A position in a shard: what a checkpoint stores.
///
/// ```
/// use std::cmp::Ordering;
/// use checkpoint_core::Position;
///
/// let nine = Position::sequence("9")?;
/// let ten = Position::sequence("0010")?; // leading zeros do not change the value
/// assert_eq!(nine.cmp_progress(&ten), Ordering::Less); // numeric, not text, order
/// assert_eq!(Position::TrimHorizon.cmp_progress(&nine), Ordering::Less);
/// assert_eq!(ten.cmp_progress(&Position::ShardEnd), Ordering::Less);
/// assert!(Position::sequence("12a").is_err());
/// # Ok::<(), checkpoint_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Position {
    /// Start from the oldest record still in the shard.
    TrimHorizon,
    /// Start after the newest record.
    Latest,
    /// Start from the first record at or after this instant, in milliseconds since the Unix
    /// epoch.
    AtTimestamp(u64),
    /// After this record (and sub-record, for aggregated records).
    Sequence {
        /// The record's sequence number.
        sequence: SequenceNumber,
        /// The sub-sequence within an aggregated record; 0 otherwise.
        sub_sequence: u64,
    },
    /// The shard is closed and every record was processed. Terminal: nothing later is accepted.
    ShardEnd,
}

/// The coarse order of positions: initial positions, then sequence numbers, then the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PositionRank {
    /// `TRIM_HORIZON`, `LATEST` or `AT_TIMESTAMP`: where to start, before any record.
    Initial = 0,
    /// A sequence number.
    Sequence = 1,
    /// `SHARD_END`.
    End = 2,
}

impl Position {
    /// A sequence position with sub-sequence 0.
    pub fn sequence(digits: &str) -> Result<Self> {
        Self::sequence_with_sub(digits, 0)
    }

    /// A sequence position with a sub-sequence.
    pub fn sequence_with_sub(digits: &str, sub_sequence: u64) -> Result<Self> {
        Ok(Self::Sequence {
            sequence: SequenceNumber::new(digits)?,
            sub_sequence,
        })
    }

    /// Where this position stands in the coarse order.
    pub fn rank(&self) -> PositionRank {
        match self {
            Self::TrimHorizon | Self::Latest | Self::AtTimestamp(_) => PositionRank::Initial,
            Self::Sequence { .. } => PositionRank::Sequence,
            Self::ShardEnd => PositionRank::End,
        }
    }

    /// Progress order used by the monotonicity rule: by rank, then (sequence, sub-sequence).
    /// Initial positions are all equal to each other: moving between them is not a regression.
    pub fn cmp_progress(&self, other: &Self) -> Ordering {
        match (self, other) {
            (
                Self::Sequence {
                    sequence: a,
                    sub_sequence: sa,
                },
                Self::Sequence {
                    sequence: b,
                    sub_sequence: sb,
                },
            ) => a.cmp(b).then(sa.cmp(sb)),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    /// The stored text form: `TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP:<ms>`, `SHARD_END`, or the
    /// canonical digits of a sequence number (the sub-sequence is stored beside it).
    pub fn encode(&self) -> String {
        match self {
            Self::TrimHorizon => "TRIM_HORIZON".to_owned(),
            Self::Latest => "LATEST".to_owned(),
            Self::AtTimestamp(ms) => format!("AT_TIMESTAMP:{ms}"),
            Self::Sequence { sequence, .. } => sequence.as_str().to_owned(),
            Self::ShardEnd => "SHARD_END".to_owned(),
        }
    }

    /// The sub-sequence to store beside [`Position::encode`]: 0 except for sequences.
    pub fn sub_sequence(&self) -> u64 {
        match self {
            Self::Sequence { sub_sequence, .. } => *sub_sequence,
            _ => 0,
        }
    }

    /// Parses the stored text form written by [`Position::encode`]. A value that does not parse
    /// is reported as [`Error::InvalidInput`] naming `field`; stores turn it into
    /// [`Error::Corrupt`] when it came from a stored record.
    pub fn decode(field: &'static str, text: &str, sub_sequence: u64) -> Result<Self> {
        let position = match text {
            "TRIM_HORIZON" => Self::TrimHorizon,
            "LATEST" => Self::Latest,
            "SHARD_END" => Self::ShardEnd,
            _ => {
                if let Some(ms) = text.strip_prefix("AT_TIMESTAMP:") {
                    let ms = ms.parse::<u64>().map_err(|_| {
                        Error::invalid(field, format!("bad AT_TIMESTAMP value {ms:?}"))
                    })?;
                    Self::AtTimestamp(ms)
                } else {
                    let sequence = SequenceNumber::new(text)
                        .map_err(|e| Error::invalid(field, e.to_string()))?;
                    return Ok(Self::Sequence {
                        sequence,
                        sub_sequence,
                    });
                }
            }
        };
        if sub_sequence != 0 {
            return Err(Error::invalid(
                field,
                "a sub-sequence is only allowed on a sequence number",
            ));
        }
        Ok(position)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sequence {
                sequence,
                sub_sequence,
            } => write!(f, "{sequence}.{sub_sequence}"),
            other => f.write_str(&other.encode()),
        }
    }
}

fn validate_duration(field: &'static str, value: Duration) -> Result<()> {
    if value < MIN_DURATION {
        return Err(Error::invalid(
            field,
            format!("{value:?} is shorter than the minimum {MIN_DURATION:?}"),
        ));
    }
    if value > MAX_DURATION {
        return Err(Error::invalid(
            field,
            format!("{value:?} is longer than the maximum {MAX_DURATION:?}"),
        ));
    }
    Ok(())
}

macro_rules! bounded_duration {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        ///
        /// Between 1 ms and 24 h; stores keep millisecond precision.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Duration);

        impl $name {
            /// The field name used in [`Error::InvalidInput`].
            pub const FIELD: &'static str = $field;

            /// Validates `value`.
            pub fn new(value: Duration) -> Result<Self> {
                validate_duration($field, value)?;
                Ok(Self(Duration::from_millis(value.as_millis() as u64)))
            }

            /// Validates a duration given in milliseconds.
            pub fn from_millis(ms: u64) -> Result<Self> {
                Self::new(Duration::from_millis(ms))
            }

            /// The duration.
            pub fn get(self) -> Duration {
                self.0
            }

            /// Whole milliseconds (at least 1).
            pub fn as_millis(self) -> u64 {
                self.0.as_millis() as u64
            }
        }
    };
}

bounded_duration!(
    /// How long a granted or renewed lease stays valid without renewal.
    ///
    /// ```
    /// use std::time::Duration;
    /// use checkpoint_core::LeaseDuration;
    ///
    /// let d = LeaseDuration::new(Duration::from_secs(10))?;
    /// assert_eq!(d.as_millis(), 10_000);
    /// assert_eq!(LeaseDuration::new(Duration::ZERO).unwrap_err().field(), Some("duration"));
    /// # Ok::<(), checkpoint_core::Error>(())
    /// ```
    LeaseDuration,
    "duration"
);
bounded_duration!(
    /// How long a worker's membership stays live without a heartbeat.
    HeartbeatTtl,
    "ttl"
);

/// A lease record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Which shard.
    pub key: LeaseKey,
    /// The worker holding it, if any.
    pub owner: Option<WorkerId>,
    /// The fencing token: bumped on every grant of ownership, never reset.
    pub token: FencingToken,
    /// Store-clock instant after which a holder that did not renew has lost it.
    pub deadline: Option<SystemTime>,
    /// The last checkpointed position.
    pub checkpoint: Option<Position>,
    /// A prepared (two-phase) position, cleared by the next checkpoint.
    pub pending_checkpoint: Option<Position>,
    /// Parent shards (resharding): the shard is processed only after each reached `SHARD_END`
    /// or was removed.
    pub parents: Vec<ShardId>,
    /// A worker that asked the holder for a graceful hand-off.
    pub claim: Option<WorkerId>,
    /// Grants to a new owner since the last checkpoint (diagnostics, as the KCL keeps it).
    pub owner_switches_since_checkpoint: u64,
}

impl Lease {
    /// A new record: free, token 0.
    pub fn new(key: LeaseKey, parents: Vec<ShardId>, checkpoint: Option<Position>) -> Self {
        Self {
            key,
            owner: None,
            token: FencingToken(0),
            deadline: None,
            checkpoint,
            pending_checkpoint: None,
            parents,
            claim: None,
            owner_switches_since_checkpoint: 0,
        }
    }

    /// Whether some worker holds the lease and its deadline is after `now`.
    pub fn is_live_at(&self, now: SystemTime) -> bool {
        self.owner.is_some() && self.deadline.is_some_and(|d| d > now)
    }

    /// The claimant a free lease is reserved for at `now`: the lease was released while it
    /// carried a claim, and the released holder's deadline is after `now` (contract, "Claims").
    pub fn reserved_for(&self, now: SystemTime) -> Option<&WorkerId> {
        if self.owner.is_some() || self.deadline.is_none_or(|d| d <= now) {
            return None;
        }
        self.claim.as_ref()
    }

    /// Whether `worker` holds this lease with `token` (live or not).
    pub fn is_held_by(&self, worker: &WorkerId, token: FencingToken) -> bool {
        self.owner.as_ref() == Some(worker) && self.token == token
    }
}

/// The instance nonce of a store handle: 128 random bits, written as 32 lowercase hex digits.
///
/// Every membership record carries the nonce of the handle that registered it, so two
/// processes started with one worker id are told apart (contract, operation 12): a handle
/// cannot register or heartbeat an id whose live record carries another nonce
/// ([`crate::Error::WorkerIdInUse`]). Each store handle draws one when it is opened; its clones
/// share it, as they are the same instance.
///
/// ```
/// use checkpoint_core::InstanceId;
///
/// let (a, b) = (InstanceId::random(), InstanceId::random());
/// assert_ne!(a, b);
/// assert_eq!(a.as_str().len(), 32);
/// assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct InstanceId(String);

impl InstanceId {
    /// A fresh nonce from the thread's random generator.
    pub fn random() -> Self {
        Self(format!("{:032x}", rand::random::<u128>()))
    }

    /// The nonce as stored: 32 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({})", self.0)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which leases a renew-many call renewed and which it found lost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenewOutcome {
    /// The renewed records, sorted by key (a holder reads hand-off claims from them).
    pub renewed: Vec<Lease>,
    /// Keys that were no longer held with the given token (or no longer exist), sorted.
    pub lost: Vec<LeaseKey>,
}

/// Every record of a listing and the instant, on the store's clock, at which the store judged
/// them: what a runtime needs to decide liveness without comparing a stored deadline with its
/// own wall clock (contract, "Store clock").
///
/// `store_now` is the server's clock for PostgreSQL (`clock_timestamp()`) and Redis (`TIME`),
/// the host clock for memory and SQLite, and for DynamoDB the handle's clock minus its skew
/// allowance (the instant its own `get_lease` judges expiry at). It is read before the records,
/// so a lease is never judged to have less time left than the store gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// The records, sorted by key, as [`crate::LeaseManager::list_leases`] returns them.
    pub leases: Vec<Lease>,
    /// The store-clock instant the records were judged at.
    pub store_now: SystemTime,
}

impl Listing {
    /// Time left before `lease` expires, as the store judges it: zero when free or expired.
    pub fn remaining(&self, lease: &Lease) -> Duration {
        if lease.owner.is_none() {
            return Duration::ZERO;
        }
        lease
            .deadline
            .and_then(|d| d.duration_since(self.store_now).ok())
            .unwrap_or_default()
    }

    /// Whether some worker holds `lease` and the store would refuse it to another worker.
    pub fn is_live(&self, lease: &Lease) -> bool {
        lease.is_live_at(self.store_now)
    }

    /// The claimant `lease` is reserved for, as the store judges it (see [`Lease::reserved_for`]).
    pub fn reserved_for<'a>(&self, lease: &'a Lease) -> Option<&'a WorkerId> {
        lease.reserved_for(self.store_now)
    }

    /// Time left of the claimant's reservation of `lease`: zero when not reserved.
    pub fn reservation_remaining(&self, lease: &Lease) -> Duration {
        if self.reserved_for(lease).is_none() {
            return Duration::ZERO;
        }
        lease
            .deadline
            .and_then(|d| d.duration_since(self.store_now).ok())
            .unwrap_or_default()
    }
}

//! [`KinesisConfig`]: how a [`KinesisSource`](crate::KinesisSource) reads, with the KCL's
//! defaults and names.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use checkpoint_core::{Error, Position, Result};

/// The most records one `GetRecords` call may return (a Kinesis limit, and the KCL default).
pub(crate) const MAX_RECORDS: usize = 10_000;

/// The shortest idle time between reads of one shard: Kinesis serves 5 `GetRecords` per second
/// per shard, shared by every application reading it (the KCL's
/// `MIN_IDLE_MILLIS_BETWEEN_READS`).
pub(crate) const MIN_IDLE_TIME: Duration = Duration::from_millis(200);

/// Where a shard without a checkpoint starts (the KCL's `InitialPositionInStream`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitialPosition {
    /// New records only: those put after the shard is first read. The KCL default.
    #[default]
    Latest,
    /// The oldest record the stream still holds.
    TrimHorizon,
    /// The first record that arrived at or after the instant.
    AtTimestamp(SystemTime),
}

impl InitialPosition {
    /// As a checkpoint position; an instant before 1970 is [`Error::InvalidInput`] naming
    /// `initial_position`.
    pub(crate) fn to_position(self) -> Result<Position> {
        match self {
            Self::Latest => Ok(Position::Latest),
            Self::TrimHorizon => Ok(Position::TrimHorizon),
            Self::AtTimestamp(at) => {
                let ms = at
                    .duration_since(UNIX_EPOCH)
                    .map_err(|_| Error::invalid("initial_position", "the instant is before 1970"))?
                    .as_millis();
                let ms = u64::try_from(ms)
                    .ok()
                    .filter(|ms| i64::try_from(*ms).is_ok())
                    .ok_or_else(|| Error::invalid("initial_position", "the instant is too late"))?;
                Ok(Position::AtTimestamp(ms))
            }
        }
    }
}

/// How a [`KinesisSource`](crate::KinesisSource) reads a stream. Build one with
/// [`KinesisConfig::builder`]; [`KinesisConfigBuilder::build`] checks every value (a bad one is
/// [`Error::InvalidInput`] naming it).
///
/// The settings, beside the KCL 2.x/3.x polling settings they correspond to (`PollingConfig`,
/// `RetrievalConfig`), with the same defaults:
///
/// | here | KCL | default (both) | valid |
/// | --- | --- | --- | --- |
/// | [`with_initial_position`](KinesisConfigBuilder::with_initial_position) | `initialPositionInStreamExtended` | `LATEST` | `LATEST`, `TRIM_HORIZON`, `AT_TIMESTAMP` (a `SystemTime` after 1970) |
/// | [`with_max_records`](KinesisConfigBuilder::with_max_records) | `maxRecords` | 10 000 | 1 to 10 000 |
/// | [`with_idle_time_between_reads`](KinesisConfigBuilder::with_idle_time_between_reads) | `idleTimeBetweenReadsInMillis` | 1 500 ms | 200 ms (`MIN_IDLE_MILLIS_BETWEEN_READS`) to 1 h |
/// | [`with_max_throttle_delay`](KinesisConfigBuilder::with_max_throttle_delay) | (none: the KCL logs a throttled read and tries again after the idle time) | 10 s | the idle time to 1 h |
///
/// Two departures, both written down where they apply:
/// - A worker's [`WorkerConfig`](crate::WorkerConfig) also caps each read at its batch size
///   (default 1000 records): a `GetRecords` asks for `min(max_records, batch size)` records. For
///   the KCL's 10 000, set both.
/// - An explicit [`WorkerConfigBuilder::with_initial_position`](crate::WorkerConfigBuilder::with_initial_position)
///   wins over this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KinesisConfig {
    pub(crate) initial_position: Position,
    pub(crate) max_records: usize,
    pub(crate) idle_time_between_reads: Duration,
    pub(crate) max_throttle_delay: Duration,
}

impl Default for KinesisConfig {
    fn default() -> Self {
        Self {
            initial_position: Position::Latest,
            max_records: MAX_RECORDS,
            idle_time_between_reads: Duration::from_millis(1500),
            max_throttle_delay: Duration::from_secs(10),
        }
    }
}

impl KinesisConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> KinesisConfigBuilder {
        KinesisConfigBuilder {
            initial_position: InitialPosition::Latest,
            config: Self::default(),
        }
    }

    /// Where a shard without a checkpoint starts.
    pub fn initial_position(&self) -> &Position {
        &self.initial_position
    }

    /// The most records one `GetRecords` asks for.
    pub fn max_records(&self) -> usize {
        self.max_records
    }

    /// The least time between the starts of two `GetRecords` calls on one shard.
    pub fn idle_time_between_reads(&self) -> Duration {
        self.idle_time_between_reads
    }

    /// The longest wait after a throttled read.
    pub fn max_throttle_delay(&self) -> Duration {
        self.max_throttle_delay
    }
}

/// Builds a [`KinesisConfig`]; each setter states its default.
#[derive(Clone, Debug)]
pub struct KinesisConfigBuilder {
    initial_position: InitialPosition,
    config: KinesisConfig,
}

impl KinesisConfigBuilder {
    /// Where a shard without a checkpoint starts (KCL `initialPositionInStreamExtended`).
    /// Default [`InitialPosition::Latest`], as in the KCL.
    pub fn with_initial_position(mut self, position: InitialPosition) -> Self {
        self.initial_position = position;
        self
    }

    /// The most records one `GetRecords` asks for (KCL `maxRecords`), 1 to 10 000. A KPL
    /// aggregated record counts as one however many user records it holds. Default 10 000.
    pub fn with_max_records(mut self, max: usize) -> Self {
        self.config.max_records = max;
        self
    }

    /// The least time between the starts of two `GetRecords` calls on one shard, whether the
    /// previous read was empty or full (KCL `idleTimeBetweenReadsInMillis`, which its
    /// `KinesisSleepTimeController` also counts from the previous call). At least 200 ms, so one
    /// application never takes more than Kinesis' 5 reads per second per shard. Default
    /// 1500 ms.
    pub fn with_idle_time_between_reads(mut self, idle: Duration) -> Self {
        self.config.idle_time_between_reads = idle;
        self
    }

    /// The longest wait after a throttled read (`ProvisionedThroughputExceededException`,
    /// `KMSThrottlingException`) or a transient failure: the n-th consecutive one waits the idle
    /// time plus a random delay up to `min(this, idle time × 2^(n-1))`. The lease is kept
    /// throughout. Default 10 s.
    pub fn with_max_throttle_delay(mut self, max: Duration) -> Self {
        self.config.max_throttle_delay = max;
        self
    }

    /// Checks every setting; a bad one is [`Error::InvalidInput`] naming it.
    pub fn build(self) -> Result<KinesisConfig> {
        let mut c = self.config;
        c.initial_position = self.initial_position.to_position()?;
        if !(1..=MAX_RECORDS).contains(&c.max_records) {
            return Err(Error::invalid(
                "max_records",
                format!("{} is not between 1 and {MAX_RECORDS}", c.max_records),
            ));
        }
        let hour = Duration::from_secs(3600);
        if c.idle_time_between_reads < MIN_IDLE_TIME || c.idle_time_between_reads > hour {
            return Err(Error::invalid(
                "idle_time_between_reads",
                format!(
                    "{:?} is not between 200 ms and 1 h",
                    c.idle_time_between_reads
                ),
            ));
        }
        if c.max_throttle_delay < c.idle_time_between_reads || c.max_throttle_delay > hour {
            return Err(Error::invalid(
                "max_throttle_delay",
                format!(
                    "{:?} is not between the idle time between reads and 1 h",
                    c.max_throttle_delay
                ),
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_kcl_defaults() {
        let c = KinesisConfig::builder().build().unwrap();
        assert_eq!(c, KinesisConfig::default());
        assert_eq!(c.initial_position(), &Position::Latest);
        assert_eq!(c.max_records(), 10_000);
        assert_eq!(c.idle_time_between_reads(), Duration::from_millis(1500));
    }

    #[test]
    fn at_timestamp_takes_a_system_time() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let c = KinesisConfig::builder()
            .with_initial_position(InitialPosition::AtTimestamp(at))
            .build()
            .unwrap();
        assert_eq!(
            c.initial_position(),
            &Position::AtTimestamp(1_700_000_000_123)
        );
        let c = KinesisConfig::builder()
            .with_initial_position(InitialPosition::TrimHorizon)
            .build()
            .unwrap();
        assert_eq!(c.initial_position(), &Position::TrimHorizon);
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let b = KinesisConfig::builder;
        let before_1970 = UNIX_EPOCH - Duration::from_secs(1);
        let cases = [
            (
                b().with_initial_position(InitialPosition::AtTimestamp(before_1970)),
                "initial_position",
            ),
            (b().with_max_records(0), "max_records"),
            (b().with_max_records(10_001), "max_records"),
            (
                b().with_idle_time_between_reads(Duration::from_millis(199)),
                "idle_time_between_reads",
            ),
            (
                b().with_idle_time_between_reads(Duration::from_secs(3601)),
                "idle_time_between_reads",
            ),
            (
                b().with_max_throttle_delay(Duration::from_secs(1)),
                "max_throttle_delay",
            ),
        ];
        for (builder, field) in cases {
            assert_eq!(builder.build().err().and_then(|e| e.field()), Some(field));
        }
        // The bounds themselves are valid.
        b().with_max_records(1)
            .with_idle_time_between_reads(MIN_IDLE_TIME)
            .with_max_throttle_delay(MIN_IDLE_TIME)
            .build()
            .unwrap();
    }
}

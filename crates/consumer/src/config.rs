//! [`WorkerConfig`]: how a worker paces itself, with documented defaults, validated when built.

use std::time::Duration;

use checkpoint_core::{
    Backoff, Error, HeartbeatTtl, LeaseDuration, Position, PositionRank, Result,
};

/// A worker's settings. Build one with [`WorkerConfig::builder`]; every value is checked by
/// [`WorkerConfigBuilder::build`], so a running worker never meets a nonsensical setting (a bad
/// one is [`Error::InvalidInput`] naming it).
///
/// | setting | default | valid |
/// | --- | --- | --- |
/// | lease duration | 10 s | 1 ms to 24 h |
/// | renew interval | 3 s | non-zero, at most half the lease duration |
/// | heartbeat TTL | the lease duration | 1 ms to 24 h |
/// | max leases | no limit | at least 1 |
/// | max leases taken per tick | 4 | at least 1 |
/// | max steals per tick | 1 | 0 (no stealing) to 100 |
/// | balance | [`Balance::Steal`] | steal or claim |
/// | batch size | 1000 records | 1 to 10 000 |
/// | poll interval (after an empty read) | 1 s | non-zero, at most 1 h |
/// | shard sync interval | 10 s | non-zero, at most 24 h |
/// | initial position | the source's ([`ShardSource::initial_position`](crate::ShardSource::initial_position)) | `TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP` |
/// | backoff for transient source faults | [`Backoff::default`] | at least 1 attempt |
/// | shutdown grace period | 30 s | at most 24 h |
///
/// With the defaults a crashed worker's shards are processed again within
/// [`WorkerConfig::failover_bound`] = 13 s, when each surviving worker's share of them is at
/// most 4 (the default leases per tick).
///
/// ```
/// use std::time::Duration;
/// use checkpoint_consumer::{Balance, WorkerConfig};
///
/// let config = WorkerConfig::builder()
///     .with_lease_duration(Duration::from_secs(20))
///     .with_renew_interval(Duration::from_secs(5))
///     .with_balance(Balance::Claim)
///     .build()?;
/// assert_eq!(config.failover_bound(), Duration::from_secs(25));
/// // A renew interval above half the lease duration is refused, naming the setting.
/// let err = WorkerConfig::builder()
///     .with_lease_duration(Duration::from_secs(4))
///     .with_renew_interval(Duration::from_secs(3))
///     .build()
///     .unwrap_err();
/// assert!(err.field().is_some());
/// # Ok::<(), checkpoint_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    pub(crate) lease_duration: LeaseDuration,
    pub(crate) renew_interval: Duration,
    pub(crate) heartbeat_ttl: HeartbeatTtl,
    pub(crate) max_leases: usize,
    pub(crate) max_leases_per_tick: usize,
    pub(crate) max_steals_per_tick: usize,
    pub(crate) batch_size: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) shard_sync_interval: Duration,
    pub(crate) initial_position: Option<Position>,
    pub(crate) backoff: Backoff,
    pub(crate) balance: Balance,
    pub(crate) shutdown_grace: Duration,
}

/// How a worker below its fair share moves a lease away from the most loaded worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Balance {
    /// Take the lease at once with the store's `steal` (conditional on the owner and token the
    /// balancer saw; bumps the token). The victim learns it on its next renewal and stops its
    /// processor with [`ShutdownReason::LeaseLost`](crate::ShutdownReason::LeaseLost); records
    /// it processed after its last checkpoint are delivered again.
    #[default]
    Steal,
    /// Ask the holder to hand the lease over with the store's `claim`. The holder sees the claim
    /// on its next renewal, shuts its processor down with
    /// [`ShutdownReason::Requested`](crate::ShutdownReason::Requested) (which checkpoints) and
    /// releases; the claimant takes the free lease on its next tick. Slower than a steal by one
    /// or two renew intervals, but nothing is delivered twice.
    Claim,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            lease_duration: LeaseDuration::new(Duration::from_secs(10))
                .expect("10 s is a valid lease duration"),
            renew_interval: Duration::from_secs(3),
            heartbeat_ttl: HeartbeatTtl::new(Duration::from_secs(10))
                .expect("10 s is a valid heartbeat TTL"),
            max_leases: usize::MAX,
            max_leases_per_tick: 4,
            max_steals_per_tick: 1,
            batch_size: 1000,
            poll_interval: Duration::from_secs(1),
            shard_sync_interval: Duration::from_secs(10),
            initial_position: None,
            backoff: Backoff::default(),
            balance: Balance::Steal,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl WorkerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> WorkerConfigBuilder {
        WorkerConfigBuilder {
            config: Self::default(),
            lease_duration: Duration::from_secs(10),
            heartbeat_ttl: None,
        }
    }

    /// How long a taken or renewed lease lasts without renewal.
    pub fn lease_duration(&self) -> LeaseDuration {
        self.lease_duration
    }

    /// How often held leases are renewed, membership heartbeated, and leases taken.
    pub fn renew_interval(&self) -> Duration {
        self.renew_interval
    }

    /// How long this worker counts as live without a heartbeat.
    pub fn heartbeat_ttl(&self) -> HeartbeatTtl {
        self.heartbeat_ttl
    }

    /// The longest an abandoned lease can stay unprocessed: it expires one lease duration after
    /// its holder's last renewal (by the store's clock), and a live worker takes it within one
    /// renew interval after that: at once when its wake at the expiry finds it, at its next
    /// tick if that take failed. A take pass sends its grants together, so it costs about one
    /// store round trip however many leases it takes; the bound assumes the store answers well
    /// within the renew interval. A pass takes at most
    /// [`max leases per tick`](WorkerConfigBuilder::with_max_leases_per_tick) (default 4): a
    /// survivor whose share of a crashed worker's leases is larger takes the rest one renew
    /// interval per further `max_leases_per_tick` later.
    pub fn failover_bound(&self) -> Duration {
        self.lease_duration.get() + self.renew_interval
    }
}

/// Builds a [`WorkerConfig`]; see each setter for its default.
#[derive(Clone, Debug)]
pub struct WorkerConfigBuilder {
    config: WorkerConfig,
    lease_duration: Duration,
    heartbeat_ttl: Option<Duration>,
}

impl WorkerConfigBuilder {
    /// How long a taken or renewed lease lasts without renewal: the failover time after a crash.
    /// Default 10 s.
    pub fn with_lease_duration(mut self, duration: Duration) -> Self {
        self.lease_duration = duration;
        self
    }

    /// How often the worker renews its leases, heartbeats, and takes or steals leases. Must be
    /// shorter than half the lease duration, so one lost renewal does not lose a lease.
    /// Default 3 s.
    pub fn with_renew_interval(mut self, interval: Duration) -> Self {
        self.config.renew_interval = interval;
        self
    }

    /// How long the worker counts as live in membership without a heartbeat; the fair share is
    /// computed over live workers. Default: the lease duration.
    pub fn with_heartbeat_ttl(mut self, ttl: Duration) -> Self {
        self.heartbeat_ttl = Some(ttl);
        self
    }

    /// The most leases this worker holds at once. Default: no limit (`usize::MAX`).
    pub fn with_max_leases(mut self, max: usize) -> Self {
        self.config.max_leases = max;
        self
    }

    /// The most free or expired leases taken per pass (each tick, and each wake at another
    /// worker's expiry). Default 4. A share of a crashed worker's leases above it is taken one
    /// renew interval per further `max` later (see [`WorkerConfig::failover_bound`]).
    pub fn with_max_leases_per_tick(mut self, max: usize) -> Self {
        self.config.max_leases_per_tick = max;
        self
    }

    /// The most leases stolen per tick from the most loaded worker (0 disables stealing).
    /// Default 1.
    pub fn with_max_steals_per_tick(mut self, max: usize) -> Self {
        self.config.max_steals_per_tick = max;
        self
    }

    /// The most records per read and per `process_records` call, 1 to 10 000. Default 1000.
    pub fn with_batch_size(mut self, size: usize) -> Self {
        self.config.batch_size = size;
        self
    }

    /// How long to wait before reading a shard again after an empty read. Default 1 s.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval;
        self
    }

    /// How often the source's shard list is synced into leases (also done at once when a shard
    /// this worker holds ends). Default 10 s.
    pub fn with_shard_sync_interval(mut self, interval: Duration) -> Self {
        self.config.shard_sync_interval = interval;
        self
    }

    /// Where a shard without a checkpoint starts: `TRIM_HORIZON`, `LATEST` or `AT_TIMESTAMP`.
    /// Default: the source's
    /// ([`ShardSource::initial_position`](crate::ShardSource::initial_position): `TRIM_HORIZON`
    /// for a [`MemoryStream`](crate::MemoryStream), `LATEST` for a `KinesisSource` as in the
    /// KCL).
    pub fn with_initial_position(mut self, position: Position) -> Self {
        self.config.initial_position = Some(position);
        self
    }

    /// The retry policy for transient faults of the [`ShardSource`](crate::ShardSource)
    /// (listing, opening and reading shards). Store calls are not retried by the worker: every
    /// store retries transient faults inside with its own backoff, the one retry layer, and a
    /// call that still fails is tried again at the next tick. Default [`Backoff::default`].
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// How leases move to a worker below its fair share when none are free: [`Balance::Steal`]
    /// or [`Balance::Claim`]. Default [`Balance::Steal`].
    pub fn with_balance(mut self, balance: Balance) -> Self {
        self.config.balance = balance;
        self
    }

    /// How long [`WorkerHandle::shutdown`](crate::WorkerHandle::shutdown) (and dropping the
    /// handle) waits for processors to shut down before cancelling them and releasing their
    /// leases without a checkpoint. Default 30 s.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// Checks every setting; a bad one is [`Error::InvalidInput`] naming it.
    pub fn build(self) -> Result<WorkerConfig> {
        let mut c = self.config;
        c.lease_duration = LeaseDuration::new(self.lease_duration)
            .map_err(|e| Error::invalid("lease_duration", e.to_string()))?;
        c.heartbeat_ttl = HeartbeatTtl::new(self.heartbeat_ttl.unwrap_or(self.lease_duration))
            .map_err(|e| Error::invalid("heartbeat_ttl", e.to_string()))?;
        if c.renew_interval.is_zero() || c.renew_interval * 2 > c.lease_duration.get() {
            return Err(Error::invalid(
                "renew_interval",
                format!(
                    "{:?} must be non-zero and at most half the lease duration {:?}",
                    c.renew_interval,
                    c.lease_duration.get()
                ),
            ));
        }
        if c.max_leases == 0 {
            return Err(Error::invalid("max_leases", "must be at least 1"));
        }
        if c.max_leases_per_tick == 0 {
            return Err(Error::invalid("max_leases_per_tick", "must be at least 1"));
        }
        if c.max_steals_per_tick > 100 {
            return Err(Error::invalid("max_steals_per_tick", "must be at most 100"));
        }
        if !(1..=10_000).contains(&c.batch_size) {
            return Err(Error::invalid(
                "batch_size",
                format!("{} is not between 1 and 10000", c.batch_size),
            ));
        }
        if c.poll_interval.is_zero() || c.poll_interval > Duration::from_secs(3600) {
            return Err(Error::invalid(
                "poll_interval",
                "must be between 1 ns and 1 h",
            ));
        }
        if c.shard_sync_interval.is_zero() || c.shard_sync_interval > Duration::from_secs(24 * 3600)
        {
            return Err(Error::invalid(
                "shard_sync_interval",
                "must be between 1 ns and 24 h",
            ));
        }
        if let Some(position) = &c.initial_position
            && position.rank() != PositionRank::Initial
        {
            return Err(Error::invalid(
                "initial_position",
                format!("{position} is not TRIM_HORIZON, LATEST or AT_TIMESTAMP"),
            ));
        }
        if c.shutdown_grace > Duration::from_secs(24 * 3600) {
            return Err(Error::invalid("shutdown_grace", "must be at most 24 h"));
        }
        if c.backoff.max_attempts == 0 {
            return Err(Error::invalid("backoff", "max_attempts must be at least 1"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(builder: WorkerConfigBuilder) -> Option<&'static str> {
        builder.build().err().and_then(|e| e.field())
    }

    #[test]
    fn defaults_build() {
        let c = WorkerConfig::builder().build().unwrap();
        assert_eq!(c.lease_duration().get(), Duration::from_secs(10));
        assert_eq!(c.renew_interval(), Duration::from_secs(3));
        assert_eq!(c.heartbeat_ttl().get(), Duration::from_secs(10));
        assert_eq!(c.failover_bound(), Duration::from_secs(13));
        assert_eq!(c, WorkerConfig::default());
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let b = WorkerConfig::builder;
        let cases = [
            (b().with_lease_duration(Duration::ZERO), "lease_duration"),
            (
                b().with_lease_duration(Duration::from_secs(2 * 24 * 3600)),
                "lease_duration",
            ),
            (b().with_heartbeat_ttl(Duration::ZERO), "heartbeat_ttl"),
            (b().with_renew_interval(Duration::ZERO), "renew_interval"),
            (
                b().with_renew_interval(Duration::from_secs(6)),
                "renew_interval",
            ),
            (b().with_max_leases(0), "max_leases"),
            (b().with_max_leases_per_tick(0), "max_leases_per_tick"),
            (b().with_max_steals_per_tick(101), "max_steals_per_tick"),
            (b().with_batch_size(0), "batch_size"),
            (b().with_batch_size(10_001), "batch_size"),
            (b().with_poll_interval(Duration::ZERO), "poll_interval"),
            (
                b().with_shard_sync_interval(Duration::ZERO),
                "shard_sync_interval",
            ),
            (
                b().with_initial_position(Position::ShardEnd),
                "initial_position",
            ),
            (
                b().with_backoff(Backoff {
                    max_attempts: 0,
                    ..Backoff::default()
                }),
                "backoff",
            ),
        ];
        for (builder, expected) in cases {
            assert_eq!(field(builder), Some(expected));
        }
    }

    #[test]
    fn renew_interval_may_be_half_the_lease() {
        let c = WorkerConfig::builder()
            .with_lease_duration(Duration::from_secs(2))
            .with_renew_interval(Duration::from_secs(1))
            .with_max_steals_per_tick(0)
            .build()
            .unwrap();
        assert_eq!(c.failover_bound(), Duration::from_secs(3));
    }
}

//! Expiry without trusting any wall clock: what this handle has observed of each record.
//!
//! DynamoDB has no server clock, and no worker's wall clock may judge another's lease (a clock
//! 30 s ahead would take every 10 s lease while its holder still works). The rule is the KCL's:
//! a record held by another worker is expired once *this handle* has seen its version
//! (`leaseCounter` of a lease, `heartbeatCounter` of a membership record) unchanged for the
//! lease duration (heartbeat TTL), timed on this handle's own monotonic clock. Every write of a
//! holder (a renewal, a heartbeat) bumps the version, which restarts the observation.
//!
//! Every record this handle reads, lists, writes or gets back from a failed condition is an
//! observation ([`Observations::since`]). The instant a version was first seen is the earliest
//! this handle can prove it existed; the holder wrote it before that, so the holder's own
//! deadline (its write + the duration, on its clock) passes before this handle's judgement
//! does, whatever the two wall clocks say. Only clock *rates* matter, and monotonic clocks
//! agree on rates within parts per million.
//!
//! The consequence, as with the KCL: a fresh process (a restarted worker) must watch a lease
//! for one duration before it may take it, even if the holder died long ago. Handles of one
//! process on one table share their observations when that is provably sound (see
//! `client::Tracking`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use checkpoint_core::Clock;

/// The default clock of a handle: monotonic (never steps with NTP or an operator's `date`),
/// expressed as an instant near the wall clock's at the moment the handle was built, so the
/// deadlines it reports can be compared with the local wall clock by a caller.
#[derive(Debug)]
pub(crate) struct MonotonicClock {
    wall: SystemTime,
    start: Instant,
}

impl MonotonicClock {
    /// The process's one default clock, so observations of handles sharing it compare.
    pub(crate) fn process() -> std::sync::Arc<dyn Clock> {
        static CLOCK: std::sync::LazyLock<std::sync::Arc<MonotonicClock>> =
            std::sync::LazyLock::new(|| std::sync::Arc::new(MonotonicClock::new()));
        CLOCK.clone()
    }

    pub(crate) fn new() -> Self {
        Self {
            wall: SystemTime::now(),
            start: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> SystemTime {
        self.wall + self.start.elapsed()
    }
}

impl fmt::Display for MonotonicClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("monotonic clock")
    }
}

/// When each record was first seen at its current version. Keyed by the stored `leaseKey`;
/// shared only by handles on the same table and clock (`client::Tracking`), so stores on
/// different tables (or accounts, regions, endpoints) never share an observation.
#[derive(Debug, Default)]
pub(crate) struct Observations {
    seen: Mutex<HashMap<String, (Option<u64>, SystemTime)>>,
}

impl Observations {
    /// Records that the item `pk` was seen at `version` at `now`, and returns since when this
    /// handle has seen that version: `now` when it is new, else the first sighting.
    pub(crate) fn since(&self, pk: &str, version: Option<u64>, now: SystemTime) -> SystemTime {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(pk) {
            Some((v, since)) if *v == version => *since,
            _ => {
                seen.insert(pk.to_owned(), (version, now));
                now
            }
        }
    }

    /// Records that this handle's own write produced `version` of `pk` without extending the
    /// holder's life (no renewal: a claim, a checkpoint), so it counts as seen since `since`,
    /// the first sighting of the version it replaced. Never later than a sighting already
    /// recorded for that version.
    pub(crate) fn carry(&self, pk: &str, version: Option<u64>, since: SystemTime) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get_mut(pk) {
            Some((v, first)) if *v == version => *first = (*first).min(since),
            _ => {
                seen.insert(pk.to_owned(), (version, since));
            }
        }
    }

    /// Forgets `pk` (the item was deleted).
    pub(crate) fn forget(&self, pk: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pk);
    }
}

/// Whether a record seen unchanged since `since` has lapsed at `now` after `period`, and the
/// time left when it has not.
pub(crate) fn left(since: SystemTime, period: Duration, now: SystemTime) -> Option<Duration> {
    (since + period)
        .duration_since(now)
        .ok()
        .filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_timed_from_its_first_sighting() {
        let obs = Observations::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(obs.since("k", Some(1), t0), t0);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(obs.since("k", Some(1), later), t0, "same version");
        assert_eq!(
            obs.since("k", Some(2), later),
            later,
            "a new version restarts"
        );
        assert_eq!(obs.since("other", Some(2), later), later, "keys apart");
        obs.forget("k");
        let last = later + Duration::from_secs(1);
        assert_eq!(obs.since("k", Some(2), last), last, "forgotten");
    }

    #[test]
    fn time_left_is_zero_once_lapsed() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let d = Duration::from_secs(10);
        assert_eq!(
            left(t0, d, t0 + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(left(t0, d, t0 + d), None);
        assert_eq!(left(t0, d, t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let c = MonotonicClock::new();
        let a = c.now();
        assert!(c.now() >= a);
    }
}

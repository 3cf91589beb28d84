//! Per-shard pacing of `GetRecords`: at most one call per idle time between reads, empty or
//! full, and a growing wait after throttling.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use checkpoint_core::{Backoff, ShardId};
use tokio::time::Instant;

/// The read schedule of every shard this source reads.
#[derive(Debug)]
pub(crate) struct Pace {
    idle: Duration,
    throttle: Backoff,
    shards: Mutex<HashMap<ShardId, Slot>>,
}

#[derive(Debug)]
struct Slot {
    /// The earliest start of the shard's next call.
    next: Instant,
    /// Consecutive throttled or failed calls.
    failures: u32,
}

impl Pace {
    pub(crate) fn new(idle: Duration, max_throttle_delay: Duration) -> Self {
        Self {
            idle,
            throttle: Backoff {
                base: idle,
                max_delay: max_throttle_delay,
                ..Backoff::default()
            },
            shards: Mutex::new(HashMap::new()),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<ShardId, Slot>> {
        // Every update is one assignment; a poisoned map is still consistent.
        self.shards.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the shard's next call slot and takes it: the call may start now, and the one
    /// after it no sooner than one idle time later. Slots are taken in order, so two readers
    /// of one shard (a lease lost and taken again here) share the pace instead of doubling it.
    pub(crate) async fn turn(&self, shard: &ShardId) {
        let start = {
            let now = Instant::now();
            let mut slots = self.slots();
            let slot = slots.entry(shard.clone()).or_insert(Slot {
                next: now,
                failures: 0,
            });
            let start = slot.next.max(now);
            slot.next = start + self.idle;
            start
        };
        tokio::time::sleep_until(start).await;
    }

    /// Records a throttled or transiently failed call: the next call waits one idle time plus
    /// a random delay up to `min(max throttle delay, idle × 2^(n-1))` after the n-th in a row.
    /// Returns that extra delay, for the log.
    pub(crate) fn failed(&self, shard: &ShardId) -> Duration {
        let mut slots = self.slots();
        let Some(slot) = slots.get_mut(shard) else {
            return Duration::ZERO;
        };
        let delay = self.throttle.delay(slot.failures);
        slot.failures = slot.failures.saturating_add(1);
        slot.next = slot.next.max(Instant::now() + self.idle) + delay;
        delay
    }

    /// Records a successful call: the throttle wait starts over.
    pub(crate) fn succeeded(&self, shard: &ShardId) {
        if let Some(slot) = self.slots().get_mut(shard) {
            slot.failures = 0;
        }
    }

    /// Forgets a shard read to its end.
    pub(crate) fn forget(&self, shard: &ShardId) {
        self.slots().remove(shard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(name: &str) -> ShardId {
        ShardId::new(name).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn calls_on_one_shard_are_an_idle_time_apart() {
        let pace = Pace::new(Duration::from_millis(500), Duration::from_secs(10));
        let start = Instant::now();
        let a = shard("a");
        for _ in 0..5 {
            pace.turn(&a).await;
        }
        // The first at once, then four idle times.
        assert_eq!(start.elapsed(), Duration::from_millis(2000));
        // Another shard is not held back by the first.
        let before = Instant::now();
        pace.turn(&shard("b")).await;
        assert_eq!(before.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_waits_longer_each_time_and_success_resets_it() {
        let pace = Pace::new(Duration::from_millis(200), Duration::from_secs(1));
        let a = shard("a");
        pace.turn(&a).await;
        for n in 0..8 {
            let extra = pace.failed(&a);
            let before = Instant::now();
            pace.turn(&a).await;
            let waited = before.elapsed();
            // The timer rounds up to whole milliseconds.
            let expected = Duration::from_millis(200) + extra;
            assert!(
                waited >= expected && waited <= expected + Duration::from_millis(1),
                "{waited:?} vs {expected:?}"
            );
            let ceiling = Duration::from_millis(200 << n).min(Duration::from_secs(1));
            assert!(extra <= ceiling, "{extra:?} > {ceiling:?}");
        }
        pace.succeeded(&a);
        let extra = pace.failed(&a);
        assert!(extra <= Duration::from_millis(200), "reset: {extra:?}");
    }
}

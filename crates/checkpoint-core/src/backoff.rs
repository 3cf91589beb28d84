//! Bounded, jittered exponential backoff for transient backend faults.
//!
//! The delay before retry `n` (0-based) is a random value in `[0, min(max, base × 2^n)]`
//! ("full jitter"); retries stop after `max_attempts` tries or once `budget` has been spent.
//! `2^n` is a shift, saturating, never an XOR.

use std::time::{Duration, Instant};

/// Retry policy for transient faults. Never used for failed conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// First delay bound. Default 20 ms.
    pub base: Duration,
    /// Largest single delay. Default 1 s.
    pub max_delay: Duration,
    /// Most tries in all, the first included. Default 6.
    pub max_attempts: u32,
    /// Most time spent retrying, delays included. Default 5 s.
    pub budget: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(20),
            max_delay: Duration::from_secs(1),
            max_attempts: 6,
            budget: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The upper bound of the delay before retry `attempt` (0-based): `min(max, base × 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max_delay)
    }

    /// A jittered delay in `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(jitter() % (nanos + 1))
    }

    /// Whether another try is allowed after `attempts` tries that started at `started`, given
    /// the next delay.
    pub fn allows(&self, attempts: u32, started: Instant, next_delay: Duration) -> bool {
        attempts < self.max_attempts && started.elapsed() + next_delay <= self.budget
    }
}

impl Backoff {
    /// Runs `op` (given the 0-based attempt number) until it succeeds, fails with an error that
    /// is not [`crate::Error::is_retryable`], or the policy is spent; returns the last result.
    ///
    /// Only safe for operations whose repetition converges: every conditional write of the
    /// contract is written so that repeating one whose reply was lost re-evaluates its
    /// condition against the stored record and returns the same success (the grant, renewal,
    /// equal checkpoint, release or steal is already there), never a blind guess.
    ///
    /// Each retry emits one `tracing` event at `WARN` (target `checkpoint_core::backoff`) with
    /// the fields `operation` (`"store"` here; see [`Backoff::retry_named`]), `attempt` (1-based
    /// number of the try that failed), `delay_ms` and `error_kind`, and the error itself.
    pub async fn retry<T, F, Fut>(&self, op: F) -> crate::Result<T>
    where
        F: FnMut(u32) -> Fut + Send,
        Fut: std::future::Future<Output = crate::Result<T>> + Send,
    {
        self.retry_named("store", op).await
    }

    /// [`Backoff::retry`] with the operation's name in each retry event (for example
    /// `"renew_many"` or `"read"`).
    pub async fn retry_named<T, F, Fut>(
        &self,
        operation: &'static str,
        mut op: F,
    ) -> crate::Result<T>
    where
        F: FnMut(u32) -> Fut + Send,
        Fut: std::future::Future<Output = crate::Result<T>> + Send,
    {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let result = op(attempt).await;
            match result {
                Err(e) if e.is_retryable() => {
                    let delay = self.delay(attempt);
                    if !self.allows(attempt + 1, started, delay) {
                        return Err(e);
                    }
                    tracing::warn!(
                        operation,
                        attempt = attempt + 1,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error_kind = ?e.kind(),
                        error = %e,
                        "retrying after a transient fault"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// A cheap random number: std's randomly keyed hasher over a counter and the time. Good enough
/// to spread retries; not for anything secret.
fn jitter() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_and_caps() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(0), Duration::from_millis(20));
        assert_eq!(b.ceiling(1), Duration::from_millis(40));
        assert_eq!(b.ceiling(3), Duration::from_millis(160));
        assert_eq!(b.ceiling(6), Duration::from_secs(1));
        assert_eq!(b.ceiling(200), Duration::from_secs(1));
    }

    #[test]
    fn delay_stays_under_ceiling() {
        let b = Backoff::default();
        for attempt in 0..10 {
            for _ in 0..100 {
                assert!(b.delay(attempt) <= b.ceiling(attempt));
            }
        }
    }

    #[test]
    fn attempts_and_budget_bound_retries() {
        let b = Backoff {
            max_attempts: 3,
            ..Backoff::default()
        };
        let start = Instant::now();
        assert!(b.allows(1, start, Duration::ZERO));
        assert!(b.allows(2, start, Duration::ZERO));
        assert!(!b.allows(3, start, Duration::ZERO));
        assert!(!b.allows(1, start, Duration::from_secs(6)));
    }
}

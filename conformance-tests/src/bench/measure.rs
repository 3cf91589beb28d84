//! Timing: run one operation from N tasks (or threads) for a time or count budget, record every
//! latency, and summarise as throughput and percentiles.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Any error of a measured operation; the benchmark reports it and fails.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long one measurement runs: until `time` has passed or every task ran `max_ops`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    pub(crate) time: Duration,
    pub(crate) max_ops: u64,
}

impl Budget {
    /// The short run before a measurement, whose numbers are thrown away.
    pub(crate) fn warmup(self) -> Self {
        Self {
            time: (self.time / 8).min(Duration::from_millis(200)),
            max_ops: (self.max_ops / 8).clamp(1, 500),
        }
    }
}

/// What one or more measurements saw.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Operations completed.
    pub(crate) ops: u64,
    /// Wall time from the first task's start to the last task's end, summed over rounds.
    pub(crate) elapsed: Duration,
    /// Every operation's latency.
    pub(crate) latencies: Vec<Duration>,
}

impl Stats {
    /// Adds another round.
    pub(crate) fn merge(&mut self, other: Stats) {
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }

    /// Operations per second over all rounds.
    pub(crate) fn throughput(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`-th percentile latency (0 < p <= 100), nearest rank.
    pub(crate) fn percentile(&mut self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

/// Runs `op(task, iteration)` from `tasks` concurrent tokio tasks.
pub(crate) async fn measure_async<F, Fut>(
    tasks: usize,
    budget: Budget,
    op: F,
) -> Result<Stats, BoxError>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let handles = (0..tasks)
        .map(|task| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0;
                while i < budget.max_ops && started.elapsed() < budget.time {
                    let t = Instant::now();
                    op(task, i).await?;
                    latencies.push(t.elapsed());
                    i += 1;
                }
                Ok::<_, BoxError>(latencies)
            })
        })
        .collect::<Vec<_>>();
    let mut stats = Stats::default();
    for handle in handles {
        let latencies = handle.await??;
        stats.ops += latencies.len() as u64;
        stats.latencies.extend(latencies);
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

/// Runs the blocking `op(task, iteration)` from `threads` OS threads (for a client library
/// that blocks, measured without any async machinery around it).
pub(crate) async fn measure_threads<F>(
    threads: usize,
    budget: Budget,
    op: F,
) -> Result<Stats, BoxError>
where
    F: Fn(usize, u64) -> Result<(), BoxError> + Send + Sync + 'static,
{
    let op = Arc::new(op);
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let results = std::thread::scope(|scope| {
            let handles = (0..threads)
                .map(|task| {
                    let op = op.clone();
                    scope.spawn(move || {
                        let mut latencies = Vec::new();
                        let mut i = 0;
                        while i < budget.max_ops && started.elapsed() < budget.time {
                            let t = Instant::now();
                            op(task, i)?;
                            latencies.push(t.elapsed());
                            i += 1;
                        }
                        Ok::<_, BoxError>(latencies)
                    })
                })
                .collect::<Vec<_>>();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a benchmark thread panicked".into()))
                })
                .collect::<Vec<_>>()
        });
        let mut stats = Stats::default();
        for latencies in results {
            let latencies = latencies?;
            stats.ops += latencies.len() as u64;
            stats.latencies.extend(latencies);
        }
        stats.elapsed = started.elapsed();
        Ok(stats)
    })
    .await?
}

/// The median of the rounds' throughputs (the upper middle one of an even count; 0 for none):
/// with rounds alternating between the library and its baseline, a burst of load on the machine
/// spoils one round of each rather than one side's whole figure.
pub(crate) fn median_throughput(rounds: &[Stats]) -> f64 {
    let mut rates: Vec<f64> = rounds.iter().map(Stats::throughput).collect();
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(0.0)
}

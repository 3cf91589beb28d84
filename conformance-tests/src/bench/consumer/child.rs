//! The worker in a child process (`--consumer-child`): its arguments, the parent's handle on it
//! (held leases and requests as it reports them, peak memory, `SIGKILL`), and the idle
//! measurement.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checkpoint_consumer::{MemoryStream, Worker, WorkerConfig};
use checkpoint_core::{AppName, LeaseKey, Store, StreamName, WorkerId};

use super::counting::{Calls, Counting};
use super::{Checkpointing, Progress, wait_for};
use crate::measure::BoxError;

/// What `--consumer-child` is told: a worker on `url` for `app`, consuming an empty
/// `MemoryStream` named `stream` of `shards` shards.
#[derive(Clone, Debug)]
pub(crate) struct ChildArgs {
    pub(crate) url: String,
    pub(crate) app: String,
    pub(crate) worker: String,
    pub(crate) stream: String,
    pub(crate) shards: usize,
    pub(crate) lease_ms: u64,
    pub(crate) renew_ms: u64,
}

impl ChildArgs {
    /// Parses the seven values after `--consumer-child`.
    pub(crate) fn parse(args: &mut impl Iterator<Item = String>) -> Result<Self, String> {
        let mut next = |what: &str| {
            args.next()
                .ok_or_else(|| format!("--consumer-child needs {what}"))
        };
        let (url, app, worker, stream) =
            (next("url")?, next("app")?, next("worker")?, next("stream")?);
        let number = |what: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("--consumer-child: {what} {v:?} is not a number"))
        };
        let shards = number("shards", next("shards")?)? as usize;
        let lease_ms = number("lease_ms", next("lease_ms")?)?;
        let renew_ms = number("renew_ms", next("renew_ms")?)?;
        Ok(Self {
            url,
            app,
            worker,
            stream,
            shards,
            lease_ms,
            renew_ms,
        })
    }

    fn to_args(&self) -> Vec<String> {
        vec![
            "--consumer-child".to_owned(),
            self.url.clone(),
            self.app.clone(),
            self.worker.clone(),
            self.stream.clone(),
            self.shards.to_string(),
            self.lease_ms.to_string(),
            self.renew_ms.to_string(),
        ]
    }
}

/// A running `--consumer-child` process and the last line it printed.
pub(crate) struct ChildWorker {
    child: Child,
    state: Arc<Mutex<(usize, u64)>>,
}

impl ChildWorker {
    pub(crate) fn spawn(args: &ChildArgs) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args.to_args())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("the child has no stdout")?;
        let state = Arc::new(Mutex::new((0, 0)));
        let seen = state.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut parts = line.split_whitespace();
                if let (Some("held"), Some(h), Some("requests"), Some(r)) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                    && let (Ok(h), Ok(r)) = (h.parse(), r.parse())
                {
                    *seen.lock().unwrap_or_else(|e| e.into_inner()) = (h, r);
                }
            }
        });
        Ok(Self { child, state })
    }

    /// (leases held, requests sent) as the child last reported.
    pub(crate) fn state(&self) -> (usize, u64) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `VmHWM` (peak resident set) of the child, in KiB.
    fn peak_rss_kib(&self) -> Result<u64, BoxError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| "no VmHWM in /proc/<pid>/status".into())
    }

    /// `SIGKILL`, then reaps the process.
    pub(crate) fn kill(mut self) -> Result<(), BoxError> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// The child process's body: a worker on `args.url`, printing `held H requests R` every 100 ms.
pub(crate) async fn child(args: ChildArgs) -> Result<(), BoxError> {
    let app = AppName::new(&args.app)?;
    let inner = checkpoint_consumer::connect(&args.url, app).await?;
    let calls = Arc::new(Calls::default());
    let store: Arc<dyn Store> = Arc::new(Counting {
        inner,
        calls: calls.clone(),
    });
    let stream = Arc::new(MemoryStream::new(
        StreamName::new(&args.stream)?,
        args.shards,
    )?);
    let config = WorkerConfig::builder()
        .with_lease_duration(Duration::from_millis(args.lease_ms))
        .with_renew_interval(Duration::from_millis(args.renew_ms))
        .with_max_leases_per_tick(args.shards)
        .with_shard_sync_interval(Duration::from_secs(3_600))
        .build()?;
    let handle = Worker::new(
        WorkerId::new(&args.worker)?,
        store,
        stream,
        |_: &LeaseKey| Checkpointing(Arc::new(Progress::default())),
        config,
    )
    .spawn();
    loop {
        println!(
            "held {} requests {}",
            handle.held_leases().len(),
            calls.total()
        );
        if handle.is_finished() {
            return Err("the worker stopped".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One idle measurement: (peak RSS KiB, requests per second once all `n` leases are held).
pub(crate) async fn idle(
    url: &str,
    app: &AppName,
    n: usize,
    (lease, renew): (Duration, Duration),
    window: Duration,
) -> Result<(u64, f64), BoxError> {
    let args = ChildArgs {
        url: url.to_owned(),
        app: app.to_string(),
        worker: format!("idle-{n}"),
        stream: format!("idle-{n}"),
        shards: n,
        lease_ms: lease.as_millis() as u64,
        renew_ms: renew.as_millis() as u64,
    };
    let child = ChildWorker::spawn(&args)?;
    let held = wait_for(Duration::from_secs(900), || child.state().0 >= n).await;
    if let Err(e) = held {
        child.kill()?;
        return Err(format!("the child did not take {n} leases: {e}").into());
    }
    let (_, r0) = child.state();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let (_, r1) = child.state();
    let rate = (r1 - r0) as f64 / t0.elapsed().as_secs_f64();
    let rss = child.peak_rss_kib();
    child.kill()?;
    Ok((rss?, rate))
}

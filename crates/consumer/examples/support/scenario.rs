//! The failover scenario shared by the demo and the integration tests: a stream of 8 shards,
//! one split midway, 3 workers, one killed abruptly and one shut down gracefully, every record
//! accounted for.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use checkpoint_consumer::{
    InitializeInput, MemoryStream, ProcessorError, Record, RecordProcessor, ShardCheckpointer,
    ShardSource, ShutdownReason, Worker, WorkerConfig, WorkerHandle,
};
use checkpoint_core::{
    Error, FencingToken, LeaseKey, Position, Result, ShardId, Store, StreamName, WorkerId,
};

/// What happened, in the order it happened (the index in the log is the order).
#[derive(Clone, Debug)]
pub(crate) enum Event {
    /// A processor started on a shard.
    Init {
        shard: ShardId,
        worker: WorkerId,
        at: Instant,
    },
    /// A record was handed to a processor.
    Processed {
        id: u64,
        shard: ShardId,
        token: FencingToken,
        worker: WorkerId,
    },
    /// A processor is about to checkpoint `SHARD_END`.
    ShardEnd { shard: ShardId },
    /// A processor shut down with `LeaseLost` tried to checkpoint: was it refused?
    FencedWrite { refused: bool },
}

#[derive(Debug, Default)]
pub(crate) struct Recorder {
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    fn push(&self, event: Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }

    fn push_all(&self, events: impl IntoIterator<Item = Event>) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(events);
    }

    fn snapshot(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn processed_ids(&self) -> BTreeSet<u64> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|e| match e {
                Event::Processed { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    }
}

/// Records every record it is given, checkpoints after a batch at most every
/// `checkpoint_every` (after every batch when zero), and obeys the shutdown
/// rules: `SHARD_END` at shard end, its last record when asked to stop, and, when the lease was
/// lost, one checkpoint attempt that must be refused.
struct CountingProcessor {
    recorder: Arc<Recorder>,
    worker: WorkerId,
    shard: ShardId,
    token: FencingToken,
    /// The last record processed.
    last: Option<Position>,
    checkpoint_every: Duration,
    last_checkpoint: Option<Instant>,
}

#[async_trait]
impl RecordProcessor for CountingProcessor {
    async fn initialize(
        &mut self,
        input: &InitializeInput,
    ) -> std::result::Result<(), ProcessorError> {
        self.token = input.token;
        self.recorder.push(Event::Init {
            shard: self.shard.clone(),
            worker: self.worker.clone(),
            at: Instant::now(),
        });
        Ok(())
    }

    async fn process_records(
        &mut self,
        records: &[Record],
        checkpointer: &ShardCheckpointer,
    ) -> std::result::Result<(), ProcessorError> {
        let mut events = Vec::with_capacity(records.len());
        for record in records {
            let id: [u8; 8] = record.data.as_slice().try_into()?;
            events.push(Event::Processed {
                id: u64::from_le_bytes(id),
                shard: self.shard.clone(),
                token: self.token,
                worker: self.worker.clone(),
            });
        }
        self.recorder.push_all(events);
        if let Some(last) = records.last() {
            self.last = Some(last.position());
            let due = self
                .last_checkpoint
                .is_none_or(|t| t.elapsed() >= self.checkpoint_every);
            if due {
                // Let other tasks run between the effect and its checkpoint, as real work would.
                tokio::task::yield_now().await;
                checkpointer.checkpoint_record(last).await?;
                self.last_checkpoint = Some(Instant::now());
            }
        }
        Ok(())
    }

    async fn shutdown(
        &mut self,
        reason: ShutdownReason,
        checkpointer: &ShardCheckpointer,
    ) -> std::result::Result<(), ProcessorError> {
        match reason {
            ShutdownReason::ShardEnd => {
                self.recorder.push(Event::ShardEnd {
                    shard: self.shard.clone(),
                });
                checkpointer.checkpoint_shard_end().await?;
            }
            ShutdownReason::Requested => {
                if let Some(last) = &self.last {
                    checkpointer.checkpoint(last).await?;
                }
            }
            ShutdownReason::LeaseLost => {
                let attempt = self.last.clone().unwrap_or(Position::TrimHorizon);
                let refused = matches!(
                    checkpointer.checkpoint(&attempt).await,
                    Err(Error::LeaseLost { .. })
                );
                self.recorder.push(Event::FencedWrite { refused });
            }
            // A reason added in a later version: nothing to checkpoint.
            _ => {}
        }
        Ok(())
    }
}

/// The scenario's pace.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) shards: usize,
    pub(crate) records: u64,
    pub(crate) produce_for: Duration,
    pub(crate) split_after: Duration,
    pub(crate) kill_after: Duration,
    pub(crate) graceful_after: Duration,
    pub(crate) drain_deadline: Duration,
    pub(crate) lease_duration: Duration,
    pub(crate) renew_interval: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) batch_size: usize,
    /// How often a processor checkpoints at most (zero: after every batch).
    pub(crate) checkpoint_every: Duration,
    pub(crate) progress: bool,
}

impl Plan {
    /// The demo's pace: about 15 s in all.
    #[allow(dead_code)]
    pub(crate) fn demo() -> Self {
        Self {
            shards: 8,
            records: 6_000,
            produce_for: Duration::from_secs(10),
            split_after: Duration::from_secs(3),
            kill_after: Duration::from_secs(4),
            graceful_after: Duration::from_secs(7),
            drain_deadline: Duration::from_secs(12),
            lease_duration: Duration::from_secs(2),
            renew_interval: Duration::from_millis(500),
            poll_interval: Duration::from_millis(100),
            batch_size: 100,
            checkpoint_every: Duration::ZERO,
            progress: true,
        }
    }

    /// The tests' pace: short leases, a few seconds in all.
    #[allow(dead_code)]
    pub(crate) fn quick() -> Self {
        Self {
            shards: 8,
            records: 1_600,
            produce_for: Duration::from_millis(3_000),
            split_after: Duration::from_millis(900),
            kill_after: Duration::from_millis(1_200),
            graceful_after: Duration::from_millis(2_100),
            drain_deadline: Duration::from_secs(10),
            lease_duration: Duration::from_millis(600),
            renew_interval: Duration::from_millis(150),
            poll_interval: Duration::from_millis(20),
            batch_size: 50,
            checkpoint_every: Duration::ZERO,
            progress: false,
        }
    }

    /// The same scenario `factor` times slower, for stores with slow round trips (a DynamoDB
    /// emulator answers in tens of milliseconds).
    #[allow(dead_code)]
    pub(crate) fn slowed(self, factor: u32) -> Self {
        Self {
            produce_for: self.produce_for * factor,
            split_after: self.split_after * factor,
            kill_after: self.kill_after * factor,
            graceful_after: self.graceful_after * factor,
            drain_deadline: self.drain_deadline * factor,
            lease_duration: self.lease_duration * factor,
            renew_interval: self.renew_interval * factor,
            poll_interval: self.poll_interval * factor,
            ..self
        }
    }

    pub(crate) fn worker_config(&self) -> Result<WorkerConfig> {
        WorkerConfig::builder()
            .with_lease_duration(self.lease_duration)
            .with_renew_interval(self.renew_interval)
            .with_poll_interval(self.poll_interval)
            .with_shard_sync_interval(self.renew_interval * 4)
            .with_batch_size(self.batch_size)
            .build()
    }
}

/// What the scenario measured.
#[derive(Clone, Debug, Default)]
pub(crate) struct Report {
    pub(crate) produced: u64,
    pub(crate) processed: u64,
    pub(crate) deliveries: u64,
    pub(crate) duplicates: u64,
    /// Duplicate deliveries under one lease token: not explained by a lease move.
    pub(crate) unexplained_duplicates: u64,
    /// One line per unexplained duplicate.
    pub(crate) unexplained: Vec<String>,
    pub(crate) lost: u64,
    pub(crate) lease_moves: u64,
    pub(crate) killed_leases: usize,
    pub(crate) failover: Option<Duration>,
    /// Child shards initialised before a parent reached `SHARD_END`.
    pub(crate) order_violations: Vec<String>,
    pub(crate) fenced_writes_refused: u64,
    pub(crate) fenced_writes_accepted: u64,
    pub(crate) split: Option<(ShardId, [ShardId; 2])>,
    pub(crate) elapsed: Duration,
}

impl Report {
    /// The summary table.
    pub(crate) fn table(&self) -> String {
        let failover = self
            .failover
            .map_or_else(|| "n/a".to_owned(), |d| format!("{} ms", d.as_millis()));
        let rows = [
            ("records produced", self.produced.to_string()),
            ("records processed (distinct)", self.processed.to_string()),
            ("deliveries", self.deliveries.to_string()),
            ("duplicates", self.duplicates.to_string()),
            (
                "  of which not explained by a lease move",
                self.unexplained_duplicates.to_string(),
            ),
            ("records lost", self.lost.to_string()),
            ("lease moves", self.lease_moves.to_string()),
            (
                "leases held by the killed worker",
                self.killed_leases.to_string(),
            ),
            ("failover time after the abrupt kill", failover),
            (
                "stale checkpoint attempts refused",
                self.fenced_writes_refused.to_string(),
            ),
            (
                "stale checkpoint attempts accepted",
                self.fenced_writes_accepted.to_string(),
            ),
            (
                "children started before a parent ended",
                self.order_violations.len().to_string(),
            ),
            ("run time", format!("{:.1} s", self.elapsed.as_secs_f64())),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            out.push_str(&format!("| {k:<width$} | {v:>10} |\n"));
        }
        out
    }
}

/// Prints the workers' tracing events to stderr when `CONSUMER_LOG` is `info`, `debug` or
/// `trace` (lease taken, renewed, lost, stolen, released; checkpoint written).
pub(crate) fn init_tracing() {
    let level = match std::env::var("CONSUMER_LOG").as_deref() {
        Ok("trace") => tracing::Level::TRACE,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("info") => tracing::Level::INFO,
        _ => return,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
}

fn worker_id(i: usize) -> Result<WorkerId> {
    WorkerId::new(format!(
        "worker-{}",
        ["a", "b", "c"].get(i).copied().unwrap_or("x")
    ))
}

fn spawn_worker(
    i: usize,
    store: Arc<dyn Store>,
    stream: &MemoryStream,
    recorder: &Arc<Recorder>,
    config: &WorkerConfig,
    checkpoint_every: Duration,
) -> Result<WorkerHandle> {
    let id = worker_id(i)?;
    let recorder = Arc::clone(recorder);
    let me = id.clone();
    let factory = move |key: &LeaseKey| CountingProcessor {
        recorder: Arc::clone(&recorder),
        worker: me.clone(),
        shard: key.shard.clone(),
        token: FencingToken(0),
        last: None,
        checkpoint_every,
        last_checkpoint: None,
    };
    Ok(Worker::new(id, store, Arc::new(stream.clone()), factory, config.clone()).spawn())
}

/// Runs the scenario with three workers on `stores[0..3]` (one handle each, as separate
/// processes would have) and observes through `stores[3]`.
pub(crate) async fn run(stores: [Arc<dyn Store>; 4], plan: &Plan) -> Result<Report> {
    init_tracing();
    let started = Instant::now();
    let config = plan.worker_config()?;
    let stream = MemoryStream::new(StreamName::new("demo-stream")?, plan.shards)?;
    let recorder = Arc::new(Recorder::default());
    let [s0, s1, s2, observer] = stores;
    // The first worker starts alone and takes every shard; the two others then join and must
    // steal their fair share from it.
    let mut workers: Vec<Option<WorkerHandle>> = Vec::new();
    let first = spawn_worker(0, s0, &stream, &recorder, &config, plan.checkpoint_every)?;
    let alone_until = Instant::now() + plan.lease_duration * 4;
    while first.held_leases().len() < plan.shards && Instant::now() < alone_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if plan.progress {
        println!(
            "{:>5.1}s  {} started alone and holds {} leases; two more workers join",
            started.elapsed().as_secs_f64(),
            first.id(),
            first.held_leases().len()
        );
    }
    workers.push(Some(first));
    for (i, store) in [(1, s1), (2, s2)] {
        workers.push(Some(spawn_worker(
            i,
            store,
            &stream,
            &recorder,
            &config,
            plan.checkpoint_every,
        )?));
    }

    let mut report = Report::default();
    let mut produced = 0u64;
    let mut kill: Option<(Instant, BTreeSet<ShardId>)> = None;
    let mut next_progress = Duration::from_secs(1);
    let step = Duration::from_millis(10);
    let steps = (plan.produce_for.as_millis() / step.as_millis()).max(1) as u64;
    let mut tick = tokio::time::interval(step);
    // Production runs for `produce_for`; the kill and the graceful shutdown happen at their
    // times, but the kill waits (up to four times the production time) until the victim holds
    // at least two leases, so that there is something to fail over even on a slow store.
    let hard_stop = steps * 4;
    let mut n = 0;
    while n < steps || ((kill.is_none() || workers[2].is_some()) && n < hard_stop) {
        n += 1;
        tick.tick().await;
        let target = plan.records * n.min(steps) / steps;
        while produced < target {
            stream.put(&format!("pk-{produced}"), produced.to_le_bytes().to_vec())?;
            produced += 1;
        }
        let now = started.elapsed();
        if report.split.is_none() && now >= plan.split_after {
            let parent = stream
                .open_shards()
                .into_iter()
                .nth(3)
                .ok_or_else(|| Error::invalid("shards", "too few"))?;
            let children = stream.split(&parent)?;
            if plan.progress {
                println!(
                    "{:>5.1}s  split {parent} into {} and {}",
                    now.as_secs_f64(),
                    children[0],
                    children[1]
                );
            }
            report.split = Some((parent, children));
        }
        let victim_ready = workers[1]
            .as_ref()
            .is_some_and(|h| h.held_leases().len() >= 2)
            || n + 1 >= hard_stop;
        if kill.is_none()
            && now >= plan.kill_after
            && victim_ready
            && let Some(handle) = workers[1].take()
        {
            {
                let id = handle.id().clone();
                handle.abort().await;
                let at = Instant::now();
                let leases = observer.list_leases(None).await?;
                let orphaned: BTreeSet<ShardId> = leases
                    .iter()
                    .filter(|l| {
                        l.owner.as_ref() == Some(&id) && l.checkpoint != Some(Position::ShardEnd)
                    })
                    .map(|l| l.key.shard.clone())
                    .collect();
                if plan.progress {
                    println!(
                        "{:>5.1}s  killed {id} abruptly; it held {} leases",
                        now.as_secs_f64(),
                        orphaned.len()
                    );
                }
                kill = Some((at, orphaned));
            }
        }
        // The graceful shutdown comes after the killed worker's leases could have failed over,
        // so that the two hand-overs are measured apart.
        let failed_over = kill
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() >= config.failover_bound());
        if now >= plan.graceful_after
            && failed_over
            && let Some(handle) = workers[2].take()
        {
            let id = handle.id().clone();
            handle.shutdown().await?;
            if plan.progress {
                println!(
                    "{:>5.1}s  shut {id} down gracefully",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        if plan.progress && now >= next_progress {
            next_progress += Duration::from_secs(1);
            print_progress(started, produced, &recorder, &workers);
        }
    }

    // Drain: wait (with a deadline) until every produced record was processed.
    let deadline = Instant::now() + plan.drain_deadline;
    loop {
        let done = recorder.processed_ids().len() as u64 >= produced;
        if done || Instant::now() >= deadline {
            break;
        }
        if plan.progress && started.elapsed() >= next_progress {
            next_progress += Duration::from_secs(1);
            print_progress(started, produced, &recorder, &workers);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if plan.progress {
        print_progress(started, produced, &recorder, &workers);
    }
    for handle in workers.iter_mut().filter_map(Option::take) {
        handle.shutdown().await?;
    }

    // Account for everything.
    let events = recorder.snapshot();
    let mut deliveries: HashMap<u64, Vec<FencingToken>> = HashMap::new();
    // A delivery is identified by the record, the shard and the lease token it was made under:
    // the same record twice under one token is a duplicate no lease move explains.
    let mut per_token: HashMap<(u64, &ShardId, FencingToken), u64> = HashMap::new();
    for event in &events {
        if let Event::Processed {
            id,
            shard,
            token,
            worker,
        } = event
        {
            deliveries.entry(*id).or_default().push(*token);
            let seen = per_token.entry((*id, shard, *token)).or_default();
            *seen += 1;
            if *seen > 1 {
                report.unexplained.push(format!(
                    "record {id} again on {shard} under token {token} by {worker}"
                ));
            }
        }
    }
    report.produced = produced;
    report.processed = deliveries.len() as u64;
    report.deliveries = deliveries.values().map(|v| v.len() as u64).sum();
    report.duplicates = report.deliveries - report.processed;
    report.unexplained_duplicates = per_token.values().map(|n| n - 1).sum();
    report.lost = (0..produced)
        .filter(|id| !deliveries.contains_key(id))
        .count() as u64;
    let leases = observer.list_leases(None).await?;
    report.lease_moves = leases.iter().map(|l| l.token.0.saturating_sub(1)).sum();
    for event in &events {
        if let Event::FencedWrite { refused } = event {
            if *refused {
                report.fenced_writes_refused += 1;
            } else {
                report.fenced_writes_accepted += 1;
            }
        }
    }

    // Failover: from the kill to the moment every orphaned lease had a processor elsewhere.
    if let Some((at, orphaned)) = &kill {
        report.killed_leases = orphaned.len();
        let killed = worker_id(1)?;
        let mut worst = Some(Duration::ZERO);
        for shard in orphaned {
            let resumed = events.iter().find_map(|e| match e {
                Event::Init {
                    shard: s,
                    worker,
                    at: t,
                    ..
                } if s == shard && worker != &killed && t >= at => Some(t.duration_since(*at)),
                _ => None,
            });
            worst = match (worst, resumed) {
                (Some(w), Some(r)) => Some(w.max(r)),
                _ => None,
            };
        }
        report.failover = if orphaned.is_empty() { None } else { worst };
    }

    // Order: a child's first processor starts only after every parent's processor decided to
    // checkpoint SHARD_END.
    let shards = stream.list_shards().await?;
    let first_index = |pred: &dyn Fn(&Event) -> bool| events.iter().position(pred);
    for shard in shards.iter().filter(|s| !s.parents.is_empty()) {
        let child_start =
            first_index(&|e| matches!(e, Event::Init { shard: s, .. } if s == &shard.id));
        for parent in &shard.parents {
            let parent_end =
                first_index(&|e| matches!(e, Event::ShardEnd { shard: s } if s == parent));
            match (child_start, parent_end) {
                (Some(c), Some(p)) if c < p => report
                    .order_violations
                    .push(format!("{} started before {parent} ended", shard.id)),
                (Some(_), None) => report
                    .order_violations
                    .push(format!("{} started but {parent} never ended", shard.id)),
                _ => {}
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn print_progress(
    started: Instant,
    produced: u64,
    recorder: &Recorder,
    workers: &[Option<WorkerHandle>],
) {
    let mut held = BTreeMap::new();
    for handle in workers.iter().flatten() {
        held.insert(handle.id().to_string(), handle.held_leases().len());
    }
    let leases: Vec<String> = held.iter().map(|(w, n)| format!("{w}={n}")).collect();
    println!(
        "{:>5.1}s  produced {produced:>6}  processed {:>6}  leases held: {}",
        started.elapsed().as_secs_f64(),
        recorder.processed_ids().len(),
        leases.join(" "),
    );
}

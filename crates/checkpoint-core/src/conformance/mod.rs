//! The conformance suite: the contract ([`crate::contract`]) as tests, runnable against any store.
//!
//! Every scenario is a plain public async function over a [`StoreFactory`] that returns
//! `Err(Failure)` instead of panicking, so the suite can also be run against deliberately broken
//! stores and asked which scenarios caught them. Each scenario opens its own random app, so
//! scenarios and test binaries run in parallel against one shared database without flushing it.
//!
//! A user tests a custom store with one test:
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
//! async fn my_store_conforms() {
//!     let factory = |app: AppName| async move {
//!         let store: Arc<dyn Store> = Arc::new(MyStore::connect("…", app).await?);
//!         Ok(store)
//!     };
//!     checkpoint_core::conformance::run_all(&factory).await.assert_passed();
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::ManualClock;
use crate::error::Result;
use crate::store::Store;
use crate::types::AppName;

mod apps;
mod backend;
mod exclusion;
mod expiry;
mod import;
mod input;
mod isolation;
mod lifecycle;
mod model;
mod positions;
mod scenarios;

pub use backend::*;
pub use exclusion::*;
pub use expiry::*;
pub use input::*;
pub use isolation::*;
pub use lifecycle::*;
pub use positions::*;

pub use apps::list_apps_names_apps_with_leases;
pub use import::import_whole_records;
pub use model::model_test;
pub use scenarios::*;

/// Opens store handles for the suite. Each call with the same app must reach the same data (a
/// new connection to the same database), so durability and isolation can be tested; the returned
/// store must already be initialised ([`crate::LeaseManager::init`]).
///
/// Any `Fn(AppName) -> impl Future<Output = Result<Arc<dyn Store>>>` is a factory; wrap it in
/// [`Configured`] to tell the suite about a manual clock or the backend's list page size.
#[async_trait]
pub trait StoreFactory: Send + Sync {
    /// A new handle for `app`.
    async fn open(&self, app: &AppName) -> Result<Arc<dyn Store>>;

    /// The manual clock that judges expiry in every store this factory opens, when the
    /// backend accepts one (memory, SQLite). With it, expiry scenarios move time exactly
    /// instead of waiting, and check deadlines to the millisecond. Default: none, the store's
    /// own clock, checked with a stated tolerance.
    fn manual_clock(&self) -> Option<Arc<ManualClock>> {
        None
    }

    /// Rows per page the stores list with, when known, so the listing scenario creates more
    /// than two pages of rows and checks both boundaries. Default: unknown, 125 rows.
    fn list_page_size(&self) -> Option<usize> {
        None
    }
}

#[async_trait]
impl<F, Fut> StoreFactory for F
where
    F: Fn(AppName) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Arc<dyn Store>>> + Send,
{
    async fn open(&self, app: &AppName) -> Result<Arc<dyn Store>> {
        self(app.clone()).await
    }
}

/// A factory with what the suite should know about the stores it opens: the manual clock they
/// share and the page size they list with ([`StoreFactory::manual_clock`],
/// [`StoreFactory::list_page_size`]).
pub struct Configured<F> {
    factory: F,
    clock: Option<Arc<ManualClock>>,
    list_page_size: Option<usize>,
}

impl<F: StoreFactory> Configured<F> {
    /// `factory`, with nothing declared yet.
    pub fn new(factory: F) -> Self {
        Self {
            factory,
            clock: None,
            list_page_size: None,
        }
    }

    /// Declares the manual clock every store of `factory` judges expiry by. The factory must
    /// really give its stores this clock: the suite moves it and expects expiry to follow.
    pub fn with_manual_clock(mut self, clock: Arc<ManualClock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Declares the rows per page of `list_leases` (at least 1).
    pub fn with_list_page_size(mut self, rows: usize) -> Self {
        self.list_page_size = Some(rows.max(1));
        self
    }
}

#[async_trait]
impl<F: StoreFactory> StoreFactory for Configured<F> {
    async fn open(&self, app: &AppName) -> Result<Arc<dyn Store>> {
        self.factory.open(app).await
    }

    fn manual_clock(&self) -> Option<Arc<ManualClock>> {
        self.clock.clone()
    }

    fn list_page_size(&self) -> Option<usize> {
        self.list_page_size
    }
}

/// The clause of the contract a scenario check upholds: what a [`Failure`] says was broken.
///
/// Every check in the suite names one, so a test of the suite itself (the hand mutants of
/// `conformance-tests`) can assert that a broken store was rejected for the reason it is
/// broken, not merely that something went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Clause {
    /// A store operation returned an error where the contract requires success.
    UnexpectedError,
    /// Operation 1: `init` is idempotent and keeps records.
    Init,
    /// Operation 2: create-if-absent creates once, answers exactly, never overwrites.
    Create,
    /// Operation 3: a grant names the owner; a refusal names the holder.
    Grant,
    /// The token strictly increases on every grant to a different worker, and only then.
    TokenBump,
    /// Expiry by the store's clock: a lease lasts exactly its duration, `LeaseHeld.remaining`
    /// is the time left.
    Expiry,
    /// Mutual exclusion: at most one live owner; exactly one racer wins.
    MutualExclusion,
    /// Operation 4: renew by the holder (even late), refused otherwise.
    Renew,
    /// Operation 4, batched: renew-many moves every held deadline and reports the rest lost.
    RenewMany,
    /// Fencing: a write with an older token fails and changes nothing.
    Fencing,
    /// Operation 5: a checkpoint that returned Ok is stored as returned.
    Checkpoint,
    /// Monotonic positions: a regression is refused and changes nothing.
    Monotonic,
    /// `SHARD_END` is terminal.
    ShardEnd,
    /// Operation 14: prepared (pending) positions.
    Prepare,
    /// Operation 7: release and the admin eviction.
    Release,
    /// Operation 8: delete.
    Delete,
    /// Operation 9: listing, sorted, every row once, across pages.
    List,
    /// Operation 10: steal only against the exact owner and token seen.
    Steal,
    /// Operation 11: claims and graceful hand-off.
    Claim,
    /// Operation 12: membership, heartbeat TTLs.
    Membership,
    /// Operation 12, instances: a worker id is registered by one instance (store handle) at a
    /// time; another is refused `WorkerIdInUse` until the record expires by the store's clock.
    WorkerInstance,
    /// The admin reset of a checkpoint.
    Reset,
    /// The admin import of a whole record: only where none exists, every field exact.
    Import,
    /// Operation 16: the admin listing of apps names every app holding a lease record, sorted,
    /// each once, and no app without one.
    ListApps,
    /// Durability across handles and processes.
    Durability,
    /// Isolation between apps and between streams.
    Isolation,
    /// Bad input: a typed error naming the field, nothing written.
    BadInput,
    /// Identifiers at their limits round-trip exactly and are not injectable.
    EdgeIds,
    /// A stored record that cannot be decoded is reported `Corrupt`, never mis-parsed.
    Corrupt,
    /// An incompatible existing layout is `SchemaMismatch`.
    Schema,
    /// Transactional checkpoints commit and roll back with the caller's transaction.
    Transaction,
    /// Backend faults: a lost reply is retried or a retryable error, never a false answer.
    Faults,
    /// The model test: the store differs from the reference store.
    Model,
}

/// Why a scenario failed: which clause of the contract, and what was observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The clause the failed check upholds.
    pub clause: Clause,
    /// What was observed.
    pub message: String,
}

impl Failure {
    /// A failure of `clause` with `message`.
    pub fn new(clause: Clause, message: impl Into<String>) -> Self {
        Self {
            clause,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:?}] {}", self.clause, self.message)
    }
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Self {
        Failure::new(
            Clause::UnexpectedError,
            format!("unexpected error: {e} ({:?})", e.kind()),
        )
    }
}

/// The result of one scenario.
pub type Outcome = std::result::Result<(), Failure>;

/// Fails the scenario with a failure of `clause` (a [`Clause`] variant) unless `cond` holds.
#[macro_export]
#[doc(hidden)]
macro_rules! ensure {
    ($cond:expr, $clause:ident, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::conformance::Failure::new(
                $crate::conformance::Clause::$clause,
                format!($($msg)+),
            ));
        }
    };
}

/// The outcome of [`run_all`].
#[derive(Debug, Default)]
pub struct SuiteReport {
    /// The backend's name, from its capabilities.
    pub backend: String,
    /// Scenarios that passed.
    pub passed: Vec<&'static str>,
    /// Scenarios that failed, with why.
    pub failed: Vec<(&'static str, Failure)>,
    /// Backend scenarios ([`BackendHooks`]) that could not run, in whole or in part, with why.
    /// A scenario that ran in part is also in `passed`.
    pub not_covered: Vec<(&'static str, String)>,
}

impl SuiteReport {
    /// Whether the named scenario failed.
    pub fn failed(&self, scenario: &str) -> bool {
        self.failed.iter().any(|(name, _)| *name == scenario)
    }

    /// Panics, listing every failure, unless all scenarios passed; prints the count otherwise.
    pub fn assert_passed(&self) {
        if !self.failed.is_empty() {
            let list: Vec<String> = self
                .failed
                .iter()
                .map(|(name, why)| format!("  {name}: {why}"))
                .collect();
            panic!(
                "conformance suite on {}: {} of {} scenarios failed:\n{}",
                self.backend,
                self.failed.len(),
                self.failed.len() + self.passed.len(),
                list.join("\n")
            );
        }
        println!(
            "conformance suite on {}: {} passed, 0 failed, {} not covered",
            self.backend,
            self.passed.len(),
            self.not_covered.len()
        );
        for (name, why) in &self.not_covered {
            println!("  not covered on {}: {name}: {why}", self.backend);
        }
    }

    /// What the suite could not cover on this backend, in one line for its capability row:
    /// `-` when it covered everything.
    pub fn not_covered_summary(&self) -> String {
        if self.not_covered.is_empty() {
            return "-".to_owned();
        }
        let list: Vec<String> = self
            .not_covered
            .iter()
            .map(|(name, why)| format!("{name} ({why})"))
            .collect();
        list.join("; ")
    }
}

/// A fresh random app name, `<prefix>-<random hex>`, so parallel runs never share records.
pub fn random_app(prefix: &str) -> AppName {
    let suffix: u64 = rand::random();
    AppName::new(format!("{prefix}-{suffix:016x}"))
        .expect("a prefix of id characters is a valid app name")
}

/// Whether strict mode is on (`CHECKPOINT_REQUIRE_ALL=1`): a backend that cannot be reached is a
/// failure instead of a skip.
pub fn strict_mode() -> bool {
    std::env::var("CHECKPOINT_REQUIRE_ALL")
        .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Reports a backend that could not be reached: in strict mode this panics (fails the test);
/// otherwise it prints one line naming how to provide the server and the test returns early.
pub fn backend_unavailable(backend: &str, how_to_provide: &str, reason: &dyn fmt::Display) {
    if strict_mode() {
        panic!(
            "{backend} could not be tested (CHECKPOINT_REQUIRE_ALL=1): {reason}. {how_to_provide}"
        );
    }
    eprintln!("SKIPPED {backend}: {reason}. {how_to_provide}");
}

/// One scenario: its name and its function.
pub type Scenario = (
    &'static str,
    for<'a> fn(&'a dyn StoreFactory) -> futures::future::LocalBoxFuture<'a, Outcome>,
);

/// Runs every scenario against stores from `factory`, and reports which passed. The backend
/// scenarios, having no [`BackendHooks`], are reported not covered; see [`run_all_with`].
pub async fn run_all(factory: &dyn StoreFactory) -> SuiteReport {
    run_selected_with(factory, &NoHooks, |_| true).await
}

/// Runs every scenario, the backend scenarios with `hooks`, and reports which passed and
/// what the hooks could not cover.
pub async fn run_all_with(factory: &dyn StoreFactory, hooks: &dyn BackendHooks) -> SuiteReport {
    run_selected_with(factory, hooks, |_| true).await
}

/// Runs the scenarios whose names `select` accepts, in the suite's order, and reports which
/// passed. Useful to rerun one failing scenario, or to check a mutant against the scenarios
/// that guard the rule it breaks.
pub async fn run_selected(
    factory: &dyn StoreFactory,
    select: impl Fn(&str) -> bool,
) -> SuiteReport {
    run_selected_with(factory, &NoHooks, select).await
}

/// [`run_selected`] with `hooks` for the backend scenarios ([`backend_scenarios`]), which run
/// after the others.
pub async fn run_selected_with(
    factory: &dyn StoreFactory,
    hooks: &dyn BackendHooks,
    select: impl Fn(&str) -> bool,
) -> SuiteReport {
    let backend = match factory.open(&random_app("probe")).await {
        Ok(store) => store.capabilities().backend.to_owned(),
        Err(e) => {
            return SuiteReport {
                backend: "unknown".into(),
                passed: Vec::new(),
                failed: vec![(
                    "open",
                    Failure::new(
                        Clause::UnexpectedError,
                        format!("the factory could not open a store: {e}"),
                    ),
                )],
                not_covered: Vec::new(),
            };
        }
    };
    let mut report = SuiteReport {
        backend,
        ..SuiteReport::default()
    };
    for (name, scenario) in scenarios::all()
        .into_iter()
        .filter(|(name, _)| select(name))
    {
        match scenario(factory).await {
            Ok(()) => report.passed.push(name),
            Err(why) => report.failed.push((name, why)),
        }
    }
    for (name, scenario) in backend_scenarios()
        .into_iter()
        .filter(|(name, _)| select(name))
    {
        match scenario(factory, hooks).await {
            Ok(Covered::Fully) => report.passed.push(name),
            Ok(Covered::Partly(gaps)) => {
                report.passed.push(name);
                report.not_covered.push((name, gaps.join(", ")));
            }
            Ok(Covered::Not(why)) => report.not_covered.push((name, why)),
            Err(why) => report.failed.push((name, why)),
        }
    }
    report
}

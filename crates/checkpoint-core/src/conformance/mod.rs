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

use crate::error::Result;
use crate::store::Store;
use crate::types::AppName;

mod import;
mod model;
mod scenarios;

pub use import::import_whole_records;
pub use model::model_test;
pub use scenarios::*;

/// Opens store handles for the suite. Each call with the same app must reach the same data (a
/// new connection to the same database), so durability and isolation can be tested; the returned
/// store must already be initialised ([`crate::LeaseManager::init`]).
#[async_trait]
pub trait StoreFactory: Send + Sync {
    /// A new handle for `app`.
    async fn open(&self, app: &AppName) -> Result<Arc<dyn Store>>;
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

/// Why a scenario failed: which invariant, and what was observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Self {
        Failure(format!("unexpected error: {e} ({:?})", e.kind()))
    }
}

/// The result of one scenario.
pub type Outcome = std::result::Result<(), Failure>;

/// Fails the scenario with a message unless `cond` holds.
#[macro_export]
#[doc(hidden)]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::conformance::Failure(format!($($msg)+)));
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
            "conformance suite on {}: {} passed, 0 failed",
            self.backend,
            self.passed.len()
        );
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

/// Runs every scenario against stores from `factory`, and reports which passed.
pub async fn run_all(factory: &dyn StoreFactory) -> SuiteReport {
    run_selected(factory, |_| true).await
}

/// Runs the scenarios whose names `select` accepts, in the suite's order, and reports which
/// passed. Useful to rerun one failing scenario, or to check a mutant against the scenarios
/// that guard the rule it breaks.
pub async fn run_selected(
    factory: &dyn StoreFactory,
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
                    Failure(format!("the factory could not open a store: {e}")),
                )],
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
    report
}

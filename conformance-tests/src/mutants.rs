//! Deliberately broken stores. Each wraps the memory reference store and breaks one clause of
//! the contract (`checkpoint_core::contract`) the way real backends have broken it;
//! `tests/mutants.rs` proves the conformance suite rejects every one, in the scenario named
//! here and for the clause named here. A suite that passes a broken store, or rejects it only
//! by accident, is a bug in the suite.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use checkpoint_core::conformance::{BackendHooks, Clause, Configured, Hooked, LossyStore};
use checkpoint_core::{AppName, ManualClock, MemoryDatabase, Result, Store};

mod link;
mod store;

pub use link::SimulatedLink;
pub use store::Mutant;

/// Rows per page of a mutant's `list_leases`, declared to the suite so the listing scenario
/// crosses two page boundaries.
pub const MUTANT_LIST_PAGE: usize = 50;

/// The ways a mutant is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Checkpoint ignores owner and token (vmware-go-kcl's unconditional checkpoint write).
    NoFencingOnCheckpoint,
    /// Acquire grants a live lease held by someone else: two winners.
    TwoWinners,
    /// Checkpoint accepts a position lower than the stored one.
    AcceptsRegressions,
    /// Every fifth checkpoint of a handle is dropped while reporting success.
    LosesWrites,
    /// Renew succeeds (taking the lease back) after another worker took it.
    RenewsTakenLease,
    /// A conditional write whose condition failed is reported as a success, as a client that
    /// assumes success when the reply is lost would.
    FakeSuccessOnDroppedReply,
    /// Expired leases are never granted to another worker.
    NeverExpires,
    /// Every app shares one namespace.
    SharedAcrossApps,
    /// Listing returns only the first 100 rows.
    TruncatedList,
    /// A steal or grant to a new owner does not bump the token.
    NoTokenBump,
    /// Renew-many answers every lease renewed but writes nothing.
    RenewManyDoesNotWrite,
    /// Renew-many renews leases whose token no longer matches (a batch without the condition).
    RenewManyIgnoresToken,
    /// Heartbeat answers Ok and extends nothing.
    HeartbeatDoesNotExtend,
    /// Heartbeat of an unregistered (pruned) worker registers it instead of `NotFound`.
    HeartbeatRevivesPruned,
    /// Live workers come back in registration order, not sorted.
    LiveWorkersUnsorted,
    /// Prepare-checkpoint ignores owner and token.
    UnfencedPrepare,
    /// Release (remove_lease_owner) ignores owner and token.
    UnfencedRelease,
    /// Release clears the checkpoint with the owner.
    ReleaseDropsCheckpoint,
    /// Steal ignores the expected owner and token: takes whatever it finds.
    StealIgnoresExpected,
    /// A claim is answered as recorded but not stored.
    ClaimNotStored,
    /// Create-if-absent overwrites an existing record (`INSERT OR REPLACE`).
    CreateOverwrites,
    /// Create-if-absent answers `false` although it created the record (a retried insert
    /// that sees its own row).
    CreateAnswersWrongly,
    /// Delete (remove_lease_info) answers Ok and deletes nothing.
    DeleteDoesNothing,
    /// Leases are keyed by shard id alone: one shard id in two streams is one record.
    StreamsShareRows,
    /// Every handle has its own data: a second handle does not see the first's writes.
    HandlesDoNotShare,
    /// A lease lasts 1 ms less than its duration.
    ExpiresEarly,
    /// A lease lasts 1 ms more than its duration.
    ExpiresLate,
    /// Paginated listing skips the first row of every page after the first (an exclusive
    /// cursor advanced once too far).
    ListDropsAtPageBoundary,
    /// Paginated listing repeats the last row of each page as the first of the next (an
    /// inclusive cursor).
    ListRepeatsAtPageBoundary,
    /// A worker re-taking its own expired lease gets a new token.
    RetakeBumpsToken,
    /// A worker re-taking its own live lease keeps the old deadline (the grant writes
    /// nothing when the caller already holds the lease).
    RetakeKeepsDeadline,
    /// A fenced checkpoint is reported lost but written anyway.
    WritesDespiteLost,
    /// A regressing checkpoint is reported a regression but written anyway.
    WritesDespiteRegression,
    /// Membership files a worker under its id up to the first `:` (a key layout that embeds
    /// the id and splits on the separator), so `host:a` and `host:b` collide.
    WorkerIdsCollide,
    /// Membership ignores the instance nonce: registering or heartbeating an id whose live
    /// record another instance holds overwrites it (a plain upsert), so two processes with one
    /// worker id both run.
    IgnoresInstance,
    /// Admin import overwrites an existing record (an upsert where an insert-if-absent was
    /// meant), so a migration can roll a live table back.
    ImportOverwrites,
    /// The app listing keeps an app whose every lease record was deleted (an index of apps
    /// the delete path never prunes), so `migrate --all-apps` would move apps that are gone.
    ListAppsKeepsEmptied,
    /// Over a lossy link, a checkpoint whose request was lost is answered Ok: a success for a
    /// write that did not happen.
    SuccessOnLostWrite,
    /// Over a lossy link, a create whose reply was lost is retried and the retry's answer
    /// (`false`: the record exists) returned, though this call created it.
    RetryMisreadsOwnWrite,
}

impl Mutation {
    /// Every mutation.
    pub const ALL: [Mutation; 39] = [
        Self::NoFencingOnCheckpoint,
        Self::TwoWinners,
        Self::AcceptsRegressions,
        Self::LosesWrites,
        Self::RenewsTakenLease,
        Self::FakeSuccessOnDroppedReply,
        Self::NeverExpires,
        Self::SharedAcrossApps,
        Self::TruncatedList,
        Self::NoTokenBump,
        Self::RenewManyDoesNotWrite,
        Self::RenewManyIgnoresToken,
        Self::HeartbeatDoesNotExtend,
        Self::HeartbeatRevivesPruned,
        Self::LiveWorkersUnsorted,
        Self::UnfencedPrepare,
        Self::UnfencedRelease,
        Self::ReleaseDropsCheckpoint,
        Self::StealIgnoresExpected,
        Self::ClaimNotStored,
        Self::CreateOverwrites,
        Self::CreateAnswersWrongly,
        Self::DeleteDoesNothing,
        Self::StreamsShareRows,
        Self::HandlesDoNotShare,
        Self::ExpiresEarly,
        Self::ExpiresLate,
        Self::ListDropsAtPageBoundary,
        Self::ListRepeatsAtPageBoundary,
        Self::RetakeBumpsToken,
        Self::RetakeKeepsDeadline,
        Self::WritesDespiteLost,
        Self::WritesDespiteRegression,
        Self::WorkerIdsCollide,
        Self::ImportOverwrites,
        Self::ListAppsKeepsEmptied,
        Self::IgnoresInstance,
        Self::SuccessOnLostWrite,
        Self::RetryMisreadsOwnWrite,
    ];

    /// The scenarios that must reject this mutation, each with the clause its failure must
    /// name. Every listed scenario must fail, for that clause.
    pub fn caught_by(self) -> &'static [(&'static str, Clause)] {
        use Clause::*;
        match self {
            Self::NoFencingOnCheckpoint => &[
                ("fencing_after_steal", Fencing),
                ("fencing_after_out_of_band_bump", Fencing),
            ],
            Self::TwoWinners => &[("mutual_exclusion_one_winner", MutualExclusion)],
            Self::AcceptsRegressions => &[
                ("monotonic_positions", Monotonic),
                ("shard_end_is_terminal", ShardEnd),
            ],
            Self::LosesWrites => &[("mutual_exclusion_exact_count", MutualExclusion)],
            Self::RenewsTakenLease => &[
                ("fencing_after_steal", Fencing),
                ("fencing_after_expiry_takeover", Fencing),
            ],
            Self::FakeSuccessOnDroppedReply => &[("fencing_after_steal", Fencing)],
            Self::NeverExpires => &[
                ("fencing_after_expiry_takeover", Expiry),
                ("expiry_is_exact", Expiry),
            ],
            Self::SharedAcrossApps => &[("isolation_between_apps", Isolation)],
            Self::TruncatedList => &[("list_leases_paginated", List)],
            Self::NoTokenBump => &[
                ("fencing_after_steal", TokenBump),
                ("fencing_after_expiry_takeover", TokenBump),
            ],
            Self::RenewManyDoesNotWrite => &[
                ("renew_many_moves_deadlines", RenewMany),
                ("model_matches_reference", Model),
            ],
            Self::RenewManyIgnoresToken => &[("renew_many_reports_lost", RenewMany)],
            Self::HeartbeatDoesNotExtend => &[
                ("heartbeat_extends_ttl", Membership),
                ("model_matches_reference", Model),
            ],
            Self::HeartbeatRevivesPruned => &[("membership_lifecycle", Membership)],
            Self::LiveWorkersUnsorted => &[("membership_lifecycle", Membership)],
            Self::UnfencedPrepare => &[
                ("fencing_after_steal", Fencing),
                ("prepare_checkpoint_two_phase", Fencing),
            ],
            Self::UnfencedRelease => &[
                ("fencing_after_steal", Fencing),
                ("release_keeps_checkpoint_and_token", Fencing),
            ],
            Self::ReleaseDropsCheckpoint => &[("release_keeps_checkpoint_and_token", Release)],
            Self::StealIgnoresExpected => &[("steal_rules", Steal)],
            Self::ClaimNotStored => &[("claim_hand_off", Claim)],
            Self::CreateOverwrites => &[("create_if_absent", Create)],
            Self::CreateAnswersWrongly => &[("create_if_absent", Create)],
            Self::DeleteDoesNothing => &[("remove_lease_info_rules", Delete)],
            Self::StreamsShareRows => &[("isolation_between_streams", Isolation)],
            Self::HandlesDoNotShare => &[
                ("durability_across_handles", Durability),
                ("mutual_exclusion_one_winner", MutualExclusion),
            ],
            Self::ExpiresEarly | Self::ExpiresLate => &[
                ("expiry_is_exact", Expiry),
                ("model_matches_reference", Model),
            ],
            Self::ListDropsAtPageBoundary | Self::ListRepeatsAtPageBoundary => {
                &[("list_leases_paginated", List)]
            }
            Self::RetakeBumpsToken => &[
                ("retake_own_expired_keeps_token", TokenBump),
                ("model_matches_reference", Model),
            ],
            Self::WritesDespiteLost => &[
                ("fencing_after_steal", Fencing),
                ("fencing_after_expiry_takeover", Fencing),
            ],
            Self::RetakeKeepsDeadline => &[("retake_own_live_lease_moves_deadline", Expiry)],
            Self::WorkerIdsCollide => &[("edge_ids_round_trip", EdgeIds)],
            Self::ImportOverwrites => &[("import_whole_records", Import)],
            Self::ListAppsKeepsEmptied => &[("list_apps_names_apps_with_leases", ListApps)],
            Self::IgnoresInstance => &[("worker_id_instances", WorkerInstance)],
            Self::SuccessOnLostWrite | Self::RetryMisreadsOwnWrite => {
                &[("dropped_reply_is_never_a_false_answer", Faults)]
            }
            Self::WritesDespiteRegression => &[
                ("monotonic_positions", Monotonic),
                ("shard_end_is_terminal", ShardEnd),
            ],
        }
    }
}

/// A factory of mutants on one memory database and one manual clock (declared to the suite,
/// with the mutants' list page size), for `checkpoint_core::conformance::run_selected`.
pub fn mutant_factory(
    mutation: Mutation,
) -> Configured<impl Fn(AppName) -> std::future::Ready<Result<Arc<dyn Store>>> + Send + Sync> {
    mutant_factory_and_hooks(mutation).0
}

/// What opens a mutant for an app: the factory function inside [`mutant_factory`].
pub trait OpenMutant:
    Fn(AppName) -> std::future::Ready<Result<Arc<dyn Store>>> + Send + Sync
{
}

impl<F> OpenMutant for F where
    F: Fn(AppName) -> std::future::Ready<Result<Arc<dyn Store>>> + Send + Sync
{
}

/// [`mutant_factory`] and the mutants' hooks on the same database, for
/// `checkpoint_core::conformance::run_selected_with`.
pub fn mutant_factory_and_hooks(mutation: Mutation) -> (Configured<impl OpenMutant>, MutantHooks) {
    let clock = Arc::new(ManualClock::default());
    let db = MemoryDatabase::with_clock(clock.clone());
    let app_index = Arc::new(Mutex::new(BTreeSet::new()));
    let hooks = MutantHooks {
        db: db.clone(),
        clock: clock.clone(),
        mutation,
        app_index: app_index.clone(),
    };
    let mutant_clock = clock.clone();
    let open = move |app| {
        let app = if mutation == Mutation::SharedAcrossApps {
            AppName::new("everyone").expect("valid")
        } else {
            app
        };
        let db = if mutation == Mutation::HandlesDoNotShare {
            MemoryDatabase::with_clock(mutant_clock.clone())
        } else {
            db.clone()
        };
        std::future::ready(Ok(Arc::new(Mutant::new(
            db.open(app),
            mutation,
            mutant_clock.clone(),
            app_index.clone(),
        )) as Arc<dyn Store>))
    };
    let factory = Configured::new(open)
        .with_manual_clock(clock)
        .with_list_page_size(MUTANT_LIST_PAGE);
    (factory, hooks)
}

/// The mutants' [`BackendHooks`]: a lossy link simulated in front of the mutant
/// ([`SimulatedLink`]); the memory store has no raw records, transactions or processes, so
/// every other hook is unsupported.
pub struct MutantHooks {
    db: MemoryDatabase,
    clock: Arc<ManualClock>,
    mutation: Mutation,
    /// The app index the factory's handles share ([`Mutation::ListAppsKeepsEmptied`]).
    app_index: Arc<Mutex<BTreeSet<AppName>>>,
}

#[async_trait::async_trait]
impl BackendHooks for MutantHooks {
    async fn open_lossy(&self, app: &AppName) -> Result<Hooked<LossyStore>> {
        let link = Arc::new(SimulatedLink::default());
        let store = Mutant::new(
            self.db.open(app.clone()),
            self.mutation,
            self.clock.clone(),
            self.app_index.clone(),
        )
        .with_link(link.clone());
        Ok(Hooked::Done(LossyStore {
            store: Arc::new(store),
            link,
        }))
    }
}

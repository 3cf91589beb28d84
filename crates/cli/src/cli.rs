//! The command line: every command and option, as clap parses them.

use clap::{Args, Parser, Subcommand};

/// Inspect, repair and move the lease tables of any checkpoint store.
///
/// Exit codes: 0 done, 1 error (one line naming the field), 2 usage.
#[derive(Debug, Parser)]
#[command(name = "checkpointctl", version, about, long_about = None)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The store and app a command works on.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// The store, by URL: sqlite://path, postgres://…, mysql://…, redis://…,
    /// redis+cluster://host1:port,host2:port/, dynamodb://table?region=…, memory://.
    #[arg(long, env = "CHECKPOINT_STORE")]
    pub(crate) store: String,
    /// The consumer application whose leases to work on.
    #[arg(long, env = "CHECKPOINT_APP")]
    pub(crate) app: String,
}

/// How a command that changes the store asks before it does.
#[derive(Debug, Args)]
pub(crate) struct ConfirmArgs {
    /// Do it without asking (for scripts). Without a terminal and without --yes, nothing is
    /// changed.
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
    /// Only print what would change.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List, show, release or delete leases.
    #[command(subcommand)]
    Leases(LeasesCommand),
    /// Live workers.
    #[command(subcommand)]
    Workers(WorkersCommand),
    /// The apps of a store's namespace.
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Rewind or clear a checkpoint.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Write every record of the app as JSON lines to standard output.
    Export {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this stream.
        #[arg(long)]
        stream: Option<String>,
    },
    /// Read JSON lines (as `export` writes them) from standard input into the store.
    Import {
        #[command(flatten)]
        store: StoreArgs,
        /// Skip records that already exist in the store instead of refusing the whole file.
        #[arg(long)]
        skip_existing: bool,
    },
    /// Copy an app's lease table from one store to another (export + import), tokens carried.
    Migrate {
        /// The source store URL.
        #[arg(long)]
        from: String,
        /// The target store URL.
        #[arg(long)]
        to: String,
        /// The app to move.
        #[arg(long, env = "CHECKPOINT_APP", required_unless_present = "all_apps")]
        app: Option<String>,
        /// Every app holding lease records in the source store (as `apps list` names them);
        /// any live lease in any app refuses the whole move. An app from `CHECKPOINT_APP` gives
        /// way to it; `--app` on the command line with it is a usage error.
        #[arg(long)]
        all_apps: bool,
        /// Skip records that already exist in the target instead of refusing.
        #[arg(long)]
        skip_existing: bool,
    },
    /// Copy a KCL lease table (read as the DynamoDB backend reads it) into any store.
    AdoptKcl {
        /// The KCL table: dynamodb://TABLE?kcl_stream=STREAM&region=….
        #[arg(long)]
        from: String,
        /// The target store URL.
        #[arg(long)]
        to: String,
        /// The app to adopt the table as.
        #[arg(long, env = "CHECKPOINT_APP")]
        app: String,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
}

/// `leases …`.
#[derive(Debug, Subcommand)]
pub(crate) enum LeasesCommand {
    /// One row per lease, then a summary line.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this stream.
        #[arg(long)]
        stream: Option<String>,
        /// Only leases held by this worker.
        #[arg(long)]
        owner: Option<String>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The whole record of one lease.
    Show {
        #[command(flatten)]
        store: StoreArgs,
        /// The stream.
        stream: String,
        /// The shard.
        shard: String,
    },
    /// Force-release one lease, or every lease of a (dead) worker with --owner: owner and
    /// deadline cleared, token and checkpoint kept.
    Release {
        #[command(flatten)]
        store: StoreArgs,
        /// The stream (with SHARD).
        #[arg(requires = "shard", required_unless_present = "owner")]
        stream: Option<String>,
        /// The shard.
        shard: Option<String>,
        /// Release every lease this worker holds.
        #[arg(long, conflicts_with = "stream")]
        owner: Option<String>,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
    /// Delete one lease record (the shard is gone).
    Delete {
        #[command(flatten)]
        store: StoreArgs,
        /// The stream.
        stream: String,
        /// The shard.
        shard: String,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
}

/// `workers …`.
#[derive(Debug, Subcommand)]
pub(crate) enum WorkersCommand {
    /// Workers whose heartbeat has not expired, sorted.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove every worker whose heartbeat expired.
    Prune {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `apps …`.
#[derive(Debug, Subcommand)]
pub(crate) enum AppsCommand {
    /// The apps holding at least one lease record in the store's namespace (its SQL tables,
    /// Redis key prefix, DynamoDB table), one a line, sorted.
    List {
        /// The store, by URL (as for every other command).
        #[arg(long, env = "CHECKPOINT_STORE")]
        store: String,
    },
}

/// `checkpoint …`.
#[derive(Debug, Subcommand)]
pub(crate) enum CheckpointCommand {
    /// Set the checkpoint to POSITION (moving it backwards is allowed), or clear it.
    Reset {
        #[command(flatten)]
        store: StoreArgs,
        /// The stream.
        stream: String,
        /// The shard.
        shard: String,
        /// TRIM_HORIZON, LATEST, SHARD_END, AT_TIMESTAMP:MS (milliseconds), a sequence number, or
        /// SEQUENCE.SUB for a sub-sequence.
        #[arg(required_unless_present = "clear")]
        position: Option<String>,
        /// Clear the checkpoint instead.
        #[arg(long, conflicts_with = "position")]
        clear: bool,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
}

//! `checkpointctl`: inspect, repair and move the lease tables of any checkpoint store, opened
//! by URL (`--store` or `CHECKPOINT_STORE`) for one app (`--app` or `CHECKPOINT_APP`).
//!
//! Exit codes: 0 done, 1 error (the store's typed error in one line, naming the field), 2 usage.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use checkpoint_core::{AppName, Error, Store};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

mod admin;
mod cli;
mod record;
mod transfer;
mod view;

use cli::{
    AppsCommand, CheckpointCommand, Cli, Command, ConfirmArgs, LeasesCommand, StoreArgs,
    WorkersCommand,
};

/// Why a command stopped: a store error (typed, naming the field), or a refusal of this tool.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The store or the input was rejected by the library.
    Store(Error),
    /// This tool refused to go on (live leases, existing records, no confirmation).
    Refused(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Store(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Store(e) => write!(f, "{e}"),
            Self::Refused(why) => f.write_str(why),
        }
    }
}

/// A command's result.
pub(crate) type Outcome<T = ()> = std::result::Result<T, Failure>;

fn main() -> ExitCode {
    let cli = parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("checkpointctl: error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // One line: the error's own text, without a trailing newline inside.
            let text = failure.to_string().replace('\n', " ");
            eprintln!("checkpointctl: error: {text}");
            ExitCode::from(1)
        }
    }
}

/// The command line, parsed; exits with a usage error (code 2) when it is not one. `migrate
/// --all-apps` drops an app that came from `CHECKPOINT_APP` (an operator's environment names
/// the app the other commands work on) and refuses one given as `--app`.
fn parse() -> Cli {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Command::Migrate {
        app: app @ Some(_),
        all_apps: true,
        ..
    } = &mut cli.command
    {
        let source = matches
            .subcommand_matches("migrate")
            .and_then(|m| m.value_source("app"));
        if source != Some(ValueSource::EnvVariable) {
            Cli::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    "the argument '--all-apps' cannot be used with '--app <APP>'",
                )
                .exit();
        }
        *app = None;
    }
    cli
}

async fn run(command: Command) -> Outcome {
    match command {
        Command::Leases(LeasesCommand::List {
            store,
            stream,
            owner,
            json,
        }) => view::list(&*open(&store).await?, stream, owner, json).await,
        Command::Leases(LeasesCommand::Show {
            store,
            stream,
            shard,
        }) => view::show(&*open(&store).await?, &stream, &shard).await,
        Command::Leases(LeasesCommand::Release {
            store,
            stream,
            shard,
            owner,
            confirm,
        }) => {
            let target = match (stream, shard, owner) {
                (Some(stream), Some(shard), None) => admin::Release::One(stream, shard),
                (None, None, Some(owner)) => admin::Release::Owner(owner),
                _ => {
                    return Err(Failure::Refused(
                        "give either STREAM SHARD or --owner WORKER".to_owned(),
                    ));
                }
            };
            admin::release(&*open(&store).await?, target, &confirm).await
        }
        Command::Leases(LeasesCommand::Delete {
            store,
            stream,
            shard,
            confirm,
        }) => admin::delete(&*open(&store).await?, &stream, &shard, &confirm).await,
        Command::Checkpoint(CheckpointCommand::Reset {
            store,
            stream,
            shard,
            position,
            clear: _,
            confirm,
        }) => {
            // Parsed before the store is opened, so bad input never reaches it.
            let position = position.map(|p| admin::parse_position(&p)).transpose()?;
            let key = checkpoint_core::LeaseKey::parse(&stream, &shard)?;
            admin::reset(&*open(&store).await?, &key, position, &confirm).await
        }
        Command::Workers(WorkersCommand::List { store }) => {
            view::workers(&*open(&store).await?).await
        }
        Command::Workers(WorkersCommand::Prune { store }) => {
            let pruned = open(&store).await?.prune_dead_workers().await?;
            println!("pruned {pruned} dead worker(s)");
            Ok(())
        }
        Command::Export { store, stream } => {
            transfer::export(&*open(&store).await?, stream.as_deref()).await
        }
        Command::Import {
            store,
            skip_existing,
        } => {
            // Every line is read and checked before the store is opened.
            let leases = transfer::read_lines(std::io::stdin().lock())?;
            transfer::import(&*open(&store).await?, leases, skip_existing).await
        }
        Command::Migrate {
            from,
            to,
            app,
            all_apps,
            skip_existing,
        } => match (app, all_apps) {
            (Some(app), false) => {
                transfer::migrate(&from, &to, AppName::new(app)?, skip_existing).await
            }
            (None, true) => transfer::migrate_all(&from, &to, skip_existing).await,
            _ => Err(Failure::Refused(
                "give either --app APP or --all-apps".to_owned(),
            )),
        },
        Command::Apps(AppsCommand::List { store }) => {
            for app in transfer::list_apps(&store).await? {
                println!("{app}");
            }
            Ok(())
        }
        Command::AdoptKcl {
            from,
            to,
            app,
            confirm,
        } => transfer::adopt_kcl(&from, &to, AppName::new(app)?, &confirm).await,
    }
}

/// Opens the store of `args` (validating the app name first).
pub(crate) async fn open(args: &StoreArgs) -> Outcome<Arc<dyn Store>> {
    open_url(&args.store, AppName::new(args.app.clone())?).await
}

/// Opens the store at `url` for `app`; the backend creates its tables if absent.
pub(crate) async fn open_url(url: &str, app: AppName) -> Outcome<Arc<dyn Store>> {
    Ok(checkpoint_consumer::connect(url, app).await?)
}

/// Prints `plan` (what will change) and decides whether to go on: not with `--dry-run`; yes
/// with `--yes`; on a terminal, when the operator answers `y`; without a terminal, never (a
/// refusal, nothing changed).
pub(crate) fn confirm(plan: &[String], args: &ConfirmArgs) -> Outcome<bool> {
    for line in plan {
        println!("{line}");
    }
    if args.dry_run {
        println!("dry run: nothing changed");
        return Ok(false);
    }
    if args.yes {
        return Ok(true);
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure::Refused(
            "refusing to change the store without confirmation: no terminal to ask on; pass --yes (or --dry-run)"
                .to_owned(),
        ));
    }
    eprint!("proceed? [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer).ok();
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(true)
    } else {
        Err(Failure::Refused("aborted: nothing changed".to_owned()))
    }
}

//! Moving records between stores: `export`, `import`, `migrate`, `adopt-kcl`. Records travel
//! whole, with their tokens, through the contract's admin import
//! ([`checkpoint_core::LeaseManager::import_lease`]), so fencing stays monotonic across the
//! move and an existing record in the target is never overwritten.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal};

use checkpoint_core::{AppName, Error, Lease, LeaseKey, Store, StreamName, rules};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::ConfirmArgs;
use crate::record::{parse_line, to_line};
use crate::view::Clock;
use crate::{Failure, Outcome, confirm, open_url};

/// From this many records on, an import shows a progress bar (on a terminal only).
const PROGRESS_FROM: usize = 200;

/// `export`: every record of the app (or one stream) as JSON lines on standard output.
pub(crate) async fn export(store: &dyn Store, stream: Option<&str>) -> Outcome {
    let stream = stream.map(StreamName::new).transpose()?;
    let leases = store.list_leases(stream.as_ref()).await?;
    for lease in &leases {
        println!("{}", to_line(lease));
    }
    eprintln!("exported {} records", leases.len());
    Ok(())
}

/// Reads and checks every line of an export (blank lines skipped) before anything is written:
/// a line that does not parse, a record the contract rejects
/// ([`rules::check_import`]) or a key given twice is [`Error::InvalidInput`] naming the field
/// and the line.
pub(crate) fn read_lines(input: impl BufRead) -> Outcome<Vec<Lease>> {
    let mut leases = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| Error::invalid("record", format!("line {}: {e}", i + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let lease = parse_line(i + 1, &line)?;
        rules::check_import(&lease).map_err(|e| match e {
            Error::InvalidInput { field, reason } => {
                Error::invalid(field, format!("line {}: {}: {reason}", i + 1, lease.key))
            }
            other => other,
        })?;
        if !seen.insert(lease.key.clone()) {
            return Err(Error::invalid(
                "record",
                format!("line {}: {} appears twice", i + 1, lease.key),
            )
            .into());
        }
        leases.push(lease);
    }
    Ok(leases)
}

/// `import`: writes `leases` into `store` with their tokens. By default refuses (writing
/// nothing) when any of them already exists there; with `skip_existing` those are skipped.
pub(crate) async fn import(store: &dyn Store, leases: Vec<Lease>, skip_existing: bool) -> Outcome {
    refuse_clashes(store, &leases, skip_existing).await?;
    let bar = progress(leases.len());
    let written = write_records(store, &leases, skip_existing, &bar).await;
    bar.finish_and_clear();
    report(store.app(), written?);
    Ok(())
}

/// Refuses (nothing written) when any of `leases` already exists in `store`, unless
/// `skip_existing`.
async fn refuse_clashes(store: &dyn Store, leases: &[Lease], skip_existing: bool) -> Outcome {
    if skip_existing {
        return Ok(());
    }
    let existing: BTreeSet<LeaseKey> = store
        .list_leases(None)
        .await?
        .into_iter()
        .map(|l| l.key)
        .collect();
    let clashing: Vec<&LeaseKey> = leases
        .iter()
        .map(|l| &l.key)
        .filter(|k| existing.contains(*k))
        .collect();
    if clashing.is_empty() {
        return Ok(());
    }
    Err(Failure::Refused(format!(
        "refusing to import into app {}: {} of {} records already exist in the target ({}); nothing written; pass --skip-existing to skip them",
        store.app(),
        clashing.len(),
        leases.len(),
        sample(&clashing)
    )))
}

/// Writes `leases` into `store` with [`checkpoint_core::LeaseManager::import_lease`], moving `bar` one step a
/// record. Returns how many were written and how many skipped (existing, with
/// `skip_existing`); a record that appeared in the target meanwhile is a refusal saying how
/// many were written before it.
async fn write_records(
    store: &dyn Store,
    leases: &[Lease],
    skip_existing: bool,
    bar: &ProgressBar,
) -> Outcome<(usize, usize)> {
    let (mut written, mut skipped) = (0usize, 0usize);
    for lease in leases {
        if store.import_lease(lease).await? {
            written += 1;
        } else if skip_existing {
            skipped += 1;
        } else {
            return Err(Failure::Refused(format!(
                "{} appeared in the target during the import; {written} records of app {} were written before it",
                lease.key,
                store.app()
            )));
        }
        bar.inc(1);
    }
    Ok((written, skipped))
}

/// The final count of one app's import.
fn report(app: &AppName, (written, skipped): (usize, usize)) {
    println!(
        "imported {written} records into app {app}{}",
        if skipped > 0 {
            format!(" ({skipped} existing skipped)")
        } else {
            String::new()
        }
    );
}

/// `migrate`: export from `from` and import into `to`, for one app. Refuses while a lease in
/// the source is live by the source store's clock (workers must be stopped), naming them; a
/// held lease whose deadline passed is carried as it is. On DynamoDB a fresh handle judges a
/// held lease live until it has watched it unchanged for its duration (the KCL's rule), so
/// release such leases first with `leases release`.
pub(crate) async fn migrate(from: &str, to: &str, app: AppName, skip_existing: bool) -> Outcome {
    let leases = stopped_leases(from, &app).await?;
    let target = open_url(to, app).await?;
    import(&*target, leases, skip_existing).await
}

/// The records of `app` in the store at `url`, refused while any of them is live by that
/// store's clock, naming them.
async fn stopped_leases(url: &str, app: &AppName) -> Outcome<Vec<Lease>> {
    let source = open_url(url, app.clone()).await?;
    let (clock, leases) = Clock::listing(&*source, None).await?;
    let live: Vec<String> = leases
        .iter()
        .filter(|l| clock.live(l))
        .map(|l| {
            format!(
                "{} held by {} (live)",
                l.key,
                l.owner.as_ref().map_or("?", |o| o.as_str()),
            )
        })
        .collect();
    if !live.is_empty() {
        return Err(Failure::Refused(format!(
            "refusing to migrate app {app}: {} lease(s) are live ({}); stop the workers, or release their leases with `leases release --owner W`",
            live.len(),
            sample(&live)
        )));
    }
    Ok(leases)
}

/// `migrate --all-apps`: every app the source lists ([`checkpoint_core::LeaseManager::list_apps`]) moved as
/// `migrate` moves one. Every app is read and checked first, so a live lease in any app, or
/// (without `skip_existing`) a record of any app that exists in the target, refuses the whole
/// move before anything is written, naming the app. Then one progress bar over every record,
/// and a final count per app.
pub(crate) async fn migrate_all(from: &str, to: &str, skip_existing: bool) -> Outcome {
    let apps = list_apps(from).await?;
    if apps.is_empty() {
        println!("no app holds a lease record in the source: nothing to migrate");
        return Ok(());
    }
    let mut moves = Vec::with_capacity(apps.len());
    for app in apps {
        let leases = stopped_leases(from, &app).await?;
        moves.push((app, leases));
    }
    let mut targets = Vec::with_capacity(moves.len());
    for (app, leases) in &moves {
        let target = open_url(to, app.clone()).await?;
        refuse_clashes(&*target, leases, skip_existing).await?;
        targets.push(target);
    }
    let total: usize = moves.iter().map(|(_, leases)| leases.len()).sum();
    let bar = progress(total);
    let mut counts = Vec::with_capacity(moves.len());
    let mut failure = None;
    for ((app, leases), target) in moves.iter().zip(&targets) {
        match write_records(&**target, leases, skip_existing, &bar).await {
            Ok(count) => counts.push((app, count)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    bar.finish_and_clear();
    for (app, count) in &counts {
        report(app, *count);
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    println!("migrated {} apps, {total} records", counts.len());
    Ok(())
}

/// The app a handle is opened for when a command works on a whole namespace (`apps list`,
/// `migrate --all-apps`). Opening it creates no lease record, so it is never listed (Redis
/// keeps a layout-version key for each app a handle is opened for); a KCL single-stream table
/// would be claimed for it, which [`list_apps`] refuses.
const NAMESPACE_HANDLE_APP: &str = "checkpointctl";

/// The apps holding lease records in the store at `url`, sorted
/// ([`checkpoint_core::LeaseManager::list_apps`]). A KCL DynamoDB table (`kcl_stream` or `kcl_multi_stream` in
/// the URL) is one app's table, claimed by whichever app opens it, so it is refused here,
/// naming `store`.
pub(crate) async fn list_apps(url: &str) -> Outcome<Vec<AppName>> {
    let kcl = url::Url::parse(url).is_ok_and(|u| {
        u.scheme() == "dynamodb"
            && u.query_pairs()
                .any(|(k, _)| k == "kcl_stream" || k == "kcl_multi_stream")
    });
    if kcl {
        return Err(Error::invalid(
            "store",
            "a KCL table belongs to one app: name it with --app (or use adopt-kcl)",
        )
        .into());
    }
    let store = open_url(url, AppName::new(NAMESPACE_HANDLE_APP)?).await?;
    Ok(store.list_apps().await?)
}

/// `adopt-kcl`: the leases of a KCL table (read through the DynamoDB backend, normally with
/// `kcl_stream=<stream>` in the URL) imported into `to` as `app`. A KCL lease carries no
/// fencing token and a KCL owner's liveness cannot be judged from one read, so every record is
/// adopted free (owner, deadline and claim dropped; position, pending position, parents,
/// token and owner switches kept): stop the KCL application first. Asks before writing.
pub(crate) async fn adopt_kcl(from: &str, to: &str, app: AppName, args: &ConfirmArgs) -> Outcome {
    if !from.starts_with("dynamodb://") {
        return Err(Error::invalid("from", "a KCL table is a dynamodb:// URL").into());
    }
    let source = open_url(from, app.clone()).await?;
    let leases: Vec<Lease> = source
        .list_leases(None)
        .await?
        .into_iter()
        .map(|l| Lease {
            owner: None,
            deadline: None,
            claim: None,
            ..l
        })
        .collect();
    let held = source
        .list_leases(None)
        .await?
        .iter()
        .filter(|l| l.owner.is_some())
        .count();
    let plan = vec![format!(
        "adopt {} KCL leases into {} as app {app}: {held} with an owner are adopted free (stop the KCL application first); positions, parents and tokens kept",
        leases.len(),
        redact(to)
    )];
    if !confirm(&plan, args)? {
        return Ok(());
    }
    let target = open_url(to, app).await?;
    import(&*target, leases, false).await
}

/// A URL without its password, for messages. A URL the url crate cannot parse (a
/// `redis+cluster://` node list) loses its whole user info instead.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => match url.split_once("://") {
            Some((scheme, rest)) => {
                let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                match rest[..end].rsplit_once('@') {
                    Some((_, hosts)) => format!("{scheme}://***@{hosts}{}", &rest[end..]),
                    None => url.to_owned(),
                }
            }
            None => url.to_owned(),
        },
    }
}

/// The first few items, then how many more.
fn sample(items: &[impl std::fmt::Display]) -> String {
    let mut text: Vec<String> = items.iter().take(5).map(ToString::to_string).collect();
    if items.len() > 5 {
        text.push(format!("and {} more", items.len() - 5));
    }
    text.join(", ")
}

/// A progress bar on standard error for `len` records: hidden when standard error is not a
/// terminal or the table is small.
fn progress(len: usize) -> ProgressBar {
    if len < PROGRESS_FROM || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} records ({eta} left)") {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_the_password_of_every_url_shape() {
        assert_eq!(
            redact("redis://u:secret@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(
            redact("redis+cluster://u:secret@h1:7000,h2:7001/?prefix=x"),
            "redis+cluster://***@h1:7000,h2:7001/?prefix=x"
        );
        assert_eq!(redact("sqlite://a.db"), "sqlite://a.db");
    }
}

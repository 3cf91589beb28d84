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
    if !clashing.is_empty() && !skip_existing {
        return Err(Failure::Refused(format!(
            "refusing to import: {} of {} records already exist in the target ({}); nothing written; pass --skip-existing to skip them",
            clashing.len(),
            leases.len(),
            sample(&clashing)
        )));
    }
    let bar = progress(leases.len());
    let (mut written, mut skipped) = (0usize, 0usize);
    for lease in &leases {
        if store.import_lease(lease).await? {
            written += 1;
        } else if skip_existing {
            skipped += 1;
        } else {
            bar.finish_and_clear();
            return Err(Failure::Refused(format!(
                "{} appeared in the target during the import; {written} records were written before it",
                lease.key
            )));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "imported {written} records into app {}{}",
        store.app(),
        if skipped > 0 {
            format!(" ({skipped} existing skipped)")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `migrate`: export from `from` and import into `to`, for one app. Refuses while a lease in
/// the source is live by the source store's clock (workers must be stopped), naming them; a
/// held lease whose deadline passed is carried as it is. On DynamoDB a fresh handle judges a
/// held lease live until it has watched it unchanged for its duration (the KCL's rule), so
/// release such leases first with `leases release`.
pub(crate) async fn migrate(from: &str, to: &str, app: AppName, skip_existing: bool) -> Outcome {
    let source = open_url(from, app.clone()).await?;
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
    let target = open_url(to, app).await?;
    import(&*target, leases, skip_existing).await
}

/// The typed error of `migrate --all-apps`: no backend lists its apps through the store
/// contract.
pub(crate) fn all_apps_unsupported() -> Error {
    Error::invalid(
        "all_apps",
        "no store lists its apps through the contract; migrate one app at a time with --app",
    )
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

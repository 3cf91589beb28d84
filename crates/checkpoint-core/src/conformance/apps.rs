//! The admin listing of apps (the contract's operation 16, "List the apps of a namespace").

use std::time::Duration;

use super::{Outcome, StoreFactory, random_app};
use crate::ensure;
use crate::types::{
    AppName, FencingToken, HeartbeatTtl, Lease, LeaseDuration, LeaseKey, Position, WorkerId,
};

/// Whether `apps` is strictly ascending: sorted by bytes, each name once.
fn strictly_sorted(apps: &[AppName]) -> bool {
    apps.windows(2).all(|w| w[0] < w[1])
}

/// Operation 16: three apps with random names, given their records three ways (create,
/// grant, import), are listed by a handle of any app, sorted and each once; an app whose only
/// records were deleted is not listed, nor is an app with only a membership record; deleting
/// an app's last record removes it from the listing. Other tests may share the namespace, so
/// the listing is checked for these apps, never for its length.
pub async fn list_apps_names_apps_with_leases(factory: &dyn StoreFactory) -> Outcome {
    let names: Vec<AppName> = (0..3).map(|_| random_app("apps")).collect();
    let emptied = random_app("apps-emptied");
    let members_only = random_app("apps-members");
    let key = LeaseKey::parse("s", "shard-0")?;
    let other_key = LeaseKey::parse("s", "shard-1")?;
    let worker = WorkerId::new("apps-worker")?;
    let duration = LeaseDuration::new(Duration::from_secs(60))?;

    let created = factory.open(&names[0]).await?;
    created
        .create_lease_if_absent(&key, &[], Some(&Position::TrimHorizon))
        .await?;
    let granted = factory.open(&names[1]).await?;
    granted.get_lease(&key, &worker, duration).await?;
    let imported = factory.open(&names[2]).await?;
    imported
        .import_lease(&Lease {
            token: FencingToken(5),
            ..Lease::new(key.clone(), vec![], Some(Position::sequence("42")?))
        })
        .await?;
    let gone = factory.open(&emptied).await?;
    gone.create_lease_if_absent(&key, &[], None).await?;
    gone.get_lease(&other_key, &worker, duration).await?;
    gone.remove_lease_info(&key).await?;
    gone.remove_lease_info(&other_key).await?;
    let members = factory.open(&members_only).await?;
    members
        .register_worker(&worker, HeartbeatTtl::new(Duration::from_secs(60))?)
        .await?;

    // Any handle lists the namespace, the one of an app without leases too.
    for reader in [&created, &members] {
        let listed = reader.list_apps().await?;
        ensure!(
            strictly_sorted(&listed),
            ListApps,
            "list_apps is not sorted by bytes with each app once: {listed:?}"
        );
        for name in &names {
            ensure!(
                listed.contains(name),
                ListApps,
                "list_apps from {} misses app {name}, which holds a lease record",
                reader.app()
            );
        }
        ensure!(
            !listed.contains(&emptied),
            ListApps,
            "list_apps names {emptied}, whose every lease record was deleted"
        );
        ensure!(
            !listed.contains(&members_only),
            ListApps,
            "list_apps names {members_only}, which holds only a membership record"
        );
    }

    // Deleting an app's last record removes it from the listing.
    created.remove_lease_info(&key).await?;
    let listed = granted.list_apps().await?;
    ensure!(
        !listed.contains(&names[0]) && listed.contains(&names[1]) && listed.contains(&names[2]),
        ListApps,
        "after deleting the only record of {}, list_apps gave {listed:?}",
        names[0]
    );
    members.deregister_worker(&worker).await?;
    Ok(())
}

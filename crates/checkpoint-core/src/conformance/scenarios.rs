//! The scenarios.
use super::{Scenario, StoreFactory, Outcome};

/// Every scenario, in order.
pub fn all() -> Vec<Scenario> {
    vec![("init_is_idempotent", |f| Box::pin(init_is_idempotent(f)))]
}

/// Operation 1: init twice.
pub async fn init_is_idempotent(factory: &dyn StoreFactory) -> Outcome {
    let store = factory.open(&super::random_app("init")).await?;
    store.init().await?;
    Ok(())
}

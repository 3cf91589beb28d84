//! Model-based test.
use super::{Outcome, StoreFactory};

/// Random operation sequences compared against the memory model.
pub async fn model_test(_factory: &dyn StoreFactory) -> Outcome {
    Ok(())
}

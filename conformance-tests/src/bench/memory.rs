//! The in-memory reference store: the library's own cost with no database behind it.

use std::sync::Arc;

use checkpoint_core::MemoryStore;
use checkpoint_core::conformance::random_app;

use crate::{Backend, Op, Settings};

/// The memory store, library only (there is no raw database to compare with).
pub(crate) async fn open(settings: &Settings) -> Result<Vec<Backend>, String> {
    Ok(vec![Backend {
        name: "memory".to_owned(),
        store: Arc::new(MemoryStore::new(random_app("bench"))),
        raw: None,
        ops: Op::ALL.to_vec(),
        renew_sizes: settings.renew_sizes(),
        requests: None,
        url: None,
        consumer: true,
        cleanup: None,
    }])
}

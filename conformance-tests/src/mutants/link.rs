//! A lossy link simulated in front of a mutant, for the suite's dropped-reply scenario: once
//! armed, the next write through the mutant loses its reply.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use checkpoint_core::Error;
use checkpoint_core::conformance::LossyLink;

/// The simulated link: armed by the suite, fired by the next write of the mutant it is
/// attached to ([`super::Mutant::with_link`]).
#[derive(Debug, Default)]
pub struct SimulatedLink {
    armed: AtomicBool,
    dropped: AtomicUsize,
}

impl SimulatedLink {
    /// Whether the next write loses its reply: true once per arming.
    pub fn fires(&self) -> bool {
        let fired = self.armed.swap(false, Ordering::SeqCst);
        if fired {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
        fired
    }

    /// The error a client sees when its reply was lost: retryable.
    pub fn lost_reply() -> Error {
        Error::backend_message(
            "simulated link",
            true,
            "the connection closed before the reply",
        )
    }
}

impl LossyLink for SimulatedLink {
    fn drop_next_reply(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

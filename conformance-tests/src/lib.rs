//! Deliberately broken stores (work in progress).

//! Consumer runtime (work in progress).

//! The lease/checkpoint contract on sqlite (work in progress).

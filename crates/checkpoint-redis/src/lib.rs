//! The lease/checkpoint contract on redis (work in progress).

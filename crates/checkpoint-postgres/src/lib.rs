//! The lease/checkpoint contract on postgres (work in progress).

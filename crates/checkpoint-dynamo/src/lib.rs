//! The lease/checkpoint contract on dynamo (work in progress).

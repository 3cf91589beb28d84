//! The lease/checkpoint contract on Amazon DynamoDB.

mod config;
mod error;
pub mod schema;
mod store;

pub use config::{Billing, DEFAULT_SKEW_ALLOWANCE, DynamoConfig, StaticCredentials};
pub use schema::KeyLayout;
pub use store::DynamoStore;

//! The aqueduct: HAProxy frontends and backends over REST, applied to a supervised HAProxy.

pub mod balance;
pub mod model;
pub mod server;
pub mod validate;

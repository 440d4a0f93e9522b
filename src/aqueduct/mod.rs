//! The aqueduct: HAProxy frontends and backends over REST, applied to a supervised HAProxy.

pub mod balance;
pub mod members;
pub mod model;
pub mod server;
pub mod state_file;
pub mod validate;

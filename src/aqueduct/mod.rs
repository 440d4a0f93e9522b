//! The aqueduct: HAProxy frontends and backends over REST, applied to a supervised HAProxy.

pub mod apply_metrics;
pub mod balance;
pub mod bind_check;
pub mod controller;
pub mod members;
pub mod model;
pub mod routes;
pub mod server;
pub mod state_file;
pub mod validate;

//! The aqueduct: HAProxy frontends and backends over REST, applied to a supervised HAProxy.

pub mod server;

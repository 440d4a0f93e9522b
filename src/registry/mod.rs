//! The service registry: registrations with a TTL, their HTTP API on port 9000, and the change
//! feed the aqueducts follow.

pub mod feed;
pub mod model;
pub mod register;
pub mod server;

//! The service registry: registrations with a lease, their HTTP API on port 9000, and the
//! change feed the aqueducts follow.
//!
//! Map (read in this order):
//! - [`model`]: the `Registration` and its validated key; [`record`]: its compact stored form;
//!   [`ttl`]: lease length from a body.
//! - [`store`]: the `RegistrationStore` trait (and what a distributed store must provide);
//!   [`memory_store`] + [`event_log`]: the embedded implementation (the default);
//!   [`redis_store`]: the shared one, for a cluster of registry nodes on Redis or Valkey
//!   (`--store`).
//! - [`handle`]: `Registry`, the cheap-to-clone handle everything else uses; it runs
//!   [`expiry`] (rounds the store performs, with the stall hold), the [`meter`] ticker and the
//!   [`snapshot`] writer (embedded store only).
//! - [`routes`] + [`events`]: the HTTP API and `GET /events`; [`server`]: `thalassa registry`.
//! - [`feed`] + [`fanout`] + [`follow`] + [`sse_decoder`]: the change feed, in-process or over
//!   HTTP; [`axon`]: the same feed on the original's axon push socket (`--axon-listen`); [`register`]: `thalassa register`; [`nodes`]: the registry nodes those clients fail
//!   over between.
//!
//! Invariants:
//! - Only the store mutates registrations, and every change and its event are one atomic step,
//!   so event sequence numbers order changes exactly.
//! - A plain heartbeat (same meta) is never an event; `online` means new or changed meta.
//! - The heartbeat path never touches the disk: it marks the registry dirty and the snapshot
//!   writer persists at most once per second (and on graceful shutdown).
//! - Invalid input changes nothing: keys and bodies are validated before the store is called.

pub mod axon;
pub mod clock;
pub mod event_log;
pub mod events;
pub mod expiry;
pub mod fanout;
pub mod feed;
pub mod follow;
pub mod handle;
pub mod local_ip;
pub mod memory_store;
pub mod meter;
pub mod model;
pub mod nodes;
pub mod record;
pub mod redis_store;
pub mod register;
pub mod routes;
pub mod snapshot;
pub mod sse_decoder;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod ttl;

pub use handle::{Registry, RegistryConfig};
pub use store::{Lease, ListFilter, RegistrationStore, UpsertOutcome};

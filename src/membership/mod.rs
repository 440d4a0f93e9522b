//! Live membership: which servers each backend should have (from the registry and static
//! members), and the runtime-API operations that make HAProxy agree, without reloads.

pub mod control_plane;
pub mod desired;
pub mod expiry_brake;
pub mod fast_lane;
pub mod health_events;
pub mod manager;
pub mod member_sync;
pub mod members;
pub mod metrics;
pub mod plan;
pub mod refusals;
pub mod resolver;
pub mod sample;
pub mod stats_poller;

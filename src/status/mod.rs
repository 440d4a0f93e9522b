//! Status as the control plane reports it, between the subsystems that produce it (membership:
//! samples, brake marks, refusals, activities) and those that show it (the REST API, the UI).
//! Below both, so neither imports the other.

mod activity;
mod board;
pub mod brake_board;
mod sample;
mod sink;

pub use activity::{Activity, now_ms};
pub use board::{RefusedByBackend, StatusBoard, split_server_name};
pub use brake_board::{BrakeBoard, NothingHeld};
pub use sample::{DegradedSample, MemberSample, ProxySample, StatsSample};
pub use sink::StatusSink;

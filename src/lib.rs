//! # Thalassa: a service registry and an HAProxy runtime-API controller
//!
//! (Architecture overview: kept current as modules land; see README.md for usage.)

pub mod api_error;
pub mod aqueduct;
pub mod atomic_file;
pub mod cli;
pub mod haproxy;
pub mod json_body;
pub mod membership;
pub mod metrics;
pub mod registry;
pub mod ui;
pub mod up;

/// The error type of a whole subcommand run: reported once by `main`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

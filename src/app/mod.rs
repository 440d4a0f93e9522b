//! The wiring of the application: the only module that knows every subsystem. Each
//! subcommand's `run` turns its arguments into the options of the layers below, starts them
//! and connects them (the registry's feed to membership, membership to the controller, both to
//! the UI), and shuts them down in order. `main` -> `app` -> the layers (see `src/lib.rs`).

pub mod aqueduct;
pub mod control_plane;
pub mod import_original;
pub mod registry;
mod rollout;
pub mod up;

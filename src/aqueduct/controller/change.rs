//! The changes the apply pipeline takes, and what each does to a candidate config.

use super::ApplyError;
use crate::aqueduct::rollout::transition::{self, RolloutCommand, RolloutRefused};
use crate::aqueduct::validate::VersionSwitch;
use crate::config::{Backend, Config, Frontend};

/// One structural change requested through the API.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    PutFrontend(Frontend),
    DeleteFrontend(String),
    PutBackend(Backend),
    DeleteBackend(String),
    /// `POST /backends/{key}`: follow another version (and maybe name) in the registry.
    SwitchVersion {
        key: String,
        switch: VersionSwitch,
    },
    /// `POST/DELETE /backends/{key}/rollout...`, and the rollout engine's decisions, taken
    /// at `at_ms` (epoch ms).
    Rollout {
        key: String,
        command: RolloutCommand,
        at_ms: u64,
    },
    /// A fleet node takes the fleet's whole configuration (`version` in the shared store),
    /// committed by `origin` (a node id) for `reason`.
    Adopt {
        config: Box<Config>,
        version: u64,
        origin: String,
        reason: String,
    },
}

impl Change {
    /// One line for the log, the activity and the fleet's change stream.
    pub fn describe(&self) -> String {
        match self {
            Change::PutFrontend(f) => format!("put frontend {}", f.key),
            Change::DeleteFrontend(key) => format!("delete frontend {key}"),
            Change::PutBackend(b) => format!("put backend {}", b.key),
            Change::DeleteBackend(key) => format!("delete backend {key}"),
            Change::SwitchVersion { key, switch } => format!(
                "switch backend {key} to {}@{}",
                switch.name.as_deref().unwrap_or("(same name)"),
                switch.version
            ),
            Change::Rollout { key, command, .. } => {
                format!("rollout of backend {key}: {}", command.verb())
            }
            Change::Adopt {
                version,
                origin,
                reason,
                ..
            } => format!("fleet config v{version} from {origin} ({reason})"),
        }
    }

    pub(super) fn apply_to(&self, config: &mut Config) -> Result<(), ApplyError> {
        match self {
            Change::PutFrontend(frontend) => {
                config
                    .frontends
                    .insert(frontend.key.clone(), frontend.clone());
            }
            Change::DeleteFrontend(key) => {
                config
                    .frontends
                    .remove(key)
                    .ok_or_else(|| ApplyError::FrontendNotFound(key.clone()))?;
            }
            Change::PutBackend(backend) => {
                let mut backend = backend.clone();
                // A PUT edits the backend's settings; its rollout goes on while it follows the
                // same service and version (rollouts change through their own endpoints).
                if let Some(current) = config.backends.get(&backend.key)
                    && (current.kind, &current.name, &current.version)
                        == (backend.kind, &backend.name, &backend.version)
                {
                    backend.rollout = current.rollout.clone();
                }
                config.backends.insert(backend.key.clone(), backend);
            }
            Change::DeleteBackend(key) => {
                config
                    .backends
                    .remove(key)
                    .ok_or_else(|| ApplyError::BackendNotFound(key.clone()))?;
            }
            Change::SwitchVersion { key, switch } => {
                let backend = config
                    .backends
                    .get_mut(key)
                    .ok_or_else(|| ApplyError::BackendNotFound(key.clone()))?;
                if let Some(rollout) = backend.active_rollout() {
                    return Err(ApplyError::Rollout(RolloutRefused {
                        field: None,
                        message: format!(
                            "backend {key} is rolling out {}: promote or abort the rollout \
                             instead of switching",
                            rollout.version
                        ),
                    }));
                }
                backend.version = Some(switch.version.clone());
                if let Some(name) = &switch.name {
                    backend.name = Some(name.clone());
                }
            }
            Change::Rollout {
                key,
                command,
                at_ms,
            } => {
                let backend = config
                    .backends
                    .get_mut(key)
                    .ok_or_else(|| ApplyError::BackendNotFound(key.clone()))?;
                transition::apply(backend, command, *at_ms).map_err(ApplyError::Rollout)?;
            }
            Change::Adopt { config: fleet, .. } => {
                config.frontends = fleet.frontends.clone();
                config.backends = fleet.backends.clone();
            }
        }
        Ok(())
    }
}

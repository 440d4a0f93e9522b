//! What each backend's members should be: for a dynamic backend, the registrations with its
//! `name` and `version`; for a static one, the members of its config. Pure functions.

use super::plan::{CheckOptions, DesiredMember, ServerRef};
use crate::aqueduct::model::{Backend, BackendType, Config};
use crate::haproxy::render::{RenderMembers, server_name};
use crate::registry::model::Registration;
use std::collections::BTreeMap;

/// HAProxy's defaults, spelled out because runtime servers inherit nothing.
const RISE: u32 = 2;
const FALL: u32 = 3;

/// The registrations each dynamic backend follows, by backend key, sorted by id.
pub fn registrations_by_backend(
    config: &Config,
    registrations: &BTreeMap<String, Registration>,
) -> BTreeMap<String, Vec<Registration>> {
    let mut out = BTreeMap::new();
    for backend in config.backends.values() {
        if backend.kind != BackendType::Dynamic {
            continue;
        }
        let (Some(name), Some(version)) = (&backend.name, &backend.version) else {
            out.insert(backend.key.clone(), Vec::new());
            continue;
        };
        let members = registrations
            .values()
            .filter(|r| &r.name == name && &r.version == version)
            .cloned()
            .collect();
        out.insert(backend.key.clone(), members);
    }
    out
}

/// Every server HAProxy should have. Dynamic members come from `render_members` (which carries
/// their stable server ids), static ones from the config.
pub fn desired_servers(
    config: &Config,
    render_members: &RenderMembers,
) -> BTreeMap<ServerRef, DesiredMember> {
    let mut out = BTreeMap::new();
    for backend in config.backends.values() {
        let check = check_options(backend);
        let explicit_ids = backend.balance.needs_explicit_server_ids();
        let members: Vec<(std::net::IpAddr, u16, Option<u32>)> = match backend.kind {
            BackendType::Dynamic => render_members
                .get(&backend.key)
                .iter()
                .map(|m| (m.host, m.port, m.id))
                .collect(),
            BackendType::Static => backend
                .static_members
                .iter()
                .map(|m| (m.host, m.port, None))
                .collect(),
        };
        for (addr, port, id) in members {
            let server = ServerRef {
                backend: backend.key.clone(),
                server: server_name(&backend.key, addr, port),
            };
            out.insert(
                server,
                DesiredMember {
                    addr,
                    port,
                    check: check.clone(),
                    id: if explicit_ids { id } else { None },
                },
            );
        }
    }
    out
}

fn check_options(backend: &Backend) -> CheckOptions {
    CheckOptions {
        inter_ms: u64::from(backend.check_interval_ms()),
        rise: RISE,
        fall: FALL,
    }
}

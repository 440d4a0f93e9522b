//! What each backend's members should be: for a dynamic backend, the registrations with its
//! `name` and `version`; for a static one, the members of its config. Pure functions.

use super::plan::{CheckOptions, DesiredMember, ServerRef};
use crate::config::rollout::DEFAULT_WEIGHT;
use crate::config::{Backend, BackendType, Config};
use crate::haproxy::render::{RenderMembers, server_name};
use crate::registry::model::Registration;
use std::collections::{BTreeMap, BTreeSet};

/// HAProxy's defaults, spelled out because runtime servers inherit nothing.
const RISE: u32 = 2;
const FALL: u32 = 3;

/// The registry's registrations indexed by `(name, version)`, so that a round only looks at
/// the services that changed instead of every registration.
#[derive(Debug, Default)]
pub struct ServiceIndex {
    by_service: BTreeMap<(String, String), BTreeMap<String, Registration>>,
}

impl ServiceIndex {
    /// Adds or replaces a registration; returns its service.
    pub fn insert(&mut self, registration: Registration) -> (String, String) {
        let service = (registration.name.clone(), registration.version.clone());
        self.by_service
            .entry(service.clone())
            .or_default()
            .insert(registration.id.clone(), registration);
        service
    }

    /// Removes a registration of `service`.
    pub fn remove(&mut self, service: &(String, String), id: &str) {
        if let Some(members) = self.by_service.get_mut(service) {
            members.remove(id);
            if members.is_empty() {
                self.by_service.remove(service);
            }
        }
    }

    pub fn clear(&mut self) {
        self.by_service.clear();
    }

    /// The registrations of `name@version`, sorted by id.
    pub fn members(&self, name: &str, version: &str) -> Vec<Registration> {
        self.by_service
            .get(&(name.to_owned(), version.to_owned()))
            .map(|members| members.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// The registrations a dynamic backend follows (none without a name and version): those of
/// its version and, during a rollout, those of the version it moves to; sorted by id.
pub fn registrations_of(backend: &Backend, index: &ServiceIndex) -> Vec<Registration> {
    match (&backend.name, &backend.version) {
        (Some(name), Some(version)) if backend.kind == BackendType::Dynamic => {
            let mut members = index.members(name, version);
            if let Some(rollout) = backend.active_rollout() {
                members.extend(index.members(name, &rollout.version));
                members.sort_by(|a, b| a.id.cmp(&b.id));
            }
            members
        }
        _ => Vec::new(),
    }
}

/// Whether the fast lane adds this backend's new members. It leaves to the manager the
/// backends whose algorithm needs stable server ids, those with a sticky cookie (each add
/// needs `enable dynamic-cookie` after it) and those in a rollout (a member's weight
/// depends on how many of each version there are).
pub fn lane_joins(backend: &Backend) -> bool {
    !backend.balance.needs_explicit_server_ids()
        && backend.sticky_cookie.is_none()
        && backend.active_rollout().is_none()
}

/// Every server HAProxy should have in the backends `only`. Dynamic members come from `render_members` (which carries
/// their stable server ids), static ones from the config.
pub fn desired_servers(
    config: &Config,
    render_members: &RenderMembers,
    only: &BTreeSet<String>,
) -> BTreeMap<ServerRef, DesiredMember> {
    let mut out = BTreeMap::new();
    for backend in config.backends.values() {
        if !only.contains(&backend.key) {
            continue;
        }
        let check = check_options(backend);
        let explicit_ids = backend.balance.needs_explicit_server_ids();
        let members: Vec<(std::net::IpAddr, u16, Option<u32>, u16)> = match backend.kind {
            BackendType::Dynamic => render_members
                .get(&backend.key)
                .iter()
                .map(|m| (m.host, m.port, m.id, m.weight))
                .collect(),
            BackendType::Static => backend
                .static_members
                .iter()
                .map(|m| (m.host, m.port, None, DEFAULT_WEIGHT))
                .collect(),
        };
        for (addr, port, id, weight) in members {
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
                    weight,
                    dynamic_cookie: backend.sticky_cookie.is_some(),
                },
            );
        }
    }
    out
}

/// At most `max` of `registrations` (sorted by id), preferring those already members
/// (`previous`), so a full backend never swaps a serving member for a newcomer; the result
/// stays sorted by id.
pub fn cap_members(
    previous: Option<&Vec<Registration>>,
    registrations: Vec<Registration>,
    max: usize,
) -> Vec<Registration> {
    if registrations.len() <= max {
        return registrations;
    }
    let was_member: BTreeSet<&str> = previous
        .map(|members| members.iter().map(|r| r.id.as_str()).collect())
        .unwrap_or_default();
    let (mut kept, newcomers): (Vec<Registration>, Vec<Registration>) = registrations
        .into_iter()
        .partition(|r| was_member.contains(r.id.as_str()));
    kept.truncate(max);
    let room = max - kept.len();
    kept.extend(newcomers.into_iter().take(room));
    kept.sort_by(|a, b| a.id.cmp(&b.id));
    kept
}

/// The dynamic backends following `registration`'s `name@version`, with its address; none
/// for a DNS name not resolved (see `resolver`), which gets no server.
fn following<'a>(
    config: &'a Config,
    registration: &Registration,
) -> Option<(std::net::IpAddr, impl Iterator<Item = &'a Backend>)> {
    let addr = registration.ip()?;
    let (name, version) = (registration.name.clone(), registration.version.clone());
    let backends = config.backends.values().filter(move |b| {
        b.kind == BackendType::Dynamic
            && b.name.as_deref() == Some(name.as_str())
            && b.follows_version(&version)
    });
    Some((addr, backends))
}

/// The servers a brand-new registration becomes, for the fast lane: one per dynamic backend
/// following its `name@version`, except where [`lane_joins`] says the manager adds them.
pub fn joins_of(config: &Config, registration: &Registration) -> Vec<(ServerRef, DesiredMember)> {
    let Some((addr, backends)) = following(config, registration) else {
        return Vec::new();
    };
    backends
        .filter(|b| lane_joins(b))
        .map(|backend| {
            let server = ServerRef {
                backend: backend.key.clone(),
                server: server_name(&backend.key, addr, registration.port),
            };
            let member = DesiredMember {
                addr,
                port: registration.port,
                check: check_options(backend),
                id: None,
                weight: DEFAULT_WEIGHT,
                dynamic_cookie: false,
            };
            (server, member)
        })
        .collect()
}

/// Every server `registration` is (or would be) in the backends following it: what the
/// fast lane drains when it is deleted.
pub fn servers_of(config: &Config, registration: &Registration) -> Vec<ServerRef> {
    let Some((addr, backends)) = following(config, registration) else {
        return Vec::new();
    };
    backends
        .map(|backend| ServerRef {
            backend: backend.key.clone(),
            server: server_name(&backend.key, addr, registration.port),
        })
        .collect()
}

fn check_options(backend: &Backend) -> CheckOptions {
    CheckOptions {
        inter_ms: u64::from(backend.check_interval_ms()),
        rise: RISE,
        fall: FALL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(port: u16) -> Registration {
        Registration {
            name: "web".into(),
            version: "1".into(),
            host: "127.0.0.1".into(),
            port,
            last_known: 0,
            meta: Default::default(),
            id: format!("/web/1/127.0.0.1/{port}"),
            address: None,
            unresolved: None,
        }
    }

    fn check(previous: Option<&[u16]>, registered: &[u16], max: usize, expected: &[u16]) {
        let previous: Option<Vec<Registration>> =
            previous.map(|ports| ports.iter().copied().map(registration).collect());
        let registrations = registered.iter().copied().map(registration).collect();
        let kept: Vec<u16> = cap_members(previous.as_ref(), registrations, max)
            .iter()
            .map(|r| r.port)
            .collect();
        assert_eq!(kept, expected, "{previous:?} {registered:?} max {max}");
    }

    #[test]
    fn a_full_backend_keeps_its_members_and_leaves_newcomers_out() {
        check(None, &[1, 2, 3], 5, &[1, 2, 3]);
        check(None, &[1, 2, 3], 2, &[1, 2]);
        check(Some(&[2, 3]), &[1, 2, 3], 2, &[2, 3]);
        check(Some(&[3]), &[1, 2, 3], 2, &[1, 3]);
        check(Some(&[1, 2, 3]), &[1, 2, 3, 4], 2, &[1, 2]);
        check(Some(&[9]), &[1, 2, 3], 2, &[1, 2]);
        check(None, &[1, 2], 0, &[]);
    }
}

//! The current members of each dynamic backend (registry registrations), with the stable
//! numeric server id each one keeps for as long as it stays a member.

mod inherited;
pub use inherited::inherited_from;

use crate::config::rollout::DEFAULT_WEIGHT;
use crate::config::{BackendType, Config};
use crate::haproxy::render::{RenderMember, RenderMembers, server_name};
use crate::haproxy::stat::{AdminState, ServerStateRow};
use crate::registry::model::Registration;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

/// Cheap to clone (each backend's members are shared): readers take a copy under the
/// controller's lock and do their work after releasing it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DynamicMembers {
    by_backend: BTreeMap<String, Arc<Vec<Member>>>,
    /// Members registered by a DNS name that has no address (yet), by backend: listed by the
    /// API (with `unresolved` saying why), rendered nowhere.
    unresolved: BTreeMap<String, Vec<Registration>>,
    /// Server ids HAProxy still holds for servers that are not members (any more): a member
    /// that left and is draining, an old version's server kept until the new one serves, a
    /// server an earlier run left. By backend, `(host, port) -> id`. No new member is given one
    /// of them (HAProxy would refuse its `add server`: "custom id already used"); a member
    /// coming back gets its own again. Released once HAProxy no longer has the server
    /// ([`DynamicMembers::observe`]).
    held_ids: BTreeMap<String, BTreeMap<(IpAddr, u16), u32>>,
    /// The servers HAProxy held in service (ready, or draining) at the last look, members or
    /// not, by backend, less those the membership manager has since taken out of service. A
    /// reload renders the ones that are not members (an old version's member make before break
    /// keeps until the new one serves, a leaver draining) enabled after the members (the saved
    /// server state restores a drain), so it never takes away a server that is kept serving;
    /// and never one HAProxy may no longer have, which would come back unchecked.
    in_service: BTreeMap<String, BTreeSet<(IpAddr, u16)>>,
    /// Server names (dynamic or static members) still waiting for a first passing check.
    joining: BTreeSet<String>,
    /// Server names the membership manager last saw serving (set ready after a passing check),
    /// less those it has since taken out of service; `None` until its first word. Any other
    /// dynamic member may be unchecked: one the fast lane or the manager added since that
    /// word, one about to be added. A reload renders those `disabled` (never ready without a
    /// passing check), and the lane deletes rather than drains them.
    serving: Option<BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Member {
    registration: Registration,
    host: IpAddr,
    /// Server id, unique in its backend, kept while the member stays.
    server_id: u32,
}

/// What [`DynamicMembers::others_joining`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OthersJoining {
    /// No other member.
    None,
    /// Other members, every one still joining.
    AllJoining,
    /// At least one other member that is not joining.
    SomeServing,
}

/// A server HAProxy holds in a dynamic backend, as `show servers state` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldServer {
    pub host: IpAddr,
    pub port: u16,
    pub id: u32,
    /// Not in maintenance: ready, or draining.
    pub in_service: bool,
}

impl DynamicMembers {
    /// Replaces a backend's members. A member already present (same host and port) keeps its
    /// server id, one whose server HAProxy still holds gets that server's id back, and a new
    /// one gets the lowest id that neither a member nor a server HAProxy holds has. A member
    /// that leaves keeps its id held while HAProxy has its server. Registrations with neither
    /// an IP host nor a resolved address (see `membership::resolver`) get no server: HAProxy
    /// never resolves names of runtime servers.
    pub fn set(&mut self, backend_key: &str, registrations: Vec<Registration>) {
        let held = self.held_ids.entry(backend_key.to_owned()).or_default();
        let previous: BTreeMap<(IpAddr, u16), u32> = self
            .by_backend
            .get(backend_key)
            .into_iter()
            .flat_map(|members| members.iter())
            .map(|m| ((m.host, m.registration.port), m.server_id))
            .chain(held.iter().map(|(address, id)| (*address, *id)))
            .collect();
        let mut kept = Vec::new();
        let mut unresolved = Vec::new();
        let mut seen = BTreeSet::new();
        for registration in registrations {
            // A DNS name the manager could not resolve (yet) is listed, but has no server.
            let Some(host) = registration.ip() else {
                unresolved.push(registration);
                continue;
            };
            if seen.insert((host, registration.port)) {
                kept.push((host, registration));
            }
        }
        // Every id a member keeps or HAProxy holds for a leaver: none is handed out again.
        let mut used: BTreeSet<u32> = previous.values().copied().collect();
        let mut next_free = 1u32;
        let members: Vec<Member> = kept
            .into_iter()
            .map(|(host, registration)| {
                let server_id = match previous.get(&(host, registration.port)) {
                    Some(id) => *id,
                    None => {
                        while used.contains(&next_free) {
                            next_free += 1;
                        }
                        used.insert(next_free);
                        next_free
                    }
                };
                Member {
                    registration,
                    host,
                    server_id,
                }
            })
            .collect();
        // Previous members that left: their servers may still be in HAProxy (draining, or kept
        // until a new version serves), so their ids stay held until `observe` says otherwise.
        let staying: BTreeSet<(IpAddr, u16)> = members
            .iter()
            .map(|m| (m.host, m.registration.port))
            .collect();
        *held = previous
            .into_iter()
            .filter(|(address, _)| !staying.contains(address))
            .collect();
        if held.is_empty() {
            self.held_ids.remove(backend_key);
        }
        if unresolved.is_empty() {
            self.unresolved.remove(backend_key);
        } else {
            self.unresolved.insert(backend_key.to_owned(), unresolved);
        }
        if members.is_empty() {
            self.by_backend.remove(backend_key);
        } else {
            self.by_backend
                .insert(backend_key.to_owned(), Arc::new(members));
        }
    }

    /// [`DynamicMembers::observe`] for the dynamic backends of `config` among `backends`, from
    /// `show servers state` rows (a backend HAProxy holds no server of is observed empty).
    /// True when what a reload renders changed.
    pub fn observe_rows(
        &mut self,
        config: &Config,
        backends: &BTreeSet<String>,
        rows: &[ServerStateRow],
    ) -> bool {
        let mut by_backend: BTreeMap<&str, Vec<HeldServer>> = BTreeMap::new();
        for row in rows {
            if let (Some(host), Some(port)) = (row.addr, row.port) {
                by_backend
                    .entry(row.backend.as_str())
                    .or_default()
                    .push(HeldServer {
                        host,
                        port,
                        id: row.server_id,
                        in_service: row.admin_state() != AdminState::Maint,
                    });
            }
        }
        let mut changed = false;
        for key in backends {
            let dynamic = config
                .backends
                .get(key)
                .is_some_and(|b| b.kind == BackendType::Dynamic);
            if dynamic {
                let servers = by_backend.get(key.as_str()).map_or(&[][..], Vec::as_slice);
                changed |= self.observe(key, servers);
            }
        }
        changed
    }

    /// What HAProxy holds in `backend_key`: each of its servers, read from `show servers
    /// state`. HAProxy is the truth about ids: a member whose server exists takes that server's
    /// id (after a takeover, or a leftover of an earlier run), and the ids of servers that are
    /// not members are held, those of servers HAProxy no longer has released. It is the truth
    /// about which leavers are still in service, too. True when what a reload renders changed
    /// (a member's id, a leaver in service or not: the rendered config is stale then).
    pub fn observe(&mut self, backend_key: &str, servers: &[HeldServer]) -> bool {
        let mut changed = false;
        let mut member_addresses = BTreeSet::new();
        if let Some(members) = self.by_backend.get_mut(backend_key) {
            let in_haproxy: BTreeMap<(IpAddr, u16), u32> = servers
                .iter()
                .map(|server| ((server.host, server.port), server.id))
                .collect();
            // Which member holds each id, kept up to date as ids are adopted.
            let mut holder: BTreeMap<u32, (IpAddr, u16)> = members
                .iter()
                .map(|m| (m.server_id, (m.host, m.registration.port)))
                .collect();
            for index in 0..members.len() {
                let address = (members[index].host, members[index].registration.port);
                member_addresses.insert(address);
                let Some(&actual) = in_haproxy.get(&address) else {
                    continue;
                };
                let current = members[index].server_id;
                let free = holder.get(&actual).is_none_or(|h| *h == address);
                if current != actual && free {
                    if holder.get(&current) == Some(&address) {
                        holder.remove(&current);
                    }
                    holder.insert(actual, address);
                    Arc::make_mut(members)[index].server_id = actual;
                    changed = true;
                }
            }
        }
        let held: BTreeMap<(IpAddr, u16), u32> = servers
            .iter()
            .filter(|server| !member_addresses.contains(&(server.host, server.port)))
            .map(|server| ((server.host, server.port), server.id))
            .collect();
        if held.is_empty() {
            self.held_ids.remove(backend_key);
        } else {
            self.held_ids.insert(backend_key.to_owned(), held);
        }
        let in_service: BTreeSet<(IpAddr, u16)> = servers
            .iter()
            .filter(|server| server.in_service)
            .map(|server| (server.host, server.port))
            .collect();
        let leaving_before = self.leaving_in_service(backend_key);
        if in_service.is_empty() {
            self.in_service.remove(backend_key);
        } else {
            self.in_service.insert(backend_key.to_owned(), in_service);
        }
        if self.leaving_in_service(backend_key) != leaving_before {
            changed = true;
        }
        changed
    }

    /// Servers (by name) about to be taken out of service (set to maintenance, deleted): no
    /// reload renders them from now on. True when the rendered config changes.
    pub fn out_of_service(&mut self, backend_key: &str, servers: &BTreeSet<String>) -> bool {
        if let Some(serving) = &mut self.serving {
            serving.retain(|name| !servers.contains(name));
        }
        let leaving_before = self.leaving_in_service(backend_key);
        if let Some(in_service) = self.in_service.get_mut(backend_key) {
            in_service
                .retain(|(host, port)| !servers.contains(&server_name(backend_key, *host, *port)));
            if in_service.is_empty() {
                self.in_service.remove(backend_key);
            }
        }
        self.leaving_in_service(backend_key) != leaving_before
    }

    /// The servers of `backend_key` in service that are not members.
    fn leaving_in_service(&self, backend_key: &str) -> Vec<(IpAddr, u16)> {
        let members: BTreeSet<(IpAddr, u16)> = self
            .by_backend
            .get(backend_key)
            .into_iter()
            .flat_map(|members| members.iter())
            .map(|m| (m.host, m.registration.port))
            .collect();
        self.in_service
            .get(backend_key)
            .into_iter()
            .flatten()
            .filter(|address| !members.contains(address))
            .copied()
            .collect()
    }

    /// The server (by name) may still be waiting for a first passing check: the manager says
    /// so, or it has not said the server serves (it may have been added since its last word).
    pub fn may_be_joining(&self, server: &str) -> bool {
        self.joining.contains(server)
            || self
                .serving
                .as_ref()
                .is_some_and(|serving| !serving.contains(server))
    }

    /// Replaces the servers the manager sees joining and serving; true when either changed.
    pub fn set_phases(&mut self, joining: BTreeSet<String>, serving: BTreeSet<String>) -> bool {
        let changed = self.joining != joining || self.serving.as_ref() != Some(&serving);
        self.joining = joining;
        self.serving = Some(serving);
        changed
    }

    pub fn backend_keys(&self) -> impl Iterator<Item = &str> {
        self.by_backend.keys().map(String::as_str)
    }

    pub fn remove_backend(&mut self, backend_key: &str) {
        self.by_backend.remove(backend_key);
        self.unresolved.remove(backend_key);
        self.held_ids.remove(backend_key);
        self.in_service.remove(backend_key);
    }

    /// Whether the members of `backend_key` other than `except` (a server name) are all
    /// still joining (see [`DynamicMembers::may_be_joining`]), and whether there is any. Stops
    /// at the first one that is not joining: under churn the fast lane asks this for every
    /// deletion.
    pub fn others_joining(&self, backend_key: &str, except: &str) -> OthersJoining {
        let mut any = false;
        for member in self
            .by_backend
            .get(backend_key)
            .into_iter()
            .flat_map(|m| m.iter())
        {
            let name = server_name(backend_key, member.host, member.registration.port);
            if name == except {
                continue;
            }
            any = true;
            if !self.may_be_joining(&name) {
                return OthersJoining::SomeServing;
            }
        }
        if any {
            OthersJoining::AllJoining
        } else {
            OthersJoining::None
        }
    }

    /// The registrations of a backend, in the order they were given; then those whose DNS
    /// name has no address.
    pub fn registrations(&self, backend_key: &str) -> Vec<Registration> {
        self.by_backend
            .get(backend_key)
            .into_iter()
            .flat_map(|members| members.iter())
            .map(|m| m.registration.clone())
            .chain(
                self.unresolved
                    .get(backend_key)
                    .into_iter()
                    .flatten()
                    .cloned(),
            )
            .collect()
    }

    /// What the renderer needs: members of the dynamic backends of `config`, each with its id.
    pub fn render_members(&self, config: &Config) -> RenderMembers {
        let mut out = RenderMembers::new();
        out.set_joining(self.joining.clone());
        for (key, members) in &self.by_backend {
            let dynamic = config
                .backends
                .get(key)
                .is_some_and(|b| b.kind == BackendType::Dynamic);
            if dynamic {
                let weight_of = member_weights(config.backends.get(key), members);
                let render = members
                    .iter()
                    .map(|m| RenderMember {
                        host: m.host,
                        port: m.registration.port,
                        id: Some(m.server_id),
                        weight: weight_of(&m.registration.version),
                    })
                    .collect();
                out.set(key, render);
                // Before the manager's first word (a start, a takeover) every member renders
                // enabled: they serve at once, as the HAProxy they replace did.
                if let Some(serving) = &self.serving {
                    for m in members.iter() {
                        let name = server_name(key, m.host, m.registration.port);
                        if !serving.contains(&name) {
                            out.mark_joining(name);
                        }
                    }
                }
            }
        }
        for key in self.in_service.keys() {
            let dynamic = config
                .backends
                .get(key)
                .is_some_and(|b| b.kind == BackendType::Dynamic);
            if dynamic {
                let ids = self.held_ids.get(key);
                let render = self
                    .leaving_in_service(key)
                    .into_iter()
                    .map(|(host, port)| RenderMember {
                        host,
                        port,
                        id: ids.and_then(|ids| ids.get(&(host, port)).copied()),
                        weight: DEFAULT_WEIGHT,
                    })
                    .collect();
                out.set_leaving(key, render);
            }
        }
        out
    }
}

/// Each member's weight by its version: the rollout's split when the backend has one in
/// progress (by how many members each version has), HAProxy's default otherwise.
fn member_weights<'a>(
    backend: Option<&'a crate::config::Backend>,
    members: &[Member],
) -> impl Fn(&str) -> u16 + 'a {
    let rollout = backend.and_then(|b| b.active_rollout());
    let new = rollout.map_or(0, |r| {
        members
            .iter()
            .filter(|m| m.registration.version == r.version)
            .count()
    });
    let old = members.len() - new;
    move |version: &str| rollout.map_or(DEFAULT_WEIGHT, |r| r.member_weight(version, old, new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::model::RegistrationKey;

    /// A server HAProxy holds, in service.
    fn held(host: &str, port: u16, id: u32) -> HeldServer {
        HeldServer {
            host: host.parse().unwrap(),
            port,
            id,
            in_service: true,
        }
    }

    fn reg(host: &str, port: &str) -> Registration {
        let key = RegistrationKey::parse("svc", "1", host, port).unwrap();
        Registration::new(key, 0, Default::default())
    }

    /// Members 10.0.0.1-3, port 1, of backend `be`.
    fn three_members() -> DynamicMembers {
        let mut members = DynamicMembers::default();
        members.set(
            "be",
            vec![
                reg("10.0.0.1", "1"),
                reg("10.0.0.2", "1"),
                reg("10.0.0.3", "1"),
            ],
        );
        members
    }

    fn ids(members: &DynamicMembers) -> Vec<(String, u32)> {
        members.by_backend["be"]
            .iter()
            .map(|m| (m.registration.id.clone(), m.server_id))
            .collect()
    }

    #[test]
    fn ids_are_stable_and_reuse_the_lowest_free() {
        let mut members = three_members();
        members.set("be", vec![reg("10.0.0.3", "1"), reg("10.0.0.1", "1")]);
        assert_eq!(
            ids(&members),
            [
                ("/svc/1/10.0.0.3/1".into(), 3),
                ("/svc/1/10.0.0.1/1".into(), 1)
            ]
        );
        members.set(
            "be",
            vec![
                reg("10.0.0.3", "1"),
                reg("10.0.0.1", "1"),
                reg("10.0.0.9", "1"),
            ],
        );
        // 10.0.0.2's server may still be in HAProxy (draining): its id 2 is held.
        assert_eq!(ids(&members)[2], ("/svc/1/10.0.0.9/1".into(), 4));
        // Once HAProxy no longer has it, its id is free again.
        members.observe(
            "be",
            &[
                held("10.0.0.3", 1, 3),
                held("10.0.0.1", 1, 1),
                held("10.0.0.9", 1, 4),
            ],
        );
        members.set("be", vec![reg("10.0.0.3", "1"), reg("10.0.0.7", "1")]);
        assert_eq!(ids(&members)[1], ("/svc/1/10.0.0.7/1".into(), 2));
    }

    #[test]
    fn a_new_version_never_takes_an_id_the_old_one_still_holds() {
        let mut members = DynamicMembers::default();
        members.set("be", vec![reg("10.0.0.2", "1"), reg("10.0.0.3", "1")]);
        // The switch: version 2's member replaces both, while HAProxy keeps the old servers
        // until the new one serves.
        members.set("be", vec![reg("10.0.0.4", "1")]);
        assert_eq!(ids(&members), [("/svc/1/10.0.0.4/1".into(), 3)]);
        members.observe("be", &[held("10.0.0.2", 1, 1), held("10.0.0.3", 1, 2)]);
        // Switching back: the old members get their servers' ids back; the new one keeps its.
        members.set(
            "be",
            vec![
                reg("10.0.0.2", "1"),
                reg("10.0.0.3", "1"),
                reg("10.0.0.4", "1"),
            ],
        );
        assert_eq!(
            ids(&members),
            [
                ("/svc/1/10.0.0.2/1".into(), 1),
                ("/svc/1/10.0.0.3/1".into(), 2),
                ("/svc/1/10.0.0.4/1".into(), 3)
            ]
        );
    }

    #[test]
    fn haproxys_ids_win_and_foreign_servers_hold_theirs() {
        let mut members = DynamicMembers::default();
        // After a takeover the members were set in id order, but HAProxy numbered them 3 and 7
        // and still has a leaver with id 1.
        members.set("be", vec![reg("10.0.0.1", "1"), reg("10.0.0.2", "1")]);
        let changed = members.observe(
            "be",
            &[
                held("10.0.0.1", 1, 3),
                held("10.0.0.2", 1, 7),
                held("10.0.0.9", 1, 1),
            ],
        );
        assert!(changed);
        assert!(!members.observe(
            "be",
            &[
                held("10.0.0.1", 1, 3),
                held("10.0.0.2", 1, 7),
                held("10.0.0.9", 1, 1)
            ],
        ));
        members.set(
            "be",
            vec![
                reg("10.0.0.1", "1"),
                reg("10.0.0.2", "1"),
                reg("10.0.0.5", "1"),
            ],
        );
        assert_eq!(
            ids(&members),
            [
                ("/svc/1/10.0.0.1/1".into(), 3),
                ("/svc/1/10.0.0.2/1".into(), 7),
                ("/svc/1/10.0.0.5/1".into(), 2)
            ]
        );
    }

    #[test]
    fn unresolved_names_are_listed_but_not_rendered_and_duplicates_are_left_out() {
        let mut members = DynamicMembers::default();
        let mut resolved = reg("web.example", "2");
        resolved.address = Some("10.0.0.2".into());
        members.set(
            "be",
            vec![
                reg("db.example", "1"),
                reg("10.0.0.1", "1"),
                reg("10.0.0.1", "1"),
                resolved,
            ],
        );
        let listed: Vec<String> = members
            .registrations("be")
            .into_iter()
            .map(|r| r.host)
            .collect();
        assert_eq!(listed, ["10.0.0.1", "web.example", "db.example"]);
        let rendered: Vec<IpAddr> = members
            .by_backend
            .get("be")
            .into_iter()
            .flat_map(|m| m.iter())
            .map(|m| m.host)
            .collect();
        assert_eq!(
            rendered,
            [
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "10.0.0.2".parse().unwrap()
            ]
        );
        members.set("be", Vec::new());
        assert!(members.registrations("be").is_empty());
    }

    fn one_dynamic_backend() -> Config {
        let mut config = Config::default();
        config.backends.insert(
            "be".to_owned(),
            crate::config::Backend::dynamic("be", "svc", "1"),
        );
        config
    }

    #[test]
    fn only_members_the_manager_saw_serving_render_enabled() {
        let config = one_dynamic_backend();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let rendered_disabled = |members: &DynamicMembers| -> Vec<&str> {
            let render = members.render_members(&config);
            ["be_10.0.0.1:1", "be_10.0.0.2:1", "be_10.0.0.3:1"]
                .into_iter()
                .filter(|name| render.is_joining(name))
                .collect()
        };
        let mut members = three_members();
        // A start or a takeover: before the manager's first word every member serves at once.
        assert!(rendered_disabled(&members).is_empty());
        assert!(!members.may_be_joining("be_10.0.0.3:1"));
        // 10.0.0.1 serves, 10.0.0.2 joins, 10.0.0.3 was added (by the fast lane) since the
        // manager looked: it may be unchecked, so it renders disabled and is deleted, not drained.
        members.set_phases(names(&["be_10.0.0.2:1"]), names(&["be_10.0.0.1:1"]));
        assert_eq!(
            rendered_disabled(&members),
            ["be_10.0.0.2:1", "be_10.0.0.3:1"]
        );
        assert!(members.may_be_joining("be_10.0.0.3:1"));
        assert!(!members.may_be_joining("be_10.0.0.1:1"));
        assert_eq!(
            members.others_joining("be", "be_10.0.0.1:1"),
            OthersJoining::AllJoining
        );
        assert_eq!(
            members.others_joining("be", "be_10.0.0.2:1"),
            OthersJoining::SomeServing
        );
        // Taken out of service (deleted, about to be re-added): never rendered ready again
        // until the manager sees it pass a check and serve.
        members.out_of_service("be", &names(&["be_10.0.0.1:1"]));
        assert_eq!(rendered_disabled(&members).len(), 3);
        assert!(members.may_be_joining("be_10.0.0.1:1"));
    }

    #[test]
    fn leavers_in_service_are_rendered_until_taken_out_of_service() {
        let config = one_dynamic_backend();
        let leaving = |members: &DynamicMembers| -> Vec<String> {
            let render = members.render_members(&config);
            render
                .leaving("be")
                .iter()
                .map(|m| format!("{}:{}", m.host, m.id.unwrap_or(0)))
                .collect()
        };
        let mut maint = held("10.0.0.2", 1, 2);
        maint.in_service = false;
        let mut members = DynamicMembers::default();
        members.set("be", vec![reg("10.0.0.1", "1"), reg("10.0.0.2", "1")]);
        // HAProxy: 10.0.0.1 serving, 10.0.0.2 still joining (in maintenance).
        members.observe("be", &[held("10.0.0.1", 1, 1), maint]);
        assert!(leaving(&members).is_empty());
        // The switch: 10.0.0.3 replaces both. The serving one stays rendered (a reload must not
        // take it away while the newcomer joins); the joining one was never in service.
        members.set("be", vec![reg("10.0.0.3", "1")]);
        assert_eq!(leaving(&members), ["10.0.0.1:1"]);
        // Drained: still in service.
        let servers = [held("10.0.0.1", 1, 1), maint, held("10.0.0.3", 1, 3)];
        members.observe("be", &servers);
        assert_eq!(leaving(&members), ["10.0.0.1:1"]);
        // About to be removed: never rendered again, even before HAProxy is looked at.
        let removing = BTreeSet::from(["be_10.0.0.1:1".to_owned()]);
        assert!(members.out_of_service("be", &removing));
        assert!(leaving(&members).is_empty());
        assert!(!members.out_of_service("be", &removing));
        // Back as a member, it is a member, not a leaver.
        members.observe("be", &servers);
        members.set("be", vec![reg("10.0.0.1", "1"), reg("10.0.0.3", "1")]);
        assert!(leaving(&members).is_empty());
    }
}

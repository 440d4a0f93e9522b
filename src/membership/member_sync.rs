//! The registry side of membership as a pure core: feed items in (snapshots, `online`,
//! `offline`), and for each round the dynamic backends' member lists out, through the
//! mass-expiry brake and the member cap, with what the next reconcile round must look at.
//! No I/O and no clock of its own (the caller passes `now`), so every rule is unit-tested
//! below; the manager (`manager/sync.rs`) does the I/O around it.

use super::desired;
use super::expiry_brake::{BackendRound, BrakeEvent, ExpiryBrake, NothingHeld};
use super::plan::ServerRef;
use crate::config::{BackendType, Config};
use crate::haproxy::render::server_name;
use crate::registry::feed::{FeedItem, OfflineReason, RegistryEvent};
use crate::registry::model::Registration;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// Something worth an activity entry: `verb` happened to `object`.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub verb: &'static str,
    pub object: String,
    pub detail: Value,
}

impl Note {
    fn new(verb: &'static str, object: &str, detail: Value) -> Note {
        Note {
            verb,
            object: object.to_owned(),
            detail,
        }
    }
}

/// What one [`MemberSync::sync`] decided.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    /// New member lists, by backend key, for the controller.
    pub changes: Vec<(String, Vec<Registration>)>,
    pub brake_events: Vec<BrakeEvent>,
    /// The config is not the one of the last sync: every backend was examined.
    pub config_changed: bool,
    /// Backends to observe and plan in the coming round.
    pub plan_now: BTreeSet<String>,
    /// Backends whose changes the fast lane has carried out (joins added): planned at the
    /// next transition round.
    pub lane_handled: BTreeSet<String>,
    /// Servers of members that left: removed without the grace an unclaimed joining server
    /// gets.
    pub leavers: Vec<ServerRef>,
    /// Per examined backend, how many registrations the member cap left out.
    pub left_out: Vec<(String, usize)>,
}

/// The registry as last seen, and what was handed to the controller.
#[derive(Debug)]
pub struct MemberSync {
    /// By registration id.
    registrations: BTreeMap<String, Registration>,
    /// The same registrations by `name@version`.
    index: desired::ServiceIndex,
    /// Services whose registrations changed since the last sync.
    dirty_services: BTreeSet<(String, String)>,
    /// Every service counts as changed (after a snapshot, before the first sync).
    all_dirty: bool,
    /// Registration ids that expired (or vanished in a resync) since the last sync.
    expired: BTreeSet<String>,
    /// The registry's first snapshot arrived: until then the controller keeps the members it
    /// has (an unreachable registry never removes members).
    synced_once: bool,
    /// What was last handed to the controller, by backend key.
    members_set: BTreeMap<String, Vec<Registration>>,
    /// The config of the last sync (a new one re-examines every backend).
    last_config: Option<Arc<Config>>,
    brake: ExpiryBrake,
    max_members: usize,
}

impl MemberSync {
    pub fn new(brake: ExpiryBrake, max_members: usize) -> MemberSync {
        MemberSync {
            registrations: BTreeMap::new(),
            index: desired::ServiceIndex::default(),
            dirty_services: BTreeSet::new(),
            all_dirty: true,
            expired: BTreeSet::new(),
            synced_once: false,
            members_set: BTreeMap::new(),
            last_config: None,
            brake,
            max_members,
        }
    }

    pub fn brake(&self) -> &ExpiryBrake {
        &self.brake
    }

    /// Every backend is examined at the next sync (a DNS name changed its address).
    pub fn mark_all_dirty(&mut self) {
        self.all_dirty = true;
    }

    /// An operator confirmed the removal of a degraded backend's held members: they leave at
    /// the next sync.
    pub fn confirm_removal(&mut self, backend: &str) -> Result<BrakeEvent, NothingHeld> {
        let event = self.brake.confirm(backend)?;
        if let Some(service) = self.brake.service_of(backend) {
            self.dirty_services.insert(service);
        }
        Ok(event)
    }

    /// Takes one feed item into the registrations; returns what to report of it.
    pub fn apply_feed(&mut self, item: FeedItem) -> Vec<Note> {
        let mut notes = Vec::new();
        match item {
            FeedItem::Snapshot { registrations, .. } => {
                let next: BTreeMap<String, Registration> = registrations
                    .into_iter()
                    .map(|r| (r.id.clone(), r))
                    .collect();
                if self.synced_once {
                    for (id, reg) in &next {
                        if self.registrations.get(id).map(|r| &r.meta) != Some(&reg.meta) {
                            notes.push(Note::new("online", id, json!({"resync": true})));
                        }
                    }
                    for id in self.registrations.keys() {
                        if !next.contains_key(id) {
                            notes.push(Note::new("offline", id, json!({"resync": true})));
                            // The registry lost it while we were away: as good as expired, so
                            // a registry that lost most of its data trips the brake.
                            self.expired.insert(id.clone());
                        }
                    }
                } else {
                    let detail = json!({"registrations": next.len()});
                    notes.push(Note::new("registry-synced", "registry", detail));
                }
                self.synced_once = true;
                self.index.clear();
                for registration in next.values() {
                    self.index.insert(registration.clone());
                }
                self.registrations = next;
                self.all_dirty = true;
            }
            FeedItem::Event {
                event: RegistryEvent::Online(reg),
                ..
            } => {
                notes.push(Note::new("online", &reg.id, json!({"meta": reg.meta})));
                let service = self.index.insert(reg.clone());
                self.dirty_services.insert(service);
                self.registrations.insert(reg.id.clone(), reg);
            }
            FeedItem::Event {
                event: RegistryEvent::Offline { id, reason },
                ..
            } => {
                let verb = match reason {
                    OfflineReason::Deleted => "offline",
                    OfflineReason::Expired => "expired",
                };
                notes.push(Note::new(verb, &id, json!({"reason": reason.as_str()})));
                if reason == OfflineReason::Expired {
                    self.expired.insert(id.clone());
                }
                if let Some(reg) = self.registrations.remove(&id) {
                    let service = (reg.name, reg.version);
                    self.index.remove(&service, &id);
                    self.dirty_services.insert(service);
                }
            }
        }
        notes
    }

    /// `(backend, server)` -> version of every member of the backends in a rollout: what
    /// the stats poller labels each server's counters with.
    pub fn rollout_versions(&self, config: &Config) -> BTreeMap<(String, String), String> {
        let mut versions = BTreeMap::new();
        for backend in config.backends.values() {
            if backend.active_rollout().is_none() {
                continue;
            }
            for registration in self.members_set.get(&backend.key).into_iter().flatten() {
                if let Some(addr) = registration.ip() {
                    let server = server_name(&backend.key, addr, registration.port);
                    versions.insert((backend.key.clone(), server), registration.version.clone());
                }
            }
        }
        versions
    }

    /// Decides each changed dynamic backend's members. `None` until the registry's first
    /// snapshot. `held` says which backends the controller holds members for now (a backend
    /// deleted and re-created since the last look lost them there: what was handed to it
    /// before counts as never handed); `addressed` gives DNS-name members their address.
    pub fn sync(
        &mut self,
        config: Arc<Config>,
        held: impl FnOnce() -> BTreeSet<String>,
        mut addressed: impl FnMut(Vec<Registration>) -> Vec<Registration>,
        now: Instant,
        wall_ms: u64,
    ) -> Option<SyncOutcome> {
        if !self.synced_once {
            return None;
        }
        let mut outcome = SyncOutcome {
            config_changed: self
                .last_config
                .as_ref()
                .is_none_or(|last| !Arc::ptr_eq(last, &config)),
            ..SyncOutcome::default()
        };
        if outcome.config_changed {
            let held = held();
            self.members_set
                .retain(|key, members| members.is_empty() || held.contains(key));
        }
        let everything = outcome.config_changed || self.all_dirty;
        for backend in config.backends.values() {
            let service = backend.name.clone().zip(backend.version.clone());
            let rollout_service = backend
                .active_rollout()
                .zip(backend.name.clone())
                .map(|(rollout, name)| (name, rollout.version.clone()));
            let touched = everything
                || service
                    .iter()
                    .chain(rollout_service.iter())
                    .any(|s| self.dirty_services.contains(s));
            let Some(service) = service else { continue };
            if !touched || backend.kind != BackendType::Dynamic {
                continue;
            }
            let current = addressed(desired::registrations_of(backend, &self.index));
            let previous = self
                .members_set
                .get(&backend.key)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let round = BackendRound {
                backend: &backend.key,
                service,
                current,
                previous,
                expired: &self.expired,
            };
            let registrations = self
                .brake
                .members(round, now, wall_ms, &mut outcome.brake_events);
            let registered = registrations.len();
            let registrations = desired::cap_members(
                self.members_set.get(&backend.key),
                registrations,
                self.max_members,
            );
            outcome
                .left_out
                .push((backend.key.clone(), registered - registrations.len()));
            let before = self.members_set.get(&backend.key);
            if before == Some(&registrations) {
                // Same members, new split: their weights are the plan's to change now.
                let rollout_moved = self.last_config.as_ref().is_some_and(|last| {
                    last.backends.get(&backend.key).map(|b| &b.rollout) != Some(&backend.rollout)
                });
                if outcome.config_changed && rollout_moved {
                    outcome.plan_now.insert(backend.key.clone());
                }
                continue;
            }
            // The fast lane has added this backend's new members already; adopting them can
            // wait for the next transition round (a passing check is heard from the health
            // events at once). Departures, expiries (the lane leaves those to the brake), joins
            // the lane does not make (stable ids, the cap) and resyncs cannot.
            let expired = !self.expired.is_empty()
                && before
                    .is_some_and(|members| members.iter().any(|r| self.expired.contains(&r.id)));
            // A member that left is removed by the manager (the lane only drains it): planned
            // at the next feed round, not the next transition round, so an idle leaver is gone
            // within milliseconds.
            let staying: HashSet<&str> = registrations.iter().map(|r| r.id.as_str()).collect();
            let leavers: Vec<ServerRef> = before
                .into_iter()
                .flatten()
                .filter(|r| !staying.contains(r.id.as_str()))
                .flat_map(|r| desired::servers_of(&config, r))
                .filter(|server| server.backend == backend.key)
                .collect();
            let lane_covers = !everything
                && !expired
                && leavers.is_empty()
                && registered == registrations.len()
                && desired::lane_joins(backend);
            if lane_covers {
                outcome.lane_handled.insert(backend.key.clone());
            } else {
                outcome.plan_now.insert(backend.key.clone());
            }
            outcome.leavers.extend(leavers);
            self.members_set
                .insert(backend.key.clone(), registrations.clone());
            outcome.changes.push((backend.key.clone(), registrations));
        }
        self.members_set
            .retain(|key, _| config.backends.contains_key(key));
        let is_dynamic = |key: &str| {
            config
                .backends
                .get(key)
                .is_some_and(|b| b.kind == BackendType::Dynamic)
        };
        self.brake
            .retain_backends(is_dynamic, &mut outcome.brake_events);
        self.expired.clear();
        self.dirty_services.clear();
        self.all_dirty = false;
        self.last_config = Some(config);
        Some(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;
    use crate::membership::expiry_brake::BrakeSettings;
    use crate::registry::model::RegistrationKey;
    use std::time::Duration;

    fn registration(host: &str, version: &str) -> Registration {
        let key = RegistrationKey::parse("web", version, host, "80").unwrap();
        Registration::new(key, 1_700_000_000_000, Default::default())
    }

    fn snapshot(registrations: Vec<Registration>) -> FeedItem {
        FeedItem::Snapshot {
            seq: 0,
            registrations,
        }
    }

    fn event(event: RegistryEvent) -> FeedItem {
        FeedItem::Event { seq: 0, event }
    }

    fn offline(reg: &Registration, reason: OfflineReason) -> FeedItem {
        event(RegistryEvent::Offline {
            id: reg.id.clone(),
            reason,
        })
    }

    fn config(version: &str) -> Arc<Config> {
        let mut config = Config::default();
        let backend = Backend::dynamic("be", "web", version);
        config.backends.insert("be".to_owned(), backend);
        Arc::new(config)
    }

    /// A sync at `now` with nothing held elsewhere and every host an address.
    fn sync(core: &mut MemberSync, config: &Arc<Config>, now: Instant) -> Option<SyncOutcome> {
        core.sync(config.clone(), BTreeSet::new, |r| r, now, 0)
    }

    fn hosts(outcome: &SyncOutcome) -> Vec<(String, Vec<String>)> {
        outcome
            .changes
            .iter()
            .map(|(key, regs)| (key.clone(), regs.iter().map(|r| r.host.clone()).collect()))
            .collect()
    }

    fn core() -> MemberSync {
        MemberSync::new(ExpiryBrake::new(BrakeSettings::disabled()), 100)
    }

    #[test]
    fn nothing_is_handed_over_before_the_first_snapshot() {
        let mut core = core();
        let notes = core.apply_feed(event(RegistryEvent::Online(registration("10.0.0.1", "1"))));
        assert_eq!(notes[0].verb, "online");
        assert!(sync(&mut core, &config("1"), Instant::now()).is_none());
        let notes = core.apply_feed(snapshot(vec![registration("10.0.0.2", "1")]));
        assert_eq!(notes[0].verb, "registry-synced");
        let outcome = sync(&mut core, &config("1"), Instant::now()).unwrap();
        assert!(outcome.config_changed);
        assert_eq!(
            hosts(&outcome),
            [("be".to_owned(), vec!["10.0.0.2".to_owned()])]
        );
        assert!(
            outcome.plan_now.contains("be"),
            "a first look plans at once"
        );
    }

    #[test]
    fn a_join_is_left_to_the_lane_and_a_departure_is_planned_now() {
        let (mut core, config, now) = (core(), config("1"), Instant::now());
        let first = registration("10.0.0.1", "1");
        core.apply_feed(snapshot(vec![first.clone()]));
        sync(&mut core, &config, now).unwrap();
        let second = registration("10.0.0.2", "1");
        core.apply_feed(event(RegistryEvent::Online(second.clone())));
        let outcome = sync(&mut core, &config, now).unwrap();
        assert!(!outcome.config_changed);
        assert_eq!(outcome.lane_handled, BTreeSet::from(["be".to_owned()]));
        assert!(outcome.plan_now.is_empty() && outcome.leavers.is_empty());
        // Nothing changed since: nothing handed over.
        assert!(sync(&mut core, &config, now).unwrap().changes.is_empty());
        let notes = core.apply_feed(offline(&first, OfflineReason::Deleted));
        assert_eq!(notes[0].verb, "offline");
        let outcome = sync(&mut core, &config, now).unwrap();
        assert_eq!(
            hosts(&outcome),
            [("be".to_owned(), vec!["10.0.0.2".to_owned()])]
        );
        assert_eq!(outcome.plan_now, BTreeSet::from(["be".to_owned()]));
        assert_eq!(outcome.leavers.len(), 1);
        assert_eq!(outcome.leavers[0].server, "be_10.0.0.1:80");
    }

    #[test]
    fn a_version_switch_reexamines_every_backend_and_hands_over_the_new_version() {
        let (mut core, now) = (core(), Instant::now());
        core.apply_feed(snapshot(vec![
            registration("10.0.0.1", "1"),
            registration("10.0.0.2", "2"),
        ]));
        sync(&mut core, &config("1"), now).unwrap();
        let outcome = sync(&mut core, &config("2"), now).unwrap();
        assert!(outcome.config_changed);
        assert_eq!(
            hosts(&outcome),
            [("be".to_owned(), vec!["10.0.0.2".to_owned()])]
        );
        // The old version's servers are no member of any backend of the new config: they are
        // not leavers to remove at once, but kept by the planner until the new version serves
        // (make before break).
        assert!(outcome.leavers.is_empty(), "{:?}", outcome.leavers);
        assert!(outcome.plan_now.contains("be"));
    }

    #[test]
    fn a_backend_recreated_since_the_last_look_gets_its_members_again() {
        let (mut core, config, now) = (core(), config("1"), Instant::now());
        core.apply_feed(snapshot(vec![registration("10.0.0.1", "1")]));
        sync(&mut core, &config, now).unwrap();
        // The same definition, a new config value: the controller holds no members for it.
        let recreated = Arc::new((*config).clone());
        let outcome = core.sync(recreated, BTreeSet::new, |r| r, now, 0).unwrap();
        assert_eq!(
            hosts(&outcome),
            [("be".to_owned(), vec!["10.0.0.1".to_owned()])]
        );
    }

    #[test]
    fn the_member_cap_leaves_registrations_out_and_says_how_many() {
        let mut core = MemberSync::new(ExpiryBrake::new(BrakeSettings::disabled()), 2);
        let regs: Vec<Registration> = (1..=3)
            .map(|i| registration(&format!("10.0.0.{i}"), "1"))
            .collect();
        core.apply_feed(snapshot(regs));
        let outcome = sync(&mut core, &config("1"), Instant::now()).unwrap();
        assert_eq!(outcome.changes[0].1.len(), 2);
        assert_eq!(outcome.left_out, [("be".to_owned(), 1)]);
    }

    #[test]
    fn mass_expiry_is_held_by_the_brake_and_released_by_a_confirmation() {
        let settings = BrakeSettings {
            threshold: 0.5,
            window: Duration::from_secs(10),
            min_members: 3,
        };
        let mut core = MemberSync::new(ExpiryBrake::new(settings), 100);
        let regs: Vec<Registration> = (1..=4)
            .map(|i| registration(&format!("10.0.0.{i}"), "1"))
            .collect();
        let (config, now) = (config("1"), Instant::now());
        core.apply_feed(snapshot(regs.clone()));
        sync(&mut core, &config, now).unwrap();
        for reg in &regs[..3] {
            core.apply_feed(offline(reg, OfflineReason::Expired));
        }
        let outcome = sync(&mut core, &config, now).unwrap();
        assert!(
            outcome
                .brake_events
                .iter()
                .any(|e| matches!(e, BrakeEvent::Engaged { .. })),
            "{:?}",
            outcome.brake_events
        );
        assert!(
            outcome.changes.is_empty(),
            "every member held: {:?}",
            outcome.changes
        );
        core.confirm_removal("be").unwrap();
        let outcome = sync(&mut core, &config, now).unwrap();
        assert_eq!(
            hosts(&outcome),
            [("be".to_owned(), vec!["10.0.0.4".to_owned()])]
        );
        assert_eq!(outcome.leavers.len(), 3);
        assert!(core.confirm_removal("be").is_err(), "nothing held any more");
    }

    #[test]
    fn a_resync_reports_what_changed_and_counts_the_missing_as_expired() {
        let (mut core, config, now) = (core(), config("1"), Instant::now());
        let (a, b) = (registration("10.0.0.1", "1"), registration("10.0.0.2", "1"));
        core.apply_feed(snapshot(vec![a.clone()]));
        sync(&mut core, &config, now).unwrap();
        let notes = core.apply_feed(snapshot(vec![b.clone()]));
        let verbs: Vec<(&str, &str)> = notes.iter().map(|n| (n.verb, n.object.as_str())).collect();
        assert_eq!(
            verbs,
            [("online", b.id.as_str()), ("offline", a.id.as_str())]
        );
        let outcome = sync(&mut core, &config, now).unwrap();
        assert_eq!(
            hosts(&outcome),
            [("be".to_owned(), vec!["10.0.0.2".to_owned()])]
        );
        assert!(outcome.plan_now.contains("be"));
    }
}

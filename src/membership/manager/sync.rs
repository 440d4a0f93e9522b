//! The registry side of a manager round: feed items into the manager's registrations, and
//! each dynamic backend's desired members (through the resolver, the mass-expiry brake and the
//! member cap) handed to the controller, with what the next reconcile round must look at.

use super::Manager;
use crate::membership::desired;
use crate::membership::expiry_brake::BackendRound;
use crate::membership::plan::ServerRef;
use crate::registry::feed::{FeedItem, OfflineReason, RegistryEvent};
use crate::registry::model::Registration;
use crate::status::now_ms;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

impl Manager {
    pub(super) fn apply_feed(&mut self, item: FeedItem) {
        self.feed_applied += 1;
        match item {
            FeedItem::Snapshot { registrations, .. } => {
                let next: BTreeMap<String, Registration> = registrations
                    .into_iter()
                    .map(|r| (r.id.clone(), r))
                    .collect();
                if self.synced_once {
                    for (id, reg) in &next {
                        if self.registrations.get(id).map(|r| &r.meta) != Some(&reg.meta) {
                            self.record("online", id, json!({"resync": true}));
                        }
                    }
                    for id in self.registrations.keys() {
                        if !next.contains_key(id) {
                            self.record("offline", id, json!({"resync": true}));
                            // The registry lost it while we were away: as good as expired, so
                            // a registry that lost most of its data trips the brake.
                            self.expired.insert(id.clone());
                        }
                    }
                } else {
                    self.record(
                        "registry-synced",
                        "registry",
                        json!({"registrations": next.len()}),
                    );
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
                self.record("online", &reg.id, json!({"meta": reg.meta}));
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
                self.record(verb, &id, json!({"reason": reason.as_str()}));
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
    }

    /// Hands each dynamic backend whose service changed its registrations (for rendering,
    /// ids and the API); true when any backend's members changed.
    pub(super) async fn sync_members(&mut self) -> bool {
        // Until the registry's first snapshot the controller keeps the members it has (none,
        // or those taken over from an HAProxy an earlier run left serving): an unreachable
        // registry never removes members.
        if !self.synced_once {
            return false;
        }
        let config = self.controller.config();
        let config_changed = self
            .last_config
            .as_ref()
            .is_none_or(|last| !Arc::ptr_eq(last, &config));
        if config_changed {
            // Structure or static members may have changed anywhere: look at everything.
            self.next_full_round = Instant::now();
            // A backend deleted and re-created since the last look lost its members in the
            // controller: what was handed to it before counts as never handed.
            let held = self.controller.backends_with_members();
            self.members_set
                .retain(|key, members| members.is_empty() || held.contains(key));
        }
        let everything = config_changed || self.all_dirty;
        let mut changes: Vec<(String, Vec<Registration>)> = Vec::new();
        let mut brake_events = Vec::new();
        let (now, wall_ms) = (Instant::now(), now_ms());
        for backend in config.backends.values() {
            let service = backend.name.clone().zip(backend.version.clone());
            let touched = everything
                || service
                    .as_ref()
                    .is_some_and(|s| self.dirty_services.contains(s));
            let Some(service) = service else { continue };
            if !touched || backend.kind != crate::config::BackendType::Dynamic {
                continue;
            }
            let current = self
                .resolver
                .addressed(desired::registrations_of(backend, &self.index), now);
            let previous = self
                .members_set
                .get(&backend.key)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let registrations = self.brake.members(
                BackendRound {
                    backend: &backend.key,
                    service,
                    current,
                    previous,
                    expired: &self.expired,
                },
                now,
                wall_ms,
                &mut brake_events,
            );
            let registered = registrations.len();
            let registrations = desired::cap_members(
                self.members_set.get(&backend.key),
                registrations,
                self.settings.max_members,
            );
            self.note_left_out(&backend.key, registered - registrations.len());
            if self.members_set.get(&backend.key) != Some(&registrations) {
                // The fast lane has added this backend's new members already; adopting them
                // can wait for the next transition round (a passing check is heard from the
                // health events at once). Departures, expiries (the lane leaves those to the
                // brake), joins the lane does not make (stable ids, the cap) and resyncs
                // cannot.
                let expired = !self.expired.is_empty()
                    && self.members_set.get(&backend.key).is_some_and(|members| {
                        members.iter().any(|r| self.expired.contains(&r.id))
                    });
                // A member that left is removed by this manager (the lane only drains it):
                // planned at the next feed round, not the next transition round, so an idle
                // leaver is gone within milliseconds.
                let staying: std::collections::HashSet<&str> =
                    registrations.iter().map(|r| r.id.as_str()).collect();
                let leavers: Vec<ServerRef> = self
                    .members_set
                    .get(&backend.key)
                    .into_iter()
                    .flatten()
                    .filter(|r| !staying.contains(r.id.as_str()))
                    .flat_map(|r| desired::servers_of(&config, r))
                    .filter(|server| server.backend == backend.key)
                    .collect();
                let left = !leavers.is_empty();
                // Known leavers: their servers go now, without the grace an unclaimed joining
                // server gets (that one may be a fast-lane join still on its way here).
                for server in &leavers {
                    self.tracker.leaving(server, now);
                }
                let lane_covers = !everything
                    && !expired
                    && !left
                    && registered == registrations.len()
                    && !backend.balance.needs_explicit_server_ids();
                if lane_covers {
                    self.lane_handled_backends.insert(backend.key.clone());
                } else {
                    self.dirty_backends.insert(backend.key.clone());
                }
                self.members_set
                    .insert(backend.key.clone(), registrations.clone());
                changes.push((backend.key.clone(), registrations));
            }
        }
        self.members_set
            .retain(|key, _| config.backends.contains_key(key));
        let is_dynamic = |key: &str| {
            config
                .backends
                .get(key)
                .is_some_and(|b| b.kind == crate::config::BackendType::Dynamic)
        };
        self.brake.retain_backends(is_dynamic, &mut brake_events);
        self.expired.clear();
        if !brake_events.is_empty() || config_changed {
            self.publish_brake(&config, &brake_events);
        }
        self.dirty_services.clear();
        self.all_dirty = false;
        self.last_config = Some(config);
        let changed = !changes.is_empty();
        if changed {
            self.controller.set_members_of(changes).await;
        }
        changed
    }
}

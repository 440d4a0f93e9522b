//! The mass-expiry brake: when most of a dynamic backend's members expire at once (a registry
//! or network problem rather than real departures), the expired members are *held*: they stay
//! in the backend's member list (so HAProxy keeps serving and health-checking them) and the
//! backend is marked degraded until they register again or an operator confirms the removal.
//! Pure data in, pure data out; the manager feeds it every round and reports its events.
//!
//! Semantics (also in the README):
//! - Only expiries count: `offline` events with reason `expired`, and members missing from a
//!   registry snapshot after a resync (the registry lost them). Explicit deletions and version
//!   switches are never braked.
//! - Per backend, the *population* is every member present at some moment of the last `window`
//!   (members present now plus those that left within the window), so members that join and
//!   expire during steady churn count in the denominator too.
//! - The brake engages when at least `min_members` members make up that population and the
//!   members expired within the window are more than `threshold` of it. It then holds every
//!   member that expired within the window (also the first ones, which may already be
//!   draining: they are put back), and every later expiry until the mark clears.
//! - A held member that registers again is a normal member again (it never left HAProxy, so it
//!   does not flap); when none is held any more the mark clears. `confirm` drops the held
//!   members: they then leave through the normal drain path.
//! - `threshold >= 1.0` disables the brake (a share can never exceed 1).

use crate::registry::model::Registration;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// When the brake engages; see the module doc.
#[derive(Debug, Clone, PartialEq)]
pub struct BrakeSettings {
    /// Share (0..=1) of the window's members that must expire for the brake to engage;
    /// 1.0 disables it.
    pub threshold: f64,
    /// How far back expiries and members are counted.
    pub window: Duration,
    /// Fewest members (in the window) a backend needs before the brake applies: one member of
    /// a two-member service restarting is a real departure, not an outage.
    pub min_members: usize,
}

impl Default for BrakeSettings {
    fn default() -> Self {
        BrakeSettings {
            threshold: 0.5,
            window: Duration::from_secs(10),
            min_members: 3,
        }
    }
}

impl BrakeSettings {
    pub fn disabled() -> Self {
        BrakeSettings {
            threshold: 1.0,
            ..BrakeSettings::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.threshold < 1.0
    }
}

/// What the brake did in a round, for activity entries, logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrakeEvent {
    /// Most members expired at once: `held` (host:port) stay in service.
    Engaged {
        backend: String,
        expired: usize,
        members: usize,
        held: Vec<String>,
    },
    /// A further expiry while the backend is degraded, held as well.
    Held { backend: String, member: String },
    /// A held member registered again.
    Released { backend: String, member: String },
    /// No member is held any more; the degraded mark is gone.
    Cleared {
        backend: String,
        reason: ClearReason,
        /// Members that were still held (and now leave), host:port.
        dropped: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClearReason {
    /// Every held member registered again.
    Recovered,
    /// An operator confirmed the removal.
    Confirmed,
    /// The backend now follows another version (or is no longer dynamic / gone).
    Resubscribed,
}

impl ClearReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ClearReason::Recovered => "recovered",
            ClearReason::Confirmed => "confirmed",
            ClearReason::Resubscribed => "resubscribed",
        }
    }
}

/// A degraded backend as the API and UI show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DegradedMark {
    /// Epoch milliseconds when the brake engaged.
    pub since_ms: u64,
    pub reason: String,
    /// Held members, `host:port`, sorted.
    pub held: Vec<String>,
}

pub use crate::status::NothingHeld;

/// The brake's memory of every dynamic backend.
#[derive(Debug, Default)]
pub struct ExpiryBrake {
    settings: BrakeSettings,
    backends: BTreeMap<String, BackendBrake>,
}

#[derive(Debug, Default)]
struct BackendBrake {
    /// The `(name, version)` the state below belongs to.
    service: (String, String),
    /// Registration id -> last moment it was seen present.
    last_seen: BTreeMap<String, Instant>,
    /// Registration id -> when it expired, and the registration (to put it back).
    expired: BTreeMap<String, (Instant, Registration)>,
    held: BTreeMap<String, Registration>,
    /// Set while `held` is not empty.
    mark: Option<(u64, String)>,
}

/// One backend's round: what the registry says now, and what the backend had before.
pub struct BackendRound<'a> {
    pub backend: &'a str,
    pub service: (String, String),
    /// The service's registrations now, sorted by id.
    pub current: Vec<Registration>,
    /// The member list the backend had after the previous round (held members included).
    pub previous: &'a [Registration],
    /// Registration ids that expired since the previous round (any service).
    pub expired: &'a BTreeSet<String>,
}

impl ExpiryBrake {
    pub fn new(settings: BrakeSettings) -> Self {
        ExpiryBrake {
            settings,
            backends: BTreeMap::new(),
        }
    }

    pub fn settings(&self) -> &BrakeSettings {
        &self.settings
    }

    /// The backend's member list for this round: the current registrations plus the held
    /// ones, sorted by id. Records what happened in `events`.
    pub fn members(
        &mut self,
        round: BackendRound<'_>,
        now: Instant,
        now_ms: u64,
        events: &mut Vec<BrakeEvent>,
    ) -> Vec<Registration> {
        if !self.settings.enabled() {
            return round.current;
        }
        let settings = self.settings.clone();
        let state = self.backends.entry(round.backend.to_owned()).or_default();
        if state.service != round.service {
            // A version switch (or a new backend): what the old service did says nothing about
            // the new one, and its members leave as a switch always does.
            if !state.held.is_empty() {
                events.push(state.clear(round.backend, ClearReason::Resubscribed));
            }
            *state = BackendBrake {
                service: round.service.clone(),
                ..BackendBrake::default()
            };
        }
        let current_ids: BTreeSet<&str> = round.current.iter().map(|r| r.id.as_str()).collect();

        // Registered again: held members are normal members again, and earlier expiries of
        // them were not departures after all.
        let back: Vec<String> = state
            .held
            .keys()
            .filter(|id| current_ids.contains(id.as_str()))
            .cloned()
            .collect();
        for id in back {
            if let Some(reg) = state.held.remove(&id) {
                events.push(BrakeEvent::Released {
                    backend: round.backend.to_owned(),
                    member: address(&reg),
                });
            }
        }
        state
            .expired
            .retain(|id, _| !current_ids.contains(id.as_str()));
        if state.held.is_empty() && state.mark.is_some() {
            events.push(state.clear(round.backend, ClearReason::Recovered));
        }

        // Forget what is older than the window, then note who is present and who expired.
        let horizon = now.checked_sub(settings.window);
        let in_window = |at: &Instant| horizon.is_none_or(|h| *at > h);
        state.last_seen.retain(|_, at| in_window(at));
        state.expired.retain(|_, (at, _)| in_window(at));
        for id in &current_ids {
            state.last_seen.insert((*id).to_owned(), now);
        }
        let mut newly_expired = Vec::new();
        for reg in round.previous {
            let gone = !current_ids.contains(reg.id.as_str());
            if gone && !state.held.contains_key(&reg.id) {
                state.last_seen.insert(reg.id.clone(), now);
                if round.expired.contains(&reg.id) {
                    state.expired.insert(reg.id.clone(), (now, reg.clone()));
                    newly_expired.push(reg.clone());
                }
            }
        }

        if !newly_expired.is_empty() {
            if state.mark.is_some() {
                for reg in newly_expired {
                    events.push(BrakeEvent::Held {
                        backend: round.backend.to_owned(),
                        member: address(&reg),
                    });
                    state.held.insert(reg.id.clone(), reg);
                }
            } else {
                let members = state.last_seen.len();
                let expired = state.expired.len();
                let share = expired as f64 / members.max(1) as f64;
                if members >= settings.min_members && share > settings.threshold {
                    for (id, (_, reg)) in &state.expired {
                        state.held.insert(id.clone(), reg.clone());
                    }
                    let reason = format!(
                        "{expired} of {members} members expired within {} s",
                        settings.window.as_secs_f64()
                    );
                    state.mark = Some((now_ms, reason));
                    events.push(BrakeEvent::Engaged {
                        backend: round.backend.to_owned(),
                        expired,
                        members,
                        held: state.held.values().map(address).collect(),
                    });
                }
            }
        }

        let mut out: BTreeMap<String, Registration> = round
            .current
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        for (id, reg) in &state.held {
            out.entry(id.clone()).or_insert_with(|| reg.clone());
        }
        out.into_values().collect()
    }

    /// Drops the held members of `backend` (they then leave through the normal drain path on
    /// the next round) and clears its mark.
    pub fn confirm(&mut self, backend: &str) -> Result<BrakeEvent, NothingHeld> {
        let state = self
            .backends
            .get_mut(backend)
            .filter(|s| !s.held.is_empty())
            .ok_or_else(|| NothingHeld(backend.to_owned()))?;
        Ok(state.clear(backend, ClearReason::Confirmed))
    }

    /// Forgets backends that are gone or no longer dynamic.
    pub fn retain_backends(&mut self, keep: impl Fn(&str) -> bool, events: &mut Vec<BrakeEvent>) {
        let gone: Vec<String> = self
            .backends
            .keys()
            .filter(|key| !keep(key))
            .cloned()
            .collect();
        for key in gone {
            if let Some(mut state) = self.backends.remove(&key)
                && !state.held.is_empty()
            {
                events.push(state.clear(&key, ClearReason::Resubscribed));
            }
        }
    }

    /// Every degraded backend, by key.
    pub fn degraded(&self) -> BTreeMap<String, DegradedMark> {
        self.backends
            .iter()
            .filter_map(|(key, state)| {
                let (since_ms, reason) = state.mark.clone()?;
                let mut held: Vec<String> = state.held.values().map(address).collect();
                held.sort();
                Some((
                    key.clone(),
                    DegradedMark {
                        since_ms,
                        reason,
                        held,
                    },
                ))
            })
            .collect()
    }

    /// The service a backend's brake state belongs to (to mark it dirty after a confirm).
    pub fn service_of(&self, backend: &str) -> Option<(String, String)> {
        self.backends.get(backend).map(|s| s.service.clone())
    }
}

impl BackendBrake {
    /// Drops every held member and the mark; earlier expiries no longer count either (the
    /// operator has accepted them, or they were of another service).
    fn clear(&mut self, backend: &str, reason: ClearReason) -> BrakeEvent {
        let mut dropped: Vec<String> = self.held.values().map(address).collect();
        dropped.sort();
        self.held.clear();
        self.expired.clear();
        self.mark = None;
        BrakeEvent::Cleared {
            backend: backend.to_owned(),
            reason,
            dropped,
        }
    }
}

/// `host:port`, as the API's member objects and the UI spell a member.
fn address(reg: &Registration) -> String {
    format!("{}:{}", reg.host, reg.port)
}

#[cfg(test)]
mod tests;

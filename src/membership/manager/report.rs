//! What the manager reports beyond HAProxy: the mass-expiry brake's events and degraded
//! backends (logs, activities, metrics, the API's board), operators' confirmations, the member
//! cap, and activities in general.

use super::Manager;
use crate::config::Config;
use crate::membership::expiry_brake::BrakeEvent;
use crate::status::{Activity, DegradedSample};
use serde_json::json;
use std::collections::BTreeMap;

impl Manager {
    /// Carries out the removals operators confirmed: the held members are dropped from their
    /// backends and leave through the normal drain path on this round.
    pub(super) fn confirm_removals(&mut self) {
        let mut events = Vec::new();
        for backend in self.brake_board.take_confirmations() {
            match self.sync.confirm_removal(&backend) {
                Ok(event) => events.push(event),
                // They registered again in the meantime: nothing left to remove.
                Err(err) => tracing::info!(backend = %backend, error = %err, "nothing to confirm"),
            }
        }
        if !events.is_empty() {
            let config = self.controller.config();
            self.publish_brake(&config, &events);
        }
    }

    /// Reports brake events (logs, activity, metrics) and publishes the degraded backends to
    /// the API's board and the metrics.
    pub(super) fn publish_brake(&self, config: &Config, events: &[BrakeEvent]) {
        for event in events {
            match event {
                BrakeEvent::Engaged {
                    backend,
                    expired,
                    members,
                    held,
                } => {
                    tracing::warn!(backend = %backend, expired, members, held = ?held,
                        "most members expired at once; holding them in service (backend degraded)");
                    self.metrics.brake_engaged.inc(&[backend]);
                    self.record(
                        "degraded",
                        &format!("backend/{backend}"),
                        json!({"expired": expired, "members": members, "held": held}),
                    );
                }
                BrakeEvent::Held { backend, member } => {
                    tracing::warn!(backend = %backend, member = %member,
                        "member expired while the backend is degraded; holding it");
                    self.record(
                        "held",
                        &format!("backend/{backend}"),
                        json!({"member": member}),
                    );
                }
                BrakeEvent::Released { backend, member } => {
                    tracing::info!(backend = %backend, member = %member, "held member registered again");
                }
                BrakeEvent::Cleared {
                    backend,
                    reason,
                    dropped,
                } => {
                    tracing::info!(backend = %backend, reason = reason.as_str(), removed = ?dropped,
                        "backend no longer degraded");
                    self.record(
                        "degraded-cleared",
                        &format!("backend/{backend}"),
                        json!({"reason": reason.as_str(), "removed": dropped}),
                    );
                }
            }
        }
        let degraded: BTreeMap<String, DegradedSample> = self
            .sync
            .brake()
            .degraded()
            .into_iter()
            .map(|(key, mark)| {
                let sample = DegradedSample {
                    since: mark.since_ms,
                    reason: mark.reason,
                    held: mark.held,
                };
                (key, sample)
            })
            .collect();
        let held: BTreeMap<String, usize> = config
            .backends
            .values()
            .filter(|b| b.kind == crate::config::BackendType::Dynamic)
            .map(|b| {
                (
                    b.key.clone(),
                    degraded.get(&b.key).map_or(0, |d| d.held.len()),
                )
            })
            .collect();
        self.metrics.set_held_by_backend(held);
        self.brake_board.publish(degraded);
    }

    /// Warns (once per change of the count) when `--max-members` leaves registrations out.
    pub(super) fn note_left_out(&self, backend: &str, left_out: usize) {
        let previous = self.metrics.set_left_out(backend, left_out as u64);
        if previous == left_out as u64 {
            return;
        }
        let max = self.settings.max_members;
        if left_out > 0 {
            tracing::warn!(
                backend,
                left_out,
                max,
                "backend is full (--max-members): registrations left out"
            );
        } else {
            tracing::info!(backend, max, "backend is no longer over --max-members");
        }
        self.record(
            "members-capped",
            &format!("backend/{backend}"),
            serde_json::json!({"max": max, "left_out": left_out}),
        );
    }

    pub(super) fn record(&self, verb: &str, object: &str, detail: serde_json::Value) {
        if let Some(sink) = &self.sink {
            sink.activity(Activity::now(verb, object, detail));
        }
    }
}

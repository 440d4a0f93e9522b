//! The membership counters and histograms behind `/metrics`: runtime commands, repairs,
//! members by status, the brake, members left out by the cap, fast-lane and round durations.

use crate::metrics::{CounterVec, Histogram, PromText};
use std::collections::BTreeMap;

/// Counters for `/metrics`.
pub struct MembershipMetrics {
    pub runtime_commands: CounterVec,
    pub repairs: CounterVec,
    members_by_status: std::sync::RwLock<BTreeMap<String, u64>>,
    /// Times the mass-expiry brake engaged, by backend.
    pub brake_engaged: CounterVec,
    /// Dynamic backend -> members held by the brake (0 when not degraded).
    held_by_backend: std::sync::RwLock<BTreeMap<String, usize>>,
    /// Registrations left out of each backend by `--max-members`, by backend key.
    left_out_by_backend: std::sync::RwLock<BTreeMap<String, u64>>,
    /// Lines of the health-check ring, by what they said (`passed`, `failed`, `dropped`,
    /// `other`), and stream (re)starts (`stream-opened`).
    pub health_events: CounterVec,
    /// Servers whose last runtime command HAProxy refused (retried with backoff).
    refused: crate::metrics::Gauge,
    /// DNS names of registered members that do not resolve (see `resolver`).
    unresolved_names: crate::metrics::Gauge,
    /// The fast lane: registry event in hand -> `add server` answered.
    pub fast_join_seconds: Histogram,
    /// Reconcile rounds (observe, plan, apply), by how long they took.
    pub round_seconds: Histogram,
}

/// Joins land in about a millisecond when HAProxy is quiet; tens under heavy churn.
const FAST_JOIN_SECONDS_BOUNDS: &[f64] =
    &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0];
const ROUND_SECONDS_BOUNDS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

impl Default for MembershipMetrics {
    fn default() -> Self {
        MembershipMetrics {
            runtime_commands: CounterVec::new(&["kind", "outcome"]),
            repairs: CounterVec::new(&["kind"]),
            members_by_status: std::sync::RwLock::new(BTreeMap::new()),
            brake_engaged: CounterVec::new(&["backend"]),
            held_by_backend: std::sync::RwLock::new(BTreeMap::new()),
            left_out_by_backend: std::sync::RwLock::new(BTreeMap::new()),
            refused: crate::metrics::Gauge::default(),
            unresolved_names: crate::metrics::Gauge::default(),
            health_events: CounterVec::new(&["kind"]),
            fast_join_seconds: Histogram::new(FAST_JOIN_SECONDS_BOUNDS),
            round_seconds: Histogram::new(ROUND_SECONDS_BOUNDS),
        }
    }
}

impl MembershipMetrics {
    /// Dynamic backend -> members the brake holds (0 when not degraded), every backend.
    pub(super) fn set_held_by_backend(&self, held: BTreeMap<String, usize>) {
        *self
            .held_by_backend
            .write()
            .unwrap_or_else(|p| p.into_inner()) = held;
    }

    pub(super) fn set_unresolved_names(&self, names: usize) {
        self.unresolved_names.set(names as f64);
    }

    pub(super) fn set_refused(&self, servers: usize) {
        self.refused.set(servers as f64);
    }

    pub(super) fn set_members_by_status(&self, counts: BTreeMap<String, u64>) {
        *self
            .members_by_status
            .write()
            .unwrap_or_else(|p| p.into_inner()) = counts;
    }

    pub fn render(&self, text: &mut PromText) {
        text.counter_vec(
            "thalassa_runtime_commands_total",
            "HAProxy runtime API commands sent for membership, by kind and outcome",
            &self.runtime_commands,
        );
        text.counter_vec(
            "thalassa_reconcile_repairs_total",
            "Drift between desired members and HAProxy that the reconcile loop repaired",
            &self.repairs,
        )
        .counter_vec(
            "thalassa_health_events_total",
            "Lines of HAProxy's health-check ring streamed by the membership manager, by kind",
            &self.health_events,
        )
        .histogram(
            "thalassa_fast_join_duration_seconds",
            "New registration in hand -> its add server answered by HAProxy (the join fast lane)",
            &self.fast_join_seconds,
        )
        .histogram(
            "thalassa_reconcile_round_duration_seconds",
            "Membership reconcile rounds: observe HAProxy, plan, apply",
            &self.round_seconds,
        );
        let samples: Vec<(Vec<String>, f64)> = self
            .members_by_status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(status, n)| (vec![status.clone()], *n as f64))
            .collect();
        text.gauge_family(
            "thalassa_members",
            "Members of all backends by status (UP, DOWN, DRAIN, MAINT)",
            &["status"],
            &samples,
        );
        let held = self
            .held_by_backend
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let degraded: Vec<(Vec<String>, f64)> = held
            .iter()
            .map(|(backend, n)| (vec![backend.clone()], if *n > 0 { 1.0 } else { 0.0 }))
            .collect();
        text.gauge_family(
            "thalassa_backend_degraded",
            "1 while the mass-expiry brake holds expired members of a dynamic backend in service",
            &["backend"],
            &degraded,
        );
        let held: Vec<(Vec<String>, f64)> = held
            .iter()
            .map(|(backend, n)| (vec![backend.clone()], *n as f64))
            .collect();
        text.gauge_family(
            "thalassa_backend_held_members",
            "Expired members the mass-expiry brake keeps in service, by backend",
            &["backend"],
            &held,
        );
        text.counter_vec(
            "thalassa_expiry_brake_engaged_total",
            "Times most of a backend's members expired at once and the brake held them",
            &self.brake_engaged,
        );
        let left_out: Vec<(Vec<String>, f64)> = self
            .left_out_by_backend
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(backend, n)| (vec![backend.clone()], *n as f64))
            .collect();
        text.gauge(
            "thalassa_members_refused",
            "Members whose last runtime command HAProxy refused (retried with backoff)",
            self.refused.get(),
        );
        text.gauge(
            "thalassa_member_names_unresolved",
            "DNS names of registered members that do not resolve (their members serve nowhere)",
            self.unresolved_names.get(),
        );
        text.gauge_family(
            "thalassa_members_left_out",
            "Registrations not added to a backend because it has --max-members members",
            &["backend"],
            &left_out,
        );
    }

    /// Records how many registrations `backend` leaves out; returns the previous count.
    pub(super) fn set_left_out(&self, backend: &str, left_out: u64) -> u64 {
        let mut map = self
            .left_out_by_backend
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let previous = if left_out == 0 {
            map.remove(backend)
        } else {
            map.insert(backend.to_owned(), left_out)
        };
        previous.unwrap_or(0)
    }
}

//! The membership planner: desired members vs what HAProxy reports -> a list of runtime
//! operations. Pure data in, pure data out; the manager applies the plan
//! (`manager/reconcile.rs`, `apply`).
//!
//! Every member moves through three phases, driven only by runtime commands (never a reload):
//! - **Joining**: added in maintenance with health checks enabled; it gets no traffic until HAProxy
//!   reports a passing check, then it is set `ready`. (Leaving maintenance makes a server UP at once
//!   whatever its checks say, so the order matters.)
//! - **Serving**: ready; HAProxy's own checks take it DOWN and UP from here on.
//! - **Leaving**: drained (no new requests), removed once its connections have ended or the drain
//!   timeout has passed: `maint`, then `del server`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Identifies a server inside HAProxy: backend name and server name
/// (`<backendKey>_<host>:<port>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerRef {
    pub backend: String,
    pub server: String,
}

impl ServerRef {
    pub fn new(backend: &str, host: &str, port: u16) -> Self {
        ServerRef {
            backend: backend.to_owned(),
            server: crate::haproxy::server_name::ServerName::for_host(backend, host, port)
                .to_string(),
        }
    }
}

impl std::fmt::Display for ServerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.backend, self.server)
    }
}

/// Options spelled out on every `add server` (dynamic servers inherit nothing from
/// `default-server`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// Milliseconds between health checks.
    pub inter_ms: u64,
    pub rise: u32,
    pub fall: u32,
}

/// A member that should be in HAProxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredMember {
    pub addr: IpAddr,
    pub port: u16,
    pub check: CheckOptions,
    /// Explicit numeric server id, for algorithms that need one (random, consistent hashing).
    pub id: Option<u32>,
    /// 0..=256; [`crate::config::rollout::DEFAULT_WEIGHT`] outside a rollout.
    pub weight: u16,
    /// The backend has a sticky cookie: each add is followed by `enable dynamic-cookie`.
    pub dynamic_cookie: bool,
}

pub use crate::haproxy::stat::AdminState;

/// What HAProxy reports about one server (from `show servers state`, plus `show servers conn`
/// for servers being drained).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedServer {
    pub admin: AdminState,
    /// The last completed health check passed.
    pub check_passed: bool,
    /// Health checks are configured but paused. HAProxy does this to config-file servers held in
    /// maintenance (e.g. a member that was still joining when the config was reloaded); they
    /// never get a check until re-added at runtime.
    pub check_paused: bool,
    /// Connections currently using the server (`used_cur`), when known.
    pub connections: Option<u64>,
    /// The fast lane drained it for a deleted registration whose `offline` event may not
    /// have reached the tracker yet: a drain to keep, not drift to undo.
    pub drained_by_lane: bool,
    /// Its current weight (`srv_uweight`), when known.
    pub weight: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Joining,
    Serving,
    Leaving { since: Instant },
}

/// One runtime API operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeOp {
    /// `add server` (starts in maintenance) followed by `enable health`.
    Add {
        server: ServerRef,
        member: DesiredMember,
    },
    SetState {
        server: ServerRef,
        state: AdminState,
    },
    /// Removes a server in maintenance. `force` first shuts down its remaining sessions (only
    /// after the drain timeout).
    Delete { server: ServerRef, force: bool },
    /// `set server ... weight`: a rollout's split changed, or HAProxy's weight drifted.
    SetWeight { server: ServerRef, weight: u16 },
}

impl RuntimeOp {
    pub fn server(&self) -> &ServerRef {
        match self {
            RuntimeOp::Add { server, .. }
            | RuntimeOp::SetState { server, .. }
            | RuntimeOp::Delete { server, .. }
            | RuntimeOp::SetWeight { server, .. } => server,
        }
    }

    /// A short name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            RuntimeOp::Add { .. } => "add",
            RuntimeOp::SetState {
                state: AdminState::Ready,
                ..
            } => "ready",
            RuntimeOp::SetState {
                state: AdminState::Drain,
                ..
            } => "drain",
            RuntimeOp::SetState {
                state: AdminState::Maint,
                ..
            } => "maint",
            RuntimeOp::Delete { .. } => "delete",
            RuntimeOp::SetWeight { .. } => "weight",
        }
    }
}

/// The planner's memory: the phase of every server it manages.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    phases: BTreeMap<ServerRef, Phase>,
    /// Servers in maintenance with checks running that nobody asked for yet, by when first
    /// seen: most likely a join the fast lane added before the manager heard of it (see
    /// `fast_lane`). They are left alone for `UNCLAIMED_GRACE`, then treated as leftovers.
    unclaimed: BTreeMap<ServerRef, Instant>,
}

/// How long an unclaimed joining server may wait for its registration to reach the manager:
/// far longer than a round, far shorter than anyone would notice a leftover.
pub const UNCLAIMED_GRACE: Duration = Duration::from_secs(1);

/// The result of one planning round.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<RuntimeOp>,
    /// Operations that fix drift (HAProxy disagreed with what we had applied), for metrics.
    pub repairs: u64,
}

impl Tracker {
    pub fn phase(&self, server: &ServerRef) -> Option<Phase> {
        self.phases.get(server).copied()
    }

    pub fn phases(&self) -> impl Iterator<Item = (&ServerRef, &Phase)> {
        self.phases.iter()
    }

    /// `server`'s member left (its registration is gone): it leaves from now on, whatever
    /// phase it was in, without the grace of an unclaimed joining server.
    pub fn leaving(&mut self, server: &ServerRef, now: Instant) {
        match self.phases.get(server) {
            Some(Phase::Leaving { .. }) => {}
            _ => {
                self.phases
                    .insert(server.clone(), Phase::Leaving { since: now });
            }
        }
        self.unclaimed.remove(server);
    }

    /// Forgets what it planned for `server` when the caller held that plan back (an `add`
    /// not sent during a refusal's backoff): the next round plans it afresh, not as drift.
    pub fn forget(&mut self, server: &ServerRef) {
        self.phases.remove(server);
    }

    /// Some member is joining or leaving: the caller should observe again soon.
    pub fn has_transitions(&self) -> bool {
        self.phases.values().any(|p| !matches!(p, Phase::Serving))
    }

    /// Compares desired members with HAProxy's servers in `managed_backends` and returns the
    /// operations that move HAProxy one step closer. `desired` and `observed` must cover those
    /// backends completely; servers and phases of other backends are left alone.
    pub fn plan(
        &mut self,
        desired: &BTreeMap<ServerRef, DesiredMember>,
        observed: &BTreeMap<ServerRef, ObservedServer>,
        managed_backends: &BTreeSet<String>,
        now: Instant,
        drain_timeout: Duration,
    ) -> Plan {
        let mut plan = Plan::default();
        for (server, member) in desired {
            self.plan_desired(server, member, observed.get(server), &mut plan);
        }
        // Make before break: while a backend's new members are still joining and none of them
        // serves yet (a version switch), its old members keep serving (bounded by the drain
        // timeout) so the backend never runs empty.
        let mut waiting_for_replacement = BTreeSet::new();
        let mut has_serving = BTreeSet::new();
        for server in desired.keys() {
            match self.phases.get(server) {
                Some(Phase::Joining) => {
                    waiting_for_replacement.insert(server.backend.clone());
                }
                Some(Phase::Serving) => {
                    has_serving.insert(server.backend.clone());
                }
                _ => {}
            }
        }
        for (server, seen) in observed {
            if desired.contains_key(server) || !managed_backends.contains(&server.backend) {
                continue;
            }
            let joining_unasked = !self.phases.contains_key(server)
                && seen.admin == AdminState::Maint
                && !seen.check_paused;
            if joining_unasked {
                let first_seen = *self.unclaimed.entry(server.clone()).or_insert(now);
                if now.duration_since(first_seen) < UNCLAIMED_GRACE {
                    continue;
                }
            }
            let hold = waiting_for_replacement.contains(&server.backend)
                && !has_serving.contains(&server.backend);
            self.plan_leaving(server, seen, hold, now, drain_timeout, &mut plan);
        }
        // Forget servers of these backends that are neither desired nor present any more
        // (a round may look at only some backends: the others keep their phases).
        self.phases.retain(|server, _| {
            !managed_backends.contains(&server.backend)
                || desired.contains_key(server)
                || observed.contains_key(server)
        });
        self.unclaimed.retain(|server, _| {
            !managed_backends.contains(&server.backend)
                || (!desired.contains_key(server) && observed.contains_key(server))
        });
        plan
    }

    fn plan_desired(
        &mut self,
        server: &ServerRef,
        member: &DesiredMember,
        seen: Option<&ObservedServer>,
        plan: &mut Plan,
    ) {
        let phase = self.phases.get(server).copied();
        let Some(seen) = seen else {
            if phase.is_some() {
                // We had added it, yet HAProxy does not know it (a restart, a failed command).
                plan.repairs += 1;
            }
            plan.ops.push(RuntimeOp::Add {
                server: server.clone(),
                member: member.clone(),
            });
            self.phases.insert(server.clone(), Phase::Joining);
            return;
        };
        // Weights are applied whatever the phase (a joining member joins at its share); a
        // server about to be re-added below gets its weight from the add.
        let re_added = seen.admin == AdminState::Maint && seen.check_paused;
        if !re_added && seen.weight.is_some_and(|w| w != member.weight) {
            plan.ops.push(RuntimeOp::SetWeight {
                server: server.clone(),
                weight: member.weight,
            });
        }
        match (phase, seen.admin) {
            // Serving and ready: HAProxy's checks own it now.
            (Some(Phase::Serving), AdminState::Ready) => {}
            // Not yet passed a check: stays in maintenance until one passes.
            (_, AdminState::Maint) => {
                if phase == Some(Phase::Serving) {
                    plan.repairs += 1;
                }
                if seen.check_paused {
                    // Checks never run for a config-file server held in maintenance: re-add it
                    // at runtime so the health gate can open.
                    plan.ops.push(RuntimeOp::Delete {
                        server: server.clone(),
                        force: false,
                    });
                    plan.ops.push(RuntimeOp::Add {
                        server: server.clone(),
                        member: member.clone(),
                    });
                    self.phases.insert(server.clone(), Phase::Joining);
                } else if seen.check_passed {
                    plan.ops.push(RuntimeOp::SetState {
                        server: server.clone(),
                        state: AdminState::Ready,
                    });
                    self.phases.insert(server.clone(), Phase::Serving);
                } else {
                    self.phases.insert(server.clone(), Phase::Joining);
                }
            }
            // Its deletion is on its way (the fast lane drained it while this round's
            // registrations were being read): the next round sees it leave.
            (_, AdminState::Drain) if seen.drained_by_lane => {}
            // Came back while being drained (re-registered): serve again, but only through the
            // health gate. A server that has not passed a check since its add (it was still
            // joining when the fast lane drained it out of maintenance) goes back to
            // maintenance and joins like a new one.
            (_, AdminState::Drain) if seen.check_passed => {
                plan.ops.push(RuntimeOp::SetState {
                    server: server.clone(),
                    state: AdminState::Ready,
                });
                self.phases.insert(server.clone(), Phase::Serving);
            }
            (_, AdminState::Drain) => {
                plan.ops.push(RuntimeOp::SetState {
                    server: server.clone(),
                    state: AdminState::Maint,
                });
                self.phases.insert(server.clone(), Phase::Joining);
            }
            // Ready, but we did not set it so (a config-file server after a restart, or a member
            // we had not seen yet): adopt it; HAProxy's checks decide its health from here.
            (_, AdminState::Ready) => {
                self.phases.insert(server.clone(), Phase::Serving);
            }
        }
    }

    fn plan_leaving(
        &mut self,
        server: &ServerRef,
        seen: &ObservedServer,
        hold: bool,
        now: Instant,
        drain_timeout: Duration,
        plan: &mut Plan,
    ) {
        let since = match self.phases.get(server) {
            Some(Phase::Leaving { since }) => *since,
            _ => now,
        };
        self.phases.insert(server.clone(), Phase::Leaving { since });
        match seen.admin {
            AdminState::Ready if hold && now.duration_since(since) < drain_timeout => {}
            AdminState::Ready => plan.ops.push(RuntimeOp::SetState {
                server: server.clone(),
                state: AdminState::Drain,
            }),
            AdminState::Drain => {
                let idle = seen.connections == Some(0);
                let timed_out = now.duration_since(since) >= drain_timeout;
                if idle || timed_out {
                    plan.ops.push(RuntimeOp::SetState {
                        server: server.clone(),
                        state: AdminState::Maint,
                    });
                    plan.ops.push(RuntimeOp::Delete {
                        server: server.clone(),
                        force: !idle,
                    });
                }
            }
            AdminState::Maint => {
                let busy = seen.connections.is_some_and(|c| c > 0);
                let timed_out = now.duration_since(since) >= drain_timeout;
                if !busy || timed_out {
                    plan.ops.push(RuntimeOp::Delete {
                        server: server.clone(),
                        force: busy,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sref(host_port: &str) -> ServerRef {
        ServerRef {
            backend: "be".into(),
            server: format!("be_{host_port}"),
        }
    }

    fn member() -> DesiredMember {
        DesiredMember {
            addr: "127.0.0.1".parse().unwrap(),
            port: 8080,
            check: CheckOptions {
                inter_ms: 100,
                rise: 1,
                fall: 2,
            },
            id: None,
            weight: 1,
            dynamic_cookie: false,
        }
    }

    fn seen(admin: AdminState, check_passed: bool, connections: Option<u64>) -> ObservedServer {
        ObservedServer {
            admin,
            check_passed,
            check_paused: false,
            drained_by_lane: false,
            connections,
            weight: None,
        }
    }

    struct World {
        tracker: Tracker,
        desired: BTreeMap<ServerRef, DesiredMember>,
        observed: BTreeMap<ServerRef, ObservedServer>,
        start: Instant,
    }

    impl World {
        fn new() -> Self {
            World {
                tracker: Tracker::default(),
                desired: BTreeMap::new(),
                observed: BTreeMap::new(),
                start: Instant::now(),
            }
        }

        fn plan_at(&mut self, secs: u64) -> Vec<String> {
            let managed = BTreeSet::from(["be".to_owned()]);
            let plan = self.tracker.plan(
                &self.desired,
                &self.observed,
                &managed,
                self.start + Duration::from_secs(secs),
                Duration::from_secs(30),
            );
            plan.ops
                .iter()
                .map(|op| format!("{} {}", op.kind(), op.server().server))
                .collect()
        }
    }

    #[test]
    fn a_new_member_is_added_then_set_ready_only_after_a_passing_check() {
        let mut w = World::new();
        let s = sref("127.0.0.1:8080");
        w.desired.insert(s.clone(), member());
        assert_eq!(w.plan_at(0), ["add be_127.0.0.1:8080"]);
        w.observed
            .insert(s.clone(), seen(AdminState::Maint, false, None));
        assert!(w.plan_at(0).is_empty(), "no traffic before a passing check");
        assert_eq!(w.tracker.phase(&s), Some(Phase::Joining));
        w.observed
            .insert(s.clone(), seen(AdminState::Maint, true, None));
        assert_eq!(w.plan_at(0), ["ready be_127.0.0.1:8080"]);
        w.observed
            .insert(s.clone(), seen(AdminState::Ready, true, None));
        assert!(w.plan_at(0).is_empty());
        assert_eq!(w.tracker.phase(&s), Some(Phase::Serving));
    }

    #[test]
    fn a_leaving_member_drains_until_idle_then_is_deleted() {
        let mut w = World::new();
        let s = sref("127.0.0.1:8080");
        w.observed
            .insert(s.clone(), seen(AdminState::Ready, true, Some(3)));
        assert_eq!(w.plan_at(0), ["drain be_127.0.0.1:8080"]);
        w.observed
            .insert(s.clone(), seen(AdminState::Drain, true, Some(1)));
        assert!(w.plan_at(5).is_empty(), "still has a request in flight");
        w.observed
            .insert(s.clone(), seen(AdminState::Drain, true, Some(0)));
        assert_eq!(
            w.plan_at(6),
            ["maint be_127.0.0.1:8080", "delete be_127.0.0.1:8080"]
        );
        w.observed.clear();
        assert!(w.plan_at(7).is_empty());
        assert_eq!(w.tracker.phase(&s), None);
    }

    #[test]
    fn the_drain_timeout_bounds_a_busy_member() {
        let mut w = World::new();
        let s = sref("127.0.0.1:8080");
        w.observed
            .insert(s.clone(), seen(AdminState::Drain, true, Some(2)));
        assert!(w.plan_at(0).is_empty());
        assert!(w.plan_at(29).is_empty());
        let plan = w.tracker.plan(
            &w.desired,
            &w.observed,
            &BTreeSet::from(["be".to_owned()]),
            w.start + Duration::from_secs(30),
            Duration::from_secs(30),
        );
        assert_eq!(
            plan.ops.last(),
            Some(&RuntimeOp::Delete {
                server: s,
                force: true
            })
        );
    }

    #[test]
    fn a_member_that_never_served_is_deleted_at_once() {
        let mut w = World::new();
        let s = sref("127.0.0.1:9");
        w.desired.insert(s.clone(), member());
        assert_eq!(w.plan_at(0), ["add be_127.0.0.1:9"]);
        w.desired.clear();
        w.observed.insert(s, seen(AdminState::Maint, false, None));
        assert_eq!(w.plan_at(0), ["delete be_127.0.0.1:9"]);
    }

    #[test]
    fn an_unasked_joining_server_waits_for_its_registration_then_goes() {
        // The fast lane added it; the registration has not reached the manager yet.
        let mut w = World::new();
        let s = sref("127.0.0.1:9");
        w.observed
            .insert(s.clone(), seen(AdminState::Maint, false, None));
        assert!(w.plan_at(0).is_empty(), "left alone within the grace");
        w.desired.insert(s.clone(), member());
        assert!(w.plan_at(0).is_empty(), "adopted as joining: no second add");
        assert_eq!(w.tracker.phase(&s), Some(Phase::Joining));
        // One nobody claims is a leftover once the grace is over.
        let other = sref("127.0.0.1:10");
        w.observed
            .insert(other.clone(), seen(AdminState::Maint, false, None));
        assert!(w.plan_at(0).is_empty());
        assert_eq!(w.plan_at(2), ["delete be_127.0.0.1:10"]);
    }

    #[test]
    fn a_member_coming_back_while_draining_serves_again() {
        let mut w = World::new();
        let s = sref("127.0.0.1:8080");
        w.desired.insert(s.clone(), member());
        w.observed
            .insert(s.clone(), seen(AdminState::Drain, true, Some(1)));
        assert_eq!(w.plan_at(0), ["ready be_127.0.0.1:8080"]);
    }

    #[test]
    fn old_members_serve_until_a_replacement_passes_its_check() {
        let mut w = World::new();
        let old = sref("127.0.0.1:8080");
        let new = sref("127.0.0.1:9090");
        w.observed
            .insert(old.clone(), seen(AdminState::Ready, true, Some(0)));
        w.desired.insert(new.clone(), member());
        assert_eq!(w.plan_at(0), ["add be_127.0.0.1:9090"]);
        w.observed
            .insert(new.clone(), seen(AdminState::Maint, false, None));
        assert!(w.plan_at(1).is_empty(), "the old member keeps serving");
        w.observed.insert(new, seen(AdminState::Maint, true, None));
        // The new member is set ready first, then the old one drained, in one batch.
        assert_eq!(
            w.plan_at(2),
            ["ready be_127.0.0.1:9090", "drain be_127.0.0.1:8080"]
        );
    }

    #[test]
    fn a_replacement_that_never_passes_holds_old_members_only_until_the_drain_timeout() {
        let mut w = World::new();
        let old = sref("127.0.0.1:8080");
        let new = sref("127.0.0.1:9090");
        w.observed
            .insert(old, seen(AdminState::Ready, true, Some(0)));
        w.observed
            .insert(new.clone(), seen(AdminState::Maint, false, None));
        w.desired.insert(new, member());
        assert!(w.plan_at(0).is_empty());
        assert_eq!(w.plan_at(31), ["drain be_127.0.0.1:8080"]);
    }

    #[test]
    fn drift_is_repaired_and_counted() {
        let mut w = World::new();
        let s = sref("127.0.0.1:8080");
        w.desired.insert(s.clone(), member());
        w.observed
            .insert(s.clone(), seen(AdminState::Ready, true, None));
        assert!(w.plan_at(0).is_empty());
        // HAProxy restarted and lost the server.
        w.observed.clear();
        let managed = BTreeSet::from(["be".to_owned()]);
        let plan = w.tracker.plan(
            &w.desired,
            &w.observed,
            &managed,
            w.start,
            Duration::from_secs(30),
        );
        assert_eq!(plan.repairs, 1);
        assert_eq!(plan.ops.len(), 1);
    }

    #[test]
    fn a_joining_member_paused_by_a_reload_is_re_added() {
        let mut w = World::new();
        let s = sref("127.0.0.1:8080");
        w.desired.insert(s.clone(), member());
        let mut paused = seen(AdminState::Maint, false, None);
        paused.check_paused = true;
        w.observed.insert(s, paused);
        assert_eq!(
            w.plan_at(0),
            ["delete be_127.0.0.1:8080", "add be_127.0.0.1:8080"]
        );
    }

    #[test]
    fn a_drain_by_the_fast_lane_is_kept_until_the_deletion_arrives() {
        let mut w = World::new();
        let s = sref("127.0.0.1:8080");
        w.desired.insert(s.clone(), member());
        w.observed
            .insert(s.clone(), seen(AdminState::Ready, true, Some(1)));
        assert!(w.plan_at(0).is_empty());
        // The registration was deleted; the lane drained it before this round heard of it.
        let mut drained = seen(AdminState::Drain, true, Some(1));
        drained.drained_by_lane = true;
        w.observed.insert(s.clone(), drained.clone());
        assert!(w.plan_at(1).is_empty(), "not set ready again");
        // Without the lane's word, a drained member that is desired serves again.
        drained.drained_by_lane = false;
        w.observed.insert(s, drained);
        assert_eq!(w.plan_at(2), ["ready be_127.0.0.1:8080"]);
    }

    #[test]
    fn a_joining_member_drained_by_the_lane_and_back_stays_gated() {
        let mut w = World::new();
        let s = sref("127.0.0.1:8080");
        w.desired.insert(s.clone(), member());
        w.observed
            .insert(s.clone(), seen(AdminState::Maint, false, None));
        assert!(w.plan_at(0).is_empty(), "joining, no check passed yet");
        // Deleted (the lane's drain took it out of maintenance) and registered again before
        // any check passed: back to maintenance, never ready.
        w.observed
            .insert(s.clone(), seen(AdminState::Drain, false, Some(0)));
        assert_eq!(w.plan_at(1), ["maint be_127.0.0.1:8080"]);
        assert_eq!(w.tracker.phase(&s), Some(Phase::Joining));
        w.observed
            .insert(s.clone(), seen(AdminState::Maint, false, None));
        assert!(w.plan_at(2).is_empty());
        w.observed.insert(s, seen(AdminState::Maint, true, None));
        assert_eq!(w.plan_at(3), ["ready be_127.0.0.1:8080"]);
    }

    #[test]
    fn servers_of_unmanaged_backends_are_left_alone() {
        let mut w = World::new();
        w.observed.insert(
            ServerRef {
                backend: "stats".into(),
                server: "x".into(),
            },
            seen(AdminState::Ready, true, None),
        );
        assert!(w.plan_at(0).is_empty());
    }
}

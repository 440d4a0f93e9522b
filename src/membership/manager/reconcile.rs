//! One reconcile round of the membership manager: observe the backends in scope
//! (`show servers state`, and `show servers conn` for leaving members), plan with the
//! [`Tracker`](crate::membership::plan::Tracker), apply the plan as one runtime batch, and
//! tell the controller which members are still joining.

use super::{Manager, SLOW_ROUND, TRANSITION_ROUND};
use crate::haproxy::runtime::{CommandFailure, RuntimeError, ServerCommand};
use crate::haproxy::stat::{AdminState, CheckResult};
use crate::membership::desired;
use crate::membership::fast_lane::join_commands;
use crate::membership::plan::{ObservedServer, Phase, RuntimeOp, ServerRef};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long a drain or delete by the fast lane is kept at most while its deletion has not
/// reached the manager: far longer than an event takes from the lane to the manager, even on a
/// saturated machine where the manager (on its lower-priority thread) runs seconds behind the
/// feed. Normally a mark goes sooner, as soon as the manager has applied the deletion.
const LANE_DRAIN_MEMORY: Duration = Duration::from_secs(10);

impl Manager {
    /// Observes and plans the backends that changed or have members in transition; every
    /// backend once a second, and after a reload, a restart or a config change.
    pub(super) async fn reconcile(&mut self) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let config = self.controller.config();
        let full = started >= self.next_full_round;
        let mut transitions = full;
        // Placeholder backends are managed too: they must hold no server (a deleted backend's
        // server is removed wherever the config renders that name).
        let managed: BTreeSet<String> = if full {
            config.rendered_backend_names()
        } else {
            let mut scope = std::mem::take(&mut self.dirty_backends);
            // Members in transition are looked at every TRANSITION_ROUND, not on every feed item:
            // a round triggered by a registration then observes only the backends it touched.
            if Instant::now() >= self.next_transition_round {
                transitions = true;
                scope.append(&mut self.lane_handled_backends);
                scope.extend(
                    self.tracker
                        .phases()
                        .filter(|(_, phase)| !matches!(phase, Phase::Serving))
                        .map(|(server, _)| server.backend.clone()),
                );
            }
            scope.retain(|key| config.backends.contains_key(key));
            scope
        };
        if full {
            self.dirty_backends.clear();
            self.lane_handled_backends.clear();
            self.next_full_round = Instant::now() + SLOW_ROUND;
        }
        if managed.is_empty() {
            return Ok(());
        }
        let mut desired =
            desired::desired_servers(&config, &self.controller.render_members(), &managed);
        let t_desired = started.elapsed();
        let rows = if full {
            self.runtime.show_servers_state(None).await?
        } else {
            let backends: Vec<&str> = managed.iter().map(String::as_str).collect();
            self.runtime.show_servers_state_of(&backends).await?
        };
        // Server ids are allocated against every server HAProxy holds, not just the members.
        self.controller.observe_servers(&managed, &rows).await;
        let lane_drained =
            self.lane_drains
                .pending(Instant::now(), LANE_DRAIN_MEMORY, self.feed_applied);
        let mut observed: BTreeMap<ServerRef, ObservedServer> = rows
            .iter()
            .filter(|row| managed.contains(&row.backend))
            .map(|row| {
                let server = ServerRef {
                    backend: row.backend.clone(),
                    server: row.server.clone(),
                };
                let drained_by_lane = lane_drained.contains(&server);
                (
                    server,
                    ObservedServer {
                        admin: row.admin_state(),
                        check_passed: matches!(
                            row.check_result,
                            CheckResult::Passed | CheckResult::ConditionallyPassed
                        ),
                        check_paused: row.check_flags.paused(),
                        connections: None,
                        drained_by_lane,
                        weight: u16::try_from(row.weight).ok(),
                    },
                )
            })
            .collect();
        // A server the fast lane deleted (a joining member's registration was deleted) may
        // still be wanted by registrations read before that deletion reached this manager:
        // not re-added, or it would come back for a moment after its removal.
        desired.retain(|server, _| observed.contains_key(server) || !lane_drained.contains(server));
        let t_observed = started.elapsed();
        self.count_connections_of_leaving(&desired, &mut observed)
            .await;
        let t_conns = started.elapsed();
        let mut plan = self.tracker.plan(
            &desired,
            &observed,
            &managed,
            Instant::now(),
            self.settings.drain_timeout,
        );
        self.hold_back_refused(&mut plan.ops, &desired, &observed, &managed);
        if plan.repairs > 0 {
            tracing::info!(repairs = plan.repairs, "reconcile repaired drift");
            self.metrics.repairs.add(&["member"], plan.repairs);
        }
        let t_plan = started.elapsed();
        // After a `ready`, the word goes out even if the joining set looks the same (a server
        // set ready without ever being tracked as joining): the fast lane takes a server it
        // added after the last word for one still joining.
        let readied = plan.ops.iter().any(|op| {
            matches!(
                op,
                RuntimeOp::SetState {
                    state: AdminState::Ready,
                    ..
                }
            )
        });
        // The word goes out BEFORE the commands: a structural reload rendered between a
        // `ready` and the word would render the now-serving server `disabled`, and HAProxy
        // (config changed since the saved state) would put it in maintenance in the new
        // worker: an outage until it joins again. Told first, a render either precedes the
        // word (the server still joining, the `ready` then lands on the new worker and the
        // planner re-joins it) or follows it (rendered enabled; a `ready` not yet carried
        // out is kept by the saved state's maintenance flag). `set_phases` waits for a
        // reload in progress.
        self.publish_joining(readied).await;
        if !plan.ops.is_empty() {
            self.apply(&plan.ops).await;
        }
        let t_apply = started.elapsed();
        self.metrics
            .round_seconds
            .observe(started.elapsed().as_secs_f64());
        // Where a slow round spent its time (under load it is mostly HAProxy's CLI answering).
        if started.elapsed() > Duration::from_millis(15) {
            tracing::debug!(full, transitions, backends = managed.len(), rows = rows.len(),
                ?t_desired, ?t_observed, ?t_conns, ?t_plan, ?t_apply, total = ?started.elapsed(),
                "slow reconcile round");
        }
        if transitions {
            // At most about a quarter of the time in these rounds: when they get slow
            // (thousands of members in flight, a loaded machine), they run less often.
            self.next_transition_round = started + TRANSITION_ROUND.max(started.elapsed() * 3);
        }
        Ok(())
    }

    /// Drops the operations on servers whose last command HAProxy refused and whose backoff
    /// is not over (an `add` held back is forgotten by the planner, so it is planned afresh);
    /// forgets refusals of servers that are neither wanted nor present any more.
    fn hold_back_refused(
        &mut self,
        ops: &mut Vec<RuntimeOp>,
        desired: &BTreeMap<ServerRef, crate::membership::plan::DesiredMember>,
        observed: &BTreeMap<ServerRef, ObservedServer>,
        managed: &BTreeSet<String>,
    ) {
        let before = self.refusals.len();
        self.refusals.retain(
            |server| {
                !managed.contains(&server.backend)
                    || desired.contains_key(server)
                    || observed.contains_key(server)
            },
            |server| observed.contains_key(server),
        );
        if self.refusals.len() != before {
            self.publish_refusals();
        }
        if self.refusals.is_empty() {
            return;
        }
        let now = Instant::now();
        let (refusals, tracker) = (&self.refusals, &mut self.tracker);
        ops.retain(|op| {
            let send = refusals.may_send(op.server(), now);
            if !send && matches!(op, RuntimeOp::Add { .. }) {
                tracker.forget(op.server());
            }
            send
        });
    }

    /// Records what HAProxy answered to a command for `server`: a refusal (logged and shown as
    /// an activity once per cause) or an acceptance that ends an earlier refusal.
    fn note_outcome(&mut self, server: &ServerRef, add: bool, result: &Result<(), RuntimeError>) {
        match result {
            Ok(()) => {
                if self.refusals.accepted(server) {
                    tracing::info!(backend = %server.backend, server = %server.server,
                        "haproxy accepts the member again");
                    self.publish_refusals();
                }
            }
            Err(err) => {
                let message = match err {
                    RuntimeError::Command { reply, .. } => reply.trim().to_owned(),
                    other => other.to_string(),
                };
                if self.refusals.refused(server, &message, add, Instant::now()) {
                    tracing::warn!(backend = %server.backend, server = %server.server,
                        error = %message, "haproxy refused a member; retrying with backoff");
                    self.record(
                        "member-refused",
                        &server.server,
                        serde_json::json!({"backend": server.backend, "error": message}),
                    );
                }
                self.publish_refusals();
            }
        }
    }

    fn publish_refusals(&self) {
        self.status_board.set_refused(self.refusals.by_backend());
        self.metrics.set_refused(self.refusals.len());
    }

    /// Fills `connections` for servers that are leaving (not desired any more).
    async fn count_connections_of_leaving(
        &self,
        desired: &BTreeMap<ServerRef, crate::membership::plan::DesiredMember>,
        observed: &mut BTreeMap<ServerRef, ObservedServer>,
    ) {
        let backends: BTreeSet<&str> = observed
            .keys()
            .filter(|s| !desired.contains_key(*s))
            .map(|s| s.backend.as_str())
            .collect();
        if backends.is_empty() {
            return;
        }
        let backends: Vec<&str> = backends.into_iter().collect();
        match self.runtime.show_servers_conn_of(&backends).await {
            Ok(rows) => {
                let connections: BTreeMap<ServerRef, u64> = rows
                    .into_iter()
                    .map(|row| {
                        let server = ServerRef {
                            backend: row.backend,
                            server: row.server,
                        };
                        (server, row.used_cur)
                    })
                    .collect();
                for (server, seen) in observed.iter_mut() {
                    if let Some(used) = connections.get(server) {
                        seen.connections = Some(*used);
                    }
                }
            }
            Err(err) => tracing::debug!(error = %err,
                "show servers conn failed; leaving members wait"),
        }
    }

    async fn apply(&mut self, ops: &[RuntimeOp]) {
        // Out of service first in what a reload renders, then in HAProxy: a reload between
        // the two must not bring a removed server back (it would come back unchecked).
        let mut leaving_service: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for op in ops {
            let out = matches!(
                op,
                RuntimeOp::Delete { .. }
                    | RuntimeOp::SetState {
                        state: AdminState::Maint,
                        ..
                    }
            );
            if out {
                let server = op.server();
                leaving_service
                    .entry(server.backend.clone())
                    .or_default()
                    .insert(server.server.clone());
            }
        }
        if !leaving_service.is_empty() {
            self.controller.out_of_service(&leaving_service).await;
        }
        let mut commands = Vec::new();
        let mut kinds = Vec::new();
        // The server each command is for (an add is two commands).
        let mut servers = Vec::new();
        for op in ops {
            let (backend, server) = (op.server().backend.clone(), op.server().server.clone());
            match op {
                RuntimeOp::Add { member, .. } => {
                    tracing::info!(backend = %backend, server = %server, "adding member (health-gated)");
                    commands.extend(join_commands(&backend, &server, member));
                    kinds.push("add");
                    kinds.push("enable-health");
                    servers.push(op.server().clone());
                    if member.dynamic_cookie {
                        commands.push(ServerCommand::EnableDynamicCookie {
                            backend: backend.clone(),
                            server: server.clone(),
                        });
                        kinds.push("dynamic-cookie");
                        servers.push(op.server().clone());
                    }
                }
                RuntimeOp::SetWeight { weight, .. } => {
                    tracing::info!(backend = %backend, server = %server, weight, "member weight");
                    commands.push(ServerCommand::SetWeight {
                        backend,
                        server,
                        weight: *weight,
                    });
                    kinds.push(op.kind());
                }
                RuntimeOp::SetState { state, .. } => {
                    tracing::info!(backend = %backend, server = %server, state = state.keyword(), "member state");
                    commands.push(ServerCommand::SetState {
                        backend,
                        server,
                        state: *state,
                    });
                    kinds.push(op.kind());
                }
                RuntimeOp::Delete { force, .. } => {
                    if *force {
                        tracing::warn!(backend = %backend, server = %server,
                            "drain timeout passed; closing the member's remaining sessions");
                        let outcome = self
                            .runtime
                            .run(&ServerCommand::ShutdownSessions {
                                backend: backend.clone(),
                                server: server.clone(),
                            })
                            .await;
                        self.count("shutdown-sessions", outcome.is_ok());
                    }
                    tracing::info!(backend = %backend, server = %server, "removing member");
                    commands.push(ServerCommand::Delete { backend, server });
                    kinds.push("delete");
                }
            }
            servers.push(op.server().clone());
        }
        match self.runtime.batch(&commands).await {
            Ok(results) => {
                let mut add_failed = false;
                for (((server, result), kind), command) in
                    servers.iter().zip(&results).zip(&kinds).zip(&commands)
                {
                    let outcome = command_outcome(kind, result);
                    if let Err(err) = result {
                        tracing::debug!(command = ?command, error = %err, outcome, "runtime command not carried out");
                    }
                    // After a refused add, `enable health` can only say "no such server":
                    // the add's answer is the one that tells why.
                    let after_failed_add =
                        matches!(*kind, "enable-health" | "dynamic-cookie") && add_failed;
                    if *kind == "add" {
                        add_failed = outcome == "error";
                    }
                    // Only what HAProxy refuses counts against the member: a server another
                    // writer added or deleted meanwhile is the next round's to observe.
                    // A weight or cookie command says nothing about whether the member can join.
                    let about_the_member = !matches!(*kind, "weight" | "dynamic-cookie");
                    if matches!(outcome, "ok" | "error") && !after_failed_add && about_the_member {
                        self.note_outcome(server, *kind == "add", result);
                    }
                    self.metrics.runtime_commands.inc(&[kind, outcome]);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "runtime batch failed; the next round repairs");
                for kind in kinds {
                    self.count(kind, false);
                }
            }
        }
    }

    fn count(&self, kind: &str, ok: bool) {
        self.metrics
            .runtime_commands
            .inc(&[kind, if ok { "ok" } else { "error" }]);
    }

    /// Tells the controller which members are joining and which serve, so a reload renders
    /// every other one `disabled` and the fast lane deletes rather than drains them.
    async fn publish_joining(&mut self, always: bool) {
        let (mut joining, mut serving) = (BTreeSet::new(), BTreeSet::new());
        for (server, phase) in self.tracker.phases() {
            match phase {
                Phase::Joining => joining.insert(server.server.clone()),
                Phase::Serving => serving.insert(server.server.clone()),
                Phase::Leaving { .. } => false,
            };
        }
        let phases = Some((joining, serving));
        if always || phases != self.published_phases {
            let (joining, serving) = phases.clone().unwrap_or_default();
            self.controller.set_phases(joining, serving).await;
            self.published_phases = phases;
        }
    }
}

/// A runtime command's outcome as the metrics label it: `ok`; `exists`, an add of a server
/// the fast lane added between our look and our add; `gone`, a command for a server deleted
/// meanwhile (the fast lane deletes a joining server whose registration went: the manager's
/// `ready` for it, planned from a look a few milliseconds older, finds nothing); else `error`.
fn command_outcome(kind: &str, result: &Result<(), RuntimeError>) -> &'static str {
    match result.as_ref().err().map(RuntimeError::failure) {
        None => "ok",
        Some(Some(CommandFailure::AlreadyExists)) if kind == "add" => "exists",
        Some(Some(CommandFailure::NoSuchServer)) if kind != "add" => "gone",
        Some(_) => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(reply: &str) -> Result<(), RuntimeError> {
        Err(RuntimeError::Command {
            command: "x".into(),
            reply: reply.into(),
        })
    }

    #[test]
    fn a_server_deleted_or_added_by_another_writer_is_not_a_refusal() {
        assert_eq!(command_outcome("ready", &Ok(())), "ok");
        assert_eq!(
            command_outcome("ready", &refused("No such server.")),
            "gone"
        );
        assert_eq!(
            command_outcome("delete", &refused("No such server.")),
            "gone"
        );
        let exists = refused("Already exists a server with the same name in backend.");
        assert_eq!(command_outcome("add", &exists), "exists");
        // An add's "no such server" has no other writer to blame; neither has a refused state.
        assert_eq!(command_outcome("add", &refused("No such server.")), "error");
        let not_dynamic =
            refused("Backend must use a dynamic load balancing to support dynamic servers.");
        assert_eq!(command_outcome("add", &not_dynamic), "error");
    }
}

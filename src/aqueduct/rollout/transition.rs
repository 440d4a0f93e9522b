//! What each rollout command does to a backend: the rollout's state machine. Pure: the
//! controller applies it to a candidate config inside its batch (so two commands never race),
//! and a refused command changes nothing.
//!
//! ```text
//!            start ──> running <──resume── paused
//!                      │  │ pause ───────────^ │
//!   advance (last) / promote / weight 100      │ promote          abort (either)
//!                      v                        v                      │
//!                   finished <──────────────────┘      aborted <───────┘
//! ```

use crate::aqueduct::validate::RolloutRequest;
use crate::config::balance::Algorithm;
use crate::config::rollout::{
    Decision, DecisionAction, Figures, Rollout, RolloutState, Stickiness,
};
use crate::config::{Backend, BackendType, Mode};

/// One operation on a backend's rollout, by the API or the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum RolloutCommand {
    /// `POST /backends/{key}/rollout`: start one, or change the weight or plan of the one in
    /// progress to the same version.
    Start(RolloutRequest),
    Pause {
        reason: String,
        figures: Option<Figures>,
    },
    Resume,
    Promote,
    Abort {
        reason: String,
        figures: Option<Figures>,
    },
    /// The engine: step `from_step` held for its interval within the limits.
    Advance {
        from_step: usize,
        figures: Figures,
    },
}

impl RolloutCommand {
    pub fn verb(&self) -> &'static str {
        match self {
            RolloutCommand::Start(_) => "start",
            RolloutCommand::Pause { .. } => "pause",
            RolloutCommand::Resume => "resume",
            RolloutCommand::Promote => "promote",
            RolloutCommand::Abort { .. } => "abort",
            RolloutCommand::Advance { .. } => "advance",
        }
    }
}

/// Why a command was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RolloutRefused {
    /// The request field at fault (a 400), or none when the rollout's state is (a 409).
    pub field: Option<&'static str>,
    pub message: String,
}

impl RolloutRefused {
    fn field(field: &'static str, message: String) -> Self {
        RolloutRefused {
            field: Some(field),
            message,
        }
    }

    fn conflict(message: String) -> Self {
        RolloutRefused {
            field: None,
            message,
        }
    }
}

/// Applies `command` to `backend` at `at_ms` (epoch ms); returns the decision it recorded.
pub fn apply(
    backend: &mut Backend,
    command: &RolloutCommand,
    at_ms: u64,
) -> Result<Decision, RolloutRefused> {
    let key = backend.key.clone();
    if let RolloutCommand::Start(request) = command {
        // Needs no rollout in progress, unlike every other command.
        return start(backend, request, at_ms);
    }
    let not_in =
        |what: &str| RolloutRefused::conflict(format!("backend {key} has no rollout {what}"));
    let rollout = backend
        .rollout
        .as_mut()
        .filter(|r| r.is_active())
        .ok_or_else(|| not_in("in progress"))?;
    let decision = |action, weight, reason: String, figures| Decision {
        time: at_ms,
        action,
        weight,
        reason,
        figures,
    };
    let recorded = match command {
        RolloutCommand::Start(request) => return start(backend, request, at_ms),
        RolloutCommand::Pause { reason, figures } => {
            if rollout.state != RolloutState::Running {
                return Err(not_in("running"));
            }
            rollout.state = RolloutState::Paused;
            decision(
                DecisionAction::Pause,
                rollout.weight,
                reason.clone(),
                figures.clone(),
            )
        }
        RolloutCommand::Resume => {
            if rollout.state != RolloutState::Paused {
                return Err(not_in("paused"));
            }
            rollout.state = RolloutState::Running;
            // The step is measured afresh: what it saw before the pause was judged already.
            rollout.step_started = at_ms;
            decision(
                DecisionAction::Resume,
                rollout.weight,
                "resumed by API".to_owned(),
                None,
            )
        }
        RolloutCommand::Abort { reason, figures } => {
            rollout.state = RolloutState::Aborted;
            rollout.weight = 0;
            rollout.step_started = at_ms;
            decision(DecisionAction::Abort, 0, reason.clone(), figures.clone())
        }
        RolloutCommand::Promote => {
            let reason = format!("promoted by API at {}%", rollout.weight);
            return Ok(finish(
                backend,
                DecisionAction::Promote,
                reason,
                None,
                at_ms,
            ));
        }
        RolloutCommand::Advance { from_step, figures } => {
            let plan = rollout.plan.as_ref().ok_or_else(|| not_in("plan"))?;
            if rollout.state != RolloutState::Running || rollout.step != Some(*from_step) {
                // Another decision got there first (a fleet node, an operator).
                return Err(RolloutRefused::conflict(format!(
                    "backend {key}'s rollout is no longer running step {}",
                    from_step + 1
                )));
            }
            let next = from_step + 1;
            let weight = plan.steps.get(next).copied().unwrap_or(100);
            let reason = format!(
                "step {} of {} held {} within limits ({}); next {weight}%",
                from_step + 1,
                plan.steps.len(),
                plan.interval,
                describe(figures, &rollout.version, &rollout.from)
            );
            if weight >= 100 {
                return Ok(finish(
                    backend,
                    DecisionAction::Finish,
                    reason,
                    Some(figures.clone()),
                    at_ms,
                ));
            }
            rollout.step = Some(next);
            rollout.weight = weight;
            rollout.step_started = at_ms;
            decision(
                DecisionAction::Advance,
                weight,
                reason,
                Some(figures.clone()),
            )
        }
    };
    rollout.record(recorded.clone());
    Ok(recorded)
}

fn start(
    backend: &mut Backend,
    request: &RolloutRequest,
    at_ms: u64,
) -> Result<Decision, RolloutRefused> {
    let key = &backend.key;
    let (BackendType::Dynamic, Some(from)) = (backend.kind, backend.version.clone()) else {
        return Err(RolloutRefused::field(
            "type",
            format!("backend {key} is static: only a dynamic backend moves between versions"),
        ));
    };
    if request.version == from {
        return Err(RolloutRefused::field(
            "version",
            format!("backend {key} already serves version {from}"),
        ));
    }
    let algorithm = backend.balance.algorithm();
    if matches!(
        algorithm,
        Algorithm::LeastConn | Algorithm::First | Algorithm::StaticRoundRobin
    ) {
        return Err(RolloutRefused::field(
            "balance",
            format!(
                "backend {key} balances with {}, which does not split by weight; use roundrobin, \
                 random or a hash",
                backend.balance.as_str()
            ),
        ));
    }
    let sticky = if !request.sticky {
        Stickiness::None
    } else if backend.balance.needs_consistent_hashing() {
        Stickiness::Hash
    } else if backend.sticky_cookie.is_some() && backend.mode == Mode::Http {
        Stickiness::Cookie
    } else {
        return Err(RolloutRefused::field(
            "sticky",
            format!(
                "backend {key} balances with {} and has no stickyCookie, so a client could move \
                 between versions: set the backend's stickyCookie, use a hash balance (source, \
                 hdr(...)), or send \"sticky\": false",
                backend.balance.as_str()
            ),
        ));
    };
    let (mut decisions, action) = match backend.active_rollout() {
        Some(current) if current.version != request.version => {
            return Err(RolloutRefused::conflict(format!(
                "backend {key} is rolling out {}: promote or abort it first",
                current.version
            )));
        }
        Some(current) => (current.decisions.clone(), DecisionAction::Weight),
        None => (Vec::new(), DecisionAction::Start),
    };
    let weight = match (&request.plan, request.weight) {
        (Some(plan), _) => plan.steps.first().copied().unwrap_or(100),
        (None, weight) => weight.unwrap_or(0),
    };
    let reason = match &request.plan {
        Some(plan) => format!(
            "plan {} every {}, abort above {:.1}% errors after {} requests",
            plan.steps
                .iter()
                .map(|s| format!("{s}%"))
                .collect::<Vec<_>>()
                .join(" → "),
            plan.interval,
            plan.abort.error_rate * 100.0,
            plan.abort.min_requests
        ),
        None => format!("{weight}% of new sessions to {} by API", request.version),
    };
    let decision = Decision {
        time: at_ms,
        action,
        weight,
        reason: reason.clone(),
        figures: None,
    };
    decisions.push(decision.clone());
    backend.rollout = Some(Box::new(Rollout {
        version: request.version.clone(),
        from,
        state: RolloutState::Running,
        weight,
        sticky,
        plan: request.plan.clone(),
        step: request.plan.as_ref().map(|_| 0),
        step_started: at_ms,
        decisions,
    }));
    if weight >= 100 {
        return Ok(finish(backend, DecisionAction::Finish, reason, None, at_ms));
    }
    Ok(decision)
}

/// The switch is complete: the backend follows the new version alone, and the old members
/// drain and leave as in any version switch.
fn finish(
    backend: &mut Backend,
    action: DecisionAction,
    reason: String,
    figures: Option<Figures>,
    at_ms: u64,
) -> Decision {
    let decision = Decision {
        time: at_ms,
        action,
        weight: 100,
        reason,
        figures,
    };
    if let Some(rollout) = backend.rollout.as_mut() {
        rollout.state = RolloutState::Finished;
        rollout.weight = 100;
        rollout.step_started = at_ms;
        rollout.record(decision.clone());
        backend.version = Some(rollout.version.clone());
    }
    decision
}

/// `2.0.0: 0.4% errors of 812 requests; 1.0.0: 0.3% of 2,400`.
pub fn describe(figures: &Figures, new: &str, old: &str) -> String {
    let rtime = |ms: Option<u64>| ms.map(|ms| format!(", {ms} ms")).unwrap_or_default();
    format!(
        "{new}: {:.2}% errors of {} requests{}; {old}: {:.2}% of {}{}",
        figures.new.error_rate * 100.0,
        figures.new.requests,
        rtime(figures.new.rtime_ms),
        figures.old.error_rate * 100.0,
        figures.old.requests,
        rtime(figures.old.rtime_ms),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aqueduct::validate;
    use crate::config::rollout::VersionFigures;
    use serde_json::json;

    fn backend(body: serde_json::Value) -> Backend {
        validate::backend("api", &body).unwrap()
    }

    fn hashed() -> Backend {
        backend(json!({"type": "dynamic", "name": "api", "version": "1", "balance": "source"}))
    }

    fn request(body: serde_json::Value) -> RolloutCommand {
        RolloutCommand::Start(validate::rollout_request(&body).unwrap())
    }

    fn figures() -> Figures {
        Figures {
            new: VersionFigures::new(300, 1, Some(2)),
            old: VersionFigures::new(900, 2, Some(2)),
        }
    }

    #[test]
    fn a_plan_runs_to_the_end_and_switches_the_version() {
        let mut b = hashed();
        let start = request(json!({"version": "2", "steps": [5, 50, 100], "interval": "2s"}));
        assert_eq!(
            apply(&mut b, &start, 1).unwrap().action,
            DecisionAction::Start
        );
        assert_eq!(b.active_rollout().unwrap().weight, 5);
        assert!(b.follows_version("1") && b.follows_version("2"));
        let advance = |from_step| RolloutCommand::Advance {
            from_step,
            figures: figures(),
        };
        assert_eq!(apply(&mut b, &advance(0), 2).unwrap().weight, 50);
        // The same step twice (a second node, a stale engine) is refused.
        assert!(apply(&mut b, &advance(0), 3).unwrap_err().field.is_none());
        let last = apply(&mut b, &advance(1), 4).unwrap();
        assert_eq!(last.action, DecisionAction::Finish);
        assert_eq!(b.version.as_deref(), Some("2"));
        assert!(b.active_rollout().is_none() && !b.follows_version("1"));
        let rollout = b.rollout.as_ref().unwrap();
        assert_eq!(rollout.state, RolloutState::Finished);
        assert_eq!(rollout.from, "1");
        assert_eq!(rollout.decisions.len(), 3);
    }

    #[test]
    fn pause_resume_abort_and_their_conflicts() {
        let mut b = hashed();
        assert!(apply(&mut b, &RolloutCommand::Resume, 1).is_err());
        apply(&mut b, &request(json!({"version": "2", "weight": 10})), 1).unwrap();
        assert!(apply(&mut b, &RolloutCommand::Resume, 2).is_err());
        let pause = RolloutCommand::Pause {
            reason: "by API".into(),
            figures: None,
        };
        apply(&mut b, &pause, 2).unwrap();
        assert!(apply(&mut b, &pause, 3).is_err());
        apply(&mut b, &RolloutCommand::Resume, 4).unwrap();
        let abort = RolloutCommand::Abort {
            reason: "errors".into(),
            figures: Some(figures()),
        };
        apply(&mut b, &abort, 5).unwrap();
        assert_eq!(b.version.as_deref(), Some("1"));
        assert!(b.active_rollout().is_none() && !b.follows_version("2"));
        assert!(apply(&mut b, &abort, 6).is_err());
        // An ended rollout is replaced by a new one.
        apply(&mut b, &request(json!({"version": "3", "weight": 1})), 7).unwrap();
        assert_eq!(b.active_rollout().unwrap().decisions.len(), 1);
    }

    #[test]
    fn a_second_version_conflicts_and_the_same_one_changes_the_weight() {
        let mut b = hashed();
        apply(&mut b, &request(json!({"version": "2", "weight": 10})), 1).unwrap();
        let other = apply(&mut b, &request(json!({"version": "3", "weight": 10})), 2);
        assert!(other.unwrap_err().field.is_none());
        let again = apply(&mut b, &request(json!({"version": "2", "weight": 40})), 3).unwrap();
        assert_eq!(again.action, DecisionAction::Weight);
        assert_eq!(b.active_rollout().unwrap().weight, 40);
        let done = apply(&mut b, &request(json!({"version": "2", "weight": 100})), 4).unwrap();
        assert_eq!(done.action, DecisionAction::Finish);
        assert_eq!(b.version.as_deref(), Some("2"));
    }

    #[test]
    fn backends_that_cannot_split_or_stick_are_refused_naming_the_field() {
        let field = |mut b: Backend, body| apply(&mut b, &request(body), 1).unwrap_err().field;
        let weight = json!({"version": "2", "weight": 10});
        let rr = json!({"type": "dynamic", "name": "api", "version": "1"});
        assert_eq!(field(backend(rr.clone()), weight.clone()), Some("sticky"));
        let mut loose = weight.clone();
        loose["sticky"] = json!(false);
        let mut b = backend(rr.clone());
        assert_eq!(
            apply(&mut b, &request(loose), 1).map(|_| b.rollout.unwrap().sticky),
            Ok(Stickiness::None)
        );
        let mut cookie = rr.clone();
        cookie["stickyCookie"] = json!("SRV");
        let mut b = backend(cookie);
        apply(&mut b, &request(weight.clone()), 1).unwrap();
        assert_eq!(b.rollout.unwrap().sticky, Stickiness::Cookie);
        let mut lc = rr.clone();
        lc["balance"] = json!("leastconn");
        assert_eq!(field(backend(lc), weight.clone()), Some("balance"));
        let same = json!({"version": "1", "weight": 10});
        assert_eq!(field(hashed(), same), Some("version"));
        let fixed =
            backend(json!({"type": "static", "members": [{"host": "127.0.0.1", "port": 1}]}));
        assert_eq!(field(fixed, weight), Some("type"));
    }
}

//! The rollout engine: for every backend with a rollout in progress, it sums the stats
//! poller's per-server counters by version over the current step (shown by the API and
//! `/metrics`); for a plan that is running, it decides:
//! - **abort** (the new version leaves at once, no reload) when the new version has served
//!   `minRequests` and its error rate is above the plan's limit and above the old version's,
//!   or its response time is above the latency limit and the old version's;
//! - **pause** when both versions are above a limit (the fault is not the new version's), or
//!   when a step's interval passed without `minRequests` reaching the new version (too little
//!   to judge);
//! - **advance** to the next step when the interval passed within the limits (the last step,
//!   100 %, finishes the switch).
//!
//! Decisions go through the same apply pipeline as the API's (a fleet's store included), with
//! the step they judged: a decision about a step that has moved on meanwhile is refused
//! there, so two engines (two fleet nodes) never advance twice.
//!
//! Counters restart at every reload; a counter that went down is read as restarted. After an
//! aqueduct restart a step is measured afresh for a whole interval (the counters seen before
//! the restart are gone with the process), so a rollout resumes at the step it was at.

use super::transition::{RolloutCommand, describe};
use crate::api_error::ApiError;
use crate::aqueduct::controller::{Change, Controller};
use crate::config::Config;
use crate::config::rollout::{Figures, Rollout, RolloutPlan, RolloutState, VersionFigures};
use crate::metrics::{CounterVec, PromText};
use crate::status::{MemberSample, StatusBoard, now_ms};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the engine looks (the stats poller samples once a second).
pub const TICK: Duration = Duration::from_millis(500);

/// How a decision is submitted: to the controller, or through the fleet's store.
pub type Submit =
    Arc<dyn Fn(Change) -> Pin<Box<dyn Future<Output = Result<(), ApiError>> + Send>> + Send + Sync>;

/// What the engine measured over each rollout's current step, for `GET /backends/{key}`,
/// the UI and `/metrics`. Cheap to clone.
#[derive(Clone)]
pub struct RolloutLive {
    figures: Arc<Mutex<BTreeMap<String, StepFigures>>>,
    decisions: Arc<CounterVec>,
}

/// One backend's current step, as measured.
#[derive(Debug, Clone, PartialEq)]
pub struct StepFigures {
    pub figures: Figures,
    /// How long the step has been measured.
    pub measured_ms: u64,
}

impl Default for RolloutLive {
    fn default() -> Self {
        Self::new()
    }
}

impl RolloutLive {
    pub fn new() -> Self {
        RolloutLive {
            figures: Arc::default(),
            decisions: Arc::new(CounterVec::new(&["backend", "action"])),
        }
    }

    pub fn get(&self, backend: &str) -> Option<StepFigures> {
        self.lock().get(backend).cloned()
    }

    /// Adds `live` (this step's figures) to the `rollout` of a backend row.
    pub fn decorate_backend_row(&self, row: &mut Value) {
        let Some(key) = row.get("key").and_then(Value::as_str).map(str::to_owned) else {
            return;
        };
        let Some(step) = self.get(&key) else { return };
        if let Some(Value::Object(rollout)) = row.get_mut("rollout") {
            rollout.insert(
                "live".into(),
                json!({"new": step.figures.new, "old": step.figures.old,
                       "measuredMs": step.measured_ms}),
            );
        }
    }

    /// The rollout families of `/metrics`.
    pub fn render(&self, config: &Config, text: &mut PromText) {
        let mut weights = Vec::new();
        let mut states = Vec::new();
        let mut steps = Vec::new();
        for backend in config.backends.values() {
            let Some(rollout) = &backend.rollout else {
                continue;
            };
            let key = backend.key.clone();
            let new_share = f64::from(rollout.weight);
            weights.push((vec![key.clone(), rollout.version.clone()], new_share));
            if rollout.is_active() {
                weights.push((vec![key.clone(), rollout.from.clone()], 100.0 - new_share));
            }
            states.push((vec![key.clone(), rollout.state.as_str().to_owned()], 1.0));
            if let Some(step) = rollout.step {
                steps.push((vec![key.clone()], (step + 1) as f64));
            }
        }
        let mut requests = Vec::new();
        let mut errors = Vec::new();
        for (key, step) in self.lock().iter() {
            let Some(rollout) = config.backends.get(key).and_then(|b| b.rollout.as_ref()) else {
                continue;
            };
            for (version, figures) in [
                (&rollout.version, &step.figures.new),
                (&rollout.from, &step.figures.old),
            ] {
                let labels = vec![key.clone(), version.clone()];
                requests.push((labels.clone(), figures.requests as f64));
                errors.push((labels, figures.error_rate));
            }
        }
        let labels = ["backend", "version"];
        text.gauge_family(
            "thalassa_rollout_weight_percent",
            "Share of new sessions each version of a rollout gets",
            &labels,
            &weights,
        )
        .gauge_family(
            "thalassa_rollout_state",
            "A backend's rollout and its state (running, paused, aborted, finished)",
            &["backend", "state"],
            &states,
        )
        .gauge_family(
            "thalassa_rollout_step",
            "The step a planned rollout is at (1-based)",
            &["backend"],
            &steps,
        )
        .gauge_family(
            "thalassa_rollout_step_requests",
            "Requests each version served during the current step",
            &labels,
            &requests,
        )
        .gauge_family(
            "thalassa_rollout_step_error_ratio",
            "Errors / requests of each version during the current step",
            &labels,
            &errors,
        )
        .counter_vec(
            "thalassa_rollout_decisions_total",
            "Rollout decisions the engine took, by backend and action",
            &self.decisions,
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StepFigures>> {
        self.figures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the engine remembers of one rollout's current step.
struct StepWatch {
    /// The step it measures: a change of any of these starts a new window.
    step: (String, Option<usize>, u64, RolloutState),
    started: Instant,
    /// Per server: the last counters seen, and what the window summed.
    servers: BTreeMap<String, ServerWindow>,
    /// A pause for too little traffic is taken once per step.
    judged: bool,
}

#[derive(Default)]
struct ServerWindow {
    last: (u64, u64),
    requests: u64,
    errors: u64,
    rtime_ms: Option<u64>,
    version: String,
}

pub struct RolloutEngine {
    pub controller: Controller,
    pub board: StatusBoard,
    pub submit: Submit,
    pub live: RolloutLive,
}

impl RolloutEngine {
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let mut watches: BTreeMap<String, StepWatch> = BTreeMap::new();
        let mut last_sample_ms = 0;
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let config = self.controller.config();
            watches.retain(|key, _| {
                config
                    .backends
                    .get(key)
                    .is_some_and(|b| b.active_rollout().is_some())
            });
            self.live.lock().retain(|key, _| watches.contains_key(key));
            // The sample is a copy of every member's row: taken only while a rollout runs.
            if !config
                .backends
                .values()
                .any(|b| b.active_rollout().is_some())
            {
                continue;
            }
            let sample = self.board.latest();
            let fresh = sample.time_ms != last_sample_ms;
            last_sample_ms = sample.time_ms;
            for backend in config.backends.values() {
                let Some(rollout) = backend.active_rollout() else {
                    continue;
                };
                let identity = (
                    rollout.version.clone(),
                    rollout.step,
                    rollout.step_started,
                    rollout.state,
                );
                let watch = watches
                    .entry(backend.key.clone())
                    .or_insert_with(|| StepWatch::new(identity.clone()));
                if watch.step != identity {
                    watch.restart(identity);
                }
                if fresh {
                    watch.observe(sample.members.get(&backend.key).map_or(&[], Vec::as_slice));
                }
                let figures = watch.figures(rollout);
                self.live.lock().insert(
                    backend.key.clone(),
                    StepFigures {
                        figures: figures.clone(),
                        measured_ms: watch.started.elapsed().as_millis() as u64,
                    },
                );
                // A manual rollout is measured (for the API and /metrics), never judged.
                let running = rollout.state == RolloutState::Running;
                let Some(plan) = rollout.plan.as_ref().filter(|_| running) else {
                    continue;
                };
                if let Some(command) = judge(rollout, plan, watch, figures) {
                    if matches!(command, RolloutCommand::Pause { .. }) {
                        watch.judged = true;
                    }
                    self.decide(&backend.key, command).await;
                }
            }
        }
    }

    async fn decide(&self, key: &str, command: RolloutCommand) {
        let verb = command.verb();
        let change = Change::Rollout {
            key: key.to_owned(),
            command,
            at_ms: now_ms(),
        };
        match (self.submit)(change).await {
            Ok(()) => {
                self.live.decisions.inc(&[key, verb]);
                tracing::info!(backend = %key, decision = verb, "rollout decision applied");
            }
            Err(err) => {
                // Another decision (an operator's, another node's) got there first, or the
                // store is out of reach: the next tick judges the rollout as it is then.
                tracing::info!(backend = %key, decision = verb, error = %err.message,
                    "rollout decision not applied");
            }
        }
    }
}

/// The plan's decision for a running step, if any.
fn judge(
    rollout: &Rollout,
    plan: &RolloutPlan,
    watch: &StepWatch,
    figures: Figures,
) -> Option<RolloutCommand> {
    let limits = &plan.abort;
    let (new, old) = (&figures.new, &figures.old);
    let (new_version, old_version) = (&rollout.version, &rollout.from);
    let judged = new.requests >= limits.min_requests;
    let error_limit = limits.error_rate;
    if judged && new.error_rate > error_limit {
        let old_fails = old.requests >= limits.min_requests && old.error_rate >= new.error_rate;
        let reason = format!(
            "{new_version} answered {:.1}% errors over {} requests, above the {:.1}% limit \
             ({})",
            new.error_rate * 100.0,
            new.requests,
            error_limit * 100.0,
            describe(&figures, new_version, old_version)
        );
        return Some(if old_fails {
            RolloutCommand::Pause {
                reason: format!("{reason}; {old_version} fails as much, so not rolled back"),
                figures: Some(figures),
            }
        } else {
            RolloutCommand::Abort {
                reason: format!("{reason}; rolled back to {old_version}"),
                figures: Some(figures),
            }
        });
    }
    if let (true, Some(limit), Some(rtime)) = (judged, limits.latency_p95_ms, new.rtime_ms)
        && rtime > limit
    {
        let old_slow = old.rtime_ms.is_some_and(|old| old >= rtime);
        let reason = format!(
            "{new_version} answers in {rtime} ms on average, above the {limit} ms limit ({})",
            describe(&figures, new_version, old_version)
        );
        return Some(if old_slow {
            RolloutCommand::Pause {
                reason: format!("{reason}; {old_version} is as slow, so not rolled back"),
                figures: Some(figures),
            }
        } else {
            RolloutCommand::Abort {
                reason: format!("{reason}; rolled back to {old_version}"),
                figures: Some(figures),
            }
        });
    }
    if watch.started.elapsed() < Duration::from_millis(plan.interval_ms) {
        return None;
    }
    let step = rollout.step.unwrap_or(0);
    if judged {
        return Some(RolloutCommand::Advance {
            from_step: step,
            figures,
        });
    }
    if watch.judged {
        return None;
    }
    Some(RolloutCommand::Pause {
        reason: format!(
            "only {} requests reached {new_version} in {}, fewer than the {} needed to judge it",
            new.requests, plan.interval, limits.min_requests
        ),
        figures: Some(figures),
    })
}

impl StepWatch {
    fn new(step: (String, Option<usize>, u64, RolloutState)) -> Self {
        StepWatch {
            step,
            started: Instant::now(),
            servers: BTreeMap::new(),
            judged: false,
        }
    }

    /// A new step: the window starts again from the counters as they are now.
    fn restart(&mut self, step: (String, Option<usize>, u64, RolloutState)) {
        self.step = step;
        self.started = Instant::now();
        self.judged = false;
        for window in self.servers.values_mut() {
            window.requests = 0;
            window.errors = 0;
        }
    }

    fn observe(&mut self, members: &[MemberSample]) {
        for member in members {
            let Some(version) = &member.version else {
                continue;
            };
            let now = (member.requests, member.errors);
            match self.servers.get_mut(&member.server) {
                // First seen: its counters so far predate the window.
                None => {
                    self.servers.insert(
                        member.server.clone(),
                        ServerWindow {
                            last: now,
                            version: version.clone(),
                            rtime_ms: member.rtime_ms,
                            ..ServerWindow::default()
                        },
                    );
                }
                Some(window) => {
                    // A counter that went down restarted (a reload): all of it is new.
                    let delta = |now: u64, last: u64| if now >= last { now - last } else { now };
                    window.requests += delta(now.0, window.last.0);
                    window.errors += delta(now.1, window.last.1);
                    window.last = now;
                    window.rtime_ms = member.rtime_ms;
                    window.version = version.clone();
                }
            }
        }
    }

    fn figures(&self, rollout: &Rollout) -> Figures {
        let sum = |version: &str| {
            let (mut requests, mut errors, mut weighted, mut timed) = (0u64, 0u64, 0u64, 0u64);
            for window in self.servers.values().filter(|w| w.version == version) {
                requests += window.requests;
                errors += window.errors;
                if let (Some(rtime), true) = (window.rtime_ms, window.requests > 0) {
                    weighted += rtime * window.requests;
                    timed += window.requests;
                }
            }
            let rtime = (timed > 0).then(|| weighted / timed);
            VersionFigures::new(requests, errors.min(requests), rtime)
        };
        Figures {
            new: sum(&rollout.version),
            old: sum(&rollout.from),
        }
    }
}

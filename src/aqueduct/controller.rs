//! The apply pipeline: the only writer of the aqueduct's config. A change is queued, and one
//! worker applies everything pending as a batch: each change is applied to a candidate config,
//! rendered and checked with `haproxy -c` (a refused change is answered 400 and dropped, the
//! others go on), then the batch costs at most ONE reload, none when the text is unchanged.
//! Only once HAProxy runs the new config is the state file written and the live config
//! swapped; a failed reload or save leaves config, file and HAProxy at the old state.
//! Callers wait for their own change's outcome, so an answered PUT is live in HAProxy.

mod change;
mod membership;

pub use change::Change;

use super::apply_metrics::ApplyMetrics;
use super::bind_check;
use super::member_book::{MemberBook, NoMembers};
use super::rollout::transition::RolloutRefused;
use super::rows::ReadModel;
use super::state_file;
use crate::api_error::ApiError;
use crate::config::{BackendType, Config, Frontend};
use crate::haproxy::render::{RenderMembers, RenderSettings, render};
use crate::haproxy::{ConfigRejected, ConfigTarget, ReloadError, ReloadReport};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};

/// Where the controller keeps its state and how it renders.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// `<data-dir>/aqueduct.json`, see [`state_file::path_in`].
    pub state_file: PathBuf,
    pub render: RenderSettings,
}

/// Why a change did not become live. Config, state file and HAProxy are unchanged in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("frontend {0} not found")]
    FrontendNotFound(String),
    #[error("backend {0} not found")]
    BackendNotFound(String),
    /// `haproxy -c` refused the config with this change; its own lines are kept.
    #[error(transparent)]
    Rejected(ConfigRejected),
    /// The reload did not take (e.g. a bind on a port in use) and was rolled back.
    #[error("haproxy reload failed: {0}")]
    ReloadFailed(String),
    #[error("haproxy unavailable: {0}")]
    Unavailable(String),
    /// A new `bind` address that another process already listens on.
    #[error("frontend {frontend}: cannot bind {address}: address already in use")]
    BindInUse { frontend: String, address: String },
    /// A `bind` address another frontend of this config already binds: HAProxy would accept
    /// it (its listeners use SO_REUSEPORT) and the kernel would split connections between the
    /// two frontends at random.
    #[error(
        "frontend {frontend}: {address} is already bound by frontend {other} (HAProxy would split its connections between the two at random)"
    )]
    BindShared {
        frontend: String,
        other: String,
        address: String,
    },
    #[error("{0}")]
    Persist(String),
    /// A rollout command the backend's rollout state or settings refuse.
    #[error(transparent)]
    Rollout(RolloutRefused),
}

impl From<ReloadError> for ApplyError {
    fn from(err: ReloadError) -> Self {
        match err {
            ReloadError::Rejected(rejected) => ApplyError::Rejected(rejected),
            ReloadError::Failed(reason) => ApplyError::ReloadFailed(reason),
            ReloadError::Unavailable(reason) => ApplyError::Unavailable(reason),
        }
    }
}

impl From<ApplyError> for ApiError {
    fn from(err: ApplyError) -> Self {
        let message = err.to_string();
        match err {
            ApplyError::FrontendNotFound(_) | ApplyError::BackendNotFound(_) => {
                ApiError::not_found(message)
            }
            ApplyError::Rejected(_) | ApplyError::ReloadFailed(_) => ApiError::bad_request(message),
            ApplyError::BindInUse { .. } | ApplyError::BindShared { .. } => {
                ApiError::bad_field("bind", message)
            }
            ApplyError::Unavailable(_) => ApiError::unavailable(message),
            ApplyError::Persist(_) => ApiError::internal(message),
            ApplyError::Rollout(RolloutRefused {
                field: Some(field), ..
            }) => ApiError::bad_field(field, message),
            ApplyError::Rollout(RolloutRefused { field: None, .. }) => {
                ApiError::new(axum::http::StatusCode::CONFLICT, message)
            }
        }
    }
}

/// What the pipeline did, for the activity log.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyEvent {
    Reloaded {
        reason: String,
        duration_ms: u64,
    },
    ReloadFailed {
        reason: String,
        error: String,
    },
    /// A change is live (with or without a reload).
    Applied(Change),
    /// HAProxy (or the bind pre-flight) refused one change; it was not applied.
    Rejected {
        change: String,
        error: String,
    },
}

/// Handle to the apply pipeline; cheap to clone. The worker stops when every handle is gone.
#[derive(Clone)]
pub struct Controller {
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Pending>,
}

struct Shared {
    target: Arc<dyn ConfigTarget>,
    options: ControllerOptions,
    live: RwLock<Live>,
    /// Held while a batch is applied or members change, so a reload never misses a member.
    apply_lock: tokio::sync::Mutex<()>,
    pending: AtomicUsize,
    metrics: ApplyMetrics,
    config_tx: watch::Sender<Arc<Config>>,
    /// Bumped whenever dynamic members change (membership never touches `config_tx`).
    members_tx: watch::Sender<u64>,
    events: tokio::sync::broadcast::Sender<ApplyEvent>,
    /// The text of the last successful reload. `Live::text` also follows member changes made
    /// at runtime, so only this tells `reload_members` whether HAProxy's config is stale.
    loaded_text: std::sync::Mutex<String>,
    /// The last text `haproxy -c` accepted: a fleet node checks a change before it commits
    /// it and then applies the same text, which need not be checked twice.
    checked_text: std::sync::Mutex<String>,
}

/// What HAProxy runs now.
struct Live {
    config: Arc<Config>,
    /// The members of dynamic backends (see [`MemberBook`]).
    members: Box<dyn MemberBook>,
    /// The config text in effect; empty until the first successful reload.
    text: String,
    /// Members changed since `text` was rendered (membership is applied at runtime, so the
    /// text is only re-rendered when someone reads it: a reload, `GET /haproxy/config`).
    text_stale: bool,
}

struct Pending {
    change: Change,
    reply: oneshot::Sender<Result<(), ApplyError>>,
}

impl Controller {
    /// Starts the worker task (call inside a Tokio runtime) with the config loaded from the
    /// state file, without dynamic members (an API on its own). HAProxy is not touched until
    /// [`Controller::apply_startup`] or a change.
    pub fn start(
        target: Arc<dyn ConfigTarget>,
        options: ControllerOptions,
        config: Config,
    ) -> Self {
        Self::start_with_members(target, options, config, Box::new(NoMembers))
    }

    /// [`Controller::start`] with the member book membership keeps the dynamic members in.
    pub fn start_with_members(
        target: Arc<dyn ConfigTarget>,
        options: ControllerOptions,
        config: Config,
        members: Box<dyn MemberBook>,
    ) -> Self {
        let config = Arc::new(config);
        let (config_tx, _) = watch::channel(config.clone());
        let shared = Arc::new(Shared {
            target,
            options,
            live: RwLock::new(Live {
                config,
                members,
                text: String::new(),
                text_stale: false,
            }),
            apply_lock: tokio::sync::Mutex::new(()),
            pending: AtomicUsize::new(0),
            metrics: ApplyMetrics::default(),
            config_tx,
            members_tx: watch::channel(0).0,
            events: tokio::sync::broadcast::channel(256).0,
            loaded_text: std::sync::Mutex::new(String::new()),
            checked_text: std::sync::Mutex::new(String::new()),
        });
        let (queue, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run_worker(shared.clone(), receiver));
        Controller { shared, queue }
    }

    /// Loads the state file named in `options` (none yet = empty config; a corrupt one is an
    /// error and the caller must refuse to start) and starts the pipeline on it.
    pub fn start_from_state_file(
        target: Arc<dyn ConfigTarget>,
        options: ControllerOptions,
    ) -> Result<Self, state_file::StateFileError> {
        let config = state_file::load(&options.state_file)?.unwrap_or_default();
        Ok(Self::start(target, options, config))
    }

    /// Makes the current config live, reloading even if the text looks unchanged (HAProxy
    /// may run anything at startup). Call once HAProxy's supervisor is up.
    pub async fn apply_startup(&self) -> Result<ReloadReport, ApplyError> {
        let shared = &self.shared;
        let _guard = shared.apply_lock.lock().await;
        let text = {
            let live = shared.read_live();
            render(
                &live.config,
                &live.members.render_members(&live.config),
                &shared.options.render,
            )
        };
        let report = shared.reload(&text, "startup").await?;
        {
            let mut live = shared.write_live();
            live.text = text;
            live.text_stale = false;
        }
        shared
            .metrics
            .config_bytes
            .set(shared.read_live().text.len() as f64);
        Ok(report)
    }

    /// Queues a change and waits until it is live (or refused).
    pub async fn submit(&self, change: Change) -> Result<(), ApplyError> {
        let (reply, answer) = oneshot::channel();
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        self.shared.publish_pending();
        if self.queue.send(Pending { change, reply }).is_err() {
            self.shared.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(ApplyError::Unavailable(
                "the apply pipeline has stopped".to_owned(),
            ));
        }
        answer.await.unwrap_or_else(|_| {
            Err(ApplyError::Unavailable(
                "the apply pipeline has stopped".to_owned(),
            ))
        })
    }

    pub fn config(&self) -> Arc<Config> {
        self.shared.read_live().config.clone()
    }

    /// What the live config would be with `change`, checked as [`Controller::submit`] would
    /// check it (bind pre-flight, `haproxy -c`) but applied nowhere: a fleet node validates
    /// a change this way before it commits it to the shared store.
    pub async fn check(&self, change: &Change) -> Result<Config, ApplyError> {
        let live_text = self.shared.current_text();
        let (base, members) = {
            let live = self.shared.read_live();
            (live.config.clone(), live.members.snapshot())
        };
        let bound_now = bind_check::bound_addresses(&base, self.shared.wildcard_host());
        let step = Step {
            base: &base,
            members: members.as_ref(),
            bound_now: &bound_now,
        };
        self.shared
            .try_change(&step, &base, &live_text, change)
            .await
            .map(|(config, _)| config)
    }

    /// Notified with the new config after every applied change (the registry follower uses it
    /// to learn which `name@version` each dynamic backend wants).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.shared.config_tx.subscribe()
    }

    /// Reloads, failed reloads and rejected changes as they happen.
    pub fn apply_events(&self) -> tokio::sync::broadcast::Receiver<ApplyEvent> {
        self.shared.events.subscribe()
    }

    /// The API's rows of the config and members as they are now (see [`ReadModel`]), taken in
    /// a moment: rows with thousands of members are built after the lock is released, so the
    /// membership manager and the fast lane never wait for a UI or API read.
    pub fn read_model(&self) -> ReadModel {
        let live = self.shared.read_live();
        ReadModel::new(live.config.clone(), live.members.snapshot())
    }

    /// `GET /haproxy/config`: the text HAProxy runs; empty before the first reload.
    pub fn haproxy_config(&self) -> String {
        self.shared.current_text()
    }

    /// Changes queued and not yet taken into a batch.
    pub fn pending_changes(&self) -> usize {
        self.shared.pending.load(Ordering::SeqCst)
    }

    pub fn metrics(&self) -> &ApplyMetrics {
        &self.shared.metrics
    }
}

/// What every change of one batch is checked against: the live config, its members, and the
/// addresses it already binds (HAProxy holds those itself).
struct Step<'a> {
    base: &'a Config,
    members: &'a dyn MemberBook,
    bound_now: &'a std::collections::BTreeSet<std::net::SocketAddr>,
}

/// The config without any member: what only a reload can change.
fn structure_text(config: &Config, settings: &RenderSettings) -> String {
    let mut bare = config.clone();
    for backend in bare.backends.values_mut() {
        backend.static_members.clear();
    }
    render(&bare, &RenderMembers::new(), settings)
}

async fn run_worker(shared: Arc<Shared>, mut receiver: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = receiver.recv().await {
        let _guard = shared.apply_lock.lock().await;
        // Everything that arrived meanwhile joins this batch: one reload for all of it.
        let mut batch = vec![first];
        while let Ok(next) = receiver.try_recv() {
            batch.push(next);
        }
        shared.pending.fetch_sub(batch.len(), Ordering::SeqCst);
        shared.publish_pending();
        shared.apply_batch(batch).await;
    }
}

impl Shared {
    fn read_live(&self) -> std::sync::RwLockReadGuard<'_, Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_live(&self) -> std::sync::RwLockWriteGuard<'_, Live> {
        self.live.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The live text, re-rendered first if members changed since it was rendered.
    fn current_text(&self) -> String {
        {
            let live = self.read_live();
            if !live.text_stale || live.text.is_empty() {
                return live.text.clone();
            }
        }
        let mut live = self.write_live();
        if live.text_stale && !live.text.is_empty() {
            let members = live.members.render_members(&live.config);
            live.text = render(&live.config, &members, &self.options.render);
            self.metrics.config_bytes.set(live.text.len() as f64);
        }
        live.text_stale = false;
        live.text.clone()
    }

    fn publish_pending(&self) {
        self.metrics
            .pending
            .set(self.pending.load(Ordering::SeqCst) as f64);
    }

    async fn apply_batch(&self, batch: Vec<Pending>) {
        let live_text = self.current_text();
        let (base, members) = {
            let live = self.read_live();
            (live.config.clone(), live.members.snapshot())
        };
        let mut candidate = (*base).clone();
        let mut candidate_text = live_text.clone();
        let bound_now = bind_check::bound_addresses(&base, self.wildcard_host());
        let step = Step {
            base: &base,
            members: members.as_ref(),
            bound_now: &bound_now,
        };
        let mut accepted = Vec::new();
        let mut reasons = Vec::new();
        for pending in batch {
            match self
                .try_change(&step, &candidate, &candidate_text, &pending.change)
                .await
            {
                Ok((next, text)) => {
                    candidate = next;
                    candidate_text = text;
                    reasons.push(pending.change.describe());
                    accepted.push(pending);
                }
                Err(err) => {
                    if matches!(
                        err,
                        ApplyError::Rejected(_)
                            | ApplyError::BindInUse { .. }
                            | ApplyError::BindShared { .. }
                    ) {
                        tracing::warn!(change = %pending.change.describe(), error = %err,
                            "a change was refused; it is dropped");
                        self.metrics.changes.inc(&["rejected"]);
                        let error = match &err {
                            ApplyError::Rejected(rejected) => rejected.lines.join("\n"),
                            other => other.to_string(),
                        };
                        let _ = self.events.send(ApplyEvent::Rejected {
                            change: pending.change.describe(),
                            error,
                        });
                    }
                    let _ = pending.reply.send(Err(err));
                }
            }
        }
        if accepted.is_empty() {
            return;
        }
        let outcome = self
            .commit(
                candidate,
                candidate_text,
                &base,
                &live_text,
                &reasons.join(", "),
            )
            .await;
        let label = if outcome.is_ok() { "applied" } else { "failed" };
        if outcome.is_ok() {
            for pending in &accepted {
                let _ = self
                    .events
                    .send(ApplyEvent::Applied(pending.change.clone()));
            }
        }
        self.metrics.changes.add(&[label], accepted.len() as u64);
        for pending in accepted {
            let _ = pending.reply.send(outcome.clone());
        }
    }

    fn wildcard_host(&self) -> Option<std::net::IpAddr> {
        self.options.render.wildcard_bind_host
    }

    /// `change` on top of `candidate` (whose text is `candidate_text`): the next candidate and
    /// its text, or why the change cannot be applied. New binds another process holds are
    /// refused before `haproxy -c` runs.
    async fn try_change(
        &self,
        step: &Step<'_>,
        candidate: &Config,
        candidate_text: &str,
        change: &Change,
    ) -> Result<(Config, String), ApplyError> {
        if let Change::PutFrontend(frontend) = change
            && let Some(shared) = bind_check::shared_with(frontend, candidate, self.wildcard_host())
        {
            return Err(ApplyError::BindShared {
                frontend: frontend.key.clone(),
                other: shared.other,
                address: shared.address.to_string(),
            });
        }
        let mut next = candidate.clone();
        change.apply_to(&mut next)?;
        let new_frontends: Vec<&Frontend> = match change {
            Change::PutFrontend(frontend) => vec![frontend],
            Change::Adopt { config, .. } => config.frontends.values().collect(),
            _ => Vec::new(),
        };
        for frontend in new_frontends {
            if let Some(address) =
                bind_check::first_in_use(&frontend.bind, self.wildcard_host(), step.bound_now)
            {
                return Err(ApplyError::BindInUse {
                    frontend: frontend.key.clone(),
                    address: address.to_string(),
                });
            }
        }
        let text = render(
            &next,
            &render_members_replacing(step.members, &next, step.base),
            &self.options.render,
        );
        let checked = || self.checked_text.lock().unwrap_or_else(|p| p.into_inner());
        // A rollout command changes member weights, which only server lines carry (each a
        // validated address and a weight of 0-256): there is nothing in it for `haproxy -c`
        // to refuse, and skipping the check takes about 40 ms off every step.
        let weights_only = matches!(change, Change::Rollout { .. })
            && structure_text(&next, &self.options.render)
                == structure_text(candidate, &self.options.render);
        if text != candidate_text && *checked() != text && !weights_only {
            self.target
                .check(&text)
                .await
                .map_err(ApplyError::Rejected)?;
            *checked() = text.clone();
        }
        Ok((next, text))
    }

    /// Reload (if the text changed), then save (if the model changed), then swap.
    async fn commit(
        &self,
        candidate: Config,
        text: String,
        base: &Config,
        live_text: &str,
        reason: &str,
    ) -> Result<(), ApplyError> {
        // Membership is applied at runtime (`membership::manager`): a change that only touches
        // static members updates the text but never reloads.
        let reloaded = live_text.is_empty()
            || (text != live_text
                && structure_text(&candidate, &self.options.render)
                    != structure_text(base, &self.options.render));
        if reloaded {
            self.reload(&text, reason).await?;
        }
        if candidate != *base
            && let Err(err) = state_file::save(&self.options.state_file, &candidate)
        {
            tracing::error!(error = %err, changes = %reason,
                    "state file not saved; rolling the change back");
            if reloaded
                && !live_text.is_empty()
                && let Err(rollback) = self
                    .reload(live_text, "rollback: state file not saved")
                    .await
            {
                tracing::error!(error = %rollback, "rollback reload failed");
            }
            return Err(ApplyError::Persist(err.to_string()));
        }
        let candidate = Arc::new(candidate);
        {
            let mut live = self.write_live();
            let gone: Vec<String> = members_of_deleted_backends(live.members.as_ref(), &candidate);
            for key in gone {
                live.members.remove_backend(&key);
            }
            live.config = candidate.clone();
            live.text = text;
            live.text_stale = false;
            self.metrics.config_bytes.set(live.text.len() as f64);
        }
        self.config_tx.send_replace(candidate);
        Ok(())
    }

    async fn reload(&self, text: &str, reason: &str) -> Result<ReloadReport, ApplyError> {
        let started = Instant::now();
        match self.target.reload(text, reason).await {
            Ok(report) => {
                *self.loaded_text.lock().unwrap_or_else(|p| p.into_inner()) = text.to_owned();
                self.metrics.reloads.inc(&["ok"]);
                self.metrics
                    .reload_seconds
                    .observe(started.elapsed().as_secs_f64());
                tracing::info!(changes = %reason, duration_ms = started.elapsed().as_millis() as u64,
                    bytes = text.len(), worker_pid = ?report.worker_pid, "haproxy reloaded");
                let _ = self.events.send(ApplyEvent::Reloaded {
                    reason: reason.to_owned(),
                    duration_ms: started.elapsed().as_millis() as u64,
                });
                Ok(report)
            }
            Err(err) => {
                let outcome = match &err {
                    ReloadError::Rejected(_) => "rejected",
                    ReloadError::Failed(_) => "failed",
                    ReloadError::Unavailable(_) => "unavailable",
                };
                self.metrics.reloads.inc(&[outcome]);
                tracing::error!(changes = %reason, error = %err, "haproxy reload did not take");
                let _ = self.events.send(ApplyEvent::ReloadFailed {
                    reason: reason.to_owned(),
                    error: err.to_string(),
                });
                Err(err.into())
            }
        }
    }
}

/// What to render for `config` when it replaces `base`: the members as the store gives them,
/// and every static member `base` did not have marked joining. HAProxy starts a config-file
/// server in service before any check, so a static member a reload brings in (or the first
/// start) is rendered `disabled`; the membership manager then adds it at runtime, health-gated.
fn render_members_replacing(
    members: &dyn MemberBook,
    config: &Config,
    base: &Config,
) -> RenderMembers {
    let mut render = members.render_members(config);
    for backend in config.backends.values() {
        let before = base.backends.get(&backend.key);
        for member in &backend.static_members {
            let known = before.is_some_and(|b| {
                b.kind == BackendType::Static
                    && b.static_members
                        .iter()
                        .any(|m| (m.host, m.port) == (member.host, member.port))
            });
            if !known {
                render.mark_joining(crate::haproxy::render::server_name(
                    &backend.key,
                    member.host,
                    member.port,
                ));
            }
        }
    }
    render
}

fn members_of_deleted_backends(members: &dyn MemberBook, config: &Config) -> Vec<String> {
    members
        .backend_keys()
        .into_iter()
        .filter(|key| !config.backends.contains_key(key))
        .collect()
}

//! `thalassa aqueduct`: wires the pieces together. It starts HAProxy under the supervisor,
//! the apply pipeline on the persisted config, the membership manager following the registry,
//! the UI hub, and one HTTP listener serving the API and the UI.

use crate::BoxError;
use crate::aqueduct::controller::{ApplyEvent, Change, Controller, ControllerOptions};
use crate::aqueduct::fleet::{Fleet, NodeFacts, NodeIdentity, StoreStart};
use crate::aqueduct::rollout::engine::{RolloutEngine, RolloutLive};
use crate::aqueduct::{routes, state_file};
use crate::cli::{AqueductArgs, AqueductCommon};
use crate::haproxy::ConfigTarget;
use crate::haproxy::render::{RenderMembers, RenderSettings, render};
use crate::haproxy::supervisor::{Supervisor, SupervisorSettings};
use crate::membership::expiry_brake::BrakeSettings;
use crate::membership::manager::{
    self, ManagerParts, ManagerSettings, MembershipMetrics, MembershipMode,
};
use crate::membership::members;
use crate::metrics::MetricsRegistry;
use crate::registry::feed::FeedItem;
use crate::registry::follow::FollowerStatus;
use crate::registry::nodes::RegistryNodes;
use crate::registry::redis_store::StoreUrl;
use crate::status::{Activity, StatusBoard};
use crate::ui::{Hub, NodeLabel};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a fleet node waits for its store at startup before it starts on its local copy.
const FLEET_STARTUP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What `start` needs beyond the CLI flags: where registry events come from (over HTTP, or
/// in-process under `thalassa up`) and the registry's nodes for the UI's registry page and the
/// aqueduct's own registration.
pub struct AqueductStart {
    pub listen: SocketAddr,
    pub common: AqueductCommon,
    pub feed: mpsc::Receiver<FeedItem>,
    /// Which registry node the feed follows, when it follows one over HTTP (for `/metrics`).
    pub feed_status: Option<FollowerStatus>,
    pub registry: RegistryNodes,
    /// Bearer token for the registry (the UI's registry page, the self-announcement).
    pub registry_token: Option<String>,
    /// Join a fleet on this store (`--store`); alone without.
    pub fleet: Option<FleetJoin>,
}

/// How this aqueduct joins a fleet.
pub struct FleetJoin {
    pub store: StoreUrl,
    /// `--node-id`; the host name without.
    pub node_id: Option<String>,
}

/// A running aqueduct; `shutdown` stops the listener, and HAProxy with `--stop-haproxy`.
pub struct RunningAqueduct {
    local_addr: SocketAddr,
    supervisor: Arc<Supervisor>,
    /// `--stop-haproxy`: stop HAProxy on shutdown instead of leaving it serving.
    stop_haproxy: bool,
    hub: Hub,
    stop_http: Option<oneshot::Sender<()>>,
    http_task: tokio::task::JoinHandle<()>,
    /// Stops the self-registration heartbeat (which then deregisters).
    announce: tokio_util::sync::CancellationToken,
    announce_task: Option<tokio::task::JoinHandle<()>>,
    background_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The thread those tasks run on; dropped (stopped) after them.
    _background: crate::background::Background,
    /// Stops the fleet's follower and reporter (which then removes this node's report).
    fleet_closing: tokio_util::sync::CancellationToken,
}

impl RunningAqueduct {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub async fn shutdown(mut self) {
        self.announce.cancel();
        if let Some(task) = self.announce_task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), task).await;
        }
        self.fleet_closing.cancel();
        self.hub.close();
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.http_task).await;
        for task in &self.background_tasks {
            task.abort();
        }
        for task in self.background_tasks.drain(..) {
            let _ = task.await;
        }
        if self.stop_haproxy {
            self.supervisor.shutdown().await;
        } else {
            self.supervisor.leave_serving().await;
        }
        tracing::info!("aqueduct stopped");
    }
}

pub async fn run(args: AqueductArgs) -> Result<(), BoxError> {
    if let Some(file) = &args.import_original {
        crate::app::import_original::import_at_startup(file, &args.common).await?;
    }
    let feed =
        crate::registry::follow::over_http(args.registry.clone(), args.registry_token.clone());
    let running = start(AqueductStart {
        listen: args.listen,
        common: args.common,
        feed: feed.items,
        feed_status: Some(feed.status),
        registry: args.registry,
        registry_token: args.registry_token,
        fleet: args.store.map(|store| FleetJoin {
            store,
            node_id: args.node_id,
        }),
    })
    .await?;
    crate::shutdown_signal::stop_requested().await;
    running.shutdown().await;
    Ok(())
}

pub async fn start(start: AqueductStart) -> Result<RunningAqueduct, BoxError> {
    let AqueductStart {
        listen,
        common,
        feed,
        feed_status,
        registry,
        registry_token,
        fleet,
    } = start;
    // Checked before anything starts, so a bad token file fails fast.
    let policy = common.auth.policy()?;
    let stop_haproxy = common.stop_haproxy;
    let data_dir = common.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|err| format!("cannot create data dir {}: {err}", data_dir.display()))?;
    // A corrupt state file stops the start here: it is never silently replaced.
    let state_path = state_file::path_in(&data_dir);
    let mut config = state_file::load(&state_path)?.unwrap_or_default();
    // A fleet node starts HAProxy with the fleet's current config when the store answers,
    // so a (re)start reloads once at most; else with its local copy.
    let fleet_closing = tokio_util::sync::CancellationToken::new();
    let mut fleet_start = None;
    if let Some(join) = fleet {
        let store = StoreStart::connect(join.store.clone(), &fleet_closing);
        let running = match store.current_config(FLEET_STARTUP_WAIT).await {
            Some((version, current)) => {
                tracing::info!(store = %join.store, version, "starting with the fleet's current configuration");
                config = current;
                version
            }
            None => {
                tracing::warn!(store = %join.store, local_copy = %state_path.display(),
                    "the fleet's store is out of reach (or holds no config yet): starting with \
                     the local copy of the configuration; changes are refused (503) until the \
                     store answers");
                0
            }
        };
        fleet_start = Some((join, store, running));
    }
    let hub = Hub::open(&data_dir)?;

    let mut supervisor_settings =
        SupervisorSettings::new(common.haproxy_bin.clone(), data_dir.join("haproxy"));
    supervisor_settings.external = common.haproxy_external;
    let mut render_settings = RenderSettings::new(
        supervisor_settings.admin_socket_path(),
        supervisor_settings.server_state_path(),
    );
    if !common.haproxy_stats_bind.is_empty() {
        render_settings.stats_bind = Some(common.haproxy_stats_bind.clone());
    }
    render_settings.wildcard_bind_host = common.bind_address;
    // After a kill -9 of an earlier aqueduct its HAProxy still serves: the new one starts with
    // the members it has (and takes over its sockets), so nothing is lost before the
    // registry's snapshot arrives.
    let inherited = members::inherited_from(
        &config,
        &crate::haproxy::supervisor::leftover_servers(&supervisor_settings).await,
    );
    if !inherited.is_empty() {
        tracing::info!(
            members = inherited.iter().map(|(_, r)| r.len()).sum::<usize>(),
            "taking over the members of the haproxy an earlier run left serving"
        );
    }
    // The controller keeps this book from the start: HAProxy starts with these members, and so
    // does every config rendered after.
    let mut initial_members = members::DynamicMembers::default();
    for (key, registrations) in inherited {
        initial_members.set(&key, registrations);
    }
    let supervisor = Arc::new(
        start_haproxy(
            supervisor_settings,
            &config,
            &initial_members.render_members(&config),
            &render_settings,
            &hub,
        )
        .await?,
    );

    let controller = Controller::start_with_members(
        supervisor.clone() as Arc<dyn ConfigTarget>,
        ControllerOptions {
            state_file: state_path,
            render: render_settings,
        },
        config,
        Box::new(initial_members),
    );
    {
        // A dead HAProxy restarts with every current member, so it serves at once.
        let controller = controller.clone();
        supervisor.set_restart_config(Arc::new(move || controller.haproxy_config()));
    }
    let started = controller.apply_startup().await;
    if started.is_ok()
        && fleet_start
            .as_ref()
            .is_some_and(|(_, _, running)| *running > 0)
    {
        // The fleet's config runs now: it is the local copy to start from next time.
        if let Err(err) = state_file::save(&state_file::path_in(&data_dir), &controller.config()) {
            tracing::warn!(error = %err, "the fleet's configuration runs but was not saved locally");
        }
    }
    if let Err(err) = started {
        // HAProxy keeps serving what it started with; the next change retries the full config.
        tracing::error!(error = %err, "the saved configuration could not be applied at startup");
        hub.activity(Activity::now(
            "reload-failed",
            "haproxy",
            json!({"reason": "startup", "error": err.to_string()}),
        ));
    }

    let background = crate::background::Background::start()?;
    let board = StatusBoard::new();
    let membership_metrics = Arc::new(MembershipMetrics::default());
    let metrics = MetricsRegistry::new();
    {
        let pipeline = controller.clone();
        metrics.add(Arc::new(move |text| pipeline.metrics().render(text)));
        let supervisor = supervisor.clone();
        metrics.add(Arc::new(move |text| supervisor.metrics().render(text)));
        let membership_metrics = membership_metrics.clone();
        metrics.add(Arc::new(move |text| membership_metrics.render(text)));
        if let Some(feed_status) = feed_status {
            metrics.add(Arc::new(move |text| feed_status.render(text)));
        }
    }
    let mut background_tasks = vec![
        manager::spawn(ManagerParts {
            controller: Arc::new(controller.clone()),
            runtime: supervisor.runtime(),
            feed,
            restarts: supervisor.restarts(),
            reloads: supervisor.reloads(),
            board: board.clone(),
            sink: Some(Arc::new(hub.clone())),
            metrics: membership_metrics,
            settings: ManagerSettings {
                drain_timeout: common.drain_timeout,
                mode: if common.membership == "reload" {
                    MembershipMode::Reload {
                        debounce: common.reload_debounce,
                    }
                } else {
                    MembershipMode::Runtime
                },
                brake: BrakeSettings {
                    threshold: common.expiry_brake_threshold,
                    window: common.expiry_brake_window,
                    min_members: common.expiry_brake_min_members,
                },
                max_members: common.max_members,
            },
            background: background.handle(),
        }),
        background.spawn(forward_config(controller.clone(), hub.clone())),
        tokio::spawn(forward_apply_events(controller.clone(), hub.clone())),
    ];

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|err| format!("cannot listen on {listen}: {err}"))?;
    let local_addr = listener.local_addr()?;
    let address = format!("http://{}", advertised_address(local_addr));
    // The pages name this aqueduct: its node id in a fleet (`--node-id`, else the host
    // name), its host name alone.
    let node_label = NodeLabel {
        id: fleet_start
            .as_ref()
            .and_then(|(join, _, _)| join.node_id.clone())
            .unwrap_or_else(host_name),
        address: address.clone(),
        fleet: fleet_start.is_some(),
    };
    let fleet = match fleet_start {
        Some((join, store, running)) => {
            let node = NodeIdentity {
                id: node_label.id.clone(),
                address,
            };
            tracing::info!(node = %node.id, store = %join.store, "joined the fleet");
            let facts = node_facts(&supervisor, &board).await;
            Some(Fleet::start(
                store,
                node,
                controller.clone(),
                facts,
                running,
                fleet_closing.clone(),
            ))
        }
        None => None,
    };
    let rollouts = RolloutLive::new();
    {
        let (live, controller) = (rollouts.clone(), controller.clone());
        metrics.add(Arc::new(move |text| {
            live.render(&controller.config(), text)
        }));
    }
    background_tasks.push(
        RolloutEngine {
            controller: controller.clone(),
            board: board.clone(),
            submit: super::rollout::submitter(&controller, fleet.as_ref()),
            live: rollouts.clone(),
        }
        .spawn(),
    );
    let app = routes::router_with_metrics(
        controller.clone(),
        Some(board),
        common.max_members,
        metrics,
        fleet,
        rollouts,
    )
    .merge(crate::ui::router_for_node(
        hub.clone(),
        registry.clone(),
        registry_token.as_deref(),
        node_label,
    ));
    crate::auth::warn_if_exposed("aqueduct", local_addr, &policy);
    let app = crate::auth::guard(app, policy);
    let (stop_http, stopped) = oneshot::channel::<()>();
    let http_task = tokio::spawn(crate::http_server::serve(
        listener,
        app,
        common.http.serve_limits(),
        async {
            let _ = stopped.await;
        },
    ));
    let announce = tokio_util::sync::CancellationToken::new();
    let announce_task = announce_self(
        &registry,
        registry_token.as_deref(),
        local_addr,
        common.label.as_deref(),
        announce.clone(),
    );
    hub.activity(Activity::now(
        "started",
        "aqueduct",
        json!({"listen": local_addr.to_string()}),
    ));
    tracing::info!(%local_addr, "aqueduct listening");
    Ok(RunningAqueduct {
        local_addr,
        supervisor,
        stop_haproxy,
        hub,
        stop_http: Some(stop_http),
        http_task,
        announce,
        announce_task,
        background_tasks,
        _background: background,
        fleet_closing,
    })
}

/// This machine's host name (the fleet's default node id), `aqueduct` when it has none.
fn host_name() -> String {
    machine_name()
        .and_then(|name| crate::cli::parse_node_id(&name).ok())
        .unwrap_or_else(|| "aqueduct".to_owned())
}

/// The address operators reach this API on: the listener's, or the first non-loopback IPv4
/// address when it listens on every address.
fn advertised_address(local_addr: SocketAddr) -> SocketAddr {
    if local_addr.ip().is_unspecified() {
        let ip = crate::registry::local_ip::first_non_loopback_ipv4().map_or(
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            std::net::IpAddr::V4,
        );
        SocketAddr::new(ip, local_addr.port())
    } else {
        local_addr
    }
}

/// What this node reports to the fleet besides its config version: HAProxy's version (asked
/// until HAProxy answers once: a node that starts while HAProxy is still coming up must not
/// report "unknown" forever) and its members' health from the latest stats sample.
async fn node_facts(supervisor: &Supervisor, board: &StatusBoard) -> NodeFacts {
    let haproxy_version = Arc::new(std::sync::OnceLock::<String>::new());
    let runtime = supervisor.runtime();
    let learned = haproxy_version.clone();
    tokio::spawn(async move {
        loop {
            let info = runtime.show_info().await.ok();
            if let Some(version) = info.as_ref().and_then(|info| info.version()) {
                let _ = learned.set(version.to_owned());
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let board = board.clone();
    Arc::new(move || {
        let sample = board.latest();
        let total: usize = sample.members.values().map(Vec::len).sum();
        let up = sample
            .members
            .values()
            .flatten()
            .filter(|member| member.status.starts_with("UP"))
            .count();
        json!({
            "haproxyVersion": haproxy_version.get(),
            "members": {"total": total, "up": up},
        })
    })
}

/// Registers this aqueduct as `thalassa-aqueduct@<version>` at its API address (heartbeat every
/// 20 s, 60 s lease), as the original did, so operators can find every aqueduct in the registry.
fn announce_self(
    registry: &RegistryNodes,
    registry_token: Option<&str>,
    local_addr: SocketAddr,
    label: Option<&str>,
    stop: tokio_util::sync::CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let host = if local_addr.ip().is_unspecified() {
        crate::registry::local_ip::first_non_loopback_ipv4()
            .map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string())
    } else {
        local_addr.ip().to_string()
    };
    let key = crate::registry::model::RegistrationKey::parse(
        "thalassa-aqueduct",
        env!("CARGO_PKG_VERSION"),
        &host,
        &local_addr.port().to_string(),
    )
    .ok()?;
    let meta = self_meta(
        machine_name().as_deref(),
        label,
        crate::registry::clock::now_ms(),
    );
    match crate::registry::register::spawn_heartbeat(
        registry,
        registry_token,
        &key,
        meta,
        std::time::Duration::from_secs(20),
        stop,
    ) {
        Ok(task) => Some(task),
        Err(err) => {
            tracing::warn!(error = %err, "cannot announce this aqueduct in the registry");
            None
        }
    }
}

/// This aqueduct's registration meta, in the original's order: `hostname` (the machine's name;
/// the registry falls back to the host when there is none), `label` (`--label`),
/// `secondsToExpire`, `pid`, `registered` (when this process first registered, epoch ms).
fn self_meta(
    hostname: Option<&str>,
    label: Option<&str>,
    registered_ms: u64,
) -> serde_json::Map<String, serde_json::Value> {
    let mut meta = serde_json::Map::new();
    if let Some(hostname) = hostname {
        meta.insert("hostname".into(), json!(hostname));
    }
    if let Some(label) = label {
        meta.insert("label".into(), json!(label));
    }
    meta.insert("secondsToExpire".into(), json!(60));
    meta.insert("pid".into(), json!(std::process::id()));
    meta.insert("registered".into(), json!(registered_ms));
    meta
}

/// The machine's name as the kernel has it (what the original's `os.hostname()` returned).
fn machine_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Starts HAProxy on the persisted config; if HAProxy refuses it (say a port is now taken),
/// starts on an empty config so the API stays up to fix it, and records why.
async fn start_haproxy(
    settings: SupervisorSettings,
    config: &crate::config::Config,
    members: &RenderMembers,
    render_settings: &RenderSettings,
    hub: &Hub,
) -> Result<Supervisor, BoxError> {
    let text = render(config, members, render_settings);
    match Supervisor::start(settings.clone(), &text).await {
        Ok(supervisor) => Ok(supervisor),
        Err(err) if !config.frontends.is_empty() || !config.backends.is_empty() => {
            tracing::error!(error = %err, "haproxy refused the saved configuration; starting empty");
            hub.activity(Activity::now(
                "reload-failed",
                "haproxy",
                json!({"reason": "startup", "error": err.to_string()}),
            ));
            let empty = render(&Default::default(), &RenderMembers::new(), render_settings);
            Ok(Supervisor::start(settings, &empty).await?)
        }
        Err(err) => Err(format!("cannot start haproxy: {err}").into()),
    }
}

/// Every applied config goes to the UI, with a config-changed activity carrying the diff of
/// haproxy.cfg.
/// Dynamic member changes reach the UI at most this often: under churn each publication is
/// every backend with all its members, and a page does not need more than a few per second.
const MEMBER_PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

async fn forward_config(controller: Controller, hub: Hub) {
    let mut changes = controller.subscribe();
    let mut members = controller.subscribe_members();
    let mut previous_text = controller.haproxy_config();
    publish_config(&controller, &hub);
    let mut members_pending = false;
    let mut next_members_publish = tokio::time::Instant::now();
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                publish_config(&controller, &hub);
                let text = controller.haproxy_config();
                let diff = crate::ui::diff::unified(&previous_text, &text);
                if !diff.is_empty() {
                    hub.activity(Activity::now(
                        "config-changed",
                        "haproxy.cfg",
                        json!({"diff": diff}),
                    ));
                }
                previous_text = text;
            }
            changed = members.changed(), if !members_pending => {
                if changed.is_err() {
                    return;
                }
                members.borrow_and_update();
                members_pending = true;
            }
            _ = tokio::time::sleep_until(next_members_publish), if members_pending => {
                members_pending = false;
                next_members_publish = tokio::time::Instant::now() + MEMBER_PUBLISH_EVERY;
                publish_config(&controller, &hub);
            }
        }
    }
}

fn publish_config(controller: &Controller, hub: &Hub) {
    let rows = controller.read_model();
    hub.config(json!({
        "frontends": rows.frontends(),
        "backends": rows.backends(),
    }));
}

async fn forward_apply_events(controller: Controller, hub: Hub) {
    let mut events = controller.apply_events();
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let activity = match event {
            ApplyEvent::Reloaded {
                reason,
                duration_ms,
            } => Activity::now(
                "reloaded",
                "haproxy",
                json!({"reason": reason, "duration_ms": duration_ms, "outcome": "ok"}),
            ),
            ApplyEvent::ReloadFailed { reason, error } => Activity::now(
                "reload-failed",
                "haproxy",
                json!({"reason": reason, "error": error, "outcome": "failed"}),
            ),
            ApplyEvent::Rejected { change, error } => {
                Activity::now("rejected", change, json!({"error": error}))
            }
            ApplyEvent::Applied(Change::SwitchVersion { key, switch }) => Activity::now(
                "version-switched",
                format!("backend/{key}"),
                json!({"name": switch.name, "version": switch.version}),
            ),
            ApplyEvent::Applied(Change::Rollout { key, command, .. }) => {
                super::rollout::activity(&controller, &key, command.verb())
            }
            ApplyEvent::Applied(Change::Adopt {
                version,
                origin,
                reason,
                ..
            }) => Activity::now(
                "fleet-applied",
                "config",
                json!({"version": version, "node": origin, "change": reason}),
            ),
            ApplyEvent::Applied(_) => continue,
        };
        hub.activity(activity);
    }
}

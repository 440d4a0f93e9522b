//! How a manager is started: its settings, the parts the application hands it, and the
//! tasks around it (the fast lane, the health listener, the stats poller).

use super::Manager;
use crate::haproxy::runtime::RuntimeClient;
use crate::membership::control_plane::ControlPlane;
use crate::membership::expiry_brake::{BrakeSettings, ExpiryBrake};
use crate::membership::fast_lane::{FastLane, LaneDrains};
use crate::membership::health_events::HealthListener;
use crate::membership::member_sync::MemberSync;
use crate::membership::metrics::MembershipMetrics;
use crate::membership::plan::Tracker;
use crate::membership::refusals::Refusals;
use crate::membership::resolver::Resolver;
use crate::membership::stats_poller::StatsPoller;
use crate::registry::feed::FeedItem;
use crate::status::{StatusBoard, StatusSink};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone)]
pub struct ManagerSettings {
    /// Longest a leaving member keeps its connections before it is removed anyway.
    pub drain_timeout: Duration,
    pub mode: MembershipMode,
    /// When most of a backend's members expiring at once are held instead of removed.
    pub brake: BrakeSettings,
    /// Most members one dynamic backend takes from the registry (`--max-members`); the
    /// registrations beyond it are left out, with a warning, an activity and a metric.
    pub max_members: usize,
}

/// How membership changes reach HAProxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipMode {
    /// Through the runtime API, health-gated, never reloading (the default).
    Runtime,
    /// Re-render and reload on every change, after `debounce` of quiet, as the original did.
    /// A baseline for the churn benchmark, not for production.
    Reload { debounce: Duration },
}

/// Everything the manager needs; see [`spawn`].
pub struct ManagerParts {
    pub controller: Arc<dyn ControlPlane>,
    pub runtime: RuntimeClient,
    pub feed: mpsc::Receiver<FeedItem>,
    pub restarts: watch::Receiver<u64>,
    pub reloads: watch::Receiver<u64>,
    pub board: StatusBoard,
    /// Where activities and samples are reported (the UI's hub in the application).
    pub sink: Option<Arc<dyn StatusSink>>,
    pub metrics: Arc<MembershipMetrics>,
    pub settings: ManagerSettings,
    /// Where the manager and its stats poll run (see [`crate::background`]); the fast lane
    /// stays on the calling runtime, next to the registry it follows.
    pub background: tokio::runtime::Handle,
}

pub fn spawn(parts: ManagerParts) -> tokio::task::JoinHandle<()> {
    let sync = MemberSync::new(
        ExpiryBrake::new(parts.settings.brake.clone()),
        parts.settings.max_members,
    );
    let brake_board = parts.board.brake().clone();
    // One connection for the manager and its stats poll, opened on the background runtime.
    let background_runtime = parts.runtime.separate();
    let status_board = parts.board.clone();
    let stats = StatsPoller {
        runtime: background_runtime.clone(),
        board: parts.board,
        sink: parts.sink.clone(),
        metrics: parts.metrics.clone(),
    }
    .spawn(&parts.background);
    // Runtime mode only: the reload baseline must not get joins for free.
    let lane_drains = LaneDrains::default();
    let feed = match parts.settings.mode {
        MembershipMode::Runtime => FastLane {
            runtime: parts.runtime.separate(),
            drains: lane_drains.clone(),
            controller: parts.controller.clone(),
            metrics: parts.metrics.clone(),
            max_members: parts.settings.max_members,
        }
        .spawn(parts.feed),
        MembershipMode::Reload { .. } => parts.feed,
    };
    // Runtime mode only, like the lane: the reload baseline has no runtime joins to ready.
    let health = match parts.settings.mode {
        MembershipMode::Runtime => Some(
            HealthListener {
                runtime: parts.runtime.separate(),
                reloads: parts.reloads.clone(),
                restarts: parts.restarts.clone(),
                metrics: parts.metrics.clone(),
            }
            .spawn(),
        ),
        MembershipMode::Reload { .. } => None,
    };
    let manager = Manager {
        health,
        lane_drains,
        feed_applied: 0,
        config_rx: parts.controller.subscribe(),
        controller: parts.controller,
        runtime: background_runtime,
        feed: Some(feed),
        restarts: parts.restarts,
        reloads: parts.reloads,
        stats,
        sink: parts.sink,
        metrics: parts.metrics,
        settings: parts.settings,
        sync,
        dirty_backends: BTreeSet::new(),
        lane_handled_backends: BTreeSet::new(),
        next_full_round: Instant::now(),
        next_transition_round: Instant::now(),
        published_phases: None,
        tracker: Tracker::default(),
        brake_board,
        next_stats: Instant::now(),
        reload_due: None,
        refusals: Refusals::default(),
        resolver: Resolver::default(),
        status_board,
    };
    parts.background.spawn(manager.run())
}

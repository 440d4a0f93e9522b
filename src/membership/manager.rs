//! The membership manager: follows the registry feed and the config, and keeps HAProxy's
//! servers equal to the desired members through the runtime API. One task; every round it
//! observes HAProxy (`show servers state`), plans (`plan::Tracker`) and applies the plan in one
//! batch. A round costs what changed: a feed item observes only the backends whose members it
//! changed; backends with members joining or leaving are observed every 25 ms; every backend
//! once a second (the periodic reconcile) and after a config change, a reload or a restart.
//! Stats (`show stat`) are read beside it by `stats_poller`. It never reloads HAProxy.
//!
//! Between the registry and the member lists sits the mass-expiry brake
//! ([`super::expiry_brake`]): expiries are noted as they arrive (and members a resync snapshot
//! lacks count as expired), and each dynamic backend's list is the registry's plus the members
//! the brake holds. Operators confirm removals through the [`crate::status::BrakeBoard`].

use super::control_plane::ControlPlane;
use super::fast_lane::LaneDrains;
use super::health_events::HealthNews;
use super::member_sync::MemberSync;
use super::plan::{Phase, Tracker};
use super::refusals::Refusals;
use super::resolver::{Lookup, Resolver};
use super::stats_poller::StatsRequest;
use crate::config::Config;
use crate::haproxy::runtime::RuntimeClient;
use crate::registry::feed::FeedItem;
use crate::status::{BrakeBoard, StatusBoard, StatusSink};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

mod reconcile;
mod report;
mod spawn;
mod sync;

pub use spawn::{ManagerParts, ManagerSettings, MembershipMode, spawn};

pub use super::metrics::MembershipMetrics;

/// How often the manager wakes while something is pending (a reload to make, a transition
/// round due).
const FAST_ROUND: Duration = Duration::from_millis(25);
/// How often backends with members joining or leaving are observed and planned. Nothing
/// waits for it that matters in milliseconds: joins are added and deletions drained by the
/// fast lane, a new member serves after its first passing check (a check interval, a second
/// by default, plus at most this), and a drained member is removed once idle.
const TRANSITION_ROUND: Duration = Duration::from_millis(100);
/// The periodic reconcile and stats poll.
const SLOW_ROUND: Duration = Duration::from_secs(1);
/// Registry events are planned against HAProxy in rounds at least this far apart (they reach
/// the controller, hence the API, at once). A round per event would re-read the touched
/// backend from HAProxy on every registration (hundreds of dumps a second under churn, most
/// of the control plane's CPU); joins do not wait for it (the fast lane adds them), and
/// neither do deletions (the fast lane drains them).
const FEED_ROUND_GAP: Duration = Duration::from_millis(20);

/// Everything the manager's loop reacts to.
#[derive(Debug)]
enum Event {
    /// A registry change (or a snapshot).
    Feed(FeedItem),
    /// The registry feed ended: members stay as they are.
    FeedEnded,
    /// The frontends and backends changed.
    ConfigChanged,
    /// The control plane stopped: the manager exits.
    Stopped,
    /// HAProxy was restarted (this many times so far): every member is applied again.
    Restarted(u64),
    /// HAProxy reloaded: every backend is observed again.
    Reloaded,
    /// An operator confirmed the removal of held members.
    ConfirmationQueued,
    /// A joining server passed a check (or events were missed).
    Health(HealthNews),
    HealthEnded,
    /// A DNS name's lookup finished.
    Resolved(Lookup),
    /// Nothing happened for a while: a round is due.
    Tick,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

struct Manager {
    /// Passing health checks as HAProxy makes them (runtime mode).
    health: Option<mpsc::Receiver<HealthNews>>,
    /// What the fast lane drained for deletions still on their way here.
    lane_drains: LaneDrains,
    /// Feed items applied so far (the lane counts the items it forwards the same way): a lane
    /// mark whose deletion is among them is settled.
    feed_applied: u64,
    controller: Arc<dyn ControlPlane>,
    config_rx: watch::Receiver<Arc<Config>>,
    runtime: RuntimeClient,
    feed: Option<mpsc::Receiver<FeedItem>>,
    restarts: watch::Receiver<u64>,
    reloads: watch::Receiver<u64>,
    stats: mpsc::Sender<StatsRequest>,
    sink: Option<Arc<dyn StatusSink>>,
    metrics: Arc<MembershipMetrics>,
    settings: ManagerSettings,
    /// The registry side: registrations, the brake, what was handed to the controller.
    sync: MemberSync,
    /// Backends whose desired members changed and must be observed and planned this round.
    dirty_backends: BTreeSet<String>,
    /// Backends whose desired members changed in ways the fast lane has carried out (new
    /// members added, deleted ones drained): observed and planned on the next transition
    /// round, not at once.
    lane_handled_backends: BTreeSet<String>,
    /// When every backend is observed again (the periodic reconcile).
    next_full_round: Instant,
    /// When backends with members joining or leaving are observed again.
    next_transition_round: Instant,
    /// The joining and serving servers last told to the controller (`None`: not yet).
    published_phases: Option<(BTreeSet<String>, BTreeSet<String>)>,
    tracker: Tracker,
    /// The degraded backends as the API sees them, and operators' confirmations.
    brake_board: BrakeBoard,
    next_stats: Instant,
    /// `MembershipMode::Reload`: when the pending member change is to be reloaded.
    reload_due: Option<Instant>,
    /// Commands HAProxy refused, per server, retried with backoff.
    refusals: Refusals,
    /// Addresses of members registered by DNS name.
    resolver: Resolver,
    /// Where the API reads refused members from.
    status_board: StatusBoard,
}

impl Manager {
    async fn run(mut self) {
        let mut last_round = Instant::now();
        // Registry changes handed to the controller but not yet planned against HAProxy.
        let mut unplanned = false;
        let mut members_changed = false;
        loop {
            let wait = if unplanned {
                (last_round + FEED_ROUND_GAP).saturating_duration_since(Instant::now())
            } else if self.tracker.has_transitions()
                || !self.lane_handled_backends.is_empty()
                || self.reload_due.is_some()
            {
                FAST_ROUND
            } else {
                SLOW_ROUND
            };
            let event = self.next_event(wait).await;
            let fed = matches!(event, Event::Feed(_));
            if self.handle(event) == Flow::Stop {
                return;
            }
            // Take everything else already queued: one round for a burst of changes.
            while let Some(item) = self.feed.as_mut().and_then(|f| f.try_recv().ok()) {
                self.apply_feed(item);
            }
            // The API and the UI show registrations at once; planning against HAProxy waits
            // for the batch.
            members_changed |= self.sync_members().await;
            if fed && Instant::now() < last_round + FEED_ROUND_GAP {
                unplanned = true;
                continue;
            }
            unplanned = false;
            last_round = Instant::now();
            self.round(std::mem::take(&mut members_changed)).await;
        }
    }

    /// Waits for the next thing that happens, or `wait` without anything.
    async fn next_event(&mut self, wait: Duration) -> Event {
        tokio::select! {
            item = recv_feed(&mut self.feed) => item.map_or(Event::FeedEnded, Event::Feed),
            changed = self.config_rx.changed() => {
                if changed.is_err() { Event::Stopped } else { Event::ConfigChanged }
            }
            _ = self.restarts.changed() => Event::Restarted(*self.restarts.borrow_and_update()),
            _ = self.reloads.changed() => {
                self.reloads.borrow_and_update();
                Event::Reloaded
            }
            () = self.brake_board.confirmation_queued() => Event::ConfirmationQueued,
            news = recv_health(&mut self.health) => news.map_or(Event::HealthEnded, Event::Health),
            Some(lookup) = self.resolver.finished() => Event::Resolved(lookup),
            _ = tokio::time::sleep(wait) => Event::Tick,
        }
    }

    /// What an event changes before the round that follows it.
    fn handle(&mut self, event: Event) -> Flow {
        match event {
            Event::Feed(item) => self.apply_feed(item),
            Event::FeedEnded => {
                tracing::warn!("the registry feed ended; members stay as they are");
                self.feed = None;
            }
            Event::Stopped => {
                tracing::info!("the aqueduct stopped; membership manager exits");
                return Flow::Stop;
            }
            // The round reads the new config (and examines every backend).
            Event::ConfigChanged | Event::Tick => {}
            Event::Restarted(generation) => {
                tracing::warn!(generation, "haproxy restarted; reconciling every member");
                self.next_full_round = Instant::now();
                self.record(
                    "haproxy-restarted",
                    "haproxy",
                    json!({"generation": generation}),
                );
            }
            Event::Reloaded => self.next_full_round = Instant::now(),
            Event::ConfirmationQueued => self.confirm_removals(),
            // Planned at once: a passing check is the one wait a join cannot shorten.
            Event::Health(news) => self.on_health(news),
            Event::HealthEnded => self.health = None,
            Event::Resolved(lookup) => {
                // A member's name resolved (or stopped resolving): look at every backend
                // (names are rare, lookups every 30 s at most).
                if self.resolver.record(lookup, Instant::now()) {
                    self.sync.mark_all_dirty();
                }
            }
        }
        Flow::Continue
    }

    /// Plans (or, for the reload baseline, reloads) after `sync_members`; `changed` says
    /// whether members changed since the last round.
    async fn round(&mut self, changed: bool) {
        if let MembershipMode::Reload { debounce } = self.settings.mode {
            self.reload_round(changed, debounce).await;
        } else if let Err(err) = self.reconcile().await {
            tracing::debug!(error = %err, "reconcile round failed; retrying next round");
        }
        if Instant::now() >= self.next_stats {
            self.next_stats = Instant::now() + SLOW_ROUND;
            self.request_stats();
            self.resolver.start_due(Instant::now());
            self.metrics
                .set_unresolved_names(self.resolver.unresolved_names());
        }
    }

    /// A joining server passed a check: its backend is planned in this round (set ready),
    /// not at the next transition round. Missed events: every backend, now.
    fn on_health(&mut self, first: HealthNews) {
        let mut news = vec![first];
        while let Some(more) = self.health.as_mut().and_then(|h| h.try_recv().ok()) {
            news.push(more);
        }
        for item in news {
            match item {
                HealthNews::Passed(server) => {
                    if self.tracker.phase(&server) == Some(Phase::Joining) {
                        self.dirty_backends.insert(server.backend);
                    }
                }
                HealthNews::Missed => self.next_full_round = Instant::now(),
            }
        }
    }

    /// The reload-per-change baseline: every member change re-renders and reloads HAProxy,
    /// after `debounce` without further changes (a trailing debounce, like the original's).
    async fn reload_round(&mut self, changed: bool, debounce: Duration) {
        let now = Instant::now();
        if changed {
            self.reload_due = Some(now + debounce);
        }
        if self.reload_due.is_some_and(|due| now >= due) {
            self.reload_due = None;
            if let Err(err) = self.controller.reload_members("membership changed").await {
                tracing::warn!(error = %err, "membership reload failed");
            }
        }
    }

    /// Hands the stats poller what it needs for its next sample (skipped while it is busy).
    fn request_stats(&self) {
        let phases = self
            .tracker
            .phases()
            .map(|(s, p)| ((s.backend.clone(), s.server.clone()), *p))
            .collect();
        let config = self.controller.config();
        let request = StatsRequest {
            versions: self.sync.rollout_versions(&config),
            config,
            phases,
        };
        if self.stats.try_send(request).is_err() {
            tracing::debug!("stats poller still busy; skipping a sample");
        }
    }
}

async fn recv_health(health: &mut Option<mpsc::Receiver<HealthNews>>) -> Option<HealthNews> {
    match health {
        Some(health) => health.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_feed(feed: &mut Option<mpsc::Receiver<FeedItem>>) -> Option<FeedItem> {
    match feed {
        Some(feed) => feed.recv().await,
        None => std::future::pending().await,
    }
}

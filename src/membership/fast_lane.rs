//! The fast lane: a new registration's server is added to HAProxy (in maintenance, health
//! checks on) the moment its `online` event arrives, and a deleted registration's server is
//! drained (no new requests) the moment its `offline` event arrives, before the manager hears
//! of either.
//!
//! Why: under churn a manager round spends tens of milliseconds observing backends and
//! counting a leaving member's connections, and rounds are batched; an event that arrives
//! meanwhile would wait for that. The lane sits between the registry feed and the manager, on
//! a connection of its own, and does two things only, both safe whatever the manager decides
//! next: `add server` + `enable health` for servers that cannot exist yet, and
//! `set server ... state drain` for servers whose registration was deleted. It then forwards
//! the events, so the manager's next round observes the server (in maintenance with checks
//! running, or draining) and carries on: the health gate, waiting for connections to end,
//! removal, repairs and everything else stay the manager's. Nothing here can put a server
//! into service, and a registration that comes back is set ready again by the manager.
//!
//! What it leaves to the manager: backends whose algorithm needs stable server ids (joins),
//! services at the `--max-members` cap (joins), registrations the brake holds, and expiries
//! (the brake decides whether those leave at all).
use super::control_plane::ControlPlane;
use super::members::OthersJoining;
use super::metrics::MembershipMetrics;
use super::plan::{DesiredMember, ServerRef};
use crate::haproxy::runtime::{CommandFailure, RuntimeClient, ServerCommand, ServerOptions};
use crate::haproxy::stat::AdminState;
use crate::registry::feed::{FeedItem, OfflineReason, RegistryEvent};
use crate::registry::model::Registration;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Feed items handled as one burst at most (bounds a burst's command lines and its delay).
const MAX_BURST: usize = 256;

pub struct FastLane {
    /// Its own connection: a join or drain never queues behind the manager's long dumps.
    pub runtime: RuntimeClient,
    /// Shared with the manager.
    pub drains: LaneDrains,
    pub controller: Arc<dyn ControlPlane>,
    pub metrics: Arc<MembershipMetrics>,
    /// `--max-members`: a service at the cap is left to the manager, which picks who stays.
    pub max_members: usize,
}

/// The `add server` + `enable health` pair that starts a health-gated join (shared with the
/// manager so both add servers the same way).
pub fn join_commands(backend: &str, server: &str, member: &DesiredMember) -> [ServerCommand; 2] {
    let options = ServerOptions {
        check: true,
        inter_ms: u32::try_from(member.check.inter_ms).unwrap_or(u32::MAX),
        rise: member.check.rise,
        fall: member.check.fall,
        id: member.id,
        weight: member.weight,
        ..ServerOptions::default()
    };
    [
        ServerCommand::Add {
            backend: backend.to_owned(),
            server: server.to_owned(),
            addr: member.addr,
            port: member.port,
            options,
        },
        ServerCommand::EnableHealth {
            backend: backend.to_owned(),
            server: server.to_owned(),
        },
    ]
}

impl FastLane {
    /// Takes the registry feed; returns the feed the manager reads (the same items, in order).
    /// Items that arrive together are handled together: one exchange adds every new server
    /// of the burst, so under churn the lane's cost per change shrinks instead of queueing.
    pub fn spawn(self, mut feed: mpsc::Receiver<FeedItem>) -> mpsc::Receiver<FeedItem> {
        let (tx, rx) = mpsc::channel(crate::registry::fanout::FOLLOWER_BUFFER);
        tokio::spawn(async move {
            let mut known = KnownRegistrations::default();
            // Items forwarded so far: the manager counts the same items as it applies them.
            let mut forwarded: u64 = 0;
            while let Some(first) = feed.recv().await {
                let received = Instant::now();
                let mut burst = vec![first];
                while burst.len() < MAX_BURST {
                    match feed.try_recv() {
                        Ok(item) => burst.push(item),
                        Err(_) => break,
                    }
                }
                let mut changes = BurstChanges::default();
                for item in &burst {
                    self.note(item, &mut known, &mut changes);
                }
                let through = forwarded + burst.len() as u64;
                self.run(changes, received, through).await;
                for item in burst {
                    forwarded += 1;
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }

    /// Updates what is known, and the changes of this burst by registration id (a
    /// registration that joins and leaves within the burst changes nothing).
    fn note(&self, item: &FeedItem, known: &mut KnownRegistrations, changes: &mut BurstChanges) {
        match item {
            FeedItem::Snapshot { registrations, .. } => {
                known.reset(registrations.iter().cloned());
                *changes = BurstChanges::default();
            }
            FeedItem::Event {
                event: RegistryEvent::Offline { id, reason },
                ..
            } => {
                let joined_in_burst = changes.joins.remove(id).is_some();
                let Some(registration) = known.remove(id) else {
                    return;
                };
                if *reason == OfflineReason::Deleted && !joined_in_burst {
                    let config = self.controller.config();
                    // A server still joining is in maintenance and gets no traffic: it is
                    // deleted at once (draining it would take it out of maintenance, past the
                    // health gate). A serving one is drained; the manager deletes it when idle.
                    let (joining, serving): (Vec<ServerRef>, Vec<ServerRef>) =
                        super::desired::servers_of(&config, &registration)
                            .into_iter()
                            .partition(|server| self.controller.may_be_joining(&server.server));
                    let serving: Vec<ServerRef> = serving
                        .into_iter()
                        .filter(|server| !self.last_serving_while_others_join(server, changes))
                        .collect();
                    if !serving.is_empty() {
                        changes.drains.insert(id.clone(), serving);
                    }
                    if !joining.is_empty() {
                        changes.deletes.insert(id.clone(), joining);
                    }
                }
            }
            FeedItem::Event {
                event: RegistryEvent::Online(registration),
                ..
            } => {
                // Back: whatever the lane drained of it is the manager's to serve again.
                changes.drains.remove(&registration.id);
                changes.deletes.remove(&registration.id);
                self.drains.forget(&super::desired::servers_of(
                    &self.controller.config(),
                    registration,
                ));
                let service = service_of(registration);
                if !known.insert(registration.clone()) {
                    return; // a meta change: the server exists already
                }
                if known.count(&service) > self.max_members {
                    return;
                }
                let config = self.controller.config();
                let commands: Vec<[ServerCommand; 2]> =
                    super::desired::joins_of(&config, registration)
                        .iter()
                        .map(|(server, member)| {
                            join_commands(&server.backend, &server.server, member)
                        })
                        .collect();
                if !commands.is_empty() {
                    changes.joins.insert(registration.id.clone(), commands);
                }
            }
        }
    }

    /// Make before break, as the manager plans it: the server of a deleted registration that
    /// is its backend's last serving one, while the backend's other members are all still
    /// joining, keeps serving (the manager holds it until one of them passes a check, or the
    /// drain timeout); draining it here would leave the backend with no server at all. A
    /// backend with no other member drains it: there is nothing to wait for.
    fn last_serving_while_others_join(&self, leaving: &ServerRef, changes: &BurstChanges) -> bool {
        match self
            .controller
            .others_joining(&leaving.backend, &leaving.server)
        {
            OthersJoining::SomeServing => false,
            OthersJoining::AllJoining => true,
            // No other member yet: one joining in this very burst is a replacement too.
            OthersJoining::None => changes.joins.values().flatten().any(|[add, _]| {
                matches!(add, ServerCommand::Add { backend, server, .. }
                    if *backend == leaving.backend && *server != leaving.server)
            }),
        }
    }

    /// One exchange for the burst's adds, drains and deletes (adds first: a join's latency is
    /// the one measured in milliseconds), then one enabling health checks on the servers it
    /// added.
    /// `through`: the feed position of the burst's last item (1 for the first item ever).
    async fn run(&self, changes: BurstChanges, received: Instant, through: u64) {
        let joins: Vec<[ServerCommand; 2]> = changes.joins.into_values().flatten().collect();
        let drained: Vec<ServerRef> = changes.drains.into_values().flatten().collect();
        let deleted: Vec<ServerRef> = changes.deletes.into_values().flatten().collect();
        if joins.is_empty() && drained.is_empty() && deleted.is_empty() {
            return;
        }
        let drain_count = drained.len();
        // Marked before the drain or delete lands, so no round can see it without the mark.
        self.drains.mark(&drained, Instant::now(), through);
        self.drains.mark(&deleted, Instant::now(), through);
        let drains = drained.into_iter().map(|server| ServerCommand::SetState {
            backend: server.backend,
            server: server.server,
            state: AdminState::Drain,
        });
        // HAProxy deletes only a server in maintenance: one set ready meanwhile is refused
        // ("not in maintenance") and left to the manager, which drains it.
        let deleted_servers = deleted.clone();
        let deletes = deleted.iter().map(|server| ServerCommand::Delete {
            backend: server.backend.clone(),
            server: server.server.clone(),
        });
        let mut commands: Vec<ServerCommand> = joins.iter().map(|[add, _]| add.clone()).collect();
        commands.extend(drains);
        commands.extend(deletes);
        let mut results = match self.runtime.batch(&commands).await {
            Ok(results) => results,
            Err(err) => {
                tracing::debug!(error = %err, "fast lane exchange failed; the manager's round catches up");
                self.runtime.disconnect().await;
                return;
            }
        };
        let took = received.elapsed().as_secs_f64();
        let mut drained = results.split_off(joins.len().min(results.len()));
        let deleted = drained.split_off(drain_count.min(drained.len()));
        // A server HAProxy would not delete is not in maintenance any more (it was set ready
        // meanwhile): drained instead, so it gets no new request; the manager removes it.
        let mut not_deleted = Vec::new();
        for (result, server) in deleted.into_iter().zip(&deleted_servers) {
            let outcome = match &result {
                Ok(()) => "ok",
                Err(err) if err.failure() == Some(CommandFailure::NoSuchServer) => "absent",
                Err(err) => {
                    tracing::debug!(error = %err, "fast delete refused; draining it instead");
                    not_deleted.push(ServerCommand::SetState {
                        backend: server.backend.clone(),
                        server: server.server.clone(),
                        state: AdminState::Drain,
                    });
                    // The race this handles, not a failure: the manager set it ready
                    // between the deletion and this command.
                    if err.failure() == Some(CommandFailure::NotInMaintenance) {
                        "serving"
                    } else {
                        "error"
                    }
                }
            };
            self.metrics.runtime_commands.inc(&["fast-delete", outcome]);
        }
        if !not_deleted.is_empty() {
            let outcome = match self.runtime.batch(&not_deleted).await {
                Ok(results) if results.iter().all(Result::is_ok) => "ok",
                _ => "error",
            };
            self.metrics.runtime_commands.inc(&["fast-drain", outcome]);
        }
        for result in drained {
            let outcome = match &result {
                Ok(()) => "ok",
                // Never added (left out by the cap, a join still to come) or removed already.
                Err(err) if err.failure() == Some(CommandFailure::NoSuchServer) => "absent",
                Err(err) => {
                    tracing::debug!(error = %err, "fast drain refused; the manager's round drains");
                    "error"
                }
            };
            self.metrics.runtime_commands.inc(&["fast-drain", outcome]);
        }
        let mut health = Vec::new();
        for ([add, enable], result) in joins.iter().zip(results) {
            self.metrics.fast_join_seconds.observe(took);
            // A server that exists already (a held member coming back, a join the manager
            // made first) is left as it is: health is enabled only on servers this add created.
            let outcome = match &result {
                Ok(()) => {
                    health.push(enable.clone());
                    "ok"
                }
                Err(err) if err.failure() == Some(CommandFailure::AlreadyExists) => "exists",
                Err(err) => {
                    tracing::debug!(command = ?add, error = %err, "fast join refused; the manager's round repairs");
                    "error"
                }
            };
            self.metrics.runtime_commands.inc(&["fast-add", outcome]);
        }
        if health.is_empty() {
            return;
        }
        match self.runtime.batch(&health).await {
            Ok(results) => {
                for result in results {
                    let outcome = if result.is_ok() { "ok" } else { "error" };
                    self.metrics
                        .runtime_commands
                        .inc(&["fast-enable-health", outcome]);
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "fast join: enabling health failed; the manager's round repairs");
                self.runtime.disconnect().await;
            }
        }
    }
}

/// What one burst of feed items asks of HAProxy, by registration id.
#[derive(Default)]
struct BurstChanges {
    joins: BTreeMap<String, Vec<[ServerCommand; 2]>>,
    drains: BTreeMap<String, Vec<ServerRef>>,
    /// Servers of deleted registrations that were still joining (in maintenance).
    deletes: BTreeMap<String, Vec<ServerRef>>,
}

/// The servers the lane drained or deleted for deleted registrations, until the manager has
/// applied the feed items that deleted them. A manager round that read its registrations
/// before the deletion reached it would otherwise see a drained member it still wants and set
/// it ready again, or a deleted one and add it back; it keeps these drains and deletions
/// instead. Once the manager has applied the deletion the mark goes at once: the server may be
/// wanted again for another reason (a version switch back to a registration at the same
/// address), and that must not wait.
#[derive(Debug, Clone, Default)]
pub struct LaneDrains(Arc<Mutex<HashMap<ServerRef, LaneMark>>>);

#[derive(Debug, Clone, Copy)]
struct LaneMark {
    at: Instant,
    /// The feed position (counted from 1) of the burst that held the deletion.
    through: u64,
}

impl LaneDrains {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServerRef, LaneMark>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark(&self, servers: &[ServerRef], at: Instant, through: u64) {
        let mut drains = self.lock();
        for server in servers {
            drains.insert(server.clone(), LaneMark { at, through });
        }
    }

    fn forget(&self, servers: &[ServerRef]) {
        let mut drains = self.lock();
        for server in servers {
            drains.remove(server);
        }
    }

    /// The marks whose deletions the manager has not applied yet (`applied`: how many feed
    /// items it has applied) and that are at most `memory` old; the others are forgotten
    /// (older ones too: should the manager stall that long, its view wins).
    pub fn pending(&self, now: Instant, memory: Duration, applied: u64) -> HashSet<ServerRef> {
        let mut drains = self.lock();
        drains.retain(|_, mark| {
            mark.through > applied && now.saturating_duration_since(mark.at) <= memory
        });
        drains.keys().cloned().collect()
    }
}

fn service_of(registration: &Registration) -> (String, String) {
    (registration.name.clone(), registration.version.clone())
}

/// Which registrations exist, and how many per service.
#[derive(Default)]
struct KnownRegistrations {
    by_id: BTreeMap<String, Registration>,
    per_service: BTreeMap<(String, String), usize>,
}

impl KnownRegistrations {
    fn reset(&mut self, registrations: impl Iterator<Item = Registration>) {
        self.by_id.clear();
        self.per_service.clear();
        for registration in registrations {
            self.insert(registration);
        }
    }

    /// True when the registration is new (a meta change keeps the one known).
    fn insert(&mut self, registration: Registration) -> bool {
        if self.by_id.contains_key(&registration.id) {
            return false;
        }
        *self
            .per_service
            .entry(service_of(&registration))
            .or_default() += 1;
        self.by_id.insert(registration.id.clone(), registration);
        true
    }

    fn remove(&mut self, id: &str) -> Option<Registration> {
        let registration = self.by_id.remove(id)?;
        let service = service_of(&registration);
        if let Some(n) = self.per_service.get_mut(&service) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_service.remove(&service);
            }
        }
        Some(registration)
    }

    fn count(&self, service: &(String, String)) -> usize {
        self.per_service.get(service).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(name: &str, port: u16) -> Registration {
        Registration {
            name: name.into(),
            version: "1".into(),
            host: "127.0.0.1".into(),
            port,
            last_known: 0,
            meta: Default::default(),
            id: format!("/{name}/1/127.0.0.1/{port}"),
            address: None,
            unresolved: None,
        }
    }

    fn service(name: &str) -> (String, String) {
        (name.to_owned(), "1".to_owned())
    }

    #[test]
    fn known_registrations_count_per_service_and_tell_new_from_seen() {
        let mut known = KnownRegistrations::default();
        assert!(known.insert(registration("a", 1)));
        assert!(
            !known.insert(registration("a", 1)),
            "a meta change is not new"
        );
        assert!(known.insert(registration("a", 2)));
        assert!(known.insert(registration("b", 1)));
        assert_eq!(known.count(&service("a")), 2);
        assert_eq!(
            known.remove("/a/1/127.0.0.1/1").map(|r| r.port),
            Some(1),
            "a removal hands back what it knew (the drain needs host and port)"
        );
        assert!(known.remove("/nope").is_none());
        assert_eq!(known.count(&service("a")), 1);
        assert!(
            known.insert(registration("a", 1)),
            "new again after leaving"
        );
        known.reset(std::iter::once(registration("c", 1)));
        assert_eq!(known.count(&service("a")), 0);
        assert_eq!(known.count(&service("c")), 1);
    }

    #[test]
    fn a_lane_mark_lasts_until_the_manager_applied_its_deletion_or_memory_runs_out() {
        let drains = LaneDrains::default();
        let server = |name: &str| ServerRef {
            backend: "b".to_owned(),
            server: name.to_owned(),
        };
        let t0 = Instant::now();
        let memory = Duration::from_secs(10);
        drains.mark(&[server("x")], t0, 3);
        drains.mark(&[server("y")], t0, 5);
        assert_eq!(drains.pending(t0, memory, 2).len(), 2);
        let after_three = drains.pending(t0, memory, 3);
        assert!(
            !after_three.contains(&server("x")) && after_three.contains(&server("y")),
            "applied through item 3: x's deletion reached the manager, y's did not"
        );
        assert!(
            drains
                .pending(t0 + Duration::from_secs(11), memory, 3)
                .is_empty(),
            "a mark older than the memory goes even if the manager never applied it"
        );
    }
}

//! The join fast lane: a new registration's server is added to HAProxy (in maintenance, health
//! checks on) the moment its `online` event arrives, before the manager hears of it.
//!
//! Why: under load a manager round spends tens of milliseconds waiting for HAProxy's CLI
//! (observing backends, counting a leaving member's connections), and a registration that
//! arrives meanwhile would wait for the whole round. The lane sits between the registry feed
//! and the manager, on a connection of its own, and does one thing: `add server` +
//! `enable health` for servers that cannot exist yet. It then forwards the event, so the
//! manager's next round observes the server in maintenance with checks running and adopts it
//! as joining: the health gate, draining, repairs and everything else stay the manager's.
//! Nothing here can put a server into service.
//!
//! What it leaves to the manager: backends whose algorithm needs stable server ids, services
//! at the `--max-members` cap, registrations the brake holds, and every departure.

use super::manager::MembershipMetrics;
use super::plan::DesiredMember;
use crate::aqueduct::controller::Controller;
use crate::haproxy::runtime::{CommandFailure, RuntimeClient, ServerCommand, ServerOptions};
use crate::registry::feed::{FeedItem, RegistryEvent};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Feed items handled as one burst at most (bounds a burst's command lines and its delay).
const MAX_BURST: usize = 256;

pub struct FastJoin {
    /// Its own connection: a join never queues behind the manager's long dumps.
    pub runtime: RuntimeClient,
    pub controller: Controller,
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

impl FastJoin {
    /// Takes the registry feed; returns the feed the manager reads (the same items, in order).
    /// Items that arrive together are handled together: one exchange adds every new server
    /// of the burst, so under churn the lane's cost per join shrinks instead of queueing.
    pub fn spawn(self, mut feed: mpsc::Receiver<FeedItem>) -> mpsc::Receiver<FeedItem> {
        let (tx, rx) = mpsc::channel(crate::registry::fanout::FOLLOWER_BUFFER);
        tokio::spawn(async move {
            let mut known = KnownRegistrations::default();
            while let Some(first) = feed.recv().await {
                let mut burst = vec![first];
                while burst.len() < MAX_BURST {
                    match feed.try_recv() {
                        Ok(item) => burst.push(item),
                        Err(_) => break,
                    }
                }
                let mut joins = BTreeMap::new();
                for item in &burst {
                    self.note(item, &mut known, &mut joins);
                }
                if !joins.is_empty() {
                    let joins: Vec<[ServerCommand; 2]> = joins.into_values().flatten().collect();
                    self.run(&joins).await;
                }
                for item in burst {
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }

    /// Updates what is known, and the joins of this burst by registration id (a registration
    /// that leaves within the burst joins nothing).
    fn note(
        &self,
        item: &FeedItem,
        known: &mut KnownRegistrations,
        joins: &mut BTreeMap<String, Vec<[ServerCommand; 2]>>,
    ) {
        match item {
            FeedItem::Snapshot { registrations, .. } => {
                known.reset(registrations.iter().map(|r| (r.id.clone(), service_of(r))));
                joins.clear();
            }
            FeedItem::Event {
                event: RegistryEvent::Offline { id, .. },
                ..
            } => {
                known.remove(id);
                joins.remove(id);
            }
            FeedItem::Event {
                event: RegistryEvent::Online(registration),
                ..
            } => {
                let service = service_of(registration);
                if !known.insert(registration.id.clone(), service.clone()) {
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
                    joins.insert(registration.id.clone(), commands);
                }
            }
        }
    }

    /// Adds first, and enables health only for servers the add created: a server that exists
    /// already (a held member coming back, a join the manager made first) is left as it is.
    async fn run(&self, joins: &[[ServerCommand; 2]]) {
        let adds: Vec<ServerCommand> = joins.iter().map(|[add, _]| add.clone()).collect();
        let results = match self.runtime.batch(&adds).await {
            Ok(results) => results,
            Err(err) => {
                tracing::debug!(error = %err, "fast join failed; the manager's round adds it");
                self.runtime.disconnect().await;
                return;
            }
        };
        let mut health = Vec::new();
        for ([add, enable], result) in joins.iter().zip(results) {
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

fn service_of(registration: &crate::registry::model::Registration) -> (String, String) {
    (registration.name.clone(), registration.version.clone())
}

/// Which registrations exist, and how many per service.
#[derive(Default)]
struct KnownRegistrations {
    by_id: BTreeMap<String, (String, String)>,
    per_service: BTreeMap<(String, String), usize>,
}

impl KnownRegistrations {
    fn reset(&mut self, registrations: impl Iterator<Item = (String, (String, String))>) {
        self.by_id.clear();
        self.per_service.clear();
        for (id, service) in registrations {
            self.insert(id, service);
        }
    }

    /// True when `id` is new.
    fn insert(&mut self, id: String, service: (String, String)) -> bool {
        if self.by_id.contains_key(&id) {
            return false;
        }
        *self.per_service.entry(service.clone()).or_default() += 1;
        self.by_id.insert(id, service);
        true
    }

    fn remove(&mut self, id: &str) {
        let Some(service) = self.by_id.remove(id) else {
            return;
        };
        if let Some(n) = self.per_service.get_mut(&service) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_service.remove(&service);
            }
        }
    }

    fn count(&self, service: &(String, String)) -> usize {
        self.per_service.get(service).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> (String, String) {
        (name.to_owned(), "1".to_owned())
    }

    #[test]
    fn known_registrations_count_per_service_and_tell_new_from_seen() {
        let mut known = KnownRegistrations::default();
        assert!(known.insert("/a/1/h/1".into(), service("a")));
        assert!(
            !known.insert("/a/1/h/1".into(), service("a")),
            "a meta change is not new"
        );
        assert!(known.insert("/a/1/h/2".into(), service("a")));
        assert!(known.insert("/b/1/h/1".into(), service("b")));
        assert_eq!(known.count(&service("a")), 2);
        known.remove("/a/1/h/1");
        known.remove("/nope");
        assert_eq!(known.count(&service("a")), 1);
        assert!(
            known.insert("/a/1/h/1".into(), service("a")),
            "new again after leaving"
        );
        known.reset(std::iter::once(("/c/1/h/1".to_owned(), service("c"))));
        assert_eq!(known.count(&service("a")), 0);
        assert_eq!(known.count(&service("c")), 1);
    }
}

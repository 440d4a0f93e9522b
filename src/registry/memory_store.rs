//! The in-memory [`RegistrationStore`]: a hash map of registrations, an ordered deadline index
//! and the event log, all behind one mutex so a change and its event are one atomic step.
//!
//! Why an ordered index (a `BTreeSet` of `(deadline, id)`) rather than a timer wheel: it answers
//! `next_deadline` and `expire_due(now)` directly, exactly to the millisecond and with no cap,
//! a refresh is one O(log n) remove + insert, and it is the same shape a shared store would use
//! (a Redis sorted set scored by deadline), so the trait stays honest.

use super::event_log::{EventLog, RETAINED_EVENTS};
use super::feed::{FeedItem, OfflineReason, RegistryEvent};
use super::model::{Registration, RegistrationKey};
use super::store::{
    Lease, LeasedRegistration, ListFilter, RegistrationStore, StoreExport, Subscription,
    UpsertOutcome, Upserted,
};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// One live registration. `registration` is shared (listings and snapshots clone the `Arc`, not
/// the meta); its own `last_known` is stale, the entry's fields are authoritative.
#[derive(Debug)]
struct Entry {
    registration: Arc<Registration>,
    /// Epoch ms of the most recent upsert.
    last_known: u64,
    /// Epoch ms after which the registration expires.
    expires_at: u64,
}

impl Entry {
    fn to_registration(&self) -> Registration {
        let mut registration = (*self.registration).clone();
        registration.last_known = self.last_known;
        registration
    }
}

#[derive(Debug)]
struct State {
    entries: HashMap<Arc<str>, Entry>,
    deadlines: BTreeSet<(u64, Arc<str>)>,
    log: EventLog,
}

impl State {
    fn earliest(&self) -> Option<u64> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// Live entries as shared pointers: cheap to collect under the lock, cloned outside it.
    fn collect(&self, filter: &ListFilter) -> Vec<(Arc<Registration>, u64, u64)> {
        self.entries
            .values()
            .filter(|e| filter.matches(&e.registration))
            .map(|e| (e.registration.clone(), e.last_known, e.expires_at))
            .collect()
    }
}

fn materialise(mut shared: Vec<(Arc<Registration>, u64, u64)>) -> Vec<LeasedRegistration> {
    shared.sort_unstable_by(|a, b| a.0.id.cmp(&b.0.id));
    shared
        .into_iter()
        .map(|(registration, last_known, expires_at)| {
            let mut registration =
                Arc::try_unwrap(registration).unwrap_or_else(|shared| (*shared).clone());
            registration.last_known = last_known;
            LeasedRegistration {
                expires_at,
                registration,
            }
        })
        .collect()
}

#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(0, RETAINED_EVENTS)
    }
}

impl MemoryStore {
    /// An empty store whose events are numbered from `start_seq + 1`, retaining the last
    /// `retained_events` for resuming followers.
    pub fn new(start_seq: u64, retained_events: usize) -> Self {
        MemoryStore {
            state: Mutex::new(State {
                entries: HashMap::new(),
                deadlines: BTreeSet::new(),
                log: EventLog::new(start_seq, retained_events),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than stopping the registry would, so keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn snapshot_parts(&self) -> (u64, Vec<(Arc<Registration>, u64, u64)>) {
        let state = self.lock();
        (state.log.seq(), state.collect(&ListFilter::all()))
    }
}

fn snapshot_item(seq: u64, shared: Vec<(Arc<Registration>, u64, u64)>) -> FeedItem {
    FeedItem::Snapshot {
        seq,
        registrations: materialise(shared)
            .into_iter()
            .map(|l| l.registration)
            .collect(),
    }
}

impl RegistrationStore for MemoryStore {
    fn upsert(
        &self,
        key: RegistrationKey,
        meta: Map<String, Value>,
        now_ms: u64,
        expires_at: u64,
    ) -> Upserted {
        let id = key.id();
        let mut guard = self.lock();
        let state = &mut *guard;
        let earliest_before = state.earliest();
        let existing = state
            .entries
            .get_key_value(id.as_str())
            .map(|(shared_id, entry)| (shared_id.clone(), entry.expires_at));
        let outcome = match existing {
            Some((shared_id, old_deadline)) => {
                state.deadlines.remove(&(old_deadline, shared_id.clone()));
                state.deadlines.insert((expires_at, shared_id.clone()));
                let candidate = Registration::new(key, now_ms, meta);
                let Some(entry) = state.entries.get_mut(&shared_id) else {
                    unreachable!("the entry was just looked up under the same lock");
                };
                entry.last_known = now_ms;
                entry.expires_at = expires_at;
                if candidate.meta == entry.registration.meta {
                    UpsertOutcome::Refreshed
                } else {
                    entry.registration = Arc::new(candidate.clone());
                    state.log.push(RegistryEvent::Online(candidate));
                    UpsertOutcome::MetaChanged
                }
            }
            None => {
                let registration = Registration::new(key, now_ms, meta);
                let shared_id: Arc<str> = Arc::from(id.as_str());
                state.deadlines.insert((expires_at, shared_id.clone()));
                state.entries.insert(
                    shared_id,
                    Entry {
                        registration: Arc::new(registration.clone()),
                        last_known: now_ms,
                        expires_at,
                    },
                );
                state.log.push(RegistryEvent::Online(registration));
                UpsertOutcome::Created
            }
        };
        let earliest_deadline_changed = state.earliest() != earliest_before
            && earliest_before.is_none_or(|before| expires_at < before);
        Upserted {
            outcome,
            earliest_deadline_changed,
        }
    }

    fn remove(&self, id: &str) -> bool {
        let mut state = self.lock();
        let Some((shared_id, entry)) = state.entries.remove_entry(id) else {
            return false;
        };
        state.deadlines.remove(&(entry.expires_at, shared_id));
        state.log.push(RegistryEvent::Offline {
            id: id.to_owned(),
            reason: OfflineReason::Deleted,
        });
        true
    }

    fn list(&self, filter: &ListFilter) -> Vec<Registration> {
        let shared = self.lock().collect(filter);
        materialise(shared)
            .into_iter()
            .map(|l| l.registration)
            .collect()
    }

    fn leases(&self) -> Vec<Lease> {
        let state = self.lock();
        let mut leases: Vec<Lease> = state
            .entries
            .iter()
            .map(|(id, e)| Lease {
                id: id.to_string(),
                expires_at: e.expires_at,
                last_known: e.last_known,
            })
            .collect();
        drop(state);
        leases.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        leases
    }

    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn next_deadline(&self) -> Option<u64> {
        self.lock().earliest()
    }

    fn expire_due(&self, now_ms: u64) -> Vec<String> {
        let mut state = self.lock();
        let mut expired = Vec::new();
        while let Some((deadline, _)) = state.deadlines.first() {
            if *deadline > now_ms {
                break;
            }
            let Some((_, id)) = state.deadlines.pop_first() else {
                break;
            };
            state.entries.remove(&id);
            state.log.push(RegistryEvent::Offline {
                id: id.to_string(),
                reason: OfflineReason::Expired,
            });
            expired.push(id.to_string());
        }
        expired
    }

    fn subscribe(&self, last_seen: Option<u64>) -> Subscription {
        let state = self.lock();
        let live = state.log.receiver();
        let seq = state.log.seq();
        if let Some(missed) = last_seen.and_then(|seen| state.log.since(seen)) {
            return Subscription {
                backlog: missed,
                covered_seq: seq,
                live,
            };
        }
        let shared = state.collect(&ListFilter::all());
        drop(state);
        Subscription {
            backlog: vec![snapshot_item(seq, shared)],
            covered_seq: seq,
            live,
        }
    }

    fn snapshot(&self) -> FeedItem {
        let (seq, shared) = self.snapshot_parts();
        snapshot_item(seq, shared)
    }

    fn export(&self) -> StoreExport {
        let (seq, shared) = self.snapshot_parts();
        StoreExport {
            seq,
            registrations: materialise(shared),
        }
    }

    fn import(&self, export: StoreExport, start_seq: u64) {
        let mut state = self.lock();
        state.entries.clear();
        state.deadlines.clear();
        for leased in export.registrations {
            let id: Arc<str> = Arc::from(leased.registration.id.as_str());
            state.deadlines.insert((leased.expires_at, id.clone()));
            state.entries.insert(
                id,
                Entry {
                    last_known: leased.registration.last_known,
                    expires_at: leased.expires_at,
                    registration: Arc::new(leased.registration),
                },
            );
        }
        state.log.restart_at(start_seq);
    }
}

impl MemoryStore {
    /// One registration, for tests and diagnostics.
    pub fn get(&self, id: &str) -> Option<Registration> {
        self.lock().entries.get(id).map(Entry::to_registration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(port: &str) -> RegistrationKey {
        RegistrationKey::parse("svc", "1.0.0", "10.0.0.1", port).unwrap()
    }

    fn meta(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn events(store: &MemoryStore, since: u64) -> Vec<String> {
        let sub = store.subscribe(Some(since));
        sub.backlog
            .iter()
            .map(|item| match item {
                FeedItem::Event {
                    event: RegistryEvent::Online(r),
                    ..
                } => format!("online {}", r.id),
                FeedItem::Event {
                    event: RegistryEvent::Offline { id, reason },
                    ..
                } => format!("offline {id} {}", reason.as_str()),
                FeedItem::Snapshot { .. } => "snapshot".to_owned(),
            })
            .collect()
    }

    #[test]
    fn upsert_classifies_and_only_new_or_changed_meta_is_an_event() {
        let store = MemoryStore::default();
        let check = |meta_value: Value, now: u64, expected: UpsertOutcome| {
            let got = store.upsert(key("80"), meta(meta_value), now, now + 1000);
            assert_eq!(got.outcome, expected);
        };
        check(json!({"a": 1}), 1, UpsertOutcome::Created);
        check(json!({"a": 1}), 2, UpsertOutcome::Refreshed);
        check(json!({"a": 2}), 3, UpsertOutcome::MetaChanged);
        check(
            json!({"a": 2, "hostname": "10.0.0.1"}),
            4,
            UpsertOutcome::Refreshed,
        );
        assert_eq!(events(&store, 0), ["online /svc/1.0.0/10.0.0.1/80"; 2]);
        let reg = store.get("/svc/1.0.0/10.0.0.1/80").unwrap();
        assert_eq!(reg.last_known, 4);
        assert_eq!(reg.meta, meta(json!({"a": 2, "hostname": "10.0.0.1"})));
    }

    #[test]
    fn a_refresh_moves_the_deadline() {
        let store = MemoryStore::default();
        store.upsert(key("80"), Map::new(), 0, 1000);
        store.upsert(key("81"), Map::new(), 0, 1500);
        assert_eq!(store.next_deadline(), Some(1000));
        store.upsert(key("80"), Map::new(), 900, 1900);
        assert_eq!(store.next_deadline(), Some(1500));
        assert_eq!(store.expire_due(1499), Vec::<String>::new());
        assert_eq!(store.expire_due(1500), ["/svc/1.0.0/10.0.0.1/81"]);
        assert_eq!(store.expire_due(1899), Vec::<String>::new());
        assert_eq!(store.expire_due(1900), ["/svc/1.0.0/10.0.0.1/80"]);
        assert!(store.is_empty());
        assert_eq!(store.next_deadline(), None);
    }

    #[test]
    fn earliest_deadline_change_is_reported_only_when_earlier() {
        let store = MemoryStore::default();
        let check = |port: &str, expires_at: u64, expected: bool| {
            let got = store.upsert(key(port), Map::new(), 0, expires_at);
            assert_eq!(
                got.earliest_deadline_changed, expected,
                "{port} {expires_at}"
            );
        };
        check("80", 1000, true);
        check("81", 2000, false);
        check("82", 500, true);
        check("82", 3000, false); // moved later: the driver wakes early at worst, harmlessly
    }

    #[test]
    fn expiry_has_no_cap() {
        let store = MemoryStore::default();
        for port in 1..=5000 {
            store.upsert(key(&port.to_string()), Map::new(), 0, 1000);
        }
        assert_eq!(store.expire_due(1000).len(), 5000);
        assert!(store.is_empty());
    }

    #[test]
    fn remove_reports_existence_and_emits_deleted() {
        let store = MemoryStore::default();
        store.upsert(key("80"), Map::new(), 0, 1000);
        assert!(store.remove("/svc/1.0.0/10.0.0.1/80"));
        assert!(!store.remove("/svc/1.0.0/10.0.0.1/80"));
        assert_eq!(store.next_deadline(), None);
        assert_eq!(
            events(&store, 1),
            ["offline /svc/1.0.0/10.0.0.1/80 deleted"]
        );
    }

    #[test]
    fn subscribe_without_resume_gets_a_snapshot_of_everything() {
        let store = MemoryStore::default();
        store.upsert(key("81"), Map::new(), 5, 1000);
        store.upsert(key("80"), Map::new(), 6, 1000);
        let sub = store.subscribe(None);
        assert_eq!(sub.covered_seq, 2);
        match &sub.backlog[..] {
            [FeedItem::Snapshot { seq, registrations }] => {
                assert_eq!(*seq, 2);
                let ids: Vec<_> = registrations.iter().map(|r| r.id.as_str()).collect();
                assert_eq!(ids, ["/svc/1.0.0/10.0.0.1/80", "/svc/1.0.0/10.0.0.1/81"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn export_import_round_trips_with_deadlines() {
        let store = MemoryStore::default();
        store.upsert(key("80"), meta(json!({"x": "y"})), 5, 1000);
        store.upsert(key("80"), meta(json!({"x": "y"})), 7, 2000);
        let export = store.export();
        assert_eq!(export.seq, 1);
        let copy = MemoryStore::default();
        copy.import(export.clone(), 40);
        assert_eq!(copy.export().registrations, export.registrations);
        assert_eq!(copy.leases()[0].expires_at, 2000);
        assert_eq!(copy.leases()[0].last_known, 7);
        assert_eq!(copy.subscribe(Some(40)).backlog, vec![]);
        assert_eq!(copy.next_deadline(), Some(2000));
    }
}

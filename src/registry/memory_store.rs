//! The in-memory [`RegistrationStore`]: a hash map of compact records, an ordered deadline index
//! and the event log, all behind one mutex so a change and its event are one atomic step.
//!
//! Why an ordered index (a `BTreeSet` of `(deadline, id)`) rather than a timer wheel: it answers
//! `next_deadline` and `expire_due(now)` directly, exactly to the millisecond and with no cap,
//! a refresh is one O(log n) remove + insert, and it is the same shape a shared store would use
//! (a Redis sorted set scored by deadline), so the trait stays honest.

use super::clock::now_ms;
use super::event_log::{EventLog, RETAINED_EVENTS};
use super::expiry::StallHold;
use super::feed::{FeedItem, OfflineReason, RegistryEvent};
use super::model::{Registration, RegistrationKey, default_hostname};
use super::record::{RegistrationRecord, meta_string};
use super::store::{
    ExpiryRound, Lease, ListFilter, RegistrationStore, StoreExport, StoreFuture, Subscription,
    UpsertOutcome, Upserted,
};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug)]
struct State {
    /// Keyed by the record's own shared id string.
    records: HashMap<Arc<str>, RegistrationRecord>,
    /// `(expires_at, id)` for every record: the earliest deadline is the first element.
    deadlines: BTreeSet<(u64, Arc<str>)>,
    log: EventLog,
}

impl State {
    fn earliest(&self) -> Option<u64> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// Matching records, unsorted: cheap clones, so the lock is held briefly.
    fn collect(&self, filter: &ListFilter) -> Vec<RegistrationRecord> {
        self.records
            .values()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect()
    }

    fn insert(&mut self, record: RegistrationRecord) {
        let id = record.shared_id().clone();
        self.deadlines.insert((record.expires_at, id.clone()));
        self.records.insert(id, record);
    }
}

/// Moves `record` to its new deadline in the index and sets its times.
fn refresh(
    deadlines: &mut BTreeSet<(u64, Arc<str>)>,
    record: &mut RegistrationRecord,
    last_known: u64,
    expires_at: u64,
) {
    let shared_id = record.shared_id().clone();
    deadlines.remove(&(record.expires_at, shared_id.clone()));
    deadlines.insert((expires_at, shared_id));
    record.last_known = last_known;
    record.expires_at = expires_at;
}

fn sorted(mut records: Vec<RegistrationRecord>) -> Vec<RegistrationRecord> {
    records.sort_unstable_by(|a, b| a.id().cmp(b.id()));
    records
}

fn snapshot_item(seq: u64, records: Vec<RegistrationRecord>) -> FeedItem {
    FeedItem::Snapshot {
        seq,
        registrations: sorted(records)
            .iter()
            .map(RegistrationRecord::to_registration)
            .collect(),
    }
}

#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// The stall rule of this store's expiry rounds.
    stall: Mutex<StallHold>,
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
                records: HashMap::new(),
                deadlines: BTreeSet::new(),
                log: EventLog::new(start_seq, retained_events),
            }),
            stall: Mutex::new(StallHold::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than stopping the registry would, so keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn snapshot_parts(&self) -> (u64, Vec<RegistrationRecord>) {
        let state = self.lock();
        (state.log.seq(), state.collect(&ListFilter::all()))
    }

    /// One registration, for tests and diagnostics.
    pub fn get(&self, id: &str) -> Option<RegistrationRecord> {
        self.lock().records.get(id).cloned()
    }

    /// Whether `id` is held with exactly this meta text and lease: a heartbeat that would
    /// change nothing but its deadline. Compares in place (the heartbeat path: no copy).
    pub fn holds_unchanged(&self, id: &str, meta_json: &str, lease_ms: u64) -> bool {
        self.lock().records.get(id).is_some_and(|record| {
            **record.meta_json() == *meta_json
                && record.expires_at.saturating_sub(record.last_known) == lease_ms
        })
    }
}

/// The synchronous operations, with explicit times (tests and the trait implementation below
/// use them).
impl MemoryStore {
    pub fn upsert(
        &self,
        key: RegistrationKey,
        mut meta: Map<String, Value>,
        now_ms: u64,
        expires_at: u64,
    ) -> Upserted {
        default_hostname(&mut meta, &key.host);
        // Serialise outside the lock; comparing texts is the cheap "did meta change" test.
        let text = meta_string(&meta);
        let id = key.id();
        let mut guard = self.lock();
        let state = &mut *guard;
        let earliest_before = state.earliest();
        let outcome = match state.records.get_mut(id.as_str()) {
            Some(record) => {
                refresh(&mut state.deadlines, record, now_ms, expires_at);
                if **record.meta_json() == *text {
                    UpsertOutcome::Refreshed
                } else {
                    *record = RegistrationRecord::with_meta_json(
                        &key,
                        Arc::from(text),
                        now_ms,
                        expires_at,
                    );
                    state
                        .log
                        .push(RegistryEvent::Online(Registration::new(key, now_ms, meta)));
                    UpsertOutcome::MetaChanged
                }
            }
            None => {
                state.insert(RegistrationRecord::with_meta_json(
                    &key,
                    Arc::from(text),
                    now_ms,
                    expires_at,
                ));
                state
                    .log
                    .push(RegistryEvent::Online(Registration::new(key, now_ms, meta)));
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

    pub fn remove(&self, id: &str) -> bool {
        let mut state = self.lock();
        let Some((shared_id, record)) = state.records.remove_entry(id) else {
            return false;
        };
        state.deadlines.remove(&(record.expires_at, shared_id));
        state.log.push(RegistryEvent::Offline {
            id: id.to_owned(),
            reason: OfflineReason::Deleted,
        });
        true
    }

    pub fn list(&self, filter: &ListFilter) -> Vec<RegistrationRecord> {
        let records = self.lock().collect(filter);
        sorted(records)
    }

    pub fn leases(&self) -> Vec<Lease> {
        let records = self.lock().collect(&ListFilter::all());
        sorted(records)
            .iter()
            .map(|r| Lease {
                id: r.id().to_owned(),
                expires_at: r.expires_at,
                last_known: r.last_known,
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, id: &str) -> bool {
        self.lock().records.contains_key(id)
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.lock().earliest()
    }

    pub fn expire_due(&self, now_ms: u64) -> Vec<String> {
        let mut state = self.lock();
        let mut expired = Vec::new();
        while let Some((deadline, _)) = state.deadlines.first() {
            if *deadline > now_ms {
                break;
            }
            let Some((_, id)) = state.deadlines.pop_first() else {
                break;
            };
            state.records.remove(&id);
            state.log.push(RegistryEvent::Offline {
                id: id.to_string(),
                reason: OfflineReason::Expired,
            });
            expired.push(id.to_string());
        }
        expired
    }

    pub fn subscribe(&self, last_seen: Option<u64>) -> Subscription {
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
        let records = state.collect(&ListFilter::all());
        drop(state);
        Subscription {
            backlog: vec![snapshot_item(seq, records)],
            covered_seq: seq,
            live,
        }
    }

    pub fn snapshot(&self) -> FeedItem {
        let (seq, records) = self.snapshot_parts();
        snapshot_item(seq, records)
    }

    pub fn export(&self) -> StoreExport {
        let (seq, records) = self.snapshot_parts();
        StoreExport {
            seq,
            records: sorted(records),
        }
    }

    pub fn import(&self, export: StoreExport, start_seq: u64) {
        let mut state = self.lock();
        state.records.clear();
        state.deadlines.clear();
        for record in export.records {
            state.insert(record);
        }
        state.log.restart_at(start_seq);
        drop(state);
        // Whatever ran out since the snapshot ran out while no registry ran.
        *self.lock_stall() = StallHold::after_downtime();
    }

    fn lock_stall(&self) -> MutexGuard<'_, StallHold> {
        self.stall.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The longest lease (`expiresAt - lastKnown`) among registrations due in `(began, now]`.
    fn longest_lease_due(&self, began: u64, now: u64) -> u64 {
        self.lock()
            .records
            .values()
            .filter(|r| r.expires_at > began && r.expires_at <= now)
            .map(|r| r.expires_at.saturating_sub(r.last_known))
            .max()
            .unwrap_or(0)
    }

    /// One expiry round at `now` under the stall rule.
    pub fn expire_round_at(&self, now: u64) -> ExpiryRound {
        let mut stall = self.lock_stall();
        let cutoff = stall.begin_round(now, |began, now| self.longest_lease_due(began, now));
        let expired = self.expire_due(cutoff.due_by);
        stall.end_round(now_ms().max(now));
        ExpiryRound {
            expired,
            // Held deadlines are due already: come back at the end of the hold instead.
            next_deadline: cutoff.held_until.or_else(|| self.next_deadline()),
            holding: cutoff.held_until.is_some(),
        }
    }

    /// Applies an event that another node's store issued with sequence number `seq` (the
    /// local copy of a shared store). Returns false when `seq` is not above the last one
    /// applied: the copy then needs a [`MemoryStore::reset`].
    pub fn apply_remote(&self, seq: u64, event: RegistryEvent, expires_at: u64) -> bool {
        let mut guard = self.lock();
        let state = &mut *guard;
        if seq <= state.log.seq() {
            return false;
        }
        match &event {
            RegistryEvent::Online(registration) => {
                let key = registration.key();
                let text = meta_string(&registration.meta);
                if let Some(old) = state.records.remove(registration.id.as_str()) {
                    state
                        .deadlines
                        .remove(&(old.expires_at, old.shared_id().clone()));
                }
                state.insert(RegistrationRecord::with_meta_json(
                    &key,
                    Arc::from(text),
                    registration.last_known,
                    expires_at,
                ));
            }
            RegistryEvent::Offline { id, .. } => {
                if let Some((shared_id, record)) = state.records.remove_entry(id.as_str()) {
                    state.deadlines.remove(&(record.expires_at, shared_id));
                }
            }
        }
        state.log.push_at(seq, event);
        true
    }

    /// Replaces the contents with a snapshot taken at `seq` and tells every live follower
    /// (one `Snapshot` item): the local copy of a shared store after a gap or a failover.
    pub fn reset(&self, export: StoreExport) {
        let mut state = self.lock();
        state.records.clear();
        state.deadlines.clear();
        for record in export.records {
            state.insert(record);
        }
        state.log.restart_at(export.seq);
        let item = snapshot_item(export.seq, state.collect(&ListFilter::all()));
        state.log.announce(item);
    }

    /// Sequence number of the last event applied.
    pub fn seq(&self) -> u64 {
        self.lock().log.seq()
    }

    /// Refreshes a record's deadline (and `lastKnown`) in the local copy without an event.
    pub fn touch(&self, id: &str, last_known: u64, expires_at: u64) {
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(record) = state.records.get_mut(id) {
            refresh(&mut state.deadlines, record, last_known, expires_at);
        }
    }
}

impl RegistrationStore for MemoryStore {
    fn upsert(
        &self,
        key: RegistrationKey,
        meta: Map<String, Value>,
        lease: Duration,
    ) -> StoreFuture<'_, Upserted> {
        let now = now_ms();
        let expires_at = now.saturating_add(lease.as_millis().min(u64::MAX as u128) as u64);
        let upserted = MemoryStore::upsert(self, key, meta, now, expires_at);
        Box::pin(std::future::ready(Ok(upserted)))
    }

    fn remove<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(MemoryStore::remove(self, id))))
    }

    fn list<'a>(&'a self, filter: &'a ListFilter) -> StoreFuture<'a, Vec<RegistrationRecord>> {
        Box::pin(std::future::ready(Ok(MemoryStore::list(self, filter))))
    }

    fn leases(&self) -> StoreFuture<'_, Vec<Lease>> {
        Box::pin(std::future::ready(Ok(MemoryStore::leases(self))))
    }

    fn len(&self) -> usize {
        MemoryStore::len(self)
    }

    fn contains(&self, id: &str) -> bool {
        MemoryStore::contains(self, id)
    }

    fn expire_round(&self) -> StoreFuture<'_, ExpiryRound> {
        Box::pin(std::future::ready(Ok(self.expire_round_at(now_ms()))))
    }

    fn subscribe(&self, last_seen: Option<u64>) -> StoreFuture<'_, Subscription> {
        Box::pin(std::future::ready(Ok(MemoryStore::subscribe(
            self, last_seen,
        ))))
    }

    fn snapshot(&self) -> FeedItem {
        MemoryStore::snapshot(self)
    }

    fn export(&self) -> StoreExport {
        MemoryStore::export(self)
    }

    fn import(&self, export: StoreExport, start_seq: u64) {
        MemoryStore::import(self, export, start_seq)
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
        assert_eq!(
            reg.to_registration().meta,
            meta(json!({"a": 2, "hostname": "10.0.0.1"}))
        );
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
        assert_eq!(copy.export().records, export.records);
        assert_eq!(copy.leases()[0].expires_at, 2000);
        assert_eq!(copy.leases()[0].last_known, 7);
        assert_eq!(copy.subscribe(Some(40)).backlog, vec![]);
        assert_eq!(copy.next_deadline(), Some(2000));
    }
}

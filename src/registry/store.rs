//! The storage seam of the registry: the narrow [`RegistrationStore`] trait the rest of the
//! registry talks to, and the plain data it exchanges. The HTTP API, expiry driver, snapshot
//! writer and followers only ever use this trait, so a shared store can replace the in-memory one
//! without touching them.
//!
//! # What a distributed store must provide
//!
//! A store shared by several registry nodes (Redis, etcd, ...) must give, for the whole cluster:
//!
//! - **Atomic upsert with a classified outcome.** One round trip that writes the registration,
//!   its absolute deadline (epoch ms) and `lastKnown`, and says whether the id was new, its `meta`
//!   changed, or it was a plain refresh. In Redis this is a Lua script over a hash plus a sorted
//!   set scored by deadline (the original's `__thalassa.registrations`).
//! - **An ordered deadline index** so [`RegistrationStore::next_deadline`] is O(1) and
//!   [`RegistrationStore::expire_due`] removes *every* due registration exactly once, even when
//!   several nodes race to reap (a compare-and-remove, e.g. `ZREM` returning 1).
//! - **One totally ordered event log with monotonic sequence numbers**, written in the same
//!   atomic step as the change it describes (a Redis stream, etcd's revision), so that every node
//!   serves the same `online`/`offline` history and a follower can resume on any node with
//!   `Last-Event-ID`. The original published events per node and lost them across nodes.
//! - **A consistent snapshot**: all registrations plus the sequence number they reflect, read
//!   atomically with subscribing to later events, so nothing falls between the two.
//! - Its own durability; [`RegistrationStore::export`]/[`RegistrationStore::import`] are then
//!   only used by the in-memory store's snapshot file.
//!
//! [`super::redis_store`] is that store on Redis or Valkey.

use super::feed::FeedItem;
use super::model::RegistrationKey;
use super::record::RegistrationRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::broadcast;

/// What an upsert did. Only `Created` and `MetaChanged` produce an `online` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    Created,
    MetaChanged,
    Refreshed,
}

impl UpsertOutcome {
    /// The label used in metrics (`thalassa_registry_posts_total{outcome}`).
    pub fn as_str(self) -> &'static str {
        match self {
            UpsertOutcome::Created => "created",
            UpsertOutcome::MetaChanged => "updated",
            UpsertOutcome::Refreshed => "refreshed",
        }
    }
}

/// The result of an upsert, with what the expiry driver needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upserted {
    pub outcome: UpsertOutcome,
    /// The new deadline is now the earliest one: the expiry driver must re-arm its timer.
    pub earliest_deadline_changed: bool,
}

/// Which registrations a listing returns: all, one name, or one name and version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub name: Option<String>,
    pub version: Option<String>,
}

impl ListFilter {
    pub fn all() -> Self {
        Self::default()
    }

    pub fn name(name: impl Into<String>) -> Self {
        ListFilter {
            name: Some(name.into()),
            version: None,
        }
    }

    pub fn name_version(name: impl Into<String>, version: impl Into<String>) -> Self {
        ListFilter {
            name: Some(name.into()),
            version: Some(version.into()),
        }
    }

    pub fn matches(&self, record: &RegistrationRecord) -> bool {
        self.name.as_deref().is_none_or(|n| n == record.name())
            && self
                .version
                .as_deref()
                .is_none_or(|v| v == record.version())
    }
}

/// A registration's lease, for countdowns (`GET /leases`). Times are epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: String,
    #[serde(rename = "expiresAt")]
    pub expires_at: u64,
    #[serde(rename = "lastKnown")]
    pub last_known: u64,
}

/// Everything a store holds, consistent at one sequence number.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoreExport {
    /// Sequence number of the last event reflected in `records`.
    pub seq: u64,
    /// Sorted by id.
    pub records: Vec<RegistrationRecord>,
}

/// A new follower's starting point: what it missed, then the live events.
#[derive(Debug)]
pub struct Subscription {
    /// Either one `Snapshot`, or the retained events after the follower's `last_seen`.
    pub backlog: Vec<FeedItem>,
    /// Sequence number up to which `backlog` brings the follower; live items at or below it
    /// are duplicates to skip.
    pub covered_seq: u64,
    /// Every later event. A `Lagged` error means the follower needs a fresh snapshot.
    pub live: broadcast::Receiver<FeedItem>,
}

/// Why a store could not do what was asked. The API answers 503 with `Retry-After` for both:
/// nothing was queued to be replayed later, the client must retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No answer in time, or no connection to the store's primary.
    #[error("the registration store is unreachable: {0}")]
    Unreachable(String),
    /// The store answered but could not confirm the change durably (e.g. no replica
    /// acknowledged a delete in time); the change may or may not have been applied.
    #[error("the registration store did not confirm the change: {0}")]
    Unconfirmed(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A store operation in flight. Boxed so the trait stays object-safe (`Arc<dyn ...>`); the
/// in-memory store's futures are ready at once.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'a>>;

/// What one expiry round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryRound {
    /// Ids removed in this round (each with its `offline` event, reason `expired`).
    pub expired: Vec<String>,
    /// When to run the next round at the latest (epoch ms, the store's clock): the earliest
    /// deadline left, or the end of a hold. `None`: nothing is pending.
    pub next_deadline: Option<u64>,
    /// A hold is in force (leases that ran out during a stall are kept a while).
    pub holding: bool,
}

/// How current a node's view of the store is, for `/status` and the `X-Thalassa-Stale`
/// header. The in-memory store is always current.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freshness {
    /// Milliseconds since this node last heard from the store; `None` while it is in touch.
    pub stale_ms: Option<u64>,
}

/// Storage of live registrations, their deadlines and the event log. Implementations are
/// internally synchronised. Writes are futures because a shared store is a network round trip
/// away (the heartbeat path calls `upsert` tens of thousands of times per second); `len`,
/// `contains`, `snapshot` and `export` read the node's local view and never wait.
pub trait RegistrationStore: Send + Sync + 'static {
    /// Creates or refreshes a registration for `lease` from now (the store's clock gives
    /// `lastKnown` and the deadline). `meta` replaces the old meta entirely (its `hostname`
    /// default is applied here). Meta counts as changed when its JSON text differs.
    fn upsert(
        &self,
        key: RegistrationKey,
        meta: Map<String, Value>,
        lease: Duration,
    ) -> StoreFuture<'_, Upserted>;

    /// Deletes a registration (an `offline` event with reason `deleted`). Returns whether it
    /// existed.
    fn remove<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;

    /// Registrations matching `filter`, sorted by id, with their current deadlines. A shared
    /// store that cannot be reached answers from the node's local copy (see
    /// [`RegistrationStore::freshness`]).
    fn list<'a>(&'a self, filter: &'a ListFilter) -> StoreFuture<'a, Vec<RegistrationRecord>>;

    /// Every lease, sorted by id (from the local copy when the store is unreachable).
    fn leases(&self) -> StoreFuture<'_, Vec<Lease>>;

    /// Number of live registrations (local view).
    fn len(&self) -> usize;

    /// Whether the registration `id` exists (local view).
    fn contains(&self, id: &str) -> bool;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every registration that is due (an `offline` event with reason `expired`
    /// each), exactly once however many nodes run rounds, and says when to come back. The
    /// store applies the stall hold (see [`super::expiry`]): leases that ran out while nobody
    /// could reap or heartbeat are kept for one lease length.
    fn expire_round(&self) -> StoreFuture<'_, ExpiryRound>;

    /// Starts following the event log; see [`Subscription`]. `last_seen` is the sequence number
    /// of the last item the follower processed; if the retained log still covers it, only the
    /// missed events are replayed, otherwise a snapshot is sent. A shared store first catches
    /// the node's copy up with the store, so a follower moving between nodes misses nothing.
    fn subscribe(&self, last_seen: Option<u64>) -> StoreFuture<'_, Subscription>;

    /// A complete, current `FeedItem::Snapshot` of the local view, for a follower that lagged.
    fn snapshot(&self) -> FeedItem;

    /// Everything, for the snapshot file.
    fn export(&self) -> StoreExport;

    /// Replaces the contents with a loaded export. `start_seq` is where event numbering
    /// continues (followers can resume from exactly `start_seq`, not earlier).
    fn import(&self, export: StoreExport, start_seq: u64);

    /// How current the local view is.
    fn freshness(&self) -> Freshness {
        Freshness::default()
    }

    /// The kind of shared store (`redis`, `redis+sentinel`), or `None` for a node-local one.
    /// A shared store keeps its own durability: the node writes no snapshot file.
    fn shared_kind(&self) -> Option<&'static str> {
        None
    }

    /// The store's own metrics in Prometheus text format (round trips, errors, staleness).
    fn metrics_text(&self) -> String {
        String::new()
    }

    /// Stops the store's background work (connections, the local copy's follower).
    fn close(&self) {}
}

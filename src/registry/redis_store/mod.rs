//! [`RedisStore`]: the registry's shared store on Redis or Valkey, so several registry nodes
//! serve one set of registrations and one event stream (`thalassa registry --store
//! redis://...` or `redis+sentinel://...`).
//!
//! Shape (see `functions.lua` for the keys):
//! - **Creations, meta changes, deletes and expiries** are Redis Functions: the change and its
//!   stream entry are one atomic step on the store's clock, so every node serves the same
//!   history with the same ids (stream ids, as integers: see [`functions::seq_of_stream_id`]).
//! - **A plain heartbeat** (same meta, same lease, as the node's local copy knows it) is one
//!   `ZADD XX GT CH` of the new deadline, pipelined with the other heartbeats in flight
//!   ([`heartbeats`]): no script, no event; if the registration is gone
//!   (expired or deleted meanwhile) the `ZADD` changes nothing and the full upsert re-creates
//!   it, so a refresh that races its expiry is either a refresh or an expiry + re-creation,
//!   never lost.
//! - **Expiry** is a Function any node calls (at the earliest deadline, at least every
//!   second); each due id is removed once, with its event, whichever node gets there first.
//!   The stall hold lives in the store too (`reaper` hash), measured on the store's clock
//!   between the rounds of the whole cluster.
//! - **Reads and followers** use the node's [`mirror`] (a local copy fed by the stream).
//!   Listings first catch the copy up to the stream's end, so a POST answered by node A is in
//!   a listing from node B right after; when the store is out of reach they are served from
//!   the copy, marked stale.
//! - **Failover**: [`link::Link`] follows Sentinel to the new primary; deletes wait for a
//!   replica (`WAIT 1`) under Sentinel, so an acknowledged delete survives a failover.

pub mod functions;
pub mod heartbeats;
pub mod link;
pub mod metrics;
pub mod mirror;
pub mod url;

use super::clock::now_ms;
use super::feed::FeedItem;
use super::memory_store::MemoryStore;
use super::model::{RegistrationKey, default_hostname};
use super::record::{RegistrationRecord, meta_string};
use super::store::{
    ExpiryRound, Freshness, Lease, ListFilter, RegistrationStore, StoreError, StoreExport,
    StoreFuture, StoreResult, Subscription, UpsertOutcome, Upserted,
};
use link::Link;
use redis::aio::MultiplexedConnection;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
pub use url::StoreUrl;

/// Most registrations one expiry round removes (more rounds follow at once): keeps each
/// Function call short, so heartbeats are not held up behind a mass expiry.
const REAP_LIMIT: usize = 5000;
/// How long a read waits for the local copy to catch up with the stream before it is served
/// as it is (and marked stale).
const CATCH_UP_LIMIT: Duration = Duration::from_secs(1);
/// Fewest stream entries kept, whatever `--retained-events` says.
const MIN_STREAM_LENGTH: usize = 100_000;
/// How long a delete waits for a replica to confirm it (Sentinel only).
const DELETE_CONFIRM_MS: u64 = 500;
/// How long the first connection may take at startup.
const STARTUP_LIMIT: Duration = Duration::from_secs(10);

pub struct RedisStore {
    link: Arc<Link>,
    mirror: Arc<MemoryStore>,
    /// Sequence number of the last stream entry the mirror applied.
    applied: watch::Receiver<u64>,
    /// Stream entries the store keeps (approximately): far more than one burst, so every
    /// node's copy reads a mass expiry whole.
    stream_length: usize,
    /// Deletes wait for a replica (with Sentinel, where a failover is expected).
    confirm_deletes: bool,
    /// The connection deletes and their `WAIT` share (WAIT counts this client's writes).
    delete_connection: tokio::sync::Mutex<Option<(MultiplexedConnection, u64)>>,
    /// Plain refreshes, batched into pipelines.
    heartbeats: heartbeats::Heartbeats,
    /// The latest time the expiry driver will come back (local epoch ms).
    next_round_ms: AtomicU64,
    closing: CancellationToken,
}

impl RedisStore {
    /// Connects to the store (waiting up to ten seconds for a primary), loads the local copy
    /// and starts following. Must be called inside a Tokio runtime.
    pub async fn connect(
        url: StoreUrl,
        retained_events: usize,
    ) -> Result<Arc<RedisStore>, StoreError> {
        let link = Link::new(url.clone(), functions::LIBRARY);
        let closing = CancellationToken::new();
        tokio::spawn(link.clone().keep(closing.clone()));
        if let Err(err) = link.wait_connected(STARTUP_LIMIT).await {
            closing.cancel();
            return Err(err);
        }
        let mirror = Arc::new(MemoryStore::new(0, retained_events));
        let (applied_tx, applied) = watch::channel(0);
        tokio::spawn(mirror::follow(
            link.clone(),
            mirror.clone(),
            applied_tx,
            closing.clone(),
        ));
        let heartbeats = heartbeats::Heartbeats::start(link.clone(), closing.clone());
        let store = Arc::new(RedisStore {
            heartbeats,
            link,
            mirror,
            applied,
            stream_length: retained_events.max(MIN_STREAM_LENGTH),
            confirm_deletes: matches!(url, StoreUrl::Sentinel { .. }),
            delete_connection: tokio::sync::Mutex::new(None),
            next_round_ms: AtomicU64::new(0),
            closing,
        });
        // The first snapshot, so the node never serves an empty copy as if it were current.
        let mut applied = store.applied.clone();
        let loaded = tokio::time::timeout(STARTUP_LIMIT, applied.changed()).await;
        if !matches!(loaded, Ok(Ok(()))) {
            store.closing.cancel();
            return Err(StoreError::Unreachable(
                "cannot load the store's registrations".into(),
            ));
        }
        tracing::info!(store = %url, registrations = store.mirror.len(), "registry on a shared store");
        Ok(store)
    }

    /// The local copy (tests and diagnostics).
    pub fn local_copy(&self) -> &MemoryStore {
        &self.mirror
    }

    fn timed<T>(&self, op: &str, started: Instant, result: &redis::RedisResult<T>) {
        self.link.metrics.ops.inc(&[op]);
        if result.is_ok() {
            self.link.replied();
            self.link
                .metrics
                .round_trip
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// Waits (briefly) until the local copy has applied everything the stream holds now, so
    /// a read after a write on any node sees it. Gives up quietly: the read is then served
    /// from the copy as it is, and `freshness` says so.
    async fn catch_up(&self) {
        let Ok((mut connection, generation)) = self.link.connection() else {
            return;
        };
        let started = Instant::now();
        let last: redis::RedisResult<
            Vec<(String, std::collections::HashMap<String, redis::Value>)>,
        > = redis::cmd("XREVRANGE")
            .arg(functions::EVENTS)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut connection)
            .await;
        self.timed("catch_up", started, &last);
        let target = match last {
            Ok(entries) => entries
                .first()
                .and_then(|(id, _)| functions::seq_of_stream_id(id))
                .unwrap_or(0),
            Err(err) => {
                let _ = self.link.failed(generation, err);
                return;
            }
        };
        let mut applied = self.applied.clone();
        let _ = tokio::time::timeout(CATCH_UP_LIMIT, applied.wait_for(|seq| *seq >= target)).await;
    }

    /// The cheap heartbeat: moves the deadline of a registration whose meta and lease the
    /// local copy already holds. `Ok(false)`: not applicable or the registration is gone.
    async fn refresh(&self, id: &str, meta_json: &str, lease_ms: u64) -> StoreResult<bool> {
        if !self.mirror.holds_unchanged(id, meta_json, lease_ms) {
            return Ok(false);
        }
        let deadline = self.link.store_now_ms().saturating_add(lease_ms);
        if self.heartbeats.refresh(id, deadline).await? {
            self.mirror
                .touch(id, deadline.saturating_sub(lease_ms), deadline);
            return Ok(true);
        }
        Ok(false)
    }

    async fn upsert_full(&self, id: &str, meta_json: &str, lease_ms: u64) -> StoreResult<Upserted> {
        let (mut connection, generation) = self.link.connection()?;
        let started = Instant::now();
        let reply: redis::RedisResult<(String, u64, u64, String)> =
            functions::fcall("thalassa_upsert")
                .arg(id)
                .arg(lease_ms)
                .arg(meta_json)
                .query_async(&mut connection)
                .await;
        self.timed("upsert", started, &reply);
        let (outcome, last_known, deadline, _event) =
            reply.map_err(|err| self.link.failed(generation, err))?;
        let outcome = match outcome.as_str() {
            "created" => UpsertOutcome::Created,
            "updated" => UpsertOutcome::MetaChanged,
            _ => UpsertOutcome::Refreshed,
        };
        if outcome == UpsertOutcome::Refreshed {
            self.mirror.touch(id, last_known, deadline);
        }
        // The event reaches the local copy through the stream, in order with everyone else's.
        let local_deadline =
            deadline.saturating_sub(self.link.store_now_ms().saturating_sub(now_ms()));
        Ok(Upserted {
            outcome,
            earliest_deadline_changed: local_deadline < self.next_round_ms.load(Ordering::Relaxed),
        })
    }

    async fn remove_confirmed(&self, id: &str) -> StoreResult<bool> {
        let mut slot = self.delete_connection.lock().await;
        let generation = self.link.generation();
        if slot
            .as_ref()
            .is_none_or(|(_, made_for)| *made_for != generation)
        {
            let wait_limit = Duration::from_millis(DELETE_CONFIRM_MS) + link::RESPONSE_TIMEOUT;
            *slot = Some((self.link.dedicated(wait_limit).await?, generation));
        }
        let Some((connection, _)) = slot.as_mut() else {
            return Err(StoreError::Unreachable("no connection for deletes".into()));
        };
        let started = Instant::now();
        let reply: redis::RedisResult<String> = functions::fcall("thalassa_remove")
            .arg(id)
            .query_async(connection)
            .await;
        self.timed("remove", started, &reply);
        let event = match reply {
            Ok(event) => event,
            Err(err) => {
                *slot = None;
                return Err(self.link.failed(generation, err));
            }
        };
        if self.confirm_deletes {
            // Even when nothing existed: a retried delete must not succeed before the first
            // one reached a replica.
            let replicas: redis::RedisResult<u64> = redis::cmd("WAIT")
                .arg(1)
                .arg(DELETE_CONFIRM_MS)
                .query_async(connection)
                .await;
            match replicas {
                Ok(n) if n >= 1 => {}
                // With no replica attached at all (after a failover, until the old primary
                // returns as a replica) there is nothing a later failover could promote
                // without this delete: accept, and say so.
                Ok(_) if !has_replicas(connection).await => {
                    tracing::warn!(%id, "no replica attached: the delete is on the primary only");
                }
                Ok(_) => {
                    return Err(StoreError::Unconfirmed(format!(
                        "no replica confirmed the delete within {DELETE_CONFIRM_MS} ms"
                    )));
                }
                Err(err) => {
                    *slot = None;
                    return Err(self.link.failed(generation, err));
                }
            }
        }
        Ok(!event.is_empty())
    }

    /// The local copy's records with their deadlines as the store has them now.
    async fn with_current_deadlines(
        &self,
        records: Vec<RegistrationRecord>,
    ) -> Vec<RegistrationRecord> {
        if records.is_empty() {
            return records;
        }
        let Ok((mut connection, generation)) = self.link.connection() else {
            return records;
        };
        let mut cmd = redis::cmd("ZMSCORE");
        cmd.arg(functions::DEADLINES);
        for record in &records {
            cmd.arg(record.id());
        }
        let started = Instant::now();
        let scores: redis::RedisResult<Vec<Option<f64>>> = cmd.query_async(&mut connection).await;
        self.timed("read", started, &scores);
        match scores {
            Ok(scores) if scores.len() == records.len() => {
                let mut current = Vec::with_capacity(records.len());
                for (mut record, score) in records.into_iter().zip(scores) {
                    // Gone from the store: its offline event is on its way.
                    let Some(deadline) = score else { continue };
                    let deadline = deadline as u64;
                    let lease = record.expires_at.saturating_sub(record.last_known);
                    record.expires_at = deadline;
                    record.last_known = deadline.saturating_sub(lease);
                    current.push(record);
                }
                current
            }
            Ok(_) => records,
            Err(err) => {
                let _ = self.link.failed(generation, err);
                records
            }
        }
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.closing.cancel();
    }
}

/// Whether the primary has a replica attached (`ROLE` lists them); `true` when unsure.
async fn has_replicas(connection: &mut MultiplexedConnection) -> bool {
    let role: redis::RedisResult<redis::Value> = redis::cmd("ROLE").query_async(connection).await;
    match role {
        Ok(redis::Value::Array(parts)) => {
            !matches!(parts.get(2), Some(redis::Value::Array(replicas)) if replicas.is_empty())
        }
        _ => true,
    }
}

fn lease_ms(lease: Duration) -> u64 {
    lease.as_millis().min(u64::MAX as u128) as u64
}

impl RegistrationStore for RedisStore {
    fn upsert(
        &self,
        key: RegistrationKey,
        mut meta: Map<String, Value>,
        lease: Duration,
    ) -> StoreFuture<'_, Upserted> {
        Box::pin(async move {
            default_hostname(&mut meta, &key.host);
            let text = meta_string(&meta);
            let id = key.id();
            let lease = lease_ms(lease);
            if self.refresh(&id, &text, lease).await? {
                return Ok(Upserted {
                    outcome: UpsertOutcome::Refreshed,
                    earliest_deadline_changed: false,
                });
            }
            self.upsert_full(&id, &text, lease).await
        })
    }

    fn remove<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.remove_confirmed(id))
    }

    fn list<'a>(&'a self, filter: &'a ListFilter) -> StoreFuture<'a, Vec<RegistrationRecord>> {
        Box::pin(async move {
            self.catch_up().await;
            let records = self.mirror.list(filter);
            Ok(self.with_current_deadlines(records).await)
        })
    }

    fn leases(&self) -> StoreFuture<'_, Vec<Lease>> {
        Box::pin(async move {
            let all = ListFilter::all();
            let records = self.list(&all).await?;
            Ok(records
                .iter()
                .map(|r| Lease {
                    id: r.id().to_owned(),
                    expires_at: r.expires_at,
                    last_known: r.last_known,
                })
                .collect())
        })
    }

    fn len(&self) -> usize {
        self.mirror.len()
    }

    fn contains(&self, id: &str) -> bool {
        self.mirror.contains(id)
    }

    fn expire_round(&self) -> StoreFuture<'_, ExpiryRound> {
        Box::pin(async move {
            let (mut connection, generation) = self.link.connection()?;
            let started = Instant::now();
            let reply: redis::RedisResult<(u64, String, u8, Vec<String>)> =
                functions::fcall("thalassa_reap")
                    .arg(self.stream_length)
                    .arg(REAP_LIMIT)
                    .arg(super::expiry::STALL_GAP_MS)
                    .arg(super::expiry::MAX_HOLD_MS)
                    .query_async(&mut connection)
                    .await;
            self.timed("reap", started, &reply);
            let (store_now, next, holding, expired) =
                reply.map_err(|err| self.link.failed(generation, err))?;
            // The store's times, on this node's clock.
            let offset = store_now as i64 - now_ms() as i64;
            let next_deadline = next
                .parse::<f64>()
                .ok()
                .map(|deadline| (deadline as u64).saturating_add_signed(-offset));
            self.next_round_ms.store(
                next_deadline.unwrap_or(u64::MAX).min(now_ms() + 1000),
                Ordering::Relaxed,
            );
            Ok(ExpiryRound {
                expired,
                next_deadline,
                holding: holding == 1,
            })
        })
    }

    fn subscribe(&self, last_seen: Option<u64>) -> StoreFuture<'_, Subscription> {
        Box::pin(async move {
            self.catch_up().await;
            Ok(self.mirror.subscribe(last_seen))
        })
    }

    fn snapshot(&self) -> FeedItem {
        self.mirror.snapshot()
    }

    fn export(&self) -> StoreExport {
        self.mirror.export()
    }

    fn import(&self, _export: StoreExport, _start_seq: u64) {
        tracing::warn!("a shared store is not loaded from a snapshot file: ignored");
    }

    fn freshness(&self) -> Freshness {
        Freshness {
            stale_ms: self.link.stale_ms(),
        }
    }

    fn shared_kind(&self) -> Option<&'static str> {
        Some(self.link.url().kind())
    }

    fn metrics_text(&self) -> String {
        self.link
            .metrics
            .render(self.link.stale_ms(), self.link.generation())
    }

    fn close(&self) {
        self.closing.cancel();
    }
}

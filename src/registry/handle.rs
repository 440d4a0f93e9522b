//! [`Registry`]: the cheap-to-clone handle to the live registry (store, expiry, event log,
//! snapshot file, counters). The HTTP routes, the aqueduct (in-process) and `thalassa up` all
//! go through it; it owns the background tasks that keep the store honest.

use super::clock::now_ms;
use super::expiry;
use super::feed::FeedItem;
use super::memory_store::MemoryStore;
use super::meter::{Meter, TICK_INTERVAL};
use super::model::{Registration, RegistrationKey};
use super::record::RegistrationRecord;
use super::snapshot::{self, Loaded};
use super::status::{MemoryUsage, Stats, Status, StoreStatus, ThalassaStats, resident_bytes};
use super::store::{
    Freshness, Lease, ListFilter, RegistrationStore, StoreError, StoreExport, UpsertOutcome,
};
use super::telemetry::{AxonCounters, Counters};
use super::{event_log, fanout, ttl};
use crate::api_error::ApiError;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Default of `--max-registrations`.
pub const DEFAULT_MAX_REGISTRATIONS: usize = 100_000;

/// How the registry runs.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Lease length when a POST asks for none (`--default-secs-to-expire`).
    pub default_ttl: Duration,
    /// Where the snapshot file lives; `None` keeps everything in memory only.
    pub data_dir: Option<PathBuf>,
    /// Longest time a change waits before it is written to the snapshot file.
    pub snapshot_every: Duration,
    /// Past events kept so reconnecting followers can resume.
    pub retained_events: usize,
    /// Most registrations held at once: a POST for a new one beyond it is refused
    /// (`--max-registrations`); refreshes of existing ones are always accepted.
    pub max_registrations: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            default_ttl: Duration::from_secs(10),
            data_dir: None,
            snapshot_every: Duration::from_secs(1),
            retained_events: event_log::RETAINED_EVENTS,
            max_registrations: DEFAULT_MAX_REGISTRATIONS,
        }
    }
}

/// A handle to the live registry. Clones share everything.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("registrations", &self.len())
            .field("config", &self.inner.config)
            .finish()
    }
}

struct Inner {
    store: Arc<dyn RegistrationStore>,
    config: RegistryConfig,
    counters: Counters,
    meter: Meter,
    started: Instant,
    /// Wakes the expiry driver when an earlier deadline appears.
    expiry_wake: Notify,
    /// Something changed since the last snapshot write.
    dirty: AtomicBool,
    subscribers: AtomicU64,
    /// Cancelled when the registry closes: stops background tasks and followers.
    shutdown: CancellationToken,
    /// `close` already ran (or is running).
    closed: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Plain heartbeats (no event) for the axon publisher, which relays them as the original
    /// did; sent only while someone listens.
    refreshes: broadcast::Sender<Registration>,
}

/// Heartbeats buffered for a slow listener of [`Registry::refreshes`] before it lags.
const REFRESHES_BUFFER: usize = 4096;

impl Registry {
    /// Opens the registry: loads the snapshot from `config.data_dir` (a corrupt one is reported
    /// and set aside, never fatal), then starts expiry, the meter ticker and the snapshot
    /// writer. Must be called inside a Tokio runtime. Fails only if the data directory cannot
    /// be created.
    pub fn open(config: RegistryConfig) -> Result<Registry, crate::BoxError> {
        let now = now_ms();
        let store = MemoryStore::new(fresh_start_seq(0, now), config.retained_events);
        if let Some(dir) = &config.data_dir {
            std::fs::create_dir_all(dir).map_err(|err| {
                format!("cannot create the data directory {}: {err}", dir.display())
            })?;
            restore(&store, snapshot::load(dir, now), now);
        }
        Ok(Self::start(Arc::new(store), config))
    }

    /// A registry over any store (e.g. a shared one); nothing is loaded from disk, and a
    /// shared store writes no snapshot file (it keeps its own durability).
    pub fn with_store(store: Arc<dyn RegistrationStore>, config: RegistryConfig) -> Registry {
        Self::start(store, config)
    }

    fn start(store: Arc<dyn RegistrationStore>, config: RegistryConfig) -> Registry {
        let registry = Registry {
            inner: Arc::new(Inner {
                store,
                config,
                counters: Counters::default(),
                meter: Meter::new(Instant::now()),
                started: Instant::now(),
                expiry_wake: Notify::new(),
                dirty: AtomicBool::new(false),
                subscribers: AtomicU64::new(0),
                shutdown: CancellationToken::new(),
                closed: AtomicBool::new(false),
                tasks: Mutex::new(Vec::new()),
                refreshes: broadcast::channel(REFRESHES_BUFFER).0,
            }),
        };
        let mut tasks = vec![
            tokio::spawn(expiry::drive(registry.clone())),
            tokio::spawn(tick_meter(registry.clone())),
        ];
        if registry.writes_snapshots() {
            tasks.push(tokio::spawn(write_snapshots(registry.clone())));
        }
        registry.lock_tasks().extend(tasks);
        registry
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// Applies a `POST /registrations/...` body: it must be a JSON object (or empty) and becomes
    /// the meta; its `secondsToExpire` sets the lease. Invalid input changes nothing.
    pub async fn post(&self, key: RegistrationKey, body: Value) -> Result<UpsertOutcome, ApiError> {
        let meta = match body {
            Value::Object(meta) => meta,
            Value::Null => Map::new(),
            _ => {
                return Err(ApiError::bad_field(
                    "body",
                    "request body must be a JSON object",
                ));
            }
        };
        let lease = ttl::lease_duration(&meta, self.inner.config.default_ttl)?;
        self.check_capacity(&key)?;
        self.register(key, meta, lease)
            .await
            .map_err(store_unavailable)
    }

    /// Refuses a new registration when the registry is full. Concurrent POSTs may overshoot
    /// the cap by the number in flight: a brake against floods, not an exact quota.
    fn check_capacity(&self, key: &RegistrationKey) -> Result<(), ApiError> {
        let max = self.inner.config.max_registrations;
        if self.inner.store.len() < max || self.inner.store.contains(&key.id()) {
            return Ok(());
        }
        self.inner.counters.count_refused_at_capacity();
        Err(ApiError {
            status: axum::http::StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "the registry holds its maximum of {max} registrations (--max-registrations)"
            ),
            field: Some("registrations".into()),
        })
    }

    /// Creates or refreshes a registration for `lease` from now. `meta` replaces the old one.
    pub async fn register(
        &self,
        key: RegistrationKey,
        meta: Map<String, Value>,
        lease: Duration,
    ) -> Result<UpsertOutcome, StoreError> {
        // Kept only while a heartbeat listener exists: the common path clones nothing.
        let tapped =
            (self.inner.refreshes.receiver_count() > 0).then(|| (key.clone(), meta.clone()));
        let upserted = self
            .inner
            .store
            .upsert(key, meta, lease)
            .await
            .inspect_err(|_| self.inner.counters.store_errors.inc())?;
        if let (Some((key, meta)), UpsertOutcome::Refreshed) = (tapped, upserted.outcome) {
            let _ = self
                .inner
                .refreshes
                .send(Registration::new(key, now_ms(), meta));
        }
        if upserted.earliest_deadline_changed {
            self.inner.expiry_wake.notify_one();
        }
        self.inner.counters.count_post(upserted.outcome);
        self.inner.meter.mark();
        self.inner.dirty.store(true, Ordering::Relaxed);
        Ok(upserted.outcome)
    }

    /// Deletes a registration; returns whether it existed.
    pub async fn deregister(&self, id: &str) -> Result<bool, StoreError> {
        let existed = self
            .inner
            .store
            .remove(id)
            .await
            .inspect_err(|_| self.inner.counters.store_errors.inc())?;
        self.inner.counters.count_delete(existed);
        if existed {
            self.inner.dirty.store(true, Ordering::Relaxed);
        }
        Ok(existed)
    }

    /// Counts a refused POST (for `thalassa_registry_posts_total{outcome="rejected"}`).
    pub fn record_rejected_post(&self) {
        self.inner.counters.posts_rejected.inc();
    }

    /// Registrations matching `filter`, sorted by id.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Registration>, StoreError> {
        Ok(self
            .list_records(filter)
            .await?
            .iter()
            .map(RegistrationRecord::to_registration)
            .collect())
    }

    /// Like [`Registry::list`], as compact records (the HTTP listing writes JSON from these
    /// without building full values).
    pub async fn list_records(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<RegistrationRecord>, StoreError> {
        self.inner.store.list(filter).await
    }

    /// Every registration's absolute expiry and `lastKnown` (epoch ms), sorted by id.
    pub async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        self.inner.store.leases().await
    }

    /// How current this node's view of the store is.
    pub fn freshness(&self) -> Freshness {
        self.inner.store.freshness()
    }

    pub fn len(&self) -> usize {
        self.inner.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Follows the change feed: first a `Snapshot` (or, when `last_seen` is still in the
    /// retained log, just the missed events), then every event live. A follower that falls too
    /// far behind gets a fresh `Snapshot` instead of silently missing events. The channel
    /// closes when the registry shuts down.
    pub fn subscribe(&self, last_seen: Option<u64>) -> mpsc::Receiver<FeedItem> {
        fanout::forward(
            last_seen,
            self.inner.store.clone(),
            self.inner.shutdown.clone(),
            SubscriberCount(self.clone()),
        )
    }

    /// This node's plain heartbeats (refreshes that change nothing, so are not feed events),
    /// as registrations with `lastKnown` = now. A listener that falls behind lags (loses the
    /// oldest), it never slows a heartbeat.
    pub fn refreshes(&self) -> broadcast::Receiver<Registration> {
        self.inner.refreshes.subscribe()
    }

    pub fn axon_counters(&self) -> &AxonCounters {
        &self.inner.counters.axon
    }

    /// The `GET /status` document.
    pub fn status(&self) -> Status {
        let now = Instant::now();
        Status {
            name: "thalassa",
            version: env!("CARGO_PKG_VERSION"),
            uptime: now
                .saturating_duration_since(self.inner.started)
                .as_secs_f64(),
            memory_usage: MemoryUsage {
                rss: resident_bytes(),
            },
            stats: Stats {
                thalassa: ThalassaStats {
                    registrations_per_second: self.inner.meter.read(now),
                },
            },
            store: self.inner.store.shared_kind().map(|kind| StoreStatus {
                kind,
                stale_ms: self.inner.store.freshness().stale_ms,
            }),
        }
    }

    /// The `GET /metrics` document.
    pub fn metrics_text(&self) -> String {
        let mut text = self
            .inner
            .counters
            .render(self.len(), self.inner.subscribers.load(Ordering::Relaxed));
        text.push_str(&self.inner.store.metrics_text());
        text
    }

    /// A token cancelled when the registry closes; long-lived responses end with it.
    /// Cancelling it ends every follower's feed and stops the background tasks early (the
    /// server does this at shutdown so open event streams do not hold up the drain);
    /// [`Registry::close`] must still be called for the final snapshot.
    pub fn closing(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Stops the background tasks and followers, then writes a final (clean) snapshot.
    /// Idempotent.
    pub async fn close(&self) {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.inner.shutdown.cancel();
        let tasks: Vec<_> = self.lock_tasks().drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
        self.inner.store.close();
        if self.writes_snapshots() {
            self.write_snapshot(true).await;
        }
    }

    /// A snapshot file is written for a local store with a data directory; a shared store
    /// keeps its own durability.
    fn writes_snapshots(&self) -> bool {
        self.inner.config.data_dir.is_some() && self.inner.store.shared_kind().is_none()
    }

    /// Runs one expiry round; returns when the next one is due at the latest (`Some(None)`:
    /// nothing pending), or `None` when the store did not answer.
    pub(crate) async fn expire_round(&self) -> Option<Option<u64>> {
        let round = match self.inner.store.expire_round().await {
            Ok(round) => round,
            Err(err) => {
                self.inner.counters.store_errors.inc();
                tracing::debug!(error = %err, "expiry round failed");
                return None;
            }
        };
        if !round.expired.is_empty() {
            self.inner.counters.count_expired(round.expired.len());
            self.inner.dirty.store(true, Ordering::Relaxed);
            for id in &round.expired {
                tracing::debug!(id = %id, "registration expired");
            }
        }
        Some(round.next_deadline)
    }

    pub(crate) fn expiry_wake(&self) -> &Notify {
        &self.inner.expiry_wake
    }

    async fn write_snapshot(&self, clean: bool) {
        let Some(dir) = self.inner.config.data_dir.clone() else {
            return;
        };
        let store = self.inner.store.clone();
        // Serialising 100k registrations and fsyncing takes a while: keep it off the workers.
        let written = tokio::task::spawn_blocking(move || {
            let export: StoreExport = store.export();
            snapshot::save(&dir, &export, clean, now_ms())
        })
        .await;
        match written {
            Ok(Ok(())) => self.inner.counters.snapshot_writes_ok.inc(),
            Ok(Err(err)) => {
                self.inner.counters.snapshot_writes_failed.inc();
                // Retry on the next tick rather than lose the change.
                self.inner.dirty.store(true, Ordering::Relaxed);
                tracing::error!(error = %err, "cannot write the registrations snapshot");
            }
            Err(err) => {
                self.inner.counters.snapshot_writes_failed.inc();
                self.inner.dirty.store(true, Ordering::Relaxed);
                tracing::error!(error = %err, "snapshot writer task failed");
            }
        }
    }
}

/// A store that cannot take a write: 503, and the client retries (nothing is queued).
fn store_unavailable(err: StoreError) -> ApiError {
    ApiError::unavailable(err.to_string())
}

/// Keeps `thalassa_registry_subscribers` right for as long as a follower exists.
pub(crate) struct SubscriberCount(Registry);

impl SubscriberCount {
    pub(crate) fn started(&self) {
        self.0.inner.subscribers.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for SubscriberCount {
    fn drop(&mut self) {
        self.0.inner.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where event numbering starts when followers cannot resume across the start (first start, or
/// after a crash, when events after the last snapshot write were lost): past anything a
/// previous run can have issued, so a stale `Last-Event-ID` is never mistaken for a current
/// one. Epoch ms × 1000 stays ahead unless a run averaged over 1000 events per millisecond.
fn fresh_start_seq(persisted_seq: u64, now_ms: u64) -> u64 {
    persisted_seq
        .saturating_add(1)
        .max(now_ms.saturating_mul(1000))
}

fn restore(store: &MemoryStore, loaded: Loaded, now: u64) {
    match loaded {
        Loaded::Missing => tracing::info!("no registrations snapshot yet: starting empty"),
        Loaded::Snapshot {
            export,
            clean,
            skipped,
        } => {
            for reason in &skipped {
                tracing::warn!(reason = %reason, "dropped an invalid snapshot entry");
            }
            // After a graceful shutdown nothing happened after `seq`, so followers may resume
            // right there; otherwise events may have been lost with the process.
            let start_seq = if clean {
                export.seq
            } else {
                fresh_start_seq(export.seq, now)
            };
            tracing::info!(
                registrations = export.records.len(),
                clean,
                seq = start_seq,
                "restored registrations from the snapshot"
            );
            store.import(export, start_seq);
        }
        Loaded::Corrupt { error, moved_to } => {
            tracing::error!(
                error = %error,
                moved_to = %moved_to.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                "the registrations snapshot is unreadable: starting empty"
            );
        }
    }
}

async fn tick_meter(registry: Registry) {
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + TICK_INTERVAL, TICK_INTERVAL);
    loop {
        tokio::select! {
            _ = registry.inner.shutdown.cancelled() => return,
            _ = ticks.tick() => registry.inner.meter.tick(),
        }
    }
}

/// Writes the snapshot at most every `snapshot_every`, and only when something changed: the
/// heartbeat path only sets a flag.
async fn write_snapshots(registry: Registry) {
    let every = registry.inner.config.snapshot_every;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = registry.inner.shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if registry.inner.dirty.swap(false, Ordering::Relaxed) {
            registry.write_snapshot(false).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_sequence_never_goes_back() {
        assert_eq!(fresh_start_seq(0, 1_700_000_000_000), 1_700_000_000_000_000);
        assert_eq!(fresh_start_seq(u64::MAX - 1, 5), u64::MAX);
        assert_eq!(
            fresh_start_seq(2_000_000_000_000_000, 1_700_000_000_000),
            2_000_000_000_000_001
        );
    }
}

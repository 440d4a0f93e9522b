//! The live hub: the one place the UI's state lives (config, latest stats, chart history,
//! activity). The control plane pushes into it; every open page gets a snapshot and then the
//! same deltas, in the order they were pushed.

use super::activity::{ActivityLog, ActivityRecord};
use super::stats::{History, HistoryView};
use crate::status::{Activity, StatsSample, StatusSink, now_ms};
use serde::Serialize;
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, watch};

/// Activities kept in memory and on disk.
pub const ACTIVITY_CAPACITY: usize = 1000;
/// Activities carried by a snapshot; older ones are paged in by the Activity page.
pub const SNAPSHOT_ACTIVITY: usize = 200;
/// Stats samples kept for the charts (5 minutes at one poll every 2 s).
pub const HISTORY_CAPACITY: usize = 150;
/// Deltas a slow page may fall behind before it is resynchronised with a fresh snapshot.
const DELTA_BUFFER: usize = 256;

/// A cheap handle to the hub; clones share it.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    deltas: broadcast::Sender<Delta>,
    /// Set by [`Hub::close`]: every open event stream ends.
    closed: watch::Sender<bool>,
}

struct State {
    config: Value,
    latest_stats: Option<StatsSample>,
    history: History,
    activity: ActivityLog,
}

/// One change as pages receive it: an SSE event name and its JSON, encoded once for all pages.
#[derive(Debug, Clone)]
pub(crate) struct Delta {
    pub(crate) event: &'static str,
    pub(crate) data: Arc<str>,
}

/// What a page gets first: everything it needs to draw, charts included.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot<'a> {
    server_time: u64,
    history_capacity: usize,
    config: &'a Value,
    stats: Option<&'a StatsSample>,
    history: HistoryView,
    activity: Vec<ActivityRecord>,
}

impl Hub {
    /// Opens the hub, loading the persisted activity from `<data_dir>/activity.jsonl`
    /// (creating `data_dir` if needed).
    pub fn open(data_dir: &Path) -> Result<Hub, crate::BoxError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|err| format!("cannot create {}: {err}", data_dir.display()))?;
        let path = data_dir.join("activity.jsonl");
        let activity = ActivityLog::open(&path, ACTIVITY_CAPACITY)
            .map_err(|err| format!("cannot load {}: {err}", path.display()))?;
        let (deltas, _) = broadcast::channel(DELTA_BUFFER);
        Ok(Hub {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    config: serde_json::json!({"frontends": [], "backends": []}),
                    latest_stats: None,
                    history: History::new(HISTORY_CAPACITY),
                    activity,
                }),
                deltas,
                closed: watch::Sender::new(false),
            }),
        })
    }

    /// Records, persists and broadcasts one activity.
    pub fn activity(&self, entry: Activity) {
        let mut state = self.lock();
        let record = state.activity.record(entry);
        self.broadcast(&state, "activity", &record);
    }

    /// Replaces the config the Overview draws: `{"frontends": [..], "backends": [..]}` as the
    /// API's GETs return them (frontends may carry `waitingForBackend`).
    pub fn config(&self, config: Value) {
        let mut state = self.lock();
        if state.config == config {
            return;
        }
        state.config = config;
        self.broadcast(&state, "config", &state.config);
    }

    /// Keeps a stats sample (latest + history) and broadcasts it.
    pub fn stats(&self, sample: StatsSample) {
        let mut state = self.lock();
        state.history.push(&sample);
        self.broadcast(&state, "stats", &sample);
        state.latest_stats = Some(sample);
    }

    /// Ends every open `/events` stream (and refuses new ones). Call it before a graceful
    /// shutdown: an event stream never ends by itself, so the server would otherwise wait on
    /// open pages forever. The pages reconnect to the next process on their own.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    pub(crate) fn closed(&self) -> watch::Receiver<bool> {
        self.inner.closed.subscribe()
    }

    /// The newest `limit` activities, oldest first.
    pub fn recent_activity(&self, limit: usize) -> Vec<ActivityRecord> {
        self.lock().activity.recent(limit)
    }

    /// Up to `limit` activities older than id `before`, oldest first.
    pub fn activity_before(&self, before: u64, limit: usize) -> Vec<ActivityRecord> {
        self.lock().activity.before(before, limit)
    }

    /// The snapshot a newly connected page receives, as JSON.
    pub fn snapshot_json(&self) -> String {
        self.subscribe().0
    }

    /// The snapshot JSON and a receiver of every delta after it. Both are taken under the
    /// state lock, and deltas are sent under it too, so nothing is missed or seen twice.
    pub(crate) fn subscribe(&self) -> (String, broadcast::Receiver<Delta>) {
        let state = self.lock();
        let receiver = self.inner.deltas.subscribe();
        let snapshot = Snapshot {
            server_time: now_ms(),
            history_capacity: HISTORY_CAPACITY,
            config: &state.config,
            stats: state.latest_stats.as_ref(),
            history: state.history.view(),
            activity: state.activity.recent(SNAPSHOT_ACTIVITY),
        };
        let json = serde_json::to_string(&snapshot).unwrap_or_else(|_| "null".to_owned());
        (json, receiver)
    }

    fn broadcast(&self, _held: &MutexGuard<'_, State>, event: &'static str, data: &impl Serialize) {
        let Ok(json) = serde_json::to_string(data) else {
            return;
        };
        // No receivers is normal (no page open): nothing to do.
        let _ = self.inner.deltas.send(Delta {
            event,
            data: json.into(),
        });
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters to a status page; keep serving rather than poison every later call.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The hub is where membership's reports go: activities to the log and every page, samples to
/// the charts.
impl StatusSink for Hub {
    fn activity(&self, entry: Activity) {
        Hub::activity(self, entry);
    }

    fn stats(&self, sample: StatsSample) {
        Hub::stats(self, sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn open() -> (tempfile::TempDir, Hub) {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::open(dir.path()).unwrap();
        (dir, hub)
    }

    fn snapshot(hub: &Hub) -> Value {
        serde_json::from_str(&hub.subscribe().0).unwrap()
    }

    #[test]
    fn a_snapshot_has_everything_a_page_draws() {
        let (_dir, hub) = open();
        hub.config(json!({"frontends": [{"key": "web"}], "backends": []}));
        hub.activity(Activity::now("started", "aqueduct", json!({})));
        let mut sample = StatsSample {
            time_ms: 42,
            ..StatsSample::default()
        };
        sample.frontends.insert("web".into(), Default::default());
        hub.stats(sample);
        let snap = snapshot(&hub);
        assert_eq!(snap["config"]["frontends"][0]["key"], "web");
        assert_eq!(snap["stats"]["time"], 42);
        assert_eq!(snap["history"]["times"], json!([42]));
        assert_eq!(snap["history"]["frontends"]["web"]["scur"], json!([0]));
        assert_eq!(snap["activity"][0]["verb"], "started");
        assert!(snap["serverTime"].as_u64().unwrap() > 0);
    }

    #[test]
    fn deltas_follow_the_snapshot_in_order() {
        let (_dir, hub) = open();
        let (_, mut rx) = hub.subscribe();
        hub.config(json!({"frontends": [], "backends": [{"key": "b"}]}));
        hub.config(json!({"frontends": [], "backends": [{"key": "b"}]}));
        hub.activity(Activity::now("online", "/b/1/127.0.0.1/1", json!({})));
        hub.stats(StatsSample::default());
        let events: Vec<&str> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|d| d.event)
            .collect();
        assert_eq!(
            events,
            ["config", "activity", "stats"],
            "an unchanged config is not resent"
        );
    }

    #[test]
    fn activity_persists_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::open(dir.path()).unwrap();
        hub.activity(Activity::now("reloaded", "haproxy", json!({"reason": "x"})));
        drop(hub);
        let hub = Hub::open(dir.path()).unwrap();
        let recent = hub.recent_activity(10);
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].activity.detail["reason"], "x");
        assert_eq!(snapshot(&hub)["activity"][0]["verb"], "reloaded");
    }
}

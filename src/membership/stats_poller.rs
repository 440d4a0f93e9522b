//! The stats poller: reads `show stat` once a second and publishes what it shows (the status board, the UI's stats samples, member UP/DOWN activity,
//! the members-by-status gauge). It runs beside the manager rather than inside its loop so a
//! dump of thousands of servers never delays a join or a drain.

use super::metrics::MembershipMetrics;
use super::plan::Phase;
use super::sample::sample_from_rows;
use crate::config::Config;
use crate::haproxy::runtime::{RuntimeClient, RuntimeError};
use crate::status::{Activity, StatsSample, StatusBoard, StatusSink, now_ms};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What the manager knows that `show stat` does not: the config the sample is shaped by, and
/// each member's phase (joining members show `DOWN` until their first passing check).
pub struct StatsRequest {
    pub config: Arc<Config>,
    pub phases: BTreeMap<(String, String), Phase>,
    /// `(backend, server)` -> version, for the members of backends in a rollout.
    pub versions: BTreeMap<(String, String), String>,
}

pub struct StatsPoller {
    /// The manager's client (one connection, serialised): the supervisor holds it during a
    /// reload, so a sample never comes from a worker that is being replaced.
    pub runtime: RuntimeClient,
    pub board: StatusBoard,
    pub sink: Option<Arc<dyn StatusSink>>,
    pub metrics: Arc<MembershipMetrics>,
}

impl StatsPoller {
    /// Polls once per request; a request that arrives while a poll runs waits for the next
    /// (the channel holds one), so a slow HAProxy is polled less often, never piled up.
    /// Starts polling on `runtime`; the sender asks for a poll.
    pub fn spawn(self, runtime: &tokio::runtime::Handle) -> mpsc::Sender<StatsRequest> {
        let (tx, rx) = mpsc::channel(1);
        runtime.spawn(self.run(rx));
        tx
    }

    async fn run(self, mut requests: mpsc::Receiver<StatsRequest>) {
        let mut last_status = BTreeMap::new();
        while let Some(request) = requests.recv().await {
            match self.poll(&request).await {
                Ok(mut sample) => {
                    sample.degraded = self.board.brake().all();
                    sample.refused = self.board.refused_by_address();
                    last_status = self.note_transitions(&sample, last_status);
                    self.board.replace(sample.clone());
                    if let Some(sink) = &self.sink {
                        sink.stats(sample);
                    }
                }
                Err(err) => tracing::debug!(error = %err, "stats poll failed"),
            }
        }
    }

    async fn poll(&self, request: &StatsRequest) -> Result<StatsSample, RuntimeError> {
        let rows = self.runtime.show_stat().await?;
        let frontends: Vec<String> = request.config.frontends.keys().cloned().collect();
        let backends: Vec<String> = request.config.backends.keys().cloned().collect();
        Ok(sample_from_rows(
            &rows,
            &request.phases,
            &request.versions,
            &frontends,
            &backends,
            now_ms(),
        ))
    }

    /// Member UP/DOWN transitions become activity entries and update the status gauge;
    /// returns the statuses to compare the next sample with.
    fn note_transitions(
        &self,
        sample: &StatsSample,
        last_status: BTreeMap<(String, String), String>,
    ) -> BTreeMap<(String, String), String> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut seen = BTreeMap::new();
        for (backend, members) in &sample.members {
            for member in members {
                *counts.entry(member.status.clone()).or_default() += 1;
                let key = (backend.clone(), member.server.clone());
                let before = last_status.get(&key);
                let is_up = member.status == "UP";
                let was_up = before.is_some_and(|s| s == "UP");
                if before.is_some() && is_up != was_up && member.status != "DRAIN" {
                    let verb = if is_up { "member-up" } else { "member-down" };
                    tracing::info!(backend = %backend, server = %member.server, status = %member.status,
                        check = ?member.check_status, "member status changed");
                    if let Some(sink) = &self.sink {
                        sink.activity(Activity::now(
                            verb,
                            format!("{backend}/{}", member.server),
                            json!({
                                "status": member.status,
                                "check_status": member.check_status,
                                "check_duration_ms": member.check_duration_ms,
                            }),
                        ));
                    }
                }
                seen.insert(key, member.status.clone());
            }
        }
        self.metrics.set_members_by_status(counts);
        seen
    }
}

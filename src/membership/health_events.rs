//! Passing health checks the moment HAProxy makes them: its `thalassa-health` ring (see
//! haproxy/base.cfg) streamed on a connection of its own. A joining server that passes a check
//! is set ready by the manager's next round, which this starts at once instead of at the next
//! transition round; the polled rounds stay the safety net for whatever the stream misses
//! (events dropped by the ring, a reload or restart between two streams).

use super::metrics::MembershipMetrics;
use super::plan::ServerRef;
use crate::haproxy::render::HEALTH_RING;
use crate::haproxy::runtime::RuntimeClient;
use crate::haproxy::stat::{HealthEvent, parse_health_event};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What the manager hears from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthNews {
    /// A check of this server passed.
    Passed(ServerRef),
    /// Events may have been missed: look at every backend.
    Missed,
}

/// Reconnects after a failure wait this long at first, doubling up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct HealthListener {
    /// Its own connection (the stream cannot share one), behind the reload gate.
    pub runtime: RuntimeClient,
    pub reloads: watch::Receiver<u64>,
    pub restarts: watch::Receiver<u64>,
    pub metrics: Arc<MembershipMetrics>,
}

impl HealthListener {
    pub fn spawn(self) -> mpsc::Receiver<HealthNews> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(self.run(tx));
        rx
    }

    async fn run(mut self, tx: mpsc::Sender<HealthNews>) {
        let mut backoff = FIRST_BACKOFF;
        let mut said_unavailable = false;
        loop {
            self.reloads.borrow_and_update();
            self.restarts.borrow_and_update();
            let opened = self.runtime.stream_events(HEALTH_RING).await;
            if opened.is_ok() {
                self.metrics.health_events.inc(&["stream-opened"]);
            }
            let ended = match opened {
                Ok(mut stream) => loop {
                    tokio::select! {
                        line = stream.next_line() => match line {
                            Ok(Some(line)) => {
                                backoff = FIRST_BACKOFF;
                                if line.contains("No such event sink") {
                                    break Ended::NoRing;
                                }
                                let event = parse_health_event(&line);
                                self.metrics.health_events.inc(&[kind_of(&event)]);
                                if let Some(news) = news_of(event)
                                    && tx.send(news).await.is_err()
                                {
                                    return;
                                }
                            }
                            Ok(None) | Err(_) => break Ended::Closed,
                        },
                        // The stream stays with the old worker, which checks nothing more.
                        _ = self.reloads.changed() => break Ended::NewWorker,
                        _ = self.restarts.changed() => break Ended::NewWorker,
                        () = tx.closed() => return,
                    }
                },
                Err(err) => {
                    tracing::debug!(error = %err, "health events: cannot stream the ring");
                    Ended::Closed
                }
            };
            match ended {
                Ended::NewWorker => {
                    backoff = FIRST_BACKOFF;
                    continue;
                }
                Ended::NoRing if !said_unavailable => {
                    // An HAProxy started from an older config (a takeover): until its first
                    // reload, joins are noticed by the polled rounds only.
                    tracing::info!("haproxy has no {HEALTH_RING} ring yet; readiness is polled");
                    said_unavailable = true;
                }
                _ => {}
            }
            if tx.send(HealthNews::Missed).await.is_err() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

enum Ended {
    NewWorker,
    NoRing,
    Closed,
}

fn kind_of(event: &HealthEvent) -> &'static str {
    match event {
        HealthEvent::CheckPassed { .. } => "passed",
        HealthEvent::CheckFailed { .. } => "failed",
        HealthEvent::Dropped { .. } => "dropped",
        HealthEvent::Other => "other",
    }
}

fn news_of(event: HealthEvent) -> Option<HealthNews> {
    match event {
        HealthEvent::CheckPassed { backend, server } => {
            Some(HealthNews::Passed(ServerRef { backend, server }))
        }
        HealthEvent::Dropped { .. } => Some(HealthNews::Missed),
        HealthEvent::CheckFailed { .. } | HealthEvent::Other => None,
    }
}

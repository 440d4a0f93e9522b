//! The apply pipeline's Prometheus metrics.

use crate::metrics::{CounterVec, Gauge, Histogram, PromText};

const RELOAD_SECONDS_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug)]
pub struct ApplyMetrics {
    /// `outcome`: ok, rejected, failed, unavailable.
    pub reloads: CounterVec,
    /// Successful reloads, request to verified new worker.
    pub reload_seconds: Histogram,
    /// Size of the config HAProxy runs.
    pub config_bytes: Gauge,
    /// `outcome`: applied, rejected (haproxy -c refused it), failed (reload or save failed).
    pub changes: CounterVec,
    /// Changes queued and not answered yet.
    pub pending: Gauge,
}

impl Default for ApplyMetrics {
    fn default() -> Self {
        ApplyMetrics {
            reloads: CounterVec::new(&["outcome"]),
            reload_seconds: Histogram::new(RELOAD_SECONDS_BUCKETS),
            config_bytes: Gauge::default(),
            changes: CounterVec::new(&["outcome"]),
            pending: Gauge::default(),
        }
    }
}

impl ApplyMetrics {
    /// The pipeline's metrics alone, as Prometheus text.
    pub fn text(&self) -> String {
        let mut text = PromText::new();
        self.render(&mut text);
        text.finish()
    }

    pub fn render(&self, text: &mut PromText) {
        text.counter_vec(
            "thalassa_haproxy_reloads_total",
            "HAProxy reloads requested by the aqueduct, by outcome",
            &self.reloads,
        )
        .histogram(
            "thalassa_haproxy_reload_duration_seconds",
            "Duration of successful HAProxy reloads",
            &self.reload_seconds,
        )
        .gauge(
            "thalassa_haproxy_config_bytes",
            "Size of the configuration HAProxy runs",
            self.config_bytes.get(),
        )
        .counter_vec(
            "thalassa_aqueduct_changes_total",
            "Frontend and backend changes, by outcome",
            &self.changes,
        )
        .gauge(
            "thalassa_aqueduct_pending_changes",
            "Changes waiting to be applied",
            self.pending.get(),
        );
    }
}

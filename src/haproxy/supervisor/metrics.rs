//! Counters the supervisor keeps for `/metrics`: reloads by outcome, their duration, config
//! checks, and unplanned restarts.

use crate::metrics::{Counter, CounterVec, Histogram, PromText};

/// Reload durations span ~25 ms (small config) to ~0.5 s (50k servers).
const RELOAD_SECONDS_BOUNDS: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug)]
pub struct SupervisorMetrics {
    /// `outcome`: ok, rejected (haproxy -c), failed (master reported failure), unavailable.
    pub reloads: CounterVec,
    /// Successful reloads only: request to verified new worker.
    pub reload_seconds: Histogram,
    /// `outcome`: valid, rejected.
    pub config_checks: CounterVec,
    /// HAProxy died and was started again.
    pub restarts: Counter,
}

impl Default for SupervisorMetrics {
    fn default() -> Self {
        SupervisorMetrics {
            reloads: CounterVec::new(&["outcome"]),
            reload_seconds: Histogram::new(RELOAD_SECONDS_BOUNDS),
            config_checks: CounterVec::new(&["outcome"]),
            restarts: Counter::default(),
        }
    }
}

impl SupervisorMetrics {
    pub fn render(&self, out: &mut PromText) {
        out.counter_vec(
            "thalassa_haproxy_master_reloads_total",
            "HAProxy reloads by outcome.",
            &self.reloads,
        )
        .histogram(
            "thalassa_haproxy_master_reload_duration_seconds",
            "Time from reload request to the new worker answering.",
            &self.reload_seconds,
        )
        .counter_vec(
            "thalassa_haproxy_config_checks_total",
            "haproxy -c runs by outcome.",
            &self.config_checks,
        )
        .counter(
            "thalassa_haproxy_restarts_total",
            "Times HAProxy died and was restarted.",
            &self.restarts,
        );
    }
}

//! The store's metrics: round trips, errors and staleness (`thalassa_registry_store_*`).

use crate::metrics::{CounterVec, Histogram, PromText};

const ROUND_TRIP_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
];

#[derive(Debug)]
pub struct StoreMetrics {
    pub ops: CounterVec,
    pub errors: CounterVec,
    pub round_trip: Histogram,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            ops: CounterVec::new(&["op"]),
            errors: CounterVec::new(&["kind"]),
            round_trip: Histogram::new(ROUND_TRIP_BOUNDS),
        }
    }
}

impl StoreMetrics {
    pub fn render(&self, stale_ms: Option<u64>, generation: u64) -> String {
        let mut text = PromText::new();
        text.counter_vec(
            "thalassa_registry_store_ops_total",
            "Store commands by operation (heartbeat = the cheap refresh path).",
            &self.ops,
        );
        text.counter_vec(
            "thalassa_registry_store_errors_total",
            "Store command failures by kind (timeout, connection, readonly, reply).",
            &self.errors,
        );
        text.histogram(
            "thalassa_registry_store_round_trip_seconds",
            "Round trip of store writes and expiry rounds.",
            &self.round_trip,
        );
        text.gauge(
            "thalassa_registry_store_stale_seconds",
            "Seconds since the store last answered, when reads are served from the local copy (0 = in touch).",
            stale_ms.map_or(0.0, |ms| ms as f64 / 1000.0),
        );
        text.gauge(
            "thalassa_registry_store_connections_total",
            "Primary connections made so far (a failover or reconnect adds one).",
            generation as f64,
        );
        text.finish()
    }
}

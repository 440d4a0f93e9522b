//! The registry's Prometheus metrics (`GET /metrics`, prefix `thalassa_registry_`). Each series
//! is a plain atomic so counting costs nothing on the heartbeat path; labels are attached only
//! when rendering.

use super::store::UpsertOutcome;
use crate::metrics::{Counter, CounterVec, Gauge, PromText};

#[derive(Debug, Default)]
pub struct Counters {
    pub posts_created: Counter,
    pub posts_updated: Counter,
    pub posts_refreshed: Counter,
    pub posts_rejected: Counter,
    pub deletes_deleted: Counter,
    pub deletes_unknown: Counter,
    pub expired: Counter,
    pub events_online: Counter,
    pub events_offline: Counter,
    pub snapshot_writes_ok: Counter,
    pub snapshot_writes_failed: Counter,
    /// New registrations refused because `--max-registrations` was reached (also counted as
    /// rejected POSTs).
    pub refused_at_capacity: Counter,
    /// Store operations that failed (unreachable, timed out, unconfirmed): each answered 503.
    pub store_errors: Counter,
    /// The axon push socket (`--axon-listen`), for the original stack's subscribers.
    pub axon: AxonCounters,
}

/// What the axon publisher reports; all zero when it is off.
#[derive(Debug, Default)]
pub struct AxonCounters {
    /// Messages published (each to every subscriber connected at the time).
    pub messages: Counter,
    /// Subscribers disconnected because their queue was full.
    pub dropped_slow: Counter,
    subscribers: Gauge,
}

impl AxonCounters {
    pub fn set_subscribers(&self, n: usize) {
        self.subscribers.set(n as f64);
    }
}

impl Counters {
    pub fn count_post(&self, outcome: UpsertOutcome) {
        match outcome {
            UpsertOutcome::Created => {
                self.posts_created.inc();
                self.events_online.inc();
            }
            UpsertOutcome::MetaChanged => {
                self.posts_updated.inc();
                self.events_online.inc();
            }
            UpsertOutcome::Refreshed => self.posts_refreshed.inc(),
        }
    }

    pub fn count_refused_at_capacity(&self) {
        self.refused_at_capacity.inc();
    }

    pub fn count_delete(&self, existed: bool) {
        if existed {
            self.deletes_deleted.inc();
            self.events_offline.inc();
        } else {
            self.deletes_unknown.inc();
        }
    }

    pub fn count_expired(&self, n: usize) {
        self.expired.add(n as u64);
        self.events_offline.add(n as u64);
    }

    /// The exposition document, given the two gauges sampled by the caller.
    pub fn render(&self, registrations: usize, subscribers: u64) -> String {
        let mut text = PromText::new();
        text.gauge(
            "thalassa_registry_registrations",
            "Live registrations.",
            registrations as f64,
        );
        text.counter_vec(
            "thalassa_registry_posts_total",
            "Registration POSTs by outcome (refreshed = a plain heartbeat).",
            &labelled(
                &["outcome"],
                &[
                    ("created", &self.posts_created),
                    ("updated", &self.posts_updated),
                    ("refreshed", &self.posts_refreshed),
                    ("rejected", &self.posts_rejected),
                ],
            ),
        );
        text.counter_vec(
            "thalassa_registry_deletes_total",
            "Registration DELETEs by outcome.",
            &labelled(
                &["outcome"],
                &[
                    ("deleted", &self.deletes_deleted),
                    ("unknown", &self.deletes_unknown),
                ],
            ),
        );
        text.counter(
            "thalassa_registry_refused_at_capacity_total",
            "New registrations refused because --max-registrations was reached.",
            &self.refused_at_capacity,
        );
        text.counter(
            "thalassa_registry_store_unavailable_total",
            "Writes and expiry rounds the store could not take (a write is answered 503).",
            &self.store_errors,
        );
        text.counter(
            "thalassa_registry_expired_total",
            "Registrations removed because their lease ran out.",
            &self.expired,
        );
        text.counter_vec(
            "thalassa_registry_events_total",
            "Events published on the change feed, by kind.",
            &labelled(
                &["kind"],
                &[
                    ("online", &self.events_online),
                    ("offline", &self.events_offline),
                ],
            ),
        );
        text.gauge(
            "thalassa_registry_subscribers",
            "Followers of the change feed (in-process and GET /events).",
            subscribers as f64,
        );
        text.gauge(
            "thalassa_registry_axon_subscribers",
            "Subscribers connected to the axon push socket (the original stack's clients).",
            self.axon.subscribers.get(),
        );
        text.counter(
            "thalassa_registry_axon_messages_total",
            "Messages published on the axon push socket.",
            &self.axon.messages,
        );
        text.counter(
            "thalassa_registry_axon_dropped_slow_total",
            "Axon subscribers disconnected because they did not read fast enough.",
            &self.axon.dropped_slow,
        );
        text.counter_vec(
            "thalassa_registry_snapshot_writes_total",
            "Writes of the registrations snapshot file, by outcome.",
            &labelled(
                &["outcome"],
                &[
                    ("ok", &self.snapshot_writes_ok),
                    ("failed", &self.snapshot_writes_failed),
                ],
            ),
        );
        text.finish()
    }
}

/// A labelled view of some plain counters, built only for rendering.
fn labelled(label_names: &'static [&'static str], series: &[(&str, &Counter)]) -> CounterVec {
    let vec = CounterVec::new(label_names);
    for (label, counter) in series {
        vec.add(&[label], counter.get());
    }
    vec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_with_zeroes() {
        let counters = Counters::default();
        counters.count_post(UpsertOutcome::Created);
        counters.count_post(UpsertOutcome::Refreshed);
        counters.count_post(UpsertOutcome::Refreshed);
        counters.count_delete(false);
        counters.count_expired(3);
        let text = counters.render(7, 2);
        for line in [
            "thalassa_registry_registrations 7",
            "thalassa_registry_posts_total{outcome=\"created\"} 1",
            "thalassa_registry_posts_total{outcome=\"refreshed\"} 2",
            "thalassa_registry_posts_total{outcome=\"rejected\"} 0",
            "thalassa_registry_deletes_total{outcome=\"unknown\"} 1",
            "thalassa_registry_deletes_total{outcome=\"deleted\"} 0",
            "thalassa_registry_expired_total 3",
            "thalassa_registry_events_total{kind=\"online\"} 1",
            "thalassa_registry_events_total{kind=\"offline\"} 3",
            "thalassa_registry_subscribers 2",
            "# TYPE thalassa_registry_posts_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}

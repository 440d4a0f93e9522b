//! Minimal Prometheus text-format metrics: counters, labelled counters, gauges and histograms,
//! rendered by hand (the exposition format is small and this keeps the dependency list short).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter split by label values, e.g. `outcome="created"`.
#[derive(Debug)]
pub struct CounterVec {
    label_names: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    pub const fn new(label_names: &'static [&'static str]) -> Self {
        CounterVec {
            label_names,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn inc(&self, label_values: &[&str]) {
        self.add(label_values, 1);
    }

    pub fn add(&self, label_values: &[&str], n: u64) {
        let key: Vec<String> = label_values.iter().map(|v| (*v).to_owned()).collect();
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        *values.entry(key).or_insert(0) += n;
    }

    pub fn get(&self, label_values: &[&str]) -> u64 {
        let key: Vec<String> = label_values.iter().map(|v| (*v).to_owned()).collect();
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.get(&key).copied().unwrap_or(0)
    }

    /// Sum over every label combination.
    pub fn total(&self) -> u64 {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.values().sum()
    }
}

/// A value that goes up and down (stored as f64 bits).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A cumulative histogram with fixed bucket bounds (seconds, usually).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    state: Mutex<HistogramState>,
}

#[derive(Debug, Default)]
struct HistogramState {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub const fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            state: Mutex::new(HistogramState {
                counts: Vec::new(),
                sum: 0.0,
                count: 0,
            }),
        }
    }

    pub fn observe(&self, value: f64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.counts.len() != self.bounds.len() {
            state.counts = vec![0; self.bounds.len()];
        }
        for (i, bound) in self.bounds.iter().enumerate() {
            if value <= *bound {
                state.counts[i] += 1;
            }
        }
        state.sum += value;
        state.count += 1;
    }
}

/// Builds one exposition document.
#[derive(Debug, Default)]
pub struct PromText(String);

impl PromText {
    pub fn new() -> Self {
        Self::default()
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    pub fn counter(&mut self, name: &str, help: &str, counter: &Counter) -> &mut Self {
        self.header(name, help, "counter");
        let _ = writeln!(self.0, "{name} {}", counter.get());
        self
    }

    pub fn counter_vec(&mut self, name: &str, help: &str, counter: &CounterVec) -> &mut Self {
        self.header(name, help, "counter");
        let values = counter.values.lock().unwrap_or_else(|p| p.into_inner());
        for (label_values, value) in values.iter() {
            let labels = format_labels(counter.label_names, label_values);
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
        self
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.header(name, help, "gauge");
        let _ = writeln!(self.0, "{name} {value}");
        self
    }

    /// A gauge family: one sample per label value set.
    pub fn gauge_family(
        &mut self,
        name: &str,
        help: &str,
        label_names: &[&str],
        samples: &[(Vec<String>, f64)],
    ) -> &mut Self {
        self.header(name, help, "gauge");
        for (label_values, value) in samples {
            let labels = format_labels(label_names, label_values);
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
        self
    }

    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) -> &mut Self {
        self.header(name, help, "histogram");
        let state = histogram.state.lock().unwrap_or_else(|p| p.into_inner());
        for (i, bound) in histogram.bounds.iter().enumerate() {
            let count = state.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(self.0, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(self.0, "{name}_bucket{{le=\"+Inf\"}} {}", state.count);
        let _ = writeln!(self.0, "{name}_sum {}", state.sum);
        let _ = writeln!(self.0, "{name}_count {}", state.count);
        self
    }

    pub fn finish(self) -> String {
        self.0
    }
}

fn format_labels(names: &[&str], values: &[String]) -> String {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape_label(v)))
        .collect::<Vec<_>>()
        .join(",")
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A source of metrics: appends its families to the text.
pub type MetricsSource = Arc<dyn Fn(&mut PromText) + Send + Sync>;

/// The metrics one `/metrics` route answers with, from every subsystem that registered a
/// source (the controller's apply pipeline, the supervisor, membership). Cheap to clone.
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    sources: Arc<RwLock<Vec<MetricsSource>>>,
}

impl MetricsRegistry {
    pub fn new() -> MetricsRegistry {
        MetricsRegistry::default()
    }

    pub fn add(&self, source: MetricsSource) {
        self.sources
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(source);
    }

    /// The Prometheus text of every source, in the order they were added.
    pub fn text(&self) -> String {
        let sources = self
            .sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut text = PromText::new();
        for source in sources {
            source(&mut text);
        }
        text.finish()
    }
}

/// The response for a `/metrics` route.
pub fn response(text: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_counters_and_histograms() {
        static REQS: CounterVec = CounterVec::new(&["outcome"]);
        REQS.inc(&["created"]);
        REQS.add(&["refreshed"], 2);
        let hist = Histogram::new(&[0.1, 1.0]);
        hist.observe(0.5);
        let mut text = PromText::new();
        text.counter_vec("x_total", "things", &REQS)
            .histogram("d_seconds", "durations", &hist);
        let out = text.finish();
        assert!(out.contains("x_total{outcome=\"created\"} 1\n"), "{out}");
        assert!(out.contains("x_total{outcome=\"refreshed\"} 2\n"), "{out}");
        assert!(out.contains("d_seconds_bucket{le=\"0.1\"} 0\n"), "{out}");
        assert!(out.contains("d_seconds_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("d_seconds_count 1\n"), "{out}");
    }
}

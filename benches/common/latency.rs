//! Latency figures as the benches print them: percentiles of measured durations.
#![allow(dead_code)] // each bench uses a different subset

use std::time::Duration;

/// The `p`th percentile of `sorted`, in milliseconds (0 for no samples).
pub fn ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Prints `label` with the p50 and p99 of `times`; returns them (ms).
pub fn line(label: &str, mut times: Vec<Duration>) -> (f64, f64) {
    times.sort_unstable();
    let (p50, p99) = (ms(&times, 50.0), ms(&times, 99.0));
    println!(
        "{label:<58} p50 {p50:>8.2} ms   p99 {p99:>8.2} ms   ({} runs)",
        times.len()
    );
    (p50, p99)
}

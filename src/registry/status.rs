//! The `GET /status` document, in the original's shape: name, version, uptime (seconds),
//! memory usage and the registrations-per-second meter.

use super::meter::MeterReading;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub name: &'static str,
    pub version: &'static str,
    /// Seconds since the registry started.
    pub uptime: f64,
    #[serde(rename = "memoryUsage")]
    pub memory_usage: MemoryUsage,
    pub stats: Stats,
    /// The shared store, when the registry runs on one (absent for the embedded store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreStatus {
    /// `redis` or `redis+sentinel`.
    pub kind: &'static str,
    /// Milliseconds since this node last heard from the store; absent while in touch. Reads
    /// are then served from the node's local copy.
    #[serde(rename = "staleMs", skip_serializing_if = "Option::is_none")]
    pub stale_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryUsage {
    /// Resident set size in bytes.
    pub rss: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub thalassa: ThalassaStats,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThalassaStats {
    #[serde(rename = "registrationsPerSecond")]
    pub registrations_per_second: MeterReading,
}

/// This process's resident set size in bytes, from `/proc/self/status` (0 if unavailable).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|text| vm_rss_bytes(&text))
        .unwrap_or(0)
}

/// Parses the `VmRSS:   1234 kB` line of a `/proc/<pid>/status` file.
pub fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<u64>) {
        assert_eq!(vm_rss_bytes(text), expected, "{text:?}");
    }

    #[test]
    fn rss_lines() {
        check(
            "Name:\tx\nVmRSS:\t   1234 kB\nVmData: 1 kB\n",
            Some(1234 * 1024),
        );
        check("VmRSS: 7", Some(7 * 1024));
        check("VmRSS: x kB", None);
        check("VmRSS: 1 MB", None);
        check("Name: x", None);
        assert!(resident_bytes() > 0);
    }
}

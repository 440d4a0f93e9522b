//! What a run measured, as one serializable value per run; the side-by-side table (runs as
//! columns, then the baseline-to-runtime ratios) and the JSON file under `target/churn/`.

use super::load::ConnectionKind;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// From microsecond samples (nearest-rank percentiles).
    pub fn from_micros(mut samples: Vec<u64>) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1] as f64 / 1000.0
        };
        Latency {
            n: samples.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: samples[samples.len() - 1] as f64 / 1000.0,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Changes {
    pub joins: u64,
    pub deletes: u64,
    pub expiries: u64,
    /// Heartbeats of unchanged registrations (not membership changes).
    pub refreshes: u64,
    pub offered_per_s: f64,
    /// Changes seen applied in HAProxy before the churn stopped, per second of churn.
    pub landed_during_churn_per_s: f64,
    /// Changes seen applied by the end of the settle period.
    pub landed_total: u64,
    /// Joins that left again before HAProxy ever had them.
    pub joins_never_present: u64,
    /// Joins or departures still not applied when the settle period ran out.
    pub still_pending: u64,
    /// Joins HAProxy had, still registered, that were never put into service.
    pub joins_never_serving: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadKindReport {
    pub kind: String,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub reset: u64,
    pub non_2xx: u64,
    pub latency: Latency,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub per_kind: Vec<LoadKindReport>,
    pub sent: u64,
    pub failed: u64,
    pub reset: u64,
    pub non_2xx: u64,
    pub requests_per_s: f64,
    pub error_samples: Vec<String>,
}

impl LoadReport {
    pub fn errors(&self) -> u64 {
        self.failed + self.reset + self.non_2xx
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Cpu {
    /// Wall time the CPU figures cover: churn plus settle.
    pub window_s: f64,
    pub thalassa_s: f64,
    /// `haproxy -c` runs (the control plane's reaped children), one per reload.
    pub config_checks_s: f64,
    pub haproxy_s: f64,
    /// Percent of one core over the window.
    pub control_plane_pct: f64,
    pub haproxy_pct: f64,
    /// The same stack and load without churn, percent of one core.
    pub idle_control_plane_pct: f64,
    pub idle_haproxy_pct: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    pub thalassa_peak_mib: f64,
    pub haproxy_master_peak_mib: f64,
    /// All live workers together, at their peak (old workers overlap new ones after reloads).
    pub haproxy_workers_peak_mib: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    pub label: String,
    pub membership: String,
    pub rate: f64,
    pub duration_s: f64,
    pub settle_s: f64,
    pub members: usize,
    pub backends: usize,
    pub check_inter_ms: u32,
    pub changes: Changes,
    /// Registration POST sent -> the registry's 200 arrived (the registry's and the client's
    /// share of `register_to_present`; the server may be in HAProxy before this answer).
    pub register_to_acked: Latency,
    /// Registration POST sent -> the server exists in HAProxy (in maintenance until checked).
    pub register_to_present: Latency,
    /// The same, for registrations in the last quarter of the churn (growth = falling behind).
    pub register_to_present_last_quarter: Latency,
    /// Registration POST sent -> the server is ready and UP (gets requests).
    pub register_to_serving: Latency,
    /// DELETE sent (or lease deadline) -> HAProxy sends it no new requests (drain, maint,
    /// down or removed).
    pub leave_to_drained: Latency,
    /// Departure -> the server is removed from HAProxy.
    pub leave_to_removed: Latency,
    /// Departure -> the last request the member itself received (0 when none came after).
    pub leave_to_last_request: Latency,
    /// Departed members that still received a request more than 10 ms after HAProxy showed
    /// them drained.
    pub requests_after_drained: u64,
    pub load: LoadReport,
    pub reloads: u64,
    /// HAProxy worker processes that appeared during the window (a reload starts one).
    pub new_haproxy_workers: u64,
    /// The control plane's own view (bucket bounds of its histograms, so upper bounds):
    /// registry event in hand -> `add server` answered, p50 and p99.
    pub fast_join_p50_ms: Option<f64>,
    pub fast_join_p99_ms: Option<f64>,
    /// Reconcile rounds during the window, and their duration p50 and p99.
    pub rounds: u64,
    pub round_p50_ms: Option<f64>,
    pub round_p99_ms: Option<f64>,
    pub runtime_commands_ok: u64,
    pub runtime_commands_failed: u64,
    pub cpu: Cpu,
    pub memory: Memory,
    pub observer_polls: u64,
    pub observer_full_polls: u64,
    /// Servers the observer had HAProxy dump, per second of the window: its cost to HAProxy.
    pub observer_servers_dumped_per_s: f64,
    pub observer_errors: u64,
    pub observer_poll: Latency,
    /// Appearance probes (one exchange for every member waiting to appear).
    pub observer_probe: Latency,
    pub observer_interval_ms: f64,
    pub driver_lag: Latency,
    pub registry_errors: u64,
    pub listener_errors: u64,
    /// Members that disappeared from HAProxy while still registered.
    pub vanished: u64,
    /// Members that came back after HAProxy had removed them.
    pub reappeared: u64,
    /// Timelines of changes still pending at the end (seconds on the harness clock).
    pub pending_examples: Vec<String>,
}

impl RunReport {
    /// Why this run fails the smoke check: any failed request, any reload during churn, any
    /// change that never landed, any member HAProxy lost or resurrected.
    pub fn smoke_failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let mut fail = |bad: bool, what: String| {
            if bad {
                failures.push(what);
            }
        };
        fail(
            self.load.errors() > 0,
            format!(
                "{} requests failed ({} failed, {} reset, {} non-2xx): {:?}",
                self.load.errors(),
                self.load.failed,
                self.load.reset,
                self.load.non_2xx,
                self.load.error_samples
            ),
        );
        fail(self.load.sent == 0, "no request was sent".to_owned());
        fail(
            self.reloads > 0,
            format!("{} reloads during churn", self.reloads),
        );
        fail(
            self.new_haproxy_workers > 0,
            format!(
                "{} new HAProxy workers during churn",
                self.new_haproxy_workers
            ),
        );
        fail(
            self.changes.still_pending > 0,
            format!(
                "{} changes never landed: {:#?}",
                self.changes.still_pending, self.pending_examples
            ),
        );
        fail(
            self.changes.joins_never_serving > 0,
            format!(
                "{} joins never served: {:#?}",
                self.changes.joins_never_serving, self.pending_examples
            ),
        );
        fail(
            self.changes.landed_total == 0,
            "no change landed".to_owned(),
        );
        fail(
            self.vanished + self.reappeared > 0,
            format!(
                "{} members vanished while registered, {} reappeared after removal",
                self.vanished, self.reappeared
            ),
        );
        fail(
            self.registry_errors + self.listener_errors > 0,
            format!(
                "{} registry errors, {} listener errors",
                self.registry_errors, self.listener_errors
            ),
        );
        failures
    }
}

pub fn kind_label(kind: ConnectionKind) -> String {
    kind.label().to_owned()
}

type Row = (&'static str, fn(&RunReport) -> String);

fn ms(l: &Latency) -> String {
    if l.n == 0 {
        "-".to_owned()
    } else {
        format!("{:.1} / {:.1} / {:.1}", l.p50_ms, l.p99_ms, l.max_ms)
    }
}

/// A histogram bucket bound in ms, or `-`.
fn bound(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms}"))
}

const ROWS: &[Row] = &[
    ("membership changes offered /s", |r| {
        format!("{:.0}", r.changes.offered_per_s)
    }),
    ("  joins / deletes / expiries", |r| {
        format!(
            "{} / {} / {}",
            r.changes.joins, r.changes.deletes, r.changes.expiries
        )
    }),
    ("  heartbeats (no change)", |r| {
        r.changes.refreshes.to_string()
    }),
    ("changes applied during churn /s", |r| {
        format!("{:.0}", r.changes.landed_during_churn_per_s)
    }),
    ("changes applied by end of settle", |r| {
        r.changes.landed_total.to_string()
    }),
    ("  joins gone before ever present", |r| {
        r.changes.joins_never_present.to_string()
    }),
    ("  still pending after settle", |r| {
        r.changes.still_pending.to_string()
    }),
    ("register -> present, ms p50/p99/max", |r| {
        ms(&r.register_to_present)
    }),
    ("  in the last quarter of the churn", |r| {
        ms(&r.register_to_present_last_quarter)
    }),
    ("  register -> registry answered, ms", |r| {
        ms(&r.register_to_acked)
    }),
    ("  event -> add answered (fast lane), ms <=", |r| {
        format!(
            "{} / {}",
            bound(r.fast_join_p50_ms),
            bound(r.fast_join_p99_ms)
        )
    }),
    ("register -> serving, ms p50/p99/max", |r| {
        ms(&r.register_to_serving)
    }),
    ("leave -> no new requests, ms", |r| ms(&r.leave_to_drained)),
    ("leave -> removed, ms", |r| ms(&r.leave_to_removed)),
    ("leave -> last request at member, ms", |r| {
        ms(&r.leave_to_last_request)
    }),
    ("requests to drained members", |r| {
        r.requests_after_drained.to_string()
    }),
    ("requests sent", |r| r.load.sent.to_string()),
    ("  failed / reset / non-2xx", |r| {
        format!("{} / {} / {}", r.load.failed, r.load.reset, r.load.non_2xx)
    }),
    ("  requests /s", |r| format!("{:.0}", r.load.requests_per_s)),
    ("  keep-alive latency ms p50/p99/max", |r| {
        kind_latency(r, "keep-alive")
    }),
    ("  close latency ms p50/p99/max", |r| {
        kind_latency(r, "close")
    }),
    ("HAProxy reloads", |r| r.reloads.to_string()),
    ("new HAProxy workers", |r| r.new_haproxy_workers.to_string()),
    ("runtime API commands ok / failed", |r| {
        format!("{} / {}", r.runtime_commands_ok, r.runtime_commands_failed)
    }),
    ("reconcile rounds, ms p50/p99 <=", |r| {
        format!(
            "{} ({} / {})",
            r.rounds,
            bound(r.round_p50_ms),
            bound(r.round_p99_ms)
        )
    }),
    ("CPU control plane, % of a core", |r| {
        format!(
            "{:.0} (idle {:.0})",
            r.cpu.control_plane_pct, r.cpu.idle_control_plane_pct
        )
    }),
    ("  of which haproxy -c, s", |r| {
        format!("{:.1}", r.cpu.config_checks_s)
    }),
    ("CPU HAProxy, % of a core", |r| {
        format!(
            "{:.0} (idle {:.0})",
            r.cpu.haproxy_pct, r.cpu.idle_haproxy_pct
        )
    }),
    ("RSS control plane peak, MiB", |r| {
        format!("{:.0}", r.memory.thalassa_peak_mib)
    }),
    ("RSS HAProxy master + workers, MiB", |r| {
        format!(
            "{:.0} + {:.0}",
            r.memory.haproxy_master_peak_mib, r.memory.haproxy_workers_peak_mib
        )
    }),
    ("observer poll ms p50/p99 (every)", |r| {
        format!(
            "{:.1} / {:.1} ({:.0})",
            r.observer_poll.p50_ms, r.observer_poll.p99_ms, r.observer_interval_ms
        )
    }),
    ("observer probe ms p50/p99 (every 2 ms)", |r| {
        format!(
            "{:.1} / {:.1}",
            r.observer_probe.p50_ms, r.observer_probe.p99_ms
        )
    }),
    ("  servers dumped /s (its HAProxy cost)", |r| {
        format!("{:.0}", r.observer_servers_dumped_per_s)
    }),
    ("driver lag ms p99 / max", |r| {
        format!("{:.1} / {:.1}", r.driver_lag.p99_ms, r.driver_lag.max_ms)
    }),
];

fn kind_latency(r: &RunReport, kind: &str) -> String {
    r.load
        .per_kind
        .iter()
        .find(|k| k.kind == kind)
        .map_or_else(|| "-".to_owned(), |k| ms(&k.latency))
}

/// The runs side by side.
pub fn table(runs: &[RunReport]) -> String {
    let label_width = ROWS.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 2;
    let cells: Vec<Vec<String>> = runs
        .iter()
        .map(|r| ROWS.iter().map(|(_, f)| f(r)).collect())
        .collect();
    let widths: Vec<usize> = runs
        .iter()
        .zip(&cells)
        .map(|(r, c)| {
            c.iter()
                .map(String::len)
                .chain([r.label.len()])
                .max()
                .unwrap_or(0)
                + 2
        })
        .collect();
    let mut out = format!("{:label_width$}", "");
    for (run, width) in runs.iter().zip(&widths) {
        out.push_str(&format!("{:>width$}", run.label));
    }
    out.push('\n');
    for (row, (label, _)) in ROWS.iter().enumerate() {
        out.push_str(&format!("{label:label_width$}"));
        for (column, width) in cells.iter().zip(&widths) {
            out.push_str(&format!("{:>width$}", column[row]));
        }
        out.push('\n');
    }
    out
}

type Ratio = (&'static str, fn(&RunReport) -> f64);

const RATIOS: &[Ratio] = &[
    ("register -> present p50", |r| r.register_to_present.p50_ms),
    ("register -> present p99", |r| r.register_to_present.p99_ms),
    ("register -> serving p99", |r| r.register_to_serving.p99_ms),
    ("leave -> no new requests p50", |r| {
        r.leave_to_drained.p50_ms
    }),
    ("leave -> no new requests p99", |r| {
        r.leave_to_drained.p99_ms
    }),
    ("changes applied during churn /s", |r| {
        r.changes.landed_during_churn_per_s
    }),
    ("failed requests (all kinds)", |r| r.load.errors() as f64),
    ("HAProxy reloads", |r| r.reloads as f64),
    ("CPU control plane", |r| r.cpu.control_plane_pct),
    ("CPU HAProxy", |r| r.cpu.haproxy_pct),
    ("RSS HAProxy workers peak", |r| {
        r.memory.haproxy_workers_peak_mib
    }),
];

/// Each reload run against the runtime run at the same rate: baseline / runtime.
pub fn ratios(runs: &[RunReport]) -> String {
    let mut out = String::new();
    for baseline in runs.iter().filter(|r| r.membership != "runtime") {
        let Some(runtime) = runs
            .iter()
            .find(|r| r.membership == "runtime" && r.rate == baseline.rate)
        else {
            continue;
        };
        out.push_str(&format!("{} vs {}:\n", baseline.label, runtime.label));
        for (label, value) in RATIOS {
            let (b, r) = (value(baseline), value(runtime));
            let ratio = if r > 0.0 {
                format!("x{:.1}", b / r)
            } else if b > 0.0 {
                "inf (runtime: 0)".to_owned()
            } else {
                "both 0".to_owned()
            };
            out.push_str(&format!("  {label:34} {b:>12.1} vs {r:>10.1}   {ratio}\n"));
        }
    }
    out
}

/// Writes `target/churn/churn-<epoch s>.json` and `target/churn/latest.json`; returns the
/// first path.
pub fn write_json(target_dir: &Path, value: &serde_json::Value) -> std::io::Result<PathBuf> {
    let dir = target_dir.join("churn");
    std::fs::create_dir_all(&dir)?;
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    let path = dir.join(format!("churn-{epoch}.json"));
    std::fs::write(&path, &text)?;
    std::fs::write(dir.join("latest.json"), &text)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(samples: &[u64], expected: (usize, f64, f64, f64)) {
        let l = Latency::from_micros(samples.to_vec());
        assert_eq!((l.n, l.p50_ms, l.p99_ms, l.max_ms), expected, "{samples:?}");
    }

    #[test]
    fn percentiles() {
        check(&[], (0, 0.0, 0.0, 0.0));
        check(&[1000], (1, 1.0, 1.0, 1.0));
        check(&[3000, 1000, 2000], (3, 2.0, 3.0, 3.0));
        let hundred: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        check(&hundred, (100, 50.0, 99.0, 100.0));
    }

    #[test]
    fn smoke_check_fails_on_a_failed_request_or_a_reload() {
        let clean = RunReport {
            load: LoadReport {
                sent: 10,
                ..LoadReport::default()
            },
            changes: Changes {
                landed_total: 5,
                ..Changes::default()
            },
            ..RunReport::default()
        };
        assert!(
            clean.smoke_failures().is_empty(),
            "{:?}",
            clean.smoke_failures()
        );
        let mut reloaded = clean.clone();
        reloaded.reloads = 1;
        assert_eq!(reloaded.smoke_failures().len(), 1);
        let mut reset = clean.clone();
        reset.load.reset = 1;
        assert_eq!(reset.smoke_failures().len(), 1);
        let mut non_2xx = clean.clone();
        non_2xx.load.non_2xx = 1;
        assert_eq!(non_2xx.smoke_failures().len(), 1);
        let mut stuck = clean;
        stuck.changes.still_pending = 1;
        assert_eq!(stuck.smoke_failures().len(), 1);
    }

    #[test]
    fn tables_have_every_run() {
        let a = RunReport {
            label: "runtime@500".into(),
            membership: "runtime".into(),
            rate: 500.0,
            ..RunReport::default()
        };
        let b = RunReport {
            label: "reload-2s@500".into(),
            membership: "reload-2s".into(),
            rate: 500.0,
            reloads: 3,
            ..RunReport::default()
        };
        let text = table(&[a.clone(), b.clone()]);
        assert!(text.lines().next().unwrap().contains("reload-2s@500"));
        assert_eq!(text.lines().count(), ROWS.len() + 1);
        let ratios = ratios(&[a, b]);
        assert!(ratios.contains("reload-2s@500 vs runtime@500"));
        assert!(ratios.contains("inf (runtime: 0)"));
    }
}

//! Turns what one run recorded (the member table, the origins' last requests, load counters,
//! metrics and /proc samples at the window's edges) into its [`RunReport`].

use super::driver::DriverStats;
use super::load::{ConnectionKind, Counts};
use super::members::{LeaveKind, Member, MemberTable, Micros};
use super::observer::ObserverStats;
use super::origins::Origins;
use super::procstat::{TreeSample, cpu_seconds};
use super::report::{
    Changes, Cpu, Latency, LoadKindReport, LoadReport, Memory, RunReport, kind_label,
};
use super::stack::Metrics;

/// A request reaching a member this long after HAProxy showed it drained is "late": it was
/// sent to a member that should get no new requests (the margin covers requests already
/// dispatched when the poll ran).
const LATE_MARGIN_US: Micros = 10_000;

/// The measured window: churn from `churn_start` to `churn_end`, then settling until `end`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub churn_start: Micros,
    pub churn_end: Micros,
    pub end: Micros,
}

impl Window {
    fn in_churn(&self, at: Option<Micros>) -> bool {
        at.is_some_and(|at| at >= self.churn_start && at <= self.churn_end)
    }

    fn churn_seconds(&self) -> f64 {
        (self.churn_end - self.churn_start) as f64 / 1e6
    }
}

pub struct ProcWindow {
    pub quiet_start: TreeSample,
    pub quiet_end: TreeSample,
    pub quiet_seconds: f64,
    pub start: TreeSample,
    pub end: TreeSample,
    pub peak_thalassa_kib: u64,
    pub peak_master_kib: u64,
    pub peak_workers_kib: u64,
    /// Workers seen during the window that were not running at its start.
    pub new_workers: u64,
}

pub struct LoadWindow {
    pub start: Vec<(ConnectionKind, Counts)>,
    pub end: Vec<(ConnectionKind, Counts)>,
    pub latencies: Vec<(ConnectionKind, Vec<u32>)>,
    pub errors: Vec<String>,
}

pub struct Recorded<'a> {
    pub table: &'a MemberTable,
    pub origins: &'a Origins,
    pub window: Window,
    pub refreshes: u64,
    pub driver: &'a DriverStats,
    pub registry_errors: u64,
    pub listener_errors: u64,
    pub observer: &'a ObserverStats,
    pub observer_interval_ms: f64,
    /// How long the observer ran (its counters cover the whole run, setup included).
    pub observer_seconds: f64,
    pub load: LoadWindow,
    pub metrics_start: &'a Metrics,
    pub metrics_end: &'a Metrics,
    pub procs: ProcWindow,
}

/// Fills everything but the run's identity (label, rate, sizes), which the caller sets.
pub fn summarize(recorded: Recorded<'_>) -> RunReport {
    let window = recorded.window;
    let mut report = RunReport::default();
    let mut present = Vec::new();
    let mut acked = Vec::new();
    // Joins of the last quarter of the churn: if the control plane falls behind, their
    // latency grows; if it keeps up, it matches the whole run's.
    let mut present_late = Vec::new();
    let last_quarter = window.churn_end - (window.churn_end - window.churn_start) / 4;
    let mut serving = Vec::new();
    let mut drained = Vec::new();
    let mut removed = Vec::new();
    let mut last_request = Vec::new();
    let mut changes = Changes {
        refreshes: recorded.refreshes,
        ..Changes::default()
    };
    let mut landed_during_churn = 0u64;
    for (id, member) in recorded.table.all() {
        if !member.initial && window.in_churn(member.registered_at) {
            changes.joins += 1;
            let registered = member.registered_at.unwrap_or(0);
            if let Some(at) = member.acked_at {
                acked.push(at.saturating_sub(registered));
            }
            match member.present_at {
                Some(at) => {
                    present.push(at.saturating_sub(registered));
                    if registered >= last_quarter {
                        present_late.push(at.saturating_sub(registered));
                    }
                    changes.landed_total += 1;
                    if at <= window.churn_end {
                        landed_during_churn += 1;
                    }
                }
                None if member.has_left(window.end) => changes.joins_never_present += 1,
                None if member.registration_acked => {
                    changes.still_pending += 1;
                    report
                        .pending_examples
                        .push(describe(recorded.origins, id, member));
                }
                None => {}
            }
            if member.present_at.is_some()
                && member.ready_at.is_none()
                && !member.has_left(window.end)
            {
                changes.joins_never_serving += 1;
                report
                    .pending_examples
                    .push(describe(recorded.origins, id, member));
            }
            if let Some(at) = member.ready_at {
                serving.push(at.saturating_sub(registered));
            }
        }
        if window.in_churn(member.left_at) {
            match member.leave_kind {
                Some(LeaveKind::Deleted) => changes.deletes += 1,
                Some(LeaveKind::Expired) => changes.expiries += 1,
                None => {}
            }
            let left = member.left_at.unwrap_or(0);
            // A member that left before HAProxy ever had it changes nothing there: its join
            // and its departure cancel out (counted in `joins_never_present`).
            let was_present = member.present_at.is_some_and(|at| at <= left);
            match member.drained_at {
                Some(at) if was_present => {
                    changes.landed_total += 1;
                    if at <= window.churn_end {
                        landed_during_churn += 1;
                    }
                    if member.served_before_leaving() {
                        drained.push(at.saturating_sub(left));
                        if let Some(gone) = member.gone_at {
                            removed.push(gone.saturating_sub(left));
                        }
                        let last = recorded.origins.last_load(id).unwrap_or(0);
                        last_request.push(last.saturating_sub(left));
                        if last > at + LATE_MARGIN_US {
                            report.requests_after_drained += 1;
                        }
                    }
                }
                Some(_) => {}
                None => {
                    changes.still_pending += 1;
                    report
                        .pending_examples
                        .push(describe(recorded.origins, id, member));
                }
            }
        }
        report.vanished += u64::from(member.vanished);
        report.reappeared += u64::from(member.reappeared);
    }
    report.pending_examples.truncate(10);
    let churn_seconds = window.churn_seconds().max(1e-9);
    changes.offered_per_s =
        (changes.joins + changes.deletes + changes.expiries) as f64 / churn_seconds;
    changes.landed_during_churn_per_s = landed_during_churn as f64 / churn_seconds;
    report.changes = changes;
    report.register_to_acked = Latency::from_micros(acked);
    report.register_to_present = Latency::from_micros(present);
    report.register_to_present_last_quarter = Latency::from_micros(present_late);
    report.register_to_serving = Latency::from_micros(serving);
    report.leave_to_drained = Latency::from_micros(drained);
    report.leave_to_removed = Latency::from_micros(removed);
    report.leave_to_last_request = Latency::from_micros(last_request);
    report.settle_s = (window.end - window.churn_end) as f64 / 1e6;
    report.load = load_report(
        recorded.load,
        (window.end - window.churn_start) as f64 / 1e6,
    );

    let (start, end) = (recorded.metrics_start, recorded.metrics_end);
    let delta = |name: &str, labels: &[&str]| {
        (end.sum(name, labels) - start.sum(name, labels)).max(0.0) as u64
    };
    report.reloads = delta("thalassa_haproxy_reloads_total", &[]);
    report.runtime_commands_ok = delta("thalassa_runtime_commands_total", &["outcome=\"ok\""]);
    report.runtime_commands_failed =
        delta("thalassa_runtime_commands_total", &["outcome=\"error\""]);
    let quantile_ms = |name: &str, q: f64| end.quantile_since(start, name, q).map(|s| s * 1e3);
    report.fast_join_p50_ms = quantile_ms("thalassa_fast_join_duration_seconds", 0.5);
    report.fast_join_p99_ms = quantile_ms("thalassa_fast_join_duration_seconds", 0.99);
    report.round_p50_ms = quantile_ms("thalassa_reconcile_round_duration_seconds", 0.5);
    report.round_p99_ms = quantile_ms("thalassa_reconcile_round_duration_seconds", 0.99);
    report.rounds = delta("thalassa_reconcile_round_duration_seconds_count", &[]);

    let procs = &recorded.procs;
    let window_s = (window.end - window.churn_start) as f64 / 1e6;
    let (thalassa_s, checks_s, haproxy_s) = cpu_seconds(&procs.start, &procs.end);
    let (idle_thalassa, idle_checks, idle_haproxy) =
        cpu_seconds(&procs.quiet_start, &procs.quiet_end);
    let pct = |seconds: f64, over: f64| {
        if over > 0.0 {
            100.0 * seconds / over
        } else {
            0.0
        }
    };
    report.cpu = Cpu {
        window_s,
        thalassa_s,
        config_checks_s: checks_s,
        haproxy_s,
        control_plane_pct: pct(thalassa_s + checks_s, window_s),
        haproxy_pct: pct(haproxy_s, window_s),
        idle_control_plane_pct: pct(idle_thalassa + idle_checks, procs.quiet_seconds),
        idle_haproxy_pct: pct(idle_haproxy, procs.quiet_seconds),
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    report.memory = Memory {
        thalassa_peak_mib: mib(procs.peak_thalassa_kib),
        haproxy_master_peak_mib: mib(procs.peak_master_kib),
        haproxy_workers_peak_mib: mib(procs.peak_workers_kib),
    };
    report.new_haproxy_workers = procs.new_workers;

    report.observer_polls = recorded.observer.polls;
    report.observer_full_polls = recorded.observer.full_polls;
    report.observer_servers_dumped_per_s =
        recorded.observer.servers_dumped as f64 / recorded.observer_seconds.max(1e-9);
    report.observer_errors = recorded.observer.errors;
    report.observer_poll = latency_of(&recorded.observer.poll_us);
    report.observer_probe = latency_of(&recorded.observer.probe_us);
    report.observer_interval_ms = recorded.observer_interval_ms;
    report.driver_lag = latency_of(&recorded.driver.lag_us);
    report.registry_errors = recorded.registry_errors;
    report.listener_errors = recorded.listener_errors;
    report
}

/// One member's timeline, for diagnosing a change that never landed.
fn describe(origins: &Origins, id: u32, member: &Member) -> String {
    let ms = |at: Option<Micros>| at.map_or("-".to_owned(), |at| format!("{:.3}", at as f64 / 1e6));
    format!(
        "be{}_{} {:?} registered {} acked {} present {} serving {} left {} ({:?}) drained {} gone {} last request {}",
        member.backend,
        origins.addr(id),
        member.lifetime,
        ms(member.registered_at),
        member.registration_acked,
        ms(member.present_at),
        ms(member.ready_at),
        ms(member.left_at),
        member.leave_kind,
        ms(member.drained_at),
        ms(member.gone_at),
        ms(origins.last_load(id)),
    )
}

fn load_report(load: LoadWindow, seconds: f64) -> LoadReport {
    let mut report = LoadReport {
        error_samples: load.errors,
        ..LoadReport::default()
    };
    for ((kind, end), (_, start)) in load.end.iter().zip(&load.start) {
        let counts = end.since(*start);
        let latency = load
            .latencies
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, l)| Latency::from_micros(l.iter().map(|u| u64::from(*u)).collect()))
            .unwrap_or_default();
        report.sent += counts.sent;
        report.failed += counts.failed;
        report.reset += counts.reset;
        report.non_2xx += counts.non_2xx;
        report.per_kind.push(LoadKindReport {
            kind: kind_label(*kind),
            sent: counts.sent,
            ok: counts.ok,
            failed: counts.failed,
            reset: counts.reset,
            non_2xx: counts.non_2xx,
            latency,
        });
    }
    report.requests_per_s = if seconds > 0.0 {
        report.sent as f64 / seconds
    } else {
        0.0
    };
    report
}

/// The latency summary of durations in µs.
fn latency_of(micros: &[u32]) -> Latency {
    Latency::from_micros(micros.iter().map(|u| u64::from(*u)).collect())
}

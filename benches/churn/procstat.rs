//! CPU time and resident memory of the stack's processes, from `/proc`: the `thalassa up`
//! process (the control plane), and HAProxy's master and workers (found among its children).
//! A worker that exits is reaped by the master, so its CPU time moves into the master's
//! `cutime`/`cstime`; summing both keeps HAProxy's total correct across reloads.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]

use std::collections::BTreeSet;
use std::sync::OnceLock;

/// Clock ticks of one process: own user+system, and that of its reaped children.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticks {
    pub own: u64,
    pub children: u64,
}

pub fn ticks(pid: u32) -> Option<Ticks> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Ticks {
        own: field(14)? + field(15)?,
        children: field(16)? + field(17)?,
    })
}

/// VmRSS in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Direct children of `pid` (every thread's `children` file: a child belongs to the thread
/// that forked it).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = BTreeSet::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    out.into_iter().collect()
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// One look at the stack's processes.
#[derive(Debug, Clone, Default)]
pub struct TreeSample {
    /// The control plane: `thalassa up`'s own CPU ticks.
    pub thalassa_ticks: u64,
    /// Its reaped children: the `haproxy -c` config checks before each reload.
    pub config_check_ticks: u64,
    /// HAProxy: the master (with its reaped workers) plus the live workers.
    pub haproxy_ticks: u64,
    pub thalassa_rss_kib: u64,
    pub haproxy_master_rss_kib: u64,
    /// All live workers together (old ones linger after a reload until their clients leave).
    pub haproxy_workers_rss_kib: u64,
    pub master: Option<u32>,
    pub workers: Vec<u32>,
}

/// Samples `thalassa` and the HAProxy master-worker tree under it.
pub fn sample(thalassa: u32) -> TreeSample {
    let mut out = TreeSample::default();
    if let Some(t) = ticks(thalassa) {
        out.thalassa_ticks = t.own;
        out.config_check_ticks = t.children;
    }
    out.thalassa_rss_kib = rss_kib(thalassa).unwrap_or(0);
    // The master runs with -W; the short-lived `haproxy -c` checks do not.
    out.master = children(thalassa)
        .into_iter()
        .find(|pid| cmdline(*pid).iter().any(|a| a == "-W"));
    if let Some(master) = out.master {
        if let Some(t) = ticks(master) {
            out.haproxy_ticks = t.own + t.children;
        }
        out.haproxy_master_rss_kib = rss_kib(master).unwrap_or(0);
        out.workers = children(master);
        for worker in &out.workers {
            out.haproxy_ticks += ticks(*worker).map_or(0, |t| t.own);
            out.haproxy_workers_rss_kib += rss_kib(*worker).unwrap_or(0);
        }
    }
    out
}

/// CPU used between two samples, in seconds: (control plane, config checks, HAProxy).
pub fn cpu_seconds(start: &TreeSample, end: &TreeSample) -> (f64, f64, f64) {
    let per_second = ticks_per_second() as f64;
    let delta = |a: u64, b: u64| b.saturating_sub(a) as f64 / per_second;
    (
        delta(start.thalassa_ticks, end.thalassa_ticks),
        delta(start.config_check_ticks, end.config_check_ticks),
        delta(start.haproxy_ticks, end.haproxy_ticks),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(ticks(me).is_some());
        assert!(rss_kib(me).unwrap() > 0);
        assert!(ticks_per_second() > 0);
    }
}

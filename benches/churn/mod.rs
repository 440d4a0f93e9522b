//! The churn benchmark harness (issue 7): proves, with numbers, that members coming and going
//! all the time cost no failed request and no reload, and land in milliseconds; and measures
//! the original's way (re-render and reload on every change) as the baseline.
//!
//! Shared by `benches/churn.rs` (`cargo bench --bench churn`, the full runs) and
//! `tests/churn_quick.rs` (the CI smoke run), which include this directory by path.
//!
//! Per run: the real `thalassa up` (registry, aqueduct, master-worker HAProxy) on loopback;
//! one origin listener per member on its own 127.x.y.z address (`origins`); the registrations
//! driven through the registry's HTTP API (`driver`); HAProxy watched over its admin socket
//! (`observer`); paced HTTP load through the frontends (`load`); CPU and memory from /proc
//! (`procstat`). `summary` and `report` turn it into a table and JSON.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]

pub mod driver;
pub mod load;
pub mod measure_thread;
pub mod members;
pub mod observer;
pub mod origins;
pub mod procstat;
pub mod report;
pub mod scenario;
pub mod settings;
pub mod stack;
pub mod summary;

use report::RunReport;
use settings::{LoadKinds, Settings};
use std::path::Path;

/// Runs every configured run in turn (each on a fresh stack), printing progress to stderr.
pub async fn run_all(settings: &Settings, binary: &Path) -> Result<Vec<RunReport>, String> {
    raise_fd_limit();
    let mut reports = Vec::with_capacity(settings.runs.len());
    for run in &settings.runs {
        reports.push(scenario::run_one(settings, run, binary).await?);
    }
    Ok(reports)
}

/// The JSON document written under `target/churn/`.
pub fn document(
    settings: &Settings,
    reports: &[RunReport],
    host: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "settings": {
            "preset": settings.preset,
            "members": settings.members,
            "backends": settings.backends,
            "check_inter_ms": settings.check_inter_ms,
            "balance": settings.balance,
            "expiry_share": settings.expiry_share,
            "expiry_ttl_s": settings.expiry_ttl.as_secs_f64(),
            "refresh_ratio": settings.refresh_ratio,
            "load": match settings.load_kinds {
                LoadKinds::KeepAlive => "keep-alive",
                LoadKinds::Close => "close",
                LoadKinds::Both => "both",
            },
            "load_rate": settings.load_rate,
            "load_connections": settings.load_connections,
            "poll_ms": settings.poll_interval.as_secs_f64() * 1000.0,
            "full_poll_ms": settings.full_poll_interval.as_secs_f64() * 1000.0,
            "quiet_s": settings.quiet.as_secs_f64(),
            "seed": settings.seed,
        },
        "host": host,
        "runs": reports,
    })
}

/// The machine the numbers come from.
pub fn host_info() -> serde_json::Value {
    let haproxy = std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .ok()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        });
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "haproxy": haproxy,
    })
}

/// Many members means many listeners and connections: lift the soft fd limit to the hard
/// one (the stack inherits it).
fn raise_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            eprintln!("could not raise the open-files limit: {err}");
        }
    }
}

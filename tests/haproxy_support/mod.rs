//! Harness for tests against a real HAProxy: finding the binary (fail under CI, skip
//! locally), loopback ports from the OS, a tiny origin HTTP server, config text, and waits
//! with deadlines.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]
#![allow(dead_code)] // each test file uses a different part of the harness

use axum::Router;
use axum::routing::get;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use thalassa::haproxy::supervisor::{LogLevel, Supervisor, SupervisorSettings};

pub use crate::support::{eventually, free_port};

/// The HAProxy binary (see `support::haproxy_path`), or `None` (test skipped) when it is
/// missing outside CI.
pub fn haproxy_bin() -> Option<PathBuf> {
    if crate::support::require_haproxy() {
        crate::support::haproxy_path()
    } else {
        None
    }
}

/// A loopback HTTP origin: `GET /` answers its name, `GET /slow` answers after `slow_for`.
pub struct Origin {
    pub name: String,
    pub port: u16,
    pub requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    pub async fn start(name: &str) -> Origin {
        Origin::start_with_delay(name, Duration::from_secs(2)).await
    }

    pub async fn start_with_delay(name: &str, slow_for: Duration) -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind origin");
        let port = listener.local_addr().expect("origin addr").port();
        let requests = Arc::new(AtomicU64::new(0));
        let body = name.to_owned();
        let counter = requests.clone();
        let slow_counter = requests.clone();
        let slow_body = body.clone();
        let app = Router::new()
            .route(
                "/",
                get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = body.clone();
                    async move { body }
                }),
            )
            .route(
                "/slow",
                get(move || {
                    slow_counter.fetch_add(1, Ordering::SeqCst);
                    let body = slow_body.clone();
                    async move {
                        tokio::time::sleep(slow_for).await;
                        body
                    }
                }),
            );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Origin {
            name: name.to_owned(),
            port,
            requests,
            task,
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `GET http://127.0.0.1:<port><path>` on a fresh connection: (status, body).
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String), reqwest::Error> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()?;
    let response = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// Waits until the frontend on `port` answers `GET /` with `expected_body`.
pub async fn wait_for_body(port: u16, expected_body: &str) {
    eventually(
        Duration::from_secs(10),
        &format!("body {expected_body:?} on :{port}"),
        || async {
            match http_get(port, "/").await {
                Ok((200, body)) if body == expected_body => Some(()),
                _ => None,
            }
        },
    )
    .await
}

/// `global` + `defaults` for a supervised HAProxy: the admin socket and server-state file
/// where the supervisor expects them.
pub fn base_config(settings: &SupervisorSettings) -> String {
    format!(
        "global
    stats socket {admin} mode 600 level admin
    stats timeout 2m
    server-state-file {state}
    maxconn 500
    nbthread 1

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    load-server-state-from-file global
    default-server inter 200ms fall 2 rise 1
",
        admin = settings.admin_socket_path().display(),
        state = settings.server_state_path().display(),
    )
}

/// A frontend on `port` routing to backend `be`, which has one server per origin port.
pub fn proxy_config(settings: &SupervisorSettings, port: u16, servers: &[(&str, u16)]) -> String {
    let mut config = base_config(settings);
    config.push_str(&format!(
        "
frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    balance roundrobin
"
    ));
    for (name, server_port) in servers {
        config.push_str(&format!(
            "    server {name} 127.0.0.1:{server_port} check\n"
        ));
    }
    config
}

/// A supervised HAProxy in its own temp dir (removed with the guard).
pub struct Lab {
    pub supervisor: Supervisor,
    pub settings: SupervisorSettings,
    _dir: tempfile::TempDir,
}

/// Settings for a fresh temp run dir. Restart backoff is short so restart tests are quick.
pub fn lab_settings(bin: PathBuf) -> (SupervisorSettings, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("thx-ha")
        .tempdir()
        .expect("tempdir");
    let mut settings = SupervisorSettings::new(bin, dir.path().join("run"));
    settings.restart_backoff_min = Duration::from_millis(50);
    settings.shutdown_grace = Duration::from_secs(2);
    (settings, dir)
}

impl Lab {
    pub async fn start(bin: PathBuf, config: impl Fn(&SupervisorSettings) -> String) -> Lab {
        let (settings, dir) = lab_settings(bin);
        let supervisor = Supervisor::start(settings.clone(), &config(&settings))
            .await
            .expect("haproxy starts");
        Lab {
            supervisor,
            settings,
            _dir: dir,
        }
    }

    /// Fails on ALERT lines in HAProxy's output other than those `expected` mentions.
    pub fn assert_no_unexpected_alerts(&self, expected: &[&str]) {
        let unexpected: Vec<String> = self
            .supervisor
            .recent_log()
            .into_iter()
            .filter(|line| line.level == LogLevel::Alert)
            .filter(|line| !expected.iter().any(|e| line.message.contains(e)))
            .map(|line| line.message)
            .collect();
        assert!(
            unexpected.is_empty(),
            "unexpected haproxy ALERTs: {unexpected:#?}"
        );
    }
}

/// PIDs of every live process started with this lab's `-S` argument.
pub fn our_haproxy_pids(settings: &SupervisorSettings) -> Vec<u32> {
    let fingerprint = format!("{},mode,600", settings.master_socket_path().display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(|s| s != "Z"))
            })
            .unwrap_or(false);
        if alive
            && cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == fingerprint.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

/// `kill -9 <pid>` through the kill(1) binary (tests only; no unsafe code needed).
pub fn kill_9(pid: u32) {
    let status = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -9 {pid} failed");
}

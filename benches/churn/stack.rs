//! The system under test: the real `thalassa up` binary (registry, aqueduct and a
//! master-worker HAProxy) in a temp dir on loopback ports, with one dynamic backend and one
//! frontend per service. Stopped by PID (SIGTERM, then SIGKILL) when dropped.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]

use super::settings::Membership;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Stack {
    child: Child,
    dir: Option<tempfile::TempDir>,
    kept_dir: Option<PathBuf>,
    pub registry: String,
    pub aqueduct: String,
    /// One frontend per backend, in backend order.
    pub frontends: Vec<SocketAddr>,
    http: reqwest::Client,
}

/// What the stack is told to run.
pub struct StackSettings<'a> {
    pub binary: &'a Path,
    pub membership: Membership,
    pub backends: usize,
    pub check_inter_ms: u32,
    /// Every backend's `balance` (`source` and the other hash algorithms get explicit ids).
    pub balance: &'a str,
    pub thalassa_log: &'a str,
    pub keep_dir: bool,
}

pub fn service_name(backend: usize) -> String {
    format!("svc{backend}")
}

pub fn backend_key(backend: usize) -> String {
    format!("be{backend}")
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|err| format!("no free port: {err}"))
}

impl Stack {
    pub async fn start(settings: StackSettings<'_>) -> Result<Stack, String> {
        let dir = tempfile::Builder::new()
            .prefix("thalassa-churn-")
            .tempdir()
            .map_err(|err| format!("temp dir: {err}"))?;
        let registry_addr = format!("127.0.0.1:{}", free_port()?);
        let aqueduct_addr = format!("127.0.0.1:{}", free_port()?);
        let log_path = dir.path().join("thalassa.log");
        let log = std::fs::File::create(&log_path).map_err(|err| format!("log file: {err}"))?;
        let log_err = log.try_clone().map_err(|err| format!("log file: {err}"))?;
        let mut command = Command::new(settings.binary);
        command
            .arg("up")
            .args(["--registry-listen", &registry_addr])
            .args(["--listen", &aqueduct_addr])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            // Each run's HAProxy goes with its stack.
            .arg("--stop-haproxy")
            .env("THALASSA_LOG", settings.thalassa_log)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Membership::Reload { debounce } = settings.membership {
            command
                .args(["--membership", "reload"])
                .args(["--reload-debounce", &format!("{}ms", debounce.as_millis())]);
        }
        let child = command
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", settings.binary.display()))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|err| format!("http client: {err}"))?;
        let mut stack = Stack {
            child,
            dir: Some(dir),
            kept_dir: None,
            registry: format!("http://{registry_addr}"),
            aqueduct: format!("http://{aqueduct_addr}"),
            frontends: Vec::new(),
            http,
        };
        if settings.keep_dir {
            stack.kept_dir = stack.dir.take().map(|d| d.keep());
        }
        stack
            .wait_http(&format!("{}/registrations", stack.registry))
            .await?;
        stack
            .wait_http(&format!("{}/backends", stack.aqueduct))
            .await?;
        for backend in 0..settings.backends {
            stack
                .add_service(backend, settings.check_inter_ms, settings.balance)
                .await?;
        }
        Ok(stack)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> PathBuf {
        match (&self.dir, &self.kept_dir) {
            (Some(dir), _) => dir.path().to_owned(),
            (None, Some(kept)) => kept.clone(),
            (None, None) => PathBuf::new(),
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir().join("thalassa.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A dynamic backend following `svc<b>@1` with HTTP checks on `/health`, and a frontend
    /// on its own port in front of it. Each PUT returns once HAProxy runs the new config.
    async fn add_service(
        &mut self,
        backend: usize,
        check_inter_ms: u32,
        balance: &str,
    ) -> Result<(), String> {
        let key = backend_key(backend);
        self.put(
            &format!("{}/backends/{key}", self.aqueduct),
            json!({
                "type": "dynamic",
                "name": service_name(backend),
                "version": "1",
                "mode": "http",
                "balance": balance,
                "health": {"uri": "/health", "interval": check_inter_ms},
            }),
        )
        .await?;
        let port = free_port()?;
        self.put(
            &format!("{}/frontends/fe{backend}", self.aqueduct),
            json!({"bind": format!("127.0.0.1:{port}"), "backend": key, "mode": "http"}),
        )
        .await?;
        self.frontends
            .push(SocketAddr::from(([127, 0, 0, 1], port)));
        Ok(())
    }

    async fn put(&self, url: &str, body: serde_json::Value) -> Result<(), String> {
        let response = self
            .http
            .put(url)
            .json(&body)
            .send()
            .await
            .map_err(|err| format!("PUT {url}: {err}"))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(format!("PUT {url}: {status} {text}"));
        }
        Ok(())
    }

    async fn wait_http(&mut self, url: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = self.http.get(url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "thalassa up exited with {status}:\n{}",
                    self.log_tail(30)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("{url} did not answer within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The aqueduct's `/metrics`, as series (`name{labels}`) to values.
    pub async fn metrics(&self) -> Result<Metrics, String> {
        let url = format!("{}/metrics", self.aqueduct);
        let text = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|err| format!("GET {url}: {err}"))?
            .text()
            .await
            .map_err(|err| format!("GET {url}: {err}"))?;
        Ok(Metrics::parse(&text))
    }

    /// SIGTERM, a bounded wait, then SIGKILL: by PID only.
    pub async fn stop(mut self) {
        self.terminate().await;
    }

    async fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        signal(self.child.id(), rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Prometheus text, parsed just enough to sum series.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    series: BTreeMap<String, f64>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let series = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.trim().to_owned(), value.trim().parse().ok()?))
            })
            .collect();
        Metrics { series }
    }

    /// The sum of every series of `name` whose labels contain all of `labels`
    /// (`key="value"` pairs).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.series
            .iter()
            .filter(|(series, _)| {
                let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
                series_name == name && labels.iter().all(|l| series_labels.contains(l))
            })
            .map(|(_, v)| *v)
            .sum()
    }

    /// The bucket bound (seconds) under which a share `q` of the observations of histogram
    /// `name` made between `earlier` and `self` fall; `None` without observations. An upper
    /// bound, as coarse as the buckets.
    pub fn quantile_since(&self, earlier: &Metrics, name: &str, q: f64) -> Option<f64> {
        let bucket = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = self
            .matching(&bucket)
            .into_iter()
            .filter_map(|(series, count)| {
                let le = series.split("le=\"").nth(1)?.split('"').next()?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((
                    bound,
                    count - earlier.series.get(&series).copied().unwrap_or(0.0),
                ))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        buckets
            .iter()
            .find(|(_, count)| *count >= q * total)
            .map(|(bound, _)| *bound)
    }

    /// `name{labels}` to value, for the JSON report.
    pub fn matching(&self, name: &str) -> BTreeMap<String, f64> {
        self.series
            .iter()
            .filter(|(series, _)| series.split_once('{').map_or(series.as_str(), |s| s.0) == name)
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_sum() {
        let text = "# HELP x\nthalassa_haproxy_reloads_total{outcome=\"ok\"} 3\n\
                    thalassa_haproxy_reloads_total{outcome=\"failed\"} 1\n\
                    thalassa_runtime_commands_total{kind=\"add\",outcome=\"ok\"} 5\n\
                    thalassa_members 2\n";
        let metrics = Metrics::parse(text);
        assert_eq!(metrics.sum("thalassa_haproxy_reloads_total", &[]), 4.0);
        assert_eq!(
            metrics.sum("thalassa_haproxy_reloads_total", &["outcome=\"ok\""]),
            3.0
        );
        assert_eq!(
            metrics.sum("thalassa_runtime_commands_total", &["kind=\"add\""]),
            5.0
        );
        assert_eq!(metrics.sum("thalassa_members", &[]), 2.0);
        assert_eq!(metrics.sum("thalassa_member", &[]), 0.0);
    }
}

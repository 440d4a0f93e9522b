//! Shared harness for the registry integration tests: runs the real `thalassa` binary with a
//! temp data dir and an OS-chosen port, kills it (by PID) on drop, and offers `eventually` waits
//! with deadlines and a small SSE reader.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use thalassa::registry::feed::FeedItem;
use thalassa::registry::sse_decoder::SseDecoder;

pub use crate::support::{eventually, free_port};

pub const BIN: &str = env!("CARGO_BIN_EXE_thalassa");

/// A `thalassa` child process whose stderr goes to a file; killed on drop.
pub struct Process {
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    pub fn spawn(args: &[&str], log: PathBuf) -> Process {
        Self::spawn_with_env(args, &[], log)
    }

    /// Like [`Process::spawn`] with extra environment variables.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)], log: PathBuf) -> Process {
        let stderr = std::fs::File::create(&log).expect("create log file");
        let child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .env("THALASSA_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn thalassa");
        Process {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM (by PID) and wait for the exit, at most 15 s.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM");
        self.wait(Duration::from_secs(15)).await
    }

    /// SIGINT (by PID) and wait for the exit, at most 15 s.
    pub async fn interrupt(&mut self) -> ExitStatus {
        self.signal("-INT");
        self.wait(Duration::from_secs(15)).await
    }

    /// SIGSTOP: the process hangs (its sockets stay open, nothing answers) until
    /// [`Process::resume`]; a drop still kills it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Process::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGKILL: a crash, no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        // The shell's `kill` builtin: no dependency on a procps binary being installed.
        let status = Command::new("sh")
            .args(["-c", "kill \"$0\" \"$1\"", signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {} failed", self.pid());
    }

    /// Waits for the process to exit on its own, at most `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("process still owned");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {timeout:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `thalassa registry` with its own data dir and port.
pub struct Registry {
    pub process: Process,
    pub port: u16,
    pub data_dir: PathBuf,
    pub url: String,
    _temp: Option<tempfile::TempDir>,
}

impl Registry {
    /// A registry in a fresh temp dir.
    pub async fn start(extra: &[&str]) -> Registry {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("data");
        let mut registry = Self::start_in(&data_dir, free_port(), extra).await;
        registry._temp = Some(temp);
        registry
    }

    /// A registry on `port` using `data_dir` (for restarts). The log file sits beside the data
    /// dir, one per start.
    pub async fn start_in(data_dir: &Path, port: u16, extra: &[&str]) -> Registry {
        let registry = Self::spawn_in(data_dir, port, extra);
        registry.wait_ready().await;
        registry
    }

    /// Like [`Registry::start_in`] without waiting for readiness.
    pub fn spawn_in(data_dir: &Path, port: u16, extra: &[&str]) -> Registry {
        let parent = data_dir.parent().unwrap_or(data_dir);
        std::fs::create_dir_all(parent).expect("create parent dir");
        let log = parent.join(format!("registry-{}.log", unique()));
        let listen = format!("127.0.0.1:{port}");
        let data = data_dir.to_string_lossy().into_owned();
        let mut args = vec!["registry", "--listen", &listen, "--data-dir", &data];
        args.extend_from_slice(extra);
        Registry {
            process: Process::spawn(&args, log),
            port,
            data_dir: data_dir.to_owned(),
            url: format!("http://127.0.0.1:{port}"),
            _temp: None,
        }
    }

    pub async fn wait_ready(&self) {
        let url = format!("{}/status", self.url);
        eventually(
            Duration::from_secs(20),
            "the registry to answer /status",
            || {
                let url = url.clone();
                async move {
                    let response = client().get(&url).send().await.ok()?;
                    response.status().is_success().then_some(())
                }
            },
        )
        .await;
    }

    /// Moves the data dir's ownership into a new start after this one stopped.
    pub fn take_temp(&mut self) -> Option<tempfile::TempDir> {
        self._temp.take()
    }

    pub async fn get(&self, path: &str) -> Value {
        get_json(&format!("{}{path}", self.url)).await
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, String) {
        send(
            client()
                .post(format!("{}{path}", self.url))
                .header("content-type", "application/json")
                .body(body.to_owned()),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> (u16, String) {
        send(client().delete(format!("{}{path}", self.url))).await
    }

    /// Ids currently registered (excluding the registry's own registration).
    pub async fn ids(&self) -> Vec<String> {
        let all = self.get("/registrations").await;
        all.as_array()
            .expect("array")
            .iter()
            .filter(|r| r["name"] != "thalassa")
            .map(|r| r["id"].as_str().expect("id").to_owned())
            .collect()
    }

    /// One sample from `/metrics`, e.g. `thalassa_registry_expired_total`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = client()
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .expect("number")
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

pub async fn send(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

pub async fn get_json(url: &str) -> Value {
    let response = client().get(url).send().await.expect("GET");
    assert!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    response.json().await.expect("JSON body")
}

/// Reads `GET /events` and decodes each message into a [`FeedItem`].
pub struct EventStream {
    response: reqwest::Response,
    decoder: SseDecoder,
    pending: std::collections::VecDeque<FeedItem>,
    /// Every raw chunk received, for wire-format assertions.
    pub raw: String,
}

impl EventStream {
    pub async fn open(base: &str, last_event_id: Option<&str>) -> EventStream {
        Self::open_url(&format!("{base}/events"), last_event_id).await
    }

    /// Opens `url` (e.g. with a `?lastEventId=` query) as an event stream.
    pub async fn open_url(url: &str, last_event_id: Option<&str>) -> EventStream {
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("GET /events");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"]
                .to_str()
                .expect("ASCII header"),
            "text/event-stream"
        );
        EventStream {
            response,
            decoder: SseDecoder::default(),
            pending: Default::default(),
            raw: String::new(),
        }
    }

    /// The next item, or panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> FeedItem {
        self.try_next(timeout)
            .await
            .unwrap_or_else(|| panic!("no event within {timeout:?}"))
    }

    /// The next item, or `None` when none arrives within `timeout` or the stream ends or
    /// breaks (the node died).
    pub async fn try_next_or_end(&mut self, timeout: Duration) -> Option<FeedItem> {
        self.read(timeout, false).await
    }

    /// The next item, or `None` if none arrives within `timeout` (a broken stream panics).
    pub async fn try_next(&mut self, timeout: Duration) -> Option<FeedItem> {
        self.read(timeout, true).await
    }

    async fn read(&mut self, timeout: Duration, must_not_break: bool) -> Option<FeedItem> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            let read = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?;
            let chunk = match read {
                Ok(chunk) => chunk?,
                Err(err) if must_not_break => panic!("read /events: {err}"),
                Err(_) => return None,
            };
            self.raw.push_str(&String::from_utf8_lossy(&chunk));
            let messages = match self.decoder.push(&chunk) {
                Ok(messages) => messages,
                Err(err) if must_not_break => panic!("invalid event stream: {err:?}"),
                Err(_) => return None,
            };
            for message in messages {
                let item = FeedItem::from_sse(
                    message.id.as_deref().unwrap_or(""),
                    &message.event,
                    &message.data,
                )
                .expect("a known feed message");
                self.pending.push_back(item);
            }
        }
    }
}

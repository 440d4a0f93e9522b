//! Harness for the UI tests: serve a router on loopback, a fake registry, an SSE reader, and a
//! real headless Chromium driven over WebDriver (chromedriver killed on drop).

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]
#![allow(dead_code)] // each test binary uses a different subset
#![allow(clippy::unwrap_used)] // a panic in the harness is a test failure

use crate::support::{Proc, free_port};
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A router served on 127.0.0.1 until dropped.
pub struct Served {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    pub async fn start(router: axum::Router) -> Served {
        Self::start_on(router, 0).await
    }

    /// Serves on `port` (0 = any). Connections are tasks owned by the server task, so stopping
    /// it cuts them all, as a crash would (axum::serve would leave them running).
    pub async fn start_on(router: axum::Router, port: u16) -> Served {
        let listener = bind_retrying(port).await;
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = hyper_util::service::TowerToHyperService::new(router.clone());
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Served { addr, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops accepting and drops every open connection (like a killed process).
    pub async fn stop(mut self) {
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        task.abort();
        let _ = task.await;
    }
}

/// Binding a port just released can race with its last connections closing: retry briefly.
async fn bind_retrying(port: u16) -> tokio::net::TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return listener,
            Err(err) if Instant::now() > deadline => panic!("cannot bind port {port}: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A stand-in for the registry's `GET /registrations` and `GET /leases`.
#[derive(Clone, Default)]
pub struct FakeRegistry {
    pub registrations: Arc<Mutex<Vec<Value>>>,
    pub leases: Arc<Mutex<Vec<Value>>>,
}

impl FakeRegistry {
    pub fn register(&self, name: &str, version: &str, host: &str, port: u16, expires_at: u64) {
        let id = format!("/{name}/{version}/{host}/{port}");
        self.registrations.lock().unwrap().push(json!({
            "name": name, "version": version, "host": host, "port": port,
            "lastKnown": thalassa::status::now_ms(),
            "meta": {"hostname": host, "secondsToExpire": 10000},
            "id": id,
        }));
        self.leases.lock().unwrap().push(json!({
            "id": id, "expiresAt": expires_at, "lastKnown": thalassa::status::now_ms(),
        }));
    }

    /// Registrations of `name@version` as a dynamic backend's members.
    pub fn members(&self, name: &str, version: &str) -> Vec<Value> {
        self.registrations
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r["name"] == name && r["version"] == version)
            .cloned()
            .collect()
    }

    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route(
                "/registrations",
                get(|State(r): State<FakeRegistry>| async move {
                    Json(Value::Array(r.registrations.lock().unwrap().clone()))
                }),
            )
            .route(
                "/leases",
                get(|State(r): State<FakeRegistry>| async move {
                    Json(Value::Array(r.leases.lock().unwrap().clone()))
                }),
            )
            .with_state(self.clone())
    }
}

/// Reads server-sent events from a response: `(event, data)` pairs, comments skipped.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub async fn open(url: &str) -> SseReader {
        let response = reqwest::Client::new().get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        SseReader {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, or `None` when the stream ends. Panics after 10 s of silence.
    pub async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if data.is_empty() {
                    continue; // a comment or a retry-only frame
                }
                return Some((event, serde_json::from_str(&data).unwrap()));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("no event within 10 s")
                .unwrap()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// `target/` of this build (where screenshots go), from the test binary's own path.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/<test binary>
    exe.ancestors().nth(3).unwrap().to_owned()
}

/// True when Chromium and chromedriver are installed; fails under CI when they are not.
pub fn require_chromium() -> bool {
    crate::support::require("chromium", "apt-get install -y chromium chromium-driver")
        && crate::support::require("chromedriver", "apt-get install -y chromium-driver")
}

/// A headless Chromium session. The chromedriver process (and so the browser) ends on drop.
pub struct Browser {
    pub client: fantoccini::Client,
    _driver: Proc,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A laptop-sized window (1366x900).
    pub async fn start() -> Browser {
        Self::start_sized(1366, 900).await
    }

    pub async fn start_sized(width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = profile.path().join("chromedriver.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut driver = Proc { child, log };
        let url = format!("http://127.0.0.1:{port}");
        crate::support::wait_http(&format!("{url}/status"), &mut driver).await;

        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={width},{height}"),
            format!(
                "--user-data-dir={}",
                profile.path().join("chrome").display()
            ),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({"binary": "/usr/bin/chromium", "args": args}),
        );
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps)
        .connect(&url)
        .await
        .unwrap_or_else(|err| panic!("cannot start chromium: {err}"));
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Runs `script` (a function body; `arguments` available) and returns its result.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap()
    }

    /// The trimmed text of the first element matching `css`, if any.
    pub async fn text(&self, css: &str) -> Option<String> {
        let value = self
            .js(
                "const el = document.querySelector(arguments[0]); return el ? el.textContent.trim() : null;",
                vec![json!(css)],
            )
            .await;
        value.as_str().map(str::to_owned)
    }

    /// Texts of all elements matching `css`.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let value = self
            .js(
                "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent.trim());",
                vec![json!(css)],
            )
            .await;
        serde_json::from_value(value).unwrap()
    }

    /// Waits until `check` holds for the text at `css` (None = no such element).
    pub async fn wait_text(
        &self,
        css: &str,
        what: &str,
        check: impl Fn(Option<&str>) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.text(css).await;
            if check(text.as_deref()) {
                return text;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what} at {css:?}; last text: {text:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `check` holds for what `script` (a function body) returns: for what a text
    /// does not show (attributes, which elements exist). Returns the value that passed.
    pub async fn wait_js(&self, script: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let value = self.js(script, vec![]).await;
            if check(&value) {
                return value;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; last value: {value}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Clicks the first element matching `css`, waiting up to 15 s for it to appear (a click
    /// often makes the page render the next control).
    pub async fn click(&self, css: &str) {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("no {css:?} to click: {err}"))
            .click()
            .await
            .unwrap();
    }

    /// Saves a PNG of the window as `target/ui-screenshots/<name>.png`; returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let dir = target_dir().join("ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Saves a screenshot of the whole page (the window is resized to the page's height).
    pub async fn full_screenshot(&self, name: &str, width: u32) -> PathBuf {
        let height = self
            .js(
                "return Math.ceil(document.documentElement.scrollHeight);",
                vec![],
            )
            .await
            .as_u64()
            .unwrap_or(900)
            .clamp(400, 6000) as u32;
        self.client
            .set_window_size(width, height + 120)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await; // let the layout settle (cosmetic)
        self.screenshot(name).await
    }

    /// Fails the test if the page reported a script error (collected by app.js).
    pub async fn assert_no_script_errors(&self) {
        let errors = self
            .js(
                "return window.thalassa ? window.thalassa.errors : ['app.js did not start'];",
                vec![],
            )
            .await;
        assert_eq!(errors, json!([]), "script errors on the page");
    }

    /// Checks the page had no script errors, then ends the session.
    pub async fn close(self) {
        self.assert_no_script_errors().await;
        let _ = self.client.close().await;
    }
}

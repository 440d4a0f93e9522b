//! The original Thalassa Node client (thalassa 0.4.1 from npm, axon 1.0) subscribed to our
//! registry's axon socket: what an original aqueduct or Crowsnest relies on. `.ci/run` installs
//! it (pinned by tests/compat/original-client/package-lock.json) into
//! `target/original-client`; `THALASSA_ORIGINAL_CLIENT` names another install.

#![allow(
    clippy::disallowed_methods,
    reason = "the test runs the original client, a program of its own"
)]

mod registry_support;
mod support;

use registry_support::{Registry, free_port};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Generous for a Node process on a busy 2-core machine; the protocol's own promptness is
/// measured by `registry_axon.rs`.
const PROMPT: Duration = Duration::from_millis(500);

fn client_modules() -> Option<PathBuf> {
    let modules = std::env::var_os("THALASSA_ORIGINAL_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/original-client"))
        .join("node_modules");
    if modules.join("thalassa/package.json").is_file() {
        return Some(modules);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "the original Thalassa client is required under CI: {} has no thalassa \
             (.ci/run installs it with npm ci from tests/compat/original-client)",
            modules.display()
        );
    }
    eprintln!(
        "SKIP: the original client is not installed in {}",
        modules.display()
    );
    None
}

/// The original client, subscribed to `name`; its events as JSON lines.
struct OriginalClient {
    child: Child,
    events: mpsc::UnboundedReceiver<Value>,
    /// Every event received, for checks over all of them.
    seen: Vec<Value>,
}

impl OriginalClient {
    async fn subscribe(modules: PathBuf, axon_port: u16, api_port: u16, name: &str) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/compat/original-client/subscribe.js");
        let mut child = Command::new("node")
            .arg(script)
            .arg(axon_port.to_string())
            .arg(api_port.to_string())
            .arg(name)
            .env("ORIGINAL_CLIENT_MODULES", modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run node (apt-get install nodejs)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|err| panic!("not JSON from the client: {line:?}: {err}"));
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        let mut client = OriginalClient {
            child,
            events,
            seen: Vec::new(),
        };
        let first = client.next(Duration::from_secs(20)).await;
        assert_eq!(first.map(|e| e["event"].clone()), Some("subscribed".into()));
        client
    }

    async fn next(&mut self, timeout: Duration) -> Option<Value> {
        let event = tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()?;
        self.seen.push(event.clone());
        Some(event)
    }

    /// The next event about `id`, skipping others (the probe's).
    async fn next_about(&mut self, id: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let event = self
                .next(deadline.saturating_duration_since(Instant::now()))
                .await?;
            if event["id"] == id {
                return Some(event);
            }
        }
    }
}

#[tokio::test]
async fn the_original_client_sees_online_and_offline_from_our_registry() {
    let Some(modules) = client_modules() else {
        return;
    };
    if !support::require("node", "apt-get install -y nodejs") {
        return;
    }
    let axon_port = free_port();
    let registry = Registry::start(&["--axon-listen", &format!("127.0.0.1:{axon_port}")]).await;
    let mut client = OriginalClient::subscribe(modules, axon_port, registry.port, "api").await;

    // The client connects by itself after `subscribe`: heartbeat a probe (each one is an
    // `online` on the socket) until the client reports it.
    let probe = "/registrations/api/probe/127.0.0.1/1";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "the original client never got a message"
        );
        registry.post(probe, r#"{"secondsToExpire": 60}"#).await;
        if client
            .next_about("/api/probe/127.0.0.1/1", Duration::from_millis(300))
            .await
            .is_some()
        {
            break;
        }
    }

    let path = "/registrations/api/1.0.0/127.0.0.1/8080";
    let id = "/api/1.0.0/127.0.0.1/8080";
    registry
        .post(path, r#"{"secondsToExpire": 60, "zone": "a"}"#)
        .await;
    let online = client
        .next_about(id, PROMPT)
        .await
        .expect("online for a new registration");
    assert_eq!(online["event"], "online");
    assert_eq!(online["meta"]["zone"], "a");
    assert_eq!(online["meta"]["hostname"], "127.0.0.1");

    // Heartbeats reach the client, which de-duplicates them itself (same meta: no event);
    // a meta change is an event again.
    registry
        .post(path, r#"{"secondsToExpire": 60, "zone": "a"}"#)
        .await;
    registry
        .post(path, r#"{"secondsToExpire": 60, "zone": "b"}"#)
        .await;
    let changed = client
        .next_about(id, PROMPT)
        .await
        .expect("online for a meta change");
    assert_eq!(changed["meta"]["zone"], "b", "{changed}");

    // Other services are filtered out by the client's subscription (`/api/*`).
    registry
        .post(
            "/registrations/other/1/127.0.0.1/7000",
            r#"{"secondsToExpire": 60}"#,
        )
        .await;

    registry.delete(path).await;
    let offline = client
        .next_about(id, PROMPT)
        .await
        .expect("offline for a delete");
    assert_eq!(offline["event"], "offline");

    let short = "/registrations/api/short/127.0.0.1/9001";
    let short_id = "/api/short/127.0.0.1/9001";
    registry.post(short, r#"{"secondsToExpire": 1}"#).await;
    let posted = Instant::now();
    assert_eq!(
        client
            .next_about(short_id, PROMPT)
            .await
            .map(|e| e["event"].clone()),
        Some("online".into())
    );
    let expired = client
        .next_about(short_id, Duration::from_secs(3))
        .await
        .expect("offline for an expiry");
    assert_eq!(expired["event"], "offline");
    assert!(
        posted.elapsed() < Duration::from_secs(1) + PROMPT,
        "offline {:?} after a 1 s lease was posted",
        posted.elapsed()
    );

    // Nothing about `other` ever reached the client.
    drop(client.child.stdin.take());
    while client.next(Duration::from_secs(5)).await.is_some() {}
    assert!(
        client
            .seen
            .iter()
            .all(|e| !e["id"].as_str().unwrap_or("").starts_with("/other/")),
        "{:?}",
        client.seen
    );
    let _ = client.child.wait().await;
}
